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
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::scheduler::JobRef;
use crate::error::TaskError;
use crate::store::{self, FileKind, Store};
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
        let mut packs = packs.lock().unwrap();
        let mut jobs = jobs.lock().unwrap();
        for (key, job) in known {
            if !seen.insert(job) {
                packs.insert(job);
            }
            if jobs.get(&key).is_none_or(|old| old.job_id < job.job_id) {
                jobs.insert(key, job);
            }
        }
    }

    /// Records a submission (atomically, before the driver relies on it).
    pub(crate) fn record(&self, rec: &JournalRecord) -> Result<(), TaskError> {
        store::write_value(
            &self.store.journal_record(rec.job_id),
            FileKind::Journal,
            rec,
            self.store.durable(),
        )
    }

    /// Records a submission about to be made under the script stem `stem`.
    pub(crate) fn intend(&self, stem: &str, rec: &IntentRecord) -> Result<(), TaskError> {
        store::write_value(
            &self.store.journal_intent(stem),
            FileKind::Journal,
            rec,
            self.store.durable(),
        )
    }

    /// The submission under `stem` is journaled (or never happened): its intent goes.
    pub(crate) fn settle(&self, stem: &str) {
        let _ = std::fs::remove_file(self.store.journal_intent(stem));
    }

    /// When the intent under `stem` was written (shortly before its submission), as its
    /// file says; the epoch when it cannot say (every job is then looked at).
    pub(crate) fn intended_at(&self, stem: &str) -> std::time::SystemTime {
        std::fs::metadata(self.store.journal_intent(stem))
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH)
    }

    /// The intents of submissions whose driver stopped before it learned (or journaled) the
    /// job id: (stem, record). Unreadable ones are skipped (a record is written atomically:
    /// a damaged one is outside damage).
    pub(crate) fn intents(&self) -> Vec<(String, IntentRecord)> {
        let mut out = Vec::new();
        for path in self.store.journal_intents() {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Ok(rec) = store::read_value::<IntentRecord>(&path, FileKind::Journal) {
                out.push((stem, rec));
            }
        }
        out
    }

    /// Every task's latest job. Unreadable records are skipped and reported in the second
    /// value (a record is written atomically, so this means outside damage).
    pub(crate) fn load(&self) -> (HashMap<TaskKey, JobRef>, Vec<String>) {
        let mut map: HashMap<TaskKey, JobRef> = HashMap::new();
        let mut problems = Vec::new();
        let mut records = Vec::new();
        for path in self.store.journal_records() {
            match store::read_value::<JournalRecord>(&path, FileKind::Journal) {
                Ok(rec) => records.push(rec),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
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
