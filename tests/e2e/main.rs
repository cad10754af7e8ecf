//! End-to-end tests of the SingleNode backend through the public API. The test binary is also
//! the worker (it is re-executed per task), so it has its own small runner (`harness = false`):
//! `pitch::init()` must see the worker arguments before any test harness would.
//!
//! `flux::` tests run FluxJobExecutor against the fake `flux` of `tests/e2e/fake-flux` (its
//! `flux resource info` and `flux run`); `flux_cluster::` tests run FluxClusterExecutor against
//! the same script as a small stateful batch scheduler (`flux batch` with `# flux:` directives,
//! afterok dependencies, time limits and F58 job ids; `flux jobs`; `flux cancel`), its state in
//! the directory PITCH_FAKE_FLUX_STATE. Both run each test's driver in a child process
//! (`e2e flux-driver NAME`, `e2e flux-cluster-driver NAME`) whose environment is set at start.
//!
//! Run one test: `cargo test --test e2e -- NAME_SUBSTRING`.

mod flux;
mod flux_cluster;
mod mpi;
mod pool;
mod single_node;

use std::time::Instant;

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
    // A FluxJobExecutor test's driver, started by the test with the fake flux on PATH.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("flux-driver") {
        std::process::exit(flux::driver(args.get(2).map_or("", String::as_str)));
    }
    // A FluxClusterExecutor test's driver, started the same way.
    if args.get(1).map(String::as_str) == Some("flux-cluster-driver") {
        std::process::exit(flux_cluster::driver(args.get(2).map_or("", String::as_str)));
    }
    // The FluxJobExecutor pool's driver (pool::flux_job_pool), with the fake flux on PATH.
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
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut tests: Vec<(&str, TestFn)> = Vec::new();
    tests.extend(single_node::TESTS.iter().copied());
    tests.extend(mpi::TESTS.iter().copied());
    tests.extend(flux::TESTS.iter().copied());
    tests.extend(flux_cluster::TESTS.iter().copied());
    tests.extend(pool::TESTS.iter().copied());
    let selected: Vec<_> = tests
        .into_iter()
        .filter(|(name, _)| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())))
        .collect();
    println!("running {} tests", selected.len());
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for (name, test) in selected {
        let start = Instant::now();
        let outcome = std::panic::catch_unwind(test).unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()))
        });
        let ms = start.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({ms} ms)");
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED ({ms} ms)");
                failures.push((name, e));
            }
        }
    }
    for (name, e) in &failures {
        println!("\n---- {name} ----\n{e}");
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    std::process::exit(if failed == 0 { 0 } else { 101 });
}
