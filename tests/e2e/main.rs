//! End-to-end tests of the SingleNode backend through the public API. The test binary is also
//! the worker (it is re-executed per task), so it has its own small runner (`harness = false`):
//! `pitch::init()` must see the worker arguments before any test harness would.
//!
//! `flux::` tests run FluxJobExecutor against the fake `flux` of `tests/e2e/fake-flux`.
//!
//! Run one test: `cargo test --test e2e -- NAME_SUBSTRING`.

mod flux;
mod mpi;
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

fn main() {
    pitch::init();
    // A FluxJobExecutor test's driver, started by the test with the fake flux on PATH.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("flux-driver") {
        std::process::exit(flux::driver(args.get(2).map_or("", String::as_str)));
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
