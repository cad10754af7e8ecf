//! The thread of each pool worker ([`drive`]): it starts its worker, takes the next task
//! from the pool's FIFO when the worker is idle ([`Shared::next`]), runs it to its end
//! ([`run_task`]) and replaces a worker that died or was killed.

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::process::{start_worker, status_text, Worker};
use super::ranks::{answers, gather, Gathered};
use super::task::{deliver_to, keep_checkpoint};
use super::{Phase, PoolTask, Shared};
use crate::error::TaskError;
use crate::store::ResultRecord;

impl Shared {
    /// The next queued task, marked as running in `w`; `None` once the pool is closed, or
    /// when `patience` passes first (then `*timed_out` is set).
    fn next(
        &self,
        w: &Worker,
        patience: Option<Duration>,
        timed_out: &mut bool,
    ) -> Option<Arc<PoolTask>> {
        let until = patience.map(|p| Instant::now() + p);
        let srun = w.srun;
        let sockets: Vec<std::os::fd::RawFd> = if w.srun || w.links.len() > 1 {
            w.links
                .iter()
                .map(|l| l.reader.get_ref().as_raw_fd())
                .collect()
        } else {
            Vec::new()
        };
        let mut st = self.state.lock().unwrap();
        loop {
            while let Some(task) = st.queue.pop_front() {
                let mut phase = task.phase.lock().unwrap();
                if let Phase::Queued = *phase {
                    *phase = Phase::Running {
                        pid: w.pid,
                        srun,
                        sockets: sockets.clone(),
                    };
                    drop(phase);
                    return Some(task);
                }
            }
            if st.closed {
                return None;
            }
            match until {
                None => st = self.wake.wait(st).unwrap(),
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        *timed_out = true;
                        return None;
                    }
                    st = self.wake.wait_timeout(st, left).unwrap().0;
                }
            }
        }
    }

    /// Whether the executor closed the pool.
    fn is_closed(&self) -> bool {
        self.state.lock().unwrap().closed
    }

    /// No worker can start: fail every queued task, and every later one, with `error`.
    fn break_with(&self, error: TaskError) {
        let queued: Vec<Arc<PoolTask>> = {
            let mut st = self.state.lock().unwrap();
            st.broken.get_or_insert(error.clone());
            st.queue.drain(..).collect()
        };
        fail_queued(queued, &error);
    }
}

/// Ends each of `tasks` that is still queued with `error` (a pool or the pilots that can
/// never start a worker).
pub(super) fn fail_queued(tasks: Vec<Arc<PoolTask>>, error: &TaskError) {
    for task in tasks {
        let mut phase = task.phase.lock().unwrap();
        if let Phase::Queued = *phase {
            *phase = Phase::Ended;
            drop(phase);
            task.done.finish(ResultRecord {
                outcome: Err(error.clone()),
            });
        }
    }
}

/// What became of the worker after a task.
enum After {
    Keep,
    Replace,
}

/// How long an idle worker keeps its slots for its next task before it gives them back (and
/// the most a command waits for an idle worker's slots).
const LEASE_PATIENCE: Duration = Duration::from_millis(20);

/// How many times in a row a worker is started before its failure fails the pool's tasks.
const START_ATTEMPTS: u32 = 3;

/// The thread of worker `index`: start it, feed it tasks, replace it when it dies.
pub(super) fn drive(shared: &Shared, index: u32) {
    let mut worker: Option<Worker> = None;
    // The worker's slots while it has tasks to run: taken before a task, given back when the
    // queue is empty or a command waits for slots (then taken again behind it).
    let mut lease = None;
    let slots = shared.ranks.saturating_mul(shared.threads);
    // Failed starts in a row (the init function failed, the worker could not be started): a
    // transient cause (a file system that hiccuped while the init function read its data)
    // gets START_ATTEMPTS tries, 0.5 s, then 1 s apart, before the pool gives up.
    let mut failed_starts = 0u32;
    loop {
        if worker.is_none() {
            match start_worker(shared, index) {
                Ok(w) => {
                    worker = Some(w);
                    failed_starts = 0;
                }
                Err(_) if failed_starts + 1 < START_ATTEMPTS && !shared.is_closed() => {
                    failed_starts += 1;
                    std::thread::sleep(Duration::from_millis(250 << failed_starts));
                    continue;
                }
                Err(e) => return shared.break_with(e),
            }
        }
        let w = worker.as_mut().expect("started above");
        if lease.is_some() && shared.single.waiting() {
            lease = None;
        }
        // Idle with the lease: it is kept a moment for the next task (back-to-back tasks
        // take no lease each), then given back.
        let mut timed_out = false;
        let patience = lease.is_some().then_some(LEASE_PATIENCE);
        let mut next = shared.next(w, patience, &mut timed_out);
        if timed_out {
            lease = None;
            next = shared.next(w, None, &mut timed_out);
        }
        let Some(task) = next else {
            if let Some(w) = worker.take() {
                w.stop();
            }
            return;
        };
        if lease.is_none() {
            lease = shared.single.lease(slots);
        }
        if let After::Replace = run_task(shared, w, &task) {
            if let Some(w) = worker.take() {
                w.kill();
            }
        }
    }
}

fn run_task(shared: &Shared, w: &mut Worker, task: &Arc<PoolTask>) -> After {
    (task.started)(None);
    let deadline = task.limit.map(|limit| Instant::now() + limit);
    let answer = w
        .send(&task.frame)
        .and_then(|()| answers(&mut w.links, deadline));
    let answer = match answer {
        Ok(None) => {
            // The time limit passed.
            let mut phase = task.phase.lock().unwrap();
            let cancelling = matches!(*phase, Phase::Cancelling);
            *phase = Phase::Ended;
            drop(phase);
            w.terminate();
            let outcome = if cancelling {
                Err(TaskError::Cancelled)
            } else {
                Err(TaskError::Timeout {
                    limit: task.limit.unwrap_or_default(),
                })
            };
            deliver(shared, task, outcome);
            return After::Replace;
        }
        Ok(Some(answers)) => answers,
        // A rank's link broke: the worker died.
        Err(_) => vec![None],
    };
    match gather(answer, w.links.len() as u32) {
        Gathered::Done(mut outcome, saved) => {
            let mut phase = task.phase.lock().unwrap();
            // A cancel that came as the task finished killed the worker: the value stands.
            let killed = matches!(*phase, Phase::Cancelling);
            *phase = Phase::Ended;
            drop(phase);
            keep_checkpoint(task, &mut outcome, saved);
            deliver(shared, task, outcome);
            if killed {
                After::Replace
            } else {
                After::Keep
            }
        }
        Gathered::Broken(other) => {
            // The worker died under the task (or spoke nonsense): find out how.
            let status = w.terminate();
            let mut phase = task.phase.lock().unwrap();
            if let Phase::Cancelling = *phase {
                *phase = Phase::Ended;
                drop(phase);
                deliver(shared, task, Err(TaskError::Cancelled));
                return After::Replace;
            }
            let what = format!("{} running task {}", w.what(), task.key);
            let error = match (other, status.signal()) {
                (Some(answer), _) => TaskError::WorkerDied {
                    status: format!("{what}: it answered {answer:?} instead of a result"),
                    stderr_tail: String::new(),
                },
                (None, Some(signal)) => TaskError::Signaled {
                    what,
                    signal,
                    stderr_tail: String::new(),
                },
                (None, None) => TaskError::WorkerDied {
                    status: format!("{what}: {}", status_text(&status)),
                    stderr_tail: String::new(),
                },
            };
            // A lost worker: the engine retries the task when its `max_retries` allows.
            *phase = Phase::Ended;
            drop(phase);
            deliver(shared, task, Err(error));
            After::Replace
        }
    }
}

/// Records and delivers a task's end.
fn deliver(shared: &Shared, task: &PoolTask, outcome: Result<Vec<Vec<u8>>, TaskError>) {
    deliver_to(shared.log.as_deref(), shared.durable, task, outcome);
}
