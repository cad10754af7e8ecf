//! Where a queue executor's scheduler commands run and its jobs' files live: here
//! ([`Local`]), or on a login node reached over SSH (feature `remote`), where the cache
//! directory has a twin on the cluster's shared storage: through the system's `ssh`
//! ([`system`], the default) or the built-in libssh2 client ([`ssh`]).

use std::path::{Path, PathBuf};

#[cfg(feature = "remote")]
pub(crate) mod relay;
#[cfg(feature = "remote")]
pub(crate) mod ssh;
#[cfg(feature = "remote")]
pub(crate) mod system;

/// Which SSH client a [`Remote`](crate::Remote) connects with (`client` in a profile's
/// `[remote]` table: `"auto"`, `"system"`, `"builtin"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SshClient {
    /// The system's `ssh` when one is on `PATH`, else the built-in client.
    #[default]
    Auto,
    /// The system's `ssh` (OpenSSH): `~/.ssh/config`, `ProxyJump`, the agent, Kerberos and
    /// keyboard-interactive (MFA) prompts apply as in a terminal; one connection (a
    /// `ControlMaster`) per executor carries every command and transfer.
    System,
    /// The built-in client (libssh2): host name, port, user, a key file or the agent; no
    /// `~/.ssh/config`, no jump host, no prompts.
    Builtin,
}

/// Connects to the login node with the client `remote` asks for, and checks the remote cache
/// directory there by `trust` ([`check_remote_cache`]) before anything else is asked of it;
/// `create`: the directory (and the folders above it) is created first when missing (an
/// executor's build); without it (`pitch status` & co., which change nothing there) a
/// missing one fails the check.
#[cfg(feature = "remote")]
pub(crate) fn connect(
    remote: crate::Remote,
    local_root: &Path,
    durable: bool,
    trust: crate::trust::Policy,
    create: bool,
) -> Result<std::sync::Arc<dyn Transport>, crate::error::Error> {
    let program = system::program();
    Ok(match (remote.client, program) {
        (SshClient::Builtin, _) | (SshClient::Auto, None) => {
            std::sync::Arc::new(ssh::Builtin(std::sync::Arc::new(ssh::Ssh::connect(
                remote, local_root, durable, trust, create,
            )?)))
        }
        (SshClient::System | SshClient::Auto, Some(program)) => std::sync::Arc::new(
            system::SystemSsh::connect(program, remote, local_root, durable, trust, create)?,
        ),
        (SshClient::System, None) => {
            return Err(crate::error::Error::Config(format!(
                "remote {}: the system's ssh client was asked for (client = \"system\") but \
                 there is no `ssh` on PATH",
                remote.host
            )))
        }
    })
}

/// The remote cache directory `dir` checked like a local one (`crate::trust`), from what
/// [`crate::trust::REMOTE_CHECK_SCRIPT`] printed there (`ran`: its exit status, output and
/// errors): refused as [`crate::error::Error::Untrusted`].
#[cfg(feature = "remote")]
pub(crate) fn check_remote_cache(
    dir: &Path,
    trust: crate::trust::Policy,
    ran: Result<(bool, String, String), String>,
) -> Result<(), crate::error::Error> {
    let untrusted = |u: crate::trust::Untrusted| crate::error::Error::Untrusted {
        cache: dir.to_path_buf(),
        path: u.path,
        reason: format!("{} (on the remote side)", u.reason),
    };
    let (ok, stdout, stderr) = ran.map_err(|e| {
        crate::error::Error::Config(format!(
            "cannot check the remote cache directory {}: {e}",
            dir.display()
        ))
    })?;
    if !ok {
        return Err(crate::error::Error::Config(format!(
            "cannot check the remote cache directory {}: {}",
            dir.display(),
            stderr.trim()
        )));
    }
    crate::trust::check_remote(dir, &stdout, trust).map_err(untrusted)
}

use super::scheduler::{CmdOutput, Fut};
use crate::scheduler::SchedulerError;

/// Moving the jobs' files failed (only the SSH transport moves files, so only it fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(not(feature = "remote"), allow(dead_code))]
pub(crate) enum TransportError {
    /// A file of the local cache directory could not be read or written.
    #[error("cannot {action} {}: {detail}", .path.display())]
    Local {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's message.
        detail: String,
    },
    /// The login node failed: the connection, SFTP, or its storage.
    #[error("{0}")]
    Remote(String),
}

#[cfg_attr(not(feature = "remote"), allow(dead_code))]
impl TransportError {
    /// A local file could not be `action`ed (`read`, `write`).
    pub(crate) fn local(action: &'static str, path: &Path, e: impl std::fmt::Display) -> Self {
        TransportError::Local {
            action,
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    }
}

/// Runs scheduler commands and moves the files jobs read and write.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Runs `program args` with `env` set where the scheduler is; `title` names the
    /// scheduler in the error when the program is missing.
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        env: &'a [(&'a str, &'a str)],
        title: &'a str,
    ) -> Fut<'a, Result<CmdOutput, SchedulerError>>;

    /// [`Transport::run`] for the submit command (sbatch, flux batch): here, it dies with the
    /// driver, so that a driver killed while it runs leaves no submission that lands after
    /// the next run looked for it (see the journal's intent records).
    fn run_submit<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        env: &'a [(&'a str, &'a str)],
        title: &'a str,
    ) -> Fut<'a, Result<CmdOutput, SchedulerError>> {
        self.run(program, args, env, title)
    }

    /// Where the jobs see `local`, a path in the local cache directory.
    fn path(&self, local: &Path) -> PathBuf;

    /// Makes these files of the local cache directory available to the jobs (creating their
    /// directories); a file already there with the same size is not sent again when
    /// `unchanged_if_same_size`.
    fn upload<'a>(
        &'a self,
        files: &'a [PathBuf],
        unchanged_if_same_size: bool,
    ) -> Fut<'a, Result<(), TransportError>>;

    /// Brings the jobs' copies of these files into the local cache directory, those that
    /// exist; returns how many did.
    fn fetch<'a>(&'a self, files: &'a [PathBuf]) -> Fut<'a, Result<usize, TransportError>>;

    /// The jobs' copies of these files are removed (after they were fetched and used).
    fn remove<'a>(&'a self, files: &'a [PathBuf]) -> Fut<'a, ()>;

    /// Whether the jobs' files are elsewhere (files must be moved).
    fn is_remote(&self) -> bool;

    /// The login node the jobs were submitted to (`user@host:port`), when remote.
    fn login(&self) -> Option<String> {
        None
    }

    /// The executor ended: connections it kept open are closed (no command follows).
    fn close(&self) {}

    /// Starts a pilots' relay on the login node (`exe`, the staged worker binary there, as
    /// `__pitch-worker relay bind`) over this connection; the connections it takes go to
    /// `to` here (see [`relay`]).
    #[cfg(feature = "remote")]
    fn relay<'a>(
        &'a self,
        exe: &'a Path,
        bind: &'a str,
        to: std::net::SocketAddr,
    ) -> Fut<'a, Result<relay::Relay, String>> {
        let _ = (exe, bind, to);
        Box::pin(async { Err("the jobs run on this machine: there is nothing to relay".into()) })
    }
}

/// The login node's command line of a relay: the staged `exe` as `__pitch-worker relay bind`.
#[cfg(feature = "remote")]
fn relay_line(exe: &Path, bind: &str) -> String {
    format!(
        "exec {} {} relay {}",
        crate::template::shell_quote(&exe.to_string_lossy()),
        crate::worker::WORKER_ARG,
        crate::template::shell_quote(bind)
    )
}

/// The scheduler is here and the cache directory is the jobs' own.
pub(crate) struct Local;

impl Transport for Local {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        env: &'a [(&'a str, &'a str)],
        title: &'a str,
    ) -> Fut<'a, Result<CmdOutput, SchedulerError>> {
        local_command(program, args, env, title, false)
    }

    fn run_submit<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        env: &'a [(&'a str, &'a str)],
        title: &'a str,
    ) -> Fut<'a, Result<CmdOutput, SchedulerError>> {
        local_command(program, args, env, title, true)
    }

    fn path(&self, local: &Path) -> PathBuf {
        local.to_path_buf()
    }

    fn upload<'a>(&'a self, _: &'a [PathBuf], _: bool) -> Fut<'a, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }

    fn fetch<'a>(&'a self, _: &'a [PathBuf]) -> Fut<'a, Result<usize, TransportError>> {
        Box::pin(async { Ok(0) })
    }

    fn remove<'a>(&'a self, _: &'a [PathBuf]) -> Fut<'a, ()> {
        Box::pin(async {})
    }

    fn is_remote(&self) -> bool {
        false
    }
}

/// Where the jobs see `local`: under `directory` (the cache directory's twin on the login
/// node) when it is in `local_root`; a path outside the cache directory (a command's cwd, its
/// output files) is the cluster's own.
#[cfg(feature = "remote")]
pub(crate) fn twin_path(local_root: &Path, directory: &Path, local: &Path) -> PathBuf {
    match local.strip_prefix(local_root) {
        Ok(rel) => directory.join(rel),
        Err(_) => local.to_path_buf(),
    }
}

/// A remote setting for `pitch render` (`Executor::for_rendering`): the jobs' paths as they
/// would be on the login node, and no connection: anything that needs one is an error.
#[cfg(feature = "remote")]
pub(crate) struct Offline {
    pub local_root: PathBuf,
    pub directory: PathBuf,
    pub login: String,
}

#[cfg(feature = "remote")]
impl Offline {
    fn refused(&self) -> SchedulerError {
        SchedulerError::CannotRun {
            program: "ssh".into(),
            detail: format!(
                "rendering connects to nothing ({} was not contacted)",
                self.login
            ),
        }
    }
}

#[cfg(feature = "remote")]
impl Transport for Offline {
    fn run<'a>(
        &'a self,
        _: &'a str,
        _: &'a [String],
        _: &'a [(&'a str, &'a str)],
        _: &'a str,
    ) -> Fut<'a, Result<CmdOutput, SchedulerError>> {
        let e = self.refused();
        Box::pin(async move { Err(e) })
    }

    fn path(&self, local: &Path) -> PathBuf {
        twin_path(&self.local_root, &self.directory, local)
    }

    fn upload<'a>(&'a self, _: &'a [PathBuf], _: bool) -> Fut<'a, Result<(), TransportError>> {
        let e = TransportError::Remote(self.refused().to_string());
        Box::pin(async move { Err(e) })
    }

    fn fetch<'a>(&'a self, _: &'a [PathBuf]) -> Fut<'a, Result<usize, TransportError>> {
        let e = TransportError::Remote(self.refused().to_string());
        Box::pin(async move { Err(e) })
    }

    fn remove<'a>(&'a self, _: &'a [PathBuf]) -> Fut<'a, ()> {
        Box::pin(async {})
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn login(&self) -> Option<String> {
        Some(self.login.clone())
    }
}

/// Reports one scheduler command to `tracing` (target `pitch::scheduler`, level debug): its
/// argv, where it ran, how it ended and how long it took.
pub(crate) fn trace_command(
    host: Option<&str>,
    program: &str,
    args: &[String],
    status: &dyn std::fmt::Display,
    success: bool,
    started: std::time::Instant,
) {
    tracing::debug!(
        target: "pitch::scheduler",
        host = host.unwrap_or("local"),
        argv = ?std::iter::once(program).chain(args.iter().map(String::as_str)).collect::<Vec<_>>(),
        status = %status,
        success,
        seconds = started.elapsed().as_secs_f64(),
        "scheduler command"
    );
}

/// [`trace_command`] for a command's outcome `out`: `ended` gives the status and success of
/// one that ran; one that could not be run is traced with its error.
pub(crate) fn trace_outcome<T, E: std::fmt::Display>(
    host: Option<&str>,
    program: &str,
    args: &[String],
    out: &Result<T, E>,
    ended: impl FnOnce(&T) -> (&dyn std::fmt::Display, bool),
    started: std::time::Instant,
) {
    match out {
        Ok(o) => {
            let (status, success) = ended(o);
            trace_command(host, program, args, status, success, started)
        }
        Err(e) => trace_command(host, program, args, e, false, started),
    }
}

/// A command's captured output as [`Transport::run`] returns it: the bytes as text.
fn captured(stdout: &[u8], stderr: &[u8], success: bool) -> CmdOutput {
    CmdOutput {
        stdout: String::from_utf8_lossy(stdout).into_owned(),
        stderr: String::from_utf8_lossy(stderr).into_owned(),
        success,
    }
}

/// What [`Transport::run`] returns for a scheduler command that ran on the login node `host`
/// and ended with exit `code` (none: killed by a signal), its output captured: 127, the
/// shell's "command not found", is `program` missing there (`title` names its scheduler).
#[cfg(feature = "remote")]
pub(crate) fn remote_output(
    host: &str,
    program: &str,
    title: &str,
    code: Option<i32>,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<CmdOutput, SchedulerError> {
    if code == Some(127) {
        return Err(SchedulerError::CommandMissing {
            program: program.to_string(),
            scheduler: title.to_string(),
            host: Some(host.to_string()),
        });
    }
    Ok(captured(stdout, stderr, code == Some(0)))
}

/// Runs a scheduler command (sbatch, squeue, flux ...) here with `env` set and captures its
/// output; `title` names the scheduler when the command is missing. With `dies_with_driver`
/// the command gets SIGKILL when the thread that started it ends (`PR_SET_PDEATHSIG`).
/// [`run_local`] boxed, in a `pitch::scheduler` span: what `Local` runs and submits with.
fn local_command<'a>(
    program: &'a str,
    args: &'a [String],
    env: &'a [(&'a str, &'a str)],
    title: &'a str,
    dies_with_driver: bool,
) -> Fut<'a, Result<CmdOutput, SchedulerError>> {
    use tracing::Instrument;
    let span = tracing::debug_span!(target: "pitch::scheduler", "scheduler_command", program);
    Box::pin(run_local(program, args, env, title, dies_with_driver).instrument(span))
}

#[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
async fn run_local(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    title: &str,
    dies_with_driver: bool,
) -> Result<CmdOutput, SchedulerError> {
    let started = std::time::Instant::now();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null());
    // The submit command dies with the driver: a driver killed while `sbatch` runs must not
    // leave a submission that lands after the next run looked for it (see the journal's
    // intents). The signal comes when the spawning thread ends, so only the submit command
    // gets it: it is started by the queue's flusher on a runtime worker thread, which lives as
    // long as the driver's runtime (other commands start from threads that may end first).
    #[cfg(target_os = "linux")]
    if dies_with_driver {
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().await;
    trace_outcome(
        None,
        program,
        args,
        &out,
        |o| (&o.status, o.status.success()),
        started,
    );
    let out = out.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SchedulerError::CommandMissing {
                program: program.to_string(),
                scheduler: title.to_string(),
                host: None,
            }
        } else {
            SchedulerError::CannotRun {
                program: program.to_string(),
                detail: e.to_string(),
            }
        }
    })?;
    Ok(captured(&out.stdout, &out.stderr, out.status.success()))
}
