//! [`Cache`]: read-only inspection of a cache directory for `pitch status`, `pitch results`
//! and `pitch gc` — what each task is, whether it finished, and how.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::command::CommandOutput;
use crate::error::{Error, TaskError};
use crate::store::{self, FileKind, FormatError, Store};
use crate::task::{TaskKind, TaskSpec};

/// Where a task stands, as far as its files tell.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskState {
    /// No result yet: queued, running, or never started.
    Pending,
    /// Finished with a value.
    Finished,
    /// Finished with an error.
    Failed(TaskError),
}

/// One task found in a cache directory.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// The task's key.
    pub key: String,
    /// The function's name, or the program.
    pub name: String,
    /// The command line, for command tasks.
    pub argv: Option<Vec<String>>,
    /// The sweep parameters of a `pitch sweep` point (from its `PITCH_PARAM_*` variables).
    pub params: Vec<(String, String)>,
    /// Where it stands.
    pub state: TaskState,
    /// A finished command's exit code.
    pub exit_code: Option<i32>,
    /// A finished command's run time (seconds), when recorded.
    pub runtime: Option<f64>,
    /// The task's standard output file, when it wrote one.
    pub stdout: Option<PathBuf>,
    /// When the task's directory last changed.
    pub modified: SystemTime,
    /// The task's directory, or for a pooled task (`block_allocation`) the result log that
    /// holds its record.
    pub dir: PathBuf,
}

/// A cache directory opened for inspection.
pub struct Cache {
    store: Store,
}

impl Cache {
    /// Opens an existing cache directory.
    pub fn open(dir: &Path) -> Result<Cache, Error> {
        if !dir.join("tasks").is_dir() {
            return Err(Error::Config(format!(
                "{} is not a pitch cache directory (it has no tasks/ folder)",
                dir.display()
            )));
        }
        let root = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Cache {
            store: Store::at(root, false),
        })
    }

    /// The directory's absolute path.
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// Every task in the cache, sorted by key. Unreadable task files are skipped.
    pub fn tasks(&self) -> Result<Vec<TaskInfo>, Error> {
        let tasks_dir = self.store.root().join("tasks");
        let mut out = Vec::new();
        let shards = std::fs::read_dir(&tasks_dir).map_err(|e| Error::io(&tasks_dir, e))?;
        for shard in shards.flatten() {
            let Ok(entries) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let Some(key) = entry.file_name().to_str().and_then(|k| k.parse().ok()) else {
                    continue;
                };
                let paths = self.store.task(&key);
                let Ok(spec) = store::read_value::<TaskSpec>(&paths.task_file(), FileKind::Task)
                else {
                    continue;
                };
                let params = match &spec.kind {
                    TaskKind::Command(c) => c
                        .env
                        .iter()
                        .filter_map(|(k, v)| {
                            k.strip_prefix("PITCH_PARAM_")
                                .map(|n| (n.to_string(), v.clone()))
                        })
                        .collect(),
                    TaskKind::Function { .. } => Vec::new(),
                };
                let (name, argv) = match &spec.kind {
                    TaskKind::Function { name, .. } => (name.clone(), None),
                    TaskKind::Command(c) => (
                        c.program_name(),
                        Some(
                            std::iter::once(c.program.clone())
                                .chain(c.args.iter().cloned())
                                .collect(),
                        ),
                    ),
                };
                let mut info = TaskInfo {
                    key: key.to_string(),
                    name,
                    argv,
                    params,
                    state: TaskState::Pending,
                    exit_code: None,
                    runtime: None,
                    stdout: paths.stdout().exists().then(|| paths.stdout()),
                    modified: entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                    dir: paths.dir().to_path_buf(),
                };
                let outcome = match paths.read_result() {
                    Ok(rec) => Some(Ok(rec.outcome)),
                    // A command whose job ended with no driver watching (`pitch run
                    // --detach`, a sweep killed and not resumed) left only its exit file.
                    Err(FormatError::Missing) => match &spec.kind {
                        TaskKind::Command(c) => {
                            crate::backend::queue::poll::exit_outcome(&paths, c).map(|(_, o)| Ok(o))
                        }
                        TaskKind::Function { .. } => None,
                    },
                    Err(e) => Some(Err(e)),
                };
                match outcome {
                    Some(Ok(outcome)) => match outcome {
                        Ok(values) => {
                            info.state = TaskState::Finished;
                            if matches!(spec.kind, TaskKind::Command(_)) {
                                if let Some(out) = values
                                    .first()
                                    .and_then(|b| crate::codec::decode::<CommandOutput>(b).ok())
                                {
                                    info.exit_code = Some(out.exit_code);
                                    // Zero: the job's bash could not tell (no EPOCHREALTIME).
                                    info.runtime = (!out.elapsed.is_zero())
                                        .then_some(out.elapsed.as_secs_f64());
                                    info.stdout = out.stdout.or(info.stdout);
                                }
                            }
                        }
                        Err(e) => {
                            if let TaskError::CommandFailed { code, .. } = &e {
                                info.exit_code = Some(*code);
                            }
                            info.state = TaskState::Failed(e);
                        }
                    },
                    None => {}
                    Some(Err(e)) => {
                        info.state = TaskState::Failed(e.into_task_error(&paths.result_file()))
                    }
                }
                out.push(info);
            }
        }
        // Pooled tasks (block_allocation) keep their results in the result log instead.
        let in_dirs: std::collections::HashSet<String> =
            out.iter().map(|t| t.key.clone()).collect();
        out.extend(
            crate::resultlog::logged_tasks(self.store.root())
                .into_iter()
                .map(crate::resultlog::Logged::into_info)
                .filter(|t| !in_dirs.contains(&t.key)),
        );
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The job name of this cache directory's jobs (`squeue -n NAME`, `flux jobs --name`).
    pub fn job_name(&self) -> String {
        crate::backend::queue::job_name_for(self.store.root())
    }

    /// The scheduler of this cache directory's jobs: `"slurm"` (also when no queue executor
    /// has used it yet) or `"flux"`.
    pub fn scheduler(&self) -> String {
        self.marker()
            .lines()
            .next()
            .map_or_else(|| "slurm".into(), |l| l.trim().to_string())
    }

    /// The login node (`user@host:port`) the jobs were submitted to over SSH, if they were.
    pub fn login(&self) -> Option<String> {
        self.marker()
            .lines()
            .nth(1)
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
    }

    fn marker(&self) -> String {
        let marker = self
            .store
            .root()
            .join("jobs")
            .join(crate::backend::queue::SCHEDULER_FILE);
        std::fs::read_to_string(marker).unwrap_or_default()
    }

    /// Runs `f` with this cache directory's scheduler (commands run here) on a small runtime.
    fn with_scheduler<T>(
        &self,
        f: impl for<'a> FnOnce(
            &'a dyn crate::backend::queue::Scheduler,
        ) -> crate::backend::queue::Fut<'a, T>,
    ) -> Result<T, String> {
        use crate::backend::queue::transport::Local;
        if let Some(login) = self.login() {
            return Err(format!(
                "the jobs of this cache directory were submitted over SSH to {login}: ask the \
                 scheduler there (this command runs {} only where it is)",
                self.scheduler()
            ));
        }
        let scheduler =
            crate::backend::queue::scheduler_named(&self.scheduler(), std::sync::Arc::new(Local));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        Ok(rt.block_on(f(&*scheduler)))
    }

    /// What the scheduler says of this cache directory's jobs it still lists, with ONE query
    /// (squeue or flux jobs): job id (as [`Cache::jobs`] names it) -> state (`PENDING`,
    /// `RUNNING`, `SCHED`, `RUN`, ...).
    pub fn job_states(&self) -> Result<std::collections::HashMap<String, String>, String> {
        let tag = self.job_name();
        let states = self.with_scheduler(|s| s.queue_owned(tag))??;
        Ok(states
            .into_iter()
            .map(|(job, state)| (job.to_string(), state.name.to_string()))
            .collect())
    }

    /// Cancels these jobs (ids as [`Cache::jobs`] names them) with one scancel or flux cancel
    /// call.
    pub fn cancel_jobs(&self, ids: &[String]) -> Result<(), String> {
        let jobs = ids
            .iter()
            .map(|i| {
                i.parse::<crate::backend::queue::JobRef>()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        self.with_scheduler(|s| s.cancel_owned(jobs))?
    }

    /// The scheduler job (`123` or `123_4`) each task was last submitted as, from the journal.
    pub fn jobs(&self) -> std::collections::HashMap<String, String> {
        let journal =
            crate::backend::queue::journal::Journal::new(self.store.root().join("jobs"), false);
        journal
            .load()
            .0
            .into_iter()
            .map(|(k, j)| (k.to_string(), j.to_string()))
            .collect()
    }

    /// Folds the directories of finished tasks last changed at least `older_than` ago into
    /// a result log (one record each) and removes them (`pitch gc --compact`); directories
    /// that hold more than `task.bin` and `result.bin` (output files) are kept. Safe to
    /// interrupt and run again.
    pub fn compact(
        &self,
        older_than: std::time::Duration,
    ) -> Result<crate::resultlog::Compacted, Error> {
        crate::resultlog::compact(self.store.root(), older_than).map_err(Error::Config)
    }

    /// Removes a task's directory (for `pitch gc`). A task whose result is in a result log
    /// (a pooled task) has no directory of its own: it is refused.
    pub fn remove(&self, task: &TaskInfo) -> Result<(), Error> {
        if crate::resultlog::is_log(&task.dir) {
            return Err(Error::Config(format!(
                "task {} has no directory: its result is a record of the result log {}, \
                 which other tasks share",
                task.key,
                task.dir.display()
            )));
        }
        if !task.dir.starts_with(self.store.root()) {
            return Err(Error::Config(format!(
                "{} is outside the cache directory",
                task.dir.display()
            )));
        }
        std::fs::remove_dir_all(&task.dir).map_err(|e| Error::io(&task.dir, e))
    }
}
