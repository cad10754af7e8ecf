//! One cause, one error (issue 15): the same failing programs on SingleNode, SlurmCluster and
//! SlurmJob (a driver inside an sbatch allocation) resolve to the same errors, field for
//! field (job ids aside), as the README's "Errors by cause" table says.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pitch::{Command, Resources, SingleNodeExecutor, TaskError};

use super::{executor, TestFn};
use crate::ensure;
use crate::failure_cases::{cases, differences};
use crate::slurm_tools::scancel;

pitch::task! {
    /// Touches `mib` MiB page by page and holds them 5 s; their sum.
    pub fn hog(mib: usize) -> u64 {
        let mut a = vec![0u8; mib << 20];
        for i in (0..a.len()).step_by(4096) {
            a[i] = 1;
        }
        std::thread::sleep(Duration::from_secs(5));
        a.iter().map(|&b| u64::from(b)).sum()
    }
}

/// Slurm's shortest time limit.
const LIMIT: Duration = Duration::from_secs(60);

pub(crate) const TESTS: &[(&str, TestFn)] = &[
    (
        "parity_the_same_failures_give_the_same_errors_on_every_backend",
        parity,
    ),
    (
        "parity_impossible_requests_are_rejected_not_queued",
        impossible_requests,
    ),
    (
        "parity_an_array_element_cancelled_while_pending_is_cancelled",
        cancelled_while_pending,
    ),
    (
        "parity_out_of_memory_is_the_schedulers_out_of_memory",
        out_of_memory,
    ),
];

/// How the local cluster enforces memory (`PITCH_SLURM_MEMORY` in its env.sh, written by
/// `cluster-tests/start-slurm.sh`): `cgroup` or `sampling`.
fn memory_enforcement() -> String {
    std::env::var("PITCH_SLURM_MEMORY").unwrap_or_default()
}

/// A task above its `memory_max`: where the cluster's cgroups enforce memory (as production
/// clusters do), the kernel kills it and Slurm ends the job OUT_OF_MEMORY, which is the
/// task's error (`Scheduler`, naming the job), for a command and for a function; a neighbour
/// in the same sweep within its memory is untouched. Where only slurmstepd's sampling
/// enforces it, Slurm kills the job step and says FAILED: that is the error then.
fn out_of_memory(dir: &Path) -> Result<(), String> {
    let mode = memory_enforcement();
    ensure!(
        mode == "cgroup" || mode == "sampling",
        "PITCH_SLURM_MEMORY is {mode:?}: source the env.sh of cluster-tests/start-slurm.sh"
    );
    let exe = executor(&dir.join("cache"));
    let small = exe.with_resources(Resources::new().memory_max(100 << 20));
    // 600 MiB touched page by page, then a pause for the sampling to see it.
    let hog = "import time\na = bytearray(600 << 20)\nfor i in range(0, len(a), 4096): a[i] = 1\ntime.sleep(5)\n";
    let command = small.submit_command(Command::new("python3").args(["-c", hog]));
    let function = hog::submit(&small, 600);
    let fine = small
        .submit_command(Command::new("python3").args(["-c", "print(len(bytearray(10 << 20)))"]));
    let want = if mode == "cgroup" {
        "OUT_OF_MEMORY"
    } else {
        "FAILED"
    };
    for (what, result) in [
        ("the command", command.result().map(|_| ())),
        ("the function", function.result().map(|_| ())),
    ] {
        match result {
            Err(TaskError::Scheduler { state, job_id, .. }) => ensure!(
                state.as_str() == want && !job_id.is_empty(),
                "{what}: {state} (job {job_id}), expected {want} ({mode} enforcement)"
            ),
            other => return Err(format!("{what}: expected Scheduler({want}), got {other:?}")),
        }
    }
    let out = fine
        .result()
        .map_err(|e| format!("the task within its memory: {e}"))?;
    ensure!(
        out.read_stdout().unwrap_or_default().trim() == "10485760",
        "{:?}",
        out.read_stdout()
    );
    Ok(())
}

/// Inside an allocation: `slurm-parity-driver OUT DIR` runs the cases with
/// SlurmJobExecutor and writes `name\terror` lines to OUT.
pub(crate) fn driver(out: &Path, dir: &Path) -> i32 {
    let exe = match pitch::SlurmJobExecutor::builder()
        .cache_directory(dir.join("slurm-job-cache"))
        .build()
    {
        Ok(exe) => exe,
        Err(e) => {
            std::fs::write(out, format!("error\t{e}\n")).unwrap();
            return 1;
        }
    };
    let text: String = cases(&exe, dir, LIMIT)
        .into_iter()
        .map(|(name, e)| format!("{name}\t{}\n", e.replace('\n', "\\n")))
        .collect();
    std::fs::write(out.with_extension("tmp"), text).unwrap();
    std::fs::rename(out.with_extension("tmp"), out).unwrap();
    0
}

fn parity(dir: &Path) -> Result<(), String> {
    // SlurmJob: a driver in a 2-node allocation, started first (it waits in the queue).
    let out = dir.join("slurm-job.txt");
    let submitted = std::process::Command::new("sbatch")
        .args(["--parsable", "-N2", "-n4", "--output"])
        .arg(dir.join("driver.out"))
        .arg(format!(
            "--wrap={} slurm-parity-driver {} {}",
            std::env::current_exe().unwrap().display(),
            out.display(),
            dir.display()
        ))
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        submitted.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let single = std::thread::scope(|s| {
        let single = s.spawn(|| {
            let exe = SingleNodeExecutor::builder()
                .cache_directory(dir.join("single-node-cache"))
                .build()
                .expect("a single-node executor");
            cases(&exe, dir, LIMIT)
        });
        let cluster = cases(&executor(&dir.join("slurm-cluster-cache")), dir, LIMIT);
        (single.join().expect("single node cases"), cluster)
    });
    let (single, cluster) = single;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    let job_text = std::fs::read_to_string(&out).map_err(|e| {
        format!(
            "no SlurmJob report ({e}); driver output: {}",
            std::fs::read_to_string(dir.join("driver.out")).unwrap_or_default()
        )
    })?;
    let job: BTreeMap<String, String> = job_text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.replace("\\n", "\n")))
        .collect();
    let diffs = differences(&single, &[("SlurmCluster", &cluster), ("SlurmJob", &job)]);
    for (name, e) in &single {
        eprintln!("  {name}: {e}");
    }
    ensure!(diffs.is_empty(), "errors differ:\n{}", diffs.join("\n"));
    Ok(())
}

/// What the cluster can never give is refused: at once when the partition's limits say so
/// (`Executor::check` too), and after a confirmation tick when only the queue does
/// (`PartitionConfig`), the job then cancelled; a warning of an accepted sbatch is an event.
fn impossible_requests(dir: &Path) -> Result<(), String> {
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let w = warnings.clone();
    let exe = pitch::SlurmClusterExecutor::builder()
        .cache_directory(dir.join("cache"))
        .poll_interval(Duration::from_millis(500))
        .max_poll_interval(Duration::from_secs(2))
        .nfs_grace(Duration::from_secs(1))
        .reporter(move |e: &pitch::Event| {
            if let pitch::EventKind::Warning { message } = &e.kind {
                w.lock().unwrap().push(message.clone());
            }
        })
        .build()
        .map_err(|e| e.to_string())?;
    let huge = Resources::new().cores(1000);
    ensure!(
        exe.check(&huge).is_err(),
        "check says a 1000-core task can run"
    );
    for (what, r) in [
        ("cores = 1000", huge),
        ("num_nodes = 50", Resources::new().num_nodes(50)),
    ] {
        match exe
            .with_resources(r)
            .submit_command(Command::new("true"))
            .result()
        {
            Err(TaskError::Rejected { reason, .. }) => eprintln!("  {what}: {reason}"),
            other => return Err(format!("{what}: expected Rejected, got {other:?}")),
        }
    }
    ensure!(
        std::fs::read_dir(dir.join("cache/jobs"))
            .map(|d| d
                .flatten()
                .all(|e| e.path().extension().is_none_or(|x| x != "job")))
            .unwrap_or(true),
        "a refused request was submitted"
    );
    // Only the queue tells: pending with PartitionConfig, for ever.
    let start = Instant::now();
    let f = exe
        .with_resources(Resources::new().slurm_cmd_arg("--ntasks=1000"))
        .submit_command(Command::new("true"));
    match f.result() {
        Err(TaskError::Rejected { reason, .. }) => {
            ensure!(reason.contains("PartitionConfig"), "{reason}");
        }
        other => return Err(format!("expected Rejected, got {other:?}")),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    let id = f.job_id().ok_or("no job id")?;
    let out = std::process::Command::new("squeue")
        .args(["-h", "-j", &id, "-t", "PENDING"])
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the stuck job is still queued: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Accepted with a warning: said.
    let ok = exe
        .with_resources(Resources::new().slurm_cmd_arg("--nodes=50"))
        .submit_command(Command::new("true").arg("warned"))
        .result();
    ensure!(ok.is_ok(), "{ok:?}");
    let said = warnings.lock().unwrap().clone();
    ensure!(
        said.iter()
            .any(|w| w.contains("sbatch accepted job") && w.contains("nnodes")),
        "no warning event: {said:?}"
    );
    Ok(())
}

/// A held array's element scancelled while pending: CANCELLED, saying so, although Slurm
/// keeps no record of it (not UNKNOWN "accounting is off", not PENDING).
fn cancelled_while_pending(dir: &Path) -> Result<(), String> {
    let exe = executor(&dir.join("cache")).with_resources(Resources::new().slurm_cmd_arg("--hold"));
    let futures = exe.map_commands((0..3).map(|i| Command::new("echo").arg(i.to_string())));
    let ids: Vec<String> = futures.iter().filter_map(|f| f.wait_job_id()).collect();
    ensure!(ids.len() == 3 && ids[1].contains('_'), "one array: {ids:?}");
    scancel(&ids[1])?;
    let r = futures[1].result();
    let array = ids[1].split('_').next().unwrap_or_default().to_string();
    // The array's other elements: their end is not this test's concern.
    let _ = scancel(&array);
    match r {
        Err(TaskError::Scheduler { state, detail, .. }) => {
            ensure!(state == "CANCELLED", "{state}: {detail}");
        }
        other => return Err(format!("expected CANCELLED, got {other:?}")),
    }
    for f in [&futures[0], &futures[2]] {
        ensure!(f.result().is_err(), "a cancelled held element succeeded");
    }
    Ok(())
}
