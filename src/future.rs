//! [`TaskFuture`], the handle to a submitted task's value, and [`wait_all`] / [`as_completed`].
//!
//! A future is a cheap clone of a shared slot that the engine fills once. It works from plain
//! threads (`result()` blocks on a condition variable) and from any async runtime (`.await`
//! registers a waker), so it does not tie the caller to the engine's runtime.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::error::TaskError;
use crate::task::{ArgSlot, TaskKey, View};

/// The values of every rank, or why the task failed.
pub(crate) type Outcome = Arc<Result<Vec<Vec<u8>>, TaskError>>;

type Callback = Box<dyn FnOnce(&Outcome) + Send>;

#[derive(Default)]
struct SlotState {
    outcome: Option<Outcome>,
    wakers: Vec<Waker>,
    callbacks: Vec<Callback>,
}

type Hook = Box<dyn FnOnce() + Send>;

/// A request to cancel, shared between a future's holders and the engine.
#[derive(Default)]
pub(crate) struct CancelToken {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
    /// Run once by [`CancelToken::cancel`], on the cancelling thread.
    hooks: Mutex<Vec<Hook>>,
}

impl CancelToken {
    pub(crate) fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        let hooks = std::mem::take(&mut *self.hooks.lock().unwrap());
        for hook in hooks {
            hook();
        }
    }
    pub(crate) fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    /// Completes once cancel has been requested.
    pub(crate) async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
    /// Runs `hook` when cancel is requested, on the cancelling thread (at once when it
    /// already was). For backends whose tasks run on their own threads, with nothing
    /// awaiting the token.
    pub(crate) fn on_cancel(&self, hook: Hook) {
        let mut hooks = self.hooks.lock().unwrap();
        // The flag is set before cancel takes the hooks: either it sees this hook, or this
        // sees the flag.
        if self.is_cancelled() {
            drop(hooks);
            hook();
        } else {
            hooks.push(hook);
        }
    }
    /// Drops the hooks of a task that has ended.
    pub(crate) fn clear_hooks(&self) {
        self.hooks.lock().unwrap().clear();
    }
}

/// What [`Slot::fill`] took out of a slot: the waiters to wake.
#[must_use = "the waiters of a filled slot must be woken with Slot::wake"]
pub(crate) struct Filled {
    outcome: Outcome,
    wakers: Vec<Waker>,
    callbacks: Vec<Callback>,
}

/// The engine's side of a task: filled exactly once.
pub(crate) struct Slot {
    pub key: TaskKey,
    pub name: String,
    pub cancel: CancelToken,
    job_id: Mutex<Option<String>>,
    state: Mutex<SlotState>,
    cond: Condvar,
}

impl Slot {
    pub(crate) fn new(key: TaskKey, name: String) -> Arc<Slot> {
        Arc::new(Slot {
            key,
            name,
            cancel: CancelToken::default(),
            job_id: Mutex::new(None),
            state: Mutex::new(SlotState::default()),
            cond: Condvar::new(),
        })
    }

    /// Fills the slot; a second call is ignored (the first outcome stands).
    pub(crate) fn resolve(&self, outcome: Result<Vec<Vec<u8>>, TaskError>) {
        if let Some(filled) = self.fill(outcome) {
            self.wake(filled);
        }
    }

    /// Stores the outcome without waking anyone (`None` when the slot was filled already):
    /// the engine fills a slot under its own lock, so that whoever sees the outcome also sees
    /// the engine's bookkeeping for it, and wakes the waiters with [`Slot::wake`] after it
    /// has let go of that lock (a waiter's callback may submit again).
    pub(crate) fn fill(&self, outcome: Result<Vec<Vec<u8>>, TaskError>) -> Option<Filled> {
        let outcome = Arc::new(outcome);
        let mut st = self.state.lock().unwrap();
        if st.outcome.is_some() {
            return None;
        }
        st.outcome = Some(outcome.clone());
        Some(Filled {
            outcome,
            wakers: std::mem::take(&mut st.wakers),
            callbacks: std::mem::take(&mut st.callbacks),
        })
    }

    /// Wakes the waiters of a slot that [`Slot::fill`] filled.
    pub(crate) fn wake(&self, filled: Filled) {
        let Filled {
            outcome,
            wakers,
            callbacks,
        } = filled;
        self.cond.notify_all();
        for w in wakers {
            w.wake();
        }
        for cb in callbacks {
            cb(&outcome);
        }
    }

    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.state.lock().unwrap().outcome.clone()
    }

    pub(crate) fn job_id(&self) -> Option<String> {
        self.job_id.lock().unwrap().clone()
    }

    pub(crate) fn set_job_id(&self, id: String) {
        *self.job_id.lock().unwrap() = Some(id);
        // Wakes `wait_job_id` (under the state lock, so its check-then-wait cannot miss it).
        let _st = self.state.lock().unwrap();
        self.cond.notify_all();
    }

    /// Blocks until the task has a job id or has ended; the job id, if it got one.
    fn wait_job_id(&self) -> Option<String> {
        let mut st = self.state.lock().unwrap();
        loop {
            let id = self.job_id.lock().unwrap().clone();
            if id.is_some() || st.outcome.is_some() {
                return id;
            }
            st = self.cond.wait(st).unwrap();
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Option<Outcome> {
        let mut st = self.state.lock().unwrap();
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if let Some(o) = &st.outcome {
                return Some(o.clone());
            }
            match deadline {
                None => st = self.cond.wait(st).unwrap(),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return None;
                    }
                    st = self.cond.wait_timeout(st, d - now).unwrap().0;
                }
            }
        }
    }

    fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut st = self.state.lock().unwrap();
        if let Some(o) = &st.outcome {
            return Poll::Ready(o.clone());
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Runs `cb` once the slot is filled (at once when it already is).
    pub(crate) fn on_done(&self, cb: Callback) {
        let done = {
            let mut st = self.state.lock().unwrap();
            match &st.outcome {
                Some(o) => Some((o.clone(), cb)),
                None => {
                    st.callbacks.push(cb);
                    None
                }
            }
        };
        if let Some((o, cb)) = done {
            cb(&o);
        }
    }

    /// Waits asynchronously for the outcome.
    pub(crate) fn wait_async(self: &Arc<Self>) -> SlotWait {
        SlotWait(self.clone())
    }
}

/// A future over a slot's outcome.
pub(crate) struct SlotWait(Arc<Slot>);

impl Future for SlotWait {
    type Output = Outcome;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        self.0.poll_outcome(cx)
    }
}

/// Decodes the value a view takes from an outcome's rank values.
pub(crate) fn view_bytes(values: &[Vec<u8>], view: View) -> Result<Vec<u8>, TaskError> {
    match view {
        View::Value => values.first().cloned().ok_or_else(|| TaskError::Decode {
            what: "the task's result".into(),
            detail: "it holds no value".into(),
        }),
        View::AllRanks => Ok(codec::join_seq(values)),
    }
}

/// The value of a submitted task, once it is known.
///
/// Cloneable and cheap; every clone sees the same outcome. `.result()` blocks the thread;
/// `.await` works from any async runtime. Pass `&future` as an argument of another task to make
/// that task depend on it.
///
/// # Example
///
/// ```
/// pitch::task! {
///     pub fn add(a: i64, b: i64) -> i64 { a + b }
/// }
///
/// fn main() -> Result<(), pitch::Error> {
///     pitch::init();
///     let cache = tempfile::tempdir().unwrap();
///     let exe = pitch::SingleNodeExecutor::builder()
///         .cache_directory(cache.path())
///         .build()?;
///     let three = add::submit(&exe, 1, 2);
///     // A future as an argument: `seven` starts once `three` has its value.
///     let seven = add::submit(&exe, &three, 4);
///     assert_eq!(seven.result()?, 7);
///     assert!(three.done());
///     assert_eq!(three.key().len(), 32); // the content hash that names its cache entry
///     // From async code, `.await` it instead.
///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
///     assert_eq!(rt.block_on(add::submit(&exe, 5, 5))?, 10);
///     Ok(())
/// }
/// ```
pub struct TaskFuture<T> {
    slot: Arc<Slot>,
    view: View,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for TaskFuture<T> {
    fn clone(&self) -> Self {
        TaskFuture {
            slot: self.slot.clone(),
            view: self.view,
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for TaskFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFuture")
            .field("task", &self.slot.name)
            .field("key", &self.slot.key)
            .field("done", &self.done())
            .finish()
    }
}

impl<T> TaskFuture<T> {
    pub(crate) fn new(slot: Arc<Slot>, view: View) -> TaskFuture<T> {
        TaskFuture {
            slot,
            view,
            _t: PhantomData,
        }
    }

    /// A future that has already failed.
    pub(crate) fn failed(name: &str, error: TaskError) -> TaskFuture<T> {
        let slot = Slot::new(TaskKey::unique(), name.to_string());
        slot.resolve(Err(error));
        TaskFuture::new(slot, View::Value)
    }

    /// Whether the task has finished (successfully or not).
    pub fn done(&self) -> bool {
        self.slot.outcome().is_some()
    }

    /// The task's key: the name of its directory in the cache.
    pub fn key(&self) -> String {
        self.slot.key.to_string()
    }

    /// The task's name (function name or program).
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The scheduler's job id, once the task was handed to a scheduler.
    pub fn job_id(&self) -> Option<String> {
        self.slot.job_id.lock().unwrap().clone()
    }

    /// Blocks until the task was handed to a scheduler (then its job id) or ended without
    /// one (then `None`: a local task, a cached result, a failure before submission). For
    /// `pitch run --detach`: return once the job is queued.
    pub fn wait_job_id(&self) -> Option<String> {
        self.slot.wait_job_id()
    }

    /// Asks the engine to cancel the task: a queued task never starts, a running one is killed
    /// (its process group, or its job). The future resolves to [`TaskError::Cancelled`] unless
    /// the task had already finished.
    pub fn cancel(&self) {
        self.slot.cancel.cancel();
    }

    /// Whether the task failed; `None` while it runs.
    pub fn error(&self) -> Option<TaskError> {
        self.slot
            .outcome()
            .and_then(|o| o.as_ref().as_ref().err().cloned())
    }

    pub(crate) fn dependency(&self) -> Dependency {
        Dependency {
            slot: self.slot.clone(),
            view: self.view,
        }
    }
}

impl<T: DeserializeOwned> TaskFuture<T> {
    fn decode(&self, outcome: &Outcome) -> Result<T, TaskError> {
        let values = outcome.as_ref().as_ref().map_err(Clone::clone)?;
        let bytes = view_bytes(values, self.view)?;
        codec::decode(&bytes).map_err(|detail| TaskError::Decode {
            what: format!(
                "the result of {} as {}",
                self.slot.name,
                std::any::type_name::<T>()
            ),
            detail,
        })
    }

    /// Blocks until the task has finished and returns its value.
    pub fn result(&self) -> Result<T, TaskError> {
        let outcome = self.slot.wait(None).expect("waits without timeout");
        self.decode(&outcome)
    }

    /// Like [`TaskFuture::result`], but gives up after `timeout` (returns `None`).
    pub fn result_timeout(&self, timeout: Duration) -> Option<Result<T, TaskError>> {
        self.slot.wait(Some(timeout)).map(|o| self.decode(&o))
    }
}

impl<T: DeserializeOwned> Future for TaskFuture<T> {
    type Output = Result<T, TaskError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.slot.poll_outcome(cx) {
            Poll::Ready(o) => Poll::Ready(self.decode(&o)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A future used as an input of another task.
#[derive(Clone)]
pub(crate) struct Dependency {
    pub slot: Arc<Slot>,
    pub view: View,
}

impl std::fmt::Debug for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dependency({} {})", self.slot.name, self.slot.key)
    }
}

/// One argument of a task: a value, or a future whose value the task receives.
///
/// Task functions' generated `submit` accept anything that converts into `Arg<T>`: a `T`, a
/// `&TaskFuture<T>` or a `TaskFuture<T>` (and `&str` for `String`).
pub struct Arg<T> {
    pub(crate) source: ArgSource,
    _t: PhantomData<fn() -> T>,
}

/// An argument as the engine receives it; produced by the `task!` expansion.
#[doc(hidden)]
pub struct ArgSource(Source);

enum Source {
    Value(Result<Vec<u8>, String>),
    Future(Dependency),
}

impl<T> Arg<T> {
    fn from_source(source: ArgSource) -> Arg<T> {
        Arg {
            source,
            _t: PhantomData,
        }
    }
}

impl<T: Serialize> From<T> for Arg<T> {
    fn from(value: T) -> Arg<T> {
        Arg::from_source(ArgSource(Source::Value(codec::encode(&value))))
    }
}

impl<T> From<&TaskFuture<T>> for Arg<T> {
    fn from(f: &TaskFuture<T>) -> Arg<T> {
        Arg::from_source(ArgSource(Source::Future(f.dependency())))
    }
}

impl<T> From<TaskFuture<T>> for Arg<T> {
    fn from(f: TaskFuture<T>) -> Arg<T> {
        Arg::from_source(ArgSource(Source::Future(f.dependency())))
    }
}

impl From<&str> for Arg<String> {
    fn from(s: &str) -> Arg<String> {
        Arg::from(s.to_string())
    }
}

impl ArgSource {
    /// The argument's slot in the task file and, for a future, the dependency to wait for.
    pub(crate) fn into_slot(
        self,
        position: usize,
    ) -> Result<(ArgSlot, Option<Dependency>), TaskError> {
        match self.0 {
            Source::Value(Ok(bytes)) => Ok((ArgSlot::Inline(bytes), None)),
            Source::Value(Err(detail)) => Err(TaskError::Encode {
                what: format!("argument {position}"),
                detail,
            }),
            Source::Future(dep) => Ok((
                ArgSlot::Ref {
                    key: dep.slot.key,
                    view: dep.view,
                },
                Some(dep),
            )),
        }
    }
}

/// Waits for every future and returns their values in input order, or the first error in
/// input order. It waits for all of them even when one fails, so no task is left running
/// unobserved.
pub fn wait_all<T: DeserializeOwned>(
    futures: impl IntoIterator<Item = TaskFuture<T>>,
) -> Result<Vec<T>, TaskError> {
    let futures: Vec<TaskFuture<T>> = futures.into_iter().collect();
    let results: Vec<Result<T, TaskError>> = futures.iter().map(|f| f.result()).collect();
    results.into_iter().collect()
}

/// Yields `(index, result)` for each future in the order they finish.
pub fn as_completed<T: DeserializeOwned>(
    futures: impl IntoIterator<Item = TaskFuture<T>>,
) -> AsCompleted<T> {
    let futures: Vec<TaskFuture<T>> = futures.into_iter().collect();
    let (tx, rx) = mpsc::channel();
    for (i, f) in futures.iter().enumerate() {
        let tx = tx.clone();
        f.slot.on_done(Box::new(move |_| {
            let _ = tx.send(i);
        }));
    }
    AsCompleted {
        remaining: futures.len(),
        futures,
        rx,
    }
}

/// The iterator returned by [`as_completed`].
pub struct AsCompleted<T> {
    futures: Vec<TaskFuture<T>>,
    rx: mpsc::Receiver<usize>,
    remaining: usize,
}

impl<T: DeserializeOwned> Iterator for AsCompleted<T> {
    type Item = (usize, Result<T, TaskError>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let i = self.rx.recv().ok()?;
        self.remaining -= 1;
        Some((i, self.futures[i].result()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_hooks_run_once_on_the_cancelling_thread() {
        use std::sync::atomic::AtomicU32;
        let token = CancelToken::default();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        token.on_cancel(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        token.cancel();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        token.cancel();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "a hook runs once");
        // Registered after the cancel: runs at once.
        let r = runs.clone();
        token.on_cancel(Box::new(move || {
            r.fetch_add(10, Ordering::SeqCst);
        }));
        assert_eq!(runs.load(Ordering::SeqCst), 11);
        // Cleared hooks never run.
        let other = CancelToken::default();
        let r = runs.clone();
        other.on_cancel(Box::new(move || {
            r.fetch_add(100, Ordering::SeqCst);
        }));
        other.clear_hooks();
        other.cancel();
        assert_eq!(runs.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn result_await_and_as_completed() {
        let a = Slot::new(TaskKey::explicit("a"), "a".into());
        let b = Slot::new(TaskKey::explicit("b"), "b".into());
        let fa: TaskFuture<u32> = TaskFuture::new(a.clone(), View::Value);
        let fb: TaskFuture<u32> = TaskFuture::new(b.clone(), View::Value);
        assert!(!fa.done());
        assert!(fa.result_timeout(Duration::from_millis(10)).is_none());
        let it = as_completed(vec![fa.clone(), fb.clone()]);
        b.resolve(Ok(vec![codec::encode(&2u32).unwrap()]));
        a.resolve(Err(TaskError::Cancelled));
        a.resolve(Ok(vec![])); // ignored: the first outcome stands
        let order: Vec<(usize, Result<u32, TaskError>)> = it.collect();
        assert_eq!(order, vec![(1, Ok(2)), (0, Err(TaskError::Cancelled))]);
        assert_eq!(fa.result(), Err(TaskError::Cancelled));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(fb.clone()), Ok(2));
        assert_eq!(wait_all(vec![fb.clone(), fa]), Err(TaskError::Cancelled));
        assert_eq!(wait_all(vec![fb.clone(), fb]), Ok(vec![2, 2]));
    }

    #[test]
    fn all_ranks_view_decodes_a_vec() {
        let s = Slot::new(TaskKey::explicit("r"), "r".into());
        let f: TaskFuture<Vec<String>> = TaskFuture::new(s.clone(), View::AllRanks);
        s.resolve(Ok(vec![
            codec::encode("zero").unwrap(),
            codec::encode("one").unwrap(),
        ]));
        assert_eq!(f.result().unwrap(), vec!["zero", "one"]);
        let wrong: TaskFuture<u64> = TaskFuture::new(s, View::Value);
        assert!(matches!(wrong.result(), Err(TaskError::Decode { .. })));
    }
}
