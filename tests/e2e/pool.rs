//! Persistent workers (`block_allocation(true)`) end to end, with real worker processes: the
//! init function, state kept across tasks, a worker killed mid-task, cancel and timeout while
//! other workers go on, the result log (reruns, corruption, file count), and no orphans.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pitch::{Executor, Resources, Shutdown, SingleNodeExecutor, TaskError};

use crate::ensure;

pitch::task! {
    /// The init function: leaves one file per call, named by the worker's pid.
    pub fn pool_init(dir: PathBuf) -> u32 {
        let pid = std::process::id();
        std::fs::write(dir.join(format!("init-{pid}")), b"").unwrap();
        pid
    }
}

static CALLS: AtomicU64 = AtomicU64::new(0);

pitch::task! {
    /// The worker's pid, what its init function returned, and how many tasks this worker
    /// process has run (a static: state that persists across the tasks of one worker).
    pub fn pool_whoami(_i: u64) -> Result<(u32, u32, u64), pitch::WorkerStateError> {
        let init = *pitch::worker_state::<u32>()?;
        Ok((std::process::id(), init, CALLS.fetch_add(1, Ordering::SeqCst) + 1))
    }
}

pitch::task! {
    pub fn pool_square(i: u64) -> u64 { i * i }
}

pitch::task! {
    pub fn pool_add(a: u64, b: u64) -> u64 { a + b }
}

pitch::task! {
    pub fn pool_pid() -> u32 { std::process::id() }
}

pitch::task! {
    pub fn pool_panic(i: u64) -> u32 {
        if i == 3 { panic!("task {i} panics") }
        std::process::id()
    }
}

pitch::task! {
    /// Writes its pid to `dir/pid`, then sleeps `ms` unless `dir/done` exists (a retry of a
    /// task whose worker was killed returns at once).
    pub fn pool_victim(dir: PathBuf, ms: u64) -> u32 {
        if !dir.join("done").exists() {
            std::fs::write(dir.join("done"), b"").unwrap();
            std::fs::write(dir.join("pid.tmp"), std::process::id().to_string()).unwrap();
            std::fs::rename(dir.join("pid.tmp"), dir.join("pid")).unwrap();
            std::thread::sleep(Duration::from_millis(ms));
        }
        std::process::id()
    }
}

pitch::task! {
    pub fn pool_sleep(ms: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}

pitch::task! {
    /// Sleeps `ms` and writes "start end" (ns since the epoch) to `dir/name`.
    pub fn pool_interval(dir: PathBuf, name: String, ms: u64) -> u32 {
        let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let start = now();
        std::thread::sleep(Duration::from_millis(ms));
        std::fs::write(dir.join(name), format!("{start} {}", now())).unwrap();
        std::process::id()
    }
}

pitch::task! {
    /// The number in the file at `path` (a panic when it holds none).
    pub fn pool_read(path: PathBuf) -> u64 {
        std::fs::read_to_string(&path).unwrap().trim().parse().unwrap()
    }
}

pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
    (
        "pool::fresh_reruns_a_pooled_task_and_a_failure_keeps_the_result",
        fresh_pooled,
    ),
    (
        "pool::commands_and_busy_workers_share_max_cores",
        commands_and_workers_share_cores,
    ),
    (
        "pool::init_runs_once_per_worker_and_state_persists",
        init_runs_once_per_worker_and_state_persists,
    ),
    (
        "pool::panic_fails_only_its_task_and_inputs_flow",
        panic_fails_only_its_task_and_inputs_flow,
    ),
    (
        "pool::sigkill_mid_task_fails_it_and_replaces_the_worker",
        sigkill_without_retries,
    ),
    (
        "pool::sigkill_mid_task_with_a_retry_succeeds",
        sigkill_with_retries,
    ),
    (
        "pool::cancel_and_timeout_while_others_run",
        cancel_and_timeout_while_others_run,
    ),
    (
        "pool::rerun_runs_nothing_and_a_corrupt_record_is_recomputed",
        rerun_runs_nothing,
    ),
    (
        "pool::ten_thousand_tasks_leave_few_files",
        ten_thousand_tasks_leave_few_files,
    ),
    (
        "pool::resources_a_worker_cannot_honour_are_rejected",
        rejected_resources,
    ),
    (
        "pool::shutdown_stops_workers_and_a_killed_driver_leaves_no_orphans",
        no_orphans,
    ),
    ("pool::init_function_failure_fails_tasks", init_failure),
    (
        "pool::init_function_is_part_of_the_key",
        init_function_is_part_of_the_key,
    ),
    ("pool::a_profile_turns_block_allocation_on", profile),
    ("pool::two_rank_mpi_workers", two_rank_workers),
    (
        "pool::gc_compact_killed_and_rerun_loses_nothing",
        gc_compact_killed_and_rerun,
    ),
    ("pool::flux_job_pool_against_a_real_flux", flux_job_pool),
];

/// Tests that need a real Flux instance (reported as ignored without one).
pub(crate) const NEEDS_REAL_FLUX: &[&str] = &["pool::flux_job_pool_against_a_real_flux"];

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn pool(cache: &Path, workers: u32) -> pitch::SingleNodeBuilder {
    SingleNodeExecutor::builder()
        .block_allocation(true)
        .max_cores(workers)
        .max_workers(workers)
        .cache_directory(cache)
}

fn build(b: pitch::SingleNodeBuilder) -> Result<Executor, String> {
    b.build().map_err(|e| e.to_string())
}

/// Whether the process runs (a zombie waiting for init to reap it does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The pids of the executor's two workers: two tasks that each hold a worker for a while run
/// side by side, one in each (uncached: equal submissions would be one task, and a cached
/// pid would be an old worker's).
fn worker_pids(exe: &Executor) -> Result<BTreeSet<u32>, String> {
    let exe = exe.with_cache(false);
    Ok(
        pitch::wait_all((0..2).map(|_| pool_sleep::submit(&exe, 300)))
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect(),
    )
}

fn init_runs_once_per_worker_and_state_persists() -> Result<(), String> {
    let dir = temp();
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let exe =
        build(pool(&dir.path().join("cache"), 2).init_function(pool_init::init(marks.clone())))?;
    let out = pitch::wait_all(pool_whoami::map(&exe, 0..400)).map_err(|e| e.to_string())?;
    let inits: BTreeSet<u32> = std::fs::read_dir(&marks)
        .unwrap()
        .map(|e| {
            e.unwrap().file_name().to_str().unwrap()["init-".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    let mut per_worker: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (pid, init, count) in &out {
        ensure!(pid == init, "the task in {pid} saw the init value {init}");
        per_worker.entry(*pid).or_default().push(*count);
    }
    let pids: BTreeSet<u32> = per_worker.keys().copied().collect();
    ensure!(
        inits.len() == 2,
        "init ran {} times: {inits:?}",
        inits.len()
    );
    ensure!(
        pids.is_subset(&inits),
        "tasks ran in {pids:?}, init in {inits:?}"
    );
    // Both workers run tasks, and neither ran its init function again.
    ensure!(worker_pids(&exe)? == inits, "workers are not {inits:?}");
    let again = std::fs::read_dir(&marks).unwrap().count();
    ensure!(again == 2, "{again} init runs");
    for (pid, mut counts) in per_worker {
        counts.sort_unstable();
        let expected: Vec<u64> = (1..=counts.len() as u64).collect();
        ensure!(
            counts == expected,
            "worker {pid}: the per-worker counter went {counts:?}"
        );
    }
    // Outside a pooled worker there is no state.
    ensure!(
        pitch::worker_state::<u32>().is_err(),
        "the driver has worker state"
    );
    Ok(())
}

fn panic_fails_only_its_task_and_inputs_flow() -> Result<(), String> {
    let dir = temp();
    let exe = build(pool(dir.path(), 2))?;
    let before = worker_pids(&exe)?;
    let results: Vec<_> = pool_panic::map(&exe, 0..8)
        .into_iter()
        .map(|f| f.result())
        .collect();
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (3, Err(TaskError::Panicked { message, .. })) => {
                ensure!(message.contains("task 3 panics"), "{message}")
            }
            (3, other) => return Err(format!("task 3: {other:?}")),
            (_, Ok(pid)) => ensure!(before.contains(pid), "task {i} ran in a new worker {pid}"),
            (_, Err(e)) => return Err(format!("task {i}: {e}")),
        }
    }
    // A future as an argument: the value flows from one pooled task to another.
    let a = pool_square::submit(&exe, 7);
    let b = pool_add::submit(&exe, &a, 1);
    ensure!(b.result() == Ok(50), "{:?}", b.result());
    Ok(())
}

/// Waits for the victim's pid file.
fn victim_pid(dir: &Path) -> Result<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("pid")) {
            return text.trim().parse().map_err(|e| format!("{e}"));
        }
        ensure!(Instant::now() < deadline, "the victim never started");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill9(pid: u32) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(status.success(), "kill -9 {pid} failed");
    Ok(())
}

fn sigkill_without_retries() -> Result<(), String> {
    let dir = temp();
    let exe = build(pool(&dir.path().join("cache"), 2))?;
    let victim = pool_victim::submit(&exe, dir.path().to_path_buf(), 60_000);
    let pid = victim_pid(dir.path())?;
    kill9(pid)?;
    match victim.result() {
        Err(TaskError::Signaled { what, signal, .. }) => {
            ensure!(signal == 9, "signal {signal}");
            ensure!(
                what.contains("pool worker") && what.contains(&format!("pid {pid}")),
                "{what}"
            );
        }
        other => return Err(format!("expected a SIGKILL error, got {other:?}")),
    }
    // The worker was replaced: the pool still has two workers, neither of them the dead one.
    let pids = worker_pids(&exe)?;
    ensure!(
        !pids.contains(&pid),
        "the killed worker {pid} still runs tasks"
    );
    ensure!(pids.len() == 2, "tasks ran in {pids:?}");
    Ok(())
}

fn sigkill_with_retries() -> Result<(), String> {
    let dir = temp();
    let exe = build(pool(&dir.path().join("cache"), 2).max_retries(1))?;
    let victim = pool_victim::submit(&exe, dir.path().to_path_buf(), 60_000);
    let pid = victim_pid(dir.path())?;
    kill9(pid)?;
    let start = Instant::now();
    let rerun_pid = victim.result().map_err(|e| e.to_string())?;
    ensure!(rerun_pid != pid, "the retry ran in the killed worker");
    ensure!(
        start.elapsed() < Duration::from_secs(20),
        "the retry took {:?}",
        start.elapsed()
    );
    Ok(())
}

fn cancel_and_timeout_while_others_run() -> Result<(), String> {
    let dir = temp();
    let exe = build(pool(&dir.path().join("cache"), 2))?;
    // Worker A gets the long task; the other worker keeps running short ones meanwhile.
    let long = pool_sleep::submit(&exe, 60_000);
    std::thread::sleep(Duration::from_millis(300));
    let uncached = exe.with_cache(false);
    let others = (0..50)
        .map(|_| pool_sleep::submit(&uncached, 2))
        .collect::<Vec<_>>();
    let other_pids: BTreeSet<u32> = pitch::wait_all(others)
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    ensure!(other_pids.len() == 1, "short tasks ran in {other_pids:?}");
    let start = Instant::now();
    long.cancel();
    ensure!(
        long.result() == Err(TaskError::Cancelled),
        "{:?}",
        long.result()
    );
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        start.elapsed()
    );
    // A timeout kills its worker only; the task on the other worker finishes.
    let limited = exe.with_resources(Resources::new().run_time_max(Duration::from_millis(300)));
    let slow = pool_sleep::submit(&limited, 60_000);
    let fine = pool_sleep::submit(&exe, 600);
    let start = Instant::now();
    match slow.result() {
        Err(TaskError::Timeout { limit }) => {
            ensure!(limit == Duration::from_millis(300), "{limit:?}")
        }
        other => return Err(format!("expected a timeout, got {other:?}")),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "the timeout took {:?}",
        start.elapsed()
    );
    ensure!(fine.result().is_ok(), "{:?}", fine.result());
    // Both workers were replaced and work.
    let pids = worker_pids(&exe)?;
    ensure!(pids.len() == 2, "after the kills tasks ran in {pids:?}");
    Ok(())
}

fn rerun_runs_nothing() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let exe = build(pool(&cache, 2))?;
    let first = pitch::wait_all(pool_square::map(&exe, 0..200)).map_err(|e| e.to_string())?;
    let summary = exe.shutdown(Shutdown::Wait);
    ensure!(summary.cached == 0, "{summary:?}");
    drop(exe);
    let again = build(pool(&cache, 2))?;
    let second = pitch::wait_all(pool_square::map(&again, 0..200)).map_err(|e| e.to_string())?;
    let summary = again.shutdown(Shutdown::Wait);
    ensure!(first == second, "different values on the rerun");
    ensure!(
        summary.cached == 200 && summary.succeeded == 200,
        "the rerun: {summary:?}"
    );
    drop(again);
    // A rerun without block_allocation reads the same log.
    let plain = SingleNodeExecutor::builder()
        .cache_directory(&cache)
        .build()
        .map_err(|e| e.to_string())?;
    pitch::wait_all(pool_square::map(&plain, 0..200)).map_err(|e| e.to_string())?;
    let summary = plain.shutdown(Shutdown::Wait);
    ensure!(
        summary.cached == 200,
        "without block_allocation: {summary:?}"
    );
    drop(plain);
    // pitch status / results: the Cache lists the pooled tasks as finished.
    let listed = pitch::Cache::open(&cache)
        .and_then(|c| c.tasks())
        .map_err(|e| e.to_string())?;
    let finished = listed
        .iter()
        .filter(|t| t.state == pitch::TaskState::Finished)
        .count();
    ensure!(
        finished == 200 && listed.len() == 200,
        "Cache lists {} tasks, {finished} finished",
        listed.len()
    );
    ensure!(
        listed.iter().all(|t| t.name.ends_with("pool_square")),
        "names: {:?}",
        listed.first().map(|t| &t.name)
    );
    // The command line reads the log too; gc leaves the shared log alone.
    let pitch_cli = |args: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
            .args(args)
            .arg("--cache-dir")
            .arg(&cache)
            .output()
            .map_err(|e| e.to_string())?;
        ensure!(
            out.status.success(),
            "pitch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let csv = pitch_cli(&["results", "--format", "csv"])?;
    let rows = csv.lines().filter(|l| l.contains("pool_square")).count();
    ensure!(
        rows == 200,
        "pitch results lists {rows} pooled tasks:\n{csv}"
    );
    let gc = pitch_cli(&["gc", "--all"])?;
    ensure!(
        gc.contains("removed 0 of 0 task directories; 200 results of pooled tasks"),
        "{gc}"
    );
    let status = pitch_cli(&["status"])?;
    ensure!(status.contains("200"), "pitch status: {status}");
    // Flip one byte inside the first record's payload: that task (and only it) runs again.
    let logs: Vec<PathBuf> = std::fs::read_dir(cache.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ensure!(logs.len() == 1, "logs: {logs:?}");
    let mut bytes = std::fs::read(&logs[0]).unwrap();
    bytes[30] ^= 0xff;
    std::fs::write(&logs[0], &bytes).unwrap();
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = warnings.clone();
    let third = build(pool(&cache, 2).reporter(move |e: &pitch::Event| {
        if let pitch::EventKind::Warning { message } = &e.kind {
            seen.lock().unwrap().push(message.clone());
        }
    }))?;
    let values = pitch::wait_all(pool_square::map(&third, 0..200)).map_err(|e| e.to_string())?;
    let summary = third.shutdown(Shutdown::Wait);
    ensure!(values == first, "recomputed values differ");
    ensure!(
        summary.cached == 199,
        "after corrupting one record: {summary:?}"
    );
    let warnings = warnings.lock().unwrap();
    ensure!(
        warnings.iter().any(|w| w.contains("checksum")),
        "no warning about the corrupt record: {warnings:?}"
    );
    Ok(())
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            1 + if e.file_type().unwrap().is_dir() {
                count_entries(&e.path())
            } else {
                0
            }
        })
        .sum()
}

fn ten_thousand_tasks_leave_few_files() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let exe = build(pool(&cache, 2))?;
    let values = pitch::wait_all(pool_square::map(&exe, 0..10_000)).map_err(|e| e.to_string())?;
    ensure!(values[9_999] == 9_999 * 9_999, "wrong value");
    drop(exe);
    let entries = count_entries(&cache);
    ensure!(
        entries <= 100,
        "{entries} files and directories for 10,000 pooled tasks"
    );
    Ok(())
}

fn rejected_resources() -> Result<(), String> {
    let dir = temp();
    let exe = build(pool(&dir.path().join("cache"), 2))?;
    let cases = [
        (Resources::new().cores(2), "cores"),
        (Resources::new().threads_per_core(2), "threads_per_core"),
        (Resources::new().env("X", "1"), "env"),
        (Resources::new().cwd(dir.path()), "cwd"),
    ];
    for (resources, needle) in cases {
        match pool_pid::submit(&exe.with_resources(resources)).result() {
            Err(TaskError::Rejected { reason, .. }) => {
                ensure!(reason.contains(needle), "{needle}: {reason}")
            }
            other => return Err(format!("{needle}: {other:?}")),
        }
    }
    // Workers that need more slots than max_cores are refused at build, and so is a pool
    // option without block_allocation.
    let multi = pool(&dir.path().join("c2"), 2).resources(Resources::new().cores(2));
    ensure!(
        multi.build().is_err(),
        "2 workers of 2 ranks on 2 cores were accepted"
    );
    // max_retries is every executor's (engine retries), with or without block_allocation.
    let plain = SingleNodeExecutor::builder()
        .cache_directory(dir.path().join("c3"))
        .max_retries(1)
        .build();
    ensure!(
        plain.is_ok(),
        "max_retries without block_allocation was refused"
    );
    // Commands still run as their own processes.
    let out = exe
        .submit_command(pitch::Command::new("true"))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(out.exit_code == 0, "{out:?}");
    Ok(())
}

/// The pooled driver run in a child process by `no_orphans`: prints its workers' pids, then
/// keeps a long task running until it is killed.
pub(crate) fn driver(dir: &str) -> i32 {
    let dir = Path::new(dir);
    let run = || -> Result<(), String> {
        let exe = build(pool(&dir.join("cache"), 2))?;
        let pids = worker_pids(&exe)?;
        let text: Vec<String> = pids.iter().map(u32::to_string).collect();
        std::fs::write(dir.join("pids.tmp"), text.join("\n")).map_err(|e| e.to_string())?;
        std::fs::rename(dir.join("pids.tmp"), dir.join("pids")).map_err(|e| e.to_string())?;
        // One worker busy (2 s), one idle, when the driver is killed.
        let _busy = pool_sleep::submit(&exe, 2_000);
        std::thread::sleep(Duration::from_secs(600));
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn no_orphans() -> Result<(), String> {
    // Dropping the executor stops every worker.
    let dir = temp();
    let exe = build(pool(&dir.path().join("cache"), 2))?;
    let pids = worker_pids(&exe)?;
    ensure!(pids.len() == 2, "{pids:?}");
    drop(exe);
    for pid in &pids {
        ensure!(!alive(*pid), "worker {pid} outlived its executor");
    }
    // A driver killed with SIGKILL: its workers exit (the idle one at once, the busy one when
    // its task ends).
    let exe_path = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut driver = std::process::Command::new(exe_path)
        .args(["pool-driver", dir.path().to_str().unwrap()])
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids: Vec<u32> = loop {
        if let Ok(text) = std::fs::read_to_string(dir.path().join("pids")) {
            break text.lines().map(|l| l.parse().unwrap()).collect();
        }
        if Instant::now() > deadline {
            let _ = driver.kill();
            return Err("the driver never reported its workers".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    driver.kill().map_err(|e| e.to_string())?;
    let _ = driver.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        ensure!(
            Instant::now() < deadline,
            "workers {pids:?} outlived their killed driver by 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pitch::task! {
    pub fn pool_bad_init() -> u32 { panic!("no model file") }
}

pitch::task! {
    /// Fails the first time (leaving `marker`), as a file system that hiccuped would.
    pub fn pool_flaky_init(marker: PathBuf) -> u32 {
        if std::fs::OpenOptions::new().write(true).create_new(true).open(&marker).is_ok() {
            panic!("the model file could not be read");
        }
        7
    }
}

fn init_failure() -> Result<(), String> {
    let dir = temp();
    // A failure the next start does not repeat: the worker is started again, tasks run.
    let marker = dir.path().join("failed-once");
    let flaky = build(
        pool(&dir.path().join("c1"), 1).init_function(pool_flaky_init::init(marker.clone())),
    )?;
    pool_pid::submit(&flaky)
        .result()
        .map_err(|e| format!("after a failed init: {e}"))?;
    ensure!(marker.exists(), "the init function never failed");
    drop(flaky);
    // One that always fails fails the tasks (after the tries), naming it.
    let exe = build(pool(&dir.path().join("cache"), 2).init_function(pool_bad_init::init()))?;
    match pool_pid::submit(&exe).result() {
        Err(TaskError::Launch { what, detail, .. }) => {
            ensure!(what.contains("pool_bad_init"), "{what}");
            ensure!(detail.contains("no model file"), "{detail}");
        }
        other => return Err(format!("expected the init failure, got {other:?}")),
    }
    Ok(())
}

pitch::task! {
    pub fn pool_factor(f: u64) -> u64 { f }
}

pitch::task! {
    pub fn pool_scaled(i: u64) -> Result<u64, pitch::WorkerStateError> {
        Ok(i * *pitch::worker_state::<u64>()?)
    }
}

fn init_function_is_part_of_the_key() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let run = |factor: u64| -> Result<(Vec<u64>, u64), String> {
        let exe = build(pool(&cache, 2).init_function(pool_factor::init(factor)))?;
        let values = pitch::wait_all(pool_scaled::map(&exe, 0..50)).map_err(|e| e.to_string())?;
        Ok((values, exe.shutdown(Shutdown::Wait).cached))
    };
    let (twice, cached) = run(2)?;
    ensure!(twice[7] == 14 && cached == 0, "{twice:?} {cached}");
    // Another init function argument: nothing stale comes from the cache.
    let (thrice, cached) = run(3)?;
    ensure!(thrice[7] == 21 && cached == 0, "{thrice:?} {cached}");
    let (again, cached) = run(2)?;
    ensure!(again == twice && cached == 50, "{cached} cached");
    // The type asked for must be the init function's output type.
    let exe = build(pool(&cache, 1).init_function(pool_factor::init(2)))?;
    let wrong = pool_whoami::submit(&exe.with_cache(false), 0).result();
    match wrong {
        Err(TaskError::Failed { chain }) => ensure!(
            chain[0].contains("asked for a u32") && chain[0].contains("returns a u64"),
            "{chain:?}"
        ),
        other => return Err(format!("{other:?}")),
    }
    Ok(())
}

fn profile() -> Result<(), String> {
    let dir = temp();
    let path = dir.path().join("pitch.toml");
    std::fs::write(
        &path,
        "[profile.pooled]\nbackend = \"single-node\"\nmax_cores = 2\nmax_workers = 2\n\
         block_allocation = true\ncache_directory = \"cache\"\n\n\
         [profile.wrong]\nbackend = \"slurm\"\nmin_workers = 2\n",
    )
    .map_err(|e| e.to_string())?;
    let profiles = pitch::profile::load(&path).map_err(|e| e.to_string())?;
    let pooled = profiles.get("pooled").map_err(|e| e.to_string())?;
    let exe = Executor::from_settings(pooled, Vec::new()).map_err(|e| e.to_string())?;
    let values: BTreeSet<u64> = pitch::wait_all((0..20).map(|i| pool_square::submit(&exe, i)))
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    ensure!(values.len() == 20, "values {values:?}");
    let workers = worker_pids(&exe)?;
    ensure!(workers.len() == 2, "{workers:?}");
    drop(exe);
    let cache = dir.path().join("cache");
    ensure!(
        std::fs::read_dir(cache.join("log"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 1,
        "no result log in {}",
        cache.display()
    );
    ensure!(
        std::fs::read_dir(cache.join("tasks")).unwrap().count() == 0,
        "pooled tasks left task directories"
    );
    let wrong = profiles.get("wrong").map_err(|e| e.to_string())?;
    match Executor::from_settings(wrong, Vec::new()) {
        Err(e) => ensure!(e.to_string().contains("block_allocation"), "{e}"),
        Ok(_) => {
            return Err(
                "min_workers without block_allocation on a slurm profile was accepted".into(),
            )
        }
    }
    Ok(())
}

pitch::task! {
    /// This rank, the rank count, and the rank's pid.
    pub fn pool_rank(i: u64) -> (u32, u32, u32, u64) {
        let c = pitch::context();
        (c.rank, c.size, std::process::id(), i)
    }
}

pitch::task! {
    pub fn pool_rank_fails(bad: u32) -> u32 {
        let rank = pitch::context().rank;
        if rank == bad { panic!("rank {rank} fails") }
        rank
    }
}

fn two_rank_workers() -> Result<(), String> {
    let dir = temp();
    let exe = build(
        pool(&dir.path().join("cache"), 1)
            .max_cores(2)
            .resources(Resources::new().cores(2))
            .init_function(pool_init::init(dir.path().to_path_buf())),
    )?;
    // Every rank runs every task; submit_ranks gets them in rank order.
    let all = pitch::wait_all((0..20).map(|i| pool_rank::submit_ranks(&exe, i)))
        .map_err(|e| e.to_string())?;
    let mut pids = BTreeSet::new();
    for (i, ranks) in all.iter().enumerate() {
        ensure!(ranks.len() == 2, "task {i}: {ranks:?}");
        for (r, (rank, size, pid, arg)) in ranks.iter().enumerate() {
            ensure!(
                *rank == r as u32 && *size == 2 && *arg == i as u64,
                "task {i}: {ranks:?}"
            );
            pids.insert(*pid);
        }
    }
    // One worker of two ranks: two processes ran everything, and each ran its init once.
    ensure!(pids.len() == 2, "ranks ran in {pids:?}");
    let inits = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .starts_with("init-")
        })
        .count();
    ensure!(inits == 2, "{inits} init runs for two ranks");
    // submit gives rank 0's value; a failing rank fails the task, naming the rank.
    let first = pool_rank::submit(&exe, 99)
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(first.0 == 0, "{first:?}");
    match pool_rank_fails::submit(&exe, 1).result() {
        Err(TaskError::Rank { rank, size, cause }) => {
            ensure!(rank == 1 && size == 2, "rank {rank} of {size}");
            ensure!(matches!(*cause, TaskError::Panicked { .. }), "{cause:?}");
        }
        other => return Err(format!("{other:?}")),
    }
    // The worker survives a failing rank; a task asking for one rank is refused.
    let again = pool_rank::submit(&exe, 100)
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(
        pids.contains(&again.2),
        "a new worker after a panic: {again:?}"
    );
    match pool_pid::submit(&exe.with_resources(Resources::new().cores(1))).result() {
        Err(TaskError::Rejected { reason, .. }) => {
            ensure!(reason.contains("cores = 2"), "{reason}")
        }
        other => return Err(format!("{other:?}")),
    }
    // Rank 1 killed with SIGKILL mid-task: the task fails naming the worker, which is
    // replaced (mpiexec and its ranks), and the next task runs on fresh ranks.
    let victim = pool_rank_victim::submit(&exe, dir.path().to_path_buf());
    let pid = victim_pid(dir.path())?;
    kill9(pid)?;
    match victim.result() {
        Err(e) => ensure!(e.to_string().contains("pool worker 0"), "{e}"),
        Ok(v) => return Err(format!("the killed task returned {v}")),
    }
    let after = pool_rank::submit_ranks(&exe, 101)
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(
        after.len() == 2 && after.iter().all(|r| !pids.contains(&r.2) && r.2 != pid),
        "after the kill: {after:?}"
    );
    Ok(())
}

pitch::task! {
    /// Rank 1 writes its pid to `dir/pid`; every rank sleeps.
    pub fn pool_rank_victim(dir: PathBuf) -> u32 {
        if pitch::context().rank == 1 {
            std::fs::write(dir.join("pid.tmp"), std::process::id().to_string()).unwrap();
            std::fs::rename(dir.join("pid.tmp"), dir.join("pid")).unwrap();
        }
        std::thread::sleep(Duration::from_secs(60));
        0
    }
}

fn gc_compact_killed_and_rerun() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    // Per-task directories: a process per task, functions and sweep-like commands.
    let exe = build(
        SingleNodeExecutor::builder()
            .cache_directory(&cache)
            .max_cores(2),
    )?;
    let squares = pitch::wait_all(pool_square::map(&exe, 0..300)).map_err(|e| e.to_string())?;
    let commands = (0..20).map(|i| {
        pitch::Command::new("true")
            .arg(i.to_string())
            .env("PITCH_PARAM_I", i.to_string())
    });
    pitch::wait_all(exe.map_commands(commands)).map_err(|e| e.to_string())?;
    drop(exe);
    let before = pitch::Cache::open(&cache)
        .and_then(|c| c.tasks())
        .map_err(|e| e.to_string())?;
    ensure!(before.len() == 320, "{} tasks", before.len());
    // SIGKILL `pitch gc --compact` at growing delays, then let it finish.
    let gc = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"));
        cmd.args(["gc", "--compact", "--cache-dir"]).arg(&cache);
        cmd.stdout(std::process::Stdio::piped());
        cmd
    };
    for delay_ms in [0u64, 2, 5, 10, 20, 40] {
        let mut child = gc().spawn().map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = gc().output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "{text}");
    ensure!(text.contains("kept 0"), "{text}");
    let after = pitch::Cache::open(&cache)
        .and_then(|c| c.tasks())
        .map_err(|e| e.to_string())?;
    ensure!(after.len() == 320, "{} tasks after compaction", after.len());
    ensure!(
        after.iter().all(|t| t.state == pitch::TaskState::Finished),
        "not all finished"
    );
    let cmd = after
        .iter()
        .find(|t| t.params == vec![("I".to_string(), "7".to_string())])
        .ok_or("the command with I=7 lost its parameters")?;
    ensure!(
        cmd.argv == Some(vec!["true".to_string(), "7".to_string()]) && cmd.exit_code == Some(0),
        "{cmd:?}"
    );
    let entries = count_entries(&cache);
    ensure!(entries <= 20, "{entries} entries after compaction");
    // A rerun answers everything from the logs.
    let exe = build(SingleNodeExecutor::builder().cache_directory(&cache))?;
    let again = pitch::wait_all(pool_square::map(&exe, 0..300)).map_err(|e| e.to_string())?;
    let commands = (0..20).map(|i| {
        pitch::Command::new("true")
            .arg(i.to_string())
            .env("PITCH_PARAM_I", i.to_string())
    });
    pitch::wait_all(exe.map_commands(commands)).map_err(|e| e.to_string())?;
    let summary = exe.shutdown(Shutdown::Wait);
    ensure!(again == squares, "different values");
    ensure!(summary.cached == 320, "{summary:?}");
    Ok(())
}

/// Waits (up to two minutes of queue wait, not a timing assertion) until `n` distinct
/// workers answer: a worker whose `flux run` job waits for cores answers only once it starts.
fn flux_workers_running(exe: &Executor, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pids = worker_pids(exe)?;
        if pids.len() == n {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {n} workers answered within 2 minutes: {pids:?}",
            pids.len()
        );
    }
}

/// The FluxJobExecutor pool's driver, run inside the real Flux instance with the recording
/// shim first on PATH (`e2e pool-flux-driver NAME DIR`).
pub(crate) fn flux_driver(dir: &Path) -> i32 {
    let run = || -> Result<(), String> {
        let marks = dir.join("marks");
        std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
        let exe = pitch::FluxJobExecutor::builder()
            .cache_directory(dir.join("cache"))
            .block_allocation(true)
            .max_workers(2)
            .init_function(pool_init::init(marks.clone()))
            .build()
            .map_err(|e| e.to_string())?;
        let out = pitch::wait_all(pool_whoami::map(&exe, 0..100)).map_err(|e| e.to_string())?;
        for (pid, init, _) in &out {
            ensure!(pid == init, "{pid} saw {init}");
        }
        // A worker is a Flux job: when the instance is busy (other tests' jobs), the second
        // one waits for cores and the first may have run all 100 tasks meanwhile.
        flux_workers_running(&exe, 2)?;
        let inits = std::fs::read_dir(&marks)
            .map_err(|e| e.to_string())?
            .count();
        ensure!(inits == 2, "{inits} init runs");
        let calls = std::fs::read_to_string(dir.join("flux.log")).map_err(|e| e.to_string())?;
        let runs: Vec<&str> = calls
            .lines()
            .filter(|l| l.contains("__pitch-worker pool"))
            .collect();
        ensure!(runs.len() == 2, "worker jobs: {runs:?}");
        ensure!(
            runs.iter()
                .all(|l| l.contains("run -n 1 -c 1 -o exit-on-error")),
            "{runs:?}"
        );
        // Cancel stops the flux run job of the worker and a new one replaces it.
        let long = pool_sleep::submit(&exe, 60_000);
        std::thread::sleep(Duration::from_millis(300));
        let start = Instant::now();
        long.cancel();
        ensure!(
            long.result() == Err(TaskError::Cancelled),
            "{:?}",
            long.result()
        );
        ensure!(
            start.elapsed() < Duration::from_secs(5),
            "cancel took {:?}",
            start.elapsed()
        );
        flux_workers_running(&exe, 2)?;
        drop(exe);
        // 2-rank worker jobs: every rank runs every task.
        let wide = pitch::FluxJobExecutor::builder()
            .cache_directory(dir.join("cache2"))
            .block_allocation(true)
            .max_workers(1)
            .resources(Resources::new().cores(2))
            .build()
            .map_err(|e| e.to_string())?;
        let ranks = pool_rank::submit_ranks(&wide, 3)
            .result()
            .map_err(|e| e.to_string())?;
        ensure!(
            ranks.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>() == vec![(0, 2), (1, 2)],
            "{ranks:?}"
        );
        Ok(())
    };
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn flux_job_pool() -> Result<(), String> {
    let flux = crate::flux::real_flux()?
        .ok_or("no Flux instance (FLUX_URI unset): this test needs a real Flux")?;
    let dir = temp();
    let mut cmd = crate::flux::driver_command("pool-flux-driver", "pool", dir.path(), Some(&flux))?;
    cmd.arg(dir.path());
    let out = cmd.output().map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "the driver failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Issue 11: a busy worker takes its slots from the executor's `max_cores`, as the commands
/// do: with 2 cores, 2 pooled tasks and 2 commands never run more than 2 at once.
fn commands_and_workers_share_cores() -> Result<(), String> {
    let dir = temp();
    let exe = build(pool(&dir.path().join("cache"), 2))?;
    let marks = dir.path().to_path_buf();
    let mut futures = Vec::new();
    let mut commands = Vec::new();
    for i in 0..2 {
        let script = format!(
            "s=$(date +%s%N); sleep 0.6; echo \"$s $(date +%s%N)\" > {}/cmd{i}",
            marks.display()
        );
        commands.push(exe.submit_command(pitch::Command::new("sh").args(["-c", &script])));
        futures.push(pool_interval::submit(
            &exe,
            marks.clone(),
            format!("fn{i}"),
            600,
        ));
    }
    for c in commands {
        c.result().map_err(|e| e.to_string())?;
    }
    for f in futures {
        f.result().map_err(|e| e.to_string())?;
    }
    let mut edges = Vec::new();
    for name in ["cmd0", "cmd1", "fn0", "fn1"] {
        let text = std::fs::read_to_string(marks.join(name)).map_err(|e| format!("{name}: {e}"))?;
        let (a, b) = text
            .trim()
            .split_once(' ')
            .ok_or(format!("{name}: {text:?}"))?;
        let (a, b): (u128, u128) = (
            a.parse().map_err(|_| text.clone())?,
            b.parse().map_err(|_| text.clone())?,
        );
        edges.push((a, 1i32));
        edges.push((b, -1i32));
    }
    // Ends before starts at the same instant.
    edges.sort();
    let (mut running, mut most) = (0, 0);
    for (_, d) in edges {
        running += d;
        most = most.max(running);
    }
    ensure!(most <= 2, "{most} tasks ran at once on 2 cores");
    Ok(())
}

/// Issue 17: `with_fresh` (`pitch sweep --fresh`) on a `block_allocation` executor runs a
/// finished pooled task again and its new result answers later runs; a fresh run that fails
/// keeps the finished result.
fn fresh_pooled() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let input = dir.path().join("n");
    let value = |fresh: bool| -> Result<Result<u64, TaskError>, String> {
        let exe = build(pool(&cache, 1))?.with_fresh(fresh);
        let r = pool_read::submit(&exe, input.clone()).result();
        exe.shutdown(Shutdown::Wait);
        Ok(r)
    };
    std::fs::write(&input, "1").map_err(|e| e.to_string())?;
    ensure!(value(false)? == Ok(1), "first run");
    std::fs::write(&input, "2").map_err(|e| e.to_string())?;
    ensure!(value(false)? == Ok(1), "answered from the cache");
    ensure!(value(true)? == Ok(2), "the fresh run");
    ensure!(value(false)? == Ok(2), "the fresh result answers");
    std::fs::write(&input, "bad").map_err(|e| e.to_string())?;
    ensure!(
        matches!(value(true)?, Err(TaskError::Panicked { .. })),
        "the fresh run fails"
    );
    ensure!(value(false)? == Ok(2), "the finished result stays");
    Ok(())
}
