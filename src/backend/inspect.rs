//! What `Cache` (`pitch status`, `pitch results`, `pitch cancel`) asks of the queue layer
//! about a cache directory it did not run: the jobs' name, the journal, a command's exit
//! file, and the scheduler's view of the jobs (commands run here).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::queue::journal::Journal;
use super::scheduler::{JobRef, Scheduler};
use super::transport::{Local, Transport};
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

/// Where `pitch status` and `pitch cancel` run the scheduler's commands: here, or on the
/// login node the jobs went to (feature `remote`).
pub(crate) type Place = Arc<dyn Transport>;

/// Here.
pub(crate) fn here() -> Place {
    Arc::new(Local)
}

/// The login node `remote`, which must be `login` (`user@host:port`, as the cache directory
/// recorded when its jobs were submitted): connected for `pitch status` and `pitch cancel`,
/// once the cache directory there passed the check an executor's build makes
/// (`crate::trust::REMOTE_CHECK_SCRIPT` by `trust`; nothing is created there). A refusal is
/// the build's [`crate::error::Error::Untrusted`]; any other failure (no connection, another
/// login node) is the error of the scheduler's commands that cannot run.
#[cfg(feature = "remote")]
pub(crate) fn over_ssh(
    remote: crate::Remote,
    root: &Path,
    login: &str,
    trust: crate::trust::Policy,
) -> Result<Result<Place, SchedulerError>, crate::error::Error> {
    let failed = |detail: String| SchedulerError::CannotRun {
        program: "ssh".into(),
        detail,
    };
    let place = match super::transport::connect(remote, root, false, trust, false) {
        Ok(place) => place,
        Err(e @ crate::error::Error::Untrusted { .. }) => return Err(e),
        Err(e) => return Ok(Err(failed(e.to_string()))),
    };
    let reached = place.login().unwrap_or_default();
    if reached != login {
        place.close();
        return Ok(Err(failed(format!(
            "the jobs of this cache directory were submitted over SSH to {login}, not to \
             {reached} (the remote given): its scheduler does not know them"
        ))));
    }
    Ok(Ok(place))
}

/// Runs `f` with the scheduler `kind` (its commands run at `place`) on a small runtime.
fn with_scheduler<T>(
    kind: SchedulerKind,
    place: &Place,
    f: impl AsyncFnOnce(&Scheduler) -> Result<T, SchedulerError>,
) -> Result<T, SchedulerError> {
    let scheduler = super::scheduler_for(kind, place.clone());
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
    place: &Place,
    tag: &str,
) -> Result<HashMap<String, String>, SchedulerError> {
    let states = with_scheduler(kind, place, async |s| s.client.active(tag).await)?;
    Ok(states
        .into_iter()
        .map(|(job, state)| (job.to_string(), state.name().to_string()))
        .collect())
}

/// Cancels these jobs (`123`, `123_4`) in one call.
pub(crate) fn cancel_jobs(
    kind: SchedulerKind,
    place: &Place,
    ids: &[String],
) -> Result<(), SchedulerError> {
    let jobs = ids
        .iter()
        .map(|i| i.parse::<JobRef>())
        .collect::<Result<Vec<_>, _>>()?;
    with_scheduler(kind, place, async |s| s.client.cancel(&jobs).await)
}
