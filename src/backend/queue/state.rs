//! [`Queue`]'s state and construction ([`QueueConfig`], [`Queue::new`]), and the pieces its
//! other parts share: the staged worker binary, a job's header, its log path, a task's body.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, Notify, Semaphore};

use super::journal::Journal;
use super::poll::{self, Watch};
use super::script;
use super::submit::Pending;
use crate::backend::scheduler::{JobRef, JobState, Scheduler};
use crate::backend::transport::{Transport, TransportError};
use crate::error::{Error, LaunchErrorKind, TaskError};
use crate::event::{EventKind, Events};
use crate::resources::Resources;
use crate::store::{Store, TaskPaths};
use crate::task::{TaskKey, TaskSpec};
use crate::template::{self, SlurmScript};

/// Settings of a queue backend (from the builder).
#[derive(Debug, Clone)]
pub(crate) struct QueueConfig {
    pub poll_interval: Duration,
    pub max_poll_interval: Duration,
    pub nfs_grace: Duration,
    pub max_jobs: Option<u32>,
    pub array_throttle: Option<u32>,
    pub template: Option<PathBuf>,
    pub batch_window: Duration,
    pub tasks_per_job: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            poll_interval: Duration::from_secs(2),
            max_poll_interval: Duration::from_secs(30),
            nfs_grace: Duration::from_secs(30),
            max_jobs: None,
            array_throttle: None,
            template: None,
            batch_window: Duration::from_millis(50),
            tasks_per_job: 1,
        }
    }
}

pub(crate) struct Queue {
    pub(super) scheduler: Scheduler,
    /// Where the scheduler's commands run and the jobs' files live.
    pub(super) transport: Arc<dyn Transport>,
    /// The worker binary, uploaded where the jobs run (once).
    pub(super) exe_uploaded: tokio::sync::OnceCell<Result<(), TransportError>>,
    pub(super) cfg: QueueConfig,
    pub(super) store: Store,
    pub(super) journal: Journal,
    pub(super) events: OnceLock<Events>,
    pub(super) preparing: OnceLock<Arc<AtomicUsize>>,
    /// The job name shared by every job of this cache directory (the queue query filters on
    /// it).
    pub(super) tag: String,
    pub(super) template_name: String,
    pub(super) template_source: String,
    pub(super) staged_exe: OnceLock<Result<PathBuf, String>>,
    pub(super) max_array_size: OnceLock<u32>,
    pub(super) queue_cap: Option<Arc<Semaphore>>,
    pub(super) pending: Mutex<Vec<Pending>>,
    /// Tasks on their way from `run` to `pending` (re-attach checks, the binary staged, the
    /// task file shipped): the batch window waits for them as for the engine's `preparing`.
    pub(super) arriving: Arc<AtomicUsize>,
    pub(super) flusher_running: Mutex<bool>,
    /// Which job each task was last submitted as by earlier runs: the journal at start, with
    /// the submissions found again from intent records ([`Queue::recover`]).
    pub(super) journaled: Mutex<HashMap<TaskKey, JobRef>>,
    /// The earlier runs' jobs the scheduler still listed when this run started (`None`: it
    /// could not say); filled once, by [`Queue::recover`].
    pub(super) recovered: tokio::sync::OnceCell<Option<HashMap<JobRef, JobState>>>,
    /// Which job runs which task in this run: the jobs submitted, and those of earlier runs
    /// re-attached while still queued or running (the ones dependents may queue behind).
    pub(super) jobs: Mutex<HashMap<TaskKey, JobRef>>,
    /// The jobs (array elements) among them that run more than one task.
    pub(super) packs: Mutex<HashSet<JobRef>>,
    pub(super) jobs_changed: Notify,
    pub(crate) watches: Mutex<HashMap<TaskKey, Watch>>,
    pub(crate) poke: Notify,
    /// Jobs waiting to be cancelled by the next cancel call.
    pub(super) cancels: Mutex<Vec<(JobRef, oneshot::Sender<()>)>>,
    pub(super) poller_started: Mutex<bool>,
}

impl Queue {
    pub(crate) fn new(
        scheduler: Scheduler,
        transport: Arc<dyn Transport>,
        cfg: QueueConfig,
        store: &Store,
    ) -> Result<Queue, Error> {
        store.create_jobs_dir()?;
        // `pitch status` and `pitch cancel` ask this scheduler about the journal's jobs.
        store.set_scheduler_marker(scheduler.dialect.kind, transport.login())?;
        let (template_name, template_source) = match &cfg.template {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?,
            ),
            None => {
                let (name, source) = scheduler.dialect.template;
                (format!("{name} (built in)"), source.to_string())
            }
        };
        // Fail at build time on a template that does not render.
        template::render(
            &template_name,
            &template_source,
            &SlurmScript {
                job_name: "check".into(),
                ntasks: 1,
                cpus_per_task: 1,
                output: "/dev/null".into(),
                command: "true".into(),
                ..SlurmScript::default()
            },
        )
        .map_err(|e| Error::Config(e.to_string()))?;
        let journal = Journal::new(store.clone());
        let (known, problems) = journal.load();
        // A link (or anything but a regular file) planted in a record's place is refused,
        // naming it; a damaged record is only passed over.
        if let Some((path, e)) = problems
            .into_iter()
            .find(|(_, e)| matches!(e, crate::store::FormatError::Untrusted(_)))
        {
            return Err(Error::Untrusted {
                cache: store.root().to_path_buf(),
                path,
                reason: e.to_string(),
            });
        }
        let mut seen = HashSet::new();
        let packs: HashSet<JobRef> = known
            .values()
            .filter(|j| !seen.insert(**j))
            .copied()
            .collect();
        Ok(Queue {
            scheduler,
            transport,
            exe_uploaded: tokio::sync::OnceCell::new(),
            queue_cap: cfg.max_jobs.map(|n| Arc::new(Semaphore::new(n as usize))),
            cfg,
            store: store.clone(),
            journal,
            events: OnceLock::new(),
            preparing: OnceLock::new(),
            tag: job_name_for(store.root()),
            template_name,
            template_source,
            staged_exe: OnceLock::new(),
            max_array_size: OnceLock::new(),
            pending: Mutex::new(Vec::new()),
            arriving: Arc::new(AtomicUsize::new(0)),
            flusher_running: Mutex::new(false),
            journaled: Mutex::new(known),
            recovered: tokio::sync::OnceCell::new(),
            jobs: Mutex::new(HashMap::new()),
            packs: Mutex::new(packs),
            jobs_changed: Notify::new(),
            watches: Mutex::new(HashMap::new()),
            poke: Notify::new(),
            cancels: Mutex::new(Vec::new()),
            poller_started: Mutex::new(false),
        })
    }

    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    pub(crate) fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    pub(crate) fn warn(&self, message: String) {
        if let Some(events) = self.events.get() {
            events.emit(EventKind::Warning { message });
        }
    }

    /// Copies the running binary, content-addressed, into the cache directory once, so a
    /// rebuild during a long sweep does not change what queued jobs run.
    pub(crate) fn staged_exe(&self) -> Result<PathBuf, TaskError> {
        self.staged_exe
            .get_or_init(|| crate::backend::exe::stage(&self.store))
            .clone()
            .map_err(|e| launch_failed("the worker binary", e))
    }

    /// The staged worker binary where the jobs see it (uploaded once when they run
    /// elsewhere).
    pub(crate) async fn job_exe(&self) -> Result<PathBuf, TaskError> {
        let exe = self.staged_exe()?;
        let uploaded = self
            .exe_uploaded
            .get_or_init(|| async {
                self.transport
                    .upload(std::slice::from_ref(&exe), true)
                    .await
            })
            .await;
        uploaded
            .clone()
            .map_err(|e| launch_failed("the worker binary", e))?;
        Ok(self.transport.path(&exe))
    }

    pub(crate) fn transport(&self) -> &dyn Transport {
        &*self.transport
    }

    pub(super) async fn max_array_size(&self) -> u32 {
        if let Some(n) = self.max_array_size.get() {
            return *n;
        }
        let n = match self.scheduler.dialect.arrays {
            Some(_) => self.scheduler.client.max_array_size().await.max(1),
            None => 1,
        };
        *self.max_array_size.get_or_init(|| n)
    }

    pub(crate) fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub(super) fn header(&self, r: &Resources, ranks: u32, threads: u32) -> SlurmScript {
        (self.scheduler.dialect.header)(&self.tag, r, ranks, threads)
    }

    /// The job's log file pattern where the jobs see it, its directory escaped for the
    /// scheduler's patterns (a `%` in the cache path is not a Slurm placeholder).
    pub(super) fn job_log(&self, array: bool) -> String {
        let d = self.scheduler.dialect;
        let name = if array { d.array_log_name } else { d.log_name };
        let path = self.transport.path(&self.store.job_log(name));
        let dir = path.parent().unwrap_or(Path::new("/"));
        (d.log_path)(&dir.display().to_string(), name)
    }

    /// The bash that runs one task in a job (`exe`: where the jobs see the worker binary;
    /// `warned`: the job gets the scheduler's warning signal, `checkpoint_grace`).
    pub(super) fn task_body(
        &self,
        spec: &TaskSpec,
        paths: &TaskPaths,
        exe: Option<&Path>,
        warned: bool,
    ) -> String {
        let there = |p: PathBuf| self.transport.path(&p);
        script::task_body(&script::TaskBody {
            spec,
            stdout: &there(paths.stdout()),
            stderr: &there(paths.stderr()),
            result: &there(paths.result_file()),
            exit: &there(paths.exit_file()),
            exit_tmp: &there(paths.exit_tmp()),
            cache: &self.transport.path(self.store.root()),
            exe,
            durable: self.store.durable(),
            trust_group: paths.trust().trust_group,
            rank_launcher: &(self.scheduler.dialect.rank_launcher)(spec.ranks, spec.threads),
            warning: warned.then_some(self.scheduler.dialect.warning),
        })
    }

    pub(super) fn ensure_poller(self: &Arc<Self>) {
        let mut started = self.poller_started.lock().unwrap();
        if !*started {
            *started = true;
            tokio::spawn(poll::run(self.clone()));
        }
    }
}

/// The job name every job of the cache directory `root` carries: squeue filters on it, and
/// reruns on the same cache directory share it.
pub(crate) fn job_name_for(root: &Path) -> String {
    let hash = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
    format!("pitch-{}", &hash[..10])
}

/// A task's launch failing on `what` (the worker binary, the job script...) for a reason
/// other than a missing program or the scheduler's refusal.
pub(super) fn launch_failed(what: &str, detail: impl std::fmt::Display) -> TaskError {
    TaskError::Launch {
        what: what.into(),
        kind: LaunchErrorKind::Other,
        detail: detail.to_string(),
    }
}
