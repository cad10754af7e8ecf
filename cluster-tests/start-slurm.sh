#!/usr/bin/env bash
# start-slurm.sh [--with-accounting]
#
# Bring up pitch's throw-away test cluster: a real Slurm (Debian 12's slurm-wlm
# 22.05) with N emulated nodes on this one machine, loopback only, no systemd.
#
#   munged (reused if one already answers), slurmctld, and one slurmd per node
#   (`slurmd -N nI`, all on 127.0.0.1 with distinct ports; Debian's slurmd is
#   built with MULTIPLE_SLURMD). With --with-accounting also a private mariadbd
#   (own datadir and socket under the state dir, no TCP) and slurmdbd, so that
#   `sacct` works.
#
# Idempotent:
#   * installs missing Debian packages (one `apt-get update` first, only when
#     something is missing);
#   * if the cluster in the state dir is already up with the same configuration
#     and healthy, it only says so (well under a second);
#   * otherwise it stops what it had started there (by pid files, see
#     stop-slurm.sh) and starts a fresh cluster (empty queue, job ids from 1).
#
# Environment knobs (all optional):
#   PITCH_SLURM_DIR=/tmp/pitch-slurm   state dir: config, pid files, logs, spool
#   PITCH_SLURM_NODES=4                number of emulated nodes n1..nN
#   PITCH_SLURM_CPUS=4                 CPUs per node (may exceed the real cores)
#   PITCH_SLURM_MEM=<auto>             RealMemory (MB) per node (default 90% of
#                                      MemTotal / nodes; only caps --mem)
#   PITCH_SLURM_PARTITION=debug        name of the (default) partition
#   PITCH_SLURM_MIN_JOB_AGE=300        seconds a finished job stays visible to
#                                      squeue/scontrol (Slurm's MinJobAge)
#   PITCH_SLURM_MAX_ARRAY_SIZE=10001   Slurm's MaxArraySize
#   PITCH_SLURM_SCHED_EXTRA=           appended to SchedulerParameters,
#                                      e.g. kill_invalid_depend
#   PITCH_SLURM_ACCOUNTING=0           1 = same as --with-accounting
#   PITCH_SLURM_LINK_ETC=1             1: symlink /etc/slurm/slurm.conf to our
#                                      config if that path is absent (or already
#                                      our link), so clients work without SLURM_CONF
#   PITCH_SLURM_MEMORY=auto            cgroup (task/cgroup), sampling (OverMemoryKill) or
#                                      auto: cgroup where the memory cgroup is writable
#   PITCH_SLURM_TIMEOUT=60             seconds to wait for all nodes to be idle
#   PITCH_SLURM_CTLD_PORT=6817  PITCH_SLURM_DBD_PORT=6819
#   PITCH_SLURM_SLURMD_PORT=17001      node nI listens on SLURMD_PORT+I-1
#
# Afterwards:  source "$PITCH_SLURM_DIR/env.sh"   (SLURM_CONF, partition name,
#              loopback-only Open MPI settings for the emulated nodes)
# Stop with:   cluster-tests/stop-slurm.sh
set -euo pipefail

T_START=$(date +%s.%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

WANT_ACCT=${PITCH_SLURM_ACCOUNTING:-0}
for arg in "$@"; do
  case "$arg" in
    --with-accounting) WANT_ACCT=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "start-slurm.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

D=${PITCH_SLURM_DIR:-/tmp/pitch-slurm}
mkdir -p "$D"; D=$(cd "$D" && pwd)
NODES=${PITCH_SLURM_NODES:-4}
CPUS=${PITCH_SLURM_CPUS:-4}
MEM=${PITCH_SLURM_MEM:-$(awk -v n="$NODES" '/^MemTotal:/{printf "%d", $2/1024*0.9/n}' /proc/meminfo)}
PARTITION=${PITCH_SLURM_PARTITION:-debug}
MIN_JOB_AGE=${PITCH_SLURM_MIN_JOB_AGE:-300}
MAX_ARRAY_SIZE=${PITCH_SLURM_MAX_ARRAY_SIZE:-10001}
SCHED_EXTRA=${PITCH_SLURM_SCHED_EXTRA:-}
LINK_ETC=${PITCH_SLURM_LINK_ETC:-1}
TIMEOUT=${PITCH_SLURM_TIMEOUT:-60}
CTLD_PORT=${PITCH_SLURM_CTLD_PORT:-6817}
DBD_PORT=${PITCH_SLURM_DBD_PORT:-6819}
SLURMD_PORT=${PITCH_SLURM_SLURMD_PORT:-17001}
CONF=$D/etc/slurm.conf
DBDCONF=$D/etc/slurmdbd.conf
# slurm's mpi_pmix_v4 plugin dlopens this file; without it there is no --mpi=pmix
PMIX_LIB=/usr/lib/x86_64-linux-gnu/pmix2/lib/libpmix.so.2

log() { echo "[start-slurm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
elapsed() { awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'; }
# A pid is alive only if it exists and is not a zombie: where PID 1 is a
# minimal init that reaps orphans late, a dead daemon can linger as Z and
# `kill -0` would still succeed.
alive() {
  local pid=${1:-} st
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$st" != Z ] && [ "$st" != X ]
}
pid_in() { cat "$1" 2>/dev/null || true; }
wait_for() { # SECONDS CMD... : retry CMD every 0.1 s until it succeeds
  local t=$1; shift
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.1; done
}
show_logs() { # tails of every log we have, for a failed start
  local f
  for f in "$D"/log/*.log; do
    [ -e "$f" ] || continue
    echo "----- tail -n 15 $f" >&2; tail -n 15 "$f" >&2 || true
  done
}

# ------------------------------------------------------------------ install
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }
# slurm-wlm's metapackage pulls ~40 extra packages; these are all we need.
# libpmix2 must be there before slurmd starts (or slurmd cannot load PMIx);
# mpicc needs gcc + libc6-dev, which libopenmpi-dev does not recommend.
pkgs=(slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev libpmix2 libpmix-dev gcc libc6-dev)
[ "$WANT_ACCT" = 1 ] && pkgs+=(slurmdbd mariadb-server)
need=()
for p in "${pkgs[@]}"; do installed "$p" || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing packages (${need[*]}) and not root: install them first"
  log "installing: ${need[*]} (log: $D/apt.log)"
  # Keep package postinst scripts from starting munge/slurm via /etc/init.d
  # (container images usually have such a policy-rc.d already).
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  APT=(apt-get -y -q -o DPkg::Lock::Timeout=300)   # wait for a concurrent apt/dpkg
  ok=1
  { "${APT[@]}" update && "${APT[@]}" install --no-install-recommends "${need[@]}"; } >"$D/apt.log" 2>&1 || ok=0
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $ok = 1 ] || { tail -n 20 "$D/apt.log" >&2; die "apt-get failed, see $D/apt.log"; }
  log "installed after $(elapsed)s"
fi

mkdir -p "$D"/{etc,state,spool,log,run,tmp}

# ------------------------------------------------------------------ munge
# munged has no systemd here: it must run as user munge, and /run/munge
# (normally systemd's RuntimeDirectory) must exist first.
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s "$D/run/munged.pid" ] || log "munged already answers (not started by us); reusing it"
else
  if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  wait_for 10 test -s /run/munge/munged.pid || die "munged did not start (see /var/log/munge/munged.log)"
  cp /run/munge/munged.pid "$D/run/munged.pid"   # marks it as ours for stop-slurm.sh
  wait_for 10 sh -c 'munge -n | unmunge' || die "munged does not answer"
fi

# ------------------------------------------------------------------ configs
MPIDEFAULT=none; [ -e "$PMIX_LIB" ] && MPIDEFAULT=pmix

# Loopback only. slurmd binds its NodeAddr (127.0.0.1) with NoInAddrAny.
# slurmctld/slurmdbd bind the address the machine's host name resolves to with
# NoCtldInAddrAny/NoInAddrAny, and 0.0.0.0 without. So bind them to the host
# name only if it resolves to 127.0.0.0/8; otherwise they would listen on an
# external address only, so keep 0.0.0.0 (all traffic still goes to 127.0.0.1).
COMM=NoInAddrAny
DBD_COMM="# host name not on loopback: slurmdbd listens on 0.0.0.0"
host_ip=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk 'NR==1{print $1}' || true)
case "$host_ip" in
  127.*) COMM=NoInAddrAny,NoCtldInAddrAny; DBD_COMM=CommunicationParameters=NoInAddrAny ;;
  *) log "host name $(hostname) resolves to '${host_ip:-nothing}', not 127.x: slurmctld will listen on 0.0.0.0:$CTLD_PORT (clients still use 127.0.0.1)" ;;
esac

if [ "$WANT_ACCT" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT"
else
  ACCT="# no slurmdbd: sacct prints 'Slurm accounting storage is disabled' (and exits 0)
AccountingStorageType=accounting_storage/none"
fi
# Memory is enforced as on a production cluster: each job's memory (--mem, or DefMemPerCPU
# below) is the limit of its cgroup (cgroup v1 memory controller, task/cgroup with
# ConstrainRAMSpace) and a job killed by the kernel's OOM killer there ends OUT_OF_MEMORY.
# Where the memory cgroup cannot be written (a container that does not delegate it),
# slurmstepd's sampling enforces it instead (OverMemoryKill: the step is killed, the job
# ends FAILED). PITCH_SLURM_MEMORY=cgroup|sampling|auto chooses.
MEMORY=${PITCH_SLURM_MEMORY:-auto}
if [ "$MEMORY" = auto ]; then
  MEMORY=sampling
  probe=/sys/fs/cgroup/memory/pitch-probe-$$
  if mkdir "$probe" 2>/dev/null; then rmdir "$probe"; MEMORY=cgroup; fi
fi
case "$MEMORY" in
  cgroup)
    TASKPLUGIN=task/cgroup
    ACCT="$ACCT
JobAcctGatherType=jobacct_gather/linux"
    CGROUP="CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedSwapSpace=0" ;;
  sampling)
    TASKPLUGIN=task/none
    ACCT="$ACCT
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1"
    CGROUP="" ;;
  *) echo "PITCH_SLURM_MEMORY=$MEMORY: expected cgroup, sampling or auto" >&2; exit 2 ;;
esac

cat > "$CONF.new" <<EOF
# generated by pitch cluster-tests/start-slurm.sh: single-machine, loopback-only test cluster
ClusterName=pitch
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
# A requeued job (node failure, preemption) may start again only once the credentials of
# its last run have expired: cred_expire, 120 s by default; 30 s here, still far longer
# than a job launch takes on this machine.
AuthInfo=cred_expire=30
CredType=cred/munge
CommunicationParameters=$COMM
StateSaveLocation=$D/state
# %n = node name: every emulated node has its own spool dir, pid file and log
SlurmdSpoolDir=$D/spool/slurmd-%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# per-node TmpFS: mpi/pmix creates TmpFS/spmix_appdir_<uid>_<job>.<step>; with
# one shared /tmp, steps spanning several emulated nodes collide ("File exists")
TmpFS=$D/tmp/%n
# no systemd; cgroups only for memory (above)
ProctrackType=proctrack/linuxproc
TaskPlugin=$TASKPLUGIN
MpiDefault=$MPIDEFAULT
MailProg=/bin/true
# several 1-core jobs per node; more CPUs than real cores are accepted. Memory is a
# consumable resource (so a step's --mem is its limit, enforced by OverMemoryKill); a job
# without --mem gets its node's share per CPU, so four 1-CPU jobs still fit on a node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((MEM / CPUS))
SlurmdParameters=config_overrides
# fast scheduling: without batch_sched_delay=0 a batch job waits ~3 s; 22.05
# still starts batch jobs only on its ~1 s background scheduler tick
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1,default_queue_depth=1000${SCHED_EXTRA:+,$SCHED_EXTRA}
MinJobAge=$MIN_JOB_AGE
KillWait=5
ReturnToService=2
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=100000
$ACCT
# one line per finished job (state, exit code, array ids): debugging aid only
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
NodeName=n[1-$NODES] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$SLURMD_PORT-$((SLURMD_PORT+NODES-1))] CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
# Preemption (the fault-injection suite, tests/faults): a job of a partition with a higher
# PriorityTier may preempt jobs of a lower one; the preempted job is requeued (or, if it may
# not be requeued, cancelled and ends PREEMPTED). The default partition and highprio share
# the top tier, so nothing preempts the default partition's jobs; only lowprio's are
# preemptable (by jobs of either of the other two).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=2
PartitionName=lowprio Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=highprio Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2
EOF
# cgroup.conf next to slurm.conf (its TaskPlugin line changes with it, so a change restarts)
if [ -n "$CGROUP" ]; then
  printf '# generated by pitch cluster-tests/start-slurm.sh\n%s\n' "$CGROUP" > "$D/etc/cgroup.conf"
else
  rm -f "$D/etc/cgroup.conf"
fi

if [ "$WANT_ACCT" = 1 ]; then
  # slurmdbd refuses a config readable by others
  ( umask 077; cat > "$DBDCONF" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
# like slurmctld: bind the host name's (loopback) address instead of 0.0.0.0
$DBD_COMM
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
DebugLevel=info
EOF
  )
else
  rm -f "$DBDCONF"
fi

# Test-cluster-only environment: tests source this; the library never sets it.
cat > "$D/env.sh" <<EOF
# generated by pitch cluster-tests/start-slurm.sh -- source it in tests
export PITCH_SLURM_DIR=$D
export SLURM_CONF=$CONF
export PITCH_SLURM_PARTITION=$PARTITION
export PITCH_SLURM_MEMORY=$MEMORY
export PITCH_SLURM_NODES=$NODES
export PITCH_SLURM_CPUS=$CPUS
export PITCH_SLURM_MIN_JOB_AGE=$MIN_JOB_AGE
export PITCH_SLURM_MAX_ARRAY_SIZE=$MAX_ARRAY_SIZE
export PITCH_SLURM_ACCOUNTING=$WANT_ACCT
export PITCH_SLURM_MPI_DEFAULT=$MPIDEFAULT
# Open MPI as root needs both of these (mpiexec refuses otherwise).
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Emulated nodes share one host: vader (shared memory) segments of ranks on
# different "nodes" collide (segfault in mca_btl_vader_poll_handle_frag), so
# use TCP only, and only over lo (Open MPI skips lo by default and would pick
# an external interface).
export OMPI_MCA_btl=self,tcp
export OMPI_MCA_btl_tcp_if_include=lo
export OMPI_MCA_oob_tcp_if_include=lo
# more ranks than real cores (2 here) without mpiexec refusing
export OMPI_MCA_rmaps_base_oversubscribe=1
EOF
export SLURM_CONF=$CONF

if [ "$LINK_ETC" = 1 ]; then
  mkdir -p /etc/slurm
  if [ ! -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf || true)" = "$CONF" ]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  else
    log "/etc/slurm/slurm.conf exists and is not ours; clients need SLURM_CONF=$CONF (see env.sh)"
  fi
fi

# ------------------------------------------------------------------ up already?
# Nodes that answer and can take work (not down/drained/not responding).
healthy_nodes() {
  timeout 10 sinfo -h -N -p "$PARTITION" -o '%N %t' 2>/dev/null |
    awk '$2 ~ /^(idle|mix|alloc|comp)$/ {print $1}' | sort -u | wc -l
}
running=1
cmp -s "$CONF" "$CONF.new" || running=0
alive "$(pid_in "$D/run/slurmctld.pid")" || running=0
for i in $(seq 1 "$NODES"); do alive "$(pid_in "$D/run/slurmd-n$i.pid")" || running=0; done
if [ "$WANT_ACCT" = 1 ]; then
  alive "$(pid_in "$D/run/slurmdbd.pid")" || running=0
  alive "$(pid_in "$D/run/mysqld.pid")" || running=0
fi
mv "$CONF.new" "$CONF"

if [ $running = 1 ] && [ "$(healthy_nodes)" -ge "$NODES" ]; then
  log "cluster in $D already running and healthy"
else
  [ $running = 1 ] && log "cluster in $D runs but is not healthy; restarting it"
  # stop whatever we had started in $D (by pid files), then start fresh
  "$HERE/stop-slurm.sh" --keep-munge >/dev/null 2>&1 || true
  # A fresh StateSaveLocation: `slurmctld -c` would purge old job state one file
  # per job (10 s after a few thousand jobs).
  rm -rf "$D/state" "$D/spool" "$D/tmp" "$D/log.prev"; mkdir -p "$D/state" "$D/spool" "$D/tmp"
  mv "$D/log" "$D/log.prev" 2>/dev/null || true; mkdir -p "$D/log"   # keep the previous run's logs once
  ports=("$CTLD_PORT"); for i in $(seq 0 $((NODES-1))); do ports+=($((SLURMD_PORT+i))); done
  [ "$WANT_ACCT" = 1 ] && ports+=("$DBD_PORT")
  for p in "${ports[@]}"; do
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
      die "TCP port $p is already in use (another Slurm?); set PITCH_SLURM_*_PORT"
    fi
  done

  if [ "$WANT_ACCT" = 1 ]; then
    # Private mariadbd: own datadir and unix socket under $D, no TCP at all
    # (--skip-networking), root authenticates over the socket. A fresh DB each
    # time: job ids restart at 1 and old sacct rows would clash.
    rm -rf "$D/mysql"; mkdir -p "$D/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$D/mysql" \
      --auth-root-authentication-method=socket --skip-test-db >"$D/log/mariadb-install-db.log" 2>&1 \
      || { show_logs; die "mariadb-install-db failed"; }
    ( setsid mariadbd --no-defaults --user=root --datadir="$D/mysql" \
        --socket="$D/run/mysqld.sock" --pid-file="$D/run/mysqld.pid" --skip-networking \
        --log-error="$D/log/mysqld.log" --innodb-buffer-pool-size=64M \
        </dev/null >/dev/null 2>&1 & )
    wait_for 30 mariadb --no-defaults -S "$D/run/mysqld.sock" -e 'select 1' \
      || { show_logs; die "private mariadbd did not come up"; }
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF (exported
    # above). Its StorageHost "localhost" means the unix socket; point it at ours.
    MYSQL_UNIX_PORT="$D/run/mysqld.sock" slurmdbd \
      || { show_logs; die "slurmdbd failed to start"; }
    wait_for 30 sacctmgr -n show cluster || { show_logs; die "slurmdbd did not come up"; }
    sacctmgr -i add cluster pitch >/dev/null 2>&1 || true
  fi

  if [ "$MEMORY" = cgroup ]; then
    # Job ids start at 1 again: cgroups a killed slurmstepd left behind (a node crash of the
    # fault suite, a cluster stopped with jobs running) would meet the new jobs of the same
    # ids ("task_p_pre_setuid functions returned error"). Only empty cgroups can go, and
    # every slurmd of these node names is stopped now.
    for i in $(seq 1 "$NODES"); do
      for h in /sys/fs/cgroup/*/slurm_n"$i"; do
        [ -d "$h" ] && find "$h" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null
      done
    done
  fi
  slurmctld -c -f "$CONF" || { show_logs; die "slurmctld failed to start"; }   # daemonizes; -c: no old jobs
  wait_for 10 test -s "$D/run/slurmctld.pid" || true
  for i in $(seq 1 "$NODES"); do
    # each emulated node needs its spool dir (domain socket) and TmpFS beforehand
    mkdir -p "$D/spool/slurmd-n$i" "$D/tmp/n$i"
    slurmd -f "$CONF" -N "n$i" || { show_logs; die "slurmd n$i failed to start"; }
  done

  # ---------------------------------------------------------------- wait until idle
  deadline=$(( $(date +%s) + TIMEOUT ))
  while :; do
    idle=$(timeout 10 sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l || true)
    [ "${idle:-0}" -ge "$NODES" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "timeout after ${TIMEOUT}s: only ${idle:-0}/$NODES nodes idle"
      timeout 10 sinfo -N -l >&2 || true
      show_logs
      die "cluster did not become ready (state dir $D)"
    fi
    sleep 0.1
  done
fi

timeout 10 sinfo >&2 || true
log "ready after $(elapsed)s: $NODES nodes x $CPUS CPUs, partition $PARTITION, MpiDefault=$MPIDEFAULT, MinJobAge=$MIN_JOB_AGE, MaxArraySize=$MAX_ARRAY_SIZE, accounting=$WANT_ACCT"
# stdout: what a test needs
echo "# source this before running tests against the cluster:"
echo "source $D/env.sh"
grep '^export' "$D/env.sh"
