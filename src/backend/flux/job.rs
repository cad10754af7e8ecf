//! One FluxJobExecutor task as a Flux job submitted through libflux ([`super::native`]), on
//! the pool thread that runs it: the jobspec is submitted, then the thread sleeps in
//! `flux_job_event_watch` on the job's eventlog until the job is inactive (no polling): at
//! `start` the task's clocks start, at the checkpoint warning the job gets SIGUSR1
//! (`flux_job_kill`), at `run_time_max` it is cancelled; a cancel from another thread cancels
//! the Flux job. The job shell writes the task's output to the task's files
//! (`output.stdout.type=file`), and the end comes back as the same [`Finished`] a child
//! process gives, so that the outcome is read the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jobspec::{jobspec, JobRequest};
use super::native::{self, Event, Handle, Next, SubmitError};
use crate::backend::child::{End, Finished, Remote, Ticket};
use crate::backend::output;
use crate::dir::Dir;

/// Why a job gave no [`Finished`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotRun {
    /// Cancelled before it was submitted.
    Cancelled,
    /// Flux refused the job or could never run it: its reason.
    Refused(String),
    /// pitch could not submit or follow the job.
    Failed(String),
}

/// The job of a running task, as its [`Ticket`] reaches it from a cancelling thread (the
/// pool thread signals and times it out with its own handle).
#[derive(Debug)]
struct FluxJob {
    id: u64,
}

impl Remote for FluxJob {
    fn cancel(&self) {
        if let Err(e) = native::cancel(self.id, "cancelled by pitch") {
            // The job may have ended meanwhile ("job is inactive").
            tracing::debug!(job = self.id, error = %e, "flux_job_cancel");
        }
    }
}

/// Where the task's output goes: a file the user named, or the task directory's (`dir`, its
/// checked handle: the file is prepared and read back relative to it).
pub(crate) struct Output {
    pub path: PathBuf,
    pub dir: Option<Arc<Dir>>,
}

/// Runs `req` as a Flux job to its end; `started` is given its id when it starts (Flux may
/// queue it first). `limit` and `warn` count from its start, as Flux's own time limit does.
pub(crate) fn run(
    req: &JobRequest,
    stdout: Output,
    stderr: Output,
    limit: Option<Duration>,
    warn: Option<Duration>,
    ticket: &Ticket,
    started: impl FnOnce(u64),
) -> Result<Finished, NotRun> {
    for o in [&stdout, &stderr] {
        output::prepare_file(&o.path, o.dir.as_deref()).map_err(NotRun::Failed)?;
    }
    let spec = jobspec(req);
    let submitted_at = Instant::now();
    let mut started = Some(started);
    let followed = native::with_thread_handle(|h| {
        let mut submitted_id = None;
        let submitted = ticket.start_remote(|| {
            h.submit(&spec).map(|id| {
                submitted_id = Some(id);
                Arc::new(FluxJob { id }) as Arc<dyn Remote>
            })
        });
        let id = match (submitted, submitted_id) {
            (None, _) => return Ok(Err(NotRun::Cancelled)),
            (Some(Err(SubmitError::Refused(reason))), _) => {
                return Ok(Err(NotRun::Refused(format!(
                    "Flux refused the job: {reason}"
                ))))
            }
            (Some(Err(SubmitError::Failed(e))), _) => return Err(format!("flux_job_submit: {e}")),
            (Some(Ok(())), Some(id)) => id,
            (Some(Ok(())), None) => unreachable!("a submission that succeeded has an id"),
        };
        let mut on_start = || {
            if let Some(f) = started.take() {
                f(id);
            }
        };
        match follow(h, id, limit, warn, &mut on_start) {
            Ok(followed) => Ok(Ok(followed)),
            Err(e) => {
                // Lost track of the job: do not leave it running.
                let _ = native::cancel(id, "pitch lost track of the job");
                Err(format!("following Flux job {id}: {e}"))
            }
        }
    });
    ticket.ended();
    let stdout = output::captured_file(stdout.path, stdout.dir.as_deref());
    let stderr = output::captured_file(stderr.path, stderr.dir.as_deref());
    let followed = followed.map_err(NotRun::Failed)??;
    let elapsed = followed.started_at.unwrap_or(submitted_at).elapsed();
    let end = end_of(&followed, ticket.cancel_requested(), limit)?;
    Ok(Finished {
        end: Ok(end),
        elapsed,
        stdout,
        stderr,
    })
}

/// What a job's eventlog said of it, once it ended.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    /// It got its resources (`alloc`).
    allocated: bool,
    /// When its `start` entry came.
    started_at: Option<Instant>,
    /// Its wait status (`finish`), the highest of its shells'.
    status: Option<i32>,
    /// The exception that ended it (the first fatal one), or the last other one.
    exception: Option<Exception>,
    /// pitch's time limit passed (and pitch cancelled it).
    timed_out: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Exception {
    kind: String,
    severity: i64,
    note: String,
}

impl Followed {
    /// Takes one eventlog entry in.
    pub(crate) fn take(&mut self, event: &Event) {
        let c = &event.context;
        match event.name.as_str() {
            "alloc" => self.allocated = true,
            "finish" => self.status = c["status"].as_i64().and_then(|s| i32::try_from(s).ok()),
            "exception" => {
                let e = Exception {
                    kind: c["type"].as_str().unwrap_or_default().to_string(),
                    severity: c["severity"].as_i64().unwrap_or(0),
                    note: c["note"].as_str().unwrap_or_default().to_string(),
                };
                if self
                    .exception
                    .as_ref()
                    .is_none_or(|prev| prev.severity != 0)
                {
                    self.exception = Some(e);
                }
            }
            _ => {}
        }
    }
}

/// Follows job `id` to its end on this thread's handle, reading its eventlog as Flux writes
/// it: `on_start` at its `start`, then SIGUSR1 at the warning and a cancel at the time limit
/// (both counted from the start).
fn follow(
    h: &Handle,
    id: u64,
    limit: Option<Duration>,
    warn: Option<Duration>,
    on_start: &mut dyn FnMut(),
) -> Result<Followed, String> {
    let watch = h.watch(id)?;
    let mut job = Followed::default();
    let (mut warn_at, mut limit_at) = (None, None);
    loop {
        let now = Instant::now();
        if warn_at.is_some_and(|w| now >= w) {
            warn_at = None;
            if let Err(e) = h.kill(id, libc::SIGUSR1) {
                tracing::debug!(job = id, error = %e, "flux_job_kill SIGUSR1");
            }
        }
        if limit_at.is_some_and(|l| now >= l) {
            limit_at = None;
            warn_at = None;
            job.timed_out = true;
            if let Err(e) = h.cancel(id, "run_time_max reached (pitch)") {
                tracing::debug!(job = id, error = %e, "flux_job_cancel at run_time_max");
            }
        }
        let wake = warn_at.into_iter().chain(limit_at).min();
        match watch.next(wake.map(|w| w.saturating_duration_since(now)))? {
            Next::TimedOut => {}
            Next::End => return Ok(job),
            Next::Event(e) => {
                if e.name == "start" && job.started_at.is_none() {
                    let at = Instant::now();
                    job.started_at = Some(at);
                    warn_at = warn.map(|w| at + w);
                    limit_at = limit.map(|l| at + l);
                    on_start();
                }
                job.take(&e);
            }
        }
    }
}

/// How a job that ended is read: its [`End`], or why it never ran.
fn end_of(job: &Followed, cancelled: bool, limit: Option<Duration>) -> Result<End, NotRun> {
    use std::os::unix::process::ExitStatusExt;
    let (kind, note) = job
        .exception
        .as_ref()
        .map_or(("", ""), |e| (e.kind.as_str(), e.note.as_str()));
    if job.timed_out || (kind == "timeout" && limit.is_some()) {
        return Ok(End::TimedOut(limit.unwrap_or_default()));
    }
    if cancelled {
        return Ok(End::Cancelled);
    }
    match job.status {
        Some(status) => Ok(End::Exited(std::process::ExitStatus::from_raw(status))),
        None if !job.allocated && kind == "alloc" => {
            Err(NotRun::Refused(format!("Flux cannot run the job: {note}")))
        }
        None if !job.allocated && job.exception.is_some() => Err(NotRun::Refused(format!(
            "Flux cannot run the job ({kind} exception): {note}"
        ))),
        None => Err(NotRun::Failed(match job.exception {
            Some(_) => {
                format!("Flux ended the job before its tasks ran ({kind} exception): {note}")
            }
            None => "Flux ended the job without an exit status".into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(allocated: bool, status: Option<i32>, exception: Option<(&str, &str)>) -> Followed {
        Followed {
            allocated,
            status,
            exception: exception.map(|(kind, note)| Exception {
                kind: kind.into(),
                severity: 0,
                note: note.into(),
            }),
            ..Followed::default()
        }
    }

    #[test]
    fn the_eventlog_gives_the_status_and_the_fatal_exception() {
        let mut job = Followed::default();
        let entry = |text: &str| serde_json::from_str::<Event>(text).unwrap();
        job.take(&entry(r#"{"name":"alloc","context":{}}"#));
        job.take(&entry(
            r#"{"name":"exception","context":{"type":"test","severity":3,"note":"minor"}}"#,
        ));
        job.take(&entry(
            r#"{"name":"exception","context":{"type":"exec","severity":0,"note":"rank 1"}}"#,
        ));
        job.take(&entry(
            r#"{"name":"exception","context":{"type":"cancel","severity":0,"note":"later"}}"#,
        ));
        job.take(&entry(r#"{"name":"finish","context":{"status":768}}"#));
        assert!(job.allocated);
        assert_eq!(job.status, Some(768));
        let e = job.exception.unwrap();
        assert_eq!((e.kind.as_str(), e.note.as_str()), ("exec", "rank 1"));
    }

    #[test]
    fn how_a_flux_job_ended_becomes_an_end() {
        let limit = Some(Duration::from_secs(2));
        let exited = |r: Result<End, NotRun>| match r {
            Ok(End::Exited(s)) => s,
            other => panic!("{other:?}"),
        };
        // Ran: its wait status, whatever exception exit-on-error raised.
        assert!(exited(end_of(&job(true, Some(0), None), false, None)).success());
        let failed = job(true, Some(3 << 8), Some(("exec", "task 1: exit 3")));
        assert_eq!(exited(end_of(&failed, false, None)).code(), Some(3));
        // pitch's timer, or Flux's own limit: a timeout.
        let mut cut = job(true, Some(15), Some(("cancel", "")));
        cut.timed_out = true;
        assert!(matches!(end_of(&cut, false, limit), Ok(End::TimedOut(l)) if Some(l) == limit));
        let expired = job(true, Some(9), Some(("timeout", "expired")));
        assert!(matches!(
            end_of(&expired, false, limit),
            Ok(End::TimedOut(_))
        ));
        // Cancelled by pitch, before or after it started.
        for j in [
            job(false, None, Some(("cancel", ""))),
            job(true, Some(15), Some(("cancel", ""))),
        ] {
            assert!(matches!(end_of(&j, true, None), Ok(End::Cancelled)));
        }
        // Never ran: Flux could not schedule it, or it was cancelled by someone else.
        let alloc = job(false, None, Some(("alloc", "unsatisfiable request: no")));
        assert_eq!(
            end_of(&alloc, false, None).unwrap_err(),
            NotRun::Refused("Flux cannot run the job: unsatisfiable request: no".into())
        );
        let other = job(false, None, Some(("cancel", "by flux cancel")));
        assert_eq!(
            end_of(&other, false, None).unwrap_err(),
            NotRun::Refused("Flux cannot run the job (cancel exception): by flux cancel".into())
        );
        // Allocated, but no shell reported a status.
        let lost = job(true, None, Some(("exec", "shell failed")));
        assert!(
            matches!(end_of(&lost, false, None), Err(NotRun::Failed(m)) if m.contains("shell failed"))
        );
    }
}
