//! SingleNode end to end: dependencies, failures of every kind, cache reuse, resources.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pitch::{
    Command, EventKind, Executor, LaunchErrorKind, Resources, SingleNodeExecutor, TaskError,
};

use crate::ensure;

pitch::task! {
    /// Adds two numbers.
    pub fn add(a: i64, b: i64) -> i64 { a + b }
}
pitch::task! {
    pub fn boom(message: String) -> u32 { panic!("{}", message) }
}
pitch::task! {
    pub fn parse_number(text: String) -> Result<u32, anyhow::Error> {
        use anyhow::Context;
        let n: u32 = text.trim().parse().with_context(|| format!("parsing {text:?}"))?;
        Ok(n)
    }
}
pitch::task! {
    pub fn sleepy(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
}
pitch::task! {
    /// Appends a line to a file: a visible side effect, to count executions.
    pub fn record(path: PathBuf, value: u32) -> u32 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        writeln!(f, "{value}").unwrap();
        value * 2
    }
}
pitch::task! {
    pub fn thread_env() -> Vec<String> {
        ["OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MY_VAR"]
            .iter()
            .map(|v| std::env::var(v).unwrap_or_default())
            .collect()
    }
}
pitch::task! {
    /// A task with an executor of its own (nested executors), on the cache directory `cache`.
    pub fn nested_executor(cache: PathBuf) -> Result<i64, pitch::Error> {
        let exe = SingleNodeExecutor::builder().cache_directory(cache).max_cores(1).build()?;
        Ok(add::submit(&exe, 20, 22).result()?)
    }
}
pitch::task! {
    pub fn die(code: i32) -> u32 { std::process::exit(code) }
}
pitch::task! {
    pub fn sum(values: Vec<i64>) -> i64 { values.iter().sum() }
}

pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
    ("single_node::chain_and_diamond", chain_and_diamond),
    (
        "single_node::map_keeps_order_and_as_completed",
        map_keeps_order,
    ),
    ("single_node::panic_is_reported", panic_is_reported),
    (
        "single_node::error_chain_travels_back",
        error_chain_travels_back,
    ),
    (
        "single_node::failed_input_fails_dependent",
        failed_input_fails_dependent,
    ),
    ("single_node::command_exit_3", command_exit_3),
    ("single_node::command_not_found", command_not_found),
    (
        "single_node::timeout_kills_the_task",
        timeout_kills_the_task,
    ),
    ("single_node::cancel_kills_the_process_group", cancel_kills),
    (
        "single_node::worker_exit_without_result",
        worker_exit_without_result,
    ),
    (
        "single_node::rerun_skips_finished_work",
        rerun_skips_finished_work,
    ),
    (
        "single_node::failed_results_run_again",
        failed_results_run_again,
    ),
    ("single_node::cache_off_always_runs", cache_off_always_runs),
    (
        "single_node::truncated_result_is_recomputed",
        truncated_result_is_recomputed,
    ),
    (
        "single_node::incompatible_task_file",
        incompatible_task_file,
    ),
    (
        "single_node::bad_resources_are_rejected",
        bad_resources_are_rejected,
    ),
    (
        "single_node::threads_and_env_reach_the_task",
        threads_and_env,
    ),
    (
        "single_node::an_executor_inside_a_task_runs_nested",
        executor_inside_worker,
    ),
    (
        "single_node::wide_dag_does_not_deadlock",
        wide_dag_does_not_deadlock,
    ),
    (
        "single_node::drop_waits_and_shutdown_cancels",
        drop_waits_and_shutdown_cancels,
    ),
    (
        "single_node::await_from_another_runtime",
        await_from_another_runtime,
    ),
    ("single_node::json_lines_events", json_lines_events),
    ("single_node::slots_cap_concurrency", slots_cap_concurrency),
];

pub(crate) fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

pub(crate) fn executor(cache: &Path, cores: u32) -> Executor {
    SingleNodeExecutor::builder()
        .max_cores(cores)
        .cache_directory(cache)
        .build()
        .expect("an executor")
}

/// Collects events for assertions.
#[derive(Clone, Default)]
pub(crate) struct Collect(Arc<Mutex<Vec<EventKind>>>);

impl pitch::Reporter for Collect {
    fn report(&self, event: &pitch::Event) {
        self.0.lock().unwrap().push(event.kind.clone());
    }
}

impl Collect {
    pub(crate) fn events(&self) -> Vec<EventKind> {
        self.0.lock().unwrap().clone()
    }
    pub(crate) fn count(&self, f: impl Fn(&EventKind) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| f(e)).count()
    }
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                EventKind::Warning { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Runs two commands on `exe` (made with this reporter) and checks that each of `keys`
    /// was reported in exactly one warning, and that there were no others; the warnings.
    pub(crate) fn two_tasks_warn_once_about(
        &self,
        exe: &pitch::Executor,
        keys: &[&str],
    ) -> Result<Vec<String>, String> {
        for n in 0..2 {
            exe.submit_command(pitch::Command::new("true").arg(n.to_string()))
                .result()
                .map_err(|e| e.to_string())?;
        }
        let warnings = self.warnings();
        for key in keys {
            let n = warnings.iter().filter(|w| w.contains(key)).count();
            ensure!(n == 1, "{n} warnings about {key}: {warnings:#?}");
        }
        ensure!(
            self.count(|e| matches!(e, EventKind::Warning { .. })) == keys.len(),
            "{warnings:#?}"
        );
        Ok(warnings)
    }
}

fn chain_and_diamond() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    let a = add::submit(&exe, 1, 2);
    let b = add::submit(&exe, &a, 10);
    let c = add::submit(&exe, &b, 100);
    ensure!(c.result() == Ok(113), "chain: {:?}", c.result());
    // Diamond: d depends on x twice, through two branches.
    let x = add::submit(&exe, 5, 5);
    let left = add::submit(&exe, &x, 1);
    let right = add::submit(&exe, &x, 2);
    let d = add::submit(&exe, &left, &right);
    ensure!(d.result() == Ok(23), "diamond: {:?}", d.result());
    let same = add::submit(&exe, &x, &x);
    ensure!(
        same.result() == Ok(20),
        "same input twice: {:?}",
        same.result()
    );
    ensure!(a.done() && a.key().len() == 32, "key {}", a.key());
    Ok(())
}

fn map_keeps_order() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    let futures = sleepy::map(&exe, [60u64, 1, 30, 2]);
    let values = pitch::wait_all(futures.clone()).map_err(|e| e.to_string())?;
    ensure!(values == vec![60, 1, 30, 2], "order {values:?}");
    let pairs = add::map(&exe, (0..20).map(|i| (i, i)));
    let sums = pitch::wait_all(pairs).map_err(|e| e.to_string())?;
    ensure!(
        sums == (0..20).map(|i| 2 * i).collect::<Vec<_>>(),
        "{sums:?}"
    );
    let dir2 = temp();
    let exe2 = executor(dir2.path(), 2);
    let done: Vec<usize> = pitch::as_completed(sleepy::map(&exe2, [400u64, 10]))
        .map(|(i, r)| {
            r.unwrap();
            i
        })
        .collect();
    ensure!(done == vec![1, 0], "completion order {done:?}");
    Ok(())
}

fn panic_is_reported() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    match boom::submit(&exe, "kaboom 42".to_string()).result() {
        Err(TaskError::Panicked { message, location }) => {
            ensure!(message == "kaboom 42", "message {message:?}");
            ensure!(
                location
                    .as_deref()
                    .is_some_and(|l| l.contains("single_node.rs")),
                "location {location:?}"
            );
        }
        other => return Err(format!("expected a panic, got {other:?}")),
    }
    Ok(())
}

fn error_chain_travels_back() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    ensure!(
        parse_number::submit(&exe, " 17 ").result() == Ok(17),
        "ok path"
    );
    match parse_number::submit(&exe, "x1").result() {
        Err(TaskError::Failed { chain }) => {
            ensure!(chain.len() == 2, "chain {chain:?}");
            ensure!(chain[0] == "parsing \"x1\"", "outer {chain:?}");
            ensure!(chain[1].contains("invalid digit"), "cause {chain:?}");
        }
        other => return Err(format!("expected Failed, got {other:?}")),
    }
    Ok(())
}

fn failed_input_fails_dependent() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    let bad = parse_number::submit(&exe, "nope");
    let next = add::submit(&exe, 1, 2);
    let dependent = add::submit(&exe, &next, 0);
    let failing: pitch::TaskFuture<i64> = add::submit(&exe, 1, 1);
    drop(failing);
    let cmd = exe.submit_command(Command::new("true").after(&bad));
    match cmd.result() {
        Err(TaskError::DependencyFailed { input, key, cause }) => {
            ensure!(input.contains("parse_number"), "input {input}");
            ensure!(key == bad.key(), "key");
            ensure!(
                matches!(*cause, TaskError::Failed { .. }),
                "cause {cause:?}"
            );
        }
        other => return Err(format!("expected DependencyFailed, got {other:?}")),
    }
    ensure!(dependent.result() == Ok(3), "unrelated dependent");
    Ok(())
}

fn command_exit_3() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    let cmd = || Command::new("sh").args(["-c", "echo out; echo problem >&2; exit 3"]);
    match exe.submit_command(cmd()).result() {
        Err(TaskError::CommandFailed {
            program,
            code,
            stderr_tail,
        }) => {
            ensure!(program == "sh" && code == 3, "{program} {code}");
            ensure!(stderr_tail == "problem", "tail {stderr_tail:?}");
        }
        other => return Err(format!("expected CommandFailed, got {other:?}")),
    }
    let out = exe
        .submit_command(cmd().allow_failure())
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(out.exit_code == 3 && !out.success(), "{out:?}");
    ensure!(
        out.read_stdout().unwrap() == "out\n",
        "stdout {:?}",
        out.read_stdout()
    );
    let ok = exe
        .submit_command(Command::new("echo").arg("a b"))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(ok.read_stdout().unwrap() == "a b\n", "argument kept whole");
    ensure!(
        ok.stderr.is_none(),
        "empty stderr file is removed: {:?}",
        ok.stderr
    );
    Ok(())
}

fn command_not_found() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    match exe
        .submit_command(Command::new("no-such-program-pitch"))
        .result()
    {
        Err(TaskError::Launch { what, kind, detail }) => {
            ensure!(what == "no-such-program-pitch", "{what}");
            ensure!(kind == LaunchErrorKind::NotFound, "{kind:?}");
            ensure!(detail.contains("not found"), "{detail}");
        }
        other => return Err(format!("expected Launch, got {other:?}")),
    }
    // A file that may not be executed.
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\ntrue\n").map_err(|e| e.to_string())?;
    match exe.submit_command(Command::new(&script)).result() {
        Err(TaskError::Launch { kind, detail, .. }) => {
            ensure!(
                kind == LaunchErrorKind::PermissionDenied,
                "{kind:?}: {detail}"
            )
        }
        other => return Err(format!("expected Launch, got {other:?}")),
    }
    // A missing working directory is named as such, not as a missing program.
    let gone = dir.path().join("no-such-dir");
    match exe.submit_command(Command::new("true").cwd(&gone)).result() {
        Err(TaskError::Launch { kind, detail, .. }) => {
            ensure!(kind == LaunchErrorKind::NoSuchCwd, "{kind:?}");
            ensure!(
                detail == format!("the working directory {} does not exist", gone.display()),
                "{detail}"
            )
        }
        other => return Err(format!("expected Launch, got {other:?}")),
    }
    Ok(())
}

fn timeout_kills_the_task() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2)
        .with_resources(Resources::new().run_time_max(Duration::from_millis(500)));
    let start = Instant::now();
    let f = sleepy::submit(&exe, 30_000);
    let c = exe.submit_command(Command::new("sleep").arg("30"));
    ensure!(
        matches!(f.result(), Err(TaskError::Timeout { .. })),
        "function: {:?}",
        f.result()
    );
    ensure!(
        matches!(c.result(), Err(TaskError::Timeout { limit }) if limit == Duration::from_millis(500)),
        "command: {:?}",
        c.result()
    );
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    Ok(())
}

fn cancel_kills() -> Result<(), String> {
    let dir = temp();
    let marker = dir.path().join("marker");
    let exe = executor(&dir.path().join("cache"), 2);
    // The shell's child (sleep) is in the same process group and must die too.
    let script = format!("sleep 2; touch {}", marker.display());
    let f = exe.submit_command(Command::new("sh").args(["-c", &script]));
    std::thread::sleep(Duration::from_millis(300));
    f.cancel();
    ensure!(f.result() == Err(TaskError::Cancelled), "{:?}", f.result());
    // A task waiting for a slot is cancelled before it starts.
    let blocker = sleepy::submit(
        &exe.with_resources(Resources::new().cores(1).threads_per_core(2)),
        1500,
    );
    let queued = sleepy::submit(&exe, 1);
    queued.cancel();
    ensure!(
        queued.result() == Err(TaskError::Cancelled),
        "queued {:?}",
        queued.result()
    );
    ensure!(blocker.result() == Ok(1500), "blocker");
    std::thread::sleep(Duration::from_millis(2500));
    ensure!(!marker.exists(), "the cancelled command kept running");
    // A task that ignores SIGTERM (and so does its child: an ignored signal stays ignored
    // across exec) gets SIGKILL after the grace period.
    let stubborn = exe.submit_command(Command::new("sh").args(["-c", "trap '' TERM; sleep 30"]));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    stubborn.cancel();
    ensure!(
        stubborn.result() == Err(TaskError::Cancelled),
        "{:?}",
        stubborn.result()
    );
    let took = start.elapsed();
    ensure!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "SIGKILL after the 2 s grace, took {took:?}"
    );
    Ok(())
}

fn worker_exit_without_result() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    match die::submit(&exe, 7).result() {
        Err(TaskError::WorkerDied { status, .. }) => {
            ensure!(status == "exit code 7", "{status}")
        }
        other => return Err(format!("expected WorkerDied, got {other:?}")),
    }
    Ok(())
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn rerun_skips_finished_work() -> Result<(), String> {
    let dir = temp();
    let log = dir.path().join("runs.log");
    let cache = dir.path().join("cache");
    let run = |events: Collect| {
        let exe = SingleNodeExecutor::builder()
            .max_cores(2)
            .cache_directory(&cache)
            .reporter(events)
            .build()
            .unwrap();
        let futures = record::map(&exe, (0..5).map(|i| (log.clone(), i)));
        let total = sum::submit(&exe, vec![1, 2, 3]);
        let cmd = exe.submit_command(
            Command::new("sh").args(["-c", &format!("echo cmd >> {}", log.display())]),
        );
        (
            pitch::wait_all(futures),
            total.result(),
            cmd.result().map(|_| ()),
        )
    };
    let first = Collect::default();
    let (a, t, c) = run(first.clone());
    ensure!(
        a == Ok(vec![0, 2, 4, 6, 8]) && t == Ok(6) && c.is_ok(),
        "{a:?} {t:?} {c:?}"
    );
    ensure!(
        count_lines(&log) == 6,
        "first run executed {} times",
        count_lines(&log)
    );
    let second = Collect::default();
    let (a, t, c) = run(second.clone());
    ensure!(
        a == Ok(vec![0, 2, 4, 6, 8]) && t == Ok(6) && c.is_ok(),
        "rerun values"
    );
    ensure!(
        count_lines(&log) == 6,
        "rerun executed tasks again: {} lines",
        count_lines(&log)
    );
    let cached = second.count(|e| matches!(e, EventKind::Cached { .. }));
    ensure!(cached == 7, "cached events {cached}");
    ensure!(
        second.count(|e| matches!(e, EventKind::Started { .. })) == 0,
        "nothing started"
    );
    Ok(())
}

fn failed_results_run_again() -> Result<(), String> {
    let dir = temp();
    let flag = dir.path().join("flag");
    let cache = dir.path().join("cache");
    let script = format!("test -e {}", flag.display());
    let first = executor(&cache, 2).submit_command(Command::new("sh").args(["-c", &script]));
    ensure!(first.result().is_err(), "fails while the flag is missing");
    std::fs::write(&flag, "").unwrap();
    let second = executor(&cache, 2).submit_command(Command::new("sh").args(["-c", &script]));
    ensure!(second.key() == first.key(), "same key");
    ensure!(
        second.result().is_ok(),
        "reruns the failed task: {:?}",
        second.result()
    );
    // And a later failure never overwrites the finished result.
    std::fs::remove_file(&flag).unwrap();
    let third = executor(&cache, 2).submit_command(Command::new("sh").args(["-c", &script]));
    ensure!(
        third.result().is_ok(),
        "cached success stands: {:?}",
        third.result()
    );
    Ok(())
}

fn cache_off_always_runs() -> Result<(), String> {
    let dir = temp();
    let log = dir.path().join("runs.log");
    let cache = dir.path().join("cache");
    for _ in 0..2 {
        let exe = executor(&cache, 2).with_cache(false);
        record::submit(&exe, log.clone(), 1)
            .result()
            .map_err(|e| e.to_string())?;
    }
    ensure!(count_lines(&log) == 2, "ran {} times", count_lines(&log));
    // An explicit cache key overrides the content hash.
    let exe = executor(&cache, 2);
    let a = record::submit(&exe.with_cache_key("calibration-v1"), log.clone(), 5);
    ensure!(a.result() == Ok(10), "{:?}", a.result());
    let b = record::submit(&exe.with_cache_key("calibration-v1"), log.clone(), 6);
    ensure!(
        b.result() == Ok(10),
        "same explicit key, same result: {:?}",
        b.result()
    );
    ensure!(count_lines(&log) == 3, "ran {} times", count_lines(&log));
    Ok(())
}

fn truncated_result_is_recomputed() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let f = add::submit(&executor(&cache, 2), 20, 22);
    ensure!(f.result() == Ok(42), "first");
    let path = pitch::__private::result_path(&cache, &f.key())?;
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let events = Collect::default();
    let exe = SingleNodeExecutor::builder()
        .max_cores(2)
        .cache_directory(&cache)
        .reporter(events.clone())
        .build()
        .unwrap();
    let again = add::submit(&exe, 20, 22);
    ensure!(again.result() == Ok(42), "recomputed: {:?}", again.result());
    let warnings = events.warnings();
    ensure!(
        warnings.len() == 1
            && warnings[0].contains("truncated")
            && warnings[0].contains("result.bin"),
        "warnings {warnings:?}"
    );
    Ok(())
}

fn incompatible_task_file() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let f = add::submit(&executor(&cache, 2), 1, 1);
    ensure!(f.result() == Ok(2), "first");
    let key = f.key();
    std::fs::remove_file(pitch::__private::result_path(&cache, &key)?).unwrap();
    pitch::__private::set_task_fingerprint(&cache, &key, "0123456789abcdef")?;
    // Run the worker on the altered task file, as a job script would.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["__pitch-worker", "run", cache.to_str().unwrap(), &key])
        .env("PITCH_WORKER", "1")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    ensure!(status.code() == Some(1), "worker exit {status:?}");
    let exe = executor(&cache, 2);
    // The stored failure is read back as a failure: resubmitting reruns it from a fresh file.
    let path = pitch::__private::result_path(&cache, &key)?;
    ensure!(path.exists(), "the worker recorded its refusal");
    let again = add::submit(&exe, 1, 1);
    ensure!(
        again.result() == Ok(2),
        "rerun with the right code: {:?}",
        again.result()
    );
    // And the refusal itself, read directly:
    pitch::__private::set_task_fingerprint(&cache, &key, "fedcba9876543210")?;
    std::fs::remove_file(&path).unwrap();
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["__pitch-worker", "run", cache.to_str().unwrap(), &key])
        .env("PITCH_WORKER", "1")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    match pitch::__private::read_result(&cache, &key)? {
        Err(TaskError::BinaryMismatch { name, found, .. }) => {
            ensure!(name.ends_with("::add"), "{name}");
            ensure!(found == "fedcba9876543210", "{found}");
        }
        other => return Err(format!("expected BinaryMismatch, got {other:?}")),
    }
    Ok(())
}

fn bad_resources_are_rejected() -> Result<(), String> {
    let dir = temp();
    let events = Collect::default();
    let exe = SingleNodeExecutor::builder()
        .max_cores(2)
        .cache_directory(dir.path())
        .reporter(events.clone())
        .build()
        .unwrap();
    let too_big = add::submit(
        &exe.with_resources(Resources::new().cores(2).threads_per_core(2)),
        1,
        1,
    );
    match too_big.result() {
        Err(TaskError::Rejected { backend, reason }) => {
            ensure!(backend == "single-node", "{backend}");
            ensure!(
                reason.contains("4 slots") && reason.contains("max_cores is 2"),
                "{reason}"
            );
        }
        other => return Err(format!("expected Rejected, got {other:?}")),
    }
    let nodes = add::submit(&exe.with_resources(Resources::new().num_nodes(2)), 1, 1);
    ensure!(
        matches!(nodes.result(), Err(TaskError::Rejected { ref reason, .. }) if reason.contains("num_nodes = 2")),
        "{:?}",
        nodes.result()
    );
    let zero = add::submit(&exe.with_resources(Resources::new().cores(0)), 1, 1);
    ensure!(
        matches!(zero.result(), Err(TaskError::Rejected { ref reason, .. }) if reason.contains("cores")),
        "{:?}",
        zero.result()
    );
    ensure!(exe.check(&Resources::new().cores(3)).is_err(), "check");
    // A key that means nothing here is accepted and reported once.
    let slurmish = exe.with_resources(Resources::new().partition("short").account("abc"));
    for i in 0..3 {
        ensure!(add::submit(&slurmish, i, 0).result() == Ok(i), "accepted");
    }
    let warnings = events.warnings();
    ensure!(warnings.len() == 2, "one warning per key: {warnings:?}");
    ensure!(
        warnings.iter().any(|w| w.contains("\"partition\"")),
        "{warnings:?}"
    );
    // Executor-level defaults that cannot be honoured fail at build time.
    let err = SingleNodeExecutor::builder()
        .max_cores(2)
        .cache_directory(dir.path())
        .resources(Resources::new().cores(8))
        .build()
        .unwrap_err();
    ensure!(err.to_string().contains("max_cores is 2"), "{err}");
    let err = SingleNodeExecutor::builder()
        .max_workers(0)
        .build()
        .unwrap_err();
    ensure!(err.to_string().contains("max_workers"), "{err}");
    Ok(())
}

fn threads_and_env() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 4)
        .with_resources(Resources::new().threads_per_core(3).env("MY_VAR", "hello"));
    let env = thread_env::submit(&exe)
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(env == vec!["3", "3", "hello"], "{env:?}");
    let cwd = dir.path().join("work");
    std::fs::create_dir(&cwd).unwrap();
    let out = exe
        .with_resources(Resources::new().cwd(&cwd))
        .submit_command(Command::new("sh").args(["-c", "pwd; echo $OMP_NUM_THREADS $MY_VAR"]))
        .result()
        .map_err(|e| e.to_string())?;
    let text = out.read_stdout().unwrap();
    ensure!(text == format!("{}\n3 hello\n", cwd.display()), "{text:?}");
    Ok(())
}

fn executor_inside_worker() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    // A task builds an executor and runs a task of its own: allowed (only a worker whose
    // main runs without pitch::init() is refused, see worker.rs).
    let inner = dir.path().join("inner-cache");
    let r = nested_executor::submit(&exe, inner.clone()).result();
    ensure!(r == Ok(42), "{r:?}");
    ensure!(inner.is_dir(), "the nested executor's cache directory");
    Ok(())
}

fn wide_dag_does_not_deadlock() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 1);
    let root = add::submit(&exe, 0, 1);
    let leaves: Vec<_> = (0..30).map(|i| add::submit(&exe, &root, i)).collect();
    let mids: Vec<_> = leaves.iter().map(|l| add::submit(&exe, l, 1)).collect();
    let values = pitch::wait_all(mids).map_err(|e| e.to_string())?;
    ensure!(
        values == (0..30).map(|i| i + 2).collect::<Vec<_>>(),
        "{values:?}"
    );
    Ok(())
}

fn drop_waits_and_shutdown_cancels() -> Result<(), String> {
    let dir = temp();
    let f = {
        let exe = executor(dir.path(), 2);
        sleepy::submit(&exe, 300)
    };
    ensure!(f.done(), "dropping the executor waited for the task");
    ensure!(f.result() == Ok(300), "{:?}", f.result());
    let exe = executor(dir.path(), 2);
    let long = exe.submit_command(Command::new("sleep").arg("30"));
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let summary = exe.shutdown(pitch::Shutdown::Cancel);
    ensure!(
        start.elapsed() < Duration::from_secs(4),
        "cancel took {:?}",
        start.elapsed()
    );
    ensure!(
        long.result() == Err(TaskError::Cancelled),
        "{:?}",
        long.result()
    );
    ensure!(
        summary.failed == 1 && summary.unfinished == 0,
        "{summary:?}"
    );
    Ok(())
}

fn await_from_another_runtime() -> Result<(), String> {
    let dir = temp();
    let exe = executor(dir.path(), 2);
    let a = add::submit(&exe, 2, 3);
    let b = add::submit(&exe, &a, &a);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (x, y) = rt.block_on(async { (a.clone().await, b.clone().await) });
    ensure!(x == Ok(5) && y == Ok(10), "{x:?} {y:?}");
    Ok(())
}

fn json_lines_events() -> Result<(), String> {
    let dir = temp();
    let out = dir.path().join("events.jsonl");
    {
        let file = std::fs::File::create(&out).unwrap();
        let exe = SingleNodeExecutor::builder()
            .max_cores(2)
            .cache_directory(dir.path().join("cache"))
            .reporter(pitch::JsonLinesReporter::new(file))
            .build()
            .unwrap();
        let a = add::submit(&exe, 1, 1);
        let b = boom::submit(&exe, "x".to_string());
        let _ = (a.result(), b.result());
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    ensure!(
        kinds.iter().filter(|k| **k == "submitted").count() == 2,
        "{kinds:?}"
    );
    ensure!(
        kinds.iter().filter(|k| **k == "started").count() == 2,
        "{kinds:?}"
    );
    ensure!(
        kinds.contains(&"finished") && kinds.contains(&"failed"),
        "{kinds:?}"
    );
    ensure!(kinds.last() == Some(&"run_finished"), "{kinds:?}");
    let last = events.last().unwrap();
    ensure!(last["succeeded"] == 1 && last["failed"] == 1, "{last}");
    Ok(())
}

fn slots_cap_concurrency() -> Result<(), String> {
    // max_workers = 1 serializes tasks even with free cores.
    let dir = temp();
    let exe = SingleNodeExecutor::builder()
        .max_cores(2)
        .max_workers(1)
        .cache_directory(dir.path())
        .build()
        .unwrap();
    let start = Instant::now();
    let futures = sleepy::map(&exe, [300u64, 301, 302]);
    pitch::wait_all(futures).map_err(|e| e.to_string())?;
    ensure!(
        start.elapsed() >= Duration::from_millis(900),
        "ran concurrently: {:?}",
        start.elapsed()
    );
    Ok(())
}
