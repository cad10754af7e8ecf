#!/usr/bin/env bash
# Slurm benchmark: pitch's SlurmClusterExecutor (examples/bench_slurm.rs) against a raw
# `sbatch --array` job and executorlib's SlurmClusterExecutor, on the local Slurm that
# cluster-tests/start-slurm.sh starts. See benches/README.md ("Slurm benchmark").
#
# Knobs (environment):
#   TASKS                    tasks per pitch / raw measurement          (default 1000)
#   SMALL_TASKS              second, smaller pitch task count, to show that squeue
#                            calls per minute do not grow with the tasks (default 200; 0 = skip)
#   RUNS                     repetitions of pitch and raw (median shown) (default 3)
#   PACK                     K for `tasks_per_job(K)` (each element runs K tasks in turn),
#                            one CPU per element                        (default 10; 0 = skip)
#   EXECUTORLIB_SLURM_TASKS  tasks for executorlib (one sbatch each)    (default 50; 0 = skip)
#   PEER_TIMEOUT             seconds before one measurement is killed   (default 600)
#   PITCH_BENCH_VENV         virtualenv with executorlib[cache] (+ pysqa, installed here
#                            when missing)   (default $HOME/.cache/pitch-bench-venv)
#   PITCH_SLURM_DIR          where start-slurm.sh put env.sh            (default /tmp/pitch-slurm)
#   BENCH_WORKDIR            cache directories go here: must be on storage the nodes share
#                            (default target/bench/slurm-work under the repo)
#   RESULTS                  the JSON lines (default target/bench/slurm.jsonl under the repo)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"

TASKS="${TASKS:-1000}"
SMALL_TASKS="${SMALL_TASKS:-200}"
RUNS="${RUNS:-3}"
PACK="${PACK:-10}"
EXECUTORLIB_SLURM_TASKS="${EXECUTORLIB_SLURM_TASKS:-50}"
PEER_TIMEOUT="${PEER_TIMEOUT:-600}"
VENV="${PITCH_BENCH_VENV:-$HOME/.cache/pitch-bench-venv}"
BENCH_WORKDIR="${BENCH_WORKDIR:-$repo_root/target/bench/slurm-work}"
RESULTS="${RESULTS:-$repo_root/target/bench/slurm.jsonl}"
export TASKS EXECUTORLIB_SLURM_TASKS PEER_TIMEOUT BENCH_WORKDIR

say() { printf 'run-slurm: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# --- 1. the cluster ---------------------------------------------------------------
env_sh="${PITCH_SLURM_DIR:-/tmp/pitch-slurm}/env.sh"
if [[ -f "$env_sh" ]]; then
    # shellcheck disable=SC1090
    source "$env_sh"
fi
PARTITION="${PITCH_SLURM_PARTITION:-debug}"
export PITCH_SLURM_PARTITION="$PARTITION"
if ! command -v sinfo >/dev/null 2>&1 || ! sinfo -h -p "$PARTITION" >/dev/null 2>&1 \
    || [[ -z "$(sinfo -h -p "$PARTITION" -o %D 2>/dev/null)" ]]; then
    die "no working Slurm (sinfo on partition '$PARTITION' failed; looked for $env_sh): start the cluster with cluster-tests/start-slurm.sh"
fi
node_cpus="$(sinfo -h -p "$PARTITION" -o %c | sort -n | tail -1)"
say "Slurm partition $PARTITION: $(sinfo -h -p "$PARTITION" -o '%D nodes x %c CPUs')"

# --- 2. the Python side: executorlib + pysqa (idempotent) ----------------------------
py="$VENV/bin/python"
if [[ "$EXECUTORLIB_SLURM_TASKS" -gt 0 ]]; then
    if [[ ! -x "$py" ]]; then
        say "creating virtualenv $VENV"
        python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
    if ! "$py" -c 'import executorlib, h5py' >/dev/null 2>&1; then
        say "installing executorlib[cache] into $VENV"
        "$py" -m pip install --quiet 'executorlib[cache]' || die "pip install executorlib[cache] failed"
    fi
    if ! "$py" -c 'import pysqa' >/dev/null 2>&1; then
        # The pysqa version executorlib's [cluster] extra pins.
        spec="$("$py" -c 'import importlib.metadata as m, re
reqs = [r.split(";")[0].strip() for r in (m.requires("executorlib") or []) if re.match(r"pysqa\b", r)]
print(reqs[0] if reqs else "pysqa")')"
        say "installing $spec into $VENV"
        "$py" -m pip install --quiet "$spec" || die "pip install $spec failed"
    fi
else
    [[ -x "$py" ]] || py=python3
fi

# --- 3. pitch's side ------------------------------------------------------------------
say "cargo build --release --example bench_slurm"
(cd "$repo_root" && cargo build --quiet --release --example bench_slurm) \
    || die "building examples/bench_slurm.rs failed"
bench="$repo_root/target/release/examples/bench_slurm"
if [[ "$PACK" -gt 0 ]]; then
    if ! grep -q 'fn tasks_per_job' "$repo_root/src/executor.rs"; then
        say "tasks_per_job is not in this pitch: no packed measurement"
        PACK=0
    fi
fi

mkdir -p "$BENCH_WORKDIR" "$(dirname "$RESULTS")"
: >"$RESULTS"
shims="$(mktemp -d "$BENCH_WORKDIR/shims.XXXXXX")"
shim_bin="$("$py" "$script_dir/peers_slurm.py" shims "$shims")"

# pitch_run TASKS [--pack K]: one run of the example with the counting shims.
pitch_run() {
    local n="$1"; shift
    local out
    if out="$(cd "$BENCH_WORKDIR" && PATH="$shim_bin:$PATH" PITCH_BENCH_CALLS_DIR="$shims" \
        timeout "$PEER_TIMEOUT" "$bench" --tasks "$n" "$@")"; then
        printf '%s\n' "$out" | tee -a "$RESULTS"
    else
        local rc=$?
        printf '%s\n' "$out" | tee -a "$RESULTS"
        printf '{"name": "pitch slurm arrays", "tasks": %s, "error": "bench_slurm exited with %s"}\n' \
            "$n" "$rc" | tee -a "$RESULTS"
    fi
}

start=$SECONDS
# --- 4. pitch and raw sbatch --array, interleaved so both see the same noise ----------
for run in $(seq 1 "$RUNS"); do
    if [[ "$PACK" -gt 0 ]]; then
        say "run $run/$RUNS: pitch, $TASKS tasks, unpacked then packed $PACK per element"
        pitch_run "$TASKS" --pack "$PACK"
    else
        say "run $run/$RUNS: pitch, $TASKS tasks"
        pitch_run "$TASKS"
    fi
    say "run $run/$RUNS: raw sbatch --array, $TASKS tasks"
    "$py" "$script_dir/peers_slurm.py" --peers raw --tasks "$TASKS" | tee -a "$RESULTS"
    if [[ "$SMALL_TASKS" -gt 0 && "$SMALL_TASKS" != "$TASKS" ]]; then
        say "run $run/$RUNS: pitch, $SMALL_TASKS tasks"
        pitch_run "$SMALL_TASKS"
    fi
done

# --- 5. executorlib, once --------------------------------------------------------------
if [[ "$EXECUTORLIB_SLURM_TASKS" -gt 0 ]]; then
    say "executorlib SlurmClusterExecutor, $EXECUTORLIB_SLURM_TASKS tasks"
    "$py" "$script_dir/peers_slurm.py" --peers el --executorlib-tasks "$EXECUTORLIB_SLURM_TASKS" \
        | tee -a "$RESULTS"
fi
rm -rf "$shims"
say "done in $((SECONDS - start)) s; JSON lines in $RESULTS"

# --- 6. the report -----------------------------------------------------------------------
echo
"$py" "$script_dir/peers_slurm.py" report "$RESULTS"
