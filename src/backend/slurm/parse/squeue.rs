//! `squeue`'s output: the jobs in the queue with their states and reasons ([`parse_squeue`],
//! read by the poller through [`states_by_job`]), and the job ids by script
//! ([`parse_squeue_scripts`]).

use std::collections::HashMap;
use std::fmt;

use super::{parse_job_ids, ParseError, SlurmState};
use crate::backend::scheduler::{JobRef, JobState};

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

/// Parses the output of `squeue -h -r -t all -o '%i|%T|%r'` ([`SQUEUE_FORMAT`](super::SQUEUE_FORMAT)).
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
