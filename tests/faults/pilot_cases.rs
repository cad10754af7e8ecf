//! The cases with pilot jobs (`block_allocation(true)`: issue 16's "the same cases for
//! pilots", issue 12's faults): the sweep's function tasks run on a few pilot jobs that
//! connect back to the driver, so a fault hits a pilot and whatever task it runs, not one
//! job per task. Each case asserts what the cases of `cases.rs` assert (`conclude`, or
//! `killed_driver`): the driver finishes, every task ends exactly once with a typed, named
//! outcome, nothing finished is lost or recorded twice (one finished record per task in the
//! result logs), and the retries or a rerun complete the rest without running a finished
//! task again. A task lost with its pilot is retried on another pilot (pilots default to
//! `max_retries 1` for the scheduler's losses), or with `max_retries 0` ends
//! `Scheduler(<the pilot's end>)` and the rerun runs it.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cases::{
    cache_full_case, conclude_lost, conclude_undisturbed, killed_driver, started, wrapped_sbatch,
    Case, Lost, Recovery, BOUND,
};
use crate::cluster::Slurm;
use crate::inject::{self, Injected};
use crate::slurm_tools::scancel;
use crate::{ensure, finish_driver, job_ids, runs, spawn_driver, wait_until, Pilots, Plan, Run};

pub(crate) const CASES: &[Case] = &[
    Case {
        name: "pilot_a_controller_stopped_20s_and_restarted",
        alone: true,
        run: controller_stopped,
        known_bug: None,
    },
    Case {
        name: "pilot_b_node_crash",
        alone: true,
        run: node_crash_retried,
        known_bug: None,
    },
    Case {
        name: "pilot_b_node_crash_max_retries_0",
        alone: true,
        run: node_crash_failed,
        known_bug: None,
    },
    Case {
        name: "pilot_b_slurmd_killed_pilots_live_on",
        alone: true,
        run: slurmd_killed,
        known_bug: None,
    },
    Case {
        name: "pilot_c_scancelled_from_outside",
        alone: false,
        run: scancelled_retried,
        known_bug: None,
    },
    Case {
        name: "pilot_c_scancelled_from_outside_max_retries_0",
        alone: false,
        run: scancelled_failed,
        known_bug: None,
    },
    Case {
        name: "pilot_d_cache_file_system_full",
        alone: false,
        run: cache_full,
        known_bug: None,
    },
    Case {
        name: "pilot_e_driver_killed_while_submitting",
        alone: false,
        run: killed_while_submitting,
        known_bug: None,
    },
    Case {
        name: "pilot_e_driver_killed_mid_run",
        alone: false,
        run: killed_mid_run,
        known_bug: None,
    },
    Case {
        name: "pilot_e_driver_killed_while_collecting",
        alone: false,
        run: killed_while_collecting,
        known_bug: None,
    },
    Case {
        name: "pilot_g_sbatch_reply_slow",
        alone: false,
        run: sbatch_reply_slow,
        known_bug: None,
    },
    Case {
        name: "pilot_g_sbatch_reply_lost",
        alone: false,
        run: sbatch_reply_lost,
        known_bug: None,
    },
    Case {
        name: "pilot_f_preempted",
        alone: true,
        run: preempted_retried,
        known_bug: None,
    },
    Case {
        name: "pilot_f_preempted_max_retries_0",
        alone: true,
        run: preempted_failed,
        known_bug: None,
    },
];

/// What Slurm may take, beyond a pilot's own exit, to stop listing its job.
pub(crate) const SLURM_SLACK: Duration = Duration::from_secs(15);

/// A sweep of tasks working `ms` milliseconds on at most `workers` pilots.
fn pilot_plan(dir: &Path, ms: Vec<u64>, workers: u32) -> Plan {
    let mut plan = Plan::new(dir, ms);
    plan.pilots = Some(Pilots::new(workers));
    plan
}

/// The states of a job whose processes are gone (squeue lists them for MinJobAge more).
const ENDED: &[&str] = &[
    "COMPLETING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
];

/// The pilot jobs of `cache`'s executors that Slurm still lists as queued or running.
pub(crate) fn live_pilots(cache: &Path) -> Result<Vec<String>, String> {
    let Ok(c) = pitch::Cache::open(cache) else {
        // No cache directory yet: no executor ran, no pilot.
        return Ok(Vec::new());
    };
    let jobs = c.pilot_jobs().map_err(|e| e.to_string())?;
    Ok(jobs
        .into_iter()
        .filter(|(_, state)| !ENDED.iter().any(|e| state.starts_with(e)))
        .map(|(id, state)| format!("{id} {state}"))
        .collect())
}

/// Waits (at most `within`) until no pilot of `cache` is listed any more; how long after
/// `since` they were all gone.
pub(crate) fn wait_pilots_gone(
    cache: &Path,
    within: Duration,
    since: Instant,
) -> Result<Duration, String> {
    let mut live = Vec::new();
    let gone = wait_until("the pilots leave", within, || {
        live = live_pilots(cache).unwrap_or_else(|e| vec![e]);
        live.is_empty()
    });
    ensure!(
        gone.is_ok(),
        "pilots of the dead driver still there {within:?} after its end: {live:?}"
    );
    Ok(since.elapsed())
}

/// A pilot's lost task is retried (the pilots' default `max_retries 1`), or with
/// `max_retries 0` fails.
fn recovery(retried: bool) -> Recovery {
    if retried {
        Recovery::Retried
    } else {
        Recovery::Failed
    }
}

/// Each retry of `tasks` records the lost attempt with its pilot's true end (`reason`, an
/// `EndReason` variant's name: `NodeFail`...), not a guess.
fn check_attempts(first: &Run, tasks: &[usize], reason: &str) -> Result<(), String> {
    for &i in tasks {
        for e in first
            .events
            .iter()
            .filter(|e| e.kind == "retrying" && e.key == first.keys[i])
        {
            ensure!(
                e.rest.contains(&format!("state: {reason},")),
                "task {i}'s lost attempt is not recorded as {reason}: {}",
                e.rest
            );
        }
    }
    Ok(())
}

/// a. slurmctld stopped for 20 s while 2 pilots run 2 long tasks, started again; 6 more
/// tasks are submitted while it is down, for which the executor wants 2 more pilots (at most
/// 4): their sbatch waits for slurmctld, and they run tasks once it is back. Every task
/// finishes in the first run, once.
fn controller_stopped(dir: &Path) -> Result<(), String> {
    let mut plan = pilot_plan(dir, vec![28_000; 2], 4);
    plan.ms.extend([3000; 6]);
    plan.delay_ms = [vec![0; 2], vec![8000; 6]].concat();
    let run = inject::controller_down(dir, &plan, 2)?;
    // The first 2 pilots are busy until after the outage: the pilots asked for during it
    // ran tasks too.
    let pilots: std::collections::BTreeSet<&str> = run
        .first
        .events
        .iter()
        .filter(|e| e.kind == "started")
        .map(|e| e.rest.as_str())
        .collect();
    ensure!(
        pilots.len() >= 3,
        "the tasks ran on pilots {pilots:?}: none of those wanted during the outage"
    );
    conclude_undisturbed(
        dir,
        &plan,
        run,
        "pilots: a. slurmctld down 20 s",
        "2 pilots, 2 more wanted for the 6 of 8 tasks submitted while it was down".into(),
    )
}

/// b. A node crashes (its slurmd, the pilot's slurmstepd and processes killed, the node
/// marked down) while each of 4 pilots (`--exclusive`: one per node) runs a task of 8 s.
/// The pilot's job ends NODE_FAIL (pilots are never requeued by Slurm). `retried`: the task
/// lost with it is retried on another pilot (the pilots' default `max_retries 1`), its lost
/// attempt recorded as NODE_FAIL; otherwise (`max_retries 0`) it ends
/// `Scheduler(NODE_FAIL)` naming the pilot, and the rerun runs it.
fn node_crash(dir: &Path, retried: bool) -> Result<(), String> {
    let mut plan = pilot_plan(dir, vec![8000; 12], 4);
    plan.slurm_args = vec!["--exclusive".into()];
    if !retried {
        plan.max_retries = Some(0);
    }
    let run = inject::node_crash(dir, &plan, 4)?;
    let crashed = run.what.1.clone();
    if retried {
        check_attempts(&run.first, &crashed, "NodeFail")?;
    }
    conclude_lost(
        dir,
        &plan,
        run,
        Lost {
            tasks: &crashed,
            state: "NODE_FAIL",
            recovery: recovery(retried),
        },
        if retried {
            "pilots: b. node crash (max_retries 1)"
        } else {
            "pilots: b. node crash, max_retries 0"
        },
        format!(
            "4 pilots, one per node; {} task(s) of 12 on the crashed node's pilot, {}",
            crashed.len(),
            if retried {
                "retried on another pilot"
            } else {
                "NODE_FAIL"
            }
        ),
    )
}

fn node_crash_retried(dir: &Path) -> Result<(), String> {
    node_crash(dir, true)
}

fn node_crash_failed(dir: &Path) -> Result<(), String> {
    node_crash(dir, false)
}

/// b'. A node's slurmd alone killed (SIGKILL) under a pilot, started again 15 s later: the
/// pilot runs on under its slurmstepd, and nothing is lost.
fn slurmd_killed(dir: &Path) -> Result<(), String> {
    let mut plan = pilot_plan(dir, vec![8000; 8], 4);
    plan.slurm_args = vec!["--exclusive".into()];
    let run = inject::slurmd_killed(dir, &plan, 4)?;
    conclude_undisturbed(
        dir,
        &plan,
        run,
        "pilots: b. slurmd killed 15 s (pilots live on)",
        "4 pilots, one per node; 8 tasks".into(),
    )
}

/// c. Two of 3 pilots scancelled from outside while each runs a task. `retried`: the
/// tasks run again on other pilots (default `max_retries 1`); otherwise (`max_retries 0`)
/// they end `Scheduler(CANCELLED)` and the rerun runs them.
fn scancelled(dir: &Path, retried: bool) -> Result<(), String> {
    let mut plan = pilot_plan(dir, vec![6000; 9], 3);
    if !retried {
        plan.max_retries = Some(0);
    }
    let start = Instant::now();
    let child = spawn_driver(dir, "first", &plan, None);
    let mut cancelled = Vec::new();
    let mut pilots = Vec::new();
    let picked = (|| -> Result<(), String> {
        wait_until("3 tasks running", Duration::from_secs(90), || {
            started(&plan) >= 3
        })?;
        let ids = job_ids(dir, "first");
        let r = runs(&plan);
        let running: Vec<usize> = (0..plan.n())
            .filter(|&i| r[i] > 0 && ids.contains_key(&i))
            .take(2)
            .collect();
        ensure!(running.len() == 2, "tasks running: {running:?} ({ids:?})");
        for i in running {
            scancel(&ids[&i])?;
            pilots.push(ids[&i].clone());
            cancelled.push(i);
        }
        Ok(())
    })();
    let fault_end = Instant::now();
    let first = finish_driver(dir, "first", child, start, BOUND)?;
    picked?;
    cancelled.sort();
    if retried {
        check_attempts(&first, &cancelled, "Cancelled")?;
    }
    conclude_lost(
        dir,
        &plan,
        Injected {
            first,
            start,
            fault_end,
            what: (),
        },
        Lost {
            tasks: &cancelled,
            state: "CANCELLED",
            recovery: recovery(retried),
        },
        if retried {
            "pilots: c. pilots scancelled from outside (max_retries 1)"
        } else {
            "pilots: c. pilots scancelled from outside, max_retries 0"
        },
        format!(
            "pilots {} of 3 scancelled under tasks {cancelled:?}",
            pilots.join(", ")
        ),
    )
}

fn scancelled_retried(dir: &Path) -> Result<(), String> {
    scancelled(dir, true)
}

fn scancelled_failed(dir: &Path) -> Result<(), String> {
    scancelled(dir, false)
}

/// d. The cache's file system (where the driver appends the pilots' results to its result
/// log, and the pilots' job logs go) fills up mid-sweep and is freed 10 s later. The tasks
/// that could not be recorded end with a typed error, never a hang; the rerun completes
/// them.
fn cache_full(dir: &Path) -> Result<(), String> {
    cache_full_case(
        dir,
        pilot_plan(dir, vec![3000; 12], 3),
        "pilots: d. cache file system full 10 s",
        "tasks could not be recorded (3 pilots)",
    )
}

/// e1. Killed while its sbatch of the pilots has submitted them but not yet printed the
/// job id (sbatch wrapped to sleep there): the pilots start with no driver to connect to
/// and leave; the rerun runs every task on new pilots.
fn killed_while_submitting(dir: &Path) -> Result<(), String> {
    let plan = pilot_plan(dir, vec![3000; 6], 3);
    let accepted = dir.join("accepted");
    let path = wrapped_sbatch(
        dir,
        &format!("touch {}; sleep 60\necho \"$out\"", accepted.display()),
    )?;
    killed_driver(
        dir,
        &plan,
        Some(&path),
        "pilots: e. driver SIGKILLed while submitting",
        &|| accepted.exists(),
    )
}

/// e2. Killed while 4 pilots run 4 of its 8 tasks.
fn killed_mid_run(dir: &Path) -> Result<(), String> {
    let plan = pilot_plan(dir, vec![5000; 8], 4);
    killed_driver(
        dir,
        &plan,
        None,
        "pilots: e. driver SIGKILLed mid-run",
        &|| started(&plan) >= 4,
    )
}

/// e3. Killed while results come in: tasks of staggered lengths on 4 pilots, killed once 3
/// of 8 are recorded.
fn killed_while_collecting(dir: &Path) -> Result<(), String> {
    let plan = pilot_plan(dir, (0..8).map(|i| 1500 + 700 * i).collect(), 4);
    killed_driver(
        dir,
        &plan,
        None,
        "pilots: e. driver SIGKILLed while collecting",
        &|| {
            let keys = crate::keys_of(dir, "killed");
            keys.values()
                .filter(|k| crate::stored(&plan.cache, k).0 == Some(true))
                .count()
                >= 3
        },
    )
}

/// g. sbatch's reply comes 3 s after slurmctld accepted the pilots (an overloaded
/// controller answering late; a wrapped sbatch): the pilots start and connect before the
/// driver knows their job. They are its own, and must be taken: every task finishes in the
/// first run, once, on the first pilots.
fn sbatch_reply_slow(dir: &Path) -> Result<(), String> {
    let plan = pilot_plan(dir, vec![3000; 6], 2);
    let path = wrapped_sbatch(dir, "sleep 3\necho \"$out\"")?;
    let start = Instant::now();
    let child = spawn_driver(dir, "first", &plan, Some(&path));
    let first = finish_driver(dir, "first", child, start, BOUND)?;
    let calls = std::fs::read_to_string(dir.join("sbatch.calls"))
        .map(|c| c.lines().count())
        .unwrap_or(0);
    ensure!(
        calls == 1,
        "{calls} sbatch calls for 2 pilots (the first pilots were refused?): {}",
        first.summary()
    );
    conclude_undisturbed(
        dir,
        &plan,
        Injected {
            first,
            start,
            fault_end: start,
            what: (),
        },
        "pilots: g. sbatch's reply 3 s late",
        "2 pilots connected before their sbatch answered".into(),
    )
}

/// g'. sbatch's reply lost: slurmctld accepted the pilots, but sbatch says it failed ("Socket
/// timed out on send/recv operation"; the wrapped sbatch says it for its first call). The
/// executor submits pilots again; the first ones, which it cannot tell from strangers'
/// (their job id was never printed), are refused and leave. Every task finishes in the
/// first run, once, and no pilot is left behind.
fn sbatch_reply_lost(dir: &Path) -> Result<(), String> {
    let plan = pilot_plan(dir, vec![3000; 6], 2);
    let path = wrapped_sbatch(
        dir,
        "if [ \"$(wc -l < \"$CALLS\")\" -le 1 ]; then echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation' >&2; exit 1; fi\necho \"$out\"",
    )?;
    let start = Instant::now();
    let child = spawn_driver(dir, "first", &plan, Some(&path));
    let first = finish_driver(dir, "first", child, start, BOUND)?;
    let refused = first
        .events
        .iter()
        .filter(|e| e.kind == "warning" && e.rest.contains("refused pilot"))
        .count();
    wait_pilots_gone(&plan.cache, SLURM_SLACK, Instant::now())?;
    conclude_undisturbed(
        dir,
        &plan,
        Injected {
            first,
            start,
            fault_end: start,
            what: (),
        },
        "pilots: g. sbatch's reply lost",
        format!("the first sbatch submitted 2 pilots but said it timed out; {refused} of them connected and were refused"),
    )
}

/// f. 4 pilots in the preemptable partition `lowprio` (on node n4), each running a task,
/// preempted by a job of `highprio` that wants the whole node. Pilots are never requeued by
/// Slurm (PreemptMode=REQUEUE cancels them instead): they end PREEMPTED. `retried`: their
/// tasks are retried on new pilots (default `max_retries 1`), the lost attempts recorded as
/// PREEMPTED; otherwise (`max_retries 0`) the tasks end `Scheduler(PREEMPTED)` and the
/// rerun runs them.
fn preempted(dir: &Path, retried: bool) -> Result<(), String> {
    let node = inject::last_node(&Slurm::from_env()?);
    let mut plan = pilot_plan(dir, vec![10_000; 4], 4);
    plan.partition = Some("lowprio".into());
    plan.slurm_args = vec![format!("--nodelist={node}")];
    if !retried {
        plan.max_retries = Some(0);
    }
    let run = inject::preempted(dir, &plan, 4)?;
    let all: Vec<usize> = (0..plan.n()).collect();
    if retried {
        check_attempts(&run.first, &all, "Preempted")?;
        let r = runs(&plan);
        ensure!(
            r.iter().all(|&n| n == 2),
            "each preempted task ran again once: {r:?}"
        );
    }
    let note = format!(
        "4 pilots on {node} preempted by job {}, {}",
        run.what,
        if retried {
            "tasks retried on new pilots"
        } else {
            "PREEMPTED"
        }
    );
    conclude_lost(
        dir,
        &plan,
        run,
        Lost {
            tasks: &all,
            state: "PREEMPTED",
            recovery: recovery(retried),
        },
        if retried {
            "pilots: f. preempted (max_retries 1)"
        } else {
            "pilots: f. preempted, max_retries 0"
        },
        note,
    )
}

fn preempted_retried(dir: &Path) -> Result<(), String> {
    preempted(dir, true)
}

fn preempted_failed(dir: &Path) -> Result<(), String> {
    preempted(dir, false)
}
