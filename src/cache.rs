//! [`Cache`]: a read-only view of a cache directory for `pitch status`, `pitch results`,
//! `pitch cancel` and `pitch gc` — what each task is, whether it finished, and how; what the
//! scheduler says of its jobs. Every path comes from the store.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::backend::inspect;
use crate::command::CommandOutput;
use crate::error::{Error, TaskError};
use crate::scheduler::{SchedulerError, SchedulerKind};
use crate::store::{FormatError, Store};
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
    /// The failed attempts that were retried (`max_retries`), in the order they ended, over
    /// every run of the task (each run numbers its attempts from 1); empty when it was never
    /// retried.
    pub attempts: Vec<crate::error::Attempt>,
}

/// What a listing could not read: each path with why.
pub type Unreadable = Vec<(PathBuf, String)>;

/// A cache directory opened for inspection.
pub struct Cache {
    store: Store,
    /// The login node to ask when the jobs went there over SSH ([`Cache::over_ssh`]).
    #[cfg(feature = "remote")]
    remote: Option<crate::Remote>,
    /// Where the scheduler's commands run, once known (one SSH connection at most).
    place: std::sync::OnceLock<Result<inspect::Place, SchedulerError>>,
}

impl Cache {
    /// Opens an existing cache directory, refusing one that another user could have changed
    /// ([`Error::Untrusted`], as when an executor is built).
    pub fn open(dir: &Path) -> Result<Cache, Error> {
        Cache::open_trusting(dir, false)
    }

    /// The orders of sweeps' points recorded by [`crate::Executor::record_sweep`] (as `pitch
    /// sweep` does), each a list of task keys, the oldest record first. Records that cannot
    /// be read are passed over (they only order a listing).
    pub fn sweep_orders(&self) -> Vec<Vec<String>> {
        self.store.sweep_orders()
    }

    /// [`Cache::open`] that also accepts, with `trust_group`, a group-writable cache directory
    /// or parent (the builders' `trust_group`).
    pub fn open_trusting(dir: &Path, trust_group: bool) -> Result<Cache, Error> {
        if !Store::is_cache(dir)? {
            return Err(Error::Config(format!(
                "{} is not a pitch cache directory (it has no tasks/ folder)",
                dir.display()
            )));
        }
        let root = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let trust = crate::trust::Policy { trust_group };
        crate::trust::check_root(&root, trust).map_err(|u| Error::Untrusted {
            cache: root.clone(),
            path: u.path,
            reason: u.reason,
        })?;
        let store = Store::at(root, false).trusting(trust);
        // Which scheduler (and login node) to ask: a link or anything but pitch's file in
        // the marker's place is refused here, naming it, rather than taken as "no jobs".
        store.read_scheduler_marker()?;
        Ok(Cache {
            store,
            #[cfg(feature = "remote")]
            remote: None,
            place: std::sync::OnceLock::new(),
        })
    }

    /// Asks the scheduler on the login node `remote` (over SSH, as an executor with
    /// [`remote`](crate::SlurmClusterBuilder::remote) would) when this cache directory's jobs
    /// were submitted there: [`Cache::job_states`], [`Cache::pilot_jobs`] and
    /// [`Cache::cancel_jobs`] then work as for a local cluster. It must reach the login node
    /// the jobs went to ([`Cache::login`]); the jobs of a local cluster are still asked about
    /// here.
    ///
    /// When the jobs went there, it connects now (one connection, kept for those queries) and
    /// checks the remote cache directory as an executor's build does, with this cache
    /// directory's `trust_group` ([`Cache::open_trusting`]), before anything is asked of the
    /// login node: one another user owns or may write (or a link in its place) is refused
    /// with [`Error::Untrusted`] naming it, its owner and its mode. A login node that cannot
    /// be reached is not an error here: the queries say so.
    #[cfg(feature = "remote")]
    pub fn over_ssh(mut self, remote: crate::Remote) -> Result<Cache, Error> {
        self.place = std::sync::OnceLock::new();
        if let Some(login) = self.login() {
            let place = inspect::over_ssh(remote.clone(), self.root(), &login, self.store.trust())?;
            let _ = self.place.set(place);
        }
        self.remote = Some(remote);
        Ok(self)
    }

    /// The directory's absolute path.
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// Every task in the cache, sorted by key. Unreadable task files are skipped
    /// ([`Cache::tasks_and_unreadable`] says which).
    pub fn tasks(&self) -> Result<Vec<TaskInfo>, Error> {
        Ok(self.tasks_and_unreadable()?.0)
    }

    /// [`Cache::tasks`], and what could not be read (a task's folder or file, a shard
    /// folder), each with why, so that a listing can say what it is missing.
    pub fn tasks_and_unreadable(&self) -> Result<(Vec<TaskInfo>, Unreadable), Error> {
        let mut out = Vec::new();
        let (keys, shards) = self.store.task_keys_and_unreadable()?;
        let mut unreadable: Vec<(PathBuf, String)> = shards
            .into_iter()
            .map(|(p, e)| (p, e.to_string()))
            .collect();
        {
            for key in keys {
                let paths = self.store.task(&key);
                // Through the task directory's checked handle: a link planted at the task's
                // directory (or at its file) is named among the unreadable, never followed.
                let spec = match paths.read_task::<TaskSpec>() {
                    Ok(spec) => spec,
                    // A directory still being made (or emptied) has no task file yet.
                    Err(FormatError::Missing) => continue,
                    Err(e) => {
                        unreadable.push((paths.task_file(), e.to_string()));
                        continue;
                    }
                };
                let (name, argv, params) = spec.kind.shown();
                let mut info = TaskInfo {
                    key: key.to_string(),
                    name,
                    argv,
                    params,
                    state: TaskState::Pending,
                    exit_code: None,
                    runtime: None,
                    stdout: paths.stdout_file(),
                    modified: paths.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    dir: paths.dir().to_path_buf(),
                    attempts: paths.attempts(),
                };
                let outcome = match paths.read_result() {
                    Ok(rec) => Some(Ok(rec.outcome)),
                    // A command whose job ended with no driver watching (`pitch run
                    // --detach`, a sweep killed and not resumed) left only its exit file.
                    Err(FormatError::Missing) => match &spec.kind {
                        TaskKind::Command(c) => inspect::exit_outcome(&paths, c).map(Ok),
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
                .map(logged_info)
                .filter(|t| !in_dirs.contains(&t.key))
                .map(|mut t| {
                    if let Ok(key) = t.key.parse() {
                        t.attempts = self.store.task(&key).attempts();
                    }
                    t
                }),
        );
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((out, unreadable))
    }

    /// The job name of this cache directory's jobs (`squeue -n NAME`, `flux jobs --name`).
    pub fn job_name(&self) -> String {
        inspect::job_name(self.store.root())
    }

    /// The scheduler of this cache directory's jobs (Slurm also when no queue executor has
    /// used it yet).
    pub fn scheduler(&self) -> SchedulerKind {
        self.store
            .scheduler_marker()
            .map_or(SchedulerKind::Slurm, |m| m.scheduler)
    }

    /// The login node (`user@host:port`) the jobs were submitted to over SSH, if they were.
    pub fn login(&self) -> Option<String> {
        self.store.scheduler_marker().and_then(|m| m.login)
    }

    /// The scheduler to ask, and where its commands run: here, or over SSH when the jobs
    /// were submitted there and [`Cache::over_ssh`] says how to reach it.
    fn scheduler_at(&self) -> Result<(SchedulerKind, &inspect::Place), SchedulerError> {
        let place = self.place.get_or_init(|| match self.login() {
            None => Ok(inspect::here()),
            // The jobs went over SSH after `over_ssh` looked (a driver running meanwhile):
            // the same check first, its refusal as the queries' error.
            #[cfg(feature = "remote")]
            Some(login) if self.remote.is_some() => {
                let remote = self.remote.clone().expect("matched");
                inspect::over_ssh(remote, self.root(), &login, self.store.trust()).unwrap_or_else(
                    |refused| {
                        Err(SchedulerError::CannotRun {
                            program: "ssh".into(),
                            detail: refused.to_string(),
                        })
                    },
                )
            }
            Some(login) => Err(SchedulerError::Remote {
                login,
                scheduler: self.scheduler(),
            }),
        });
        match place {
            Ok(p) => Ok((self.scheduler(), p)),
            Err(e) => Err(e.clone()),
        }
    }

    /// What the scheduler says of this cache directory's jobs it still lists, with ONE query
    /// (squeue or flux jobs): job id (as [`Cache::jobs`] names it) -> state (`PENDING`,
    /// `RUNNING`, `SCHED`, `RUN`, ...).
    pub fn job_states(&self) -> Result<std::collections::HashMap<String, String>, SchedulerError> {
        let (kind, place) = self.scheduler_at()?;
        inspect::active_jobs(kind, place, &self.job_name())
    }

    /// The pilot jobs (`block_allocation` on SlurmCluster and FluxCluster) of this cache
    /// directory's executors the scheduler still lists, with ONE query: job id -> state. Empty
    /// for a cache directory no queue backend used. Pilots run no task of their own (their
    /// tasks' results are in the result logs), so [`Cache::jobs`] does not name them.
    pub fn pilot_jobs(&self) -> Result<std::collections::HashMap<String, String>, SchedulerError> {
        if self.store.scheduler_marker().is_none() {
            return Ok(Default::default());
        }
        let (kind, place) = self.scheduler_at()?;
        inspect::active_jobs(kind, place, &format!("{}-pilot", self.job_name()))
    }

    /// Cancels these jobs (ids as [`Cache::jobs`] names them) with one scancel or flux cancel
    /// call.
    pub fn cancel_jobs(&self, ids: &[String]) -> Result<(), SchedulerError> {
        let (kind, place) = self.scheduler_at()?;
        inspect::cancel_jobs(kind, place, ids)
    }

    /// The scheduler job (`123` or `123_4`) each task was last submitted as, from the journal.
    pub fn jobs(&self) -> std::collections::HashMap<String, String> {
        inspect::journal_jobs(&self.store)
            .into_iter()
            .map(|(k, j)| (k.to_string(), j))
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
        let key = task
            .key
            .parse()
            .ok()
            .filter(|k| self.store.task(k).dir() == task.dir);
        match key {
            Some(key) => self.store.remove_task(&key),
            None => Err(Error::Config(format!(
                "{} is not the directory of task {} in this cache directory",
                task.dir.display(),
                task.key
            ))),
        }
    }
}

/// A task of the result logs as [`Cache`] lists it.
fn logged_info(logged: crate::resultlog::Logged) -> TaskInfo {
    let (exit_code, runtime) = match (&logged.argv, &logged.record.outcome) {
        (Some(_), Ok(values)) => values
            .first()
            .and_then(|b| crate::codec::decode::<crate::command::CommandOutput>(b).ok())
            .map_or((None, None), |out| {
                (
                    Some(out.exit_code),
                    (!out.elapsed.is_zero()).then_some(out.elapsed.as_secs_f64()),
                )
            }),
        (_, Err(crate::error::TaskError::CommandFailed { code, .. })) => (Some(*code), None),
        _ => (None, None),
    };
    let state = match logged.record.outcome {
        Ok(_) => TaskState::Finished,
        Err(e) => TaskState::Failed(e),
    };
    TaskInfo {
        key: logged.key.to_string(),
        name: logged.name,
        argv: logged.argv,
        params: logged.params,
        state,
        exit_code,
        runtime,
        stdout: None,
        modified: logged.finished,
        dir: logged.file,
        attempts: Vec::new(),
    }
}
