//! The running binary: local workers re-execute it, queue jobs run a staged copy of it.
//!
//! On Linux `/proc/self/exe` names the running file even after a rebuild replaced it on disk.
//! Elsewhere (macOS; on Linux with the `portable` feature, so that CI tests this path) the
//! binary's path is resolved once, by [`crate::init`] at startup or else at first use, and the
//! file is opened then: when a rebuild later replaces the file at that path, the open
//! descriptor still reads the binary that is running, and local workers run a copy of it
//! staged in the cache directory instead of the new build.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::store::Store;

struct Running {
    /// Canonical, so that a later change of the working directory does not matter.
    path: PathBuf,
    /// The file as it was at startup.
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    file: std::fs::File,
}

fn running() -> Result<&'static Running, String> {
    static RUNNING: OnceLock<Result<Running, String>> = OnceLock::new();
    RUNNING.get_or_init(resolve).as_ref().map_err(Clone::clone)
}

fn resolve() -> Result<Running, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the running binary: {e}"))?;
    let path = std::fs::canonicalize(&exe).unwrap_or(exe);
    Ok(Running {
        #[cfg(any(not(target_os = "linux"), feature = "portable"))]
        file: std::fs::File::open(&path)
            .map_err(|e| format!("cannot open the running binary {}: {e}", path.display()))?,
        path,
    })
}

/// Resolves the running binary now: [`crate::init`] calls it first thing, before the program
/// can change its directory or a rebuild replace the file.
pub(crate) fn remember() {
    let _ = running();
}

/// The binary's path, for launchers that need a real path (mpiexec).
pub(crate) fn path() -> Result<&'static Path, String> {
    running().map(|r| r.path.as_path())
}

/// The contents of the running binary (not of a rebuild that replaced it).
fn bytes() -> Result<Vec<u8>, String> {
    #[cfg(all(target_os = "linux", not(feature = "portable")))]
    {
        std::fs::read("/proc/self/exe").map_err(|e| format!("cannot read /proc/self/exe: {e}"))
    }
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    {
        read_held(running()?).map_err(|e| format!("cannot read the running binary: {e}"))
    }
}

/// The contents of the file opened at startup.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn read_held(r: &Running) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; r.file.metadata()?.len() as usize];
    r.file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// What a worker started directly (not through mpiexec) on this machine runs: the running
/// binary, even when a rebuild has replaced its file meanwhile (then a copy staged in `store`,
/// see [`stage`]).
pub(crate) fn local_worker(store: &Store) -> Result<String, String> {
    #[cfg(all(target_os = "linux", not(feature = "portable")))]
    {
        let _ = store;
        Ok("/proc/self/exe".to_string())
    }
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    {
        let r = running()?;
        if replaced(r) {
            Ok(stage(store)?.display().to_string())
        } else {
            Ok(r.path.display().to_string())
        }
    }
}

/// Whether the file at the binary's path is no longer the one that was opened at startup.
#[cfg(any(not(target_os = "linux"), feature = "portable"))]
fn replaced(r: &Running) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (r.file.metadata(), std::fs::metadata(&r.path)) {
        (Ok(held), Ok(now)) => (held.dev(), held.ino()) != (now.dev(), now.ino()),
        _ => true,
    }
}

/// The running binary's content hash and length, worked out once.
fn digest() -> Result<&'static (String, u64), String> {
    static DIGEST: OnceLock<Result<(String, u64), String>> = OnceLock::new();
    DIGEST
        .get_or_init(|| bytes().map(|b| (blake3::hash(&b).to_hex().to_string(), b.len() as u64)))
        .as_ref()
        .map_err(Clone::clone)
}

/// Copies the running binary into the store (content-addressed) unless it is there already,
/// so that a rebuild does not change what later workers and queued jobs run.
///
/// `bin/` and `bin/<hash>/` are created and entered through checked handles (`mkdirat`, then
/// `openat` with `O_NOFOLLOW`, owner and mode checked), and the binary is written through
/// the last one: jobs and workers run what is there, so a link planted in any of the three
/// places is refused, naming it, never followed. A copy staged before is taken only when it
/// is a regular file of this user that nobody else may write, of the binary's length.
pub(crate) fn stage(store: &Store) -> Result<PathBuf, String> {
    let name = running()?
        .path
        .file_name()
        .map(|n| n.to_string_lossy().replace(" (deleted)", ""))
        .unwrap_or_else(|| "worker".into());
    let (hash, len) = digest()?;
    let target = store.staged_binary(&hash[..16], &name);
    // A job script only shown (`pitch render`) names where the binary would be.
    if store.is_dry() {
        return Ok(target);
    }
    let dir = store.staged_dir(&hash[..16]).map_err(|e| e.to_string())?;
    match dir.open_read(&name) {
        Ok(file) => {
            use std::os::unix::fs::MetadataExt;
            let meta = file
                .metadata()
                .map_err(|e| format!("cannot examine {}: {e}", target.display()))?;
            let private = meta.uid() == crate::trust::me() && meta.mode() & 0o022 == 0;
            if !meta.is_file() || !private || meta.len() != *len {
                return Err(format!(
                    "refusing the staged binary {}: it is not a regular file of this user that \
                     nobody else may write, of the running binary's length {len} (mode {:o}, \
                     owner uid {}, {} bytes); remove it to have it staged again",
                    target.display(),
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.len()
                ));
            }
            return Ok(target);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // A refusal names the path itself (a link, never followed).
        Err(e) if crate::dir::is_refusal(&e) => {
            return Err(format!("refusing the staged binary: {e}"))
        }
        Err(e) => return Err(format!("cannot open {}: {e}", target.display())),
    }
    let bytes = bytes()?;
    dir.write_atomic(&name, &bytes, true, 0o700)
        .map_err(|e| format!("cannot stage the binary at {}: {e}", target.display()))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_binary_is_found_and_staged_once_by_content() {
        let me = path().unwrap();
        assert!(me.is_absolute() && me.is_file(), "{}", me.display());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().to_path_buf(), false);
        let staged = stage(&store).unwrap();
        assert!(staged.starts_with(dir.path()));
        assert_eq!(std::fs::read(&staged).unwrap(), std::fs::read(me).unwrap());
        assert_eq!(stage(&store).unwrap(), staged, "staged again");
        // Nothing replaced the test binary: a local worker runs it where it is (on Linux,
        // through /proc/self/exe).
        let local = local_worker(&store).unwrap();
        #[cfg(all(target_os = "linux", not(feature = "portable")))]
        assert_eq!(local, "/proc/self/exe");
        #[cfg(any(not(target_os = "linux"), feature = "portable"))]
        assert_eq!(Path::new(&local), me);
    }

    /// What a rebuild does to the binary: a new file renamed over the old one.
    #[test]
    #[cfg(any(not(target_os = "linux"), feature = "portable"))]
    fn a_replaced_binary_is_noticed_and_the_original_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prog");
        std::fs::write(&path, b"first build").unwrap();
        let r = Running {
            file: std::fs::File::open(&path).unwrap(),
            path: path.clone(),
        };
        assert!(!replaced(&r));
        std::fs::write(dir.path().join("prog.new"), b"second").unwrap();
        std::fs::rename(dir.path().join("prog.new"), &path).unwrap();
        assert!(replaced(&r));
        assert_eq!(read_held(&r).unwrap(), b"first build");
        std::fs::remove_file(&path).unwrap();
        assert!(replaced(&r), "a deleted binary counts as replaced");
    }

    #[test]
    fn a_link_planted_where_the_binary_is_staged_is_refused_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache");
        let store = Store::open(&root, false, crate::trust::Policy::default()).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // `bin` a link: nothing is created or staged through it.
        std::os::unix::fs::symlink(&outside, root.join("bin")).unwrap();
        let e = stage(&store).unwrap_err();
        assert!(e.contains("bin") && e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_file(root.join("bin")).unwrap();
        // The staged binary's own place a link (to a program of the user's): jobs would run
        // it. Refused, naming it.
        let staged = stage(&store).unwrap();
        std::fs::remove_file(&staged).unwrap();
        let other = outside.join("other-program");
        std::fs::write(&other, b"#!/bin/sh\necho forged\n").unwrap();
        std::os::unix::fs::symlink(&other, &staged).unwrap();
        let e = stage(&store).unwrap_err();
        assert!(
            e.contains(&staged.display().to_string()) && e.contains("symbolic link"),
            "{e}"
        );
        // Something else of the same name, or a copy others may write: refused too.
        std::fs::remove_file(&staged).unwrap();
        std::fs::write(&staged, b"short").unwrap();
        let e = stage(&store).unwrap_err();
        assert!(e.contains("refusing the staged binary"), "{e}");
        std::fs::remove_file(&staged).unwrap();
        assert_eq!(stage(&store).unwrap(), staged);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o722)).unwrap();
        assert!(stage(&store).is_err());
    }
}
