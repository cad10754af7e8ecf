//! Remote submission: a queue executor (Slurm, Flux) whose driver runs on a laptop or
//! workstation and reaches the cluster's login node over SSH. Scheduler commands run there;
//! task files, the worker binary and job scripts go up into a twin of the cache directory on
//! the cluster's shared storage, and results come back down when their jobs leave the queue.
//! The local cache directory stays the driver's record of everything.
//!
//! This module holds [`Remote`] (where and how) and [`Ssh`], the built-in client (libssh2,
//! SFTP): the fallback where no system `ssh` exists (see [`super::system`] for the default).
//! The host key is checked against `known_hosts` (an unknown or changed key is an error,
//! never accepted); the user authenticates with a key file or the SSH agent, never a
//! password.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ssh2::{CheckResult, KnownHostFileKind, OpenFlags, OpenType, Session, Sftp};

use super::{trace_command, SshClient, Transport, TransportError};
use crate::backend::scheduler::{CmdOutput, Fut};
use crate::error::Error;
use crate::scheduler::SchedulerError;
use crate::template::shell_quote;

/// Where and how to reach a cluster's login node, and where the cache directory's twin
/// lives on its shared storage.
///
/// `host` is what you would type after `ssh`: a host name, or a `Host` alias of
/// `~/.ssh/config`. With the system's `ssh` (the default where one is installed) that file
/// applies as in a terminal (`User`, `Port`, `IdentityFile`, `ProxyJump`, agent, Kerberos,
/// keyboard-interactive/MFA prompts, answered once per connection); what is set here
/// overrides it.
///
/// ```no_run
/// let exe = pitch::SlurmClusterExecutor::builder()
///     .remote(pitch::Remote::new("login.cluster.example.org", "/scratch/me/pitch-cache"))
///     .build()?;
/// # Ok::<(), pitch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Remote {
    pub(super) host: String,
    pub(super) port: Option<u16>,
    pub(super) user: Option<String>,
    pub(super) identity: Option<PathBuf>,
    pub(super) known_hosts: Option<PathBuf>,
    pub(super) ssh_config: Option<PathBuf>,
    pub(super) client: SshClient,
    pub(super) env: Vec<(String, String)>,
    pub(super) path: Vec<PathBuf>,
    pub(super) directory: PathBuf,
    pub(super) timeout: Duration,
}

impl Remote {
    /// The login node `host` (a host name or a `Host` alias of `~/.ssh/config`), with the
    /// cache directory's twin at `directory`, an absolute path on storage the compute nodes
    /// share.
    pub fn new(host: impl Into<String>, directory: impl Into<PathBuf>) -> Remote {
        Remote {
            host: host.into(),
            port: None,
            user: None,
            identity: None,
            known_hosts: None,
            ssh_config: None,
            client: SshClient::Auto,
            env: Vec::new(),
            path: Vec::new(),
            directory: directory.into(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The SSH port (default: the ssh configuration's, else 22).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The user on the login node (default: the ssh configuration's, else `$USER`).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The private key to log in with, and only that one (default: the ssh configuration's
    /// and the SSH agent's keys; the built-in client: the agent, then `~/.ssh/id_ed25519`,
    /// `id_ecdsa`, `id_rsa`).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity = Some(path.into());
        self
    }

    /// The known_hosts file the login node's key must be in (default: the ssh
    /// configuration's, else `~/.ssh/known_hosts`).
    pub fn known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.known_hosts = Some(path.into());
        self
    }

    /// The ssh configuration file to read instead of `~/.ssh/config` (`ssh -F`); needs the
    /// system's `ssh`.
    pub fn ssh_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssh_config = Some(path.into());
        self
    }

    /// Which SSH client connects (default [`SshClient::Auto`]: the system's `ssh` when one
    /// is on `PATH`, else the built-in one).
    pub fn client(mut self, client: SshClient) -> Self {
        self.client = client;
        self
    }

    /// Sets `name=value` for the scheduler's commands on the login node (and so for the jobs
    /// they submit, which inherit it): e.g. `FLUX_URI` for a Flux instance that a
    /// non-interactive login does not know.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Puts `dir` in front of the login node's `PATH` for the scheduler's commands, for a
    /// scheduler a non-interactive login does not find (e.g. `/opt/flux/bin`); the last one
    /// given comes first.
    pub fn path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path.push(dir.into());
        self
    }

    /// How long one network operation may take before it is an error (default 60 s): a
    /// dead connection fails the operation instead of hanging the driver.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port.unwrap_or(22))
    }

    /// The transport of `pitch render` for this login node: its paths, no connection.
    pub(crate) fn offline(&self, local_root: &Path) -> super::Offline {
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        super::Offline {
            local_root: local_root.to_path_buf(),
            directory: self.directory.clone(),
            login: format!("{user}{}", self.address()),
        }
    }

    /// The checks both clients make before connecting.
    pub(super) fn check(&self) -> Result<(), String> {
        if !self.directory.is_absolute() {
            return Err(format!(
                "the remote cache directory {} must be an absolute path",
                self.directory.display()
            ));
        }
        if self.timeout.is_zero() {
            return Err("the timeout must be more than zero".into());
        }
        if self.host.is_empty() || self.host.starts_with('-') {
            return Err(format!("{:?} is not a host name", self.host));
        }
        for (name, _) in &self.env {
            let mut chars = name.chars();
            let ok = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || name == "PATH" {
                return Err(format!(
                    "{name:?} cannot be set with env (a variable name{}",
                    if name == "PATH" {
                        ", but PATH: use path(dir))"
                    } else {
                        ": letters, digits, _)"
                    }
                ));
            }
        }
        for dir in &self.path {
            if !dir.is_absolute() || dir.to_string_lossy().contains(':') {
                return Err(format!(
                    "the remote PATH entry {} must be an absolute path without ':'",
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    /// The shell line the login node runs for a scheduler command: this remote's `path` and
    /// `env`, then `env`, then `program args`, every word quoted.
    pub(super) fn command_line(
        &self,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> String {
        let mut all: Vec<(&str, String)> = Vec::new();
        if !self.path.is_empty() {
            let mut value = String::new();
            for dir in self.path.iter().rev() {
                value.push_str(&shell_quote(&dir.to_string_lossy()));
                value.push(':');
            }
            // Expanded by the login node's shell.
            value.push_str("\"$PATH\"");
            all.push(("PATH", value));
        }
        for (k, v) in self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(env.iter().copied())
        {
            all.push((k, shell_quote(v)));
        }
        command_line(program, args, &all)
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// An SSH connection to the login node, opened again when it drops.
pub(crate) struct Ssh {
    remote: Remote,
    user: String,
    local_root: PathBuf,
    /// Whether downloaded files are fsynced (the store's setting).
    durable: bool,
    /// What the local cache directory trusts (see `write_local`).
    trust: crate::trust::Policy,
    session: Mutex<Option<Session>>,
}

impl Ssh {
    /// Connects (so that a wrong host, key or directory fails when the executor is built),
    /// creates the cache directory's twin when `create`, and checks it by `trust`.
    pub(crate) fn connect(
        remote: Remote,
        local_root: &Path,
        durable: bool,
        trust: crate::trust::Policy,
        create: bool,
    ) -> Result<Ssh, Error> {
        let address = remote.address();
        let config = |m: String| Error::Config(format!("remote {address}: {m}"));
        remote.check().map_err(config)?;
        if let Some(file) = &remote.ssh_config {
            return Err(config(format!(
                "an ssh configuration file ({}) needs the system's ssh client, not the \
                 built-in one",
                file.display()
            )));
        }
        let user = match &remote.user {
            Some(u) => u.clone(),
            None => std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .map_err(|_| config("no user given and $USER is not set".into()))?,
        };
        let ssh = Ssh {
            remote,
            user,
            local_root: local_root.to_path_buf(),
            durable,
            trust,
            session: Mutex::new(None),
        };
        if create {
            ssh.with_session(|s| {
                let sftp = s
                    .sftp()
                    .map_err(|e| on_login_node(format!("cannot start SFTP: {e}")))?;
                // The directories above the cache directory are not pitch's: the server's
                // umask.
                mkdirs(&sftp, &ssh.remote.directory, 0o777)
            })
            .map_err(|e| config(e.to_string()))?;
        }
        let dir = ssh.remote.directory.to_string_lossy().into_owned();
        let args = [
            "-c".to_string(),
            crate::trust::REMOTE_CHECK_SCRIPT.to_string(),
            "sh".to_string(),
            dir,
        ];
        let ran = ssh
            .exec("sh", &args, &[], "sh")
            .map(|o| (o.success, o.stdout, o.stderr))
            .map_err(|e| e.to_string());
        super::check_remote_cache(&ssh.remote.directory, trust, ran)?;
        Ok(ssh)
    }

    pub(super) fn open(&self) -> Result<Session, String> {
        let r = &self.remote;
        let port = r.port.unwrap_or(22);
        let addrs: Vec<_> = (r.host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", r.host))?
            .collect();
        let mut last = String::from("no address");
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, r.timeout) {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(e) => last = format!("cannot connect to {a}: {e}"),
            }
        }
        let tcp = tcp.ok_or(last)?;
        let mut s = Session::new().map_err(|e| format!("cannot start SSH: {e}"))?;
        s.set_timeout(r.timeout.as_millis().min(u32::MAX as u128) as u32);
        s.set_tcp_stream(tcp);
        s.handshake()
            .map_err(|e| format!("SSH handshake failed: {e}"))?;
        self.check_host_key(&s)?;
        self.authenticate(&s)?;
        Ok(s)
    }

    fn check_host_key(&self, s: &Session) -> Result<(), String> {
        let r = &self.remote;
        let file = r
            .known_hosts
            .clone()
            .or_else(|| home().map(|h| h.join(".ssh/known_hosts")))
            .ok_or("no known_hosts file given and $HOME is not set")?;
        let (key, _) = s.host_key().ok_or("the server sent no host key")?;
        let mut known = s
            .known_hosts()
            .map_err(|e| format!("cannot read known hosts: {e}"))?;
        known
            .read_file(&file, KnownHostFileKind::OpenSSH)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let port = r.port.unwrap_or(22);
        match known.check_port(&r.host, port, key) {
            CheckResult::Match => Ok(()),
            CheckResult::NotFound => Err(format!(
                "the host key of {} is not in {}: check its fingerprint with the site, then \
                 add it (`ssh-keyscan -p {} {} >> {}`)",
                r.host,
                file.display(),
                port,
                r.host,
                file.display()
            )),
            CheckResult::Mismatch => Err(format!(
                "the host key of {} does NOT match the one in {}: someone may be \
                 impersonating the host (or its key changed); refusing to connect",
                r.host,
                file.display()
            )),
            CheckResult::Failure => Err(format!(
                "could not check the host key of {} against {}",
                r.host,
                file.display()
            )),
        }
    }

    fn authenticate(&self, s: &Session) -> Result<(), String> {
        let user = &self.user;
        let mut tried = Vec::new();
        if let Some(key) = &self.remote.identity {
            return s
                .userauth_pubkey_file(user, None, key, None)
                .map_err(|e| format!("the key {} was refused for {user}: {e}", key.display()));
        }
        if std::env::var_os("SSH_AUTH_SOCK").is_some() {
            match s.userauth_agent(user) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(format!("the SSH agent ({e})")),
            }
        }
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let Some(key) = home().map(|h| h.join(".ssh").join(name)) else {
                break;
            };
            if key.exists() {
                match s.userauth_pubkey_file(user, None, &key, None) {
                    Ok(()) => return Ok(()),
                    Err(e) => tried.push(format!("{} ({e})", key.display())),
                }
            }
        }
        Err(if tried.is_empty() {
            format!("no SSH key to log in as {user}: give one with Remote::identity_file, or run an SSH agent")
        } else {
            format!("could not log in as {user}; tried {}", tried.join(", "))
        })
    }

    /// Runs `f` with a live session; a failure that looks like a lost connection opens a new
    /// session and tries once more.
    fn with_session<T>(
        &self,
        mut f: impl FnMut(&Session) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let mut guard = self.session.lock().unwrap();
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.open().map_err(TransportError::Remote)?);
            }
            match f(guard.as_ref().unwrap()) {
                Ok(v) => return Ok(v),
                Err(TransportError::Remote(e)) if attempt == 0 && lost(&e) => *guard = None,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the second attempt returns")
    }

    fn remote_path(&self, local: &Path) -> PathBuf {
        super::twin_path(&self.local_root, &self.remote.directory, local)
    }

    fn exec(
        &self,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
        title: &str,
    ) -> Result<CmdOutput, SchedulerError> {
        let line = self.remote.command_line(program, args, env);
        let started = std::time::Instant::now();
        let out = self.with_session(|s| {
            let mut ch = s
                .channel_session()
                .map_err(|e| on_login_node(format!("cannot open an SSH channel: {e}")))?;
            ch.exec(&line)
                .map_err(|e| on_login_node(format!("cannot run {program}: {e}")))?;
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            ch.read_to_end(&mut stdout)
                .map_err(|e| on_login_node(format!("reading {program}'s output: {e}")))?;
            ch.stderr()
                .read_to_end(&mut stderr)
                .map_err(|e| on_login_node(format!("reading {program}'s errors: {e}")))?;
            ch.wait_close()
                .map_err(|e| on_login_node(format!("waiting for {program}: {e}")))?;
            let code = ch.exit_status().map_err(|e| on_login_node(e.to_string()))?;
            Ok((code, stdout, stderr))
        });
        let host = Some(self.remote.host.as_str());
        match &out {
            Ok((code, ..)) => trace_command(host, program, args, code, *code == 0, started),
            Err(e) => trace_command(host, program, args, e, false, started),
        }
        let (code, stdout, stderr) = out.map_err(|e| SchedulerError::CannotRun {
            program: program.to_string(),
            detail: e.to_string(),
        })?;
        if code == 127 {
            return Err(SchedulerError::CommandMissing {
                program: program.to_string(),
                scheduler: title.to_string(),
                host: Some(self.remote.host.clone()),
            });
        }
        Ok(CmdOutput {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            success: code == 0,
        })
    }

    fn upload_files(&self, files: &[PathBuf], skip_same_size: bool) -> Result<(), TransportError> {
        self.with_session(|s| {
            let sftp = s
                .sftp()
                .map_err(|e| on_login_node(format!("cannot start SFTP: {e}")))?;
            for local in files {
                let remote = self.remote_path(local);
                // Read through the cache directory's checked handles (never through a link).
                let file = open_local(&self.local_root, local, self.trust)?;
                let size = file
                    .metadata()
                    .map_err(|e| TransportError::local("read", local, e))?
                    .len();
                let there = sftp.stat(&remote).ok().and_then(|st| st.size);
                if skip_same_size && there == Some(size) {
                    continue;
                }
                if let Some(dir) = remote.parent() {
                    mkdirs(&sftp, dir, 0o700)?;
                }
                put(&sftp, (file, local), &remote, there.is_some())?;
            }
            Ok(())
        })
    }

    fn fetch_files(&self, files: &[PathBuf]) -> Result<usize, TransportError> {
        self.with_session(|s| {
            let sftp = s
                .sftp()
                .map_err(|e| on_login_node(format!("cannot start SFTP: {e}")))?;
            let mut got = 0;
            for local in files {
                let remote = self.remote_path(local);
                let mut f = match sftp.open(&remote) {
                    Ok(f) => f,
                    Err(_) => continue,
                };
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(|e| {
                    TransportError::Remote(format!("cannot download {}: {e}", remote.display()))
                })?;
                write_local(&self.local_root, local, &bytes, self.durable, self.trust)?;
                got += 1;
            }
            Ok(got)
        })
    }
}

/// The shell line the login node runs: `env K=V ... program args`, every word quoted but
/// the values, which come quoted.
fn command_line(program: &str, args: &[String], env: &[(&str, String)]) -> String {
    let mut line = String::new();
    if !env.is_empty() {
        line.push_str("env");
        for (k, v) in env {
            line.push_str(&format!(" {k}={v}"));
        }
        line.push(' ');
    }
    line.push_str(&shell_quote(program));
    for a in args {
        line.push(' ');
        line.push_str(&shell_quote(a));
    }
    line
}

/// A failure of the login node's side.
pub(super) fn on_login_node(message: String) -> TransportError {
    TransportError::Remote(message)
}

/// Whether an error means the connection is gone (worth one new session).
fn lost(e: &str) -> bool {
    [
        "channel",
        "SFTP",
        "socket",
        "disconnect",
        "Broken pipe",
        "Timed out",
        "timed out",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// Creates `dir` 0700 on the remote side, like the local store, and its missing parents with
/// `parents` (less the SFTP server's umask).
fn mkdirs(sftp: &Sftp, dir: &Path, parents: i32) -> Result<(), TransportError> {
    mkdir_mode(sftp, dir, 0o700, parents)
}

fn mkdir_mode(sftp: &Sftp, dir: &Path, mode: i32, parents: i32) -> Result<(), TransportError> {
    if sftp.stat(dir).is_ok() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdir_mode(sftp, parent, parents, parents)?;
    }
    match sftp.mkdir(dir, mode) {
        Ok(()) => Ok(()),
        // Made meanwhile by another upload.
        Err(_) if sftp.stat(dir).is_ok() => Ok(()),
        Err(e) => Err(on_login_node(format!(
            "cannot create {} on the remote side: {e}",
            dir.display()
        ))),
    }
}

/// Uploads `local` to `remote` through a temporary name and a rename, so a job never sees a
/// half-written file.
fn put(
    sftp: &Sftp,
    (mut file, local): (std::fs::File, &Path),
    remote: &Path,
    replace: bool,
) -> Result<(), TransportError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| TransportError::local("read", local, e))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &file
            .metadata()
            .map_err(|e| TransportError::local("read", local, e))?
            .permissions(),
    ) & 0o700;
    let name = remote
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = remote.with_file_name(format!(".{name}.up.{}", std::process::id()));
    let failed = |e: &dyn std::fmt::Display| {
        TransportError::Remote(format!("cannot upload {}: {e}", remote.display()))
    };
    let mut f = sftp
        .open_mode(
            &tmp,
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            mode.max(0o600) as i32,
            OpenType::File,
        )
        .map_err(|e| failed(&e))?;
    f.write_all(&bytes).map_err(|e| failed(&e))?;
    f.fsync().ok();
    drop(f);
    if replace {
        let _ = sftp.unlink(remote);
    }
    sftp.rename(&tmp, remote, None).map_err(|e| failed(&e))
}

/// Opens the local file `path` to upload it: below the cache directory `root` through checked
/// directory handles (a link on the way, or at the file, refused naming it), a regular file;
/// elsewhere (a file of the user's) as it is.
pub(super) fn open_local(
    root: &Path,
    path: &Path,
    trust: crate::trust::Policy,
) -> Result<std::fs::File, TransportError> {
    let failed = |e: std::io::Error| TransportError::local("read", path, e);
    match crate::dir::below(root, path) {
        Some((names, name)) => crate::dir::walk(root, &names, trust, false)
            .and_then(|dir| dir.open_regular(name))
            .map_err(failed),
        None => std::fs::File::open(path).map_err(failed),
    }
}

/// Writes a downloaded file `path` into the local cache directory `root`, atomically like
/// the store's own files (fsynced when `durable`), through checked directory handles
/// (`crate::dir::walk`: missing folders created 0700, a link on the way refused, naming it).
pub(super) fn write_local(
    root: &Path,
    path: &Path,
    bytes: &[u8],
    durable: bool,
    trust: crate::trust::Policy,
) -> Result<(), TransportError> {
    let failed = |e: std::io::Error| TransportError::local("write", path, e);
    let (names, name) = crate::dir::below(root, path).ok_or_else(|| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is not below the cache directory {}", root.display()),
        ))
    })?;
    let dir = crate::dir::walk(root, &names, trust, true).map_err(failed)?;
    dir.write_atomic(name, bytes, durable, 0o600)
        .map_err(failed)
}

/// [`Ssh`] as a transport: every libssh2 call runs on tokio's blocking pool, never on the
/// engine's runtime threads. (The session is one: transfers and the poller's queries still
/// take turns on it.)
pub(crate) struct Builtin(pub(crate) Arc<Ssh>);

/// Runs `f` with the session's owner on the blocking pool.
async fn off_runtime<T: Send + 'static>(
    ssh: &Arc<Ssh>,
    f: impl FnOnce(&Ssh) -> T + Send + 'static,
) -> Result<T, String> {
    let ssh = ssh.clone();
    tokio::task::spawn_blocking(move || f(&ssh))
        .await
        .map_err(|e| format!("the SSH call failed: {e}"))
}

impl Transport for Builtin {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        env: &'a [(&'a str, &'a str)],
        title: &'a str,
    ) -> Fut<'a, Result<CmdOutput, SchedulerError>> {
        let owned = (
            program.to_string(),
            args.to_vec(),
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
            title.to_string(),
        );
        Box::pin(async move {
            off_runtime(&self.0, move |ssh| {
                let (program, args, env, title) = owned;
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                ssh.exec(&program, &args, &env, &title)
            })
            .await
            .unwrap_or_else(|detail| {
                Err(SchedulerError::CannotRun {
                    program: program.to_string(),
                    detail,
                })
            })
        })
    }

    fn path(&self, local: &Path) -> PathBuf {
        self.0.remote_path(local)
    }

    fn upload<'a>(
        &'a self,
        files: &'a [PathBuf],
        unchanged_if_same_size: bool,
    ) -> Fut<'a, Result<(), TransportError>> {
        let files = files.to_vec();
        Box::pin(async move {
            off_runtime(&self.0, move |ssh| {
                ssh.upload_files(&files, unchanged_if_same_size)
            })
            .await
            .unwrap_or_else(|e| Err(TransportError::Remote(e)))
        })
    }

    fn fetch<'a>(&'a self, files: &'a [PathBuf]) -> Fut<'a, Result<usize, TransportError>> {
        let files = files.to_vec();
        Box::pin(async move {
            off_runtime(&self.0, move |ssh| ssh.fetch_files(&files))
                .await
                .unwrap_or_else(|e| Err(TransportError::Remote(e)))
        })
    }

    fn remove<'a>(&'a self, files: &'a [PathBuf]) -> Fut<'a, ()> {
        let files = files.to_vec();
        Box::pin(async move {
            let _ = off_runtime(&self.0, move |ssh| {
                ssh.with_session(|s| {
                    let sftp = s
                        .sftp()
                        .map_err(|e| on_login_node(format!("cannot start SFTP: {e}")))?;
                    for f in &files {
                        let _ = sftp.unlink(&ssh.remote_path(f));
                    }
                    Ok(())
                })
            })
            .await;
        })
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn login(&self) -> Option<String> {
        Some(self.0.login())
    }

    fn relay<'a>(
        &'a self,
        exe: &'a Path,
        bind: &'a str,
        to: std::net::SocketAddr,
    ) -> Fut<'a, Result<super::relay::Relay, String>> {
        let line = super::relay_line(exe, bind);
        Box::pin(async move {
            // A session of its own: the relay's pump must not wait on the shared one.
            off_runtime(&self.0, move |ssh| {
                super::relay::over_libssh2(ssh.open()?, &line, to)
            })
            .await?
        })
    }
}

impl Ssh {
    /// `user@host:port`.
    fn login(&self) -> String {
        format!("{}@{}", self.user, self.remote.address())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_survive_the_remote_shell() {
        let args: Vec<String> = ["a b", "it's", "$HOME", "*", "--name=x;y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let line = Remote::new("h", "/c")
            .path("/opt/my tools/bin")
            .env("X_FIRST", "$HOME")
            .command_line(
                "sh",
                &[
                    vec![
                        "-c".to_string(),
                        r#"printf '%s|' "$X_FIRST" "$X_TEST" "${PATH%%:*}" "$@""#.to_string(),
                        "sh".to_string(),
                    ],
                    args,
                ]
                .concat(),
                &[("X_TEST", "1 2")],
            );
        assert!(
            line.starts_with(
                "env PATH='/opt/my tools/bin':\"$PATH\" X_FIRST='$HOME' X_TEST='1 2' sh "
            ),
            "{line}"
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "$HOME|1 2|/opt/my tools/bin|a b|it's|$HOME|*|--name=x;y|"
        );
    }

    #[test]
    fn cache_paths_map_to_the_remote_twin_others_stay() {
        let ssh = Ssh {
            remote: Remote::new("h", "/scratch/me/cache"),
            user: "me".into(),
            local_root: PathBuf::from("/home/me/pitch-cache"),
            durable: false,
            trust: crate::trust::Policy::default(),
            session: Mutex::new(None),
        };
        assert_eq!(
            ssh.remote_path(Path::new("/home/me/pitch-cache/tasks/ab/k/task.bin")),
            Path::new("/scratch/me/cache/tasks/ab/k/task.bin")
        );
        assert_eq!(
            ssh.remote_path(Path::new("/data/input.csv")),
            Path::new("/data/input.csv")
        );
        assert_eq!(ssh.login(), "me@h:22");
        assert!(lost("cannot open an SSH channel: [-7] Unable to send"));
        assert!(!lost(
            "the key /k was refused for me: Username/PublicKey combination invalid"
        ));
    }

    /// Uploads read, and downloads write, the local cache directory through checked handles:
    /// a link planted on the way (or at the file) is refused, naming it, and nothing outside
    /// the cache is read or written.
    #[test]
    fn uploads_and_downloads_never_go_through_a_link_in_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache");
        let policy = crate::trust::Policy::default();
        let store = crate::store::Store::open(&root, false, policy).unwrap();
        let root = store.root().to_path_buf();
        let paths = store.task(&crate::task::TaskKey::explicit("k"));
        paths.create().unwrap();
        let file = paths.task_file();
        write_local(&root, &file, b"task", false, policy).unwrap();
        let mut text = String::new();
        open_local(&root, &file, policy)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "task");
        // The shard swapped for a link to a folder of someone else's.
        let shard = paths.dir().parent().unwrap().to_path_buf();
        let outside = d.path().join("outside");
        std::fs::rename(&shard, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &shard).unwrap();
        let e = open_local(&root, &file, policy).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{} is a symbolic link", shard.display())),
            "{e}"
        );
        let e = write_local(&root, &file, b"forged", false, policy)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        let there = outside
            .join(paths.dir().file_name().unwrap())
            .join("task.bin");
        assert_eq!(
            std::fs::read(&there).unwrap(),
            b"task",
            "written through the link"
        );
        // A file outside the cache directory (the user's own) is read as it is.
        let mine = d.path().join("mine");
        std::fs::write(&mine, "x").unwrap();
        assert!(open_local(&root, &mine, policy).is_ok());
    }
}
