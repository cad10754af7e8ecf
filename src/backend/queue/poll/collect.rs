//! What the poller makes of a watched job's files ([`collect`]), given what the scheduler
//! said about the job ([`Known`]), and the error of a job the scheduler ended
//! ([`ended_by_scheduler`]).

use super::exit::{exit_outcome, worker_outcome};
use super::watch::Watch;
use crate::backend::failure::signal_of;
use crate::backend::scheduler::JobState;
use crate::error::TaskError;
use crate::scheduler::EndReason;
use crate::store::{FormatError, ResultRecord};
use crate::task::TaskKind;

/// What the scheduler said about a job whose files are being read.
#[derive(Clone, Copy, Debug)]
pub(super) enum Known<'a> {
    /// This tick's queue query: the job's finished state, or `None` when it is not listed.
    Queue(Option<&'a JobState>),
    /// The scheduler was asked: what it said, if anything.
    Asked(Option<&'a JobState>),
}

/// What reading a job's files found.
pub(super) enum Collected {
    /// The task's (published) result.
    Done(ResultRecord),
    /// A command was killed by a signal, and the job is not in the queue: ask the scheduler
    /// whether it killed the job (then the error names its state, not the signal).
    Ask,
    /// No result yet.
    Nothing,
}

/// The task's result when its files are there: `result.bin`, or a command's `exit` file
/// turned into one.
///
/// When the scheduler ends a job (cancel, time limit, out of memory, preemption) it signals every
/// process of the job: the command may die a moment before the script running it, which
/// then still records the command's signal death (exit code 128 + n). Such a task resolves
/// to the scheduler's error naming its state, not to "exit code 143".
pub(super) fn collect(w: &Watch, known: Known<'_>, title: &str) -> Collected {
    match w.paths.read_result() {
        Ok(rec) => return Collected::Done(rec),
        Err(FormatError::Missing) => {}
        Err(e) => {
            return Collected::Done(ResultRecord {
                outcome: Err(e.into_task_error(&w.paths.result_file())),
            })
        }
    }
    let (what, found) = match &w.spec.kind {
        TaskKind::Command(spec) => (
            format!("{:?}", spec.program),
            exit_outcome(&w.paths, spec, w.spec.cwd.as_deref()),
        ),
        TaskKind::Function { .. } => ("the worker".to_string(), worker_outcome(&w.paths)),
    };
    let Some((code, mut outcome)) = found else {
        return Collected::Nothing;
    };
    if let Some(signal) = code.and_then(signal_of) {
        match known {
            Known::Queue(None) => return Collected::Ask,
            Known::Queue(Some(JobState::Ended(reason)))
            | Known::Asked(Some(JobState::Ended(reason)))
                if reason.by_scheduler() =>
            {
                outcome = Err(ended_by_scheduler(
                    w,
                    reason.clone(),
                    format!("{title} ended the job and {what} died of signal {signal}"),
                ));
            }
            _ => {}
        }
    }
    let rec = w.paths.publish_result(ResultRecord { outcome });
    w.paths.remove_exit_file();
    Collected::Done(rec)
}

/// The error of a task whose job the scheduler ended (`state`): `Timeout` at the task's
/// time limit, as every backend says it; otherwise `Scheduler` with the state.
pub(super) fn ended_by_scheduler(w: &Watch, state: EndReason, detail: String) -> TaskError {
    match (state, w.limit) {
        (EndReason::Timeout, Some(limit)) => TaskError::Timeout { limit },
        (state, _) => TaskError::Scheduler {
            job_id: w.job.to_string(),
            state,
            detail,
        },
    }
}
