//! [`Slurm`], the scheduler of `SlurmClusterExecutor`: `sbatch --parsable` submits, ONE
//! `squeue` per poll tick lists the jobs, `scontrol show job` and then `sacct` tell why jobs
//! that left the queue ended, `scancel` cancels. Job arrays carry bursts of equal tasks.

pub(crate) mod parse;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use self::parse::SlurmState;
use crate::backend::queue::transport::Transport;
use crate::backend::queue::{base_header, strings, CmdOutput, Fut, JobRef, JobState, Scheduler};
use crate::error::{LaunchErrorKind, TaskError};
use crate::resources::{format_slurm_memory, format_slurm_time, Resources};
use crate::template::{self, SlurmScript};

/// Slurm's commands, as the queue backend calls them, run through `transport` (here, or on
/// a login node).
pub(crate) struct Slurm {
    pub transport: Arc<dyn Transport>,
}

impl From<SlurmState> for JobState {
    fn from(s: SlurmState) -> JobState {
        JobState {
            name: s.name(),
            finished: s.is_finished(),
            by_scheduler: s.ended_by_scheduler(),
        }
    }
}

impl Slurm {
    /// Runs a Slurm command; Slurm cuts long array task lists to 64 bytes unless told not to.
    async fn cmd(&self, program: &str, args: &[String]) -> Result<CmdOutput, String> {
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
        let mut found = HashMap::new();
        if let Ok(out) = self
            .cmd("scontrol", &strings(&["show", "job", "-o", &id]))
            .await
        {
            if out.success {
                if let Ok(jobs) = parse::parse_scontrol_show_job(&out.stdout) {
                    for j in jobs.into_iter().filter(|j| wanted.contains(&j.job)) {
                        found.insert(j.job, (j.state.into(), j.reason.unwrap_or_default()));
                    }
                }
            }
        }
        if wanted.iter().all(|j| found.contains_key(j)) {
            return found;
        }
        let args = strings(&["-X", "-n", "-P", "-o", "JobID,State,ExitCode", "-j", &id]);
        if let Ok(out) = self.cmd("sacct", &args).await {
            if out.success
                && !parse::sacct_disabled(&out.stdout)
                && !parse::sacct_disabled(&out.stderr)
            {
                if let Ok(entries) = parse::parse_sacct(&out.stdout) {
                    for e in entries.into_iter().filter(|e| wanted.contains(&e.job)) {
                        found.entry(e.job).or_insert((
                            e.state.into(),
                            format!("exit code {}:{}", e.exit_code.0, e.exit_code.1),
                        ));
                    }
                }
            }
        }
        found
    }
}

impl Scheduler for Slurm {
    fn backend_name(&self) -> &'static str {
        "slurm"
    }

    fn title(&self) -> &'static str {
        "Slurm"
    }

    fn default_template(&self) -> (&'static str, &'static str) {
        (
            template::DEFAULT_SLURM_TEMPLATE_NAME,
            template::DEFAULT_SLURM_TEMPLATE,
        )
    }

    fn header(&self, tag: &str, r: &Resources, ranks: u32, threads: u32) -> SlurmScript {
        SlurmScript {
            time: r.run_time_max.map(format_slurm_time),
            mem: r.memory_max.map(format_slurm_memory),
            qos: r.qos.clone(),
            slurm_cmd_args: r.slurm_cmd_args.clone(),
            ..base_header(tag, r, ranks, threads)
        }
    }

    fn check(&self, r: &Resources) -> Result<Vec<&'static str>, String> {
        Ok(r.set_keys(&["openmpi_oversubscribe", "error_log_file"]))
    }

    fn output(&self, jobs_dir: &Path, array: bool) -> String {
        let name = if array {
            "slurm-%A.out"
        } else {
            "slurm-%j.out"
        };
        jobs_dir.join(name).display().to_string()
    }

    fn rank_launcher(&self, ranks: u32, threads: u32) -> String {
        format!("srun --ntasks={ranks} --cpus-per-task={threads} --kill-on-bad-exit=1")
    }

    fn depend(&self, header: &mut SlurmScript, after: &[JobRef]) {
        let ids: Vec<String> = after.iter().map(|j| j.to_string()).collect();
        header.dependency = Some(format!("afterok:{}", ids.join(":")));
        header.dependencies = ids.iter().map(|id| format!("afterok:{id}")).collect();
    }

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

    fn array_index(&self) -> &'static str {
        "$SLURM_ARRAY_TASK_ID"
    }

    fn array_cpus(&self) -> &'static str {
        "${SLURM_CPUS_PER_TASK:-1}"
    }

    fn array(&self, header: &mut SlurmScript, elements: usize, throttle: Option<u32>) {
        header.array = Some(match throttle {
            Some(n) => format!("0-{}%{n}", elements - 1),
            None => format!("0-{}", elements - 1),
        });
        // Every element appends to the array's one output file.
        header.slurm_cmd_args.push("--open-mode=append".into());
    }

    fn submit<'a>(&'a self, script: &'a Path) -> Fut<'a, Result<u64, TaskError>> {
        Box::pin(async move {
            let launch = |kind, detail: String| TaskError::Launch {
                what: "sbatch".into(),
                kind,
                detail,
            };
            let out = self
                .cmd(
                    "sbatch",
                    &["--parsable".into(), script.display().to_string()],
                )
                .await
                // The transport names a missing program in its message only.
                .map_err(|e| {
                    let kind = if e.contains("was not found on") {
                        LaunchErrorKind::NotFound
                    } else {
                        LaunchErrorKind::Other
                    };
                    launch(kind, e)
                })?;
            if !out.success {
                return Err(launch(
                    LaunchErrorKind::RejectedByScheduler,
                    format!("sbatch rejected the job: {}", out.stderr.trim()),
                ));
            }
            parse::parse_sbatch_parsable(&out.stdout)
                .map_err(|e| launch(LaunchErrorKind::Other, e.to_string()))
        })
    }

    fn queue<'a>(&'a self, tag: &'a str) -> Fut<'a, Result<HashMap<JobRef, JobState>, String>> {
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
            let out = self
                .cmd("squeue", &args)
                .await
                .map_err(|e| format!("squeue failed: {e}"))?;
            if !out.success {
                return Err(format!("squeue failed: {}", out.stderr.trim()));
            }
            let entries = parse::parse_squeue(&out.stdout)
                .map_err(|e| format!("could not parse squeue's output: {e}"))?;
            Ok(parse::states_by_job(&entries))
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

    fn forgotten(&self) -> &'static str {
        "the job left the queue and Slurm no longer knows it (accounting is off)"
    }

    fn cancel<'a>(&'a self, jobs: &'a [JobRef]) -> Fut<'a, Result<(), String>> {
        Box::pin(async move {
            let ids: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
            match self.cmd("scancel", &ids).await {
                Ok(out) if out.success => Ok(()),
                Ok(out) => Err(format!("scancel failed: {}", out.stderr.trim())),
                Err(e) => Err(format!("scancel failed: {e}")),
            }
        })
    }
}
