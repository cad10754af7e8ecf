//! [`Event`]: the only link from the engine to whatever shows progress. The engine never
//! prints; reporters (a progress bar, JSON lines, the CLI's output) consume events.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::error::TaskError;

/// Something that happened in an executor.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Wall-clock time of the event.
    pub at: SystemTime,
    /// Time since the executor was built.
    pub elapsed: Duration,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A task was accepted by the executor.
    Submitted {
        /// The task's key.
        key: String,
        /// The task's name.
        name: String,
    },
    /// A task's finished result was found in the cache: it will not run.
    Cached {
        /// The task's key.
        key: String,
        /// The task's name.
        name: String,
    },
    /// A task started running (or was handed to the scheduler).
    Started {
        /// The task's key.
        key: String,
        /// The task's name.
        name: String,
        /// The scheduler's job id, when there is one.
        job_id: Option<String>,
    },
    /// A task finished with a value.
    Finished {
        /// The task's key.
        key: String,
        /// The task's name.
        name: String,
        /// Time from start to finish.
        runtime: Duration,
    },
    /// A task failed.
    Failed {
        /// The task's key.
        key: String,
        /// The task's name.
        name: String,
        /// Why.
        error: TaskError,
    },
    /// An attempt of a task failed and the task will be submitted again (`max_retries`).
    Retrying {
        /// The task's key.
        key: String,
        /// The task's name.
        name: String,
        /// The attempt that failed: its number, job id, error and duration.
        attempt: crate::error::Attempt,
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// Something the user should know that does not stop the run (an option the backend
    /// ignores, a corrupt cache entry that will be recomputed).
    Warning {
        /// The message.
        message: String,
    },
    /// The executor shut down.
    RunFinished {
        /// Tasks that finished with a value (including cached ones).
        succeeded: u64,
        /// Tasks that failed.
        failed: u64,
        /// Tasks resolved from the cache.
        cached: u64,
    },
}

/// Consumes events. Called on the engine's threads (and on a thread that cancels a task):
/// keep it quick.
pub trait Reporter: Send + Sync {
    /// Handles one event.
    fn report(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> Reporter for F {
    fn report(&self, event: &Event) {
        self(event)
    }
}

/// Fans events out to the reporters.
#[derive(Clone)]
pub(crate) struct Events {
    start: Instant,
    reporters: Arc<Vec<Arc<dyn Reporter>>>,
}

impl Events {
    pub(crate) fn new(reporters: Vec<Arc<dyn Reporter>>) -> Events {
        Events {
            start: Instant::now(),
            reporters: Arc::new(reporters),
        }
    }

    pub(crate) fn emit(&self, kind: EventKind) {
        // Every state change of a task, for a `tracing` subscriber (target `pitch::task`).
        tracing::debug!(target: "pitch::task", event = ?kind, "task");
        if self.reporters.is_empty() {
            return;
        }
        let event = Event {
            at: SystemTime::now(),
            elapsed: self.start.elapsed(),
            kind,
        };
        for r in self.reporters.iter() {
            r.report(&event);
        }
    }
}
