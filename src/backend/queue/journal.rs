//! The scheduler journal: which job (array id + index) runs which task. One file per sbatch
//! call in `<cache>/jobs/`, never one per task; it is the only source of truth for
//! re-attaching to jobs after the driver was stopped or killed.
//!
//! Before each submission an intent record (`<stem>.intent`: the job script's path and the
//! tasks) is written; once the scheduler answered with a job id, the journal record is, and
//! the intent removed. A driver killed between the two leaves the intent: the next run asks
//! the scheduler for a job of that script ([`crate::backend::scheduler::SchedulerClient::submitted`])
//! and journals it, so a job the scheduler accepted is always found again.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::scheduler::JobRef;
use crate::dir::Dir;
use crate::error::{Error, TaskError};
use crate::store::{self, FileKind, FormatError, Store};
use crate::task::TaskKey;

/// One sbatch call: its job id and the tasks it runs (with their array index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JournalRecord {
    pub job_id: u64,
    pub tasks: Vec<(TaskKey, Option<u32>)>,
}

/// A submission about to be made: the job script (where the jobs see it) and its tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IntentRecord {
    pub script: String,
    pub tasks: Vec<(TaskKey, Option<u32>)>,
}

/// Files of the jobs directory that were not read, with their path and why.
pub(crate) type Refused = Vec<(PathBuf, FormatError)>;

/// The journal of a cache directory (its records are where the store puts them).
pub(crate) struct Journal {
    store: Store,
    /// When the last [`Journal::reload_since`] started.
    reloaded: Mutex<Option<Instant>>,
}

impl Journal {
    pub(crate) fn new(store: Store) -> Journal {
        Journal {
            store,
            reloaded: Mutex::new(None),
        }
    }

    /// Reads the journal again into `jobs` (a task's newer job wins) and `packs` (issue 14:
    /// this driver took over a task from another driver, whose submissions it has not seen),
    /// unless a reload started after `since` (when the other driver was last seen) already
    /// did: a driver taking over many tasks at once reads the journal once.
    pub(crate) fn reload_since(
        &self,
        since: Instant,
        jobs: &Mutex<HashMap<TaskKey, JobRef>>,
        packs: &Mutex<HashSet<JobRef>>,
    ) {
        let mut reloaded = self.reloaded.lock().unwrap();
        if reloaded.is_some_and(|at| at > since) {
            return;
        }
        *reloaded = Some(Instant::now());
        let (known, _problems) = self.load();
        let mut seen = HashSet::new();
        // The order every other holder of both takes them in (`recover_intents`: the jobs,
        // then the packs): the other way round, a take-over during the recovery of an
        // earlier run's intents deadlocked the driver.
        let mut jobs = jobs.lock().unwrap();
        let mut packs = packs.lock().unwrap();
        for (key, job) in known {
            if !seen.insert(job) {
                packs.insert(job);
            }
            if jobs.get(&key).is_none_or(|old| old.job_id < job.job_id) {
                jobs.insert(key, job);
            }
        }
    }

    /// The jobs directory through its checked handle (`Store::jobs`), for a write.
    fn jobs_for_write(&self, name: &str) -> Result<Dir, TaskError> {
        self.store.jobs(true).map_err(|e| TaskError::Store {
            path: self.store.job_file(name).display().to_string(),
            detail: format!("could not write: {e}"),
        })
    }

    /// Records a submission (atomically, before the driver relies on it).
    pub(crate) fn record(&self, rec: &JournalRecord) -> Result<(), TaskError> {
        let name = Store::journal_record_name(rec.job_id);
        let dir = self.jobs_for_write(&name)?;
        store::write_value_in(&dir, &name, FileKind::Journal, rec, self.store.durable())
    }

    /// Records a submission about to be made under the script stem `stem`.
    pub(crate) fn intend(&self, stem: &str, rec: &IntentRecord) -> Result<(), TaskError> {
        let name = Store::journal_intent_name(stem);
        let dir = self.jobs_for_write(&name)?;
        store::write_value_in(&dir, &name, FileKind::Journal, rec, self.store.durable())
    }

    /// The submission under `stem` is journaled (or never happened): its intent goes.
    pub(crate) fn settle(&self, stem: &str) {
        if let Ok(dir) = self.store.jobs(false) {
            let _ = dir.unlink(&Store::journal_intent_name(stem));
        }
    }

    /// When the intent under `stem` was written (shortly before its submission), as its
    /// file says; the epoch when it cannot say (every job is then looked at).
    pub(crate) fn intended_at(&self, stem: &str) -> std::time::SystemTime {
        self.store
            .jobs(false)
            .ok()
            .and_then(|dir| dir.open_regular(&Store::journal_intent_name(stem)).ok())
            .and_then(|f| f.metadata().and_then(|m| m.modified()).ok())
            .unwrap_or(std::time::UNIX_EPOCH)
    }

    /// The intents of submissions whose driver stopped before it learned (or journaled) the
    /// job id: (stem, record), and the intents refused (a link, not a regular file: never
    /// followed), each with its path and why. Unreadable ones are skipped (a record is
    /// written atomically: a damaged one is outside damage).
    pub(crate) fn intents(&self) -> (Vec<(String, IntentRecord)>, Refused) {
        let (mut out, mut refused) = (Vec::new(), Vec::new());
        let Ok(dir) = self.store.jobs(false) else {
            return (out, refused);
        };
        for name in dir.entries().unwrap_or_default() {
            let Some(name) = name.to_str() else {
                continue;
            };
            let Some(stem) = Store::intent_stem(name) else {
                continue;
            };
            match store::read_value_in::<IntentRecord>(&dir, name, FileKind::Journal) {
                Ok(rec) => out.push((stem.to_string(), rec)),
                Err(e @ FormatError::Untrusted(_)) => refused.push((dir.join(name), e)),
                Err(_) => {}
            }
        }
        (out, refused)
    }

    /// Every task's latest job. Unreadable records are skipped and reported in the second
    /// value with their path (a record is written atomically, so this means outside damage,
    /// or, `FormatError::Untrusted`, a link or something else planted in its place: never
    /// followed). A jobs directory that cannot be opened (a link, another user's) is reported
    /// so too.
    pub(crate) fn load(&self) -> (HashMap<TaskKey, JobRef>, Refused) {
        let mut map: HashMap<TaskKey, JobRef> = HashMap::new();
        let mut problems = Vec::new();
        let mut records = Vec::new();
        let dir = match self.store.jobs(false) {
            Ok(dir) => Some(dir),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(Error::Untrusted { path, reason, .. }) => {
                problems.push((path, FormatError::Untrusted(reason)));
                None
            }
            Err(e) => {
                let path = self.store.job_file("");
                problems.push((path, FormatError::Io(std::io::Error::other(e.to_string()))));
                None
            }
        };
        let names = dir
            .as_ref()
            .map(|d| d.entries().unwrap_or_default())
            .unwrap_or_default();
        for name in names {
            let (Some(dir), Some(name)) = (dir.as_ref(), name.to_str()) else {
                continue;
            };
            if !Store::is_journal_record(name) {
                continue;
            }
            match store::read_value_in::<JournalRecord>(dir, name, FileKind::Journal) {
                Ok(rec) => records.push(rec),
                Err(e) => problems.push((dir.join(name), e)),
            }
        }
        records.sort_by_key(|r| r.job_id);
        for rec in records {
            for (key, index) in rec.tasks {
                map.insert(
                    key,
                    JobRef {
                        job_id: rec.job_id,
                        array_index: index,
                    },
                );
            }
        }
        (map, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Policy;

    fn record(job_id: u64) -> JournalRecord {
        JournalRecord {
            job_id,
            tasks: vec![(TaskKey::explicit("t"), None)],
        }
    }

    #[test]
    fn a_link_in_a_records_place_is_refused_naming_it_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("cache"), false, Policy::default()).unwrap();
        store.create_jobs_dir().unwrap();
        let journal = Journal::new(store.clone());
        journal.record(&record(1)).unwrap();
        // Another cache's record and intent, linked in as this one's.
        let other = Store::open(&d.path().join("other"), false, Policy::default()).unwrap();
        other.create_jobs_dir().unwrap();
        let theirs = Journal::new(other.clone());
        theirs.record(&record(2)).unwrap();
        let intent = IntentRecord {
            script: "/x.sh".into(),
            tasks: vec![(TaskKey::explicit("u"), None)],
        };
        theirs.intend("s", &intent).unwrap();
        let link = store.job_file(&Store::journal_record_name(2));
        std::os::unix::fs::symlink(other.job_file(&Store::journal_record_name(2)), &link).unwrap();
        let intent_link = store.job_file(&Store::journal_intent_name("s"));
        std::os::unix::fs::symlink(
            other.job_file(&Store::journal_intent_name("s")),
            &intent_link,
        )
        .unwrap();
        let (known, problems) = journal.load();
        assert_eq!(known.len(), 1);
        assert_eq!(
            known[&TaskKey::explicit("t")].job_id,
            1,
            "the link is not read"
        );
        assert!(
            matches!(&problems[..], [(path, FormatError::Untrusted(why))]
                if path == &link && why.contains("symbolic link")),
            "{problems:?}"
        );
        let (intents, refused) = journal.intents();
        assert!(intents.is_empty(), "{intents:?}");
        assert!(
            matches!(&refused[..], [(path, FormatError::Untrusted(_))] if path == &intent_link),
            "{refused:?}"
        );
        assert_eq!(journal.intended_at("s"), std::time::UNIX_EPOCH);
        // Settling removes the link itself, never its target.
        journal.settle("s");
        assert!(intent_link.symlink_metadata().is_err());
        assert_eq!(theirs.intents().0.len(), 1);
    }

    #[test]
    fn nothing_is_journaled_or_read_through_a_linked_jobs_folder() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache");
        let store = Store::open(&root, false, Policy::default()).unwrap();
        let other = Store::open(&d.path().join("other"), false, Policy::default()).unwrap();
        other.create_jobs_dir().unwrap();
        Journal::new(other.clone()).record(&record(2)).unwrap();
        std::os::unix::fs::symlink(other.root().join("jobs"), root.join("jobs")).unwrap();
        let journal = Journal::new(store.clone());
        let (known, problems) = journal.load();
        assert!(known.is_empty(), "read through the link: {known:?}");
        assert!(
            matches!(&problems[..], [(path, FormatError::Untrusted(why))]
                if path == &root.join("jobs") && why.contains("symbolic link")),
            "{problems:?}"
        );
        let err = journal.record(&record(3)).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let intent = IntentRecord {
            script: "/x.sh".into(),
            tasks: vec![],
        };
        assert!(journal.intend("s", &intent).is_err());
        let names: Vec<_> = std::fs::read_dir(other.root().join("jobs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("2.job")],
            "written through"
        );
    }
}
