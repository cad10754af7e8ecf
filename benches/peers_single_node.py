#!/usr/bin/env python3
"""Peer executors for pitch's single-node benchmark.

Runs the SAME trivial work on each peer executor -- a no-op function that
returns its argument, one call per task -- and prints one JSON line per
measurement on stdout:

    {"name": "ProcessPoolExecutor", "tasks": 2000, "seconds": 0.42}

or, when a peer fails or times out,

    {"name": "ProcessPoolExecutor", "error": "..."}

Everything else (progress, tracebacks) goes to stderr, so stdout can be
piped straight into benches/report.py.

What is timed, for every peer: wall time from the first submit() of the
measured batch to the moment the last result has been collected (all futures
submitted first, then all results read, checked against the inputs).
Executor creation, worker start-up and a warm-up batch of WORKERS tasks happen
BEFORE the clock starts; executor shutdown happens after it stops. For peers
that start a fresh process per task (max_tasks_per_child=1, executorlib with
block_allocation=False) the warm-up cannot pre-pay the per-task process
start-up -- that cost is exactly what is being measured.

Each peer runs in its own child interpreter (this same file, with --peer KEY)
under a timeout, so one peer that hangs or crashes produces an error line and
the others still run, each in a clean process.

Environment knobs:
    TASKS              tasks for the fast peers             (default 2000)
    EXECUTORLIB_TASKS  tasks for executorlib's process-per-task modes
                       (default 200: they manage only a few tasks per second)
    WORKERS            max_workers for every peer           (default 2)
    PEER_TIMEOUT       seconds before one peer is killed    (default 900)
    PEERS              comma-separated subset of peer keys  (default: all)
"""

import shutil
import sys
import tempfile
import time

from peers_common import env_int
from peers_common import main as peers_main


def noop(x):
    """The task: a no-op returning its argument (module level, so picklable)."""
    return x


TASKS = env_int("TASKS", 2000)
EXECUTORLIB_TASKS = env_int("EXECUTORLIB_TASKS", 200)
WORKERS = env_int("WORKERS", 2)
PEER_TIMEOUT = env_int("PEER_TIMEOUT", 900)


def timed_batch(executor, tasks, warmup):
    """Warm up with `warmup` tasks (untimed), then time `tasks` tasks:
    first submit -> last result. Returns seconds."""
    if warmup:
        warm = [executor.submit(noop, -1 - i) for i in range(warmup)]
        for i, f in enumerate(warm):
            assert f.result() == -1 - i
    start = time.perf_counter()
    futures = [executor.submit(noop, i) for i in range(tasks)]
    results = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    if results != list(range(tasks)):
        raise RuntimeError("wrong results from executor")
    return seconds


# --- the peers ---------------------------------------------------------------
# Each returns (tasks, seconds). The executor is created before timing.


def peer_ppe():
    # Default ProcessPoolExecutor: W long-lived workers (fork on Linux) reused
    # for every task. Not process-per-task: a reference for the IPC-only cost.
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=WORKERS) as ex:
        return TASKS, timed_batch(ex, TASKS, warmup=WORKERS)


def peer_ppe_fresh():
    # max_tasks_per_child=1: a fresh worker process per task. This is the fair
    # comparison for pitch's process-per-task mode. Note: with
    # max_tasks_per_child set and no mp_context, CPython (3.11+) uses the
    # 'spawn' start method, i.e. every task starts a new Python interpreter.
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=WORKERS, max_tasks_per_child=1) as ex:
        return TASKS, timed_batch(ex, TASKS, warmup=WORKERS)


def peer_ppe_fresh_forkserver():
    # Same, with the cheaper 'forkserver' start method (each task's process is
    # forked from a pre-started server instead of starting an interpreter).
    # Informational: the strongest stdlib process-per-task configuration.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        max_workers=WORKERS, max_tasks_per_child=1, mp_context=ctx
    ) as ex:
        return TASKS, timed_batch(ex, TASKS, warmup=WORKERS)


def _executorlib(tasks, **kwargs):
    from executorlib import SingleNodeExecutor

    cache = None
    if kwargs.pop("cache", False):
        # Fresh, empty cache directory: executorlib keys its cache by a hash of
        # function + arguments, so a reused directory would return cached
        # results without running anything.
        cache = tempfile.mkdtemp(prefix="pitch-bench-executorlib-")
        kwargs["cache_directory"] = cache
    try:
        with SingleNodeExecutor(max_workers=WORKERS, **kwargs) as ex:
            return tasks, timed_batch(ex, tasks, warmup=WORKERS)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def peer_el():
    # executorlib defaults: block_allocation=False -> one new Python process
    # per task (talking to the executor over zmq); no cache directory.
    return _executorlib(EXECUTORLIB_TASKS)


def peer_el_cache():
    # As above, plus cache_directory: task input and output go through HDF5
    # files in the cache directory, like pitch's task and result files.
    return _executorlib(EXECUTORLIB_TASKS, cache=True)


def peer_el_block():
    # block_allocation=True: W persistent workers reused for every task
    # (executorlib's analogue of the default ProcessPoolExecutor).
    return _executorlib(TASKS, block_allocation=True)


def peer_el_block_cache():
    return _executorlib(TASKS, block_allocation=True, cache=True)


PEERS = {
    # key: (JSON name, function)
    "ppe": ("ProcessPoolExecutor", peer_ppe),
    "ppe_fresh": ("ProcessPoolExecutor(max_tasks_per_child=1)", peer_ppe_fresh),
    "ppe_fresh_forkserver": (
        "ProcessPoolExecutor(max_tasks_per_child=1, forkserver)",
        peer_ppe_fresh_forkserver,
    ),
    "el": ("executorlib SingleNodeExecutor", peer_el),
    "el_cache": ("executorlib SingleNodeExecutor(cache_directory)", peer_el_cache),
    "el_block": (
        "executorlib SingleNodeExecutor(block_allocation=True)",
        peer_el_block,
    ),
    "el_block_cache": (
        "executorlib SingleNodeExecutor(block_allocation=True, cache_directory)",
        peer_el_block_cache,
    ),
}


if __name__ == "__main__":
    sys.exit(
        peers_main(
            sys.argv,
            __file__,
            PEERS,
            PEER_TIMEOUT,
            f"peers: TASKS={TASKS} EXECUTORLIB_TASKS={EXECUTORLIB_TASKS} "
            f"WORKERS={WORKERS} python={sys.version.split()[0]}",
        )
    )
