//! Commands in pilot jobs (`block_allocation` on SlurmCluster and FluxCluster): the driver
//! hands a command task to a connected pilot as a [`ToWorker::Command`] frame
//! ([`pilot_task`]), and the pilot runs it as its child process ([`run_here`]) the way the
//! SingleNode backend runs a command (`posix_spawn`, standard input `/dev/null`, its own
//! process group, `child::supervise` with the same sinks, time limit and warning), then
//! answers with the task's outcome: the encoded [`crate::CommandOutput`], or the error the
//! same cause gives on every backend (`single_node::command_outcome`,
//! `single_node::spawn_failure`). The driver publishes it in the task's directory, as the
//! poller does for a command job, so that `read_stdout`, `pitch status`, `pitch gc` and a
//! rerun from the cache see what they see after a job.
//!
//! Which commands go to the pilots and which still become jobs of their own is
//! `Pilots::command_refused`'s decision.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::protocol::{self, CommandRun, ToWorker};
use super::PoolTask;
use crate::backend::child::{self, End, Ticket};
use crate::backend::output::Sink;
use crate::backend::single_node::{command_outcome, spawn_failure};
use crate::backend::spawn::{self, Launch};
use crate::backend::Job;
use crate::error::{LaunchErrorKind, TaskError};
use crate::future::Slot;
use crate::store::{ResultRecord, Store, TaskPaths};
use crate::task::TaskKind;
use crate::trust::Policy;
use std::path::PathBuf;

/// How long after a command's own time limit its pilot has to answer (the pilot stops the
/// command at its limit, with SIGKILL [`child::KILL_GRACE`] later, and then drains its
/// output) before the driver lets the pilot go.
pub(super) const ANSWER_GRACE: Duration = Duration::from_secs(30);

/// A command task as a pilot runs it (its own time limit `limit`), with its frame; `None`
/// when it ended here (`done` has its record).
pub(super) fn pilot_task(job: Job, limit: Option<Duration>) -> Option<(PoolTask, Arc<Slot>)> {
    let Job {
        spec,
        paths,
        resources,
        slot,
        started,
        done,
        ..
    } = job;
    let TaskKind::Command(c) = &spec.kind else {
        unreachable!("function tasks are built by task_of");
    };
    // The warning before the task's own limit; one it inherits is the pilot's (its `Start`).
    let warning = limit
        .zip(resources.checkpoint_grace)
        .map(|(limit, grace)| limit.saturating_sub(grace));
    let run = CommandRun {
        key: spec.key,
        spec: c.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone(),
        stdout: c.stdout.clone().unwrap_or_else(|| paths.stdout()),
        stderr: c.stderr.clone().unwrap_or_else(|| paths.stderr()),
        cache: paths.root().to_path_buf(),
        trust_group: paths.trust().trust_group,
        limit,
        warning,
    };
    let frame = match protocol::frame(&ToWorker::Command(run)) {
        Ok(f) => f,
        Err(detail) => {
            let error = TaskError::Encode {
                what: "the command for its pilot".into(),
                detail,
            };
            done.finish(paths.publish_result(ResultRecord {
                outcome: Err(error),
            }));
            return None;
        }
    };
    let mut task = PoolTask::queued(
        spec.key,
        c.program_name(),
        frame,
        limit,
        paths,
        done,
        started,
    );
    task.command = true;
    Some((task, slot))
}

/// The command this pilot is running, for its watchdog ([`kill_running`]).
static RUNNING: Mutex<Option<Arc<Ticket>>> = Mutex::new(None);

/// Kills the process group of the command this pilot runs, if any: the pilot is leaving
/// (its driver is gone, or let it go after a cancel), and a command must not outlive it.
pub(super) fn kill_running() {
    if let Some(ticket) = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        ticket.kill();
    }
}

/// Runs a command here, in the pilot, to its end; its outcome (the encoded output, or its
/// error), as the SingleNode backend would have it.
pub(super) fn run_here(run: CommandRun) -> Result<Vec<u8>, TaskError> {
    let CommandRun {
        key,
        spec,
        env,
        cwd,
        stdout,
        stderr,
        cache,
        trust_group,
        limit,
        warning,
    } = run;
    let vars: Vec<(&str, &str)> = env
        .iter()
        .chain(&spec.env)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The task directory's files are made afresh, relative to its checked handle (a job
    // script removes them first too); files the user named are truncated when opened.
    let dir = if spec.stdout.is_none() || spec.stderr.is_none() {
        let paths = Store::at(cache, false)
            .trusting(Policy { trust_group })
            .task(&key);
        let dir = paths.output_dir()?;
        for (name, named) in [
            (TaskPaths::STDOUT, &spec.stdout),
            (TaskPaths::STDERR, &spec.stderr),
        ] {
            if named.is_none() {
                let _ = dir.unlink(name);
            }
        }
        Some(Arc::new(dir))
    } else {
        None
    };
    let launch = Launch {
        program: &spec.program,
        args: &spec.args,
        env: &vars,
        cwd: cwd.as_deref(),
    };
    // The files the user named are opened first: one that is refused (a link, another
    // user's file) fails the command before it runs, naming it.
    let launch_error = |detail: String| TaskError::Launch {
        what: spec.program.clone(),
        kind: LaunchErrorKind::Other,
        detail,
    };
    let named = |path: PathBuf, named: bool| named.then_some(path);
    let stdout = Sink::for_stream(
        named(stdout, spec.stdout.is_some()),
        dir.as_ref(),
        TaskPaths::STDOUT,
    )
    .map_err(launch_error)?;
    let stderr = Sink::for_stream(
        named(stderr, spec.stderr.is_some()),
        dir.as_ref(),
        TaskPaths::STDERR,
    )
    .map_err(launch_error)?;
    let ticket = Arc::new(Ticket::default());
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(ticket.clone());
    let child = match ticket.start(|| spawn::spawn_with(&launch, false)) {
        Some(Ok(child)) => child,
        Some(Err(e)) => return Err(spawn_failure(&spec.program, cwd.as_deref(), 1, &e)),
        None => return Err(TaskError::Cancelled),
    };
    // The pilot's own warning (its wall time) comes to a command that inherits it.
    let warn = match (warning, crate::checkpoint::process_warning_in()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let finished = child::supervise(child, stdout, stderr, limit, warn, &ticket);
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).take();
    let end = finished.end.map_err(|e| TaskError::Launch {
        what: spec.program.clone(),
        kind: LaunchErrorKind::Other,
        detail: e.to_string(),
    })?;
    match end {
        End::TimedOut(limit) => Err(TaskError::Timeout { limit }),
        End::Cancelled => Err(TaskError::Cancelled),
        End::Exited(status) => command_outcome(
            &spec,
            false,
            status,
            finished.elapsed,
            finished.stdout.path,
            finished.stderr.path,
            finished.stderr.tail,
        )
        .map(|mut values| values.remove(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{CommandSpec, TaskKey};

    /// The task directory of the tests' command in the cache directory `root`, created.
    fn task(root: &std::path::Path) -> TaskPaths {
        let paths = Store::at(root.to_path_buf(), false).task(&TaskKey::from_bytes([5; 16]));
        paths.create().unwrap();
        paths
    }

    fn run(script: &str, dir: &std::path::Path, limit: Option<Duration>) -> CommandRun {
        let paths = task(dir);
        CommandRun {
            key: TaskKey::from_bytes([5; 16]),
            spec: CommandSpec {
                program: "sh".into(),
                args: vec!["-c".into(), script.into()],
                env: vec![("B".into(), "own".into())],
                stdout: None,
                stderr: None,
                allow_failure: false,
            },
            env: vec![("A".into(), "task".into()), ("B".into(), "task".into())],
            cwd: Some(dir.to_path_buf()),
            stdout: paths.stdout(),
            stderr: paths.stderr(),
            cache: dir.to_path_buf(),
            trust_group: false,
            limit,
            warning: None,
        }
    }

    /// What a pilot answers: the command's output, with its files, its environment (the
    /// command's own variables after the task's) and working directory.
    #[test]
    fn a_command_runs_with_its_env_cwd_and_files() {
        let d = tempfile::tempdir().unwrap();
        let paths = task(d.path());
        // A stale stderr of an earlier run goes: this run writes none.
        std::fs::write(paths.stderr(), "old").unwrap();
        let bytes = run_here(run("echo $A $B $(pwd)", d.path(), None)).unwrap();
        let out: crate::CommandOutput = crate::codec::decode(&bytes).unwrap();
        assert_eq!(out.exit_code, 0);
        let cwd = d.path().canonicalize().unwrap();
        assert_eq!(
            out.read_stdout().unwrap(),
            format!("task own {}\n", cwd.display())
        );
        assert_eq!(out.stdout, Some(paths.stdout()));
        assert_eq!(out.stderr, None);
        assert!(!paths.stderr().exists());
    }

    /// The same causes give the errors every backend gives (`failure.rs`).
    #[test]
    fn failures_are_the_errors_of_every_backend() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            run_here(run("echo problem >&2; exit 3", d.path(), None)),
            Err(TaskError::CommandFailed {
                program: "sh".into(),
                code: 3,
                stderr_tail: "problem".into()
            })
        );
        assert!(matches!(
            run_here(run("exit 75", d.path(), None)),
            Err(TaskError::Checkpointed { .. })
        ));
        assert!(matches!(
            run_here(run("kill -9 $$", d.path(), None)),
            Err(TaskError::Signaled { signal: 9, .. })
        ));
        let limit = Duration::from_millis(300);
        assert_eq!(
            run_here(run("sleep 5", d.path(), Some(limit))),
            Err(TaskError::Timeout { limit })
        );
        let mut missing = run("", d.path(), None);
        missing.spec.program = "pitch-no-such-program".into();
        assert_eq!(
            run_here(missing),
            Err(crate::backend::failure::program_not_found(
                "pitch-no-such-program"
            ))
        );
        let mut nowhere = run("true", d.path(), None);
        nowhere.cwd = Some(d.path().join("gone"));
        assert!(matches!(
            run_here(nowhere),
            Err(TaskError::Launch {
                kind: LaunchErrorKind::NoSuchCwd,
                ..
            })
        ));
    }

    /// A link planted for the task directory (by a member of a `trust_group` cache's group):
    /// the command does not run, the error names the link, and nothing is written through it.
    #[test]
    fn a_link_planted_for_the_task_directory_is_refused_and_nothing_runs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        let paths = task(&root);
        let marker = d.path().join("ran");
        let mut r = run(
            &format!("echo FORGED; touch {}", marker.display()),
            &root,
            None,
        );
        r.cwd = Some(d.path().to_path_buf());
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::remove_dir(paths.dir()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, paths.dir()).unwrap();
        let err = run_here(r).unwrap_err().to_string();
        assert!(err.contains(&paths.dir().display().to_string()), "{err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!marker.exists(), "the command ran");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
