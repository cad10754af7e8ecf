#!/usr/bin/env bash
# stop-slurm.sh [--keep-munge]
#
# Stop pitch's test cluster in $PITCH_SLURM_DIR (default /tmp/pitch-slurm):
# only what start-slurm.sh started there, found by its pid files in
# $PITCH_SLURM_DIR/run (slurmd-*.pid, slurmctld.pid, slurmdbd.pid, mysqld.pid,
# and munged.pid, which exists only if start-slurm.sh launched munged itself).
# Cancels the cluster's jobs first. Never kills anything by name. Idempotent:
# with nothing running it does nothing and exits 0.
#
#   --keep-munge   leave munged (and the /etc/slurm/slurm.conf link) in place;
#                  start-slurm.sh uses this when it restarts the cluster
set -euo pipefail

D=${PITCH_SLURM_DIR:-/tmp/pitch-slurm}
KEEP_MUNGE=0
for arg in "$@"; do
  case "$arg" in
    --keep-munge) KEEP_MUNGE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "stop-slurm.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
CONF=$D/etc/slurm.conf

log() { echo "[stop-slurm] $*" >&2; }
# alive = exists and is not a zombie (see start-slurm.sh)
alive() {
  local pid=${1:-} st
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$st" != Z ] && [ "$st" != X ]
}
stop_pidfile() { # PIDFILE LABEL: SIGTERM, wait up to 10 s, then SIGKILL
  local f=$1 pid
  [ -s "$f" ] || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do alive "$pid" || break; sleep 0.05; done
    if alive "$pid"; then
      log "$2 (pid $pid) ignored SIGTERM for 10 s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true; sleep 0.2
    fi
    log "stopped $2 (pid $pid)"
  fi
  rm -f "$f"
}

[ -d "$D/run" ] || { log "nothing to stop in $D"; exit 0; }

# Cancel jobs first so that no slurmstepd/job processes outlive their slurmd.
ctld_pid=$(cat "$D/run/slurmctld.pid" 2>/dev/null || true)
if [ -f "$CONF" ] && alive "$ctld_pid"; then
  jobs=$(SLURM_CONF=$CONF timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    SLURM_CONF=$CONF timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -z "$(SLURM_CONF=$CONF timeout 5 squeue -h -o %A 2>/dev/null || true)" ] && break
      sleep 0.1
    done
  fi
fi

for f in "$D"/run/slurmd-*.pid; do
  [ -e "$f" ] && stop_pidfile "$f" "slurmd $(basename "$f" .pid | sed 's/^slurmd-//')"
done
stop_pidfile "$D/run/slurmctld.pid" slurmctld
stop_pidfile "$D/run/slurmdbd.pid" slurmdbd
stop_pidfile "$D/run/mysqld.pid" mariadbd
# munged is shared by every Slurm on this machine: another cluster (another
# PITCH_SLURM_DIR with other ports) may have reused the one we started. Leave
# it running while any other slurmctld/slurmd/slurmdbd is alive (we only look
# them up; we never signal processes we did not start).
others=0
for pid in $(pgrep -x 'slurmctld|slurmd|slurmdbd' 2>/dev/null || true); do
  alive "$pid" && others=$((others+1))
done
if [ "$KEEP_MUNGE" = 0 ] && [ -s "$D/run/munged.pid" ] && [ "$others" -gt 0 ]; then
  log "leaving munged running: $others other Slurm daemon(s) on this machine use it"
  KEEP_MUNGE=1
fi
if [ "$KEEP_MUNGE" = 0 ]; then
  stop_pidfile "$D/run/munged.pid" munged
  if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null || true)" = "$CONF" ]; then
    rm -f /etc/slurm/slurm.conf
  fi
fi
exit 0
