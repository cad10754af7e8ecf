//! The builders named after executorlib's classes (`SingleNodeExecutor`,
//! `SlurmClusterExecutor`, `SlurmJobExecutor`, `FluxClusterExecutor`, `FluxJobExecutor`);
//! `from_profile.rs` builds the same executors from `pitch.toml`
//! ([`Executor::from_profile`], [`Executor::from_env`]).
//!
//! This file holds what every builder shares ([`CommonBuilder`] and its methods);
//! `process.rs` the process backends' builders (SingleNode, SlurmJob, FluxJob: slots and
//! persistent workers), `queue.rs` the queue backends' (SlurmCluster, FluxCluster: the queue
//! settings and pilot jobs).

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::Backend;
use crate::error::Error;
use crate::event::Reporter;
use crate::executor::Executor;
use crate::resources::Resources;
use crate::store::Store;

mod from_profile;
mod process;
mod queue;

pub use process::{
    FluxJobBuilder, FluxJobExecutor, SingleNodeBuilder, SingleNodeExecutor, SlurmJobBuilder,
    SlurmJobExecutor,
};
use process::{PoolSettings, Slots};
use queue::{build_queue, PilotSettings, RemoteSetting};
pub use queue::{
    FluxClusterBuilder, FluxClusterExecutor, SlurmClusterBuilder, SlurmClusterExecutor,
};

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
pub(crate) use common_builder_methods;
