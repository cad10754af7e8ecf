//! FluxClusterExecutor against a real Flux instance: each task (or pack) is a `flux batch`
//! job, a Flux instance of its own; `flux jobs` lists and reports jobs, `flux cancel` cancels.
//! They run when FLUX_URI names an instance (see `flux.rs`; PITCH_REAL_FLUX=1 makes a missing
//! one a failure). The recording shim first on the driver's PATH logs every `flux` call
//! (those made inside the batch jobs too) and the jobs `flux batch` accepted, in the
//! directory PITCH_FAKE_FLUX_STATE; the jobs a test leaves active are cancelled after it.
//!
//! As in `flux.rs`, each test runs in a child process of the test binary
//! (`e2e flux-cluster-driver NAME`) whose environment is set when it starts, never with
//! `std::env::set_var`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitch::{Command, EndReason, EventKind, Executor, FluxClusterExecutor, Resources, TaskError};

use crate::ensure;
use crate::flux::calls;
use crate::mpi::every_rank_answers;
use crate::single_node::{add, sleepy, temp, Collect};

const STATE_ENV: &str = "PITCH_FAKE_FLUX_STATE";

pitch::task! {
    pub fn plus_one(x: u64) -> u64 { x + 1 }
}
pitch::task! {
    pub fn slow_boom(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        panic!("upstream gives up after {ms} ms")
    }
}

pitch::task! {
    pub fn sum(x: u64, y: u64) -> u64 { x + y }
}

pitch::task! {
    /// Runs inside a FluxClusterExecutor's batch job (a Flux instance of its own): a
    /// FluxJobExecutor there runs a two-rank `flux run` step. The job's FLUX_URI, and what
    /// each rank of the step said (its rank and FLUX_URI).
    pub fn flux_steps_inside(cache: PathBuf) -> Result<(String, Vec<String>), pitch::Error> {
        let exe = pitch::FluxJobExecutor::builder().cache_directory(cache).build()?;
        let out = exe
            .with_resources(Resources::new().cores(2))
            .submit_command(Command::new("sh").args(["-c", "echo $FLUX_TASK_RANK $FLUX_URI"]))
            .result()?;
        let mut lines: Vec<String> =
            out.read_stdout().unwrap_or_default().lines().map(String::from).collect();
        lines.sort();
        Ok((std::env::var("FLUX_URI").unwrap_or_default(), lines))
    }
}

pitch::task! {
    /// (the Flux instance it runs in, its process id).
    pub fn flux_pilot_where(_i: u64) -> (String, u32) {
        (std::env::var("FLUX_URI").unwrap_or_default(), std::process::id())
    }
}

/// The test name after `flux_cluster::`, and the function the driver process runs.
const DRIVERS: &[(&str, crate::TestFn)] = &[
    (
        "a_flux_job_executor_inside_a_batch_job",
        a_flux_job_executor_inside_a_batch_job,
    ),
    ("the_same_future_twice", the_same_future_twice),
    (
        "a_dependency_flux_refuses_is_dependency_failed",
        a_dependency_flux_refuses_is_dependency_failed,
    ),
    (
        "a_job_flux_cannot_run_ends_at_once",
        a_job_flux_cannot_run_ends_at_once,
    ),
    (
        "cli_cancel_all_with_an_inactive_job",
        cli_cancel_all_with_an_inactive_job,
    ),
    ("function_and_command_tasks", function_and_command_tasks),
    ("pilots_sweep_with_a_dependency_chain", pilots_sweep),
    ("pilots_of_two_ranks", pilots_of_two_ranks),
    (
        "a_dependency_on_a_running_job",
        a_dependency_on_a_running_job,
    ),
    (
        "a_failed_upstream_fails_the_dependent",
        a_failed_upstream_fails_the_dependent,
    ),
    ("packed_map_is_two_batch_jobs", packed_map_is_two_batch_jobs),
    (
        "values_arrive_byte_identical_in_packs",
        values_arrive_byte_identical_in_packs,
    ),
    (
        "a_failure_in_a_pack_spares_its_neighbours_dependents",
        a_failure_in_a_pack_spares_its_neighbours_dependents,
    ),
    ("two_ranks_with_flux_run", two_ranks_with_flux_run),
    ("command_exiting_3", command_exiting_3),
    ("time_limit_is_timeout", time_limit_is_timeout),
    ("cancel_a_running_task", cancel_a_running_task),
    ("a_rejected_submission", a_rejected_submission),
    ("rerun_submits_nothing", rerun_submits_nothing),
    (
        "rerun_after_a_kill_once_flux_batch_was_accepted_runs_each_task_once",
        killed_after_flux_batch_accepted,
    ),
    // Not a test: the driver that killed_after_flux_batch_accepted kills and reruns.
    ("inner_packed_commands", inner_packed_commands),
    ("ignored_keys_warn_once", ignored_keys_warn_once),
    (
        "a_job_cancelled_outside_pitch",
        a_job_cancelled_outside_pitch,
    ),
    (
        "cli_status_and_cancel_ask_flux",
        cli_status_and_cancel_ask_flux,
    ),
    ("cli_run_says_flux_job", cli_run_says_flux_job),
    (
        "a_failed_rerun_keeps_the_finished_result",
        a_failed_rerun_keeps_the_finished_result,
    ),
    (
        "a_future_outliving_its_executor_ends",
        a_future_outliving_its_executor_ends,
    ),
    (
        "failures_give_the_errors_of_single_node",
        failures_give_the_errors_of_single_node,
    ),
    (
        "a_warned_job_checkpoints_and_a_rerun_resumes",
        a_warned_job_checkpoints_and_a_rerun_resumes,
    ),
    (
        "a_pilots_tasks_are_warned_before_its_wall_time",
        a_pilots_tasks_are_warned_before_its_wall_time,
    ),
    ("pilots_run_commands", pilots_run_commands),
];

macro_rules! outer {
    ($($name:ident),* $(,)?) => {
        $(fn $name() -> Result<(), String> {
            run_driver(stringify!($name))
        })*
        pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
            $((concat!("flux_cluster::", stringify!($name)), $name)),*
        ];
    };
}

mod outer {
    use super::run_driver;
    outer!(
        function_and_command_tasks,
        pilots_sweep_with_a_dependency_chain,
        pilots_of_two_ranks,
        a_flux_job_executor_inside_a_batch_job,
        the_same_future_twice,
        a_dependency_flux_refuses_is_dependency_failed,
        a_job_flux_cannot_run_ends_at_once,
        cli_cancel_all_with_an_inactive_job,
        a_dependency_on_a_running_job,
        a_failed_upstream_fails_the_dependent,
        packed_map_is_two_batch_jobs,
        values_arrive_byte_identical_in_packs,
        a_failure_in_a_pack_spares_its_neighbours_dependents,
        two_ranks_with_flux_run,
        command_exiting_3,
        time_limit_is_timeout,
        cancel_a_running_task,
        a_rejected_submission,
        rerun_submits_nothing,
        rerun_after_a_kill_once_flux_batch_was_accepted_runs_each_task_once,
        ignored_keys_warn_once,
        a_job_cancelled_outside_pitch,
        cli_status_and_cancel_ask_flux,
        cli_run_says_flux_job,
        a_failed_rerun_keeps_the_finished_result,
        a_future_outliving_its_executor_ends,
        failures_give_the_errors_of_single_node,
        a_warned_job_checkpoints_and_a_rerun_resumes,
        a_pilots_tasks_are_warned_before_its_wall_time,
        pilots_run_commands,
    );
}
pub(crate) use outer::TESTS;

/// Runs the driver `name` against the real Flux instance (skipped without one).
fn run_driver(name: &str) -> Result<(), String> {
    crate::flux::run_real_driver("flux-cluster-driver", name, &[])
}

/// The driver's entry (`e2e flux-cluster-driver NAME`): runs one test, prints its error,
/// exits 1.
pub(crate) fn driver(name: &str) -> i32 {
    crate::run_driver_named(DRIVERS, "flux_cluster", name)
}

fn state_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(STATE_ENV).expect("the state directory"))
}

/// What Flux says of job `id`: NAME, STATE, RESULT, RETURNCODE, EXCEPTION_TYPE,
/// EXCEPTION_NOTE (asked of the real flux, not through the recording shim).
pub(crate) fn record(id: u64) -> Option<Vec<String>> {
    let out = std::process::Command::new(crate::flux::real_bin())
        .args([
            "jobs",
            "--no-header",
            "--format={name}|{state}|{result}|{returncode}|{exception.type}|{exception.note}",
            &id.to_string(),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    Some(line.splitn(6, '|').map(|f| f.trim().to_string()).collect())
}

/// Waits up to `limit` for job `id` to reach `state`; its record then.
pub(crate) fn wait_for_state(id: u64, state: &str, limit: Duration) -> Result<Vec<String>, String> {
    let start = Instant::now();
    loop {
        let r = record(id);
        if let Some(r) = &r {
            if r[1] == state {
                return Ok(r.clone());
            }
        }
        ensure!(
            start.elapsed() < limit,
            "job {id} did not reach {state} within {limit:?}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The jobs the fake accepted, in order: decimal id and script.
fn submitted() -> Vec<(u64, PathBuf)> {
    std::fs::read_to_string(state_dir().join("submitted"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, script) = l.split_once(' ')?;
            Some((id.parse().ok()?, PathBuf::from(script)))
        })
        .collect()
}

/// The scripts of the `flux batch` calls so far.
fn batch_scripts() -> Result<Vec<PathBuf>, String> {
    Ok(calls()?
        .iter()
        .filter_map(|c| c.strip_prefix("batch "))
        .map(PathBuf::from)
        .collect())
}

/// The `# flux:` lines of a job script, without the prefix.
fn directives(script: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(script).map_err(|e| format!("{}: {e}", script.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("# flux: "))
        .map(String::from)
        .collect())
}

/// The id of the job that runs `f`, from the future.
fn job_of<T>(f: &pitch::TaskFuture<T>) -> Result<u64, String> {
    f.job_id()
        .ok_or("the task has no job id")?
        .parse()
        .map_err(|e| format!("job id: {e}"))
}

/// Waits for the task's job to be submitted; its id. Submission waits for the batch window
/// and a `flux batch` that takes 20-30 s on a loaded machine: a bound on waiting, not a timing
/// assertion.
fn wait_for_job<T>(f: &pitch::TaskFuture<T>) -> Result<u64, String> {
    let start = Instant::now();
    while f.job_id().is_none() {
        ensure!(
            start.elapsed() < Duration::from_secs(180),
            "no job within 180 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    job_of(f)
}

pub(crate) fn builder(cache: &Path) -> pitch::FluxClusterBuilder {
    FluxClusterExecutor::builder()
        .cache_directory(cache)
        .poll_interval(Duration::from_millis(100))
        .max_poll_interval(Duration::from_millis(400))
        .nfs_grace(Duration::from_secs(1))
}

fn cluster(cache: &Path) -> Result<Executor, String> {
    builder(cache).build().map_err(|e| e.to_string())
}

/// The cache directory as pitch may write it (as given, or canonical).
fn cache_forms(cache: &Path) -> Vec<PathBuf> {
    vec![cache.to_path_buf(), cache.canonicalize().unwrap()]
}

/// `block_allocation`: pilots are `flux batch` jobs (one each) that connect back to the
/// driver and run the function tasks; a rerun answers from the result log.
fn pilots_sweep() -> Result<(), String> {
    let dir = temp();
    let pilots = || two_pilots(dir.path());
    let exe = pilots()?;
    let out = pitch::wait_all(flux_pilot_where::map(&exe, 0..30)).map_err(|e| e.to_string())?;
    let workers: std::collections::BTreeSet<&(String, u32)> = out.iter().collect();
    ensure!(
        !workers.is_empty() && workers.len() <= 2,
        "30 tasks ran in {} processes, not in at most 2 pilots: {workers:?}",
        workers.len()
    );
    let here = std::env::var("FLUX_URI").unwrap_or_default();
    ensure!(
        workers
            .iter()
            .all(|(uri, _)| !uri.is_empty() && *uri != here),
        "a task ran outside a batch job's instance: {workers:?}"
    );
    let a = plus_one::submit(&exe, 1);
    let b = sum::submit(&exe, &a, 10);
    let c = sum::submit(&exe, &b, 100);
    ensure!(c.result() == Ok(112), "{:?}", c.result());
    let batches = batch_scripts()?.len();
    ensure!(
        (1..=2).contains(&batches),
        "{batches} flux batch calls for 2 pilots: {:#?}",
        calls()?
    );
    drop(exe);
    let exe = pilots()?;
    let again = pitch::wait_all(flux_pilot_where::map(&exe, 0..30)).map_err(|e| e.to_string())?;
    ensure!(again == out, "the rerun computed again");
    ensure!(
        batch_scripts()?.len() == batches,
        "the rerun submitted pilots: {:#?}",
        calls()?
    );
    // The first executor's pilots left when it closed: their jobs end.
    every_job_ends(Duration::from_secs(30))
}

pitch::task! {
    /// (rank, size, the Flux instance it runs in) of each rank.
    pub fn flux_pilot_rank(_i: u64) -> (u32, u32, String, String) {
        let ctx = pitch::context();
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        (ctx.rank, ctx.size, var("FLUX_URI"), var("FLUX_ENCLOSING_ID"))
    }
}

/// Pilots of two ranks (`cores = 2`): each batch job starts its ranks with `flux run`, every
/// task runs on both ranks of one pilot (each rank on a broker of that pilot's instance,
/// which names the batch job as `FLUX_ENCLOSING_ID`).
fn pilots_of_two_ranks() -> Result<(), String> {
    let dir = temp();
    let exe = builder(dir.path())
        .block_allocation(true)
        .max_workers(2)
        .pilot_address("127.0.0.1")
        .idle_timeout(Duration::from_secs(5))
        .resources(
            Resources::new()
                .run_time_max(Duration::from_secs(600))
                .cores(2),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let futures: Vec<_> = (0..6)
        .map(|i| flux_pilot_rank::submit_ranks(&exe, i))
        .collect();
    let here = std::env::var("FLUX_URI").unwrap_or_default();
    let mut instances = std::collections::BTreeSet::new();
    for f in futures {
        let ranks = f.result().map_err(|e| e.to_string())?;
        ensure!(
            ranks.len() == 2
                && ranks[0].0 == 0
                && ranks[1].0 == 1
                && ranks.iter().all(|r| r.1 == 2),
            "ranks: {ranks:?}"
        );
        ensure!(
            ranks[0].3 == ranks[1].3
                && !ranks[0].3.is_empty()
                && ranks.iter().all(|r| !r.2.is_empty() && r.2 != here),
            "the ranks did not run in one pilot's instance: {ranks:?}"
        );
        instances.insert(ranks[0].3.clone());
    }
    ensure!(
        instances.len() <= 2,
        "6 tasks in {} pilots: {instances:?}",
        instances.len()
    );
    drop(exe);
    every_job_ends(Duration::from_secs(30))
}

/// Waits up to `within` for every job submitted so far to be inactive (the pilots of a
/// closed executor leave).
pub(crate) fn every_job_ends(within: Duration) -> Result<(), String> {
    let ids: Vec<String> = std::fs::read_to_string(state_dir().join("submitted"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    let deadline = Instant::now() + within;
    loop {
        let out = std::process::Command::new(crate::flux::real_bin())
            .args(["jobs", "--no-header", "--format={state}"])
            .args(&ids)
            .output()
            .map_err(|e| e.to_string())?;
        let states = String::from_utf8_lossy(&out.stdout).into_owned();
        if states.lines().count() == ids.len() && states.lines().all(|s| s.trim() == "INACTIVE") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the pilots {ids:?} of a closed executor are still there: {states}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn function_and_command_tasks() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let f = add::submit(&exe, 2, 3);
    let c = exe.submit_command(Command::new("sh").args(["-c", "echo out; echo err >&2"]));
    ensure!(f.result() == Ok(5), "{:?}", f.result());
    let out = c.result().map_err(|e| e.to_string())?;
    ensure!(
        out.exit_code == 0 && out.read_stdout().ok().as_deref() == Some("out\n"),
        "{out:?}"
    );
    ensure!(out.stderr_tail == "err", "{out:?}");
    let scripts = batch_scripts()?;
    ensure!(scripts.len() == 2, "{:#?}", calls()?);
    let jobs_dirs: Vec<PathBuf> = cache_forms(dir.path())
        .iter()
        .map(|c| c.join("jobs"))
        .collect();
    let tag = format!("--job-name={}", exe.job_name().unwrap_or_default());
    for script in &scripts {
        ensure!(
            jobs_dirs
                .iter()
                .any(|d| script.parent() == Some(d.as_path())),
            "{} is not in the cache's jobs directory",
            script.display()
        );
        let d = directives(script)?;
        let outputs: Vec<String> = jobs_dirs
            .iter()
            .flat_map(|j| {
                // One shell word: the braces make the template's `flux` filter quote it.
                let path = format!("{}/flux-{{{{id.dec}}}}.out", j.display());
                [format!("--output={path}"), format!("--output='{path}'")]
            })
            .collect();
        ensure!(
            d.len() == 4
                && d[0] == tag
                && d[0].starts_with("--job-name=pitch-")
                && outputs.contains(&d[1])
                && d[2] == "--nslots=1"
                && d[3] == "--cores-per-slot=1",
            "{d:#?}"
        );
    }
    // The fake printed F58 ids; pitch decoded them to the decimal ids the fake allocated.
    let accepted = submitted();
    ensure!(accepted.len() == 2, "{accepted:?}");
    let mut ids = vec![job_of(&f)?, job_of(&c)?];
    ids.sort();
    ensure!(
        ids == [accepted[0].0, accepted[1].0] && ids[0] >= 250_000,
        "pitch's ids {ids:?}, the fake's {accepted:?}"
    );
    // `--output` with the decimal id pitch reports filled in by Flux.
    for (id, _) in &accepted {
        let log = dir.path().join("jobs").join(format!("flux-{id}.out"));
        ensure!(log.exists(), "no {}", log.display());
    }
    let poll = format!(
        "jobs --no-header --filter=pending,running --name={} --count=1000000 --format={{id}}|{{state}}",
        exe.job_name().unwrap_or_default()
    );
    ensure!(calls()?.contains(&poll), "{poll:?} not in {:#?}", calls()?);
    Ok(())
}

fn a_dependency_on_a_running_job() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let a = sleepy::submit(&exe, 1500);
    let b = plus_one::submit(&exe, &a);
    ensure!(b.result() == Ok(1501), "{:?}", b.result());
    let (a_id, b_id) = (job_of(&a)?, job_of(&b)?);
    let accepted = submitted();
    let b_script = &accepted
        .iter()
        .find(|(id, _)| *id == b_id)
        .ok_or(format!("job {b_id} not in {accepted:?}"))?
        .1;
    let d = directives(b_script)?;
    ensure!(
        d.contains(&format!("--dependency=afterok:{a_id}")),
        "b's script does not wait for a's job {a_id}: {d:#?}"
    );
    ensure!(batch_scripts()?.len() == 2, "{:#?}", calls()?);
    Ok(())
}

fn a_failed_upstream_fails_the_dependent() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let start = Instant::now();
    let a = slow_boom::submit(&exe, 800);
    let b = plus_one::submit(&exe, &a);
    let up = exe.submit_command(Command::new("sh").args(["-c", "sleep 0.8; exit 3"]));
    let down = exe.submit_command(Command::new("true").after(&up));
    match b.result() {
        Err(TaskError::DependencyFailed { input, key, cause }) => {
            ensure!(input.contains("slow_boom"), "input {input}");
            ensure!(key == a.key(), "key {key}");
            ensure!(matches!(*cause, TaskError::Panicked { .. }), "{cause:?}");
        }
        other => return Err(format!("expected DependencyFailed, got {other:?}")),
    }
    match down.result() {
        Err(TaskError::DependencyFailed { cause, .. }) => ensure!(
            matches!(*cause, TaskError::CommandFailed { code: 3, .. }),
            "{cause:?}"
        ),
        other => return Err(format!("expected DependencyFailed, got {other:?}")),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    // The dependents were queued behind their upstream jobs, and no job stays queued.
    ensure!(batch_scripts()?.len() == 4, "{:#?}", calls()?);
    for (f_id, up_id) in [(job_of(&b)?, job_of(&a)?), (job_of(&down)?, job_of(&up)?)] {
        let script = &submitted()
            .into_iter()
            .find(|(id, _)| *id == f_id)
            .unwrap()
            .1;
        ensure!(
            directives(script)?.contains(&format!("--dependency=afterok:{up_id}")),
            "{:#?}",
            directives(script)?
        );
        let r = wait_for_state(f_id, "INACTIVE", Duration::from_secs(30))?;
        // Flux fails a job whose afterok dependency can never be satisfied.
        ensure!(r[2] == "FAILED" && r[4] == "dependency", "{r:?}");
    }
    Ok(())
}

fn packed_map_is_two_batch_jobs() -> Result<(), String> {
    let dir = temp();
    let exe = builder(dir.path())
        .tasks_per_job(3)
        .build()
        .map_err(|e| e.to_string())?;
    let futures = add::map(&exe, (0..6).map(|i| (i, 10 * i)));
    let values = pitch::wait_all(futures).map_err(|e| e.to_string())?;
    ensure!(values == [0, 11, 22, 33, 44, 55], "{values:?}");
    let scripts = batch_scripts()?;
    ensure!(scripts.len() == 2, "{:#?}", calls()?);
    for s in &scripts {
        let d = directives(s)?;
        ensure!(d.contains(&"--nslots=1".to_string()), "{d:#?}");
    }
    Ok(())
}

/// Values with newlines, tabs, quotes, backslashes and `%` arrive byte-identical in a pack,
/// whose tasks run from one line each of its tasks file (issue 14), as an argument and in the
/// environment.
fn values_arrive_byte_identical_in_packs() -> Result<(), String> {
    let dir = temp();
    let exe = builder(dir.path())
        .tasks_per_job(4)
        .build()
        .map_err(|e| e.to_string())?;
    let values = [
        "line1\nline2",
        "tab\there, 'single' and \"double\" quotes",
        "back\\slash \\n, 100% %j {{id}}, $HOME `date` $(date)",
        "trailing newline\n",
    ];
    let futures = exe.map_commands(values.iter().map(|v| {
        Command::new("sh")
            .args(["-c", "printf '%s|%s' \"$1\" \"$VALUE\"", "sh", v])
            .env("VALUE", *v)
    }));
    for (f, v) in futures.iter().zip(values) {
        let out = f.result().map_err(|e| e.to_string())?;
        let got = out.read_stdout().map_err(|e| e.to_string())?;
        ensure!(got == format!("{v}|{v}"), "{v:?} arrived as {got:?}");
    }
    ensure!(batch_scripts()?.len() == 1, "one pack: {:#?}", calls()?);
    Ok(())
}

/// A pack whose one task fails: a dependent of another task of the pack still runs (it is
/// not queued with `afterok` behind the pack's job, which fails).
fn a_failure_in_a_pack_spares_its_neighbours_dependents() -> Result<(), String> {
    let dir = temp();
    let exe = builder(dir.path())
        .tasks_per_job(3)
        .build()
        .map_err(|e| e.to_string())?;
    let bad = slow_boom::submit(&exe, 300);
    let good = sleepy::submit(&exe, 600);
    let also = sleepy::submit(&exe, 700);
    let next = plus_one::submit(&exe, &good);
    ensure!(next.result() == Ok(601), "{:?}", next.result());
    ensure!(also.result() == Ok(700), "{:?}", also.result());
    ensure!(
        matches!(bad.result(), Err(TaskError::Panicked { .. })),
        "{:?}",
        bad.result()
    );
    let pack = job_of(&good)?;
    ensure!(
        job_of(&bad)? == pack && job_of(&also)? == pack,
        "not one pack: {:?} {:?} {:?}",
        bad.job_id(),
        good.job_id(),
        also.job_id()
    );
    let script = &submitted()
        .into_iter()
        .find(|(id, _)| *id == job_of(&next).unwrap())
        .unwrap()
        .1;
    // The pack's job failed (one of its tasks did): `afterok` on it would never hold, so
    // the dependent waited for its input's result rather than queue behind the pack.
    let r = wait_for_state(pack, "INACTIVE", Duration::from_secs(30))?;
    ensure!(r[2] == "FAILED", "{r:?}");
    ensure!(
        !directives(script)?
            .iter()
            .any(|d| d.starts_with("--dependency=")),
        "the dependent was queued behind the pack: {:#?}",
        directives(script)?
    );
    Ok(())
}

fn two_ranks_with_flux_run() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?.with_resources(Resources::new().cores(2));
    every_rank_answers(&exe)?;
    let scripts = batch_scripts()?;
    ensure!(scripts.len() == 1, "{:#?}", calls()?);
    let d = directives(&scripts[0])?;
    ensure!(
        d.contains(&"--nslots=2".to_string()) && d.contains(&"--cores-per-slot=1".to_string()),
        "{d:#?}"
    );
    // Inside the job (an instance of its own, whose `flux` is Flux's, not the recording
    // shim) the ranks start with one `flux run`; every_rank_answers saw both ranks.
    let text = std::fs::read_to_string(&scripts[0]).map_err(|e| e.to_string())?;
    ensure!(
        text.lines()
            .filter(|l| l.contains("flux run --ntasks=2 --cores-per-task=1 ")
                && l.contains(" __pitch-worker run "))
            .count()
            == 1,
        "the ranks do not start with flux run inside the job:\n{text}"
    );
    Ok(())
}

fn command_exiting_3() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let f = exe.submit_command(Command::new("sh").args(["-c", "echo problem >&2; exit 3"]));
    match f.result() {
        Err(TaskError::CommandFailed {
            program,
            code,
            stderr_tail,
        }) => {
            ensure!(program == "sh" && code == 3, "{program} {code}");
            ensure!(stderr_tail == "problem", "{stderr_tail:?}");
        }
        other => return Err(format!("expected CommandFailed, got {other:?}")),
    }
    // The job's own exit status is the command's.
    let r = wait_for_state(job_of(&f)?, "INACTIVE", Duration::from_secs(30))?;
    ensure!(r[2] == "FAILED" && r[3] == "3", "{r:?}");
    Ok(())
}

fn time_limit_is_timeout() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?
        .with_resources(Resources::new().run_time_max(Duration::from_millis(1500)));
    let start = Instant::now();
    let c = exe.submit_command(Command::new("sleep").arg("120"));
    let f = sleepy::submit(&exe, 120_000);
    for (what, r) in [
        ("command", c.result().map(|_| ())),
        ("function", f.result().map(|_| ())),
    ] {
        // Flux's TIMEOUT of a job whose limit is the task's run_time_max: the task's
        // Timeout, as on every backend.
        match r {
            Err(TaskError::Timeout { limit }) => {
                ensure!(limit == Duration::from_millis(1500), "{what}: {limit:?}");
            }
            other => return Err(format!("{what}: expected a Timeout, got {other:?}")),
        }
    }
    ensure!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    for s in batch_scripts()? {
        let d = directives(&s)?;
        ensure!(d.contains(&"--time-limit=2s".to_string()), "{d:#?}");
    }
    Ok(())
}

fn cancel_a_running_task() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let f = exe.submit_command(Command::new("sleep").arg("120"));
    let id = wait_for_job(&f)?;
    wait_for_state(id, "RUN", Duration::from_secs(30))?;
    let start = Instant::now();
    f.cancel();
    ensure!(f.result() == Err(TaskError::Cancelled), "{:?}", f.result());
    ensure!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let calls = calls()?;
    ensure!(calls.contains(&format!("cancel {id}")), "{calls:#?}");
    let r = wait_for_state(id, "INACTIVE", Duration::from_secs(30))?;
    ensure!(r[2] == "CANCELED" && r[4] == "cancel", "{r:?}");
    Ok(())
}

fn a_rejected_submission() -> Result<(), String> {
    let dir = temp();
    for attempt in 1..=2 {
        let exe = builder(dir.path())
            .queue("nosuchqueue")
            .build()
            .map_err(|e| e.to_string())?;
        match add::submit(&exe, 1, 2).result() {
            Err(TaskError::Rejected {
                backend,
                reason: detail,
            }) => {
                ensure!(backend == "flux", "{backend}");
                ensure!(
                    detail.starts_with("flux batch refused the job: "),
                    "{detail}"
                );
                ensure!(
                    // Flux 0.88 with queues configured; without any, "'nosuchqueue' is not a
                    // valid queue".
                    detail.contains("flux-batch: ERROR: Invalid queue 'nosuchqueue' specified")
                        || detail.contains("'nosuchqueue' is not a valid queue"),
                    "{detail}"
                );
            }
            other => return Err(format!("expected a Rejected error, got {other:?}")),
        }
        // Nothing was cached: the rerun submits again.
        let n = batch_scripts()?.len();
        ensure!(n == attempt, "attempt {attempt}: {n} batch calls");
    }
    ensure!(submitted().is_empty(), "{:?}", submitted());
    Ok(())
}

fn rerun_submits_nothing() -> Result<(), String> {
    let dir = temp();
    let run = |events: Collect| -> Result<(Vec<i64>, String), String> {
        let exe = builder(dir.path())
            .reporter(events)
            .build()
            .map_err(|e| e.to_string())?;
        let sums = pitch::wait_all(add::map(&exe, (0..3).map(|i| (i, i))));
        let out = exe
            .submit_command(Command::new("echo").arg("hi"))
            .result()
            .map_err(|e| e.to_string())?;
        Ok((
            sums.map_err(|e| e.to_string())?,
            out.read_stdout().unwrap_or_default(),
        ))
    };
    let first = run(Collect::default())?;
    ensure!(first == (vec![0, 2, 4], "hi\n".to_string()), "{first:?}");
    let n = batch_scripts()?.len();
    ensure!(n == 4, "{:#?}", calls()?);
    let events = Collect::default();
    let second = run(events.clone())?;
    ensure!(second == first, "{second:?}");
    ensure!(
        batch_scripts()?.len() == 4,
        "the rerun submitted again: {:#?}",
        calls()?
    );
    let cached = events.count(|e| matches!(e, EventKind::Cached { .. }));
    ensure!(cached == 4, "{cached} cached events");
    Ok(())
}

/// The driver `killed_after_flux_batch_accepted` starts (twice): four commands packed into
/// one `flux batch` job on the cache directory `$PITCH_INNER_DIR/cache`, each appending its
/// index to `$PITCH_INNER_DIR/runs.log`.
fn inner_packed_commands() -> Result<(), String> {
    let dir = PathBuf::from(std::env::var_os("PITCH_INNER_DIR").ok_or("no PITCH_INNER_DIR")?);
    let exe = builder(&dir.join("cache"))
        .tasks_per_job(4)
        .build()
        .map_err(|e| e.to_string())?;
    let log = dir.join("runs.log");
    let futures: Vec<_> = (0..4)
        .map(|i| {
            exe.submit_command(
                Command::new("sh").args(["-c", &format!("echo {i} >> {}; sleep 1", log.display())]),
            )
        })
        .collect();
    for f in futures {
        f.result().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Killed after `flux batch` submitted the job but before it printed the job id: the rerun
/// finds the job by its script (Flux keeps the script in the job's jobspec, not its path),
/// submits nothing and each task runs once.
fn killed_after_flux_batch_accepted() -> Result<(), String> {
    let dir = temp();
    let accepted = dir.path().join("accepted");
    // First on the killed driver's PATH: a flux whose `batch` submits (through the recording
    // shim, next on PATH), marks `accepted`, then hangs before printing the id.
    let bin = dir.path().join("slow-bin");
    std::fs::create_dir(&bin).map_err(|e| e.to_string())?;
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/flux-shim/flux");
    let slow = format!(
        "#!/bin/sh\nif [ \"$1\" = batch ]; then\n  out=$({} \"$@\") || exit $?\n  touch {}\n  \
         sleep 30\n  echo \"$out\"\n  exit 0\nfi\nexec {} \"$@\"\n",
        shim.display(),
        accepted.display(),
        shim.display()
    );
    std::fs::write(bin.join("flux"), slow).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("flux"), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let path = std::env::var_os("PATH").ok_or("no PATH")?;
    let slow_path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        .map_err(|e| e.to_string())?;
    let inner = |path: &std::ffi::OsStr| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["flux-cluster-driver", "inner_packed_commands"])
            .env("PITCH_INNER_DIR", dir.path())
            .env("PATH", path)
            .spawn()
            .map_err(|e| e.to_string())
    };
    let mut first = inner(&slow_path)?;
    let start = Instant::now();
    while !accepted.exists() {
        if start.elapsed() > Duration::from_secs(180) {
            let _ = first.kill();
            return Err("flux batch never accepted the job within 180 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().map_err(|e| e.to_string())?;
    first.wait().map_err(|e| e.to_string())?;
    let scripts = batch_scripts()?;
    let first = scripts
        .first()
        .ok_or("the first driver submitted nothing")?;
    // The four submits usually make one pack; on a loaded machine the batch window may split
    // them, and the killed driver never submitted the rest: those the rerun submits.
    let all_in_it = crate::submission::holds_every_task(first, 4)?;
    let before = scripts.len();
    let status = inner(&path)?.wait().map_err(|e| e.to_string())?;
    ensure!(status.success(), "the rerun failed: {status:?}");
    let after = batch_scripts()?.len();
    if all_in_it {
        ensure!(
            after == before,
            "the rerun submitted again for tasks already queued: {:#?}",
            calls()?
        );
    } else {
        ensure!(
            after > before,
            "the tasks outside the accepted job were never submitted"
        );
    }
    let mut runs: Vec<String> = std::fs::read_to_string(dir.path().join("runs.log"))
        .map_err(|e| e.to_string())?
        .lines()
        .map(String::from)
        .collect();
    runs.sort();
    ensure!(
        runs == ["0", "1", "2", "3"],
        "each task runs once: {runs:?}"
    );
    Ok(())
}

fn ignored_keys_warn_once() -> Result<(), String> {
    let dir = temp();
    let seen = Collect::default();
    let exe = builder(dir.path())
        .reporter(seen.clone())
        .build()
        .map_err(|e| e.to_string())?
        .with_resources(Resources::new().memory_max(1 << 30).qos("high"));
    seen.two_tasks_warn_once_about(&exe, &["memory_max", "qos"])?;
    let scripts = batch_scripts()?;
    ensure!(scripts.len() == 2, "{:#?}", calls()?);
    for s in scripts {
        let text = std::fs::read_to_string(&s).map_err(|e| e.to_string())?;
        ensure!(
            !text.contains("--mem") && !text.contains("qos") && !text.contains("high"),
            "{text}"
        );
    }
    Ok(())
}

fn a_job_cancelled_outside_pitch() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let f = sleepy::submit(&exe, 120_000);
    let id = wait_for_job(&f)?;
    wait_for_state(id, "RUN", Duration::from_secs(30))?;
    let start = Instant::now();
    let status = std::process::Command::new("flux")
        .args(["cancel", &id.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(status.success(), "flux cancel: {status}");
    match f.result() {
        Err(TaskError::Scheduler {
            job_id,
            state,
            detail,
        }) => {
            ensure!(job_id == id.to_string(), "{job_id}");
            ensure!(state == EndReason::Cancelled, "{state} {detail}");
            ensure!(detail.contains("exception cancel"), "{detail}");
        }
        other => return Err(format!("expected a CANCELED job, got {other:?}")),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    Ok(())
}

/// `pitch status` and `pitch cancel` on a cache directory of FluxClusterExecutor ask Flux
/// (one `flux jobs` call, one `flux cancel` call), not Slurm.
/// `pitch run --backend flux` names the Flux job it submitted, as a Flux job, and `--detach`
/// says so too before it returns.
fn cli_run_says_flux_job() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().display().to_string();
    for detach in [false, true] {
        let mut args = vec!["run", "--backend", "flux", "--cache-dir", &cache];
        if detach {
            args.push("--detach");
        }
        args.extend(["--", "echo", if detach { "detached" } else { "hi" }]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
            .args(&args)
            .output()
            .map_err(|e| e.to_string())?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        ensure!(out.status.success(), "{args:?}: {stdout}{stderr}");
        ensure!(
            stderr.contains("pitch: submitted as Flux job") && !stderr.contains("Slurm"),
            "{args:?}: {stderr}"
        );
        ensure!(detach || stdout == "hi\n", "{args:?}: stdout {stdout:?}");
    }
    // The detached job ends on its own (a bound on the instance's load, not a timing).
    every_job_ends(Duration::from_secs(120))
}

fn cli_status_and_cancel_ask_flux() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let f = exe.submit_command(Command::new("sleep").arg("120"));
    let id = wait_for_job(&f)?;
    wait_for_state(id, "RUN", Duration::from_secs(30))?;
    let pitch = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
            .args(args)
            .arg("--cache-dir")
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())
    };
    let out = pitch(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("1 run"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = calls()?.len();
    let out = pitch(&["cancel", "--all"])?;
    ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The executor's own poller keeps calling `flux jobs` meanwhile.
    let new: Vec<String> = calls()?[before..]
        .iter()
        .filter(|c| !c.starts_with("jobs "))
        .cloned()
        .collect();
    ensure!(new == [format!("cancel {id}")], "{new:#?}");
    match f.result() {
        Err(TaskError::Scheduler { state, .. }) => {
            ensure!(state == EndReason::Cancelled, "{state}")
        }
        other => return Err(format!("expected a CANCELED job, got {other:?}")),
    }
    Ok(())
}

/// A task with an explicit cache key and caching off runs again although it finished; when
/// that run fails, the finished result in the cache directory is not lost (the store's rule:
/// no failure replaces a finished result).
fn a_failed_rerun_keeps_the_finished_result() -> Result<(), String> {
    let dir = temp();
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "").map_err(|e| e.to_string())?;
    let check = || Command::new("test").args(["-e", marker.to_str().unwrap()]);
    // A new executor for each run (one executor hands out one future per key), alive until
    // its future has resolved.
    let exe =
        || -> Result<Executor, String> { Ok(cluster(dir.path())?.with_cache_key("calibration")) };
    let (one, two, three) = (exe()?, exe()?, exe()?);
    let first = one.submit_command(check());
    ensure!(first.result().is_ok(), "{:?}", first.result());
    std::fs::remove_file(&marker).map_err(|e| e.to_string())?;
    let again = two.with_cache(false).submit_command(check());
    let _ = again.result();
    ensure!(batch_scripts()?.len() == 2, "{:#?}", calls()?);
    let stored = pitch::__private::result_path(dir.path(), &first.key())?;
    let bytes = std::fs::read(&stored).map_err(|e| format!("{}: {e}", stored.display()))?;
    let rerun = three.submit_command(check());
    ensure!(
        rerun.result().is_ok(),
        "the finished result was lost ({} bytes stored): {:?}",
        bytes.len(),
        rerun.result()
    );
    ensure!(batch_scripts()?.len() == 2, "answered from the cache");
    Ok(())
}

/// Dropping a queue executor leaves its jobs running (detach); a future kept beyond it ends
/// at once with `TaskError::Detached` naming the cache directory, instead of hanging, and the
/// job still finishes.
fn a_future_outliving_its_executor_ends() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let f = exe.submit_command(Command::new("sleep").arg("2"));
    let id = wait_for_job(&f)?;
    drop(exe);
    let start = Instant::now();
    match f.result() {
        Err(TaskError::Detached { cache }) => {
            ensure!(
                cache_forms(dir.path())
                    .iter()
                    .any(|c| Path::new(&cache) == c),
                "{cache}"
            )
        }
        other => return Err(format!("expected Detached, got {other:?}")),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let r = wait_for_state(id, "INACTIVE", Duration::from_secs(30))?;
    ensure!(r[2] == "COMPLETED", "the job went on: {r:?}");
    Ok(())
}

/// The same future passed twice is one dependency: Flux fails a job that names the same
/// `afterok` twice ("Failed to remove dependency").
fn the_same_future_twice() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let a = sleepy::submit(&exe, 1500);
    let b = sum::submit(&exe, &a, &a);
    ensure!(b.result() == Ok(3000), "{:?}", b.result());
    let a_id = job_of(&a)?;
    let b_id = job_of(&b)?;
    let script = submitted()
        .into_iter()
        .find(|(id, _)| *id == b_id)
        .ok_or("b's job was not submitted")?
        .1;
    let deps: Vec<String> = directives(&script)?
        .into_iter()
        .filter(|d| d.starts_with("--dependency="))
        .collect();
    ensure!(deps == [format!("--dependency=afterok:{a_id}")], "{deps:?}");
    Ok(())
}

/// A dependent submitted after its input's job failed, before the poller noticed: Flux
/// refuses the `afterok` ("job N failed or was canceled"), and the task fails with
/// `DependencyFailed` naming its input, not with a launch error.
fn a_dependency_flux_refuses_is_dependency_failed() -> Result<(), String> {
    let dir = temp();
    // A slow poller: the input's job ends well before pitch looks.
    let exe = builder(dir.path())
        .poll_interval(Duration::from_secs(8))
        .max_poll_interval(Duration::from_secs(8))
        .build()
        .map_err(|e| e.to_string())?;
    let up = exe.submit_command(Command::new("sh").args(["-c", "exit 3"]));
    let up_id = wait_for_job(&up)?;
    wait_for_state(up_id, "INACTIVE", Duration::from_secs(30))?;
    ensure!(!up.done(), "the poller already saw the input fail");
    let down = exe.submit_command(Command::new("true").after(&up));
    match down.result() {
        Err(TaskError::DependencyFailed { key, cause, .. }) => {
            ensure!(key == up.key(), "{key}");
            ensure!(
                matches!(*cause, TaskError::CommandFailed { code: 3, .. }),
                "{cause:?}"
            );
        }
        other => return Err(format!("expected DependencyFailed, got {other:?}")),
    }
    // Flux refused the dependent's job.
    ensure!(batch_scripts()?.len() == 2, "{:#?}", calls()?);
    ensure!(submitted().len() == 1, "{:?}", submitted());
    Ok(())
}

/// A job Flux fails before it runs (a request the instance can never satisfy: a GPU it does
/// not have) is reported at once from its exception, not after `nfs_grace`.
fn a_job_flux_cannot_run_ends_at_once() -> Result<(), String> {
    let dir = temp();
    let exe = builder(dir.path())
        .nfs_grace(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let f = exe
        .with_resources(Resources::new().gpus_per_core(1))
        .submit_command(Command::new("true"));
    match f.result() {
        Err(TaskError::Scheduler { state, detail, .. }) => {
            // Flux's exception names the end: `FAILED (alloc)`.
            ensure!(state == "FAILED (alloc)", "{state} {detail}");
            ensure!(
                detail.contains("exception alloc: unsatisfiable request"),
                "{detail}"
            );
        }
        other => return Err(format!("expected a FAILED job, got {other:?}")),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(15),
        "reported after {:?}",
        start.elapsed()
    );
    Ok(())
}

/// `pitch cancel --all` when one of the unfinished tasks' jobs has already ended: Flux's
/// "job is inactive" is no failure, and the other job is cancelled.
fn cli_cancel_all_with_an_inactive_job() -> Result<(), String> {
    let dir = temp();
    let exe = cluster(dir.path())?;
    let gone = exe.submit_command(Command::new("sleep").arg("60"));
    let live = exe.submit_command(Command::new("sleep").arg("61"));
    let (gone_id, live_id) = (wait_for_job(&gone)?, wait_for_job(&live)?);
    // Detached: the jobs go on, and no one records how they end.
    drop(exe);
    let status = std::process::Command::new(crate::flux::real_bin())
        .args(["cancel", &gone_id.to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(status.success(), "flux cancel: {status}");
    wait_for_state(gone_id, "INACTIVE", Duration::from_secs(20))?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["cancel", "--all", "--cache-dir"])
        .arg(dir.path())
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = wait_for_state(live_id, "INACTIVE", Duration::from_secs(20))?;
    ensure!(r[2] == "CANCELED", "{r:?}");
    Ok(())
}

/// Nested Flux, the way Flux is used: a task of a FluxClusterExecutor builds a
/// FluxJobExecutor inside its batch job (an instance of its own) and runs `flux run` steps
/// there, not in the instance the driver submitted to.
fn a_flux_job_executor_inside_a_batch_job() -> Result<(), String> {
    let dir = temp();
    // Two cores for the job's instance: the step has two ranks.
    let exe = cluster(dir.path())?.with_resources(Resources::new().threads_per_core(2));
    let inner = dir.path().join("inner-cache");
    let (uri, lines) = flux_steps_inside::submit(&exe, inner.clone())
        .result()
        .map_err(|e| e.to_string())?;
    let outer = std::env::var("FLUX_URI").unwrap_or_default();
    ensure!(
        !uri.is_empty() && uri != outer,
        "the job's FLUX_URI {uri:?} (the driver's {outer:?})"
    );
    ensure!(
        lines == [format!("0 {uri}"), format!("1 {uri}")],
        "{lines:?} (the job's instance is {uri})"
    );
    ensure!(inner.is_dir(), "the nested executor's cache directory");
    Ok(())
}

/// One cause, one error (issue 15): the failing programs of the README's table give the
/// same errors on FluxJob and FluxCluster as on SingleNode.
fn failures_give_the_errors_of_single_node() -> Result<(), String> {
    use crate::failure_cases::{cases, differences};
    let dir = temp();
    let limit = Duration::from_secs(2);
    let single = pitch::SingleNodeExecutor::builder()
        .cache_directory(dir.path().join("single-node"))
        .build()
        .map_err(|e| e.to_string())?;
    let job = pitch::FluxJobExecutor::builder()
        .cache_directory(dir.path().join("flux-job"))
        .build()
        .map_err(|e| e.to_string())?;
    let batch = cluster(&dir.path().join("flux-cluster"))?;
    let (single, (job, batch)) = std::thread::scope(|s| {
        let job = s.spawn(|| cases(&job, dir.path(), limit));
        let batch = s.spawn(|| cases(&batch, dir.path(), limit));
        let single = cases(&single, dir.path(), limit);
        (single, (job.join().unwrap(), batch.join().unwrap()))
    });
    let diffs = differences(&single, &[("FluxJob", &job), ("FluxCluster", &batch)]);
    ensure!(diffs.is_empty(), "errors differ:\n{}", diffs.join("\n"));
    Ok(())
}

/// Checkpoint and requeue (issue 16): `flux batch --signal=SIGUSR1@25s` with a 40 s limit
/// warns the batch job's tasks (Flux signals the script's process group) 15 s after its
/// start: a function task checkpoints and a rerun resumes it; a command that traps the
/// signal exits 75.
fn a_warned_job_checkpoints_and_a_rerun_resumes() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    // Warned 15 s into its 40 s: room for a `flux batch` instance to start on a loaded
    // machine (with 5 s of 10 s, the warning came before the task ran, once).
    let warned = Resources::new()
        .run_time_max(Duration::from_secs(40))
        .checkpoint_grace(Duration::from_secs(25));
    let exe = |r: Resources| {
        builder(&cache)
            .resources(r)
            .build()
            .map_err(|e| e.to_string())
    };
    let first = exe(warned.clone())?;
    let state = dir.path().join("state");
    let script = format!(
        "trap 'echo saved > {}; exit 75' USR1; while :; do sleep 0.1; done",
        state.display()
    );
    let command = first.submit_command(Command::new("sh").args(["-c", &script]));
    // 30 s of work, warned 15 s into its 40 s.
    let log = dir.path().join("log");
    crate::checkpoint::checkpoint_then_resume(&cache, &log, 300, &first, None, || {
        exe(crate::checkpoint::unhurried()).expect("an executor")
    })?;
    match command.result() {
        Err(TaskError::Checkpointed { detail }) => {
            ensure!(detail.starts_with("exit code 75"), "{detail}")
        }
        other => return Err(format!("command: {other:?}")),
    }
    ensure!(state.exists(), "the command's trap did not run");
    let mut limited = 0;
    for s in batch_scripts()? {
        let d = directives(&s)?;
        if d.contains(&"--time-limit=40s".to_string()) {
            ensure!(d.contains(&"--signal=SIGUSR1@25s".to_string()), "{d:#?}");
            limited += 1;
        }
    }
    ensure!(limited > 0, "no batch script asked for --time-limit=40s");
    Ok(())
}

/// Pilots (issue 16): a pilot's tasks are warned `checkpoint_grace` before its wall time (the
/// executor's `run_time_max`, less 10 s for its start): here 40 s - 10 s - 20 s, 10 s after
/// it connected. The task checkpoints; the engine submits it again (`max_retries`), the
/// warned pilot takes no more work, and the task resumes on a new pilot and finishes. No
/// pilot job asks Flux for a signal (the driver warns them itself).
fn a_pilots_tasks_are_warned_before_its_wall_time() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let events = Collect::default();
    let exe = builder(&cache)
        .block_allocation(true)
        .max_workers(1)
        .pilot_address("127.0.0.1")
        .idle_timeout(Duration::from_secs(5))
        .resources(
            Resources::new()
                .run_time_max(Duration::from_secs(40))
                .checkpoint_grace(Duration::from_secs(20))
                .max_retries(1),
        )
        .reporter(events.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let log = dir.path().join("log");
    // 30 s of work in 100 ms steps, warned 10 s into it.
    let f = crate::checkpoint::long_sum::submit(&exe, 300, 100, log.clone());
    let (total, resumed_from) = f.result().map_err(|e| e.report().to_string())?;
    ensure!(total == 300 * 299 / 2, "sum {total}");
    ensure!(
        (1..300).contains(&resumed_from),
        "resumed from {resumed_from}"
    );
    let starts = std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        starts == format!("0\n{resumed_from}\n"),
        "attempts started from {starts:?}"
    );
    let retried = events.count(|e| {
        matches!(e, EventKind::Retrying { attempt, .. }
            if matches!(attempt.error, TaskError::Checkpointed { .. }))
    });
    ensure!(retried == 1, "{retried} retries of a checkpoint");
    for s in batch_scripts()? {
        let d = directives(&s)?;
        ensure!(!d.iter().any(|l| l.starts_with("--signal")), "{d:#?}");
    }
    drop(exe);
    every_job_ends(Duration::from_secs(30))
}

/// Commands in pilots (issue 12, item 5): 12 commands through 2 pilots run in the pilots'
/// instances (at most 2 `flux batch` calls, not one each), with exact outputs; a command
/// exiting 3 gives the error it gives as a batch job of its own (compared field for field);
/// one past its own `run_time_max` ends `Timeout` and the pilot serves on; a rerun answers
/// every command from the cache, running none (the marks file does not grow).
fn pilots_run_commands() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let marks = dir.path().join("marks");
    let pilots = || two_pilots(&cache);
    let marked = |i: usize| {
        Command::new("sh").args([
            "-c",
            "echo out $1; echo err $1 >&2; echo $1 $FLUX_URI >> \"$2\"",
            "sh",
            &i.to_string(),
            &marks.display().to_string(),
        ])
    };
    let runs = || -> (std::collections::BTreeSet<String>, usize) {
        let text = std::fs::read_to_string(&marks).unwrap_or_default();
        let uris = text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
            .collect();
        (uris, text.lines().count())
    };
    let exe = pilots()?;
    let futures: Vec<_> = (0..12).map(|i| exe.submit_command(marked(i))).collect();
    let mut outputs = Vec::new();
    for (i, f) in futures.iter().enumerate() {
        let out = f.result().map_err(|e| format!("command {i}: {e}"))?;
        let stderr = out.stderr.as_ref().map(std::fs::read_to_string);
        ensure!(
            out.read_stdout().map_err(|e| e.to_string())? == format!("out {i}\n")
                && matches!(&stderr, Some(Ok(t)) if *t == format!("err {i}\n")),
            "command {i}: {out:?}, stderr {stderr:?}"
        );
        outputs.push(out);
    }
    let (uris, count) = runs();
    let here = std::env::var("FLUX_URI").unwrap_or_default();
    ensure!(count == 12, "{count} runs of 12 commands");
    ensure!(
        !uris.is_empty() && uris.len() <= 2 && !uris.contains(&here),
        "12 commands ran in {} instances, not in the 2 pilots': {uris:?}",
        uris.len()
    );
    let batches = batch_scripts()?.len();
    ensure!(
        (1..=2).contains(&batches),
        "{batches} flux batch calls for 2 pilots: {:#?}",
        calls()?
    );
    // A failure: the error a batch job of its own gives (compared at the end).
    let failing = || Command::new("sh").args(["-c", "echo problem >&2; exit 3"]);
    let in_pilot = exe.submit_command(failing()).result();
    ensure!(
        matches!(&in_pilot, Err(TaskError::CommandFailed { code: 3, stderr_tail, .. }) if stderr_tail == "problem"),
        "{in_pilot:?}"
    );
    ensure!(
        batch_scripts()?.len() == batches,
        "the failing command was a batch job of its own: {:#?}",
        calls()?
    );
    // Its own run_time_max: Timeout, and the pilots serve on.
    let slow = exe
        .with_resources(Resources::new().run_time_max(Duration::from_secs(2)))
        .submit_command(Command::new("sleep").arg("60"));
    match slow.result() {
        Err(TaskError::Timeout { limit }) => {
            ensure!(limit == Duration::from_secs(2), "limit {limit:?}")
        }
        other => return Err(format!("expected a Timeout, got {other:?}")),
    }
    let next = exe
        .submit_command(marked(12))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(
        next.read_stdout().map_err(|e| e.to_string())? == "out 12\n",
        "{next:?}"
    );
    ensure!(
        batch_scripts()?.len() == batches,
        "new pilots after a timeout: {:#?}",
        calls()?
    );
    drop(exe);
    // The rerun: from the cache, nothing runs, no pilot.
    let exe = pilots()?;
    for (i, out) in outputs.iter().enumerate() {
        let again = exe
            .submit_command(marked(i))
            .result()
            .map_err(|e| e.to_string())?;
        ensure!(again == *out, "rerun of command {i}: {again:?} != {out:?}");
    }
    drop(exe);
    ensure!(
        runs().1 == 13,
        "the rerun ran commands again: {} runs",
        runs().1
    );
    ensure!(
        batch_scripts()?.len() == batches,
        "the rerun submitted pilots: {:#?}",
        calls()?
    );
    // Last (the pilots, idle meanwhile, would leave): the same command as a batch job of its
    // own.
    let as_job = cluster(&dir.path().join("cache-jobs"))?
        .submit_command(failing())
        .result();
    ensure!(
        as_job == in_pilot,
        "as a job: {as_job:?}; in a pilot: {in_pilot:?}"
    );
    every_job_ends(Duration::from_secs(30))
}

/// An executor of at most 2 pilots (wall time 600 s) on `cache`.
fn two_pilots(cache: &Path) -> Result<Executor, String> {
    builder(cache)
        .block_allocation(true)
        .max_workers(2)
        .pilot_address("127.0.0.1")
        .idle_timeout(Duration::from_secs(5))
        .resources(Resources::new().run_time_max(Duration::from_secs(600)))
        .build()
        .map_err(|e| e.to_string())
}
