//! The one poller of a queue executor: per tick ONE queue query for all of its jobs
//! (filtered by user and the cache directory's job name), backing off while nothing changes.
//! Result files are read only for jobs that left the queue or are reported finished; a job
//! gone without a result is asked about (Slurm: scontrol, then sacct; Flux: flux jobs) after
//! a grace period for NFS attribute caching, and its error names the scheduler state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Queue;
use crate::backend::failure::{self, signal_of};
use crate::backend::scheduler::{lookup_state, JobRef, JobState};
use crate::command::CommandOutput;
use crate::error::TaskError;
use crate::scheduler::EndReason;
use crate::store::{FormatError, ResultRecord, TaskPaths};
use crate::task::{CommandSpec, TaskKind, TaskSpec};

/// How a watched task ended.
pub(crate) enum WatchEnd {
    /// With this (published) result.
    Done(ResultRecord),
    /// A re-attached job is gone without a result: submit the task again.
    Lost,
    /// The job is queued for a reason that never clears (`reason`, for people): the poller
    /// cancelled it. The watcher decides: an input being retried (submit it again behind the
    /// input's new job), or a rejection.
    Stuck(String),
    /// The job ended, or can never start, because an input's job failed and that input is
    /// being retried: submit the task again behind the input's next job.
    Resubmit,
}

/// A task the poller watches.
pub(crate) struct Watch {
    job: JobRef,
    paths: TaskPaths,
    spec: Arc<TaskSpec>,
    reattached: bool,
    /// The task's `run_time_max`: a job the scheduler ended at its time limit resolves to
    /// `TaskError::Timeout` with it, as on every backend.
    limit: Option<Duration>,
    /// When the job was first seen finished or gone without a result.
    gone_since: Option<Instant>,
    /// Ticks in a row the job was seen queued for a reason that never clears.
    stuck_ticks: u32,
    tx: Option<oneshot::Sender<WatchEnd>>,
}

impl Watch {
    pub(crate) fn new(
        job: JobRef,
        paths: TaskPaths,
        spec: Arc<TaskSpec>,
        reattached: bool,
        limit: Option<Duration>,
        tx: oneshot::Sender<WatchEnd>,
    ) -> Watch {
        Watch {
            job,
            paths,
            spec,
            reattached,
            limit,
            gone_since: None,
            stuck_ticks: 0,
            tx: Some(tx),
        }
    }
}

/// A command's outcome as a result record holds it: its encoded output, or the error.
pub(crate) type ExitOutcome = Result<Vec<Vec<u8>>, TaskError>;

/// What the scheduler said about a job whose files are being read.
#[derive(Clone, Copy, Debug)]
enum Known<'a> {
    /// This tick's queue query: the job's finished state, or `None` when it is not listed.
    Queue(Option<&'a JobState>),
    /// The scheduler was asked: what it said, if anything.
    Asked(Option<&'a JobState>),
}

/// What reading a job's files found.
enum Collected {
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
fn collect(w: &Watch, known: Known<'_>, title: &str) -> Collected {
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

/// What an `exit` file holds: its first field (the code, or why the program did not run) and
/// the run time; `Err` when it is not an exit file.
struct ExitFile {
    first: String,
    elapsed: Duration,
}

fn read_exit_file(paths: &TaskPaths) -> Option<Result<ExitFile, TaskError>> {
    let exit_file = paths.exit_file();
    // A job script writes "CODE START END" (under 64 bytes): read no more than a little past
    // that, whatever the file holds, and quote no more of it in an error.
    const EXIT_FILE_MAX: u64 = 256;
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(paths.open_exit_file().ok()?, EXIT_FILE_MAX),
        &mut text,
    )
    .ok()?;
    if text.len() as u64 >= EXIT_FILE_MAX {
        let detail = format!("is not an exit file: {EXIT_FILE_MAX} bytes or more");
        let path = exit_file.display().to_string();
        return Some(Err(TaskError::Store { path, detail }));
    }
    // "CODE [START END]": the job script adds the command's start and end in microseconds
    // since the epoch when its bash can tell them.
    let mut fields = text.split_whitespace();
    let code_text = fields.next().unwrap_or_default();
    let micros: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
    let elapsed = match micros[..] {
        [start, end] if end >= start => Duration::from_micros(end - start),
        _ => Duration::ZERO,
    };
    Some(Ok(ExitFile {
        first: code_text.to_string(),
        elapsed,
    }))
}

fn not_an_exit_code(exit_file: &std::path::Path, first: &str) -> TaskError {
    TaskError::Store {
        path: exit_file.display().to_string(),
        detail: format!("holds {first:?}, not an exit code"),
    }
}

/// A function task's outcome from the `exit` file its job script wrote because the worker
/// left no result: the worker exited (`WorkerDied`) or was killed (`Signaled`) before
/// writing one. The exit code comes along.
fn worker_outcome(paths: &TaskPaths) -> Option<(Option<i32>, ExitOutcome)> {
    let exit_file = paths.exit_file();
    let file = match read_exit_file(paths)? {
        Ok(f) => f,
        Err(e) => return Some((None, Err(e))),
    };
    let Ok(code) = file.first.parse::<i32>() else {
        return Some((None, Err(not_an_exit_code(&exit_file, &file.first))));
    };
    let stderr_tail = tail(paths, None, TaskPaths::STDERR);
    let error = match signal_of(code) {
        Some(signal) => TaskError::Signaled {
            what: "the worker".into(),
            signal,
            stderr_tail,
        },
        None => failure::requeue_requested("the worker", code).unwrap_or(TaskError::WorkerDied {
            status: format!("exit code {code}"),
            stderr_tail,
        }),
    };
    Some((Some(code), Err(error)))
}

/// The error of a task whose job the scheduler ended (`state`): `Timeout` at the task's
/// time limit, as every backend says it; otherwise `Scheduler` with the state.
fn ended_by_scheduler(w: &Watch, state: EndReason, detail: String) -> TaskError {
    match (state, w.limit) {
        (EndReason::Timeout, Some(limit)) => TaskError::Timeout { limit },
        (state, _) => TaskError::Scheduler {
            job_id: w.job.to_string(),
            state,
            detail,
        },
    }
}

/// A command job's outcome from the `exit` file its script wrote (`None` while there is
/// none). Reads only: the poller publishes it as the result, `pitch status` just shows it.
/// The exit code comes along (`None` when the file does not hold one).
///
/// The same cause gives the same error as on SingleNode: a program that could not be
/// executed is `Launch` (`NotFound`, `PermissionDenied`), a missing working directory
/// `Launch` (`NoSuchCwd`), a death by signal N (exit status 128 + N, see [`signal_of`])
/// `Signaled`, exit code 75 `Checkpointed` ([`failure::command_exit`]), any other non-zero
/// code `CommandFailed`.
pub(crate) fn exit_outcome(
    paths: &TaskPaths,
    spec: &CommandSpec,
    cwd: Option<&std::path::Path>,
) -> Option<(Option<i32>, ExitOutcome)> {
    let exit_file = paths.exit_file();
    let file = match read_exit_file(paths)? {
        Ok(f) => f,
        Err(e) => return Some((None, Err(e))),
    };
    let elapsed = file.elapsed;
    let stdout = spec.stdout.clone().unwrap_or_else(|| paths.stdout());
    let stderr = spec.stderr.clone().unwrap_or_else(|| paths.stderr());
    let stderr_tail = tail(paths, spec.stderr.as_deref(), TaskPaths::STDERR);
    if file.first == "cwd" {
        return Some((None, Err(failure::no_such_cwd(&spec.program, cwd))));
    }
    if let Some(which) = file.first.strip_prefix("output:") {
        // The job script refused a file the user named (`pitch_open`): why, from what is
        // there now.
        let path = if which == "stderr" { &stderr } else { &stdout };
        let error = TaskError::Launch {
            what: spec.program.clone(),
            kind: crate::error::LaunchErrorKind::Other,
            detail: crate::backend::output::refusal(path, None),
        };
        return Some((None, Err(error)));
    }
    if let Some(exec) = file.first.strip_prefix("exec:") {
        let code = exec.parse().unwrap_or(-1);
        return Some((
            None,
            Err(failure::exec_failed(&spec.program, code, &stderr_tail)),
        ));
    }
    let code: i32 = match file.first.parse() {
        Ok(c) => c,
        Err(_) => return Some((None, Err(not_an_exit_code(&exit_file, &file.first)))),
    };
    if let Some(signal) = signal_of(code) {
        let error = TaskError::Signaled {
            what: format!("command {:?}", spec.program),
            signal,
            stderr_tail,
        };
        return Some((Some(code), Err(error)));
    }
    let outcome = if let Some(e) =
        failure::command_exit(&spec.program, code, spec.allow_failure, stderr_tail.clone())
    {
        Err(e)
    } else {
        // A file the user named is where it was named; the task directory's own is looked
        // for through its checked handle (a link there is not output).
        let there = |path: PathBuf, named: bool, name: &str| {
            let found = if named {
                path.exists()
            } else {
                paths.has_output(name)
            };
            found.then_some(path)
        };
        let output = CommandOutput {
            exit_code: code,
            stdout: there(stdout, spec.stdout.is_some(), TaskPaths::STDOUT),
            stderr: there(stderr, spec.stderr.is_some(), TaskPaths::STDERR),
            stderr_tail,
            elapsed,
        };
        crate::codec::encode(&output)
            .map(|b| vec![b])
            .map_err(|detail| TaskError::Encode {
                what: "the command's output".into(),
                detail,
            })
    };
    Some((Some(code), outcome))
}

/// The last lines of a stream: the file the user named (`named`), else the task directory's
/// own file `name`, read through its checked handle.
fn tail(paths: &TaskPaths, named: Option<&std::path::Path>, name: &str) -> String {
    const MAX: u64 = 4096;
    let text = match named {
        // Its last MAX bytes only (the file may be huge).
        Some(path) => {
            use std::io::{Read, Seek, SeekFrom};
            use std::os::unix::fs::OpenOptionsExt;
            let mut text = Vec::new();
            // (Never blocking on a FIFO the user named.)
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path);
            if let Ok(mut f) = opened {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
                let _ = f.take(MAX).read_to_end(&mut text);
            }
            text
        }
        None => paths.output_end(name, MAX),
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Whether the queue lists the job as still queued or running: its files are not read yet.
fn active(state: Option<&JobState>) -> bool {
    matches!(state, Some(JobState::Active(_) | JobState::Stuck(_)))
}

/// The poller's loop; ends never (it idles while nothing is watched).
pub(crate) async fn run(queue: Arc<Queue>) {
    let cfg = queue.config().clone();
    let scheduler = queue.scheduler();
    let title = scheduler.dialect.title();
    let mut interval = cfg.poll_interval;
    let mut cancelled = Vec::new();
    loop {
        if queue.watches.lock().unwrap().is_empty() {
            queue.poke.notified().await;
            interval = cfg.poll_interval;
        }
        tokio::time::sleep(interval).await;
        let states = match scheduler.client.active(queue.tag()).await {
            Ok(states) => {
                let watched = queue.watches.lock().unwrap().len();
                tracing::debug!(target: "pitch::poll", watched, listed = states.len(), "poll tick");
                states
            }
            Err(e) => {
                queue.warn(format!("{e} (will retry)"));
                continue;
            }
        };
        // Jobs that run elsewhere leave their files there: bring those of the jobs that are
        // no longer active here before reading them.
        if queue.transport().is_remote() {
            let files: Vec<PathBuf> = queue
                .watches
                .lock()
                .unwrap()
                .values()
                .filter(|w| !active(lookup_state(&states, w.job).as_ref()))
                .flat_map(|w| {
                    // A finished result here is never replaced (by a failure) from there.
                    let result = w
                        .paths
                        .finished_result()
                        .is_none()
                        .then(|| w.paths.result_file());
                    result.into_iter().chain([
                        w.paths.exit_file(),
                        w.paths.stdout(),
                        w.paths.stderr(),
                    ])
                })
                .collect();
            if !files.is_empty() {
                if let Err(e) = queue.transport().fetch(&files).await {
                    queue.warn(format!("could not fetch results (will retry): {e}"));
                    continue;
                }
            }
        }
        let mut changed = false;
        // Jobs queued for a reason that never clears, seen so on a second tick (one to
        // confirm: a reason can be stale for a moment): cancelled, their tasks rejected.
        let mut stuck = Vec::new();
        // Their tasks' ends, sent once the jobs are cancelled (the error says they were).
        let mut stuck_ends = Vec::new();
        {
            let mut watches = queue.watches.lock().unwrap();
            for (key, w) in watches.iter_mut() {
                match lookup_state(&states, w.job) {
                    Some(JobState::Stuck(reason)) => {
                        w.stuck_ticks += 1;
                        if w.stuck_ticks >= 2 {
                            stuck.push((*key, reason));
                        }
                    }
                    _ => w.stuck_ticks = 0,
                }
            }
            for (key, reason) in stuck {
                let Some(mut w) = watches.remove(&key) else {
                    continue;
                };
                let job = w.job;
                if let Some(tx) = w.tx.take() {
                    stuck_ends.push((
                        tx,
                        WatchEnd::Stuck(format!(
                            "{title} can never start job {job}: it is pending with reason \
                             {reason}; the job was cancelled"
                        )),
                    ));
                }
                cancelled.push(job);
                changed = true;
            }
        }
        if !cancelled.is_empty() {
            if let Err(e) = scheduler.client.cancel(&cancelled).await {
                queue.warn(format!("cancelling jobs that can never start failed: {e}"));
            }
            cancelled.clear();
        }
        for (tx, end) in stuck_ends {
            let _ = tx.send(end);
        }
        let mut to_ask = Vec::new();
        // Jobs the queue stopped listing this tick, without a result yet.
        let mut first_gone = Vec::new();
        {
            let mut watches = queue.watches.lock().unwrap();
            let now = Instant::now();
            let mut done = Vec::new();
            for (key, w) in watches.iter_mut() {
                let state = lookup_state(&states, w.job);
                if active(state.as_ref()) {
                    continue;
                }
                match collect(w, Known::Queue(state.as_ref()), title) {
                    Collected::Done(rec) => {
                        if let Some(tx) = w.tx.take() {
                            let _ = tx.send(WatchEnd::Done(rec));
                        }
                        done.push(*key);
                        continue;
                    }
                    Collected::Ask => {
                        to_ask.push((*key, w.job, state.clone()));
                        continue;
                    }
                    Collected::Nothing => {}
                }
                if state.is_none() && w.gone_since.is_none() {
                    first_gone.push((*key, w.job));
                }
                let since = *w.gone_since.get_or_insert(now);
                if now.duration_since(since) >= cfg.nfs_grace {
                    if w.reattached {
                        if let Some(tx) = w.tx.take() {
                            let _ = tx.send(WatchEnd::Lost);
                        }
                        done.push(*key);
                    } else {
                        to_ask.push((*key, w.job, state));
                    }
                }
            }
            for key in done {
                watches.remove(&key);
                changed = true;
            }
        }
        // A job that left the queue without ever running (Flux: a dependency that can never
        // be satisfied, an unsatisfiable request) has no result file to wait for: the
        // scheduler is asked at once, and such a job is reported now, not after nfs_grace.
        let mut learned_states = HashMap::new();
        if !first_gone.is_empty() {
            let jobs: Vec<JobRef> = first_gone.iter().map(|(_, job)| *job).collect();
            learned_states.extend(scheduler.client.never_ran(&jobs).await);
            for (key, job) in first_gone {
                if learned_states.contains_key(&job) {
                    to_ask.push((key, job, None));
                }
            }
        }
        // Jobs the queue no longer lists are asked about together.
        let unknown: Vec<JobRef> = to_ask
            .iter()
            .filter(|(_, job, state)| state.is_none() && !learned_states.contains_key(job))
            .map(|(_, job, _)| *job)
            .collect();
        if !unknown.is_empty() {
            learned_states.extend(scheduler.client.final_states(&unknown).await);
        }
        for (key, job, state) in to_ask {
            let learned = match state {
                Some(s) => Some((s, String::new())),
                None => learned_states.get(&job).cloned(),
            };
            let w = queue.watches.lock().unwrap().remove(&key);
            let Some(mut w) = w else { continue };
            // One last look: the result may have appeared meanwhile.
            let rec = match collect(&w, Known::Asked(learned.as_ref().map(|l| &l.0)), title) {
                Collected::Done(rec) => rec,
                Collected::Ask | Collected::Nothing => {
                    let (state, detail) = match learned {
                        Some((s, d)) => (s.into_reason(), d),
                        None => (
                            EndReason::forgotten(),
                            scheduler.dialect.forgotten.to_string(),
                        ),
                    };
                    w.paths.publish_result(ResultRecord {
                        outcome: Err(ended_by_scheduler(&w, state, detail)),
                    })
                }
            };
            if let Some(tx) = w.tx.take() {
                let _ = tx.send(WatchEnd::Done(rec));
            }
            changed = true;
        }
        interval = if changed {
            cfg.poll_interval
        } else {
            (interval.mul_f64(1.5)).min(cfg.max_poll_interval.max(cfg.poll_interval))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LaunchErrorKind;
    use crate::store::Store;
    use crate::task::TaskKey;

    fn watch(root: &std::path::Path, code: &str) -> Watch {
        let key = TaskKey::explicit("k");
        let paths = Store::at(root.to_path_buf(), false).task(&key);
        paths.create().unwrap();
        std::fs::write(paths.exit_file(), code).unwrap();
        let spec = TaskSpec {
            key,
            kind: TaskKind::Command(CommandSpec {
                program: "sleep".into(),
                args: vec!["600".into()],
                env: vec![],
                stdout: None,
                stderr: None,
                allow_failure: false,
            }),
            ranks: 1,
            threads: 1,
            env: vec![],
            cwd: None,
        };
        let job = JobRef {
            job_id: 42,
            array_index: Some(3),
        };
        Watch::new(
            job,
            paths,
            Arc::new(spec),
            false,
            None,
            oneshot::channel().0,
        )
    }

    fn outcome(c: Collected) -> ExitOutcome {
        match c {
            Collected::Done(rec) => rec.outcome,
            Collected::Ask => panic!("asked"),
            Collected::Nothing => panic!("nothing"),
        }
    }

    #[test]
    fn the_exit_file_gives_the_code_and_the_run_time_when_it_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path(), "0 1000000 1250000\n");
        let TaskKind::Command(spec) = &w.spec.kind else {
            unreachable!()
        };
        let (code, outcome) = exit_outcome(&w.paths, spec, None).unwrap();
        assert_eq!(code, Some(0));
        let out: CommandOutput = crate::codec::decode(&outcome.unwrap()[0]).unwrap();
        assert_eq!(out.elapsed, Duration::from_millis(250));
        // An older bash writes the code alone.
        std::fs::write(w.paths.exit_file(), "0  \n").unwrap();
        let (code, outcome) = exit_outcome(&w.paths, spec, None).unwrap();
        assert_eq!(code, Some(0));
        let out: CommandOutput = crate::codec::decode(&outcome.unwrap()[0]).unwrap();
        assert_eq!(out.elapsed, Duration::ZERO);
    }

    #[test]
    fn a_huge_exit_file_is_refused_after_a_bounded_read() {
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path(), "0");
        let TaskKind::Command(spec) = &w.spec.kind else {
            unreachable!()
        };
        // Sparse: 1 GiB of zeros costs no disk, and reading it whole would cost 1 GiB.
        std::fs::File::create(w.paths.exit_file())
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        match exit_outcome(&w.paths, spec, None) {
            Some((None, Err(TaskError::Store { detail, .. }))) => {
                assert!(detail.contains("not an exit file"), "{detail}");
                assert!(detail.len() < 100, "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_signal_death_in_a_job_slurm_ended_names_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path(), "143\n");
        match outcome(collect(
            &w,
            Known::Queue(Some(&JobState::Ended(EndReason::Cancelled))),
            "Slurm",
        )) {
            Err(TaskError::Scheduler { job_id, state, .. }) => {
                assert_eq!((job_id.as_str(), state), ("42_3", EndReason::Cancelled))
            }
            other => panic!("{other:?}"),
        }
        assert!(!w.paths.exit_file().exists());
        // The published result stands: a second look reads it.
        assert!(matches!(
            outcome(collect(&w, Known::Queue(None), "Slurm")),
            Err(TaskError::Scheduler { .. })
        ));
    }

    #[test]
    fn a_signal_death_of_a_job_gone_from_the_queue_asks_first() {
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path(), "137\n");
        assert!(matches!(
            collect(&w, Known::Queue(None), "Slurm"),
            Collected::Ask
        ));
        assert!(w.paths.exit_file().exists(), "nothing published yet");
        match outcome(collect(
            &w,
            Known::Asked(Some(&JobState::Ended(EndReason::OutOfMemory))),
            "Slurm",
        )) {
            Err(TaskError::Scheduler { state, .. }) => assert_eq!(state, EndReason::OutOfMemory),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_commands_own_failures_keep_their_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        // Killed by a signal while Slurm did not end the job (a segfault, say).
        let w = watch(dir.path(), "139\n");
        match outcome(collect(
            &w,
            Known::Asked(Some(&JobState::Ended(EndReason::Failed))),
            "Slurm",
        )) {
            Err(TaskError::Signaled { signal, what, .. }) => {
                assert_eq!((signal, what.as_str()), (11, "command \"sleep\""))
            }
            other => panic!("{other:?}"),
        }
        // Exited 3 before a cancel reached it: its own status stands.
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path(), "3\n");
        match outcome(collect(
            &w,
            Known::Queue(Some(&JobState::Ended(EndReason::Cancelled))),
            "Slurm",
        )) {
            Err(TaskError::CommandFailed { code, .. }) => assert_eq!(code, 3),
            other => panic!("{other:?}"),
        }
        // Nothing learned about a job gone from the queue: the command's own signal stands.
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path(), "143\n");
        match outcome(collect(&w, Known::Asked(None), "Slurm")) {
            Err(TaskError::Signaled { signal, .. }) => assert_eq!(signal, 15),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_the_job_script_recorded_gives_the_error_singlenode_gives() {
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path(), "exec:127 1 2\n");
        match outcome(collect(&w, Known::Queue(None), "Slurm")) {
            Err(TaskError::Launch { kind, what, .. }) => {
                assert_eq!((kind, what.as_str()), (LaunchErrorKind::NotFound, "sleep"))
            }
            other => panic!("{other:?}"),
        }
        let dir = tempfile::tempdir().unwrap();
        let w = watch(dir.path(), "cwd 1 2\n");
        assert!(matches!(
            outcome(collect(&w, Known::Queue(None), "Slurm")),
            Err(TaskError::Launch {
                kind: LaunchErrorKind::NoSuchCwd,
                ..
            })
        ));
        // A function task's worker that exited, or was killed, without a result.
        let dir = tempfile::tempdir().unwrap();
        let mut w = watch(dir.path(), "4\n");
        let spec = Arc::make_mut(&mut w.spec);
        spec.kind = TaskKind::Function {
            name: "f".into(),
            fingerprint: "x".into(),
            args: vec![],
        };
        match outcome(collect(&w, Known::Queue(None), "Slurm")) {
            Err(TaskError::WorkerDied { status, .. }) => assert_eq!(status, "exit code 4"),
            other => panic!("{other:?}"),
        }
        std::fs::write(w.paths.exit_file(), "134\n").unwrap();
        let _ = std::fs::remove_file(w.paths.result_file());
        match outcome(collect(
            &w,
            Known::Queue(Some(&JobState::Ended(EndReason::Failed))),
            "Slurm",
        )) {
            Err(TaskError::Signaled { signal, what, .. }) => {
                assert_eq!((signal, what.as_str()), (6, "the worker"))
            }
            other => panic!("{other:?}"),
        }
    }
}
