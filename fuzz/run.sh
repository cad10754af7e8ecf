#!/usr/bin/env bash
# Builds the fuzz targets and runs each (or those named) for PITCH_FUZZ_SECONDS seconds
# (default 20), PITCH_FUZZ_JOBS of them at a time (default: the number of cores), starting
# from the seeds in corpus/<target>/ (never written to: what a run finds goes to a temporary
# corpus). An unbounded allocation is a finding: libFuzzer stops at 256 MB in one
# allocation or 512 MB resident. A crash, an out-of-memory or a timeout fails the script,
# with the input in artifacts/<target>/ (replay it with
# `cargo +nightly fuzz run <target> artifacts/<target>/<file>`).
set -euo pipefail
cd "$(dirname "$0")"
secs=${PITCH_FUZZ_SECONDS:-20}
jobs=${PITCH_FUZZ_JOBS:-$(nproc)}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo +nightly fuzz build -O

one() {
    local t=$1
    mkdir -p "$work/$t" "$work/tmp-$t"
    # TMPDIR: the scratch cache directory of the targets that read through a file.
    if TMPDIR="$work/tmp-$t" cargo +nightly fuzz run -O "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=256 -timeout=10 \
        -print_final_stats=1 >"$work/$t.log" 2>&1; then
        local runs
        runs=$(grep -o 'number_of_executed_units: *[0-9]*' "$work/$t.log" | grep -o '[0-9]*$' || true)
        echo "fuzz target $t: ${runs:-?} inputs in $secs s, no finding"
    else
        tail -n 60 "$work/$t.log"
        echo "fuzz target $t FAILED: the input is in fuzz/artifacts/$t/" >&2
        touch "$work/failed"
    fi
}

running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    one "$t" &
    running=$((running + 1))
done
wait
[ ! -e "$work/failed" ]
