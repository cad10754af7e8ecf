//! The builders of the queue backends, whose tasks are batch jobs: [`SlurmClusterExecutor`]
//! and [`FluxClusterExecutor`]; their queue settings, their pilot jobs (`block_allocation`,
//! [`PilotSettings`]) and [`build_queue`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::process::{init_call, PoolSettings};
use super::{common_builder_methods, CommonBuilder};
use crate::backend::queue::{Queue, QueueConfig};
use crate::backend::scheduler_for;
use crate::backend::transport::{Local, Transport};
use crate::error::Error;
use crate::event::Reporter;
use crate::executor::Executor;
use crate::report::ProgressReporter;
use crate::resources::Resources;
use crate::scheduler::SchedulerKind;

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
pub(super) type RemoteSetting = Option<crate::Remote>;
#[cfg(not(feature = "remote"))]
pub(super) type RemoteSetting = Option<std::convert::Infallible>;

/// Builds a queue executor for the scheduler `scheduler`; fails on a zero setting, on a
/// template that does not render, on a login node it cannot reach and inside a worker.
pub(super) fn build_queue(
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
