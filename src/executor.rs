//! The [`Executor`] facade: one concrete type whatever the backend, so that moving from a
//! laptop to a cluster is a one-line change of constructor (the builders are in
//! `builders/`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::backend::{Backend, DropPolicy};
use crate::command::{Command, CommandOutput};
use crate::engine::{Engine, SubmitOptions};
use crate::error::Error;
use crate::event::{EventKind, Events, Reporter};
use crate::future::{Arg, ArgSource, TaskFuture};
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
    /// Submissions that joined a task already submitted and not yet resolved under the same
    /// key (the same task twice, or one `with_cache_key` used for several submissions): the
    /// counts above are of tasks, so N such submissions add N here and one task above.
    pub joined: u64,
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
            joined: counts.joined.load(Ordering::Relaxed),
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
            let pending = self.engine.pending();
            if mode == Shutdown::Detach && pending > 0 {
                self.engine.events.emit(EventKind::Warning {
                    message: format!(
                        "{} still queued or running; {} will appear in {}",
                        if pending == 1 {
                            "1 task is".to_string()
                        } else {
                            format!("{pending} tasks are")
                        },
                        if pending == 1 {
                            "its result"
                        } else {
                            "their results"
                        },
                        self.engine.store.root().display()
                    ),
                });
            }
            self.shutdown(mode);
        }
        self.engine.backend.close(self.engine.pending() == 0);
        // The runtime that would resolve the detached tasks' futures goes away: end them
        // with an error rather than leave them hanging.
        self.engine.detach_all();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs tasks somewhere: local processes, Slurm jobs, srun steps or Flux jobs. Cloning is
/// cheap; clones share the backend, the cache and the running tasks.
///
/// Build one with [`SingleNodeExecutor::builder`](crate::SingleNodeExecutor::builder) (and, for clusters, the other backends'
/// builders); then submit registered functions (`my_task::submit(&exe, ..)`, see
/// [`task!`](crate::task!)) or commands ([`Executor::submit_command`]).
///
/// Dropping the last handle of a local executor waits for its tasks, like executorlib's `with`
/// block; [`Executor::shutdown`] chooses explicitly.
///
/// # Example
///
/// ```
/// pitch::task! {
///     pub fn square(x: i64) -> i64 { x * x }
/// }
///
/// fn main() -> Result<(), pitch::Error> {
///     pitch::init(); // first in main: in a worker process it runs the task and exits
///     let cache = tempfile::tempdir().unwrap();
///     let exe = pitch::SingleNodeExecutor::builder()
///         .max_cores(2)
///         .cache_directory(cache.path())
///         .build()?;
///     // Functions registered with task!, and external commands.
///     let squares: Vec<_> = (1..=3).map(|x| square::submit(&exe, x)).collect();
///     assert_eq!(pitch::wait_all(squares)?, vec![1, 4, 9]);
///     let echo = exe.submit_command(pitch::Command::new("echo").arg("hi")).result()?;
///     assert_eq!(echo.exit_code, 0);
///     // Submitted again, a task is answered from the cache directory.
///     assert_eq!(square::submit(&exe, 3).result()?, 9);
///     let summary = exe.shutdown(pitch::Shutdown::Wait);
///     assert_eq!((summary.succeeded, summary.cached), (5, 1));
///     Ok(())
/// }
/// ```
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
    /// The engine behind this handle, for the crate's tests.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// The backend's name ("single-node", ...).
    pub fn backend_name(&self) -> &'static str {
        self.inner.engine.backend.name()
    }

    /// The job name every scheduler job of this executor carries (`squeue -n NAME` lists
    /// them); it is derived from the cache directory, so reruns share it. `None` on SingleNode.
    pub fn job_name(&self) -> Option<String> {
        self.inner.engine.backend.job_name().map(String::from)
    }

    /// Records the order of a sweep's points, given by their task keys
    /// ([`crate::TaskFuture::key`]), in the cache directory: `pitch results` (and
    /// [`crate::Cache::sweep_orders`]) list them in that order. `pitch sweep` records every
    /// sweep it runs; the same keys recorded again replace the earlier record.
    pub fn record_sweep(&self, keys: &[String]) -> Result<(), Error> {
        self.inner.engine.store.record_sweep(keys)
    }

    /// The cache directory (absolute).
    pub fn cache_directory(&self) -> PathBuf {
        self.inner.engine.store.root().to_path_buf()
    }

    /// The directory of the task with this key (see [`crate::TaskFuture::key`]): where its
    /// task and result files are, and its `stdout` and `stderr` files when the task wrote
    /// something and the command named no other file. The files appear while the task runs.
    /// A pooled function task (`block_allocation`) has no directory: its result is a record
    /// of the cache directory's result log.
    pub fn task_directory(&self, key: &str) -> Result<PathBuf, Error> {
        let key: crate::task::TaskKey = key.parse().map_err(Error::Config)?;
        Ok(self.inner.engine.store.task(&key).dir().to_path_buf())
    }

    /// Where the task with this key keeps its standard output and standard error (files
    /// that exist only when the task wrote something).
    pub fn task_output_files(&self, key: &str) -> Result<(PathBuf, PathBuf), Error> {
        let key: crate::task::TaskKey = key.parse().map_err(Error::Config)?;
        let paths = self.inner.engine.store.task(&key);
        Ok((paths.stdout(), paths.stderr()))
    }

    /// The resources tasks submitted through this handle get.
    pub fn resources(&self) -> &Resources {
        &self.opts.resources
    }

    pub(crate) fn with_opts(&self, f: impl FnOnce(&mut SubmitOptions)) -> Executor {
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

    /// A handle whose tasks run again even when the cache holds their result (`pitch sweep
    /// --fresh`); the new result replaces the old one under the same key, so the next plain
    /// submission is answered with it. A finished result is never replaced by a failure: when
    /// the rerun fails its future fails, and the cache keeps the earlier finished result.
    pub fn with_fresh(&self, fresh: bool) -> Executor {
        self.with_opts(|o| o.fresh = fresh)
    }

    /// A handle whose next tasks use `key` as their cache key instead of the content hash.
    /// Meant for one task at a time: two different tasks with the same key share one result.
    pub fn with_cache_key(&self, key: impl Into<String>) -> Executor {
        let key = key.into();
        self.with_opts(|o| o.cache_key = Some(key))
    }

    /// Checks `resources` (merged onto this handle's) against the backend without submitting:
    /// the error a command or a function task asking for them would get (`Rejected`). On a
    /// `block_allocation` executor, function tasks must also fit its workers: see
    /// [`Executor::check_function`].
    pub fn check(&self, resources: &Resources) -> Result<(), Error> {
        let merged = self.opts.resources.merged(resources);
        self.inner
            .engine
            .check_resources(&merged)
            .map_err(Error::Task)
    }

    /// As [`Executor::check`], for a function task: on a `block_allocation` executor a task
    /// whose resources its workers (or pilots) cannot honour is refused too, with the error
    /// its submission would get.
    ///
    /// ```
    /// use pitch::{Resources, SingleNodeExecutor};
    /// # fn main() -> Result<(), pitch::Error> {
    /// let cache = tempfile::tempdir().unwrap();
    /// let exe = SingleNodeExecutor::builder()
    ///     .cache_directory(cache.path())
    ///     .max_cores(2)
    ///     .block_allocation(true)
    ///     .build()?;
    /// let two_threads = Resources::new().threads_per_core(2);
    /// assert!(exe.check(&two_threads).is_ok(), "a command may use 2 threads");
    /// assert!(exe.check_function(&two_threads).is_err(), "the workers have 1 thread");
    /// # Ok(())
    /// # }
    /// ```
    pub fn check_function(&self, resources: &Resources) -> Result<(), Error> {
        self.check(resources)?;
        let merged = self.opts.resources.merged(resources);
        match self.inner.engine.backend.refuses_function(&merged) {
            Some(reason) => Err(Error::Task(crate::error::TaskError::Rejected {
                backend: self.backend_name().into(),
                reason,
            })),
            None => Ok(()),
        }
    }

    /// Runs an external command; resolves to its [`CommandOutput`].
    pub fn submit_command(&self, command: Command) -> TaskFuture<CommandOutput> {
        if let Some(reason) = command.env_problem() {
            let backend = self.backend_name().into();
            let name = command.spec.program_name();
            let rejected = crate::error::TaskError::Rejected { backend, reason };
            return TaskFuture::failed(&name, rejected);
        }
        self.inner.engine.submit_command(&self.opts, command)
    }

    /// Runs commands, one task each; the futures keep the input order. On a queue backend
    /// the commands are one submission (a job array, or packs), however loaded the machine.
    pub fn map_commands(
        &self,
        commands: impl IntoIterator<Item = Command>,
    ) -> Vec<TaskFuture<CommandOutput>> {
        let _burst = self.__burst();
        commands
            .into_iter()
            .map(|c| self.submit_command(c))
            .collect()
    }

    /// Held while a `map` submits its tasks: the queue backends' batch window (and the
    /// pilots' submission) waits for the whole burst, so that a `map` becomes one
    /// submission even when the submitting thread is descheduled between two tasks.
    #[doc(hidden)]
    pub fn __burst(&self) -> Burst {
        Burst(crate::engine::Preparing::new(&self.inner.engine.preparing))
    }

    /// The job script `command` would be submitted with, without submitting it (queue
    /// backends only).
    pub fn render_command(&self, command: Command) -> Result<String, Error> {
        if let Some(reason) = command.env_problem() {
            let backend = self.backend_name().into();
            let rejected = crate::error::TaskError::Rejected { backend, reason };
            return Err(Error::Task(rejected));
        }
        self.inner
            .engine
            .render_command(&self.opts, command)
            .map_err(Error::Task)
    }

    /// The job script of this executor's pilot jobs (`block_allocation` on SlurmCluster and
    /// FluxCluster) as they would be submitted (`max_workers` of them), without submitting
    /// it: the template rendered with the executor's default resources.
    pub fn render_pilots(&self) -> Result<String, Error> {
        self.inner
            .engine
            .backend
            .render_pilots()
            .unwrap_or_else(|| {
                Err(crate::error::TaskError::Rejected {
                    backend: self.backend_name().into(),
                    reason: "this executor has no pilot jobs (they are block_allocation on \
                             slurm and flux)"
                        .into(),
                })
            })
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
}

#[doc(hidden)]
pub fn arg_source<T>(arg: Arg<T>) -> ArgSource {
    arg.source
}

impl Executor {
    /// Starts the engine of a new executor on `backend` (the builders' last step).
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        store: Store,
        reporters: Vec<Arc<dyn Reporter>>,
        cache: bool,
    ) -> Result<Executor, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pitch-engine")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("could not start the engine's runtime: {e}")))?;
        let events = Events::new(reporters);
        let engine = Arc::new(Engine::new(
            backend,
            store,
            events,
            runtime.handle().clone(),
        ));
        engine
            .backend
            .attach(engine.events.clone(), engine.preparing.clone());
        Ok(Executor {
            inner: Arc::new(Inner {
                engine,
                runtime: Some(runtime),
                shut: AtomicBool::new(false),
            }),
            opts: Arc::new(SubmitOptions {
                resources: Resources::default(),
                cache,
                cache_key: None,
                fresh: false,
            }),
        })
    }
}

/// See [`Executor::__burst`].
#[doc(hidden)]
pub struct Burst(#[allow(dead_code)] crate::engine::Preparing);
