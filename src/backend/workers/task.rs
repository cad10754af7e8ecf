//! A task as workers (a pool's or the pilots) run it: [`task_of`] makes a job a [`PoolTask`]
//! with its `Run` frame, or [`refuses`] it; [`cancel`]; and its end: [`keep_checkpoint`],
//! [`deliver_to`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::process::stop_process;
use super::protocol::{self, ToWorker};
use super::{Phase, PoolTask};
use crate::backend::{Done, Job};
use crate::error::{LaunchErrorKind, TaskError};
use crate::future::{view_bytes, Slot};
use crate::resources::Resources;
use crate::resultlog::LogSet;
use crate::store::{CheckpointRecord, ResultRecord, TaskPaths};
use crate::task::{ArgSlot, TaskKey, TaskKind, TaskSpec};

/// Why a worker (pool worker or pilot) sized by the defaults `d` cannot run a task asking for `r` (per-submit resources
/// merged onto the executor's defaults).
pub(super) fn refuses(d: &Resources, r: &Resources) -> Option<String> {
    let size = |r: &Resources| {
        format!(
            "cores = {}, threads_per_core = {}, gpus_per_core = {}",
            r.ranks(),
            r.threads(),
            r.gpus_per_core.unwrap_or(0)
        )
    };
    if r.ranks() != d.ranks() || r.threads() != d.threads() || r.gpus_per_core != d.gpus_per_core {
        return Some(format!(
            "block_allocation workers are sized by the executor's default resources \
             ({}); this task asks for {}: submit it to an executor without \
             block_allocation",
            size(d),
            size(r)
        ));
    }
    if r.env != d.env {
        return Some(
            "block_allocation workers keep the environment they were started with; \
             this task asks for other env variables"
                .into(),
        );
    }
    if r.cwd != d.cwd {
        return Some(
            "block_allocation workers keep the working directory they were started in; \
             this task asks for another cwd"
                .into(),
        );
    }
    None
}

/// A function task as the pool's workers (or pilots) run it, with the time limit `limit`: its
/// inputs resolved from their futures, its checkpoint read, and its `Run` frame encoded (with
/// the warning `checkpoint_grace` before `limit`). `None` when the task ended here (refused
/// for `reason`, a failed input, an unencodable frame): `done` has its record.
pub(super) fn task_of(
    job: Job,
    backend: &str,
    reason: Option<String>,
    limit: Option<Duration>,
) -> Option<(PoolTask, Arc<Slot>)> {
    let Job {
        spec,
        paths,
        resources,
        slot,
        deps,
        started,
        done,
        ..
    } = job;
    let fail = |e: TaskError| {
        done.finish(ResultRecord { outcome: Err(e) });
        None
    };
    if let Some(reason) = reason {
        return fail(TaskError::Rejected {
            backend: backend.to_string(),
            reason,
        });
    }
    let TaskSpec { key, kind, .. } = &*spec;
    let TaskKind::Function {
        name,
        fingerprint,
        args,
    } = kind
    else {
        unreachable!("commands go to the process backend");
    };
    // Inputs are resolved here, from their futures: a worker reads no files.
    let mut values = Vec::with_capacity(args.len());
    for (position, arg) in args.iter().enumerate() {
        match arg {
            ArgSlot::Inline(bytes) => values.push(bytes.clone()),
            ArgSlot::Ref {
                key: upstream,
                view,
            } => {
                let outcome = deps
                    .iter()
                    .find(|(_, d)| d.slot.key == *upstream)
                    .and_then(|(_, d)| d.slot.outcome());
                let value = match outcome.as_deref() {
                    Some(Ok(v)) => view_bytes(v, *view),
                    Some(Err(cause)) => Err(TaskError::DependencyFailed {
                        input: format!("argument {position}"),
                        key: upstream.to_string(),
                        cause: Box::new(cause.clone()),
                    }),
                    None => Err(TaskError::Launch {
                        kind: LaunchErrorKind::Other,
                        what: "pitch".into(),
                        detail: format!(
                            "the input of argument {position} (task {upstream}) has not \
                                 finished"
                        ),
                    }),
                };
                match value {
                    Ok(v) => values.push(v),
                    Err(e) => return fail(e),
                }
            }
        }
    }
    let stop_after = resources
        .checkpoint_grace
        .zip(limit)
        .map(|(grace, limit)| limit.saturating_sub(grace));
    let frame = match protocol::frame(&ToWorker::Run {
        key: *key,
        name: name.clone(),
        fingerprint: fingerprint.clone(),
        args: values,
        checkpoint: paths.read_checkpoint().transpose(),
        stop_after,
    }) {
        Ok(f) => f,
        Err(detail) => {
            return fail(TaskError::Encode {
                what: "the task for its worker".into(),
                detail,
            })
        }
    };
    Some((
        PoolTask::queued(*key, name.clone(), frame, limit, paths, done, started),
        slot,
    ))
}

impl PoolTask {
    /// A function task waiting in the queue, with its encoded frame.
    pub(super) fn queued(
        key: TaskKey,
        name: String,
        frame: Vec<u8>,
        limit: Option<Duration>,
        paths: TaskPaths,
        done: Done,
        started: Box<dyn Fn(Option<String>) + Send + Sync>,
    ) -> PoolTask {
        PoolTask {
            key,
            name,
            frame,
            limit,
            paths,
            done,
            started,
            phase: Mutex::new(Phase::Queued),
            command: false,
        }
    }
}

/// A cancel request: a queued task ends at once; a running one has its worker killed (the
/// thread driving it reports the cancellation and replaces the worker).
pub(super) fn cancel(task: &PoolTask) {
    let mut phase = task.phase.lock().unwrap();
    match *phase {
        Phase::Queued => {
            *phase = Phase::Ended;
            drop(phase);
            task.done.finish(ResultRecord {
                outcome: Err(TaskError::Cancelled),
            });
        }
        Phase::Running {
            pid,
            srun,
            ref sockets,
        } => {
            for fd in sockets {
                // SAFETY: the worker owns these descriptors until its thread has ended the
                // task, which it does under this lock; shutdown(2) on a pipe fails harmlessly.
                unsafe {
                    libc::shutdown(*fd, libc::SHUT_RDWR);
                }
            }
            // A pilot's task (pid 0) has no process here: the shut socket makes the pilot
            // exit.
            if pid > 0 {
                stop_process(pid, srun);
            }
            *phase = Phase::Cancelling;
        }
        Phase::Cancelling | Phase::Ended => {}
    }
}

/// A pooled task's checkpoint once it answered: the state it saved (`saved`, rank 0's) is
/// written to its directory when it checkpointed (a failure to write it becomes the task's
/// error); a finished task's checkpoint goes.
pub(super) fn keep_checkpoint(
    task: &PoolTask,
    outcome: &mut Result<Vec<Vec<u8>>, TaskError>,
    saved: Option<CheckpointRecord>,
) {
    match outcome {
        Ok(_) => task.paths.remove_checkpoint(),
        Err(TaskError::Checkpointed { .. }) => {
            if let Some(record) = saved {
                if let Err(e) = task.paths.write_checkpoint(&record) {
                    *outcome = Err(e);
                }
            }
        }
        Err(_) => {}
    }
}

/// Records a task's end in the result log `log` (if any), or a command's in its task
/// directory, and delivers it.
pub(super) fn deliver_to(
    log: Option<&LogSet>,
    durable: bool,
    task: &PoolTask,
    outcome: Result<Vec<Vec<u8>>, TaskError>,
) {
    let mut record = ResultRecord { outcome };
    if task.command {
        record = task.paths.publish_result(record);
    } else if let Some(log) = log {
        if let Err(detail) = log.append(task.key, &task.name, &record, durable) {
            if record.outcome.is_ok() {
                record = ResultRecord {
                    outcome: Err(TaskError::Store {
                        path: log.dir().display().to_string(),
                        detail,
                    }),
                };
            }
        }
    }
    task.done.finish(record);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_queued_task_cancelled_ends_at_once_and_is_skipped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let key = TaskKey::from_bytes([1; 16]);
        let task = PoolTask::queued(
            key,
            "t".into(),
            vec![],
            None,
            Store::at("/nonexistent".into(), false).task(&key),
            Done::new(move |r| tx.send(r).unwrap()),
            Box::new(|_| {}),
        );
        assert!(matches!(*task.phase.lock().unwrap(), Phase::Queued));
        cancel(&task);
        assert_eq!(rx.recv().unwrap().outcome, Err(TaskError::Cancelled));
        assert!(matches!(*task.phase.lock().unwrap(), Phase::Ended));
        cancel(&task);
        assert!(rx.try_recv().is_err());
    }
}
