#!/usr/bin/env bash
# Flux benchmark: TASKS trivial tasks, side by side in one run, through pitch's
# FluxJobExecutor (a Flux job per task, submitted through libflux) and FluxClusterExecutor (a
# `flux batch` job per task, and packed with tasks_per_job(PACK)), raw `flux submit --cc=1-N`
# and `flux bulksubmit` of the same, and executorlib's FluxJobExecutor and
# FluxClusterExecutor. The FluxJobExecutor comparison (pitch, the raw commands, executorlib)
# runs first, back to back, on an instance the batch jobs have not loaded yet.
# Needs a Flux instance (cluster-tests/start-flux.sh; its env.sh is sourced when present).
# Anything it measures that is missing is an error: it fails, it never skips.
#
# Knobs (environment):
#   TASKS            tasks per measurement                                  (default 200)
#   PACK             K for tasks_per_job(K)                                 (default 10)
#   EL_CLUSTER_TASKS tasks for executorlib's FluxClusterExecutor (a batch job each) (default TASKS)
#   PEER_TIMEOUT     seconds before one measurement is killed                (default 900)
#   CLUSTER          0: only the FluxJobExecutor comparison, no batch jobs    (default 1)
#   PITCH_BENCH_FLUX_VENV  virtualenv of /usr/bin/python3 (the Python Flux's bindings are
#                    built for) with executorlib[cache] and pysqa, made here when missing
#                    (default $HOME/.cache/pitch-bench-flux-venv)
#   PITCH_FLUX_DIR   where start-flux.sh put env.sh                           (default /tmp/pitch-flux)
#   RESULTS          the JSON lines (default target/bench/flux.jsonl under the repo)
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/.." && pwd)"
TASKS="${TASKS:-200}"
PACK="${PACK:-10}"
EL_CLUSTER_TASKS="${EL_CLUSTER_TASKS:-$TASKS}"
CLUSTER="${CLUSTER:-1}"
PEER_TIMEOUT="${PEER_TIMEOUT:-900}"
VENV="${PITCH_BENCH_FLUX_VENV:-$HOME/.cache/pitch-bench-flux-venv}"
RESULTS="${RESULTS:-$repo_root/target/bench/flux.jsonl}"
WORK="$repo_root/target/bench/flux-work"

say() { printf 'run-flux: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[[ "$CLUSTER" == 0 || "$CLUSTER" == 1 ]] || die "CLUSTER=$CLUSTER: expected 0 or 1"

# --- 1. the instance ------------------------------------------------------------------
env_sh="${PITCH_FLUX_DIR:-/tmp/pitch-flux}/env.sh"
# shellcheck disable=SC1090
[[ -f "$env_sh" ]] && source "$env_sh"
[[ -n "${FLUX_URI:-}" ]] || die "no Flux instance (FLUX_URI unset; looked for $env_sh): start one with cluster-tests/start-flux.sh"
command -v flux >/dev/null || die "no flux on PATH"
info="$(flux resource info -s up)" || die "flux resource info failed: is $FLUX_URI alive?"
say "Flux $(flux version | sed -n 's/^commands:[[:space:]]*//p'), instance: $info"

# --- 2. Python: /usr/bin/python3 (Flux's bindings are built for it) + executorlib ---------
flux_py="$(dirname "$(command -v flux)")/../lib"
flux_site="$(ls -d "$flux_py"/python3.*/site-packages 2>/dev/null | head -1)"
[[ -n "$flux_site" ]] || die "no Flux Python bindings under $flux_py/python3.*/site-packages"
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating virtualenv $VENV (/usr/bin/python3, system site-packages for python3-cffi)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV" || die "python3 -m venv failed"
fi
py="$VENV/bin/python"
export PYTHONPATH="$flux_site${PYTHONPATH:+:$PYTHONPATH}"
if ! "$py" -c 'import executorlib, h5py, pysqa' >/dev/null 2>&1; then
    say "installing executorlib[cache] and pysqa into $VENV"
    "$py" -m pip install --quiet 'executorlib[cache]' pysqa || die "pip install executorlib[cache] pysqa failed"
fi
"$py" -c 'import flux; flux.Flux()' || die "$py cannot import flux from $flux_site or reach the instance"

# --- 3. pitch ----------------------------------------------------------------------------
say "cargo build --release --example bench_flux"
(cd "$repo_root" && cargo build --quiet --release --example bench_flux) || die "building examples/bench_flux.rs failed"
bench="$repo_root/target/release/examples/bench_flux"

mkdir -p "$WORK" "$(dirname "$RESULTS")"
: >"$RESULTS"
failed=0
# measure WHAT CMD...: one measurement with a timeout; its JSON lines, or an error line.
measure() {
    local what="$1"; shift
    say "$what"
    local out rc=0
    out="$(cd "$WORK" && timeout "$PEER_TIMEOUT" "$@")" || rc=$?
    [[ -n "$out" ]] && printf '%s\n' "$out" | tee -a "$RESULTS"
    if [[ $rc -ne 0 ]]; then
        printf '{"name": "%s", "error": "exit %s"}\n' "$what" "$rc" | tee -a "$RESULTS"
        failed=1
    fi
}
start=$SECONDS
measure "pitch FluxJobExecutor" "$bench" --tasks "$TASKS" --only job
measure "flux submit --cc" "$py" "$script_dir/peers_flux.py" raw-submit "$TASKS"
measure "flux bulksubmit" "$py" "$script_dir/peers_flux.py" raw-bulksubmit "$TASKS"
measure "executorlib FluxJobExecutor" "$py" "$script_dir/peers_flux.py" el-job "$TASKS"
if [[ "$CLUSTER" == 1 ]]; then
    measure "pitch FluxClusterExecutor" "$bench" --tasks "$TASKS" --only cluster
    measure "pitch FluxClusterExecutor (packed $PACK)" "$bench" --tasks "$TASKS" --pack "$PACK" --only packed
    measure "executorlib FluxClusterExecutor" "$py" "$script_dir/peers_flux.py" el-cluster "$EL_CLUSTER_TASKS"
fi
say "done in $((SECONDS - start)) s; JSON lines in $RESULTS"

# --- 4. the report -------------------------------------------------------------------------
echo
"$py" - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = {r["name"]: r for r in rows if "seconds" in r}
print(f"{'what':58} {'tasks':>5} {'seconds':>8} {'tasks/s':>8}")
for r in rows:
    if "seconds" in r:
        print(f"{r['name']:58} {r['tasks']:>5} {r['seconds']:>8.2f} {r['tasks'] / r['seconds']:>8.1f}")
    else:
        print(f"{r['name']:58} ERROR {r['error']}")
def rate(name):
    r = ok.get(name)
    return r["tasks"] / r["seconds"] if r else None
job, submit = rate("pitch FluxJobExecutor"), rate(next((n for n in ok if n.startswith("flux submit")), ""))
el = rate("executorlib FluxJobExecutor(cache_directory)")
misses = 0
print()
if job and submit:
    ratio = submit / job
    hit = ratio <= 1.2
    misses += not hit
    print(f"pitch FluxJobExecutor takes {ratio:.2f}x the time of raw flux submit (target <= 1.2x): {'HIT' if hit else 'MISS'}")
else:
    misses += 1
    print("pitch FluxJobExecutor vs flux submit: not measured")
if job and el:
    ratio = job / el
    hit = ratio >= 5
    misses += not hit
    print(f"pitch FluxJobExecutor is {ratio:.1f}x executorlib's FluxJobExecutor (target >= 5x): {'HIT' if hit else 'MISS'}")
else:
    misses += 1
    print("pitch FluxJobExecutor vs executorlib's FluxJobExecutor: not measured")
cl, el_cl = rate("pitch FluxClusterExecutor"), rate("executorlib FluxClusterExecutor")
if cl and el_cl:
    print(f"pitch FluxClusterExecutor is {cl / el_cl:.1f}x executorlib's FluxClusterExecutor (no target)")
PY
[[ $failed -eq 0 ]] || die "a measurement failed (see the ERROR rows)"
