//! Capture of a child's standard output and error into files that exist only when the child
//! wrote something: shared filesystems count inodes, and most tasks print nothing. The
//! stream is piped through the driver; the file is created on the first byte (or up front
//! when the user named it), and the last few KiB are kept for error messages.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dir::Dir;

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
    /// The task directory (checked, opened through handles) and the file's name in it; `None`
    /// for a file the user named (opened up front).
    dir: Option<(Arc<Dir>, &'static str)>,
    file: Option<File>,
    /// Whether creating the file was tried (once).
    tried: bool,
    /// Whether it was created.
    opened: bool,
    tail: Vec<u8>,
}

impl Sink {
    /// A sink writing to the file `name` of the task directory `dir` (opened through checked
    /// handles: `TaskPaths::output_dir`), created fresh relative to it on the first byte:
    /// whatever is there is removed (a link itself, never its target), then the file is
    /// created with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a link planted there (`stdout -> a
    /// file of yours`) or on the way to the directory is never written through; one planted
    /// in between fails the creation (the stream's tail is still kept).
    pub(crate) fn new(dir: Arc<Dir>, name: &'static str) -> Sink {
        Sink {
            path: dir.join(name),
            dir: Some((dir, name)),
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
            dir: None,
            file: Some(file),
            tried: true,
            opened: true,
            tail: Vec::new(),
        })
    }

    /// [`Sink::named`] for a file the user named (`named`), else [`Sink::new`] for the task
    /// directory's own file `name` (`dir`: the caller opens it when a stream needs it).
    pub(crate) fn for_stream(
        named: Option<PathBuf>,
        dir: Option<&Arc<Dir>>,
        name: &'static str,
    ) -> Result<Sink, String> {
        match (named, dir) {
            (Some(path), _) => Sink::named(path),
            (None, Some(dir)) => Ok(Sink::new(dir.clone(), name)),
            (None, None) => Err(format!("no task directory to write its {name} to")),
        }
    }

    fn open(&mut self) {
        // Only try once: a directory that refuses the file refuses it every time.
        self.tried = true;
        if let Some((dir, name)) = &self.dir {
            match dir.unlink(name) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {}
                _ => self.file = dir.create_new(name, 0o666).ok(),
            }
        }
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
/// to, so that it exists: a file the user named (no `dir`) by [`open_named`], a task
/// directory's relative to its checked handle `dir`, fresh, as a [`Sink`] would create it
/// (whatever is there removed, a link itself, then `O_CREAT | O_EXCL | O_NOFOLLOW`). (The job
/// shell then opens it by its path.)
pub(crate) fn prepare_file(path: &Path, dir: Option<&Dir>) -> Result<(), String> {
    let Some(dir) = dir else {
        return open_named(path).map(drop);
    };
    let name = own_name(path)?;
    match dir.unlink(name) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot create {}: {e}", path.display()))
        }
        _ => {}
    }
    dir.create_new(name, 0o666)
        .map(drop)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// The name in its task directory of the task's own output file `path`.
fn own_name(path: &Path) -> Result<&str, String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} is not a task directory's file", path.display()))
}

/// What another process wrote to `path` (made by [`prepare_file`]): the file and its last
/// lines. A task directory's file (`dir`, read and removed relative to its checked handle)
/// that stayed empty is removed: as with a [`Sink`], it exists only when something was
/// written.
pub(crate) fn captured_file(path: std::path::PathBuf, dir: Option<&Dir>) -> Captured {
    use std::io::{Read, Seek, SeekFrom};
    let opened = match dir {
        None => File::open(&path),
        Some(dir) => own_name(&path)
            .map_err(std::io::Error::other)
            .and_then(|name| dir.open_regular(name)),
    };
    let len = opened
        .as_ref()
        .ok()
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len());
    if len == 0 {
        if let Some((dir, name)) = dir.zip(own_name(&path).ok()) {
            let _ = dir.unlink(name);
        }
        return Captured {
            path: dir.is_none().then_some(path).filter(|p| p.exists()),
            tail: String::new(),
        };
    }
    let mut tail = Vec::new();
    if let Ok(mut f) = opened {
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

    fn handle(dir: &Path) -> Arc<Dir> {
        Arc::new(Dir::open(dir).unwrap())
    }

    #[test]
    fn a_sink_creates_its_file_on_the_first_byte_only() {
        let dir = tempfile::tempdir().unwrap();
        let quiet = Sink::new(handle(dir.path()), "quiet");
        let c = quiet.finish();
        assert!(c.path.is_none());
        assert!(!dir.path().join("quiet").exists());

        let mut loud = Sink::new(handle(dir.path()), "loud");
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
        let mut sink = Sink::new(handle(dir.path()), "stdout");
        sink.feed(b"FORGED\n");
        let c = sink.finish();
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
        // The link itself was replaced by the task's own file.
        assert!(!stdout.is_symlink());
        assert_eq!(c.path.as_deref(), Some(stdout.as_path()));
        assert_eq!(std::fs::read_to_string(&stdout).unwrap(), "FORGED\n");
        assert_eq!(c.tail, "FORGED");
        std::fs::remove_file(&stdout).unwrap();
        std::os::unix::fs::symlink(&precious, &stdout).unwrap();
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
        let own = handle(dir.path());
        let own = Some(&*own);
        let quiet = dir.path().join("quiet");
        prepare_file(&quiet, own).unwrap();
        assert!(quiet.exists());
        let c = captured_file(quiet.clone(), own);
        assert!(c.path.is_none() && !quiet.exists(), "{c:?}");
        // A file the user named stays, empty or not.
        let named = dir.path().join("named");
        prepare_file(&named, None).unwrap();
        assert_eq!(captured_file(named.clone(), None).path, Some(named));
        let loud = dir.path().join("loud");
        prepare_file(&loud, own).unwrap();
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&loud, text).unwrap();
        let c = captured_file(loud.clone(), own);
        assert_eq!(c.path, Some(loud));
        let lines: Vec<&str> = c.tail.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last(), Some(&"line 4999"));
        // No link is followed in the task directory: one planted there is replaced by the
        // task's own file; a file the user named is refused.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("named"), &link).unwrap();
        assert!(prepare_file(&link, None).is_err());
        prepare_file(&link, own).unwrap();
        assert!(!link.is_symlink());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("named")).unwrap(),
            ""
        );
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
        let mut long = Sink::new(handle(dir.path()), "long");
        for i in 0..5000 {
            long.feed(format!("line {i}\n").as_bytes());
        }
        let c = long.finish();
        let lines: Vec<&str> = c.tail.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last(), Some(&"line 4999"));
    }

    #[test]
    fn a_task_directory_swapped_for_a_link_is_refused_and_a_sink_writes_where_it_was_checked() {
        use crate::store::{Store, TaskPaths};
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        let paths = Store::at(root, false).task(&crate::task::TaskKey::explicit("k"));
        paths.create().unwrap();
        let dir = Arc::new(paths.output_dir().unwrap());
        // The task directory moved away and a link to another folder planted in its place.
        let moved = d.path().join("moved");
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(paths.dir(), &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, paths.dir()).unwrap();
        let mut sink = Sink::new(dir, TaskPaths::STDOUT);
        sink.feed(b"out\n");
        sink.finish();
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_to_string(moved.join("stdout")).unwrap(),
            "out\n"
        );
        // Opened now, the task directory is refused, naming the link.
        let e = paths.output_dir().unwrap_err().to_string();
        assert!(e.contains(&paths.dir().display().to_string()), "{e}");
        assert!(e.contains("symbolic link"), "{e}");
    }
}
