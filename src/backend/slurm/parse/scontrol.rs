//! `scontrol`'s output: a partition's limits ([`parse_partitions`]), a job that left the queue
//! ([`parse_scontrol_show_job`], [`scontrol_job_unknown`]) and the cluster's configuration
//! ([`parse_scontrol_config`], [`max_array_size`]).

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::{expand_array_tasks, parse_digits, parse_exit_code, ParseError, SlurmState};
use crate::backend::scheduler::JobRef;

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
pub(super) fn scontrol_pairs(record: &str) -> Vec<(&str, &str)> {
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
