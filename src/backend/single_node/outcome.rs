//! The task's result from how its process ended ([`SingleNode::outcome`]), and the errors
//! SingleNode's own code gives for a command's end ([`command_outcome`]) and for a program
//! that could not be started ([`spawn_failure`]), which commands run in pilots share.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use super::{Launcher, SingleNode};
use crate::backend::child::{self, End};
use crate::backend::failure::{self, signal_of};
use crate::command::CommandOutput;
use crate::error::{LaunchErrorKind, TaskError};
use crate::resources::Resources;
use crate::store::{self, ResultRecord, TaskPaths};
use crate::task::{CommandSpec, TaskSpec};

fn status_text(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

impl SingleNode {
    /// The task's result from how its process (or, `native`, its Flux job submitted through
    /// libflux) ended, published.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn outcome(
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

/// The signal that ended a process: its own death by a signal, or, `through_launcher`, the
/// exit code 128 + N with which a launcher reports a death by signal N ([`signal_of`]).
fn signal_in(status: &ExitStatus, through_launcher: bool) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let reported = status
        .code()
        .filter(|_| through_launcher)
        .and_then(signal_of);
    status.signal().or(reported)
}

fn worker_died(status: &ExitStatus, through_launcher: bool, stderr_tail: String) -> TaskError {
    match signal_in(status, through_launcher) {
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
    let code = match (status.code(), signal_in(&status, through_launcher)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_signal_is_the_process_own_or_what_a_launcher_reports() {
        // A wait status: the exit code in the second byte, a killing signal in the first.
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(signal_in(&ExitStatus::from_raw(9), false), Some(9));
        assert_eq!(signal_in(&ExitStatus::from_raw(9), true), Some(9));
        assert_eq!(signal_in(&exited(143), true), Some(15));
        assert_eq!(signal_in(&exited(143), false), None);
        assert_eq!(signal_in(&exited(3), true), None);
        assert_eq!(signal_in(&exited(0), true), None);
    }
}
