//! Tests of the engine as a whole, through an executor: joins, the cache, claims, counts.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::command::Command;
use crate::future::Slot;
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
                let futures: Vec<_> =
                    (0..12)
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
