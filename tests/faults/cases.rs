//! The cases: each injects one fault into a sweep, then checks the driver's run and a rerun
//! (`conclude`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cluster::Slurm;
use crate::inject;
use crate::slurm_tools::{journal, path_with, scancel, which, write_wrapper};
use crate::{
    check_rerun, check_run, ensure, finish_driver, finished_files, job_ids, record, run_driver,
    runs, spawn_driver, wait_until, Figures, Outcome, Plan, Run, TestFn,
};

#[derive(Clone, Copy)]
pub(crate) struct Case {
    pub name: &'static str,
    /// Needs the cluster to itself (stops a daemon, or needs a node free of other jobs).
    pub alone: bool,
    pub run: TestFn,
    /// A bug this case shows that is not fixed yet: the case is ignored (run it with
    /// `-- --include-ignored`).
    pub known_bug: Option<&'static str>,
}

pub(crate) const CASES: &[Case] = &[
    Case {
        name: "a_controller_stopped_20s_and_restarted",
        alone: true,
        run: controller_stopped,
        known_bug: None,
    },
    Case {
        name: "b_node_crash_requeue_on",
        alone: true,
        run: node_crash_requeue,
        known_bug: None,
    },
    Case {
        name: "b_node_crash_requeue_off",
        alone: true,
        run: node_crash_no_requeue,
        known_bug: None,
    },
    Case {
        name: "b_node_crash_requeue_off_max_retries_2",
        alone: true,
        run: node_crash_retries,
        known_bug: None,
    },
    Case {
        name: "b_slurmd_killed_jobs_live_on",
        alone: true,
        run: slurmd_killed,
        known_bug: None,
    },
    Case {
        name: "c_scancel_from_outside",
        alone: false,
        run: scancel_from_outside,
        known_bug: None,
    },
    Case {
        name: "c_scancel_from_outside_max_retries_2",
        alone: false,
        run: scancel_retries,
        known_bug: None,
    },
    Case {
        name: "d_cache_file_system_full",
        alone: false,
        run: cache_full,
        known_bug: None,
    },
    Case {
        name: "e_driver_killed_while_submitting",
        alone: false,
        run: killed_while_submitting,
        known_bug: None,
    },
    Case {
        name: "e_driver_killed_mid_run",
        alone: false,
        run: killed_mid_run,
        known_bug: None,
    },
    Case {
        name: "e_driver_killed_while_collecting",
        alone: false,
        run: killed_while_collecting,
        known_bug: None,
    },
    Case {
        name: "g_sbatch_reply_lost",
        alone: false,
        run: sbatch_reply_lost,
        known_bug: None,
    },
    Case {
        name: "f_preempted_requeue_on",
        alone: true,
        run: preempted_requeue,
        known_bug: None,
    },
    Case {
        name: "f_preempted_requeue_off",
        alone: true,
        run: preempted_no_requeue,
        known_bug: None,
    },
    Case {
        name: "f_preempted_packed_requeue_on",
        alone: true,
        run: preempted_packed,
        known_bug: None,
    },
    Case {
        name: "f_preempted_requeue_off_max_retries_2",
        alone: true,
        run: preempted_retries,
        known_bug: None,
    },
];

/// The retry settings of the `max_retries_2` variants: the driver itself runs the failed
/// tasks again (2 s, then 4 s after the failure).
pub(crate) fn with_retries(plan: &mut Plan, retry_on: &str) {
    plan.max_retries = Some(2);
    plan.retry_on = retry_on.into();
    plan.retry_backoff_ms = Some(2000);
}

/// The retried tasks of a run that ended without failures: `expected` (sorted), each retried
/// once.
pub(crate) fn check_retried(first: &Run, expected: &[usize]) -> Result<(), String> {
    ensure!(
        first.failed().is_empty(),
        "with max_retries 2, tasks failed: {}",
        first.summary()
    );
    let retried: Vec<usize> = (0..first.outcomes.len())
        .filter(|&i| first.count(i, "retrying") > 0)
        .collect();
    ensure!(
        retried == expected,
        "the tasks retried are {retried:?}, not {expected:?}"
    );
    for &i in expected {
        ensure!(
            first.count(i, "retrying") == 1,
            "task {i} retried {} times",
            first.count(i, "retrying")
        );
    }
    Ok(())
}

/// A driver's bound: far above what any case needs (the slowest takes about a minute).
pub(crate) const BOUND: Duration = Duration::from_secs(180);

/// What a case expects of its first run and of the whole.
pub(crate) struct Expect<'a> {
    pub case: &'a str,
    /// Whether a failure of the first run is one the fault explains.
    pub allowed: &'a dyn Fn(usize, &Outcome) -> bool,
    /// The runs task `i` may have had in all (first run and rerun), given its first outcome.
    pub max_runs: &'a dyn Fn(usize, &Outcome) -> usize,
    pub note: String,
}

/// The checks common to every case once the first driver ended (`first`, started at
/// `start`; the fault over at `fault_end`): the first run (`check_run`), then a rerun that
/// completes the rest without running a finished task again (`check_rerun`), and the runs
/// of each task; records the figures.
pub(crate) fn conclude(
    dir: &Path,
    plan: &Plan,
    first: Run,
    start: Instant,
    fault_end: Instant,
    expect: Expect<'_>,
) -> Result<(), String> {
    let first_end = start + first.elapsed;
    let allowed =
        |o: &Outcome| (0..plan.n()).any(|i| &first.outcomes[i] == o && (expect.allowed)(i, o));
    check_run(plan, &first, "first run", &allowed)?;
    for i in first.failed() {
        ensure!(
            (expect.allowed)(i, &first.outcomes[i]),
            "first run: task {i} ended {}",
            first.outcomes[i].name()
        );
    }
    eprintln!("  {}: first run: {}", expect.case, first.summary());
    let done = finished_files(plan, &first);
    let before = runs(plan);
    for (i, o) in first.outcomes.iter().enumerate() {
        ensure!(
            !o.is_ok() || before[i] >= 1,
            "task {i} finished without running"
        );
    }
    let rerun_start = Instant::now();
    let rerun = run_driver(dir, "rerun", plan, BOUND)?;
    check_rerun(plan, &rerun, &done, &before, true)?;
    let after = runs(plan);
    for (i, &n) in after.iter().enumerate() {
        let most = (expect.max_runs)(i, &first.outcomes[i]);
        ensure!(
            n <= most,
            "task {i} ({}) ran {n} times, at most {most} expected",
            first.outcomes[i].name()
        );
    }
    let failed = first.failed().len();
    let recovered_at = if failed > 0 {
        rerun_start + rerun.elapsed
    } else {
        first_end
    };
    record(Figures {
        case: expect.case.to_string(),
        tasks: plan.n(),
        failed,
        recovered_in_run: (0..plan.n())
            .filter(|&i| {
                first.outcomes[i].is_ok() && (before[i] > 1 || first.count(i, "retrying") > 0)
            })
            .count(),
        retries: first.retries(),
        recovered_by_rerun: failed,
        runs: after.iter().sum(),
        recover: recovered_at.saturating_duration_since(fault_end),
        total: start.elapsed(),
        note: expect.note,
    });
    Ok(())
}

/// How the tasks whose attempts a fault lost come back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Slurm requeues their jobs: they finish in the first run, no retry.
    Requeued,
    /// The driver retries each once: they finish in the first run.
    Retried,
    /// They end `Scheduler(<the state>)`, and only they; the rerun runs them.
    Failed,
}

/// How lost tasks come back with Slurm's `requeue`, or else with the driver's `retries`.
fn recovery(requeue: bool, retries: bool) -> Recovery {
    match (requeue, retries) {
        (true, _) => Recovery::Requeued,
        (false, false) => Recovery::Failed,
        (false, true) => Recovery::Retried,
    }
}

/// The tasks whose attempts a fault lost, with the state Slurm gives their (or their
/// pilot's) job, and how they come back.
pub(crate) struct Lost<'a> {
    pub tasks: &'a [usize],
    pub state: &'a str,
    pub recovery: Recovery,
}

/// The end of a case whose fault lost the attempts of `lost.tasks` (sorted): they came back
/// as `lost.recovery` says, then `conclude`, which allows them `Scheduler(<state>)` and a
/// second run, and every other task one run without a failure.
pub(crate) fn conclude_lost<T>(
    dir: &Path,
    plan: &Plan,
    run: inject::Injected<T>,
    lost: Lost<'_>,
    case: &str,
    note: String,
) -> Result<(), String> {
    let first = run.first;
    match lost.recovery {
        Recovery::Retried => check_retried(&first, lost.tasks)?,
        Recovery::Requeued => ensure!(
            first.failed().is_empty(),
            "with requeue on, tasks failed: {}",
            first.summary()
        ),
        Recovery::Failed => ensure!(
            first.failed() == lost.tasks,
            "the tasks {:?} whose attempts were lost fail ({}), and only they: {}",
            lost.tasks,
            lost.state,
            first.summary()
        ),
    }
    conclude(
        dir,
        plan,
        first,
        run.start,
        run.fault_end,
        Expect {
            case,
            allowed: &|i, o| {
                lost.tasks.contains(&i)
                    && matches!(o, Outcome::Err { variant, state, .. }
                        if variant == "Scheduler" && state == lost.state)
            },
            max_runs: &|i, _| if lost.tasks.contains(&i) { 2 } else { 1 },
            note,
        },
    )
}

/// Tasks that have started (have a marker line).
pub(crate) fn started(plan: &Plan) -> usize {
    runs(plan).iter().filter(|&&r| r > 0).count()
}

pub(crate) fn once(_: usize, _: &Outcome) -> usize {
    1
}

pub(crate) fn none(_: usize, _: &Outcome) -> bool {
    false
}

/// a. slurmctld stopped (SIGTERM: it saves its state) for 20 s while 8 tasks run, and
/// started again from its StateSaveLocation; 4 more tasks are submitted while it is down.
/// Nothing is lost: every task finishes in the first run and ran once.
fn controller_stopped(dir: &Path) -> Result<(), String> {
    let mut plan = Plan::new(dir, vec![6000; 8]);
    plan.ms.extend([3000; 4]);
    plan.delay_ms = [vec![0; 8], vec![8000; 4]].concat();
    let run = inject::controller_down(dir, &plan, 4)?;
    conclude_undisturbed(
        dir,
        &plan,
        run,
        "a. slurmctld down 20 s",
        "4 of 12 tasks submitted while it was down".into(),
    )
}

/// The end of a case whose fault must not cost a task: none failed, each ran once.
pub(crate) fn conclude_undisturbed<T>(
    dir: &Path,
    plan: &Plan,
    run: inject::Injected<T>,
    case: &str,
    note: String,
) -> Result<(), String> {
    ensure!(
        run.first.failed().is_empty(),
        "{case}: tasks failed: {}",
        run.first.summary()
    );
    conclude(
        dir,
        plan,
        run.first,
        run.start,
        run.fault_end,
        Expect {
            case,
            allowed: &none,
            max_runs: &once,
            note,
        },
    )
}

/// The node that runs most of the driver's jobs, and the tasks it runs.
pub(crate) fn busiest_node(slurm: &Slurm, dir: &Path) -> (String, Vec<usize>) {
    let ids = job_ids(dir, "first");
    (1..=slurm.nodes)
        .map(|n| {
            let node = format!("n{n}");
            let jobs = slurm.jobs_on(&node);
            let tasks: Vec<usize> = ids
                .iter()
                .filter(|(_, id)| jobs.iter().any(|j| job_matches(j, id)))
                .map(|(i, _)| *i)
                .collect();
            (node, tasks)
        })
        .max_by_key(|(_, t)| t.len())
        .unwrap_or_default()
}

/// Whether the unique job id `unique` (squeue's `%A`) is the job `id` pitch knows (a plain id,
/// or `array_index` of an array element, whose unique id squeue gives with `%i`).
pub(crate) fn job_matches(unique: &str, id: &str) -> bool {
    if unique == id {
        return true;
    }
    let out = std::process::Command::new("squeue")
        .args(["-h", "-j", id, "-o", "%A"])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .any(|u| u == unique)
    })
    .unwrap_or(false)
}

/// b. A node crashes mid-sweep: its slurmd, slurmstepds and job processes die at once
/// (SIGKILL); slurmd comes back 10 s later. `requeue`: the jobs are `--requeue` (Slurm runs
/// them again) or `--no-requeue` (they end NODE_FAIL, the rerun runs them).
fn node_crash(dir: &Path, requeue: bool, retries: bool) -> Result<(), String> {
    let mut plan = Plan::new(dir, vec![8000; 12]);
    plan.requeue = Some(requeue);
    if retries {
        with_retries(&mut plan, "");
    }
    let run = inject::node_crash(dir, &plan, 12)?;
    let crashed = run.what.1.clone();
    conclude_lost(
        dir,
        &plan,
        run,
        Lost {
            tasks: &crashed,
            state: "NODE_FAIL",
            recovery: recovery(requeue, retries),
        },
        match (requeue, retries) {
            (true, _) => "b. node crash, requeue on",
            (false, false) => "b. node crash, requeue off",
            (false, true) => "b. node crash, requeue off, max_retries 2",
        },
        format!(
            "{} of 12 tasks on the crashed node, {}",
            crashed.len(),
            match (requeue, retries) {
                (true, _) => "requeued by Slurm",
                (false, false) => "NODE_FAIL",
                (false, true) => "NODE_FAIL, retried by pitch",
            }
        ),
    )
}

fn node_crash_requeue(dir: &Path) -> Result<(), String> {
    node_crash(dir, true, false)
}

fn node_crash_no_requeue(dir: &Path) -> Result<(), String> {
    node_crash(dir, false, false)
}

fn node_crash_retries(dir: &Path) -> Result<(), String> {
    node_crash(dir, false, true)
}

/// b'. Only a node's slurmd is killed (SIGKILL) mid-sweep, and started again 15 s later: its
/// jobs run on under their slurmstepd, and nothing is lost.
fn slurmd_killed(dir: &Path) -> Result<(), String> {
    let plan = Plan::new(dir, vec![8000; 8]);
    let run = inject::slurmd_killed(dir, &plan, 8)?;
    let note = format!("{} of 8 tasks on its node", run.what.1.len());
    conclude_undisturbed(
        dir,
        &plan,
        run,
        "b. slurmd killed 15 s (jobs live on)",
        note,
    )
}

/// c. Jobs scancelled from outside: two running ones and, if one is still pending, a
/// pending one. They end `Scheduler(CANCELLED)`; the rerun runs them.
fn scancel_from_outside(dir: &Path) -> Result<(), String> {
    scancel_case(dir, false)
}

/// c'. As c, with `max_retries 2` and `retry_on cancelled` (a cancel is the task's own
/// failure unless said otherwise): the driver runs the cancelled tasks again itself.
fn scancel_retries(dir: &Path) -> Result<(), String> {
    scancel_case(dir, true)
}

fn scancel_case(dir: &Path, retries: bool) -> Result<(), String> {
    let mut plan = Plan::new(dir, vec![6000; 20]);
    if retries {
        with_retries(&mut plan, "cancelled");
    }
    let start = Instant::now();
    let child = spawn_driver(dir, "first", &plan, None);
    let mut cancelled = Vec::new();
    let mut pending_at_cancel = Vec::new();
    let picked = (|| -> Result<(), String> {
        wait_until("2 tasks running", Duration::from_secs(90), || {
            started(&plan) >= 2 && job_ids(dir, "first").len() == plan.n()
        })?;
        let ids = job_ids(dir, "first");
        let r = runs(&plan);
        let running: Vec<usize> = (0..plan.n()).filter(|&i| r[i] > 0).take(2).collect();
        let pending: Vec<usize> = (0..plan.n()).rev().filter(|&i| r[i] == 0).take(1).collect();
        pending_at_cancel = pending.clone();
        for i in running.into_iter().chain(pending) {
            scancel(&ids[&i])?;
            cancelled.push(i);
        }
        Ok(())
    })();
    let fault_end = Instant::now();
    let first = finish_driver(dir, "first", child, start, BOUND)?;
    picked?;
    cancelled.sort();
    conclude_lost(
        dir,
        &plan,
        inject::Injected {
            first,
            start,
            fault_end,
            what: (),
        },
        Lost {
            tasks: &cancelled,
            state: "CANCELLED",
            recovery: if retries {
                Recovery::Retried
            } else {
                Recovery::Failed
            },
        },
        if retries {
            "c. scancel from outside, max_retries 2 (retry_on cancelled)"
        } else {
            "c. scancel from outside"
        },
        format!(
            "{} jobs scancelled ({} of them pending)",
            cancelled.len(),
            pending_at_cancel.len()
        ),
    )
}

/// d. The cache's file system fills up mid-sweep (a tmpfs mounted as the cache's parent,
/// filled by a file) and is freed 10 s later. The tasks that could not write end with a
/// typed error, never a hang; the rerun completes them.
fn cache_full(dir: &Path) -> Result<(), String> {
    let mut plan = Plan::new(dir, vec![3000; 12]);
    plan.max_jobs = Some(4);
    cache_full_case(
        dir,
        plan,
        "d. cache file system full 10 s",
        "tasks could not write",
    )
}

/// The cache of `plan` on a tmpfs that fills up once 2 tasks run and is freed 10 s later:
/// the tasks that could not write end with a typed error, the rerun completes them.
pub(crate) fn cache_full_case(
    dir: &Path,
    mut plan: Plan,
    case: &str,
    what: &str,
) -> Result<(), String> {
    let fs = inject::cache_fs(dir)?;
    plan.cache = fs.path.join("cache");
    let run = inject::cache_full(dir, &plan, &fs, 2)?;
    let failed = run.first.failed().len();
    conclude(
        dir,
        &plan,
        run.first,
        run.start,
        run.fault_end,
        Expect {
            case,
            allowed: &|_, o| {
                matches!(o, Outcome::Err { variant, .. }
                    if ["Store", "WorkerDied", "Scheduler", "Launch"].contains(&variant.as_str()))
            },
            max_runs: &|_, _| 2,
            note: format!("{failed} of {} {what}", plan.n()),
        },
    )
}

/// e. The driver killed (SIGKILL) at `moment`, then run again: it re-attaches to the jobs
/// still queued or running, answers the finished tasks from the cache, submits the rest;
/// every task runs exactly once in all. With pilots (`plan.pilots`) the tasks running at the
/// kill die with their pilots, which leave (within the idle timeout) once their driver is
/// gone: those tasks run once more in the rerun, every other task exactly once.
pub(crate) fn killed_driver(
    dir: &Path,
    plan: &Plan,
    path: Option<&std::ffi::OsStr>,
    case: &str,
    moment: &dyn Fn() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    let mut child = spawn_driver(dir, "killed", plan, path);
    let waited = wait_until(case, Duration::from_secs(120), moment);
    child.kill();
    let killed = Instant::now();
    waited?;
    let pilots_left = match plan.pilots {
        Some(p) => Some(crate::pilot_cases::wait_pilots_gone(
            &plan.cache,
            Duration::from_secs(p.idle_s) + crate::pilot_cases::SLURM_SLACK,
            killed,
        )?),
        None => None,
    };
    let before = runs(plan);
    let keys = crate::keys_of(dir, "killed");
    let finished: Vec<usize> = (0..plan.n())
        .filter(|i| {
            keys.get(i)
                .is_some_and(|k| crate::stored(&plan.cache, k).0 == Some(true))
        })
        .collect();
    let done = finished
        .iter()
        .filter_map(|&i| crate::stored(&plan.cache, &keys[&i]).1.map(|b| (i, b)))
        .collect();
    let journaled = journal(&plan.cache);
    let rerun = run_driver(dir, "rerun", plan, BOUND)?;
    check_rerun(plan, &rerun, &done, &before, false)?;
    let after = runs(plan);
    // With pilots a task that ran at the kill (started, not finished) runs once more.
    let expected: Vec<usize> = (0..plan.n())
        .map(|i| match pilots_left {
            Some(_) if before[i] == 1 && !finished.contains(&i) => 2,
            _ => 1,
        })
        .collect();
    ensure!(
        after == expected,
        "runs per task {after:?}, expected {expected:?} (each task exactly once{})",
        if pilots_left.is_some() {
            ", those running on the dead driver's pilots twice"
        } else {
            ""
        }
    );
    let cached = (0..plan.n())
        .filter(|&i| rerun.count(i, "cached") == 1)
        .count();
    let submitted = journal(&plan.cache).difference(&journaled).count();
    record(Figures {
        case: case.to_string(),
        tasks: plan.n(),
        failed: plan.n() - finished.len(),
        recovered_in_run: 0,
        retries: 0,
        recovered_by_rerun: plan.n() - finished.len(),
        runs: after.iter().sum(),
        recover: rerun.elapsed,
        total: start.elapsed(),
        note: match pilots_left {
            None => format!(
                "killed with {} of {} tasks finished, {} started; the rerun answered {cached} from the cache, re-attached to the others' jobs and submitted {submitted} job(s)",
                finished.len(),
                plan.n(),
                before.iter().filter(|&&n| n > 0).count()
            ),
            Some(left) => format!(
                "killed with {} of {} tasks finished, {} started; the dead driver's pilots left {:.1} s after the kill; the rerun answered {cached} from the cache and ran the rest on new pilots",
                finished.len(),
                plan.n(),
                before.iter().filter(|&&n| n > 0).count(),
                left.as_secs_f64()
            ),
        },
    });
    Ok(())
}

/// e1. Killed while its second sbatch call has submitted the job but not yet printed its id
/// (sbatch wrapped to sleep there); the first wave (max_jobs 3) runs meanwhile.
fn killed_while_submitting(dir: &Path) -> Result<(), String> {
    let mut plan = Plan::new(dir, vec![3000; 9]);
    plan.max_jobs = Some(3);
    let accepted = dir.join("accepted");
    let path = wrapped_sbatch(
        dir,
        &format!(
            "if [ \"$(wc -l < \"$CALLS\")\" -ge 2 ]; then touch {}; sleep 60; fi\necho \"$out\"",
            accepted.display()
        ),
    )?;
    killed_driver(
        dir,
        &plan,
        Some(&path),
        "e. driver SIGKILLed while submitting",
        &|| accepted.exists(),
    )
}

/// e2. Killed while 4 of its 8 tasks run.
fn killed_mid_run(dir: &Path) -> Result<(), String> {
    let plan = Plan::new(dir, vec![5000; 8]);
    killed_driver(dir, &plan, None, "e. driver SIGKILLed mid-run", &|| {
        started(&plan) >= 4
    })
}

/// e3. Killed while results come in: tasks of staggered lengths, killed once 3 of 8 have
/// written their result.
fn killed_while_collecting(dir: &Path) -> Result<(), String> {
    let plan = Plan::new(dir, (0..8).map(|i| 1500 + 700 * i).collect());
    killed_driver(
        dir,
        &plan,
        None,
        "e. driver SIGKILLed while collecting",
        &|| {
            let keys = crate::keys_of(dir, "killed");
            keys.values()
                .filter(|k| crate::stored(&plan.cache, k).0 == Some(true))
                .count()
                >= 3
        },
    )
}

/// PATH with an `sbatch` first that logs its arguments to `$CALLS` (`dir/sbatch.calls`),
/// runs the real sbatch (its output in `$out`; a failure is passed on), then `then`.
pub(crate) fn wrapped_sbatch(dir: &Path, then: &str) -> Result<std::ffi::OsString, String> {
    let bin = dir.join("bin");
    let real = which("sbatch").ok_or("no sbatch on PATH")?;
    let script = format!(
        "#!/bin/sh\nCALLS={calls}\necho \"$@\" >> \"$CALLS\"\nout=$({real} \"$@\") || exit $?\n{then}\n",
        calls = dir.join("sbatch.calls").display(),
        real = real.display(),
    );
    write_wrapper(&bin, "sbatch", &script)?;
    path_with(bin)
}

/// g. sbatch's reply is lost: slurmctld accepted the job, but sbatch says it failed
/// ("Socket timed out on send/recv operation", what an overloaded slurmctld makes sbatch say;
/// the wrapped sbatch says it for its first call). The job exists and runs: the driver finds
/// it by its script (and says so), its tasks finish once, not as refused.
fn sbatch_reply_lost(dir: &Path) -> Result<(), String> {
    let plan = Plan::new(dir, vec![8000; 4]);
    let path = wrapped_sbatch(
        dir,
        "if [ \"$(wc -l < \"$CALLS\")\" -le 1 ]; then echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation' >&2; exit 1; fi\necho \"$out\"",
    )?;
    let start = Instant::now();
    let child = spawn_driver(dir, "first", &plan, Some(&path));
    let first = finish_driver(dir, "first", child, start, BOUND)?;
    if !first.failed().is_empty() {
        // What a user does next: run again (the job of the first run is still there).
        let rerun = run_driver(dir, "rerun", &plan, BOUND)?;
        std::thread::sleep(Duration::from_secs(2));
        return Err(format!(
            "the first run ended {} although its job {} was accepted and runs; the rerun \
             ({}) ran the tasks again: runs per task {:?}",
            first.summary(),
            std::fs::read_to_string(dir.join("sbatch.calls"))
                .map(|c| c.lines().count())
                .map(|n| format!("(1 of {n} sbatch calls)"))
                .unwrap_or_default(),
            rerun.summary(),
            runs(&plan)
        ));
    }
    ensure!(
        first
            .events
            .iter()
            .any(|e| e.kind == "warning" && e.rest.contains("said the submission failed")),
        "no warning about the job found after sbatch's failure"
    );
    let fault_end = start;
    conclude(
        dir,
        &plan,
        first,
        start,
        fault_end,
        Expect {
            case: "g. sbatch's reply lost",
            allowed: &none,
            max_runs: &once,
            note: "the first sbatch submitted its job but said it timed out".into(),
        },
    )
}

/// f. Tasks in the preemptable partition `lowprio` (on node n4) are preempted by a job of
/// `highprio` that wants the whole node. With `--requeue` Slurm requeues them (PreemptMode=
/// REQUEUE) and they finish in the first run; with `--no-requeue` Slurm cannot requeue them
/// and cancels them instead: they end `Scheduler(PREEMPTED)` and the rerun runs them.
fn preempted(dir: &Path, requeue: bool, retries: bool) -> Result<(), String> {
    let node = inject::last_node(&Slurm::from_env()?);
    let mut plan = Plan::new(dir, vec![10_000; 4]);
    plan.partition = Some("lowprio".into());
    plan.slurm_args = vec![format!("--nodelist={node}")];
    plan.requeue = Some(requeue);
    if retries {
        with_retries(&mut plan, "");
    }
    let run = inject::preempted(dir, &plan, 4)?;
    let r = runs(&plan);
    if requeue || retries {
        ensure!(
            r.iter().all(|&n| n == 2),
            "each preempted task ran again once: {r:?}"
        );
    }
    let note = format!(
        "4 tasks on {node} preempted by job {}, {}",
        run.what,
        match (requeue, retries) {
            (true, _) => "requeued by Slurm",
            (false, false) => "PREEMPTED",
            (false, true) => "PREEMPTED, retried by pitch",
        }
    );
    let all: Vec<usize> = (0..plan.n()).collect();
    conclude_lost(
        dir,
        &plan,
        run,
        Lost {
            tasks: &all,
            state: "PREEMPTED",
            recovery: recovery(requeue, retries),
        },
        match (requeue, retries) {
            (true, _) => "f. preempted, requeue on",
            (false, false) => "f. preempted, requeue off",
            (false, true) => "f. preempted, requeue off, max_retries 2",
        },
        note,
    )
}

fn preempted_requeue(dir: &Path) -> Result<(), String> {
    preempted(dir, true, false)
}

fn preempted_no_requeue(dir: &Path) -> Result<(), String> {
    preempted(dir, false, false)
}

fn preempted_retries(dir: &Path) -> Result<(), String> {
    preempted(dir, false, true)
}

/// f'. Packed jobs (`tasks_per_job 2`: each job runs its two tasks one after the other) in
/// `lowprio`, preempted once the first task of each job has finished and the second runs,
/// with `--requeue`: Slurm runs each job again from its start. A task whose result is
/// already stored must not run again; the second tasks do.
fn preempted_packed(dir: &Path) -> Result<(), String> {
    let slurm = Slurm::from_env()?;
    slurm.wait_healthy(Duration::from_secs(60))?;
    let node = format!("n{}", slurm.nodes);
    let mut plan = Plan::new(dir, vec![5000; 8]);
    plan.partition = Some("lowprio".into());
    plan.tasks_per_job = Some(2);
    plan.slurm_args = vec![format!("--nodelist={node}")];
    plan.requeue = Some(true);
    let start = Instant::now();
    let child = spawn_driver(dir, "first", &plan, None);
    let mut finished_before = Vec::new();
    let preemptor = (|| -> Result<String, String> {
        wait_until(
            "4 tasks finished, 4 running",
            Duration::from_secs(120),
            || {
                let keys = crate::keys_of(dir, "first");
                let done = keys
                    .values()
                    .filter(|k| crate::stored(&plan.cache, k).0 == Some(true))
                    .count();
                done >= 4 && started(&plan) >= 8
            },
        )?;
        let keys = crate::keys_of(dir, "first");
        finished_before = (0..plan.n())
            .filter(|i| {
                keys.get(i)
                    .is_some_and(|k| crate::stored(&plan.cache, k).0 == Some(true))
            })
            .collect();
        inject::preempt(&node)
    })();
    let fault_end = Instant::now();
    let first = finish_driver(dir, "first", child, start, BOUND)?;
    let preemptor = preemptor?;
    finished_before.sort();
    ensure!(
        first.failed().is_empty(),
        "with requeue on, tasks failed: {}",
        first.summary()
    );
    let r = runs(&plan);
    let again: Vec<usize> = finished_before
        .iter()
        .copied()
        .filter(|&i| r[i] > 1)
        .collect();
    ensure!(
        again.is_empty(),
        "tasks {again:?} had finished (result stored) before the preemption and ran again in \
         the requeued job (runs per task: {r:?})"
    );
    let done_first = finished_before.clone();
    conclude(
        dir,
        &plan,
        first,
        start,
        fault_end,
        Expect {
            case: "f. preempted packed jobs, requeue on",
            allowed: &none,
            max_runs: &|i, _| if done_first.contains(&i) { 1 } else { 2 },
            note: format!(
                "4 jobs of 2 tasks on {node} preempted by job {preemptor} after {} tasks finished, requeued by Slurm",
                finished_before.len()
            ),
        },
    )
}
