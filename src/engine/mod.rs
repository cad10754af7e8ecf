//! The engine shared by every backend: turns a submission into a task file and a key, answers
//! from the cache, waits for inputs, hands the task to the backend and resolves its future.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod retry;

use self::retry::Attempts;
use crate::backend::{Backend, Done, Job};
use crate::command::{Command, CommandOutput};
use crate::error::TaskError;
use crate::event::{EventKind, Events};
use crate::future::{ArgSource, Dependency, Slot, TaskFuture};
use crate::lock::{Claim, Claims};
use crate::resources::Resources;
use crate::store::{FormatError, ResultRecord, Store};
use crate::task::{TaskKey, TaskKind, TaskSpec, View};

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

/// What [`Engine::claim`] ends with.
enum Claimed {
    /// The task is this driver's to run.
    Run,
    /// Another driver ran it meanwhile: its result.
    Answered(ResultRecord),
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

/// Environment variables that tell threaded libraries how many threads a task may use.
const THREAD_VARS: [&str; 4] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "RAYON_NUM_THREADS",
];

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

    /// Validates resources for this backend; warns once per key the backend ignores.
    pub(crate) fn check_resources(&self, resources: &Resources) -> Result<(), TaskError> {
        let reject = |reason: String| TaskError::Rejected {
            backend: self.backend.name().to_string(),
            reason,
        };
        resources
            .validate_basic()
            .map_err(|e| reject(e.to_string()))?;
        let ignored = self.backend.check(resources).map_err(reject)?;
        let mut warned = self.warned.lock().unwrap();
        for key in ignored {
            if warned.insert(key) {
                self.events.emit(EventKind::Warning {
                    message: format!(
                        "resource {key:?} means nothing on the {} backend and is ignored",
                        self.backend.name()
                    ),
                });
            }
        }
        Ok(())
    }

    fn spec_env(resources: &Resources) -> Vec<(String, String)> {
        let threads = resources.threads().to_string();
        let mut env: Vec<(String, String)> = THREAD_VARS
            .iter()
            .map(|v| (v.to_string(), threads.clone()))
            .collect();
        env.extend(resources.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    fn absolute(dir: &Option<PathBuf>) -> Option<PathBuf> {
        dir.as_ref().map(|d| {
            if d.is_absolute() {
                d.clone()
            } else {
                std::env::current_dir()
                    .map(|c| c.join(d))
                    .unwrap_or_else(|_| d.clone())
            }
        })
    }

    /// Submits a registered function.
    pub(crate) fn submit_function<T>(
        self: &Arc<Self>,
        opts: &SubmitOptions,
        name: &str,
        fingerprint: &str,
        args: Vec<ArgSource>,
        all_ranks: bool,
    ) -> TaskFuture<T> {
        let mut slots = Vec::with_capacity(args.len());
        let mut deps = Vec::new();
        for (i, arg) in args.into_iter().enumerate() {
            match arg.into_slot(i) {
                Ok((slot, dep)) => {
                    slots.push(slot);
                    if let Some(dep) = dep {
                        deps.push((format!("argument {i}"), dep));
                    }
                }
                Err(e) => return TaskFuture::failed(name, e),
            }
        }
        let kind = TaskKind::Function {
            name: name.to_string(),
            fingerprint: fingerprint.to_string(),
            args: slots,
        };
        let view = if all_ranks {
            View::AllRanks
        } else {
            View::Value
        };
        self.submit(opts, kind, None, deps, view, false)
    }

    /// Submits an external command.
    pub(crate) fn submit_command(
        self: &Arc<Self>,
        opts: &SubmitOptions,
        command: Command,
    ) -> TaskFuture<CommandOutput> {
        let Command {
            mut spec,
            cwd,
            after,
            stdin,
        } = command;
        // The resources' environment is part of what the command does: fold it into the
        // command's own (the command's wins), so it is part of the key.
        for (k, v) in opts.resources.env.iter().rev() {
            if !spec.env.iter().any(|(ck, _)| ck == k) {
                spec.env.insert(0, (k.clone(), v.clone()));
            }
        }
        let deps = after
            .into_iter()
            .enumerate()
            .map(|(i, d)| (format!("dependency {i}"), d))
            .collect();
        self.submit(opts, TaskKind::Command(spec), cwd, deps, View::Value, stdin)
    }

    fn submit<T>(
        self: &Arc<Self>,
        opts: &SubmitOptions,
        kind: TaskKind,
        cwd_override: Option<PathBuf>,
        deps: Vec<(String, Dependency)>,
        view: View,
        stdin: bool,
    ) -> TaskFuture<T> {
        let label = match &kind {
            TaskKind::Function { name, .. } => name.clone(),
            TaskKind::Command(c) => c.program_name(),
        };
        let spec = match self.make_spec(opts, kind, cwd_override) {
            Ok(spec) => spec,
            Err(e) => return TaskFuture::failed(&label, e),
        };
        let key = spec.key;

        let slot = {
            let mut live = self.live.lock().unwrap();
            if let Some(existing) = live.get(&key) {
                let failed = matches!(existing.outcome(), Some(o) if o.is_err());
                if !failed {
                    self.counts.joined.fetch_add(1, Ordering::Relaxed);
                    return TaskFuture::new(existing.clone(), view);
                }
            }
            let slot = Slot::new(key, label.clone());
            live.insert(key, slot.clone());
            slot
        };
        self.events.emit(EventKind::Submitted {
            key: key.to_string(),
            name: label.clone(),
        });

        if opts.cache && !opts.fresh {
            let stored = match self.store.task(&key).read_result() {
                Err(FormatError::Missing) => crate::resultlog::lookup(self.store.root(), &key),
                other => other,
            };
            match stored {
                Ok(ResultRecord {
                    outcome: Ok(values),
                }) => {
                    self.counts.cached.fetch_add(1, Ordering::Relaxed);
                    self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                    self.events.emit(EventKind::Cached {
                        key: key.to_string(),
                        name: label,
                    });
                    slot.resolve(Ok(values));
                    self.forget(&slot);
                    return TaskFuture::new(slot, view);
                }
                Ok(_) | Err(FormatError::Missing) => {}
                Err(e) => self.events.emit(EventKind::Warning {
                    message: format!(
                        "ignoring the unreadable cached result {}: it {e}; the task runs again",
                        self.store.task(&key).result_file().display()
                    ),
                }),
            }
        }

        *self.pending.lock().unwrap() += 1;
        let preparing = Preparing::new(&self.preparing);
        let engine = self.clone();
        let resources = opts.resources.clone();
        let task_slot = slot.clone();
        let (spec, deps) = (spec, deps);
        // Only a task with a key of its own can run twice (issue 14): claim it.
        let claim = (opts.cache || opts.cache_key.is_some()).then_some(opts.cache && !opts.fresh);
        let fresh = opts.fresh && claim.is_some();
        self.runtime.spawn(async move {
            let started_at = Instant::now();
            let mut preparing = Some(preparing);
            if let Some(use_cache) = claim {
                match engine.claim(&task_slot, use_cache, &mut preparing).await {
                    Ok(Claimed::Run) => {}
                    Ok(Claimed::Answered(record)) => {
                        return engine.finish(&task_slot, record, started_at, true);
                    }
                    Err(e) => {
                        let record = ResultRecord { outcome: Err(e) };
                        return engine.finish(&task_slot, record, started_at, false);
                    }
                }
            }
            let preparing = preparing.unwrap_or_else(|| Preparing::new(&engine.preparing));
            let paths = engine.store.task(&task_slot.key);
            if fresh {
                if let Err(e) = paths.create().and_then(|()| paths.set_aside_result()) {
                    let record = ResultRecord { outcome: Err(e) };
                    return engine.finish(&task_slot, record, started_at, false);
                }
            }
            let attempts = Attempts {
                spec: Arc::new(spec),
                deps,
                resources,
                stdin,
                fresh,
                started_at,
                made: Vec::new(),
            };
            engine.attempt(task_slot, attempts, preparing).await;
        });
        TaskFuture::new(slot, view)
    }

    /// The task file of a submission: checks resources, resolves the working directory and
    /// computes the key.
    fn make_spec(
        &self,
        opts: &SubmitOptions,
        kind: TaskKind,
        cwd_override: Option<PathBuf>,
    ) -> Result<TaskSpec, TaskError> {
        let resources = &opts.resources;
        self.check_resources(resources)?;
        let ranks = resources.ranks();
        let cwd = Self::absolute(&cwd_override.or_else(|| resources.cwd.clone()));
        let key = match (&opts.cache_key, opts.cache) {
            (Some(k), _) => TaskKey::explicit(k),
            (None, true) => match self.backend.key_salt(&kind) {
                Some(salt) => TaskSpec::content_key(&kind, ranks, &cwd).salted(salt),
                None => TaskSpec::content_key(&kind, ranks, &cwd),
            },
            (None, false) => TaskKey::unique(),
        };
        Ok(TaskSpec {
            key,
            kind,
            ranks,
            threads: resources.threads(),
            env: Self::spec_env(resources),
            cwd,
        })
    }

    /// The job script a command would be submitted with, without submitting it.
    pub(crate) fn render_command(
        &self,
        opts: &SubmitOptions,
        command: Command,
    ) -> Result<String, TaskError> {
        let Command { spec, cwd, .. } = command;
        let spec = self.make_spec(opts, TaskKind::Command(spec), cwd)?;
        let paths = self.store.task(&spec.key);
        self.backend
            .render(&spec, &opts.resources, &paths)
            .unwrap_or_else(|| {
                Err(TaskError::Rejected {
                    backend: self.backend.name().into(),
                    reason: "this backend runs no job scripts".into(),
                })
            })
    }

    /// This driver's claims, registered on first use.
    fn claims(&self) -> Result<&Arc<Claims>, TaskError> {
        self.claims
            .get_or_init(|| {
                Claims::open(&self.store).map(Arc::new).map_err(|e| {
                    format!(
                        "could not register this driver in {}: {e}",
                        self.store.root().join("locks").display()
                    )
                })
            })
            .as_ref()
            .map_err(|detail| TaskError::Store {
                path: self.store.root().display().to_string(),
                detail: detail.clone(),
            })
    }

    /// Waits until this driver holds the claim on the task (issue 14: a second driver on the
    /// cache directory waits for the tasks the first one runs, then takes their results),
    /// and looks again, under the claim, for a result another driver left meanwhile.
    /// `preparing` is let go while waiting (a queue does not hold its batch for it).
    async fn claim(
        &self,
        slot: &Arc<Slot>,
        use_cache: bool,
        preparing: &mut Option<Preparing>,
    ) -> Result<Claimed, TaskError> {
        let claims = self.claims()?;
        let key = slot.key;
        let mut waited = false;
        let mut delay = Duration::from_millis(20);
        loop {
            let since = Instant::now();
            // The cheap look only while waiting (a first try claims at once).
            let claim = match waited.then(|| claims.busy(&key)).flatten() {
                Some(owner) => Ok(Claim::Busy { owner }),
                None => claims.try_claim(&key),
            };
            let claim = claim.map_err(|e| TaskError::Store {
                path: self.store.claim_file(&key).display().to_string(),
                detail: format!("could not claim the task: {e}"),
            })?;
            let (took_over, after_other_driver) = match claim {
                Claim::Mine {
                    took_over,
                    after_other,
                } => (took_over, after_other),
                Claim::Busy { owner } => {
                    if !waited {
                        preparing.take();
                        if self.warned.lock().unwrap().insert("another driver") {
                            self.events.emit(EventKind::Warning {
                                message: format!(
                                    "task {key} ({}) is run by another driver of this cache directory ({owner}): waiting for it, and for any other task such a driver runs",
                                    slot.name
                                ),
                            });
                        }
                    }
                    waited = true;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = slot.cancel.cancelled() => return Err(TaskError::Cancelled),
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if use_cache || waited {
                let paths = self.store.task(&key);
                let stored = match paths.read_result() {
                    Err(FormatError::Missing)
                        if waited || took_over.is_some() || after_other_driver =>
                    {
                        crate::resultlog::LogSet::refreshed(self.store.root()).lookup(&key)
                    }
                    Err(FormatError::Missing) => {
                        // Another driver may have logged it since this one read the logs.
                        let logs = crate::resultlog::LogSet::of(self.store.root());
                        if logs.stale() {
                            logs.catch_up();
                        }
                        logs.lookup(&key)
                    }
                    other => other,
                };
                // A success answers; so does the failure of the run this driver waited for.
                if let Ok(record) = stored {
                    if record.outcome.is_ok() || (waited && took_over.is_none()) {
                        return Ok(Claimed::Answered(record));
                    }
                }
            }
            if took_over.is_some() || waited {
                // The other driver may have submitted it: find its job (the queue's journal).
                self.backend.taken_over(&key, since);
            }
            return Ok(Claimed::Run);
        }
    }

    /// Writes the task file, waits for the inputs and hands the task to the backend, which
    /// delivers its record to `done`; a record returned here ends the task before that. With
    /// the resources comes whether the command gets the driver's standard input.
    async fn execute(
        self: &Arc<Self>,
        slot: Arc<Slot>,
        spec: Arc<TaskSpec>,
        deps: Vec<(String, Dependency)>,
        (resources, stdin): (Resources, bool),
        preparing: Preparing,
        done: Done,
    ) -> Option<ResultRecord> {
        let paths = self.store.task(&spec.key);
        let fail = |e: TaskError| ResultRecord { outcome: Err(e) };
        if self.backend.writes_task_file(&spec) {
            if let Err(e) = paths.create() {
                return Some(fail(e));
            }
            if let Err(e) = paths.write_task(&*spec) {
                return Some(fail(e));
            }
        }
        // Process backends start a task once its inputs have finished; queue backends take
        // the unfinished inputs and queue the task behind them (afterok).
        let queue_deps = self.backend.queues_dependencies();
        let mut waiting = Vec::new();
        for (input, dep) in deps {
            if queue_deps && dep.slot.outcome().is_none() {
                waiting.push((input, dep));
                continue;
            }
            let outcome = tokio::select! {
                o = dep.slot.wait_async() => o,
                _ = slot.cancel.cancelled() => return Some(paths.publish_result(fail(TaskError::Cancelled))),
            };
            if let Err(cause) = outcome.as_ref() {
                return Some(paths.publish_result(fail(TaskError::dependency_failed(
                    &input,
                    &dep.slot.name,
                    &dep.slot.key,
                    cause,
                ))));
            }
            if !queue_deps {
                waiting.push((input, dep));
            }
        }
        if slot.cancel.is_cancelled() {
            return Some(paths.publish_result(fail(TaskError::Cancelled)));
        }
        let events = self.events.clone();
        let started_slot = slot.clone();
        let started_once = std::sync::atomic::AtomicBool::new(false);
        let job = Job {
            spec,
            paths,
            resources,
            slot,
            deps: waiting,
            done,
            stdin,
            started: Box::new(move |job_id: Option<String>| {
                if let Some(id) = &job_id {
                    started_slot.set_job_id(id.clone());
                }
                if started_once.swap(true, Ordering::SeqCst) {
                    return;
                }
                events.emit(EventKind::Started {
                    key: started_slot.key.to_string(),
                    name: started_slot.name.clone(),
                    job_id,
                });
            }),
        };
        drop(preparing);
        self.backend.clone().run(job).await;
        None
    }

    /// Ends a task with `record`; `answered`: another driver ran it (counted as cached).
    fn finish(&self, slot: &Arc<Slot>, record: ResultRecord, started_at: Instant, answered: bool) {
        if let Some(Ok(claims)) = self.claims.get() {
            claims.release(&slot.key);
        }
        let key = slot.key.to_string();
        let name = slot.name.clone();
        match &record.outcome {
            Ok(_) if answered => {
                self.counts.cached.fetch_add(1, Ordering::Relaxed);
                self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                self.events.emit(EventKind::Cached { key, name });
            }
            Ok(_) => {
                self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                self.events.emit(EventKind::Finished {
                    key,
                    name,
                    runtime: started_at.elapsed(),
                });
            }
            Err(error) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                self.events.emit(EventKind::Failed {
                    key,
                    name,
                    error: error.clone(),
                });
            }
        }
        slot.cancel.clear_hooks();
        // Fill the slot and count the task out in one step under the lock (issue 19: a caller
        // woken by the result read the count before it went down), and wake the slot's waiters
        // after letting go of it.
        let filled = {
            let mut pending = self.pending.lock().unwrap();
            let filled = slot.fill(record.outcome);
            *pending -= 1;
            if *pending == 0 {
                self.idle.notify_all();
            }
            filled
        };
        self.forget(slot);
        if let Some(filled) = filled {
            slot.wake(filled);
        }
    }

    /// Drops a resolved task from the unresolved ones, unless a later submission of its key
    /// (after it failed) has taken its place already.
    fn forget(&self, slot: &Arc<Slot>) {
        let mut live = self.live.lock().unwrap();
        if live.get(&slot.key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            live.remove(&slot.key);
        }
    }

    /// Number of tasks the engine keeps by key (the unresolved ones), for tests.
    #[cfg(test)]
    pub(crate) fn live_count(&self) -> usize {
        self.live.lock().unwrap().len()
    }

    /// Blocks until no task is pending.
    pub(crate) fn wait_idle(&self) {
        let mut pending = self.pending.lock().unwrap();
        while *pending > 0 {
            pending = self.idle.wait(pending).unwrap();
        }
    }

    /// Number of tasks submitted and not yet resolved.
    pub(crate) fn pending(&self) -> u64 {
        *self.pending.lock().unwrap()
    }

    /// Ends every future still unresolved with [`TaskError::Detached`], when the executor
    /// goes away and leaves its jobs running: nothing would resolve them any more. Only the
    /// futures: the jobs' results still reach the cache directory.
    pub(crate) fn detach_all(&self) {
        let live: Vec<Arc<Slot>> = self.live.lock().unwrap().values().cloned().collect();
        let cache = self.store.root().display().to_string();
        for slot in live {
            slot.resolve(Err(TaskError::Detached {
                cache: cache.clone(),
            }));
        }
    }

    /// Asks every unresolved task to cancel.
    pub(crate) fn cancel_all(&self) {
        // Cancelling can end a task on this thread (its hooks run here): not under the lock.
        let live: Vec<Arc<Slot>> = self.live.lock().unwrap().values().cloned().collect();
        for slot in live {
            if slot.outcome().is_none() {
                slot.cancel.cancel();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;
    use std::time::Duration;

    use super::*;
    use crate::{Executor, SingleNodeExecutor};

    fn executor(cache: &std::path::Path) -> Executor {
        SingleNodeExecutor::builder()
            .max_cores(2)
            .cache_directory(cache)
            .build()
            .unwrap()
    }

    /// Waits until nothing holds the slot behind `weak` any more.
    fn released(weak: &Weak<Slot>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while weak.strong_count() > 0 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn a_finished_task_is_kept_by_its_futures_only() {
        let dir = tempfile::tempdir().unwrap();
        let exe = executor(dir.path());
        let engine = exe.engine().clone();
        let slow = || {
            Command::new("sh")
                .args(["-c", "sleep 0.3; echo once >> runs"])
                .cwd(dir.path())
        };
        let first = exe.submit_command(slow());
        // While it runs, the same key joins it.
        let second = exe.submit_command(slow());
        assert_eq!(first.key(), second.key());
        assert_eq!(engine.live_count(), 1);
        assert_eq!(first.result().unwrap().exit_code, 0);
        assert_eq!(engine.live_count(), 0, "a finished task leaves the engine");
        // Once no caller holds its futures, nothing holds its slot (nor its result).
        let weak = Arc::downgrade(&first.dependency().slot);
        drop((first, second));
        assert!(released(&weak), "something still holds a finished task");
        // A later submission of the key is answered from the cache directory.
        let third = exe.submit_command(slow());
        assert_eq!(third.result().unwrap().exit_code, 0);
        let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
        assert_eq!(runs, "once\n");
        assert_eq!(engine.counts.cached.load(Ordering::Relaxed), 1);
        assert_eq!(
            engine.counts.joined.load(Ordering::Relaxed),
            1,
            "the second joined"
        );
        assert_eq!(engine.live_count(), 0, "a cached answer is not kept either");
        let weak = Arc::downgrade(&third.dependency().slot);
        drop(third);
        assert!(released(&weak), "something still holds a cached task");
    }

    /// Issue 14: two library drivers (executors) on one cache directory, submitting the same
    /// tasks at the same moment, run each once; the one that waited answers from the other's
    /// results, counted as cached.
    #[test]
    fn two_executors_on_one_cache_run_each_task_once() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let drivers: Vec<_> = (0..2)
            .map(|_| {
                let (exe, runs) = (executor(dir.path()), runs.clone());
                std::thread::spawn(move || {
                    let futures: Vec<_> = (0..12)
                        .map(|i| {
                            exe.submit_command(Command::new("sh").args([
                                "-c",
                                &format!("echo {i} >> {}; sleep 0.1", runs.display()),
                            ]))
                        })
                        .collect();
                    crate::wait_all(futures).unwrap();
                    exe.shutdown(crate::Shutdown::Wait)
                })
            })
            .collect();
        let summaries: Vec<_> = drivers.into_iter().map(|d| d.join().unwrap()).collect();
        let mut got: Vec<u32> = std::fs::read_to_string(&runs)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..12).collect::<Vec<_>>(), "each task once");
        let cached: u64 = summaries.iter().map(|s| s.cached).sum();
        assert_eq!(cached, 12, "the other driver's 12 answers: {summaries:?}");
    }

    #[test]
    fn a_result_is_never_seen_before_its_task_is_counted_out() {
        // Issue 19: the slot was filled before the pending count went down, so a caller
        // woken by the result could read a count that still included its task.
        let dir = tempfile::tempdir().unwrap();
        let exe = executor(dir.path()).with_cache(false);
        let engine = exe.engine().clone();
        for i in 0..300 {
            let f = exe.submit_command(Command::new("true"));
            f.result().unwrap();
            assert_eq!(engine.pending(), 0, "task {i}: counted after its result");
        }
    }
}
