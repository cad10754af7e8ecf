//! The Slurm cluster suite: runs against the real local Slurm that
//! `cluster-tests/start-slurm.sh` starts (source `$PITCH_SLURM_DIR/env.sh` first: without it
//! the suite does not run). Without a reachable Slurm every test is reported as ignored,
//! with the reason; with `PITCH_REQUIRE_SLURM=1` (as in `.ci/run`) a missing Slurm or env.sh
//! fails every test.
//!
//! The harness is `libtest-mimic` (`harness = false`: `pitch::init()` and the drivers below
//! come first): `cargo test --features remote --test slurm -- NAME_SUBSTRING`, `--exact`,
//! `--list`, `cargo nextest run --test slurm`. The tests run side by side, all at once unless
//! `--test-threads` or RUST_TEST_THREADS says otherwise.
//!
//! The test binary is also the worker and, for the restart test, the driver
//! (`slurm-driver <cache> <log> <n>`; `slurm-gone-driver <cache> <n> <grace>` for
//! array_elements_that_left_the_queue).

mod checkpoint;
mod exact;
#[path = "../common/failure_cases.rs"]
mod failure_cases;
#[path = "../common/long_sum.rs"]
mod long_sum;
mod parity;
mod pilot;
#[path = "../common/pilot_cases.rs"]
mod pilot_cases;
mod pool;
#[cfg(feature = "remote")]
mod remote;
#[cfg(feature = "remote")]
mod remote_pilot;
mod rerun;
mod retry;
#[path = "../common/slurm_tools.rs"]
mod slurm_tools;
#[path = "../common/submission.rs"]
mod submission;

use std::path::Path;
use std::time::{Duration, Instant};

use pitch::{Command, Executor, Resources, SlurmClusterExecutor, TaskError};

use slurm_tools::{path_with, scancel, which, write_wrapper};

pitch::task! {
    pub fn add(a: i64, b: i64) -> i64 { a + b }
}
pitch::task! {
    pub fn boom(message: String) -> u32 { panic!("{}", message) }
}
pitch::task! {
    pub fn node_name() -> String { pitch::context().node }
}
pitch::task! {
    /// (rank, size, node) of each rank.
    pub fn where_am_i() -> (u32, u32, String) {
        let ctx = pitch::context();
        (ctx.rank, ctx.size, ctx.node)
    }
}
pitch::task! {
    /// (node, Slurm step id) of a task run by srun.
    pub fn step_where() -> (String, String) {
        (pitch::context().node, std::env::var("SLURM_STEP_ID").unwrap_or_default())
    }
}
pitch::task! {
    /// Inside a SlurmCluster job: a SlurmJobExecutor of the job's allocation runs 8 srun steps
    /// (their (node, step id)); the allocation's size is read from the environment, so a task
    /// larger than it is refused (that error's text, or "not refused").
    pub fn nested_steps(cache: String) -> (Vec<(String, String)>, String) {
        let exe = match pitch::SlurmJobExecutor::builder().cache_directory(&cache).build() {
            Ok(exe) => exe,
            Err(e) => return (Vec::new(), format!("build: {e}")),
        };
        let steps: Vec<_> = (0..8)
            .map(|i| step_where::submit(&exe.with_cache_key(format!("step {i}"))))
            .collect();
        let found = steps.iter().filter_map(|f| f.result().ok()).collect();
        let cpus = std::env::var("SLURM_JOB_CPUS_PER_NODE").unwrap_or_default();
        let too_big = step_where::submit(&exe.with_resources(Resources::new().cores(64))).result();
        let refused = match too_big {
            Err(e) => format!("{e} (SLURM_JOB_CPUS_PER_NODE={cpus})"),
            Ok(_) => "not refused".into(),
        };
        (found, refused)
    }
}
pitch::task! {
    pub fn rank_one_panics() -> u32 {
        let ctx = pitch::context();
        if ctx.rank == 1 {
            panic!("rank one gives up");
        }
        std::thread::sleep(Duration::from_secs(30));
        ctx.rank
    }
}

#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

pub(crate) type TestFn = fn(&Path) -> Result<(), String>;

const TESTS: &[(&str, TestFn)] = &[
    ("function_and_command", function_and_command),
    (
        "command_task_directory_swapped_for_a_link_while_its_job_waits",
        command_task_directory_swapped_for_a_link,
    ),
    ("a_slow_map_is_one_submission", slow_map_is_one_submission),
    ("dependency_chain_across_jobs", dependency_chain),
    (
        "failed_upstream_cancels_dependents",
        failed_upstream_cancels_dependents,
    ),
    ("panic_and_exit_3", panic_and_exit_3),
    ("map_of_1000_becomes_arrays", map_of_1000_becomes_arrays),
    ("bad_partition_is_rejected_and_rerun", bad_partition),
    ("template_syntax_error", template_syntax_error),
    ("scancel_from_outside", scancel_from_outside),
    (
        "job_gone_without_result_names_the_state",
        job_gone_without_result,
    ),
    ("driver_killed_and_rerun", driver_killed_and_rerun),
    ("time_limit", time_limit),
    ("job_that_left_the_queue", job_that_left_the_queue),
    (
        "array_elements_that_left_the_queue",
        array_elements_that_left_the_queue,
    ),
    ("max_jobs_caps_the_queue", max_jobs_caps_the_queue),
    ("packed_array", packed_array),
    (
        "packed_failure_spares_dependents",
        packed_failure_spares_dependents,
    ),
    ("mpi_four_ranks_on_two_nodes", mpi_four_ranks),
    ("mpi_failing_rank_stops_the_others", mpi_failing_rank),
    ("mpi_c_hello_world_command", mpi_c_hello),
    (
        "slurm_job_executor_inside_an_allocation",
        slurm_job_executor,
    ),
    (
        "nested_slurm_job_executor_in_a_two_node_task",
        nested_slurm_job_executor,
    ),
    ("shutdown_cancel_scancels_every_job", shutdown_cancel),
    (
        "cli_cosmology_sweep_killed_and_resumed",
        cli_cosmology_sweep,
    ),
    ("cli_status_and_cancel", cli_status_and_cancel),
    ("cli_two_sweeps_at_once", cli_two_sweeps_at_once),
    (
        "cli_log_shows_scheduler_commands",
        cli_log_shows_scheduler_commands,
    ),
    ("cli_run_detach", cli_run_detach),
    ("cli_run_streams_from_a_job", cli_run_streams_from_a_job),
    (
        "cli_run_rejected_exits_125_and_detach_json",
        cli_run_rejected_and_detach_json,
    ),
];

fn executor(cache: &Path) -> Executor {
    SlurmClusterExecutor::builder()
        .cache_directory(cache)
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1))
        .build()
        .expect("a slurm executor")
}

/// PATH with a directory of wrappers first that count sbatch, squeue, scontrol and sacct
/// calls (in `dir/TOOL.calls`).
fn counting_path(dir: &Path) -> std::ffi::OsString {
    let bin = dir.join("bin");
    for tool in ["sbatch", "squeue", "scontrol", "sacct"] {
        let real = which(tool).expect("slurm tools on PATH");
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> {}/{tool}.calls\nexec {} \"$@\"\n",
            dir.display(),
            real.display()
        );
        write_wrapper(&bin, tool, &script).unwrap();
    }
    path_with(bin).unwrap()
}

/// A watch on when `f`'s job leaves the queue's PENDING state (it runs, or has ended): the
/// start of a run-time measurement, so that waiting in a busy queue does not count. Join the
/// handle after the task ended.
fn running_from<T: Send + 'static>(f: &pitch::TaskFuture<T>) -> std::thread::JoinHandle<Instant> {
    let f = f.clone();
    std::thread::spawn(move || {
        let id = loop {
            if let Some(id) = f.job_id() {
                break id;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        loop {
            let out = std::process::Command::new("squeue")
                .args(["-h", "-j", &id, "-o", "%T"])
                .output();
            let pending = out
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("PENDING"))
                .unwrap_or(false);
            if !pending {
                return Instant::now();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// Calls of `tool` made for this test: sbatch calls name a script in the test's directory;
/// squeue calls filter on the job name (the tests run side by side and share PATH).
fn calls(dir: &Path, tool: &str) -> usize {
    // sbatch's argument is a job script in this test's directory; other tests' calls may
    // go through the same wrappers.
    let tag = if tool == "sbatch" {
        dir.display().to_string()
    } else {
        String::new()
    };
    calls_naming(dir, tool, &tag)
}

/// The counted calls of `tool` whose arguments contain `needle`.
fn calls_naming(dir: &Path, tool: &str, needle: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{tool}.calls")))
        .map(|t| t.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

fn function_and_command(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let a = add::submit(&exe, 2, 3);
    let c = exe.submit_command(Command::new("sh").args(["-c", "echo hello from $SLURM_JOB_ID"]));
    ensure!(a.result() == Ok(5), "{:?}", a.result());
    let out = c.result().map_err(|e| e.to_string())?;
    ensure!(
        out.read_stdout().unwrap().starts_with("hello from "),
        "{out:?}"
    );
    ensure!(
        out.elapsed > Duration::ZERO,
        "the job script timed the command: {out:?}"
    );
    ensure!(a.job_id().is_some(), "job id known");
    let node = node_name::submit(&exe)
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(node.starts_with("node") || !node.is_empty(), "node {node}");
    Ok(())
}

fn dependency_chain(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let a = add::submit(&exe, 1, 1);
    let b = add::submit(&exe, &a, 10);
    let c = add::submit(&exe, &b, 100);
    ensure!(c.result() == Ok(112), "{:?}", c.result());
    Ok(())
}

fn failed_upstream_cancels_dependents(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let bad = exe.submit_command(Command::new("sh").args(["-c", "sleep 1; exit 4"]));
    let after = exe.submit_command(Command::new("true").after(&bad));
    let running = running_from(&bad);
    match after.result() {
        Err(TaskError::DependencyFailed { cause, .. }) => {
            ensure!(
                matches!(*cause, TaskError::CommandFailed { code: 4, .. }),
                "{cause:?}"
            )
        }
        other => return Err(format!("expected DependencyFailed, got {other:?}")),
    }
    // From the upstream's start: queue wait on a busy cluster does not count.
    let start = running.join().unwrap();
    ensure!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?} after the upstream started",
        start.elapsed()
    );
    Ok(())
}

/// A task's directory swapped for a link (to a copy of it elsewhere) while its job waits for
/// its input: the job script refuses to enter it, naming it, and does not run the command;
/// nothing is written through the link, and the task fails with the driver's refusal of
/// the same link.
fn command_task_directory_swapped_for_a_link(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let up = exe.submit_command(Command::new("sleep").arg("12"));
    let marker = dir.join("ran");
    let down = exe.submit_command(
        Command::new("sh")
            .args(["-c", &format!("echo FORGED; touch {}", marker.display())])
            .after(&up),
    );
    // Waits for its submission (queue time, not run time).
    ensure!(
        down.wait_job_id().is_some(),
        "the dependent was never submitted"
    );
    ensure!(
        !up.done(),
        "the input ended before the swap: the test proves nothing"
    );
    let task_dir = exe.task_directory(&down.key()).map_err(|e| e.to_string())?;
    let moved = dir.join("elsewhere");
    std::fs::rename(&task_dir, &moved).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&moved, &task_dir).map_err(|e| e.to_string())?;
    up.result().map_err(|e| e.to_string())?;
    match down.result() {
        Err(e) => {
            let e = e.to_string();
            ensure!(
                e.contains(&task_dir.display().to_string()) && e.contains("symbolic link"),
                "the error names the link: {e}"
            );
        }
        Ok(out) => return Err(format!("the link was followed: {out:?}")),
    }
    ensure!(!marker.exists(), "the command ran");
    let mut written: Vec<String> = std::fs::read_dir(&moved)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    ensure!(
        written == ["task.bin"],
        "written through the link: {written:?}"
    );
    // The job's log says why.
    let logs: String = std::fs::read_dir(dir.join("cache/jobs"))
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "log" || x == "out")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    ensure!(
        logs.contains("refusing the task directory") && logs.contains("is a symbolic link"),
        "the job log: {logs}"
    );
    Ok(())
}

fn panic_and_exit_3(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let p = boom::submit(&exe, "kaboom".to_string());
    let c = exe.submit_command(Command::new("sh").args(["-c", "echo bad >&2; exit 3"]));
    ensure!(
        matches!(p.result(), Err(TaskError::Panicked { ref message, .. }) if message == "kaboom"),
        "{:?}",
        p.result()
    );
    ensure!(
        matches!(c.result(), Err(TaskError::CommandFailed { code: 3, ref stderr_tail, .. }) if stderr_tail == "bad"),
        "{:?}",
        c.result()
    );
    Ok(())
}

/// Runs `f` with this process's PATH set to [`counting_path`] of `dir` (for executors built
/// in this process), then restores it. The tests that do this take turns: one restoring
/// the PATH while another counts would make the other's calls go uncounted.
pub(crate) fn with_counting_path<R>(dir: &Path, f: impl FnOnce() -> R) -> R {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let old = std::env::var_os("PATH").unwrap();
    std::env::set_var("PATH", counting_path(dir));
    let result = f();
    std::env::set_var("PATH", old);
    result
}

fn map_of_1000_becomes_arrays(dir: &Path) -> Result<(), String> {
    with_counting_path(dir, || {
        let exe = executor(&dir.join("cache"));
        let start = Instant::now();
        let futures = add::map(&exe, (0..1000).map(|i| (i, 1)));
        let values = pitch::wait_all(futures).map_err(|e| e.to_string())?;
        ensure!(values == (1..=1000).collect::<Vec<_>>(), "values");
        let sbatch = calls(dir, "sbatch");
        let squeue = calls(dir, "squeue");
        eprintln!(
            "  1000 tasks in {:?}: {sbatch} sbatch calls, {squeue} squeue calls",
            start.elapsed()
        );
        ensure!(sbatch <= 2, "{sbatch} sbatch calls for 1000 tasks");
        Ok(())
    })
}

/// A submission sbatch refuses fails `Rejected` with sbatch's message; it is recorded as a
/// failure, and a rerun (with a partition that exists) runs it.
fn bad_partition(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let exe = executor(&cache).with_resources(Resources::new().partition("no-such-partition"));
    let f = add::submit(&exe, 1, 2);
    match f.result() {
        Err(TaskError::Rejected { backend, reason }) => {
            ensure!(backend == "slurm", "{backend}");
            ensure!(reason.starts_with("sbatch refused the job: "), "{reason}");
            ensure!(reason.to_lowercase().contains("partition"), "{reason}");
        }
        other => return Err(format!("expected Rejected, got {other:?}")),
    }
    // Recorded as failed (pitch status: failed, not unfinished), never as a result: a
    // rerun submits it again.
    ensure!(
        matches!(
            pitch::__private::read_result(&cache, &f.key()),
            Ok(Err(TaskError::Rejected { .. }))
        ),
        "{:?}",
        pitch::__private::read_result(&cache, &f.key())
    );
    drop(exe);
    let rerun = executor(&cache);
    let again = add::submit(&rerun, 1, 2);
    ensure!(again.result() == Ok(3), "the rerun: {:?}", again.result());
    Ok(())
}

fn template_syntax_error(dir: &Path) -> Result<(), String> {
    let t = dir.join("bad.sh.j2");
    std::fs::write(
        &t,
        "#!/bin/bash\n#SBATCH --job-name={{ job_name }}\n{% if %}\n{{ command }}\n",
    )
    .unwrap();
    let err = SlurmClusterExecutor::builder()
        .cache_directory(dir.join("cache"))
        .template(&t)
        .build()
        .unwrap_err()
        .to_string();
    ensure!(err.contains("bad.sh.j2") && err.contains("line 3"), "{err}");
    Ok(())
}

fn scancel_from_outside(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let f = exe.submit_command(Command::new("sleep").arg("120"));
    let id = f.wait_job_id().ok_or("no job id")?;
    std::thread::sleep(Duration::from_secs(1));
    scancel(&id)?;
    match f.result() {
        Err(TaskError::Scheduler { state, job_id, .. }) => {
            ensure!(state == "CANCELLED", "state {state}");
            ensure!(job_id == id, "{job_id} {id}");
        }
        other => {
            return Err(format!(
                "expected a CANCELLED scheduler error, got {other:?}"
            ))
        }
    }
    Ok(())
}

fn job_gone_without_result(dir: &Path) -> Result<(), String> {
    // The command kills its own batch script: no exit file is written, the job FAILS.
    let exe = executor(&dir.join("cache"));
    let f = exe.submit_command(Command::new("sh").args(["-c", "kill -9 $PPID; sleep 5"]));
    match f.result() {
        Err(TaskError::Scheduler { state, .. }) => {
            ensure!(
                ["FAILED", "CANCELLED", "COMPLETED"].contains(&state.as_str())
                    || !state.as_str().is_empty(),
                "{state}"
            );
            eprintln!("  state learned: {state}");
        }
        other => return Err(format!("expected a scheduler error, got {other:?}")),
    }
    Ok(())
}

fn time_limit(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"))
        .with_resources(Resources::new().run_time_max(Duration::from_secs(60)));
    let f = exe.submit_command(Command::new("sleep").arg("600"));
    match f.result() {
        Err(TaskError::Timeout { limit }) => {
            ensure!(limit == Duration::from_secs(60), "{limit:?}")
        }
        other => return Err(format!("expected TIMEOUT, got {other:?}")),
    }
    Ok(())
}

fn scontrol_config() -> std::collections::HashMap<String, String> {
    let out = std::process::Command::new("scontrol")
        .args(["show", "config"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// MinJobAge and whether accounting is on; `None` (after saying why) when MinJobAge is too
/// long for a test to wait for jobs to leave the queue.
fn short_min_job_age(test: &str) -> Result<Option<(u64, bool)>, String> {
    let cfg = scontrol_config();
    let min_age: u64 = cfg
        .get("MinJobAge")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    if min_age > 30 {
        let msg =
            format!("MinJobAge is {min_age} s: start the cluster with PITCH_SLURM_MIN_JOB_AGE=10");
        if std::env::var_os("PITCH_REQUIRE_SLURM").is_some() {
            return Err(msg);
        }
        eprintln!("  {test}: not run: {msg}");
        return Ok(None);
    }
    let accounting = cfg
        .get("AccountingStorageType")
        .is_some_and(|t| t != "accounting_storage/none");
    Ok(Some((min_age, accounting)))
}

/// A job that dies without a result and has left squeue (MinJobAge passed) before the
/// poller gives up on it: its state comes from sacct (accounting on) or is UNKNOWN.
fn job_that_left_the_queue(dir: &Path) -> Result<(), String> {
    let Some((min_age, accounting)) = short_min_job_age("job_that_left_the_queue")? else {
        return Ok(());
    };
    let exe = SlurmClusterExecutor::builder()
        .cache_directory(dir.join("cache"))
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(min_age + 20))
        .build()
        .map_err(|e| e.to_string())?;
    let f = exe.submit_command(Command::new("sh").args(["-c", "kill -9 $PPID; sleep 5"]));
    match f.result() {
        Err(TaskError::Scheduler { state, detail, .. }) => {
            if accounting {
                ensure!(
                    state == "FAILED" || state == "CANCELLED",
                    "from sacct: {state} ({detail})"
                );
                ensure!(detail.contains("exit code"), "sacct detail: {detail}");
            } else {
                ensure!(
                    state == "UNKNOWN" && detail.contains("accounting"),
                    "{state}: {detail}"
                );
            }
            eprintln!("  left the queue; learned {state} ({detail})");
        }
        other => return Err(format!("expected a scheduler error, got {other:?}")),
    }
    Ok(())
}

/// The driver of `array_elements_that_left_the_queue`: `n` array elements that die without
/// a result, asked about only after `grace` seconds. Prints `JOB STATE` per task.
fn gone_driver(cache: &Path, n: usize, grace: u64) -> i32 {
    let exe = SlurmClusterExecutor::builder()
        .cache_directory(cache)
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(grace))
        .build()
        .expect("a slurm executor");
    // Every element dies at the same second (or at once, if it starts later), so that they
    // leave the queue together even on a busy cluster.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 10;
    let futures = exe.map_commands((0..n).map(|i| {
        Command::new("sh").args([
            "-c",
            &format!("t=$(({at} - $(date +%s))); [ $t -gt 0 ] && sleep $t; kill -9 $PPID; sleep 5; : {i}"),
        ])
    }));
    for f in futures {
        match f.result() {
            Err(TaskError::Scheduler { job_id, state, .. }) => println!("{job_id} {state}"),
            other => {
                eprintln!("expected a scheduler error, got {other:?}");
                return 1;
            }
        }
    }
    0
}

/// Eight array elements die without a result and leave the queue before the poller asks:
/// each learns its state, through one scontrol and one sacct call for the whole array (not
/// one per element).
fn array_elements_that_left_the_queue(dir: &Path) -> Result<(), String> {
    let Some((min_age, accounting)) = short_min_job_age("array_elements_that_left_the_queue")?
    else {
        return Ok(());
    };
    let n = 8;
    let path = counting_path(dir);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["slurm-gone-driver", dir.join("cache").to_str().unwrap()])
        .arg(n.to_string())
        .arg((min_age + 20).to_string())
        .env("PATH", &path)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "driver: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<(&str, &str)> = stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    ensure!(lines.len() == n, "{stdout}");
    let array = lines[0].0.split('_').next().unwrap_or_default().to_string();
    for (job, state) in &lines {
        ensure!(job.starts_with(&format!("{array}_")), "one array: {stdout}");
        if accounting {
            ensure!(
                *state == "FAILED" || *state == "CANCELLED",
                "{job}: {state}"
            );
        } else {
            ensure!(*state == "UNKNOWN", "{job}: {state}");
        }
    }
    let scontrol = calls_naming(dir, "scontrol", &array);
    let sacct = calls_naming(dir, "sacct", &array);
    eprintln!("  {n} elements gone: {scontrol} scontrol and {sacct} sacct calls");
    // One call per poller tick that sees elements pass the grace period: the elements end
    // together, so one or two ticks; one call per element would be `n`.
    ensure!(
        (1..=n / 2).contains(&scontrol),
        "{scontrol} scontrol calls for {n} elements"
    );
    ensure!(sacct <= n / 2, "{sacct} sacct calls for {n} elements");
    Ok(())
}

/// `max_jobs = 2`: never more than two of the executor's jobs in the queue at once.
fn max_jobs_caps_the_queue(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let exe = SlurmClusterExecutor::builder()
        .cache_directory(&cache)
        .poll_interval(Duration::from_millis(300))
        .max_poll_interval(Duration::from_secs(1))
        .nfs_grace(Duration::from_secs(1))
        .max_jobs(2)
        .build()
        .map_err(|e| e.to_string())?;
    let futures: Vec<_> = (0..6)
        .map(|i| exe.submit_command(Command::new("sh").args(["-c", &format!("sleep 2; echo {i}")])))
        .collect();
    let name = exe.job_name();
    let mut most = 0;
    while !futures.iter().all(|f| f.done()) {
        if let Some(name) = &name {
            let out = std::process::Command::new("squeue")
                .args(["-h", "-r", "-n", name, "-o", "%i"])
                .output()
                .unwrap();
            most = most.max(String::from_utf8_lossy(&out.stdout).lines().count());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    pitch::wait_all(futures).map_err(|e| e.to_string())?;
    ensure!(most <= 2, "{most} jobs were in the queue at once");
    ensure!(most >= 1, "the queue was never observed");
    Ok(())
}

/// `tasks_per_job = 5`: 20 tasks become one array of 4 elements.
fn packed_array(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let exe = SlurmClusterExecutor::builder()
        .cache_directory(&cache)
        .poll_interval(Duration::from_millis(500))
        .nfs_grace(Duration::from_secs(1))
        .tasks_per_job(4)
        .build()
        .map_err(|e| e.to_string())?;
    let futures = add::map(&exe, (0..20).map(|i| (i, 100)));
    let commands = exe.map_commands(
        (0..6).map(|i| Command::new("sh").args(["-c", &format!("echo {i}; exit {}", i % 2)])),
    );
    let values = pitch::wait_all(futures).map_err(|e| e.to_string())?;
    ensure!(values == (100..120).collect::<Vec<_>>(), "{values:?}");
    // 26 equal one-rank tasks, 4 per element: one array job of 7 elements.
    let ids: std::collections::BTreeSet<String> = commands
        .iter()
        .map(|c| c.job_id().unwrap_or_default())
        .collect();
    let arrays: std::collections::BTreeSet<&str> =
        ids.iter().filter_map(|i| i.split('_').next()).collect();
    ensure!(arrays.len() == 1, "one sbatch call: {ids:?}");
    ensure!(
        ids.iter().all(|i| i
            .split('_')
            .nth(1)
            .and_then(|x| x.parse::<u32>().ok())
            .is_some_and(|x| x < 7)),
        "element indexes: {ids:?}"
    );
    for (i, c) in commands.iter().enumerate() {
        let r = c.result();
        ensure!(r.is_ok() == (i % 2 == 0), "command {i}: {r:?}");
    }
    Ok(())
}

/// A packed element where one task fails: the dependent of its other task still runs
/// (it must not sit behind the element's `afterok`, which can never be satisfied; the time
/// bound is for a loaded cluster: the whole suite runs at once).
fn packed_failure_spares_dependents(dir: &Path) -> Result<(), String> {
    let exe = SlurmClusterExecutor::builder()
        .cache_directory(dir.join("cache"))
        .poll_interval(Duration::from_millis(500))
        .nfs_grace(Duration::from_secs(1))
        .tasks_per_job(2)
        .build()
        .map_err(|e| e.to_string())?;
    let pair = exe.map_commands([
        Command::new("sh").args(["-c", "sleep 2; echo fine"]),
        Command::new("sh").args(["-c", "sleep 2; exit 5"]),
    ]);
    let after_good = exe.submit_command(Command::new("echo").arg("after").after(&pair[0]));
    let after_bad = exe.submit_command(Command::new("echo").arg("never").after(&pair[1]));
    let running = running_from(&pair[1]);
    ensure!(
        matches!(after_bad.result(), Err(TaskError::DependencyFailed { .. })),
        "{:?}",
        after_bad.result()
    );
    // From the pair's start, not its wait in the queue: the failed task's dependent is
    // resolved without waiting for anything else.
    let start = running.join().unwrap();
    ensure!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?} after the pair started",
        start.elapsed()
    );
    let good = after_good.result();
    ensure!(good.is_ok(), "{good:?}");
    let (a, b) = (pair[0].job_id(), pair[1].job_id());
    ensure!(a.is_some() && a == b, "one element for both: {a:?} {b:?}");
    Ok(())
}

/// A `map` (and `map_commands`) whose items come slowly (300 ms apart, six batch windows:
/// a loaded machine descheduling the submitting thread) is still one job array.
fn slow_map_is_one_submission(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let slowly = |i: i64| {
        std::thread::sleep(Duration::from_millis(300));
        i
    };
    let sums = add::map(&exe, (0..4).map(|i| (slowly(i), 1)));
    let echoes = exe.map_commands((0..4).map(|i| Command::new("echo").arg(slowly(i).to_string())));
    let values = pitch::wait_all(sums.iter().cloned()).map_err(|e| e.to_string())?;
    ensure!(values == [1, 2, 3, 4], "{values:?}");
    pitch::wait_all(echoes.iter().cloned()).map_err(|e| e.to_string())?;
    let arrays = |ids: Vec<String>| {
        ids.iter()
            .map(|i| i.split('_').next().unwrap_or_default().to_string())
            .collect::<std::collections::BTreeSet<String>>()
    };
    let a = arrays(
        sums.iter()
            .map(|f| f.job_id().unwrap_or_default())
            .collect(),
    );
    let b = arrays(
        echoes
            .iter()
            .map(|f| f.job_id().unwrap_or_default())
            .collect(),
    );
    ensure!(
        a.len() == 1,
        "the function map took {} submissions: {a:?}",
        a.len()
    );
    ensure!(
        b.len() == 1,
        "map_commands took {} submissions: {b:?}",
        b.len()
    );
    Ok(())
}

fn mpi_exe(dir: &Path) -> Executor {
    executor(&dir.join("cache")).with_resources(Resources::new().cores(4).num_nodes(2))
}

fn check_ranks(all: &[(u32, u32, String)]) -> Result<(), String> {
    ensure!(all.len() == 4, "{all:?}");
    for (i, (rank, size, _)) in all.iter().enumerate() {
        ensure!(*rank == i as u32 && *size == 4, "{all:?}");
    }
    let nodes: std::collections::BTreeSet<&String> = all.iter().map(|(_, _, n)| n).collect();
    ensure!(nodes.len() == 2, "two nodes: {all:?}");
    Ok(())
}

fn mpi_four_ranks(dir: &Path) -> Result<(), String> {
    let all = where_am_i::submit_ranks(&mpi_exe(dir))
        .result()
        .map_err(|e| e.to_string())?;
    check_ranks(&all)
}

fn mpi_failing_rank(dir: &Path) -> Result<(), String> {
    let exe = mpi_exe(dir);
    let f = rank_one_panics::submit(&exe);
    let running = running_from(&f);
    match f.result() {
        Err(TaskError::Rank { rank, size, cause }) => {
            ensure!(rank == 1 && size == 4, "rank {rank} of {size}");
            ensure!(matches!(*cause, TaskError::Panicked { .. }), "{cause:?}");
        }
        other => return Err(format!("expected a rank failure, got {other:?}")),
    }
    // Run time, from the job's start: the other ranks sleep 30 s unless stopped.
    let start = running.join().unwrap();
    ensure!(
        start.elapsed() < Duration::from_secs(25),
        "other ranks not stopped: {:?} after the job started",
        start.elapsed()
    );
    Ok(())
}

fn mpi_c_hello(dir: &Path) -> Result<(), String> {
    let src = dir.join("hello.c");
    std::fs::write(
        &src,
        "#include <mpi.h>\n#include <stdio.h>\nint main(int c, char **v) { int r, n; MPI_Init(&c, &v);\n\
         MPI_Comm_rank(MPI_COMM_WORLD, &r); MPI_Comm_size(MPI_COMM_WORLD, &n);\n\
         int sum = 0; MPI_Allreduce(&r, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);\n\
         printf(\"rank %d of %d sum %d\\n\", r, n, sum); MPI_Finalize(); return 0; }\n",
    )
    .unwrap();
    let bin = dir.join("hello");
    let out = std::process::Command::new("mpicc")
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .output()
        .map_err(|e| format!("mpicc: {e}"))?;
    ensure!(
        out.status.success(),
        "mpicc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = mpi_exe(dir)
        .submit_command(Command::new(&bin))
        .result()
        .map_err(|e| e.to_string())?;
    let mut lines: Vec<String> = result
        .read_stdout()
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    ensure!(
        lines
            == (0..4)
                .map(|r| format!("rank {r} of 4 sum 6"))
                .collect::<Vec<_>>(),
        "{lines:?}"
    );
    Ok(())
}

/// Inside an allocation: the test submits this binary as an sbatch job running
/// `slurm-job-driver OUT`, which uses SlurmJobExecutor and writes what it saw to OUT.
fn job_driver(out: &Path) -> i32 {
    let report = (|| -> Result<String, String> {
        let exe = pitch::SlurmJobExecutor::builder()
            .cache_directory(out.with_extension("cache"))
            .build()
            .map_err(|e| e.to_string())?;
        let ranks =
            where_am_i::submit_ranks(&exe.with_resources(Resources::new().cores(4).num_nodes(2)))
                .result()
                .map_err(|e| e.to_string())?;
        check_ranks(&ranks)?;
        let too_big = add::submit(&exe.with_resources(Resources::new().cores(64)), 1, 1).result();
        ensure!(
            matches!(too_big, Err(TaskError::Rejected { ref reason, .. }) if reason.contains("allocation")),
            "{too_big:?}"
        );
        let one = add::submit(&exe, 20, 22)
            .result()
            .map_err(|e| e.to_string())?;
        ensure!(one == 42, "{one}");
        Ok(format!("ok {ranks:?}"))
    })();
    let text = match report {
        Ok(t) => t,
        Err(e) => format!("error {e}"),
    };
    std::fs::write(out, text).unwrap();
    0
}

fn slurm_job_executor(dir: &Path) -> Result<(), String> {
    // Outside an allocation it says so.
    if std::env::var_os("SLURM_JOB_ID").is_none() {
        let err = pitch::SlurmJobExecutor::builder()
            .cache_directory(dir.join("c"))
            .build()
            .unwrap_err()
            .to_string();
        ensure!(err.contains("SLURM_JOB_ID"), "{err}");
    }
    let out = dir.join("report.txt");
    let exe = std::env::current_exe().unwrap();
    let submitted = std::process::Command::new("sbatch")
        .args(["--parsable", "-N2", "-n4", "--output"])
        .arg(dir.join("driver.out"))
        .arg(format!(
            "--wrap={} slurm-job-driver {}",
            exe.display(),
            out.display()
        ))
        .output()
        .unwrap();
    ensure!(
        submitted.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = std::fs::read_to_string(&out).map_err(|e| {
        format!(
            "no report ({e}); driver output: {}",
            std::fs::read_to_string(dir.join("driver.out")).unwrap_or_default()
        )
    })?;
    ensure!(report.starts_with("ok "), "{report}");
    Ok(())
}

/// Issue 17: executorlib's "combine both" pattern: a SlurmCluster task of two nodes builds a
/// SlurmJobExecutor inside its job, which sizes itself from the job's allocation and runs 8
/// srun steps there, on both nodes.
fn nested_slurm_job_executor(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let task = nested_steps::submit(
        &exe.with_resources(Resources::new().num_nodes(2)),
        dir.join("inner").display().to_string(),
    );
    let (steps, refused) = task.result().map_err(|e| e.to_string())?;
    let job = task.job_id().unwrap_or_default();
    ensure!(
        steps.len() == 8,
        "{} of 8 steps ran: {steps:?}",
        steps.len()
    );
    let ids: std::collections::BTreeSet<&String> = steps.iter().map(|(_, s)| s).collect();
    ensure!(
        ids.len() == 8 && !ids.contains(&String::new()),
        "not 8 srun steps: {steps:?}"
    );
    let nodes: std::collections::BTreeSet<&String> = steps.iter().map(|(n, _)| n).collect();
    ensure!(
        nodes.len() == 2,
        "the steps ran on {nodes:?}, not on the job's 2 nodes ({refused}; job {job})"
    );
    ensure!(refused.contains("allocation"), "a 64-core step: {refused}");
    // The steps belong to the outer job (sacct lists them as JOB.0 ... JOB.7).
    let sacct = std::process::Command::new("sacct")
        .args(["-n", "-P", "-o", "JobID", "-j", &job])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&sacct.stdout)
        .lines()
        .filter(|l| {
            l.split_once('.')
                .is_some_and(|(_, s)| s.parse::<u32>().is_ok())
        })
        .count();
    ensure!(listed >= 8, "sacct lists {listed} steps of job {job}");
    Ok(())
}

/// `shutdown(Cancel)` cancels every queued and running job (scancel calls are batched).
fn shutdown_cancel(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache"));
    let futures: Vec<_> = (0..8)
        .map(|i| exe.submit_command(Command::new("sleep").arg(format!("{}", 100 + i))))
        .collect();
    for f in &futures {
        ensure!(f.wait_job_id().is_some(), "not submitted: {:?}", f.error());
    }
    let name = exe.job_name().unwrap();
    let start = Instant::now();
    exe.shutdown(pitch::Shutdown::Cancel);
    ensure!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    for f in &futures {
        ensure!(f.result() == Err(TaskError::Cancelled), "{:?}", f.result());
    }
    std::thread::sleep(Duration::from_secs(2));
    let out = std::process::Command::new("squeue")
        .args(["-h", "-n", &name, "-t", "PENDING,RUNNING", "-o", "%i"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&out.stdout).lines().count();
    ensure!(left == 0, "{left} jobs still queued or running");
    Ok(())
}

/// `pitch sweep` of the cosmology grid, 3 x 4 x 5 x 3 x 3 x 10 = 5,400 points, on Slurm:
/// a handful of sbatch calls; the CLI is killed mid-sweep and run again, and no point runs
/// twice.
fn cli_cosmology_sweep(dir: &Path) -> Result<(), String> {
    let path = counting_path(dir);
    std::fs::write(
        dir.join("pitch.toml"),
        "[profile.cluster]\nbackend = \"slurm\"\npoll_interval = \"1s\"\ntasks_per_job = 4\n",
    )
    .unwrap();
    let log = dir.join("points.log");
    let log_s = log.display().to_string();
    let sweep = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
            .args([
                "sweep",
                "-q",
                "--profile",
                "cluster",
                "--cache-dir",
                "cache",
                "--param",
                "p=CDM,WDM,SIDM",
                "--param",
                "m=200c,500c,vir,200m",
                "--param",
                "h=0..4",
                "--param",
                "t=dm,gas,stars",
                "--param",
                "a=x,y,z",
                "--param",
                "r=1..10",
                "--",
                "sh",
                "-c",
                "echo \"$0\" >> \"$1\"",
                "{p}-{m}-{h}-{t}-{a}-{r}",
                &log_s,
            ])
            .current_dir(dir)
            .env("PATH", &path)
            .spawn()
            .unwrap()
    };
    let mut first = sweep();
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 200
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let done_before = std::fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    ensure!(
        (200..5400).contains(&done_before),
        "killed after {done_before} points"
    );
    let status = sweep().wait().unwrap();
    ensure!(status.success(), "the resumed sweep failed: {status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let unique: std::collections::BTreeSet<&str> = all.iter().copied().collect();
    ensure!(unique.len() == 5400, "{} distinct points", unique.len());
    ensure!(
        all.len() == 5400,
        "{} runs for 5400 points: some ran twice",
        all.len()
    );
    let sbatch = calls(dir, "sbatch");
    eprintln!("  5400 points: {sbatch} sbatch calls (killed after {done_before})");
    ensure!(sbatch <= 3, "{sbatch} sbatch calls");
    Ok(())
}

/// Issue 17: `PITCH_LOG=debug` shows each scheduler command pitch runs (argv, exit status,
/// duration), the submission and the poll ticks.
fn cli_log_shows_scheduler_commands(dir: &Path) -> Result<(), String> {
    cluster_profile(dir);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["run", "-q", "--profile", "cluster", "--", "true"])
        .current_dir(dir)
        .env("PITCH_LOG", "debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(o.status.success(), "{err}");
    for want in [
        "argv=[\"sbatch\", \"--parsable\"",
        "argv=[\"squeue\"",
        "status=exit status: 0",
        "seconds=",
        "pitch::queue: submitted job_id=",
        "pitch::poll: poll tick",
        "Finished",
    ] {
        ensure!(err.contains(want), "no {want:?} in:\n{err}");
    }
    Ok(())
}

/// Issue 14: two `pitch sweep` of the same points on one cache directory, started at the same
/// moment, on Slurm: every point runs exactly once (each run appends a line). Then again, and
/// one of the two is killed once the jobs are submitted: the other takes over its points
/// (it reads the journal again and re-attaches to the jobs the dead one submitted).
fn cli_two_sweeps_at_once(dir: &Path) -> Result<(), String> {
    cluster_profile(dir);
    let path = counting_path(dir);
    let sweep = |cache: &str, log: &Path, points: &str| {
        let cmd = format!("echo {{n}} >> {}; sleep 4", log.display());
        std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
            .args(["sweep", "-q", "--profile", "cluster", "--cache-dir", cache])
            .args(["--param", points, "--", "sh", "-c", &cmd])
            .current_dir(dir)
            .env_remove("PITCH_PROFILE")
            .env("PATH", &path)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let once = |log: &Path, n: usize| -> Result<(), String> {
        let mut got: Vec<usize> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        got.sort();
        ensure!(got == (1..=n).collect::<Vec<_>>(), "runs: {got:?}");
        Ok(())
    };
    let succeeds = |child: std::process::Child| -> Result<(), String> {
        let o = child.wait_with_output().unwrap();
        ensure!(
            o.status.success(),
            "a sweep failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(())
    };
    let log = dir.join("both.log");
    let (a, b) = (sweep("c1", &log, "n=1..8"), sweep("c1", &log, "n=1..8"));
    succeeds(a)?;
    succeeds(b)?;
    once(&log, 8)?;

    let log = dir.join("killed.log");
    let (a, b) = (sweep("c2", &log, "n=1..8"), sweep("c2", &log, "n=1..8"));
    // A bound on queue wait (the whole suite shares the cluster), not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(240);
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 8
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ran = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    ensure!(ran == 8, "{ran} runs of the 8 points within 240 s");
    let submitted = calls(dir, "sbatch");
    // Kill a sweep that runs points: one with a claims log that is not empty (its name is
    // the driver's id, `<host>-<pid>-<nanos>`).
    let owner = std::fs::read_dir(dir.join("c2/locks/claims"))
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 0))
        .find_map(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            id.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok())
        });
    ensure!(owner.is_some(), "no claim names a sweep");
    let (mut killed, left) = if owner == Some(b.id()) {
        (b, a)
    } else {
        (a, b)
    };
    killed.kill().unwrap();
    killed.wait().unwrap();
    succeeds(left)?;
    once(&log, 8)?;
    ensure!(
        calls(dir, "sbatch") == submitted,
        "the points of the killed sweep were submitted again"
    );
    Ok(())
}

/// `pitch status` splits unfinished tasks by the scheduler's state (one squeue call), and
/// `pitch cancel --all` scancels them; the sweep then ends with failed points.
#[allow(clippy::zombie_processes)] // every return path waits; panics end the test
fn cli_status_and_cancel(dir: &Path) -> Result<(), String> {
    std::fs::write(
        dir.join("pitch.toml"),
        "[profile.cluster]\nbackend = \"slurm\"\npoll_interval = \"1s\"\n",
    )
    .unwrap();
    let pitch = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let mut sweep = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args([
            "sweep",
            "-q",
            "--profile",
            "cluster",
            "--param",
            "n=1..3",
            "--",
            "sleep",
            "6{n}",
        ])
        .current_dir(dir)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut counts = serde_json::Value::Null;
    while Instant::now() < deadline {
        let o = pitch(&["status", "--json"]);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
            let c = &v["counts"];
            let queued = c["running"].as_u64().unwrap_or(0) + c["pending"].as_u64().unwrap_or(0);
            if v["total"] == 3 && queued == 3 {
                counts = c.clone();
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    ensure!(
        !counts.is_null(),
        "status never showed 3 queued or running tasks"
    );
    let o = pitch(&["cancel", "--all"]);
    ensure!(
        o.status.success(),
        "cancel: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    ensure!(
        String::from_utf8_lossy(&o.stdout).contains("cancelled 3 jobs"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let status = sweep.wait().unwrap();
    ensure!(
        status.code() == Some(1),
        "the sweep ends with failed points: {status:?}"
    );
    Ok(())
}

/// The restart driver: submits `n` commands that append to `log`, then waits.
fn driver(cache: &Path, log: &Path, n: usize) -> i32 {
    let exe = executor(cache);
    let futures: Vec<_> = (0..n)
        .map(|i| {
            exe.submit_command(
                Command::new("sh").args(["-c", &format!("sleep 4; echo {i} >> {}", log.display())]),
            )
        })
        .collect();
    match pitch::wait_all(futures) {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("driver: {e}");
            1
        }
    }
}

fn driver_killed_and_rerun(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let log = dir.join("runs.log");
    let path = counting_path(dir);
    let spawn = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "slurm-driver",
                cache.to_str().unwrap(),
                log.to_str().unwrap(),
                "6",
            ])
            .env("PATH", &path)
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    // Let it submit, then kill it while the jobs run.
    let deadline = Instant::now() + Duration::from_secs(30);
    while calls(dir, "sbatch") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    first.kill().unwrap();
    first.wait().unwrap();
    let sbatch_before = calls(dir, "sbatch");
    ensure!(sbatch_before >= 1, "the first driver submitted nothing");
    let status = spawn().wait().unwrap();
    ensure!(status.success(), "the second driver failed: {status:?}");
    let mut lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    ensure!(
        lines.len() == 6,
        "tasks ran {} times: {lines:?}",
        lines.len()
    );
    ensure!(
        calls(dir, "sbatch") == sbatch_before,
        "the rerun submitted again: {} sbatch calls after {sbatch_before}",
        calls(dir, "sbatch")
    );
    Ok(())
}

fn slurm_available() -> bool {
    std::process::Command::new("sinfo")
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Why the suite cannot run here, or `None` when it can: a reachable Slurm and its env.sh.
fn cannot_run() -> Option<&'static str> {
    if !slurm_available() {
        return Some(
            "no Slurm reachable (sinfo failed); start one with cluster-tests/start-slurm.sh",
        );
    }
    // The emulated nodes share one host: Open MPI needs the settings of env.sh (TCP over lo
    // only; shared-memory segments of ranks on different "nodes" collide and segfault), and
    // the jobs inherit this process's environment. Without them the MPI tests fail for a
    // reason that is not pitch's.
    if std::env::var_os("PITCH_SLURM_DIR").is_none() {
        return Some(
            "Slurm is reachable but its env.sh was not sourced (PITCH_SLURM_DIR is unset): \
             run `source /tmp/pitch-slurm/env.sh` (or $PITCH_SLURM_DIR/env.sh) first",
        );
    }
    None
}

/// Runs one test in a fresh directory (kept with PITCH_KEEP_TEST_DIRS=1).
fn run_test(name: &str, test: TestFn) -> Result<(), String> {
    let mut dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    if std::env::var_os("PITCH_KEEP_TEST_DIRS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("  {name}: {}", dir.path().display());
    }
    test(dir.path())
}

fn main() {
    pitch::init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("slurm-pool-driver") {
        std::process::exit(pool::driver(Path::new(&args[2])));
    }
    if args.get(1).map(String::as_str) == Some("slurm-pilot-driver") {
        let n = args[4].parse().unwrap();
        std::process::exit(pilot::driver(Path::new(&args[2]), Path::new(&args[3]), n));
    }
    #[cfg(feature = "remote")]
    if args.get(1).map(String::as_str) == Some("slurm-remote-pilot-driver") {
        let [local, far, marks] = [2, 3, 4].map(|i| Path::new(&args[i]));
        std::process::exit(remote_pilot::driver(local, far, marks, &args[5]));
    }
    if args.get(1).map(String::as_str) == Some("slurm-job-driver") {
        std::process::exit(job_driver(Path::new(&args[2])));
    }
    if args.get(1).map(String::as_str) == Some("slurm-parity-driver") {
        std::process::exit(parity::driver(Path::new(&args[2]), Path::new(&args[3])));
    }
    if args.get(1).map(String::as_str) == Some("slurm-gone-driver") {
        let n = args[3].parse().unwrap();
        let grace = args[4].parse().unwrap();
        std::process::exit(gone_driver(Path::new(&args[2]), n, grace));
    }
    if args.get(1).map(String::as_str) == Some("slurm-driver") {
        let n = args[4].parse().unwrap();
        std::process::exit(driver(Path::new(&args[2]), Path::new(&args[3]), n));
    }
    let mut args = libtest_mimic::Arguments::from_args();
    #[cfg(feature = "remote")]
    let more: Vec<(&str, TestFn)> = remote::TESTS
        .iter()
        .chain(remote_pilot::TESTS)
        .copied()
        .collect();
    #[cfg(not(feature = "remote"))]
    let more: Vec<(&str, TestFn)> = Vec::new();
    let tests: Vec<(&str, TestFn)> = TESTS
        .iter()
        .chain(exact::TESTS)
        .chain(&more)
        .chain(pool::TESTS)
        .chain(rerun::TESTS)
        .chain(retry::TESTS)
        .chain(pilot::TESTS)
        .chain(parity::TESTS)
        .chain(checkpoint::TESTS)
        .copied()
        .collect();
    // Every test side by side by default: most of their time is spent waiting for the
    // scheduler, and they are written to share it (each its own directory and job names;
    // the call counters count the calls naming the test's own directory or jobs).
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .or(Some(tests.len()));
    }
    // Whether the suite can run is asked once, by the first test that runs (never for
    // `--list`): without Slurm each test is reported as ignored with the reason, or fails
    // with it under PITCH_REQUIRE_SLURM=1 (as in .ci/run).
    static BLOCKER: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    let required = std::env::var_os("PITCH_REQUIRE_SLURM").is_some();
    let trials = tests
        .into_iter()
        .map(|(name, test)| {
            libtest_mimic::Trial::ignorable_test(name, move || {
                match BLOCKER.get_or_init(cannot_run) {
                    Some(why) if required => {
                        Err(format!("{why}, but PITCH_REQUIRE_SLURM is set").into())
                    }
                    Some(why) => Ok(libtest_mimic::Completion::ignored_with(format!(
                        "the Slurm suite did not run: {why}"
                    ))),
                    None => run_test(name, test)
                        .map(|()| libtest_mimic::Completion::Completed)
                        .map_err(Into::into),
                }
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Runs the pitch binary in `dir` (which holds a pitch.toml with a `cluster` profile).
fn pitch_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(args)
        .current_dir(dir)
        .env_remove("PITCH_PROFILE")
        .output()
        .unwrap()
}

fn cluster_profile(dir: &Path) {
    std::fs::write(
        dir.join("pitch.toml"),
        "[profile.cluster]\nbackend = \"slurm\"\npoll_interval = \"1s\"\n",
    )
    .unwrap();
}

fn cli_run_detach(dir: &Path) -> Result<(), String> {
    cluster_profile(dir);
    // The job ends only once `go` exists, which the test makes after `run --detach` returned:
    // a run that waited for its job would not return (given 300 s, a bound on the machine's
    // load, not a timing assertion).
    let go = dir.join("go");
    let script = format!(
        "echo detached; while [ ! -e {} ]; do sleep 0.2; done",
        go.display()
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args([
            "run",
            "--detach",
            "--profile",
            "cluster",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .current_dir(dir)
        .env_remove("PITCH_PROFILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = std::fs::write(&go, "");
            return Err("run --detach did not return while its job ran: it waited for it".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    ensure!(o.status.success(), "run --detach: {:?}: {stderr}", o.status);
    std::fs::write(&go, "").map_err(|e| e.to_string())?;
    let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
    ensure!(
        key.len() == 32 && key.chars().all(|c| c.is_ascii_hexdigit()),
        "stdout is not a task key: {key:?} ({stderr})"
    );
    ensure!(stderr.contains("pitch: submitted as Slurm job"), "{stderr}");
    // No pitch process watches the job now: status and results see it end from the files.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut row = serde_json::Value::Null;
    while Instant::now() < deadline {
        let o = pitch_in(dir, &["results", "--format", "json"]);
        let found = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["key"] == key.as_str());
        if let Some(r) = found {
            if r["state"] == "finished" {
                row = r;
                break;
            }
            ensure!(r["state"] != "failed", "the detached task failed: {r}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    ensure!(
        !row.is_null(),
        "the detached task never showed as finished in pitch results"
    );
    ensure!(row["exit_code"] == 0, "{row}");
    let o = pitch_in(dir, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| format!("status --json: {e}: {}", String::from_utf8_lossy(&o.stdout)))?;
    ensure!(
        status["total"] == 1 && status["counts"]["finished"] == 1,
        "{status}"
    );
    let stdout_file = dir
        .join("pitch-cache/tasks")
        .join(&key[..2])
        .join(&key)
        .join("stdout");
    ensure!(
        row["stdout"].as_str() == Some(stdout_file.to_str().unwrap()),
        "{row} names another stdout file than {}",
        stdout_file.display()
    );
    let text = std::fs::read_to_string(&stdout_file).map_err(|e| e.to_string())?;
    ensure!(text == "detached\n", "the job's stdout: {text:?}");
    Ok(())
}

fn cli_run_streams_from_a_job(dir: &Path) -> Result<(), String> {
    use std::io::{BufRead, Read};
    cluster_profile(dir);
    let start = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args([
            "run",
            "--profile",
            "cluster",
            "--",
            "sh",
            "-c",
            "echo one; sleep 4; echo two",
        ])
        .current_dir(dir)
        .env_remove("PITCH_PROFILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    let read_first = out.read_line(&mut first);
    let first_at = start.elapsed();
    let mut rest = String::new();
    let read_rest = out.read_to_string(&mut rest);
    let o = child.wait_with_output().unwrap();
    read_first.and(read_rest).map_err(|e| e.to_string())?;
    let total = start.elapsed();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    ensure!(o.status.success(), "pitch run: {:?}: {stderr}", o.status);
    ensure!(
        first == "one\n" && rest == "two\n",
        "stdout {first:?} then {rest:?}: {stderr}"
    );
    ensure!(
        total.saturating_sub(first_at) >= Duration::from_millis(2500),
        "'one' came after {first_at:?} but pitch exited after {total:?}: not streamed"
    );
    ensure!(
        stderr.contains("pitch: submitted as Slurm job") && stderr.contains("pitch: exit code 0"),
        "{stderr}"
    );
    Ok(())
}

/// A job sbatch rejects is pitch failing before the command ran (125); `run --detach --json`
/// prints one object with its schema version and the job id.
fn cli_run_rejected_and_detach_json(dir: &Path) -> Result<(), String> {
    cluster_profile(dir);
    let o = pitch_in(
        dir,
        &[
            "run",
            "--profile",
            "cluster",
            "--partition",
            "no-such-partition",
            "--",
            "true",
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    ensure!(o.status.code() == Some(125), "{:?}: {stderr}", o.status);
    ensure!(
        stderr.contains("sbatch") && stderr.to_lowercase().contains("partition"),
        "{stderr}"
    );
    let o = pitch_in(
        dir,
        &[
            "run",
            "--detach",
            "--json",
            "--profile",
            "cluster",
            "--",
            "sleep",
            "1",
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    ensure!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).map_err(|e| format!("{e}: {stdout}"))?;
    ensure!(v["schema_version"] == 1, "{v}");
    ensure!(v["key"].as_str().is_some_and(|k| k.len() == 32), "{v}");
    ensure!(
        v["job_id"]
            .as_str()
            .is_some_and(|j| !j.is_empty() && j.chars().all(|c| c.is_ascii_digit())),
        "{v}"
    );
    ensure!(v["task_directory"].is_string(), "{v}");
    Ok(())
}
