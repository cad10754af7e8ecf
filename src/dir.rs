//! Directory handles below the cache root: every file pitch reads, writes, creates or removes
//! inside its cache directory is named relative to a [`Dir`], a directory opened with
//! `O_DIRECTORY | O_NOFOLLOW` and checked through its handle (owner, mode: `crate::trust`).
//! A link planted anywhere below the root is refused with an error naming it, never followed,
//! and a directory swapped after its check is not entered: the handle still names the
//! directory that was checked.
//!
//! [`walk`] opens (or creates, 0700) a directory below the root one level at a time;
//! `Store::dir` is its front for the cache's own folders (`jobs/`, `locks/`, `log/`...).

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::trust::{self, Policy};

/// A directory opened once (`O_DIRECTORY | O_NOFOLLOW`), whose files are opened, created,
/// renamed and removed relative to its handle (`openat` with `O_NOFOLLOW`, `O_EXCL` for new
/// files, `renameat`, `unlinkat`, `mkdirat`).
#[derive(Debug)]
pub(crate) struct Dir {
    file: File,
    path: PathBuf,
}

fn c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn not_regular(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{} is not a regular file", path.display()),
    )
}

/// The error of an open that met a link (or, for a directory, something else) where pitch
/// expected its own file or directory (`is_link`: what `lstat` says is there): it names the
/// path, and the link is never followed.
fn refused(path: &Path, e: io::Error, is_link: impl FnOnce() -> bool) -> io::Error {
    let errno = e.raw_os_error();
    let link = matches!(errno, Some(libc::ELOOP | libc::ENOTDIR | libc::EMLINK)) && is_link();
    match errno {
        _ if link => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a symbolic link; pitch does not follow links in its cache directory",
                path.display()
            ),
        ),
        Some(libc::ENOTDIR) => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", path.display()),
        ),
        _ => e,
    }
}

/// Whether `e` is a [`Dir`]'s refusal (a link, not a directory, not a regular file, another
/// user's or others may write, not a file name), which names its path, rather than an error
/// of the system: refusals carry no OS error code.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    e.raw_os_error().is_none()
        && matches!(
            e.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
        )
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Dir {
    /// Opens the directory `path` (its last component not through a link).
    pub(crate) fn open(path: &Path) -> io::Result<Dir> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                refused(path, e, || {
                    path.symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink())
                })
            })?;
        Ok(Dir {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path (for messages and for programs that take a path).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of its entry `name` (for messages).
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Checks the directory through its handle (`fstat`) as `crate::trust::check_own` checks
    /// one of pitch's own directories: another user's, or one others may write, is refused.
    pub(crate) fn check(&self, policy: Policy) -> io::Result<()> {
        let meta = self.file.metadata()?;
        trust::check_own_meta(&self.path, &meta, policy)
            .map_err(|u| io::Error::new(io::ErrorKind::PermissionDenied, u.to_string()))
    }

    /// `openat(2)` of `name` with `flags` (plus `O_CLOEXEC`) and `mode`.
    pub(crate) fn openat(&self, name: &str, flags: libc::c_int, mode: u32) -> io::Result<File> {
        let c = c_name(name)?;
        // SAFETY: a valid directory descriptor and a NUL-terminated name; the descriptor
        // returned is owned by the File.
        let fd = unsafe {
            libc::openat(
                self.file.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(refused(&self.join(name), e, || {
                self.stat(name)
                    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
            }));
        }
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The subdirectory `name`, not through a link.
    pub(crate) fn sub(&self, name: &str) -> io::Result<Dir> {
        let file = self.openat(
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        Ok(Dir {
            file,
            path: self.join(name),
        })
    }

    /// The subdirectory `name`, created 0700 when missing, opened not through a link and
    /// checked through its handle.
    pub(crate) fn sub_created(&self, name: &str, policy: Policy) -> io::Result<Dir> {
        self.mkdir(name, 0o700)?;
        let sub = self.sub(name)?;
        sub.check(policy)?;
        Ok(sub)
    }

    /// Creates the directory `name` with `mode` (`mkdirat`); one that exists is left as it is
    /// (and checked when opened).
    pub(crate) fn mkdir(&self, name: &str, mode: u32) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        if unsafe { libc::mkdirat(self.file.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Opens the file `name` for reading, not through a link, not blocking on a FIFO.
    pub(crate) fn open_read(&self, name: &str) -> io::Result<File> {
        self.openat(
            name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
            0,
        )
    }

    /// [`Dir::open_read`], a regular file only.
    pub(crate) fn open_regular(&self, name: &str) -> io::Result<File> {
        let file = self.open_read(name)?;
        regular(file, &self.join(name))
    }

    /// Reads at most `limit` bytes of the regular file `name`.
    pub(crate) fn read(&self, name: &str, limit: u64) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_regular(name)?
            .take(limit)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Opens the regular file `name` for reading and writing, creating it with `mode` when
    /// `create`; never through a link, never a FIFO or a device.
    pub(crate) fn open_rw(&self, name: &str, create: bool, mode: u32) -> io::Result<File> {
        let flags = libc::O_RDWR
            | libc::O_NOFOLLOW
            | libc::O_NONBLOCK
            | if create { libc::O_CREAT } else { 0 };
        regular(self.openat(name, flags, mode)?, &self.join(name))
    }

    /// Opens the regular file `name` to append to it, creating it with `mode` when missing.
    pub(crate) fn open_append(&self, name: &str, mode: u32) -> io::Result<File> {
        let flags =
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        regular(self.openat(name, flags, mode)?, &self.join(name))
    }

    /// Creates the file `name` fresh (`O_EXCL`: an existing file or link there is an error).
    pub(crate) fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        self.openat(
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            mode,
        )
    }

    /// Renames `from` to `to`, both in this directory.
    pub(crate) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (c_name(from)?, c_name(to)?);
        let fd = self.file.as_raw_fd();
        // SAFETY: valid descriptor and NUL-terminated names.
        if unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes the file `name` (a link itself, never its target).
    pub(crate) fn unlink(&self, name: &str) -> io::Result<()> {
        self.unlinkat(name, 0)
    }

    fn unlinkat(&self, name: &str, flags: libc::c_int) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: valid descriptor and NUL-terminated name.
        if unsafe { libc::unlinkat(self.file.as_raw_fd(), c.as_ptr(), flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `fstatat` of `name`, not following a link.
    fn stat(&self, name: &str) -> io::Result<libc::stat> {
        let c = c_name(name)?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor, NUL-terminated name, a stat buffer of the right type.
        if unsafe {
            libc::fstatat(
                self.file.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }

    /// Whether `name` exists (`fstatat` without following a link).
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.stat(name).is_ok()
    }

    /// Removes `name`: a file (or a link, never its target), or a directory with everything
    /// in it, entered through handles (a link inside is removed, never followed).
    pub(crate) fn remove_tree(&self, name: &str) -> io::Result<()> {
        let st = self.stat(name)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return self.unlink(name);
        }
        let sub = self.sub(name)?;
        for entry in sub.entries()? {
            let Some(entry) = entry.to_str() else {
                continue;
            };
            match sub.remove_tree(entry) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        drop(sub);
        self.unlinkat(name, libc::AT_REMOVEDIR)
    }

    /// The names in the directory (not `.` and `..`), in no particular order.
    pub(crate) fn entries(&self) -> io::Result<Vec<OsString>> {
        // A descriptor of its own for the stream (closedir closes it), at its start.
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                self.file.as_raw_fd(),
                c".".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a directory descriptor we own; the stream owns it from here on.
        let stream = unsafe { libc::fdopendir(fd) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            unsafe { libc::close(fd) };
            return Err(e);
        }
        let mut names = Vec::new();
        loop {
            // SAFETY: a valid stream; the entry is read before the next call.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(OsString::from_vec(bytes.to_vec()));
            }
        }
        // SAFETY: the stream is closed once.
        unsafe { libc::closedir(stream) };
        Ok(names)
    }

    /// Writes `bytes` as the file `name` atomically with permissions `mode`: a temporary file
    /// created fresh (`O_EXCL | O_NOFOLLOW`) in this directory, renamed over `name`; when
    /// `durable`, the file is fsynced before the rename and the directory after it.
    pub(crate) fn write_atomic(
        &self,
        name: &str,
        bytes: &[u8],
        durable: bool,
        mode: u32,
    ) -> io::Result<()> {
        let tmp = format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let result = (|| {
            let mut file = self.create_new(&tmp, mode)?;
            file.write_all(bytes)?;
            if durable {
                file.sync_all()?;
            }
            drop(file);
            self.rename(&tmp, name)
        })();
        if result.is_err() {
            let _ = self.unlink(&tmp);
        }
        result?;
        if durable {
            self.file.sync_all()?;
        }
        Ok(())
    }

    /// The directory's own metadata (`fstat` of the handle: its modification time).
    pub(crate) fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.file.metadata()
    }

    /// Removes the empty directory `name` (`unlinkat` with `AT_REMOVEDIR`; a link there is
    /// not a directory and is left alone).
    pub(crate) fn remove_dir(&self, name: &str) -> io::Result<()> {
        self.unlinkat(name, libc::AT_REMOVEDIR)
    }
}

fn regular(file: File, path: &Path) -> io::Result<File> {
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(not_regular(path))
    }
}

/// Opens the directory `root/names[0]/names[1]/...`: `root` as it is (the cache root, checked
/// when the store was opened; its last component not through a link), then each name with
/// `O_NOFOLLOW` relative to the one above, each checked through its handle against `policy`.
/// When `create`, a missing level is created 0700 first.
pub(crate) fn walk(root: &Path, names: &[&str], policy: Policy, create: bool) -> io::Result<Dir> {
    walk_naming(root, names, policy, create).map_err(|(_, e)| e)
}

/// [`walk`], its error with the path of the level at fault.
pub(crate) fn walk_naming(
    root: &Path,
    names: &[&str],
    policy: Policy,
    create: bool,
) -> Result<Dir, (PathBuf, io::Error)> {
    let mut dir = Dir::open(root).map_err(|e| (root.to_path_buf(), e))?;
    for name in names {
        let at = |e| (dir.join(name), e);
        dir = if create {
            dir.sub_created(name, policy).map_err(at)?
        } else {
            let sub = dir.sub(name).map_err(at)?;
            sub.check(policy).map_err(at)?;
            sub
        };
    }
    Ok(dir)
}

/// Splits `path`, which must be below `root`, into its directory's names and its file name;
/// `None` when it is not below `root` or has a component that is not plain UTF-8.
pub(crate) fn below<'a>(root: &Path, path: &'a Path) -> Option<(Vec<&'a str>, &'a str)> {
    let rel = path.strip_prefix(root).ok()?;
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(n) => names.push(n.to_str()?),
            _ => return None,
        }
    }
    let file = names.pop()?;
    Some((names, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_on_the_way_is_refused_and_named() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("jobs")).unwrap();
        let e = walk(&root, &["jobs"], Policy::default(), true).unwrap_err();
        assert!(e.to_string().contains("jobs is a symbolic link"), "{e}");
        // Nothing was created through the link.
        walk(&root, &["locks", "drivers"], Policy::default(), true).unwrap();
        assert!(root.join("locks/drivers").is_dir());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn files_are_never_opened_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let precious = d.path().join("precious");
        std::fs::write(&precious, "keep me").unwrap();
        let dir = Dir::open(d.path()).unwrap();
        std::os::unix::fs::symlink(&precious, d.path().join("f")).unwrap();
        let e = dir.open_append("f", 0o600).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        assert!(dir.open_rw("f", true, 0o600).is_err());
        assert!(dir.open_regular("f").is_err());
        assert!(dir.create_new("f", 0o600).is_err());
        // The atomic write replaces the link itself, not its target.
        dir.write_atomic("f", b"new", false, 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
        assert_eq!(dir.read("f", 100).unwrap(), b"new");
        // A FIFO is not a regular file, and opening it does not block.
        let fifo = CString::new(d.path().join("p").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(dir.open_regular("p").is_err());
        assert!(dir.open_rw("p", false, 0).is_err());
    }

    #[test]
    fn trees_are_removed_without_following_links() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, t.join("a/link")).unwrap();
        let dir = Dir::open(d.path()).unwrap();
        let mut names = dir.sub("t").unwrap().entries().unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("a")]);
        dir.remove_tree("t").unwrap();
        assert!(!t.exists());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn names_below_the_root() {
        let root = Path::new("/c");
        assert_eq!(
            below(root, Path::new("/c/jobs/1.job")),
            Some((vec!["jobs"], "1.job"))
        );
        assert_eq!(below(root, Path::new("/d/jobs/1.job")), None);
        assert_eq!(below(root, Path::new("/c/../x")), None);
        assert!(c_name("..").is_err() && c_name("a/b").is_err() && c_name("").is_err());
    }
}
