//! Moving the jobs' files over SFTP: uploads through a temporary name and a rename,
//! downloads into the local cache directory, both through its checked handles.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ssh2::{OpenFlags, OpenType, Sftp};

use super::{on_login_node, Ssh};
use crate::backend::transport::TransportError;

impl Ssh {
    pub(super) fn upload_files(
        &self,
        files: &[PathBuf],
        skip_same_size: bool,
    ) -> Result<(), TransportError> {
        self.with_session(|s| {
            let sftp = s
                .sftp()
                .map_err(|e| on_login_node(format!("cannot start SFTP: {e}")))?;
            for local in files {
                let remote = self.remote_path(local);
                // Read through the cache directory's checked handles (never through a link).
                let file = open_local(&self.local_root, local, self.trust)?;
                let size = file
                    .metadata()
                    .map_err(|e| TransportError::local("read", local, e))?
                    .len();
                let there = sftp.stat(&remote).ok().and_then(|st| st.size);
                if skip_same_size && there == Some(size) {
                    continue;
                }
                if let Some(dir) = remote.parent() {
                    mkdirs(&sftp, dir, 0o700)?;
                }
                put(&sftp, (file, local), &remote, there.is_some())?;
            }
            Ok(())
        })
    }

    pub(super) fn fetch_files(&self, files: &[PathBuf]) -> Result<usize, TransportError> {
        self.with_session(|s| {
            let sftp = s
                .sftp()
                .map_err(|e| on_login_node(format!("cannot start SFTP: {e}")))?;
            let mut got = 0;
            for local in files {
                let remote = self.remote_path(local);
                let mut f = match sftp.open(&remote) {
                    Ok(f) => f,
                    Err(_) => continue,
                };
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(|e| {
                    TransportError::Remote(format!("cannot download {}: {e}", remote.display()))
                })?;
                write_local(&self.local_root, local, &bytes, self.durable, self.trust)?;
                got += 1;
            }
            Ok(got)
        })
    }
}

/// Creates `dir` 0700 on the remote side, like the local store, and its missing parents with
/// `parents` (less the SFTP server's umask).
pub(super) fn mkdirs(sftp: &Sftp, dir: &Path, parents: i32) -> Result<(), TransportError> {
    mkdir_mode(sftp, dir, 0o700, parents)
}

fn mkdir_mode(sftp: &Sftp, dir: &Path, mode: i32, parents: i32) -> Result<(), TransportError> {
    if sftp.stat(dir).is_ok() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        mkdir_mode(sftp, parent, parents, parents)?;
    }
    match sftp.mkdir(dir, mode) {
        Ok(()) => Ok(()),
        // Made meanwhile by another upload.
        Err(_) if sftp.stat(dir).is_ok() => Ok(()),
        Err(e) => Err(on_login_node(format!(
            "cannot create {} on the remote side: {e}",
            dir.display()
        ))),
    }
}

/// Uploads `local` to `remote` through a temporary name and a rename, so a job never sees a
/// half-written file.
fn put(
    sftp: &Sftp,
    (mut file, local): (std::fs::File, &Path),
    remote: &Path,
    replace: bool,
) -> Result<(), TransportError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| TransportError::local("read", local, e))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &file
            .metadata()
            .map_err(|e| TransportError::local("read", local, e))?
            .permissions(),
    ) & 0o700;
    let name = remote
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = remote.with_file_name(format!(".{name}.up.{}", std::process::id()));
    let failed = |e: &dyn std::fmt::Display| {
        TransportError::Remote(format!("cannot upload {}: {e}", remote.display()))
    };
    let mut f = sftp
        .open_mode(
            &tmp,
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            mode.max(0o600) as i32,
            OpenType::File,
        )
        .map_err(|e| failed(&e))?;
    f.write_all(&bytes).map_err(|e| failed(&e))?;
    f.fsync().ok();
    drop(f);
    if replace {
        let _ = sftp.unlink(remote);
    }
    sftp.rename(&tmp, remote, None).map_err(|e| failed(&e))
}

/// Opens the local file `path` to upload it: below the cache directory `root` through checked
/// directory handles (a link on the way, or at the file, refused naming it), a regular file;
/// elsewhere (a file of the user's) as it is.
pub(in crate::backend::transport) fn open_local(
    root: &Path,
    path: &Path,
    trust: crate::trust::Policy,
) -> Result<std::fs::File, TransportError> {
    let failed = |e: std::io::Error| TransportError::local("read", path, e);
    match crate::dir::below(root, path) {
        Some((names, name)) => crate::dir::walk(root, &names, trust, false)
            .and_then(|dir| dir.open_regular(name))
            .map_err(failed),
        None => std::fs::File::open(path).map_err(failed),
    }
}

/// Writes a downloaded file `path` into the local cache directory `root`, atomically like
/// the store's own files (fsynced when `durable`), through checked directory handles
/// (`crate::dir::walk`: missing folders created 0700, a link on the way refused, naming it).
pub(in crate::backend::transport) fn write_local(
    root: &Path,
    path: &Path,
    bytes: &[u8],
    durable: bool,
    trust: crate::trust::Policy,
) -> Result<(), TransportError> {
    let failed = |e: std::io::Error| TransportError::local("write", path, e);
    let (names, name) = crate::dir::below(root, path).ok_or_else(|| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is not below the cache directory {}", root.display()),
        ))
    })?;
    let dir = crate::dir::walk(root, &names, trust, true).map_err(failed)?;
    dir.write_atomic(name, bytes, durable, 0o600)
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uploads read, and downloads write, the local cache directory through checked handles:
    /// a link planted on the way (or at the file) is refused, naming it, and nothing outside
    /// the cache is read or written.
    #[test]
    fn uploads_and_downloads_never_go_through_a_link_in_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache");
        let policy = crate::trust::Policy::default();
        let store = crate::store::Store::open(&root, false, policy).unwrap();
        let root = store.root().to_path_buf();
        let paths = store.task(&crate::task::TaskKey::explicit("k"));
        paths.create().unwrap();
        let file = paths.task_file();
        write_local(&root, &file, b"task", false, policy).unwrap();
        let mut text = String::new();
        open_local(&root, &file, policy)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "task");
        // The shard swapped for a link to a folder of someone else's.
        let shard = paths.dir().parent().unwrap().to_path_buf();
        let outside = d.path().join("outside");
        std::fs::rename(&shard, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &shard).unwrap();
        let e = open_local(&root, &file, policy).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{} is a symbolic link", shard.display())),
            "{e}"
        );
        let e = write_local(&root, &file, b"forged", false, policy)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        let there = outside
            .join(paths.dir().file_name().unwrap())
            .join("task.bin");
        assert_eq!(
            std::fs::read(&there).unwrap(),
            b"task",
            "written through the link"
        );
        // A file outside the cache directory (the user's own) is read as it is.
        let mine = d.path().join("mine");
        std::fs::write(&mine, "x").unwrap();
        assert!(open_local(&root, &mine, policy).is_ok());
    }
}
