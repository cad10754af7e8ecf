//! A task queued on the pool ([`SingleNode::start`]) and its cancel: a queued task ends at
//! once, a running one gets SIGTERM and then SIGKILL, a `flux run` child's job is cancelled
//! through Flux; and a task whose work was dropped without a record ([`Unfinished`]).

use std::sync::Arc;
use std::time::Duration;

use super::{Launcher, SingleNode};
use crate::backend::child::{CancelOutcome, Ticket, KILL_GRACE};
use crate::backend::pool::Work;
use crate::backend::{Done, Job};
use crate::error::{LaunchErrorKind, TaskError};
use crate::store::{ResultRecord, TaskPaths};

impl SingleNode {
    /// Queues the task on the pool. The pool thread that runs it delivers its record; a
    /// cancel is handled on the cancelling thread: a queued task ends at once, a running one
    /// gets SIGTERM and, [`KILL_GRACE`] later, SIGKILL. Nothing on the engine's runtime waits.
    pub(super) fn start(self: Arc<Self>, job: Job) {
        let paths = job.paths.clone();
        let slot = job.slot.clone();
        let done = job.done.clone();
        if slot.cancel.is_cancelled() {
            done.finish(cancelled(&paths));
            return;
        }
        let ticket = Arc::new(Ticket::default());
        let me = self.clone();
        let t = ticket.clone();
        let skip = ticket.clone();
        let unfinished = Unfinished {
            done: done.clone(),
            paths: paths.clone(),
        };
        let pushed = self.pool.push(Work {
            slots: job.resources.slots(),
            skip: Box::new(move || skip.cancel_requested()),
            run: Box::new(move || {
                let record = me.run_blocking(job, &t);
                unfinished.done.finish(record);
            }),
        });
        if let Err(detail) = pushed {
            done.finish(pitch_failed(&paths, detail));
            return;
        }
        slot.cancel
            .on_cancel(Box::new(move || match ticket.cancel() {
                CancelOutcome::NotStarted => {
                    done.finish(cancelled(&paths));
                    self.pool.nudge();
                }
                // A Flux job submitted through libflux was cancelled: Flux stops its tasks
                // (SIGTERM, then SIGKILL), and its pool thread reports the end.
                CancelOutcome::Signalled if ticket.is_remote() => {}
                CancelOutcome::Signalled => {
                    // SIGKILL if the task outlives the grace period; the pool thread watching
                    // it reports the cancellation when it ends.
                    let killer = ticket.clone();
                    let flux = matches!(self.launcher, Launcher::Flux { .. });
                    let spawned =
                        std::thread::Builder::new()
                            .name("pitch-kill".into())
                            .spawn(move || {
                                if flux && !killer.wait_ended(FLUX_CANCEL_AFTER) {
                                    cancel_flux_job(&killer);
                                }
                                if !killer.wait_ended(KILL_GRACE) {
                                    killer.kill();
                                }
                            });
                    if spawned.is_err() {
                        ticket.kill();
                    }
                }
                CancelOutcome::Ended => {}
            }));
    }
}

/// How long a cancelled `flux run` gets to end after the SIGTERM it forwards to the job's
/// tasks, before the job itself is cancelled.
const FLUX_CANCEL_AFTER: Duration = Duration::from_millis(500);
/// How long pitch waits for Flux to end a cancelled job whose tasks ignore SIGTERM (job-exec
/// sends SIGKILL 5 s after the SIGTERM), before it kills `flux run` itself.
const FLUX_KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Cancels the Flux job a `flux run` child attached to. Killing `flux run` would leave the
/// job running in the instance (its tasks are not the child's processes), so this uses
/// `flux job attach`'s ctrl-C ctrl-C: two SIGINTs within 2 s cancel the job (Flux then sends
/// its tasks SIGTERM and, 5 s later, SIGKILL), and `flux run` exits when it has ended.
fn cancel_flux_job(ticket: &Ticket) {
    ticket.signal(libc::SIGINT);
    // Two signals sent at once may arrive as one.
    std::thread::sleep(Duration::from_millis(200));
    ticket.signal(libc::SIGINT);
    ticket.wait_ended(FLUX_KILL_TIMEOUT);
}

/// Ends a task whose work was dropped without delivering a record (skipped after a cancel, or
/// a panic on the pool thread), so that its future never hangs.
struct Unfinished {
    done: Done,
    paths: TaskPaths,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.done.is_finished() {
            return;
        }
        let record = if std::thread::panicking() {
            pitch_failed(&self.paths, "the thread running the task panicked".into())
        } else {
            cancelled(&self.paths)
        };
        self.done.finish(record);
    }
}

/// Publishes the failure of pitch itself (not of the task) to start or watch the task.
pub(super) fn pitch_failed(paths: &TaskPaths, detail: String) -> ResultRecord {
    paths.publish_result(ResultRecord {
        outcome: Err(TaskError::Launch {
            what: "pitch".into(),
            kind: LaunchErrorKind::Other,
            detail,
        }),
    })
}

pub(super) fn cancelled(paths: &TaskPaths) -> ResultRecord {
    paths.publish_result(ResultRecord {
        outcome: Err(TaskError::Cancelled),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::task::TaskKey;

    fn unfinished(dir: &std::path::Path) -> (Unfinished, std::sync::mpsc::Receiver<ResultRecord>) {
        let store = Store::open(dir, false, Default::default()).unwrap();
        let paths = store.task(&TaskKey::explicit("dropped"));
        paths.create().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let done = Done::new(move |r| tx.send(r).unwrap());
        (Unfinished { done, paths }, rx)
    }

    #[test]
    fn work_dropped_without_a_record_still_ends_its_task() {
        let dir = tempfile::tempdir().unwrap();
        // Dropped without running (skipped after a cancel): cancelled.
        let (guard, rx) = unfinished(dir.path());
        drop(guard);
        assert_eq!(rx.recv().unwrap().outcome, Err(TaskError::Cancelled));
        // A panic on the thread that runs it: a launch error, not a hang.
        let (guard, rx) = unfinished(dir.path());
        let _ = std::thread::spawn(move || {
            let _guard = guard;
            panic!("a bug");
        })
        .join();
        match rx.recv().unwrap().outcome {
            Err(TaskError::Launch { detail, .. }) => assert!(detail.contains("panicked")),
            other => panic!("{other:?}"),
        }
        // Delivered already: nothing more.
        let (guard, rx) = unfinished(dir.path());
        guard.done.finish(ResultRecord {
            outcome: Ok(vec![]),
        });
        drop(guard);
        assert_eq!(rx.recv().unwrap().outcome, Ok(vec![]));
        assert!(rx.try_recv().is_err());
    }
}
