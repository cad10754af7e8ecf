#!/usr/bin/env python3
"""Peer executors for pitch's persistent-worker benchmark (block_allocation).

Prints one JSON line per measurement on stdout, like peers_single_node.py:

    {"name": "ProcessPoolExecutor", "tasks": 20000, "seconds": 4.1}

Peers (each in its own child interpreter, under a timeout):
    ppe             ProcessPoolExecutor(max_workers=W): TASKS no-op tasks
    el_block        executorlib SingleNodeExecutor(block_allocation=True): TASKS no-op tasks
    el_block_cache  the same with a fresh cache_directory: EL_CACHE_TASKS no-op tasks
    ppe_emcee       ProcessPoolExecutor: the emcee-shaped loop
    el_emcee        executorlib block_allocation: the emcee-shaped loop
    ppe_latency     ProcessPoolExecutor: median submit-to-result time of one task
    el_latency      executorlib block_allocation: the same

The emcee-shaped loop: WALKERS walkers x STEPS steps; each step submits one
log-probability call per walker (busy for WORK_US microseconds) and waits for
all of them before the next step, as emcee's ensemble sampler does with a pool.

Timed: first submit to last result. Executor creation, worker start-up and a
warm-up batch of W tasks are not timed.

Environment: TASKS (20000), EL_CACHE_TASKS (2000), WORKERS (2), WALKERS (32),
STEPS (100), WORK_US (50), LATENCY (2000), PEER_TIMEOUT (900), PEERS (all).
"""

import math
import random
import shutil
import statistics
import sys
import tempfile
import time

from peers_common import env_int
from peers_common import main as peers_main


def noop(x):
    return x


def log_prob(theta, work_us):
    """Busy for work_us microseconds, then a Gaussian log-probability."""
    end = time.perf_counter() + work_us / 1e6
    while time.perf_counter() < end:
        pass
    return -0.5 * sum(t * t for t in theta)


TASKS = env_int("TASKS", 20000)
EL_CACHE_TASKS = env_int("EL_CACHE_TASKS", 2000)
WORKERS = env_int("WORKERS", 2)
WALKERS = env_int("WALKERS", 32)
STEPS = env_int("STEPS", 100)
WORK_US = env_int("WORK_US", 50)
LATENCY = env_int("LATENCY", 2000)
PEER_TIMEOUT = env_int("PEER_TIMEOUT", 900)


def warm(ex):
    for i, f in enumerate([ex.submit(noop, -1 - i) for i in range(WORKERS)]):
        assert f.result() == -1 - i


def batch(ex, tasks):
    warm(ex)
    start = time.perf_counter()
    futures = [ex.submit(noop, i) for i in range(tasks)]
    results = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    if results != list(range(tasks)):
        raise RuntimeError("wrong results")
    return {"tasks": tasks, "seconds": seconds}


def emcee(ex):
    warm(ex)
    rng = random.Random(42)
    dim = 4
    pos = [[rng.random() - 0.5 for _ in range(dim)] for _ in range(WALKERS)]
    probs = [-math.inf] * WALKERS
    start = time.perf_counter()
    for _ in range(STEPS):
        proposals = []
        for k in range(WALKERS):
            other = pos[(k + 1 + int(rng.random() * (WALKERS - 1))) % WALKERS]
            z = (1.0 + rng.random()) ** 2 / 2.0
            proposals.append([o + z * (x - o) for x, o in zip(pos[k], other)])
        futures = [ex.submit(log_prob, p, WORK_US) for p in proposals]
        new = [f.result() for f in futures]
        for k in range(WALKERS):
            if new[k] > probs[k] or rng.random() < math.exp(new[k] - probs[k]):
                pos[k], probs[k] = proposals[k], new[k]
    seconds = time.perf_counter() - start
    return {
        "tasks": WALKERS * STEPS,
        "seconds": seconds,
        "walkers": WALKERS,
        "steps": STEPS,
        "work_us": WORK_US,
    }


def latency(ex):
    warm(ex)
    times = []
    start = time.perf_counter()
    for i in range(LATENCY):
        t = time.perf_counter()
        assert ex.submit(noop, i).result() == i
        times.append(time.perf_counter() - t)
    return {
        "tasks": LATENCY,
        "seconds": time.perf_counter() - start,
        "median": statistics.median(times),
    }


def ppe(measure):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=WORKERS) as ex:
        return measure(ex)


def el(measure, cache=False):
    from executorlib import SingleNodeExecutor

    kwargs = {"max_workers": WORKERS, "block_allocation": True}
    directory = None
    if cache:
        directory = tempfile.mkdtemp(prefix="pitch-bench-executorlib-")
        kwargs["cache_directory"] = directory
    try:
        with SingleNodeExecutor(**kwargs) as ex:
            return measure(ex)
    finally:
        if directory:
            shutil.rmtree(directory, ignore_errors=True)


PEERS = {
    "ppe": ("ProcessPoolExecutor", lambda: ppe(lambda ex: batch(ex, TASKS))),
    "el_block": (
        "executorlib SingleNodeExecutor(block_allocation=True)",
        lambda: el(lambda ex: batch(ex, TASKS)),
    ),
    "el_block_cache": (
        "executorlib SingleNodeExecutor(block_allocation=True, cache_directory)",
        lambda: el(lambda ex: batch(ex, EL_CACHE_TASKS), cache=True),
    ),
    "ppe_emcee": ("ProcessPoolExecutor emcee", lambda: ppe(emcee)),
    "el_emcee": (
        "executorlib SingleNodeExecutor(block_allocation=True) emcee",
        lambda: el(emcee),
    ),
    "ppe_latency": ("ProcessPoolExecutor latency", lambda: ppe(latency)),
    "el_latency": (
        "executorlib SingleNodeExecutor(block_allocation=True) latency",
        lambda: el(latency),
    ),
}


if __name__ == "__main__":
    sys.exit(
        peers_main(
            sys.argv,
            __file__,
            PEERS,
            PEER_TIMEOUT,
            f"peers: TASKS={TASKS} EL_CACHE_TASKS={EL_CACHE_TASKS} WORKERS={WORKERS}",
        )
    )
