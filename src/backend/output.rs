//! Capture of a child's standard output and error into files that exist only when the child
//! wrote something: shared filesystems count inodes, and most tasks print nothing. The
//! stream is piped through the driver; the file is created on the first byte (or up front
//! when the user named it), and the last few KiB are kept for error messages.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    tail: Vec<u8>,
}

impl Sink {
    /// A sink writing to the task directory's file `path`, created (with `O_NOFOLLOW`) on the
    /// first byte: a link planted there (`stdout -> a file of yours`) is not written through
    /// (the stream's tail is kept).
    pub(crate) fn new(path: PathBuf) -> Sink {
        Sink {
            path,
            file: None,
            tried: false,
            opened: false,
            tail: Vec::new(),
        }
    }

    /// A sink writing to a file the user named, opened now by [`open_named`] (even if
    /// nothing is written); its refusal (a link, another user's file, a FIFO) is the error.
    pub(crate) fn named(path: PathBuf) -> Result<Sink, String> {
        let file = open_named(&path)?;
        Ok(Sink {
            path,
            file: Some(file),
            tried: true,
            opened: true,
            tail: Vec::new(),
        })
    }

    /// [`Sink::named`] for a file the user named, else [`Sink::new`] for the task
    /// directory's own file.
    pub(crate) fn for_stream(path: PathBuf, named: bool) -> Result<Sink, String> {
        if named {
            Sink::named(path)
        } else {
            Ok(Sink::new(path))
        }
    }

    fn open(&mut self) {
        // Only try once: a directory that refuses the file refuses it every time.
        self.tried = true;
        use std::os::unix::fs::OpenOptionsExt;
        self.file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
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

/// Opens an output file the user named (a command's `stdout`/`stderr`) for writing, as a
/// shell's `>` would but never through a link:
///
/// - missing: created (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0666 less the umask); `O_EXCL`
///   does not follow a link planted meanwhile, the open fails instead;
/// - a regular file of the current user's: truncated, once opened with `O_NOFOLLOW` and
///   checked (`fstat`) to be that file;
/// - a character device (`/dev/null`): written as it is;
/// - anything else is refused, naming the path, what it is and its owner: a symbolic link
///   (whoever made it: in a directory others may write, another user may have planted it to
///   make pitch overwrite a file of yours; name the file it points to instead), another
///   user's file, a FIFO (opened with `O_NONBLOCK`, so a planted FIFO never blocks), a
///   directory.
///
/// The job scripts of the cluster backends open such files the same way
/// (`queue::script`'s `pitch_open`), with the same message ([`refusal`]).
pub(crate) fn open_named(path: &Path) -> Result<File, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(flags)
        .open(path);
    let file = match created {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| refusal(path, Some(&e)))?,
        Err(e) => return Err(refusal(path, Some(&e))),
    };
    let meta = file.metadata().map_err(|e| refusal(path, Some(&e)))?;
    let kind = meta.file_type();
    if kind.is_file() && meta.uid() == crate::trust::me() {
        file.set_len(0).map_err(|e| refusal(path, Some(&e)))?;
    } else if !kind.is_char_device() {
        return Err(refusal(path, None));
    }
    // Writes block as usual from here (a terminal, a pipe behind /dev/stdout).
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// Why the output file `path` the user named is not written, from what is there now (and
/// the error of the open that failed, if any): the same words for [`open_named`] and for a
/// job script's refusal.
pub(crate) fn refusal(path: &Path, error: Option<&std::io::Error>) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            let e = error.map_or(e.to_string(), |e| e.to_string());
            return format!(
                "the output file {} could not be created: {e}",
                path.display()
            );
        }
    };
    let owner = format!(
        "owner {}, mode {:04o}",
        crate::trust::user_name(meta.uid()),
        meta.mode() & 0o7777
    );
    let kind = meta.file_type();
    let what = if kind.is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| format!(" -> {}", t.display()))
            .unwrap_or_default();
        format!(
            "is a symbolic link{target} ({owner}): pitch does not write output through a \
             link, which another user may have planted to have a file of yours overwritten; \
             remove it, or name the file it points to"
        )
    } else if kind.is_file() && meta.uid() != crate::trust::me() {
        format!(
            "belongs to another user ({owner}): pitch does not write output into another \
             user's file; remove it or name another path"
        )
    } else if kind.is_file() || kind.is_char_device() {
        let e = error.map_or("it changed while it was opened".to_string(), |e| {
            e.to_string()
        });
        format!("could not be opened ({owner}): {e}")
    } else {
        let kind = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a block device"
        };
        format!(
            "is {kind} ({owner}): pitch writes output only to a regular file or a character \
             device such as /dev/null"
        )
    };
    format!("the output file {} {what}", path.display())
}

/// Creates (truncates) the file another process (a Flux job's shell) will write a stream
/// to, so that it exists: a file the user named (`named`) by [`open_named`], a task
/// directory's with no link followed, as a [`Sink`] would open it.
pub(crate) fn prepare_file(path: &Path, named: bool) -> Result<(), String> {
    if named {
        return open_named(path).map(drop);
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map(drop)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
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
        let quiet = Sink::new(dir.path().join("quiet"));
        let c = quiet.finish();
        assert!(c.path.is_none());
        assert!(!dir.path().join("quiet").exists());

        let mut loud = Sink::new(dir.path().join("loud"));
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
        let mut sink = Sink::new(stdout.clone());
        sink.feed(b"FORGED\n");
        let c = sink.finish();
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
        assert!(c.path.is_none(), "{c:?}");
        assert_eq!(c.tail, "FORGED");
        // Nor for a file the user named: refused, naming the link and where it points.
        let err = Sink::named(stdout.clone())
            .err()
            .expect("a link is refused");
        assert!(err.contains(&stdout.display().to_string()), "{err}");
        assert!(err.contains("is a symbolic link -> "), "{err}");
        assert!(err.contains("precious"), "{err}");
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
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
        assert!(prepare_file(&link, true).is_err());
    }

    #[test]
    fn a_named_file_of_ones_own_is_truncated_a_fifo_refused_and_dev_null_written() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("mine");
        std::fs::write(&mine, "an earlier run's long output\n").unwrap();
        let mut sink = Sink::named(mine.clone()).unwrap();
        sink.feed(b"new\n");
        assert_eq!(sink.finish().path.as_deref(), Some(mine.as_path()));
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "new\n");
        // A FIFO (nobody reading it) neither blocks nor is written.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Sink::named(fifo).err().expect("a FIFO is refused");
        assert!(err.contains("is a FIFO"), "{err}");
        let err = Sink::named(dir.path().to_path_buf()).err().unwrap();
        assert!(err.contains("is a directory"), "{err}");
        let mut null = Sink::named("/dev/null".into()).unwrap();
        null.feed(b"gone\n");
        assert_eq!(null.finish().tail, "gone");
        let err = Sink::named(dir.path().join("no/such/dir/out"))
            .err()
            .unwrap();
        assert!(err.contains("could not be created"), "{err}");
    }

    #[test]
    fn an_eager_sink_creates_an_empty_file_and_the_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let named = Sink::named(dir.path().join("named")).unwrap();
        assert_eq!(
            named.finish().path.as_deref(),
            Some(dir.path().join("named").as_path())
        );
        let mut long = Sink::new(dir.path().join("long"));
        for i in 0..5000 {
            long.feed(format!("line {i}\n").as_bytes());
        }
        let c = long.finish();
        let lines: Vec<&str> = c.tail.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last(), Some(&"line 4999"));
    }
}
