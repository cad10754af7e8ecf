//! A function task on 4 ranks over 2 nodes: each rank reports its rank and node.
//!
//! On Slurm (inside `cluster-tests`' cluster, or any Slurm with 2 nodes):
//! `cargo run --release --example mpi_ranks -- --slurm`
//! On this machine with OpenMPI's mpiexec (one node): `cargo run --release --example mpi_ranks`

use pitch::{Resources, SingleNodeExecutor, SlurmClusterExecutor};

pitch::task! {
    /// Runs on every rank; `submit_ranks` gathers the values in rank order.
    pub fn where_am_i(label: String) -> String {
        let ctx = pitch::context();
        format!("{label}: rank {} of {} on {}", ctx.rank, ctx.size, ctx.node)
    }
}

fn main() -> Result<(), pitch::Error> {
    pitch::init();
    let slurm = std::env::args().any(|a| a == "--slurm");
    let exe = if slurm {
        SlurmClusterExecutor::builder()
            .build()?
            .with_resources(Resources::new().cores(4).num_nodes(2))
    } else {
        SingleNodeExecutor::builder()
            .max_cores(4)
            .build()?
            .with_resources(Resources::new().cores(4).openmpi_oversubscribe(true))
    };
    for line in where_am_i::submit_ranks(&exe, "hello".to_string()).result()? {
        println!("{line}");
    }
    Ok(())
}
