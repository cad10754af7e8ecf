//! FluxClusterExecutor pilot jobs (`block_allocation(true)`, each pilot a `flux batch` job)
//! against the real Flux instance, in their faults: a pilot cancelled with `flux cancel`
//! under its task (rerun on another pilot, recorded once; without retries, the scheduler's
//! error), the driver killed with SIGKILL and rerun (its pilots leave, no task recorded
//! twice), a pilot reaching its wall time (the jobspec's duration) while work is left (it
//! drains and a replacement runs the rest), and connections with a wrong secret (refused,
//! a warning event). The cases are those of the real-Slurm suite (`tests/slurm/pilot.rs`),
//! whose bodies they share (`tests/common/pilot_cases.rs`); the sweep, the warned wall time
//! and pilots of two ranks are in `flux_cluster.rs`.
//!
//! As there, each test runs in a child process of the test binary (`e2e flux-pilot-driver
//! NAME`) with the recording shim first on PATH; skipped without a Flux instance, failed
//! under PITCH_REAL_FLUX=1 without one. The killed driver is a child of that one
//! (`e2e flux-pilot-sweep CACHE LOG N`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pitch::Resources;

use crate::ensure;
use crate::flux::real_bin;
use crate::flux_cluster::{builder, every_job_ends, wait_for_state};
use crate::pilot_cases::{self, Scheduler};
use crate::single_node::temp;

/// The test name after `flux_pilot::`, and the function the driver process runs.
const DRIVERS: &[(&str, crate::TestFn)] = &[
    ("pilot_cancelled_mid_task", cancelled),
    ("pilot_driver_killed_and_rerun", driver_killed),
    ("pilot_wall_time_drain_and_replacement", drain),
    ("pilot_wrong_secret_refused", wrong_secret),
];

macro_rules! outer {
    ($($name:ident),* $(,)?) => {
        $(fn $name() -> Result<(), String> {
            crate::flux::run_real_driver("flux-pilot-driver", stringify!($name), &[])
        })*
        pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
            $((concat!("flux_pilot::", stringify!($name)), $name)),*
        ];
    };
}

mod outer {
    outer!(
        pilot_cancelled_mid_task,
        pilot_driver_killed_and_rerun,
        pilot_wall_time_drain_and_replacement,
        pilot_wrong_secret_refused,
    );
}
pub(crate) use outer::TESTS;

/// The driver's entry (`e2e flux-pilot-driver NAME`): runs one test, prints its error,
/// exits 1.
pub(crate) fn driver(name: &str) -> i32 {
    crate::run_driver_named(DRIVERS, "flux_pilot", name)
}

/// How long an idle pilot waits for work (and one whose driver went silent).
const IDLE: Duration = Duration::from_secs(5);

/// Pilots of wall time `wall` on `cache`.
fn pilots(cache: &Path, wall: Duration) -> pitch::FluxClusterBuilder {
    builder(cache)
        .block_allocation(true)
        .pilot_address("127.0.0.1")
        .idle_timeout(IDLE)
        .resources(Resources::new().run_time_max(wall))
}

/// The real `flux` (not the recording shim) with `args`; its standard output.
fn flux(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(real_bin())
        .args(args)
        .output()
        .map_err(|e| format!("flux {args:?}: {e}"))?;
    ensure!(
        out.status.success(),
        "flux {args:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A job id as a pilot's task sees it (FLUX_ENCLOSING_ID, in F58) as pitch reports it
/// (decimal).
fn decimal(job: &str) -> Result<String, String> {
    ensure!(!job.is_empty(), "the task ran outside a Flux job");
    flux(&["job", "id", "--to=dec", job])
}

fn flux_cancel(job: &str) -> Result<(), String> {
    flux(&["cancel", job]).map(drop)
}

/// The pilot jobs of the cache directory's executors that Flux lists as active.
fn live_pilots(cache: &Path) -> Result<Vec<String>, String> {
    let name = format!(
        "{}-pilot",
        pitch::Cache::open(cache)
            .map_err(|e| e.to_string())?
            .job_name()
    );
    Ok(flux(&[
        "jobs",
        "--no-header",
        "--filter=active",
        &format!("--name={name}"),
        "--format={id.dec} {state}",
    ])?
    .lines()
    .map(String::from)
    .collect())
}

const FLUX: Scheduler = Scheduler {
    job_id: &decimal,
    cancel: &flux_cancel,
    live_pilots: &live_pilots,
};

/// `flux cancel` on a pilot under its task: with the default retry the task runs again on
/// another pilot and is recorded once; without retries it fails with the pilot's job, ended
/// Cancelled. The two cases run side by side (each its own executor and cache directory).
fn cancelled() -> Result<(), String> {
    let dir = temp();
    let (retried, not_retried) = std::thread::scope(|s| {
        let retried = s.spawn(|| {
            let cache = dir.path().join("cache");
            let exe = pilots(&cache, Duration::from_secs(600))
                .max_workers(2)
                .build()
                .map_err(|e| e.to_string())?;
            pilot_cases::cancelled_mid_task(exe, &cache, &dir.path().join("marks"), &FLUX)
        });
        let cache = dir.path().join("cache-no-retry");
        let not_retried = pilots(&cache, Duration::from_secs(600))
            .max_retries(0)
            .build()
            .map_err(|e| e.to_string())
            .and_then(|exe| {
                let marks = dir.path().join("marks-no-retry");
                pilot_cases::cancelled_without_retry(exe, &cache, &marks, &FLUX)
            });
        (retried.join(), not_retried)
    });
    retried.map_err(|_| "the retried case panicked".to_string())??;
    not_retried?;
    every_job_ends(Duration::from_secs(30))
}

/// `e2e flux-pilot-sweep CACHE LOG N`: N tasks of one second each through 2 pilots.
pub(crate) fn sweep_driver(args: &[String]) -> i32 {
    let [cache, log, n] = args else {
        eprintln!("usage: e2e flux-pilot-sweep CACHE LOG N, not {args:?}");
        return 2;
    };
    let Ok(n) = n.parse() else {
        eprintln!("flux-pilot-sweep: N is not a number: {n:?}");
        return 2;
    };
    let exe = pilots(Path::new(cache), Duration::from_secs(600))
        .max_workers(2)
        .build()
        .map_err(|e| e.to_string());
    pilot_cases::driver(exe, Path::new(log), n)
}

/// The driver killed with SIGKILL while its pilots run tasks: they leave within the idle
/// timeout; the rerun records each task once and runs no recorded task again.
fn driver_killed() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let log = dir.path().join("steps.log");
    let n = 8;
    let spawn = || {
        std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .arg("flux-pilot-sweep")
            .arg(&cache)
            .arg(&log)
            .arg(n.to_string())
            .spawn()
            .map_err(|e| e.to_string())
    };
    pilot_cases::driver_killed(&cache, &log, n, IDLE, &spawn, &FLUX)?;
    every_job_ends(Duration::from_secs(30))
}

/// Pilots of 30 s (Flux's jobspec duration; less pitch's 10 s margin) whose batch script
/// first spends 5 s on its own: the wall time runs from the job's start, so 3 tasks of 3 s
/// that each ask for 7 s fit in the first (counted from its connection, all 5 would); it
/// drains, ending COMPLETED (not by Flux's time limit), and a replacement runs the rest.
fn drain() -> Result<(), String> {
    let dir = temp();
    let template =
        pilot_cases::slow_start_template("flux.sh.j2", dir.path(), Duration::from_secs(5))?;
    let d = pilot_cases::Drain {
        wall: Duration::from_secs(30),
        task_limit: Duration::from_secs(7),
        task_ms: 3000,
    };
    let exe = pilots(&dir.path().join("cache"), d.wall)
        .template(&template)
        .max_workers(1)
        .build()
        .map_err(|e| e.to_string())?;
    let first = pilot_cases::drain(&exe, &dir.path().join("steps.log"), &d)?;
    drop(exe);
    let first = decimal(&first)?;
    let id = first.parse().map_err(|e| format!("job id {first}: {e}"))?;
    let r = wait_for_state(id, "INACTIVE", Duration::from_secs(30))?;
    ensure!(
        r[2] == "COMPLETED",
        "the first pilot {first} ended {r:?}, not by draining"
    );
    every_job_ends(Duration::from_secs(30))
}

/// A peer with a wrong secret and a stranger: refused, each a warning event; the executor's
/// own pilot still gets in.
fn wrong_secret() -> Result<(), String> {
    let dir = temp();
    let cache = dir.path().join("cache");
    let port = pilot_cases::free_port()?;
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let exe = pilots(&cache, Duration::from_secs(600))
        .pilot_address(format!("127.0.0.1:{port}"))
        .reporter(pilot_cases::warnings_into(&warnings))
        .build()
        .map_err(|e| e.to_string())?;
    pilot_cases::wrong_secret(&exe, &cache, port, &warnings)?;
    drop(exe);
    every_job_ends(Duration::from_secs(30))
}
