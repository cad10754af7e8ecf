#!/usr/bin/env bash
# stop-flux.sh: stops the Flux test instance start-flux.sh started (by its pid file in
# $PITCH_FLUX_DIR, default /tmp/pitch-flux): cancels its jobs, `flux shutdown`, then signals
# the instance's own process group if it is still there. Never kills anything by name.
# Idempotent.
set -euo pipefail
D=${PITCH_FLUX_DIR:-/tmp/pitch-flux}
alive() {
    local s
    s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$s" != Z ]
}
[ -f "$D/pid" ] || { echo "[stop-flux] not running (no $D/pid)"; exit 0; }
pid=$(cat "$D/pid")
if alive "$pid"; then
    if [ -f "$D/uri" ]; then
        FLUX_URI=$(cat "$D/uri")
        export FLUX_URI
        flux=$(sed -n "s/^export PATH='\(.*\)':.*/\1/p" "$D/env.sh" 2>/dev/null)/flux
        [ -x "$flux" ] || flux=$(command -v flux || echo flux)
        "$flux" cancel --all --quiet 2>/dev/null || true
        timeout 60 "$flux" shutdown --quiet 2>/dev/null || true
    fi
    for _ in $(seq 1 100); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        kill -TERM -- "-$pid" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
fi
rm -f "$D/pid" "$D/env.sh" "$D/uri"
echo "[stop-flux] stopped"
