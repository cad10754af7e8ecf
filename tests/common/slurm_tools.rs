//! Slurm's commands as the two real-Slurm suites (`tests/slurm`, `tests/faults`) use them: the
//! real tool on PATH ([`which`]), a wrapper put in front of it ([`write_wrapper`],
//! [`path_with`]), [`scancel`], and the journal a cache directory keeps of its submissions
//! ([`journal`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::ensure;

/// The real `tool` on PATH: the first file of that name outside the temporary directory,
/// where the tests put their wrappers.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file() && !f.starts_with(std::env::temp_dir()))
    })
}

/// Writes `script` as the executable `bin/tool`, creating `bin`.
pub(crate) fn write_wrapper(bin: &Path, tool: &str, script: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin).map_err(|e| e.to_string())?;
    let wrapper = bin.join(tool);
    std::fs::write(&wrapper, script).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())
}

/// This process's PATH with `bin` in front (for a child that should find the wrappers there).
pub(crate) fn path_with(bin: PathBuf) -> Result<OsString, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        .map_err(|e| e.to_string())
}

/// Cancels the job (or array, or array element) `id`.
pub(crate) fn scancel(id: &str) -> Result<(), String> {
    let status = std::process::Command::new("scancel")
        .arg(id)
        .status()
        .map_err(|e| e.to_string())?;
    ensure!(status.success(), "scancel {id}: {status:?}");
    Ok(())
}

/// The journal records (`jobs/<job id>.job`) of a cache directory: one per submission.
pub(crate) fn journal(cache: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(cache.join("jobs"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "job"))
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default()
}
