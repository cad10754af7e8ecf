//! Benchmark of pitch on Flux: N trivial command tasks (`true <i>`, a distinct argument each
//! so every task has its own cache key) through `FluxJobExecutor` (one Flux job per task
//! inside the instance, submitted through libflux) and `FluxClusterExecutor` (one `flux batch` job per task, or per K
//! tasks with `--pack K`). Prints JSON lines `{"name", "tasks", "seconds"}` on stdout for
//! `benches/run-flux.sh`; everything else goes to stderr. Needs a Flux instance (FLUX_URI).
//!
//! `cargo run --release --example bench_flux -- --tasks 200 [--pack 10] [--only job|cluster|packed]`

use std::time::{Duration, Instant};

use pitch::{Command, Executor, FluxClusterExecutor, FluxJobExecutor};

#[path = "bench_args/mod.rs"]
mod bench_args;
use bench_args::{line, number_opt, wanted};

/// One measurement: `tasks` commands as one `map` on the executor `build` makes on a fresh
/// cache directory; prints the JSON line.
fn measure(
    name: &str,
    tasks: usize,
    build: impl FnOnce(&std::path::Path) -> Result<Executor, pitch::Error>,
) -> Result<(), pitch::Error> {
    let cache = tempfile::Builder::new()
        .prefix("pitch-bench-flux-")
        .tempdir_in(".")
        .map_err(|e| pitch::Error::Config(e.to_string()))?;
    let exe = build(cache.path())?;
    let start = Instant::now();
    let commands = (0..tasks).map(|i| Command::new("true").arg(i.to_string()));
    let outputs = pitch::wait_all(exe.map_commands(commands))?;
    let seconds = start.elapsed().as_secs_f64();
    drop(exe);
    assert_eq!(outputs.len(), tasks);
    line(name, tasks, seconds, "");
    eprintln!("bench_flux: {name}: {tasks} tasks in {seconds:.2} s");
    Ok(())
}

fn cluster(cache: &std::path::Path, pack: Option<u32>) -> Result<Executor, pitch::Error> {
    let b = FluxClusterExecutor::builder()
        .cache_directory(cache)
        .poll_interval(Duration::from_millis(250))
        .max_poll_interval(Duration::from_secs(1))
        .nfs_grace(Duration::from_secs(1));
    match pack {
        Some(k) => b.tasks_per_job(k),
        None => b,
    }
    .build()
}

fn main() -> Result<(), pitch::Error> {
    pitch::init(); // first: turns this process into a worker when a job launches it
    let tasks = number_opt("--tasks").unwrap_or(200);
    if wanted("job") {
        measure("pitch FluxJobExecutor", tasks, |cache| {
            FluxJobExecutor::builder().cache_directory(cache).build()
        })?;
    }
    if wanted("cluster") {
        measure("pitch FluxClusterExecutor", tasks, |cache| {
            cluster(cache, None)
        })?;
    }
    if let Some(k) = number_opt("--pack").filter(|_| wanted("packed")) {
        let k = u32::try_from(k).map_err(|e| pitch::Error::Config(e.to_string()))?;
        measure(
            &format!("pitch FluxClusterExecutor (packed {k})"),
            tasks,
            |cache| cluster(cache, Some(k)),
        )?;
    }
    Ok(())
}
