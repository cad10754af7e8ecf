//! [`Launcher`]: how a process backend starts a task's processes, here (`mpiexec -n N` for
//! ranks), as `srun --exact` steps inside a Slurm allocation, or as `flux run` jobs inside a
//! Flux instance; the command line it wraps around the task, and what it cannot honour.

use super::{flux, slurm};
use crate::resources::Resources;

/// How a process backend starts a task's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Launcher {
    /// Children of the driver on this machine; `mpiexec -n N` for multi-rank tasks.
    Local,
    /// Job steps inside the Slurm allocation the driver runs in (`srun --exact`), on any of
    /// its `nodes` nodes.
    Srun { nodes: u32 },
    /// Jobs inside the Flux instance the driver runs in, on any of its `nodes` nodes, with its
    /// `gpus` GPUs: submitted through libflux when `native` (see `flux/job.rs`), else each a
    /// `flux run` child (which submits the job and waits for its end).
    Flux { nodes: u32, gpus: u32, native: bool },
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

impl Launcher {
    /// Why the scheduler refused to run a task whose launcher exited with code 1, from the
    /// tail of its stderr (`flux run`: an invalid queue, an unsatisfiable request); `None`
    /// when the task ran and failed on its own.
    pub(crate) fn refusal(&self, stderr_tail: &str) -> Option<String> {
        match self {
            Launcher::Flux { .. } => flux::run_refusal(stderr_tail),
            Launcher::Local | Launcher::Srun { .. } => None,
        }
    }
}

impl Launcher {
    /// The tail of a task's stderr without the launcher's own reports of how the task's
    /// processes ended (`srun: error: n1: task 0: Exited with exit code 3`, `flux-job:
    /// task(s) Killed`): the error already says it, and the tail is the task's, as on
    /// SingleNode.
    pub(crate) fn own_lines_removed(&self, tail: &str) -> String {
        let own = |line: &str| match self {
            Launcher::Srun { .. } => {
                line.strip_prefix("srun: error: ").is_some_and(|rest| {
                    // "<node>: task 0: ..." or "<node>: tasks 0-3: ..."
                    rest.split_once(": ")
                        .is_some_and(|(_, r)| r.starts_with("task ") || r.starts_with("tasks "))
                }) || line.starts_with("srun: launch/slurm: _step_signal: Terminating")
            }
            Launcher::Flux { .. } => {
                // "0.081s: job.exception ƒ... type=exec severity=0 sh: task rank 0 on host vm
                // failed (Exit 5) and exit-on-error is set", "0.081s: flux-shell[0]: FATAL:
                // task-exit: ...": how the task ended, in flux run's words.
                let rest = line
                    .split_once("s: ")
                    .filter(|(t, _)| t.parse::<f64>().is_ok())
                    .map_or(line, |(_, r)| r);
                line.starts_with("flux-job: task(s) ")
                    || (rest.starts_with("job.exception ")
                        && rest.ends_with("and exit-on-error is set"))
                    || (rest.starts_with("flux-shell[") && rest.contains(": FATAL: task-exit: "))
            }
            Launcher::Local => false,
        };
        if !tail.lines().any(own) {
            return tail.to_string();
        }
        tail.lines()
            .filter(|l| !own(l))
            .collect::<Vec<_>>()
            .join("\n")
    }

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
            Launcher::Srun { nodes } => (
                "srun",
                slurm::srun_options(ranks, threads, resources, *nodes),
            ),
            Launcher::Flux { .. } => ("flux", flux::run_options(ranks, threads, resources)),
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
    /// has, ...), and the resource keys it ignores (`checkpoint_grace` without
    /// `run_time_max`: the warning comes before pitch's own time limit).
    pub(crate) fn check(&self, r: &Resources, max_cores: u32) -> Result<Vec<&'static str>, String> {
        let mut ignored = self.check_keys(r, max_cores)?;
        if r.checkpoint_grace.is_some() && r.run_time_max.is_none() {
            ignored.push("checkpoint_grace");
        }
        Ok(ignored)
    }

    fn check_keys(&self, r: &Resources, max_cores: u32) -> Result<Vec<&'static str>, String> {
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
            return flux::check_run(r, gpus);
        }
        if let Launcher::Srun { .. } = *self {
            return Ok(r.set_keys(slurm::SRUN_IGNORES));
        }
        let mut ignored = r.set_keys(&[
            "partition",
            "account",
            "qos",
            "slurm_cmd_args",
            "exclusive",
            "memory_max",
            "gpus_per_core",
            "requeue",
        ]);
        if r.openmpi_oversubscribe.is_some() && r.ranks() <= 1 {
            ignored.push("openmpi_oversubscribe");
        }
        Ok(ignored)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_launchers_own_status_lines_leave_the_tail() {
        let flux = Launcher::Flux {
            nodes: 1,
            gpus: 0,
            native: false,
        };
        let tail = "0.097s: job.exception \u{192}cE9 type=exec severity=0 sh: task rank 0 on host vm failed (Exit 3) and exit-on-error is set\nbad\n0.098s: flux-shell[0]: FATAL: task-exit: sh: task rank 0 on host vm failed (Exit 3) and exit-on-error is set\nflux-job: task(s) exited with exit code 3";
        assert_eq!(flux.own_lines_removed(tail), "bad");
        let srun = Launcher::Srun { nodes: 2 };
        let tail = "bad\nsrun: error: n1: task 0: Exited with exit code 3\nsrun: launch/slurm: _step_signal: Terminating StepId=197.2\nsrun: error: n2: tasks 1-2: Killed";
        assert_eq!(srun.own_lines_removed(tail), "bad");
        // Anything else stays, the task's own lines first of all.
        let other = "srun: error: Unable to create step for job 7: Invalid generic resource";
        assert_eq!(srun.own_lines_removed(other), other);
        assert_eq!(
            Launcher::Local.own_lines_removed("srun: error: n1: task 0: x"),
            "srun: error: n1: task 0: x"
        );
    }

    use super::*;

    #[test]
    fn flux_check_refuses_what_flux_run_cannot_do_and_names_ignored_keys() {
        let launcher = Launcher::Flux {
            nodes: 2,
            gpus: 2,
            native: true,
        };
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
