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
#   PILOTS                   pilot jobs (block_allocation, max_workers) for the pilot
#                            measurement                                (default 4; 0 = skip)
#   PILOT_TASKS              no-op function tasks through the pilots; the same count also
#                            goes through raw sbatch --array and tasks_per_job(PACK)
#                            (commands `true`)                          (default 10000)
#   PILOT_COMMANDS           `true` commands through PILOTS pilot jobs, next to a raw
#                            sbatch --array of as many `true`            (default 1000; 0 = skip)
#   SWEEP_TASKS              the heterogeneous sweep: tasks sleeping 0.1-2 s (fixed
#                            pseudo-random order), through SWEEP_CPUS pilots and packed
#                            PACK per array element                     (default 400)
#   SWEEP_CPUS               pilots (one CPU each) of the sweep         (default 16; 0 = skip)
#   EXECUTORLIB_SLURM_TASKS  tasks for executorlib (one sbatch each)    (default 50; 0 = skip)
#   EXECUTORLIB_PILOT_TASKS  tasks for executorlib's block_allocation with 4 workers, each
#                            round next to pitch's pilots               (default 1000; 0 = skip)
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
PILOTS="${PILOTS:-4}"
PILOT_TASKS="${PILOT_TASKS:-10000}"
PILOT_COMMANDS="${PILOT_COMMANDS:-1000}"
SWEEP_TASKS="${SWEEP_TASKS:-400}"
SWEEP_CPUS="${SWEEP_CPUS:-16}"
EXECUTORLIB_SLURM_TASKS="${EXECUTORLIB_SLURM_TASKS:-50}"
EXECUTORLIB_PILOT_TASKS="${EXECUTORLIB_PILOT_TASKS:-1000}"
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
if [[ "$EXECUTORLIB_SLURM_TASKS" -gt 0 || "$EXECUTORLIB_PILOT_TASKS" -gt 0 ]]; then
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
# What is measured must be there: a benchmark fails loudly instead of skipping a measurement.
if [[ "$PACK" -gt 0 ]] && ! grep -rq 'fn tasks_per_job' "$repo_root/src/"; then
    die "PACK=$PACK but no tasks_per_job in $repo_root/src: set PACK=0 to measure without it"
fi
if [[ "$PILOTS" -gt 0 ]] && ! grep -q -- '--pilots' "$repo_root/examples/bench_slurm.rs"; then
    die "PILOTS=$PILOTS but examples/bench_slurm.rs has no --pilots: set PILOTS=0"
fi
if [[ "$PILOTS" -gt 0 && "$PILOT_COMMANDS" -gt 0 ]] \
    && ! grep -q -- '--command-pilots' "$repo_root/examples/bench_slurm.rs"; then
    die "PILOT_COMMANDS=$PILOT_COMMANDS but examples/bench_slurm.rs has no --command-pilots: set PILOT_COMMANDS=0"
fi
if [[ "$PILOT_COMMANDS" -gt 0 && "$PILOTS" -eq 0 ]]; then
    die "PILOT_COMMANDS=$PILOT_COMMANDS needs pilots: PILOTS=0 (set PILOT_COMMANDS=0 too)"
fi

mkdir -p "$BENCH_WORKDIR" "$(dirname "$RESULTS")"
: >"$RESULTS"
shims="$(mktemp -d "$BENCH_WORKDIR/shims.XXXXXX")"
shim_bin="$("$py" "$script_dir/peers_slurm.py" shims "$shims")"

# pitch_run TASKS [--pack K] [--pilots P]: one run of the example with the counting shims.
failed=0
pitch_run() {
    local n="$1"; shift
    local out
    if out="$(cd "$BENCH_WORKDIR" && PATH="$shim_bin:$PATH" PITCH_BENCH_CALLS_DIR="$shims" \
        timeout "$PEER_TIMEOUT" "$bench" --tasks "$n" "$@")"; then
        printf '%s\n' "$out" | tee -a "$RESULTS"
    else
        local rc=$?
        failed=1
        printf '%s\n' "$out" | tee -a "$RESULTS"
        printf '{"name": "pitch slurm %s", "tasks": %s, "error": "bench_slurm %s exited with %s"}\n' \
            "$*" "$n" "$*" "$rc" | tee -a "$RESULTS"
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

# --- 4b. pilots: PILOT_TASKS no-op function tasks through PILOTS pilot jobs, against raw
# sbatch --array and tasks_per_job(PACK) of the same count --------------------------------
if [[ "$PILOTS" -gt 0 ]]; then
    for run in $(seq 1 "$RUNS"); do
        say "run $run/$RUNS: pitch, $PILOT_TASKS function tasks through $PILOTS pilots"
        pitch_run "$PILOT_TASKS" --pilots "$PILOTS"
        if [[ "$EXECUTORLIB_PILOT_TASKS" -gt 0 ]]; then
            say "run $run/$RUNS: executorlib SlurmClusterExecutor block_allocation, $EXECUTORLIB_PILOT_TASKS tasks through 4 workers"
            "$py" "$script_dir/peers_slurm.py" --peers elpilots --tasks "$EXECUTORLIB_PILOT_TASKS" | tee -a "$RESULTS"
        fi
        say "run $run/$RUNS: raw sbatch --array, $PILOT_TASKS tasks"
        "$py" "$script_dir/peers_slurm.py" --peers raw --tasks "$PILOT_TASKS" | tee -a "$RESULTS"
        if [[ "$PACK" -gt 0 ]]; then
            say "run $run/$RUNS: pitch, $PILOT_TASKS tasks packed $PACK per element"
            pitch_run "$PILOT_TASKS" --pack "$PACK" --only-packed
        fi
    done
fi

# --- 4b'. commands in pilots: PILOT_COMMANDS `true` commands through PILOTS pilot jobs,
# against raw sbatch --array of as many `true` (section 4 measured it already when
# PILOT_COMMANDS = TASKS) ----------------------------------------------------------------------
if [[ "$PILOTS" -gt 0 && "$PILOT_COMMANDS" -gt 0 ]]; then
    for run in $(seq 1 "$RUNS"); do
        say "run $run/$RUNS: pitch, $PILOT_COMMANDS true commands through $PILOTS pilots"
        pitch_run "$PILOT_COMMANDS" --command-pilots "$PILOTS"
        if [[ "$PILOT_COMMANDS" != "$TASKS" ]]; then
            say "run $run/$RUNS: raw sbatch --array, $PILOT_COMMANDS tasks"
            "$py" "$script_dir/peers_slurm.py" --peers raw --tasks "$PILOT_COMMANDS" | tee -a "$RESULTS"
        fi
    done
fi

# --- 4c. the heterogeneous sweep: pilots against tasks_per_job packing -----------------------
if [[ "$SWEEP_CPUS" -gt 0 ]]; then
    for run in $(seq 1 "$RUNS"); do
        say "run $run/$RUNS: sweep of $SWEEP_TASKS tasks of 0.1-2 s: $SWEEP_CPUS pilots, then packed ${PACK/#0/10}"
        pitch_run "$SWEEP_TASKS" --sweep "$SWEEP_CPUS" --pack "${PACK/#0/10}"
    done
fi

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
[[ "$failed" -eq 0 ]] || die "a pitch measurement failed (see ERROR above)"
