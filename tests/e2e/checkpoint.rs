//! Checkpoint and requeue on SingleNode (issue 16): the warning `checkpoint_grace` before
//! `run_time_max` (SIGUSR1 to the task's process group; a deadline sent with the task to a
//! pooled worker), `TaskContext::checkpoint` and `resume`, and a command's exit code 75.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitch::{Command, Executor, Resources, SingleNodeExecutor, TaskError};

use crate::ensure;
pub(crate) use crate::long_sum::{long_sum, starts};
use crate::single_node::temp;

pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
    (
        "checkpoint::a_warned_task_checkpoints_and_a_rerun_resumes",
        warned_task_checkpoints_and_rerun_resumes,
    ),
    (
        "checkpoint::a_pooled_task_is_warned_and_resumes",
        pooled_task_is_warned_and_resumes,
    ),
    (
        "checkpoint::max_retries_resumes_from_the_checkpoint_in_one_run",
        max_retries_resumes_in_one_run,
    ),
    (
        "checkpoint::two_ranks_resume_from_rank_0s_checkpoint",
        two_ranks_resume_from_rank_0s_checkpoint,
    ),
    (
        "checkpoint::a_command_that_traps_usr1_and_exits_75_is_checkpointed",
        command_exit_75_is_checkpointed,
    ),
    (
        "checkpoint::without_checkpoint_grace_no_warning_comes",
        no_grace_no_warning,
    ),
    (
        "checkpoint::a_grace_not_shorter_than_the_time_limit_is_rejected",
        grace_not_shorter_than_limit_is_rejected,
    ),
];

/// A limit of 3 s with a warning 2 s before it: the warning comes 1 s after the start.
fn warned() -> Resources {
    Resources::new()
        .run_time_max(Duration::from_secs(3))
        .checkpoint_grace(Duration::from_secs(2))
}

/// A limit the task never reaches, with the same grace.
pub(crate) fn unhurried() -> Resources {
    Resources::new()
        .run_time_max(Duration::from_secs(120))
        .checkpoint_grace(Duration::from_secs(2))
}

/// The task directory of `key` in the cache directory `cache` (the layout of store.rs).
fn task_dir(cache: &Path, key: &str) -> PathBuf {
    cache.join("tasks").join(&key[..2]).join(key)
}

/// The sum of `0..n`.
fn sum_to(n: u64) -> u64 {
    n * (n - 1) / 2
}

/// Runs `long_sum(n, 100 ms)` (more work than `first`'s time limit allows, warned before
/// it) on `first`: it must end checkpointed (within `before` of its submission, when given),
/// with its checkpoint in the cache directory; then on `second` (a new executor on the same
/// cache directory, a limit it does not reach) it must resume from there and finish with the
/// right sum; the checkpoint is gone then.
pub(crate) fn checkpoint_then_resume(
    cache: &Path,
    log: &Path,
    n: u64,
    first: &Executor,
    before: Option<Duration>,
    second: impl FnOnce() -> Executor,
) -> Result<(), String> {
    let start = Instant::now();
    let f = long_sum::submit(first, n, 100, log.to_path_buf());
    let key = f.key();
    match f.result() {
        Err(TaskError::Checkpointed { detail }) => ensure!(
            detail.contains("checkpoint") && detail.contains("warning"),
            "{detail}"
        ),
        other => return Err(format!("first attempt: {other:?}")),
    }
    if let Some(before) = before {
        ensure!(
            start.elapsed() < before,
            "ended at its time limit, not at the warning: {:?}",
            start.elapsed()
        );
    }
    let checkpoint = task_dir(cache, &key).join("checkpoint.bin");
    ensure!(checkpoint.exists(), "no {}", checkpoint.display());
    let saved_at = starts(log);
    ensure!(saved_at == [0], "{saved_at:?}");

    let exe = second();
    let f = long_sum::submit(&exe, n, 100, log.to_path_buf());
    ensure!(f.key() == key, "another key");
    let (sum, resumed_from) = f.result().map_err(|e| format!("second attempt: {e}"))?;
    ensure!(sum == sum_to(n), "sum {sum}");
    // Warned after some steps (fewer on a loaded machine), never after all of them.
    ensure!(
        (1..n).contains(&resumed_from),
        "resumed from {resumed_from}"
    );
    ensure!(starts(log) == [0, resumed_from], "{:?}", starts(log));
    ensure!(
        !checkpoint.exists(),
        "the checkpoint of a finished task is left"
    );
    Ok(())
}

fn warned_task_checkpoints_and_rerun_resumes() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let log = dir.path().join("log");
    let exe = |r: Resources| {
        SingleNodeExecutor::builder()
            .max_cores(2)
            .cache_directory(&cache)
            .resources(r)
            .build()
            .expect("an executor")
    };
    let before = Some(Duration::from_millis(2900));
    checkpoint_then_resume(
        &cache,
        &log,
        30,
        &exe(warned()),
        before,
        || exe(unhurried()),
    )
}

fn pooled_task_is_warned_and_resumes() -> Result<(), String> {
    // A pooled worker gets no signal: the deadline comes with the task, and the driver
    // writes the checkpoint the worker sends back (and sends it with the next attempt).
    let dir = temp();
    let cache = dir.path().join("cache");
    let log = dir.path().join("log");
    let exe = |r: Resources| {
        SingleNodeExecutor::builder()
            .max_cores(1)
            .block_allocation(true)
            .cache_directory(&cache)
            .resources(r)
            .build()
            .expect("a pooled executor")
    };
    let before = Some(Duration::from_millis(2900));
    checkpoint_then_resume(
        &cache,
        &log,
        30,
        &exe(warned()),
        before,
        || exe(unhurried()),
    )
}

/// With `max_retries(1)` the engine submits a checkpointed task again at once, and its
/// second attempt resumes from the checkpoint and finishes: one run, one future, the
/// first attempt recorded (a one-task worker, and a pooled one).
fn max_retries_resumes_in_one_run() -> Result<(), String> {
    for pooled in [false, true] {
        let dir = temp();
        let cache = dir.path().join("cache");
        let log = dir.path().join("log");
        let events = crate::single_node::Collect::default();
        let exe = SingleNodeExecutor::builder()
            .max_cores(1)
            .block_allocation(pooled)
            .cache_directory(&cache)
            .resources(warned().max_retries(1))
            .reporter(events.clone())
            .build()
            .expect("an executor");
        let f = long_sum::submit(&exe, 30, 100, log.clone());
        let (sum, resumed_from) = f
            .result()
            .map_err(|e| format!("pooled {pooled}: {}", e.report()))?;
        ensure!(sum == sum_to(30), "pooled {pooled}: sum {sum}");
        ensure!(
            (1..30).contains(&resumed_from),
            "pooled {pooled}: resumed from {resumed_from}"
        );
        ensure!(
            starts(&log) == [0, resumed_from],
            "pooled {pooled}: {:?}",
            starts(&log)
        );
        let retried = events.count(|e| {
            matches!(e, pitch::EventKind::Retrying { attempt, .. }
                if attempt.number == 1
                    && matches!(attempt.error, TaskError::Checkpointed { .. }))
        });
        ensure!(retried == 1, "pooled {pooled}: {retried} Retrying events");
        let checkpoint = task_dir(&cache, &f.key()).join("checkpoint.bin");
        ensure!(
            !checkpoint.exists(),
            "pooled {pooled}: the checkpoint is left"
        );
    }
    Ok(())
}

/// A two-rank task under mpiexec: both ranks are warned, both checkpoint, rank 0's state is
/// saved, and both ranks of the retry resume from it. (A 6 s limit, warned after 3 s:
/// mpiexec may take a second or more to start the ranks.)
fn two_ranks_resume_from_rank_0s_checkpoint() -> Result<(), String> {
    let dir = temp();
    let log = dir.path().join("log");
    // Warned after 6 s, half way through the first attempt's 12 s of work; a resumed attempt
    // (10 ms a step) has the same 6 s before its own warning, for mpiexec on a loaded machine.
    let exe = crate::single_node::executor(&dir.path().join("cache"), 2).with_resources(
        Resources::new()
            .run_time_max(Duration::from_secs(12))
            .checkpoint_grace(Duration::from_secs(6))
            .cores(2)
            .openmpi_oversubscribe(true)
            .max_retries(1),
    );
    let values = long_sum::submit_ranks(&exe, 120, 100, log.clone())
        .result()
        .map_err(|e| e.report().to_string())?;
    ensure!(values.len() == 2 && values[0] == values[1], "{values:?}");
    let (sum, resumed_from) = values[0];
    ensure!(sum == sum_to(120), "sum {sum}");
    let mut starts = starts(&log);
    starts.sort();
    ensure!(
        starts == [0, 0, resumed_from, resumed_from] && resumed_from > 0,
        "{starts:?}"
    );
    Ok(())
}

fn command_exit_75_is_checkpointed() -> Result<(), String> {
    let dir = temp();
    let exe = crate::single_node::executor(dir.path(), 2).with_resources(warned());
    let start = Instant::now();
    // The shell saves its state (here: a line) when warned, and asks to be run again.
    let state = dir.path().join("state");
    let script = format!(
        "trap 'echo saved > {}; exit 75' USR1; while :; do sleep 0.1; done",
        state.display()
    );
    let f = exe.submit_command(Command::new("sh").args(["-c", &script]));
    match f.result() {
        Err(TaskError::Checkpointed { detail }) => {
            ensure!(detail.starts_with("exit code 75"), "{detail}")
        }
        other => return Err(format!("{other:?}")),
    }
    ensure!(
        start.elapsed() < Duration::from_millis(2900),
        "{:?}",
        start.elapsed()
    );
    ensure!(state.exists(), "the trap did not run");
    // Exit code 75 without the warning asks for a resubmission too.
    let f = exe.submit_command(Command::new("sh").args(["-c", "exit 75"]));
    ensure!(
        matches!(f.result(), Err(TaskError::Checkpointed { .. })),
        "{:?}",
        f.result()
    );
    Ok(())
}

fn no_grace_no_warning() -> Result<(), String> {
    let dir = temp();
    // A time limit without checkpoint_grace: no SIGUSR1 (which would kill a program without
    // a handler, and here would leave a mark).
    let exe = crate::single_node::executor(dir.path(), 2)
        .with_resources(Resources::new().run_time_max(Duration::from_secs(3)));
    let mark = dir.path().join("mark");
    let script = format!("trap 'touch {}' USR1; sleep 1.5; sleep 0.1", mark.display());
    let f = exe.submit_command(Command::new("sh").args(["-c", &script]));
    let out = f.result().map_err(|e| e.to_string())?;
    ensure!(out.exit_code == 0, "{out:?}");
    ensure!(!mark.exists(), "the command got SIGUSR1");
    // The same without a handler: it would have died of it.
    let f = exe.submit_command(Command::new("sleep").arg("1.5"));
    ensure!(f.result().is_ok(), "{:?}", f.result());
    Ok(())
}

fn grace_not_shorter_than_limit_is_rejected() -> Result<(), String> {
    let dir = temp();
    let exe = crate::single_node::executor(dir.path(), 2).with_resources(
        Resources::new()
            .run_time_max(Duration::from_secs(60))
            .checkpoint_grace(Duration::from_secs(90)),
    );
    let f = exe.submit_command(Command::new("true"));
    match f.result() {
        Err(TaskError::Rejected { reason, .. }) => ensure!(
            reason.contains("checkpoint_grace (90s)") && reason.contains("run_time_max (60s)"),
            "{reason}"
        ),
        other => return Err(format!("{other:?}")),
    }
    Ok(())
}
