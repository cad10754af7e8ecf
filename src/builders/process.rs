//! The builders of the process backends, whose tasks are processes the driver starts:
//! [`SingleNodeExecutor`], [`SlurmJobExecutor`] (`srun` steps) and [`FluxJobExecutor`] (Flux
//! jobs); their slots ([`Slots`]) and persistent workers (`block_allocation`,
//! [`PoolSettings`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::{common_builder_methods, CommonBuilder};
use crate::backend::single_node::{Launcher, SingleNode};
use crate::backend::{flux_instance, slurm_allocation, SlurmAllocation};
use crate::error::Error;
use crate::event::Reporter;
use crate::executor::Executor;
use crate::report::ProgressReporter;
use crate::resources::Resources;

/// The limits of the process backends (SingleNode, SlurmJob, FluxJob): slots and concurrent tasks.
#[derive(Default)]
pub(super) struct Slots {
    pub(super) max_cores: Option<u32>,
    pub(super) max_workers: Option<u32>,
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
    pub(super) common: CommonBuilder,
    pub(super) slots: Slots,
    pub(super) pool: PoolSettings,
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

/// The pool's init function, checked against the registry.
pub(super) fn init_call(
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
    pub(super) common: CommonBuilder,
    pub(super) slots: Slots,
    pub(super) pool: PoolSettings,
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
    pub(super) common: CommonBuilder,
    pub(super) slots: Slots,
    pub(super) pool: PoolSettings,
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
