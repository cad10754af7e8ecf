//! Checkpoint and requeue on the real Slurm (issue 16): a job whose time limit comes
//! mid-work is warned (`#SBATCH --signal=B:USR1@<grace>`, passed on by the job script to the
//! task), the task saves its state and ends `Checkpointed`, and a rerun of the same task
//! resumes from the checkpoint; commands that trap the warning exit 75, packed ones too.
//!
//! Slurm time limits are whole minutes and its warning may come up to a minute away from
//! the time asked (its event loop's resolution): the limit is 2 min, the grace 90 s, and the
//! tasks work in 1-s steps until they are warned. Queue waits are never asserted on.

use std::path::Path;
use std::time::{Duration, Instant};

use pitch::{Command, Resources, SlurmClusterExecutor, TaskError};

use crate::ensure;
use crate::long_sum::{long_sum, starts};

pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
    (
        "checkpoint_at_the_time_limit_then_resume_and_commands_exit_75",
        checkpoint_and_resume,
    ),
    (
        "checkpoint_max_retries_resumes_in_one_run",
        max_retries_resumes_in_one_run,
    ),
];

/// The work: more 1-s steps than the 2-min limit holds.
const N: u64 = 300;
const STEP_MS: u64 = 1000;

/// A 2-min limit with the warning 90 s before it.
fn warned() -> Resources {
    Resources::new()
        .run_time_max(Duration::from_secs(120))
        .checkpoint_grace(Duration::from_secs(90))
}

fn executor(cache: &Path, resources: Resources) -> pitch::Executor {
    SlurmClusterExecutor::builder()
        .cache_directory(cache)
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1))
        .tasks_per_job(2)
        .resources(resources)
        .build()
        .expect("a slurm executor")
}

fn checkpoint_and_resume(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let log = dir.join("log");
    let exe = executor(&cache, warned());
    let sum = long_sum::submit(&exe, N, STEP_MS, log.clone());
    // Four commands packed two per array element (tasks_per_job 2), each element with room
    // for both at once (2 CPUs: in turn, the second would start after the warning): the
    // warning reaches every one.
    let packed = exe.with_resources(warned().slurm_cmd_arg("--cpus-per-task=2"));
    let script = "trap 'echo saved; exit 75' USR1; while :; do sleep 1; done";
    let commands: Vec<_> = (0..4)
        .map(|i| {
            packed.submit_command(
                Command::new("bash")
                    .args(["-c", script, "cmd"])
                    .arg(i.to_string()),
            )
        })
        .collect();
    let started = Instant::now();
    match sum.result() {
        Err(TaskError::Checkpointed { detail }) => ensure!(
            detail.contains("checkpoint") && detail.contains("warning"),
            "{detail}"
        ),
        other => return Err(format!("first attempt: {other:?}")),
    }
    let key = sum.key();
    let checkpoint = cache
        .join("tasks")
        .join(&key[..2])
        .join(&key)
        .join("checkpoint.bin");
    ensure!(checkpoint.exists(), "no {}", checkpoint.display());
    ensure!(starts(&log) == [0], "{:?}", starts(&log));
    for c in &commands {
        match c.result() {
            Err(TaskError::Checkpointed { detail }) => {
                ensure!(detail.starts_with("exit code 75"), "{detail}")
            }
            other => return Err(format!("command: {other:?}")),
        }
        let out = std::fs::read_to_string(
            cache
                .join("tasks")
                .join(&c.key()[..2])
                .join(c.key())
                .join("stdout"),
        )
        .unwrap_or_default();
        ensure!(out == "saved\n", "the command's trap ran {out:?}");
    }
    // The job scripts asked for the warning.
    let scripts: Vec<String> = std::fs::read_dir(cache.join("jobs"))
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "sh"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    ensure!(
        !scripts.is_empty()
            && scripts
                .iter()
                .all(|s| s.contains("#SBATCH --signal=B:USR1@90\n")),
        "{scripts:#?}"
    );
    eprintln!("  checkpointed {:?} after submission", started.elapsed());

    // The rerun (a new executor on the cache directory) resumes from the checkpoint.
    let exe = executor(
        &cache,
        Resources::new().run_time_max(Duration::from_secs(600)),
    );
    let again = long_sum::submit(&exe, N, STEP_MS, log.clone());
    ensure!(again.key() == key, "another key");
    let (total, resumed_from) = again.result().map_err(|e| format!("rerun: {e}"))?;
    ensure!(total == N * (N - 1) / 2, "sum {total}");
    ensure!(
        (1..N).contains(&resumed_from),
        "resumed from {resumed_from}"
    );
    ensure!(starts(&log) == [0, resumed_from], "{:?}", starts(&log));
    ensure!(
        !checkpoint.exists(),
        "the checkpoint of a finished task is left"
    );
    Ok(())
}

/// With `max_retries(1)` the engine submits the checkpointed task again at once (a new job),
/// and that attempt resumes from the checkpoint and finishes: one run, one future; the same
/// for a task of 2 ranks on 2 nodes (the job script passes the warning on to `srun`, which
/// passes it on to the ranks; rank 0's state is saved, both ranks resume from it). The limit
/// is 3 min here: the second attempt's own warning (90 s before its limit, perhaps a minute
/// early) must not come before its few seconds of remaining work are done.
fn max_retries_resumes_in_one_run(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let exe = SlurmClusterExecutor::builder()
        .cache_directory(&cache)
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1))
        .resources(
            Resources::new()
                .run_time_max(Duration::from_secs(180))
                .checkpoint_grace(Duration::from_secs(90))
                // Slurm may send its warning early (10-20 s into a job on a busy cluster):
                // an attempt may checkpoint again before it is done.
                .max_retries(3),
        )
        .build()
        .map_err(|e| e.to_string())?;
    let (log, log2) = (dir.join("log"), dir.join("log2"));
    let f = long_sum::submit(&exe, N, STEP_MS, log.clone());
    let two = long_sum::submit_ranks(
        &exe.with_resources(Resources::new().cores(2).num_nodes(2)),
        N,
        STEP_MS,
        log2.clone(),
    );
    let first_job = f.wait_job_id();
    let (total, resumed_from) = f.result().map_err(|e| e.report().to_string())?;
    ensure!(total == N * (N - 1) / 2, "sum {total}");
    ensure!(
        (1..N).contains(&resumed_from),
        "resumed from {resumed_from}"
    );
    // Each attempt starts where the one before stopped: 0, then increasing, the last from
    // the state it finished with.
    let log_starts = starts(&log);
    ensure!(
        (2..=4).contains(&log_starts.len())
            && log_starts[0] == 0
            && log_starts.windows(2).all(|w| w[0] < w[1])
            && log_starts.last() == Some(&resumed_from),
        "{log_starts:?}"
    );
    ensure!(
        f.job_id().is_some() && f.job_id() != first_job,
        "the second attempt ran as a new job: {first_job:?} then {:?}",
        f.job_id()
    );
    let key = f.key();
    let checkpoint = cache
        .join("tasks")
        .join(&key[..2])
        .join(&key)
        .join("checkpoint.bin");
    ensure!(
        !checkpoint.exists(),
        "the checkpoint of a finished task is left"
    );
    // Two ranks: the same values on both, resumed from rank 0's state.
    let values = two
        .result()
        .map_err(|e| format!("2 ranks: {}", e.report()))?;
    ensure!(values.len() == 2 && values[0] == values[1], "{values:?}");
    let (total, resumed_from) = values[0];
    ensure!(total == N * (N - 1) / 2, "2 ranks: sum {total}");
    let mut starts2 = starts(&log2);
    starts2.sort();
    // Both ranks start each attempt from the same state.
    ensure!(
        resumed_from > 0
            && (4..=8).contains(&starts2.len())
            && starts2.chunks(2).all(|p| p.len() == 2 && p[0] == p[1])
            && starts2[0] == 0
            && starts2.last() == Some(&resumed_from),
        "2 ranks: {starts2:?}"
    );
    Ok(())
}
