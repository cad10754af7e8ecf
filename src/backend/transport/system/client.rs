//! [`SystemSsh`]: the login node through the system's `ssh` as a [`Transport`]; its
//! connection (`connect`: the host resolved, the master opened, the remote cache directory
//! created and checked) and what it holds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::files::each;
use super::master::{close, control_dir, Master};
use super::options::{resolve, Resolved};
use crate::backend::scheduler::{CmdOutput, Fut};
use crate::backend::transport::ssh::Remote;
use crate::backend::transport::{
    check_remote_cache, relay, relay_line, remote_output, trace_outcome, Transport, TransportError,
};
use crate::error::Error;
use crate::scheduler::SchedulerError;

/// The login node through the system's `ssh`.
pub(crate) struct SystemSsh {
    inner: Arc<Inner>,
}

/// What a [`SystemSsh`] holds, shared with the tasks of its transfers.
pub(super) struct Inner {
    pub(super) program: PathBuf,
    pub(super) remote: Remote,
    /// `user@hostname:port` as `ssh -G` resolved the host.
    pub(super) login: String,
    /// The host name and port `ssh -G` resolved (for error messages).
    pub(super) address: String,
    /// Options every ssh of this remote gets after what the user set (see [`Resolved`]).
    pub(super) overrides: Vec<String>,
    pub(super) local_root: PathBuf,
    pub(super) durable: bool,
    /// What the local cache directory trusts (downloads are written below it by
    /// `write_local`, through checked handles).
    pub(super) trust: crate::trust::Policy,
    /// The 0700 directory of this executor's master sockets.
    pub(super) control: PathBuf,
    pub(super) master: tokio::sync::Mutex<Option<Master>>,
    /// How many masters were opened (names the sockets).
    pub(super) opened: AtomicU64,
    /// Names temporary upload files.
    pub(super) uploads: AtomicU64,
    /// The executor ended: no master is opened again.
    pub(super) closed: std::sync::atomic::AtomicBool,
}

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
        check_remote_cache(&ssh.inner.remote.directory, trust, ran)?;
        Ok(ssh)
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
            trace_outcome(
                host,
                program,
                args,
                &out,
                |o| (&o.status, o.status.success()),
                started,
            );
            let out = out.map_err(|detail| SchedulerError::CannotRun {
                program: program.to_string(),
                detail,
            })?;
            remote_output(
                &self.inner.remote.host,
                program,
                title,
                out.status.code(),
                &out.stdout,
                &out.stderr,
            )
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
    ) -> Fut<'a, Result<relay::Relay, String>> {
        Box::pin(async move {
            let socket = self.inner.socket(None).await?;
            let line = relay_line(exe, bind);
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
