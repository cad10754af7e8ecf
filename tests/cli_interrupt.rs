//! Ctrl-C on `pitch run` (issue 15): the command is cancelled, not left running, and pitch
//! exits 128 + the signal.

use std::path::Path;
use std::time::{Duration, Instant};

fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(t) = std::fs::read_to_string(path) {
            if t.ends_with('\n') {
                return t.trim().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0): read its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn sigint_and_sigterm_cancel_the_command_and_exit_128_plus_the_signal() {
    for (signal, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
            .args(["run", "-q", "--", "sh", "-c"])
            .arg(format!("echo $$ > {}; exec sleep 60", pidfile.display()))
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let pid: i32 = wait_for(&pidfile).parse().unwrap();
        assert!(alive(pid));
        unsafe { libc::kill(child.id() as i32, signal) };
        let start = Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "signal {signal}");
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{:?}",
            start.elapsed()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "the command outlived pitch (signal {signal})");
    }
}

/// Ctrl-C on a local `pitch sweep`: the running points are cancelled (their processes gone),
/// pitch says how many and exits 130; the rerun runs the cancelled points, not the finished.
#[test]
fn sigint_cancels_a_local_sweep_and_the_rerun_runs_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let done = dir.path().join("done");
    // Point 1 finishes at once; the others wait until `done` exists.
    let script = format!(
        "echo {{x}} >> {d}.runs; if [ {{x}} = 1 ] || [ -e {d} ]; then exit 0; fi; echo $$ >> {p}; exec sleep 60",
        d = done.display(),
        p = pids.display()
    );
    let sweep = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"));
        c.args([
            "sweep",
            "-q",
            "--max-cores",
            "3",
            "--param",
            "x=1,2,3",
            "--",
            "sh",
            "-c",
        ])
        .arg(&script)
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped());
        c
    };
    let child = sweep().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let running: Vec<i32> = loop {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        let found: Vec<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
        if found.len() == 2 {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the points never started: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    for pid in running {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "point process {pid} outlived pitch");
    }
    // -q keeps the summary quiet; the rerun (with the cause gone) runs points 2 and 3 only.
    std::fs::write(&done, "").unwrap();
    let rerun = sweep().output().unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let mut runs: Vec<String> = std::fs::read_to_string(dir.path().join("done.runs"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    runs.sort();
    assert_eq!(runs, ["1", "2", "2", "3", "3"], "point 1 ran once");
}

#[test]
fn sigint_on_a_sweep_says_what_was_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["sweep", "--param", "x=1", "--", "sh", "-c"])
        .arg(format!(
            "echo $$ > {}; exec sleep 6{{x}}",
            pidfile.display()
        ))
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&pidfile);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interrupted by signal 15: 1 point cancelled"),
        "{err}"
    );
}

/// A second Ctrl-C ends pitch at once, while the first one's cancel still waits out the
/// grace period of a command that ignores SIGTERM.
#[test]
fn a_second_sigint_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pitch"))
        .args(["sweep", "-q", "--param", "x=1", "--", "sh", "-c"])
        .arg(format!(
            "trap '' TERM; echo $$ > {}; sleep 3{{x}}",
            pidfile.display()
        ))
        .current_dir(dir.path())
        .spawn()
        .unwrap();
    let pid: i32 = wait_for(&pidfile).parse().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the cancel"
    );
    let second = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    // The command is no longer pitch's: end it here.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}
