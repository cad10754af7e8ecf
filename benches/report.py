#!/usr/bin/env python3
"""Table and target check for pitch's single-node benchmark.

Reads JSON lines (from stdin, or from the files named as arguments), each

    {"name": "...", "tasks": N, "seconds": S}      a measurement
    {"name": "...", ..., "store": "DIR (fs)"}       pitch's rows: where the cache was
    {"name": "...", "error": "..."}                a peer or run that failed

Lines that are not JSON objects are ignored (with a note on stderr). Pitch's
rows may carry "round": K (ROUNDS in run-single-node.sh): every ratio is then
computed within each round (pitch against the floor measured beside it) and
the median over rounds is reported, with the range. Otherwise, when a name
appears more than once, the last measurement is the one used.

Names it knows (from examples/bench_single_node.rs and peers_single_node.py):
    pitch function, pitch command, bare spawn floor, pitch latency
    ProcessPoolExecutor, ProcessPoolExecutor(max_tasks_per_child=1), ...
    executorlib SingleNodeExecutor, executorlib SingleNodeExecutor(cache_directory), ...

Pitch's rows and the floors measured beside them come once per store; ratios
and targets are computed store by store.

"pitch latency" is special: seconds/tasks is the average submit-to-result
latency of one task (tasks submitted one after another), not a throughput.

Exit status is 0 unless --strict is given, in which case any MISS or any
target that could not be checked (missing measurement) exits 1.
"""

import json
import statistics
import sys

PITCH_FUNCTION = "pitch function"
PITCH_COMMAND = "pitch command"
FLOOR = "bare spawn floor"
FLOOR_TRUE = "bare spawn floor (true)"
LATENCY = "pitch latency"
EL_DEFAULT = "executorlib SingleNodeExecutor"
EL_CACHE = "executorlib SingleNodeExecutor(cache_directory)"
PPE_FRESH = "ProcessPoolExecutor(max_tasks_per_child=1)"

LATENCY_TARGET_S = 0.005
PITCH_NAMES = {PITCH_FUNCTION, PITCH_COMMAND, FLOOR, FLOOR_TRUE, LATENCY}


def read_lines(streams):
    rows = []
    for stream in streams:
        for raw in stream:
            line = raw.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                print(f"report: ignoring non-JSON line: {line[:120]}", file=sys.stderr)
                continue
            if not isinstance(obj, dict) or "name" not in obj:
                print(f"report: ignoring line without a name: {line[:120]}", file=sys.stderr)
                continue
            rows.append(obj)
    return rows


def is_measurement(row):
    return (
        "error" not in row
        and isinstance(row.get("tasks"), (int, float))
        and isinstance(row.get("seconds"), (int, float))
        and row["tasks"] > 0
        and row["seconds"] > 0
    )


def rate(row):
    return row["tasks"] / row["seconds"]


def fmt_num(x, digits=1):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.{digits}f}"
    return f"{x:.{digits + 1}f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:,.2f}x" if x < 100 else f"{x:,.0f}x"


def table(headers, body, aligns):
    widths = [len(h) for h in headers]
    for r in body:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]

    def line(cells):
        out = []
        for c, w, a in zip(cells, widths, aligns):
            out.append(c.ljust(w) if a == "<" else c.rjust(w))
        return "  ".join(out).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in body:
        print(line(r))


def main(argv):
    strict = "--strict" in argv
    paths = [a for a in argv[1:] if a != "--strict"]
    streams = [open(p) for p in paths] if paths else [sys.stdin]
    rows = read_lines(streams)
    if not rows:
        print("report: no measurements read", file=sys.stderr)
        return 1

    # --- all rows --------------------------------------------------------
    body = []
    for r in rows:
        if is_measurement(r):
            per_task_ms = r["seconds"] / r["tasks"] * 1000
            body.append(
                [
                    r["name"] + (f" [{r['store']}]" if r.get("store") else ""),
                    str(int(r["tasks"])),
                    f"{r['seconds']:.3f}",
                    "-" if r["name"] == LATENCY else fmt_num(rate(r)),
                    f"{per_task_ms:.3f}",
                    "",
                ]
            )
        else:
            err = str(r.get("error", "malformed line: " + json.dumps(r)))
            body.append([r["name"], "-", "-", "-", "-", "ERROR: " + err[:160]])
    print()
    print("Measurements (one machine, wall time first submit -> last result)")
    print()
    table(
        ["name", "tasks", "seconds", "tasks/s", "ms/task", "note"],
        body,
        ["<", ">", ">", ">", ">", "<"],
    )

    # Pitch's rows (and the floors measured in the same process) carry the store their cache
    # directory was on, and the round; the peers' rows do not. Ratios and targets are per
    # store: computed within each round, then the median over rounds.
    peers = {}
    stores = {}
    for r in rows:
        if not is_measurement(r):
            continue
        if r["name"] in PITCH_NAMES:
            rounds = stores.setdefault(r.get("store", ""), {})
            rounds.setdefault(r.get("round", 0), {})[r["name"]] = r
        else:
            peers[r["name"]] = r

    ratio_rows = []
    targets = []

    def check(label, value, ok, shown):
        if value is None:
            targets.append(["n/a", label, "missing measurement"])
        else:
            targets.append(["PASS" if ok(value) else "MISS", label, shown(value)])

    def over_rounds(rounds, f):
        """The median over rounds of f(round's rows), and the values (None if none)."""
        values = [v for v in (f(mine) for mine in rounds.values()) if v is not None]
        return (statistics.median(values) if values else None), values

    def spread(values, fmt):
        if len(values) < 2:
            return ""
        return f" (median of {len(values)} rounds, {fmt(min(values))}-{fmt(max(values))})"

    for store, rounds in stores.items():
        where = f" [{store}]" if store else ""

        def rate_in(name):
            return lambda mine: rate(mine[name]) if name in mine else None

        def floor_ratio(floor_name, pitch_name):
            def f(mine):
                if floor_name in mine and pitch_name in mine:
                    return rate(mine[floor_name]) / rate(mine[pitch_name])
                return None
            return f

        pf, _ = over_rounds(rounds, rate_in(PITCH_FUNCTION))
        fr_cmd, fr_cmd_all = over_rounds(rounds, floor_ratio(FLOOR_TRUE, PITCH_COMMAND))
        fr_fn, fr_fn_all = over_rounds(rounds, floor_ratio(FLOOR, PITCH_FUNCTION))
        lat, lat_all = over_rounds(
            rounds,
            lambda mine: mine[LATENCY]["seconds"] / mine[LATENCY]["tasks"] if LATENCY in mine else None,
        )
        for name, row in peers.items():
            ratio_rows.append(
                [f"{PITCH_FUNCTION}{where} vs {name}", fmt_ratio(pf / rate(row) if pf else None), "pitch rate (median) / peer rate"]
            )
        ratio_rows.append(
            [f"{PITCH_COMMAND}{where} vs {FLOOR_TRUE}", fmt_ratio(fr_cmd), "floor rate / pitch rate (1.00x = at the floor)" + spread(fr_cmd_all, lambda v: f"{v:.2f}x")]
        )
        ratio_rows.append(
            [f"{PITCH_FUNCTION}{where} vs {FLOOR}", fmt_ratio(fr_fn), "floor rate / pitch rate" + spread(fr_fn_all, lambda v: f"{v:.2f}x")]
        )

        for peer_name in (EL_CACHE, EL_DEFAULT):
            peer = peers.get(peer_name)
            check(
                f"{PITCH_FUNCTION}{where} >= 100x {peer_name} rate",
                pf / rate(peer) if (pf and peer) else None,
                lambda v: v >= 100,
                lambda v: f"{v:,.1f}x",
            )
        peer = peers.get(PPE_FRESH)
        check(
            f"{PITCH_FUNCTION}{where} >= 2x {PPE_FRESH} rate",
            pf / rate(peer) if (pf and peer) else None,
            lambda v: v >= 2,
            lambda v: f"{v:,.2f}x",
        )
        check(
            f"{PITCH_FUNCTION}{where} within 1.5x of {FLOOR} (floor rate / pitch rate <= 1.5)",
            fr_fn,
            lambda v: v <= 1.5,
            lambda v: f"{v:.2f}x" + spread(fr_fn_all, lambda v: f"{v:.2f}"),
        )
        check(
            f"{PITCH_COMMAND}{where} within 1.5x of {FLOOR_TRUE} (floor rate / pitch rate <= 1.5)",
            fr_cmd,
            lambda v: v <= 1.5,
            lambda v: f"{v:.2f}x" + spread(fr_cmd_all, lambda v: f"{v:.2f}"),
        )
        check(
            f"one task submit-to-result <= 5 ms{where} (pitch latency seconds/tasks)",
            lat,
            lambda v: v <= LATENCY_TARGET_S,
            lambda v: f"{v * 1000:.3f} ms",
        )
    print()
    print("Ratios")
    print()
    table(["comparison", "ratio", "meaning"], ratio_rows, ["<", ">", "<"])

    print()
    print("Targets")
    print()
    table(["status", "target", "measured"], targets, ["<", "<", ">"])
    print()

    if strict and any(t[0] != "PASS" for t in targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
