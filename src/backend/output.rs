//! Capture of a child's standard output and error into files that exist only when the child
//! wrote something: shared filesystems count inodes, and most tasks print nothing. The
//! stream is piped through the driver; the file is created on the first byte (or up front
//! when the user named it), and the last few KiB are kept for error messages.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// Bytes of the stream's end kept in memory for error messages.
const TAIL_BYTES: usize = 4096;
/// Lines of the tail shown in errors.
const TAIL_LINES: usize = 20;

/// What a captured stream left behind.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    /// The file, when one was written.
    pub path: Option<PathBuf>,
    /// The stream's last lines.
    pub tail: String,
}

/// Where one stream's bytes go: a file created on the first byte, and a tail in memory.
pub(crate) struct Sink {
    path: PathBuf,
    file: Option<File>,
    /// Whether creating the file was tried (once).
    tried: bool,
    /// Whether it was created.
    opened: bool,
    /// Whether a link at `path` is followed: only for a file the user named (a link the user
    /// made); a file of the task directory is created with `O_NOFOLLOW`, so a link planted
    /// there (`stdout -> a file of yours`) is not written through (the stream's tail is kept).
    follow: bool,
    tail: Vec<u8>,
}

impl Sink {
    /// A sink writing to `path`; `eager` (a file the user named) creates the file even if
    /// nothing is written, and follows a link at `path`.
    pub(crate) fn new(path: PathBuf, eager: bool) -> Sink {
        let mut sink = Sink {
            path,
            file: None,
            tried: false,
            opened: false,
            follow: eager,
            tail: Vec::new(),
        };
        if eager {
            sink.open();
        }
        sink
    }

    fn open(&mut self) {
        // Only try once: a directory that refuses the file refuses it every time.
        self.tried = true;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if !self.follow {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW);
        }
        self.file = options.open(&self.path).ok();
        self.opened = self.file.is_some();
    }

    /// Takes the next bytes of the stream. A write error stops writing the file (the tail
    /// is still kept): the task's own outcome matters more than its log.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if !self.tried {
            self.open();
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(bytes).is_err() {
                self.file = None;
            }
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
    }

    /// What was captured.
    pub(crate) fn finish(self) -> Captured {
        Captured {
            path: self.opened.then_some(self.path),
            tail: tail_text(&self.tail),
        }
    }
}

/// Creates (truncates) the file another process (a Flux job's shell) will write a stream
/// to, so that it exists, with no link followed in the task directory (`follow` only for a
/// file the user named), as a [`Sink`] would open it.
pub(crate) fn prepare_file(path: &std::path::Path, follow: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if !follow {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path).map(drop)
}

/// What another process wrote to `path` (made by [`prepare_file`]): the file and its last
/// lines. A task directory's file (not `named`) that stayed empty is removed: as with a
/// [`Sink`], it exists only when something was written.
pub(crate) fn captured_file(path: std::path::PathBuf, named: bool) -> Captured {
    use std::io::{Read, Seek, SeekFrom};
    let mut tail = Vec::new();
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        if !named {
            let _ = std::fs::remove_file(&path);
        }
        return Captured {
            path: named.then_some(path).filter(|p| p.exists()),
            tail: String::new(),
        };
    }
    if let Ok(mut f) = File::open(&path) {
        let from = len.saturating_sub(TAIL_BYTES as u64);
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.take(TAIL_BYTES as u64).read_to_end(&mut tail);
        }
    }
    Captured {
        path: Some(path),
        tail: tail_text(&tail),
    }
}

fn tail_text(tail: &[u8]) -> String {
    let text = String::from_utf8_lossy(tail);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_creates_its_file_on_the_first_byte_only() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = Sink::new(dir.path().join("quiet"), false);
        let c = quiet.finish();
        assert!(c.path.is_none());
        assert!(!dir.path().join("quiet").exists());

        let mut loud = Sink::new(dir.path().join("loud"), false);
        loud.feed(b"one\ntwo\n");
        loud.feed(b"three\n");
        let c = loud.finish();
        assert_eq!(c.path.as_deref(), Some(dir.path().join("loud").as_path()));
        assert_eq!(c.tail, "one\ntwo\nthree");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("loud")).unwrap(),
            "one\ntwo\nthree\n"
        );
    }

    #[test]
    fn a_link_planted_as_the_task_output_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("precious");
        std::fs::write(&precious, "keep me\n").unwrap();
        let stdout = dir.path().join("stdout");
        std::os::unix::fs::symlink(&precious, &stdout).unwrap();
        let mut sink = Sink::new(stdout.clone(), false);
        sink.feed(b"FORGED\n");
        let c = sink.finish();
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
        assert!(c.path.is_none(), "{c:?}");
        assert_eq!(c.tail, "FORGED");
        // A file the user named may be a link of theirs.
        let mut named = Sink::new(stdout, true);
        named.feed(b"mine\n");
        assert!(named.finish().path.is_some());
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "mine\n");
    }

    #[test]
    fn a_file_another_process_wrote_gives_its_tail_and_an_empty_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = dir.path().join("quiet");
        prepare_file(&quiet, false).unwrap();
        assert!(quiet.exists());
        let c = captured_file(quiet.clone(), false);
        assert!(c.path.is_none() && !quiet.exists(), "{c:?}");
        // A file the user named stays, empty or not.
        let named = dir.path().join("named");
        prepare_file(&named, true).unwrap();
        assert_eq!(captured_file(named.clone(), true).path, Some(named));
        let loud = dir.path().join("loud");
        prepare_file(&loud, false).unwrap();
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&loud, text).unwrap();
        let c = captured_file(loud.clone(), false);
        assert_eq!(c.path, Some(loud));
        let lines: Vec<&str> = c.tail.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last(), Some(&"line 4999"));
        // No link is followed in the task directory.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("named"), &link).unwrap();
        assert!(prepare_file(&link, false).is_err());
    }

    #[test]
    fn an_eager_sink_creates_an_empty_file_and_the_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let named = Sink::new(dir.path().join("named"), true);
        assert_eq!(
            named.finish().path.as_deref(),
            Some(dir.path().join("named").as_path())
        );
        let mut long = Sink::new(dir.path().join("long"), false);
        for i in 0..5000 {
            long.feed(format!("line {i}\n").as_bytes());
        }
        let c = long.finish();
        let lines: Vec<&str> = c.tail.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last(), Some(&"line 4999"));
    }
}
