//! The fault-injection suite (issue 16): a sweep on the real local Slurm
//! (`cluster-tests/start-slurm.sh`) while the cluster has a bad day: slurmctld stopped and
//! restarted, a node crashing (its slurmd and its jobs killed) with Slurm's requeue on and off,
//! jobs scancelled from outside, the cache file system full, the driver killed with SIGKILL
//! while submitting, mid-run and while collecting, a job preempted. The same faults again
//! with pilot jobs (`block_allocation(true)`, `pilot_cases.rs`: the plan's `pilots`), where a
//! fault hits a pilot and the task it runs.
//!
//! Every case runs its driver as a child process (this binary, `faults-driver PLAN`), bounded
//! in time, and asserts: the driver finishes; every task ends exactly once (one terminal event
//! per task) with a typed, named outcome (a `pitch::TaskError` variant, and the `EndReason` of
//! a scheduler error); nothing finished is lost (a stored result is never replaced by a
//! failure, and no task reported failed has a finished result); and a rerun on the same cache
//! directory completes the rest without running a finished task again (with pilots, whose
//! results are records of the result log: a task has at most one finished record, and a
//! rerun adds none for a finished task). Each task appends a
//! line to its own marker file (`O_APPEND`) when it starts, so the runs of every task are
//! counted; each case says how many runs it allows and why.
//!
//! The suite stops and starts Slurm's daemons and mounts a tmpfs: it needs root and the local
//! cluster to itself (it runs last in `.ci/run`). Without Slurm (or without root) every case
//! is reported as ignored with the reason; `PITCH_REQUIRE_SLURM=1` makes a missing Slurm a
//! failure. The cases that disturb the whole cluster run one at a time; the others side by
//! side. At the end the suite prints its figures (cases, tasks, retries, tasks recovered,
//! time to recover), which the README's "Reliability" section quotes.
//!
//! Files: `cases.rs` (one job per task), `pilot_cases.rs` (pilots), `inject.rs` (the faults,
//! each injected into a driver's first run, shared by both), `cluster.rs` (the daemons, a
//! tmpfs).
//!
//! `cargo test --test faults -- NAME_SUBSTRING`, `--list`; `PITCH_KEEP_TEST_DIRS=1` keeps
//! each case's directory (cache, markers, the drivers' logs and event logs).

mod cases;
mod cluster;
mod inject;
mod pilot_cases;
#[path = "../common/slurm_tools.rs"]
mod slurm_tools;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use pitch::{Resources, SlurmClusterExecutor, TaskError};

pitch::task! {
    /// Task `i` of a sweep: appends a line (its job id and pid) to `markers/i` as it starts,
    /// then works for `ms` milliseconds.
    pub fn work(i: u32, markers: String, ms: u64) -> u32 {
        let line = format!(
            "{} {}\n",
            std::env::var("SLURM_JOB_ID").unwrap_or_default(),
            std::process::id()
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&markers).join(i.to_string()))
            .expect("the marker file");
        f.write_all(line.as_bytes()).expect("a marker line");
        drop(f);
        std::thread::sleep(Duration::from_millis(ms));
        i
    }
}

#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// What a driver runs: a sweep of `work` tasks, task `i` working `ms[i]` milliseconds and
/// submitted `delay_ms[i]` after the driver started (0 when absent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub cache: PathBuf,
    pub markers: PathBuf,
    pub ms: Vec<u64>,
    #[serde(default)]
    pub delay_ms: Vec<u64>,
    pub partition: Option<String>,
    pub slurm_args: Vec<String>,
    /// `requeue` (sbatch `--requeue` / `--no-requeue`).
    #[serde(default)]
    pub requeue: Option<bool>,
    pub max_jobs: Option<u32>,
    #[serde(default)]
    pub tasks_per_job: Option<u32>,
    pub max_retries: Option<u32>,
    /// `retry_on` names (`cancelled`...).
    #[serde(default)]
    pub retry_on: String,
    pub retry_backoff_ms: Option<u64>,
    /// Pilot jobs (`block_allocation(true)`) instead of one job per task.
    #[serde(default)]
    pub pilots: Option<Pilots>,
}

/// The pilots of a plan: at most `max_workers` pilot jobs (the plan's partition, requeue and
/// sbatch arguments are theirs), each with a wall time of `wall_s` seconds, leaving after
/// `idle_s` seconds without work; they connect to the driver on 127.0.0.1.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Pilots {
    pub max_workers: u32,
    pub idle_s: u64,
    pub wall_s: u64,
}

impl Pilots {
    /// `max_workers` pilots of 10 minutes that leave after 5 s idle.
    pub(crate) fn new(max_workers: u32) -> Pilots {
        Pilots {
            max_workers,
            idle_s: 5,
            wall_s: 600,
        }
    }
}

impl Plan {
    pub(crate) fn new(dir: &Path, ms: Vec<u64>) -> Plan {
        Plan {
            cache: dir.join("cache"),
            markers: dir.join("markers"),
            ms,
            ..Plan::default()
        }
    }

    pub(crate) fn n(&self) -> usize {
        self.ms.len()
    }
}

/// How a task ended in one run of a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    /// The `TaskError` variant's name, the scheduler state (`Scheduler`, or the final cause
    /// of `GaveUp`), and the error's text.
    Err {
        variant: String,
        state: String,
        text: String,
    },
}

impl Outcome {
    pub(crate) fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// `Variant` or `Variant(STATE)`.
    pub(crate) fn name(&self) -> String {
        match self {
            Outcome::Ok => "Ok".into(),
            Outcome::Err { variant, state, .. } if state.is_empty() => variant.clone(),
            Outcome::Err { variant, state, .. } => format!("{variant}({state})"),
        }
    }
}

/// One line of a driver's event log.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    pub ms: u64,
    pub kind: String,
    pub key: String,
    pub rest: String,
}

/// A finished run of a driver.
pub(crate) struct Run {
    /// By task index.
    pub outcomes: Vec<Outcome>,
    pub keys: Vec<String>,
    pub events: Vec<Ev>,
    pub elapsed: Duration,
}

impl Run {
    /// The events of kind `kind` for task `i`.
    pub(crate) fn count(&self, i: usize, kind: &str) -> usize {
        self.events
            .iter()
            .filter(|e| e.kind == kind && e.key == self.keys[i])
            .count()
    }

    /// The retries the driver made (its `Retrying` events).
    pub(crate) fn retries(&self) -> usize {
        self.events.iter().filter(|e| e.kind == "retrying").count()
    }

    pub(crate) fn failed(&self) -> Vec<usize> {
        (0..self.outcomes.len())
            .filter(|&i| !self.outcomes[i].is_ok())
            .collect()
    }

    /// `name: tasks` for each outcome.
    pub(crate) fn summary(&self) -> String {
        let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, o) in self.outcomes.iter().enumerate() {
            by.entry(o.name()).or_default().push(i);
        }
        by.iter()
            .map(|(k, v)| format!("{k}: {v:?}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn variant(e: &TaskError) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn state(e: &TaskError) -> String {
    match e.final_cause() {
        TaskError::Scheduler { state, .. } => state.to_string(),
        _ if matches!(e, TaskError::GaveUp { .. }) => variant(e.final_cause()),
        _ => String::new(),
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\t'], " ")
}

/// The files of a driver's run `tag` in `dir`.
pub(crate) fn run_files(dir: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{tag}.plan.json")),
        dir.join(format!("{tag}.out")),
        dir.join(format!("{tag}.events")),
        dir.join(format!("{tag}.log")),
    )
}

fn event_line(e: &pitch::Event) -> String {
    use pitch::EventKind as K;
    let ms = e.elapsed.as_millis();
    let (kind, key, rest) = match &e.kind {
        K::Submitted { key, .. } => ("submitted", key.clone(), String::new()),
        K::Cached { key, .. } => ("cached", key.clone(), String::new()),
        K::Started { key, job_id, .. } => {
            ("started", key.clone(), job_id.clone().unwrap_or_default())
        }
        K::Finished { key, .. } => ("finished", key.clone(), String::new()),
        K::Failed { key, error, .. } => (
            "failed",
            key.clone(),
            format!(
                "{}\t{}\t{}",
                variant(error),
                state(error),
                one_line(&error.to_string())
            ),
        ),
        K::Warning { message } => ("warning", "-".into(), one_line(message)),
        K::RunFinished { .. } => ("run_finished", "-".into(), String::new()),
        other => {
            // Kinds newer than this suite (the engine's retries): named by their Debug form,
            // with the key when they have one.
            let text = format!("{other:?}");
            let name = text
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_lowercase();
            let key = text
                .split("key: \"")
                .nth(1)
                .and_then(|t| t.split('"').next())
                .unwrap_or("-")
                .to_string();
            return format!("{ms}\t{name}\t{key}\t{}\n", one_line(&text));
        }
    };
    format!("{ms}\t{kind}\t{key}\t{rest}\n")
}

/// The driver (`faults-driver DIR TAG`): runs the plan `DIR/TAG.plan.json`, logs events to
/// `TAG.events` as they come, the task keys to `TAG.out.keys` once submitted, and every
/// task's outcome to `TAG.out` at the end.
fn driver(dir: &Path, tag: &str) -> i32 {
    let (plan_file, out, events, _) = run_files(dir, tag);
    let plan: Plan = serde_json::from_str(&std::fs::read_to_string(plan_file).unwrap()).unwrap();
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(events)
            .unwrap(),
    ));
    let mut builder = SlurmClusterExecutor::builder()
        .cache_directory(&plan.cache)
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1))
        .reporter(move |e: &pitch::Event| {
            let _ = log.lock().unwrap().write_all(event_line(e).as_bytes());
        });
    if let Some(n) = plan.max_jobs {
        builder = builder.max_jobs(n);
    }
    if let Some(k) = plan.tasks_per_job {
        builder = builder.tasks_per_job(k);
    }
    let mut resources = Resources::new();
    if let Some(p) = &plan.partition {
        resources = resources.partition(p);
    }
    if let Some(r) = plan.requeue {
        resources = resources.requeue(r);
    }
    for a in &plan.slurm_args {
        resources = resources.slurm_cmd_arg(a);
    }
    if let Some(n) = plan.max_retries {
        resources = resources.max_retries(n);
    }
    if !plan.retry_on.is_empty() {
        resources = resources.retry_on(pitch::RetryOn::parse_list(&plan.retry_on).unwrap());
    }
    if let Some(ms) = plan.retry_backoff_ms {
        resources = resources.retry_backoff(Duration::from_millis(ms));
    }
    if let Some(p) = plan.pilots {
        builder = builder
            .block_allocation(true)
            .pilot_address("127.0.0.1")
            .max_workers(p.max_workers)
            .idle_timeout(Duration::from_secs(p.idle_s));
        resources = resources.run_time_max(Duration::from_secs(p.wall_s));
    }
    let exe = match builder.resources(resources).build() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("faults-driver: {e}");
            return 2;
        }
    };
    std::fs::create_dir_all(&plan.markers).unwrap();
    let markers = plan.markers.display().to_string();
    let start = Instant::now();
    let mut order: Vec<usize> = (0..plan.n()).collect();
    let delay = |i: usize| plan.delay_ms.get(i).copied().unwrap_or(0);
    order.sort_by_key(|&i| delay(i));
    let mut futures: Vec<Option<pitch::TaskFuture<u32>>> = vec![None; plan.n()];
    let mut keys = String::new();
    for i in order {
        let at = Duration::from_millis(delay(i));
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let f = work::submit(&exe, i as u32, markers.clone(), plan.ms[i]);
        keys.push_str(&format!("{i}\t{}\n", f.key()));
        std::fs::write(out.with_extension("keys.tmp"), &keys).unwrap();
        std::fs::rename(out.with_extension("keys.tmp"), out.with_extension("keys")).unwrap();
        futures[i] = Some(f);
    }
    let mut text = String::new();
    let mut failed = 0;
    for (i, f) in futures.iter().enumerate() {
        let f = f.as_ref().unwrap();
        match f.result() {
            Ok(v) => {
                assert_eq!(v as usize, i);
                text.push_str(&format!("{i}\t{}\tok\n", f.key()));
            }
            Err(e) => {
                failed += 1;
                text.push_str(&format!(
                    "{i}\t{}\terr\t{}\t{}\t{}\n",
                    f.key(),
                    variant(&e),
                    state(&e),
                    one_line(&e.to_string())
                ));
            }
        }
    }
    std::fs::write(out.with_extension("tmp"), text).unwrap();
    std::fs::rename(out.with_extension("tmp"), &out).unwrap();
    drop(exe);
    i32::from(failed > 0)
}

/// A running driver; dropped unfinished (a case that failed on its way), it is killed.
pub(crate) struct Driver(std::process::Child);

impl Driver {
    /// Kills it (SIGKILL) and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Starts the driver of `plan` as run `tag` in `dir` (its stdout and stderr in `TAG.log`),
/// with `path` as its PATH when given.
pub(crate) fn spawn_driver(
    dir: &Path,
    tag: &str,
    plan: &Plan,
    path: Option<&std::ffi::OsStr>,
) -> Driver {
    let (plan_file, _, _, log) = run_files(dir, tag);
    std::fs::write(&plan_file, serde_json::to_string_pretty(plan).unwrap()).unwrap();
    let log = std::fs::File::create(log).unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["faults-driver", dir.to_str().unwrap(), tag])
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    Driver(cmd.spawn().unwrap())
}

/// The events a driver has logged so far.
pub(crate) fn events_of(dir: &Path, tag: &str) -> Vec<Ev> {
    std::fs::read_to_string(run_files(dir, tag).2)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, '\t');
            Some(Ev {
                ms: it.next()?.parse().ok()?,
                kind: it.next()?.to_string(),
                key: it.next()?.to_string(),
                rest: it.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// The task keys a driver has submitted so far, by index.
pub(crate) fn keys_of(dir: &Path, tag: &str) -> HashMap<usize, String> {
    std::fs::read_to_string(run_files(dir, tag).1.with_extension("keys"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (i, k) = l.split_once('\t')?;
            Some((i.parse().ok()?, k.to_string()))
        })
        .collect()
}

/// The job ids of the tasks whose jobs have been submitted, by index.
pub(crate) fn job_ids(dir: &Path, tag: &str) -> HashMap<usize, String> {
    let keys = keys_of(dir, tag);
    let events = events_of(dir, tag);
    keys.into_iter()
        .filter_map(|(i, k)| {
            events
                .iter()
                .rev()
                .find(|e| e.kind == "started" && e.key == k && !e.rest.is_empty())
                .map(|e| (i, e.rest.clone()))
        })
        .collect()
}

/// Waits (at most `bound`) for the driver to exit and reads its run; a driver still running
/// after `bound` is killed, and that is a failure (it hung).
pub(crate) fn finish_driver(
    dir: &Path,
    tag: &str,
    mut child: Driver,
    started: Instant,
    bound: Duration,
) -> Result<Run, String> {
    let status = loop {
        if let Some(status) = child.0.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > bound {
            child.kill();
            let tail: Vec<String> = events_of(dir, tag)
                .iter()
                .rev()
                .take(15)
                .map(|e| format!("{} {} {} {}", e.ms, e.kind, e.key, e.rest))
                .collect();
            return Err(format!(
                "driver {tag} did not finish within {bound:?} (killed); its last events: {tail:#?}; its log: {}",
                std::fs::read_to_string(run_files(dir, tag).3).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    let (_, out, _, log) = run_files(dir, tag);
    let text = std::fs::read_to_string(&out).map_err(|e| {
        format!(
            "driver {tag} exited ({status}) without its results ({e}); its log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    })?;
    let mut outcomes = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.splitn(6, '\t').collect();
        let i: usize = f[0].parse().map_err(|_| format!("bad line {l:?}"))?;
        let outcome = match f.get(2) {
            Some(&"ok") => Outcome::Ok,
            _ => Outcome::Err {
                variant: f.get(3).unwrap_or(&"").to_string(),
                state: f.get(4).unwrap_or(&"").to_string(),
                text: f.get(5).unwrap_or(&"").to_string(),
            },
        };
        ensure!(
            outcomes.insert(i, outcome).is_none(),
            "task {i} ended twice in {tag}'s results"
        );
        keys.insert(i, f[1].to_string());
    }
    let n = outcomes.len();
    ensure!(
        outcomes.keys().copied().eq(0..n),
        "{tag}'s results skip tasks: {:?}",
        outcomes.keys()
    );
    Ok(Run {
        outcomes: outcomes.into_values().collect(),
        keys: keys.into_values().collect(),
        events: events_of(dir, tag),
        elapsed,
    })
}

/// Runs run `tag` of `plan` to its end (at most `bound`).
pub(crate) fn run_driver(
    dir: &Path,
    tag: &str,
    plan: &Plan,
    bound: Duration,
) -> Result<Run, String> {
    let start = Instant::now();
    let child = spawn_driver(dir, tag, plan, None);
    finish_driver(dir, tag, child, start, bound)
}

/// How many times each task started (lines of its marker file).
pub(crate) fn runs(plan: &Plan) -> Vec<usize> {
    (0..plan.n())
        .map(|i| {
            std::fs::read_to_string(plan.markers.join(i.to_string()))
                .map(|t| t.lines().count())
                .unwrap_or(0)
        })
        .collect()
}

/// Waits (at most `bound`) until `cond` holds.
pub(crate) fn wait_until(
    what: &str,
    bound: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    while !cond() {
        ensure!(Instant::now() < deadline, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A task's stored outcome: `Some(true)` a finished result, `Some(false)` a failure, `None`
/// nothing (or unreadable), with the result file's bytes. A pooled task (pilots) has no
/// result file but records in the result logs: finished if one of them is, and its "bytes"
/// are every record of the task (a rerun that records it again changes them).
pub(crate) fn stored(cache: &Path, key: &str) -> (Option<bool>, Option<Vec<u8>>) {
    let outcome = pitch::__private::read_result(cache, key)
        .ok()
        .map(|r| r.is_ok());
    let bytes = pitch::__private::result_path(cache, key)
        .ok()
        .and_then(|p| std::fs::read(p).ok());
    if outcome.is_some() || bytes.is_some() {
        return (outcome, bytes);
    }
    let logged = pitch::__private::logged_results(cache, key).unwrap_or_default();
    if logged.is_empty() {
        return (None, None);
    }
    let finished = logged.iter().any(|r| r.is_ok());
    (Some(finished), Some(format!("{logged:?}").into_bytes()))
}

/// How many finished records the result logs hold for `key` (pilots): more than one is a
/// task recorded twice.
pub(crate) fn finished_records(cache: &Path, key: &str) -> usize {
    pitch::__private::logged_results(cache, key)
        .unwrap_or_default()
        .iter()
        .filter(|r| r.is_ok())
        .count()
}

/// The checks of every run that ended: each task ended exactly once (one terminal event, the
/// one its outcome says), every failure is one the case allows (`allowed` gets the outcome's
/// name), and no task reported failed has a finished result in the cache.
pub(crate) fn check_run(
    plan: &Plan,
    run: &Run,
    tag: &str,
    allowed: &dyn Fn(&Outcome) -> bool,
) -> Result<(), String> {
    ensure!(
        run.outcomes.len() == plan.n(),
        "{tag}: {} results for {} tasks",
        run.outcomes.len(),
        plan.n()
    );
    for (i, o) in run.outcomes.iter().enumerate() {
        let terminal = run.count(i, "finished") + run.count(i, "cached") + run.count(i, "failed");
        ensure!(
            terminal == 1,
            "{tag}: task {i} ended {terminal} times in the events ({})",
            o.name()
        );
        let failed_event = run.count(i, "failed") == 1;
        ensure!(
            failed_event != o.is_ok(),
            "{tag}: task {i} is {} but its event says otherwise",
            o.name()
        );
        if let Outcome::Err { text, .. } = o {
            ensure!(allowed(o), "{tag}: task {i} ended {}: {text}", o.name());
        }
        let (finished, _) = stored(&plan.cache, &run.keys[i]);
        let records = finished_records(&plan.cache, &run.keys[i]);
        ensure!(
            records <= 1,
            "{tag}: task {i} has {records} finished records in the result logs (recorded twice)"
        );
        if o.is_ok() {
            ensure!(
                finished == Some(true),
                "{tag}: task {i} succeeded but its stored result is {finished:?}"
            );
        } else {
            ensure!(
                finished != Some(true),
                "{tag}: task {i} was reported {} but a finished result is stored (a finished \
                 result reported as a failure)",
                o.name()
            );
        }
    }
    Ok(())
}

/// The stored result files of the finished tasks of `run` (to check that a rerun leaves them
/// alone).
pub(crate) fn finished_files(plan: &Plan, run: &Run) -> BTreeMap<usize, Vec<u8>> {
    (0..plan.n())
        .filter(|&i| run.outcomes[i].is_ok())
        .filter_map(|i| stored(&plan.cache, &run.keys[i]).1.map(|b| (i, b)))
        .collect()
}

/// The rerun's checks: every task finishes; the tasks `done` (finished before: their result
/// files) do not run again, keep their result file byte for byte and (`cached`) are answered
/// from the cache; the others run at most once more (`before` = runs before the rerun).
pub(crate) fn check_rerun(
    plan: &Plan,
    rerun: &Run,
    done: &BTreeMap<usize, Vec<u8>>,
    before: &[usize],
    cached: bool,
) -> Result<(), String> {
    check_run(plan, rerun, "rerun", &|_| false)?;
    let after = runs(plan);
    for i in 0..plan.n() {
        if let Some(bytes) = done.get(&i) {
            ensure!(
                !cached || rerun.count(i, "cached") == 1,
                "rerun: finished task {i} was not answered from the cache"
            );
            ensure!(
                after[i] == before[i],
                "rerun: finished task {i} ran again ({} -> {} runs)",
                before[i],
                after[i]
            );
            let now = stored(&plan.cache, &rerun.keys[i]).1;
            ensure!(
                now.as_ref() == Some(bytes),
                "rerun: finished task {i}'s result file changed"
            );
        } else {
            ensure!(
                after[i] <= before[i] + 1,
                "rerun: task {i} ran {} times in the rerun",
                after[i] - before[i]
            );
        }
    }
    Ok(())
}

/// One case's figures, printed at the end.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    pub case: String,
    pub tasks: usize,
    /// Tasks that ended with an error in the first run (driver killed: tasks unfinished).
    pub failed: usize,
    /// Tasks a job of which Slurm requeued or the driver retried, that finished in the run.
    pub recovered_in_run: usize,
    pub retries: usize,
    pub recovered_by_rerun: usize,
    /// Runs of all tasks (marker lines) over the case.
    pub runs: usize,
    /// From the end of the fault (service back, space freed, driver restarted) to every task
    /// finished.
    pub recover: Duration,
    pub total: Duration,
    pub note: String,
}

static FIGURES: Mutex<Vec<Figures>> = Mutex::new(Vec::new());

pub(crate) fn record(f: Figures) {
    eprintln!(
        "  {}: {} tasks, {} failed, {} recovered in the run ({} retries), {} by the rerun, {} runs, recovered in {:.1} s ({})",
        f.case,
        f.tasks,
        f.failed,
        f.recovered_in_run,
        f.retries,
        f.recovered_by_rerun,
        f.runs,
        f.recover.as_secs_f64(),
        f.note
    );
    FIGURES.lock().unwrap().push(f);
}

fn print_figures(total: Duration) {
    let mut figures = FIGURES.lock().unwrap().clone();
    if figures.is_empty() {
        return;
    }
    figures.sort_by(|a, b| a.case.cmp(&b.case));
    println!(
        "\nfault-injection figures ({:.0} s in all):",
        total.as_secs_f64()
    );
    println!("| case | tasks | failed in the run | recovered in the run (Slurm requeue, retries) | retries made | recovered by the rerun | runs | time to recover | case time | what happened |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for f in &figures {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s | {:.0} s | {} |",
            f.case,
            f.tasks,
            f.failed,
            f.recovered_in_run,
            f.retries,
            f.recovered_by_rerun,
            f.runs,
            f.recover.as_secs_f64(),
            f.total.as_secs_f64(),
            f.note
        );
    }
    let sum = |g: fn(&Figures) -> usize| figures.iter().map(g).sum::<usize>();
    println!(
        "cases {}, tasks {}, failed in the run {}, recovered in the run {}, retries made {}, recovered by the rerun {}",
        figures.len(),
        sum(|f| f.tasks),
        sum(|f| f.failed),
        sum(|f| f.recovered_in_run),
        sum(|f| f.retries),
        sum(|f| f.recovered_by_rerun)
    );
}

pub(crate) type TestFn = fn(&Path) -> Result<(), String>;

/// Why the suite cannot run here, or `None` when it can.
fn cannot_run() -> Option<String> {
    let sinfo = std::process::Command::new("sinfo")
        .arg("-h")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if !sinfo.map(|s| s.success()).unwrap_or(false) {
        return Some(
            "no Slurm reachable (sinfo failed); start one with cluster-tests/start-slurm.sh".into(),
        );
    }
    if std::env::var_os("PITCH_SLURM_DIR").is_none() {
        return Some(
            "Slurm is reachable but its env.sh was not sourced (PITCH_SLURM_DIR is unset): \
             run `source /tmp/pitch-slurm/env.sh` first"
                .into(),
        );
    }
    None
}

/// Runs one case in a fresh directory (kept with PITCH_KEEP_TEST_DIRS=1).
fn run_case(name: &str, test: TestFn) -> Result<(), String> {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("pitch-faults-{name}-"))
        .tempdir()
        .map_err(|e| e.to_string())?;
    if std::env::var_os("PITCH_KEEP_TEST_DIRS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("  {name}: {}", dir.path().display());
    }
    test(dir.path())
}

fn main() {
    pitch::init();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("faults-driver") {
        std::process::exit(driver(Path::new(&args[2]), &args[3]));
    }
    let mut args = libtest_mimic::Arguments::from_args();
    // Every case starts at once; `cases::Case::alone` ones hold the cluster to themselves (a
    // write lock), the others share it (a read lock).
    let all: Vec<cases::Case> = cases::CASES
        .iter()
        .chain(pilot_cases::CASES)
        .copied()
        .collect();
    if args.test_threads.is_none() {
        args.test_threads = Some(all.len());
    }
    static BLOCKER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    static CLUSTER: std::sync::RwLock<()> = std::sync::RwLock::new(());
    let required = std::env::var_os("PITCH_REQUIRE_SLURM").is_some();
    let root = unsafe { libc::geteuid() } == 0;
    let trials = all
        .iter()
        .map(|case| {
            let case = *case;
            libtest_mimic::Trial::ignorable_test(case.name, move || {
                match BLOCKER.get_or_init(cannot_run) {
                    Some(why) if required => {
                        return Err(format!("{why}, but PITCH_REQUIRE_SLURM is set").into())
                    }
                    Some(why) => {
                        return Ok(libtest_mimic::Completion::ignored_with(format!(
                            "the fault-injection suite did not run: {why}"
                        )))
                    }
                    None => {}
                }
                if !root {
                    return Ok(libtest_mimic::Completion::ignored_with(
                        "the fault-injection suite needs root (it stops and starts Slurm's \
                         daemons and mounts a tmpfs)",
                    ));
                }
                let _held = if case.alone {
                    (
                        None,
                        Some(CLUSTER.write().unwrap_or_else(|e| e.into_inner())),
                    )
                } else {
                    (
                        Some(CLUSTER.read().unwrap_or_else(|e| e.into_inner())),
                        None,
                    )
                };
                run_case(case.name, case.run)
                    .map(|()| libtest_mimic::Completion::Completed)
                    .map_err(Into::into)
            })
            .with_ignored_flag(case.known_bug.is_some())
        })
        .collect();
    for case in &all {
        if let Some(bug) = case.known_bug {
            eprintln!("{}: ignored, a known bug: {bug}", case.name);
        }
    }
    let start = Instant::now();
    let conclusion = libtest_mimic::run(&args, trials);
    print_figures(start.elapsed());
    conclusion.exit();
}
