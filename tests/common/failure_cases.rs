//! The failing programs of the README's "Errors by cause" table, shared by the parity tests
//! of the Slurm suite (`tests/slurm/parity.rs`: SingleNode, SlurmCluster, SlurmJob) and of
//! the Flux suite (`tests/e2e/flux_cluster.rs`: SingleNode, FluxJob, FluxCluster), which run
//! them on each backend and compare the errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pitch::{Command, Executor, Resources, TaskError, TaskFuture};

pitch::task! {
    pub fn exits_with(code: i32) -> u32 { std::process::exit(code) }
}
pitch::task! {
    pub fn aborts() -> u32 { std::process::abort() }
}
pitch::task! {
    pub fn panics_with(message: String) -> u32 { panic!("{}", message) }
}
pitch::task! {
    pub fn returns_err(text: String) -> Result<u32, std::num::ParseIntError> { text.parse() }
}

/// An error without what differs by run (job ids, file paths under the test directory).
pub(crate) fn shape(e: &TaskError, dir: &Path) -> String {
    let text = match e {
        TaskError::Launch { what, kind, detail } => format!("Launch {what} {kind:?} {detail}"),
        TaskError::CommandFailed {
            program,
            code,
            stderr_tail,
        } => format!("CommandFailed {program} {code} {stderr_tail:?}"),
        TaskError::Signaled {
            what,
            signal,
            stderr_tail: _,
        } => format!("Signaled {what} {signal}"),
        TaskError::WorkerDied { status, .. } => format!("WorkerDied {status}"),
        TaskError::Panicked { message, .. } => format!("Panicked {message}"),
        TaskError::DependencyFailed { input, cause, .. } => {
            format!("DependencyFailed {input} <- {}", shape(cause, dir))
        }
        TaskError::Scheduler { state, .. } => format!("Scheduler {state}"),
        other => format!("{other}"),
    };
    text.replace(&dir.display().to_string(), "DIR")
}

/// Runs every failing case on `exe` (`dir`: where the test's files are, shared by the
/// backends); the error of each case, by name.
pub(crate) fn cases(exe: &Executor, dir: &Path, limit: Duration) -> BTreeMap<String, String> {
    let data = dir.join("not-executable");
    std::fs::write(&data, "just data\n").unwrap();
    let limited = exe.with_resources(Resources::new().run_time_max(limit));
    let commands: Vec<(&str, TaskFuture<pitch::CommandOutput>)> = vec![
        (
            "program not found",
            exe.submit_command(Command::new("pitch-no-such-program")),
        ),
        (
            "program not executable",
            exe.submit_command(Command::new(&data)),
        ),
        (
            "working directory missing",
            exe.submit_command(Command::new("true").cwd(dir.join("no-such-dir"))),
        ),
        (
            "non-zero exit",
            exe.submit_command(Command::new("sh").args(["-c", "echo bad >&2; exit 3"])),
        ),
        (
            "killed by signal 9",
            exe.submit_command(Command::new("sh").args(["-c", "kill -9 $$"])),
        ),
        (
            "time limit",
            limited.submit_command(Command::new("sleep").arg("600")),
        ),
    ];
    let functions: Vec<(&str, TaskFuture<u32>)> = vec![
        ("worker exits 4", exits_with::submit(exe, 4)),
        ("worker aborts", aborts::submit(exe)),
        ("panic", panics_with::submit(exe, "no luck".to_string())),
        ("Err", returns_err::submit(exe, "x".to_string())),
    ];
    let upstream = exe.submit_command(Command::new("sh").args(["-c", "exit 5"]));
    let dependent = exe.submit_command(Command::new("true").after(&upstream));
    let mut found = BTreeMap::new();
    let mut put = |name: &str, r: Result<(), TaskError>| {
        let text = match r {
            Ok(()) => "succeeded".to_string(),
            Err(e) => shape(&e, dir),
        };
        found.insert(name.to_string(), text);
    };
    for (name, f) in commands {
        put(name, f.result().map(|_| ()));
    }
    for (name, f) in functions {
        put(name, f.result().map(|_| ()));
    }
    put("dependency failed", dependent.result().map(|_| ()));
    found
}

/// Where the errors of `others` differ from SingleNode's (`single`), one line each.
pub(crate) fn differences(
    single: &BTreeMap<String, String>,
    others: &[(&str, &BTreeMap<String, String>)],
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, expected) in single {
        for (backend, found) in others {
            match found.get(name) {
                Some(e) if e == expected => {}
                other => diffs.push(format!(
                    "{name}: SingleNode {expected:?}, {backend} {other:?}"
                )),
            }
        }
    }
    diffs
}
