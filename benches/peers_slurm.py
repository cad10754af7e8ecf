#!/usr/bin/env python3
"""Peers for pitch's Slurm benchmark, the counting shims, and the report.

    peers_slurm.py [run] [--peers raw,el] [--tasks N] [--executorlib-tasks M]
        Runs each peer in its own child interpreter under a timeout, with
        sbatch/squeue counting shims first on PATH, and prints one JSON line
        per peer on stdout:
            {"name": ..., "tasks": N, "seconds": S,
             "sbatch_calls": B, "squeue_calls": Q}
        or {"name": ..., "error": "..."} when the peer failed or timed out.
    peers_slurm.py shims DIR
        Writes DIR/bin/sbatch and DIR/bin/squeue: each appends one line (its
        arguments) to DIR/<tool>.calls, then execs the real tool. Put DIR/bin
        first on PATH. (benches/run-slurm.sh uses this for the pitch runs.)
    peers_slurm.py report FILE [--strict]
        Prints the table, the ratios and the targets for the JSON lines in FILE.

Peers (keys for --peers / PEERS):
    raw  "raw sbatch --array": one job script whose element runs
         `true $SLURM_ARRAY_TASK_ID`, submitted once with
         `sbatch --parsable --array=0-(N-1)`, then `squeue -h -j ID -t all`
         every 0.5 s until no element is pending or running. The floor for
         anything that runs N tasks as a job array here.
    el   "executorlib SlurmClusterExecutor": executorlib's file-based Slurm
         executor (one sbatch per task through pysqa), with a generated
         pysqa config directory (queue.yaml + a slurm template without
         --get-user-env) for partition $PITCH_SLURM_PARTITION (debug), and a
         fresh cache_directory. The task is a Python function returning its
         argument. executorlib submits one job per task, so it gets fewer
         tasks (EXECUTORLIB_SLURM_TASKS, default 50); compare rates.
    elpilots "executorlib SlurmClusterExecutor block_allocation (4 workers)":
         the same with block_allocation=True and max_workers=4: four worker
         jobs (one sbatch each) connect back over ZMQ (hostname_localhost) and
         run the tasks (EXECUTORLIB_PILOT_TASKS, default 1000); executorlib's
         counterpart of pitch's pilots.

What is timed: from the first submission to the moment the last task is known
to be done (raw: the squeue poll that sees no active element; executorlib: the
last future's result). Building the executor and writing config files happen
before the clock starts.

Environment knobs: TASKS (1000), EXECUTORLIB_SLURM_TASKS (50),
PEER_TIMEOUT (600 s), PEERS (raw,el), PITCH_SLURM_PARTITION (debug),
BENCH_WORKDIR (temporary directories go here; default: the current
directory; it must be on storage the nodes share).
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

PEER_NAMES = {
    "raw": "raw sbatch --array",
    "el": "executorlib SlurmClusterExecutor",
    "elpilots": "executorlib SlurmClusterExecutor block_allocation (4 workers)",
}
# squeue states of an element that has not finished yet.
ACTIVE = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def opt(argv, name, default=None):
    if name in argv:
        return argv[argv.index(name) + 1]
    return default


def partition():
    return os.environ.get("PITCH_SLURM_PARTITION") or "debug"


def workdir():
    return os.path.abspath(os.environ.get("BENCH_WORKDIR") or os.getcwd())


# --- shims ------------------------------------------------------------------


def real_tool(tool, shim_bin=None):
    """The real Slurm tool: the first on PATH that is not a shim, else /usr/bin."""
    for d in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(d, tool)
        if d and os.path.isfile(path) and os.access(path, os.X_OK):
            with open(path, "rb") as f:
                if b"pitch-bench-shim" in f.read(200):
                    continue
            if shim_bin and os.path.abspath(d) == os.path.abspath(shim_bin):
                continue
            return path
    return os.path.join("/usr/bin", tool)


def write_shims(directory):
    """DIR/bin/{sbatch,squeue} that log each call to DIR/<tool>.calls; returns DIR/bin."""
    directory = os.path.abspath(directory)
    bin_dir = os.path.join(directory, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    for tool in ("sbatch", "squeue"):
        real = real_tool(tool, bin_dir)
        path = os.path.join(bin_dir, tool)
        with open(path, "w") as f:
            f.write(
                "#!/bin/sh\n# pitch-bench-shim\n"
                f"echo \"$@\" >> '{directory}/{tool}.calls'\n"
                f"exec '{real}' \"$@\"\n"
            )
        os.chmod(path, 0o755)
    return bin_dir


def count_calls(directory, tool):
    try:
        with open(os.path.join(directory, f"{tool}.calls")) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


# --- peers (run in a child interpreter) ---------------------------------------


def peer_raw(tasks, tmp, job_name):
    out_dir = os.path.join(tmp, "out")
    os.makedirs(out_dir)
    script = os.path.join(tmp, "array.sh")
    with open(script, "w") as f:
        # Mirrors pitch's array jobs: one output file per array, appended to.
        f.write(
            "#!/bin/bash\n"
            f"#SBATCH --job-name={job_name}\n"
            f"#SBATCH --partition={partition()}\n"
            f"#SBATCH --output={out_dir}/slurm-%A.out\n"
            "#SBATCH --open-mode=append\n"
            "#SBATCH --ntasks=1\n"
            "#SBATCH --cpus-per-task=1\n"
            "true $SLURM_ARRAY_TASK_ID\n"
        )
    start = time.perf_counter()
    job_id = subprocess.run(
        ["sbatch", "--parsable", f"--array=0-{tasks - 1}", script],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip().split(";")[0]
    while True:
        time.sleep(0.5)
        q = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-t", "all", "-o", "%i|%T"],
            capture_output=True,
            text=True,
        )
        if q.returncode != 0:
            if "Invalid job id" in q.stderr:
                break  # already purged (MinJobAge): all done
            raise RuntimeError(f"squeue failed: {q.stderr.strip()}")
        states = [line.split("|")[-1] for line in q.stdout.split()]
        if not any(s in ACTIVE for s in states):
            break
    seconds = time.perf_counter() - start
    failed = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
        capture_output=True,
        text=True,
    ).stdout.split()
    bad = [s for s in failed if s not in ("COMPLETED",)]
    if bad:
        log(f"raw: sacct reports non-COMPLETED states: {sorted(set(bad))[:5]}")
    return seconds


def echo(x):
    """The executorlib task: returns its argument (pickled by value from __main__)."""
    return x


PYSQA_TEMPLATE = """\
#!/bin/bash
#SBATCH --output=time.out
#SBATCH --job-name={{job_name}}
#SBATCH --chdir={{working_directory}}
#SBATCH --partition=%(partition)s
{%%- if run_time_max %%}
#SBATCH --time={{ [1, run_time_max // 60]|max }}
{%%- endif %%}
{%%- if dependency_list %%}
#SBATCH --dependency=afterok:{{ dependency_list | join(',') }}
{%%- endif %%}
#SBATCH --ntasks={{cores}}

{{command}}
"""


def pysqa_config(tmp):
    """A pysqa config directory for the bench partition (queue.yaml and a Slurm template)."""
    config = os.path.join(tmp, "pysqa")
    os.makedirs(config)
    with open(os.path.join(config, "queue.yaml"), "w") as f:
        f.write(
            "queue_type: SLURM\n"
            "queue_primary: bench\n"
            "queues:\n"
            "  bench: {cores_min: 1, cores_max: 4, run_time_max: 86400, script: slurm.sh}\n"
        )
    with open(os.path.join(config, "slurm.sh"), "w") as f:
        f.write(PYSQA_TEMPLATE % {"partition": partition()})
    return config


def run_el(tasks, tmp, job_name, **options):
    """`tasks` calls of `echo` through executorlib's SlurmClusterExecutor with `options`; the
    seconds from the first submission to the last result."""
    from executorlib import SlurmClusterExecutor

    config = pysqa_config(tmp)
    # executorlib names each job after the cache directory (its tasks' cwd's parent), so
    # this name lets the parent scancel leftovers after a timeout.
    cache = os.path.join(tmp, job_name)
    with SlurmClusterExecutor(
        cache_directory=cache,
        pysqa_config_directory=config,
        resource_dict={"cores": 1},
        **options,
    ) as exe:
        start = time.perf_counter()
        futures = [exe.submit(echo, i) for i in range(tasks)]
        values = [f.result() for f in futures]
        seconds = time.perf_counter() - start
    if values != list(range(tasks)):
        raise RuntimeError("wrong results")
    return seconds


def peer_el(tasks, tmp, job_name):
    """executorlib's file-based executor: one sbatch per task."""
    return run_el(tasks, tmp, job_name)


def peer_el_pilots(tasks, tmp, job_name):
    """executorlib's pilots: block_allocation=True, max_workers=4, each worker an sbatch job
    that connects back to this process over ZMQ (hostname_localhost: 127.0.0.1, as pitch's
    pilots use here)."""
    return run_el(tasks, tmp, job_name, max_workers=4, block_allocation=True, hostname_localhost=True)


PEERS = {"raw": peer_raw, "el": peer_el, "elpilots": peer_el_pilots}


def child(key, tasks, tmp, job_name):
    seconds = PEERS[key](tasks, tmp, job_name)
    print(json.dumps({"seconds": seconds}), flush=True)


# --- parent -------------------------------------------------------------------


def run_peer(key, tasks, timeout):
    name = PEER_NAMES[key]
    tmp = tempfile.mkdtemp(prefix=f"pitch-bench-{key}-", dir=workdir())
    job_name = os.path.basename(tmp)
    shim_dir = os.path.join(tmp, "shims")
    env = dict(os.environ)
    env["PATH"] = write_shims(shim_dir) + os.pathsep + env.get("PATH", "")
    log(f"peers_slurm: {name}: {tasks} tasks ...")
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--child", key, str(tasks), tmp, job_name],
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        subprocess.run(["scancel", "-n", job_name], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
        return {"name": name, "tasks": tasks, "error": f"timed out after {timeout} s"}
    result = None
    for line in out.splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            log(line)
    sbatch, squeue = count_calls(shim_dir, "sbatch"), count_calls(shim_dir, "squeue")
    subprocess.run(["scancel", "-n", job_name], capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode != 0 or not result:
        return {"name": name, "tasks": tasks, "error": f"exit status {proc.returncode}"}
    row = {
        "name": name,
        "tasks": tasks,
        "seconds": round(result["seconds"], 3),
        "sbatch_calls": sbatch,
        "squeue_calls": squeue,
    }
    log(f"peers_slurm: {name}: {tasks} tasks in {row['seconds']:.2f} s")
    return row


def run(argv):
    tasks = int(opt(argv, "--tasks", env_int("TASKS", 1000)))
    el_tasks = int(opt(argv, "--executorlib-tasks", env_int("EXECUTORLIB_SLURM_TASKS", 50)))
    timeout = env_int("PEER_TIMEOUT", 600)
    keys = opt(argv, "--peers", os.environ.get("PEERS") or "raw,el").split(",")
    for key in keys:
        key = key.strip()
        if key not in PEERS:
            raise SystemExit(f"unknown peer {key!r}; known: {', '.join(PEERS)}")
        try:
            row = run_peer(key, el_tasks if key == "el" else tasks, timeout)
        except Exception as e:  # noqa: BLE001 - a failed peer is a row, not a crash
            traceback.print_exc()
            row = {"name": PEER_NAMES[key], "error": repr(e)}
        print(json.dumps(row), flush=True)


# --- report ---------------------------------------------------------------------


def report(path, strict):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    groups = {}
    errors = []
    for r in rows:
        if "error" in r:
            errors.append(r)
            continue
        groups.setdefault((r["name"], r["tasks"]), []).append(r)

    def med(values):
        return statistics.median(values) if values else None

    stats = {}
    for key, rs in groups.items():
        secs = med([r["seconds"] for r in rs])
        sb = med([r["sbatch_calls"] for r in rs if "sbatch_calls" in r])
        sq = med([r["squeue_calls"] for r in rs if "squeue_calls" in r])
        per_min = med(
            [r["squeue_calls"] / r["seconds"] * 60 for r in rs if "squeue_calls" in r and r["seconds"] > 0]
        )
        stats[key] = {
            "runs": len(rs),
            "seconds": secs,
            "all": [r["seconds"] for r in rs],
            "rate": key[1] / secs if secs else None,
            "sbatch": sb,
            "squeue": sq,
            "per_min": per_min,
        }

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    header = (
        f"{'name':<36} {'tasks':>6} {'runs':>4} {'median s':>9} {'tasks/s':>8} "
        f"{'sbatch':>7} {'squeue':>7} {'squeue/min':>10}  all runs (s)"
    )
    print(header)
    print("-" * len(header))
    for (name, tasks), s in sorted(stats.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        print(
            f"{name:<36} {tasks:>6} {s['runs']:>4} {fmt(s['seconds'], '9.2f')} "
            f"{fmt(s['rate'], '8.1f')} {fmt(s['sbatch'], '7.0f')} {fmt(s['squeue'], '7.0f')} "
            f"{fmt(s['per_min'], '10.1f')}  {', '.join(f'{x:.2f}' for x in s['all'])}"
        )
    for e in errors:
        print(f"{e['name']:<36} ERROR: {e['error']}")
    print()

    def find(name, tasks=None):
        """The stats of `name`, at `tasks` or else at its largest task count."""
        keys = [k for k in stats if k[0] == name and (tasks is None or k[1] == tasks)]
        return (max(keys, key=lambda k: k[1]), stats[max(keys, key=lambda k: k[1])]) if keys else (None, None)

    results = []

    def target(label, ok, detail):
        verdict = "n/a " if ok is None else ("PASS" if ok else "MISS")
        results.append(ok)
        print(f"  [{verdict}] {label}: {detail}")

    print("targets (medians; the machine is shared and noisy):")
    pk, pitch = find("pitch slurm arrays")
    rk, raw = find("raw sbatch --array", pk[1] if pk else None)
    if pitch and raw:
        ratio = pitch["seconds"] / raw["seconds"]
        target(
            "pitch wall <= 1.2x raw sbatch --array",
            ratio <= 1.2,
            f"{pitch['seconds']:.2f} s / {raw['seconds']:.2f} s = {ratio:.2f}x at {pk[1]} tasks",
        )
    else:
        target("pitch wall <= 1.2x raw sbatch --array", None, "a measurement is missing")
    ek, el = find("executorlib SlurmClusterExecutor")
    if pitch and el:
        ratio = pitch["rate"] / el["rate"]
        target(
            "pitch >= 10x faster than executorlib (rate)",
            ratio >= 10,
            f"{pitch['rate']:.1f} / {el['rate']:.2f} tasks/s = {ratio:.0f}x "
            f"({pk[1]} vs {ek[1]} tasks)",
        )
        packed = [
            find(n)
            for n in sorted({k[0] for k in stats if k[0].startswith("pitch slurm arrays (packed")})
        ]
        for pk2, ps in packed:
            if ps:
                ratio = ps["rate"] / el["rate"]
                target(
                    f"{pk2[0]} >= 10x faster than executorlib (rate)",
                    ratio >= 10,
                    f"{ps['rate']:.1f} / {el['rate']:.2f} tasks/s = {ratio:.0f}x",
                )
        if pitch["sbatch"] is not None and el["sbatch"]:
            p_per, e_per = pitch["sbatch"] / pk[1], el["sbatch"] / ek[1]
            target(
                "pitch sbatch calls per task <= 1% of executorlib's",
                p_per <= 0.01 * e_per,
                f"{p_per:.4f} vs {e_per:.2f} per task = {100 * p_per / e_per:.2f}%",
            )
        else:
            target("pitch sbatch calls per task <= 1% of executorlib's", None, "no call counts")
    else:
        target("pitch >= 10x faster than executorlib (rate)", None, "a measurement is missing")
        target("pitch sbatch calls per task <= 1% of executorlib's", None, "a measurement is missing")
    counts = sorted(k[1] for k in stats if k[0] == "pitch slurm arrays")
    if len(counts) >= 2 and stats[("pitch slurm arrays", counts[0])]["per_min"]:
        small = stats[("pitch slurm arrays", counts[0])]
        large = stats[("pitch slurm arrays", counts[-1])]
        growth = large["per_min"] / small["per_min"]
        target(
            "pitch squeue calls/min do not grow with the task count (<= 1.5x)",
            growth <= 1.5,
            f"{small['per_min']:.0f}/min at {counts[0]} tasks, {large['per_min']:.0f}/min at "
            f"{counts[-1]} tasks ({growth:.2f}x for {counts[-1] / counts[0]:.0f}x the tasks)",
        )
    else:
        target("pitch squeue calls/min do not grow with the task count", None, "needs two task counts")
    def against_raw(prefix, label, factor):
        """Targets of the pilot measurements named `prefix...`: a task rate `factor` times
        raw sbatch --array's (at least; more than, when `factor` is 1), and <= 5 sbatch calls."""
        for name in sorted({k[0] for k in stats if k[0].startswith(prefix)}):
            k, s = find(name)
            _, r = find("raw sbatch --array", k[1])
            if r:
                ratio = s["rate"] / r["rate"]
                target(
                    f"{name} {label}",
                    ratio >= factor if factor > 1 else ratio > 1,
                    f"{s['rate']:.0f} / {r['rate']:.1f} tasks/s = {ratio:.1f}x at {k[1]} tasks",
                )
            else:
                target(f"{name} {label}", None, "no raw run of as many tasks")
            if s["sbatch"] is not None:
                target(
                    f"{name}: <= 5 sbatch calls",
                    s["sbatch"] <= 5,
                    f"{s['sbatch']:.0f} sbatch calls for {k[1]} tasks",
                )
            else:
                target(f"{name}: <= 5 sbatch calls", None, "no call counts")

    against_raw("pitch slurm pilots (", ">= 20x raw sbatch --array's task rate", 20)
    against_raw("pitch slurm pilot commands (", "faster than raw sbatch --array of as many `true`", 1)
    for name in sorted({k[0] for k in stats if k[0].startswith("pitch slurm pilots sweep")}):
        k, s = find(name)
        ideal = med([r["ideal"] for r in groups[k] if "ideal" in r])
        if ideal:
            ratio = s["seconds"] / ideal
            target(
                f"{name} within 1.15x of the ideal makespan",
                ratio <= 1.15,
                f"{s['seconds']:.1f} s / {ideal:.1f} s (work / CPUs + pilot start-up) = {ratio:.2f}x",
            )
        packed = [kk for kk in stats if kk[0].startswith("pitch slurm arrays sweep") and kk[1] == k[1]]
        if packed:
            p = stats[packed[0]]
            target(
                f"{name} faster than {packed[0][0]}",
                s["seconds"] < p["seconds"],
                f"{s['seconds']:.1f} s vs {p['seconds']:.1f} s",
            )
    _, elp = find(PEER_NAMES["elpilots"])
    for name in sorted({k[0] for k in stats if k[0].startswith("pitch slurm pilots (")}):
        k, s = find(name)
        if elp:
            ratio = s["rate"] / elp["rate"]
            target(
                f"{name} faster than {PEER_NAMES['elpilots']}",
                ratio > 1,
                f"{s['rate']:.0f} / {elp['rate']:.1f} tasks/s = {ratio:.1f}x",
            )
        else:
            target(f"{name} against executorlib's pilots", None, "executorlib's pilots not measured")
    print()
    print("for information:")
    for name in sorted({k[0] for k in stats if k[0].startswith("pitch slurm arrays (packed")}):
        k, s = find(name)
        _, r = find("raw sbatch --array", k[1])
        if r:
            print(f"  {name}: {s['seconds']:.2f} s = {s['seconds'] / r['seconds']:.2f}x raw sbatch --array")
    if raw and el:
        print(f"  raw sbatch --array / executorlib rate: {raw['rate'] / el['rate']:.0f}x")
    if strict and any(ok is not True for ok in results):
        sys.exit(1)


def main(argv):
    if argv[:1] == ["--child"]:
        _, key, tasks, tmp, job_name = argv[:5]
        child(key, int(tasks), tmp, job_name)
    elif argv[:1] == ["shims"]:
        print(write_shims(argv[1]))
    elif argv[:1] == ["report"]:
        report(argv[1], "--strict" in argv)
    else:
        run(argv[1:] if argv[:1] == ["run"] else argv)


if __name__ == "__main__":
    main(sys.argv[1:])
