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
