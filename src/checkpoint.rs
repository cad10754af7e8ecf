//! Checkpoint and requeue, the worker's side (issue 16): the warning a running task gets
//! before its time limit ([`TaskContext::should_stop`]), and the state it saves to be resumed
//! from ([`TaskContext::checkpoint`], [`TaskContext::resume`]).
//!
//! The warning reaches a worker two ways:
//! - SIGUSR1, caught by the handler [`install_handler`] puts in every worker process (it only
//!   stores to an atomic, which is async-signal-safe). SingleNode sends it to the task's
//!   process group `run_time_max - checkpoint_grace` after the start (`child::supervise`);
//!   Slurm (`--signal=B:USR1@grace`, passed on by the job script) and Flux (`--signal`) send
//!   it before the job's time limit. It is per process and stays set: in a worker that runs
//!   one task it is that task's warning; in a pooled worker it means the process is about to
//!   end, so every later task there sees it too.
//! - A deadline a pooled worker (`block_allocation`) is given with each task
//!   (`run_time_max - checkpoint_grace`; cleared when the task ends), and a pilot job with its
//!   start (its wall time less the grace; it stays). A SingleNode function task's worker also
//!   gets the time of its signal (`worker::WARN_AT_ENV`): a signal sent while a launcher was
//!   still starting the ranks would be lost.
//!
//! Where the checkpoint goes: a worker that runs one task writes `checkpoint.bin` in the
//! task's directory itself ([`TaskPaths::write_checkpoint`], the store's header, bound to the
//! task's key, written atomically); a pooled worker reads no files: its driver sends the
//! checkpoint with the task and writes the one saved, which comes back with the answer.
//!
//! [`TaskContext::checkpoint`] ends the task by unwinding with a private payload ([`Stop`])
//! that the worker's `catch_unwind` (`worker::run_registered`) turns into
//! [`TaskError::Checkpointed`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::TaskError;
use crate::store::{CheckpointRecord, TaskPaths};
use crate::worker::TaskContext;

/// Set by the SIGUSR1 handler; never cleared.
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// The running pooled task's deadline: milliseconds after [`base`], plus one (0: none).
static TASK_STOP_AT: AtomicU64 = AtomicU64::new(0);
/// A pilot's own deadline, the same way (0: none).
static PROCESS_STOP_AT: AtomicU64 = AtomicU64::new(0);

/// Where the running task's checkpoint is read from and saved to.
enum Place {
    /// A worker that runs one task: its task directory.
    Dir(TaskPaths),
    /// A pooled worker: what its driver sent with the task, and the key (for errors).
    Pooled {
        key: String,
        sent: Option<Result<CheckpointRecord, TaskError>>,
    },
}

static PLACE: Mutex<Option<Place>> = Mutex::new(None);
/// A pooled task's saved checkpoint, until its worker sends it back with the answer.
static SAVED: Mutex<Option<CheckpointRecord>> = Mutex::new(None);

/// The unwinding payload of [`TaskContext::checkpoint`]: how the task ends
/// ([`TaskError::Checkpointed`], or why its state could not be saved).
pub(crate) struct Stop(pub(crate) TaskError);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn deadline_after(after: Duration) -> u64 {
    let at = Instant::now() + after;
    at.saturating_duration_since(base()).as_millis() as u64 + 1
}

fn passed(deadline: &AtomicU64) -> bool {
    let at = deadline.load(Ordering::SeqCst);
    at != 0 && base().elapsed().as_millis() as u64 + 1 >= at
}

extern "C" fn on_usr1(_signal: libc::c_int) {
    // Async-signal-safe: one atomic store.
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// Installs the SIGUSR1 handler (with `SA_RESTART`: a system call the task is in goes on
/// instead of failing with EINTR). Called first thing in every worker process.
pub(crate) fn install_handler() {
    base();
    // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic; sigaction
    // is given valid pointers.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
    }
}

/// A worker that runs one task (`__pitch-worker run`): its checkpoint lives in `paths`.
pub(crate) fn run_in(paths: TaskPaths) {
    *PLACE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Place::Dir(paths));
}

/// A pooled worker starts task `key`: what its driver sent of its checkpoint, and the
/// deadline of its warning (from now).
pub(crate) fn begin_pooled(
    key: String,
    sent: Option<Result<CheckpointRecord, TaskError>>,
    stop_after: Option<Duration>,
) {
    *PLACE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Place::Pooled { key, sent });
    SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    TASK_STOP_AT.store(stop_after.map_or(0, deadline_after), Ordering::SeqCst);
}

/// A pooled task ended: its warning is over; the checkpoint it saved, if any, for the answer.
pub(crate) fn end_pooled() -> Option<CheckpointRecord> {
    TASK_STOP_AT.store(0, Ordering::SeqCst);
    PLACE.lock().unwrap_or_else(|e| e.into_inner()).take();
    SAVED.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// A pilot job's warning, `after` from now (its wall time less the grace and a margin): every
/// task it runs from then on sees [`TaskContext::should_stop`].
pub(crate) fn stop_process_after(after: Duration) {
    PROCESS_STOP_AT.store(deadline_after(after), Ordering::SeqCst);
}

/// How long until this process's own warning ([`stop_process_after`], a pilot's), if it has
/// one: zero once it has passed. A command a pilot runs gets SIGUSR1 then.
pub(crate) fn process_warning_in() -> Option<Duration> {
    let at = PROCESS_STOP_AT.load(Ordering::SeqCst);
    (at != 0)
        .then(|| Duration::from_millis(at.saturating_sub(base().elapsed().as_millis() as u64 + 1)))
}

/// A worker that runs one task is warned at `unix_millis` (milliseconds since the Unix
/// epoch, `worker::WARN_AT_ENV`), whether or not the signal reaches it.
pub(crate) fn stop_process_at(unix_millis: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    stop_process_after(Duration::from_millis(unix_millis).saturating_sub(now));
}

/// Whether the warning came: the signal, or a deadline passed.
pub(crate) fn stop_requested() -> bool {
    SIGNALLED.load(Ordering::SeqCst) || passed(&TASK_STOP_AT) || passed(&PROCESS_STOP_AT)
}

/// Saves `state` where the running task's checkpoint goes; the error that ends the task:
/// [`TaskError::Checkpointed`], or why the state could not be saved.
fn save<S: Serialize>(rank: u32, state: &S) -> TaskError {
    let warned = if stop_requested() {
        " after the warning before its time limit"
    } else {
        ""
    };
    let encoded = match crate::codec::encode(state) {
        Ok(bytes) => bytes,
        Err(detail) => {
            return TaskError::Encode {
                what: "the checkpoint".into(),
                detail,
            }
        }
    };
    let size = encoded.len();
    let record = CheckpointRecord {
        type_name: std::any::type_name::<S>().to_string(),
        state: encoded,
    };
    let place = PLACE.lock().unwrap_or_else(|e| e.into_inner());
    // Rank 0 saves the state; the other ranks stop with it.
    if rank != 0 {
        return TaskError::Checkpointed {
            detail: format!("rank {rank} stopped with rank 0's checkpoint{warned}"),
        };
    }
    match &*place {
        Some(Place::Dir(paths)) => match paths.write_checkpoint(&record) {
            Ok(()) => TaskError::Checkpointed {
                detail: format!("the task saved a checkpoint of {size} bytes{warned}"),
            },
            Err(e) => e,
        },
        Some(Place::Pooled { .. }) => {
            *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(record);
            TaskError::Checkpointed {
                detail: format!("the task saved a checkpoint of {size} bytes{warned}"),
            }
        }
        None => TaskError::Launch {
            what: "pitch::context().checkpoint()".into(),
            kind: crate::error::LaunchErrorKind::Other,
            detail: "called outside a task running in a pitch worker: there is nowhere to \
                     save the state"
                .into(),
        },
    }
}

impl TaskContext {
    /// Whether the task was warned that it will be stopped soon: its time limit is less than
    /// `checkpoint_grace` away (see [`Resources::checkpoint_grace`](crate::Resources)), or
    /// the scheduler is about to end its job. A long task polls it between steps, and when it
    /// turns `true` saves its state with [`TaskContext::checkpoint`].
    ///
    /// The warning is SIGUSR1, which pitch's workers catch (a task that installs its own
    /// SIGUSR1 handler replaces pitch's, and this no longer sees it), or, for pooled workers
    /// (`block_allocation`), a deadline sent with the task. It stays `true` once set, for the
    /// rest of the task; in a pooled worker a SIGUSR1 (or a pilot job's own wall time coming
    /// near) also holds for every later task of that worker process, which is about to end.
    /// Always `false` outside a worker.
    pub fn should_stop(&self) -> bool {
        stop_requested()
    }

    /// Saves `state` as the task's checkpoint and ends the task's attempt with
    /// [`TaskError::Checkpointed`]: the engine submits the task again when `max_retries`
    /// allows (a later run of the same task, e.g. the program run again on the same cache
    /// directory, does too), and the new attempt gets `state` from
    /// [`TaskContext::resume`]. Never returns.
    ///
    /// The state is encoded with pitch's codec (bincode, through serde) and written
    /// atomically to the task's `checkpoint.bin` in the cache directory, with the store's
    /// header and bound to the task's key (a copy from another task's directory is refused
    /// on resume); it is removed once the task finishes. In a pooled worker the driver writes
    /// it. If it cannot be saved, the task fails with that error instead
    /// ([`TaskError::Store`], [`TaskError::Encode`]).
    ///
    /// Multi-rank tasks: call it on every rank (as a collective); rank 0's state is saved,
    /// the other ranks' is ignored, and every rank of the next attempt resumes from rank 0's.
    /// Gather what the other ranks hold to rank 0 first.
    ///
    /// It ends the task by unwinding (`std::panic::resume_unwind` with a payload of pitch's
    /// own, caught by the worker): call it on the task's own thread (or one whose panics
    /// reach it, such as rayon's), not inside a `catch_unwind` of its own. It needs
    /// `panic = "unwind"` (the default) in pooled workers (`block_allocation`); with
    /// `panic = "abort"` a worker that runs one task records the end and exits instead, and
    /// a pooled one aborts (its task ends as a lost worker, the checkpoint unsaved).
    ///
    /// The state type is recorded by name: resume with the type that was saved
    /// (`checkpoint(&state)` with `state: Vec<u64>`, then `resume::<Vec<u64>>()`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// pitch::task! {
    ///     /// Sums f(i) for i in 0..steps; resumable: its state is the next step and the sum.
    ///     pub fn integrate(steps: u64) -> Result<f64, pitch::TaskError> {
    ///         let ctx = pitch::context();
    ///         let (start, mut sum) = ctx.resume::<(u64, f64)>()?.unwrap_or((0, 0.0));
    ///         for i in start..steps {
    ///             if ctx.should_stop() {
    ///                 ctx.checkpoint(&(i, sum)); // saves the state, ends this attempt
    ///             }
    ///             sum += (i as f64).sqrt(); // a step of the real work
    ///         }
    ///         Ok(sum)
    ///     }
    /// }
    ///
    /// fn main() -> Result<(), pitch::Error> {
    ///     pitch::init();
    ///     let exe = pitch::SlurmClusterExecutor::builder()
    ///         .resources(
    ///             pitch::Resources::new()
    ///                 .run_time_max(Duration::from_secs(4 * 3600))
    ///                 .checkpoint_grace(Duration::from_secs(300)) // warned 5 min before
    ///                 .max_retries(3), // resubmitted from the checkpoint
    ///         )
    ///         .build()?;
    ///     let total = integrate::submit(&exe, 1 << 40).result()?;
    ///     println!("{total}");
    ///     Ok(())
    /// }
    /// ```
    pub fn checkpoint<S: Serialize>(&self, state: &S) -> ! {
        let stop = save(self.rank, state);
        #[cfg(panic = "abort")]
        {
            // Nothing would catch the unwinding: a worker that runs one task records the end
            // itself and exits; a pooled one can only abort (its checkpoint is lost).
            let place = PLACE.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(Place::Dir(paths)) = place {
                std::process::exit(crate::worker::finish(
                    &paths,
                    self.rank,
                    self.size,
                    Err(stop),
                ));
            }
        }
        std::panic::resume_unwind(Box::new(Stop(stop)))
    }

    /// The state the task saved in an earlier attempt with [`TaskContext::checkpoint`], if
    /// any: `Ok(None)` on a first attempt (and outside a worker). An error when the
    /// checkpoint cannot be trusted or read (another task's, corrupted, unreadable) or holds
    /// another type than `S` (checked by name: a state type renamed or moved between two
    /// attempts is refused, not misread); delete the task's `checkpoint.bin` to start over.
    pub fn resume<S: DeserializeOwned>(&self) -> Result<Option<S>, TaskError> {
        let (record, what) = {
            let place = PLACE.lock().unwrap_or_else(|e| e.into_inner());
            match &*place {
                None => return Ok(None),
                Some(Place::Dir(paths)) => (
                    paths.read_checkpoint()?,
                    paths.checkpoint_file().display().to_string(),
                ),
                Some(Place::Pooled { key, sent }) => (
                    sent.clone().transpose()?,
                    format!("the checkpoint of task {key}"),
                ),
            }
        };
        let Some(record) = record else {
            return Ok(None);
        };
        let wanted = std::any::type_name::<S>();
        if record.type_name != wanted {
            return Err(TaskError::Store {
                path: what,
                detail: format!(
                    "holds the state of a {}, not of a {wanted}: refused",
                    record.type_name
                ),
            });
        }
        crate::codec::decode(&record.state)
            .map(Some)
            .map_err(|e| TaskError::Store {
                path: what,
                detail: format!("holds undecodable data: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one test that sets the process's place (tests run side by side in one process).
    #[test]
    fn checkpoint_saves_and_unwinds_and_resume_checks_the_type() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), false, Default::default()).unwrap();
        let key = crate::task::TaskKey::explicit("resumable");
        let paths = store.task(&key);
        let ctx = TaskContext {
            rank: 0,
            size: 1,
            local_rank: 0,
            node: String::new(),
            key: key.to_string(),
        };
        // Outside a worker: nothing to resume.
        assert_eq!(ctx.resume::<u64>(), Ok(None));
        run_in(paths.clone());
        assert_eq!(ctx.resume::<u64>(), Ok(None));
        let unwound = std::panic::catch_unwind(|| ctx.checkpoint(&(7u64, "seven".to_string())));
        let payload = unwound.expect_err("checkpoint never returns");
        match payload.downcast::<Stop>() {
            Ok(stop) => assert!(
                matches!(&stop.0, TaskError::Checkpointed { detail } if detail.contains("bytes")),
                "{:?}",
                stop.0
            ),
            Err(_) => panic!("not pitch's payload"),
        }
        assert_eq!(
            ctx.resume::<(u64, String)>(),
            Ok(Some((7, "seven".to_string())))
        );
        match ctx.resume::<u64>() {
            Err(TaskError::Store { path, detail }) => {
                assert!(path.ends_with("checkpoint.bin"), "{path}");
                assert!(
                    detail.contains("(u64, alloc::string::String)") && detail.contains("u64"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Another rank saves nothing and stops with rank 0.
        let rank1 = TaskContext {
            rank: 1,
            size: 2,
            ..ctx.clone()
        };
        let payload = std::panic::catch_unwind(|| rank1.checkpoint(&0u64)).unwrap_err();
        let Ok(stop) = payload.downcast::<Stop>() else {
            panic!("not pitch's payload")
        };
        assert!(
            matches!(&stop.0, TaskError::Checkpointed { detail } if detail.contains("rank 1")),
            "{:?}",
            stop.0
        );
        assert_eq!(
            ctx.resume::<(u64, String)>(),
            Ok(Some((7, "seven".to_string())))
        );
        PLACE.lock().unwrap().take();
    }

    #[test]
    fn deadlines_pass_and_clear() {
        let at = AtomicU64::new(0);
        assert!(!passed(&at), "no deadline");
        at.store(deadline_after(Duration::from_secs(3600)), Ordering::SeqCst);
        assert!(!passed(&at));
        at.store(deadline_after(Duration::ZERO), Ordering::SeqCst);
        assert!(passed(&at));
    }
}
