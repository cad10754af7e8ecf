//! The scheduler journal: which job (array id + index) runs which task. One file per sbatch
//! call in `<cache>/jobs/`, never one per task; it is the only source of truth for
//! re-attaching to jobs after the driver was stopped or killed.

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
