#!/usr/bin/env bash
# shellcheck disable=SC2016  # $VARS in single quotes are expanded by the job, on purpose
# check-slurm.sh -- smoke test of the cluster started by start-slurm.sh
#
# Uses $PITCH_SLURM_DIR (default /tmp/pitch-slurm) and sources its env.sh.
# Each check prints PASS/FAIL; the last line is "N passed, M failed", and the
# exit status is non-zero if anything failed. Work files go to a fresh temp
# dir under the state dir (sbatch would otherwise drop slurm-%j.out in $PWD);
# the MPI hello program is compiled into $PITCH_SLURM_DIR/mpi-hello/.
set -euo pipefail

D=${PITCH_SLURM_DIR:-/tmp/pitch-slurm}
[ -r "$D/env.sh" ] || { echo "no $D/env.sh: run cluster-tests/start-slurm.sh first" >&2; echo "0 passed, 1 failed"; exit 1; }
# shellcheck disable=SC1091
source "$D/env.sh"
W=$(mktemp -d "$D/check.XXXXXX")
cd "$W"

pass=0; fail=0; finished=0
# shellcheck disable=SC2154  # rc is assigned inside the trap
# if anything below aborts the script, still end with the summary line
trap 'rc=$?; if [ "$finished" != 1 ]; then echo "FAIL aborted near line $LINENO (exit $rc)"; echo "$pass passed, $((fail+1)) failed"; exit 1; fi' EXIT
# sbatch --parsable; prints the job id, or nothing (error kept in $W/sbatch.err)
submit() { sbatch --parsable -p "$PITCH_SLURM_PARTITION" "$@" 2>>"$W/sbatch.err" || true; }
ok() { echo "PASS $1"; pass=$((pass+1)); }
ko() { echo "FAIL $1${2:+: $2}"; fail=$((fail+1)); }
# JobState of a job as scontrol sees it ('' if unknown)
state() { [ -n "$1" ] || return 0; scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -1 | cut -d= -f2 || true; }
# wait until squeue no longer lists the job (or array) as pending/running; 0.1 s polls
waitdone() { # JOBID [TENTHS]
  [ -n "$1" ] || return 1
  for _ in $(seq 1 "${2:-300}"); do
    [ -z "$(squeue -h -j "$1" 2>/dev/null || true)" ] && return 0
    sleep 0.1
  done
  return 1
}

# 1. all nodes up: idle, or busy with someone else's jobs (mix/alloc) when the
#    cluster is shared; down/drained/not responding (state with *) fails.
want=${PITCH_SLURM_NODES:-4}
idle=0; up=0
for _ in $(seq 1 50); do   # give leftovers of earlier jobs up to 5 s to finish
  nodes=$(sinfo -h -N -p "$PITCH_SLURM_PARTITION" -o '%N %t' 2>/dev/null | sort -u || true)
  idle=$(awk '$2 == "idle"' <<<"$nodes" | wc -l)
  up=$(awk '$2 ~ /^(idle|mix|alloc|comp)$/' <<<"$nodes" | wc -l)
  [ "$idle" -ge "$want" ] && break; sleep 0.1
done
if [ "$up" -eq "$want" ]; then
  ok "sinfo: $want nodes up in partition $PITCH_SLURM_PARTITION ($idle idle$([ "$idle" -lt "$want" ] && echo ", others busy with other jobs"))"
else ko "sinfo: $want nodes up" "$(tr '\n' ' ' <<<"$nodes")"; fi

# 2. a trivial batch job, its output and its final state
t0=$(date +%s.%N)
j=$(submit -o "$W/out-%j.txt" --wrap 'echo hello from $SLURM_JOB_ID on $SLURMD_NODENAME')
if waitdone "$j" && grep -q "hello from $j on n" "$W/out-$j.txt" 2>/dev/null; then
  ok "sbatch --wrap job $j ran ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s)"
else ko "sbatch --wrap job $j" "$(cat "$W/out-$j.txt" 2>&1)"; fi

# 3. squeue format %i|%T shows the finished job (needs -t all)
line=$(squeue -h -t all -j "$j" -o '%i|%T' 2>&1 || true)
if [ "$line" = "$j|COMPLETED" ]; then ok "squeue -t all -o '%i|%T': $line"; else ko "squeue -o '%i|%T'" "got '$line'"; fi

# 4. scontrol show job of the finished job
s=$(scontrol show job "$j" 2>&1 || true)
if grep -q 'JobState=COMPLETED' <<<"$s" && grep -q 'ExitCode=0:0' <<<"$s"; then
  ok "scontrol show job $j: COMPLETED ExitCode=0:0"
else ko "scontrol show job $j" "$(head -c 300 <<<"$s")"; fi

# 5. an array job of 3, one output per task
a=$(submit --array=0-2 -o "$W/arr-%A_%a.txt" --wrap 'echo task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID')
waitdone "$a" 300 || true
got=$(cat "$W"/arr-"${a}"_*.txt 2>/dev/null | awk '{print $2}' | sort -n | tr '\n' ' ' || true)
states=$(squeue -h -t all -j "$a" -o '%i|%T' 2>/dev/null | sort | tr '\n' ' ' || true)
if [ "$got" = "0 1 2 " ] && [ "$states" = "${a}_0|COMPLETED ${a}_1|COMPLETED ${a}_2|COMPLETED " ]; then
  ok "array job $a (0-2): 3 outputs, squeue: $states"
else ko "array job $a" "outputs '$got', squeue '$states'"; fi

# 6. a failing job: exit code reported by scontrol
f=$(submit -o /dev/null --wrap 'exit 7')
waitdone "$f" || true
if scontrol show job "$f" 2>/dev/null | grep -q 'JobState=FAILED.*' && scontrol show job "$f" | grep -q 'ExitCode=7:0'; then
  ok "failing job $f: FAILED ExitCode=7:0"
else ko "failing job $f" "$(scontrol show job "$f" 2>&1 | grep -o -E '(JobState|ExitCode)=[^ ]*' | tr '\n' ' ')"; fi

# 7. a running job can be cancelled
j=$(submit -o /dev/null --wrap 'sleep 300')
for _ in $(seq 1 100); do [ "$(state "$j")" = RUNNING ] && break; sleep 0.1; done
r=$(state "$j"); scancel "$j" || true
for _ in $(seq 1 100); do [ "$(state "$j")" = CANCELLED ] && break; sleep 0.1; done
if [ "$r" = RUNNING ] && [ "$(state "$j")" = CANCELLED ]; then ok "RUNNING job $j -> scancel -> CANCELLED"
else ko "scancel" "was '$r', now '$(state "$j")'"; fi

# 8. srun across all nodes (emulated nodes are told apart by SLURMD_NODENAME)
n=$(timeout 60 srun -p "$PITCH_SLURM_PARTITION" -N "$want" bash -c 'echo $SLURMD_NODENAME' 2>/dev/null | sort -u | wc -l || true)
if [ "$n" = "$want" ]; then ok "srun -N $want: $n distinct nodes"; else ko "srun -N $want" "$n distinct nodes"; fi

# 9. MPI: srun --mpi=pmix, 4 ranks on 2 nodes, Allreduce of the ranks = 6
if ! command -v mpicc >/dev/null 2>&1; then
  ko "mpi hello" "mpicc not found (start-slurm.sh installs libopenmpi-dev)"
else
  H=$D/mpi-hello; mkdir -p "$H"
  cat > "$H/hello.c" <<'C'
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  int rank, size, sum = 0;
  const char *node = getenv("SLURMD_NODENAME");
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  printf("rank %d/%d on %s sum %d\n", rank, size, node ? node : "?", sum);
  MPI_Finalize();
  return 0;
}
C
  if [ ! -x "$H/hello" ] || [ "$H/hello.c" -nt "$H/hello" ]; then
    mpicc -O1 -o "$H/hello" "$H/hello.c" 2>"$W/mpicc.err" || true
  fi
  if [ ! -x "$H/hello" ]; then ko "mpicc hello.c" "$(cat "$W/mpicc.err")"
  else
    out=$(timeout 120 srun -p "$PITCH_SLURM_PARTITION" --mpi=pmix -N 2 -n 4 "$H/hello" 2>"$W/mpi.err" || true)
    ranks=$(grep -c 'sum 6' <<<"$out" || true)
    nodes=$(awk '/sum 6/{print $4}' <<<"$out" | sort -u | wc -l)
    if [ "$ranks" = 4 ] && [ "$nodes" = 2 ]; then ok "srun --mpi=pmix -N2 -n4 hello: 4 ranks on 2 nodes, allreduce ok"
    else ko "srun --mpi=pmix -N2 -n4 hello" "$(tr '\n' ' ' <<<"$out") $(head -c 600 "$W/mpi.err")"; fi
    # mpiexec inside a 2-node batch allocation (Open MPI launches via Slurm)
    j=$(submit -N 2 -n 4 -o "$W/mpiexec.txt" --wrap "mpiexec $H/hello")
    waitdone "$j" 600 || true
    if [ "$(grep -c 'sum 6' "$W/mpiexec.txt" 2>/dev/null || true)" = 4 ]; then ok "mpiexec in sbatch -N2 -n4: 4 ranks, allreduce ok"
    else ko "mpiexec in sbatch -N2 -n4" "$(head -c 600 "$W/mpiexec.txt" 2>&1)"; fi
  fi
fi

# 10. sacct, only when the cluster was started --with-accounting
if [ "${PITCH_SLURM_ACCOUNTING:-0}" = 1 ]; then
  acct=""
  for _ in $(seq 1 50); do   # slurmctld sends job records to slurmdbd asynchronously
    acct=$(sacct -n -X -P -j "$a" -o JobID,State 2>&1 | sort | tr '\n' ' ' || true)
    [ "$acct" = "${a}_0|COMPLETED ${a}_1|COMPLETED ${a}_2|COMPLETED " ] && break; sleep 0.2
  done
  if [ "$acct" = "${a}_0|COMPLETED ${a}_1|COMPLETED ${a}_2|COMPLETED " ]; then ok "sacct -j $a: $acct"
  else ko "sacct -j $a" "got '$acct'"; fi
else
  echo "INFO sacct not checked (start-slurm.sh --with-accounting enables it)"
fi

finished=1
[ -s "$W/sbatch.err" ] && { echo "sbatch errors:"; cat "$W/sbatch.err"; }
cd / && rm -rf "$W"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
