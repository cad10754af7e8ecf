//! Every task of the logs of a cache directory, read afresh from disk: [`logged_tasks`] for
//! [`crate::Cache`], [`records_of`] for the tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::folder::listed;
use super::record::{scan, LogRecord};
use crate::store::ResultRecord;
use crate::task::TaskKey;

/// One task found in the logs, for [`crate::Cache`]: its newest record (a finished one over
/// any failure) and the log file that holds it.
pub(crate) struct Logged {
    pub key: TaskKey,
    pub name: String,
    pub finished: SystemTime,
    pub record: ResultRecord,
    pub file: PathBuf,
    pub argv: Option<Vec<String>>,
    pub params: Vec<(String, String)>,
}

/// Every task of the logs of `root`, read afresh from disk (damaged records left out).
pub(crate) fn logged_tasks(root: &Path) -> Vec<Logged> {
    let mut found: HashMap<TaskKey, Logged> = HashMap::new();
    each_record(root, |path, r| {
        let ok = r.record.outcome.is_ok();
        let keep = match found.get(&r.key) {
            None => true,
            Some(old) => ok || old.record.outcome.is_err(),
        };
        if keep {
            found.insert(
                r.key,
                Logged {
                    key: r.key,
                    name: r.name,
                    finished: UNIX_EPOCH + Duration::from_secs(r.finished),
                    record: r.record,
                    file: path.to_path_buf(),
                    argv: r.argv,
                    params: r.params,
                },
            );
        }
    });
    found.into_values().collect()
}

/// Every sound record of `key` in the logs of `root`, in the order they were written (oldest
/// log first), read afresh from disk: the tests' view of how often a task was recorded.
pub(crate) fn records_of(root: &Path, key: &TaskKey) -> Vec<ResultRecord> {
    let mut out = Vec::new();
    each_record(root, |_, r| {
        if r.key == *key {
            out.push(r.record);
        }
    });
    out
}

/// Calls `each(file, record)` for every sound record of the logs of `root`, oldest log first,
/// in the order they were written (a log that cannot be read is passed over).
fn each_record(root: &Path, mut each: impl FnMut(&Path, LogRecord)) {
    let Some((dir, names)) = listed(root) else {
        return;
    };
    for name in names {
        let path = dir.join(&name);
        let _ = scan(&dir, &name, |_, _, r| each(&path, r));
    }
}
