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
//!   [`lookup_state`]. `-r` prints one line per array element, pending ones
//!   included (`123_5|PENDING|JobArrayTaskLimit`); without it pending elements
//!   are folded into one line (`123_[5-9%2]`), which this parser expands too.
//!   `-t all` keeps finished jobs listed for `MinJobAge` seconds;
//! * a job that left the queue: `scontrol show job -o <id>` →
//!   [`parse_scontrol_show_job`] (a job Slurm forgot makes scontrol exit 1
//!   with "slurm_load_jobs error: Invalid job id specified" on stderr:
//!   [`scontrol_job_unknown`]), then
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::backend::scheduler::{JobRef, JobState};

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

/// One job (or array element) listed by `squeue -o '%i|%T|%r'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The job or array element.
    pub job: JobRef,
    /// Its state.
    pub state: SlurmState,
    /// Why it is in that state (`%r`), `None` when squeue prints `None`.
    pub reason: Option<String>,
}

/// Parses the output of `squeue -h -r -t all -o '%i|%T|%r'` ([`SQUEUE_FORMAT`]).
///
/// Blank lines are skipped. A line with folded pending array elements
/// (`123_[5-9%2]`, printed without `-r`) yields one entry per element.
pub fn parse_squeue(output: &str) -> Result<Vec<QueueEntry>, ParseError> {
    let mut entries = Vec::new();
    for (n, line) in output.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: &dyn fmt::Display| ParseError::line("squeue", n + 1, reason, line);
        let mut fields = line.splitn(3, '|');
        let (Some(id), Some(state), Some(reason)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(err(&"expected \"<jobid>|<state>|<reason>\""));
        };
        let jobs = parse_job_ids(id).map_err(|e| err(&e))?;
        let state: SlurmState = state.parse().map_err(|e| err(&e))?;
        let reason = match reason {
            "" | "None" | "(null)" => None,
            r => Some(r.to_string()),
        };
        entries.extend(jobs.into_iter().map(|job| QueueEntry {
            job,
            state,
            reason: reason.clone(),
        }));
    }
    Ok(entries)
}

/// The state of each job squeue listed, as the queue backend reads them.
pub(crate) fn states_by_job(entries: &[QueueEntry]) -> HashMap<JobRef, JobState> {
    entries
        .iter()
        .map(|e| {
            let state = match (&e.state, e.reason.as_deref()) {
                (SlurmState::Pending, Some(r)) if never_clears(r) => JobState::Stuck(r.to_string()),
                _ => e.state.into(),
            };
            (e.job, state)
        })
        .collect()
}

/// Whether a pending job's reason (`%r`) can never clear by waiting: the request exceeds what
/// the partition, the association or the QOS allows any job, names what does not exist, or
/// depends on a job that failed. `ReqNodeNotAvail` counts only without the nodes it waits
/// for (`ReqNodeNotAvail, UnavailableNodes:n[1-2]` waits for nodes that may come back).
pub(crate) fn never_clears(reason: &str) -> bool {
    const NEVER: &[&str] = &[
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "BadConstraints",
        "DependencyNeverSatisfied",
        "InvalidAccount",
        "InvalidQOS",
        "QOSMaxCpuPerJobLimit",
        "QOSMaxNodePerJobLimit",
        "QOSMaxWallDurationPerJobLimit",
        "QOSMaxMemoryPerJob",
        "AssocMaxCpuPerJobLimit",
        "AssocMaxNodePerJobLimit",
        "AssocMaxWallDurationPerJobLimit",
    ];
    let word = reason.split([',', ' ', '(']).next().unwrap_or_default();
    if word == "ReqNodeNotAvail" {
        return reason
            .split_once("UnavailableNodes:")
            .is_none_or(|(_, nodes)| nodes.trim().is_empty());
    }
    NEVER.contains(&word)
}

/// Parses `squeue -h -t all -o '%F|%o'`: each job's (array's) id by the path of its job
/// script. Blank lines are skipped.
pub fn parse_squeue_scripts(output: &str) -> Result<HashMap<String, u64>, ParseError> {
    let mut found = HashMap::new();
    for (n, line) in output.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: &dyn fmt::Display| ParseError::line("squeue", n + 1, reason, line);
        let Some((id, script)) = line.split_once('|') else {
            return Err(err(&"expected \"<jobid>|<command>\""));
        };
        let id: u64 = id
            .parse()
            .map_err(|_| err(&format_args!("{id:?} is not a job id")))?;
        found.insert(script.to_string(), id);
    }
    Ok(found)
}

/// A partition's limits, from `scontrol show partition -o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    /// `Default=YES`.
    pub default: bool,
    /// `TotalCPUs`, `TotalNodes`.
    pub cpus: u64,
    pub nodes: u64,
    /// `MaxNodes`, `MaxTime` (`None`: UNLIMITED), `MaxCPUsPerNode`.
    pub max_nodes: Option<u64>,
    pub max_time: Option<std::time::Duration>,
    pub max_cpus_per_node: Option<u64>,
}

impl Partition {
    /// Why no job asking for `ranks` ranks of `threads` CPUs, on `nodes` nodes, for `time`,
    /// can ever start in this partition.
    pub fn refuses(
        &self,
        ranks: u32,
        threads: u32,
        nodes: Option<u32>,
        time: Option<std::time::Duration>,
    ) -> Option<String> {
        let cpus = u64::from(ranks) * u64::from(threads);
        let name = &self.name;
        if cpus > self.cpus {
            return Some(format!(
                "the task needs {cpus} CPUs (cores {ranks} x threads_per_core {threads}) but \
                 partition {name} has {} in all",
                self.cpus
            ));
        }
        let max_nodes = self.max_nodes.unwrap_or(self.nodes).min(self.nodes);
        if let Some(n) = nodes.filter(|n| u64::from(*n) > max_nodes) {
            return Some(format!(
                "num_nodes = {n} but a job of partition {name} gets at most {max_nodes} node(s)"
            ));
        }
        if let Some(per_node) = self.max_cpus_per_node {
            let usable = per_node * max_nodes;
            if cpus > usable {
                return Some(format!(
                    "the task needs {cpus} CPUs but partition {name} gives a job at most \
                     {usable} ({per_node} per node on {max_nodes} node(s))"
                ));
            }
        }
        match (time, self.max_time) {
            (Some(t), Some(max)) if t > max => Some(format!(
                "run_time_max = {} but partition {name}'s MaxTime is {}",
                crate::resources::format_slurm_time(t),
                crate::resources::format_slurm_time(max)
            )),
            _ => None,
        }
    }
}

/// Parses `scontrol show partition -o` (one partition a line, `Key=Value` pairs); lines that
/// do not read as a partition are skipped.
pub fn parse_partitions(output: &str) -> Vec<Partition> {
    let mut found = Vec::new();
    for line in output.lines() {
        let pairs: HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        let number = |key: &str| pairs.get(key).and_then(|v| v.parse::<u64>().ok());
        let (Some(name), Some(cpus), Some(nodes)) = (
            pairs.get("PartitionName"),
            number("TotalCPUs"),
            number("TotalNodes"),
        ) else {
            continue;
        };
        found.push(Partition {
            name: name.to_string(),
            default: pairs.get("Default") == Some(&"YES"),
            cpus,
            nodes,
            max_nodes: number("MaxNodes"),
            max_time: pairs
                .get("MaxTime")
                .filter(|v| **v != "UNLIMITED")
                .and_then(|v| match v.parse::<u64>() {
                    // Bare minutes, as Slurm prints a limit set as such.
                    Ok(minutes) => Some(std::time::Duration::from_secs(minutes * 60)),
                    Err(_) => crate::resources::parse_duration(v).ok(),
                }),
            max_cpus_per_node: number("MaxCPUsPerNode"),
        });
    }
    found
}

/// One job record of `scontrol show job -o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScontrolJob {
    /// The job, or array element (`ArrayJobId`_`ArrayTaskId`).
    pub job: JobRef,
    /// Slurm's own id of the record (`JobId`); for array elements it differs
    /// from the array's job id once the element has been started.
    pub job_id: u64,
    /// `JobState`.
    pub state: SlurmState,
    /// `Reason`, `None` when scontrol prints `None`.
    pub reason: Option<String>,
    /// `ExitCode` as (exit code, signal).
    pub exit_code: Option<(i32, i32)>,
    /// `ArrayJobId`, for array elements.
    pub array_job_id: Option<u64>,
    /// `ArrayTaskId`, for array elements.
    pub array_task_id: Option<u32>,
    /// `JobName`.
    pub job_name: Option<String>,
    /// `Dependency`, e.g. `"afterok:12(failed)"`; `None` for `(null)`.
    pub dependency: Option<String>,
}

/// Whether scontrol's stderr says the job id is unknown (never existed, or
/// purged after `MinJobAge`): "slurm_load_jobs error: Invalid job id specified".
pub fn scontrol_job_unknown(stderr: &str) -> bool {
    stderr.contains("Invalid job id specified")
}

/// Whether `key` looks like one of scontrol's keys (`JobId`, `MCS_label`,
/// `ReqB:S:C:T`, `CPUs/Task`): an upper-case ASCII letter, then letters,
/// digits, `_`, `:` or `/`.
fn is_scontrol_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '/'))
}

/// Splits one scontrol record into `Key=Value` pairs.
///
/// Pairs are separated by spaces, but values may contain spaces and `=`
/// (`Reason`, `Command`, `Comment`, `JobName`). A space-separated token starts
/// a new pair only if it has the form `Key=...` with a scontrol-like key
/// ([`is_scontrol_key`]) not seen before in the record; otherwise it belongs
/// to the previous value. `JobName` (chosen by the user) always extends to the
/// ` UserId=` that follows it.
fn scontrol_pairs(record: &str) -> Vec<(&str, &str)> {
    let mut starts: Vec<(usize, usize)> = Vec::new(); // (key start, '=' position)
    let mut seen: HashSet<&str> = HashSet::new();
    let mut until: Option<&str> = None;
    let mut pos = 0;
    for token in record.split(' ') {
        let start = pos;
        pos += token.len() + 1;
        let Some(eq) = token.find('=') else { continue };
        let key = &token[..eq];
        if !is_scontrol_key(key) || seen.contains(key) || until.is_some_and(|u| u != key) {
            continue;
        }
        until = (key == "JobName" && record[start..].contains(" UserId=")).then_some("UserId");
        seen.insert(key);
        starts.push((start, start + eq));
    }
    let ends = starts
        .iter()
        .skip(1)
        .map(|&(s, _)| s)
        .chain(std::iter::once(record.len()));
    starts
        .iter()
        .zip(ends)
        .map(|(&(start, eq), end)| (&record[start..eq], record[eq + 1..end].trim_end()))
        .collect()
}

/// Parses the output of `scontrol show job -o [<id>]`: one record per line
/// (the multi-line form without `-o`, continuation lines indented, works too).
///
/// "No jobs in the system" and "Invalid job id specified" messages yield no
/// records. A folded record of pending array elements
/// (`ArrayTaskId=6-7%2`) yields one entry per element. A record without
/// `JobId` or `JobState`, or with a value of an unexpected form, is an error.
pub fn parse_scontrol_show_job(output: &str) -> Result<Vec<ScontrolJob>, ParseError> {
    let mut records: Vec<(usize, String)> = Vec::new();
    for (n, line) in output.lines().enumerate() {
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if text.starts_with("JobId=") {
            records.push((n + 1, text.to_string()));
        } else if text == "No jobs in the system" || scontrol_job_unknown(text) {
            continue;
        } else if let (Some((_, record)), true) =
            (records.last_mut(), line.starts_with(char::is_whitespace))
        {
            record.push(' ');
            record.push_str(text);
        } else {
            return Err(ParseError::line(
                "scontrol show job",
                n + 1,
                "expected a job record starting with JobId=",
                line,
            ));
        }
    }
    let mut jobs = Vec::new();
    for (line, record) in &records {
        jobs.extend(scontrol_record(*line, record)?);
    }
    Ok(jobs)
}

fn scontrol_record(line: usize, record: &str) -> Result<Vec<ScontrolJob>, ParseError> {
    let pairs = scontrol_pairs(record);
    let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|&(_, v)| v);
    let err = |key: &str, reason: &dyn fmt::Display| {
        let text = get(key).map_or_else(|| record.to_string(), |v| format!("{key}={v}"));
        ParseError::line("scontrol show job", line, reason, &text)
    };
    let optional = |key: &str| match get(key) {
        None | Some("" | "(null)" | "None") => None,
        Some(v) => Some(v.to_string()),
    };
    let job_id = match get("JobId") {
        Some(v) => parse_digits::<u64>(v).ok_or_else(|| err("JobId", &"invalid job id"))?,
        None => return Err(err("JobId", &"no JobId")),
    };
    let state: SlurmState = match get("JobState") {
        Some(v) => v.parse().map_err(|e| err("JobState", &e))?,
        None => return Err(err("JobState", &"no JobState")),
    };
    let exit_code = get("ExitCode")
        .map(parse_exit_code)
        .transpose()
        .map_err(|e| err("ExitCode", &e))?;
    let array_job_id = get("ArrayJobId")
        .map(|v| parse_digits::<u64>(v).ok_or_else(|| err("ArrayJobId", &"invalid job id")))
        .transpose()?;
    let tasks: Vec<Option<u32>> = match (array_job_id, get("ArrayTaskId")) {
        (None, None) => vec![None],
        (Some(_), Some(v)) => match parse_digits::<u32>(v) {
            Some(i) => vec![Some(i)],
            None => expand_array_tasks(v)
                .map_err(|e| err("ArrayTaskId", &e))?
                .into_iter()
                .map(Some)
                .collect(),
        },
        (Some(_), None) => return Err(err("ArrayJobId", &"ArrayJobId without ArrayTaskId")),
        (None, Some(_)) => return Err(err("ArrayTaskId", &"ArrayTaskId without ArrayJobId")),
    };
    let reason = optional("Reason");
    let job_name = get("JobName").map(str::to_string);
    let dependency = optional("Dependency");
    Ok(tasks
        .into_iter()
        .map(|task| ScontrolJob {
            job: JobRef {
                job_id: array_job_id.unwrap_or(job_id),
                array_index: task,
            },
            job_id,
            state,
            reason: reason.clone(),
            exit_code,
            array_job_id,
            array_task_id: task,
            job_name: job_name.clone(),
            dependency: dependency.clone(),
        })
        .collect())
}

/// One job (or array element) listed by `sacct -X -n -P -o JobID,State,ExitCode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SacctEntry {
    /// The job or array element.
    pub job: JobRef,
    /// Its state (sacct's `"CANCELLED by <uid>"` is [`SlurmState::Cancelled`]).
    pub state: SlurmState,
    /// `ExitCode` as (exit code, signal).
    pub exit_code: (i32, i32),
}

/// Parses the output of `sacct -X -n -P -o JobID,State,ExitCode -j <ids>`
/// ([`SACCT_FIELDS`]).
///
/// Blank lines and job steps (`123.batch`, `123_4.0`) are skipped; folded
/// pending array elements (`123_[5-9%2]`) yield one entry per element.
pub fn parse_sacct(output: &str) -> Result<Vec<SacctEntry>, ParseError> {
    let mut entries = Vec::new();
    for (n, line) in output.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |reason: &dyn fmt::Display| ParseError::line("sacct", n + 1, reason, line);
        let fields: Vec<&str> = line.split('|').collect();
        // -P separates fields with '|'; -p also ends the line with one.
        let (id, state, exit_code) = match fields[..] {
            [id, state, exit_code] | [id, state, exit_code, ""] => (id, state, exit_code),
            _ => return Err(err(&"expected \"<jobid>|<state>|<exitcode>\"")),
        };
        if id.contains('.') {
            continue;
        }
        let jobs = parse_job_ids(id).map_err(|e| err(&e))?;
        let state: SlurmState = state.parse().map_err(|e| err(&e))?;
        let exit_code = parse_exit_code(exit_code).map_err(|e| err(&e))?;
        entries.extend(jobs.into_iter().map(|job| SacctEntry {
            job,
            state,
            exit_code,
        }));
    }
    Ok(entries)
}

/// Whether sacct's output (stdout or stderr) says there is no accounting
/// database: "Slurm accounting storage is disabled" (sacct exits 1 in 22.05).
pub fn sacct_disabled(stderr_or_stdout: &str) -> bool {
    stderr_or_stdout.contains("Slurm accounting storage is disabled")
}

/// Parses the output of `scontrol show config`: every `Key = Value` line, both
/// trimmed. Lines without `=` (headers, "Slurmctld(primary) at ... is UP") are
/// skipped; of a key listed twice the first value is kept.
pub fn parse_scontrol_config(output: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for line in output.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        map.entry(key.to_string())
            .or_insert_with(|| value.trim().to_string());
    }
    map
}

fn config_value<'a>(
    cfg: &'a HashMap<String, String>,
    key: &'static str,
) -> Result<&'a str, ParseError> {
    cfg.get(key)
        .map(String::as_str)
        .ok_or(ParseError::MissingConfigKey(key))
}

/// `MaxArraySize` of a parsed `scontrol show config` (array task ids must be
/// below it).
pub fn max_array_size(cfg: &HashMap<String, String>) -> Result<u32, ParseError> {
    let value = config_value(cfg, "MaxArraySize")?;
    parse_digits(value).ok_or_else(|| ParseError::InvalidConfigValue {
        key: "MaxArraySize",
        value: value.to_string(),
    })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
