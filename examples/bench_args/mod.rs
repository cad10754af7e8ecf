//! The command line and output of the `bench_*` examples, shared (each includes this file
//! with `#[path = "bench_args/mod.rs"] mod bench_args;`): `--name VALUE` options, `--only
//! WHAT` and the JSON lines the `benches/` scripts read.

// Each example uses a part of this.
#![allow(dead_code)]

/// The value after `name` on the command line.
pub fn text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The number after `name`, if given; a value that is not a number stops the benchmark.
pub fn number_opt(name: &str) -> Option<usize> {
    text(name).map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} needs a number, got {v:?}"))
    })
}

/// The number after `name`, or `default`.
pub fn number(name: &str, default: usize) -> usize {
    number_opt(name).unwrap_or(default)
}

/// Whether `name` is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// `--only WHAT` runs one measurement; without it, every one runs.
pub fn wanted(what: &str) -> bool {
    text("--only").is_none_or(|w| w == what)
}

/// One JSON line `{"name", "tasks", "seconds", ...extra}`; `--store LABEL` tags it with
/// where the cache directory was, `--round K` with the round it belongs to (the reports take
/// medians over rounds). `extra` is more fields, each starting with `, `.
pub fn line(name: &str, tasks: usize, seconds: f64, extra: &str) {
    let store = text("--store")
        .map(|s| format!(", \"store\": {s:?}"))
        .unwrap_or_default();
    let round = text("--round")
        .map(|r| format!(", \"round\": {}", r.parse::<u32>().expect("a round number")))
        .unwrap_or_default();
    println!(
        "{{\"name\": \"{name}\", \"tasks\": {tasks}, \"seconds\": {seconds:.6}{extra}{store}{round}}}"
    );
}
