//! Flux, the scheduler of `FluxClusterExecutor`: its [`DIALECT`] (every job is a `flux batch`
//! script, a Flux instance of its own sized by `# flux:` directives, where multi-rank tasks
//! start with `flux run`) and its [`FluxClient`]: ONE `flux jobs` call per poll tick lists the
//! executor's active jobs; one `flux jobs ID...` call tells why jobs that left the queue
//! ended; `flux cancel` cancels.
//!
//! Flux has no job arrays for batch jobs: each task (or each pack of `tasks_per_job`
//! one-rank tasks) is one `flux batch` call.

pub(crate) mod instance;
pub(crate) mod job;
mod jobspec;
pub(crate) mod native;
pub(crate) mod parse;
mod run;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::backend::scheduler::{
    base_header, strings, CmdOutput, Dialect, Fut, JobRef, JobState, SchedulerClient, Unrecorded,
    WarningReach,
};
use crate::backend::transport::Transport;
use crate::resources::Resources;
use crate::scheduler::{SchedulerError, SchedulerKind};
use crate::template::SlurmScript;

pub(crate) use self::jobspec::{job_environment, JobRequest};
pub(crate) use self::run::{check_run, run_options, run_refusal};

/// The built-in Flux batch-script template, submitted with `flux batch`: its name in errors
/// and its text. It takes the same variables as Slurm's (the Slurm-only ones stay unset).
pub(crate) const TEMPLATE: (&str, &str) =
    ("flux.sh.j2", include_str!("../../../templates/flux.sh.j2"));

/// Flux's job scripts and commands.
pub(crate) static DIALECT: Dialect = Dialect {
    kind: SchedulerKind::Flux,
    template: TEMPLATE,
    submitter: "flux batch",
    ignores: &[
        "memory_max",
        "qos",
        "slurm_cmd_args",
        "openmpi_oversubscribe",
        "error_log_file",
        "requeue",
    ],
    refuses,
    header,
    // A mustache template Flux fills in with the job id: `{{id.dec}}`, the decimal id pitch
    // reports (`{{id}}` is the F58 form, `flux-ƒ3UAjeQP.out`).
    log_name: "flux-{{id.dec}}.out",
    array_log_name: "flux-{{id.dec}}.out",
    // Not escaped: a `{{` in the cache path would be a Flux placeholder.
    log_path: |dir, name| format!("{dir}/{name}"),
    rank_launcher: |ranks, threads| format!("flux run --ntasks={ranks} --cores-per-task={threads}"),
    depend,
    arrays: None,
    forgotten: "the job left the queue and Flux no longer knows it (purged)",
    warning: WarningReach::ProcessGroup,
};

fn refuses(r: &Resources) -> Option<String> {
    (r.exclusive == Some(true) && r.num_nodes.is_none()).then(|| {
        "exclusive = true needs num_nodes on Flux (flux batch refuses --exclusive without \
         --nodes)"
            .into()
    })
}

fn header(tag: &str, r: &Resources, ranks: u32, threads: u32) -> SlurmScript {
    SlurmScript {
        time: r.run_time_max.map(parse::fsd),
        // Delivered to the batch script's process group and to the instance's jobs (see
        // `WarningReach::ProcessGroup`).
        signal: r
            .checkpoint_grace
            .map(|grace| format!("SIGUSR1@{}", parse::fsd(grace))),
        ..base_header(tag, r, ranks, threads)
    }
}

fn depend(header: &mut SlurmScript, after: &[JobRef]) {
    header.dependencies = after
        .iter()
        .map(|j| format!("afterok:{}", j.job_id))
        .collect();
}

/// Flux's commands, as the queue backend calls them, run through `transport` (here, or on
/// a login node).
pub(crate) struct FluxClient {
    pub transport: Arc<dyn Transport>,
}

/// The most jobs one `flux jobs` call lists (its default is 1,000).
const MAX_LISTED: u32 = 1_000_000;

impl FluxClient {
    /// One `flux jobs ID...` call for `wanted` (ids Flux no longer knows are reported on
    /// stderr; the others are still listed), read by `parse` and kept to `wanted`.
    async fn ended<T>(
        &self,
        wanted: &[JobRef],
        parse: impl FnOnce(&str) -> HashMap<JobRef, T>,
    ) -> HashMap<JobRef, T> {
        let format = format!("--format={}", parse::FINAL_FORMAT);
        let mut args = strings(&["jobs", "--no-header", &format]);
        args.extend(wanted.iter().map(|j| j.job_id.to_string()));
        match self.flux(args).await {
            Ok(out) => parse(&out.stdout)
                .into_iter()
                .filter(|(j, _)| wanted.contains(j))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }

    async fn flux(&self, args: Vec<String>) -> Result<CmdOutput, SchedulerError> {
        self.transport.run("flux", &args, &[], "Flux").await
    }
}

impl SchedulerClient for FluxClient {
    fn submit<'a>(&'a self, script: &'a Path) -> Fut<'a, Result<(u64, String), SchedulerError>> {
        Box::pin(async move {
            let args = vec!["batch".to_string(), script.display().to_string()];
            let out = self
                .transport
                .run_submit("flux", &args, &[], "Flux")
                .await?;
            if !out.success {
                return Err(SchedulerError::Rejected {
                    program: "flux batch".into(),
                    stderr: out.stderr.trim().to_string(),
                });
            }
            parse::parse_submit_output(&out.stdout)
                .map(|id| (id, out.stderr.trim().to_string()))
                .map_err(|e| SchedulerError::Unreadable {
                    program: "flux batch".into(),
                    detail: e.to_string(),
                })
        })
    }

    fn active<'a>(
        &'a self,
        tag: &'a str,
    ) -> Fut<'a, Result<HashMap<JobRef, JobState>, SchedulerError>> {
        Box::pin(async move {
            let count = format!("--count={MAX_LISTED}");
            let name = format!("--name={tag}");
            let format = format!("--format={}", parse::QUEUE_FORMAT);
            let args = strings(&[
                "jobs",
                "--no-header",
                "--filter=pending,running",
                &name,
                &count,
                &format,
            ]);
            let out = self.flux(args).await?.ok("flux jobs")?;
            parse::parse_queue(&out.stdout).map_err(|e| SchedulerError::Unreadable {
                program: "flux jobs".into(),
                detail: e.to_string(),
            })
        })
    }

    /// One `flux jobs ID...` call for all of them (Flux keeps inactive jobs until they are
    /// purged).
    /// ONE `flux jobs -a --name=TAG` call lists the executor's jobs with their submission
    /// times; `flux batch` keeps no script path, so each job submitted since the earliest
    /// `wanted` submission (less a minute, for a login node's clock) and not `known` has its
    /// script read from its jobspec (`flux job info ID jobspec`, newest first) until every
    /// wanted script is found. Each script ends with a line naming its submission, so a
    /// match is that submission. A job whose jobspec cannot be read (purged since) is
    /// skipped.
    fn submitted<'a>(
        &'a self,
        tag: &'a str,
        wanted: &'a [Unrecorded],
        known: &'a HashSet<u64>,
    ) -> Fut<'a, Result<Option<HashMap<String, u64>>, SchedulerError>> {
        Box::pin(async move {
            let mut found = HashMap::new();
            let Some(since) = wanted.iter().map(|w| w.since).min() else {
                return Ok(Some(found));
            };
            let since = since
                .checked_sub(Duration::from_secs(60))
                .unwrap_or(since)
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let name = format!("--name={tag}");
            let count = format!("--count={MAX_LISTED}");
            let format = format!("--format={}", parse::SUBMITTED_FORMAT);
            let args = strings(&["jobs", "-a", "--no-header", &name, &count, &format]);
            let out = self.flux(args).await?.ok("flux jobs")?;
            let jobs =
                parse::parse_submitted(&out.stdout).map_err(|e| SchedulerError::Unreadable {
                    program: "flux jobs".into(),
                    detail: e.to_string(),
                })?;
            for (job_id, _) in jobs
                .into_iter()
                .filter(|(id, at)| *at >= since && !known.contains(id))
            {
                if found.len() == wanted.len() {
                    break;
                }
                let args = strings(&["job", "info", &job_id.to_string(), "jobspec"]);
                let Ok(out) = self.flux(args).await?.ok("flux job info") else {
                    continue;
                };
                let script = wanted.iter().find(|w| {
                    !found.contains_key(&w.script) && parse::is_batch_script(&out.stdout, &w.text)
                });
                if let Some(w) = script {
                    found.insert(w.script.clone(), job_id);
                }
            }
            Ok(Some(found))
        })
    }

    fn never_ran<'a>(
        &'a self,
        wanted: &'a [JobRef],
    ) -> Fut<'a, HashMap<JobRef, (JobState, String)>> {
        Box::pin(async move { self.ended(wanted, parse::parse_never_ran).await })
    }

    fn final_states<'a>(
        &'a self,
        wanted: &'a [JobRef],
    ) -> Fut<'a, HashMap<JobRef, (JobState, String)>> {
        Box::pin(async move { self.ended(wanted, parse::parse_final).await })
    }

    fn cancel<'a>(&'a self, jobs: &'a [JobRef]) -> Fut<'a, Result<(), SchedulerError>> {
        Box::pin(async move {
            let mut args = vec!["cancel".to_string()];
            args.extend(jobs.iter().map(|j| j.job_id.to_string()));
            let out = self.flux(args).await?;
            if out.success {
                return Ok(());
            }
            // `flux cancel` exits 1 when one of the jobs has already ended ("flux-cancel:
            // ERROR: ƒX: job is inactive"), although it cancelled the others: that job is as
            // cancelled as it gets.
            match parse::cancel_failure(&out.stderr) {
                None => Ok(()),
                Some(stderr) => Err(SchedulerError::CommandFailed {
                    program: "flux cancel".into(),
                    stderr,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    #[test]
    fn checkpoint_grace_is_flux_batchs_signal_and_requeue_is_ignored() {
        let f = &DIALECT;
        let r = Resources::new()
            .run_time_max(std::time::Duration::from_secs(120))
            .checkpoint_grace(std::time::Duration::from_secs(90))
            .requeue(true);
        let h = (f.header)("pitch-x", &r, 1, 1);
        assert_eq!(h.signal.as_deref(), Some("SIGUSR1@90s"));
        assert_eq!(h.requeue, None);
        assert_eq!(f.warning, WarningReach::ProcessGroup);
        assert_eq!(f.check(&r), Ok(vec!["requeue"]));
    }

    #[test]
    fn resources_flux_cannot_honour_or_ignores() {
        let f = &DIALECT;
        let err = f.check(&Resources::new().exclusive(true)).unwrap_err();
        assert!(err.contains("needs num_nodes"), "{err}");
        assert_eq!(
            f.check(&Resources::new().exclusive(true).num_nodes(2)),
            Ok(vec![])
        );
        let r = Resources::new().memory_max(1 << 30).qos("high");
        assert_eq!(f.check(&r), Ok(vec!["memory_max", "qos"]));
        let h = (f.header)(
            "pitch-x",
            &Resources::new().partition("debug").account("proj"),
            4,
            2,
        );
        assert_eq!((h.ntasks, h.cpus_per_task), (4, 2));
        assert_eq!(
            (h.partition.as_deref(), h.account.as_deref(), h.mem),
            (Some("debug"), Some("proj"), None)
        );
        let mut h = SlurmScript::default();
        let after = [
            JobRef {
                job_id: 7,
                array_index: None,
            },
            JobRef {
                job_id: 9,
                array_index: None,
            },
        ];
        (f.depend)(&mut h, &after);
        assert_eq!(h.dependencies, ["afterok:7", "afterok:9"]);
        assert_eq!(h.dependency, None);
    }
}
