//! Retries (issue 16): who caused a failed attempt, whether `max_retries` and `retry_on`
//! allow another and after which wait, and the engine running attempts one after another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Engine, Preparing};
use crate::backend::Done;
use crate::error::{Attempt, TaskError};
use crate::event::EventKind;
use crate::future::{Dependency, Slot};
use crate::resources::{Resources, RetryOn};
use crate::store::ResultRecord;
use crate::task::TaskSpec;

/// What a task's attempts share: what hands it to the backend again, and the attempts made.
pub(super) struct Attempts {
    pub(super) spec: Arc<TaskSpec>,
    pub(super) deps: Vec<(String, Dependency)>,
    pub(super) resources: Resources,
    pub(super) stdin: bool,
    /// `Executor::with_fresh`: the earlier result was set aside before the first attempt.
    pub(super) fresh: bool,
    /// When the task was submitted (the `Finished` event's runtime).
    pub(super) started_at: Instant,
    /// The failed attempts retried so far.
    pub(super) made: Vec<Attempt>,
}

/// Who caused a failure, for retries.
#[derive(Debug, PartialEq)]
enum Cause {
    /// Not the task: preempted, a failed node or boot, a job gone without a result.
    Scheduler,
    /// The task saved a checkpoint and asked to be resubmitted.
    Checkpoint,
    /// The task itself, of this kind (retried when `retry_on` names it).
    Task(RetryOn),
    /// Never retried: a cancel, a failed input, a refusal, a bad task file, the cache.
    Final,
}

fn cause(error: &TaskError) -> Cause {
    use crate::scheduler::EndReason as R;
    match error {
        TaskError::Checkpointed { .. } => Cause::Checkpoint,
        TaskError::Scheduler { state, .. } => match state {
            R::Preempted | R::NodeFail | R::BootFail => Cause::Scheduler,
            R::Timeout => Cause::Task(RetryOn::Timeout),
            R::OutOfMemory => Cause::Task(RetryOn::OutOfMemory),
            R::Cancelled => Cause::Task(RetryOn::Cancelled),
            // Its processes failed, or it completed, without a result.
            R::Failed | R::Completed => Cause::Task(RetryOn::WorkerDied),
            R::Deadline => Cause::Final,
            // Gone without a trace (`UNKNOWN`), or a state pitch has no name for.
            R::Unknown(_) => Cause::Scheduler,
        },
        TaskError::Panicked { .. } => Cause::Task(RetryOn::Panic),
        TaskError::Failed { .. } => Cause::Task(RetryOn::Error),
        TaskError::CommandFailed { .. } => Cause::Task(RetryOn::ExitCode),
        TaskError::Signaled { .. } => Cause::Task(RetryOn::Signal),
        TaskError::WorkerDied { .. } => Cause::Task(RetryOn::WorkerDied),
        TaskError::Timeout { .. } => Cause::Task(RetryOn::Timeout),
        TaskError::Rank { cause: inner, .. } => cause(inner),
        _ => Cause::Final,
    }
}

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// The wait before the first retry when `retry_backoff` is not set.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(5);

/// The wait before the next attempt when attempt `number` (1 for the first) failed for
/// `cause` and the task's resources allow another; `None`: the task ends with it.
fn retry_delay(resources: &Resources, cause: Cause, number: u32) -> Option<Duration> {
    if number > resources.max_retries.unwrap_or(0) {
        return None;
    }
    let backoff = || {
        let base = resources.retry_backoff.unwrap_or(DEFAULT_BACKOFF);
        base.saturating_mul(1u32 << (number - 1).min(20))
            .min(MAX_BACKOFF)
    };
    match cause {
        Cause::Final => None,
        // It stopped where it can go on: at once.
        Cause::Checkpoint => Some(Duration::ZERO),
        Cause::Scheduler => Some(backoff()),
        Cause::Task(kind) => resources.retry_on.contains(&kind).then(backoff),
    }
}

impl Engine {
    /// Runs one attempt of a task; its `Done` ends the task, or (a failure `max_retries` and
    /// `retry_on` allow to retry) spawns the next attempt after the backoff.
    pub(super) fn attempt(
        self: Arc<Self>,
        slot: Arc<Slot>,
        mut attempts: Attempts,
        preparing: Preparing,
    ) -> crate::backend::BoxFuture<()> {
        Box::pin(async move {
            let began = Instant::now();
            let engine = self.clone();
            let done_slot = slot.clone();
            let spec = attempts.spec.clone();
            let deps = attempts.deps.clone();
            let (resources, stdin) = (attempts.resources.clone(), attempts.stdin);
            let done = Done::new(move |record: ResultRecord| {
                let number = attempts.made.len() as u32 + 1;
                if let Err(error) = &record.outcome {
                    let cause = match engine.backend.lost_worker(&attempts.spec, error) {
                        true => Cause::Scheduler,
                        false => cause(error),
                    };
                    if let Some(delay) = retry_delay(&attempts.resources, cause, number) {
                        let attempt = Attempt {
                            number,
                            job_id: done_slot.job_id(),
                            error: error.clone(),
                            duration: began.elapsed(),
                        };
                        return engine.retry(done_slot, attempts, attempt, delay);
                    }
                }
                let paths = engine.store.task(&done_slot.key);
                if attempts.fresh {
                    paths.settle_rerun(record.outcome.is_ok());
                }
                let record = match record.outcome {
                    // After retries, a failure that could have been retried had any been
                    // left is listed with the attempts before it; a cancel or a failure that
                    // is never retried stays as it is.
                    Err(error) if !attempts.made.is_empty() && cause(&error) != Cause::Final => {
                        attempts.made.push(Attempt {
                            number,
                            job_id: done_slot.job_id(),
                            error,
                            duration: began.elapsed(),
                        });
                        // The final error lists the attempts (the last attempt's record in
                        // the cache directory stays as its backend wrote it).
                        ResultRecord {
                            outcome: Err(TaskError::GaveUp {
                                attempts: attempts.made,
                            }),
                        }
                    }
                    outcome => ResultRecord { outcome },
                };
                engine.finish(&done_slot, record, attempts.started_at, false);
            });
            if let Some(record) = self
                .execute(
                    slot,
                    spec,
                    deps,
                    (resources, stdin),
                    preparing,
                    done.clone(),
                )
                .await
            {
                done.finish(record);
            }
        })
    }

    /// Records a failed attempt, tells the reporters, and starts the next attempt after
    /// `delay` (a cancel meanwhile ends the task as cancelled).
    fn retry(
        self: Arc<Self>,
        slot: Arc<Slot>,
        mut attempts: Attempts,
        attempt: Attempt,
        delay: Duration,
    ) {
        let paths = self.store.task(&slot.key);
        if let Err(e) = paths.record_attempt(&attempt) {
            self.events.emit(EventKind::Warning {
                message: format!(
                    "could not record attempt {} of task {}: {e}",
                    attempt.number, slot.key
                ),
            });
        }
        self.events.emit(EventKind::Retrying {
            key: slot.key.to_string(),
            name: slot.name.clone(),
            attempt: attempt.clone(),
            delay,
        });
        attempts.made.push(attempt);
        // The ended attempt's cancel hooks (its process, its job) have nothing left to stop.
        slot.cancel.clear_hooks();
        let engine = self.clone();
        self.runtime.spawn(async move {
            let cancelled = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = slot.cancel.cancelled() => true,
            };
            if cancelled || slot.cancel.is_cancelled() {
                let record = ResultRecord {
                    outcome: Err(TaskError::Cancelled),
                };
                let record = engine.store.task(&slot.key).publish_result(record);
                return engine.finish(&slot, record, attempts.started_at, false);
            }
            let preparing = Preparing::new(&engine.preparing);
            engine.attempt(slot, attempts, preparing).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::command::Command;
    use crate::SingleNodeExecutor;

    #[test]
    fn retries_follow_the_cause_and_back_off() {
        use crate::scheduler::EndReason;
        let sched = |state| TaskError::Scheduler {
            job_id: "7".into(),
            state,
            detail: String::new(),
        };
        assert_eq!(cause(&sched(EndReason::NodeFail)), Cause::Scheduler);
        assert_eq!(cause(&sched(EndReason::Preempted)), Cause::Scheduler);
        assert_eq!(cause(&sched(EndReason::forgotten())), Cause::Scheduler);
        assert_eq!(
            cause(&sched(EndReason::Timeout)),
            Cause::Task(RetryOn::Timeout)
        );
        assert_eq!(
            cause(&sched(EndReason::Cancelled)),
            Cause::Task(RetryOn::Cancelled)
        );
        assert_eq!(cause(&TaskError::Cancelled), Cause::Final);
        let rank = TaskError::Rank {
            rank: 1,
            size: 2,
            cause: Box::new(TaskError::Panicked {
                message: "x".into(),
                location: None,
            }),
        };
        assert_eq!(cause(&rank), Cause::Task(RetryOn::Panic));
        let none = Resources::new();
        assert_eq!(retry_delay(&none, Cause::Scheduler, 1), None, "default 0");
        let two = Resources::new()
            .max_retries(2)
            .retry_backoff(Duration::from_secs(3));
        assert_eq!(
            retry_delay(&two, Cause::Scheduler, 1),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_delay(&two, Cause::Scheduler, 2),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            retry_delay(&two, Cause::Scheduler, 3),
            None,
            "2 retries made"
        );
        assert_eq!(retry_delay(&two, Cause::Task(RetryOn::Timeout), 1), None);
        assert_eq!(
            retry_delay(&two, Cause::Checkpoint, 1),
            Some(Duration::ZERO)
        );
        let on = two.clone().retry_on([RetryOn::Timeout]);
        assert_eq!(
            retry_delay(&on, Cause::Task(RetryOn::Timeout), 1),
            Some(Duration::from_secs(3))
        );
        let long = Resources::new().max_retries(40);
        assert_eq!(retry_delay(&long, Cause::Scheduler, 30), Some(MAX_BACKOFF));
    }

    /// A command that fails twice then succeeds, retried on its exit code: one future, one
    /// success, two attempts recorded (events, the attempts file); one that always fails
    /// ends with `GaveUp` listing every attempt.
    #[test]
    fn retry_on_reruns_a_failing_task_until_it_succeeds_or_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let exe = SingleNodeExecutor::builder()
            .max_cores(2)
            .cache_directory(dir.path().join("cache"))
            .max_retries(2)
            .retry_on([RetryOn::ExitCode])
            .resources(Resources::new().retry_backoff(Duration::from_millis(50)))
            .reporter(move |e: &crate::Event| seen.lock().unwrap().push(e.kind.clone()))
            .build()
            .unwrap();
        let runs = dir.path().join("runs");
        let flaky = Command::new("sh").args([
            "-c",
            &format!("echo x >> {0}; test $(wc -l < {0}) -ge 3", runs.display()),
        ]);
        let f = exe.submit_command(flaky);
        assert_eq!(f.result().unwrap().exit_code, 0);
        assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 3);
        let attempts = exe
            .engine()
            .store
            .task(&f.key().parse().unwrap())
            .attempts();
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert_eq!(attempts[1].number, 2);
        assert!(matches!(
            attempts[0].error,
            TaskError::CommandFailed { code: 1, .. }
        ));
        let retrying = events
            .lock()
            .unwrap()
            .iter()
            .filter(|k| matches!(k, EventKind::Retrying { .. }))
            .count();
        assert_eq!(retrying, 2);

        let never = exe.submit_command(Command::new("sh").args(["-c", "exit 4"]));
        match never.result() {
            Err(TaskError::GaveUp { attempts }) => {
                assert_eq!(attempts.len(), 3, "{attempts:?}");
                assert!(attempts
                    .iter()
                    .all(|a| matches!(a.error, TaskError::CommandFailed { code: 4, .. })));
                let e = TaskError::GaveUp { attempts };
                assert!(matches!(
                    e.final_cause(),
                    TaskError::CommandFailed { code: 4, .. }
                ));
                let report = e.report().to_string();
                assert!(report.contains("attempt 3 ("), "{report}");
            }
            other => panic!("{other:?}"),
        }
        // Without retry_on, the same failure is final at once.
        let plain = exe
            .with_resources(Resources::new().retry_on([RetryOn::Timeout]))
            .submit_command(Command::new("sh").args(["-c", "exit 5"]));
        assert!(matches!(
            plain.result(),
            Err(TaskError::CommandFailed { code: 5, .. })
        ));
    }

    /// A cancel while a task waits for its next attempt ends it as cancelled, at once.
    #[test]
    fn a_cancel_during_the_backoff_ends_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let exe = SingleNodeExecutor::builder()
            .cache_directory(dir.path())
            .max_retries(3)
            .retry_on([RetryOn::ExitCode])
            .resources(Resources::new().retry_backoff(Duration::from_secs(60)))
            .build()
            .unwrap();
        let f = exe.submit_command(Command::new("false"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while exe
            .engine()
            .store
            .task(&f.key().parse().unwrap())
            .attempts()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "no attempt recorded");
            std::thread::sleep(Duration::from_millis(20));
        }
        let cancelled = Instant::now();
        f.cancel();
        assert_eq!(f.result().unwrap_err(), TaskError::Cancelled);
        assert!(
            cancelled.elapsed() < Duration::from_secs(10),
            "{:?}",
            cancelled.elapsed()
        );
    }
}
