//! Retries on the real Slurm (issue 16): a job scancelled from outside is submitted again
//! when `retry_on` names `cancelled`, and its dependent, queued behind the cancelled job
//! (`afterok`, which can then never be satisfied), is submitted again behind the new one.

use std::path::Path;
use std::time::{Duration, Instant};

use pitch::{Command, RetryOn, SlurmClusterExecutor, TaskError, TaskState};

use super::TestFn;
use crate::ensure;
use crate::slurm_tools::scancel;

pub(crate) const TESTS: &[(&str, TestFn)] = &[
    (
        "retry_a_scancelled_job_and_requeue_its_dependent",
        scancelled_and_dependent,
    ),
    (
        "cli_sweep_interrupted_leaves_its_jobs_and_the_rerun_collects_them",
        sweep_interrupted,
    ),
    ("cli_sweep_counts_refused_points_as_not_run", sweep_refused),
];

/// Issue 15: points sbatch refuses are failures, not runs, in the sweep's summary.
fn sweep_refused(dir: &Path) -> Result<(), String> {
    std::fs::write(
        dir.join("pitch.toml"),
        "[profile.cluster]\nbackend = \"slurm\"\npoll_interval = \"1s\"\n",
    )
    .map_err(|e| e.to_string())?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args([
            "sweep",
            "--profile",
            "cluster",
            "--partition",
            "nosuch",
            "--param",
            "x=1,2",
            "--",
            "echo",
            "{x}",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{:?}: {err}", out.status);
    ensure!(
        err.contains(
            "2 points: 0 ran, 0 from the cache, 2 failed, 2 of them refused or not started"
        ),
        "{err}"
    );
    // Nothing is left unfinished: the refused points are failed.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["status", "--cache-dir", "pitch-cache"])
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&status.stdout);
    ensure!(
        text.contains("2 tasks") && text.contains("2 failed") && !text.contains("unfinished"),
        "{text}"
    );
    Ok(())
}

/// Issue 15: Ctrl-C on a `pitch sweep` on Slurm leaves the jobs to run (pitch says how many
/// and how to cancel them, exits 130); the rerun re-attaches and runs no point twice.
fn sweep_interrupted(dir: &Path) -> Result<(), String> {
    std::fs::write(
        dir.join("pitch.toml"),
        "[profile.cluster]\nbackend = \"slurm\"\npoll_interval = \"1s\"\n",
    )
    .map_err(|e| e.to_string())?;
    let log = dir.join("points.log");
    let started = dir.join("started");
    let script = format!(
        "echo {{x}} >> {s}; sleep 8; echo {{x}} >> {l}",
        s = started.display(),
        l = log.display()
    );
    let sweep = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"));
        c.args([
            "sweep",
            "--profile",
            "cluster",
            "--cache-dir",
            "cache",
            "--param",
            "x=1..3",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .current_dir(dir)
        .stderr(std::process::Stdio::piped());
        c
    };
    let child = sweep().spawn().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read_to_string(&started)
        .unwrap_or_default()
        .lines()
        .count()
        < 1
    {
        ensure!(Instant::now() < deadline, "no point started");
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let interrupted = Instant::now();
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(130), "{:?}: {err}", out.status);
    ensure!(
        interrupted.elapsed() < Duration::from_secs(15),
        "pitch took {:?} to stop",
        interrupted.elapsed()
    );
    ensure!(
        err.contains("go on in the scheduler") && err.contains("pitch cancel --all"),
        "{err}"
    );
    let rerun = sweep().output().map_err(|e| e.to_string())?;
    ensure!(
        rerun.status.success(),
        "the rerun: {}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let mut ran: Vec<String> = std::fs::read_to_string(&log)
        .map_err(|e| e.to_string())?
        .lines()
        .map(String::from)
        .collect();
    ran.sort();
    ensure!(ran == ["1", "2", "3"], "points ran {ran:?}");
    Ok(())
}

fn scancelled_and_dependent(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let marker = dir.join("first-attempt");
    let exe = SlurmClusterExecutor::builder()
        .cache_directory(&cache)
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1))
        .max_retries(1)
        .retry_on([RetryOn::Cancelled])
        .resources(pitch::Resources::new().retry_backoff(Duration::from_secs(1)))
        .build()
        .map_err(|e| e.to_string())?;
    // The first attempt leaves a marker and waits to be cancelled; the second finishes.
    let input = exe.submit_command(Command::new("sh").args([
        "-c",
        &format!(
            "if [ -e {m} ]; then echo second; else touch {m}; sleep 600; fi",
            m = marker.display()
        ),
    ]));
    let dependent = exe.submit_command(Command::new("echo").arg("after").after(&input));
    // Bounds against a hang while the suite shares the cluster, not timings.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !marker.exists() {
        ensure!(Instant::now() < deadline, "the first attempt never started");
        std::thread::sleep(Duration::from_millis(200));
    }
    // (Under load the job may start before the driver has read sbatch's reply.)
    let first_job = input.wait_job_id().ok_or("no job id for the input")?;
    // The dependent is queued behind the first job before it goes.
    ensure!(
        dependent.wait_job_id().is_some(),
        "the dependent was never submitted"
    );
    scancel(&first_job)?;
    let out = input.result().map_err(|e| format!("input: {e}"))?;
    let printed = out.read_stdout().map_err(|e| e.to_string())?;
    ensure!(printed.trim() == "second", "input printed {printed:?}");
    let second_job = input.job_id().unwrap_or_default();
    ensure!(second_job != first_job, "the retry reused job {first_job}");
    let after = dependent
        .result()
        .map_err(|e| format!("dependent: {}", e.report()))?;
    let printed = after.read_stdout().map_err(|e| e.to_string())?;
    ensure!(printed.trim() == "after", "dependent printed {printed:?}");
    drop(exe);
    // The attempt is recorded once, with its job and its end; the dependent's resubmission
    // is not an attempt of its own.
    let tasks = pitch::Cache::open(&cache)
        .and_then(|c| c.tasks())
        .map_err(|e| e.to_string())?;
    let input_info = tasks
        .iter()
        .find(|t| t.key == input.key())
        .ok_or("the input is not in the cache")?;
    ensure!(
        matches!(input_info.state, TaskState::Finished),
        "{:?}",
        input_info.state
    );
    ensure!(
        input_info.attempts.len() == 1,
        "attempts: {:?}",
        input_info.attempts
    );
    let attempt = &input_info.attempts[0];
    ensure!(
        attempt.job_id.as_deref() == Some(first_job.as_str()),
        "attempt job {:?}, first job {first_job}",
        attempt.job_id
    );
    ensure!(
        matches!(&attempt.error, TaskError::Scheduler { state, .. } if *state == "CANCELLED"),
        "attempt error {:?}",
        attempt.error
    );
    let dep_info = tasks
        .iter()
        .find(|t| t.key == dependent.key())
        .ok_or("the dependent is not in the cache")?;
    ensure!(
        dep_info.attempts.is_empty(),
        "dependent attempts: {:?}",
        dep_info.attempts
    );
    Ok(())
}
