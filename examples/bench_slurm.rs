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
//!   pilots connect back to this host (`PITCH_BENCH_PILOT_ADDRESS`, default its name).
//!
//! Run it from a directory on storage the compute nodes share: the cache directory is a fresh
//! temporary directory under the current directory, removed at the end.
//!
//! When `PITCH_BENCH_CALLS_DIR` is set (by `benches/run-slurm.sh`, which puts sbatch/squeue
//! shims first on PATH that append one line per call to `$PITCH_BENCH_CALLS_DIR/sbatch.calls`
//! and `squeue.calls`), each JSON line also carries the `sbatch_calls` and `squeue_calls` made
//! during that measurement.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitch::{Command, SlurmClusterExecutor};

pitch::task! {
    /// The no-op function task of the pilot measurement.
    pub fn bench_noop(i: u64) -> u64 { i }
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

/// How one measurement runs its tasks.
enum Mode {
    /// Commands, one per array element.
    Arrays,
    /// Commands, `k` per array element (`tasks_per_job(k)`).
    Packed(u32),
    /// No-op function tasks through at most this many pilot jobs.
    Pilots(u32),
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
        Mode::Packed(k) => builder.tasks_per_job(k),
        Mode::Pilots(p) => {
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
    let exe = builder.build()?;

    let sbatch_before = calls(counting.as_deref(), "sbatch");
    let squeue_before = calls(counting.as_deref(), "squeue");
    let start = Instant::now();
    let done = if let Mode::Pilots(_) = mode {
        pitch::wait_all(bench_noop::map(&exe, 0..tasks as u64))?.len()
    } else {
        let commands = (0..tasks).map(|i| Command::new("true").arg(i.to_string()));
        pitch::wait_all(exe.map_commands(commands))?.len()
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
    line += "}";
    println!("{line}");
    eprintln!("bench_slurm: {name}: {tasks} tasks in {seconds:.2} s");
    Ok(())
}

fn main() -> Result<(), pitch::Error> {
    pitch::init(); // first: turns this process into a worker when a job launches it
    let tasks = arg("--tasks").unwrap_or(1000);
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
