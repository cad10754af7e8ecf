//! [`Watch`]: a task the poller watches, and [`WatchEnd`], how it ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::backend::scheduler::JobRef;
use crate::store::{ResultRecord, TaskPaths};
use crate::task::TaskSpec;

/// How a watched task ended.
pub(crate) enum WatchEnd {
    /// With this (published) result.
    Done(ResultRecord),
    /// A re-attached job is gone without a result: submit the task again.
    Lost,
    /// The job is queued for a reason that never clears (`reason`, for people): the poller
    /// cancelled it. The watcher decides: an input being retried (submit it again behind the
    /// input's new job), or a rejection.
    Stuck(String),
    /// The job ended, or can never start, because an input's job failed and that input is
    /// being retried: submit the task again behind the input's next job.
    Resubmit,
}

/// A task the poller watches.
pub(crate) struct Watch {
    pub(super) job: JobRef,
    pub(super) paths: TaskPaths,
    pub(super) spec: Arc<TaskSpec>,
    pub(super) reattached: bool,
    /// The task's `run_time_max`: a job the scheduler ended at its time limit resolves to
    /// `TaskError::Timeout` with it, as on every backend.
    pub(super) limit: Option<Duration>,
    /// When the job was first seen finished or gone without a result.
    pub(super) gone_since: Option<Instant>,
    /// Ticks in a row the job was seen queued for a reason that never clears.
    pub(super) stuck_ticks: u32,
    pub(super) tx: Option<oneshot::Sender<WatchEnd>>,
}

impl Watch {
    pub(crate) fn new(
        job: JobRef,
        paths: TaskPaths,
        spec: Arc<TaskSpec>,
        reattached: bool,
        limit: Option<Duration>,
        tx: oneshot::Sender<WatchEnd>,
    ) -> Watch {
        Watch {
            job,
            paths,
            spec,
            reattached,
            limit,
            gone_since: None,
            stuck_ticks: 0,
            tx: Some(tx),
        }
    }
}
