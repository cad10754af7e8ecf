//! Slurm, the scheduler of `SlurmClusterExecutor`: its [`DIALECT`] (`#SBATCH` header, job
//! arrays, `srun` for ranks) and its [`SlurmClient`]: `sbatch --parsable` submits, ONE
//! `squeue` per poll tick lists the jobs, `scontrol show job` and then `sacct` tell why jobs
//! that left the queue ended, `scancel` cancels. Job arrays carry bursts of equal tasks.

pub(crate) mod allocation;
pub(crate) mod parse;
mod srun;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use self::parse::SlurmState;
pub(crate) use self::srun::{srun_options, SRUN_IGNORES};
use crate::backend::scheduler::{
    base_header, strings, ArrayDialect, CmdOutput, Dialect, Fut, JobRef, JobState, SchedulerClient,
    Unrecorded, WarningReach,
};
use crate::backend::transport::Transport;
use crate::resources::{format_slurm_memory, format_slurm_time, Resources};
use crate::scheduler::{EndReason, SchedulerError, SchedulerKind};
use crate::template::SlurmScript;

/// The built-in Slurm batch-script template: its name in errors and its text. Users who need
/// site specific lines (`module load ...`) copy this text and pass theirs with `.template()`;
/// its leading comment explains the available variables and filters.
pub(crate) const TEMPLATE: (&str, &str) = (
    "slurm.sh.j2",
    include_str!("../../../templates/slurm.sh.j2"),
);

/// How long a submission waits for a slurmctld that cannot be reached before it fails.
const CONTROLLER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether sbatch failed because it could not connect to slurmctld at all ("Unable to
/// contact slurm controller (connect failure)", after its own attempts): the request was
/// never sent, so submitting again cannot make a second job. Not a "send failure" or a
/// "receive failure", after which the job may exist.
fn never_reached_controller(stderr: &str) -> bool {
    stderr.contains("Unable to contact slurm controller (connect failure)")
}

/// Slurm's job scripts and commands.
pub(crate) static DIALECT: Dialect = Dialect {
    kind: SchedulerKind::Slurm,
    template: TEMPLATE,
    submitter: "sbatch",
    ignores: &["openmpi_oversubscribe", "error_log_file"],
    refuses,
    header,
    log_name: "slurm-%j.out",
    array_log_name: "slurm-%A.out",
    // The cache directory's path is literal: a `%` in it must not become a pattern.
    log_path: crate::template::slurm_filename_in,
    rank_launcher: |ranks, threads| {
        format!("srun --ntasks={ranks} --cpus-per-task={threads} --kill-on-bad-exit=1")
    },
    depend,
    arrays: Some(ArrayDialect {
        index: "$SLURM_ARRAY_TASK_ID",
        cpus: "${SLURM_CPUS_PER_TASK:-1}",
        header: array,
    }),
    forgotten: "the job left the queue and Slurm no longer knows it (accounting is off)",
    warning: WarningReach::BatchShell,
};

/// The largest warning time `--signal` takes (seconds).
const MAX_SIGNAL_TIME: u64 = 65_535;

fn refuses(r: &Resources) -> Option<String> {
    let grace = r.checkpoint_grace?;
    (signal_time(grace) > MAX_SIGNAL_TIME).then(|| {
        format!(
            "checkpoint_grace = {grace:?} is longer than Slurm's --signal takes \
             ({MAX_SIGNAL_TIME} s)"
        )
    })
}

/// The warning time of `--signal` for a grace: whole seconds, rounded up (the warning comes
/// no later than asked).
fn signal_time(grace: std::time::Duration) -> u64 {
    grace.as_secs() + u64::from(grace.subsec_nanos() > 0)
}

fn header(tag: &str, r: &Resources, ranks: u32, threads: u32) -> SlurmScript {
    // Slurm shrinks a job of fewer tasks than nodes ("can't run 1 processes on 2 nodes"): a
    // task of num_nodes = N asks for N tasks at least, one per node, and still starts its
    // ranks with `srun --ntasks=RANKS` (a one-rank task runs once): the room a SlurmJobExecutor
    // built inside it uses (nested executors, issue 17).
    let ntasks = ranks.max(r.num_nodes.unwrap_or(1));
    SlurmScript {
        ntasks,
        time: r.run_time_max.map(format_slurm_time),
        // To the batch shell only (`B:`): the job script passes it on to the task it runs
        // (`queue::script`); without `B:` Slurm would signal only job steps, and the tasks
        // of a batch job run in its batch step.
        signal: r
            .checkpoint_grace
            .map(|grace| format!("B:USR1@{}", signal_time(grace))),
        requeue: r.requeue,
        mem: r.memory_max.map(format_slurm_memory),
        qos: r.qos.clone(),
        slurm_cmd_args: r.slurm_cmd_args.clone(),
        ..base_header(tag, r, ranks, threads)
    }
}

fn depend(header: &mut SlurmScript, after: &[JobRef]) {
    let ids: Vec<String> = after.iter().map(|j| j.to_string()).collect();
    header.dependency = Some(format!("afterok:{}", ids.join(":")));
    header.dependencies = ids.iter().map(|id| format!("afterok:{id}")).collect();
}

fn array(header: &mut SlurmScript, elements: usize, throttle: Option<u32>) {
    header.array = Some(match throttle {
        Some(n) => format!("0-{}%{n}", elements - 1),
        None => format!("0-{}", elements - 1),
    });
    // Every element appends to the array's one output file.
    header.slurm_cmd_args.push("--open-mode=append".into());
}

impl From<SlurmState> for JobState {
    /// The one place Slurm's states become pitch's.
    fn from(s: SlurmState) -> JobState {
        if !s.is_finished() {
            return JobState::Active(s.name());
        }
        JobState::Ended(match s {
            SlurmState::Completed => EndReason::Completed,
            SlurmState::Failed => EndReason::Failed,
            SlurmState::Cancelled => EndReason::Cancelled,
            SlurmState::Timeout => EndReason::Timeout,
            SlurmState::OutOfMemory => EndReason::OutOfMemory,
            SlurmState::NodeFail => EndReason::NodeFail,
            SlurmState::Preempted => EndReason::Preempted,
            SlurmState::BootFail => EndReason::BootFail,
            SlurmState::Deadline => EndReason::Deadline,
            other => EndReason::Unknown(other.name().to_string()),
        })
    }
}

/// Slurm's commands, as the queue backend calls them, run through `transport` (here, or on
/// a login node).
pub(crate) struct SlurmClient {
    pub transport: Arc<dyn Transport>,
    /// The partitions' limits (`scontrol show partition -o`), asked once; `None` when they
    /// cannot be asked here (remote) or could not be read.
    partitions: std::sync::OnceLock<Option<Vec<parse::Partition>>>,
}

impl SlurmClient {
    pub(crate) fn new(transport: Arc<dyn Transport>) -> SlurmClient {
        SlurmClient {
            transport,
            partitions: std::sync::OnceLock::new(),
        }
    }

    /// The partitions' limits, asked once with a blocking `scontrol show partition -o`
    /// (where the scheduler runs here: checks are synchronous).
    fn partitions(&self) -> Option<&[parse::Partition]> {
        self.partitions
            .get_or_init(|| {
                if self.transport.is_remote() {
                    return None;
                }
                let out = std::process::Command::new("scontrol")
                    .args(["show", "partition", "-o"])
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .output()
                    .ok()
                    .filter(|o| o.status.success())?;
                Some(parse::parse_partitions(&String::from_utf8_lossy(
                    &out.stdout,
                )))
            })
            .as_deref()
    }

    /// Runs a Slurm command; Slurm cuts long array task lists to 64 bytes unless told not to.
    async fn cmd(&self, program: &str, args: &[String]) -> Result<CmdOutput, SchedulerError> {
        self.transport
            .run(program, args, &[("SLURM_BITSTR_LEN", "0")], "Slurm")
            .await
    }

    /// Why the jobs `wanted` of the submission `job_id` ended: scontrol, then sacct.
    async fn submission_states(
        &self,
        job_id: u64,
        wanted: &HashSet<JobRef>,
    ) -> HashMap<JobRef, (JobState, String)> {
        let id = job_id.to_string();
        let mut found: HashMap<JobRef, (JobState, String)> = HashMap::new();
        // Whether Slurm has records of the submission (an array) at all: an element that
        // left the queue without one of its own never started (an element gets its record
        // when it starts): it was cancelled while pending.
        let mut siblings_known = false;
        if let Ok(out) = self
            .cmd("scontrol", &strings(&["show", "job", "-o", &id]))
            .await
        {
            if out.success {
                if let Ok(jobs) = parse::parse_scontrol_show_job(&out.stdout) {
                    siblings_known |= !jobs.is_empty();
                    for j in jobs.into_iter().filter(|j| wanted.contains(&j.job)) {
                        found.insert(j.job, (j.state.into(), j.reason.unwrap_or_default()));
                    }
                }
            }
        }
        if wanted
            .iter()
            .all(|j| found.get(j).is_some_and(|(s, _)| s.is_finished()))
        {
            return found;
        }
        let args = strings(&["-X", "-n", "-P", "-o", parse::SACCT_FIELDS, "-j", &id]);
        let mut accounting = false;
        if let Ok(out) = self.cmd("sacct", &args).await {
            if out.success
                && !parse::sacct_disabled(&out.stdout)
                && !parse::sacct_disabled(&out.stderr)
            {
                if let Ok(entries) = parse::parse_sacct(&out.stdout) {
                    accounting = true;
                    siblings_known |= !entries.is_empty();
                    for e in entries.into_iter().filter(|e| wanted.contains(&e.job)) {
                        found.entry(e.job).or_insert((
                            e.state.into(),
                            format!("exit code {}:{}", e.exit_code.0, e.exit_code.1),
                        ));
                    }
                }
            }
        }
        for (job, (state, detail)) in found.iter_mut() {
            // Gone from the queue while Slurm's records still say pending: an array element
            // cancelled before it started, which gets no record of its own (its array's
            // pending record keeps listing it in sacct).
            if let JobState::Active(name) = state {
                *detail = format!(
                    "{job} left the queue while {name}: cancelled before it started (Slurm keeps \
                     no record of its own for an array element cancelled while pending)"
                );
                *state = JobState::Ended(EndReason::Cancelled);
            }
        }
        {
            let missing: Vec<JobRef> = wanted
                .iter()
                .filter(|j| !found.contains_key(j))
                .copied()
                .collect();
            for job in missing {
                let known = if job.array_index.is_some() && siblings_known {
                    (
                        JobState::Ended(EndReason::Cancelled),
                        format!(
                            "{job} left the queue without ever starting while Slurm has records \
                             of its array: cancelled while pending (Slurm keeps no record of its \
                             own for an array element cancelled before it started)"
                        ),
                    )
                } else if accounting {
                    (
                        JobState::Ended(EndReason::forgotten()),
                        format!(
                            "{job} left the queue, and neither scontrol nor sacct (accounting \
                             is on) has a record of it"
                        ),
                    )
                } else {
                    // Without accounting nothing more can tell: the poller says so.
                    continue;
                };
                found.insert(job, known);
            }
        }
        found
    }
}

impl SchedulerClient for SlurmClient {
    fn max_array_size(&self) -> Fut<'_, u32> {
        Box::pin(async {
            match self.cmd("scontrol", &strings(&["show", "config"])).await {
                Ok(out) if out.success => {
                    parse::max_array_size(&parse::parse_scontrol_config(&out.stdout))
                        .unwrap_or(1001)
                }
                _ => 1001,
            }
        })
    }

    /// `sbatch --parsable`. While slurmctld cannot be reached at all (stopped, restarting,
    /// failing over), sbatch is run again, backing off, for up to [`CONTROLLER_WAIT`]: such a
    /// failure is no refusal of the job, and nothing was submitted.
    fn submit<'a>(&'a self, script: &'a Path) -> Fut<'a, Result<(u64, String), SchedulerError>> {
        Box::pin(async move {
            let args = ["--parsable".to_string(), script.display().to_string()];
            let start = std::time::Instant::now();
            let mut delay = std::time::Duration::from_secs(1);
            let out = loop {
                let out = self
                    .transport
                    .run_submit("sbatch", &args, &[("SLURM_BITSTR_LEN", "0")], "Slurm")
                    .await?;
                if out.success {
                    break out;
                }
                let stderr = out.stderr.trim().to_string();
                if !never_reached_controller(&stderr) {
                    return Err(SchedulerError::Rejected {
                        program: "sbatch".into(),
                        stderr,
                    });
                }
                if start.elapsed() >= CONTROLLER_WAIT {
                    return Err(SchedulerError::CommandFailed {
                        program: "sbatch".into(),
                        stderr: format!(
                            "{stderr} (slurmctld could not be reached for {} s)",
                            start.elapsed().as_secs()
                        ),
                    });
                }
                tracing::warn!(target: "pitch::queue", %stderr, "sbatch could not reach slurmctld; will retry");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(30));
            };
            parse::parse_sbatch_parsable(&out.stdout)
                .map(|id| (id, out.stderr.trim().to_string()))
                .map_err(|e| SchedulerError::Unreadable {
                    program: "sbatch".into(),
                    detail: e.to_string(),
                })
        })
    }

    fn active<'a>(
        &'a self,
        tag: &'a str,
    ) -> Fut<'a, Result<HashMap<JobRef, JobState>, SchedulerError>> {
        Box::pin(async move {
            let uid = unsafe { libc::getuid() }.to_string();
            let args = strings(&[
                "-h",
                "-r",
                "-u",
                &uid,
                "-n",
                tag,
                "-t",
                "all",
                "-o",
                parse::SQUEUE_FORMAT,
            ]);
            let out = self.cmd("squeue", &args).await?.ok("squeue")?;
            let entries =
                parse::parse_squeue(&out.stdout).map_err(|e| SchedulerError::Unreadable {
                    program: "squeue".into(),
                    detail: e.to_string(),
                })?;
            Ok(parse::states_by_job(&entries))
        })
    }

    fn refuses(&self, r: &Resources, ranks: u32, threads: u32) -> Option<String> {
        let partitions = self.partitions()?;
        let partition = match &r.partition {
            Some(name) => partitions.iter().find(|p| &p.name == name)?,
            None => partitions.iter().find(|p| p.default)?,
        };
        partition.refuses(ranks, threads, r.num_nodes, r.run_time_max)
    }

    /// ONE `squeue -o '%F|%o'` call: the job (array) id and the script path of every job
    /// named `tag` (Slurm keeps the path the script was submitted from, so `known` jobs cost
    /// nothing to leave in). `%F` is an array's own id on each of its lines; `%A` would be
    /// each started element's id, so that the id found for an array depended on the order of
    /// squeue's lines (the pending rest of an array comes first, its running elements after).
    fn submitted<'a>(
        &'a self,
        tag: &'a str,
        wanted: &'a [Unrecorded],
        _known: &'a HashSet<u64>,
    ) -> Fut<'a, Result<Option<HashMap<String, u64>>, SchedulerError>> {
        Box::pin(async move {
            if wanted.is_empty() {
                return Ok(Some(HashMap::new()));
            }
            let uid = unsafe { libc::getuid() }.to_string();
            let args = strings(&["-h", "-u", &uid, "-n", tag, "-t", "all", "-o", "%F|%o"]);
            let out = self.cmd("squeue", &args).await?.ok("squeue")?;
            parse::parse_squeue_scripts(&out.stdout)
                .map(Some)
                .map_err(|e| SchedulerError::Unreadable {
                    program: "squeue".into(),
                    detail: e.to_string(),
                })
        })
    }

    /// Per submission (a job or a whole array), one `scontrol show job` call for its jobs
    /// while Slurm still knows them, then one sacct call for those it no longer knows: a
    /// thousand array elements that left the queue cost two calls, not two thousand.
    fn final_states<'a>(
        &'a self,
        wanted: &'a [JobRef],
    ) -> Fut<'a, HashMap<JobRef, (JobState, String)>> {
        Box::pin(async move {
            let mut by_submission: HashMap<u64, HashSet<JobRef>> = HashMap::new();
            for j in wanted {
                by_submission.entry(j.job_id).or_default().insert(*j);
            }
            let mut found = HashMap::new();
            for (job_id, wanted) in by_submission {
                found.extend(self.submission_states(job_id, &wanted).await);
            }
            found
        })
    }

    fn cancel<'a>(&'a self, jobs: &'a [JobRef]) -> Fut<'a, Result<(), SchedulerError>> {
        Box::pin(async move {
            let ids: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
            self.cmd("scancel", &ids).await?.ok("scancel").map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_a_controller_never_reached_is_submitted_again() {
        let down = "sbatch: error: Batch job submission failed: Unable to contact slurm \
                    controller (connect failure)";
        assert!(never_reached_controller(down));
        for other in [
            "sbatch: error: Batch job submission failed: Invalid partition name specified",
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller \
             (receive failure)",
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
        ] {
            assert!(!never_reached_controller(other), "{other}");
        }
    }

    #[test]
    fn the_slurm_dialect_fills_the_header_arrays_and_dependencies() {
        let d = &DIALECT;
        assert_eq!(
            (d.name(), d.title(), d.submitter),
            ("slurm", "Slurm", "sbatch")
        );
        let r = Resources::new()
            .run_time_max(Duration::from_secs(5400))
            .memory_max(1 << 30)
            .qos("high")
            .openmpi_oversubscribe(true);
        assert_eq!(d.check(&r), Ok(vec!["openmpi_oversubscribe"]));
        let mut h = (d.header)("pitch-x", &r, 4, 2);
        assert_eq!((h.ntasks, h.cpus_per_task), (4, 2));
        // A task of more nodes than ranks asks for a task per node (Slurm would shrink it).
        let nodes = (d.header)("pitch-x", &Resources::new().num_nodes(2), 1, 1);
        assert_eq!((nodes.ntasks, nodes.nodes), (2, Some(2)));
        let nodes = (d.header)("pitch-x", &Resources::new().num_nodes(2), 4, 1);
        assert_eq!((nodes.ntasks, nodes.nodes), (4, Some(2)));
        assert_eq!(
            (h.time.as_deref(), h.mem.as_deref(), h.qos.as_deref()),
            (Some("01:30:00"), Some("1G"), Some("high"))
        );
        let arrays = d.arrays.as_ref().expect("Slurm has job arrays");
        (arrays.header)(&mut h, 5, Some(2));
        assert_eq!(h.array.as_deref(), Some("0-4%2"));
        assert_eq!(h.slurm_cmd_args, ["--open-mode=append"]);
        (d.depend)(
            &mut h,
            &[
                JobRef::single(7),
                JobRef {
                    job_id: 8,
                    array_index: Some(1),
                },
            ],
        );
        assert_eq!(h.dependency.as_deref(), Some("afterok:7:8_1"));
        assert_eq!(h.dependencies, ["afterok:7", "afterok:8_1"]);
        assert_eq!(
            (d.rank_launcher)(4, 2),
            "srun --ntasks=4 --cpus-per-task=2 --kill-on-bad-exit=1"
        );
        assert_eq!(
            (d.log_name, d.array_log_name),
            ("slurm-%j.out", "slurm-%A.out")
        );
    }

    #[test]
    fn checkpoint_grace_warns_the_batch_shell_and_requeue_is_passed_on() {
        let d = &DIALECT;
        let h = (d.header)("pitch-x", &Resources::new(), 1, 1);
        assert_eq!((h.signal, h.requeue), (None, None));
        let r = Resources::new()
            .run_time_max(Duration::from_secs(120))
            .checkpoint_grace(Duration::from_millis(89_500))
            .requeue(false);
        let h = (d.header)("pitch-x", &r, 1, 1);
        // Whole seconds, rounded up: the warning comes no later than asked.
        assert_eq!(h.signal.as_deref(), Some("B:USR1@90"));
        assert_eq!(h.requeue, Some(false));
        assert_eq!(d.warning, WarningReach::BatchShell);
        assert_eq!(d.check(&r), Ok(vec![]));
        let long = Resources::new().checkpoint_grace(Duration::from_secs(70_000));
        let e = d.check(&long).unwrap_err();
        assert!(e.contains("checkpoint_grace") && e.contains("65535"), "{e}");
    }
}
