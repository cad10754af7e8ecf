//! [`Launcher`]: how a process backend starts a task's processes, here (`mpiexec -n N` for
//! ranks), as `srun --exact` steps inside a Slurm allocation, or as `flux run` jobs inside a
//! Flux instance; the command line it wraps around the task, and what it cannot honour.

use crate::resources::Resources;

/// How a process backend starts a task's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Launcher {
    /// Children of the driver on this machine; `mpiexec -n N` for multi-rank tasks.
    Local,
    /// Job steps inside the Slurm allocation the driver runs in (`srun --exact`), on any of
    /// its `nodes` nodes.
    Srun { nodes: u32 },
    /// Jobs inside the Flux instance the driver runs in (`flux run`, which submits the job and
    /// waits for its end), on any of its `nodes` nodes, with its `gpus` GPUs.
    Flux { nodes: u32, gpus: u32 },
}

impl Launcher {
    /// The backend's name in events and errors.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Launcher::Local => "single-node",
            Launcher::Srun { .. } => "slurm-job",
            Launcher::Flux { .. } => "flux-job",
        }
    }
}

/// `flux run`'s options for a task: `-n` ranks, `-c` threads per rank, `-N` nodes, `-g` GPUs
/// per rank, `-t` the time limit in whole seconds (rounded up, so pitch's own timer, which
/// started first, fires first and the task resolves to `TaskError::Timeout`; Flux's limit is
/// the backstop that ends the job even if the driver is gone), `--exclusive` (Flux requires
/// `-N` with it; [`Launcher::check`] refuses it without `num_nodes`), `-q` the partition
/// (a queue of the instance), and `-o exit-on-error`: the job shell raises a fatal exception
/// as soon as the first rank fails, which stops the other ranks (by default they would run on
/// and Flux would end the job only 30 s after the first rank exited).
fn flux_run_options(ranks: u32, threads: u32, resources: &Resources) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "-n".to_string(),
        ranks.to_string(),
        "-c".to_string(),
        threads.to_string(),
    ];
    if let Some(n) = resources.num_nodes {
        args.extend(["-N".to_string(), n.to_string()]);
    }
    if let Some(g) = resources.gpus_per_core {
        args.extend(["-g".to_string(), g.to_string()]);
    }
    if let Some(limit) = resources.run_time_max {
        args.extend(["-t".to_string(), crate::backend::flux::parse::fsd(limit)]);
    }
    if resources.exclusive == Some(true) {
        args.push("--exclusive".to_string());
    }
    if let Some(queue) = &resources.partition {
        args.extend(["-q".to_string(), queue.clone()]);
    }
    args.extend(["-o".to_string(), "exit-on-error".to_string()]);
    args
}

/// Why Flux refused a `flux run` job before it ran, from the tail of `flux run`'s stderr
/// (which exited 1): an invalid submission (`flux-run: ERROR: Invalid queue 'q'
/// specified`) or an `alloc` exception (`job.exception ƒID type=alloc severity=0
/// unsatisfiable request: ...`). `None` when the job ran (its tasks' own failure).
pub(crate) fn flux_refusal(stderr_tail: &str) -> Option<String> {
    stderr_tail.lines().map(str::trim).find_map(|line| {
        if line.starts_with("flux-run: ERROR: ") {
            return Some(line.to_string());
        }
        let (_, exception) = line.split_once("job.exception ")?;
        let (_, rest) = exception.split_once(" type=alloc ")?;
        let reason = rest.strip_prefix("severity=0 ").unwrap_or(rest);
        Some(format!("Flux cannot run the job: {reason}"))
    })
}

impl Launcher {
    /// The program and arguments that run `program args` with `ranks` ranks of `threads`
    /// threads each.
    pub(crate) fn wrap(
        &self,
        program: String,
        args: Vec<String>,
        ranks: u32,
        threads: u32,
        resources: &Resources,
    ) -> (String, Vec<String>) {
        let (launcher, mut argv) = match self {
            Launcher::Srun { .. } => {
                let mut srun = vec![
                    "--exact".to_string(),
                    format!("--ntasks={ranks}"),
                    format!("--cpus-per-task={threads}"),
                    "--kill-on-bad-exit=1".to_string(),
                ];
                if let Some(n) = resources.num_nodes {
                    srun.push(format!("--nodes={n}"));
                }
                if let Some(g) = resources.gpus_per_core {
                    srun.push(format!("--gpus-per-task={g}"));
                }
                srun.extend(resources.slurm_cmd_args.iter().cloned());
                ("srun", srun)
            }
            Launcher::Flux { .. } => ("flux", flux_run_options(ranks, threads, resources)),
            Launcher::Local if ranks <= 1 => return (program, args),
            Launcher::Local => {
                let mut mpi = vec!["-n".to_string(), ranks.to_string()];
                if resources.openmpi_oversubscribe == Some(true) {
                    mpi.push("--oversubscribe".to_string());
                }
                ("mpiexec", mpi)
            }
        };
        argv.push(program);
        argv.extend(args);
        (launcher.to_string(), argv)
    }

    /// What this launcher cannot honour (more slots than `max_cores`, more nodes than it
    /// has, ...), and the resource keys it ignores.
    pub(crate) fn check(&self, r: &Resources, max_cores: u32) -> Result<Vec<&'static str>, String> {
        let what = match *self {
            Launcher::Local => "max_cores",
            Launcher::Srun { .. } => "the CPUs of the allocation (or max_cores)",
            Launcher::Flux { .. } => "the cores of the Flux instance (or max_cores)",
        };
        if r.slots() > max_cores {
            return Err(format!(
                "the task needs {} slots (cores {} x threads_per_core {}) but {what} is {}",
                r.slots(),
                r.ranks(),
                r.threads(),
                max_cores
            ));
        }
        let nodes = match *self {
            Launcher::Local => 1,
            Launcher::Srun { nodes } | Launcher::Flux { nodes, .. } => nodes,
        };
        if r.nodes() > nodes {
            return Err(format!(
                "num_nodes = {} but {}",
                r.nodes(),
                if let Launcher::Flux { .. } = *self {
                    format!("the Flux instance has {nodes} node(s)")
                } else if nodes == 1 {
                    "this backend runs on one node".to_string()
                } else {
                    format!("the allocation has {nodes} nodes")
                }
            ));
        }
        if let Launcher::Flux { gpus, .. } = *self {
            return check_flux(r, gpus);
        }
        if let Launcher::Srun { .. } = *self {
            return Ok(r.set_keys(&[
                "partition",
                "account",
                "qos",
                "memory_max",
                "exclusive",
                "openmpi_oversubscribe",
            ]));
        }
        let mut ignored = r.set_keys(&[
            "partition",
            "account",
            "qos",
            "slurm_cmd_args",
            "exclusive",
            "memory_max",
            "gpus_per_core",
        ]);
        if r.openmpi_oversubscribe.is_some() && r.ranks() <= 1 {
            ignored.push("openmpi_oversubscribe");
        }
        Ok(ignored)
    }
}

/// What `flux run` cannot honour, and the keys it ignores: `account`, `qos`, `memory_max`
/// (Flux jobs inside an instance have no such settings), `slurm_cmd_args` (never passed to
/// flux) and `openmpi_oversubscribe` (Flux starts the ranks, not mpiexec).
fn check_flux(r: &Resources, gpus: u32) -> Result<Vec<&'static str>, String> {
    if let Some(n) = r.num_nodes {
        if n > r.ranks() {
            return Err(format!(
                "num_nodes = {n} but cores = {}: flux run needs at least one rank per node",
                r.ranks()
            ));
        }
    }
    if r.exclusive == Some(true) && r.num_nodes.is_none() {
        return Err(
            "exclusive = true needs num_nodes: flux run --exclusive allocates whole \
                    nodes and Flux refuses it without --nodes"
                .into(),
        );
    }
    if let Some(g) = r.gpus_per_core {
        let wanted = u64::from(g) * u64::from(r.ranks());
        if wanted > u64::from(gpus) {
            return Err(format!(
                "the task needs {wanted} GPUs (cores {} x gpus_per_core {g}) but the Flux \
                 instance has {gpus}",
                r.ranks()
            ));
        }
    }
    Ok(r.set_keys(&[
        "account",
        "qos",
        "memory_max",
        "slurm_cmd_args",
        "openmpi_oversubscribe",
    ]))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(String::from).collect()
    }

    #[test]
    fn flux_run_options_map_each_resource() {
        let none = Resources::new();
        assert_eq!(
            flux_run_options(1, 1, &none),
            words("run -n 1 -c 1 -o exit-on-error")
        );
        let all = Resources::new()
            .cores(4)
            .threads_per_core(2)
            .num_nodes(2)
            .gpus_per_core(1)
            .run_time_max(Duration::from_millis(1500))
            .exclusive(true)
            .partition("debug")
            .account("ignored")
            .memory_max(1 << 30)
            .slurm_cmd_arg("--ignored");
        assert_eq!(
            flux_run_options(4, 2, &all),
            words("run -n 4 -c 2 -N 2 -g 1 -t 2s --exclusive -q debug -o exit-on-error")
        );
        // Whole seconds as Flux Standard Duration; never zero; exclusive = false adds nothing.
        let r = Resources::new()
            .run_time_max(Duration::from_secs(90))
            .exclusive(false);
        assert_eq!(
            flux_run_options(1, 1, &r),
            words("run -n 1 -c 1 -t 90s -o exit-on-error")
        );
        let r = Resources::new().run_time_max(Duration::from_millis(1));
        assert_eq!(flux_run_options(1, 1, &r)[5..7], words("-t 1s"));
    }

    #[test]
    fn flux_refusals_from_flux_runs_stderr() {
        // What flux run 0.88 printed (exit 1).
        assert_eq!(
            flux_refusal("flux-run: ERROR: Invalid queue 'nosuch' specified\n").as_deref(),
            Some("flux-run: ERROR: Invalid queue 'nosuch' specified")
        );
        assert_eq!(
            flux_refusal(
                "0.031s: job.exception ƒ4kvYMzxP type=alloc severity=0 unsatisfiable request: \
                 need 1 slot(s) with 1 GPU(s) each, only 0 available (total GPUs: 0)"
            )
            .as_deref(),
            Some(
                "Flux cannot run the job: unsatisfiable request: need 1 slot(s) with 1 GPU(s) \
                 each, only 0 available (total GPUs: 0)"
            )
        );
        // Jobs that ran: the task failed, or Flux's time limit ended it.
        for ran in [
            "hi\nflux-job: task(s) exited with exit code 1",
            "2.031s: job.exception ƒhCE5gPy type=timeout severity=0 resource allocation expired",
            "",
        ] {
            assert_eq!(flux_refusal(ran), None, "{ran}");
        }
    }

    #[test]
    fn flux_check_refuses_what_flux_run_cannot_do_and_names_ignored_keys() {
        let launcher = Launcher::Flux { nodes: 2, gpus: 2 };
        let ok = |r: Resources| launcher.check(&r, 8);
        assert_eq!(ok(Resources::new().cores(4).num_nodes(2)), Ok(vec![]));
        assert_eq!(
            ok(Resources::new()
                .partition("debug")
                .exclusive(true)
                .num_nodes(1)),
            Ok(vec![])
        );
        assert_eq!(
            ok(Resources::new()
                .account("a")
                .qos("q")
                .memory_max(1 << 20)
                .slurm_cmd_arg("--mem=1G")
                .openmpi_oversubscribe(true)),
            Ok(vec![
                "account",
                "qos",
                "memory_max",
                "slurm_cmd_args",
                "openmpi_oversubscribe"
            ])
        );
        let refused = |r: Resources, needle: &str| {
            let e = launcher.check(&r, 8).unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        refused(Resources::new().cores(9), "the cores of the Flux instance");
        refused(Resources::new().cores(2).num_nodes(3), "has 2 node(s)");
        refused(Resources::new().cores(1).num_nodes(2), "one rank per node");
        refused(Resources::new().exclusive(true), "needs num_nodes");
        refused(
            Resources::new().cores(3).gpus_per_core(1),
            "needs 3 GPUs (cores 3 x gpus_per_core 1) but the Flux instance has 2",
        );
        assert_eq!(launcher.name(), "flux-job");
    }
}
