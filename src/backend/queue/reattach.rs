//! What earlier runs left, for a task about to run: their submissions recovered once per
//! run ([`Queue::recover`]), and whether an earlier attempt failed or a command already
//! finished.

use std::collections::HashMap;

use super::poll;
use super::Queue;
use crate::backend::scheduler::{JobRef, JobState};
use crate::backend::Job;
use crate::store::ResultRecord;
use crate::task::TaskKind;

impl Queue {
    /// Once per run, before any task re-attaches: the submissions earlier runs made without
    /// journaling their job (killed while the submit command ran) are looked for by their
    /// script and journaled; returns the earlier runs' jobs the scheduler lists now (`None`
    /// when it could not say).
    pub(super) async fn recover(&self) -> Option<&HashMap<JobRef, JobState>> {
        self.recovered
            .get_or_init(|| async {
                let (intents, refused) = self.journal.intents();
                for (path, e) in refused {
                    self.warn(format!(
                        "the intent record {} is not read: it {e}",
                        path.display()
                    ));
                }
                if !intents.is_empty() {
                    self.recover_intents(intents).await;
                }
                if self.journaled.lock().unwrap().is_empty() {
                    return Some(HashMap::new());
                }
                match self.scheduler.client.active(&self.tag).await {
                    Ok(states) => Some(states),
                    Err(e) => {
                        self.warn(format!("could not list the earlier runs' jobs: {e}"));
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    /// Whether what an earlier attempt of the task left says it ended and failed: a failed
    /// (or unreadable) result, or a command's exit file with a failure. Its job, finished,
    /// must not stand in for a new attempt.
    pub(super) fn attempt_failed(&self, job: &Job) -> bool {
        match job.paths.read_result() {
            Ok(rec) => return rec.outcome.is_err(),
            Err(crate::store::FormatError::Missing) => {}
            Err(_) => return true,
        }
        match &job.spec.kind {
            TaskKind::Command(spec) => {
                matches!(
                    poll::exit_outcome(&job.paths, spec, job.spec.cwd.as_deref()),
                    Some((_, Err(_)))
                )
            }
            // Its job script writes the exit file only when the worker left no result.
            TaskKind::Function { .. } => job.paths.open_exit_file().is_ok(),
        }
    }

    /// A command whose job succeeded while no driver watched it and whose job is not in the
    /// journal (the driver was killed before recording it): its exit file is its result.
    pub(super) fn finished_command(&self, job: &Job) -> Option<ResultRecord> {
        let TaskKind::Command(spec) = &job.spec.kind else {
            return None;
        };
        if self.transport.is_remote() || job.paths.read_result().is_ok() {
            return None;
        }
        match poll::exit_outcome(&job.paths, spec, job.spec.cwd.as_deref())? {
            (_, Ok(values)) => {
                let rec = job.paths.publish_result(ResultRecord {
                    outcome: Ok(values),
                });
                job.paths.remove_exit_file();
                Some(rec)
            }
            (_, Err(_)) => None,
        }
    }
}
