//! [`Pooled`] itself: starting the workers' threads, a submission (a function task to the
//! FIFO, a command to the [`SingleNode`] it wraps), closing, and its [`Backend`] impl.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::drive::drive;
use super::protocol::InitCall;
use super::ranks::token;
use super::task::{cancel, refuses, task_of};
use super::{PoolConfig, Pooled, Shared, State};
use crate::backend::single_node::SingleNode;
use crate::backend::{Backend, BoxFuture, Job};
use crate::error::{Error, TaskError};
use crate::event::{EventKind, Events};
use crate::resources::Resources;
use crate::resultlog::LogSet;
use crate::store::{ResultRecord, Store};
use crate::task::{TaskKind, TaskSpec};
use crate::worker;

impl Pooled {
    /// Starts the workers (their init functions run at once, in parallel).
    pub(crate) fn new(single: SingleNode, store: &Store, cfg: PoolConfig) -> Result<Pooled, Error> {
        // The running binary, even if a rebuild replaced its file (a staged copy where there
        // is no /proc/self/exe); launchers (mpiexec, srun, flux run) need its real path.
        let exe = PathBuf::from(
            crate::backend::exe::local_worker(store).map_err(|e| Error::Config(e.to_string()))?,
        );
        let real_exe = crate::backend::exe::path()
            .map_err(|e| Error::Config(e.to_string()))?
            .to_path_buf();
        let threads = cfg.defaults.threads().to_string();
        let mut env: Vec<(String, String)> = [
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "RAYON_NUM_THREADS",
        ]
        .iter()
        .map(|v| (v.to_string(), threads.clone()))
        .collect();
        env.extend(cfg.defaults.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.push((worker::WORKER_ENV.to_string(), "1".to_string()));
        let cwd = cfg.defaults.cwd.as_ref().map(|d| {
            if d.is_absolute() {
                d.clone()
            } else {
                std::env::current_dir().map_or_else(|_| d.clone(), |c| c.join(d))
            }
        });
        let salt = init_salt(cfg.init.as_ref());
        let single = Arc::new(single);
        let shared = Arc::new(Shared {
            single: single.clone(),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
                broken: None,
            }),
            wake: Condvar::new(),
            real_exe,
            ranks: cfg.defaults.ranks(),
            threads: cfg.defaults.threads(),
            defaults: cfg.defaults.clone(),
            launcher: single.launcher().clone(),
            token: token(),
            exe,
            init: cfg.init,
            env,
            cwd,
            log: cfg.log.then(|| LogSet::of(store.root())),
            durable: store.durable(),
            started: AtomicUsize::new(0),
        });
        let mut handles = Vec::new();
        for index in 0..cfg.workers {
            let s = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("pitch-pool-{index}"))
                .spawn(move || drive(&s, index))
                .map_err(|e| Error::Config(format!("could not start a pool thread: {e}")))?;
            handles.push(handle);
        }
        Ok(Pooled {
            single,
            shared,
            defaults: cfg.defaults,
            threads: Mutex::new(handles),
            events: OnceLock::new(),
            warned_commands: AtomicBool::new(false),
            salt,
        })
    }

    fn submit(&self, job: Job) {
        let reason = refuses(&self.defaults, &job.resources);
        let limit = job.resources.run_time_max;
        let Some((task, slot)) = task_of(job, self.name(), reason, limit) else {
            return;
        };
        let task = Arc::new(task);
        {
            let mut st = self.shared.state.lock().unwrap();
            if let Some(e) = &st.broken {
                let e = e.clone();
                drop(st);
                task.done.finish(ResultRecord { outcome: Err(e) });
                return;
            }
            st.queue.push_back(task.clone());
        }
        self.shared.wake.notify_one();
        slot.cancel.on_cancel(Box::new(move || cancel(&task)));
    }

    /// Closes the pool: each worker's input is closed once the queue is empty, so it exits;
    /// with `wait`, returns when every worker has been reaped.
    fn shut(&self, wait: bool) {
        self.shared.state.lock().unwrap().closed = true;
        self.shared.wake.notify_all();
        if !wait {
            return;
        }
        let me = std::thread::current().id();
        for handle in std::mem::take(&mut *self.threads.lock().unwrap()) {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.shut(true);
    }
}

impl Backend for Pooled {
    fn name(&self) -> &'static str {
        self.single.name()
    }

    fn check(&self, resources: &Resources) -> Result<Vec<&'static str>, String> {
        self.single.check(resources)
    }

    fn run(self: Arc<Self>, job: Job) -> BoxFuture<()> {
        if let TaskKind::Command(_) = job.spec.kind {
            if !self.warned_commands.swap(true, Ordering::SeqCst) {
                if let Some(events) = self.events.get() {
                    events.emit(EventKind::Warning {
                        message: "block_allocation pools only function tasks: commands run \
                                  as their own processes, as without it (a pool worker would \
                                  only start the same process)"
                            .into(),
                    });
                }
            }
            return self.single.clone().run(job);
        }
        self.submit(job);
        Box::pin(std::future::ready(()))
    }

    fn refuses_function(&self, resources: &Resources) -> Option<String> {
        refuses(&self.defaults, resources)
    }

    fn lost_worker(&self, spec: &TaskSpec, error: &TaskError) -> bool {
        // A function task runs in a worker: its worker dying under it is a lost worker.
        matches!(spec.kind, TaskKind::Function { .. })
            && matches!(
                error,
                TaskError::Signaled { .. } | TaskError::WorkerDied { .. }
            )
    }

    fn attach(&self, events: Events, preparing: Arc<AtomicUsize>) {
        warn_damage(self.shared.log.as_deref(), &events);
        self.single.attach(events.clone(), preparing);
        let _ = self.events.set(events);
    }

    fn key_salt(&self, kind: &TaskKind) -> Option<&[u8]> {
        key_salt(self.salt.as_deref(), kind)
    }

    fn close(&self, wait: bool) {
        self.shut(wait);
    }

    fn writes_task_file(&self, spec: &TaskSpec) -> bool {
        matches!(spec.kind, TaskKind::Command(_))
    }
}

/// What the keys of function tasks on workers started with the init function `init` include
/// (see [`key_salt`]): the init call, encoded.
pub(super) fn init_salt(init: Option<&InitCall>) -> Option<Vec<u8>> {
    init.map(|init| crate::codec::encode(init).expect("an init call always encodes"))
}

/// The key salt of a task of `kind` (`Backend::key_salt`) on workers (a pool's or pilots)
/// whose init function is encoded in `salt` ([`init_salt`]). Tasks of a pool with an init
/// function depend on it: its name, fingerprint and arguments are part of their keys (so a
/// result computed with another init function, or without one, is never taken from the
/// cache; executorlib's issue #1084).
pub(super) fn key_salt<'a>(salt: Option<&'a [u8]>, kind: &TaskKind) -> Option<&'a [u8]> {
    match kind {
        TaskKind::Function { .. } => salt,
        TaskKind::Command(_) => None,
    }
}

/// Reports what was found damaged in the result log `log` (if any) as warning events, when
/// an executor attaches its events.
pub(super) fn warn_damage(log: Option<&LogSet>, events: &Events) {
    if let Some(log) = log {
        for message in log.take_damage() {
            events.emit(EventKind::Warning { message });
        }
    }
}
