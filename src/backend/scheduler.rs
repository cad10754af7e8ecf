//! What the queue backend needs of a batch scheduler, in two parts: a [`Dialect`], the
//! constants and formatters of its job scripts and commands, and a [`SchedulerClient`], the
//! four things it asks the scheduler (submit, list the active jobs by tag in one query, final
//! states of jobs that left the queue, cancel). Slurm (`backend/slurm`) and Flux
//! (`backend/flux`) each provide both; `backend::scheduler_for` picks one by
//! [`SchedulerKind`]. This module knows neither of them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::resources::Resources;
use crate::scheduler::{EndReason, SchedulerError, SchedulerKind};
use crate::template::SlurmScript;

/// A submission whose job id may never have been learned: the job script's path where the
/// scheduler runs, the script's text (each script ends with a line naming its submission, so
/// no two are the same), and a time shortly before it was submitted.
pub(crate) struct Unrecorded {
    pub script: String,
    pub text: String,
    pub since: std::time::SystemTime,
}

/// A future borrowing its scheduler.
pub(crate) type Fut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A scheduler's job: a job id, or one element of a job array (`<array job id>_<index>`, as
/// Slurm prints them; Flux has no arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct JobRef {
    /// The job id (for an array element: the array's job id, the one the submission printed).
    pub job_id: u64,
    /// The array index, for an array element.
    pub array_index: Option<u32>,
}

impl JobRef {
    /// A job that is not an array element.
    pub(crate) fn single(job_id: u64) -> JobRef {
        JobRef {
            job_id,
            array_index: None,
        }
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.array_index {
            Some(i) => write!(f, "{}_{}", self.job_id, i),
            None => write!(f, "{}", self.job_id),
        }
    }
}

impl FromStr for JobRef {
    type Err = SchedulerError;

    /// Parses `"123"` or `"123_4"` (no sign, no spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SchedulerError::InvalidJobId(s.to_string());
        fn digits<T: FromStr>(s: &str) -> Option<T> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        let (job, index) = match s.split_once('_') {
            Some((job, index)) => (job, Some(digits::<u32>(index).ok_or_else(bad)?)),
            None => (s, None),
        };
        Ok(JobRef {
            job_id: digits::<u64>(job).ok_or_else(bad)?,
            array_index: index,
        })
    }
}

/// A job's state as the queue backend needs it, whatever the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Queued or running, in the scheduler's own name of the state (`PENDING`, `RUN`).
    Active(&'static str),
    /// Queued for a reason that can never clear (Slurm: `PartitionConfig`,
    /// `DependencyNeverSatisfied`...): the scheduler will not start it, whatever the wait.
    Stuck(String),
    /// Left the active states for good.
    Ended(EndReason),
}

impl JobState {
    /// Whether the job left the active states for good.
    pub(crate) fn is_finished(&self) -> bool {
        matches!(self, JobState::Ended(_))
    }

    /// The state's name (`PENDING`, `RUN`, `TIMEOUT`).
    pub(crate) fn name(&self) -> &str {
        match self {
            JobState::Active(name) => name,
            JobState::Stuck(_) => "PENDING",
            JobState::Ended(reason) => reason.as_str(),
        }
    }

    /// Why the job ended; an active state, which a job gone from the queue should not be
    /// in, is an unknown reason named by it.
    pub(crate) fn into_reason(self) -> EndReason {
        match self {
            JobState::Active(name) => EndReason::Unknown(name.to_string()),
            JobState::Stuck(_) => EndReason::Unknown("PENDING".to_string()),
            JobState::Ended(reason) => reason,
        }
    }
}

/// The state the queue query reported for `job`, `None` if it is not listed.
///
/// For a job without array index that is not listed as such but whose array elements are
/// (`job` is a whole job array), this is the state of the lowest unfinished element, or of
/// the lowest element when all have finished.
pub(crate) fn lookup_state(states: &HashMap<JobRef, JobState>, job: JobRef) -> Option<JobState> {
    if let Some(state) = states.get(&job) {
        return Some(state.clone());
    }
    if job.array_index.is_some() {
        return None;
    }
    states
        .iter()
        .filter(|(j, _)| j.job_id == job.job_id)
        .min_by_key(|(j, s)| (s.is_finished(), **j))
        .map(|(_, s)| s.clone())
}

/// How a scheduler runs job arrays.
pub(crate) struct ArrayDialect {
    /// The shell expression of an element's index (`$SLURM_ARRAY_TASK_ID`).
    pub index: &'static str,
    /// The shell expression of an element's CPUs.
    pub cpus: &'static str,
    /// Fills in the header of an array of `elements` elements, at most `throttle` running.
    pub header: fn(&mut SlurmScript, usize, Option<u32>),
}

/// A scheduler's constants and formatters: its job script's header, the names of its
/// commands and log files, what it ignores and refuses.
/// How a scheduler's warning signal (SIGUSR1 before the time limit, from `checkpoint_grace`)
/// reaches a batch job's processes, and so what its job script does about it
/// (`queue::script`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WarningReach {
    /// Only the batch shell gets it (Slurm's `--signal=B:...`): the script passes it on to
    /// its process group, where the tasks it started run.
    BatchShell,
    /// The batch script's whole process group gets it (Flux's `--signal`: the job shell
    /// signals the process group of the instance's broker, which holds the script and what
    /// it started; the broker passes it on to the instance's jobs): the script only has to
    /// survive it.
    ProcessGroup,
}

pub(crate) struct Dialect {
    /// Which scheduler.
    pub kind: SchedulerKind,
    /// The built-in job script template: its name and text.
    pub template: (&'static str, &'static str),
    /// The command that submits a job script (`sbatch`, `flux batch`), in errors.
    pub submitter: &'static str,
    /// Resource keys that mean nothing to this scheduler (reported once as warnings).
    pub ignores: &'static [&'static str],
    /// Why it cannot honour these resources, if it cannot.
    pub refuses: fn(&Resources) -> Option<String>,
    /// The template's variables for a task with these resources (`command`, `output`,
    /// `array` and `dependency` are filled in by the caller).
    pub header: fn(tag: &str, r: &Resources, ranks: u32, threads: u32) -> SlurmScript,
    /// The job's log file name in the jobs directory, for a single job and for a job
    /// array, with the scheduler's placeholders (`slurm-%j.out`).
    pub log_name: &'static str,
    pub array_log_name: &'static str,
    /// The log's path for the job script: the jobs directory (a literal path, escaped as
    /// the scheduler needs) and the log's name.
    pub log_path: fn(dir: &str, name: &str) -> String,
    /// The prefix that runs a multi-rank task inside the job (`srun --ntasks=N ...`).
    pub rank_launcher: fn(ranks: u32, threads: u32) -> String,
    /// Fills in the header's dependency on `after` (not empty).
    pub depend: fn(&mut SlurmScript, after: &[JobRef]),
    /// Job arrays, where the scheduler has them.
    pub arrays: Option<ArrayDialect>,
    /// What to say of a job the scheduler no longer knows.
    pub forgotten: &'static str,
    /// How its warning signal before the time limit reaches the job's processes.
    pub warning: WarningReach,
}

impl Dialect {
    /// The backend's name (`"slurm"`, `"flux"`).
    pub(crate) fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The scheduler's name in messages (`"Slurm"`, `"Flux"`).
    pub(crate) fn title(&self) -> &'static str {
        self.kind.title()
    }

    /// Resource keys that mean nothing to this scheduler, or why it cannot honour these
    /// resources.
    pub(crate) fn check(&self, r: &Resources) -> Result<Vec<&'static str>, String> {
        match (self.refuses)(r) {
            Some(why) => Err(why),
            None => Ok(r.set_keys(self.ignores)),
        }
    }
}

/// What the queue backend asks a scheduler, through its transport.
pub(crate) trait SchedulerClient: Send + Sync + 'static {
    /// Submits the job script at `script` (a path where the jobs run); the job id, and what
    /// the submit command wrote to stderr although it accepted the job (its warnings).
    fn submit<'a>(&'a self, script: &'a Path) -> Fut<'a, Result<(u64, String), SchedulerError>>;
    /// ONE query: the jobs named `tag` the scheduler lists (queued, running, or recently
    /// finished), with their states.
    fn active<'a>(
        &'a self,
        tag: &'a str,
    ) -> Fut<'a, Result<HashMap<JobRef, JobState>, SchedulerError>>;
    /// Why the jobs `wanted` ended, as far as the scheduler still knows: each job's state
    /// and a detail. A few calls for all of them, not one per job.
    fn final_states<'a>(
        &'a self,
        wanted: &'a [JobRef],
    ) -> Fut<'a, HashMap<JobRef, (JobState, String)>>;
    /// Those of the jobs `wanted` (which left the queue without a result) that ended without
    /// ever running, with their states and details as [`SchedulerClient::final_states`]
    /// gives them: no result file can come for them, so the poller reports them at once
    /// instead of waiting `nfs_grace`. Flux says so (a `dependency` or `alloc` exception, a
    /// cancel while pending); by default none is known.
    fn never_ran<'a>(
        &'a self,
        wanted: &'a [JobRef],
    ) -> Fut<'a, HashMap<JobRef, (JobState, String)>> {
        let _ = wanted;
        Box::pin(async { HashMap::new() })
    }
    /// The jobs named `tag` the scheduler lists that were submitted with one of the scripts
    /// `wanted`, by the script's path (the array's job id for an array): how a submission
    /// whose job id the driver never learned (killed while the submit command ran, or the
    /// submit command's reply lost) is found again. Jobs in `known` are already journaled:
    /// they need not be looked at. `None` where the scheduler cannot tell.
    fn submitted<'a>(
        &'a self,
        tag: &'a str,
        wanted: &'a [Unrecorded],
        known: &'a HashSet<u64>,
    ) -> Fut<'a, Result<Option<HashMap<String, u64>>, SchedulerError>> {
        let _ = (tag, wanted, known);
        Box::pin(async { Ok(None) })
    }
    /// Why the cluster can never run a task asking for `r` with `ranks` ranks of `threads`
    /// threads (more CPUs or nodes, or a longer time, than its partition has), as far as the
    /// scheduler tells its limits (Slurm: `scontrol show partition`, asked once, where the
    /// scheduler runs here). `None` when it can, or nobody can tell.
    fn refuses(&self, r: &Resources, ranks: u32, threads: u32) -> Option<String> {
        let _ = (r, ranks, threads);
        None
    }
    /// Cancels these jobs, in one call.
    fn cancel<'a>(&'a self, jobs: &'a [JobRef]) -> Fut<'a, Result<(), SchedulerError>>;
    /// The most elements one job array may have (1 where the dialect has no arrays).
    fn max_array_size(&self) -> Fut<'_, u32> {
        Box::pin(async { 1 })
    }
}

/// A scheduler: its dialect and its client.
pub(crate) struct Scheduler {
    pub dialect: &'static Dialect,
    pub client: Box<dyn SchedulerClient>,
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

impl CmdOutput {
    /// This output when the command succeeded, else its failure as `program`'s.
    pub(crate) fn ok(self, program: &str) -> Result<CmdOutput, SchedulerError> {
        if self.success {
            Ok(self)
        } else {
            Err(SchedulerError::CommandFailed {
                program: program.to_string(),
                stderr: self.stderr.trim().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_refs_read_back_as_they_print() {
        for j in [
            JobRef::single(7),
            JobRef {
                job_id: 12,
                array_index: Some(3),
            },
        ] {
            assert_eq!(j.to_string().parse::<JobRef>(), Ok(j));
        }
        for bad in ["", "x", "1_", "_2", "-1", "1_2_3", " 1"] {
            assert!(bad.parse::<JobRef>().is_err(), "{bad:?}");
        }
    }
}
