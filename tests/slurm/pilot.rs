//! `SlurmClusterExecutor` with `block_allocation(true)`: elastic pilot jobs on the real
//! Slurm. A pooled sweep with a dependency chain (and its rerun from the cache), a pilot
//! scancelled under its task (rerun elsewhere, recorded once; and without retries, the
//! scheduler's error), the driver killed with SIGKILL and rerun, a pilot reaching its wall
//! time while work is left (drain and replacement), connections with a wrong secret, and
//! pilots of two ranks on two nodes running two-rank tasks.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pitch::{EndReason, Event, EventKind, Resources, SlurmClusterExecutor, TaskError};

use crate::{add, ensure};

pitch::task! {
    /// (the Slurm job it runs in, its process id).
    pub fn pilot_where(_i: u64) -> (String, u32) {
        (std::env::var("SLURM_JOB_ID").unwrap_or_default(), std::process::id())
    }
}

pitch::task! {
    /// First run: marks `dir/victim` with its job id and sleeps `ms`; a rerun (the mark is
    /// there) returns at once. Says which it was, and where.
    pub fn pilot_victim(dir: PathBuf, ms: u64) -> String {
        let job = std::env::var("SLURM_JOB_ID").unwrap_or_default();
        let mark = dir.join("victim");
        if mark.exists() {
            return format!("rerun {job}");
        }
        std::fs::write(dir.join("victim.tmp"), &job).unwrap();
        std::fs::rename(dir.join("victim.tmp"), &mark).unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        format!("first {job}")
    }
}

pitch::task! {
    /// Sleeps `ms`, appends "i job" to `log`; (job, start, end) in seconds since the epoch.
    pub fn pilot_step(log: PathBuf, i: u64, ms: u64) -> (String, f64, f64) {
        let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        let start = now();
        std::thread::sleep(Duration::from_millis(ms));
        let job = std::env::var("SLURM_JOB_ID").unwrap_or_default();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        writeln!(f, "{i} {job}").unwrap();
        (job, start, now())
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

/// Result-log records in the cache directory (each starts with the magic `PLR1`).
pub(crate) fn records(cache: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(cache.join("log")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "plog"))
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            bytes.windows(4).filter(|w| w == b"PLR1").count()
        })
        .sum()
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
    let deadline = Instant::now() + within;
    loop {
        let live = live_pilots(cache)?;
        if live.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "pilots still there after {within:?}: {live:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

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

/// Waits for the victim's mark; the job it names. The pilot waits in the queue first (the
/// whole suite shares the cluster): a bound on queue wait, not a timing assertion.
pub(crate) fn victim_job(dir: &Path) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(job) = std::fs::read_to_string(dir.join("victim")) {
            return Ok(job);
        }
        ensure!(Instant::now() < deadline, "the victim never started");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn scancel(job: &str) -> Result<(), String> {
    let status = std::process::Command::new("scancel")
        .arg(job)
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(status.success(), "scancel {job}: {status:?}");
    Ok(())
}

fn scancelled(dir: &Path) -> Result<(), String> {
    // With the default retry: the task runs again on a new pilot, and is recorded once.
    let cache = dir.join("cache");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
    let exe = builder(&cache, Duration::from_secs(600))
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string())?;
    let f = pilot_victim::submit(&exe, marks.clone(), 120_000);
    let victim = victim_job(&marks)?;
    let cancelled = Instant::now();
    scancel(&victim)?;
    let value = f.result().map_err(|e| e.to_string())?;
    ensure!(
        value.starts_with("rerun ") && value != format!("rerun {victim}"),
        "{value} (the victim was {victim})"
    );
    // The replacement pilot waits in the queue like any job: a bound against a hang, not a
    // timing assertion (the value above shows the task ran again on another pilot).
    ensure!(
        cancelled.elapsed() < Duration::from_secs(300),
        "the rerun took {:?}",
        cancelled.elapsed()
    );
    drop(exe);
    // The lost attempt's failure, then its success (a rerun answers with the success); the
    // attempt is recorded once, naming the victim pilot.
    ensure!(
        records(&cache) == 2,
        "{} records of one task retried once",
        records(&cache)
    );
    let tasks = pitch::Cache::open(&cache)
        .and_then(|c| c.tasks())
        .map_err(|e| e.to_string())?;
    ensure!(tasks.len() == 1, "{} tasks", tasks.len());
    ensure!(
        matches!(tasks[0].state, pitch::TaskState::Finished),
        "{:?}",
        tasks[0].state
    );
    ensure!(
        tasks[0].attempts.len() == 1
            && tasks[0].attempts[0].job_id.as_deref() == Some(victim.as_str()),
        "attempts {:?} (the victim was {victim})",
        tasks[0].attempts
    );

    // Without retries: the task fails with the pilot's job and its end.
    let cache = dir.join("cache-no-retry");
    let marks = dir.join("marks-no-retry");
    std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
    let exe = builder(&cache, Duration::from_secs(600))
        .max_retries(0)
        .build()
        .map_err(|e| e.to_string())?;
    let f = pilot_victim::submit(&exe, marks.clone(), 120_000);
    let victim = victim_job(&marks)?;
    scancel(&victim)?;
    match f.result() {
        Err(TaskError::Scheduler { job_id, state, .. }) => {
            ensure!(
                job_id == victim,
                "the error names job {job_id}, not {victim}"
            );
            ensure!(
                state == EndReason::Cancelled,
                "the pilot's end reason: {state}"
            );
        }
        other => return Err(format!("expected a scheduler error, got {other:?}")),
    }
    drop(exe);
    ensure!(
        records(&cache) == 1,
        "{} records of one task",
        records(&cache)
    );
    Ok(())
}

/// `slurm-pilot-driver CACHE LOG N`: N tasks of one second each through 2 pilots.
pub(crate) fn driver(cache: &Path, log: &Path, n: u64) -> i32 {
    let exe = match builder(cache, Duration::from_secs(600))
        .max_workers(2)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let futures = pilot_step::map(&exe, (0..n).map(|i| (log.to_path_buf(), i, 1000)));
    match pitch::wait_all(futures) {
        Ok(v) if v.len() as u64 == n => 0,
        other => {
            eprintln!("{other:?}");
            1
        }
    }
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
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let mut first = spawn()?;
    // Queue wait for the first pilots: a bound, not a timing assertion. Killed once two
    // tasks are recorded (a task logs its line before its pilot answers, and the driver
    // records the answer after: counting lines raced the record under load).
    let deadline = Instant::now() + Duration::from_secs(300);
    while records(&cache) < 2 {
        ensure!(
            Instant::now() < deadline,
            "the first driver recorded no 2 tasks"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill().map_err(|e| e.to_string())?; // SIGKILL
    first.wait().map_err(|e| e.to_string())?;
    let killed = Instant::now();
    let done_before = records(&cache);
    ensure!(
        done_before >= 2 && done_before < n,
        "{done_before} of {n} recorded before the kill"
    );
    // The dead driver's pilots notice and leave (within the idle timeout; Slurm takes a
    // moment to list them as ended).
    wait_no_pilots(&cache, IDLE + Duration::from_secs(15))?;
    eprintln!(
        "  the dead driver's pilots left within {:?}",
        killed.elapsed()
    );
    let status = spawn()?.wait().map_err(|e| e.to_string())?;
    ensure!(status.success(), "the second driver failed: {status:?}");
    ensure!(
        records(&cache) == n,
        "{} records for {n} tasks (a task recorded twice, or lost)",
        records(&cache)
    );
    // The tasks recorded before the kill were answered from the log, not run again: at most
    // the two running at the kill ran twice.
    ensure!(
        lines() <= n + 2,
        "{} runs of {n} tasks: the rerun ran finished tasks again",
        lines()
    );
    Ok(())
}

fn drain(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let log = dir.join("steps.log");
    // Pilots of 80 s (less the 10 s margin) whose job script first spends 30 s on its own
    // (a site's module loads, in the template): the wall time runs from the job's start, so
    // 3 tasks of 8 s that each ask for 20 s fit in the first (counted from its connection,
    // it would take tasks until Slurm's limit killed it); it drains and a replacement runs
    // the rest.
    let template = dir.join("slow-start.sh.j2");
    let builtin = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/slurm.sh.j2"),
    )
    .map_err(|e| e.to_string())?;
    ensure!(
        builtin.contains("{{ command }}"),
        "the built-in template changed"
    );
    std::fs::write(
        &template,
        builtin.replace("{{ command }}", "sleep 30\n{{ command }}"),
    )
    .map_err(|e| e.to_string())?;
    let exe = builder(&cache, Duration::from_secs(80))
        .template(&template)
        .max_workers(1)
        .build()
        .map_err(|e| e.to_string())?;
    let short = exe.with_resources(Resources::new().run_time_max(Duration::from_secs(20)));
    let futures: Vec<_> = (0..5)
        .map(|i| pilot_step::submit(&short, log.clone(), i, 8000))
        .collect();
    let out = pitch::wait_all(futures).map_err(|e| e.to_string())?;
    let jobs: Vec<&String> = out.iter().map(|(j, _, _)| j).collect();
    let distinct: BTreeSet<&&String> = jobs.iter().collect();
    ensure!(
        distinct.len() >= 2,
        "all 5 tasks ran in {distinct:?}: no replacement pilot"
    );
    // One pilot at a time (max_workers 1), and each ran no task past its wall time.
    let mut by_job: std::collections::BTreeMap<&String, (f64, f64)> = Default::default();
    for (job, start, end) in &out {
        let e = by_job.entry(job).or_insert((*start, *end));
        e.0 = e.0.min(*start);
        e.1 = e.1.max(*end);
    }
    for (job, (start, end)) in &by_job {
        let ran_for = Duration::from_secs_f64(end - start);
        ensure!(
            ran_for <= Duration::from_secs(80),
            "pilot {job} ran tasks for {:.0} s, past its 80 s",
            end - start
        );
    }
    drop(exe);
    // The first pilot left by draining, not by Slurm's time limit.
    let first = by_job
        .iter()
        .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
        .map(|(j, _)| (*j).clone())
        .unwrap_or_default();
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let w = warnings.clone();
    let exe = builder(&cache, Duration::from_secs(600))
        .pilot_address(format!("127.0.0.1:{port}"))
        .reporter(move |e: &Event| {
            if let EventKind::Warning { message } = &e.kind {
                w.lock().unwrap().push(message.clone());
            }
        })
        .build()
        .map_err(|e| e.to_string())?;
    // The secret file is private.
    let secrets: Vec<PathBuf> = std::fs::read_dir(cache.join("jobs"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "secret"))
        .collect();
    ensure!(secrets.len() == 1, "secret files {secrets:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secrets[0])
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    ensure!(mode & 0o777 == 0o600, "the secret file has mode {mode:o}");
    // A peer with the wrong secret, then a frame: dropped without an answer.
    let mut peer = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut hello = b"PITCHPL2".to_vec();
    hello.extend_from_slice(&[b'0'; 64]);
    hello.extend_from_slice(&[8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    peer.write_all(&hello).map_err(|e| e.to_string())?;
    peer.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match peer.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => return Err(format!("the wrong secret got {other:?}")),
    }
    // A pilot of an older pitch (protocol version 1, no commands): refused at its greeting,
    // and the warning says why.
    let mut old = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    old.write_all(&[&b"PITCHPL1"[..], &[b'0'; 64]].concat())
        .map_err(|e| e.to_string())?;
    let _ = old.shutdown(std::net::Shutdown::Write);
    // A stranger that says nothing useful and hangs up.
    let mut stranger =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stranger
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let _ = stranger.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let refused = warnings
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.contains("refused a connection") && m.contains("127.0.0.1"))
            .count();
        if refused >= 3 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{refused} refusal warnings: {:?}",
            warnings.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        warnings
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("secret")),
        "{:?}",
        warnings.lock().unwrap()
    );
    ensure!(
        warnings
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("protocol version '1'") && m.contains("this driver's is '2'")),
        "no warning names the old pilot's protocol version: {:?}",
        warnings.lock().unwrap()
    );
    // The executor's own pilots still get in.
    let five = add::submit(&exe, 2, 3);
    ensure!(five.result() == Ok(5), "{:?}", five.result());
    Ok(())
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
    let old = std::env::var_os("PATH").unwrap();
    std::env::set_var("PATH", crate::counting_path(dir));
    let result = commands_sweep_counted(dir);
    std::env::set_var("PATH", old);
    result
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
    let exe = builder(&cache, Duration::from_secs(600))
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
