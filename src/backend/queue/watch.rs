//! Watching a submitted job to its end (through the poller), and cancelling jobs, close
//! together ones in one call.

use tokio::sync::oneshot;

use super::poll::{Watch, WatchEnd};
use super::Queue;
use crate::backend::scheduler::JobRef;
use crate::backend::Job;
use crate::error::TaskError;
use crate::store::ResultRecord;

impl Queue {
    /// Hands the task to the poller and waits for its end, a cancel, or a failed input.
    pub(super) async fn watch(&self, job: &Job, job_ref: JobRef, reattached: bool) -> WatchEnd {
        (job.started)(Some(job_ref.to_string()));
        let (tx, rx) = oneshot::channel();
        self.watches.lock().unwrap().insert(
            job.spec.key,
            Watch::new(
                job_ref,
                job.paths.clone(),
                job.spec.clone(),
                reattached,
                job.resources.run_time_max,
                tx,
            ),
        );
        self.poke.notify_one();
        let failed_input = async {
            for (input, dep) in &job.deps {
                let outcome = dep.slot.wait_async().await;
                if let Err(cause) = outcome.as_ref() {
                    return TaskError::dependency_failed(
                        input,
                        &dep.slot.name,
                        &dep.slot.key,
                        cause,
                    );
                }
            }
            std::future::pending().await
        };
        // An input still unresolved while this job cannot run is being retried.
        let input_retried = || job.deps.iter().any(|(_, dep)| dep.slot.outcome().is_none());
        let interrupted = tokio::select! {
            end = rx => return match end.unwrap_or(WatchEnd::Lost) {
                WatchEnd::Stuck(_) if input_retried() => WatchEnd::Resubmit,
                WatchEnd::Stuck(reason) => WatchEnd::Done(job.paths.publish_result(ResultRecord {
                    outcome: Err(TaskError::Rejected {
                        backend: self.scheduler.dialect.name().into(),
                        reason,
                    }),
                })),
                // Flux ends a job whose `afterok` input failed (an exception): it never ran.
                WatchEnd::Done(ResultRecord { outcome: Err(TaskError::Scheduler { .. }) })
                    if !reattached && input_retried() =>
                {
                    WatchEnd::Resubmit
                }
                end => end,
            },
            _ = job.slot.cancel.cancelled() => TaskError::Cancelled,
            e = failed_input => e,
        };
        self.watches.lock().unwrap().remove(&job.spec.key);
        self.cancel(job_ref).await;
        WatchEnd::Done(job.paths.publish_result(ResultRecord {
            outcome: Err(interrupted),
        }))
    }

    /// Cancels a job; cancels requested close together go out as one call.
    pub(super) async fn cancel(&self, job: JobRef) {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut queue = self.cancels.lock().unwrap();
            queue.push((job, tx));
            queue.len() == 1
        };
        if first {
            tokio::time::sleep(self.cfg.batch_window).await;
            let batch: Vec<(JobRef, oneshot::Sender<()>)> =
                std::mem::take(&mut *self.cancels.lock().unwrap());
            for chunk in batch.chunks(500) {
                let jobs: Vec<JobRef> = chunk.iter().map(|(j, _)| *j).collect();
                if let Err(e) = self.scheduler.client.cancel(&jobs).await {
                    self.warn(format!("cancelling jobs failed: {e}"));
                }
            }
            for (_, tx) in batch {
                let _ = tx.send(());
            }
        }
        let _ = rx.await;
    }
}
