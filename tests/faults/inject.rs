//! The faults, each injected into the first run of a plan's driver once enough of its tasks
//! run: shared by the cases of one job per task (`cases.rs`) and those of pilot jobs
//! (`pilot_cases.rs`), which differ in their plans and in what they then expect.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::cases::{busiest_node, started, BOUND};
use crate::cluster::{Slurm, Tmpfs};
use crate::{ensure, finish_driver, spawn_driver, wait_until, Plan, Run};

/// The first run of a driver that had a fault.
pub(crate) struct Injected<T> {
    pub first: Run,
    /// When the driver started.
    pub start: Instant,
    /// When the fault was over (the daemon back, the space freed, the job cancelled...).
    pub fault_end: Instant,
    /// What the fault says of itself (the node crashed and its tasks, the preemptor's job).
    pub what: T,
}

/// Starts the first driver of `plan`, waits until `running` of its tasks have started, then
/// injects `fault`. If that fails, `restore` puts the cluster back, the driver is killed and
/// the case fails. Returns the first run once the driver has ended (at most `BOUND`).
pub(crate) fn inject<T>(
    dir: &Path,
    plan: &Plan,
    running: usize,
    fault: impl FnOnce() -> Result<T, String>,
    restore: impl FnOnce(),
) -> Result<Injected<T>, String> {
    let start = Instant::now();
    let child = spawn_driver(dir, "first", plan, None);
    let injected = wait_until(
        &format!("{running} tasks running"),
        Duration::from_secs(90),
        || started(plan) >= running,
    )
    .and_then(|()| fault());
    let what = match injected {
        Ok(what) => what,
        Err(e) => {
            restore();
            return Err(e);
        }
    };
    let fault_end = Instant::now();
    let first = finish_driver(dir, "first", child, start, BOUND)?;
    Ok(Injected {
        first,
        start,
        fault_end,
        what,
    })
}

/// The cluster, healthy (a node left down by an earlier case is resumed).
fn healthy() -> Result<Slurm, String> {
    let slurm = Slurm::from_env()?;
    slurm.wait_healthy(Duration::from_secs(60))?;
    Ok(slurm)
}

/// slurmctld stopped (SIGTERM: it saves its state) for 20 s once `running` tasks run, and
/// started again from its StateSaveLocation.
pub(crate) fn controller_down(
    dir: &Path,
    plan: &Plan,
    running: usize,
) -> Result<Injected<()>, String> {
    let slurm = healthy()?;
    let run = inject(
        dir,
        plan,
        running,
        || {
            slurm.stop_controller()?;
            std::thread::sleep(Duration::from_secs(20));
            slurm.start_controller()
        },
        || {
            let _ = slurm.start_controller();
        },
    )?;
    slurm.wait_healthy(Duration::from_secs(60))?;
    Ok(run)
}

/// The node that runs most of the driver's tasks crashes once `running` tasks run: its
/// slurmd, slurmstepds and job processes SIGKILLed at once, the node marked down; slurmd
/// comes back 10 s later. The node and the tasks (sorted) that ran there.
pub(crate) fn node_crash(
    dir: &Path,
    plan: &Plan,
    running: usize,
) -> Result<Injected<(String, Vec<usize>)>, String> {
    node_fault(dir, plan, running, true)
}

/// Only the slurmd of the node that runs most of the driver's tasks is killed (SIGKILL) once
/// `running` tasks run, and started again 15 s later: its jobs run on. The node and the
/// tasks (sorted) that ran there.
pub(crate) fn slurmd_killed(
    dir: &Path,
    plan: &Plan,
    running: usize,
) -> Result<Injected<(String, Vec<usize>)>, String> {
    node_fault(dir, plan, running, false)
}

/// A node crash (`crash`) or its slurmd alone killed.
fn node_fault(
    dir: &Path,
    plan: &Plan,
    running: usize,
    crash: bool,
) -> Result<Injected<(String, Vec<usize>)>, String> {
    let slurm = healthy()?;
    let run = inject(
        dir,
        plan,
        running,
        || {
            let (node, mut tasks) = busiest_node(&slurm, dir);
            ensure!(!tasks.is_empty(), "no task of the sweep runs on any node");
            tasks.sort();
            if crash {
                slurm.crash_node(&node)?;
            } else {
                slurm.kill_slurmd(&node)?;
            }
            std::thread::sleep(Duration::from_secs(if crash { 10 } else { 15 }));
            slurm.start_slurmd(&node)?;
            Ok((node, tasks))
        },
        || {
            let _ = slurm.wait_healthy(Duration::from_secs(60));
        },
    )?;
    slurm.wait_healthy(Duration::from_secs(60))?;
    eprintln!(
        "  {} {} with tasks {:?}",
        if crash {
            "crashed"
        } else {
            "killed the slurmd of"
        },
        run.what.0,
        run.what.1
    );
    Ok(run)
}

/// The cache's file system `fs` (a tmpfs, `plan.cache` in it) filled by a file once
/// `running` tasks run, and freed 10 s later.
pub(crate) fn cache_full(
    dir: &Path,
    plan: &Plan,
    fs: &Tmpfs,
    running: usize,
) -> Result<Injected<()>, String> {
    inject(
        dir,
        plan,
        running,
        || {
            let file = fs.fill("filler")?;
            std::thread::sleep(Duration::from_secs(10));
            std::fs::remove_file(file).map_err(|e| e.to_string())
        },
        || {},
    )
}

/// A tmpfs for a cache directory: the driver's binary (the cache keeps a copy for the jobs)
/// and 64 MiB.
pub(crate) fn cache_fs(dir: &Path) -> Result<Tmpfs, String> {
    let exe_size = std::fs::metadata(std::env::current_exe().unwrap())
        .map_err(|e| e.to_string())?
        .len();
    Tmpfs::mount(&dir.join("fs"), exe_size + (64 << 20))
}

/// The tasks of `plan` (in the preemptable partition `lowprio`, on the last node) are
/// preempted once `running` of them run, by a job of `highprio` that wants the whole node.
/// The preemptor's job id.
pub(crate) fn preempted(
    dir: &Path,
    plan: &Plan,
    running: usize,
) -> Result<Injected<String>, String> {
    let slurm = healthy()?;
    let node = last_node(&slurm);
    inject(dir, plan, running, || preempt(&node), || {})
}

/// The node the preemption cases use (`n4`).
pub(crate) fn last_node(slurm: &Slurm) -> String {
    format!("n{}", slurm.nodes)
}

/// Submits the preemptor: a job of `highprio` that wants the whole `node` for 5 s (it
/// preempts the `lowprio` jobs there); its job id.
pub(crate) fn preempt(node: &str) -> Result<String, String> {
    let out = std::process::Command::new("sbatch")
        .args([
            "--parsable",
            "-p",
            "highprio",
            "--exclusive",
            "-o",
            "/dev/null",
        ])
        .arg(format!("--nodelist={node}"))
        .arg("--wrap=sleep 5")
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "sbatch -p highprio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
