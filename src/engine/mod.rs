//! The engine shared by every backend: turns a submission into a task file and a key, answers
//! from the cache, waits for inputs, hands the task to the backend and resolves its future.
//!
//! The parts: this file the [`Engine`] type, its [`SubmitOptions`], [`Counts`] and
//! [`Preparing`]; `spec.rs` what a submission becomes (resources checked, the task file and its
//! key, a command's job script); `submit.rs` submissions (joined, answered from the cache, or
//! spawned); `claim.rs` one driver of a cache directory at a time per task (issue 14);
//! `execute.rs` an attempt's way to the backend (task file, inputs, the `Job`); `retry.rs`
//! attempts one after another (issue 16); `finish.rs` the end of tasks, and the executor's
//! waits, detaches and cancels; `tests.rs` the engine as a whole, through an executor.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

mod claim;
mod execute;
mod finish;
mod retry;
mod spec;
mod submit;
#[cfg(test)]
mod tests;

use crate::backend::Backend;
use crate::event::Events;
use crate::future::Slot;
use crate::lock::Claims;
use crate::resources::Resources;
use crate::store::Store;
use crate::task::TaskKey;

/// Per-submission options carried by an [`Executor`](crate::Executor) handle.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubmitOptions {
    pub resources: Resources,
    pub cache: bool,
    pub cache_key: Option<String>,
    /// Run even when the cache holds a result, replacing it (`Executor::with_fresh`).
    pub fresh: bool,
}

/// Counts for the run summary.
#[derive(Default)]
pub(crate) struct Counts {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub cached: AtomicU64,
    pub joined: AtomicU64,
}

/// State shared by an executor's handles and its running tasks.
pub(crate) struct Engine {
    pub backend: Arc<dyn Backend>,
    pub store: Store,
    pub events: Events,
    pub runtime: tokio::runtime::Handle,
    pub counts: Counts,
    /// Tasks submitted and not yet handed to the backend.
    pub preparing: Arc<AtomicUsize>,
    /// The unresolved tasks, by key: what a second submission of a key joins instead of
    /// running it again. A task leaves when it ends, so the engine holds nothing of a
    /// finished task: its result lives in the futures the callers still hold (and in the
    /// cache directory, where a later submission of the key finds it).
    live: Mutex<HashMap<TaskKey, Arc<Slot>>>,
    /// Tasks submitted (and not answered from the cache) that have not ended. A slot is filled
    /// under this lock in the same step as the count goes down, so whoever has seen a
    /// result never reads a count that still includes its task.
    pending: Mutex<u64>,
    idle: Condvar,
    warned: Mutex<HashSet<&'static str>>,
    /// This driver's claims on tasks (`crate::lock`), registered on the first claim.
    claims: OnceLock<Result<Arc<Claims>, String>>,
}

/// Counts a task as on its way to the backend until dropped.
pub(crate) struct Preparing(Arc<AtomicUsize>);

impl Preparing {
    pub(crate) fn new(count: &Arc<AtomicUsize>) -> Preparing {
        count.fetch_add(1, Ordering::SeqCst);
        Preparing(count.clone())
    }
}

impl Drop for Preparing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Engine {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        store: Store,
        events: Events,
        runtime: tokio::runtime::Handle,
    ) -> Engine {
        Engine {
            backend,
            store,
            events,
            runtime,
            counts: Counts::default(),
            preparing: Arc::new(AtomicUsize::new(0)),
            live: Mutex::new(HashMap::new()),
            pending: Mutex::new(0),
            idle: Condvar::new(),
            warned: Mutex::new(HashSet::new()),
            claims: OnceLock::new(),
        }
    }
}
