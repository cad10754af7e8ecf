//! FluxJobExecutor against a fake `flux` on PATH (`tests/e2e/fake-flux/flux`): Flux cannot be
//! installed on the CI machines, so these tests check the recorded `flux` command lines and
//! run the tasks the way Flux's job shell would (ranks side by side with FLUX_TASK_RANK and
//! FLUX_JOB_SIZE, the highest exit code, exit-on-error), never against a real Flux.
//!
//! Each test runs in a child process of the test binary (`e2e flux-driver NAME`) whose
//! environment has the fake `flux` first on PATH, FLUX_URI set (or not) and the call log
//! named: the driver's environment is set when it starts, never with `std::env::set_var`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitch::{Command, Executor, FluxJobExecutor, Resources, TaskError};

use crate::ensure;
use crate::mpi::{
    every_rank_answers, rank_one_fails_and_stops_the_others, rank_zero_answers, sorted_lines,
};
use crate::single_node::{add, temp, Collect};

const LOG_ENV: &str = "PITCH_FAKE_FLUX_LOG";

/// The test name after `flux::`, and the function the driver process runs.
const DRIVERS: &[(&str, crate::TestFn)] = &[
    ("function_task_runs_as_one_flux_run", function_task),
    ("command_task_and_its_flux_options", command_task),
    ("two_ranks_under_flux", two_ranks),
    ("a_failing_rank_stops_the_others", failing_rank),
    ("run_time_max_is_pitchs_timeout", timeout),
    ("ignored_keys_warn_once", ignored_keys_driver),
    ("max_cores_above_the_instance", max_cores_driver),
    ("unreadable_resource_info", unreadable_resource_info),
    ("outside_an_instance", outside_driver),
];

macro_rules! in_instance {
    ($($name:ident),* $(,)?) => {
        $(fn $name() -> Result<(), String> {
            run_driver(stringify!($name), true, &[])
        })*
    };
}

// The tests the runner lists: each runs its driver inside a (fake) Flux instance.
in_instance!(
    function_task_runs_as_one_flux_run,
    command_task_and_its_flux_options,
    two_ranks_under_flux,
    a_failing_rank_stops_the_others,
    run_time_max_is_pitchs_timeout,
    ignored_keys_warn_once,
    max_cores_above_the_instance,
);

pub(crate) const TESTS: &[(&str, crate::TestFn)] = &[
    (
        "flux::function_task_runs_as_one_flux_run",
        function_task_runs_as_one_flux_run,
    ),
    (
        "flux::command_task_and_its_flux_options",
        command_task_and_its_flux_options,
    ),
    ("flux::two_ranks_under_flux", two_ranks_under_flux),
    (
        "flux::a_failing_rank_stops_the_others",
        a_failing_rank_stops_the_others,
    ),
    (
        "flux::run_time_max_is_pitchs_timeout",
        run_time_max_is_pitchs_timeout,
    ),
    ("flux::ignored_keys_warn_once", ignored_keys_warn_once),
    (
        "flux::max_cores_above_the_instance",
        max_cores_above_the_instance,
    ),
    (
        "flux::unreadable_resource_info",
        unreadable_resource_info_outer,
    ),
    ("flux::outside_an_instance", outside_an_instance),
];

/// The command that runs the driver `name` (`e2e SUBCOMMAND NAME`) with the fake `flux` first
/// on PATH, the call log `flux.log` in `dir`, and no FLUX_URI.
pub(crate) fn driver_command(
    subcommand: &str,
    name: &str,
    dir: &Path,
) -> Result<std::process::Command, String> {
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fake-flux");
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![fake];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs).map_err(|e| e.to_string())?
        }
        None => fake.into_os_string(),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([subcommand, name])
        .env("PATH", path)
        .env(LOG_ENV, dir.join("flux.log"))
        .env_remove("FLUX_URI");
    Ok(cmd)
}

/// Runs the driver `name` in a child process with the fake `flux` first on PATH, FLUX_URI set
/// when `inside`, a fresh call log, and `extra` variables.
fn run_driver(name: &str, inside: bool, extra: &[(&str, &str)]) -> Result<(), String> {
    let dir = temp();
    let mut cmd = driver_command("flux-driver", name, dir.path())?;
    if inside {
        cmd.env("FLUX_URI", "local:///run/fake-flux/local");
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run the driver: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "driver {name} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn unreadable_resource_info_outer() -> Result<(), String> {
    run_driver(
        "unreadable_resource_info",
        true,
        &[("PITCH_FAKE_FLUX_INFO", "resources: plenty")],
    )?;
    run_driver(
        "unreadable_resource_info",
        true,
        &[(
            "PITCH_FAKE_FLUX_INFO_FAIL",
            "the resource module is not loaded",
        )],
    )
}

/// The driver's entry (`e2e flux-driver NAME`): runs one test, prints its error, exits 1.
pub(crate) fn driver(name: &str) -> i32 {
    crate::run_driver_named(DRIVERS, "flux", name)
}

/// Every `flux` call the driver made so far, one line each.
pub(crate) fn calls() -> Result<Vec<String>, String> {
    let path = PathBuf::from(std::env::var_os(LOG_ENV).ok_or("no call log")?);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(String::from).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn flux_executor(cache: &Path) -> Result<Executor, String> {
    FluxJobExecutor::builder()
        .cache_directory(cache)
        .build()
        .map_err(|e| e.to_string())
}

fn exe_path() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn function_task() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?;
    let f = add::submit(&exe, 2, 3);
    ensure!(f.result() == Ok(5), "{:?}", f.result());
    let calls = calls()?;
    ensure!(calls.len() == 2, "{calls:#?}");
    ensure!(calls[0] == "resource info -s up", "{calls:#?}");
    let expected: Vec<String> = [dir.path().to_path_buf(), dir.path().canonicalize().unwrap()]
        .iter()
        .map(|root| {
            format!(
                "run -n 1 -c 1 -o exit-on-error {} __pitch-worker run {} {}",
                exe_path(),
                root.display(),
                f.key()
            )
        })
        .collect();
    ensure!(
        expected.contains(&calls[1]),
        "{:?} not in {expected:#?}",
        calls[1]
    );
    Ok(())
}

fn command_task() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?;
    let out = exe
        .with_resources(Resources::new().cores(2))
        .submit_command(
            Command::new("sh").args(["-c", "echo rank $FLUX_TASK_RANK of $FLUX_JOB_SIZE"]),
        )
        .result()
        .map_err(|e| e.to_string())?;
    let lines = sorted_lines(&out);
    ensure!(lines == ["rank 0 of 2", "rank 1 of 2"], "{lines:?}");
    // Every option pitch maps, in one command line.
    let big = exe.with_resources(
        Resources::new()
            .cores(2)
            .threads_per_core(2)
            .num_nodes(2)
            .run_time_max(Duration::from_secs(90))
            .exclusive(true)
            .partition("debug"),
    );
    let out = big
        .submit_command(Command::new("true"))
        .result()
        .map_err(|e| e.to_string())?;
    ensure!(out.exit_code == 0, "{out:?}");
    // A command exiting 3 on one rank fails the task with that code.
    let failed = exe
        .with_resources(Resources::new().cores(2))
        .submit_command(Command::new("sh").args(["-c", "exit $((FLUX_TASK_RANK * 3))"]))
        .result();
    ensure!(
        matches!(&failed, Err(TaskError::CommandFailed { code: 3, .. })),
        "{failed:?}"
    );
    let calls = calls()?;
    ensure!(
        calls[1..]
            == [
                "run -n 2 -c 1 -o exit-on-error sh -c echo rank $FLUX_TASK_RANK of $FLUX_JOB_SIZE",
                "run -n 2 -c 2 -N 2 -t 90s --exclusive -q debug -o exit-on-error true",
                "run -n 2 -c 1 -o exit-on-error sh -c exit $((FLUX_TASK_RANK * 3))",
            ],
        "{calls:#?}"
    );
    // A task Flux could not run is refused before flux is called.
    let refused = exe
        .with_resources(Resources::new().exclusive(true))
        .submit_command(Command::new("true"))
        .result();
    match refused {
        Err(TaskError::Rejected { backend, reason }) => {
            ensure!(backend == "flux-job", "{backend}");
            ensure!(reason.contains("needs num_nodes"), "{reason}");
        }
        other => return Err(format!("expected a rejection, got {other:?}")),
    }
    let after = self::calls()?;
    ensure!(
        after.len() == 4,
        "flux was called for a refused task: {after:#?}"
    );
    Ok(())
}

fn two_ranks() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?.with_resources(Resources::new().cores(2));
    rank_zero_answers(&exe)?;
    every_rank_answers(&exe)?;
    let calls = calls()?;
    ensure!(
        calls.len() == 3 && calls[1..].iter().all(|c| c.starts_with("run -n 2 -c 1 ")),
        "{calls:#?}"
    );
    Ok(())
}

fn failing_rank() -> Result<(), String> {
    let dir = temp();
    // Only exit-on-error stops the other rank early.
    rank_one_fails_and_stops_the_others(
        &flux_executor(dir.path())?.with_resources(Resources::new().cores(2)),
    )
}

fn timeout() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?
        .with_resources(Resources::new().run_time_max(Duration::from_millis(1500)));
    let start = Instant::now();
    let r = exe.submit_command(Command::new("sleep").arg("30")).result();
    ensure!(
        r == Err(TaskError::Timeout {
            limit: Duration::from_millis(1500)
        }),
        "{r:?}"
    );
    ensure!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let calls = calls()?;
    ensure!(
        calls[1] == "run -n 1 -c 1 -t 2s -o exit-on-error sleep 30",
        "{calls:#?}"
    );
    Ok(())
}

fn ignored_keys_driver() -> Result<(), String> {
    let dir = temp();
    let seen = Collect::default();
    let exe = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .reporter(seen.clone())
        .build()
        .map_err(|e| e.to_string())?
        .with_resources(Resources::new().slurm_cmd_arg("--mem=1G").account("proj"));
    let warnings = seen.two_tasks_warn_once_about(&exe, &["slurm_cmd_args", "account"])?;
    ensure!(
        warnings.iter().all(|w| w.contains("flux-job")),
        "{warnings:#?}"
    );
    let calls = calls()?;
    ensure!(
        calls[1..]
            == [
                "run -n 1 -c 1 -o exit-on-error true 0",
                "run -n 1 -c 1 -o exit-on-error true 1"
            ],
        "slurm_cmd_args or account reached flux: {calls:#?}"
    );
    Ok(())
}

fn max_cores_driver() -> Result<(), String> {
    let dir = temp();
    let err = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .max_cores(5)
        .build()
        .err()
        .ok_or("max_cores = 5 on a 4-core instance was accepted")?
        .to_string();
    ensure!(
        err.contains("max_cores = 5 but the Flux instance's core count is 4"),
        "{err}"
    );
    // At the instance's size it builds, and a task above max_cores is refused.
    let exe = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .max_cores(2)
        .build()
        .map_err(|e| e.to_string())?;
    let r = exe
        .with_resources(Resources::new().cores(3))
        .submit_command(Command::new("true"))
        .result();
    ensure!(matches!(r, Err(TaskError::Rejected { .. })), "{r:?}");
    Ok(())
}

fn unreadable_resource_info() -> Result<(), String> {
    let dir = temp();
    let err = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .build()
        .err()
        .ok_or("built an executor from an unreadable flux resource info")?
        .to_string();
    ensure!(err.contains("`flux resource info -s up`"), "{err}");
    let expected = match std::env::var("PITCH_FAKE_FLUX_INFO_FAIL") {
        Ok(message) => message,
        Err(_) => "expected one line like \"2 Nodes, 8 Cores, 0 GPUs\"".to_string(),
    };
    ensure!(err.contains(&expected), "{err}");
    Ok(())
}

/// Outside an instance (no FLUX_URI) build() says so and never calls flux.
fn outside_an_instance() -> Result<(), String> {
    run_driver("outside_an_instance", false, &[])
}

fn outside_driver() -> Result<(), String> {
    let dir = temp();
    let err = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .build()
        .err()
        .ok_or("FluxJobExecutor built without FLUX_URI")?
        .to_string();
    for needle in ["FLUX_URI", "FluxClusterExecutor", "SingleNodeExecutor"] {
        ensure!(err.contains(needle), "{needle} not in {err}");
    }
    ensure!(calls()?.is_empty(), "flux was called: {:?}", calls()?);
    Ok(())
}
