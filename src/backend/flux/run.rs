//! `flux run`, how `FluxJobExecutor`'s launcher starts a task as a job of the Flux instance
//! the driver runs in: its options for a task's resources, and what it cannot honour.

use crate::resources::Resources;

/// `flux run`'s options for a task: `-n` ranks, `-c` threads per rank, `-N` nodes, `-g` GPUs
/// per rank, `-t` the time limit in whole seconds (rounded up, so pitch's own timer, which
/// started first, fires first and the task resolves to `TaskError::Timeout`; Flux's limit is
/// the backstop that ends the job even if the driver is gone), `--exclusive` (Flux requires
/// `-N` with it; [`check_run`] refuses it without `num_nodes`), `-q` the partition
/// (a queue of the instance), and `-o exit-on-error`: the job shell raises a fatal exception
/// as soon as the first rank fails, which stops the other ranks (by default they would run on
/// and Flux would end the job only 30 s after the first rank exited).
pub(crate) fn run_options(ranks: u32, threads: u32, resources: &Resources) -> Vec<String> {
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
        args.extend(["-t".to_string(), super::parse::fsd(limit)]);
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
pub(crate) fn run_refusal(stderr_tail: &str) -> Option<String> {
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

/// What `flux run` cannot honour, and the keys it ignores: `account`, `qos`, `memory_max`
/// (Flux jobs inside an instance have no such settings), `slurm_cmd_args` (never passed to
/// flux) and `openmpi_oversubscribe` (Flux starts the ranks, not mpiexec).
pub(crate) fn check_run(r: &Resources, gpus: u32) -> Result<Vec<&'static str>, String> {
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
        "requeue",
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
            run_options(1, 1, &none),
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
            run_options(4, 2, &all),
            words("run -n 4 -c 2 -N 2 -g 1 -t 2s --exclusive -q debug -o exit-on-error")
        );
        // Whole seconds as Flux Standard Duration; never zero; exclusive = false adds nothing.
        let r = Resources::new()
            .run_time_max(Duration::from_secs(90))
            .exclusive(false);
        assert_eq!(
            run_options(1, 1, &r),
            words("run -n 1 -c 1 -t 90s -o exit-on-error")
        );
        let r = Resources::new().run_time_max(Duration::from_millis(1));
        assert_eq!(run_options(1, 1, &r)[5..7], words("-t 1s"));
    }

    #[test]
    fn flux_refusals_from_flux_runs_stderr() {
        // What flux run 0.88 printed (exit 1).
        assert_eq!(
            run_refusal("flux-run: ERROR: Invalid queue 'nosuch' specified\n").as_deref(),
            Some("flux-run: ERROR: Invalid queue 'nosuch' specified")
        );
        assert_eq!(
            run_refusal(
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
            assert_eq!(run_refusal(ran), None, "{ran}");
        }
    }
}
