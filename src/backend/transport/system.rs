//! Remote submission through the system's `ssh` (OpenSSH): the user's `~/.ssh/config`
//! (`Host` aliases, `User`, `Port`, `IdentityFile`, `ProxyJump`), the agent, Kerberos and
//! keyboard-interactive (MFA) prompts apply exactly as in their terminal.
//!
//! One master connection (`ssh -M`, a `ControlMaster`) is opened per executor and carries
//! every scheduler command and every transfer (`ssh -S socket host 'cat > file'`), so a
//! second-factor prompt is answered once per master, not per command. Its socket lives in a
//! 0700 directory of the user (`$XDG_RUNTIME_DIR` or `/tmp`, `pitch-ssh-UID/`), short enough
//! for the unix socket path limit; the master is closed and the directory removed when the
//! executor ends. A master that dies (network drop, login node reboot) is opened again on
//! the next command, once.
//!
//! The commands through the master run `BatchMode=yes` with `ProxyCommand=false`: when the
//! master is gone they fail instead of prompting or opening a connection of their own
//! (which would authenticate again behind the user's back). The host key is checked with
//! `StrictHostKeyChecking=yes` (never turned off). Every `ssh` is a child process awaited by
//! tokio: nothing blocks the engine's runtime threads, and a large upload is the kernel
//! copying a file into a pipe.
//!
//! Why not the `openssh` crate: its master runs `BatchMode=yes` with no terminal and no
//! askpass, so the keyboard-interactive prompt that MFA sites need can never be answered;
//! the parts we need (a master, commands through it, `cat` for files) are a few `ssh`
//! command lines.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ssh::{on_login_node, open_local, write_local, Remote};
use super::{Transport, TransportError};
use crate::backend::scheduler::{CmdOutput, Fut};
use crate::error::Error;
use crate::scheduler::SchedulerError;
use crate::template::shell_quote;

/// How long a login may wait for a person answering a prompt (a second factor), beyond the
/// network timeout.
const PROMPT_TIME: Duration = Duration::from_secs(300);

/// Transfers in flight at once (each is one session of the master; sshd's `MaxSessions` is
/// 10 by default, and the poller needs one too).
const PARALLEL: usize = 4;

/// The exit status of a remote script: the file to fetch is not there.
const MISSING: i32 = 3;

/// What a download prints before the file.
const BEGIN: &[u8] = b"\0pitch\0";

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `ssh` program on `PATH`, if there is one.
pub(crate) fn program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ssh"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The login node through the system's `ssh`.
pub(crate) struct SystemSsh {
    inner: Arc<Inner>,
}

struct Inner {
    program: PathBuf,
    remote: Remote,
    /// `user@hostname:port` as `ssh -G` resolved the host.
    login: String,
    /// The host name and port `ssh -G` resolved (for error messages).
    address: String,
    /// Options every ssh of this remote gets after what the user set (see [`Resolved`]).
    overrides: Vec<String>,
    local_root: PathBuf,
    durable: bool,
    /// What the local cache directory trusts (downloads are written below it by
    /// `write_local`, through checked handles).
    trust: crate::trust::Policy,
    /// The 0700 directory of this executor's master sockets.
    control: PathBuf,
    master: tokio::sync::Mutex<Option<Master>>,
    /// How many masters were opened (names the sockets).
    opened: AtomicU64,
    /// Names temporary upload files.
    uploads: AtomicU64,
    /// The executor ended: no master is opened again.
    closed: std::sync::atomic::AtomicBool,
}

/// A running master connection.
struct Master {
    /// The watchdog shell around the master `ssh`.
    child: std::process::Child,
    socket: PathBuf,
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

impl SystemSsh {
    /// Resolves the host with `ssh -G`, opens the master connection (a wrong host, key, host
    /// key or directory fails when the executor is built), creates the cache directory's
    /// twin when `create`, and checks it by `trust`.
    pub(crate) fn connect(
        program: PathBuf,
        remote: Remote,
        local_root: &Path,
        durable: bool,
        trust: crate::trust::Policy,
        create: bool,
    ) -> Result<SystemSsh, Error> {
        let host = remote.host.clone();
        let config = |m: String| Error::Config(format!("remote {host}: {m}"));
        remote.check().map_err(config)?;
        let Resolved {
            login,
            address,
            overrides,
        } = resolve(&program, &remote).map_err(config)?;
        let control = control_dir().map_err(config)?;
        let inner = Arc::new(Inner {
            program,
            remote,
            login,
            address,
            overrides,
            local_root: local_root.to_path_buf(),
            durable,
            trust,
            control,
            master: tokio::sync::Mutex::new(None),
            opened: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let master = inner.open_master().map_err(config)?;
        *inner.master.try_lock().expect("nobody else has it yet") = Some(master);
        let ssh = SystemSsh { inner };
        // The directories above the cache directory are not pitch's: the server's umask.
        let dir = ssh.inner.remote.directory.to_string_lossy().into_owned();
        if create {
            let out = ssh
                .inner
                .blocking_script(
                    r#"p=${1%/*}; { [ -z "$p" ] || mkdir -p -- "$p"; } && { mkdir -m 700 -- "$1" 2>/dev/null || [ -d "$1" ]; }"#,
                    &[dir.as_str()],
                )
                .map_err(config)?;
            if !out.status.success() {
                return Err(config(format!(
                    "cannot create {dir} on the remote side: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        let ran = ssh
            .inner
            .blocking_script(crate::trust::REMOTE_CHECK_SCRIPT, &[dir.as_str()])
            .map(|o| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                (o.status.success(), text(&o.stdout), text(&o.stderr))
            });
        super::check_remote_cache(&ssh.inner.remote.directory, trust, ran)?;
        Ok(ssh)
    }
}

/// What ssh's configuration makes of `remote`.
struct Resolved {
    /// `user@hostname:port`.
    login: String,
    /// `hostname:port`.
    address: String,
    /// Options that undo settings of the user's configuration meant for their terminal
    /// sessions, which would break pitch's: a `RemoteCommand` (a command line of pitch's
    /// next to it is an error), `ForkAfterAuthentication` (the master would leave pitch's
    /// watch). Only when set: older ssh clients do not know these options.
    overrides: Vec<String>,
}

/// `remote` as ssh's configuration resolves it (`ssh -G`).
fn resolve(program: &Path, remote: &Remote) -> Result<Resolved, String> {
    let out = std::process::Command::new(program)
        .args(options(remote))
        .arg("-G")
        .arg("--")
        .arg(&remote.host)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "ssh cannot read its configuration for this host: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or("?")
            .to_string()
    };
    let address = format!("{}:{}", get("hostname"), get("port"));
    let mut overrides = vec!["-o".to_string(), "RequestTTY=no".to_string()];
    if get("remotecommand") != "?" {
        overrides.extend(["-o".into(), "RemoteCommand=none".into()]);
    }
    if get("forkafterauthentication") == "yes" {
        overrides.extend(["-o".into(), "ForkAfterAuthentication=no".into()]);
    }
    Ok(Resolved {
        login: format!("{}@{address}", get("user")),
        address,
        overrides,
    })
}

/// The options every `ssh` of `remote` gets: what the user set on the `Remote` (it
/// overrides the ssh configuration), strict host key checking, the timeout.
fn options(remote: &Remote) -> Vec<String> {
    let mut o = Vec::new();
    if let Some(file) = &remote.ssh_config {
        o.extend(["-F".into(), file.to_string_lossy().into_owned()]);
    }
    let mut opt = |s: String| o.extend(["-o".to_string(), s]);
    // An unknown or changed host key is an error, whatever the configuration says.
    opt("StrictHostKeyChecking=yes".into());
    if let Some(file) = &remote.known_hosts {
        opt(format!("UserKnownHostsFile={}", file.display()));
    }
    if let Some(port) = remote.port {
        opt(format!("Port={port}"));
    }
    if let Some(user) = &remote.user {
        opt(format!("User={user}"));
    }
    if let Some(key) = &remote.identity {
        opt(format!("IdentityFile={}", key.display()));
        opt("IdentitiesOnly=yes".into());
    }
    opt(format!(
        "ConnectTimeout={}",
        remote.timeout.as_secs().max(1)
    ));
    o
}

/// This executor's new 0700 directory for master sockets, in the user's own 0700 directory
/// `pitch-ssh-UID` under `$XDG_RUNTIME_DIR` or `/tmp` (short: a unix socket path has at most
/// 107 bytes).
fn control_dir() -> Result<PathBuf, String> {
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
    fn open_master(&self) -> Result<Master, String> {
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
    fn check(&self, socket: &Path) -> bool {
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

    /// The options of a command through the master at `socket`: it must not prompt nor
    /// connect on its own when the master is gone.
    fn client_options(&self, socket: &Path) -> Vec<String> {
        let mut o = Vec::new();
        if let Some(file) = &self.remote.ssh_config {
            o.extend(["-F".into(), file.to_string_lossy().into_owned()]);
        }
        o.extend(["-S".into(), socket.to_string_lossy().into_owned()]);
        o.extend(self.overrides.iter().cloned());
        for opt in [
            "ControlMaster=no",
            "BatchMode=yes",
            "ProxyCommand=false",
            "ClearAllForwardings=yes",
            // Warnings of ssh's own would mix with the scheduler's messages.
            "LogLevel=ERROR",
        ] {
            o.extend(["-o".into(), opt.into()]);
        }
        o.push("-T".into());
        o
    }

    /// The socket of a live master, opening one (once) when there is none or it died.
    async fn socket(self: &Arc<Self>, dead: Option<&Path>) -> Result<PathBuf, String> {
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

    /// Runs `line` on the login node through the master, `stdin` its input; a master found
    /// dead is opened again and the line run once more.
    async fn ssh(
        self: &Arc<Self>,
        line: &str,
        stdin: Option<(&std::fs::File, &Path)>,
    ) -> Result<std::process::Output, String> {
        let mut dead = None;
        for attempt in 0..2 {
            let socket = self.socket(dead.as_deref()).await?;
            let input = match stdin {
                // From its start (a second attempt reads it again).
                Some((file, p)) => Stdio::from(
                    std::io::Seek::seek(&mut &*file, std::io::SeekFrom::Start(0))
                        .and_then(|_| file.try_clone())
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
                ),
                None => Stdio::null(),
            };
            let out = tokio::process::Command::new(&self.program)
                .args(self.client_options(&socket))
                .arg("--")
                .arg(&self.remote.host)
                .arg(line)
                .stdin(input)
                // Ctrl-C at the terminal is for pitch, which decides what to cancel.
                .process_group(0)
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
            // 255: ssh's own failure (or the remote command's status, when the master lives).
            if out.status.code() == Some(255) && attempt == 0 {
                let me = self.clone();
                let s = socket.clone();
                let alive = tokio::task::spawn_blocking(move || me.check(&s))
                    .await
                    .unwrap_or(false);
                if !alive {
                    dead = Some(socket);
                    continue;
                }
            }
            return Ok(out);
        }
        unreachable!("the second attempt returns")
    }

    /// Runs the POSIX sh `script` with `args` ($1...) on the login node.
    async fn script(
        self: &Arc<Self>,
        script: &str,
        args: &[&str],
        stdin: Option<(&std::fs::File, &Path)>,
    ) -> Result<std::process::Output, String> {
        self.ssh(&script_line(script, args), stdin).await
    }

    /// [`Inner::script`] from code that is not async (building the executor).
    fn blocking_script(
        self: &Arc<Self>,
        script: &str,
        args: &[&str],
    ) -> Result<std::process::Output, String> {
        let line = script_line(script, args);
        let socket = self
            .master
            .try_lock()
            .ok()
            .and_then(|m| m.as_ref().map(|m| m.socket.clone()))
            .ok_or("no SSH connection")?;
        use std::os::unix::process::CommandExt;
        std::process::Command::new(&self.program)
            .process_group(0)
            .args(self.client_options(&socket))
            .arg("--")
            .arg(&self.remote.host)
            .arg(line)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))
    }

    /// Runs the relay `line` through the master at `socket`: a child `ssh` whose standard
    /// input and output carry the relay's frames. Ending it (the executor closes) closes the
    /// session, and so the relay's input; so does the death of this process (the child's
    /// input closes) or of the master.
    fn relay(
        &self,
        socket: &Path,
        line: &str,
        to: std::net::SocketAddr,
    ) -> Result<super::relay::Relay, String> {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(&self.program)
            .process_group(0)
            .args(self.client_options(socket))
            .arg("--")
            .arg(&self.remote.host)
            .arg(line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let (Some(input), Some(output), Some(mut err)) =
            (child.stdout.take(), child.stdin.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("ssh gave no pipes".into());
        };
        let errors = Arc::new(std::sync::Mutex::new(String::new()));
        let e = errors.clone();
        let said = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                let mut e = e.lock().unwrap();
                if e.len() < 64 * 1024 {
                    e.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        super::relay::Relay::start(
            Box::new(input),
            Box::new(output),
            to,
            Box::new(move || {
                let _ = child.kill();
                let _ = child.wait();
                // All it said, for the message of a relay that did not start.
                let _ = said.join();
            }),
            errors,
        )
    }

    fn remote_path(&self, local: &Path) -> PathBuf {
        super::twin_path(&self.local_root, &self.remote.directory, local)
    }

    /// Uploads one file through a temporary name and a rename, so a job never sees a
    /// half-written file; skipped when `skip_same_size` and the remote copy has its size.
    async fn upload(
        self: Arc<Self>,
        local: PathBuf,
        skip_same_size: bool,
    ) -> Result<(), TransportError> {
        use std::os::unix::fs::PermissionsExt;
        // Read through the cache directory's checked handles (never through a link).
        let file = open_local(&self.local_root, &local, self.trust)?;
        let meta = file
            .metadata()
            .map_err(|e| TransportError::local("read", &local, e))?;
        let remote = self.remote_path(&local);
        let there = remote.to_string_lossy().into_owned();
        let failed = |e: &dyn std::fmt::Display| {
            TransportError::Remote(format!("cannot upload {there}: {e}"))
        };
        if skip_same_size {
            let out = self
                .script(r#"[ -f "$1" ] && wc -c < "$1""#, &[&there], None)
                .await
                .map_err(|e| failed(&e))?;
            // The last line: a chatty shell start-up file may have printed before.
            let text = String::from_utf8_lossy(&out.stdout);
            let size = text
                .lines()
                .last()
                .and_then(|l| l.trim().parse::<u64>().ok());
            if out.status.success() && size == Some(meta.len()) {
                return Ok(());
            }
        }
        let mode = (meta.permissions().mode() & 0o700).max(0o600);
        let name = remote
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let tmp = remote.with_file_name(format!(".{name}.up.{}.{n}", std::process::id()));
        let tmp = tmp.to_string_lossy().into_owned();
        let out = self
            .script(
                r#"umask 077; mkdir -p -- "${1%/*}" && cat > "$2" && chmod "$3" "$2" && mv -f -- "$2" "$1" || { rm -f -- "$2"; exit 1; }"#,
                &[&there, &tmp, &format!("{mode:o}")],
                Some((&file, &local)),
            )
            .await
            .map_err(|e| failed(&e))?;
        if !out.status.success() {
            return Err(failed(&String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(())
    }

    /// Brings one file down; `false` when the remote side has none.
    async fn fetch(self: Arc<Self>, local: PathBuf) -> Result<bool, TransportError> {
        let there = self.remote_path(&local).to_string_lossy().into_owned();
        let out = self
            .script(
                &format!(
                    r#"[ -f "$1" ] || exit {MISSING}; printf '\000pitch\000' && exec cat -- "$1""#
                ),
                &[&there],
                None,
            )
            .await
            .map_err(|e| TransportError::Remote(format!("cannot download {there}: {e}")))?;
        match out.status.code() {
            Some(0) => {
                // The file starts after the marker (a chatty shell start-up file may have
                // printed before it).
                let Some(at) = find(&out.stdout, BEGIN) else {
                    return Err(TransportError::Remote(format!(
                        "cannot download {there}: the login node's answer has no start marker"
                    )));
                };
                write_local(
                    &self.local_root,
                    &local,
                    &out.stdout[at + BEGIN.len()..],
                    self.durable,
                    self.trust,
                )?;
                Ok(true)
            }
            Some(MISSING) => Ok(false),
            _ => Err(TransportError::Remote(format!(
                "cannot download {there}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }
}

/// The line that runs the POSIX sh `script` with `args` whatever the user's login shell.
fn script_line(script: &str, args: &[&str]) -> String {
    let mut line = format!("exec sh -c {} sh", shell_quote(script));
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    line
}

/// Ends a master: its watchdog's pipe closes (the watchdog sends it SIGTERM, ssh removes
/// its socket), then SIGKILL if it lingers.
fn close(mut m: Master) {
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

/// Runs `job` on each of `items`, at most [`PARALLEL`] at a time; the first error wins.
async fn each<T, R, F>(items: Vec<T>, job: impl Fn(T) -> F) -> Result<Vec<R>, TransportError>
where
    F: std::future::Future<Output = Result<R, TransportError>> + Send + 'static,
    R: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut items = items.into_iter();
    let mut out = Vec::new();
    let mut first_error = None;
    loop {
        while set.len() < PARALLEL {
            match items.next() {
                Some(i) => {
                    set.spawn(job(i));
                }
                None => break,
            }
        }
        match set.join_next().await {
            None => break,
            Some(Ok(Ok(r))) => out.push(r),
            Some(Ok(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                first_error.get_or_insert(on_login_node(format!("a transfer failed: {e}")));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

impl Transport for SystemSsh {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        env: &'a [(&'a str, &'a str)],
        title: &'a str,
    ) -> Fut<'a, Result<CmdOutput, SchedulerError>> {
        Box::pin(async move {
            let line = self.inner.remote.command_line(program, args, env);
            let started = std::time::Instant::now();
            let host = Some(self.inner.remote.host.as_str());
            let out = self.inner.ssh(&line, None).await;
            match &out {
                Ok(o) => super::trace_command(
                    host,
                    program,
                    args,
                    &o.status,
                    o.status.success(),
                    started,
                ),
                Err(e) => super::trace_command(host, program, args, e, false, started),
            }
            let out = out.map_err(|detail| SchedulerError::CannotRun {
                program: program.to_string(),
                detail,
            })?;
            if out.status.code() == Some(127) {
                return Err(SchedulerError::CommandMissing {
                    program: program.to_string(),
                    scheduler: title.to_string(),
                    host: Some(self.inner.remote.host.clone()),
                });
            }
            Ok(CmdOutput {
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                success: out.status.success(),
            })
        })
    }

    fn path(&self, local: &Path) -> PathBuf {
        self.inner.remote_path(local)
    }

    fn upload<'a>(
        &'a self,
        files: &'a [PathBuf],
        unchanged_if_same_size: bool,
    ) -> Fut<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let inner = &self.inner;
            each(files.to_vec(), |f| {
                inner.clone().upload(f, unchanged_if_same_size)
            })
            .await
            .map(drop)
        })
    }

    fn fetch<'a>(&'a self, files: &'a [PathBuf]) -> Fut<'a, Result<usize, TransportError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let got = each(files.to_vec(), |f| inner.clone().fetch(f)).await?;
            Ok(got.into_iter().filter(|g| *g).count())
        })
    }

    fn remove<'a>(&'a self, files: &'a [PathBuf]) -> Fut<'a, ()> {
        Box::pin(async move {
            for chunk in files.chunks(200) {
                let paths: Vec<String> = chunk
                    .iter()
                    .map(|f| self.inner.remote_path(f).to_string_lossy().into_owned())
                    .collect();
                let args: Vec<&str> = paths.iter().map(String::as_str).collect();
                let _ = self.inner.script(r#"rm -f -- "$@""#, &args, None).await;
            }
        })
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn login(&self) -> Option<String> {
        Some(self.inner.login.clone())
    }

    fn relay<'a>(
        &'a self,
        exe: &'a Path,
        bind: &'a str,
        to: std::net::SocketAddr,
    ) -> Fut<'a, Result<super::relay::Relay, String>> {
        Box::pin(async move {
            let socket = self.inner.socket(None).await?;
            let line = super::relay_line(exe, bind);
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.relay(&socket, &line, to))
                .await
                .map_err(|e| format!("starting the relay failed: {e}"))?
        })
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        // A command in flight holds the lock only while it opens a master; that master is
        // closed with the last reference (Drop).
        if let Ok(mut m) = self.inner.master.try_lock() {
            if let Some(m) = m.take() {
                close(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_get_their_arguments_whatever_they_hold() {
        let line = script_line(r#"printf '%s|' "$@""#, &["a b", "it's", "$HOME", "*"]);
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|it's|$HOME|*|");
    }

    #[test]
    fn options_never_turn_host_key_checking_off_and_override_the_config() {
        let r = Remote::new("cluster", "/scratch/c")
            .port(2200)
            .user("me")
            .identity_file("/k")
            .known_hosts("/kh")
            .ssh_config("/cfg");
        let o = options(&r).join(" ");
        assert!(o.starts_with("-F /cfg "), "{o}");
        for want in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/kh",
            "Port=2200",
            "User=me",
            "IdentityFile=/k",
            "IdentitiesOnly=yes",
            "ConnectTimeout=60",
        ] {
            assert!(o.contains(&format!("-o {want}")), "{want} in {o}");
        }
        let bare = options(&Remote::new("cluster", "/c")).join(" ");
        assert!(!bare.contains("Port=") && !bare.contains("User="), "{bare}");
    }

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
