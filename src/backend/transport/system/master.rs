//! The master connection (`ssh -M`, a `ControlMaster`): its private socket directory, its
//! opening (waiting for a person at a prompt), its watchdog, its check, and its end; a
//! master found dead is opened again (once) for the next command.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::Inner;
use super::options::options;

/// How long a login may wait for a person answering a prompt (a second factor), beyond the
/// network timeout.
const PROMPT_TIME: Duration = Duration::from_secs(300);

/// A running master connection.
pub(super) struct Master {
    /// The watchdog shell around the master `ssh`.
    child: std::process::Child,
    pub(super) socket: PathBuf,
    /// Its stdin: closed (by [`close`], or by the kernel when this process dies), the
    /// watchdog ends the master.
    watchdog: Option<std::process::ChildStdin>,
}

/// Runs the master (`"$@"`) and ends it when its stdin, a pipe from pitch, closes: when the
/// executor ends, and also when pitch dies without ending it (killed, `exit`), so no master
/// outlives pitch. Ctrl-C at the terminal is ignored by the master (ssh keeps an ignored
/// SIGINT ignored), so pitch can still cancel jobs over it; the master may still prompt on
/// the terminal (same process group). The exit status is the master's.
const WATCHDOG: &str = r#"trap '' INT
exec 3<&0
"$@" </dev/null &
m=$!
{ read x; kill $m 2>/dev/null; } <&3 &
w=$!
exec 3<&-
wait $m
s=$?
kill $w 2>/dev/null
exit $s"#;

/// This executor's new 0700 directory for master sockets, in the user's own 0700 directory
/// `pitch-ssh-UID` under `$XDG_RUNTIME_DIR` or `/tmp` (short: a unix socket path has at most
/// 107 bytes).
pub(super) fn control_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    static EXECUTORS: AtomicU64 = AtomicU64::new(0);
    let uid = unsafe { libc::geteuid() };
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.as_os_str().len() < 40)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let mine = base.join(format!("pitch-ssh-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&mine) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", mine.display())),
    }
    // Another user may have made it first, in a shared /tmp: never use theirs.
    let meta = std::fs::symlink_metadata(&mine)
        .map_err(|e| format!("cannot read {}: {e}", mine.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} (for ssh's master sockets) is not a directory of this user with mode 0700: \
             remove it",
            mine.display()
        ));
    }
    // Directories of pitch processes that died without removing theirs (their masters ended
    // with them).
    for e in std::fs::read_dir(&mine).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .split('-')
            .next()
            .and_then(|p| p.parse::<libc::pid_t>().ok());
        if let Some(pid) = pid.filter(|p| *p > 0) {
            let gone = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let n = EXECUTORS.fetch_add(1, Ordering::Relaxed);
    let dir = mine.join(format!("{}-{n}", std::process::id()));
    // A directory left by a crashed process of the same pid: its sockets are dead.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

impl Inner {
    /// Opens a master connection and waits until it is logged in (the user may be answering
    /// a prompt meanwhile), or failed.
    pub(super) fn open_master(&self) -> Result<Master, String> {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        let socket = self.control.join(format!("m{n}"));
        let log = self.control.join(format!("m{n}.err"));
        let err = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let alive = (self.remote.timeout.as_secs() / 3).clamp(1, 60);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("sh")
            .arg(&self.program)
            .args(options(&self.remote))
            .args(&self.overrides)
            .args(["-M", "-N", "-S"])
            .arg(&socket)
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=no"])
            // The user's LocalForward & co. are their terminal's, not pitch's.
            .args(["-o", "ClearAllForwardings=yes"])
            .args(["-o", &format!("ServerAliveInterval={alive}")])
            .args(["-o", "ServerAliveCountMax=3"])
            .arg("--")
            .arg(&self.remote.host)
            // Prompts go to the terminal (/dev/tty) or to SSH_ASKPASS, never to a pipe of
            // ours; stdin is the watchdog's pipe.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let watchdog = child.stdin.take();
        let started = Instant::now();
        let limit = self.remote.timeout + PROMPT_TIME;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let _ = std::fs::remove_file(&log);
                    return Err(self.explain(&text));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("cannot wait for ssh: {e}")),
            }
            if socket.exists() && self.check(&socket) {
                return Ok(Master {
                    child,
                    socket,
                    watchdog,
                });
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "no login to {} within {} s",
                    self.remote.host,
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the master behind `socket` answers.
    pub(super) fn check(&self, socket: &Path) -> bool {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(&self.program)
            .process_group(0)
            .args(self.client_options(socket))
            .args(["-O", "check", "--"])
            .arg(&self.remote.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A failed login's ssh messages as the cause, in pitch's words first.
    fn explain(&self, text: &str) -> String {
        let text = text.trim();
        let host = &self.remote.host;
        let known = self
            .remote
            .known_hosts
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "your known_hosts".into());
        let said = if text.is_empty() {
            "ssh exited without a message".to_string()
        } else {
            format!("ssh said: {}", text.lines().collect::<Vec<_>>().join(" | "))
        };
        let why = if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            format!(
                "the host key of {host} does NOT match the one in {known}: someone may be \
                 impersonating the host (or its key changed); refusing to connect"
            )
        } else if text.contains("Host key verification failed")
            || text.contains("host key is known")
        {
            format!(
                "the host key of {host} is not in {known}: check its fingerprint with the site, \
                 then log in once with `ssh {host}` and accept it"
            )
        } else if text.contains("Permission denied") || text.contains("Too many authentication") {
            format!("the login as {} was refused", self.login)
        } else if text.contains("connect to host") || text.contains("Connection refused") {
            format!("cannot connect to {}", self.address)
        } else {
            format!("cannot log in to {host} ({})", self.login)
        };
        format!("{why} ({said})")
    }

    /// The socket of a live master, opening one (once) when there is none or it died.
    pub(super) async fn socket(self: &Arc<Self>, dead: Option<&Path>) -> Result<PathBuf, String> {
        let mut guard = self.master.lock().await;
        if let Some(m) = guard.as_mut() {
            let gone = dead == Some(m.socket.as_path()) || !matches!(m.child.try_wait(), Ok(None));
            if !gone {
                return Ok(m.socket.clone());
            }
        }
        let old = guard.take();
        let me = self.clone();
        // Both may wait (a master that lingers, a person typing a code): not on the runtime.
        let master = tokio::task::spawn_blocking(move || {
            if let Some(old) = old {
                close(old);
            }
            if me.closed.load(Ordering::SeqCst) {
                return Err("the executor ended: its SSH connection is closed".to_string());
            }
            me.open_master()
        })
        .await
        .map_err(|e| format!("opening the SSH connection failed: {e}"))??;
        let socket = master.socket.clone();
        *guard = Some(master);
        Ok(socket)
    }
}

/// Ends a master: its watchdog's pipe closes (the watchdog sends it SIGTERM, ssh removes
/// its socket), then SIGKILL if it lingers.
pub(super) fn close(mut m: Master) {
    drop(m.watchdog.take());
    if let Ok(None) = m.child.try_wait() {
        let started = Instant::now();
        while matches!(m.child.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
    let _ = std::fs::remove_file(&m.socket);
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(m) = self.master.get_mut().take() {
            close(m);
        }
        let _ = std::fs::remove_dir_all(&self.control);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_directory_is_private_and_short() {
        use std::os::unix::fs::PermissionsExt;
        let d = control_dir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(d.parent().unwrap()), 0o700);
        // ssh appends a 17-character suffix while it creates the socket.
        assert!(
            d.join("m99").as_os_str().len() + 17 < 100,
            "{}",
            d.display()
        );
        std::fs::remove_dir(&d).unwrap();
    }
}
