//! The jobs' files through the master: uploads with `cat` into a temporary name and a
//! rename, downloads after a start marker, a few at a time.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::client::Inner;
use crate::backend::transport::ssh::{on_login_node, open_local, write_local};
use crate::backend::transport::{twin_path, TransportError};

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

impl Inner {
    pub(super) fn remote_path(&self, local: &Path) -> PathBuf {
        twin_path(&self.local_root, &self.remote.directory, local)
    }

    /// Uploads one file through a temporary name and a rename, so a job never sees a
    /// half-written file; skipped when `skip_same_size` and the remote copy has its size.
    pub(super) async fn upload(
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
    pub(super) async fn fetch(self: Arc<Self>, local: PathBuf) -> Result<bool, TransportError> {
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

/// Runs `job` on each of `items`, at most [`PARALLEL`] at a time; the first error wins.
pub(super) async fn each<T, R, F>(
    items: Vec<T>,
    job: impl Fn(T) -> F,
) -> Result<Vec<R>, TransportError>
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
