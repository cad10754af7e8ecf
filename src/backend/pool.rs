//! [`Pool`]: the slot accounting of a process backend and the threads that run its children.
//!
//! Tasks wait in one FIFO; the head starts as soon as enough slots (and a worker, when
//! `max_workers` is set) are free, so a big task is never starved by small ones behind it.
//! A thread that finishes a task takes the next one itself: starting the next child costs no
//! hand-off between threads. Threads are started on demand, up to the most tasks that can run
//! at once, and leave after a while without work.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long an idle thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

/// Work for the pool: `run` is called on a pool thread once the slots are granted, unless
/// `skip` says the task no longer wants to run (then it is dropped without running).
pub(crate) struct Work {
    pub slots: u32,
    pub skip: Box<dyn Fn() -> bool + Send>,
    pub run: Box<dyn FnOnce() + Send>,
}

struct State {
    queue: VecDeque<Work>,
    free_slots: u32,
    /// Free worker places (`u32::MAX` when unlimited: never reached in practice).
    free_workers: u32,
    threads: u32,
    idle: u32,
    max_threads: u32,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A FIFO of tasks and the threads that run them.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    name: &'static str,
}

impl Pool {
    /// A pool of `slots` slots and at most `workers` tasks at once.
    pub(crate) fn new(name: &'static str, slots: u32, workers: Option<u32>) -> Pool {
        let max_threads = workers.map_or(slots, |w| w.min(slots)).max(1);
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    free_slots: slots,
                    free_workers: workers.unwrap_or(u32::MAX),
                    threads: 0,
                    idle: 0,
                    max_threads,
                    closed: false,
                }),
                wake: Condvar::new(),
            }),
            name,
        }
    }

    /// Queues `work`; fails only when no thread can be started to run it.
    pub(crate) fn push(&self, work: Work) -> Result<(), String> {
        let mut st = self.shared.state.lock().unwrap();
        st.queue.push_back(work);
        if st.idle > 0 {
            self.shared.wake.notify_all();
        } else if st.threads < st.max_threads {
            st.threads += 1;
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pitch-{}", self.name))
                .spawn(move || worker(&shared));
            if let Err(e) = spawned {
                // The running threads, if any, take the queue; a later push tries again.
                st.threads -= 1;
                if st.threads == 0 {
                    st.queue.pop_back();
                    return Err(format!("could not start a thread to run tasks: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Takes `slots` slots (and a worker place) for the caller until the returned [`Lease`]
    /// is dropped, waiting in the same FIFO as the tasks: persistent workers running a task
    /// lease their size, so that they and the commands of the same executor share its slots.
    /// `None` when the pool cannot run it (no thread could be started, or it closed).
    pub(crate) fn lease(&self, slots: u32) -> Option<Lease> {
        {
            // At once, under the lock, when nothing waits before it and the slots are free.
            let mut st = self.shared.state.lock().unwrap();
            if st.queue.is_empty() && slots <= st.free_slots && st.free_workers > 0 {
                st.free_slots -= slots;
                st.free_workers = st.free_workers.saturating_sub(1);
                return Some(Lease(Leased::Direct {
                    shared: self.shared.clone(),
                    slots,
                }));
            }
        }
        // Else in the FIFO: a pool thread takes the slots and holds them for the caller.
        let (granted_tx, granted_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        self.push(Work {
            slots,
            skip: Box::new(|| false),
            run: Box::new(move || {
                if granted_tx.send(()).is_ok() {
                    // Held until the lease is dropped (its sender goes away).
                    let _ = release_rx.recv();
                }
            }),
        })
        .ok()?;
        granted_rx.recv().ok()?;
        Some(Lease(Leased::Queued {
            _release: release_tx,
        }))
    }

    /// Whether work waits for slots.
    pub(crate) fn waiting(&self) -> bool {
        !self.shared.state.lock().unwrap().queue.is_empty()
    }

    /// Wakes the threads so that they drop work that no longer wants to run.
    pub(crate) fn nudge(&self) {
        self.shared.wake.notify_all();
    }
}

/// Slots taken from a [`Pool`] by [`Pool::lease`], given back when dropped.
pub(crate) struct Lease(Leased);

enum Leased {
    /// Taken under the pool's lock.
    Direct { shared: Arc<Shared>, slots: u32 },
    /// Held by a pool thread until the sender goes.
    Queued {
        _release: std::sync::mpsc::Sender<()>,
    },
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Leased::Direct { shared, slots } = &mut self.0 {
            let mut st = shared.state.lock().unwrap();
            st.free_slots += *slots;
            st.free_workers = st.free_workers.saturating_add(1);
            if !st.queue.is_empty() {
                // A thread waiting with work, or a new one to start it.
                shared.wake.notify_all();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().closed = true;
        self.shared.wake.notify_all();
    }
}

fn worker(shared: &Shared) {
    let mut st = shared.state.lock().unwrap();
    loop {
        while st.queue.front().is_some_and(|w| (w.skip)()) {
            st.queue.pop_front();
        }
        let fits = st
            .queue
            .front()
            .is_some_and(|w| w.slots <= st.free_slots && st.free_workers > 0);
        if fits {
            let work = st.queue.pop_front().expect("checked");
            let slots = work.slots;
            st.free_slots -= slots;
            st.free_workers = st.free_workers.saturating_sub(1);
            drop(st);
            (work.run)();
            st = shared.state.lock().unwrap();
            st.free_slots += slots;
            st.free_workers = st.free_workers.saturating_add(1);
            if st.idle > 0 {
                shared.wake.notify_all();
            }
            continue;
        }
        if st.closed && st.queue.is_empty() {
            st.threads -= 1;
            return;
        }
        st.idle += 1;
        let (guard, timeout) = shared.wake.wait_timeout(st, IDLE_EXIT).unwrap();
        st = guard;
        st.idle -= 1;
        if timeout.timed_out() && st.queue.is_empty() {
            st.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::mpsc;

    fn work(slots: u32, f: impl FnOnce() + Send + 'static) -> Work {
        Work {
            slots,
            skip: Box::new(|| false),
            run: Box::new(f),
        }
    }

    /// A lease holds its slots until dropped: work needing them waits, then runs; a lease
    /// asked for while work waits queues behind it (FIFO), and gets the slots after it.
    #[test]
    fn leases_share_the_slots_in_the_fifo() {
        let pool = Pool::new("test", 2, None);
        let lease = pool.lease(2).expect("free slots: at once");
        let ran = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = ran.clone();
        pool.push(work(1, move || {
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            tx.send(()).unwrap();
        }))
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !ran.load(Ordering::SeqCst),
            "ran while the lease held every slot"
        );
        assert!(pool.waiting());
        drop(lease);
        // Asked while the work may still wait or run: it gets the slots once they are free.
        let second = pool.lease(2).expect("a lease after the work");
        assert!(ran.load(Ordering::SeqCst));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the work ended first");
        drop(second);
        assert!(!pool.waiting());
    }

    #[test]
    fn slots_cap_what_runs_at_once_and_order_is_kept() {
        let pool = Pool::new("test", 4, None);
        let running = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel();
        for i in 0..12u32 {
            let (running, peak, tx) = (running.clone(), peak.clone(), tx.clone());
            let slots = if i % 3 == 0 { 3 } else { 1 };
            pool.push(work(slots, move || {
                let now = running.fetch_add(slots, Ordering::SeqCst) + slots;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                running.fetch_sub(slots, Ordering::SeqCst);
                tx.send(i).unwrap();
            }))
            .unwrap();
        }
        let done: Vec<u32> = (0..12).map(|_| rx.recv().unwrap()).collect();
        assert!(peak.load(Ordering::SeqCst) <= 4);
        let mut sorted = done.clone();
        sorted.sort();
        assert_eq!(sorted, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn workers_cap_tasks_and_skipped_work_never_runs() {
        let pool = Pool::new("test", 8, Some(1));
        let running = Arc::new(AtomicU32::new(0));
        let (tx, rx) = mpsc::channel();
        let never = Arc::new(AtomicBool::new(false));
        for i in 0..4u32 {
            let (running, tx) = (running.clone(), tx.clone());
            pool.push(work(1, move || {
                assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "one at a time");
                std::thread::sleep(Duration::from_millis(10));
                running.fetch_sub(1, Ordering::SeqCst);
                tx.send(i).unwrap();
            }))
            .unwrap();
        }
        let ran = never.clone();
        pool.push(Work {
            slots: 1,
            skip: Box::new(|| true),
            run: Box::new(move || ran.store(true, Ordering::SeqCst)),
        })
        .unwrap();
        let tx2 = tx.clone();
        pool.push(work(1, move || tx2.send(99).unwrap())).unwrap();
        let done: Vec<u32> = (0..5).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(done, vec![0, 1, 2, 3, 99]);
        assert!(!never.load(Ordering::SeqCst));
    }
}
