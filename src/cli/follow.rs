//! Follows a running task's `stdout` and `stderr` files and copies new bytes to pitch's own
//! streams as they appear (`pitch run`). Plain polling with `std::fs`: the files are written
//! by the local backend's capture or, on Slurm, by the job script on shared storage, where
//! change notifications do not work anyway. A file may appear late or never.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(100);

/// Where a followed file's bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sink {
    Stdout,
    Stderr,
}

struct Stream {
    path: PathBuf,
    offset: u64,
    sink: Sink,
}

impl Stream {
    /// Copies the bytes written since the last call to the sink; a missing file is not an
    /// error.
    fn pump(&mut self) {
        match self.sink {
            Sink::Stdout => self.copy_to(&mut std::io::stdout().lock()),
            Sink::Stderr => self.copy_to(&mut std::io::stderr().lock()),
        }
    }

    /// Copies the bytes written since the last call to `out`.
    fn copy_to(&mut self, out: &mut impl Write) {
        // The task's files in the cache directory: never read through a link planted there
        // (O_NOFOLLOW) nor blocked on a planted FIFO (O_NONBLOCK, and regular files only).
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path);
        let Ok(mut file) = opened else {
            return;
        };
        let Ok(len) = file.metadata().and_then(|m| {
            if m.is_file() {
                Ok(m.len())
            } else {
                Err(std::io::ErrorKind::InvalidInput.into())
            }
        }) else {
            return;
        };
        if len < self.offset {
            // Truncated or written anew: start over.
            self.offset = 0;
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.offset += n as u64;
            // A closed pitch stdout (`| head`) must not stop the run: ignore write errors.
            let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
        }
    }
}

/// A thread copying files to pitch's streams until [`Follower::finish`].
pub(crate) struct Follower {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Follower {
    /// Starts following `files`, each copied to its sink.
    pub(crate) fn start(files: Vec<(PathBuf, Sink)>) -> Follower {
        let stop = Arc::new(AtomicBool::new(false));
        let mut streams: Vec<Stream> = files
            .into_iter()
            .map(|(path, sink)| Stream {
                path,
                offset: 0,
                sink,
            })
            .collect();
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || loop {
            // Read the flag before copying, so the last round sees everything written before
            // `finish` was called.
            let last = stopping.load(Ordering::SeqCst);
            for s in &mut streams {
                s.pump();
            }
            if last {
                break;
            }
            std::thread::park_timeout(POLL);
        });
        Follower { stop, handle }
    }

    /// Copies what is left once (call it after the task has finished) and stops.
    pub(crate) fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.thread().unpark();
        let _ = self.handle.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_appends_late_files_and_restarts_after_truncation() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("stdout");
        let mut s = Stream {
            path: path.clone(),
            offset: 0,
            sink: Sink::Stderr,
        };
        // Into a buffer, not the test's stderr (which the harness does not capture).
        let mut out = Vec::new();
        s.copy_to(&mut out); // not there yet
        assert_eq!(s.offset, 0);
        std::fs::write(&path, "abc").unwrap();
        s.copy_to(&mut out);
        assert_eq!(s.offset, 3);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"de").unwrap();
        s.copy_to(&mut out);
        assert_eq!(s.offset, 5);
        std::fs::write(&path, "x").unwrap();
        s.copy_to(&mut out);
        assert_eq!(s.offset, 1);
        assert_eq!(out, b"abcdex");
        // A link planted in place of the file is not followed, a FIFO does not block.
        let secret = d.path().join("secret");
        std::fs::write(&secret, "do not show").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        s.offset = 0;
        let mut linked = Vec::new();
        s.copy_to(&mut linked);
        assert!(linked.is_empty(), "followed a link");
        std::fs::remove_file(&path).unwrap();
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        s.copy_to(&mut linked);
        assert!(linked.is_empty());
    }
}
