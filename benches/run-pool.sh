#!/usr/bin/env bash
# Side-by-side benchmark of persistent workers on one machine: pitch's block_allocation
# (examples/bench_pool.rs) against ProcessPoolExecutor and executorlib's
# SingleNodeExecutor(block_allocation=True). See benches/README.md ("Persistent workers").
#
# Knobs (environment): TASKS (20000), EL_CACHE_TASKS (2000), WORKERS (2), WALKERS (32),
# STEPS (100), WORK_US (50), LATENCY (2000), ROUNDS (3, pitch's side), PEERS (all),
# PEERS_ONLY=1, PITCH_BENCH_VENV, EXECUTORLIB_SPEC, RESULTS (target/bench/pool.jsonl).
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"

export TASKS="${TASKS:-20000}" EL_CACHE_TASKS="${EL_CACHE_TASKS:-2000}" WORKERS="${WORKERS:-2}"
export WALKERS="${WALKERS:-32}" STEPS="${STEPS:-100}" WORK_US="${WORK_US:-50}" LATENCY="${LATENCY:-2000}"
ROUNDS="${ROUNDS:-3}"
VENV="${PITCH_BENCH_VENV:-$HOME/.cache/pitch-bench-venv}"
EXECUTORLIB_SPEC="${EXECUTORLIB_SPEC:-executorlib[cache]}"
PEERS_ONLY="${PEERS_ONLY:-0}"
RESULTS="${RESULTS:-$repo_root/target/bench/pool.jsonl}"

say() { printf 'run-pool: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# shellcheck source=benches/venv.sh
source "$script_dir/venv.sh"
bench_venv "$VENV" "$EXECUTORLIB_SPEC"

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
status=0
if [[ "$PEERS_ONLY" != "1" ]]; then
    say "building pitch: cargo build --release --example bench_pool"
    (cd "$repo_root" && cargo build --release --example bench_pool) || die "cargo build failed"
    bench="$repo_root/target/release/examples/bench_pool"
    for round in $(seq "$ROUNDS"); do
        say "running pitch (round $round of $ROUNDS)"
        "$bench" --tasks "$TASKS" --workers "$WORKERS" --walkers "$WALKERS" --steps "$STEPS" \
            --work-us "$WORK_US" --latency "$LATENCY" --round "$round" >>"$RESULTS" || status=1
    done
fi
say "running peers"
"$py" "$script_dir/peers_pool.py" >>"$RESULTS" || status=1
say "results: $RESULTS"
"$py" "$script_dir/report_pool.py" "$RESULTS" || status=1
exit "$status"
