//! The `exit` file a job script writes when its task left no result: a command's outcome
//! ([`exit_outcome`], also read on re-attach and by `pitch status`), or the death of a
//! function task's worker ([`worker_outcome`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::backend::failure::{self, signal_of};
use crate::command::CommandOutput;
use crate::error::TaskError;
use crate::store::TaskPaths;
use crate::task::CommandSpec;

/// A command's outcome as a result record holds it: its encoded output, or the error.
pub(crate) type ExitOutcome = Result<Vec<Vec<u8>>, TaskError>;

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
pub(super) fn worker_outcome(paths: &TaskPaths) -> Option<(Option<i32>, ExitOutcome)> {
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
