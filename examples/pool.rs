//! Persistent workers (`block_allocation`): an init function loads data once per worker,
//! tasks read it with `pitch::worker_state`, and many short tasks run without a process each.
//!
//! `cargo run --release --example pool`
//!
//! Run it twice: the second run answers every task from the result log in `./pitch-cache-pool`.

use std::sync::atomic::{AtomicU64, Ordering};

use pitch::{SingleNodeExecutor, WorkerStateError};

/// What every worker loads once: here a table, in real life a model or a data set.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Table {
    pub weights: Vec<f64>,
    /// Tasks this worker has run (state kept across the tasks of one worker).
    #[serde(skip)]
    pub calls: AtomicU64,
}

pitch::task! {
    /// The init function: runs once in each worker when it starts.
    pub fn load_table(n: usize) -> Table {
        Table { weights: (0..n).map(|i| 1.0 / (1.0 + i as f64)).collect(), calls: AtomicU64::new(0) }
    }
}

pitch::task! {
    /// A short task that uses the worker's table.
    pub fn score(i: usize) -> Result<(f64, u32), WorkerStateError> {
        let table = pitch::worker_state::<Table>()?;
        table.calls.fetch_add(1, Ordering::Relaxed);
        Ok((table.weights[i % table.weights.len()] * i as f64, std::process::id()))
    }
}

fn main() -> Result<(), pitch::Error> {
    pitch::init();
    let exe = SingleNodeExecutor::builder()
        .block_allocation(true)
        .max_workers(2)
        .init_function(load_table::init(1000))
        .cache_directory("pitch-cache-pool")
        .build()?;
    let results = pitch::wait_all(score::map(&exe, 0..10_000))?;
    let total: f64 = results.iter().map(|(s, _)| s).sum();
    let mut pids: Vec<u32> = results.iter().map(|(_, pid)| *pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let summary = exe.shutdown(pitch::Shutdown::Wait);
    println!(
        "10000 tasks, total score {total:.3}, run by {} worker processes, {} answered from \
         the result log",
        pids.len(),
        summary.cached
    );
    Ok(())
}
