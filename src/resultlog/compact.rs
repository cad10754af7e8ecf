//! Folding finished task directories into a result log: [`compact`] (`pitch gc --compact`).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::record::LogRecord;
use super::set::LogSet;
use crate::store::Store;
use crate::task::TaskKey;

/// What [`Cache::compact`](crate::Cache::compact) (`pitch gc --compact`) did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Task directories folded into the result log (and removed).
    pub folded: usize,
    /// Finished task directories left as they are: they hold more than a task and a result
    /// file (the task's stdout or stderr, rank files), or are younger than asked.
    pub kept: usize,
}

/// Folds the directories of finished tasks (a finished result, nothing but `task.bin` and
/// `result.bin`, last changed at least `older_than` ago) into a result log of this process,
/// then removes them. Safe to interrupt at any point: every record is written and synced to
/// disk before any directory goes, a record cut short is detected and skipped when read, and
/// a directory whose task is already in a log with a finished result is only removed, so
/// running it again finishes the work and loses nothing.
pub(crate) fn compact(root: &Path, older_than: Duration) -> Result<Compacted, String> {
    use crate::task::TaskSpec;
    let store = Store::at(root.to_path_buf(), false);
    let logs = LogSet::of(root);
    let mut done = Compacted::default();
    let mut foldable: Vec<TaskKey> = Vec::new();
    let now = SystemTime::now();
    for key in store.task_keys().map_err(|e| e.to_string())? {
        {
            let paths = store.task(&key);
            let Ok(record) = paths.read_result() else {
                continue; // unfinished, or unreadable: left alone
            };
            if record.outcome.is_err() {
                continue;
            }
            // The task directory through handles from the cache root (a link on the way is
            // refused, never followed): what it holds and when it last changed (`fstat`).
            let Some(dir) = crate::dir::below(root, paths.dir()).and_then(|(mut names, name)| {
                names.push(name);
                store.dir(&names, false).ok()
            }) else {
                done.kept += 1;
                continue;
            };
            let names = dir.entries().unwrap_or_default();
            let own = [paths.task_file(), paths.result_file()];
            let only_own = names
                .iter()
                .all(|n| own.iter().any(|p| p.file_name() == Some(n.as_os_str())));
            let modified = dir.metadata().and_then(|m| m.modified());
            let young = modified
                .as_ref()
                .ok()
                .and_then(|m| now.duration_since(*m).ok())
                .is_none_or(|age| age < older_than);
            if young || !only_own {
                done.kept += 1;
                continue;
            }
            if !logs.has_finished(&key) {
                let Ok(spec) = paths.read_task::<TaskSpec>() else {
                    done.kept += 1;
                    continue;
                };
                let (name, argv, params) = spec.kind.shown();
                let finished = modified
                    .as_ref()
                    .ok()
                    .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                    .unwrap_or_default()
                    .as_secs();
                logs.append_record(
                    &LogRecord {
                        key,
                        name,
                        finished,
                        record,
                        argv,
                        params,
                    },
                    false,
                )?;
            }
            foldable.push(key);
        }
    }
    // Every record is on disk before any directory goes.
    logs.sync()
        .map_err(|e| format!("could not sync the result log: {e}"))?;
    for key in foldable {
        store.remove_task(&key).map_err(|e| e.to_string())?;
        let shard = store.task(&key).dir().parent().map(Path::to_path_buf);
        if let Some((tasks, shard)) = shard.as_deref().and_then(|s| crate::dir::below(root, s)) {
            // Only when it became empty (through the handle of `tasks/`).
            if let Ok(tasks) = store.dir(&tasks, false) {
                let _ = tasks.remove_dir(shard);
            }
        }
        done.folded += 1;
    }
    Ok(done)
}
