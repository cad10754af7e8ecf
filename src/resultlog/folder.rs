//! The log folder of a cache directory and its logs, opened through checked handles (a link
//! among them is refused, never followed).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::dir::Dir;
use crate::store::Store;

pub(super) const EXTENSION: &str = "plog";

/// The folder of the result logs of the cache directory `root` (its path, for messages).
pub(super) fn log_dir(root: &Path) -> PathBuf {
    Store::at(root.to_path_buf(), false).log_dir()
}

/// The log folder of the cache directory `root` as a checked handle (never through a link:
/// one there is an error naming it); `None` when there is none yet.
pub(super) fn open_log_dir(root: &Path) -> io::Result<Option<Dir>> {
    match Store::at(root.to_path_buf(), false).log_handle(false) {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names of the logs in the log folder `dir`, oldest first (their names start with the
/// time). Whatever is in a log's place is opened through the handle as a regular file only:
/// a link planted among the logs is refused then, never followed.
pub(super) fn log_names(dir: &Dir) -> Vec<String> {
    let mut names: Vec<String> = dir
        .entries()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.starts_with('.') && Path::new(n).extension() == Some(EXTENSION.as_ref()))
        .collect();
    names.sort();
    names
}

/// The log folder of `root` and its logs' names (none when it cannot be opened).
pub(super) fn listed(root: &Path) -> Option<(Dir, Vec<String>)> {
    let dir = open_log_dir(root).ok().flatten()?;
    let names = log_names(&dir);
    Some((dir, names))
}

/// The log files of a cache directory, oldest first.
#[cfg(test)]
pub(crate) fn log_files(root: &Path) -> Vec<PathBuf> {
    listed(root).map_or_else(Vec::new, |(dir, names)| {
        names.iter().map(|n| dir.join(n)).collect()
    })
}

/// The modification time of the folder `dir` (`fstat` of its handle).
pub(super) fn mtime(dir: &Dir) -> Option<SystemTime> {
    dir.metadata().and_then(|m| m.modified()).ok()
}

/// The length of the log `name` of `dir` (`fstat` of the file opened through the handle).
pub(super) fn log_len(dir: &Dir, name: &str) -> Option<u64> {
    dir.open_regular(name)
        .and_then(|f| f.metadata())
        .ok()
        .map(|m| m.len())
}

/// Whether `path` is a result log (not a task directory).
pub(crate) fn is_log(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some(EXTENSION)
        && path.symlink_metadata().is_ok_and(|m| m.is_file())
}
