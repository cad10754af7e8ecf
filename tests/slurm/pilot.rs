//! `SlurmClusterExecutor` with `block_allocation(true)`: elastic pilot jobs on the real
//! Slurm. A pooled sweep with a dependency chain (and its rerun from the cache), a pilot
//! scancelled under its task (rerun elsewhere, recorded once; and without retries, the
//! scheduler's error), the driver killed with SIGKILL and rerun, a pilot reaching its wall
//! time while work is left (drain and replacement), connections with a wrong secret, and
//! pilots of two ranks on two nodes running two-rank tasks.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pitch::{Event, EventKind, Resources, SlurmClusterExecutor, TaskError};

use crate::pilot_cases::{self, Scheduler};
pub(crate) use crate::pilot_cases::{pilot_step, pilot_victim, records, victim_job};
use crate::slurm_tools::scancel;
use crate::{add, ensure};

pitch::task! {
    /// (the Slurm job it runs in, its process id).
    pub fn pilot_where(_i: u64) -> (String, u32) {
        (std::env::var("SLURM_JOB_ID").unwrap_or_default(), std::process::id())
    }
}

pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
    (
        "pilot_status_and_cancel_all_see_the_pilots",
        status_and_cancel,
    ),
    ("pilot_sweep_with_a_dependency_chain", sweep),
    ("pilot_scancelled_mid_task", scancelled),
    ("pilot_driver_killed_and_rerun", driver_killed),
    ("pilot_wall_time_drain_and_replacement", drain),
    ("pilot_wrong_secret_refused", wrong_secret),
    ("pilot_cancel_and_time_limit", cancel_and_time_limit),
    ("pilot_of_two_ranks_runs_two_rank_tasks", multi_rank),
    ("pilot_commands_sweep_and_rerun", commands_sweep),
    ("pilot_commands_fail_time_out_and_cancel", commands_failures),
];

const IDLE: Duration = Duration::from_secs(5);

pub(crate) fn builder(cache: &Path, wall: Duration) -> pitch::SlurmClusterBuilder {
    SlurmClusterExecutor::builder()
        .cache_directory(cache)
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1))
        .block_allocation(true)
        .pilot_address("127.0.0.1")
        .idle_timeout(IDLE)
        .resources(Resources::new().run_time_max(wall))
}

/// The pilot jobs of the cache directory's executors that Slurm still lists as queued or
/// running.
pub(crate) fn live_pilots(cache: &Path) -> Result<Vec<String>, String> {
    let name = format!(
        "{}-pilot",
        pitch::Cache::open(cache)
            .map_err(|e| e.to_string())?
            .job_name()
    );
    let out = std::process::Command::new("squeue")
        .args(["-h", "-o", "%i %T", "--name", &name])
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .filter(|l| !l.contains("COMPLET"))
        .collect())
}

pub(crate) fn wait_no_pilots(cache: &Path, within: Duration) -> Result<(), String> {
    SLURM.wait_no_pilots(cache, within)
}

/// How the shared pilot cases (`tests/common/pilot_cases.rs`) ask Slurm.
pub(crate) const SLURM: Scheduler = Scheduler {
    job_id: &same_id,
    cancel: &scancel,
    live_pilots: &live_pilots,
};

pitch::task! {
    /// (rank, size, node, Slurm job) of each rank; rank 1 fails when `fail` is set.
    pub fn pilot_rank(fail: bool) -> (u32, u32, String, String) {
        let ctx = pitch::context();
        if fail && ctx.rank == 1 {
            panic!("rank one gives up");
        }
        (ctx.rank, ctx.size, ctx.node, std::env::var("SLURM_JOB_ID").unwrap_or_default())
    }
}

/// Pilots of two ranks on two nodes (`cores = 2, num_nodes = 2`: srun starts the ranks,
/// each connects on its own): every task runs on both ranks of one pilot, which know their
/// rank; a rank's failure is the task's `Rank` error and the pilot serves on; 8 tasks take
/// at most the 2 pilot jobs allowed.
fn multi_rank(dir: &Path) -> Result<(), String> {
    let exe = builder(&dir.join("cache"), Duration::from_secs(600))
        .resources(
            Resources::new()
                .run_time_max(Duration::from_secs(600))
                .cores(2)
                .num_nodes(2),
        )
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string())?;
    let futures: Vec<_> = (0..8)
        .map(|_| pilot_rank::submit_ranks(&exe, false))
        .collect();
    let mut jobs = BTreeSet::new();
    for f in futures {
        let ranks = f.result().map_err(|e| e.to_string())?;
        ensure!(ranks.len() == 2, "{ranks:?}");
        let nodes: BTreeSet<&String> = ranks.iter().map(|r| &r.2).collect();
        ensure!(
            ranks[0].0 == 0 && ranks[1].0 == 1 && ranks.iter().all(|r| r.1 == 2),
            "ranks: {ranks:?}"
        );
        ensure!(nodes.len() == 2, "both ranks on one node: {ranks:?}");
        ensure!(
            ranks[0].3 == ranks[1].3 && !ranks[0].3.is_empty(),
            "the ranks ran in different jobs: {ranks:?}"
        );
        jobs.insert(ranks[0].3.clone());
    }
    ensure!(
        jobs.len() <= 2,
        "8 tasks took {} pilot jobs: {jobs:?}",
        jobs.len()
    );
    match pilot_rank::submit(&exe, true).result() {
        Err(TaskError::Rank {
            rank: 1,
            size: 2,
            cause,
        }) => ensure!(matches!(*cause, TaskError::Panicked { .. }), "{cause:?}"),
        other => return Err(format!("expected rank 1's panic, got {other:?}")),
    }
    // The pilots serve on: no third pilot job.
    let after = pilot_rank::submit_ranks(&exe, false)
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(after.len() == 2, "{after:?}");
    jobs.insert(after[0].3.clone());
    ensure!(
        jobs.len() <= 2,
        "a new pilot job after a task's failure: {jobs:?}"
    );
    Ok(())
}

fn sweep(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let exe = builder(&cache, Duration::from_secs(600))
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string())?;
    let out = pitch::wait_all(pilot_where::map(&exe, 0..40)).map_err(|e| e.to_string())?;
    let workers: BTreeSet<&(String, u32)> = out.iter().collect();
    ensure!(
        !workers.is_empty() && workers.len() <= 2,
        "40 tasks ran in {} processes, not in at most 2 pilots: {workers:?}",
        workers.len()
    );
    ensure!(
        workers.iter().all(|(job, _)| !job.is_empty()),
        "a task ran outside a Slurm job: {workers:?}"
    );
    // A dependency chain: each link handed to a pilot once its input finished.
    let a = add::submit(&exe, 1, 1);
    let b = add::submit(&exe, &a, 10);
    let c = add::submit(&exe, &b, 100);
    ensure!(c.result() == Ok(112), "{:?}", c.result());
    let job = c.job_id().unwrap_or_default();
    ensure!(
        workers.iter().any(|(j, _)| *j == job) || !job.is_empty(),
        "the chain's job id {job:?}"
    );
    drop(exe);
    ensure!(
        records(&cache) == 43,
        "{} records for 43 tasks",
        records(&cache)
    );
    // The pilots leave once the executor closes.
    wait_no_pilots(&cache, Duration::from_secs(30))?;
    // A rerun answers from the result log: the same processes, no new pilot.
    let exe = builder(&cache, Duration::from_secs(600))
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let again = pitch::wait_all(pilot_where::map(&exe, 0..40)).map_err(|e| e.to_string())?;
    ensure!(again == out, "the rerun computed again");
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "the rerun took {:?}",
        start.elapsed()
    );
    ensure!(
        live_pilots(&cache)?.is_empty(),
        "the rerun submitted pilots"
    );
    Ok(())
}

/// The job a pilot's task named (SLURM_JOB_ID) is the id pitch reports.
fn same_id(job: &str) -> Result<String, String> {
    Ok(job.to_string())
}

fn scancelled(dir: &Path) -> Result<(), String> {
    // With the default retry: the task runs again on a new pilot, and is recorded once.
    let cache = dir.join("cache");
    let exe = builder(&cache, Duration::from_secs(600))
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string())?;
    pilot_cases::cancelled_mid_task(exe, &cache, &dir.join("marks"), &SLURM)?;
    // Without retries: the task fails with the pilot's job and its end.
    let cache = dir.join("cache-no-retry");
    let exe = builder(&cache, Duration::from_secs(600))
        .max_retries(0)
        .build()
        .map_err(|e| e.to_string())?;
    pilot_cases::cancelled_without_retry(exe, &cache, &dir.join("marks-no-retry"), &SLURM)
}

/// `slurm-pilot-driver CACHE LOG N`: N tasks of one second each through 2 pilots.
pub(crate) fn driver(cache: &Path, log: &Path, n: u64) -> i32 {
    let exe = builder(cache, Duration::from_secs(600))
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string());
    pilot_cases::driver(exe, log, n)
}

fn driver_killed(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let log = dir.join("steps.log");
    let n = 12;
    let spawn = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "slurm-pilot-driver",
                cache.to_str().unwrap(),
                log.to_str().unwrap(),
                &n.to_string(),
            ])
            .spawn()
            .map_err(|e| e.to_string())
    };
    pilot_cases::driver_killed(&cache, &log, n, IDLE, &spawn, &SLURM)
}

fn drain(dir: &Path) -> Result<(), String> {
    // Pilots of 80 s (less the 10 s margin) whose job script first spends 30 s on its own
    // (a site's module loads, in the template): the wall time runs from the job's start, so
    // 3 tasks of 8 s that each ask for 20 s fit in the first (counted from its connection,
    // it would take tasks until Slurm's limit killed it); it drains and a replacement runs
    // the rest.
    let template = pilot_cases::slow_start_template("slurm.sh.j2", dir, Duration::from_secs(30))?;
    let d = pilot_cases::Drain {
        wall: Duration::from_secs(80),
        task_limit: Duration::from_secs(20),
        task_ms: 8000,
    };
    let exe = builder(&dir.join("cache"), d.wall)
        .template(&template)
        .max_workers(1)
        .build()
        .map_err(|e| e.to_string())?;
    let first = pilot_cases::drain(&exe, &dir.join("steps.log"), &d)?;
    drop(exe);
    // The first pilot left by draining, not by Slurm's time limit.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("sacct")
            .args(["-n", "-X", "-P", "-o", "State", "-j", &first])
            .output()
            .map_err(|e| e.to_string())?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "COMPLETED" {
            break;
        }
        ensure!(
            Instant::now() < deadline && !state.contains("TIMEOUT"),
            "the first pilot {first} ended {state:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn wrong_secret(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let port = pilot_cases::free_port()?;
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let exe = builder(&cache, Duration::from_secs(600))
        .pilot_address(format!("127.0.0.1:{port}"))
        .reporter(pilot_cases::warnings_into(&warnings))
        .build()
        .map_err(|e| e.to_string())?;
    pilot_cases::wrong_secret(&exe, &cache, port, &warnings)
}

fn cancel_and_time_limit(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
    let exe = builder(&cache, Duration::from_secs(600))
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string())?;
    // A cancel of a running task: the task ends Cancelled at once, its pilot is let go (the
    // driver lives on: no signal reaches this process).
    let f = pilot_victim::submit(&exe, marks.clone(), 120_000);
    let victim = victim_job(&marks)?;
    let start = Instant::now();
    f.cancel();
    ensure!(f.result() == Err(TaskError::Cancelled), "{:?}", f.result());
    ensure!(
        start.elapsed() < Duration::from_secs(10),
        "the cancel took {:?}",
        start.elapsed()
    );
    // Its pilot leaves (the connection closed under its task).
    let deadline = Instant::now() + Duration::from_secs(30);
    let active = |job: &str| -> Result<bool, String> {
        let out = std::process::Command::new("squeue")
            .args(["-h", "-o", "%T", "-j", job])
            .output()
            .map_err(|e| e.to_string())?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(!state.is_empty() && !state.contains("COMPLET"))
    };
    while active(&victim)? {
        ensure!(
            Instant::now() < deadline,
            "the cancelled task's pilot {victim} is still there"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A task's own run_time_max: Timeout, and the next task runs on.
    let short = exe.with_resources(Resources::new().run_time_max(Duration::from_secs(3)));
    let slow = pilot_step::submit(&short, dir.join("steps.log"), 1, 30_000);
    match slow.result() {
        Err(TaskError::Timeout { limit }) => {
            ensure!(limit == Duration::from_secs(3), "limit {limit:?}")
        }
        other => return Err(format!("expected a timeout, got {other:?}")),
    }
    let five = add::submit(&exe, 2, 3);
    ensure!(five.result() == Ok(5), "{:?}", five.result());
    Ok(())
}

/// Issue 12: `pitch status` lists the pilot jobs of the cache directory and `pitch cancel
/// --all` cancels them too (a killed driver's pilots still queued would start for nothing).
fn status_and_cancel(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
    let exe = builder(&cache, Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let f = pilot_victim::submit(&exe, marks.clone(), 120_000);
    let pilot = victim_job(&marks)?;
    let pitch = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
            .args(args)
            .arg("--cache-dir")
            .arg(&cache)
            .output()
            .map_err(|e| e.to_string())
    };
    let status = pitch(&["status"])?;
    let text = String::from_utf8_lossy(&status.stdout);
    ensure!(
        text.contains("1 pilot job: ") && text.contains(&pilot),
        "status: {text}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json = pitch(&["status", "--json"])?;
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).map_err(|e| format!("{e}: {:?}", json.stdout))?;
    ensure!(v["pilots"].get(&pilot).is_some(), "{v}");
    let cancel = pitch(&["cancel", "--all"])?;
    let text = String::from_utf8_lossy(&cancel.stdout);
    ensure!(
        cancel.status.success() && text.contains("(1 of them pilot job)"),
        "cancel: {text}{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while live_pilots(&cache)?
        .iter()
        .any(|l| l.starts_with(&format!("{pilot} ")))
    {
        ensure!(Instant::now() < deadline, "pilot {pilot} still listed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its task was lost with it and runs again on a new pilot (the default retry).
    let value = f.result().map_err(|e| e.to_string())?;
    ensure!(value.starts_with("rerun "), "{value}");
    exe.shutdown(pitch::Shutdown::Cancel);
    Ok(())
}

/// Command `i` of a sweep: prints to both streams and appends "i job" to `marks` (one line
/// per run, wherever it ran).
fn marked_command(i: usize, marks: &Path) -> pitch::Command {
    pitch::Command::new("sh").args([
        "-c",
        "echo out $1; echo err $1 >&2; echo $1 $SLURM_JOB_ID >> \"$2\"",
        "sh",
        &i.to_string(),
        &marks.display().to_string(),
    ])
}

/// The Slurm jobs the lines of `marks` name, and how many lines it has.
fn marked_jobs(marks: &Path) -> (BTreeSet<String>, usize) {
    let text = std::fs::read_to_string(marks).unwrap_or_default();
    let jobs = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
        .collect();
    (jobs, text.lines().count())
}

/// Commands run in the pilots (issue 12, item 5): a sweep of 20 commands through 2 pilots
/// runs in at most those 2 jobs, with one sbatch call (the pilots'); their outputs are
/// exact; nothing is journaled as a job of its own; a rerun answers every command from the
/// cache (runs none: the marks file does not grow) and submits no pilot.
fn commands_sweep(dir: &Path) -> Result<(), String> {
    crate::with_counting_path(dir, || commands_sweep_counted(dir))
}

fn commands_sweep_counted(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let marks = dir.join("marks");
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let w = warnings.clone();
    let exe = builder(&cache, Duration::from_secs(600))
        .max_workers(2)
        .reporter(move |e: &Event| {
            if let EventKind::Warning { message } = &e.kind {
                w.lock().unwrap().push(message.clone());
            }
        })
        .build()
        .map_err(|e| e.to_string())?;
    let futures: Vec<_> = (0..20)
        .map(|i| exe.submit_command(marked_command(i, &marks)))
        .collect();
    let mut outputs = Vec::new();
    for (i, f) in futures.iter().enumerate() {
        let out = f.result().map_err(|e| format!("command {i}: {e}"))?;
        ensure!(
            out.exit_code == 0
                && out.read_stdout().map_err(|e| e.to_string())? == format!("out {i}\n"),
            "command {i}: {out:?}"
        );
        let stderr = out.stderr.as_ref().map(std::fs::read_to_string);
        ensure!(
            matches!(&stderr, Some(Ok(t)) if *t == format!("err {i}\n")),
            "command {i}'s stderr: {stderr:?} ({out:?})"
        );
        ensure!(
            out.stdout.as_deref()
                == Some(
                    exe.task_output_files(&f.key())
                        .map_err(|e| e.to_string())?
                        .0
                        .as_path()
                ),
            "command {i}'s stdout is not its task directory's: {out:?}"
        );
        outputs.push(out);
    }
    let (jobs, runs) = marked_jobs(&marks);
    ensure!(runs == 20, "{runs} runs of 20 commands");
    ensure!(
        !jobs.is_empty() && jobs.len() <= 2,
        "20 commands ran in {} jobs, not in the 2 pilots: {jobs:?}",
        jobs.len()
    );
    let sbatch = crate::calls(dir, "sbatch");
    ensure!(
        sbatch == 1,
        "{sbatch} sbatch calls for 2 pilots (one array)"
    );
    ensure!(
        warnings
            .lock()
            .unwrap()
            .iter()
            .all(|m| !m.contains("runs as its own job")),
        "{:?}",
        warnings.lock().unwrap()
    );
    drop(exe);
    let journaled = pitch::Cache::open(&cache)
        .map_err(|e| e.to_string())?
        .jobs();
    ensure!(
        journaled.is_empty(),
        "commands journaled as jobs: {journaled:?}"
    );
    // `pitch status` sees them finished, with their exit codes.
    let tasks = pitch::Cache::open(&cache)
        .and_then(|c| c.tasks())
        .map_err(|e| e.to_string())?;
    ensure!(
        tasks.len() == 20
            && tasks
                .iter()
                .all(|t| matches!(t.state, pitch::TaskState::Finished) && t.exit_code == Some(0)),
        "{tasks:?}"
    );
    wait_no_pilots(&cache, Duration::from_secs(30))?;

    // The rerun: every command answered from the cache, none run, no pilot submitted.
    let exe = builder(&cache, Duration::from_secs(600))
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string())?;
    let again: Vec<_> = (0..20)
        .map(|i| exe.submit_command(marked_command(i, &marks)))
        .collect();
    for (i, f) in again.iter().enumerate() {
        let out = f
            .result()
            .map_err(|e| format!("rerun of command {i}: {e}"))?;
        ensure!(
            out == outputs[i],
            "rerun of command {i}: {out:?} != {:?}",
            outputs[i]
        );
    }
    drop(exe);
    let (_, runs) = marked_jobs(&marks);
    ensure!(runs == 20, "the rerun ran commands again: {runs} runs");
    ensure!(
        crate::calls(dir, "sbatch") == 1,
        "the rerun submitted: {} sbatch calls",
        crate::calls(dir, "sbatch")
    );
    Ok(())
}

/// A command that fails in a pilot gives the error it gives as a job of its own (exit code
/// 3: `CommandFailed` with its stderr, compared field for field with the same command on an
/// executor without pilots); one past its own `run_time_max` is stopped by its pilot and
/// ends `Timeout`, and the pilot serves on; a cancelled one ends `Cancelled` and its process
/// is gone.
fn commands_failures(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let marks = dir.join("marks");
    // One pilot that stays between the steps, however slow a loaded machine makes the test
    // between them (with 5 s, it once left and a second pilot ran the next command).
    let exe = builder(&cache, Duration::from_secs(600))
        .idle_timeout(Duration::from_secs(120))
        .max_workers(1)
        .build()
        .map_err(|e| e.to_string())?;
    let failing = || {
        pitch::Command::new("sh").args([
            "-c",
            "echo about to fail >&2; echo fail $SLURM_JOB_ID >> \"$0\"; exit 3",
            &marks.display().to_string(),
        ])
    };
    let f = exe.submit_command(failing());
    let in_pilot = f.result();
    match &in_pilot {
        Err(TaskError::CommandFailed {
            program,
            code: 3,
            stderr_tail,
        }) => ensure!(
            program == "sh" && stderr_tail == "about to fail",
            "{in_pilot:?}"
        ),
        other => return Err(format!("expected exit code 3, got {other:?}")),
    }
    let (jobs, _) = marked_jobs(&marks);
    let pilot = f.job_id().unwrap_or_default();
    ensure!(
        jobs.len() == 1 && !pilot.is_empty(),
        "the failing command's jobs {jobs:?}, its future's {pilot:?}"
    );
    let journaled = pitch::Cache::open(&cache)
        .map_err(|e| e.to_string())?
        .jobs();
    ensure!(
        journaled.is_empty(),
        "the command ran as a job: {journaled:?}"
    );

    // Its own run_time_max: the pilot stops it, and serves on.
    let short = exe.with_resources(Resources::new().run_time_max(Duration::from_secs(3)));
    let done = dir.join("slept");
    let slow = short.submit_command(pitch::Command::new("sh").args([
        "-c",
        "sleep 30; touch \"$0\"",
        &done.display().to_string(),
    ]));
    match slow.result() {
        Err(TaskError::Timeout { limit }) => {
            ensure!(limit == Duration::from_secs(3), "limit {limit:?}")
        }
        other => return Err(format!("expected a timeout, got {other:?}")),
    }
    ensure!(
        slow.job_id() == f.job_id(),
        "the timed-out command ran in {:?}, not in the pilot {:?}",
        slow.job_id(),
        f.job_id()
    );
    // The pilot serves on: the next command runs in the same pilot job.
    let next = exe.submit_command(marked_command(7, &marks));
    let out = next.result().map_err(|e| e.to_string())?;
    ensure!(
        out.read_stdout().map_err(|e| e.to_string())? == "out 7\n",
        "{out:?}"
    );
    ensure!(
        next.job_id() == f.job_id(),
        "{:?} != {:?}",
        next.job_id(),
        f.job_id()
    );

    // A cancel: the task ends Cancelled and its process is gone (killed by its pilot, which
    // its driver let go).
    let pid_file = dir.join("pid");
    let long = exe.submit_command(pitch::Command::new("sh").args([
        "-c",
        "echo $$ > \"$0\".tmp && mv \"$0\".tmp \"$0\"; exec sleep 120",
        &pid_file.display().to_string(),
    ]));
    let deadline = Instant::now() + Duration::from_secs(300);
    let pid = loop {
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            break pid.trim().to_string();
        }
        ensure!(Instant::now() < deadline, "the long command never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    long.cancel();
    ensure!(
        long.result() == Err(TaskError::Cancelled),
        "{:?}",
        long.result()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        ensure!(
            Instant::now() < deadline,
            "the cancelled command (pid {pid}) still runs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ensure!(!done.exists(), "the timed-out command ran to its end");
    // Last (the pilot, idle meanwhile, would leave): the same command as a job of its own,
    // on an executor without pilots.
    let plain = crate::executor(&dir.join("cache-jobs"));
    let as_job = plain.submit_command(failing()).result();
    ensure!(
        as_job == in_pilot,
        "as a job: {as_job:?}; in a pilot: {in_pilot:?}"
    );
    Ok(())
}
