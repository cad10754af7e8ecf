#!/usr/bin/env bash
# shellcheck disable=SC2016  # $VARS in single quotes are expanded by the job, on purpose
# check-flux.sh -- smoke test of the Flux instance started by start-flux.sh
#
# Sources $PITCH_FLUX_DIR/env.sh (default /tmp/pitch-flux). Each check prints PASS/FAIL; the
# last line is "N passed, M failed", and the exit status is non-zero if anything failed.
# Work files go to a fresh temp dir under the state dir.
set -euo pipefail

D=${PITCH_FLUX_DIR:-/tmp/pitch-flux}
[ -r "$D/env.sh" ] || { echo "no $D/env.sh: run cluster-tests/start-flux.sh first" >&2; echo "0 passed, 1 failed"; exit 1; }
# shellcheck disable=SC1091
source "$D/env.sh"
W=$(mktemp -d "$D/check.XXXXXX")
cd "$W"

pass=0; fail=0; finished=0
# shellcheck disable=SC2154  # rc is assigned inside the trap
trap 'rc=$?; if [ "$finished" != 1 ]; then echo "FAIL aborted near line $LINENO (exit $rc)"; echo "$pass passed, $((fail+1)) failed"; exit 1; fi' EXIT
ok() { echo "PASS $1"; pass=$((pass+1)); }
ko() { echo "FAIL $1${2:+: $2}"; fail=$((fail+1)); }
# state ID: the job's state, result and return code ("INACTIVE|COMPLETED|0")
state() { flux jobs --no-header '--format={state}|{result}|{returncode}' "$1" 2>/dev/null || true; }
# waitdone ID [TENTHS]: until the job is inactive
waitdone() {
    for _ in $(seq 1 "${2:-600}"); do
        case "$(state "$1")" in INACTIVE*) return 0 ;; esac
        sleep 0.1
    done
    return 1
}

# 1. all brokers up, with their cores
size=${PITCH_FLUX_SIZE:-4}
info=$(flux resource info -s up 2>&1 || true)
case "$info" in "$size Nodes, "*) ok "flux resource info -s up: $info" ;; *) ko "flux resource info -s up" "$info" ;; esac

# 2. the queues, started, batch the default
queues=$(flux queue list 2>&1 || true)
if grep -q '^debug ' <<<"$queues" && grep -q '^batch\* ' <<<"$queues"; then
    ok "queues debug and batch (default)"
else ko "queues" "$queues"; fi

# 3. flux run on 2 nodes: ranks and local ranks
out=$(flux run -N 2 -n 4 sh -c 'echo $FLUX_TASK_RANK:$FLUX_TASK_LOCAL_ID:$FLUX_JOB_SIZE' 2>&1 | sort | tr '\n' ' ' || true)
if [ "$out" = "0:0:4 1:1:4 2:0:4 3:1:4 " ]; then ok "flux run -N 2 -n 4: $out"; else ko "flux run -N 2 -n 4" "$out"; fi

# 4. flux run in the debug queue; an unknown queue is refused
if flux run -q debug true 2>/dev/null; then ok "flux run -q debug"; else ko "flux run -q debug"; fi
if ! flux run -q nosuchqueue true 2>/dev/null; then ok "flux run -q nosuchqueue is refused"; else ko "flux run -q nosuchqueue ran"; fi

# 5. flux batch: a job of its own (an instance), its output file named by the decimal id
printf '#!/bin/sh\n# flux: --nslots=1\n# flux: --output=%s/out-{{id.dec}}.txt\necho hello from $(flux resource info)\n' "$W" >batch.sh
t0=$(date +%s.%N)
j=$(flux batch batch.sh 2>&1 || true)
dec=$(flux job id --to=dec "$j" 2>/dev/null || true)
if [ -n "$dec" ] && waitdone "$j" && grep -q "hello from 1 Nodes" "out-$dec.txt" 2>/dev/null; then
    ok "flux batch job $j ran ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s), output in out-$dec.txt"
else ko "flux batch job '$j'" "$(state "$j"); $(cat "out-$dec.txt" 2>&1)"; fi
s=$(state "$j")
if [ "$s" = "INACTIVE|COMPLETED|0" ]; then ok "flux jobs: $j $s"; else ko "flux jobs: $j" "$s"; fi

# 6. a failing job and an afterok dependent of it
f=$(flux batch -n1 --wrap exit 7 2>&1 || true)
d=$(flux batch -n1 --dependency="afterok:$f" --wrap true 2>&1 || true)
waitdone "$f" || true
waitdone "$d" 100 || true
if [ "$(state "$f")" = "INACTIVE|FAILED|7" ]; then ok "a failing job: FAILED, return code 7"; else ko "a failing job" "$(state "$f")"; fi
case "$(state "$d")" in
INACTIVE\|FAILED*) ok "its afterok dependent failed" ;;
*) ko "its afterok dependent" "$d $(state "$d")" ;;
esac

# 7. flux cancel of a running job
c=$(flux submit sleep 300 2>&1 || true)
flux job wait-event -t 30 "$c" start >/dev/null 2>&1 || true
if flux cancel "$c" && waitdone "$c" 100 && [ "$(state "$c" | cut -d'|' -f2)" = CANCELED ]; then
    ok "flux cancel of a running job"
else ko "flux cancel $c" "$(state "$c")"; fi

finished=1
echo "$pass passed, $fail failed"
rm -rf "$W"
[ "$fail" = 0 ]
