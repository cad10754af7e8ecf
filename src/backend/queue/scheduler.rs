//! [`Scheduler`]: what differs between the batch schedulers (Slurm, Flux) behind the one
//! queue backend, and the small types they share with it.

use std::collections::HashMap;
use std::path::Path;

use std::sync::Arc;

use super::transport::Transport;
use super::JobRef;
use crate::error::TaskError;
use crate::resources::Resources;
use crate::template::SlurmScript;

/// A future borrowing its scheduler.
pub(crate) type Fut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A job's state as the queue backend needs it, whatever the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobState {
    /// The scheduler's own name of the state (`"TIMEOUT"`, `"OUT_OF_MEMORY"`, `"CANCELED"`).
    pub name: &'static str,
    /// The job left the active states for good.
    pub finished: bool,
    /// The scheduler ended the job (cancel, time or memory limit, node failure...), rather
    /// than the job's own processes exiting.
    pub by_scheduler: bool,
    /// The job ended without ever running (Flux: a dependency that can never be satisfied,
    /// an unsatisfiable request, a cancel while pending): no result file can come, so the
    /// poller reports it at once instead of waiting `nfs_grace` for one.
    pub never_ran: bool,
}

/// What differs between the batch schedulers behind the one queue backend: their commands,
/// how they print, and the job script's header.
pub(crate) trait Scheduler: Send + Sync + 'static {
    /// The backend's name (`"slurm"`, `"flux"`).
    fn backend_name(&self) -> &'static str;
    /// The scheduler's name in messages (`"Slurm"`, `"Flux"`).
    fn title(&self) -> &'static str;
    /// The built-in job script template: its name and text.
    fn default_template(&self) -> (&'static str, &'static str);
    /// The template's variables for a task with these resources (`command`, `output`,
    /// `array` and `dependency` are filled in by the caller).
    fn header(&self, tag: &str, r: &Resources, ranks: u32, threads: u32) -> SlurmScript;
    /// Resource keys that mean nothing to this scheduler (reported once as warnings), or
    /// why it cannot honour these resources.
    fn check(&self, r: &Resources) -> Result<Vec<&'static str>, String>;
    /// The job's output file pattern in `jobs_dir`, for a job array or a single job.
    fn output(&self, jobs_dir: &Path, array: bool) -> String;
    /// The prefix that runs a multi-rank task inside the job (`srun --ntasks=N ...`).
    fn rank_launcher(&self, ranks: u32, threads: u32) -> String;
    /// Fills in the header's dependency on `after` (not empty).
    fn depend(&self, header: &mut SlurmScript, after: &[JobRef]);
    /// Job arrays: the most elements one array may have (1: no arrays), the shell
    /// expression of an element's index and of its CPUs.
    fn max_array_size(&self) -> Fut<'_, u32>;
    fn array_index(&self) -> &'static str;
    fn array_cpus(&self) -> &'static str;
    /// Fills in the header of an array of `elements` elements.
    fn array(&self, header: &mut SlurmScript, elements: usize, throttle: Option<u32>);
    /// Submits the job script at `script`; the job id.
    fn submit<'a>(&'a self, script: &'a Path) -> Fut<'a, Result<u64, TaskError>>;
    /// ONE query: the jobs named `tag` the scheduler lists (queued, running, or recently
    /// finished), with their states.
    fn queue<'a>(&'a self, tag: &'a str) -> Fut<'a, Result<HashMap<JobRef, JobState>, String>>;
    /// Why the jobs `wanted` ended, as far as the scheduler still knows: each job's state
    /// and a detail. A few calls for all of them, not one per job.
    fn final_states<'a>(
        &'a self,
        wanted: &'a [JobRef],
    ) -> Fut<'a, HashMap<JobRef, (JobState, String)>>;
    /// [`Scheduler::queue`] with an owned tag, for callers outside the backend.
    fn queue_owned(&self, tag: String) -> Fut<'_, Result<HashMap<JobRef, JobState>, String>> {
        Box::pin(async move { self.queue(&tag).await })
    }

    /// [`Scheduler::cancel`] with owned jobs, for callers outside the backend.
    fn cancel_owned(&self, jobs: Vec<JobRef>) -> Fut<'_, Result<(), String>> {
        Box::pin(async move { self.cancel(&jobs).await })
    }

    /// What to say of a job the scheduler no longer knows.
    fn forgotten(&self) -> &'static str;
    /// Cancels these jobs, in one call.
    fn cancel<'a>(&'a self, jobs: &'a [JobRef]) -> Fut<'a, Result<(), String>>;
}

/// The header fields every scheduler fills the same way: job name, ranks, threads, GPUs,
/// nodes, exclusive, partition (queue) and account (bank).
pub(crate) fn base_header(tag: &str, r: &Resources, ranks: u32, threads: u32) -> SlurmScript {
    SlurmScript {
        job_name: tag.to_string(),
        ntasks: ranks,
        cpus_per_task: threads,
        gpus_per_task: r.gpus_per_core,
        nodes: r.num_nodes,
        exclusive: r.exclusive.unwrap_or(false),
        partition: r.partition.clone(),
        account: r.account.clone(),
        ..SlurmScript::default()
    }
}

/// Owned arguments for a command.
pub(crate) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Output of a scheduler command.
pub(crate) struct CmdOutput {
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

/// The scheduler called `name` (`"flux"`; anything else is Slurm, the default of a cache
/// directory), running its commands through `transport`.
pub(crate) fn named(name: &str, transport: Arc<dyn Transport>) -> Box<dyn Scheduler> {
    if name == "flux" {
        Box::new(crate::backend::flux::Flux { transport })
    } else {
        Box::new(crate::backend::slurm::Slurm { transport })
    }
}
