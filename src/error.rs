//! Errors: [`TaskError`] is what a task resolves to when it fails (plain data that clones,
//! serializes and travels from a worker back to the driver); [`Error`] is what the library's own
//! calls return (configuration, files, resources).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::profile::ProfileError;
use crate::resources::ResourceError;
use crate::scheduler::EndReason;

fn tail(text: &str) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        String::new()
    } else {
        format!("; stderr ends with:\n{text}")
    }
}

fn at(location: &Option<String>) -> String {
    location
        .as_ref()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default()
}

/// Why a task did not produce a value. Plain data: it clones, compares and serializes, so it
/// crosses process boundaries and is stored in result files.
///
/// # Example
///
/// ```
/// use pitch::{Command, SingleNodeExecutor, TaskError};
///
/// # fn main() -> Result<(), pitch::Error> {
/// let cache = tempfile::tempdir().unwrap();
/// let exe = SingleNodeExecutor::builder().cache_directory(cache.path()).build()?;
/// let failed = exe.submit_command(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]));
/// match failed.result() {
///     Err(TaskError::CommandFailed { code, stderr_tail, .. }) => {
///         assert_eq!(code, 3);
///         assert!(stderr_tail.contains("oops"));
///     }
///     other => panic!("{other:?}"),
/// }
/// // A task after a failed one fails too, naming its input.
/// let after = exe.submit_command(Command::new("true").after(&failed));
/// let err = after.result().unwrap_err();
/// assert!(matches!(err, TaskError::DependencyFailed { .. }));
/// // For people: one line per cause, and the stderr tail.
/// let text = err.report().to_string();
/// assert!(text.contains("caused by") && text.contains("oops"), "{text}");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task function panicked.
    #[error("task panicked{}: {message}", at(.location))]
    Panicked {
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
    },
    /// The task function returned `Err`; `chain` is the error and its sources, outermost first.
    #[error("task returned an error: {}", .chain.join(": "))]
    Failed {
        /// The error's message followed by each `source()` in turn.
        chain: Vec<String>,
    },
    /// An external command exited with a non-zero code.
    #[error("command {program:?} exited with code {code}{}", tail(.stderr_tail))]
    CommandFailed {
        /// The program that was run.
        program: String,
        /// Its exit code.
        code: i32,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
    /// The task's process was killed by a signal it did not expect.
    #[error("{what} was killed by signal {signal}{}", tail(.stderr_tail))]
    Signaled {
        /// What was killed (a program name, or "the worker").
        what: String,
        /// The signal number.
        signal: i32,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
    /// The worker process ended without writing a result.
    #[error("the worker exited ({status}) without writing a result{}", tail(.stderr_tail))]
    WorkerDied {
        /// How it ended ("exit code 2", "signal 9").
        status: String,
        /// The last lines of its standard error.
        stderr_tail: String,
    },
    /// The task ran longer than its `run_time_max` and was killed.
    #[error("task exceeded its run_time_max of {limit:?} and was killed")]
    Timeout {
        /// The limit that was exceeded.
        limit: Duration,
    },
    /// The task was cancelled before it finished.
    #[error("task was cancelled")]
    Cancelled,
    /// An input of the task (a future passed as an argument) failed, so the task never ran.
    #[error("input {input} (task {key}) failed: {cause}")]
    DependencyFailed {
        /// Which input: the argument's position and the upstream task's name.
        input: String,
        /// The upstream task's key.
        key: String,
        /// Why the upstream task failed.
        cause: Box<TaskError>,
    },
    /// The task file was written by code whose task signature differs from this binary's.
    #[error("task {name:?} comes from incompatible code: its fingerprint is {found} but this binary's is {expected}; rebuild the driver and the worker from the same source, or bump the task's version")]
    BinaryMismatch {
        /// The task name.
        name: String,
        /// This binary's fingerprint for the name.
        expected: String,
        /// The fingerprint in the task file.
        found: String,
    },
    /// No task of this name is registered in the worker binary.
    #[error("this binary registers no task named {name:?}; was the task defined with pitch::task! in code linked into it?")]
    UnknownTask {
        /// The task name.
        name: String,
    },
    /// A value could not be encoded.
    #[error("could not encode {what}: {detail}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The codec's message.
        detail: String,
    },
    /// A value could not be decoded (wrong type, truncated or foreign bytes).
    #[error("could not decode {what}: {detail}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The codec's message.
        detail: String,
    },
    /// One rank of a multi-rank task failed; the other ranks were stopped.
    #[error("rank {rank} of {size} failed: {cause}")]
    Rank {
        /// The failing rank.
        rank: u32,
        /// The number of ranks.
        size: u32,
        /// Why it failed.
        cause: Box<TaskError>,
    },
    /// The task could not be started at all.
    #[error("could not launch {what}: {detail}")]
    Launch {
        /// What was being launched.
        what: String,
        /// Why it failed, for callers to match on.
        kind: LaunchErrorKind,
        /// Why it failed, in words.
        detail: String,
    },
    /// The backend (or its scheduler: sbatch, flux batch, flux run) refused the task's
    /// resources or options before running it.
    #[error("task rejected by the {backend} backend: {reason}")]
    Rejected {
        /// The backend's name.
        backend: String,
        /// What is wrong.
        reason: String,
    },
    /// A file in the cache directory could not be read or written.
    #[error("{path}: {detail}")]
    Store {
        /// The file.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The executor was dropped while the task's job was still queued or running (queue
    /// backends detach): the job goes on, and its result appears in the cache directory for
    /// the next run, which re-attaches to it.
    #[error(
        "the executor was dropped while this task's job was queued or running; the job goes on \
         and its result will appear in {cache}: run the program again to collect it"
    )]
    Detached {
        /// The cache directory.
        cache: String,
    },
    /// The scheduler reports the task's job ended without a result.
    #[error("job {job_id} ended in state {state} without a result{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Scheduler {
        /// The scheduler's job id.
        job_id: String,
        /// Why the job ended (TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, CANCELLED...), whatever the
        /// scheduler.
        state: EndReason,
        /// More detail, e.g. the job log's tail.
        detail: String,
    },
    /// The task saved a checkpoint and asked to be run again from it: a function task through
    /// [`TaskContext::checkpoint`](crate::TaskContext::checkpoint), a command by exiting with
    /// [`REQUEUE_EXIT_CODE`] (typically after the scheduler's warning signal, see
    /// [`TaskContext::should_stop`](crate::TaskContext::should_stop)). The engine submits it
    /// again, counted against `max_retries`; this is the final error only when no retry is left.
    #[error("the task saved a checkpoint and asked to be resubmitted{}", if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
    Checkpointed {
        /// What asked (for people): the signal that warned it, the command's exit code.
        detail: String,
    },
    /// The task failed in every attempt its retries allowed (`max_retries`): each attempt with
    /// its error, in order; the last one's error is [`TaskError::final_cause`].
    #[error("the task failed in all {} attempts; the last: {}", .attempts.len(), .attempts.last().map(|a| a.error.to_string()).unwrap_or_default())]
    GaveUp {
        /// The attempts, the first first.
        attempts: Vec<Attempt>,
    },
}

/// The exit code with which a command task asks to be submitted again (after saving its own
/// checkpoint): `EX_TEMPFAIL` of `sysexits.h`. Such an exit ends the attempt with
/// [`TaskError::Checkpointed`] instead of [`TaskError::CommandFailed`].
pub const REQUEUE_EXIT_CODE: i32 = 75;

/// One attempt of a task that was retried ([`TaskError::GaveUp`], the `Retrying` event,
/// `pitch results`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// The scheduler's job id of the attempt, when it ran as (part of) a job.
    pub job_id: Option<String>,
    /// How the attempt ended.
    pub error: TaskError,
    /// From the attempt's hand-over to the backend to its end (seconds, a float, in JSON).
    #[serde(with = "seconds")]
    pub duration: Duration,
}

/// A duration as seconds (a float) in serde.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Why a task could not be started ([`TaskError::Launch`]). `pitch run` picks its exit code by
/// it: 127 for [`NotFound`](LaunchErrorKind::NotFound), 125 for
/// [`RejectedByScheduler`](LaunchErrorKind::RejectedByScheduler), 126 for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LaunchErrorKind {
    /// The program, or the launcher or scheduler command that starts it (`mpiexec`, `srun`,
    /// `flux`, `sbatch`), does not exist.
    NotFound,
    /// The program exists but may not be executed.
    PermissionDenied,
    /// The task's working directory does not exist.
    NoSuchCwd,
    /// The scheduler refused the job. Results written by older versions only: a refusal
    /// (`sbatch`, `flux batch`, `flux run`) is now [`TaskError::Rejected`] with the
    /// scheduler's message, on every backend.
    RejectedByScheduler,
    /// Anything else: the program cannot be executed for another reason, or pitch could not
    /// prepare or watch the launch.
    Other,
}

impl TaskError {
    /// The error that ended the task: the last attempt's for [`TaskError::GaveUp`], the error
    /// itself otherwise.
    pub fn final_cause(&self) -> &TaskError {
        match self {
            TaskError::GaveUp { attempts } => {
                attempts.last().map_or(self, |a| a.error.final_cause())
            }
            other => other,
        }
    }

    /// Builds [`TaskError::Failed`] from any error, walking its `source()` chain.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> TaskError {
        let mut chain = vec![error.to_string()];
        let mut next = error.source();
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        TaskError::Failed { chain }
    }

    /// The error of a task whose input `input` (the upstream task `name` with key `key`)
    /// failed with `cause`.
    pub(crate) fn dependency_failed(
        input: &str,
        name: &str,
        key: &dyn std::fmt::Display,
        cause: &TaskError,
    ) -> TaskError {
        TaskError::DependencyFailed {
            input: format!("{input} ({name})"),
            key: key.to_string(),
            cause: Box::new(cause.clone()),
        }
    }
}

/// What the library's own calls return when they fail.
///
/// Its `Debug` form is the readable report of [`Error::report`] (as `anyhow`'s is), so that
/// `fn main() -> Result<(), pitch::Error>` ends with a message a person can read, not a
/// struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A task failed (from `?` on a task's result).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A resource value is malformed.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// The backend cannot honour a setting.
    #[error("the {backend} backend cannot honour this: {reason}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An executor was built inside a worker process.
    #[error("an executor was created inside a pitch worker process: call pitch::init() as the first line of main, before anything else")]
    InsideWorker,
    /// The registry holds two tasks with the same name.
    #[error("two tasks are registered under the name {0:?}: give one of them another name")]
    DuplicateTask(String),
    /// A configuration value is wrong.
    #[error("{0}")]
    Config(String),
    /// A `pitch.toml` profile could not be found, read or accepted (with the file, line and
    /// key of the problem, see [`ProfileError`]).
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The cache directory, or a directory above or inside it, could be replaced by another
    /// user (owned by someone else, writable by others, or a link): see the README's
    /// "Security model".
    #[error("refusing the cache directory {}: {} {reason}", .cache.display(), .path.display())]
    Untrusted {
        /// The cache directory.
        cache: PathBuf,
        /// The directory (or link) at fault: the cache directory or one above or inside it.
        path: PathBuf,
        /// What is wrong with it, with its owner and mode.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The text a command's stderr tail follows in [`TaskError`]'s one-line form.
const TAIL_MARK: &str = "; stderr ends with:\n";

impl TaskError {
    /// A readable report over several lines: the error, each cause on a line of its own
    /// (`caused by: ...`, for a failed input, a failed rank or a function's error chain),
    /// and a command's stderr tail as indented lines.
    ///
    /// ```
    /// let e = pitch::TaskError::Cancelled;
    /// assert_eq!(e.report().to_string(), "task was cancelled");
    /// ```
    pub fn report(&self) -> impl std::fmt::Display + '_ {
        Report(self)
    }
}

impl Error {
    /// A readable report over several lines: the error, then each cause (`caused by: ...`);
    /// a task's error as [`TaskError::report`] gives it. The `Debug` form is the same.
    pub fn report(&self) -> impl std::fmt::Display + '_ {
        ErrorReport(self)
    }
}

struct Report<'a>(&'a TaskError);

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_task_report(f, self.0, "")
    }
}

/// Writes `e` with every line after the first indented by `indent`.
fn write_task_report(
    f: &mut std::fmt::Formatter<'_>,
    e: &TaskError,
    indent: &str,
) -> std::fmt::Result {
    match e {
        TaskError::DependencyFailed { input, key, cause } => {
            write!(f, "input {input} (task {key}) failed")?;
            write!(f, "\n{indent}caused by: ")?;
            write_task_report(f, cause, indent)
        }
        TaskError::Rank { rank, size, cause } => {
            write!(f, "rank {rank} of {size} failed")?;
            write!(f, "\n{indent}caused by: ")?;
            write_task_report(f, cause, indent)
        }
        TaskError::GaveUp { attempts } => {
            write!(f, "the task failed in all {} attempts", attempts.len())?;
            for a in attempts {
                let job = a
                    .job_id
                    .as_deref()
                    .map(|j| format!(", job {j}"))
                    .unwrap_or_default();
                write!(
                    f,
                    "\n{indent}attempt {} ({:.1} s{job}): ",
                    a.number,
                    a.duration.as_secs_f64()
                )?;
                write_task_report(f, &a.error, &format!("{indent}  "))?;
            }
            Ok(())
        }
        TaskError::Failed { chain } if chain.len() > 1 => {
            write!(f, "task returned an error: {}", chain[0])?;
            for cause in &chain[1..] {
                write!(f, "\n{indent}caused by: {cause}")?;
            }
            Ok(())
        }
        other => {
            let text = other.to_string();
            match text.split_once(TAIL_MARK) {
                Some((head, tail)) => {
                    write!(f, "{head}\n{indent}stderr (last lines):")?;
                    for line in tail.lines() {
                        write!(f, "\n{indent}  | {line}")?;
                    }
                    Ok(())
                }
                None => f.write_str(&text),
            }
        }
    }
}

struct ErrorReport<'a>(&'a Error);

impl std::fmt::Display for ErrorReport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Error::Task(e) = self.0 {
            return write_task_report(f, e, "");
        }
        let head = self.0.to_string();
        f.write_str(&head)?;
        let mut source = std::error::Error::source(self.0);
        while let Some(cause) = source {
            // A cause the message already quotes (`{path}: {source}`) is not repeated.
            let text = cause.to_string();
            if !head.contains(&text) {
                write!(f, "\ncaused by: {text}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.report())
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn a_report_puts_causes_and_the_stderr_tail_on_lines_of_their_own() {
        let failed = TaskError::CommandFailed {
            program: "lmp".into(),
            code: 2,
            stderr_tail: "ERROR: no in.lmp\nLast command: read_data\n".into(),
        };
        let dep = TaskError::DependencyFailed {
            input: "argument 0 (render)".into(),
            key: "abc".into(),
            cause: Box::new(failed.clone()),
        };
        let text = format!("{:?}", Error::Task(dep));
        assert_eq!(
            text,
            "input argument 0 (render) (task abc) failed\n\
             caused by: command \"lmp\" exited with code 2\n\
             stderr (last lines):\n  | ERROR: no in.lmp\n  | Last command: read_data"
        );
        // The one-line Display form is unchanged.
        assert!(failed.to_string().contains(TAIL_MARK), "{failed}");
        let chain = TaskError::Failed {
            chain: vec!["fit failed".into(), "singular matrix".into()],
        };
        assert_eq!(
            chain.report().to_string(),
            "task returned an error: fit failed\ncaused by: singular matrix"
        );
    }

    #[test]
    fn a_library_error_reports_its_source_chain() {
        let e = Error::io(
            "/nope/pitch-cache",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        );
        assert_eq!(format!("{e:?}"), "/nope/pitch-cache: denied");
    }
}
