//! What a submission pitch made holds, read back from its files: shared by the tests that
//! kill a driver once the scheduler accepted a submission (tests/slurm/rerun.rs and
//! tests/e2e/flux_cluster.rs).

use std::path::Path;

/// Whether the submission made with the job script `script` holds the `n` tasks whose
/// commands are `echo I >> ...` (I = 0..n): its script and the files of the same stem beside
/// it (an array's or a pack's tasks file) name each of them. A map's tasks usually make one
/// submission; on a loaded machine the batch window may split them.
pub(crate) fn holds_every_task(script: &Path, n: u32) -> Result<bool, String> {
    let stem = script
        .file_stem()
        .ok_or_else(|| format!("{}: no job script", script.display()))?
        .to_string_lossy()
        .into_owned();
    let jobs = script
        .parent()
        .ok_or_else(|| format!("{}: no job script", script.display()))?;
    let mut text = String::new();
    for entry in std::fs::read_dir(jobs)
        .map_err(|e| format!("{}: {e}", jobs.display()))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&stem) {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    Ok((0..n).all(|i| text.contains(&format!("echo {i} >>"))))
}
