//! Capture of a child's standard output and error into files that exist only when the child
//! wrote something: shared filesystems count inodes, and most tasks print nothing. The
//! stream is piped through the driver; the file is created on the first byte (or up front
//! when the user named it), and the last few KiB are kept for error messages.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

/// Bytes of the stream's end kept in memory for error messages.
const TAIL_BYTES: usize = 4096;
/// Lines of the tail shown in errors.
const TAIL_LINES: usize = 20;
/// How long to wait for a stream to close after the child exited (a background grandchild
/// may hold it open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// What a captured stream left behind.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    /// The file, when one was written.
    pub path: Option<PathBuf>,
    /// The stream's last lines.
    pub tail: String,
}

/// A stream being copied to its file.
pub(crate) struct Capture(Option<JoinHandle<Captured>>);

impl Capture {
    /// Starts copying `pipe` to `path`; `eager` creates the file even if nothing is written.
    pub(crate) fn start<R: AsyncRead + Unpin + Send + 'static>(
        pipe: Option<R>,
        path: PathBuf,
        eager: bool,
    ) -> Capture {
        Capture(pipe.map(|p| tokio::spawn(copy(p, path, eager))))
    }

    /// Waits (briefly, once the child has exited) for the copy to finish.
    pub(crate) async fn finish(self) -> Captured {
        let Some(handle) = self.0 else {
            return Captured::default();
        };
        let abort = handle.abort_handle();
        match tokio::time::timeout(DRAIN_GRACE, handle).await {
            Ok(Ok(c)) => c,
            _ => {
                abort.abort();
                Captured::default()
            }
        }
    }
}

fn tail_text(tail: &[u8]) -> String {
    let text = String::from_utf8_lossy(tail);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

async fn copy<R: AsyncRead + Unpin>(mut pipe: R, path: PathBuf, eager: bool) -> Captured {
    let open = |p: &PathBuf| File::create(p).ok();
    let mut file = if eager { open(&path) } else { None };
    let mut created = file.is_some();
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !created {
            file = open(&path);
            created = true;
        }
        if let Some(f) = file.as_mut() {
            if f.write_all(&buf[..n]).is_err() {
                file = None;
            }
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 2 * TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
    }
    Captured {
        path: created.then_some(path),
        tail: tail_text(&tail),
    }
}
