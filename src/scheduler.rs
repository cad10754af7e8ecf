//! The words the scheduler layer shares with the rest of the crate and with users: which batch
//! scheduler ([`SchedulerKind`]), why a job ended ([`EndReason`], the one enum Slurm's and
//! Flux's states are mapped into), and what went wrong talking to it ([`SchedulerError`]).
//! Plain data, no behaviour: the schedulers themselves live under `backend/`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A batch scheduler pitch submits jobs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Slurm (`sbatch`, `squeue`, `scancel`).
    Slurm,
    /// Flux (`flux batch`, `flux jobs`, `flux cancel`).
    Flux,
}

impl SchedulerKind {
    /// The backend's name: `"slurm"` or `"flux"`.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Slurm => "slurm",
            SchedulerKind::Flux => "flux",
        }
    }

    /// The scheduler's name in messages: `"Slurm"` or `"Flux"`.
    pub fn title(self) -> &'static str {
        match self {
            SchedulerKind::Slurm => "Slurm",
            SchedulerKind::Flux => "Flux",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "slurm" => Ok(SchedulerKind::Slurm),
            "flux" => Ok(SchedulerKind::Flux),
            other => Err(format!("unknown scheduler {other:?} (slurm or flux)")),
        }
    }
}

/// Why a scheduler's job ended, whatever the scheduler: Slurm's and Flux's final states are
/// mapped into it once, by each scheduler's parser.
///
/// It reads and prints as the upper-case name Slurm uses (`TIMEOUT`, `OUT_OF_MEMORY`,
/// `CANCELLED`...) and is stored and serialized as that text, so it compares with a string
/// (`reason == "TIMEOUT"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum EndReason {
    /// The job's processes ended with exit code zero.
    Completed,
    /// The job's own processes failed (non-zero exit code).
    Failed,
    /// Cancelled by a user, an administrator or pitch.
    Cancelled,
    /// Reached its time limit.
    Timeout,
    /// Exceeded its memory limit.
    OutOfMemory,
    /// A node of the job failed (Slurm's `NODE_FAIL`, a node Flux lost).
    NodeFail,
    /// Preempted by another job.
    Preempted,
    /// The job could not be launched (typically a hardware failure).
    BootFail,
    /// Ended on its deadline.
    Deadline,
    /// A state pitch has no name for, in the scheduler's own words (`REVOKED`, a Flux
    /// exception), or `UNKNOWN` when the scheduler no longer knows the job.
    Unknown(String),
}

impl EndReason {
    /// The state's name: `COMPLETED`, `FAILED`, `CANCELLED`, `TIMEOUT`, `OUT_OF_MEMORY`,
    /// `NODE_FAIL`, `PREEMPTED`, `BOOT_FAIL`, `DEADLINE`, or the unknown state's own text.
    pub fn as_str(&self) -> &str {
        match self {
            EndReason::Completed => "COMPLETED",
            EndReason::Failed => "FAILED",
            EndReason::Cancelled => "CANCELLED",
            EndReason::Timeout => "TIMEOUT",
            EndReason::OutOfMemory => "OUT_OF_MEMORY",
            EndReason::NodeFail => "NODE_FAIL",
            EndReason::Preempted => "PREEMPTED",
            EndReason::BootFail => "BOOT_FAIL",
            EndReason::Deadline => "DEADLINE",
            EndReason::Unknown(text) => text,
        }
    }

    /// The reason the scheduler gives for a job it no longer knows.
    pub(crate) fn forgotten() -> EndReason {
        EndReason::Unknown("UNKNOWN".into())
    }

    /// Whether the scheduler ended the job (cancel, time or memory limit, preemption, a
    /// failed node...) rather than the job's own processes exiting: every reason but
    /// `Completed` and `Failed`.
    pub fn by_scheduler(&self) -> bool {
        !matches!(self, EndReason::Completed | EndReason::Failed)
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for EndReason {
    /// Reads a name [`EndReason::as_str`] prints (and Flux's spelling `CANCELED`); any other
    /// text is [`EndReason::Unknown`].
    fn from(text: String) -> EndReason {
        match text.as_str() {
            "COMPLETED" => EndReason::Completed,
            "FAILED" => EndReason::Failed,
            "CANCELLED" | "CANCELED" => EndReason::Cancelled,
            "TIMEOUT" => EndReason::Timeout,
            "OUT_OF_MEMORY" => EndReason::OutOfMemory,
            "NODE_FAIL" => EndReason::NodeFail,
            "PREEMPTED" => EndReason::Preempted,
            "BOOT_FAIL" => EndReason::BootFail,
            "DEADLINE" => EndReason::Deadline,
            _ => EndReason::Unknown(text),
        }
    }
}

impl From<EndReason> for String {
    fn from(reason: EndReason) -> String {
        match reason {
            EndReason::Unknown(text) => text,
            other => other.as_str().to_string(),
        }
    }
}

impl PartialEq<str> for EndReason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EndReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A scheduler command, or the transport running it, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// The command is not installed where the scheduler should be.
    #[error("{program} was not found on {}PATH: is {} a {scheduler} login node?", host.as_ref().map(|h| format!("{h}'s ")).unwrap_or_default(), if host.is_some() { "it" } else { "this" })]
    CommandMissing {
        /// The program (`squeue`, `flux`).
        program: String,
        /// The scheduler's name (`Slurm`, `Flux`).
        scheduler: String,
        /// The login node it was run on over SSH, if it was.
        host: Option<String>,
    },
    /// The command could not be run at all (or the connection to the login node failed).
    #[error("could not run {program}: {detail}")]
    CannotRun {
        /// The program.
        program: String,
        /// Why.
        detail: String,
    },
    /// The command ran and failed.
    #[error("{program} failed: {stderr}")]
    CommandFailed {
        /// The program and its subcommand (`squeue`, `flux jobs`).
        program: String,
        /// What it printed on standard error, trimmed.
        stderr: String,
    },
    /// The scheduler refused a job submission.
    #[error("{program} rejected the job: {stderr}")]
    Rejected {
        /// The submitting program (`sbatch`, `flux batch`).
        program: String,
        /// What it printed on standard error, trimmed.
        stderr: String,
    },
    /// The command's output could not be read.
    #[error("could not parse {program}'s output: {detail}")]
    Unreadable {
        /// The program.
        program: String,
        /// What is wrong with the output.
        detail: String,
    },
    /// A job id that is not one of the scheduler's (`123` or `123_4`).
    #[error("invalid job id {0:?}")]
    InvalidJobId(String),
    /// The jobs were submitted over SSH: only the scheduler there knows them.
    #[error(
        "the jobs of this cache directory were submitted over SSH to {login}: ask the \
         scheduler there (this command runs {scheduler} only where it is), or give the \
         profile whose [remote] table reaches it (--profile NAME; pitch built with the \
         feature remote)"
    )]
    Remote {
        /// The login node (`user@host:port`).
        login: String,
        /// The scheduler.
        scheduler: SchedulerKind,
    },
    /// No runtime could be started to run the command.
    #[error("cannot start a runtime: {0}")]
    Runtime(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_read_back_as_they_print() {
        for r in [
            EndReason::Completed,
            EndReason::Failed,
            EndReason::Cancelled,
            EndReason::Timeout,
            EndReason::OutOfMemory,
            EndReason::NodeFail,
            EndReason::Preempted,
            EndReason::BootFail,
            EndReason::Deadline,
            EndReason::Unknown("REVOKED".into()),
        ] {
            assert_eq!(EndReason::from(r.to_string()), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{r}\""));
            assert_eq!(serde_json::from_str::<EndReason>(&json).unwrap(), r);
        }
        assert_eq!(
            EndReason::from("CANCELED".to_string()),
            EndReason::Cancelled
        );
        assert_eq!(EndReason::Timeout, "TIMEOUT");
        assert!(EndReason::Timeout.by_scheduler());
        assert!(!EndReason::Failed.by_scheduler());
        assert_eq!(EndReason::forgotten().as_str(), "UNKNOWN");
    }

    #[test]
    fn scheduler_kinds_are_lower_case() {
        assert_eq!(
            serde_json::to_string(&SchedulerKind::Flux).unwrap(),
            "\"flux\""
        );
        assert_eq!("slurm".parse(), Ok(SchedulerKind::Slurm));
        assert!("pbs".parse::<SchedulerKind>().is_err());
    }
}
