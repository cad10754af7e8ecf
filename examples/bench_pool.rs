//! Benchmark of persistent workers (`block_allocation(true)`) on SingleNode. Prints JSON lines
//! `{"name", "tasks", "seconds"}` on stdout for `benches/run-pool.sh`, which runs the Python
//! peers (ProcessPoolExecutor, executorlib block_allocation) beside it.
//!
//! `cargo run --release --example bench_pool -- --tasks 20000 --workers 2`
//!
//! Measurements (executor creation, worker start and a warm-up batch are not timed):
//! - `pitch pooled`: `--tasks` no-op tasks, results kept in memory only (`cache(false)`).
//! - `pitch pooled (cache)`: the same with a fresh cache directory (the result log).
//! - `pitch pooled emcee`: `--walkers` x `--steps`: each step submits one task per walker
//!   (a `--work-us` busy function) and waits for all of them before the next step.
//! - `pitch pooled latency`: `--latency` tasks one after another, each waited on; `median`
//!   is the median submit-to-result time of one task, in seconds.

use std::time::{Duration, Instant};

use pitch::SingleNodeExecutor;

#[path = "bench_args/mod.rs"]
mod bench_args;
use bench_args::{line, number, wanted};

pitch::task! {
    /// The no-op task: returns its argument.
    pub fn noop(i: u64) -> u64 { i }
}

pitch::task! {
    /// An emcee-shaped log-probability: busy for `work_us` microseconds, then a Gaussian.
    pub fn log_prob(theta: Vec<f64>, work_us: u64) -> f64 {
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_micros(work_us) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        -0.5 * theta.iter().map(|t| t * t).sum::<f64>()
    }
}

fn pool(workers: u32) -> pitch::SingleNodeBuilder {
    SingleNodeExecutor::builder()
        .block_allocation(true)
        .max_cores(workers)
        .max_workers(workers)
}

/// A small deterministic generator for the walkers' moves (no dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() -> Result<(), pitch::Error> {
    pitch::init();
    let tasks = number("--tasks", 20_000);
    let workers = number("--workers", 2) as u32;
    let dir = tempfile::tempdir().map_err(|e| pitch::Error::Config(e.to_string()))?;

    if wanted("pooled") {
        let exe = pool(workers)
            .cache(false)
            .cache_directory(dir.path().join("nocache"))
            .build()?;
        pitch::wait_all(noop::map(&exe, 1_000_000..1_000_000 + workers as u64))?;
        let start = Instant::now();
        let values = pitch::wait_all(noop::map(&exe, 0..tasks as u64))?;
        line("pitch pooled", tasks, start.elapsed().as_secs_f64(), "");
        assert_eq!(values.len(), tasks);
        assert_eq!(values[tasks - 1], tasks as u64 - 1);
    }

    if wanted("cache") {
        let exe = pool(workers)
            .cache_directory(dir.path().join("cache"))
            .build()?;
        pitch::wait_all(noop::map(&exe, 1_000_000..1_000_000 + workers as u64))?;
        let start = Instant::now();
        let values = pitch::wait_all(noop::map(&exe, 0..tasks as u64))?;
        line(
            "pitch pooled (cache)",
            tasks,
            start.elapsed().as_secs_f64(),
            "",
        );
        assert_eq!(values.len(), tasks);
    }

    if wanted("emcee") {
        let walkers = number("--walkers", 32);
        let steps = number("--steps", 100);
        let work_us = number("--work-us", 50) as u64;
        let dim = 4;
        let exe = pool(workers)
            .cache(false)
            .cache_directory(dir.path().join("emcee"))
            .build()?;
        pitch::wait_all(noop::map(&exe, 1_000_000..1_000_000 + workers as u64))?;
        let mut rng = Lcg(42);
        let mut positions: Vec<Vec<f64>> = (0..walkers)
            .map(|_| (0..dim).map(|_| rng.next() - 0.5).collect())
            .collect();
        let mut probs: Vec<f64> = vec![f64::NEG_INFINITY; walkers];
        let start = Instant::now();
        for _ in 0..steps {
            // A stretch move against a random other walker.
            let proposals: Vec<Vec<f64>> = (0..walkers)
                .map(|k| {
                    let other = &positions
                        [(k + 1 + (rng.next() * (walkers - 1) as f64) as usize) % walkers];
                    let z = (1.0 + rng.next()).powi(2) / 2.0;
                    positions[k]
                        .iter()
                        .zip(other)
                        .map(|(x, o)| o + z * (x - o))
                        .collect()
                })
                .collect();
            let futures = log_prob::map(&exe, proposals.iter().map(|p| (p.clone(), work_us)));
            let new = pitch::wait_all(futures)?;
            for k in 0..walkers {
                if new[k] > probs[k] || rng.next() < (new[k] - probs[k]).exp() {
                    positions[k] = proposals[k].clone();
                    probs[k] = new[k];
                }
            }
        }
        line(
            "pitch pooled emcee",
            walkers * steps,
            start.elapsed().as_secs_f64(),
            &format!(", \"walkers\": {walkers}, \"steps\": {steps}, \"work_us\": {work_us}"),
        );
    }

    if wanted("latency") {
        let n = number("--latency", 2000);
        let exe = pool(workers)
            .cache(false)
            .cache_directory(dir.path().join("latency"))
            .build()?;
        pitch::wait_all(noop::map(&exe, 1_000_000..1_000_000 + workers as u64))?;
        let mut times = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            noop::submit(&exe, i as u64).result()?;
            times.push(t.elapsed().as_secs_f64());
        }
        let total = start.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        line(
            "pitch pooled latency",
            n,
            total,
            &format!(", \"median\": {:.9}", times[n / 2]),
        );
    }
    Ok(())
}
