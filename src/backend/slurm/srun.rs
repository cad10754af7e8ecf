//! `srun`, how `SlurmJobExecutor`'s launcher starts a task as a job step inside the Slurm
//! allocation the driver runs in.

use crate::resources::Resources;

/// Resource keys that mean nothing to a step inside an allocation (accepted, reported once).
pub(crate) const SRUN_IGNORES: &[&str] = &[
    "partition",
    "account",
    "qos",
    "memory_max",
    "exclusive",
    "openmpi_oversubscribe",
    "requeue",
];

/// `srun`'s options for a task: `--exact` (only the CPUs asked for, so steps run side by
/// side), `--ntasks` ranks, `--cpus-per-task` threads, `--kill-on-bad-exit=1` (a failing rank
/// stops the others), `--nodes`, `--gpus-per-task`, and the task's `slurm_cmd_args`.
///
/// Without `num_nodes`, a step of fewer ranks than the allocation's `nodes` asks for one node
/// per rank at most (`--nodes=1-<ranks>`): srun would otherwise ask for every node of the
/// allocation, cut that down itself and say so in the task's stderr ("can't run 1 processes
/// on 2 nodes, setting nnodes to 1").
pub(crate) fn srun_options(
    ranks: u32,
    threads: u32,
    resources: &Resources,
    nodes: u32,
) -> Vec<String> {
    let mut srun = vec![
        "--exact".to_string(),
        format!("--ntasks={ranks}"),
        format!("--cpus-per-task={threads}"),
        "--kill-on-bad-exit=1".to_string(),
    ];
    match resources.num_nodes {
        Some(n) => srun.push(format!("--nodes={n}")),
        None if ranks < nodes => srun.push(format!("--nodes=1-{ranks}")),
        None => {}
    }
    if let Some(g) = resources.gpus_per_core {
        srun.push(format!("--gpus-per-task={g}"));
    }
    srun.extend(resources.slurm_cmd_args.iter().cloned());
    srun
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srun_options_map_each_resource() {
        assert_eq!(
            srun_options(1, 1, &Resources::new(), 1),
            [
                "--exact",
                "--ntasks=1",
                "--cpus-per-task=1",
                "--kill-on-bad-exit=1"
            ]
        );
        // Fewer ranks than the allocation has nodes: no more nodes than ranks.
        assert_eq!(srun_options(2, 1, &Resources::new(), 4)[4], "--nodes=1-2");
        assert_eq!(srun_options(4, 1, &Resources::new(), 2).len(), 4);
        let r = Resources::new()
            .num_nodes(2)
            .gpus_per_core(1)
            .slurm_cmd_arg("--mem=1G");
        assert_eq!(
            srun_options(4, 2, &r, 8)[1..],
            [
                "--ntasks=4",
                "--cpus-per-task=2",
                "--kill-on-bad-exit=1",
                "--nodes=2",
                "--gpus-per-task=1",
                "--mem=1G"
            ]
        );
    }
}
