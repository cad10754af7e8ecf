//! The fault cases of pilot jobs (`block_allocation(true)`), shared by the real-Slurm suite
//! (`tests/slurm/pilot.rs`, SlurmClusterExecutor) and the real-Flux one
//! (`tests/e2e/flux_pilot.rs`, FluxClusterExecutor): a pilot cancelled under its task, the
//! driver killed and rerun, a pilot reaching its wall time while work is left, connections
//! with a wrong secret. Each body takes the executor its backend built and what differs by
//! scheduler (how to cancel a job, how to list the pilots, how to start a driver) as closures.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pitch::{EndReason, Executor, Resources, TaskError};

use crate::ensure;

/// The scheduler job a pilot's task runs in, as its environment names it: SLURM_JOB_ID under
/// Slurm; under Flux FLUX_ENCLOSING_ID (the `flux batch` job whose instance runs the pilot;
/// its F58 form, which `flux job id --to=dec` turns into the decimal id pitch reports).
pub(crate) fn pilot_job() -> String {
    ["SLURM_JOB_ID", "FLUX_ENCLOSING_ID"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_default()
}

pitch::task! {
    /// First run: marks `dir/victim` with its pilot's job and sleeps `ms`; a rerun (the mark
    /// is there) returns at once. Says which it was, and where.
    pub fn pilot_victim(dir: PathBuf, ms: u64) -> String {
        let job = crate::pilot_cases::pilot_job();
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
        let job = crate::pilot_cases::pilot_job();
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        writeln!(f, "{i} {job}").unwrap();
        (job, start, now())
    }
}

pitch::task! {
    pub fn pilot_sum(a: u64, b: u64) -> u64 { a + b }
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

/// What differs by scheduler in the bodies below.
pub(crate) struct Scheduler<'a> {
    /// The job id pitch reports for the job a task named with [`pilot_job`].
    pub job_id: &'a dyn Fn(&str) -> Result<String, String>,
    /// Cancels a job (scancel, flux cancel) by the id pitch reports.
    pub cancel: &'a dyn Fn(&str) -> Result<(), String>,
    /// The pilot jobs of a cache directory the scheduler lists as queued or running.
    pub live_pilots: &'a dyn Fn(&Path) -> Result<Vec<String>, String>,
}

impl Scheduler<'_> {
    /// Waits up to `within` for the cache directory's pilots to be gone.
    pub(crate) fn wait_no_pilots(&self, cache: &Path, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let live = (self.live_pilots)(cache)?;
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
}

/// Submits [`pilot_victim`] (two minutes, marking `marks`), waits until it runs and cancels
/// its pilot's job: the task's future and the job pitch reports for that pilot.
fn cancel_victims_pilot(
    exe: &Executor,
    marks: &Path,
    sched: &Scheduler,
) -> Result<(pitch::TaskFuture<String>, String), String> {
    std::fs::create_dir_all(marks).map_err(|e| e.to_string())?;
    let f = pilot_victim::submit(exe, marks.to_path_buf(), 120_000);
    let victim = (sched.job_id)(&victim_job(marks)?)?;
    (sched.cancel)(&victim)?;
    Ok((f, victim))
}

/// A pilot cancelled under its task, with the default retry (`exe`: pilots on `cache`, at
/// least two at a time): the task runs again on a new pilot, and is recorded once, its
/// attempt naming the victim pilot.
pub(crate) fn cancelled_mid_task(
    exe: Executor,
    cache: &Path,
    marks: &Path,
    sched: &Scheduler,
) -> Result<(), String> {
    let (f, victim) = cancel_victims_pilot(&exe, marks, sched)?;
    let cancelled = Instant::now();
    let value = f.result().map_err(|e| e.to_string())?;
    let rerun_on = value
        .strip_prefix("rerun ")
        .ok_or_else(|| format!("{value} (the victim was {victim})"))?;
    let rerun_on = (sched.job_id)(rerun_on)?;
    ensure!(
        rerun_on != victim,
        "{value}: rerun on the victim {victim} itself"
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
        records(cache) == 2,
        "{} records of one task retried once",
        records(cache)
    );
    let tasks = pitch::Cache::open(cache)
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
    Ok(())
}

/// A pilot cancelled under its task without retries (`exe`: `max_retries(0)`): the task
/// fails with the pilot's job and its end, recorded once.
pub(crate) fn cancelled_without_retry(
    exe: Executor,
    cache: &Path,
    marks: &Path,
    sched: &Scheduler,
) -> Result<(), String> {
    let (f, victim) = cancel_victims_pilot(&exe, marks, sched)?;
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
        records(cache) == 1,
        "{} records of one task",
        records(cache)
    );
    Ok(())
}

/// The body of the driver [`driver_killed`] starts: `n` tasks of one second each, appending
/// to `log`; its exit code.
pub(crate) fn driver(exe: Result<Executor, String>, log: &Path, n: u64) -> i32 {
    let exe = match exe {
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

/// The driver killed with SIGKILL and rerun: `spawn` starts a child process running
/// [`driver`] with `n` tasks on `cache` and `log`, whose pilots leave after `idle`. Its
/// pilots leave once it is dead; the rerun records no task twice and runs no recorded one
/// again.
pub(crate) fn driver_killed(
    cache: &Path,
    log: &Path,
    n: usize,
    idle: Duration,
    spawn: &dyn Fn() -> Result<Child, String>,
    sched: &Scheduler,
) -> Result<(), String> {
    let lines = || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let mut first = spawn()?;
    // Queue wait for the first pilots: a bound, not a timing assertion. Killed once two
    // tasks are recorded (a task logs its line before its pilot answers, and the driver
    // records the answer after: counting lines raced the record under load).
    let deadline = Instant::now() + Duration::from_secs(300);
    while records(cache) < 2 {
        if Instant::now() >= deadline {
            let _ = first.kill();
            let _ = first.wait();
            return Err("the first driver recorded no 2 tasks".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill().map_err(|e| e.to_string())?; // SIGKILL
    first.wait().map_err(|e| e.to_string())?;
    let killed = Instant::now();
    let done_before = records(cache);
    ensure!(
        done_before >= 2 && done_before < n,
        "{done_before} of {n} recorded before the kill"
    );
    // The dead driver's pilots notice and leave (within the idle timeout; the scheduler takes
    // a moment to list them as ended).
    sched.wait_no_pilots(cache, idle + Duration::from_secs(15))?;
    eprintln!(
        "  the dead driver's pilots left within {:?}",
        killed.elapsed()
    );
    let status = spawn()?.wait().map_err(|e| e.to_string())?;
    ensure!(status.success(), "the second driver failed: {status:?}");
    ensure!(
        records(cache) == n,
        "{} records for {n} tasks (a task recorded twice, or lost)",
        records(cache)
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

/// Writes `dir/slow-start.sh.j2`: the built-in template `templates/NAME` whose job script
/// first spends `delay` on its own (a site's module loads) before the pilot starts.
pub(crate) fn slow_start_template(
    name: &str,
    dir: &Path,
    delay: Duration,
) -> Result<PathBuf, String> {
    let template = dir.join("slow-start.sh.j2");
    let builtin = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("templates")
            .join(name),
    )
    .map_err(|e| e.to_string())?;
    ensure!(
        builtin.contains("{{ command }}"),
        "the built-in template {name} changed"
    );
    std::fs::write(
        &template,
        builtin.replace(
            "{{ command }}",
            &format!("sleep {}\n{{{{ command }}}}", delay.as_secs()),
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(template)
}

/// How [`drain`] sizes its pilots and tasks.
pub(crate) struct Drain {
    /// The pilots' wall time (the executor's `run_time_max`).
    pub wall: Duration,
    /// Each task's `run_time_max`, and how long it sleeps.
    pub task_limit: Duration,
    pub task_ms: u64,
}

/// A pilot reaching its wall time while work is left (`exe`: one pilot at a time, wall time
/// `d.wall`, whose job script first waits on its own; see [`slow_start_template`]): 5 tasks
/// asking for `d.task_limit` each. The wall time runs from the job's start, so the first
/// pilot drains when its time left (less pitch's 10 s margin) no longer covers a task, and a
/// replacement runs the rest; no pilot runs tasks past its wall time. The job of the first
/// pilot, as [`pilot_job`] names it.
pub(crate) fn drain(exe: &Executor, log: &Path, d: &Drain) -> Result<String, String> {
    let short = exe.with_resources(Resources::new().run_time_max(d.task_limit));
    let futures: Vec<_> = (0..5)
        .map(|i| pilot_step::submit(&short, log.to_path_buf(), i, d.task_ms))
        .collect();
    let out = pitch::wait_all(futures).map_err(|e| e.to_string())?;
    let distinct: BTreeSet<&String> = out.iter().map(|(j, _, _)| j).collect();
    ensure!(
        distinct.len() >= 2,
        "all 5 tasks ran in {distinct:?}: no replacement pilot"
    );
    // One pilot at a time (max_workers 1), and each ran no task past its wall time.
    let mut by_job: BTreeMap<&String, (f64, f64)> = Default::default();
    for (job, start, end) in &out {
        let e = by_job.entry(job).or_insert((*start, *end));
        e.0 = e.0.min(*start);
        e.1 = e.1.max(*end);
    }
    for (job, (start, end)) in &by_job {
        ensure!(
            Duration::from_secs_f64(end - start) <= d.wall,
            "pilot {job} ran tasks for {:.0} s, past its {:?}",
            end - start,
            d.wall
        );
    }
    Ok(by_job
        .iter()
        .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
        .map(|(j, _)| (*j).clone())
        .unwrap_or_default())
}

/// Connections with a wrong secret to the port `port` of `exe` (whose reporter gathers its
/// warnings in `warnings`) are dropped without an answer and reported; the secret file is
/// private; the executor's own pilots still get in.
pub(crate) fn wrong_secret(
    exe: &Executor,
    cache: &Path,
    port: u16,
    warnings: &Arc<Mutex<Vec<String>>>,
) -> Result<(), String> {
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
    let mut hello = b"PITCHPL3".to_vec();
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
            .any(|m| m.contains("protocol version '1'") && m.contains("this driver's is '3'")),
        "no warning names the old pilot's protocol version: {:?}",
        warnings.lock().unwrap()
    );
    // The executor's own pilots still get in.
    let five = pilot_sum::submit(exe, 2, 3);
    ensure!(five.result() == Ok(5), "{:?}", five.result());
    Ok(())
}

/// A free port of 127.0.0.1 (bound, then let go) for an executor's pilots to connect to.
pub(crate) fn free_port() -> Result<u16, String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port())
}

/// A reporter that gathers the warning events' messages in `into`.
pub(crate) fn warnings_into(
    into: &Arc<Mutex<Vec<String>>>,
) -> impl Fn(&pitch::Event) + Send + Sync + 'static {
    let w = into.clone();
    move |e: &pitch::Event| {
        if let pitch::EventKind::Warning { message } = &e.kind {
            w.lock().unwrap().push(message.clone());
        }
    }
}
