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

/// One measurement: builds an executor on a fresh cache directory, submits `tasks` commands
/// as one `map`, waits for all of them and prints the JSON line.
fn measure(name: &str, tasks: usize, pack: Option<u32>) -> Result<(), pitch::Error> {
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
    let builder = match pack {
        Some(k) => builder.tasks_per_job(k),
        None => builder,
    };
    let exe = builder.build()?;

    let sbatch_before = calls(counting.as_deref(), "sbatch");
    let squeue_before = calls(counting.as_deref(), "squeue");
    let start = Instant::now();
    let commands = (0..tasks).map(|i| Command::new("true").arg(i.to_string()));
    let outputs = pitch::wait_all(exe.map_commands(commands))?;
    let seconds = start.elapsed().as_secs_f64();
    // Stop the poller before reading the counters, so its calls are all in.
    drop(exe);
    assert_eq!(outputs.len(), tasks);

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
    let pack = arg("--pack");
    if !(pack.is_some() && flag("--only-packed")) {
        measure("pitch slurm arrays", tasks, None)?;
    }
    if let Some(k) = pack {
        let k = u32::try_from(k).map_err(config_error)?;
        measure(&format!("pitch slurm arrays (packed {k})"), tasks, Some(k))?;
    }
    Ok(())
}
