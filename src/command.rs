//! External command tasks: [`Command`] (argv, environment, working directory, output files) and
//! [`CommandOutput`], what a finished command resolves to.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::future::Dependency;
use crate::task::CommandSpec;
use crate::TaskFuture;

/// An external program to run as a task: most HPC work is external codes (LAMMPS, RADMC-3D,
/// ffmpeg, Python scripts). With `cores = N` it runs as N MPI ranks under the backend's
/// launcher (`mpiexec -n N`, `srun -n N`).
///
/// ```
/// let cmd = pitch::Command::new("ffmpeg")
///     .args(["-i", "in.mp4", "out.webm"])
///     .env("OMP_PROC_BIND", "true")
///     .cwd("/tmp");
/// ```
///
/// A non-zero exit is an error ([`crate::TaskError::CommandFailed`] with the stderr tail)
/// unless [`Command::allow_failure`] asks for the status instead.
#[derive(Debug, Clone)]
pub struct Command {
    pub(crate) spec: CommandSpec,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) after: Vec<Dependency>,
    /// Give the command the driver's standard input (`Command::stdin_inherit`).
    pub(crate) stdin: bool,
}

impl Command {
    /// A command that runs `program` (looked up on PATH when it has no slash).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            spec: CommandSpec {
                program: program.as_ref().to_string_lossy().into_owned(),
                args: Vec::new(),
                env: Vec::new(),
                stdout: None,
                stderr: None,
                allow_failure: false,
            },
            cwd: None,
            after: Vec::new(),
            stdin: false,
        }
    }

    /// Appends one argument. Arguments are passed as they are: no shell splits or expands them.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Command {
        self.spec
            .args
            .push(arg.as_ref().to_string_lossy().into_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Sets an environment variable for the command (on top of the resources' `env`). The
    /// name must be a shell identifier (`[A-Za-z_][A-Za-z0-9_]*`): another name (`MY-VAR`)
    /// fails the task with [`TaskError::Rejected`](crate::TaskError::Rejected) naming it when
    /// it is submitted, on every backend, since Slurm and Flux job scripts export it with bash.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Command {
        let key = key.into();
        self.spec.env.retain(|(k, _)| *k != key);
        self.spec.env.push((key, value.into()));
        self
    }

    /// The first environment variable whose name is not a shell identifier, with what is
    /// wrong with it: refused on every backend (see [`Command::env`]).
    pub(crate) fn env_problem(&self) -> Option<String> {
        self.spec.env.iter().find_map(|(k, _)| {
            crate::resources::env_name_problem(k).map(|reason| {
                let shown: String = k.chars().take(100).collect();
                format!("invalid environment variable name {shown:?}: {reason}")
            })
        })
    }

    /// Runs the command in `dir` (overrides the resources' `cwd`).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Command {
        self.cwd = Some(dir.into());
        self
    }

    /// Writes standard output to `path` instead of the task directory.
    pub fn stdout(mut self, path: impl Into<PathBuf>) -> Command {
        self.spec.stdout = Some(path.into());
        self
    }

    /// Writes standard error to `path` instead of the task directory.
    pub fn stderr(mut self, path: impl Into<PathBuf>) -> Command {
        self.spec.stderr = Some(path.into());
        self
    }

    /// Gives the command this process's standard input (`echo hi | pitch run -- cat`) instead
    /// of `/dev/null`, on the SingleNode backend when standard input is not a terminal (a
    /// task runs in a process group of its own, and a terminal would stop it when it reads).
    /// A Slurm or Flux job runs elsewhere and always reads `/dev/null`. Not part of the task's
    /// key.
    pub fn stdin_inherit(mut self) -> Command {
        self.stdin = true;
        self
    }

    /// Resolves to the exit status instead of an error when the command exits non-zero.
    pub fn allow_failure(mut self) -> Command {
        self.spec.allow_failure = true;
        self
    }

    /// Runs the command only after `future` has finished successfully (its value is not
    /// passed). A failed upstream fails this command with [`crate::TaskError::DependencyFailed`].
    pub fn after<T>(mut self, future: &TaskFuture<T>) -> Command {
        self.after.push(future.dependency());
        self
    }
}

/// What a finished command resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutput {
    /// The exit code (of the launcher, for multi-rank commands).
    pub exit_code: i32,
    /// Where standard output went; `None` when it went to the task directory and was empty.
    pub stdout: Option<PathBuf>,
    /// Where standard error went; `None` when it went to the task directory and was empty.
    pub stderr: Option<PathBuf>,
    /// The last lines of standard error.
    pub stderr_tail: String,
    /// Wall time of the command.
    pub elapsed: Duration,
}

impl CommandOutput {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Reads the command's standard output (empty when it wrote none).
    pub fn read_stdout(&self) -> std::io::Result<String> {
        match &self.stdout {
            Some(p) => std::fs::read_to_string(p),
            None => Ok(String::new()),
        }
    }
}
