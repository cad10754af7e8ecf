//! The poller's unit tests: the `exit` file read ([`exit_outcome`]) and what a job's files
//! resolve to given what the scheduler said ([`collect`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::collect::{collect, Collected, Known};
use super::{exit_outcome, ExitOutcome, Watch};
use crate::backend::scheduler::{JobRef, JobState};
use crate::command::CommandOutput;
use crate::error::{LaunchErrorKind, TaskError};
use crate::scheduler::EndReason;
use crate::store::Store;
use crate::task::{CommandSpec, TaskKey, TaskKind, TaskSpec};

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
