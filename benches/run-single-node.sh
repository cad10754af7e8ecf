#!/usr/bin/env bash
# Side-by-side benchmark of process-per-task executors on one machine:
# pitch (examples/bench_single_node.rs) against ProcessPoolExecutor and
# executorlib's SingleNodeExecutor. See benches/README.md.
#
# Knobs (environment):
#   TASKS              tasks per pitch/stdlib measurement     (default 2000)
#   EXECUTORLIB_TASKS  tasks for executorlib process-per-task (default 200)
#   WORKERS            worker processes for everyone          (default 2)
#   STORES             directories for pitch's cache, one run each
#                      (default: ${TMPDIR:-/tmp}, then /dev/shm when it exists)
#   ROUNDS             rounds of pitch's measurements (and the floors beside them)
#                      per store; the report takes the median of each ratio
#                      over rounds, as the machine is noisy           (default 3)
#   PITCH_BENCH_VENV   virtualenv for the Python peers
#                      (default $HOME/.cache/pitch-bench-venv)
#   EXECUTORLIB_SPEC   pip requirement for executorlib        (default executorlib[cache])
#   PEERS              comma-separated subset of peers (keys in peers_single_node.py)
#   PEERS_ONLY=1       skip the Rust side (no cargo build), run only the peers
#   RESULTS            where the JSON lines are kept
#                      (default target/bench/single-node.jsonl under the repo)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"

TASKS="${TASKS:-2000}"
EXECUTORLIB_TASKS="${EXECUTORLIB_TASKS:-200}"
WORKERS="${WORKERS:-2}"
ROUNDS="${ROUNDS:-3}"
VENV="${PITCH_BENCH_VENV:-$HOME/.cache/pitch-bench-venv}"
EXECUTORLIB_SPEC="${EXECUTORLIB_SPEC:-executorlib[cache]}"
PEERS_ONLY="${PEERS_ONLY:-0}"
RESULTS="${RESULTS:-$repo_root/target/bench/single-node.jsonl}"
default_stores="${TMPDIR:-/tmp}"
[[ -d /dev/shm && -w /dev/shm ]] && default_stores+=" /dev/shm"
STORES="${STORES:-$default_stores}"
export TASKS EXECUTORLIB_TASKS WORKERS

say() { printf 'run-single-node: %s\n' "$*" >&2; }

# "DIR (fstype)", with "no journal" for an ext4 without one: there, every new inode scans
# past the inodes deleted in the last minutes, so the same run is slower after deletions.
store_label() {
    local dir="$1" fs dev journal=""
    fs="$(stat -f -c %T "$dir" 2>/dev/null || echo unknown)"
    dev="$(findmnt -n -o SOURCE --target "$dir" 2>/dev/null | xargs -r basename 2>/dev/null || true)"
    if [[ -n "$dev" && -r "/sys/fs/ext4/$dev/journal_task" ]]; then
        fs="ext4"
        [[ "$(cat "/sys/fs/ext4/$dev/journal_task")" == "<none>" ]] && journal=", no journal"
    fi
    printf '%s (%s%s)' "$dir" "$fs" "$journal"
}
die() { say "ERROR: $*"; exit 1; }

# --- 1. Python virtualenv with executorlib (idempotent) ----------------------
# shellcheck source=benches/venv.sh
source "$script_dir/venv.sh"
bench_venv "$VENV" "$EXECUTORLIB_SPEC"

status=0

# --- 2. pitch's Rust benchmark -----------------------------------------------
if [[ "$PEERS_ONLY" == "1" ]]; then
    say "PEERS_ONLY=1: skipping pitch's Rust benchmark"
    mkdir -p "$(dirname "$RESULTS")"
    : >"$RESULTS"
else
    say "building pitch: cargo build --release --example bench_single_node"
    if ! (cd "$repo_root" && cargo build --release --example bench_single_node); then
        die "cargo build --release --example bench_single_node failed in $repo_root.
    The Rust side of this benchmark is examples/bench_single_node.rs; it must
    exist and build. (PEERS_ONLY=1 runs only the Python peers.)"
    fi
    mkdir -p "$(dirname "$RESULTS")"
    : >"$RESULTS"
    rust_rc=0
    bench="$repo_root/target/release/examples/bench_single_node"
    # Rounds go over every store in turn, so a slow spell of the machine does not land on one
    # store only.
    for round in $(seq "$ROUNDS"); do
        for store in $STORES; do
            if [[ ! -d "$store" || ! -w "$store" ]]; then
                [[ $round -eq 1 ]] && say "skipping store $store: not a writable directory"
                continue
            fi
            label="$(store_label "$store")"
            say "running pitch (round $round of $ROUNDS): --tasks $TASKS --workers $WORKERS, cache in $label"
            TMPDIR="$store" "$bench" --tasks "$TASKS" --workers "$WORKERS" --store "$label" \
                --round "$round" >>"$RESULTS" || rust_rc=$?
        done
    done
    if [[ $rust_rc -ne 0 ]]; then
        say "pitch's benchmark exited $rust_rc"
        printf '{"name": "pitch bench_single_node", "error": "exited %d"}\n' "$rust_rc" >>"$RESULTS"
        status=1
    fi
fi

# --- 3. the peers --------------------------------------------------------------
say "running peers: TASKS=$TASKS EXECUTORLIB_TASKS=$EXECUTORLIB_TASKS WORKERS=$WORKERS"
peers_rc=0
"$py" "$script_dir/peers_single_node.py" >>"$RESULTS" || peers_rc=$?
if [[ $peers_rc -ne 0 ]]; then
    say "peers_single_node.py exited $peers_rc"
    status=1
fi

# --- 4. the report ---------------------------------------------------------------
say "results: $RESULTS"
"$py" "$script_dir/report.py" <"$RESULTS" || status=1
exit "$status"
