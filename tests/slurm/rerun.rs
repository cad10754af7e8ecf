//! Reruns on the same cache directory (issue 15): a failed task runs again whatever ended it
//! (its own failure, a time limit, a scancel), and a driver killed while `sbatch` runs leaves
//! no task to run twice.

use std::path::Path;
use std::time::{Duration, Instant};

use pitch::{Command, Resources, TaskError};

use super::{calls, counting_path, executor, TestFn};
use crate::ensure;
use crate::slurm_tools::{journal, path_with, scancel, which, write_wrapper};
use crate::submission::holds_every_task;

pitch::task! {
    /// Panics until the file `ok` exists.
    pub fn fails_until(ok: String) -> u32 {
        if !Path::new(&ok).exists() {
            panic!("{ok} is missing");
        }
        7
    }
}

pub(crate) const TESTS: &[(&str, TestFn)] = &[
    (
        "rerun_reruns_failures_timeout_scancel_and_plain",
        rerun_reruns_failures,
    ),
    (
        "rerun_after_a_kill_once_sbatch_was_accepted_runs_each_task_once",
        killed_after_sbatch_accepted,
    ),
    (
        "rerun_after_a_kill_before_sbatch_submitted_runs_each_task_once",
        killed_before_sbatch_submitted,
    ),
    (
        "rerun_after_a_kill_while_an_accepted_array_part_runs",
        killed_while_an_array_part_runs,
    ),
];

/// A command that succeeds (printing `tag`) once `ok` exists and otherwise runs `otherwise`.
fn until_ok(ok: &Path, tag: &str, otherwise: &str) -> Command {
    Command::new("sh").args([
        "-c",
        &format!(
            "if [ -e {} ]; then echo {tag}; else {otherwise}; fi",
            ok.display()
        ),
    ])
}

/// Each task fails in the first run (its own failure, a panic, a time limit, a scancel);
/// with the cause gone, a second run on the same cache directory runs each again and
/// succeeds, instead of answering with the first run's failures and jobs.
fn rerun_reruns_failures(dir: &Path) -> Result<(), String> {
    let cache = dir.join("cache");
    let ok = dir.join("ok");
    let ok_arg = ok.display().to_string();
    let limited = Resources::new().run_time_max(Duration::from_secs(60));
    let submit_all = |exe: &pitch::Executor| {
        (
            exe.submit_command(until_ok(&ok, "plain", "exit 5")),
            fails_until::submit(exe, ok_arg.clone()),
            exe.with_resources(limited.clone()).submit_command(until_ok(
                &ok,
                "timeout",
                "sleep 600",
            )),
            exe.submit_command(until_ok(&ok, "scancel", "sleep 601")),
        )
    };
    {
        let exe = executor(&cache);
        let (plain, panics, timeout, cancelled) = submit_all(&exe);
        let id = cancelled.wait_job_id().ok_or("no job id")?;
        std::thread::sleep(Duration::from_secs(1));
        scancel(&id)?;
        ensure!(
            matches!(
                plain.result(),
                Err(TaskError::CommandFailed { code: 5, .. })
            ),
            "{:?}",
            plain.result()
        );
        ensure!(
            matches!(panics.result(), Err(TaskError::Panicked { .. })),
            "{:?}",
            panics.result()
        );
        match cancelled.result() {
            Err(TaskError::Scheduler { state, .. }) => ensure!(state == "CANCELLED", "{state}"),
            other => return Err(format!("expected CANCELLED, got {other:?}")),
        }
        match timeout.result() {
            Err(TaskError::Timeout { limit }) => {
                ensure!(limit == Duration::from_secs(60), "{limit:?}")
            }
            other => return Err(format!("expected TIMEOUT, got {other:?}")),
        }
    }
    let before = journal(&cache).len();
    std::fs::write(&ok, "").map_err(|e| e.to_string())?;
    let exe = executor(&cache);
    let (plain, panics, timeout, cancelled) = submit_all(&exe);
    let stdout = |f: pitch::TaskFuture<pitch::CommandOutput>| {
        f.result()
            .map_err(|e| e.to_string())
            .map(|o| o.read_stdout().unwrap_or_default().trim().to_string())
    };
    ensure!(
        stdout(plain) == Ok("plain".into()),
        "the plain failure ran again"
    );
    ensure!(panics.result() == Ok(7), "{:?}", panics.result());
    let t = stdout(timeout);
    ensure!(t == Ok("timeout".into()), "the timed out task: {t:?}");
    let c = stdout(cancelled);
    ensure!(c == Ok("scancel".into()), "the cancelled task: {c:?}");
    ensure!(
        journal(&cache).len() > before,
        "the rerun submitted nothing ({before} submissions)"
    );
    Ok(())
}

/// PATH with an `sbatch` first that logs its start to `dir/slow.calls`, then runs `body`
/// (`$REAL` is the real sbatch).
fn wrapped_sbatch(dir: &Path, body: &str) -> std::ffi::OsString {
    let bin = dir.join("slow-bin");
    let real = which("sbatch").expect("sbatch on PATH");
    let script = format!(
        "#!/bin/sh\nREAL={}\necho \"$@\" >> {}/slow.calls\n{body}\n",
        real.display(),
        dir.display()
    );
    write_wrapper(&bin, "sbatch", &script).unwrap();
    path_with(bin).unwrap()
}

/// Runs the restart driver (`n` tasks appending to `dir/runs.log`) with `path`.
fn spawn_driver(dir: &Path, path: &std::ffi::OsString, n: usize) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "slurm-driver",
            dir.join("cache").to_str().unwrap(),
            dir.join("runs.log").to_str().unwrap(),
        ])
        .arg(n.to_string())
        .env("PATH", path)
        .spawn()
        .unwrap()
}

fn wait_for(file: &Path, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !file.exists() {
        ensure!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The driver is killed (SIGKILL) at `moment`, then run again to its end: every task ran
/// exactly once; returns how many sbatch calls the second run made.
fn kill_and_rerun(
    dir: &Path,
    first_path: &std::ffi::OsString,
    moment: &Path,
    n: usize,
) -> Result<usize, String> {
    kill_at_and_rerun(
        dir,
        first_path,
        &|| wait_for(moment, "the moment to kill the driver"),
        n,
    )
}

/// [`kill_and_rerun`] at the moment `moment` returns.
fn kill_at_and_rerun(
    dir: &Path,
    first_path: &std::ffi::OsString,
    moment: &dyn Fn() -> Result<(), String>,
    n: usize,
) -> Result<usize, String> {
    let mut first = spawn_driver(dir, first_path, n);
    let waited = moment();
    let _ = first.kill();
    first.wait().map_err(|e| e.to_string())?;
    waited?;
    // Whatever the killed driver's sbatch still does happens before this.
    std::thread::sleep(Duration::from_secs(1));
    let path = counting_path(dir);
    let status = spawn_driver(dir, &path, n)
        .wait()
        .map_err(|e| e.to_string())?;
    ensure!(status.success(), "the second driver failed: {status:?}");
    let mut lines: Vec<String> = std::fs::read_to_string(dir.join("runs.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    let mut expected: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    expected.sort();
    ensure!(lines == expected, "each task runs once: {lines:?}");
    Ok(calls(dir, "sbatch"))
}

/// Killed after sbatch submitted but before it printed the job id: the next run finds the
/// job by its script and submits nothing.
fn killed_after_sbatch_accepted(dir: &Path) -> Result<(), String> {
    let accepted = dir.join("accepted");
    let path = wrapped_sbatch(
        dir,
        &format!(
            "out=$(\"$REAL\" \"$@\") || exit $?\ntouch {}\nsleep 30\necho \"$out\"",
            accepted.display()
        ),
    );
    let sbatch = kill_and_rerun(dir, &path, &accepted, 4)?;
    rerun_submitted_only_the_rest(dir, 4, sbatch)
}

/// After a driver of `n` tasks was killed once sbatch accepted its first submission, the
/// rerun made `sbatch` calls: none when that submission held every task. The tasks usually
/// make one array; on a loaded machine the batch window may split them, and the killed
/// driver never submitted the rest: those the rerun submits.
fn rerun_submitted_only_the_rest(dir: &Path, n: u32, sbatch: usize) -> Result<(), String> {
    if holds_every_task(&accepted_script(dir)?, n)? {
        ensure!(
            sbatch == 0,
            "the rerun submitted {sbatch} more job(s) for tasks already queued or running"
        );
    } else {
        ensure!(
            sbatch >= 1,
            "the tasks outside the accepted job were never submitted"
        );
    }
    Ok(())
}

/// Killed once Slurm accepted an array of 20 tasks and was running part of it (16 CPUs),
/// with the rest pending: squeue then lists the pending rest first (the array's id) and each
/// running element on a line of its own. The rerun must find the array itself, not one of
/// its elements, and submit nothing.
fn killed_while_an_array_part_runs(dir: &Path) -> Result<(), String> {
    let (accepted, id_file) = (dir.join("accepted"), dir.join("accepted.id"));
    let path = wrapped_sbatch(
        dir,
        &format!(
            "out=$(\"$REAL\" \"$@\") || exit $?\necho \"$out\" > {}\ntouch {}\nsleep 60\necho \"$out\"",
            id_file.display(),
            accepted.display()
        ),
    );
    let part_runs = || -> Result<(), String> {
        wait_for(&accepted, "the array's acceptance")?;
        let text = std::fs::read_to_string(&id_file).map_err(|e| e.to_string())?;
        let id = text
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| !w.is_empty())
            .ok_or_else(|| format!("no job id in sbatch's answer {text:?}"))?
            .to_string();
        // A bound on queue wait (the suite shares the cluster), not a timing.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let out = std::process::Command::new("squeue")
                .args(["-h", "-j", &id, "-o", "%T"])
                .output()
                .map_err(|e| e.to_string())?;
            let states = String::from_utf8_lossy(&out.stdout).into_owned();
            if states.contains("RUNNING") && states.contains("PENDING") {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "job {id} never had elements running and pending at once: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let sbatch = kill_at_and_rerun(dir, &path, &part_runs, 20)?;
    rerun_submitted_only_the_rest(dir, 20, sbatch)
}

/// The job script the killed driver's first sbatch call submitted (the wrapped sbatch logs
/// each call's arguments to `slow.calls`; the script is the last).
fn accepted_script(dir: &Path) -> Result<std::path::PathBuf, String> {
    let calls = std::fs::read_to_string(dir.join("slow.calls")).map_err(|e| e.to_string())?;
    calls
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().last())
        .map(std::path::PathBuf::from)
        .ok_or_else(|| "no sbatch call logged".to_string())
}

/// Killed while its sbatch had not reached Slurm yet: that sbatch dies with the driver (no
/// job lands after the next run looked), and the next run submits the tasks once.
fn killed_before_sbatch_submitted(dir: &Path) -> Result<(), String> {
    let started = dir.join("slow.calls");
    let reached = dir.join("reached");
    let path = wrapped_sbatch(
        dir,
        &format!(
            "sleep 4\ntouch {}\nexec \"$REAL\" \"$@\"",
            reached.display()
        ),
    );
    let sbatch = kill_and_rerun(dir, &path, &started, 4)?;
    ensure!(sbatch >= 1, "the rerun submitted nothing");
    // The killed driver's sbatch never got to submit, even later.
    std::thread::sleep(Duration::from_secs(5));
    ensure!(
        !reached.exists(),
        "the killed driver's sbatch went on after the driver died"
    );
    Ok(())
}
