//! End-to-end tests of the SingleNode backend through the public API. The test binary is also
//! the worker (it is re-executed per task), so it has its own `main` (`harness = false`):
//! `pitch::init()` must see the worker arguments before the test harness would. The harness
//! is `libtest-mimic`, so the usual test options work: filters, `--exact`, `--list`,
//! `--ignored`, `--test-threads`, and `cargo nextest run --test e2e`.
//!
//! `flux::` tests run FluxJobExecutor, and `flux_cluster::` and `flux_pilot::` (the faults
//! of its pilot jobs) tests FluxClusterExecutor, against a real Flux instance when FLUX_URI
//! names one (cluster-tests/start-flux.sh; PITCH_REAL_FLUX=1 makes a missing instance a
//! failure instead of a skip), through a shim that records each `flux` call
//! (`tests/e2e/flux-shim`); the fake `flux` of `tests/e2e/fake-flux` is kept for an error path
//! a real Flux cannot produce on demand. They run each test's driver in a child process
//! (`e2e flux-driver NAME`, `e2e flux-cluster-driver NAME`, `e2e flux-pilot-driver NAME`)
//! whose environment is set at start.
//!
//! Run one test: `cargo test --test e2e -- NAME_SUBSTRING` (or `-- --exact single_node::NAME`).
//! The tests are independent (each has its own temporary directories and executor; the flux
//! tests' environments are set on their child processes) and run side by side, on as many
//! threads as the machine has cores unless `--test-threads` or RUST_TEST_THREADS says
//! otherwise. Their time limits are upper bounds with room for a loaded machine.

mod checkpoint;
#[path = "../common/failure_cases.rs"]
mod failure_cases;
mod flux;
mod flux_cluster;
mod flux_pilot;
#[path = "../common/long_sum.rs"]
mod long_sum;
mod mpi;
#[path = "../common/pilot_cases.rs"]
mod pilot_cases;
mod pool;
mod security;
mod single_node;
#[path = "../common/submission.rs"]
mod submission;

use libtest_mimic::{Arguments, Failed, Trial};

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub(crate) type TestFn = fn() -> Result<(), String>;

/// Fails the test with a message.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// Runs the driver `name` of `drivers` (in a child process the test started): exit 0 when
/// it passes, 1 with its error on stderr, 2 when there is no such driver.
pub(crate) fn run_driver_named(drivers: &[(&str, TestFn)], kind: &str, name: &str) -> i32 {
    let Some((_, test)) = drivers.iter().find(|(n, _)| *n == name) else {
        eprintln!("no {kind} driver named {name:?}");
        return 2;
    };
    match test() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn main() {
    pitch::init();
    // A FluxJobExecutor test's driver, started by the test with the shim (or the fake) on PATH.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("flux-driver") {
        std::process::exit(flux::driver(args.get(2).map_or("", String::as_str)));
    }
    // A FluxClusterExecutor test's driver, started the same way.
    if args.get(1).map(String::as_str) == Some("flux-cluster-driver") {
        std::process::exit(flux_cluster::driver(args.get(2).map_or("", String::as_str)));
    }
    // A FluxClusterExecutor pilot test's driver, started the same way.
    if args.get(1).map(String::as_str) == Some("flux-pilot-driver") {
        std::process::exit(flux_pilot::driver(args.get(2).map_or("", String::as_str)));
    }
    // The pilot driver flux_pilot::driver_killed kills and reruns: `flux-pilot-sweep CACHE LOG N`.
    if args.get(1).map(String::as_str) == Some("flux-pilot-sweep") {
        std::process::exit(flux_pilot::sweep_driver(&args[2..]));
    }
    // The FluxJobExecutor pool's driver (pool::flux_job_pool), inside the real Flux.
    if args.get(1).map(String::as_str) == Some("pool-flux-driver") {
        let dir = std::path::PathBuf::from(args.get(3).map_or("", String::as_str));
        std::process::exit(pool::flux_driver(&dir));
    }
    // A pooled driver that a test kills (pool::no_orphans).
    if args.get(1).map(String::as_str) == Some("pool-driver") {
        std::process::exit(pool::driver(args.get(2).map_or("", String::as_str)));
    }
    // The test environment (not the library) lets OpenMPI run as root, as CI does.
    // SAFETY: no other thread exists yet.
    if unsafe { libc_geteuid() } == 0 {
        std::env::set_var("OMPI_ALLOW_RUN_AS_ROOT", "1");
        std::env::set_var("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = test_threads_from_env();
    }
    // Without a Flux instance the real-Flux tests are reported as ignored (under
    // PITCH_REAL_FLUX=1 they run and fail instead).
    let no_flux = matches!(flux::real_flux(), Ok(None));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    let trials = [
        single_node::TESTS,
        checkpoint::TESTS,
        mpi::TESTS,
        flux::TESTS,
        flux_cluster::TESTS,
        flux_pilot::TESTS,
        pool::TESTS,
        security::TESTS,
    ]
    .into_iter()
    .flatten()
    .map(|&(name, test)| {
        Trial::test(name, move || test().map_err(Failed::from)).with_ignored_flag(
            (no_flux && (flux::needs_real_flux(name) || pool::NEEDS_REAL_FLUX.contains(&name)))
                || (!root && security::needs_root(name)),
        )
    })
    .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// RUST_TEST_THREADS, which libtest honours and libtest-mimic does not.
fn test_threads_from_env() -> Option<usize> {
    std::env::var("RUST_TEST_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
}
