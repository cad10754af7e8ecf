//! [`Flux`], the scheduler of `FluxClusterExecutor`: every job is a `flux batch` script (a
//! Flux instance of its own, sized by `# flux:` directives, where multi-rank tasks start
//! with `flux run`); ONE `flux jobs` call per poll tick lists the executor's active jobs;
//! one `flux jobs ID...` call tells why jobs that left the queue ended; `flux cancel`
//! cancels.
//!
//! Flux has no job arrays for batch jobs: each task (or each pack of `tasks_per_job`
//! one-rank tasks) is one `flux batch` call.

pub(crate) mod parse;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::backend::queue::transport::Transport;
use crate::backend::queue::{base_header, strings, CmdOutput, Fut, JobRef, JobState, Scheduler};
use crate::error::{LaunchErrorKind, TaskError};
use crate::resources::Resources;
use crate::template::{self, SlurmScript};

/// Flux's commands, as the queue backend calls them, run through `transport` (here, or on
/// a login node).
pub(crate) struct Flux {
    pub transport: Arc<dyn Transport>,
}

/// The most jobs one `flux jobs` call lists (its default is 1,000).
const MAX_LISTED: u32 = 1_000_000;

impl Flux {
    async fn flux(&self, args: Vec<String>) -> Result<CmdOutput, String> {
        self.transport.run("flux", &args, &[], "Flux").await
    }
}

impl Scheduler for Flux {
    fn backend_name(&self) -> &'static str {
        "flux"
    }

    fn title(&self) -> &'static str {
        "Flux"
    }

    fn default_template(&self) -> (&'static str, &'static str) {
        (
            template::DEFAULT_FLUX_TEMPLATE_NAME,
            template::DEFAULT_FLUX_TEMPLATE,
        )
    }

    fn header(&self, tag: &str, r: &Resources, ranks: u32, threads: u32) -> SlurmScript {
        SlurmScript {
            time: r.run_time_max.map(parse::fsd),
            ..base_header(tag, r, ranks, threads)
        }
    }

    fn check(&self, r: &Resources) -> Result<Vec<&'static str>, String> {
        if r.exclusive == Some(true) && r.num_nodes.is_none() {
            return Err(
                "exclusive = true needs num_nodes on Flux (flux batch refuses \
                        --exclusive without --nodes)"
                    .into(),
            );
        }
        Ok(r.set_keys(&[
            "memory_max",
            "qos",
            "slurm_cmd_args",
            "openmpi_oversubscribe",
            "error_log_file",
        ]))
    }

    fn output(&self, jobs_dir: &Path, _array: bool) -> String {
        // A mustache template Flux fills in with the job id.
        jobs_dir.join("flux-{{id}}.out").display().to_string()
    }

    fn rank_launcher(&self, ranks: u32, threads: u32) -> String {
        format!("flux run --ntasks={ranks} --cores-per-task={threads}")
    }

    fn depend(&self, header: &mut SlurmScript, after: &[JobRef]) {
        header.dependencies = after
            .iter()
            .map(|j| format!("afterok:{}", j.job_id))
            .collect();
    }

    fn max_array_size(&self) -> Fut<'_, u32> {
        Box::pin(async { 1 })
    }

    fn array_index(&self) -> &'static str {
        "0"
    }

    fn array_cpus(&self) -> &'static str {
        "1"
    }

    fn array(&self, _header: &mut SlurmScript, _elements: usize, _throttle: Option<u32>) {
        unreachable!("Flux has no job arrays: max_array_size is 1")
    }

    fn submit<'a>(&'a self, script: &'a Path) -> Fut<'a, Result<u64, TaskError>> {
        Box::pin(async move {
            let launch = |kind, detail: String| TaskError::Launch {
                what: "flux batch".into(),
                kind,
                detail,
            };
            let out = self
                .flux(vec!["batch".into(), script.display().to_string()])
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
                    format!("flux batch rejected the job: {}", out.stderr.trim()),
                ));
            }
            parse::parse_submit_output(&out.stdout)
                .map_err(|e| launch(LaunchErrorKind::Other, e.to_string()))
        })
    }

    fn queue<'a>(&'a self, tag: &'a str) -> Fut<'a, Result<HashMap<JobRef, JobState>, String>> {
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
            let out = self
                .flux(args)
                .await
                .map_err(|e| format!("flux jobs failed: {e}"))?;
            if !out.success {
                return Err(format!("flux jobs failed: {}", out.stderr.trim()));
            }
            parse::parse_queue(&out.stdout)
                .map_err(|e| format!("could not parse flux jobs' output: {e}"))
        })
    }

    /// One `flux jobs ID...` call for all of them (Flux keeps inactive jobs until they are
    /// purged).
    fn final_states<'a>(
        &'a self,
        wanted: &'a [JobRef],
    ) -> Fut<'a, HashMap<JobRef, (JobState, String)>> {
        Box::pin(async move {
            let format = format!("--format={}", parse::FINAL_FORMAT);
            let mut args = strings(&["jobs", "--no-header", &format]);
            args.extend(wanted.iter().map(|j| j.job_id.to_string()));
            // Ids Flux no longer knows are reported on stderr; the others are still listed.
            match self.flux(args).await {
                Ok(out) => parse::parse_final(&out.stdout)
                    .into_iter()
                    .filter(|(j, _)| wanted.contains(j))
                    .collect(),
                Err(_) => HashMap::new(),
            }
        })
    }

    fn forgotten(&self) -> &'static str {
        "the job left the queue and Flux no longer knows it (purged)"
    }

    fn cancel<'a>(&'a self, jobs: &'a [JobRef]) -> Fut<'a, Result<(), String>> {
        Box::pin(async move {
            let mut args = vec!["cancel".to_string()];
            args.extend(jobs.iter().map(|j| j.job_id.to_string()));
            match self.flux(args).await {
                Ok(out) if out.success => Ok(()),
                Ok(out) => Err(format!("flux cancel failed: {}", out.stderr.trim())),
                Err(e) => Err(format!("flux cancel failed: {e}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    #[test]
    fn resources_flux_cannot_honour_or_ignores() {
        let f = Flux {
            transport: Arc::new(crate::backend::queue::transport::Local),
        };
        let err = f.check(&Resources::new().exclusive(true)).unwrap_err();
        assert!(err.contains("needs num_nodes"), "{err}");
        assert_eq!(
            f.check(&Resources::new().exclusive(true).num_nodes(2)),
            Ok(vec![])
        );
        let r = Resources::new().memory_max(1 << 30).qos("high");
        assert_eq!(f.check(&r), Ok(vec!["memory_max", "qos"]));
        let h = f.header(
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
        f.depend(&mut h, &after);
        assert_eq!(h.dependencies, ["afterok:7", "afterok:9"]);
        assert_eq!(h.dependency, None);
    }
}
