"""What the peer benchmark scripts share (peers_pool.py, peers_single_node.py).

Each script defines PEERS = {key: (name, fn)}; fn runs one measurement in the
current process and returns (tasks, seconds) or a dict with at least "tasks" and
"seconds". `main` runs every wanted peer (env PEERS, comma-separated keys) in its
own child interpreter (the same script with --peer KEY) under a timeout, and
prints one JSON line per measurement on stdout, or {"name", "error"} when a peer
fails or times out; progress goes to stderr.
"""

import json
import os
import signal
import subprocess
import sys
import traceback


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def env_int(name, default):
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}")


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_one(peers, key):
    """Child mode: run one peer in this process, print its JSON line."""
    name, fn = peers[key]
    try:
        result = fn()
        out = {"name": name}
        if isinstance(result, dict):
            out.update(result)
        else:
            out["tasks"], out["seconds"] = result
        out["seconds"] = round(out["seconds"], 6)
        if key.startswith("el"):
            try:
                import executorlib

                out["version"] = executorlib.__version__
            except Exception:
                pass
        emit(out)
    except BaseException as e:  # noqa: BLE001 -- report anything, never crash
        traceback.print_exc(file=sys.stderr)
        emit({"name": name, "error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


def run_all(script, peers, keys, timeout):
    """Parent mode: run each peer in a child interpreter under a timeout."""
    for key in keys:
        name = peers[key][0]
        log(f"peers: running {name} ...")
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(script), "--peer", key],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # own process group: a timeout kills it all
        )
        try:
            out, _ = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.communicate()
            emit({"name": name, "error": f"timed out after {timeout} s"})
            continue
        lines = [line for line in out.splitlines() if line.strip().startswith("{")]
        for line in lines:
            sys.stdout.write(line.strip() + "\n")
            log(f"peers:   {line.strip()}")
        sys.stdout.flush()
        if not lines:
            emit(
                {
                    "name": name,
                    "error": f"peer process exited {child.returncode} without a result",
                }
            )


def main(argv, script, peers, timeout, banner):
    """The scripts' entry: `--peer KEY` runs one peer here, otherwise all wanted."""
    if len(argv) == 3 and argv[1] == "--peer":
        return run_one(peers, argv[2])
    wanted = os.environ.get("PEERS", "").strip()
    keys = [k.strip() for k in wanted.split(",") if k.strip()] if wanted else list(peers)
    unknown = [k for k in keys if k not in peers]
    if unknown:
        log(f"peers: unknown PEERS keys {unknown}; known: {list(peers)}")
        return 2
    log(banner)
    run_all(script, peers, keys, timeout)
    return 0
