//! Benchmark of process-per-task execution on SingleNode, through the same code paths and
//! store as any user's task. Prints JSON lines `{"name", "tasks", "seconds"}` on stdout for
//! `benches/run-single-node.sh`, which runs the Python peers beside it.
//!
//! `cargo run --release --example bench_single_node -- --tasks 2000 --workers 2`

use std::process::{Command as StdCommand, Stdio};
use std::time::Instant;

use pitch::{Command, SingleNodeExecutor};

#[path = "bench_args/mod.rs"]
mod bench_args;
use bench_args::{line, number, wanted};

pitch::task! {
    /// The no-op task: returns its argument.
    pub fn noop(i: u64) -> u64 { i }
}

/// Spawns `program args` `tasks` times, `workers` at a time, waiting for each.
fn floor(program: &str, args: &[&str], tasks: usize, workers: usize) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let share = tasks / workers + usize::from(w < tasks % workers);
            s.spawn(move || {
                for _ in 0..share {
                    let status = StdCommand::new(program)
                        .args(args)
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .expect("spawn");
                    assert!(status.success());
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn main() -> Result<(), pitch::Error> {
    pitch::init();
    if std::env::args().nth(1).as_deref() == Some("--noop") {
        return Ok(());
    }
    let tasks = number("--tasks", 2000);
    let workers = number("--workers", 2);
    let dir = tempfile::tempdir().map_err(|e| pitch::Error::Config(e.to_string()))?;
    let exe = SingleNodeExecutor::builder()
        .max_cores(workers as u32)
        .max_workers(workers as u32)
        .cache_directory(dir.path())
        .build()?;

    // Warm-up (page cache, runtime threads), not timed.
    pitch::wait_all(noop::map(&exe, 1_000_000..1_000_000 + workers as u64))?;

    if wanted("function") {
        let start = Instant::now();
        let values = pitch::wait_all(noop::map(&exe, 0..tasks as u64))?;
        line("pitch function", tasks, start.elapsed().as_secs_f64(), "");
        assert_eq!(values.len(), tasks);
    }

    if wanted("command") {
        let start = Instant::now();
        let commands = (0..tasks).map(|i| Command::new("true").arg(i.to_string()));
        pitch::wait_all(exe.map_commands(commands))?;
        line("pitch command", tasks, start.elapsed().as_secs_f64(), "");
    }

    if wanted("latency") {
        let latency_tasks = 100;
        let start = Instant::now();
        for i in 0..latency_tasks {
            noop::submit(&exe, 2_000_000 + i).result()?;
        }
        line(
            "pitch latency",
            latency_tasks as usize,
            start.elapsed().as_secs_f64(),
            "",
        );
    }
    if !wanted("floor") {
        return Ok(());
    }

    let me = std::env::current_exe().expect("the benchmark's path");
    let me = me.to_str().expect("a UTF-8 path");
    line(
        "bare spawn floor",
        tasks,
        floor(me, &["--noop"], tasks, workers),
        "",
    );
    line(
        "bare spawn floor (true)",
        tasks,
        // The same argv shape as pitch's command tasks: GNU true with an argument loads the
        // locale (it checks for --help), without one it does not.
        floor("true", &["0"], tasks, workers),
        "",
    );
    Ok(())
}
