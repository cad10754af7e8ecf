//! Driver memory per task: runs `--tasks` no-op commands (`true I`, each its own key; with
//! `--function`, no-op function tasks instead) on SingleNode and prints the driver's peak
//! resident memory (`VmHWM` of /proc/self/status) before and after, and the growth per task,
//! as one JSON line.
//!
//! The caller keeps at most `--window` futures (default 1,000): it submits a window, waits
//! for it and drops its futures before the next, so whatever the peak grows by beyond one
//! window is what pitch itself keeps of finished tasks.
//!
//! `cargo run --release --example bench_memory -- --tasks 200000 --workers 2`
//! (`--store DIR` puts the cache directory under DIR; default the system's temporary
//! directory. The cache directory is removed at the end.)

use std::time::Instant;

use pitch::{Command, Executor, SingleNodeExecutor};

#[path = "bench_args/mod.rs"]
mod bench_args;
use bench_args::{number, text};

pitch::task! {
    /// The no-op task: returns its argument.
    pub fn noop(i: u64) -> u64 { i }
}

/// A `kB` line of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// Runs tasks `from..to` (commands or functions) and waits for all of them.
fn run(exe: &Executor, function: bool, from: usize, to: usize) -> Result<(), pitch::Error> {
    if function {
        let values = pitch::wait_all(noop::map(exe, from as u64..to as u64))?;
        assert_eq!(values.len(), to - from);
    } else {
        let commands = (from..to).map(|i| Command::new("true").arg(i.to_string()));
        let outputs = pitch::wait_all(exe.map_commands(commands))?;
        assert_eq!(outputs.len(), to - from);
    }
    Ok(())
}

fn main() -> Result<(), pitch::Error> {
    pitch::init();
    let tasks = number("--tasks", 200_000);
    let workers = number("--workers", 2);
    let window = number("--window", 1_000).max(1);
    let function = std::env::args().any(|a| a == "--function");
    let store = text("--store").unwrap_or_else(|| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(&store).map_err(|e| pitch::Error::Config(e.to_string()))?;
    let exe = SingleNodeExecutor::builder()
        .max_cores(workers as u32)
        .max_workers(workers as u32)
        .cache_directory(dir.path())
        .build()?;

    // Warm-up: runtime and pool threads, one full window (the caller's own share), so
    // that the baseline holds everything but what finished tasks leave behind.
    run(&exe, function, tasks, tasks + window)?;
    let before = status_bytes("VmHWM");

    let start = Instant::now();
    let mut submitted = 0;
    while submitted < tasks {
        let n = window.min(tasks - submitted);
        run(&exe, function, submitted, submitted + n)?;
        submitted += n;
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = status_bytes("VmHWM");
    let rss = status_bytes("VmRSS");
    let per_task = after.saturating_sub(before) as f64 / tasks as f64;
    let kind = if function { "function" } else { "command" };
    println!(
        "{{\"name\": \"driver memory ({kind})\", \"tasks\": {tasks}, \"window\": {window}, \
         \"seconds\": {seconds:.3}, \"vm_hwm_before\": {before}, \"vm_hwm_after\": {after}, \
         \"vm_rss_after\": {rss}, \"bytes_per_task\": {per_task:.1}}}"
    );
    drop(exe);
    Ok(())
}
