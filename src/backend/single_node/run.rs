//! A task run on a pool thread ([`SingleNode::run_blocking`]): its program and arguments
//! through the launcher, its environment and output files, then the child spawned and
//! supervised to its end, or, for FluxJob, a Flux job submitted through libflux; and when
//! a task is warned of its time limit ([`warning_after`]).

use std::path::PathBuf;
use std::time::Duration;

use super::start::cancelled;
use super::{spawn_failure, Launcher, SingleNode};
use crate::backend::child::{self, Ticket};
use crate::backend::exe;
use crate::backend::failure;
use crate::backend::flux::{self, job::NotRun};
use crate::backend::output::Sink;
use crate::backend::spawn::{self, Launch};
use crate::backend::Job;
use crate::error::{LaunchErrorKind, TaskError};
use crate::resources::Resources;
use crate::store::{ResultRecord, Store, TaskPaths};
use crate::task::{CommandSpec, TaskKind, TaskSpec};
use crate::worker;

impl SingleNode {
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

    /// Runs the task on a pool thread: spawns the child, watches it to its end and publishes
    /// its result. `None` from the ticket means it was cancelled before it started.
    pub(super) fn run_blocking(&self, job: Job, ticket: &Ticket) -> ResultRecord {
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
