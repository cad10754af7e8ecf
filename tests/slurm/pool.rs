//! `SlurmJobExecutor` with `block_allocation(true)` inside a real sbatch allocation of 2
//! nodes: worker steps (`srun --exact`) that connect back to the driver, the init function
//! once per worker, a worker step killed mid-task and replaced, a cancel, and 2-rank steps
//! across both nodes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use pitch::{Resources, TaskError};

use crate::ensure;

pitch::task! {
    /// The init function: one file per (node, pid) that ran it.
    pub fn slurm_pool_init(dir: std::path::PathBuf) -> u32 {
        let c = pitch::context();
        std::fs::write(dir.join(format!("init-{}-{}-{}", c.node, std::process::id(), c.rank)), b"").unwrap();
        std::process::id()
    }
}

pitch::task! {
    /// (node, pid, the worker's init value, rank, size).
    pub fn slurm_pool_where(_i: u64) -> Result<(String, u32, u32, u32, u32), pitch::WorkerStateError> {
        let c = pitch::context();
        Ok((c.node, std::process::id(), *pitch::worker_state::<u32>()?, c.rank, c.size))
    }
}

pitch::task! {
    /// Writes its pid to `dir/victim` and sleeps.
    pub fn slurm_pool_victim(dir: std::path::PathBuf, ms: u64) -> u32 {
        std::fs::write(dir.join("victim.tmp"), std::process::id().to_string()).unwrap();
        std::fs::rename(dir.join("victim.tmp"), dir.join("victim")).unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}

pub(crate) const TESTS: &[(&str, crate::TestFn)] =
    &[("slurm_job_pool_inside_an_allocation", slurm_job_pool)];

/// `slurm-pool-driver DIR`, run by sbatch: the checks, reported in DIR/report.
pub(crate) fn driver(dir: &Path) -> i32 {
    let report = (|| -> Result<String, String> {
        let marks = dir.join("marks");
        std::fs::create_dir_all(&marks).map_err(|e| e.to_string())?;
        let exe = pitch::SlurmJobExecutor::builder()
            .cache_directory(dir.join("cache"))
            .block_allocation(true)
            .max_workers(2)
            .init_function(slurm_pool_init::init(marks.clone()))
            .build()
            .map_err(|e| e.to_string())?;
        let out =
            pitch::wait_all(slurm_pool_where::map(&exe, 0..200)).map_err(|e| e.to_string())?;
        for (node, pid, init, rank, size) in &out {
            ensure!(
                pid == init && *rank == 0 && *size == 1,
                "{node} {pid} {init} {rank}/{size}"
            );
        }
        let inits = std::fs::read_dir(&marks)
            .map_err(|e| e.to_string())?
            .count();
        ensure!(inits == 2, "{inits} init runs for 2 workers");
        // A worker step killed under its task: the task fails, naming the worker; the step is
        // replaced and the pool goes on.
        let victim = slurm_pool_victim::submit(&exe, dir.to_path_buf(), 60_000);
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid = loop {
            if let Ok(t) = std::fs::read_to_string(dir.join("victim")) {
                break t.trim().to_string();
            }
            ensure!(Instant::now() < deadline, "the victim never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .map_err(|e| e.to_string())?;
        match victim.result() {
            Err(e) => ensure!(e.to_string().contains("pool worker"), "{e}"),
            Ok(v) => return Err(format!("the killed task returned {v}")),
        }
        // Cancel: the step running it is stopped and replaced.
        let long = slurm_pool_victim::submit(&exe, dir.join("marks"), 60_000);
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        long.cancel();
        ensure!(
            long.result() == Err(TaskError::Cancelled),
            "{:?}",
            long.result()
        );
        ensure!(
            start.elapsed() < Duration::from_secs(10),
            "cancel took {:?}",
            start.elapsed()
        );
        let again = pitch::wait_all(slurm_pool_where::map(&exe.with_cache(false), 0..50))
            .map_err(|e| e.to_string())?;
        ensure!(again.len() == 50, "after the kills");
        drop(exe);
        // 2-rank worker steps spread over both nodes: every rank runs every task.
        let wide = pitch::SlurmJobExecutor::builder()
            .cache_directory(dir.join("cache2"))
            .block_allocation(true)
            .max_workers(1)
            .resources(Resources::new().cores(2).num_nodes(2))
            .init_function(slurm_pool_init::init(marks.clone()))
            .build()
            .map_err(|e| e.to_string())?;
        let ranks = slurm_pool_where::submit_ranks(&wide, 7)
            .result()
            .map_err(|e| e.to_string())?;
        ensure!(ranks.len() == 2, "{ranks:?}");
        let nodes: BTreeSet<&String> = ranks.iter().map(|r| &r.0).collect();
        ensure!(nodes.len() == 2, "ranks on {nodes:?}");
        for (i, r) in ranks.iter().enumerate() {
            ensure!(r.3 == i as u32 && r.4 == 2, "{ranks:?}");
        }
        Ok(format!("ok {} tasks", out.len()))
    })();
    let text = match report {
        Ok(t) => t,
        Err(e) => format!("error {e}"),
    };
    std::fs::write(dir.join("report"), text).unwrap();
    0
}

fn slurm_job_pool(dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().unwrap();
    let submitted = std::process::Command::new("sbatch")
        .args(["--parsable", "-N2", "-n4", "--output"])
        .arg(dir.join("driver.out"))
        .arg(format!(
            "--wrap={} slurm-pool-driver {}",
            exe.display(),
            dir.display()
        ))
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        submitted.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let report = dir.join("report");
    let deadline = Instant::now() + Duration::from_secs(180);
    while !report.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = std::fs::read_to_string(&report).map_err(|e| {
        format!(
            "no report ({e}); driver output: {}",
            std::fs::read_to_string(dir.join("driver.out")).unwrap_or_default()
        )
    })?;
    ensure!(
        text.starts_with("ok "),
        "{text}\ndriver output: {}",
        std::fs::read_to_string(dir.join("driver.out")).unwrap_or_default()
    );
    Ok(())
}
