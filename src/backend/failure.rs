//! One cause, one error: the errors every backend builds the same way for a program that
//! could not be started, whoever saw it fail (`posix_spawn` on SingleNode, the job script's
//! bash on SlurmCluster and FluxCluster, a check before `srun` or `flux run` on SlurmJob and
//! FluxJob), the death by signal that a shell or launcher reports as exit code 128 + N, and a
//! command's exit code ([`command_exit`]: [`REQUEUE_EXIT_CODE`] asks to be resubmitted).
//! The README's "Errors by cause" table lists them.

use std::path::Path;

use crate::error::{LaunchErrorKind, TaskError, REQUEUE_EXIT_CODE};

/// `program` does not exist (or is not on PATH).
pub(crate) fn program_not_found(program: &str) -> TaskError {
    TaskError::Launch {
        what: program.to_string(),
        kind: LaunchErrorKind::NotFound,
        detail: if program.contains('/') {
            "no such program".to_string()
        } else {
            "no such program (not found on PATH)".to_string()
        },
    }
}

/// `program` exists but may not be executed.
pub(crate) fn program_not_executable(program: &str) -> TaskError {
    TaskError::Launch {
        what: program.to_string(),
        kind: LaunchErrorKind::PermissionDenied,
        detail: std::io::Error::from_raw_os_error(libc::EACCES).to_string(),
    }
}

/// The working directory `dir` of a task running `program` does not exist.
pub(crate) fn no_such_cwd(program: &str, dir: Option<&Path>) -> TaskError {
    TaskError::Launch {
        what: program.to_string(),
        kind: LaunchErrorKind::NoSuchCwd,
        detail: match dir {
            Some(d) => format!("the working directory {} does not exist", d.display()),
            None => "the working directory does not exist".to_string(),
        },
    }
}

/// What bash said when `exec program` failed with `code` (its `execfail` status: 127 not
/// found, 126 not executable; its message is the last line of `stderr_tail`).
pub(crate) fn exec_failed(program: &str, code: i32, stderr_tail: &str) -> TaskError {
    let said = stderr_tail.lines().last().unwrap_or_default();
    match code {
        127 => program_not_found(program),
        126 if said.contains("Permission denied") || said.is_empty() => {
            program_not_executable(program)
        }
        _ => TaskError::Launch {
            what: program.to_string(),
            kind: LaunchErrorKind::Other,
            detail: match said.rsplit_once(": ") {
                Some((_, why)) => why.to_string(),
                None => format!("exec failed with status {code}"),
            },
        },
    }
}

/// The signal an exit status of 128 + N reports: a shell (the job script's bash) or a
/// launcher (srun, flux run) standing between pitch and the process exits so when the process
/// died of signal N, and cannot tell that apart from the process exiting with 128 + N itself.
pub(crate) fn signal_of(code: i32) -> Option<i32> {
    (129..=128 + 64).contains(&code).then(|| code - 128)
}

/// The end of an attempt whose process (`what`: a command, or a function task's worker that
/// left no result) exited with `code`, when that code is [`REQUEUE_EXIT_CODE`]: the task
/// asked to be submitted again ([`TaskError::Checkpointed`]).
pub(crate) fn requeue_requested(what: &str, code: i32) -> Option<TaskError> {
    (code == REQUEUE_EXIT_CODE).then(|| TaskError::Checkpointed {
        detail: format!(
            "exit code {code} (REQUEUE_EXIT_CODE) from {what}: it asked to be submitted again"
        ),
    })
}

/// The error of a command `program` that exited with `code` (not a death by signal), or
/// `None` when the exit makes a value: 0, or any code of a command that allows failure,
/// except [`REQUEUE_EXIT_CODE`], which always asks for a resubmission
/// ([`TaskError::Checkpointed`]); otherwise [`TaskError::CommandFailed`].
pub(crate) fn command_exit(
    program: &str,
    code: i32,
    allow_failure: bool,
    stderr_tail: String,
) -> Option<TaskError> {
    if let Some(requeue) = requeue_requested(&format!("command {program:?}"), code) {
        return Some(requeue);
    }
    (code != 0 && !allow_failure).then(|| TaskError::CommandFailed {
        program: program.to_string(),
        code,
        stderr_tail,
    })
}

/// Where `program` would be executed from, as `execvp` looks for it (in `path`, the task's
/// PATH, for a bare name; relative to `cwd` for a relative path): `Err` with the error every
/// backend gives when it is not there or not executable.
pub(crate) fn check_program(
    program: &str,
    path: Option<&std::ffi::OsStr>,
    cwd: Option<&Path>,
) -> Result<(), TaskError> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = match cwd {
            Some(dir) => dir.join(program),
            None => Path::new(program).to_path_buf(),
        };
        return match executable(&p) {
            Ok(true) => Ok(()),
            Ok(false) => Err(program_not_executable(program)),
            Err(_) => Err(program_not_found(program)),
        };
    }
    let Some(path) = path else {
        return Ok(());
    };
    let mut found_other = false;
    for dir in std::env::split_paths(path) {
        let dir = match (dir.is_relative(), cwd) {
            (true, Some(c)) => c.join(dir),
            _ => dir,
        };
        match executable(&dir.join(program)) {
            Ok(true) => return Ok(()),
            Ok(false) => found_other = true,
            Err(_) => {}
        }
    }
    Err(if found_other {
        program_not_executable(program)
    } else {
        program_not_found(program)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_read_as_spawn_failures() {
        assert!(matches!(
            exec_failed("nosuch", 127, "bash: line 2: exec: nosuch: not found"),
            TaskError::Launch { kind: LaunchErrorKind::NotFound, ref detail, .. }
                if detail == "no such program (not found on PATH)"
        ));
        assert_eq!(
            exec_failed(
                "/etc/passwd",
                126,
                "bash: line 2: /etc/passwd: Permission denied"
            ),
            program_not_executable("/etc/passwd")
        );
        assert!(matches!(
            exec_failed("./x", 126, "bash: line 1: ./x: cannot execute binary file: Exec format error"),
            TaskError::Launch { kind: LaunchErrorKind::Other, ref detail, .. }
                if detail == "Exec format error"
        ));
        assert_eq!(signal_of(137), Some(9));
        assert_eq!(signal_of(128), None);
        assert_eq!(signal_of(3), None);
        assert_eq!(signal_of(255), None);
    }

    #[test]
    fn exit_code_75_asks_for_a_resubmission_whatever_allow_failure_says() {
        for allow_failure in [false, true] {
            match command_exit("sim", 75, allow_failure, "tail".into()) {
                Some(TaskError::Checkpointed { detail }) => {
                    assert!(detail.starts_with("exit code 75"), "{detail}");
                    assert!(detail.contains("\"sim\""), "{detail}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(command_exit("sim", 0, false, String::new()), None);
        assert_eq!(command_exit("sim", 3, true, String::new()), None);
        assert_eq!(
            command_exit("sim", 3, false, "x".into()),
            Some(TaskError::CommandFailed {
                program: "sim".into(),
                code: 3,
                stderr_tail: "x".into()
            })
        );
        assert!(requeue_requested("the worker", 74).is_none());
    }

    #[test]
    fn programs_are_looked_up_as_execvp_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::ffi::OsString::from(format!("/nonexistent:{}", dir.path().display()));
        assert_eq!(
            check_program("sh", Some(&std::env::var_os("PATH").unwrap()), None),
            Ok(())
        );
        assert_eq!(
            check_program("nosuch-pitch", Some(&path), None),
            Err(program_not_found("nosuch-pitch"))
        );
        let f = dir.path().join("data");
        std::fs::write(&f, "").unwrap();
        assert_eq!(
            check_program("data", Some(&path), None),
            Err(program_not_executable("data"))
        );
        let abs = f.display().to_string();
        assert_eq!(
            check_program(&abs, None, None),
            Err(program_not_executable(&abs))
        );
        assert_eq!(
            check_program("./data", None, Some(dir.path())),
            Err(program_not_executable("./data"))
        );
        assert_eq!(
            check_program("/nonexistent/x", None, None),
            Err(program_not_found("/nonexistent/x"))
        );
    }
}
