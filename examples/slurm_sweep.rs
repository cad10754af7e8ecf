//! The quickstart on Slurm: the same program as `examples/quickstart.rs` with the one line
//! that builds the executor changed. Run it on a login node (or anywhere `sbatch` works), from
//! a directory on storage the compute nodes share:
//!
//! `cargo run --release --example slurm_sweep`
//!
//! Interrupt it and run it again: finished tasks come from the cache, queued jobs are
//! re-attached, nothing is submitted twice.

use pitch::{Command, Resources, SlurmClusterExecutor};

pitch::task! {
    /// Stands in for a render: the mass inside `radius` of a toy halo profile (runs in a
    /// worker process, locally or on a compute node).
    pub fn render(halo: u32, radius: f64) -> f64 {
        let steps = 200_000;
        let dr = radius / steps as f64;
        let scale = 0.05 * halo as f64;
        (0..steps)
            .map(|i| {
                let r = (i as f64 + 0.5) * dr;
                4.0 * std::f64::consts::PI * r * r / ((r / scale) * (1.0 + r / scale).powi(2)) * dr
            })
            .sum()
    }
}

pitch::task! {
    /// Post-processing that takes another task's result as its input.
    pub fn normalize(mass: f64, reference: f64) -> f64 { mass / reference }
}

fn main() -> Result<(), pitch::Error> {
    pitch::init(); // first line: turns this process into a worker when launched as one

    let exe = SlurmClusterExecutor::builder().progress(true).build()?; // the one changed line

    let halos = [1u32, 2, 3, 4];
    let radii = [0.1f64, 0.2, 0.5, 1.0];
    let params: Vec<(u32, f64)> = halos
        .iter()
        .flat_map(|&h| radii.iter().map(move |&r| (h, r)))
        .collect();
    let masses = render::map(&exe, params.clone()); // futures, in input order

    // A future as an argument is a dependency: `normalize` runs once the reference is known.
    let reference = &masses[masses.len() - 1];
    let normalized: Vec<_> = masses
        .iter()
        .map(|m| normalize::submit(&exe, m, reference))
        .collect();

    // External programs are tasks too; `cores` would make them MPI ranks.
    let info = exe
        .with_resources(Resources::new().cores(1))
        .submit_command(Command::new("uname").arg("-sm"));

    println!(
        "{:>5} {:>7} {:>12} {:>10}",
        "halo", "radius", "mass", "fraction"
    );
    for ((halo, radius), (mass, frac)) in params.iter().zip(masses.iter().zip(&normalized)) {
        println!(
            "{halo:>5} {radius:>7.2} {:>12.5} {:>10.4}",
            mass.result()?,
            frac.result()?
        );
    }
    let info = info.result()?;
    println!("ran on: {}", info.read_stdout().unwrap_or_default().trim());
    let summary = exe.shutdown(pitch::Shutdown::Wait);
    println!(
        "{} tasks: {} from the cache ({}), {} failed",
        summary.succeeded + summary.failed,
        summary.cached,
        exe.cache_directory().display(),
        summary.failed
    );
    Ok(())
}
