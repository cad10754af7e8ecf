//! [`SingleNode`]: the type, its construction and its [`Backend`] impl.

use std::path::PathBuf;
use std::sync::Arc;

use super::Launcher;
use crate::backend::exe;
use crate::backend::pool::{Lease, Pool};
use crate::backend::{Backend, BoxFuture, Job};
use crate::error::Error;
use crate::resources::Resources;

pub(crate) struct SingleNode {
    pub(super) launcher: Launcher,
    pub(super) max_cores: u32,
    pub(super) pool: Pool,
    /// The running binary's path, for launchers (mpiexec) that need a real path.
    pub(super) exe: PathBuf,
    /// What the user should hear once the executor starts (why Flux jobs are not submitted
    /// through libflux).
    pub(super) notice: Option<String>,
}

impl SingleNode {
    /// `slots` of this backend's slots for a persistent worker while it runs tasks (see
    /// [`Pool::lease`]); `None` when none can be had.
    pub(crate) fn lease(&self, slots: u32) -> Option<Lease> {
        self.pool.lease(slots)
    }

    /// Whether tasks (commands) wait for slots.
    pub(crate) fn waiting(&self) -> bool {
        self.pool.waiting()
    }

    pub(crate) fn new(
        launcher: Launcher,
        max_cores: u32,
        max_workers: Option<u32>,
    ) -> Result<SingleNode, Error> {
        let exe = exe::path().map_err(Error::Config)?.to_path_buf();
        Ok(SingleNode {
            launcher: launcher.clone(),
            max_cores,
            pool: Pool::new(launcher.name(), max_cores, max_workers),
            exe,
            notice: None,
        })
    }

    /// A warning event for when the executor starts.
    pub(crate) fn notice(&mut self, message: String) {
        self.notice = Some(message);
    }

    /// Lets `factor` times `max_cores` slots of tasks be on their way at once: for Flux jobs
    /// submitted through libflux into an instance whose cores are all pitch's, Flux's own
    /// scheduler keeps the cores' limit, and the next jobs wait in its queue, ready to start
    /// the moment cores free up, instead of being submitted only then. Tasks bigger than
    /// `max_cores` are still refused.
    pub(crate) fn queue_ahead(&mut self, factor: u32) {
        let slots = self.max_cores.saturating_mul(factor.max(1));
        self.pool = Pool::new(self.launcher.name(), slots, None);
    }

    /// How this backend starts processes.
    pub(crate) fn launcher(&self) -> &Launcher {
        &self.launcher
    }
}

impl Backend for SingleNode {
    fn name(&self) -> &'static str {
        self.launcher.name()
    }

    fn attach(
        &self,
        events: crate::event::Events,
        _preparing: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        if let Some(message) = &self.notice {
            events.emit(crate::event::EventKind::Warning {
                message: message.clone(),
            });
        }
    }

    fn check(&self, r: &Resources) -> Result<Vec<&'static str>, String> {
        self.launcher.check(r, self.max_cores)
    }

    fn run(self: Arc<Self>, job: Job) -> BoxFuture<()> {
        self.start(job);
        Box::pin(std::future::ready(()))
    }
}
