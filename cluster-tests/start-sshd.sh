#!/usr/bin/env bash
# start-sshd.sh
#
# A private sshd on 127.0.0.1 for pitch's remote-submission tests: the "login node" the
# driver reaches over SSH is this machine. Loopback only, its own host key, its own
# authorized key, password logins off.
#
#   * installs openssh-server (and libssl-dev, pkg-config for building the ssh2 crate) when
#     missing (one `apt-get update` first);
#   * generates in the state dir: a host key, a client key (id_ed25519), authorized_keys
#     for the current user, and a known_hosts line for [127.0.0.1]:PORT;
#   * idempotent: an sshd of the state dir that still answers is left running;
#   * then start-sshd-jump.sh: a jump host (127.0.0.1:2223) and a login host behind it with
#     a one-time code (127.0.0.2:2224), and the ssh configuration that reaches it by a Host
#     alias (PITCH_SSH_CONFIG, PITCH_SSH_ALIAS, PITCH_SSH_ASKPASS in env.sh).
#
# Environment knobs: PITCH_SSHD_DIR=/tmp/pitch-sshd  PITCH_SSHD_PORT=2222
# Afterwards:  source "$PITCH_SSHD_DIR/env.sh"   (PITCH_SSH_HOST, PITCH_SSH_PORT,
#              PITCH_SSH_KEY, PITCH_SSH_KNOWN_HOSTS, PITCH_SSH_USER)
# Stop with:   kill "$(cat "$PITCH_SSHD_DIR/sshd.pid")"
set -euo pipefail

D=${PITCH_SSHD_DIR:-/tmp/pitch-sshd}
PORT=${PITCH_SSHD_PORT:-2222}
log() { echo "[start-sshd] $*"; }

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  # The package must not start a system sshd (on 0.0.0.0:22): only ours runs, on loopback.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; made_policy=1
  fi
  APT=(apt-get -y -qq -o DPkg::Lock::Timeout=300)   # wait for a concurrent apt/dpkg, as start-slurm.sh does
  "${APT[@]}" update
  DEBIAN_FRONTEND=noninteractive "${APT[@]}" install --no-install-recommends "${need[@]}" >/dev/null
  [ "$made_policy" = 1 ] && rm -f "$policy"
fi

mkdir -p "$D"; chmod 700 "$D"; D=$(cd "$D" && pwd)
[ -f "$D/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$D/host_ed25519"
[ -f "$D/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$D/id_ed25519"
cp "$D/id_ed25519.pub" "$D/authorized_keys"; chmod 600 "$D/authorized_keys"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$D/host_ed25519.pub")" > "$D/known_hosts"
# A known_hosts whose key for the host is another one: the mismatch test.
ssh-keygen -q -t ed25519 -N '' -f "$D/other_ed25519" <<<y >/dev/null 2>&1 || true
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$D/other_ed25519.pub")" > "$D/known_hosts_wrong"

cat > "$D/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $D/host_ed25519
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
MaxSessions 50
MaxStartups 50:30:100
LogLevel ERROR
CONF

cat > "$D/env.sh" <<ENV
export PITCH_SSH_HOST=127.0.0.1
export PITCH_SSH_PORT=$PORT
export PITCH_SSH_USER=$(id -un)
export PITCH_SSH_KEY=$D/id_ed25519
export PITCH_SSH_KNOWN_HOSTS=$D/known_hosts
export PITCH_SSH_KNOWN_HOSTS_WRONG=$D/known_hosts_wrong
export PITCH_SSHD_DIR=$D
ENV

answers() {
  ssh -q -o BatchMode=yes -o UserKnownHostsFile="$D/known_hosts" -o StrictHostKeyChecking=yes \
    -i "$D/id_ed25519" -p "$PORT" "$(id -un)@127.0.0.1" true 2>/dev/null
}
jump() { PITCH_SSHD_DIR=$D bash "$(dirname "$0")/start-sshd-jump.sh"; }
if [ -f "$D/sshd.pid" ] && kill -0 "$(cat "$D/sshd.pid")" 2>/dev/null && answers; then
  log "sshd already up on 127.0.0.1:$PORT"
  jump
  exit 0
fi
[ -f "$D/sshd.pid" ] && kill "$(cat "$D/sshd.pid")" 2>/dev/null || true
mkdir -p /run/sshd
/usr/sbin/sshd -t -f "$D/sshd_config"
/usr/sbin/sshd -f "$D/sshd_config" -E "$D/sshd.log"
for _ in $(seq 50); do
  answers && { log "sshd up on 127.0.0.1:$PORT (source $D/env.sh)"; jump; exit 0; }
  sleep 0.1
done
log "sshd did not answer on 127.0.0.1:$PORT; see $D/sshd.log"
exit 1
