//! A task's way through [`Queue`]: the `max_jobs` cap, re-attaching to an earlier run's
//! job, waiting for its inputs' jobs (`afterok`), the task's files shipped, its submission
//! handed to the batch window, and watching it to its end (again, behind a retried input).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::poll::WatchEnd;
use super::state::launch_failed;
use super::submit::Pending;
use super::Queue;
use crate::backend::scheduler::{lookup_state, JobRef, JobState};
use crate::backend::Job;
use crate::engine::Preparing;
use crate::error::TaskError;
use crate::scheduler::EndReason;
use crate::store::{ResultRecord, TaskPaths};
use crate::task::{ArgSlot, TaskKind};

impl Queue {
    /// Waits until every unfinished input has a job id (or has finished); returns the ids to
    /// queue behind, or the error of an input that failed.
    async fn wait_for_inputs(&self, job: &Job, stale: &[JobRef]) -> Result<Vec<JobRef>, TaskError> {
        let mut after = Vec::new();
        for (input, dep) in &job.deps {
            loop {
                let notified = self.jobs_changed.notified();
                if let Some(outcome) = dep.slot.outcome() {
                    match outcome.as_ref() {
                        Ok(_) => break,
                        Err(cause) => {
                            return Err(TaskError::dependency_failed(
                                input,
                                &dep.slot.name,
                                &dep.slot.key,
                                cause,
                            ))
                        }
                    }
                }
                let job_of_input = self
                    .jobs
                    .lock()
                    .unwrap()
                    .get(&dep.slot.key)
                    .copied()
                    .filter(|j| !stale.contains(j));
                if let Some(j) = job_of_input {
                    // A job (array element) running several packed tasks fails when any of
                    // them fails, so `afterok` on it would also hold back (Slurm: pending
                    // forever; Flux: cancel) the dependents of its tasks that succeeded: a
                    // dependent of a packed task waits for that task's result instead (the
                    // loop ends on its outcome).
                    if !self.packs.lock().unwrap().contains(&j) {
                        // Once per job: the same future passed twice must not name its job
                        // twice (Flux fails a job with a repeated `afterok`, "Failed to
                        // remove dependency", or refuses it when the job has ended).
                        if !after.contains(&j) {
                            after.push(j);
                        }
                        break;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = dep.slot.wait_async() => {}
                    _ = job.slot.cancel.cancelled() => return Err(TaskError::Cancelled),
                }
            }
        }
        Ok(after)
    }

    pub(super) async fn run_job(self: Arc<Self>, job: Job, arriving: Preparing) -> ResultRecord {
        let paths = job.paths.clone();
        let fail = |e: TaskError| paths.publish_result(ResultRecord { outcome: Err(e) });
        self.ensure_poller();
        let mut arriving = Some(arriving);
        let _permit = match &self.queue_cap {
            Some(sem) => Some(match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Waiting for `max_jobs` to let it in is not being on its way: the batch
                    // window must not wait for it (the permits free as jobs end).
                    drop(arriving.take());
                    let p = tokio::select! {
                        p = sem.clone().acquire_owned() => p.expect("never closed"),
                        _ = job.slot.cancel.cancelled() => return fail(TaskError::Cancelled),
                    };
                    arriving = Some(Preparing::new(&self.arriving));
                    p
                }
            }),
            None => None,
        };
        // Re-attach to a job a previous run submitted, unless that attempt is over and
        // failed (then the task runs again: a rerun reruns failures).
        let listed = self.recover().await;
        let known = self.journaled.lock().unwrap().get(&job.spec.key).copied();
        if let Some(old) = known {
            let state = listed.map(|states| lookup_state(states, old));
            if let Some(Some(JobState::Stuck(_))) = state {
                // Queued by an earlier run for a reason that never clears (an input's job
                // that failed then): that job goes, the task is submitted anew.
                self.cancel(old).await;
            } else if !self.attempt_failed(&job) {
                if let Some(Some(JobState::Active(_))) = state {
                    // Still queued or running: dependents may queue behind it.
                    self.jobs.lock().unwrap().insert(job.spec.key, old);
                    self.jobs_changed.notify_waiters();
                }
                arriving = None;
                match self.watch(&job, old, true).await {
                    WatchEnd::Done(record) => return record,
                    WatchEnd::Lost | WatchEnd::Resubmit | WatchEnd::Stuck(_) => {}
                }
            }
        } else if let Some(record) = self.finished_command(&job) {
            return record;
        }
        // An earlier attempt's leftovers (a failed result, an exit file) must not stand for
        // the new job's.
        job.paths.clear_failed_attempt(job.spec.ranks);
        // The input jobs an attempt of this run queued behind, which failed since.
        let mut stale = Vec::new();
        loop {
            // An input's submission may wait in the batch window: not for this task.
            if !job.deps.is_empty() {
                arriving = None;
            }
            let after = match self.wait_for_inputs(&job, &stale).await {
                Ok(a) => a,
                Err(e) => return fail(e),
            };
            if arriving.is_none() {
                arriving = Some(Preparing::new(&self.arriving));
            }
            match self
                .submit_and_watch(&job, after.clone(), &paths, &mut arriving)
                .await
            {
                WatchEnd::Resubmit => {
                    job.paths.clear_failed_attempt(job.spec.ranks);
                    stale.extend(after);
                }
                WatchEnd::Done(record) => return record,
                WatchEnd::Lost | WatchEnd::Stuck(_) => unreachable!("watch settles these"),
            }
        }
    }

    /// Submits the task behind the jobs `after` and watches it to its end.
    async fn submit_and_watch(
        self: &Arc<Self>,
        job: &Job,
        after: Vec<JobRef>,
        paths: &TaskPaths,
        arriving: &mut Option<Preparing>,
    ) -> WatchEnd {
        let fail =
            |e: TaskError| WatchEnd::Done(paths.publish_result(ResultRecord { outcome: Err(e) }));
        let exe = match &job.spec.kind {
            TaskKind::Function { .. } => match self.job_exe().await {
                Ok(p) => Some(p),
                Err(e) => return fail(e),
            },
            TaskKind::Command(_) => None,
        };
        if let Err(e) = self.ship_task(job).await {
            return fail(e);
        }
        let warned = job.resources.checkpoint_grace.is_some();
        let body = self.task_body(&job.spec, paths, exe.as_deref(), warned);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().push(Pending {
            key: job.spec.key,
            body,
            header: self.header(&job.resources, job.spec.ranks, job.spec.threads),
            after,
            reply: tx,
        });
        *arriving = None;
        self.ensure_flusher();
        let submitted = match rx.await {
            Ok(r) => r,
            Err(_) => Err(launch_failed(
                "the job submission",
                "the submission was dropped",
            )),
        };
        let job_ref = match submitted {
            Ok(j) => j,
            // The scheduler refused the dependency because an input's job already failed
            // (Flux: "afterok: job N failed or was canceled"; Slurm: "Job dependency
            // problem") before the poller noticed: the task fails with its input's error.
            Err(e) if refused_dependency(&e, job) => {
                return match self.failed_input(job).await {
                    Some(failed) => fail(failed),
                    // The input is being retried (or succeeded since): queue behind its
                    // next job.
                    None => WatchEnd::Resubmit,
                };
            }
            // Refused (or never submitted): recorded as the task's failure, so that `pitch
            // status` shows it failed, not unfinished; a rerun runs it again, as any failure.
            Err(e) => return fail(e),
        };
        match self.watch(job, job_ref, false).await {
            WatchEnd::Lost => fail(TaskError::Scheduler {
                job_id: job_ref.to_string(),
                state: EndReason::forgotten(),
                detail: "the job left the queue without a result".into(),
            }),
            end => end,
        }
    }

    /// Waits for the task's inputs to end: the error naming the first that failed, `None`
    /// when all succeeded (or the task was cancelled meanwhile: `Cancelled`).
    async fn failed_input(&self, job: &Job) -> Option<TaskError> {
        for (input, dep) in &job.deps {
            let outcome = tokio::select! {
                o = dep.slot.wait_async() => o,
                _ = job.slot.cancel.cancelled() => return Some(TaskError::Cancelled),
            };
            if let Err(cause) = outcome.as_ref() {
                return Some(TaskError::dependency_failed(
                    input,
                    &dep.slot.name,
                    &dep.slot.key,
                    cause,
                ));
            }
        }
        None
    }

    /// Before a task is submitted: removes what an earlier run of it left (a failed result,
    /// a command's exit file), which the poller would otherwise take for the new job's (a
    /// finished result stays: no failure may replace it); where the jobs run elsewhere, sends
    /// the task file and the results of its finished inputs.
    async fn ship_task(&self, job: &Job) -> Result<(), TaskError> {
        let paths = &job.paths;
        let mut stale = vec![paths.exit_file()];
        if paths.finished_result().is_none() {
            stale.push(paths.result_file());
        }
        // Here through the task directory's checked handle (never through a link).
        paths.remove_exit_file();
        if paths.finished_result().is_none() {
            paths.clear_failed_attempt(1);
        }
        if !self.transport.is_remote() {
            return Ok(());
        }
        self.transport.remove(&stale).await;
        let mut files = vec![paths.task_file()];
        // The inputs' results the worker reads, those that exist here (inputs still running
        // write theirs where the jobs run).
        if let TaskKind::Function { args, .. } = &job.spec.kind {
            for arg in args {
                if let ArgSlot::Ref { key, .. } = arg {
                    let result = self.store.task(key).result_file();
                    if result.exists() && !files.contains(&result) {
                        files.push(result);
                    }
                }
            }
        }
        self.transport
            .upload(&files, true)
            .await
            .map_err(|e| launch_failed("the task's files", e))
    }
}

fn refused_dependency(e: &TaskError, job: &Job) -> bool {
    !job.deps.is_empty()
        && matches!(e, TaskError::Rejected { reason, .. }
            if reason.to_ascii_lowercase().contains("dependency"))
}
