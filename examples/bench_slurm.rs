//! Benchmark of pitch on Slurm: N trivial command tasks (`true <i>`, a distinct argument each
//! so every task has its own cache key) through `SlurmClusterExecutor`, which turns them into
//! job arrays. Prints JSON lines `{"name", "tasks", "seconds"}` on stdout for
//! `benches/run-slurm.sh`; everything else goes to stderr.
//!
//! `cargo run --release --example bench_slurm -- --tasks 1000 [--pack 10]`
//!
//! * `--tasks N` (default 1000): tasks per measurement.
//! * `--pack K`: also measure with `tasks_per_job(K)` (K tasks side by side in each array
//!   element), printed as `pitch slurm arrays (packed K)`.
//! * `--only-packed`: with `--pack`, skip the unpacked measurement.
//! * `--pilots P`: instead, N no-op *function* tasks through at most P pilot jobs
//!   (`block_allocation(true)`, `max_workers(P)`), printed as `pitch slurm pilots (P)`. The
//!   pilots connect back to this host (`PITCH_BENCH_PILOT_ADDRESS`, default its name). Its
//!   JSON line adds `startup`: the seconds until the first task started (the pilots' queue
//!   wait and start).
//! * `--command-pilots P`: instead, N `true <i>` *commands* through at most P pilot jobs,
//!   printed as `pitch slurm pilot commands (P)` (with `startup` as for `--pilots`). Fails
//!   when the commands ran in more than P jobs (as jobs of their own, not in the pilots).
//! * `--sweep CPUS`: instead, the heterogeneous sweep: N tasks sleeping 0.1-2 s (a fixed
//!   pseudo-random sequence), through CPUS pilots (`pitch slurm pilots sweep (CPUS)`, function
//!   tasks) and as `sleep` commands packed `--pack K` per array element (`pitch slurm arrays
//!   sweep (packed K)`). Its JSON lines add `work` (the sum of the durations), `startup` (until
//!   the last of the CPUS pilots took its first task; for packing, until the first task
//!   started), `ideal` (work / CPUS + startup) and `jobs` (the jobs that ran tasks).
//!
//! Run it from a directory on storage the compute nodes share: the cache directory is a fresh
//! temporary directory under the current directory, removed at the end.
//!
//! When `PITCH_BENCH_CALLS_DIR` is set (by `benches/run-slurm.sh`, which puts sbatch/squeue
//! shims first on PATH that append one line per call to `$PITCH_BENCH_CALLS_DIR/sbatch.calls`
//! and `squeue.calls`), each JSON line also carries the `sbatch_calls` and `squeue_calls` made
//! during that measurement.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pitch::{Command, SlurmClusterExecutor};

pitch::task! {
    /// The no-op function task of the pilot measurement.
    pub fn bench_noop(i: u64) -> u64 { i }
}

pitch::task! {
    /// A task of the heterogeneous sweep: sleeps `ms` (its index `i` keeps keys apart).
    pub fn bench_sleep(i: u64, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        i
    }
}

/// The sweep's durations in milliseconds: 100-2000, a fixed pseudo-random order.
fn sweep_durations(n: usize) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            100 + (x >> 33) % 1901
        })
        .collect()
}

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number, got {v:?}"))
        })
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Lines in `$PITCH_BENCH_CALLS_DIR/<tool>.calls`, or `None` when not counting.
fn calls(dir: Option<&Path>, tool: &str) -> Option<usize> {
    let dir = dir?;
    Some(
        std::fs::read_to_string(dir.join(format!("{tool}.calls")))
            .map(|t| t.lines().count())
            .unwrap_or(0),
    )
}

fn config_error(e: impl std::fmt::Display) -> pitch::Error {
    pitch::Error::Config(e.to_string())
}

/// When a task started, and in which job.
type Start = (Instant, Option<String>);

/// How one measurement runs its tasks.
enum Mode {
    /// Commands, one per array element.
    Arrays,
    /// Commands, `k` per array element (`tasks_per_job(k)`).
    Packed(u32),
    /// No-op function tasks through at most this many pilot jobs.
    Pilots(u32),
    /// `true` commands through at most this many pilot jobs.
    CommandPilots(u32),
    /// The heterogeneous sweep through this many pilots.
    SweepPilots(u32),
    /// The heterogeneous sweep as `sleep` commands, this many per array element, on this
    /// many CPUs.
    SweepPacked(u32, u32),
}

/// One measurement: builds an executor on a fresh cache directory, submits `tasks` tasks
/// as one `map`, waits for all of them and prints the JSON line.
fn measure(name: &str, tasks: usize, mode: Mode) -> Result<(), pitch::Error> {
    let counting: Option<PathBuf> = std::env::var_os("PITCH_BENCH_CALLS_DIR").map(PathBuf::from);
    let cache = tempfile::Builder::new()
        .prefix("pitch-bench-slurm-")
        .tempdir_in(".")
        .map_err(config_error)?;
    let builder = SlurmClusterExecutor::builder()
        .cache_directory(cache.path())
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1));
    let builder = match mode {
        Mode::Arrays => builder,
        Mode::Packed(k) | Mode::SweepPacked(k, _) => builder.tasks_per_job(k),
        Mode::Pilots(p) | Mode::CommandPilots(p) | Mode::SweepPilots(p) => {
            let b = builder
                .block_allocation(true)
                .max_workers(p)
                .idle_timeout(Duration::from_secs(30));
            match std::env::var("PITCH_BENCH_PILOT_ADDRESS") {
                Ok(a) if !a.is_empty() => b.pilot_address(a),
                _ => b,
            }
        }
    };
    // When each task started (its job), for the sweep's start-up.
    let starts: Arc<Mutex<Vec<Start>>> = Arc::default();
    let s2 = starts.clone();
    let builder = builder.reporter(move |e: &pitch::Event| {
        if let pitch::EventKind::Started { job_id, .. } = &e.kind {
            s2.lock().unwrap().push((Instant::now(), job_id.clone()));
        }
    });
    let exe = builder.build()?;
    let durations = sweep_durations(tasks);

    let sbatch_before = calls(counting.as_deref(), "sbatch");
    let squeue_before = calls(counting.as_deref(), "squeue");
    let start = Instant::now();
    let done = match mode {
        Mode::Pilots(_) => pitch::wait_all(bench_noop::map(&exe, 0..tasks as u64))?.len(),
        Mode::SweepPilots(_) => {
            let items = durations.iter().enumerate().map(|(i, ms)| (i as u64, *ms));
            pitch::wait_all(bench_sleep::map(&exe, items))?.len()
        }
        Mode::SweepPacked(..) => {
            // `sleep S` with a distinct index argument each (`sh -c 'sleep $0' S i`).
            let commands = durations.iter().enumerate().map(|(i, ms)| {
                Command::new("sh").args([
                    "-c".to_string(),
                    "sleep $0".to_string(),
                    format!("{}.{:03}", ms / 1000, ms % 1000),
                    i.to_string(),
                ])
            });
            pitch::wait_all(exe.map_commands(commands))?.len()
        }
        Mode::Arrays | Mode::Packed(_) | Mode::CommandPilots(_) => {
            let commands = (0..tasks).map(|i| Command::new("true").arg(i.to_string()));
            pitch::wait_all(exe.map_commands(commands))?.len()
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    // Stop the poller before reading the counters, so its calls are all in.
    drop(exe);
    assert_eq!(done, tasks);

    let mut line = format!("{{\"name\": \"{name}\", \"tasks\": {tasks}, \"seconds\": {seconds:.3}");
    if let (Some(b), Some(a)) = (sbatch_before, calls(counting.as_deref(), "sbatch")) {
        line += &format!(", \"sbatch_calls\": {}", a - b);
    }
    if let (Some(b), Some(a)) = (squeue_before, calls(counting.as_deref(), "squeue")) {
        line += &format!(", \"squeue_calls\": {}", a - b);
    }
    if let Mode::CommandPilots(p) = mode {
        // What is measured must be what ran: commands in the pilots, not jobs of their own.
        let jobs: std::collections::HashSet<Option<String>> = starts
            .lock()
            .unwrap()
            .iter()
            .map(|(_, j)| j.clone())
            .collect();
        if jobs.len() > p as usize || jobs.contains(&None) {
            return Err(config_error(format!(
                "{name}: the commands ran in {} jobs, not in at most {p} pilots: {jobs:?}",
                jobs.len()
            )));
        }
    }
    if let Mode::Pilots(_) | Mode::CommandPilots(_) = mode {
        // How much of the time went to the pilots' queue wait and start: until the first
        // task started.
        let first = starts.lock().unwrap().iter().map(|(t, _)| *t).min();
        if let Some(t) = first {
            line += &format!(
                ", \"startup\": {:.3}",
                t.duration_since(start).as_secs_f64()
            );
        }
    }
    let cpus = match mode {
        Mode::SweepPilots(p) | Mode::SweepPacked(_, p) => Some(p),
        _ => None,
    };
    if let Some(cpus) = cpus {
        let work = durations.iter().sum::<u64>() as f64 / 1000.0;
        let starts = starts.lock().unwrap();
        let jobs: std::collections::HashSet<&Option<String>> =
            starts.iter().map(|(_, j)| j).collect();
        line += &format!(", \"jobs\": {}", jobs.len());
        // Pilots: until the last of them took its first task; packing: the first start.
        let startup = match mode {
            Mode::SweepPilots(_) => {
                let mut seen = std::collections::HashSet::new();
                starts
                    .iter()
                    .filter(|(_, job)| seen.insert(job.clone()))
                    .map(|(t, _)| *t)
                    .max()
            }
            _ => starts.iter().map(|(t, _)| *t).min(),
        }
        .map_or(0.0, |t| t.duration_since(start).as_secs_f64());
        let ideal = work / f64::from(cpus) + startup;
        line += &format!(
            ", \"cpus\": {cpus}, \"work\": {work:.3}, \"startup\": {startup:.3}, \"ideal\": {ideal:.3}"
        );
    }
    line += "}";
    println!("{line}");
    eprintln!("bench_slurm: {name}: {tasks} tasks in {seconds:.2} s");
    Ok(())
}

fn main() -> Result<(), pitch::Error> {
    pitch::init(); // first: turns this process into a worker when a job launches it
    let tasks = arg("--tasks").unwrap_or(1000);
    if let Some(cpus) = arg("--sweep") {
        let cpus = u32::try_from(cpus).map_err(config_error)?;
        let k = u32::try_from(arg("--pack").unwrap_or(10)).map_err(config_error)?;
        measure(
            &format!("pitch slurm pilots sweep ({cpus})"),
            tasks,
            Mode::SweepPilots(cpus),
        )?;
        return measure(
            &format!("pitch slurm arrays sweep (packed {k})"),
            tasks,
            Mode::SweepPacked(k, cpus),
        );
    }
    if let Some(p) = arg("--command-pilots") {
        let p = u32::try_from(p).map_err(config_error)?;
        return measure(
            &format!("pitch slurm pilot commands ({p})"),
            tasks,
            Mode::CommandPilots(p),
        );
    }
    if let Some(p) = arg("--pilots") {
        let p = u32::try_from(p).map_err(config_error)?;
        return measure(&format!("pitch slurm pilots ({p})"), tasks, Mode::Pilots(p));
    }
    let pack = arg("--pack");
    if !(pack.is_some() && flag("--only-packed")) {
        measure("pitch slurm arrays", tasks, Mode::Arrays)?;
    }
    if let Some(k) = pack {
        let k = u32::try_from(k).map_err(config_error)?;
        measure(
            &format!("pitch slurm arrays (packed {k})"),
            tasks,
            Mode::Packed(k),
        )?;
    }
    Ok(())
}
