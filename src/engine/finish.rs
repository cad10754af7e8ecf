//! The end of tasks: one task's record counted, reported and filled into its slot; and what
//! the executor asks of all the unresolved ones (wait, detach, cancel).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::Engine;
use crate::error::TaskError;
use crate::event::EventKind;
use crate::future::Slot;
use crate::store::ResultRecord;

impl Engine {
    /// Ends a task with `record`; `answered`: another driver ran it (counted as cached).
    pub(super) fn finish(
        &self,
        slot: &Arc<Slot>,
        record: ResultRecord,
        started_at: Instant,
        answered: bool,
    ) {
        if let Some(Ok(claims)) = self.claims.get() {
            claims.release(&slot.key);
        }
        let key = slot.key.to_string();
        let name = slot.name.clone();
        match &record.outcome {
            Ok(_) if answered => {
                self.counts.cached.fetch_add(1, Ordering::Relaxed);
                self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                self.events.emit(EventKind::Cached { key, name });
            }
            Ok(_) => {
                self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                self.events.emit(EventKind::Finished {
                    key,
                    name,
                    runtime: started_at.elapsed(),
                });
            }
            Err(error) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                self.events.emit(EventKind::Failed {
                    key,
                    name,
                    error: error.clone(),
                });
            }
        }
        slot.cancel.clear_hooks();
        // Fill the slot and count the task out in one step under the lock (issue 19: a caller
        // woken by the result read the count before it went down), and wake the slot's waiters
        // after letting go of it.
        let filled = {
            let mut pending = self.pending.lock().unwrap();
            let filled = slot.fill(record.outcome);
            *pending -= 1;
            if *pending == 0 {
                self.idle.notify_all();
            }
            filled
        };
        self.forget(slot);
        if let Some(filled) = filled {
            slot.wake(filled);
        }
    }

    /// Drops a resolved task from the unresolved ones, unless a later submission of its key
    /// (after it failed) has taken its place already.
    pub(super) fn forget(&self, slot: &Arc<Slot>) {
        let mut live = self.live.lock().unwrap();
        if live.get(&slot.key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            live.remove(&slot.key);
        }
    }

    /// Number of tasks the engine keeps by key (the unresolved ones), for tests.
    #[cfg(test)]
    pub(crate) fn live_count(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    /// Blocks until no task is pending.
    pub(crate) fn wait_idle(&self) {
        let mut pending = self.pending.lock().unwrap();
        while *pending > 0 {
            pending = self.idle.wait(pending).unwrap();
        }
    }

    /// Number of tasks submitted and not yet resolved.
    pub(crate) fn pending(&self) -> u64 {
        *self.pending.lock().unwrap()
    }

    /// Ends every future still unresolved with [`TaskError::Detached`], when the executor
    /// goes away and leaves its jobs running: nothing would resolve them any more. Only the
    /// futures: the jobs' results still reach the cache directory.
    pub(crate) fn detach_all(&self) {
        let live: Vec<Arc<Slot>> = self.live.lock().unwrap().values().cloned().collect();
        let cache = self.store.root().display().to_string();
        for slot in live {
            slot.resolve(Err(TaskError::Detached {
                cache: cache.clone(),
            }));
        }
    }

    /// Asks every unresolved task to cancel.
    pub(crate) fn cancel_all(&self) {
        // Cancelling can end a task on this thread (its hooks run here): not under the lock.
        let live: Vec<Arc<Slot>> = self.live.lock().unwrap().values().cloned().collect();
        for slot in live {
            if slot.outcome().is_none() {
                slot.cancel.cancel();
            }
        }
    }
}
