//! `pitch status`, `pitch results`, `pitch cancel` and `pitch gc`: looking at (and tidying)
//! a cache directory.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use pitch::{Cache, TaskInfo, TaskState};

use super::{count, fail, json, OK, TASK_FAILED, USAGE};

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// The cache directory.
    #[arg(long, default_value = "pitch-cache")]
    cache_dir: PathBuf,
    /// Accept a group-writable cache directory or parent (see the README's "Security model").
    #[arg(long)]
    trust_group: bool,
    /// One line per task.
    #[arg(long)]
    all: bool,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ResultsArgs {
    /// The cache directory.
    #[arg(long, default_value = "pitch-cache")]
    cache_dir: PathBuf,
    /// Accept a group-writable cache directory or parent (see the README's "Security model").
    #[arg(long)]
    trust_group: bool,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
    format: String,
}

#[derive(Args)]
pub(crate) struct CancelArgs {
    /// The cache directory.
    #[arg(long, default_value = "pitch-cache")]
    cache_dir: PathBuf,
    /// Accept a group-writable cache directory or parent (see the README's "Security model").
    #[arg(long)]
    trust_group: bool,
    /// Cancel every unfinished task.
    #[arg(long, conflicts_with = "keys")]
    all: bool,
    /// Keys of the tasks to cancel.
    keys: Vec<String>,
}

#[derive(Args)]
pub(crate) struct GcArgs {
    /// The cache directory.
    #[arg(long, default_value = "pitch-cache")]
    cache_dir: PathBuf,
    /// Accept a group-writable cache directory or parent (see the README's "Security model").
    #[arg(long)]
    trust_group: bool,
    /// Only tasks whose directory is older than this (7d, 12h, 01:00:00).
    #[arg(long)]
    older_than: Option<String>,
    /// Also remove failed tasks (finished ones are always removed).
    #[arg(long)]
    failed: bool,
    /// Instead of removing finished tasks, fold their directories into a result log (one
    /// record each, results kept); directories with output files stay. Safe to interrupt.
    #[arg(long, conflicts_with = "failed")]
    compact: bool,
}

fn open(dir: &std::path::Path, trust_group: bool) -> Result<(Cache, Vec<TaskInfo>), String> {
    let cache = Cache::open_trusting(dir, trust_group).map_err(|e| e.to_string())?;
    let (tasks, unreadable) = cache.tasks_and_unreadable().map_err(|e| e.to_string())?;
    // Say what the listing is missing rather than showing fewer tasks without a word.
    for (path, why) in unreadable.iter().take(10) {
        eprintln!("pitch: skipped {}: {why}", path.display());
    }
    if unreadable.len() > 10 {
        eprintln!(
            "pitch: ... and {} more unreadable entries",
            unreadable.len() - 10
        );
    }
    Ok((cache, tasks))
}

fn state_name(s: &TaskState) -> &'static str {
    match s {
        TaskState::Pending => "unfinished",
        TaskState::Finished => "finished",
        TaskState::Failed(_) => "failed",
    }
}

/// Splits unfinished tasks that have a scheduler job into the scheduler's states (pending,
/// running, ... or gone) with ONE squeue (or flux jobs) call for all of them; tasks never
/// submitted stay "unfinished".
fn scheduler_states(
    cache: &Cache,
    tasks: &[TaskInfo],
) -> std::collections::HashMap<String, String> {
    let jobs = cache.jobs();
    let mut out = std::collections::HashMap::new();
    let pending: Vec<&TaskInfo> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Pending && jobs.contains_key(&t.key))
        .collect();
    if pending.is_empty() {
        return out;
    }
    let states = match cache.job_states() {
        Ok(states) => states,
        Err(e) => {
            eprintln!("pitch: queued or running tasks show as unfinished: {e}");
            return out;
        }
    };
    for t in pending {
        let job = &jobs[&t.key];
        let state = states.get(job.as_str()).map_or("gone", String::as_str);
        out.insert(t.key.clone(), state.to_lowercase());
    }
    out
}

pub(crate) fn status(a: StatusArgs) -> i32 {
    let (cache, tasks) = match open(&a.cache_dir, a.trust_group) {
        Ok(x) => x,
        Err(e) => return fail(USAGE, e),
    };
    let sched = scheduler_states(&cache, &tasks);
    // Each task's state as shown: the scheduler's for a queued task, else pitch's.
    let shown: Vec<String> = tasks
        .iter()
        .map(|t| {
            sched
                .get(&t.key)
                .cloned()
                .unwrap_or_else(|| state_name(&t.state).to_string())
        })
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for s in &shown {
        *counts.entry(s.clone()).or_insert(0usize) += 1;
    }
    if a.json {
        json::print(&json::StatusOutput {
            schema_version: json::SCHEMA_VERSION,
            cache_directory: cache.root(),
            total: tasks.len(),
            counts,
            tasks: if a.all {
                tasks
                    .iter()
                    .zip(shown)
                    .map(|(t, s)| json::TaskRow::new(t, s))
                    .collect()
            } else {
                Vec::new()
            },
        });
    } else {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "{} in {}: {}",
            count(tasks.len(), "task", "tasks"),
            cache.root().display(),
            parts.join(", ")
        );
        if a.all {
            let width = column_width(shown.iter().map(String::as_str));
            for (t, s) in tasks.iter().zip(&shown) {
                println!("{}  {s:<width$}  {}", t.key, describe(t));
            }
        }
    }
    if tasks
        .iter()
        .any(|t| matches!(t.state, TaskState::Failed(_)))
    {
        TASK_FAILED
    } else {
        OK
    }
}

/// The width of a column holding `values` (at least that of its header, `state`).
fn column_width<'a>(values: impl Iterator<Item = &'a str>) -> usize {
    values.map(str::len).max().unwrap_or(0).max("state".len())
}

fn describe(t: &TaskInfo) -> String {
    match &t.argv {
        Some(argv) => argv.join(" "),
        None => t.name.clone(),
    }
}

fn params_text(t: &TaskInfo) -> String {
    t.params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(crate) fn results(a: ResultsArgs) -> i32 {
    let (_, tasks) = match open(&a.cache_dir, a.trust_group) {
        Ok(x) => x,
        Err(e) => return fail(USAGE, e),
    };
    match a.format.as_str() {
        "json" => {
            for t in &tasks {
                json::print(&json::ResultLine {
                    schema_version: json::SCHEMA_VERSION,
                    task: json::TaskRow::new(t, state_name(&t.state).to_string()),
                });
            }
        }
        "csv" => {
            println!("key,params,command,state,exit_code,runtime,stdout");
            for t in &tasks {
                println!(
                    "{},{},{},{},{},{},{}",
                    t.key,
                    csv_field(&params_text(t)),
                    csv_field(&describe(t)),
                    state_name(&t.state),
                    t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    t.runtime.map(|r| format!("{r:.3}")).unwrap_or_default(),
                    csv_field(
                        &t.stdout
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )
                );
            }
        }
        _ => {
            let width = column_width(tasks.iter().map(|t| state_name(&t.state)));
            println!(
                "{:<32}  {:<width$}  {:>4} {:>9}  command",
                "key", "state", "exit", "runtime"
            );
            for t in &tasks {
                println!(
                    "{:<32}  {:<width$}  {:>4} {:>9}  {}",
                    t.key,
                    state_name(&t.state),
                    t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    t.runtime.map(|r| format!("{r:.2}s")).unwrap_or_default(),
                    describe(t)
                );
            }
        }
    }
    if tasks
        .iter()
        .any(|t| matches!(t.state, TaskState::Failed(_)))
    {
        TASK_FAILED
    } else {
        OK
    }
}

pub(crate) fn cancel(a: CancelArgs) -> i32 {
    let (cache, tasks) = match open(&a.cache_dir, a.trust_group) {
        Ok(x) => x,
        Err(e) => return fail(USAGE, e),
    };
    if !a.all && a.keys.is_empty() {
        return fail(USAGE, "name the tasks to cancel, or --all");
    }
    for k in &a.keys {
        if !tasks.iter().any(|t| &t.key == k) {
            return fail(USAGE, format!("no task {k} in {}", cache.root().display()));
        }
    }
    let jobs = cache.jobs();
    let ids: Vec<String> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Pending && (a.all || a.keys.contains(&t.key)))
        .filter_map(|t| jobs.get(&t.key).cloned())
        .collect();
    if ids.is_empty() {
        println!("nothing to cancel");
        return OK;
    }
    match cache.cancel_jobs(&ids) {
        Ok(()) => {
            println!("cancelled {}", count(ids.len(), "job", "jobs"));
            OK
        }
        Err(e) => fail(TASK_FAILED, e),
    }
}

pub(crate) fn gc(a: GcArgs) -> i32 {
    let (cache, tasks) = match open(&a.cache_dir, a.trust_group) {
        Ok(x) => x,
        Err(e) => return fail(USAGE, e),
    };
    let older = match a
        .older_than
        .as_deref()
        .map(pitch::parse_duration)
        .transpose()
    {
        Ok(d) => d.unwrap_or(Duration::ZERO),
        Err(e) => return fail(USAGE, format!("--older-than: {e}")),
    };
    if a.compact {
        return match cache.compact(older) {
            Ok(c) => {
                println!(
                    "folded {} task directories into the result log; kept {} finished ones \
                     (output files, or younger than --older-than)",
                    c.folded, c.kept
                );
                OK
            }
            Err(e) => fail(TASK_FAILED, e),
        };
    }
    let now = SystemTime::now();
    // A pooled task's record lives in a result log shared with other tasks.
    let logged = tasks.iter().filter(|t| t.dir.is_file()).count();
    let mut removed = 0;
    for t in &tasks {
        let done = match t.state {
            TaskState::Finished => true,
            TaskState::Failed(_) => a.failed,
            TaskState::Pending => false,
        };
        let age = now.duration_since(t.modified).unwrap_or_default();
        if done && !t.dir.is_file() && age >= older {
            if let Err(e) = cache.remove(t) {
                return fail(TASK_FAILED, e);
            }
            removed += 1;
        }
    }
    print!(
        "removed {removed} of {}",
        count(tasks.len() - logged, "task directory", "task directories")
    );
    if logged > 0 {
        print!("; {logged} results of pooled tasks stay in their result logs");
    }
    println!();
    OK
}
