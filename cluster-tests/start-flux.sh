#!/usr/bin/env bash
# start-flux.sh [TARBALL]
#
# Bring up pitch's Flux test instance: a real flux-core, `flux start --test-size=N` in the
# background (N brokers on this host = N emulated nodes, each owning all of the host's
# cores), with the queues of cluster-tests/flux-queues.toml (`debug`, `batch`; `batch` is
# the default), all of them started.
#
# TARBALL (optional) is a flux-core source tarball (e.g. flux-core-0.88.0.tar.gz, a release
# tarball or a `git archive` export with a .tarball-version file). When given, flux-core is
# built from it into $PITCH_FLUX_PREFIX (default /opt/flux) unless that prefix already has
# this version: the Debian build dependencies are installed (apt-get, needs root),
# then autogen (a git export only), configure (PYTHON=/usr/bin/python3: a venv or pyenv
# python3 first on PATH lacks the Debian python3-ply), make -j2, make install. About 8
# minutes on 2 cores; a second call skips it.
# Without TARBALL the `flux` of $PITCH_FLUX_PREFIX/bin, else the first on PATH, is used.
#
# Idempotent: an instance already running from the state dir that answers is kept.
#
# Environment knobs (all optional):
#   PITCH_FLUX_DIR=/tmp/pitch-flux   state dir: env.sh, pid file, broker.log, build/
#   PITCH_FLUX_PREFIX=/opt/flux      install prefix of the build
#   PITCH_FLUX_SIZE=4                brokers (emulated nodes)
#   PITCH_FLUX_TIMEOUT=60            seconds to wait for the instance
#   PITCH_FLUX_JOBS=2                make -j
#
# Afterwards:  source "$PITCH_FLUX_DIR/env.sh"   (FLUX_URI, PATH, PITCH_FLUX_*)
# Stop with:   cluster-tests/stop-flux.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${1:-}" in
-h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
TARBALL=${1:-}
D=${PITCH_FLUX_DIR:-/tmp/pitch-flux}
PREFIX=${PITCH_FLUX_PREFIX:-/opt/flux}
SIZE=${PITCH_FLUX_SIZE:-4}
TIMEOUT=${PITCH_FLUX_TIMEOUT:-60}
JOBS=${PITCH_FLUX_JOBS:-2}
mkdir -p "$D"
D=$(cd "$D" && pwd)

log() { echo "[start-flux] $*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
# A pid is alive only if it exists and is not a zombie.
alive() {
    local s
    s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$s" != Z ]
}

build() {
    local tarball version src
    tarball=$(readlink -f "$1")
    [ -r "$tarball" ] || die "no tarball $1"
    version=$(tar xzOf "$tarball" --wildcards '*/.tarball-version' 2>/dev/null | head -1 || true)
    [ -n "$version" ] || version=$(basename "$tarball" | sed -n 's/^flux-core-\([0-9][0-9.]*[0-9]\)\.tar\.gz$/\1/p')
    [ -n "$version" ] || die "cannot tell the version of $tarball (no .tarball-version, no flux-core-X.Y.Z name)"
    if [ -x "$PREFIX/bin/flux" ] && "$PREFIX/bin/flux" version 2>/dev/null | grep -Eq "^commands:[[:space:]]+$version\$"; then
        log "flux-core $version is already installed in $PREFIX: no build"
        return 0
    fi
    log "building flux-core $version from $tarball into $PREFIX (about 8 minutes)"
    local t0
    t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    local deps=(autoconf automake libtool make pkg-config gcc g++ libc6-dev
        libzmq3-dev uuid-dev libjansson-dev liblz4-dev libarchive-dev
        libhwloc-dev libsqlite3-dev libncurses-dev
        lua5.1 liblua5.1-0-dev lua-posix
        python3-dev python3-cffi python3-ply python3-setuptools python3-yaml
        jq time)
    if ! dpkg -s "${deps[@]}" >/dev/null 2>&1; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${deps[@]}" >/dev/null
    fi
    local b=$D/build
    rm -rf "$b"
    mkdir -p "$b"
    tar xzf "$tarball" -C "$b"
    src=$(find "$b" -mindepth 1 -maxdepth 1 -type d | head -1)
    (
        cd "$src"
        export FLUX_VERSION=$version PYTHON=/usr/bin/python3
        if [ ! -x configure ]; then
            ./autogen.sh >"$b/autogen.log" 2>&1 || { tail -30 "$b/autogen.log" >&2; exit 1; }
        fi
        ./configure --prefix="$PREFIX" --disable-docs PYTHON=/usr/bin/python3 >"$b/configure.log" 2>&1 ||
            { tail -30 "$b/configure.log" >&2; exit 1; }
        make -j"$JOBS" >"$b/make.log" 2>&1 || { tail -40 "$b/make.log" >&2; exit 1; }
        make install >"$b/install.log" 2>&1 || { tail -40 "$b/install.log" >&2; exit 1; }
    ) || die "the build failed (logs in $b)"
    ldconfig 2>/dev/null || true
    rm -rf "$src"
    log "built and installed flux-core $version in $(($(date +%s) - t0)) s"
}

if [ -n "$TARBALL" ]; then
    build "$TARBALL"
    FLUX=$PREFIX/bin/flux
elif [ -x "$PREFIX/bin/flux" ]; then
    FLUX=$PREFIX/bin/flux
else
    FLUX=$(command -v flux) || die "no flux: pass a flux-core tarball, install Flux in $PREFIX or put it on PATH"
fi
BIN=$(dirname "$FLUX")

# A running instance that answers is kept.
if [ -f "$D/pid" ] && alive "$(cat "$D/pid")" && [ -f "$D/env.sh" ]; then
    if (. "$D/env.sh" && timeout 10 "$FLUX" resource info -s up >/dev/null 2>&1); then
        log "already running (pid $(cat "$D/pid")): source $D/env.sh"
        exit 0
    fi
    log "the instance in $D does not answer: restarting it"
    bash "$HERE/stop-flux.sh" >&2 || true
fi

# The instance's config: this directory's flux-queues.toml, alone in a directory of its own.
mkdir -p "$D/conf"
cp "$HERE/flux-queues.toml" "$D/conf/queues.toml"
rm -f "$D/env.sh" "$D/uri" "$D/pid"
# The initial program writes the instance's URI, then sleeps until the instance is shut down
# (`flux start` needs one when stdin is not a terminal). setsid: its own session and process
# group, so stop-flux.sh can signal all of it.
# shellcheck disable=SC2016
setsid "$FLUX" start --test-size="$SIZE" "-o,--config-path=$D/conf" \
    bash -c 'printf "%s\n" "$FLUX_URI" >"$1.tmp" && mv "$1.tmp" "$1"; exec sleep inf' \
    initial-program "$D/uri" </dev/null >"$D/broker.log" 2>&1 &
echo $! >"$D/pid"
for _ in $(seq 1 $((TIMEOUT * 10))); do
    [ -f "$D/uri" ] && break
    alive "$(cat "$D/pid")" || { cat "$D/broker.log" >&2; die "flux start exited"; }
    sleep 0.1
done
[ -f "$D/uri" ] || { cat "$D/broker.log" >&2; die "the instance did not come up in $TIMEOUT s"; }
FLUX_URI=$(cat "$D/uri")
export FLUX_URI
"$FLUX" queue start --all --quiet 2>/dev/null || "$FLUX" queue start --all
up=
for _ in $(seq 1 $((TIMEOUT * 10))); do
    up=$("$FLUX" resource info -s up 2>/dev/null || true)
    case "$up" in "$SIZE Node"*) break ;; esac
    sleep 0.1
done
case "$up" in "$SIZE Node"*) ;; *) die "only '$up' came up" ;; esac

cat >"$D/env.sh.tmp" <<ENV
# Written by cluster-tests/start-flux.sh: the Flux test instance.
export FLUX_URI='$FLUX_URI'
export PATH='$BIN':"\$PATH"
export PITCH_FLUX_DIR='$D'
export PITCH_FLUX_SIZE='$SIZE'
ENV
mv "$D/env.sh.tmp" "$D/env.sh"
log "started: pid $(cat "$D/pid"), $up, $("$FLUX" version | sed -n 's/^commands:[[:space:]]*/flux-core /p')"
echo "source $D/env.sh"
