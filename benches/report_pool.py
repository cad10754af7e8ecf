#!/usr/bin/env python3
"""Table, ratios and targets of pitch's persistent-worker benchmark (benches/run-pool.sh).

Reads JSON lines (stdin or the files named) from examples/bench_pool.rs and
benches/peers_pool.py. A name measured more than once (ROUNDS) is summarized
by its median rate. `--strict` exits 1 when a target is missed or cannot be
checked.
"""

import json
import statistics
import sys

POOLED = "pitch pooled"
POOLED_CACHE = "pitch pooled (cache)"
EMCEE = "pitch pooled emcee"
LATENCY = "pitch pooled latency"
PPE = "ProcessPoolExecutor"
EL = "executorlib SingleNodeExecutor(block_allocation=True)"
EL_CACHE = "executorlib SingleNodeExecutor(block_allocation=True, cache_directory)"
PPE_EMCEE = "ProcessPoolExecutor emcee"
EL_EMCEE = "executorlib SingleNodeExecutor(block_allocation=True) emcee"
PPE_LATENCY = "ProcessPoolExecutor latency"
EL_LATENCY = "executorlib SingleNodeExecutor(block_allocation=True) latency"


def read(streams):
    rows = {}
    errors = {}
    for stream in streams:
        for raw in stream:
            line = raw.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "error" in obj:
                errors[obj["name"]] = obj["error"]
            elif obj.get("seconds"):
                rows.setdefault(obj["name"], []).append(obj)
    return rows, errors


def rate(rows, name):
    """Median tasks per second over the measurements of `name`."""
    if name not in rows:
        return None
    return statistics.median(r["tasks"] / r["seconds"] for r in rows[name])


def median_latency(rows, name):
    medians = [r["median"] for r in rows.get(name, []) if "median" in r]
    return statistics.median(medians) if medians else None


def main(argv):
    strict = "--strict" in argv
    files = [a for a in argv[1:] if a != "--strict"]
    streams = [open(f) for f in files] if files else [sys.stdin]
    rows, errors = read(streams)

    print(f"{'measurement':<72} {'tasks':>7} {'tasks/s':>10} {'runs':>5}")
    for name, ms in rows.items():
        r = rate(rows, name)
        extra = ""
        m = median_latency(rows, name)
        if m is not None and "latency" in name:
            extra = f"   median latency {m * 1e6:.0f} us"
        print(f"{name:<72} {ms[-1]['tasks']:>7} {r:>10.0f} {len(ms):>5}{extra}")
    for name, e in errors.items():
        print(f"{name:<72} ERROR {e}")
    print()

    results = []

    def ratio(label, num, den, target):
        a, b = rate(rows, num), rate(rows, den)
        if a is None or b is None:
            results.append((label, None, target))
        else:
            results.append((label, a / b, target))

    ratio("pooled, no cache / ProcessPoolExecutor", POOLED, PPE, 3.0)
    ratio("pooled, cache / ProcessPoolExecutor", POOLED_CACHE, PPE, 1.0)
    ratio("pooled, cache / executorlib block_allocation+cache_directory", POOLED_CACHE, EL_CACHE, 10.0)
    ratio("emcee loop: pitch / executorlib block_allocation (rate)", EMCEE, EL_EMCEE, 2.0)
    ratio("pooled, no cache / executorlib block_allocation (info)", POOLED, EL, None)
    ratio("emcee loop: pitch / ProcessPoolExecutor (info)", EMCEE, PPE_EMCEE, None)

    missed = False
    for label, value, target in results:
        if value is None:
            status = "NOT MEASURED"
            missed = missed or target is not None
            print(f"{label:<66} {'-':>8}   {status}")
            continue
        if target is None:
            status = ""
        elif value >= target:
            status = f"ok (target >= {target:g}x)"
        else:
            status = f"MISS (target >= {target:g}x)"
            missed = True
        print(f"{label:<66} {value:>7.1f}x   {status}")

    lat = median_latency(rows, LATENCY)
    if lat is None:
        print(f"{'pooled latency, median':<66} {'-':>8}   NOT MEASURED")
        missed = True
    else:
        ok = lat <= 100e-6
        missed = missed or not ok
        peers = []
        for name, short in ((PPE_LATENCY, "ProcessPoolExecutor"), (EL_LATENCY, "executorlib")):
            m = median_latency(rows, name)
            if m is not None:
                peers.append(f"{short} {m * 1e6:.0f} us")
        print(
            f"{'pooled latency, median':<66} {lat * 1e6:>5.0f} us   "
            f"{'ok' if ok else 'MISS'} (target <= 100 us){'; ' if peers else ''}{', '.join(peers)}"
        )
    return 1 if (strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
