//! Real MPI communication inside a task: each of 4 ranks contributes its rank to an
//! `all_reduce` with the `mpi` crate (rsmpi); pitch launches the ranks (mpiexec here, srun on
//! Slurm) and gathers each rank's view of the sum.
//!
//! `cargo run --release --features mpi-examples --example mpi_reduce`
//! (needs libclang-dev and libopenmpi-dev to build; as root, OpenMPI also wants
//! OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)

use mpi::collective::SystemOperation;
use mpi::traits::*;
use pitch::{Resources, SingleNodeExecutor};

pitch::task! {
    /// Sums `value + rank` over all ranks.
    pub fn reduce(value: i64) -> i64 {
        let universe = mpi::initialize().expect("MPI initializes once per worker");
        let world = universe.world();
        let mine = value + world.rank() as i64;
        let mut sum = 0i64;
        world.all_reduce_into(&mine, &mut sum, SystemOperation::sum());
        sum
    }
}

fn main() -> Result<(), pitch::Error> {
    pitch::init();
    let exe = SingleNodeExecutor::builder()
        .max_cores(4)
        .cache(false)
        .build()?
        .with_resources(Resources::new().cores(4).openmpi_oversubscribe(true));
    let sums = reduce::submit_ranks(&exe, 10).result()?;
    println!("each rank's sum: {sums:?}");
    assert_eq!(sums, vec![46; 4], "10*4 + (0+1+2+3)");
    Ok(())
}
