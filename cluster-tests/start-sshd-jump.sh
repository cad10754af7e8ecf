#!/usr/bin/env bash
# start-sshd-jump.sh (called by start-sshd.sh, which made the state dir and its keys)
#
# Two more sshd daemons for the system-ssh transport's tests, the way many centres are built:
#   * a jump host on 127.0.0.1:$PITCH_SSHD_JUMP_PORT (2223): public key only, may forward
#     only to the login host (PermitOpen);
#   * a login host on 127.0.0.2:$PITCH_SSHD_LOGIN_PORT (2224): public key AND a one-time code
#     (keyboard-interactive through PAM: pam_exec runs $D/mfa/otp-check, which accepts the
#     code in $D/mfa/otp once and then draws a new one). Reached with ProxyJump through the
#     jump host, by the Host alias `pitch-login` of the ssh configuration file $D/ssh_config
#     (a ~/.ssh/config-style file: tests use it with -F, never the machine's ~/.ssh/config).
# The answer to the prompt comes from $D/mfa/askpass (SSH_ASKPASS with SSH_ASKPASS_REQUIRE=
# force), which logs each question to $D/mfa/askpass.log; both daemons log every
# authentication (LogLevel VERBOSE) to $D/jump.log and $D/login.log.
#
# The login host's PAM service is /etc/pam.d/pitch-login-sshd (sshd names its PAM service
# after its program name, here a symlink to /usr/sbin/sshd): the machine's own sshd is not
# touched. Needs root for /etc/pam.d (CI runs as root).
# Idempotent: daemons of the state dir that still answer are left running.
set -euo pipefail

D=${PITCH_SSHD_DIR:-/tmp/pitch-sshd}
D=$(cd "$D" && pwd)
JUMP_PORT=${PITCH_SSHD_JUMP_PORT:-2223}
LOGIN_PORT=${PITCH_SSHD_LOGIN_PORT:-2224}
LOGIN_ADDR=127.0.0.2
log() { echo "[start-sshd-jump] $*"; }

[ -e /lib/x86_64-linux-gnu/security/pam_exec.so ] || [ -n "$(find /lib /usr/lib -name pam_exec.so -print -quit 2>/dev/null)" ] || {
  log "installing libpam-modules (pam_exec)"
  DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o DPkg::Lock::Timeout=300 install --no-install-recommends libpam-modules >/dev/null
}

M=$D/mfa
mkdir -p "$M"; chmod 700 "$M"
[ -f "$M/otp" ] || { od -An -N4 -tu4 /dev/urandom | tr -d ' ' > "$M/otp"; chmod 600 "$M/otp"; }
cat > "$M/otp-check" <<'SH'
#!/bin/sh
# pam_exec expose_authtok: the code typed at the prompt on stdin (NUL-terminated).
M=$(dirname "$0")
given=$(tr -d '\000\n')
if [ -n "$given" ] && [ "$given" = "$(cat "$M/otp")" ]; then
  # One time: the next login needs the next code.
  od -An -N4 -tu4 /dev/urandom | tr -d ' ' > "$M/otp.new" && mv "$M/otp.new" "$M/otp"
  echo "ok $(date +%s)" >> "$M/otp.log"
  exit 0
fi
echo "bad $(date +%s)" >> "$M/otp.log"
exit 1
SH
cat > "$M/askpass" <<'SH'
#!/bin/sh
# SSH_ASKPASS for the tests: a person reading the code off their token.
M=$(dirname "$0")
echo "$1" >> "$M/askpass.log"
cat "$M/otp"
SH
chmod 700 "$M/otp-check" "$M/askpass"

cat > /etc/pam.d/pitch-login-sshd <<PAM
# pitch's test login host (cluster-tests/start-sshd-jump.sh): a one-time code.
auth     required pam_exec.so expose_authtok quiet $M/otp-check
# pam_exec has no setcred: this answers it.
auth     required pam_permit.so
account  required pam_permit.so
session  required pam_permit.so
password required pam_deny.so
PAM
ln -sf /usr/sbin/sshd "$D/pitch-login-sshd"

common() {
  cat <<CONF
HostKey $D/host_ed25519
AuthorizedKeysFile $D/authorized_keys
PasswordAuthentication no
PubkeyAuthentication yes
StrictModes no
Subsystem sftp internal-sftp
MaxSessions 50
MaxStartups 50:30:100
LogLevel VERBOSE
CONF
}
{ common; cat <<CONF
Port $JUMP_PORT
ListenAddress 127.0.0.1
PidFile $D/jump.pid
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
PermitOpen $LOGIN_ADDR:$LOGIN_PORT
CONF
} > "$D/jump_config"
{ common; cat <<CONF
Port $LOGIN_PORT
ListenAddress $LOGIN_ADDR
PidFile $D/login.pid
KbdInteractiveAuthentication yes
UsePAM yes
# The key and then the one-time code; keyboard-interactive for root needs "yes".
AuthenticationMethods publickey,keyboard-interactive
PermitRootLogin yes
CONF
} > "$D/login_config"

key=$(cut -d' ' -f1,2 "$D/host_ed25519.pub")
printf '[127.0.0.1]:%s %s\n[%s]:%s %s\n' "$JUMP_PORT" "$key" "$LOGIN_ADDR" "$LOGIN_PORT" "$key" > "$D/known_hosts_jump"
cat > "$D/ssh_config" <<CONF
# A ~/.ssh/config as a user at a centre with a jump host and MFA would have it.
Host pitch-jump
  HostName 127.0.0.1
  Port $JUMP_PORT
  User $(id -un)
  IdentityFile $D/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $D/known_hosts_jump
Host pitch-login
  HostName $LOGIN_ADDR
  Port $LOGIN_PORT
  User $(id -un)
  IdentityFile $D/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $D/known_hosts_jump
  ProxyJump pitch-jump
CONF

grep -q PITCH_SSH_CONFIG "$D/env.sh" 2>/dev/null || cat >> "$D/env.sh" <<ENV
export PITCH_SSH_CONFIG=$D/ssh_config
export PITCH_SSH_ALIAS=pitch-login
export PITCH_SSH_ASKPASS=$M/askpass
ENV

up() {  # name config port addr
  local pid=$D/$1.pid
  [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && (exec 3<>"/dev/tcp/$4/$3") 2>/dev/null
}
start() {  # name config port addr program
  if up "$1" "$2" "$3" "$4"; then log "$1 sshd already up on $4:$3"; return 0; fi
  [ -f "$D/$1.pid" ] && kill "$(cat "$D/$1.pid")" 2>/dev/null || true
  mkdir -p /run/sshd
  "$5" -t -f "$2"
  "$5" -f "$2" -E "$D/$1.log"
  for _ in $(seq 50); do
    up "$1" "$2" "$3" "$4" && { log "$1 sshd up on $4:$3"; return 0; }
    sleep 0.1
  done
  log "$1 sshd did not answer on $4:$3; see $D/$1.log"
  return 1
}
start jump "$D/jump_config" "$JUMP_PORT" 127.0.0.1 /usr/sbin/sshd
start login "$D/login_config" "$LOGIN_PORT" "$LOGIN_ADDR" "$D/pitch-login-sshd"

# The whole path, as the tests take it: ProxyJump, the key, the one-time code.
if ! SSH_ASKPASS=$M/askpass SSH_ASKPASS_REQUIRE=force timeout 30 \
    ssh -F "$D/ssh_config" -o StrictHostKeyChecking=yes pitch-login true </dev/null; then
  log "cannot log in to pitch-login through pitch-jump; see $D/jump.log $D/login.log $M/otp.log"
  exit 1
fi
log "login host reached through the jump host with a one-time code (source $D/env.sh)"
