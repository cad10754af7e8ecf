//! What `Cache` (`pitch status`, `pitch results`, `pitch cancel`) asks of the queue layer
//! about a cache directory it did not run: the jobs' name, the journal, a command's exit
//! file, and the scheduler's view of the jobs (commands run here).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::queue::journal::Journal;
use super::scheduler::{JobRef, Scheduler};
use super::transport::Local;
use crate::scheduler::{SchedulerError, SchedulerKind};
use crate::store::{Store, TaskPaths};
use crate::task::CommandSpec;
use crate::task::TaskKey;

pub(crate) use super::queue::poll::ExitOutcome;

/// The job name every job of the cache directory `root` carries.
pub(crate) fn job_name(root: &Path) -> String {
    super::queue::job_name_for(root)
}

/// A command job's outcome from the exit file its script left, `None` while there is none.
pub(crate) fn exit_outcome(paths: &TaskPaths, spec: &CommandSpec) -> Option<ExitOutcome> {
    super::queue::poll::exit_outcome(paths, spec, None).map(|(_, outcome)| outcome)
}

/// The job (`123` or `123_4`) each task was last submitted as, from the journal.
pub(crate) fn journal_jobs(store: &Store) -> HashMap<TaskKey, String> {
    Journal::new(store.clone())
        .load()
        .0
        .into_iter()
        .map(|(k, j)| (k, j.to_string()))
        .collect()
}

/// Runs `f` with the scheduler `kind` (commands run here) on a small runtime.
fn with_scheduler<T>(
    kind: SchedulerKind,
    f: impl AsyncFnOnce(&Scheduler) -> Result<T, SchedulerError>,
) -> Result<T, SchedulerError> {
    let scheduler = super::scheduler_for(kind, Arc::new(Local));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SchedulerError::Runtime(e.to_string()))?;
    rt.block_on(f(&scheduler))
}

/// ONE query: the state (`PENDING`, `RUN`, `COMPLETED`...) of each job named `tag` the
/// scheduler lists, by job id.
pub(crate) fn active_jobs(
    kind: SchedulerKind,
    tag: &str,
) -> Result<HashMap<String, String>, SchedulerError> {
    let states = with_scheduler(kind, async |s| s.client.active(tag).await)?;
    Ok(states
        .into_iter()
        .map(|(job, state)| (job.to_string(), state.name().to_string()))
        .collect())
}

/// Cancels these jobs (`123`, `123_4`) in one call.
pub(crate) fn cancel_jobs(kind: SchedulerKind, ids: &[String]) -> Result<(), SchedulerError> {
    let jobs = ids
        .iter()
        .map(|i| i.parse::<JobRef>())
        .collect::<Result<Vec<_>, _>>()?;
    with_scheduler(kind, async |s| s.client.cancel(&jobs).await)
}
