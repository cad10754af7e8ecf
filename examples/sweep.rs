//! The cosmology sweep: 3 paradigms x 4 mass definitions x 5 halos x 3 particle types x
//! 3 axes x 10 radii = 5,400 runs, each a function task. On a laptop it runs on local cores;
//! with `--short` only the first two radii and halos (432 runs).
//!
//! `cargo run --release --example sweep -- --short`
//!
//! Interrupt it and run it again: finished points come from the cache, only the rest run.

use pitch::SingleNodeExecutor;
use serde::{Deserialize, Serialize};

/// One point of the grid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    paradigm: String,
    mass_definition: String,
    halo: u32,
    particles: String,
    axis: char,
    radius: f64,
}

pitch::task! {
    /// Stands in for the ten-second measurement: a projected density at `radius`.
    pub fn measure(p: Point) -> f64 {
        let seed = p.halo as f64 + p.radius * 10.0 + p.axis as u32 as f64 * 0.01;
        (0..20_000).map(|i| ((i as f64 + seed).sin() / (1.0 + p.radius)).abs()).sum::<f64>()
            * match p.paradigm.as_str() { "CDM" => 1.0, "WDM" => 0.9, _ => 0.8 }
    }
}

fn grid(short: bool) -> Vec<Point> {
    let (halos, radii) = if short { (2, 2) } else { (5, 10) };
    let mut points = Vec::new();
    for paradigm in ["CDM", "WDM", "SIDM"] {
        for mass_definition in ["200c", "500c", "vir", "200m"] {
            for halo in 0..halos {
                for particles in ["dm", "gas", "stars"] {
                    for axis in ['x', 'y', 'z'] {
                        for r in 0..radii {
                            points.push(Point {
                                paradigm: paradigm.into(),
                                mass_definition: mass_definition.into(),
                                halo,
                                particles: particles.into(),
                                axis,
                                radius: 0.1 * (r + 1) as f64,
                            });
                        }
                    }
                }
            }
        }
    }
    points
}

fn main() -> Result<(), pitch::Error> {
    pitch::init();
    let short = std::env::args().any(|a| a == "--short");
    let points = grid(short);
    let exe = SingleNodeExecutor::builder()
        .max_cores(std::thread::available_parallelism().map_or(2, |n| n.get() as u32))
        .cache_directory("pitch-cache/sweep")
        .progress(true)
        .build()?;
    let start = std::time::Instant::now();
    let futures = measure::map(&exe, points.clone());
    let mut failed = 0;
    let mut total = 0.0;
    for (i, result) in pitch::as_completed(futures) {
        match result {
            Ok(v) => total += v,
            Err(e) => {
                failed += 1;
                eprintln!("point {:?} failed: {e}", points[i]);
            }
        }
    }
    let summary = exe.shutdown(pitch::Shutdown::Wait);
    println!(
        "{} points in {:.1} s: {} ran, {} from the cache, {} failed; checksum {total:.3}",
        points.len(),
        start.elapsed().as_secs_f64(),
        summary.succeeded - summary.cached,
        summary.cached,
        failed
    );
    Ok(())
}
