//! What the subcommands print with `--json` (and `pitch results --format json`): one struct per
//! output, each with [`SCHEMA_VERSION`]. A field is never renamed or given another meaning
//! without raising the version; new fields may appear without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pitch::{TaskInfo, TaskState};
use serde::Serialize;

/// The version of every JSON object below; documented in the README ("Command line").
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// `pitch run --json`: the one object on stdout once the command has ended.
#[derive(Serialize)]
pub(crate) struct RunOutput {
    pub schema_version: u32,
    pub key: String,
    /// The command's exit code; `null` when it did not run to an exit.
    pub exit_code: Option<i32>,
    /// `run_seconds` when measured, else `total_seconds`.
    pub seconds: f64,
    /// The command's own run time; `null` when it was not measured.
    pub run_seconds: Option<f64>,
    /// From submission to the result: queue wait, start-up and run.
    pub total_seconds: f64,
    /// `total_seconds - run_seconds`: the wait in the queue and the start-up; `null` with
    /// `run_seconds`.
    pub queued_seconds: Option<f64>,
    /// The command's standard output file; `null` when it wrote nothing.
    pub stdout: Option<PathBuf>,
    /// The command's standard error file; `null` when it wrote nothing.
    pub stderr: Option<PathBuf>,
    /// Why the task failed, when it did.
    pub error: Option<String>,
}

/// `pitch run --detach --json`: the object printed once the job is queued.
#[derive(Serialize)]
pub(crate) struct DetachOutput {
    pub schema_version: u32,
    pub key: String,
    pub job_id: Option<String>,
    pub task_directory: Option<PathBuf>,
}

/// `pitch sweep --json`: one line per point.
#[derive(Serialize)]
pub(crate) struct SweepPoint {
    pub schema_version: u32,
    pub key: String,
    pub params: Params,
    /// `finished` or `failed`.
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// One task of a cache directory: a line of `pitch results --format json`, a row of
/// `pitch status --all --json`.
#[derive(Serialize)]
pub(crate) struct TaskRow {
    pub key: String,
    pub params: Params,
    pub name: String,
    pub argv: Option<Vec<String>>,
    /// `finished`, `failed`, `unfinished`, or the scheduler's state (`pending`, `running`,
    /// ..., `gone`) for `pitch status`.
    pub state: String,
    pub exit_code: Option<i32>,
    /// Run time in seconds, when recorded.
    pub runtime: Option<f64>,
    pub stdout: Option<PathBuf>,
    pub error: Option<String>,
    /// The failed attempts that were retried, when there were any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<pitch::Attempt>,
}

impl TaskRow {
    /// `t` with `state` as its state's name.
    pub(crate) fn new(t: &TaskInfo, state: String) -> TaskRow {
        TaskRow {
            key: t.key.clone(),
            params: params(&t.params),
            name: t.name.clone(),
            argv: t.argv.clone(),
            state,
            exit_code: t.exit_code,
            runtime: t.runtime,
            stdout: t.stdout.clone(),
            error: match &t.state {
                TaskState::Failed(e) => Some(e.to_string()),
                _ => None,
            },
            attempts: t.attempts.clone(),
        }
    }
}

/// A line of `pitch results --format json`.
#[derive(Serialize)]
pub(crate) struct ResultLine {
    pub schema_version: u32,
    #[serde(flatten)]
    pub task: TaskRow,
}

/// `pitch status --json`.
#[derive(Serialize)]
pub(crate) struct StatusOutput<'a> {
    pub schema_version: u32,
    pub cache_directory: &'a Path,
    pub total: usize,
    /// Tasks by state (the names of [`TaskRow::state`]).
    pub counts: BTreeMap<String, usize>,
    /// With `--all`, every task; else empty.
    pub tasks: Vec<TaskRow>,
    /// The pilot jobs (`block_allocation` on slurm or flux) the scheduler lists: job id ->
    /// its state; absent when there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pilots: BTreeMap<String, String>,
}

/// Parameters as a JSON object, in the sweep's parameter order (a later value of the same
/// name wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Params(Vec<(String, String)>);

impl Serialize for Params {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Parameters as a JSON object (see [`Params`]).
pub(crate) fn params(pairs: &[(String, String)]) -> Params {
    let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match out.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    Params(out)
}

/// Prints `value` as one line of JSON on stdout.
pub(crate) fn print(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => println!("{line}"),
        // Only maps with non-string keys fail to serialize, and these structs have none.
        Err(e) => eprintln!("pitch: could not write JSON: {e}"),
    }
}
