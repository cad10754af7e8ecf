//! [`Builtin`]: the built-in client as a [`Transport`], its blocking libssh2 calls moved
//! off the engine's runtime threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{on_login_node, Ssh};
use crate::backend::scheduler::{CmdOutput, Fut};
use crate::backend::transport::{relay, relay_line, Transport, TransportError};
use crate::scheduler::SchedulerError;

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
    ) -> Fut<'a, Result<relay::Relay, String>> {
        let line = relay_line(exe, bind);
        Box::pin(async move {
            // A session of its own: the relay's pump must not wait on the shared one.
            off_runtime(&self.0, move |ssh| {
                relay::over_libssh2(ssh.open()?, &line, to)
            })
            .await?
        })
    }
}
