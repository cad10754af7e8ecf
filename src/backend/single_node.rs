//! [`SingleNode`]: each task is a child process of the driver on this machine. Function tasks
//! re-execute the running binary as a worker; commands run directly; `cores = N` runs either
//! under `mpiexec -n N`. The same backend runs tasks as `srun --exact` steps inside a Slurm
//! allocation and as `flux run` jobs inside a Flux instance ([`Launcher`], in
//! `launcher.rs`): the launcher is the child process, so the driver still wakes on its exit.
//! Children run on the threads of a [`Pool`], which does the slot accounting; each thread
//! sleeps in `poll(2)` until its child writes or exits: there is no polling loop.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use super::child::{self, CancelOutcome, End, Ticket, KILL_GRACE};
use super::exe;
use super::failure::{self, signal_of};
use super::flux::{self, job::NotRun};
pub(crate) use super::launcher::Launcher;
use super::output::Sink;
use super::pool::{Pool, Work};
use super::spawn::{self, Launch};
use super::{Backend, BoxFuture, Done, Job};
use crate::command::CommandOutput;
use crate::error::{Error, LaunchErrorKind, TaskError};
use crate::resources::Resources;
use crate::store::{self, ResultRecord, Store, TaskPaths};
use crate::task::{CommandSpec, TaskKind, TaskSpec};
use crate::worker;

pub(crate) struct SingleNode {
    launcher: Launcher,
    max_cores: u32,
    pool: Pool,
    /// The running binary's path, for launchers (mpiexec) that need a real path.
    exe: PathBuf,
    /// What the user should hear once the executor starts (why Flux jobs are not submitted
    /// through libflux).
    notice: Option<String>,
}

impl SingleNode {
    /// `slots` of this backend's slots for a persistent worker while it runs tasks (see
    /// [`Pool::lease`]); `None` when none can be had.
    pub(crate) fn lease(&self, slots: u32) -> Option<super::pool::Lease> {
        self.pool.lease(slots)
    }

    /// Whether tasks (commands) wait for slots.
    pub(crate) fn waiting(&self) -> bool {
        self.pool.waiting()
    }

    pub(crate) fn new(
        launcher: Launcher,
        max_cores: u32,
        max_workers: Option<u32>,
    ) -> Result<SingleNode, Error> {
        let exe = exe::path().map_err(Error::Config)?.to_path_buf();
        Ok(SingleNode {
            launcher: launcher.clone(),
            max_cores,
            pool: Pool::new(launcher.name(), max_cores, max_workers),
            exe,
            notice: None,
        })
    }

    /// A warning event for when the executor starts.
    pub(crate) fn notice(&mut self, message: String) {
        self.notice = Some(message);
    }

    /// Lets `factor` times `max_cores` slots of tasks be on their way at once: for Flux jobs
    /// submitted through libflux into an instance whose cores are all pitch's, Flux's own
    /// scheduler keeps the cores' limit, and the next jobs wait in its queue, ready to start
    /// the moment cores free up, instead of being submitted only then. Tasks bigger than
    /// `max_cores` are still refused.
    pub(crate) fn queue_ahead(&mut self, factor: u32) {
        let slots = self.max_cores.saturating_mul(factor.max(1));
        self.pool = Pool::new(self.launcher.name(), slots, None);
    }
}

fn status_text(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

impl SingleNode {
    /// How this backend starts processes.
    pub(crate) fn launcher(&self) -> &Launcher {
        &self.launcher
    }

    /// The program and arguments that run the task with `ranks` ranks (through the launcher
    /// unless `direct`: a Flux job submitted through libflux runs the program itself); an
    /// error when the worker binary cannot be found.
    fn argv(
        &self,
        spec: &TaskSpec,
        resources: &Resources,
        paths: &TaskPaths,
        direct: bool,
    ) -> Result<(String, Vec<String>), String> {
        let (program, args): (String, Vec<String>) = match &spec.kind {
            TaskKind::Function { .. } => {
                let root = paths.root().display().to_string();
                let args = vec![
                    worker::WORKER_ARG.to_string(),
                    "run".to_string(),
                    root,
                    spec.key.to_string(),
                ];
                if direct || spec.ranks > 1 || self.launcher != Launcher::Local {
                    (self.exe.display().to_string(), args)
                } else {
                    // The running binary, even if a rebuild replaced the file on disk.
                    (
                        exe::local_worker(&Store::at(paths.root().to_path_buf(), paths.durable()))?,
                        args,
                    )
                }
            }
            TaskKind::Command(c) => (c.program.clone(), c.args.clone()),
        };
        if direct {
            return Ok((program, args));
        }
        Ok(self
            .launcher
            .wrap(program, args, spec.ranks, spec.threads, resources))
    }

    /// Queues the task on the pool. The pool thread that runs it delivers its record; a
    /// cancel is handled on the cancelling thread: a queued task ends at once, a running one
    /// gets SIGTERM and, [`KILL_GRACE`] later, SIGKILL. Nothing on the engine's runtime waits.
    fn start(self: Arc<Self>, job: Job) {
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

    /// Runs the task on a pool thread: spawns the child, watches it to its end and publishes
    /// its result. `None` from the ticket means it was cancelled before it started.
    fn run_blocking(&self, job: Job, ticket: &Ticket) -> ResultRecord {
        let Job {
            spec,
            paths,
            resources,
            started,
            stdin,
            ..
        } = job;
        let fail = |e| paths.publish_result(ResultRecord { outcome: Err(e) });
        // A Flux job through libflux, unless the task reads the driver's stdin (only
        // `flux run` forwards it).
        let native = matches!(self.launcher, Launcher::Flux { native: true, .. }) && !stdin;
        let (program, args) = match self.argv(&spec, &resources, &paths, native) {
            Ok(argv) => argv,
            Err(detail) => {
                return fail(TaskError::Launch {
                    what: "the worker binary".into(),
                    kind: LaunchErrorKind::Other,
                    detail,
                })
            }
        };
        let command_spec: Option<&CommandSpec> = match &spec.kind {
            TaskKind::Command(c) => Some(c),
            TaskKind::Function { .. } => None,
        };
        // Output files named by the user are created even when empty; the task directory's
        // only when something was written.
        let user_stdout = command_spec.and_then(|c| c.stdout.clone());
        let user_stderr = command_spec
            .and_then(|c| c.stderr.clone())
            .or_else(|| resources.error_log_file.clone());

        let mut env: Vec<(&str, &str)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A function task's worker is told when it is warned too (see `worker::WARN_AT_ENV`).
        let warn_at = warning_after(&resources).map(|after| {
            (std::time::SystemTime::now() + after)
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
                .to_string()
        });
        match command_spec {
            Some(c) => env.extend(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            None => {
                env.push((worker::WORKER_ENV, "1"));
                if paths.durable() {
                    env.push((worker::DURABLE_ENV, "1"));
                }
                if paths.trust().trust_group {
                    env.push((worker::TRUST_GROUP_ENV, "1"));
                }
                if let Some(at) = &warn_at {
                    env.push((worker::WARN_AT_ENV, at));
                }
            }
        }
        // A launcher (srun, flux run, mpiexec) between pitch and the command would report a
        // program it cannot execute as its own failure (srun: exit code 2): the program is
        // looked up first, as `posix_spawn` does here, for the same error on every backend.
        let launched = native || command_spec.is_some_and(|c| c.program != program);
        if let Some(c) = command_spec.filter(|_| launched) {
            if let Some(dir) = spec.cwd.as_ref().filter(|d| !d.is_dir()) {
                return fail(failure::no_such_cwd(&c.program, Some(dir)));
            }
            let path = env
                .iter()
                .rev()
                .find(|(k, _)| *k == "PATH")
                .map(|(_, v)| std::ffi::OsString::from(v))
                .or_else(|| std::env::var_os("PATH"));
            if let Err(e) = failure::check_program(&c.program, path.as_deref(), spec.cwd.as_deref())
            {
                return fail(e);
            }
        }
        let stdout_to = user_stdout.clone().unwrap_or_else(|| paths.stdout());
        let stderr_to = user_stderr.clone().unwrap_or_else(|| paths.stderr());
        // The task directory's own files are created relative to its checked handle.
        let dir = if user_stdout.is_none() || user_stderr.is_none() {
            match paths.output_dir() {
                Ok(dir) => Some(std::sync::Arc::new(dir)),
                Err(e) => return fail(e),
            }
        } else {
            None
        };
        if native {
            let env = flux::job_environment(&env);
            let cwd = match spec.cwd.clone().map_or_else(std::env::current_dir, Ok) {
                Ok(cwd) => cwd,
                Err(e) => {
                    return fail(TaskError::Launch {
                        what: "the Flux job".into(),
                        kind: LaunchErrorKind::Other,
                        detail: format!("the driver's working directory: {e}"),
                    })
                }
            };
            let req = flux::JobRequest {
                program: &program,
                args: &args,
                ranks: spec.ranks,
                threads: spec.threads,
                resources: &resources,
                env: &env,
                cwd: &cwd,
                stdout: &stdout_to,
                stderr: &stderr_to,
            };
            let output = |path: PathBuf, named: bool| flux::job::Output {
                path,
                dir: (!named).then(|| dir.clone()).flatten(),
            };
            let ran = flux::job::run(
                &req,
                output(stdout_to.clone(), user_stdout.is_some()),
                output(stderr_to.clone(), user_stderr.is_some()),
                resources.run_time_max,
                warning_after(&resources),
                ticket,
                |id| started(Some(id.to_string())),
            );
            return match ran {
                Ok(finished) => self.outcome(
                    &spec,
                    &paths,
                    &resources,
                    command_spec,
                    &program,
                    finished,
                    true,
                ),
                Err(NotRun::Cancelled) => cancelled(&paths),
                Err(NotRun::Refused(reason)) => fail(TaskError::Rejected {
                    backend: self.launcher.name().into(),
                    reason,
                }),
                Err(NotRun::Failed(detail)) => fail(TaskError::Launch {
                    what: "the Flux job".into(),
                    kind: LaunchErrorKind::Other,
                    detail,
                }),
            };
        }
        let launch = Launch {
            program: &program,
            args: &args,
            env: &env,
            cwd: spec.cwd.as_deref(),
        };
        // The files the user named are opened first: one that is refused (a link, another
        // user's file) fails the task before it runs, naming it.
        let sinks = Sink::for_stream(user_stdout.clone(), dir.as_ref(), TaskPaths::STDOUT)
            .and_then(|out| {
                let err = Sink::for_stream(user_stderr.clone(), dir.as_ref(), TaskPaths::STDERR)?;
                Ok((out, err))
            });
        let (stdout_sink, stderr_sink) = match sinks {
            Ok(sinks) => sinks,
            Err(detail) => {
                return fail(TaskError::Launch {
                    what: command_spec.map_or(program, |c| c.program.clone()),
                    kind: LaunchErrorKind::Other,
                    detail,
                })
            }
        };
        let child = match ticket.start(|| spawn::spawn_with(&launch, stdin)) {
            None => return cancelled(&paths),
            Some(Ok(child)) => child,
            Some(Err(e)) => {
                return fail(spawn_failure(&program, spec.cwd.as_deref(), spec.ranks, &e))
            }
        };
        started(None);
        let finished = child::supervise(
            child,
            stdout_sink,
            stderr_sink,
            resources.run_time_max,
            warning_after(&resources),
            ticket,
        );
        self.outcome(
            &spec,
            &paths,
            &resources,
            command_spec,
            &program,
            finished,
            false,
        )
    }

    /// The task's result from how its process (or, `native`, its Flux job submitted through
    /// libflux) ended, published.
    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &self,
        spec: &TaskSpec,
        paths: &TaskPaths,
        resources: &Resources,
        command_spec: Option<&CommandSpec>,
        program: &str,
        finished: child::Finished,
        native: bool,
    ) -> ResultRecord {
        let fail = |e| paths.publish_result(ResultRecord { outcome: Err(e) });
        let program = program.to_string();
        let elapsed = finished.elapsed;
        let stderr_tail = self.launcher.own_lines_removed(&finished.stderr.tail);
        // Through a launcher, a death by signal N comes back as exit code 128 + N.
        let through_launcher = self.launcher != Launcher::Local || spec.ranks > 1;
        let end = match finished.end {
            Ok(end) => end,
            Err(e) => {
                return fail(TaskError::Launch {
                    what: program,
                    kind: LaunchErrorKind::Other,
                    detail: e.to_string(),
                })
            }
        };

        let outcome = match end {
            End::TimedOut(limit) => Err(TaskError::Timeout { limit }),
            // Flux's own time limit ended the job (it is rounded up to whole seconds, so
            // pitch's timer normally fires first): still pitch's timeout, not a failure.
            End::Exited(status)
                if matches!(self.launcher, Launcher::Flux { .. })
                    && !status.success()
                    && resources.run_time_max.is_some_and(|limit| elapsed >= limit) =>
            {
                Err(TaskError::Timeout {
                    limit: resources.run_time_max.unwrap_or_default(),
                })
            }
            End::Cancelled => Err(TaskError::Cancelled),
            // Flux refused the job (an unknown queue, an unsatisfiable request), as `flux run`
            // says on its stderr: a submission the scheduler rejected, as a refused `flux
            // batch` is, not the task failing with exit code 1 (through libflux, the job's
            // eventlog said so: `NotRun::Refused`).
            End::Exited(status)
                if !native
                    && status.code() == Some(1)
                    && self.launcher.refusal(&stderr_tail).is_some() =>
            {
                Err(TaskError::Rejected {
                    backend: self.launcher.name().into(),
                    reason: format!(
                        "{program} run refused the job: {}",
                        self.launcher.refusal(&stderr_tail).unwrap_or_default()
                    ),
                })
            }
            End::Exited(status) => match command_spec {
                Some(c) => command_outcome(
                    c,
                    through_launcher,
                    status,
                    elapsed,
                    finished.stdout.path,
                    finished.stderr.path,
                    stderr_tail,
                ),
                None if spec.ranks > 1 => {
                    let record = paths.gather_ranks(spec.ranks);
                    return match record.outcome {
                        Err(TaskError::Rank { cause, .. })
                            if matches!(*cause, TaskError::WorkerDied { .. })
                                && !status.success() =>
                        {
                            // No rank wrote anything: the launcher itself failed.
                            fail(TaskError::Launch {
                                what: program.clone(),
                                kind: LaunchErrorKind::Other,
                                detail: format!(
                                    "{}{}",
                                    status_text(&status),
                                    if stderr_tail.is_empty() {
                                        String::new()
                                    } else {
                                        format!("; stderr ends with:\n{stderr_tail}")
                                    }
                                ),
                            })
                        }
                        _ => record,
                    };
                }
                None => match paths.read_result() {
                    Ok(record) => return record,
                    Err(store::FormatError::Missing) => {
                        Err(worker_died(&status, through_launcher, stderr_tail))
                    }
                    Err(e) => Err(e.into_task_error(&paths.result_file())),
                },
            },
        };
        paths.publish_result(ResultRecord { outcome })
    }
}

/// When (after its start) a task is warned, with SIGUSR1 to its process group, that its time
/// limit is `checkpoint_grace` away: only with both set (`Resources::validate_basic` refuses
/// a grace that is not shorter than the limit). A launcher passes the signal on: srun and
/// `flux run` to the job step's tasks, mpiexec to its ranks.
pub(crate) fn warning_after(resources: &Resources) -> Option<Duration> {
    resources
        .checkpoint_grace
        .zip(resources.run_time_max)
        .map(|(grace, limit)| limit.saturating_sub(grace))
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

/// The error of a `program` (a task's own, or the launcher in front of it, for `ranks`
/// ranks) that `posix_spawn` could not start in `cwd`.
pub(crate) fn spawn_failure(
    program: &str,
    cwd: Option<&std::path::Path>,
    ranks: u32,
    e: &std::io::Error,
) -> TaskError {
    if let Some(dir) = cwd.filter(|d| !d.is_dir()) {
        return failure::no_such_cwd(program, Some(dir));
    }
    let (kind, detail) = match e.kind() {
        std::io::ErrorKind::NotFound => {
            let detail = if program == "srun" || program == "flux" {
                format!("{program} was not found on PATH")
            } else if program == "mpiexec" {
                format!("mpiexec was not found on PATH: cores = {ranks} needs OpenMPI's mpiexec")
            } else {
                return failure::program_not_found(program);
            };
            (LaunchErrorKind::NotFound, detail)
        }
        std::io::ErrorKind::PermissionDenied => (LaunchErrorKind::PermissionDenied, e.to_string()),
        _ => (LaunchErrorKind::Other, e.to_string()),
    };
    TaskError::Launch {
        what: program.to_string(),
        kind,
        detail,
    }
}

/// Publishes the failure of pitch itself (not of the task) to start or watch the task.
fn pitch_failed(paths: &TaskPaths, detail: String) -> ResultRecord {
    paths.publish_result(ResultRecord {
        outcome: Err(TaskError::Launch {
            what: "pitch".into(),
            kind: LaunchErrorKind::Other,
            detail,
        }),
    })
}

fn cancelled(paths: &TaskPaths) -> ResultRecord {
    paths.publish_result(ResultRecord {
        outcome: Err(TaskError::Cancelled),
    })
}

fn worker_died(status: &ExitStatus, through_launcher: bool, stderr_tail: String) -> TaskError {
    use std::os::unix::process::ExitStatusExt;
    let reported = status
        .code()
        .filter(|_| through_launcher)
        .and_then(signal_of);
    match status.signal().or(reported) {
        Some(signal) => TaskError::Signaled {
            what: "the worker".into(),
            signal,
            stderr_tail,
        },
        None => status
            .code()
            .and_then(|code| failure::requeue_requested("the worker", code))
            .unwrap_or_else(|| TaskError::WorkerDied {
                status: status_text(status),
                stderr_tail,
            }),
    }
}

pub(crate) fn command_outcome(
    spec: &CommandSpec,
    through_launcher: bool,
    status: ExitStatus,
    elapsed: Duration,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
    stderr_tail: String,
) -> Result<Vec<Vec<u8>>, TaskError> {
    use std::os::unix::process::ExitStatusExt;
    let reported = status
        .code()
        .filter(|_| through_launcher)
        .and_then(signal_of);
    let code = match (status.code(), status.signal().or(reported)) {
        (_, Some(signal)) => {
            return Err(TaskError::Signaled {
                what: format!("command {:?}", spec.program),
                signal,
                stderr_tail,
            })
        }
        (Some(c), None) => c,
        _ => -1,
    };
    if let Some(e) =
        failure::command_exit(&spec.program, code, spec.allow_failure, stderr_tail.clone())
    {
        return Err(e);
    }
    let output = CommandOutput {
        exit_code: code,
        stdout,
        stderr,
        stderr_tail,
        elapsed,
    };
    let bytes = crate::codec::encode(&output).map_err(|detail| TaskError::Encode {
        what: "the command's output".into(),
        detail,
    })?;
    Ok(vec![bytes])
}

impl Backend for SingleNode {
    fn name(&self) -> &'static str {
        self.launcher.name()
    }

    fn attach(
        &self,
        events: crate::event::Events,
        _preparing: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        if let Some(message) = &self.notice {
            events.emit(crate::event::EventKind::Warning {
                message: message.clone(),
            });
        }
    }

    fn check(&self, r: &Resources) -> Result<Vec<&'static str>, String> {
        self.launcher.check(r, self.max_cores)
    }

    fn run(self: Arc<Self>, job: Job) -> BoxFuture<()> {
        self.start(job);
        Box::pin(std::future::ready(()))
    }
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
