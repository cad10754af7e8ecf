//! FluxJobExecutor against a real Flux instance: these tests run when FLUX_URI names an
//! instance and `flux` is on PATH (cluster-tests/start-flux.sh starts one; `.ci/run` sets
//! PITCH_REAL_FLUX=1, which makes a missing instance a failure, not a skip). Each task is a
//! job submitted through libflux; every test runs again with PITCH_FLUX_SUBMIT=flux-run
//! (`flux_run::NAME`), where each task is a `flux run` process. A shim first on the driver's
//! PATH (`tests/e2e/flux-shim/flux`) records each `flux` call and runs the real one; the jobs
//! submitted through libflux are read back from Flux (`flux job info --original ID jobspec`).
//! The fake `flux` of `tests/e2e/fake-flux` is kept only for error paths a real Flux cannot
//! produce on demand (an unreadable `flux resource info`), the check that no `flux` is called
//! outside an instance, and an unknown PITCH_FLUX_SUBMIT; those tests say so.
//!
//! Each test runs in a child process of the test binary (`e2e flux-driver NAME`) whose
//! environment has the shim (or the fake) first on PATH, FLUX_URI set (or not) and the call
//! log named: the driver's environment is set when it starts, never with `std::env::set_var`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pitch::{Command, Executor, FluxJobExecutor, Resources, TaskError};

use crate::ensure;
use crate::mpi::{
    every_rank_answers, rank_one_fails_and_stops_the_others, rank_zero_answers, sorted_lines,
};
use crate::single_node::{add, temp, Collect};

#[path = "flux_native.rs"]
mod native;
use native::submissions;

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
    ("cancel_ends_the_flux_job", cancel_driver),
    ("ranks_and_local_ranks_from_flux", ranks_driver),
    (
        "flux_refusing_the_job_is_a_rejection",
        flux_refusing_the_job,
    ),
    ("unreadable_resource_info", unreadable_resource_info),
    ("outside_an_instance", outside_driver),
    ("the_warning_reaches_a_flux_run_job", warning_driver),
    (
        "without_libflux_tasks_are_flux_runs",
        native::without_libflux_driver,
    ),
    ("a_task_reading_stdin_is_a_flux_run", native::stdin_driver),
    ("output_files_of_a_flux_job", native::output_driver),
    ("jobs_wait_in_fluxs_queue", native::queue_ahead_driver),
    ("an_unknown_submission_mode", native::unknown_mode_driver),
];

macro_rules! in_instance {
    ($($name:ident),* $(,)?) => {
        $(fn $name() -> Result<(), String> {
            run_real_driver("flux-driver", stringify!($name), &[])
        })*
        /// The same drivers with each task a `flux run` process (`PITCH_FLUX_SUBMIT=flux-run`,
        /// the path pitch falls back to where libflux cannot be used).
        mod flux_run {
            $(pub(super) fn $name() -> Result<(), String> {
                super::run_real_driver(
                    "flux-driver",
                    stringify!($name),
                    &[(super::SUBMIT_ENV, "flux-run")],
                )
            })*
        }
    };
}

/// `flux-run`: every task is a `flux run` process; unset: submitted through libflux.
const SUBMIT_ENV: &str = "PITCH_FLUX_SUBMIT";

/// Whether this driver's tasks are `flux run` processes (PITCH_FLUX_SUBMIT=flux-run).
fn through_flux_run() -> bool {
    std::env::var(SUBMIT_ENV).as_deref() == Ok("flux-run")
}

/// The events of every executor `flux_executor` built in this driver.
fn seen() -> Collect {
    static SEEN: std::sync::OnceLock<Collect> = std::sync::OnceLock::new();
    SEEN.get_or_init(Collect::default).clone()
}

// The tests the runner lists: each runs its driver inside the real Flux instance.
in_instance!(
    function_task_runs_as_one_flux_run,
    command_task_and_its_flux_options,
    two_ranks_under_flux,
    a_failing_rank_stops_the_others,
    run_time_max_is_pitchs_timeout,
    ignored_keys_warn_once,
    max_cores_above_the_instance,
    cancel_ends_the_flux_job,
    flux_refusing_the_job_is_a_rejection,
    the_warning_reaches_a_flux_run_job,
    output_files_of_a_flux_job,
);

/// Through libflux, with all of the instance's cores, twice the cores' worth of tasks are
/// submitted at once (Flux queues what does not fit); with `max_cores` set, no more than
/// those cores.
fn jobs_wait_in_fluxs_queue() -> Result<(), String> {
    run_real_driver("flux-driver", "jobs_wait_in_fluxs_queue", &[])
}

/// Where libflux cannot be loaded (`PITCH_LIBFLUX` names a file that is not there), each
/// task is a `flux run` process and a warning event says why.
fn without_libflux_tasks_are_flux_runs() -> Result<(), String> {
    run_real_driver(
        "flux-driver",
        "without_libflux_tasks_are_flux_runs",
        &[("PITCH_LIBFLUX", "/nonexistent/libflux-core.so.2")],
    )
}

/// A command given the driver's stdin runs through `flux run` (which forwards it), even where
/// the other tasks are submitted through libflux.
fn a_task_reading_stdin_is_a_flux_run() -> Result<(), String> {
    run_real_driver("flux-driver", "a_task_reading_stdin_is_a_flux_run", &[])
}

/// SLURM_* variables in the driver's environment (a Flux instance Slurm started passes them
/// on) must not decide the ranks of a task `flux run` started.
fn ranks_and_local_ranks_from_flux() -> Result<(), String> {
    run_real_driver(
        "flux-driver",
        "ranks_and_local_ranks_from_flux",
        &[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_JOB_ID", "77"),
        ],
    )
}

pitch::task! {
    /// The rank, size and local rank pitch gives this rank.
    pub fn my_ranks() -> (u32, u32, u32) {
        let ctx = pitch::context();
        (ctx.rank, ctx.size, ctx.local_rank)
    }
}

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
    ("flux::cancel_ends_the_flux_job", cancel_ends_the_flux_job),
    (
        "flux::the_warning_reaches_a_flux_run_job",
        the_warning_reaches_a_flux_run_job,
    ),
    (
        "flux::ranks_and_local_ranks_from_flux",
        ranks_and_local_ranks_from_flux,
    ),
    (
        "flux::flux_refusing_the_job_is_a_rejection",
        flux_refusing_the_job_is_a_rejection,
    ),
    (
        "flux::unreadable_resource_info",
        unreadable_resource_info_outer,
    ),
    ("flux::outside_an_instance", outside_an_instance),
    (
        "flux::without_libflux_tasks_are_flux_runs",
        without_libflux_tasks_are_flux_runs,
    ),
    (
        "flux::a_task_reading_stdin_is_a_flux_run",
        a_task_reading_stdin_is_a_flux_run,
    ),
    (
        "flux::output_files_of_a_flux_job",
        output_files_of_a_flux_job,
    ),
    ("flux::jobs_wait_in_fluxs_queue", jobs_wait_in_fluxs_queue),
    (
        "flux::an_unknown_submission_mode",
        an_unknown_submission_mode,
    ),
    (
        "flux::flux_run::function_task_runs_as_one_flux_run",
        flux_run::function_task_runs_as_one_flux_run,
    ),
    (
        "flux::flux_run::command_task_and_its_flux_options",
        flux_run::command_task_and_its_flux_options,
    ),
    (
        "flux::flux_run::two_ranks_under_flux",
        flux_run::two_ranks_under_flux,
    ),
    (
        "flux::flux_run::a_failing_rank_stops_the_others",
        flux_run::a_failing_rank_stops_the_others,
    ),
    (
        "flux::flux_run::run_time_max_is_pitchs_timeout",
        flux_run::run_time_max_is_pitchs_timeout,
    ),
    (
        "flux::flux_run::ignored_keys_warn_once",
        flux_run::ignored_keys_warn_once,
    ),
    (
        "flux::flux_run::max_cores_above_the_instance",
        flux_run::max_cores_above_the_instance,
    ),
    (
        "flux::flux_run::cancel_ends_the_flux_job",
        flux_run::cancel_ends_the_flux_job,
    ),
    (
        "flux::flux_run::flux_refusing_the_job_is_a_rejection",
        flux_run::flux_refusing_the_job_is_a_rejection,
    ),
    (
        "flux::flux_run::the_warning_reaches_a_flux_run_job",
        flux_run::the_warning_reaches_a_flux_run_job,
    ),
    (
        "flux::flux_run::output_files_of_a_flux_job",
        flux_run::output_files_of_a_flux_job,
    ),
];

/// Whether the test `name` needs a real Flux instance: every Flux test but the three that run
/// against the fake `flux` (error paths a real Flux does not produce on demand).
pub(crate) fn needs_real_flux(name: &str) -> bool {
    const FAKE_ONLY: &[&str] = &[
        "flux::unreadable_resource_info",
        "flux::outside_an_instance",
        "flux::an_unknown_submission_mode",
    ];
    name.starts_with("flux") && !FAKE_ONLY.contains(&name)
}

/// The real `flux` the tests run against: the first `flux` on PATH when FLUX_URI names an
/// instance. `None` (the real-Flux tests are skipped) without one, unless PITCH_REAL_FLUX=1
/// asks for it: then a missing instance is an error. PITCH_REAL_FLUX=0 never uses one.
pub(crate) fn real_flux() -> Result<Option<PathBuf>, String> {
    let wanted = std::env::var("PITCH_REAL_FLUX").ok();
    if wanted.as_deref() == Some("0") {
        return Ok(None);
    }
    let required = wanted.as_deref() == Some("1");
    let uri = std::env::var_os("FLUX_URI").filter(|u| !u.is_empty());
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("flux"))
            .find(|f| f.is_file() && !f.starts_with(Path::new(env!("CARGO_MANIFEST_DIR"))))
    });
    match (uri, found) {
        (Some(_), Some(flux)) => Ok(Some(flux)),
        _ if required => Err(
            "PITCH_REAL_FLUX=1 but there is no Flux instance: FLUX_URI unset or no flux on \
             PATH (cluster-tests/start-flux.sh starts one; source its env.sh)"
                .into(),
        ),
        _ => Ok(None),
    }
}

/// The real `flux` of a driver that runs against one.
pub(crate) fn real_bin() -> PathBuf {
    PathBuf::from(std::env::var_os(REAL_ENV).expect("a real-Flux driver"))
}

const REAL_ENV: &str = "PITCH_REAL_FLUX_BIN";

/// The command that runs the driver `name` (`e2e SUBCOMMAND NAME`) with the call log
/// `flux.log` in `dir`: against the real `flux` (through the recording shim first on PATH,
/// FLUX_URI kept) when `real` names it, else with the fake `flux` first on PATH and no
/// FLUX_URI.
pub(crate) fn driver_command(
    subcommand: &str,
    name: &str,
    dir: &Path,
    real: Option<&Path>,
) -> Result<std::process::Command, String> {
    let first = Path::new(env!("CARGO_MANIFEST_DIR")).join(if real.is_some() {
        "tests/e2e/flux-shim"
    } else {
        "tests/e2e/fake-flux"
    });
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![first];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs).map_err(|e| e.to_string())?
        }
        None => first.into_os_string(),
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([subcommand, name])
        .env("PATH", path)
        .env(LOG_ENV, dir.join("flux.log"));
    match real {
        Some(flux) => cmd.env(REAL_ENV, flux),
        None => cmd.env_remove("FLUX_URI").env_remove(REAL_ENV),
    };
    Ok(cmd)
}

/// Runs the driver `name` against the real Flux instance, or says it is skipped when there
/// is none (an error under PITCH_REAL_FLUX=1).
pub(crate) fn run_real_driver(
    subcommand: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<(), String> {
    let Some(flux) = real_flux()? else {
        println!("    (skipped {name}: no Flux instance; FLUX_URI unset)");
        return Ok(());
    };
    let dir = temp();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).map_err(|e| e.to_string())?;
    let mut cmd = driver_command(subcommand, name, dir.path(), Some(&flux))?;
    cmd.env("PITCH_FAKE_FLUX_STATE", &state);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run the driver: {e}"))?;
    let leftovers = cancel_submitted(&flux, &state);
    if !out.status.success() {
        return Err(format!(
            "driver {name} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    ensure!(
        leftovers.is_empty(),
        "the test left Flux jobs active: {leftovers:?}"
    );
    Ok(())
}

/// Cancels the jobs the driver submitted with `flux batch` (the shim recorded them in
/// `state/submitted`) that are still active; their ids.
fn cancel_submitted(flux: &Path, state: &Path) -> Vec<u64> {
    let ids: Vec<String> = std::fs::read_to_string(state.join("submitted"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let out = std::process::Command::new(flux)
        .args(["jobs", "--no-header", "--format={id.dec}|{state}"])
        .args(&ids)
        .output();
    let active: Vec<u64> = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(_, s)| *s != "INACTIVE")
        .filter_map(|(id, _)| id.parse().ok())
        .collect();
    if !active.is_empty() {
        let _ = std::process::Command::new(flux)
            .arg("cancel")
            .args(active.iter().map(u64::to_string))
            .output();
    }
    active
}

/// Runs the driver `name` in a child process with the fake `flux` first on PATH (an error
/// path a real Flux cannot produce on demand), FLUX_URI set when `inside`, a fresh call log,
/// and `extra` variables.
fn run_driver(name: &str, inside: bool, extra: &[(&str, &str)]) -> Result<(), String> {
    let dir = temp();
    let mut cmd = driver_command("flux-driver", name, dir.path(), None)?;
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

/// Fake Flux: `flux resource info` failing or printing nonsense, which a real Flux does not
/// do on demand.
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

/// A queue of the instance (`debug` when it has one, else the first by name), or none when
/// the instance configures no queues: `flux config get queues` prints them as a JSON object.
fn a_queue() -> Result<Option<String>, String> {
    let out = std::process::Command::new("flux")
        .args(["config", "get", "queues"])
        .output()
        .map_err(|e| format!("cannot run flux config get queues: {e}"))?;
    if !out.status.success() {
        return Ok(None); // "queues is not set"
    }
    let queues: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("flux config get queues: {e}"))?;
    let mut names: Vec<String> = queues.keys().cloned().collect();
    names.sort();
    Ok(names
        .iter()
        .find(|n| *n == "debug")
        .or(names.first())
        .cloned())
}

fn flux_executor(cache: &Path) -> Result<Executor, String> {
    FluxJobExecutor::builder()
        .cache_directory(cache)
        .reporter(seen())
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
    ensure!(calls[0] == "resource info -s up", "{calls:#?}");
    let runs = submissions()?;
    ensure!(runs.len() == 1, "{runs:#?}");
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
        expected.contains(&runs[0]),
        "{:?} not in {expected:#?}",
        runs[0]
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
    // Every option pitch maps, in one command line; the queue is one the instance has
    // (the test instance has `debug`; another instance may have others, or none).
    let queue = a_queue()?;
    let mut resources = Resources::new()
        .cores(2)
        .threads_per_core(2)
        .num_nodes(2)
        .run_time_max(Duration::from_secs(90))
        .exclusive(true);
    if let Some(q) = &queue {
        resources = resources.partition(q.as_str());
    }
    let big = exe.with_resources(resources);
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
    let runs = submissions()?;
    let queue_option = queue.map(|q| format!(" -q {q}")).unwrap_or_default();
    ensure!(
        runs == [
            "run -n 2 -c 1 -o exit-on-error sh -c echo rank $FLUX_TASK_RANK of $FLUX_JOB_SIZE",
            &format!("run -n 2 -c 2 -N 2 -t 90s --exclusive{queue_option} -o exit-on-error true"),
            "run -n 2 -c 1 -o exit-on-error sh -c exit $((FLUX_TASK_RANK * 3))",
        ],
        "{runs:#?}"
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
        after.len() == calls.len() && submissions()?.len() == runs.len(),
        "flux was called for a refused task: {after:#?}"
    );
    Ok(())
}

fn two_ranks() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?.with_resources(Resources::new().cores(2));
    rank_zero_answers(&exe)?;
    every_rank_answers(&exe)?;
    let runs = submissions()?;
    ensure!(
        runs.len() == 2 && runs.iter().all(|c| c.starts_with("run -n 2 -c 1 ")),
        "{runs:#?}"
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
    let runs = submissions()?;
    ensure!(
        runs == ["run -n 1 -c 1 -t 2s -o exit-on-error sleep 30"],
        "{runs:#?}"
    );
    Ok(())
}

/// Checkpoint and requeue (issue 16) on FluxJob: SIGUSR1 to `flux run` at `run_time_max -
/// checkpoint_grace`, which passes it on to the job: a command that traps it exits 75; a
/// function task checkpoints and, with `max_retries(1)`, resumes and finishes.
fn warning_driver() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?.with_resources(
        Resources::new()
            .run_time_max(Duration::from_secs(6))
            .checkpoint_grace(Duration::from_secs(3))
            .max_retries(1),
    );
    let command = exe.submit_command(
        Command::new("sh").args(["-c", "trap 'exit 75' USR1; while :; do sleep 0.1; done"]),
    );
    let log = dir.path().join("log");
    let sum = crate::checkpoint::long_sum::submit(&exe, 60, 100, log.clone());
    match command.result() {
        // The command's one attempt and its retry both asked to be run again.
        Err(TaskError::GaveUp { attempts }) => ensure!(
            attempts.len() == 2
                && attempts
                    .iter()
                    .all(|a| matches!(a.error, TaskError::Checkpointed { .. })),
            "{attempts:#?}"
        ),
        other => return Err(format!("command: {other:?}")),
    }
    let (total, resumed_from) = sum.result().map_err(|e| e.report().to_string())?;
    ensure!(total == 60 * 59 / 2, "sum {total}");
    let starts = std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        resumed_from > 0 && starts == format!("0\n{resumed_from}\n"),
        "attempts started from {starts:?}"
    );
    Ok(())
}

fn ignored_keys_driver() -> Result<(), String> {
    let dir = temp();
    let seen = Collect::default();
    let exe = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .reporter(seen.clone())
        .reporter(self::seen())
        .build()
        .map_err(|e| e.to_string())?
        .with_resources(Resources::new().slurm_cmd_arg("--mem=1G").account("proj"));
    let warnings = seen.two_tasks_warn_once_about(&exe, &["slurm_cmd_args", "account"])?;
    ensure!(
        warnings.iter().all(|w| w.contains("flux-job")),
        "{warnings:#?}"
    );
    let runs = submissions()?;
    ensure!(
        runs == [
            "run -n 1 -c 1 -o exit-on-error true 0",
            "run -n 1 -c 1 -o exit-on-error true 1"
        ],
        "slurm_cmd_args or account reached flux: {runs:#?}"
    );
    Ok(())
}

/// The instance's core count, as `flux resource info -s up` says (asked of the real flux,
/// not through the recording shim).
pub(crate) fn instance_cores() -> Result<u32, String> {
    let out = std::process::Command::new(real_bin())
        .args(["resource", "info", "-s", "up"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "4 Nodes, 8 Cores, 0 GPUs"
    text.split(',')
        .find_map(|f| f.trim().strip_suffix(" Cores"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or(format!("flux resource info -s up: {text:?}"))
}

fn max_cores_driver() -> Result<(), String> {
    let dir = temp();
    let cores = instance_cores()?;
    let err = FluxJobExecutor::builder()
        .cache_directory(dir.path())
        .max_cores(cores + 1)
        .build()
        .err()
        .ok_or("max_cores above the instance's core count was accepted")?
        .to_string();
    let expected = format!(
        "max_cores = {} but the Flux instance's core count is {cores}",
        cores + 1
    );
    ensure!(err.contains(&expected), "{err}");
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

/// Fake Flux (only `flux resource info` is needed): a PITCH_FLUX_SUBMIT that is neither
/// `native` nor `flux-run` is an error of build(), not ignored.
fn an_unknown_submission_mode() -> Result<(), String> {
    run_driver(
        "an_unknown_submission_mode",
        true,
        &[(SUBMIT_ENV, "flux-batch")],
    )
}

/// Outside an instance (no FLUX_URI) build() says so and never calls flux: the fake `flux`
/// on PATH only records that it was not called (no Flux is needed).
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

/// What Flux says of job `id` (any id form): its state, asked of the real flux.
pub(crate) fn flux_state(id: &str) -> Result<String, String> {
    let out = std::process::Command::new(real_bin())
        .args(["jobs", "--no-header", "--format={state}", id])
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Cancelling a task whose program ignores SIGTERM ends its Flux job: killing `flux run`
/// alone would leave the job running in the instance.
fn cancel_driver() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?;
    let id_file = dir.path().join("jobid");
    let script = format!(
        "echo $FLUX_JOB_ID > {}; trap '' TERM; exec sleep 120",
        id_file.display()
    );
    let f = exe.submit_command(Command::new("sh").args(["-c", &script]));
    let start = Instant::now();
    let id = loop {
        let text = std::fs::read_to_string(&id_file).unwrap_or_default();
        if !text.trim().is_empty() {
            break text.trim().to_string();
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "the task did not start: {:?}",
            f.done()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(flux_state(&id)? == "RUN", "{id}: {}", flux_state(&id)?);
    f.cancel();
    ensure!(f.result() == Err(TaskError::Cancelled), "{:?}", f.result());
    let start = Instant::now();
    loop {
        let state = flux_state(&id)?;
        if state == "INACTIVE" {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "job {id} is still {state} after the cancel"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `pitch::context()` under `flux run -N 2 -n 4`: each rank's own rank and its local rank on
/// its node (FLUX_TASK_LOCAL_ID), whatever SLURM_* variables the driver had.
fn ranks_driver() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?;
    let mut seen =
        my_ranks::submit_ranks(&exe.with_resources(Resources::new().cores(4).num_nodes(2)))
            .result()
            .map_err(|e| e.to_string())?;
    seen.sort();
    // Flux puts ranks 0 and 1 on the first node, 2 and 3 on the second.
    ensure!(
        seen == [(0, 4, 0), (1, 4, 1), (2, 4, 0), (3, 4, 1)],
        "{seen:?}"
    );
    Ok(())
}

/// A `flux run` Flux refuses (an unknown queue; a task bigger than any node) is a rejected
/// submission, not the task failing with exit code 1.
fn flux_refusing_the_job() -> Result<(), String> {
    let dir = temp();
    let exe = flux_executor(dir.path())?;
    let r = exe
        .with_resources(Resources::new().partition("nosuchqueue"))
        .submit_command(Command::new("true"))
        .result();
    match r {
        Err(TaskError::Rejected { backend, reason }) => {
            ensure!(backend == "flux-job", "{backend}");
            let prefix = if through_flux_run() {
                "flux run refused the job: "
            } else {
                "Flux refused the job: "
            };
            ensure!(reason.starts_with(prefix), "{reason}");
            ensure!(reason.contains("nosuchqueue"), "{reason}");
        }
        other => return Err(format!("expected a rejection, got {other:?}")),
    }
    // All of the instance's cores for one task on one node: no node has that many.
    let cores = instance_cores()?;
    let r = exe
        .with_resources(Resources::new().threads_per_core(cores).num_nodes(1))
        .submit_command(Command::new("true"))
        .result();
    match r {
        Err(TaskError::Rejected { reason, .. }) => {
            ensure!(reason.contains("unsatisfiable request"), "{reason}")
        }
        other => return Err(format!("expected a rejection, got {other:?}")),
    }
    Ok(())
}
