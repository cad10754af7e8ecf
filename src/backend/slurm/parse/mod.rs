//! Parsers for the output of Slurm's command-line tools (`sbatch`, `squeue`,
//! `scontrol`, `sacct`).
//!
//! Every function here is pure: it takes the text a command printed and returns
//! typed values. Job states are [`SlurmState`] values, never strings; a state,
//! job id or exit code this module does not know is a [`ParseError`] quoting the
//! text, never a silent default.
//!
//! Fixtures in the tests were recorded on Debian 12's slurm-wlm 22.05.8. The
//! command lines these parsers expect:
//!
//! * submit: `sbatch --parsable ...` → [`parse_sbatch_parsable`];
//! * poll: `squeue -h -r --me -n <name> -t all -o '%i|%T|%r'` (see
//!   [`SQUEUE_FORMAT`]; `--me` exists in 22.05 and is the same as
//!   `-u <user name or uid>`) → [`parse_squeue`], then [`states_by_job`] and
//!   [`lookup_state`](crate::backend::scheduler::lookup_state). `-r` prints one line per array element, pending ones
//!   included (`123_5|PENDING|JobArrayTaskLimit`); without it pending elements
//!   are folded into one line (`123_[5-9%2]`), which this parser expands too.
//!   `-t all` keeps finished jobs listed for `MinJobAge` seconds;
//! * a job that left the queue: `scontrol show job -o <id>` →
//!   [`parse_scontrol_show_job`] (a job Slurm forgot makes scontrol exit 1
//!   with "slurm_load_jobs error: Invalid job id specified" on stderr:
//!   [`scontrol_job_unknown`](scontrol::scontrol_job_unknown)), then
//!   `sacct -X -n -P -o JobID,State,ExitCode -j <ids>` (see [`SACCT_FIELDS`])
//!   → [`parse_sacct`] unless [`sacct_disabled`];
//! * cluster limits: `scontrol show config` → [`parse_scontrol_config`],
//!   [`max_array_size`].
//!
//! Slurm folds the task ids of pending array elements into an expression like
//! `0-100:2%1` and cuts it at 64 bytes with `...` unless the environment has
//! `SLURM_BITSTR_LEN=0`; run `squeue`, `scontrol` and `sacct` with that
//! variable set. A cut expression is an error here (the elements it hides are
//! unknown), and every folded expression is expanded into one entry per
//! element, so callers always look jobs up by [`JobRef`].
//!
//! This file holds what every parser shares (the errors, [`SlurmState`], job ids, exit codes,
//! folded array expressions) and `sbatch`'s; `squeue.rs`, `scontrol.rs` and `sacct.rs` read
//! the output of those commands.

use std::fmt;
use std::str::FromStr;

use crate::backend::scheduler::JobRef;

mod sacct;
mod scontrol;
mod squeue;

pub use sacct::{parse_sacct, sacct_disabled};
#[cfg(feature = "fuzzing")]
pub(crate) use scontrol::scontrol_job_unknown;
pub use scontrol::{
    max_array_size, parse_partitions, parse_scontrol_config, parse_scontrol_show_job, Partition,
};
#[cfg(feature = "fuzzing")]
pub(crate) use squeue::never_clears;
pub(crate) use squeue::states_by_job;
pub use squeue::{parse_squeue, parse_squeue_scripts};

/// `squeue -o` format the poller uses: job id (`123` or `123_4`), long state
/// name, reason, separated by `|` (the reason comes last as it may contain
/// spaces).
pub const SQUEUE_FORMAT: &str = "%i|%T|%r";

/// `sacct -o` field list understood by [`parse_sacct`] (use with `-X -n -P`).
pub const SACCT_FIELDS: &str = "JobID,State,ExitCode";

/// Slurm's hard upper bound on `MaxArraySize`; folded task id expressions
/// covering more elements than this are rejected instead of expanded.
const MAX_EXPANDED_TASKS: u64 = 4_000_001;

/// An error in the output of a Slurm command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A job state name or code this module does not know.
    #[error("unknown slurm job state {0:?}")]
    UnknownState(String),
    /// A job id that is neither `<job>` nor `<job>_<index>`.
    #[error("invalid slurm job id {0:?}")]
    InvalidJobId(String),
    /// A folded array task id expression (`0-7%2`, `1,3-5`, `0-100:2`) that
    /// cannot be read or expanded.
    #[error("invalid slurm array task ids {text:?}: {reason}")]
    InvalidArrayTasks {
        /// The expression.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An exit code that is not `<code>:<signal>`.
    #[error("invalid slurm exit code {0:?} (expected \"<code>:<signal>\")")]
    InvalidExitCode(String),
    /// `sbatch --parsable` printed something other than `<jobid>[;<cluster>]`.
    #[error("sbatch --parsable: expected \"<jobid>\" or \"<jobid>;<cluster>\", got {0:?}")]
    Sbatch(String),
    /// A malformed line (or record) in the output of `command`.
    #[error("{command}: line {line}: {reason}: {text:?}")]
    Line {
        /// The command that printed it, e.g. `"squeue"`.
        command: &'static str,
        /// 1-based line number in the output.
        line: usize,
        /// What is wrong with it.
        reason: String,
        /// The offending text (the line, or the `Key=Value` pair at fault).
        text: String,
    },
    /// `scontrol show config` has no line for a needed key.
    #[error("scontrol show config: no {0} line")]
    MissingConfigKey(&'static str),
    /// `scontrol show config` has a value of an unexpected form.
    #[error("scontrol show config: invalid {key} value {value:?}")]
    InvalidConfigValue {
        /// The configuration key.
        key: &'static str,
        /// Its value as printed.
        value: String,
    },
}

impl ParseError {
    fn line(command: &'static str, line: usize, reason: impl fmt::Display, text: &str) -> Self {
        ParseError::Line {
            command,
            line,
            reason: reason.to_string(),
            text: text.to_string(),
        }
    }
}

/// A Slurm job state, as listed under "JOB STATE CODES" in squeue(1) and sacct(1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlurmState {
    /// `BOOT_FAIL` (`BF`): launch failed, typically a hardware failure.
    BootFail,
    /// `CANCELLED` (`CA`): cancelled by the user or an administrator.
    Cancelled,
    /// `COMPLETED` (`CD`): all processes ended with exit code zero.
    Completed,
    /// `COMPLETING` (`CG`): processes on some nodes may still be active.
    Completing,
    /// `CONFIGURING` (`CF`): allocated, waiting for resources to become ready.
    Configuring,
    /// `DEADLINE` (`DL`): terminated on deadline.
    Deadline,
    /// `FAILED` (`F`): non-zero exit code or other failure.
    Failed,
    /// `NODE_FAIL` (`NF`): an allocated node failed.
    NodeFail,
    /// `OUT_OF_MEMORY` (`OOM`): out of memory.
    OutOfMemory,
    /// `PENDING` (`PD`): waiting for an allocation.
    Pending,
    /// `PREEMPTED` (`PR`): terminated due to preemption.
    Preempted,
    /// `RUNNING` (`R`): has an allocation.
    Running,
    /// `RESV_DEL_HOLD` (`RD`): held after its reservation was deleted.
    ResvDelHold,
    /// `REQUEUE_FED` (`RF`): being requeued by a federation.
    RequeueFed,
    /// `REQUEUE_HOLD` (`RH`): held job being requeued.
    RequeueHold,
    /// `REQUEUED` (`RQ`): completing job being requeued.
    Requeued,
    /// `RESIZING` (`RS`): about to change size.
    Resizing,
    /// `REVOKED` (`RV`): sibling removed because another cluster started the job.
    Revoked,
    /// `SIGNALING` (`SI`): being signaled.
    Signaling,
    /// `SPECIAL_EXIT` (`SE`): requeued in a special state.
    SpecialExit,
    /// `STAGE_OUT` (`SO`): staging out files.
    StageOut,
    /// `STOPPED` (`ST`): allocation kept, execution stopped with SIGSTOP.
    Stopped,
    /// `SUSPENDED` (`S`): execution suspended, CPUs released.
    Suspended,
    /// `TIMEOUT` (`TO`): reached its time limit.
    Timeout,
}

impl SlurmState {
    /// Every state, in the order of the man pages.
    pub const ALL: [SlurmState; 24] = [
        SlurmState::BootFail,
        SlurmState::Cancelled,
        SlurmState::Completed,
        SlurmState::Completing,
        SlurmState::Configuring,
        SlurmState::Deadline,
        SlurmState::Failed,
        SlurmState::NodeFail,
        SlurmState::OutOfMemory,
        SlurmState::Pending,
        SlurmState::Preempted,
        SlurmState::Running,
        SlurmState::ResvDelHold,
        SlurmState::RequeueFed,
        SlurmState::RequeueHold,
        SlurmState::Requeued,
        SlurmState::Resizing,
        SlurmState::Revoked,
        SlurmState::Signaling,
        SlurmState::SpecialExit,
        SlurmState::StageOut,
        SlurmState::Stopped,
        SlurmState::Suspended,
        SlurmState::Timeout,
    ];

    /// The long name Slurm prints (`squeue %T`, `scontrol`'s `JobState`,
    /// `sacct`'s `State`), e.g. `"OUT_OF_MEMORY"`.
    pub fn name(self) -> &'static str {
        match self {
            SlurmState::BootFail => "BOOT_FAIL",
            SlurmState::Cancelled => "CANCELLED",
            SlurmState::Completed => "COMPLETED",
            SlurmState::Completing => "COMPLETING",
            SlurmState::Configuring => "CONFIGURING",
            SlurmState::Deadline => "DEADLINE",
            SlurmState::Failed => "FAILED",
            SlurmState::NodeFail => "NODE_FAIL",
            SlurmState::OutOfMemory => "OUT_OF_MEMORY",
            SlurmState::Pending => "PENDING",
            SlurmState::Preempted => "PREEMPTED",
            SlurmState::Running => "RUNNING",
            SlurmState::ResvDelHold => "RESV_DEL_HOLD",
            SlurmState::RequeueFed => "REQUEUE_FED",
            SlurmState::RequeueHold => "REQUEUE_HOLD",
            SlurmState::Requeued => "REQUEUED",
            SlurmState::Resizing => "RESIZING",
            SlurmState::Revoked => "REVOKED",
            SlurmState::Signaling => "SIGNALING",
            SlurmState::SpecialExit => "SPECIAL_EXIT",
            SlurmState::StageOut => "STAGE_OUT",
            SlurmState::Stopped => "STOPPED",
            SlurmState::Suspended => "SUSPENDED",
            SlurmState::Timeout => "TIMEOUT",
        }
    }

    /// Whether the job has left the active states for good: true for
    /// `BOOT_FAIL`, `CANCELLED`, `COMPLETED`, `DEADLINE`, `FAILED`,
    /// `NODE_FAIL`, `OUT_OF_MEMORY`, `PREEMPTED`, `REVOKED`, `SPECIAL_EXIT`
    /// and `TIMEOUT`; false for the pending, running, held and transitional ones.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            SlurmState::Pending
                | SlurmState::Running
                | SlurmState::Completing
                | SlurmState::Configuring
                | SlurmState::Suspended
                | SlurmState::Requeued
                | SlurmState::Resizing
                | SlurmState::Signaling
                | SlurmState::StageOut
                | SlurmState::Stopped
                | SlurmState::RequeueHold
                | SlurmState::RequeueFed
                | SlurmState::ResvDelHold
        )
    }
}

impl fmt::Display for SlurmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SlurmState {
    type Err = ParseError;

    /// Parses a long state name (`"NODE_FAIL"`), also in sacct's form with the
    /// uid of whoever cancelled the job (`"CANCELLED by 0"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || ParseError::UnknownState(s.to_string());
        let name = match s.split_once(" by ") {
            Some((name, uid)) if !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return Err(unknown()),
            None => s,
        };
        SlurmState::ALL
            .into_iter()
            .find(|st| st.name() == name)
            .ok_or_else(unknown)
    }
}

/// Parses a non-empty run of ASCII digits (no sign, no spaces).
fn parse_digits<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses `<code>:<signal>` as printed for `ExitCode` by scontrol and sacct.
fn parse_exit_code(s: &str) -> Result<(i32, i32), ParseError> {
    let bad = || ParseError::InvalidExitCode(s.to_string());
    let (code, signal) = s.split_once(':').ok_or_else(bad)?;
    let num = |t: &str| -> Option<i32> {
        let digits = t.strip_prefix('-').unwrap_or(t);
        parse_digits::<i32>(digits)?;
        t.parse().ok()
    };
    Ok((num(code).ok_or_else(bad)?, num(signal).ok_or_else(bad)?))
}

/// Expands a folded array task id expression without brackets: comma-separated
/// `a`, `a-b` or `a-b:step` items, optionally followed by `%<max running>`.
fn expand_array_tasks(text: &str) -> Result<Vec<u32>, ParseError> {
    let bad = |reason| ParseError::InvalidArrayTasks {
        text: text.to_string(),
        reason,
    };
    if text.contains("...") {
        return Err(bad(
            "cut short by slurm (run the command with SLURM_BITSTR_LEN=0)",
        ));
    }
    let body = match text.split_once('%') {
        Some((body, limit)) => {
            parse_digits::<u32>(limit).ok_or_else(|| bad("bad %limit"))?;
            body
        }
        None => text,
    };
    let mut ranges = Vec::new();
    let mut total: u64 = 0;
    for item in body.split(',') {
        let (range, step) = match item.split_once(':') {
            Some((range, step)) => (
                range,
                parse_digits::<u32>(step).ok_or_else(|| bad("bad step"))?,
            ),
            None => (item, 1),
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (parse_digits::<u32>(a), parse_digits::<u32>(b)),
            None => (parse_digits::<u32>(range), parse_digits::<u32>(range)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Err(bad("expected <id>, <id>-<id> or <id>-<id>:<step> items"));
        };
        if first > last || step == 0 {
            return Err(bad("empty range"));
        }
        total += u64::from((last - first) / step) + 1;
        if total > MAX_EXPANDED_TASKS {
            return Err(bad("more tasks than any slurm array can have"));
        }
        ranges.push((first, last, step));
    }
    Ok(ranges
        .into_iter()
        .flat_map(|(first, last, step)| (first..=last).step_by(step as usize))
        .collect())
}

/// Parses a job id field of squeue (`%i`) or sacct (`JobID`): `"123"`,
/// `"123_4"`, or pending array elements folded as `"123_[5-9%2]"`, which is
/// expanded into one [`JobRef`] per element.
fn parse_job_ids(text: &str) -> Result<Vec<JobRef>, ParseError> {
    if let Some((job, rest)) = text.split_once("_[") {
        let job_id =
            parse_digits::<u64>(job).ok_or_else(|| ParseError::InvalidJobId(text.to_string()))?;
        let inner = rest
            .strip_suffix(']')
            .ok_or_else(|| ParseError::InvalidJobId(text.to_string()))?;
        return Ok(expand_array_tasks(inner)?
            .into_iter()
            .map(|i| JobRef {
                job_id,
                array_index: Some(i),
            })
            .collect());
    }
    Ok(vec![text
        .parse()
        .map_err(|_| ParseError::InvalidJobId(text.to_string()))?])
}

/// Parses the output of `sbatch --parsable`: `"<jobid>"` or
/// `"<jobid>;<cluster>"`, surrounding whitespace ignored; returns the job id.
pub fn parse_sbatch_parsable(stdout: &str) -> Result<u64, ParseError> {
    let text = stdout.trim();
    let bad = || ParseError::Sbatch(stdout.to_string());
    let id = match text.split_once(';') {
        Some((id, cluster)) => {
            if cluster.is_empty() || cluster.contains(|c: char| c.is_whitespace() || c == ';') {
                return Err(bad());
            }
            id
        }
        None => text,
    };
    parse_digits::<u64>(id).ok_or_else(bad)
}

#[cfg(test)]
mod tests;
