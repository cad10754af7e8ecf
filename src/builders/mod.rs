//! The builders named after executorlib's classes (`SingleNodeExecutor`,
//! `SlurmClusterExecutor`, `SlurmJobExecutor`, `FluxClusterExecutor`, `FluxJobExecutor`);
//! `from_profile.rs` builds the same executors from `pitch.toml`
//! ([`Executor::from_profile`], [`Executor::from_env`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::queue::{Queue, QueueConfig};
use crate::backend::single_node::{Launcher, SingleNode};
use crate::backend::transport::{Local, Transport};
use crate::backend::Backend;
use crate::backend::{flux_instance, scheduler_for, slurm_allocation, SlurmAllocation};
use crate::error::Error;
use crate::event::Reporter;
use crate::executor::Executor;
use crate::report::ProgressReporter;
use crate::resources::Resources;
use crate::scheduler::SchedulerKind;
use crate::store::Store;

mod from_profile;

/// Settings every backend's builder shares.
pub(crate) struct CommonBuilder {
    cache_directory: PathBuf,
    cache: bool,
    durable: Option<bool>,
    trust_group: bool,
    resources: Resources,
    reporters: Vec<Arc<dyn Reporter>>,
    /// Only for rendering job scripts: create nothing (`Store::dry`).
    dry: bool,
}

impl Default for CommonBuilder {
    fn default() -> Self {
        CommonBuilder {
            cache_directory: PathBuf::from("pitch-cache"),
            cache: true,
            durable: None,
            trust_group: false,
            resources: Resources::default(),
            reporters: Vec::new(),
            dry: false,
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
        let trust = crate::trust::Policy {
            trust_group: self.trust_group,
        };
        let store = if self.dry {
            Store::dry(&self.cache_directory, trust)?
        } else {
            let durable = self.durable.unwrap_or(durable_default);
            Store::open(&self.cache_directory, durable, trust)?
        };
        // Results other processes logged since this process last looked (pooled runs,
        // `pitch gc --compact`).
        if !self.dry {
            crate::resultlog::LogSet::refreshed(store.root());
        }
        let backend = backend(&store)?;
        let exe = Executor::start(backend, store, self.reporters, self.cache)?;
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

        /// Trusts the members of the group of the cache directory and of the directories
        /// above it (off by default): a group-writable directory there is accepted instead of
        /// refused. Any member of the group can then replace the cache's files and results
        /// and so run code as you: use it only for a project folder shared with people you
        /// trust. A directory owned by another user is refused either way (see the README's
        /// "Security model").
        pub fn trust_group(mut self, trust: bool) -> Self {
            self.common.trust_group = trust;
            self
        }

        /// Switches result caching on (default) or off for every task.
        pub fn cache(mut self, enabled: bool) -> Self {
            self.common.cache = enabled;
            self
        }

        /// How many times a task is submitted again after a failure it did not cause (its job
        /// preempted, its node or boot failed, its worker or pilot lost, its job gone without a
        /// result) or one named in `retry_on`, or after it saved a checkpoint: the executor's
        /// default [`Resources::max_retries`](crate::Resources) (0, or 1 for pilot jobs);
        /// a submission's resources may override it. See the README's "Retries".
        pub fn max_retries(mut self, n: u32) -> Self {
            self.common.resources.max_retries = Some(n);
            self
        }

        /// The task's own failures retried too (panics, errors, exit codes, timeouts...):
        /// the executor's default [`Resources::retry_on`](crate::Resources).
        pub fn retry_on(mut self, kinds: impl IntoIterator<Item = crate::RetryOn>) -> Self {
            self.common.resources = std::mem::take(&mut self.common.resources).retry_on(kinds);
            self
        }

        /// Whether files are fsynced before they are renamed into place.
        pub fn durable(mut self, fsync: bool) -> Self {
            self.common.durable = Some(fsync);
            self
        }

        /// Default resources of every task. `max_retries` and `retry_on` given to the
        /// builder before stay unless `resources` sets them.
        pub fn resources(mut self, mut resources: Resources) -> Self {
            let before = std::mem::take(&mut self.common.resources);
            resources.max_retries = resources.max_retries.or(before.max_retries);
            if resources.retry_on.is_empty() {
                resources.retry_on = before.retry_on;
            }
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

/// The limits of the process backends (SingleNode, SlurmJob, FluxJob): slots and concurrent tasks.
#[derive(Default)]
struct Slots {
    max_cores: Option<u32>,
    max_workers: Option<u32>,
}

impl Slots {
    /// `(max_cores, max_workers)`: the cores default to `available`; more than `cap`
    /// (named `what`) is an error, as is a zero.
    fn resolve(
        &self,
        available: u32,
        cap: Option<(u32, &str)>,
    ) -> Result<(u32, Option<u32>), Error> {
        let max_cores = match self.max_cores {
            Some(0) => return Err(Error::Config("max_cores must be at least 1".into())),
            Some(n) => match cap {
                Some((cap, what)) if n > cap => {
                    return Err(Error::Config(format!(
                        "max_cores = {n} but {what} is {cap}"
                    )))
                }
                _ => n,
            },
            None => available,
        };
        if self.max_workers == Some(0) {
            return Err(Error::Config("max_workers must be at least 1".into()));
        }
        Ok((max_cores, self.max_workers))
    }
}

macro_rules! slot_builder_methods {
    ($cores_doc:literal, $workers_doc:literal) => {
        #[doc = $cores_doc]
        pub fn max_cores(mut self, n: u32) -> Self {
            self.slots.max_cores = Some(n);
            self
        }

        #[doc = $workers_doc]
        pub fn max_workers(mut self, n: u32) -> Self {
            self.slots.max_workers = Some(n);
            self
        }
    };
}

/// `block_allocation` and `init_function` (SingleNode, SlurmJob, FluxJob).
macro_rules! pool_builder_methods {
    () => {
        /// Keeps `max_workers` worker processes alive and runs function tasks in them, one at a
        /// time each, instead of a fresh process per task (executorlib's `block_allocation`).
        /// Each worker is sized by the executor's default resources; a task asking for other
        /// `cores`, `threads_per_core`, `gpus_per_core`, `env` or `cwd` is refused with
        /// [`TaskError::Rejected`](crate::TaskError::Rejected). Commands still run as their own
        /// processes. Results go to one result log per run in the cache directory instead of a
        /// directory per task. See the README's "Persistent workers".
        pub fn block_allocation(mut self, enabled: bool) -> Self {
            self.pool.block_allocation = enabled;
            self
        }

        /// A registered function run once in each worker when it starts (needs
        /// `block_allocation`): `my_task::init(args..)`. Tasks read its value with
        /// [`worker_state`](crate::worker_state). It runs again in a worker that replaces one
        /// that died or was killed.
        pub fn init_function(mut self, init: crate::InitFunction) -> Self {
            self.pool.init = Some(init);
            self
        }
    };
}

/// Runs each task as a process on this machine, re-executing the running binary; the local
/// backend for development on a laptop or inside one allocated node.
///
/// A task's process gets the driver's environment as it is when the task starts, plus the
/// thread variables and [`Resources::env`](crate::Resources::env) (and a command's own
/// variables). Set variables for tasks there: changing the process environment with
/// `std::env::set_var` while tasks start is a data race with every reader of the environment
/// (the reason Rust 2024 makes it `unsafe`).
pub struct SingleNodeExecutor;

impl SingleNodeExecutor {
    /// Starts configuring a single-node executor.
    pub fn builder() -> SingleNodeBuilder {
        SingleNodeBuilder {
            common: CommonBuilder::default(),
            slots: Slots::default(),
            pool: PoolSettings::default(),
        }
    }
}

/// Configures a [`SingleNodeExecutor`].
pub struct SingleNodeBuilder {
    common: CommonBuilder,
    slots: Slots,
    pool: PoolSettings,
}

/// `block_allocation` and what goes with it (SingleNode).
#[derive(Default)]
pub(crate) struct PoolSettings {
    pub block_allocation: bool,
    pub init: Option<crate::InitFunction>,
}

impl SingleNodeBuilder {
    common_builder_methods!();
    slot_builder_methods!(
        "Slots available to tasks (a task takes `cores x threads_per_core`). Default: the \
         machine's available parallelism.",
        "Tasks running at once, whatever their size. Default: no cap beyond `max_cores`."
    );

    pool_builder_methods!();

    /// Builds the executor; fails inside a worker process, on a zero limit, or on default
    /// resources the machine cannot honour.
    pub fn build(self) -> Result<Executor, Error> {
        let machine = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let (max_cores, max_workers) = self.slots.resolve(machine, None)?;
        let backend = SingleNode::new(Launcher::Local, max_cores, max_workers)?;
        build_process(
            self.common,
            &self.pool,
            backend,
            max_cores,
            max_workers,
            "max_cores",
            false,
        )
    }
}

/// Builds a process backend's executor: `backend` as it is, or a pool of persistent workers
/// around it when `pool` asks for `block_allocation`.
fn build_process(
    common: CommonBuilder,
    pool: &PoolSettings,
    backend: SingleNode,
    max_cores: u32,
    max_workers: Option<u32>,
    cores_name: &str,
    durable: bool,
) -> Result<Executor, Error> {
    if !pool.block_allocation {
        if pool.init.is_some() {
            return Err(Error::Config(
                "init_function needs block_allocation(true): without it every task is a \
                 fresh process"
                    .into(),
            ));
        }
        return common.build(|_| Ok(Arc::new(backend)), durable);
    }
    let cfg = pool_config(pool, &common, max_cores, max_workers, cores_name)?;
    common.build(
        |store| {
            Ok(Arc::new(crate::backend::workers::Pooled::new(
                backend, store, cfg,
            )?))
        },
        durable,
    )
}

/// The pool of a `block_allocation` executor: how many workers, their init function, retries.
fn pool_config(
    pool: &PoolSettings,
    common: &CommonBuilder,
    max_cores: u32,
    max_workers: Option<u32>,
    cores_name: &str,
) -> Result<crate::backend::workers::PoolConfig, Error> {
    let defaults = common.resources.clone();
    defaults.validate_basic()?;
    let slots = defaults.slots();
    let workers = max_workers.unwrap_or((max_cores / slots.max(1)).max(1));
    if u64::from(workers) * u64::from(slots) > u64::from(max_cores) {
        return Err(Error::Config(format!(
            "block_allocation: {workers} workers of {slots} slots each (cores x \
             threads_per_core) need {} slots, more than {cores_name} = {max_cores}",
            u64::from(workers) * u64::from(slots)
        )));
    }
    Ok(crate::backend::workers::PoolConfig {
        workers,
        init: init_call(pool)?,
        defaults,
        log: common.cache,
    })
}

/// `block_allocation` on a queue backend: elastic pilot jobs.
#[derive(Default)]
pub(crate) struct PilotSettings {
    pub pool: PoolSettings,
    pub max_workers: Option<u32>,
    pub min_workers: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub address: Option<String>,
}

/// `block_allocation` and its settings on the queue backends (SlurmCluster, FluxCluster).
macro_rules! pilot_builder_methods {
    ($array:literal) => {
        /// Runs function tasks in pilot jobs instead of one scheduler job each
        /// (executorlib's `block_allocation` on its cluster executors): the executor submits
        /// pilots as the backlog needs them, up to `max_workers`,
        #[doc = $array]
        /// Each pilot is sized by the executor's default resources (cores must be 1; threads,
        /// GPUs, memory, partition, account, qos as given), its `run_time_max` is the
        /// pilot's wall time; a pilot connects back to the driver over TCP (see
        /// `pilot_address`), runs tasks one at a time, and leaves after `idle_timeout`
        /// without work. Commands still run as their own jobs. Results go to the result log.
        /// See the README's "Pilot jobs".
        pub fn block_allocation(mut self, enabled: bool) -> Self {
            self.pilots.pool.block_allocation = enabled;
            self
        }

        /// Pilot jobs at most at once (needs `block_allocation`); default 1.
        pub fn max_workers(mut self, n: u32) -> Self {
            self.pilots.max_workers = Some(n);
            self
        }

        /// Pilot jobs kept once work came, even idle, until the executor closes (needs
        /// `block_allocation`); default 0.
        pub fn min_workers(mut self, n: u32) -> Self {
            self.pilots.min_workers = Some(n);
            self
        }

        /// How long a pilot waits without work before it leaves (needs `block_allocation`);
        /// default 60 s. A pilot whose driver is gone leaves within this time too.
        pub fn idle_timeout(mut self, timeout: Duration) -> Self {
            self.pilots.idle_timeout = Some(timeout);
            self
        }

        /// The address the pilots connect to: `host` or `host:port` (needs
        /// `block_allocation`). Default: this host's name and a free port. The driver
        /// listens there; with remote submission (`remote`, over SSH) the pilots' relay on the
        /// login node does (default: the login node's host name), and the driver listens on
        /// its own loopback for the relay's connections, which come over SSH.
        pub fn pilot_address(mut self, address: impl Into<String>) -> Self {
            self.pilots.address = Some(address.into());
            self
        }

        /// A registered function run once in each pilot when it connects (needs
        /// `block_allocation`): `my_task::init(args..)`; tasks read its value with
        /// [`worker_state`](crate::worker_state).
        pub fn init_function(mut self, init: crate::InitFunction) -> Self {
            self.pilots.pool.init = Some(init);
            self
        }
    };
}

/// The settings of the queue backends (Slurm, Flux): `$query` names the scheduler's queue
/// query, `$template` the built-in template.
macro_rules! queue_builder_methods {
    ($query:literal, $template:literal) => {
        /// Tasks this executor keeps in the queue at once (each array element or job holds
        /// one task, unless `tasks_per_job` packs several); sites limit the jobs a user may
        /// queue. Default: no cap.
        pub fn max_jobs(mut self, n: u32) -> Self {
            self.cfg.max_jobs = Some(n);
            self
        }

        #[doc = concat!("Time between two ", $query, " calls (default 2 s); it grows up to")]
        /// `max_poll_interval` while nothing changes.
        pub fn poll_interval(mut self, interval: Duration) -> Self {
            self.cfg.poll_interval = interval;
            self
        }

        #[doc = concat!("The longest time between two ", $query, " calls (default 30 s).")]
        pub fn max_poll_interval(mut self, interval: Duration) -> Self {
            self.cfg.max_poll_interval = interval;
            self
        }

        /// How long a job may be gone from the queue before its missing result counts as
        /// lost (NFS attribute caching can hide a new file for up to a minute). Default 30 s.
        pub fn nfs_grace(mut self, grace: Duration) -> Self {
            self.cfg.nfs_grace = grace;
            self
        }

        /// Packs `k` one-rank tasks into each job (array element) (default 1), so 5,400
        /// ten-second tasks need not be 5,400 jobs: the job asks for one task's CPUs and
        /// runs its `k` tasks one after another (side by side when a Slurm element gets more
        /// CPUs, e.g. through `slurm_cmd_args`). Multi-rank tasks are never packed.
        pub fn tasks_per_job(mut self, k: u32) -> Self {
            self.cfg.tasks_per_job = k;
            self
        }

        /// Submits from here to a login node over SSH (feature `remote`): scheduler commands
        /// run there, task files and the worker binary go up by SFTP into the remote cache
        /// directory, results come back when their jobs end. See [`crate::Remote`].
        #[cfg(feature = "remote")]
        pub fn remote(mut self, remote: crate::Remote) -> Self {
            self.remote = Some(remote);
            self
        }

        #[doc = concat!("A job script template of your own (Jinja syntax); see `", $template, "`.")]
        pub fn template(mut self, path: impl Into<PathBuf>) -> Self {
            self.cfg.template = Some(path.into());
            self
        }
    };
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
            cfg: QueueConfig::default(),
            remote: None,
            pilots: PilotSettings::default(),
        }
    }
}

/// Configures a [`SlurmClusterExecutor`].
pub struct SlurmClusterBuilder {
    common: CommonBuilder,
    cfg: QueueConfig,
    remote: RemoteSetting,
    pilots: PilotSettings,
}

impl SlurmClusterBuilder {
    common_builder_methods!();

    /// Default partition of every task (shorthand for a resource).
    pub fn partition(mut self, partition: impl Into<String>) -> Self {
        self.common.resources = self.common.resources.partition(partition);
        self
    }

    queue_builder_methods!("squeue", "templates/slurm.sh.j2");
    pilot_builder_methods!("one job array per submission (rendered from the job script template).");

    /// Runs at most `n` elements of each job array at once (`--array=0-N%n`).
    pub fn array_throttle(mut self, n: u32) -> Self {
        self.cfg.array_throttle = Some(n);
        self
    }

    /// Builds the executor; fails on a template that does not render and inside a worker.
    pub fn build(self) -> Result<Executor, Error> {
        build_queue(
            self.common,
            self.cfg,
            self.remote,
            SchedulerKind::Slurm,
            self.pilots,
        )
    }
}

/// How a queue executor reaches its scheduler: `None` here, or a login node over SSH.
#[cfg(feature = "remote")]
type RemoteSetting = Option<crate::Remote>;
#[cfg(not(feature = "remote"))]
type RemoteSetting = Option<std::convert::Infallible>;

/// Builds a queue executor for the scheduler `scheduler`; fails on a zero setting, on a
/// template that does not render, on a login node it cannot reach and inside a worker.
fn build_queue(
    common: CommonBuilder,
    cfg: QueueConfig,
    remote: RemoteSetting,
    scheduler: SchedulerKind,
    pilots: PilotSettings,
) -> Result<Executor, Error> {
    let mut common = common;
    if pilots.pool.block_allocation && common.resources.max_retries.is_none() {
        // A pilot lost under its task (cancelled, its node lost) costs the task one retry.
        common.resources.max_retries = Some(1);
    }
    let pilots = pilot_config(&pilots, &common, &cfg)?;
    if cfg.poll_interval.is_zero() {
        return Err(Error::Config("poll_interval must be more than zero".into()));
    }
    if cfg.tasks_per_job == 0 {
        return Err(Error::Config("tasks_per_job must be at least 1".into()));
    }
    if cfg.max_jobs == Some(0) {
        return Err(Error::Config("max_jobs must be at least 1".into()));
    }
    #[cfg_attr(not(feature = "remote"), allow(unused_variables))]
    let dry = common.dry;
    common.build(
        |store| {
            let transport: Arc<dyn Transport> = match remote {
                // `pitch render` shows the jobs' paths there without logging in.
                #[cfg(feature = "remote")]
                Some(r) if dry => Arc::new(r.offline(store.root())),
                #[cfg(feature = "remote")]
                Some(r) => crate::backend::transport::connect(
                    r,
                    store.root(),
                    store.durable(),
                    store.trust(),
                    true,
                )?,
                #[cfg(not(feature = "remote"))]
                Some(never) => match never {},
                None => Arc::new(Local),
            };
            // Flux reads `{{...}}` in a job's --output as a placeholder and has no escape for
            // it: such a cache path would put the jobs' logs elsewhere, or fail the jobs.
            let seen = transport.path(store.root());
            if scheduler == SchedulerKind::Flux && seen.to_string_lossy().contains("{{") {
                return Err(Error::Config(format!(
                    "the cache directory {} holds `{{{{`, which Flux reads as a placeholder in \
                     the jobs' output paths: choose a path without `{{{{`",
                    seen.display()
                )));
            }
            // Slurm reads an --output value holding a backslash as no pattern at all: every
            // job of the cache would write one log file with no job id in its name.
            if scheduler == SchedulerKind::Slurm && seen.to_string_lossy().contains('\\') {
                return Err(Error::Config(format!(
                    "the cache directory {} holds a backslash, which makes Slurm take the \
                     jobs' output paths literally (one log file for every job, no job id in \
                     its name): choose a path without `\\`",
                    seen.display()
                )));
            }
            let scheduler = scheduler_for(scheduler, transport.clone());
            let queue = Queue::new(scheduler, transport, cfg, store)?;
            Ok(match pilots {
                Some(p) => Arc::new(crate::backend::workers::pilot::Pilots::new(
                    queue, store, p,
                )?),
                None => Arc::new(queue),
            })
        },
        true,
    )
}

/// The pilots of a queue executor with `block_allocation`; `None` without it (then no pilot
/// setting may be given).
fn pilot_config(
    p: &PilotSettings,
    common: &CommonBuilder,
    cfg: &QueueConfig,
) -> Result<Option<crate::backend::workers::pilot::PilotConfig>, Error> {
    if !p.pool.block_allocation {
        let given = [
            (p.pool.init.is_some(), "init_function"),
            (p.max_workers.is_some(), "max_workers"),
            (p.min_workers.is_some(), "min_workers"),
            (p.idle_timeout.is_some(), "idle_timeout"),
            (p.address.is_some(), "pilot_address"),
        ];
        if let Some((_, name)) = given.iter().find(|(set, _)| *set) {
            return Err(Error::Config(format!(
                "{name} applies to pilot jobs and needs block_allocation(true): without it \
                 every task is a scheduler job of its own"
            )));
        }
        return Ok(None);
    }
    if let Some(address) = &p.address {
        crate::backend::workers::pilot::split_address(address).map_err(Error::Config)?;
    }
    let defaults = common.resources.clone();
    defaults.validate_basic()?;
    let max_workers = p.max_workers.unwrap_or(1);
    if max_workers == 0 {
        return Err(Error::Config("max_workers must be at least 1".into()));
    }
    let min_workers = p.min_workers.unwrap_or(0);
    if min_workers > max_workers {
        return Err(Error::Config(format!(
            "min_workers = {min_workers} is more than max_workers = {max_workers}"
        )));
    }
    let idle_timeout = p
        .idle_timeout
        .unwrap_or(crate::backend::workers::pilot::DEFAULT_IDLE_TIMEOUT);
    if idle_timeout < Duration::from_secs(1) {
        return Err(Error::Config(format!(
            "idle_timeout = {idle_timeout:?}: a pilot needs at least 1 s"
        )));
    }
    if let Some(wall) = defaults.run_time_max {
        let margin = crate::backend::workers::pilot::MARGIN;
        if wall <= margin {
            return Err(Error::Config(format!(
                "block_allocation: the pilots' wall time (run_time_max = {wall:?}) must be \
                 more than {margin:?}"
            )));
        }
    }
    Ok(Some(crate::backend::workers::pilot::PilotConfig {
        max_workers,
        min_workers,
        idle_timeout,
        address: p.address.clone(),
        init: init_call(&p.pool)?,
        defaults,
        log: common.cache,
        poll_interval: cfg.poll_interval,
    }))
}

/// The pool's init function, checked against the registry.
fn init_call(
    pool: &PoolSettings,
) -> Result<Option<crate::backend::workers::protocol::InitCall>, Error> {
    match &pool.init {
        None => Ok(None),
        Some(f) => {
            let call = f
                .call
                .clone()
                .map_err(|e| Error::Config(format!("init_function: {e}")))?;
            crate::worker::registered(&call.name, &call.fingerprint)
                .map_err(|e| Error::Config(format!("init_function: {e}")))?;
            Ok(Some(call))
        }
    }
}

/// Runs each task as a Flux batch job (`flux batch`: a Flux instance of its own, where
/// multi-rank tasks start with `flux run`); executorlib's FluxClusterExecutor. The driver
/// runs where `flux` reaches the instance to submit to (a login node of a Flux-run cluster,
/// or inside a Flux allocation); the cache directory must be on storage the compute nodes
/// share. Flux has no job arrays for batch jobs: each task, or each pack of
/// `tasks_per_job` one-rank tasks, is one `flux batch` call.
///
/// `partition` becomes the Flux queue (`--queue`), `account` the flux-accounting bank
/// (`--bank`), `run_time_max` the time limit; `memory_max`, `qos` and `slurm_cmd_args` mean
/// nothing to Flux and are reported as warnings (put Flux options of your own in a template).
pub struct FluxClusterExecutor;

impl FluxClusterExecutor {
    /// Starts configuring a Flux executor.
    pub fn builder() -> FluxClusterBuilder {
        FluxClusterBuilder {
            common: CommonBuilder::default(),
            cfg: QueueConfig::default(),
            remote: None,
            pilots: PilotSettings::default(),
        }
    }
}

/// Configures a [`FluxClusterExecutor`].
pub struct FluxClusterBuilder {
    common: CommonBuilder,
    cfg: QueueConfig,
    remote: RemoteSetting,
    pilots: PilotSettings,
}

impl FluxClusterBuilder {
    common_builder_methods!();
    queue_builder_methods!("flux jobs", "templates/flux.sh.j2");
    pilot_builder_methods!("one `flux batch` each (Flux has no arrays of batch jobs).");

    /// Default Flux queue of every task (the `partition` resource).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.common.resources = self.common.resources.partition(queue);
        self
    }

    /// Builds the executor; fails on a template that does not render and inside a worker.
    pub fn build(self) -> Result<Executor, Error> {
        build_queue(
            self.common,
            self.cfg,
            self.remote,
            SchedulerKind::Flux,
            self.pilots,
        )
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
            slots: Slots::default(),
            pool: PoolSettings::default(),
        }
    }
}

/// Configures a [`SlurmJobExecutor`].
pub struct SlurmJobBuilder {
    common: CommonBuilder,
    slots: Slots,
    pool: PoolSettings,
}

impl SlurmJobBuilder {
    common_builder_methods!();
    slot_builder_methods!(
        "Slots to use, at most the allocation's CPUs (default: all of them).",
        "Steps running at once, whatever their size."
    );
    pool_builder_methods!();

    /// Builds the executor; fails outside a Slurm allocation.
    pub fn build(self) -> Result<Executor, Error> {
        let SlurmAllocation { cpus, nodes } = slurm_allocation()?;
        let (max_cores, max_workers) = self
            .slots
            .resolve(cpus, Some((cpus, "the allocation's CPU count")))?;
        let backend = SingleNode::new(Launcher::Srun { nodes }, max_cores, max_workers)?;
        build_process(
            self.common,
            &self.pool,
            backend,
            max_cores,
            max_workers,
            "the allocation's CPUs (or max_cores)",
            true,
        )
    }
}

/// How many times its cores' worth of tasks FluxJobExecutor keeps submitted to Flux at once
/// (when its cores are all the instance's): the jobs beyond the cores wait in Flux's queue, so
/// a core that frees up starts the next job at once, without a submission in between.
const FLUX_QUEUE_AHEAD: u32 = 2;

/// How FluxJobExecutor submits its tasks' jobs: through libflux (`true`) unless
/// `PITCH_FLUX_SUBMIT=flux-run` asks for `flux run`, or libflux cannot be used: then why,
/// for a warning event.
fn flux_submission() -> Result<(bool, Option<String>), Error> {
    const VAR: &str = "PITCH_FLUX_SUBMIT";
    match std::env::var(VAR).as_deref() {
        Ok("flux-run") => {
            tracing::info!("{VAR}=flux-run: each task is a `flux run` process");
            Ok((false, None))
        }
        Ok("native") | Ok("") | Err(std::env::VarError::NotPresent) => {
            match crate::backend::flux::native::probe() {
                Ok(()) => Ok((true, None)),
                Err(why) => Ok((
                    false,
                    Some(format!(
                        "jobs are submitted with one `flux run` process per task (slower): \
                         libflux cannot be used: {why}"
                    )),
                )),
            }
        }
        Ok(other) => Err(Error::Config(format!(
            "{VAR}={other:?}: expected \"native\" (the default: libflux, else flux run) or \
             \"flux-run\""
        ))),
        Err(std::env::VarError::NotUnicode(v)) => Err(Error::Config(format!(
            "{VAR}={v:?}: expected \"native\" or \"flux-run\""
        ))),
    }
}

/// Runs each task as a Flux job inside the Flux instance the driver runs in (a `flux alloc`
/// or `flux batch` job, or a `flux start` instance): executorlib's FluxJobExecutor. Each task
/// is submitted through flux-core's C API (`libflux-core.so.2`, loaded at run time from next
/// to the `flux` on PATH): one thread per running task sleeps until Flux says the job ended
/// (no polling, no process per task); at most as many run together as the instance's cores
/// (or `max_cores`) allow. Where libflux cannot be loaded (`PITCH_LIBFLUX` may name it) or
/// reach the instance, each task is a `flux run` child process instead, and a warning event
/// says why; `PITCH_FLUX_SUBMIT=flux-run` asks for `flux run` (no warning).
///
/// `cores` becomes `flux run -n`, `threads_per_core` `-c`, `num_nodes` `-N`, `gpus_per_core`
/// `-g`, `run_time_max` `-t` (whole seconds, rounded up), `exclusive` `--exclusive` (Flux
/// requires `num_nodes` with it), `partition` `-q` (a queue of the instance; Flux ignores it
/// when the instance has no queues), in the jobspec or on the command line. Every job gets
/// `-o exit-on-error`, so a failing rank stops the others at once. `account`, `qos`,
/// `memory_max`, `slurm_cmd_args` and `openmpi_oversubscribe` mean nothing to Flux jobs: they
/// are accepted and reported once as a warning event. Cancel and `run_time_max` cancel the
/// Flux job (through `flux run`: SIGTERM, forwarded to the job).
pub struct FluxJobExecutor;

impl FluxJobExecutor {
    /// Starts configuring an executor for the current Flux instance.
    pub fn builder() -> FluxJobBuilder {
        FluxJobBuilder {
            common: CommonBuilder::default(),
            slots: Slots::default(),
            pool: PoolSettings::default(),
        }
    }
}

/// Configures a [`FluxJobExecutor`].
pub struct FluxJobBuilder {
    common: CommonBuilder,
    slots: Slots,
    pool: PoolSettings,
}

impl FluxJobBuilder {
    common_builder_methods!();
    slot_builder_methods!(
        "Slots to use, at most the Flux instance's cores (default: all of them).",
        "Flux jobs running at once, whatever their size."
    );
    pool_builder_methods!();

    /// Builds the executor; fails outside a Flux instance (`FLUX_URI` unset), when
    /// `flux resource info` cannot be run or read, and on `max_cores` above the instance's
    /// cores.
    pub fn build(self) -> Result<Executor, Error> {
        if std::env::var_os("FLUX_URI").is_none_or(|uri| uri.is_empty()) {
            return Err(Error::Config(
                "FluxJobExecutor runs inside a Flux instance (flux alloc, flux batch or flux \
                 start), but FLUX_URI is not set; use FluxClusterExecutor to submit jobs to \
                 Flux from outside, or SingleNodeExecutor to run on this machine"
                    .into(),
            ));
        }
        if crate::worker::in_worker() {
            return Err(Error::InsideWorker);
        }
        let instance = flux_instance()?;
        let (max_cores, max_workers) = self.slots.resolve(
            instance.cores,
            Some((instance.cores, "the Flux instance's core count")),
        )?;
        let (native, fallback) = flux_submission()?;
        // Flux's scheduler may keep the cores' limit when every core is pitch's and nothing
        // else limits the tasks at once (max_workers, a pool of persistent workers).
        let ahead = native
            && self.slots.max_cores.is_none()
            && self.slots.max_workers.is_none()
            && !self.pool.block_allocation;
        let mut backend = SingleNode::new(
            Launcher::Flux {
                nodes: instance.nodes,
                gpus: instance.gpus,
                native,
            },
            max_cores,
            max_workers,
        )?;
        if let Some(why) = fallback {
            tracing::warn!("FluxJobExecutor: {why}");
            backend.notice(why);
        }
        if ahead {
            backend.queue_ahead(FLUX_QUEUE_AHEAD);
        }
        build_process(
            self.common,
            &self.pool,
            backend,
            max_cores,
            max_workers,
            "the Flux instance's cores (or max_cores)",
            true,
        )
    }
}
