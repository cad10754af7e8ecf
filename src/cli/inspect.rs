//! `pitch status`, `pitch results`, `pitch cancel` and `pitch gc`: looking at (and tidying)
//! a cache directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use pitch::{Cache, TaskInfo, TaskState};

use super::{count, fail, json, OK, TASK_FAILED, USAGE};

/// Which cache directory: `--cache-dir`, else the one of `--profile` (or `$PITCH_PROFILE`),
/// else `./pitch-cache`, as for `pitch run` and `pitch sweep`.
#[derive(Args)]
pub(crate) struct Place {
    /// The cache directory (default: the profile's, else ./pitch-cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// A profile of pitch.toml whose cache directory to use (default: $PITCH_PROFILE); its
    /// `[remote]` table, if any, reaches the scheduler of jobs submitted over SSH.
    #[arg(long, env = "PITCH_PROFILE")]
    profile: Option<String>,
    /// Accept a group-writable cache directory or parent (see the README's "Security model").
    #[arg(long)]
    trust_group: bool,
}

impl Place {
    /// The cache directory, whether its group is trusted, and the profile's remote table.
    fn resolve(&self) -> Result<(PathBuf, bool, Option<pitch::profile::RemoteProfile>), String> {
        let profile = match &self.profile {
            Some(name) => {
                let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
                Some(pitch::profile::load_named(name, &cwd).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let dir = self
            .cache_dir
            .clone()
            .or_else(|| profile.as_ref().and_then(|p| p.cache_directory.clone()))
            .unwrap_or_else(|| PathBuf::from("pitch-cache"));
        let trust = self.trust_group
            || profile
                .as_ref()
                .is_some_and(|p| p.trust_group == Some(true));
        Ok((dir, trust, profile.and_then(|p| p.remote)))
    }
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    place: Place,
    /// One line per task.
    #[arg(long)]
    all: bool,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ResultsArgs {
    #[command(flatten)]
    place: Place,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
    format: String,
}

#[derive(Args)]
pub(crate) struct CancelArgs {
    #[command(flatten)]
    place: Place,
    /// Cancel every unfinished task.
    #[arg(long, conflicts_with = "keys")]
    all: bool,
    /// Keys of the tasks to cancel.
    keys: Vec<String>,
}

#[derive(Args)]
pub(crate) struct GcArgs {
    #[command(flatten)]
    place: Place,
    /// Only tasks whose directory is older than this (7d, 12h, 01:00:00).
    #[arg(long)]
    older_than: Option<String>,
    /// Remove finished tasks.
    #[arg(long)]
    finished: bool,
    /// Remove failed tasks.
    #[arg(long)]
    failed: bool,
    /// Remove finished and failed tasks (never unfinished ones).
    #[arg(long, conflicts_with_all = ["finished", "failed"])]
    all: bool,
    /// Print what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Instead of removing finished tasks, fold their directories into a result log (one
    /// record each, results kept); directories with output files stay. Safe to interrupt.
    #[arg(long, conflicts_with_all = ["failed", "all", "finished", "keys", "dry_run"])]
    compact: bool,
    /// Keys of the tasks to remove (finished or failed ones).
    keys: Vec<String>,
}

/// Opens the cache directory and lists its tasks; `ask_scheduler` (status, cancel): with the
/// profile's `[remote]` table, the scheduler of jobs submitted over SSH is asked there.
fn open(place: &Place, ask_scheduler: bool) -> Result<(Cache, Vec<TaskInfo>), String> {
    let (dir, trust_group, remote) = place.resolve()?;
    let cache = Cache::open_trusting(&dir, trust_group).map_err(|e| e.to_string())?;
    // Jobs submitted over SSH: their scheduler is asked there (the binary has the feature;
    // without it, `Cache` says where the jobs went), once the remote cache directory passed
    // the check an executor's build makes.
    #[cfg(feature = "remote")]
    let cache = match remote {
        Some(r) if ask_scheduler => cache.over_ssh(r.remote()).map_err(|e| e.to_string())?,
        _ => cache,
    };
    #[cfg(not(feature = "remote"))]
    let _ = ask_scheduler;
    #[cfg(not(feature = "remote"))]
    let _ = remote;
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
    let (cache, tasks) = match open(&a.place, true) {
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
    let pilots: std::collections::BTreeMap<String, String> = match cache.pilot_jobs() {
        Ok(found) => found
            .into_iter()
            .map(|(id, state)| (id, state.to_lowercase()))
            .collect(),
        Err(e) => {
            eprintln!("pitch: pilot jobs not looked for: {e}");
            Default::default()
        }
    };
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
            pilots,
        });
    } else {
        let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "{} in {}: {}",
            count(tasks.len(), "task", "tasks"),
            cache.root().display(),
            parts.join(", ")
        );
        if !pilots.is_empty() {
            let listed: Vec<String> = pilots.iter().map(|(id, s)| format!("{id} {s}")).collect();
            println!(
                "{}: {}",
                count(pilots.len(), "pilot job", "pilot jobs"),
                listed.join(", ")
            );
        }
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

/// Compares two parameter values as numbers when both are, else as text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => x.total_cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

/// Sorts tasks in sweep order: the points `pitch sweep` recorded in the order it made them
/// (`recorded`: each sweep's keys, the oldest sweep first; a point of several sweeps is
/// where the newest put it), sweep after sweep; then the other points of a sweep together
/// (by their parameters' names), ordered by their values in parameter order, numbers as
/// numbers (so a range comes out as it was swept); tasks without parameters last, oldest
/// first.
fn sweep_order(tasks: &mut [TaskInfo], recorded: &[Vec<String>]) {
    let mut position: HashMap<&str, (usize, usize)> = HashMap::new();
    for (sweep, keys) in recorded.iter().enumerate() {
        for (i, key) in keys.iter().enumerate() {
            position.insert(key.as_str(), (sweep, i));
        }
    }
    tasks.sort_by(|a, b| {
        let names = |t: &TaskInfo| t.params.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        let pa = position.get(a.key.as_str());
        let pb = position.get(b.key.as_str());
        pa.is_none()
            .cmp(&pb.is_none())
            .then_with(|| pa.cmp(&pb))
            .then_with(|| a.params.is_empty().cmp(&b.params.is_empty()))
            .then_with(|| names(a).cmp(&names(b)))
            .then_with(|| {
                a.params
                    .iter()
                    .zip(&b.params)
                    .map(|((_, x), (_, y))| natural(x, y))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| a.modified.cmp(&b.modified))
            .then_with(|| a.key.cmp(&b.key))
    });
}

/// The parameter names of `tasks`, one column each, in the order they first appear.
fn param_columns(tasks: &[TaskInfo]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (k, _) in tasks.iter().flat_map(|t| &t.params) {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    names
}

fn param_value<'a>(t: &'a TaskInfo, name: &str) -> &'a str {
    t.params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// `pitch results --format csv`: one column per parameter, through the `csv` crate.
fn write_csv(tasks: &[TaskInfo], columns: &[String]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
    let mut header = vec!["key".to_string()];
    header.extend(columns.iter().cloned());
    header.extend(
        ["command", "state", "exit_code", "runtime", "stdout"]
            .iter()
            .map(|s| s.to_string()),
    );
    let retried = tasks.iter().any(|t| !t.attempts.is_empty());
    if retried {
        header.push("retries".into());
    }
    w.write_record(&header)?;
    for t in tasks {
        let mut row = vec![t.key.clone()];
        row.extend(columns.iter().map(|c| param_value(t, c).to_string()));
        row.push(describe(t));
        row.push(state_name(&t.state).to_string());
        row.push(t.exit_code.map(|c| c.to_string()).unwrap_or_default());
        row.push(t.runtime.map(|r| format!("{r:.3}")).unwrap_or_default());
        row.push(
            t.stdout
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        if retried {
            row.push(t.attempts.len().to_string());
        }
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(())
}

pub(crate) fn results(a: ResultsArgs) -> i32 {
    let (cache, mut tasks) = match open(&a.place, false) {
        Ok(x) => x,
        Err(e) => return fail(USAGE, e),
    };
    sweep_order(&mut tasks, &cache.sweep_orders());
    let columns = param_columns(&tasks);
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
            if let Err(e) = write_csv(&tasks, &columns) {
                return fail(TASK_FAILED, format!("could not write the CSV: {e}"));
            }
        }
        _ => {
            let width = column_width(tasks.iter().map(|t| state_name(&t.state)));
            let widths: Vec<usize> = columns
                .iter()
                .map(|c| {
                    tasks
                        .iter()
                        .map(|t| param_value(t, c).chars().count())
                        .max()
                        .unwrap_or(0)
                        .max(c.chars().count())
                })
                .collect();
            let params = |values: Vec<&str>| -> String {
                values
                    .iter()
                    .zip(&widths)
                    .map(|(v, w)| format!("{v:<w$}  "))
                    .collect()
            };
            // A retries column only when a task was retried (each retry's cause under it).
            let retried = tasks.iter().any(|t| !t.attempts.is_empty());
            let retries = |t: &TaskInfo| match retried {
                true => format!("{:>7}  ", t.attempts.len()),
                false => String::new(),
            };
            println!(
                "{:<32}  {}{:<width$}  {:>4} {:>9}  {}command",
                "key",
                params(columns.iter().map(String::as_str).collect()),
                "state",
                "exit",
                "runtime",
                if retried { "retries  " } else { "" }
            );
            for t in &tasks {
                println!(
                    "{:<32}  {}{:<width$}  {:>4} {:>9}  {}{}",
                    t.key,
                    params(columns.iter().map(|c| param_value(t, c)).collect()),
                    state_name(&t.state),
                    t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    t.runtime.map(|r| format!("{r:.2}s")).unwrap_or_default(),
                    retries(t),
                    describe(t)
                );
                for a in &t.attempts {
                    println!(
                        "    attempt {}{} ({:.1} s): {}",
                        a.number,
                        a.job_id
                            .as_ref()
                            .map(|j| format!(", job {j}"))
                            .unwrap_or_default(),
                        a.duration.as_secs_f64(),
                        a.error.to_string().lines().next().unwrap_or_default()
                    );
                }
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
    let (cache, tasks) = match open(&a.place, true) {
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
    let mut ids: Vec<String> = tasks
        .iter()
        .filter(|t| t.state == TaskState::Pending && (a.all || a.keys.contains(&t.key)))
        .filter_map(|t| jobs.get(&t.key).cloned())
        .collect();
    // --all: the pilot jobs too (a killed driver's pilots still queued would start for
    // nothing; a live driver's tasks in them fail as lost, or are retried).
    let mut pilots = 0;
    if a.all {
        match cache.pilot_jobs() {
            Ok(found) => {
                pilots = found.len();
                ids.extend(found.into_keys());
            }
            Err(e) => eprintln!("pitch: pilot jobs not looked for: {e}"),
        }
    }
    if ids.is_empty() {
        println!("nothing to cancel");
        return OK;
    }
    match cache.cancel_jobs(&ids) {
        Ok(()) => {
            let of_pilots = match pilots {
                0 => String::new(),
                n => format!(
                    " ({} of them pilot {})",
                    n,
                    if n == 1 { "job" } else { "jobs" }
                ),
            };
            println!("cancelled {}{of_pilots}", count(ids.len(), "job", "jobs"));
            OK
        }
        Err(e) => fail(TASK_FAILED, e),
    }
}

pub(crate) fn gc(a: GcArgs) -> i32 {
    if !(a.compact || a.finished || a.failed || a.all || !a.keys.is_empty()) {
        return fail(
            USAGE,
            "say what to remove: --finished, --failed, --all (both), or task KEYs \
             (--dry-run lists them first; --compact folds finished ones into a result log)",
        );
    }
    let (cache, tasks) = match open(&a.place, false) {
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
    for k in &a.keys {
        match tasks.iter().find(|t| &t.key == k) {
            None => return fail(USAGE, format!("no task {k} in {}", cache.root().display())),
            Some(t) if t.state == TaskState::Pending => {
                return fail(
                    USAGE,
                    format!(
                        "task {k} is unfinished (queued or running): gc removes ended tasks only"
                    ),
                )
            }
            Some(_) => {}
        }
    }
    let now = SystemTime::now();
    // A pooled task's record lives in a result log shared with other tasks.
    let logged = tasks.iter().filter(|t| t.dir.is_file()).count();
    let mut removed = 0;
    for t in &tasks {
        let selected = match t.state {
            TaskState::Finished => a.finished || a.all || a.keys.contains(&t.key),
            TaskState::Failed(_) => a.failed || a.all || a.keys.contains(&t.key),
            TaskState::Pending => false,
        };
        let age = now.duration_since(t.modified).unwrap_or_default();
        if selected && !t.dir.is_file() && age >= older {
            if a.dry_run {
                println!(
                    "would remove {}  {}  {}",
                    t.key,
                    state_name(&t.state),
                    describe(t)
                );
            } else if let Err(e) = cache.remove(t) {
                return fail(TASK_FAILED, e);
            }
            removed += 1;
        }
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    print!(
        "{verb} {removed} of {}",
        count(tasks.len() - logged, "task directory", "task directories")
    );
    if logged > 0 {
        print!("; {logged} results of pooled tasks stay in their result logs");
    }
    println!();
    OK
}
