//! The [`Executor`] facade — one concrete type whatever the backend, so that moving from a
//! laptop to a cluster is a one-line change of constructor — and the builders named after
//! executorlib's classes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::single_node::{Launcher, SingleNode};
use crate::backend::slurm::{Slurm, SlurmConfig};
use crate::backend::{Backend, DropPolicy};
use crate::command::{Command, CommandOutput};
use crate::engine::{Engine, SubmitOptions};
use crate::error::Error;
use crate::event::{EventKind, Events, Reporter};
use crate::future::{Arg, ArgSource, TaskFuture};
use crate::report::ProgressReporter;
use crate::resources::Resources;
use crate::store::Store;

/// How [`Executor::shutdown`] treats tasks that have not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Wait for every submitted task to finish (executorlib's `with` block).
    Wait,
    /// Cancel every unfinished task (kill local processes, scancel jobs), then wait for the
    /// cancellations to settle.
    Cancel,
    /// Return at once. Local tasks keep running until the process exits; queued jobs keep
    /// running and their results appear in the cache directory for the next run.
    Detach,
}

/// Counts of a run, returned by [`Executor::shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Tasks that finished with a value (including cached ones).
    pub succeeded: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// Tasks resolved from the cache without running.
    pub cached: u64,
    /// Tasks still unresolved (only after [`Shutdown::Detach`]).
    pub unfinished: u64,
}

/// Owns the runtime; dropping the last handle applies the backend's drop policy.
struct Inner {
    engine: Arc<Engine>,
    runtime: Option<tokio::runtime::Runtime>,
    shut: AtomicBool,
}

impl Inner {
    fn shutdown(&self, mode: Shutdown) -> RunSummary {
        match mode {
            Shutdown::Wait => self.engine.wait_idle(),
            Shutdown::Cancel => {
                self.engine.cancel_all();
                self.engine.wait_idle();
            }
            Shutdown::Detach => {}
        }
        let counts = &self.engine.counts;
        let summary = RunSummary {
            succeeded: counts.succeeded.load(Ordering::Relaxed),
            failed: counts.failed.load(Ordering::Relaxed),
            cached: counts.cached.load(Ordering::Relaxed),
            unfinished: self.engine.pending(),
        };
        if !self.shut.swap(true, Ordering::SeqCst) {
            self.engine.events.emit(EventKind::RunFinished {
                succeeded: summary.succeeded,
                failed: summary.failed,
                cached: summary.cached,
            });
        }
        summary
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.shut.load(Ordering::SeqCst) {
            let mode = match self.engine.backend.drop_policy() {
                DropPolicy::Wait => Shutdown::Wait,
                DropPolicy::Detach => Shutdown::Detach,
            };
            if mode == Shutdown::Detach && self.engine.pending() > 0 {
                self.engine.events.emit(EventKind::Warning {
                    message: format!(
                        "{} tasks are still queued or running; their results will appear in {}",
                        self.engine.pending(),
                        self.engine.store.root().display()
                    ),
                });
            }
            self.shutdown(mode);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs tasks somewhere: local processes, Slurm jobs, srun steps or Flux jobs. Cloning is
/// cheap; clones share the backend, the cache and the running tasks.
///
/// Build one with [`SingleNodeExecutor::builder`] (and, for clusters, the other backends'
/// builders); then submit registered functions (`my_task::submit(&exe, ..)`, see
/// [`task!`](crate::task!)) or commands ([`Executor::submit_command`]).
///
/// Dropping the last handle of a local executor waits for its tasks, like executorlib's `with`
/// block; [`Executor::shutdown`] chooses explicitly.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
    opts: Arc<SubmitOptions>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("backend", &self.backend_name())
            .field("cache_directory", &self.cache_directory())
            .field("resources", &self.opts.resources)
            .finish()
    }
}

impl Executor {
    /// The backend's name ("single-node", ...).
    pub fn backend_name(&self) -> &'static str {
        self.inner.engine.backend.name()
    }

    /// The job name every scheduler job of this executor carries (`squeue -n NAME` lists
    /// them); it is derived from the cache directory, so reruns share it. `None` on SingleNode.
    pub fn job_name(&self) -> Option<String> {
        self.inner.engine.backend.job_name().map(String::from)
    }

    /// The cache directory (absolute).
    pub fn cache_directory(&self) -> PathBuf {
        self.inner.engine.store.root().to_path_buf()
    }

    /// The directory of the task with this key (see [`crate::TaskFuture::key`]): where its
    /// task and result files are, and its `stdout` and `stderr` files when the task wrote
    /// something and the command named no other file. The files appear while the task runs.
    pub fn task_directory(&self, key: &str) -> Result<PathBuf, Error> {
        let key: crate::task::TaskKey = key.parse().map_err(Error::Config)?;
        Ok(self.inner.engine.store.task(&key).dir().to_path_buf())
    }

    /// The resources tasks submitted through this handle get.
    pub fn resources(&self) -> &Resources {
        &self.opts.resources
    }

    fn with_opts(&self, f: impl FnOnce(&mut SubmitOptions)) -> Executor {
        let mut opts = (*self.opts).clone();
        f(&mut opts);
        Executor {
            inner: self.inner.clone(),
            opts: Arc::new(opts),
        }
    }

    /// A handle whose tasks get `resources` on top of this handle's (per-key override).
    /// A value the backend cannot honour fails the submitted task with
    /// [`TaskError::Rejected`](crate::TaskError::Rejected); see also [`Executor::check`].
    pub fn with_resources(&self, resources: Resources) -> Executor {
        self.with_opts(|o| o.resources = o.resources.merged(&resources))
    }

    /// A handle that switches the cache on or off for its tasks. With the cache off a task
    /// always runs, and its result is written under a fresh key.
    pub fn with_cache(&self, enabled: bool) -> Executor {
        self.with_opts(|o| o.cache = enabled)
    }

    /// A handle whose next tasks use `key` as their cache key instead of the content hash.
    /// Meant for one task at a time: two different tasks with the same key share one result.
    pub fn with_cache_key(&self, key: impl Into<String>) -> Executor {
        let key = key.into();
        self.with_opts(|o| o.cache_key = Some(key))
    }

    /// Checks `resources` (merged onto this handle's) against the backend without submitting.
    pub fn check(&self, resources: &Resources) -> Result<(), Error> {
        let merged = self.opts.resources.merged(resources);
        self.inner
            .engine
            .check_resources(&merged)
            .map_err(Error::Task)
    }

    /// Runs an external command; resolves to its [`CommandOutput`].
    pub fn submit_command(&self, command: Command) -> TaskFuture<CommandOutput> {
        self.inner.engine.submit_command(&self.opts, command)
    }

    /// Runs commands, one task each; the futures keep the input order.
    pub fn map_commands(
        &self,
        commands: impl IntoIterator<Item = Command>,
    ) -> Vec<TaskFuture<CommandOutput>> {
        commands
            .into_iter()
            .map(|c| self.submit_command(c))
            .collect()
    }

    /// The job script `command` would be submitted with, without submitting it (queue
    /// backends only).
    pub fn render_command(&self, command: Command) -> Result<String, Error> {
        self.inner
            .engine
            .render_command(&self.opts, command)
            .map_err(Error::Task)
    }

    /// Stops the executor as `mode` says and returns the run's counts.
    pub fn shutdown(&self, mode: Shutdown) -> RunSummary {
        self.inner.shutdown(mode)
    }

    #[doc(hidden)]
    pub fn __submit_function<T>(
        &self,
        name: &str,
        fingerprint: &str,
        args: Vec<ArgSource>,
        all_ranks: bool,
    ) -> TaskFuture<T> {
        self.inner
            .engine
            .submit_function(&self.opts, name, fingerprint, args, all_ranks)
    }

    /// Marks the start of a group of equal submissions (a `map`); the group ends when the
    /// returned guard drops. Queue backends turn such groups into job arrays.
    #[doc(hidden)]
    pub fn __batch(&self) -> BatchGuard {
        BatchGuard { _private: () }
    }
}

/// Returned by `Executor::__batch`.
#[doc(hidden)]
pub struct BatchGuard {
    _private: (),
}

#[doc(hidden)]
pub fn arg_source<T>(arg: Arg<T>) -> ArgSource {
    arg.source
}

/// Settings every backend's builder shares.
pub(crate) struct CommonBuilder {
    cache_directory: PathBuf,
    cache: bool,
    durable: Option<bool>,
    resources: Resources,
    reporters: Vec<Arc<dyn Reporter>>,
}

impl Default for CommonBuilder {
    fn default() -> Self {
        CommonBuilder {
            cache_directory: PathBuf::from("pitch-cache"),
            cache: true,
            durable: None,
            resources: Resources::default(),
            reporters: Vec::new(),
        }
    }
}

impl CommonBuilder {
    fn build(
        self,
        backend: impl FnOnce(&Store) -> Result<Arc<dyn Backend>, Error>,
        durable_default: bool,
    ) -> Result<Executor, Error> {
        if crate::worker::in_worker() {
            return Err(Error::InsideWorker);
        }
        crate::registry::check()?;
        self.resources.validate_basic()?;
        let store = Store::open(
            &self.cache_directory,
            self.durable.unwrap_or(durable_default),
        )?;
        let backend = backend(&store)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pitch-engine")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("could not start the engine's runtime: {e}")))?;
        let events = Events::new(self.reporters);
        let engine = Arc::new(Engine::new(
            backend,
            store,
            events,
            runtime.handle().clone(),
        ));
        engine
            .backend
            .attach(engine.events.clone(), engine.preparing.clone());
        let exe = Executor {
            inner: Arc::new(Inner {
                engine,
                runtime: Some(runtime),
                shut: AtomicBool::new(false),
            }),
            opts: Arc::new(SubmitOptions {
                resources: Resources::default(),
                cache: self.cache,
                cache_key: None,
            }),
        };
        exe.check(&self.resources)?;
        Ok(exe.with_opts(|o| o.resources = self.resources))
    }
}

macro_rules! common_builder_methods {
    () => {
        /// The cache directory (default `./pitch-cache`): task files, results, the journal.
        pub fn cache_directory(mut self, dir: impl Into<PathBuf>) -> Self {
            self.common.cache_directory = dir.into();
            self
        }

        /// Switches result caching on (default) or off for every task.
        pub fn cache(mut self, enabled: bool) -> Self {
            self.common.cache = enabled;
            self
        }

        /// Whether files are fsynced before they are renamed into place.
        pub fn durable(mut self, fsync: bool) -> Self {
            self.common.durable = Some(fsync);
            self
        }

        /// Default resources of every task.
        pub fn resources(mut self, resources: Resources) -> Self {
            self.common.resources = resources;
            self
        }

        /// Adds a reporter that receives the executor's events.
        pub fn reporter(mut self, reporter: impl Reporter + 'static) -> Self {
            self.common.reporters.push(Arc::new(reporter));
            self
        }

        /// Shows a progress bar on standard error when it is a terminal (off by default).
        pub fn progress(self, show: bool) -> Self {
            if show {
                self.reporter(ProgressReporter::new())
            } else {
                self
            }
        }
    };
}

/// Runs each task as a process on this machine, re-executing the running binary; the local
/// backend for development on a laptop or inside one allocated node.
pub struct SingleNodeExecutor;

impl SingleNodeExecutor {
    /// Starts configuring a single-node executor.
    pub fn builder() -> SingleNodeBuilder {
        SingleNodeBuilder {
            common: CommonBuilder::default(),
            max_cores: None,
            max_workers: None,
        }
    }
}

/// Configures a [`SingleNodeExecutor`].
pub struct SingleNodeBuilder {
    common: CommonBuilder,
    max_cores: Option<u32>,
    max_workers: Option<u32>,
}

impl SingleNodeBuilder {
    common_builder_methods!();

    /// Slots available to tasks (a task takes `cores x threads_per_core`). Default: the
    /// machine's available parallelism.
    pub fn max_cores(mut self, n: u32) -> Self {
        self.max_cores = Some(n);
        self
    }

    /// Tasks running at once, whatever their size. Default: no cap beyond `max_cores`.
    pub fn max_workers(mut self, n: u32) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Builds the executor; fails inside a worker process, on a zero limit, or on default
    /// resources the machine cannot honour.
    pub fn build(self) -> Result<Executor, Error> {
        let max_cores = match self.max_cores {
            Some(0) => return Err(Error::Config("max_cores must be at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        };
        if self.max_workers == Some(0) {
            return Err(Error::Config("max_workers must be at least 1".into()));
        }
        let backend = SingleNode::new(Launcher::Local, max_cores, self.max_workers)?;
        self.common.build(|_| Ok(Arc::new(backend)), false)
    }
}

/// Runs each task as a Slurm batch job (a job array for `map` and bursts of equal tasks);
/// the cluster backend. The driver runs on a login node (or inside a job); the cache directory
/// must be on storage the compute nodes share.
pub struct SlurmClusterExecutor;

impl SlurmClusterExecutor {
    /// Starts configuring a Slurm executor.
    pub fn builder() -> SlurmClusterBuilder {
        SlurmClusterBuilder {
            common: CommonBuilder::default(),
            cfg: SlurmConfig::default(),
        }
    }
}

/// Configures a [`SlurmClusterExecutor`].
pub struct SlurmClusterBuilder {
    common: CommonBuilder,
    cfg: SlurmConfig,
}

impl SlurmClusterBuilder {
    common_builder_methods!();

    /// Default partition of every task (shorthand for a resource).
    pub fn partition(mut self, partition: impl Into<String>) -> Self {
        self.common.resources = self.common.resources.partition(partition);
        self
    }

    /// Tasks this executor keeps in the queue at once (each array element holds one task,
    /// unless `tasks_per_job` packs several); sites limit jobs with MaxSubmitJobs. Default:
    /// no cap.
    pub fn max_jobs(mut self, n: u32) -> Self {
        self.cfg.max_jobs = Some(n);
        self
    }

    /// Time between two squeue calls (default 2 s); it grows up to `max_poll_interval`
    /// while nothing changes.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.cfg.poll_interval = interval;
        self
    }

    /// The longest time between two squeue calls (default 30 s).
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.cfg.max_poll_interval = interval;
        self
    }

    /// How long a job may be gone from the queue before its missing result counts as lost
    /// (NFS attribute caching can hide a new file for up to a minute). Default 30 s.
    pub fn nfs_grace(mut self, grace: Duration) -> Self {
        self.cfg.nfs_grace = grace;
        self
    }

    /// Runs at most `n` elements of each job array at once (`--array=0-N%n`).
    pub fn array_throttle(mut self, n: u32) -> Self {
        self.cfg.array_throttle = Some(n);
        self
    }

    /// Packs `k` one-rank tasks into each job-array element (default 1), so 5,400
    /// ten-second tasks need not be 5,400 Slurm jobs: the element asks for one task's CPUs
    /// and runs its `k` tasks one after another (side by side when the element has more CPUs,
    /// e.g. through `slurm_cmd_args`). Multi-rank tasks are never packed.
    pub fn tasks_per_job(mut self, k: u32) -> Self {
        self.cfg.tasks_per_job = k;
        self
    }

    /// A job script template of your own (Jinja syntax); see `templates/slurm.sh.j2`.
    pub fn template(mut self, path: impl Into<PathBuf>) -> Self {
        self.cfg.template = Some(path.into());
        self
    }

    /// Builds the executor; fails on a template that does not render and inside a worker.
    pub fn build(self) -> Result<Executor, Error> {
        if self.cfg.poll_interval.is_zero() {
            return Err(Error::Config("poll_interval must be more than zero".into()));
        }
        if self.cfg.tasks_per_job == 0 {
            return Err(Error::Config("tasks_per_job must be at least 1".into()));
        }
        if self.cfg.max_jobs == Some(0) {
            return Err(Error::Config("max_jobs must be at least 1".into()));
        }
        let cfg = self.cfg;
        self.common
            .build(|store| Ok(Arc::new(Slurm::new(cfg, store)?)), true)
    }
}

/// Runs each task as an `srun --exact` job step inside the Slurm allocation the driver runs
/// in (an sbatch script or salloc): executorlib's SlurmJobExecutor. Steps start at once, with
/// no queueing and no polling; at most as many run together as the allocation's CPUs allow.
pub struct SlurmJobExecutor;

impl SlurmJobExecutor {
    /// Starts configuring an executor for the current allocation.
    pub fn builder() -> SlurmJobBuilder {
        SlurmJobBuilder {
            common: CommonBuilder::default(),
            max_cores: None,
            max_workers: None,
        }
    }
}

/// Configures a [`SlurmJobExecutor`].
pub struct SlurmJobBuilder {
    common: CommonBuilder,
    max_cores: Option<u32>,
    max_workers: Option<u32>,
}

/// Total CPUs of an allocation from `SLURM_JOB_CPUS_PER_NODE` ("4(x2),2" means 4+4+2).
pub(crate) fn allocation_cpus(text: &str) -> Option<u32> {
    let mut total = 0u32;
    for part in text.split(',') {
        let (cpus, times) = match part.split_once("(x") {
            Some((c, t)) => (c, t.trim_end_matches(')')),
            None => (part, "1"),
        };
        total = total.checked_add(
            cpus.trim()
                .parse::<u32>()
                .ok()?
                .checked_mul(times.parse().ok()?)?,
        )?;
    }
    Some(total)
}

impl SlurmJobBuilder {
    common_builder_methods!();

    /// Slots to use, at most the allocation's CPUs (default: all of them).
    pub fn max_cores(mut self, n: u32) -> Self {
        self.max_cores = Some(n);
        self
    }

    /// Steps running at once, whatever their size.
    pub fn max_workers(mut self, n: u32) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Builds the executor; fails outside a Slurm allocation.
    pub fn build(self) -> Result<Executor, Error> {
        let outside = || {
            Error::Config(
                "SlurmJobExecutor runs inside a Slurm allocation (an sbatch script or salloc), \
                 but SLURM_JOB_ID is not set; use SlurmClusterExecutor to submit jobs instead"
                    .into(),
            )
        };
        std::env::var("SLURM_JOB_ID").map_err(|_| outside())?;
        let cpus_text = std::env::var("SLURM_JOB_CPUS_PER_NODE").map_err(|_| outside())?;
        let cpus = allocation_cpus(&cpus_text).ok_or_else(|| {
            Error::Config(format!(
                "cannot read the allocation's CPUs from SLURM_JOB_CPUS_PER_NODE={cpus_text:?}"
            ))
        })?;
        let nodes = std::env::var("SLURM_JOB_NUM_NODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let max_cores = match self.max_cores {
            Some(0) => return Err(Error::Config("max_cores must be at least 1".into())),
            Some(n) if n > cpus => {
                return Err(Error::Config(format!(
                    "max_cores = {n} but the allocation has {cpus} CPUs"
                )))
            }
            Some(n) => n,
            None => cpus,
        };
        if self.max_workers == Some(0) {
            return Err(Error::Config("max_workers must be at least 1".into()));
        }
        let backend = SingleNode::new(Launcher::Srun { nodes }, max_cores, self.max_workers)?;
        self.common.build(|_| Ok(Arc::new(backend)), true)
    }
}

impl Executor {
    /// Builds the executor a profile of `pitch.toml` describes (the file in the current
    /// directory, else in the user's config directory): a config change is the whole swap.
    pub fn from_profile(name: &str) -> Result<Executor, Error> {
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        let profile =
            crate::profile::load_named(name, &cwd).map_err(|e| Error::Config(e.to_string()))?;
        Executor::from_settings(&profile, Vec::new())
    }

    /// Builds the executor named by `PITCH_PROFILE`, or a default SingleNode executor when it
    /// is not set.
    pub fn from_env() -> Result<Executor, Error> {
        match std::env::var("PITCH_PROFILE") {
            Ok(name) if !name.is_empty() => Executor::from_profile(&name),
            _ => SingleNodeExecutor::builder().build(),
        }
    }

    /// Builds an executor from a profile's settings (the CLI's flags are applied to the
    /// profile first).
    #[doc(hidden)]
    pub fn from_settings(
        p: &crate::profile::Profile,
        reporters: Vec<Arc<dyn Reporter>>,
    ) -> Result<Executor, Error> {
        use crate::profile::BackendKind;
        let mut common = CommonBuilder {
            resources: p.resources.clone(),
            reporters,
            ..CommonBuilder::default()
        };
        if let Some(dir) = &p.cache_directory {
            common.cache_directory = dir.clone();
        }
        let ignored = |what: &str| {
            Error::Config(format!(
                "{what} does not apply to the {} backend (profile {:?})",
                p.backend, p.name
            ))
        };
        match p.backend {
            BackendKind::SingleNode | BackendKind::SlurmJob => {
                if p.max_jobs.is_some() {
                    return Err(ignored("max_jobs"));
                }
                if p.tasks_per_job.is_some() {
                    return Err(ignored("tasks_per_job"));
                }
                if p.template.is_some() {
                    return Err(ignored("template"));
                }
                if p.backend == BackendKind::SingleNode {
                    let mut b = SingleNodeExecutor::builder();
                    b.common = common;
                    b.max_cores = p.max_cores;
                    b.max_workers = p.max_workers;
                    b.build()
                } else {
                    let mut b = SlurmJobExecutor::builder();
                    b.common = common;
                    b.max_cores = p.max_cores;
                    b.max_workers = p.max_workers;
                    b.build()
                }
            }
            BackendKind::Slurm => {
                if p.max_cores.is_some() {
                    return Err(ignored("max_cores"));
                }
                if p.max_workers.is_some() {
                    return Err(ignored("max_workers"));
                }
                let mut b = SlurmClusterExecutor::builder();
                b.common = common;
                b.cfg.max_jobs = p.max_jobs;
                b.cfg.tasks_per_job = p.tasks_per_job.unwrap_or(1);
                b.cfg.array_throttle = p.array_throttle;
                b.cfg.template = p.template.clone();
                if let Some(i) = p.poll_interval {
                    b.cfg.poll_interval = i;
                }
                b.build()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn allocation_cpus_reads_slurm_notation() {
        assert_eq!(super::allocation_cpus("4"), Some(4));
        assert_eq!(super::allocation_cpus("4(x2)"), Some(8));
        assert_eq!(super::allocation_cpus("4(x2),2"), Some(10));
        assert_eq!(super::allocation_cpus("x"), None);
    }
}
