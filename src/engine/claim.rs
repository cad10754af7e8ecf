//! Claims (issue 14): a task with a key of its own is run by one driver of a cache directory
//! at a time; another waits for it and takes its result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Engine, Preparing};
use crate::error::TaskError;
use crate::event::EventKind;
use crate::future::Slot;
use crate::lock::{Claim, Claims};
use crate::store::{FormatError, ResultRecord};

/// What [`Engine::claim`] ends with.
pub(super) enum Claimed {
    /// The task is this driver's to run.
    Run,
    /// Another driver ran it meanwhile: its result.
    Answered(ResultRecord),
}

impl Engine {
    /// This driver's claims, registered on first use.
    fn claims(&self) -> Result<&Arc<Claims>, TaskError> {
        self.claims
            .get_or_init(|| {
                Claims::open(&self.store).map(Arc::new).map_err(|e| {
                    format!(
                        "could not register this driver in {}: {e}",
                        self.store.root().join("locks").display()
                    )
                })
            })
            .as_ref()
            .map_err(|detail| TaskError::Store {
                path: self.store.root().display().to_string(),
                detail: detail.clone(),
            })
    }

    /// Waits until this driver holds the claim on the task (issue 14: a second driver on the
    /// cache directory waits for the tasks the first one runs, then takes their results),
    /// and looks again, under the claim, for a result another driver left meanwhile.
    /// `preparing` is let go while waiting (a queue does not hold its batch for it).
    pub(super) async fn claim(
        &self,
        slot: &Arc<Slot>,
        use_cache: bool,
        preparing: &mut Option<Preparing>,
    ) -> Result<Claimed, TaskError> {
        let claims = self.claims()?;
        let key = slot.key;
        let mut waited = false;
        let mut delay = Duration::from_millis(20);
        loop {
            let since = Instant::now();
            // The cheap look only while waiting (a first try claims at once).
            let claim = match waited.then(|| claims.busy(&key)).flatten() {
                Some(owner) => Ok(Claim::Busy { owner }),
                None => claims.try_claim(&key),
            };
            let claim = claim.map_err(|e| TaskError::Store {
                path: self.store.claim_file(&key).display().to_string(),
                detail: format!("could not claim the task: {e}"),
            })?;
            let (took_over, after_other_driver) = match claim {
                Claim::Mine {
                    took_over,
                    after_other,
                } => (took_over, after_other),
                Claim::Busy { owner } => {
                    if !waited {
                        preparing.take();
                        if self.warned.lock().unwrap().insert("another driver") {
                            self.events.emit(EventKind::Warning {
                                message: format!(
                                    "task {key} ({}) is run by another driver of this cache directory ({owner}): waiting for it, and for any other task such a driver runs",
                                    slot.name
                                ),
                            });
                        }
                    }
                    waited = true;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = slot.cancel.cancelled() => return Err(TaskError::Cancelled),
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if use_cache || waited {
                let paths = self.store.task(&key);
                let stored = match paths.read_result() {
                    Err(FormatError::Missing)
                        if waited || took_over.is_some() || after_other_driver =>
                    {
                        crate::resultlog::LogSet::refreshed(self.store.root()).lookup(&key)
                    }
                    Err(FormatError::Missing) => {
                        // Another driver may have logged it since this one read the logs.
                        let logs = crate::resultlog::LogSet::of(self.store.root());
                        if logs.stale() {
                            logs.catch_up();
                        }
                        logs.lookup(&key)
                    }
                    other => other,
                };
                // A success answers; so does the failure of the run this driver waited for.
                if let Ok(record) = stored {
                    if record.outcome.is_ok() || (waited && took_over.is_none()) {
                        return Ok(Claimed::Answered(record));
                    }
                }
            }
            if took_over.is_some() || waited {
                // The other driver may have submitted it: find its job (the queue's journal).
                self.backend.taken_over(&key, since);
            }
            return Ok(Claimed::Run);
        }
    }
}
