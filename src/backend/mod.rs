//! The [`Backend`] trait: what differs between SingleNode processes, Slurm jobs, srun steps and
//! Flux jobs. Everything else (keys, the store, dependencies, events) lives once in the engine.

mod child;
#[cfg(test)]
mod decode_fuzz_tests;
pub(crate) mod exe;
pub(crate) mod failure;
pub(crate) mod flux;
pub(crate) mod inspect;
mod launcher;
pub(crate) mod output;
mod pool;
pub(crate) mod queue;
pub(crate) mod scheduler;
pub(crate) mod single_node;
pub(crate) mod slurm;
mod spawn;
pub(crate) mod transport;
pub(crate) mod workers;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

pub(crate) use self::flux::instance::current as flux_instance;
#[cfg(test)]
pub(crate) use self::flux::TEMPLATE as FLUX_TEMPLATE;
use self::scheduler::Scheduler;
pub(crate) use self::slurm::allocation::{current as slurm_allocation, SlurmAllocation};
#[cfg(test)]
pub(crate) use self::slurm::TEMPLATE as SLURM_TEMPLATE;
use self::transport::Transport;
use crate::future::{Dependency, Slot};
use crate::resources::Resources;
use crate::scheduler::SchedulerKind;
use crate::store::{ResultRecord, TaskPaths};
use crate::task::TaskSpec;

/// The one place a scheduler is chosen: `kind`'s dialect and client, its commands run
/// through `transport`.
pub(crate) fn scheduler_for(kind: SchedulerKind, transport: Arc<dyn Transport>) -> Scheduler {
    match kind {
        SchedulerKind::Slurm => Scheduler {
            dialect: &slurm::DIALECT,
            client: Box::new(slurm::SlurmClient::new(transport)),
        },
        SchedulerKind::Flux => Scheduler {
            dialect: &flux::DIALECT,
            client: Box::new(flux::FluxClient { transport }),
        },
    }
}

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One task handed to a backend: its task file is written, its inputs have finished.
pub(crate) struct Job {
    pub spec: Arc<TaskSpec>,
    pub paths: TaskPaths,
    pub resources: Resources,
    pub slot: Arc<Slot>,
    /// The task's inputs: for queue backends those still unfinished when the task was handed
    /// over; for the others every input, all finished successfully.
    pub deps: Vec<(String, Dependency)>,
    /// Called when the task starts (with the scheduler's job id, if any); reports the
    /// `Started` event once.
    pub started: Box<dyn Fn(Option<String>) + Send + Sync>,
    /// Where the task's published result goes, exactly once.
    pub done: Done,
    /// Give the command the driver's standard input (`Command::stdin_inherit`; SingleNode).
    pub stdin: bool,
}

type Finish = Box<dyn FnOnce(ResultRecord) + Send>;

/// Hands a task's record to the engine, from whichever thread ends the task; the first
/// record wins, later ones are dropped. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Done(Arc<Mutex<Option<Finish>>>);

impl Done {
    pub(crate) fn new(finish: impl FnOnce(ResultRecord) + Send + 'static) -> Done {
        Done(Arc::new(Mutex::new(Some(Box::new(finish)))))
    }

    /// Delivers `record` unless a record was delivered already; tells whether it was.
    pub(crate) fn finish(&self, record: ResultRecord) -> bool {
        let finish = self.0.lock().unwrap().take();
        match finish {
            Some(f) => {
                f(record);
                true
            }
            None => false,
        }
    }

    /// Whether a record was delivered.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.lock().unwrap().is_none()
    }
}

/// What the engine does with running tasks when the last handle of an executor is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropPolicy {
    /// Wait for every task to finish (local processes would die with the driver).
    Wait,
    /// Leave queued jobs to the scheduler; results appear in the cache directory.
    #[allow(dead_code)] // the queue backends' policy
    Detach,
}

/// One kind of place where tasks run.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The name used in messages ("single-node", "slurm"...).
    fn name(&self) -> &'static str;

    /// Checks that the backend can honour `resources`: `Err` names what it cannot do; `Ok`
    /// lists keys that mean nothing here (accepted, reported once as a warning).
    fn check(&self, resources: &Resources) -> Result<Vec<&'static str>, String>;

    /// Runs the task to its end and hands its published result to `job.done`, either from
    /// the returned future or from the backend's own threads (then the future may complete
    /// at once, and nothing on the engine's runtime wakes up when the task ends). Must honour
    /// `job.slot.cancel` and never hang: every way a task can end reaches `job.done`.
    fn run(self: Arc<Self>, job: Job) -> BoxFuture<()>;

    /// Whether the backend queues a task behind its unfinished inputs (Slurm's afterok)
    /// instead of the engine starting it once they have finished.
    fn queues_dependencies(&self) -> bool {
        false
    }

    /// Gives the backend the executor's event sink (for warnings from its own threads) and
    /// the count of submitted tasks still on their way to `run` (queue backends wait for
    /// them before submitting, so a `map` becomes one job array).
    fn attach(&self, _events: crate::event::Events, _preparing: Arc<AtomicUsize>) {}

    /// The scheduler job name shared by this executor's jobs, if it has one.
    fn job_name(&self) -> Option<&str> {
        None
    }

    /// The job script that would run `spec`, for queue backends (`pitch render`).
    fn render(
        &self,
        _spec: &crate::task::TaskSpec,
        _resources: &Resources,
        _paths: &TaskPaths,
    ) -> Option<Result<String, crate::error::TaskError>> {
        None
    }

    /// The job script of the backend's pilot jobs (`block_allocation` on a queue backend).
    fn render_pilots(&self) -> Option<Result<String, crate::error::TaskError>> {
        None
    }

    /// Whether the engine writes the task's directory and task file before `run` (a pool
    /// hands function tasks to its workers in memory and keeps results in the result log).
    fn writes_task_file(&self, _spec: &TaskSpec) -> bool {
        true
    }

    /// Bytes that a content key of a `kind` task must include besides the task itself: what
    /// else its value depends on here (a pool's init function). `None` for most backends.
    fn key_salt(&self, _kind: &crate::task::TaskKind) -> Option<&[u8]> {
        None
    }

    /// Why a function task asking for `resources` (merged onto the executor's defaults) would
    /// be refused beyond [`Backend::check`]: a pool's workers or pilots are sized once.
    fn refuses_function(&self, _resources: &Resources) -> Option<String> {
        None
    }

    /// Whether `error` ended the task because the worker or pilot it ran in was lost (not the
    /// task's own failure, so `max_retries` retries it without `retry_on`). `false` for
    /// backends where the process that died is the task's own.
    fn lost_worker(&self, _spec: &crate::task::TaskSpec, _error: &crate::error::TaskError) -> bool {
        false
    }

    /// Called when this driver has taken over task `key` from another driver of the cache
    /// directory (`crate::lock`) that was alive at some point before `since`: a queue reads
    /// its journal again, to re-attach to the job that driver submitted.
    fn taken_over(&self, _key: &crate::task::TaskKey, _since: std::time::Instant) {}

    /// Called once the last handle of the executor is dropped and its drop policy has run:
    /// stops what the backend keeps alive between tasks (pool workers). `wait` is false when
    /// tasks are still unfinished (a detach): then it must not block on them.
    fn close(&self, _wait: bool) {}

    /// What dropping the executor does.
    fn drop_policy(&self) -> DropPolicy {
        DropPolicy::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TaskError;

    #[test]
    fn done_delivers_the_first_record_only() {
        let (tx, rx) = std::sync::mpsc::channel();
        let done = Done::new(move |r: ResultRecord| tx.send(r).unwrap());
        assert!(!done.is_finished());
        assert!(done.clone().finish(ResultRecord {
            outcome: Ok(vec![])
        }));
        assert!(done.is_finished());
        assert!(!done.finish(ResultRecord {
            outcome: Err(TaskError::Cancelled)
        }));
        assert_eq!(rx.recv().unwrap().outcome, Ok(vec![]));
        assert!(
            rx.try_recv().is_err(),
            "the closure is gone after the first record"
        );
    }
}
