//! [`Queue`]: the backend of the batch schedulers (Slurm, Flux). Each task runs as a batch
//! job — or, for bursts of equal submissions, as one element of a job array where the
//! scheduler has them — whose script runs the worker (or the command) on a compute node. One
//! poller per executor makes one queue query per tick for all of its jobs and reads result
//! files only for jobs that left the queue. What differs between schedulers (their commands,
//! their outputs, the script's header) is a [`Scheduler`]: its dialect and its client.

pub(crate) mod journal;
pub(crate) mod poll;
pub(crate) mod script;
mod submit;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{oneshot, Notify, Semaphore};

use self::journal::Journal;
use self::poll::{Watch, WatchEnd};
use super::scheduler::{lookup_state, JobRef, JobState, Scheduler};
use super::transport::{Transport, TransportError};
use super::{Backend, BoxFuture, DropPolicy, Job};
use crate::engine::Preparing;
use crate::error::{Error, LaunchErrorKind, TaskError};
use crate::event::{EventKind, Events};
use crate::resources::Resources;
use crate::scheduler::EndReason;
use crate::store::{ResultRecord, Store, TaskPaths};
use crate::task::{ArgSlot, TaskKey, TaskKind, TaskSpec};
use crate::template::{self, SlurmScript};

/// The longest a submission waits for more tasks to join its job array.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(5);
/// How long a batch may wait past [`MAX_BATCH_WAIT`] while submitted tasks are still on their
/// way (a big `map` whose task files take long to write, on a slow or busy file system): one
/// job array then, rather than one every few seconds.
const MAX_BATCH_WAIT_PREPARING: Duration = Duration::from_secs(60);

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

/// A task waiting to be submitted.
struct Pending {
    key: TaskKey,
    body: String,
    header: SlurmScript,
    after: Vec<JobRef>,
    reply: oneshot::Sender<Result<JobRef, TaskError>>,
}

/// Tasks with the same header and dependencies can share a job array.
fn group_key(p: &Pending) -> String {
    format!(
        "{:?}|{:?}",
        serde_json::to_string(&p.header).unwrap_or_default(),
        p.after
    )
}

pub(crate) struct Queue {
    scheduler: Scheduler,
    /// Where the scheduler's commands run and the jobs' files live.
    transport: Arc<dyn Transport>,
    /// The worker binary, uploaded where the jobs run (once).
    exe_uploaded: tokio::sync::OnceCell<Result<(), TransportError>>,
    cfg: QueueConfig,
    store: Store,
    journal: Journal,
    events: OnceLock<Events>,
    preparing: OnceLock<Arc<AtomicUsize>>,
    /// The job name shared by every job of this cache directory (the queue query filters on
    /// it).
    tag: String,
    template_name: String,
    template_source: String,
    staged_exe: OnceLock<Result<PathBuf, String>>,
    max_array_size: OnceLock<u32>,
    queue_cap: Option<Arc<Semaphore>>,
    pending: Mutex<Vec<Pending>>,
    /// Tasks on their way from `run` to `pending` (re-attach checks, the binary staged, the
    /// task file shipped): the batch window waits for them as for the engine's `preparing`.
    arriving: Arc<AtomicUsize>,
    flusher_running: Mutex<bool>,
    /// Which job each task was last submitted as by earlier runs: the journal at start, with
    /// the submissions found again from intent records ([`Queue::recover`]).
    journaled: Mutex<HashMap<TaskKey, JobRef>>,
    /// The earlier runs' jobs the scheduler still listed when this run started (`None`: it
    /// could not say); filled once, by [`Queue::recover`].
    recovered: tokio::sync::OnceCell<Option<HashMap<JobRef, JobState>>>,
    /// Which job runs which task in this run: the jobs submitted, and those of earlier runs
    /// re-attached while still queued or running (the ones dependents may queue behind).
    jobs: Mutex<HashMap<TaskKey, JobRef>>,
    /// The jobs (array elements) among them that run more than one task.
    packs: Mutex<HashSet<JobRef>>,
    jobs_changed: Notify,
    pub(crate) watches: Mutex<HashMap<TaskKey, Watch>>,
    pub(crate) poke: Notify,
    /// Jobs waiting to be cancelled by the next cancel call.
    cancels: Mutex<Vec<(JobRef, oneshot::Sender<()>)>>,
    poller_started: Mutex<bool>,
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
            .get_or_init(|| super::exe::stage(&self.store))
            .clone()
            .map_err(|e| TaskError::Launch {
                what: "the worker binary".into(),
                kind: LaunchErrorKind::Other,
                detail: e.to_string(),
            })
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
        uploaded.clone().map_err(|e| TaskError::Launch {
            what: "the worker binary".into(),
            kind: LaunchErrorKind::Other,
            detail: e.to_string(),
        })?;
        Ok(self.transport.path(&exe))
    }

    pub(crate) fn transport(&self) -> &dyn Transport {
        &*self.transport
    }

    async fn max_array_size(&self) -> u32 {
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

    fn header(&self, r: &Resources, ranks: u32, threads: u32) -> SlurmScript {
        (self.scheduler.dialect.header)(&self.tag, r, ranks, threads)
    }

    /// The job's log file pattern where the jobs see it, its directory escaped for the
    /// scheduler's patterns (a `%` in the cache path is not a Slurm placeholder).
    fn job_log(&self, array: bool) -> String {
        let d = self.scheduler.dialect;
        let name = if array { d.array_log_name } else { d.log_name };
        let path = self.transport.path(&self.store.job_log(name));
        let dir = path.parent().unwrap_or(Path::new("/"));
        (d.log_path)(&dir.display().to_string(), name)
    }

    /// The bash that runs one task in a job (`exe`: where the jobs see the worker binary;
    /// `warned`: the job gets the scheduler's warning signal, `checkpoint_grace`).
    fn task_body(
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

    fn ensure_poller(self: &Arc<Self>) {
        let mut started = self.poller_started.lock().unwrap();
        if !*started {
            *started = true;
            tokio::spawn(poll::run(self.clone()));
        }
    }

    /// Waits until every unfinished input has a job id (or has finished); returns the ids to
    /// queue behind, or the error of an input that failed.
    async fn wait_for_inputs(&self, job: &Job, stale: &[JobRef]) -> Result<Vec<JobRef>, TaskError> {
        let mut after = Vec::new();
        for (input, dep) in &job.deps {
            loop {
                let notified = self.jobs_changed.notified();
                if let Some(outcome) = dep.slot.outcome() {
                    match outcome.as_ref() {
                        Ok(_) => break,
                        Err(cause) => {
                            return Err(TaskError::dependency_failed(
                                input,
                                &dep.slot.name,
                                &dep.slot.key,
                                cause,
                            ))
                        }
                    }
                }
                let job_of_input = self
                    .jobs
                    .lock()
                    .unwrap()
                    .get(&dep.slot.key)
                    .copied()
                    .filter(|j| !stale.contains(j));
                if let Some(j) = job_of_input {
                    // A job (array element) running several packed tasks fails when any of
                    // them fails, so `afterok` on it would also hold back (Slurm: pending
                    // forever; Flux: cancel) the dependents of its tasks that succeeded: a
                    // dependent of a packed task waits for that task's result instead (the
                    // loop ends on its outcome).
                    if !self.packs.lock().unwrap().contains(&j) {
                        // Once per job: the same future passed twice must not name its job
                        // twice (Flux fails a job with a repeated `afterok`, "Failed to
                        // remove dependency", or refuses it when the job has ended).
                        if !after.contains(&j) {
                            after.push(j);
                        }
                        break;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = dep.slot.wait_async() => {}
                    _ = job.slot.cancel.cancelled() => return Err(TaskError::Cancelled),
                }
            }
        }
        Ok(after)
    }

    async fn run_job(self: Arc<Self>, job: Job, arriving: Preparing) -> ResultRecord {
        let paths = job.paths.clone();
        let fail = |e: TaskError| paths.publish_result(ResultRecord { outcome: Err(e) });
        self.ensure_poller();
        let mut arriving = Some(arriving);
        let _permit = match &self.queue_cap {
            Some(sem) => Some(match sem.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Waiting for `max_jobs` to let it in is not being on its way: the batch
                    // window must not wait for it (the permits free as jobs end).
                    drop(arriving.take());
                    let p = tokio::select! {
                        p = sem.clone().acquire_owned() => p.expect("never closed"),
                        _ = job.slot.cancel.cancelled() => return fail(TaskError::Cancelled),
                    };
                    arriving = Some(Preparing::new(&self.arriving));
                    p
                }
            }),
            None => None,
        };
        // Re-attach to a job a previous run submitted, unless that attempt is over and
        // failed (then the task runs again: a rerun reruns failures).
        let listed = self.recover().await;
        let known = self.journaled.lock().unwrap().get(&job.spec.key).copied();
        if let Some(old) = known {
            let state = listed.map(|states| lookup_state(states, old));
            if let Some(Some(JobState::Stuck(_))) = state {
                // Queued by an earlier run for a reason that never clears (an input's job
                // that failed then): that job goes, the task is submitted anew.
                self.cancel(old).await;
            } else if !self.attempt_failed(&job) {
                if let Some(Some(JobState::Active(_))) = state {
                    // Still queued or running: dependents may queue behind it.
                    self.jobs.lock().unwrap().insert(job.spec.key, old);
                    self.jobs_changed.notify_waiters();
                }
                arriving = None;
                match self.watch(&job, old, true).await {
                    WatchEnd::Done(record) => return record,
                    WatchEnd::Lost | WatchEnd::Resubmit | WatchEnd::Stuck(_) => {}
                }
            }
        } else if let Some(record) = self.finished_command(&job) {
            return record;
        }
        // An earlier attempt's leftovers (a failed result, an exit file) must not stand for
        // the new job's.
        job.paths.clear_failed_attempt(job.spec.ranks);
        // The input jobs an attempt of this run queued behind, which failed since.
        let mut stale = Vec::new();
        loop {
            // An input's submission may wait in the batch window: not for this task.
            if !job.deps.is_empty() {
                arriving = None;
            }
            let after = match self.wait_for_inputs(&job, &stale).await {
                Ok(a) => a,
                Err(e) => return fail(e),
            };
            if arriving.is_none() {
                arriving = Some(Preparing::new(&self.arriving));
            }
            match self
                .submit_and_watch(&job, after.clone(), &paths, &mut arriving)
                .await
            {
                WatchEnd::Resubmit => {
                    job.paths.clear_failed_attempt(job.spec.ranks);
                    stale.extend(after);
                }
                WatchEnd::Done(record) => return record,
                WatchEnd::Lost | WatchEnd::Stuck(_) => unreachable!("watch settles these"),
            }
        }
    }

    /// Submits the task behind the jobs `after` and watches it to its end.
    async fn submit_and_watch(
        self: &Arc<Self>,
        job: &Job,
        after: Vec<JobRef>,
        paths: &TaskPaths,
        arriving: &mut Option<Preparing>,
    ) -> WatchEnd {
        let fail =
            |e: TaskError| WatchEnd::Done(paths.publish_result(ResultRecord { outcome: Err(e) }));
        let exe = match &job.spec.kind {
            TaskKind::Function { .. } => match self.job_exe().await {
                Ok(p) => Some(p),
                Err(e) => return fail(e),
            },
            TaskKind::Command(_) => None,
        };
        if let Err(e) = self.ship_task(job).await {
            return fail(e);
        }
        let warned = job.resources.checkpoint_grace.is_some();
        let body = self.task_body(&job.spec, paths, exe.as_deref(), warned);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().push(Pending {
            key: job.spec.key,
            body,
            header: self.header(&job.resources, job.spec.ranks, job.spec.threads),
            after,
            reply: tx,
        });
        *arriving = None;
        self.ensure_flusher();
        let submitted = match rx.await {
            Ok(r) => r,
            Err(_) => Err(TaskError::Launch {
                what: "the job submission".into(),
                kind: LaunchErrorKind::Other,
                detail: "the submission was dropped".into(),
            }),
        };
        let job_ref = match submitted {
            Ok(j) => j,
            // The scheduler refused the dependency because an input's job already failed
            // (Flux: "afterok: job N failed or was canceled"; Slurm: "Job dependency
            // problem") before the poller noticed: the task fails with its input's error.
            Err(e) if refused_dependency(&e, job) => {
                return match self.failed_input(job).await {
                    Some(failed) => fail(failed),
                    // The input is being retried (or succeeded since): queue behind its
                    // next job.
                    None => WatchEnd::Resubmit,
                };
            }
            // Refused (or never submitted): recorded as the task's failure, so that `pitch
            // status` shows it failed, not unfinished; a rerun runs it again, as any failure.
            Err(e) => return fail(e),
        };
        match self.watch(job, job_ref, false).await {
            WatchEnd::Lost => fail(TaskError::Scheduler {
                job_id: job_ref.to_string(),
                state: EndReason::forgotten(),
                detail: "the job left the queue without a result".into(),
            }),
            end => end,
        }
    }

    /// Once per run, before any task re-attaches: the submissions earlier runs made without
    /// journaling their job (killed while the submit command ran) are looked for by their
    /// script and journaled; returns the earlier runs' jobs the scheduler lists now (`None`
    /// when it could not say).
    async fn recover(&self) -> Option<&HashMap<JobRef, JobState>> {
        self.recovered
            .get_or_init(|| async {
                let (intents, refused) = self.journal.intents();
                for (path, e) in refused {
                    self.warn(format!(
                        "the intent record {} is not read: it {e}",
                        path.display()
                    ));
                }
                if !intents.is_empty() {
                    self.recover_intents(intents).await;
                }
                if self.journaled.lock().unwrap().is_empty() {
                    return Some(HashMap::new());
                }
                match self.scheduler.client.active(&self.tag).await {
                    Ok(states) => Some(states),
                    Err(e) => {
                        self.warn(format!("could not list the earlier runs' jobs: {e}"));
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    /// Whether what an earlier attempt of the task left says it ended and failed: a failed
    /// (or unreadable) result, or a command's exit file with a failure. Its job, finished,
    /// must not stand in for a new attempt.
    fn attempt_failed(&self, job: &Job) -> bool {
        match job.paths.read_result() {
            Ok(rec) => return rec.outcome.is_err(),
            Err(crate::store::FormatError::Missing) => {}
            Err(_) => return true,
        }
        match &job.spec.kind {
            TaskKind::Command(spec) => {
                matches!(
                    poll::exit_outcome(&job.paths, spec, job.spec.cwd.as_deref()),
                    Some((_, Err(_)))
                )
            }
            // Its job script writes the exit file only when the worker left no result.
            TaskKind::Function { .. } => job.paths.open_exit_file().is_ok(),
        }
    }

    /// A command whose job succeeded while no driver watched it and whose job is not in the
    /// journal (the driver was killed before recording it): its exit file is its result.
    fn finished_command(&self, job: &Job) -> Option<ResultRecord> {
        let TaskKind::Command(spec) = &job.spec.kind else {
            return None;
        };
        if self.transport.is_remote() || job.paths.read_result().is_ok() {
            return None;
        }
        match poll::exit_outcome(&job.paths, spec, job.spec.cwd.as_deref())? {
            (_, Ok(values)) => {
                let rec = job.paths.publish_result(ResultRecord {
                    outcome: Ok(values),
                });
                job.paths.remove_exit_file();
                Some(rec)
            }
            (_, Err(_)) => None,
        }
    }

    /// Waits for the task's inputs to end: the error naming the first that failed, `None`
    /// when all succeeded (or the task was cancelled meanwhile: `Cancelled`).
    async fn failed_input(&self, job: &Job) -> Option<TaskError> {
        for (input, dep) in &job.deps {
            let outcome = tokio::select! {
                o = dep.slot.wait_async() => o,
                _ = job.slot.cancel.cancelled() => return Some(TaskError::Cancelled),
            };
            if let Err(cause) = outcome.as_ref() {
                return Some(TaskError::dependency_failed(
                    input,
                    &dep.slot.name,
                    &dep.slot.key,
                    cause,
                ));
            }
        }
        None
    }

    /// Before a task is submitted: removes what an earlier run of it left (a failed result,
    /// a command's exit file), which the poller would otherwise take for the new job's (a
    /// finished result stays: no failure may replace it); where the jobs run elsewhere, sends
    /// the task file and the results of its finished inputs.
    async fn ship_task(&self, job: &Job) -> Result<(), TaskError> {
        let paths = &job.paths;
        let mut stale = vec![paths.exit_file()];
        if paths.finished_result().is_none() {
            stale.push(paths.result_file());
        }
        // Here through the task directory's checked handle (never through a link).
        paths.remove_exit_file();
        if paths.finished_result().is_none() {
            paths.clear_failed_attempt(1);
        }
        if !self.transport.is_remote() {
            return Ok(());
        }
        self.transport.remove(&stale).await;
        let mut files = vec![paths.task_file()];
        // The inputs' results the worker reads, those that exist here (inputs still running
        // write theirs where the jobs run).
        if let TaskKind::Function { args, .. } = &job.spec.kind {
            for arg in args {
                if let ArgSlot::Ref { key, .. } = arg {
                    let result = self.store.task(key).result_file();
                    if result.exists() && !files.contains(&result) {
                        files.push(result);
                    }
                }
            }
        }
        self.transport
            .upload(&files, true)
            .await
            .map_err(|e| TaskError::Launch {
                what: "the task's files".into(),
                kind: LaunchErrorKind::Other,
                detail: e.to_string(),
            })
    }

    /// Hands the task to the poller and waits for its end, a cancel, or a failed input.
    async fn watch(&self, job: &Job, job_ref: JobRef, reattached: bool) -> WatchEnd {
        (job.started)(Some(job_ref.to_string()));
        let (tx, rx) = oneshot::channel();
        self.watches.lock().unwrap().insert(
            job.spec.key,
            Watch::new(
                job_ref,
                job.paths.clone(),
                job.spec.clone(),
                reattached,
                job.resources.run_time_max,
                tx,
            ),
        );
        self.poke.notify_one();
        let failed_input = async {
            for (input, dep) in &job.deps {
                let outcome = dep.slot.wait_async().await;
                if let Err(cause) = outcome.as_ref() {
                    return TaskError::dependency_failed(
                        input,
                        &dep.slot.name,
                        &dep.slot.key,
                        cause,
                    );
                }
            }
            std::future::pending().await
        };
        // An input still unresolved while this job cannot run is being retried.
        let input_retried = || job.deps.iter().any(|(_, dep)| dep.slot.outcome().is_none());
        let interrupted = tokio::select! {
            end = rx => return match end.unwrap_or(WatchEnd::Lost) {
                WatchEnd::Stuck(_) if input_retried() => WatchEnd::Resubmit,
                WatchEnd::Stuck(reason) => WatchEnd::Done(job.paths.publish_result(ResultRecord {
                    outcome: Err(TaskError::Rejected {
                        backend: self.scheduler.dialect.name().into(),
                        reason,
                    }),
                })),
                // Flux ends a job whose `afterok` input failed (an exception): it never ran.
                WatchEnd::Done(ResultRecord { outcome: Err(TaskError::Scheduler { .. }) })
                    if !reattached && input_retried() =>
                {
                    WatchEnd::Resubmit
                }
                end => end,
            },
            _ = job.slot.cancel.cancelled() => TaskError::Cancelled,
            e = failed_input => e,
        };
        self.watches.lock().unwrap().remove(&job.spec.key);
        self.cancel(job_ref).await;
        WatchEnd::Done(job.paths.publish_result(ResultRecord {
            outcome: Err(interrupted),
        }))
    }
}

impl Queue {
    /// Cancels a job; cancels requested close together go out as one call.
    async fn cancel(&self, job: JobRef) {
        let (tx, rx) = oneshot::channel();
        let first = {
            let mut queue = self.cancels.lock().unwrap();
            queue.push((job, tx));
            queue.len() == 1
        };
        if first {
            tokio::time::sleep(self.cfg.batch_window).await;
            let batch: Vec<(JobRef, oneshot::Sender<()>)> =
                std::mem::take(&mut *self.cancels.lock().unwrap());
            for chunk in batch.chunks(500) {
                let jobs: Vec<JobRef> = chunk.iter().map(|(j, _)| *j).collect();
                if let Err(e) = self.scheduler.client.cancel(&jobs).await {
                    self.warn(format!("cancelling jobs failed: {e}"));
                }
            }
            for (_, tx) in batch {
                let _ = tx.send(());
            }
        }
        let _ = rx.await;
    }
}

fn refused_dependency(e: &TaskError, job: &Job) -> bool {
    !job.deps.is_empty()
        && matches!(e, TaskError::Rejected { reason, .. }
            if reason.to_ascii_lowercase().contains("dependency"))
}

/// The job name every job of the cache directory `root` carries: squeue filters on it, and
/// reruns on the same cache directory share it.
pub(crate) fn job_name_for(root: &Path) -> String {
    let hash = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
    format!("pitch-{}", &hash[..10])
}

impl Backend for Queue {
    fn name(&self) -> &'static str {
        self.scheduler.dialect.name()
    }

    fn check(&self, r: &Resources) -> Result<Vec<&'static str>, String> {
        let ignored = self.scheduler.dialect.check(r)?;
        match self.scheduler.client.refuses(r, r.ranks(), r.threads()) {
            Some(why) => Err(why),
            None => Ok(ignored),
        }
    }

    fn run(self: Arc<Self>, job: Job) -> BoxFuture<()> {
        let done = job.done.clone();
        let key = job.spec.key;
        // Counted from here, before the future first runs, so that no moment passes between
        // the engine's count and this one.
        let arriving = Preparing::new(&self.arriving);
        Box::pin(async move {
            let record = self.clone().run_job(job, arriving).await;
            if record.outcome.is_err() {
                // No dependent may queue behind the failed job (the task may be retried
                // as a new job).
                self.jobs.lock().unwrap().remove(&key);
                self.jobs_changed.notify_waiters();
            }
            done.finish(record);
        })
    }

    fn queues_dependencies(&self) -> bool {
        true
    }

    fn job_name(&self) -> Option<&str> {
        Some(&self.tag)
    }

    fn render(
        &self,
        spec: &crate::task::TaskSpec,
        resources: &Resources,
        paths: &crate::store::TaskPaths,
    ) -> Option<Result<String, TaskError>> {
        let exe = match &spec.kind {
            TaskKind::Function { .. } => match self.staged_exe() {
                Ok(p) => Some(self.transport.path(&p)),
                Err(e) => return Some(Err(e)),
            },
            TaskKind::Command(_) => None,
        };
        let mut header = self.header(resources, spec.ranks, spec.threads);
        header.output = self.job_log(false);
        let warned = resources.checkpoint_grace.is_some();
        header.command = self.task_body(spec, paths, exe.as_deref(), warned);
        Some(self.script_text(&header))
    }

    fn drop_policy(&self) -> DropPolicy {
        DropPolicy::Detach
    }

    fn close(&self, _wait: bool) {
        // The SSH connection to a login node ends with the executor.
        self.transport.close();
    }

    fn attach(&self, events: Events, preparing: Arc<AtomicUsize>) {
        let _ = self.events.set(events);
        let _ = self.preparing.set(preparing);
    }

    fn taken_over(&self, _key: &TaskKey, since: std::time::Instant) {
        // Into the earlier runs' jobs, where a task looks for a job to re-attach to.
        self.journal
            .reload_since(since, &self.journaled, &self.packs);
    }
}
