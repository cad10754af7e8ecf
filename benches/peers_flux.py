"""Peers of pitch's Flux benchmark (benches/run-flux.sh), one measurement per call, each a
JSON line {"name", "tasks", "seconds"} on stdout:

  raw-submit N       flux submit --cc=1-N --wait true {cc}: N jobs in one call, until all end
  raw-bulksubmit N   flux bulksubmit --wait true {} ::: 1..N
  el-job N           executorlib's FluxJobExecutor: N calls of a no-op function, a Flux job each
  el-cluster N       executorlib's FluxClusterExecutor: the same, a `flux batch` job each

Run it with a Python that imports flux (flux-core's bindings, /usr/bin/python3 with
/opt/flux/lib/python3.*/site-packages on its path) and executorlib[cache] + pysqa. A
measurement that cannot run raises: the benchmark fails, it never skips.
"""

import json
import os
import subprocess
import sys
import tempfile
import time


def noop(i):
    return i


def line(name, tasks, seconds):
    print(json.dumps({"name": name, "tasks": tasks, "seconds": round(seconds, 3)}), flush=True)


def raw(kind, n):
    if kind == "submit":
        argv = ["flux", "submit", "--quiet", "--wait", f"--cc=1-{n}", "true", "{cc}"]
        name = f"flux submit --cc=1-{n} --wait"
    else:
        argv = ["flux", "bulksubmit", "--quiet", "--wait", "true", "{}", ":::"]
        argv += [str(i) for i in range(1, n + 1)]
        name = "flux bulksubmit --wait"
    start = time.monotonic()
    subprocess.run(argv, check=True)
    line(name, n, time.monotonic() - start)


def executorlib(kind, n):
    import executorlib

    with tempfile.TemporaryDirectory(prefix="el-flux-", dir=".") as cache:
        if kind == "job":
            exe = executorlib.FluxJobExecutor(cache_directory=cache)
            name = "executorlib FluxJobExecutor(cache_directory)"
        else:
            exe = executorlib.FluxClusterExecutor(cache_directory=cache)
            name = "executorlib FluxClusterExecutor"
        with exe:
            start = time.monotonic()
            futures = [exe.submit(noop, i) for i in range(n)]
            values = [f.result() for f in futures]
            seconds = time.monotonic() - start
        assert values == list(range(n)), values[:10]
    line(name, n, seconds)


def main():
    what, n = sys.argv[1], int(sys.argv[2])
    if what == "raw-submit":
        raw("submit", n)
    elif what == "raw-bulksubmit":
        raw("bulksubmit", n)
    elif what == "el-job":
        executorlib("job", n)
    elif what == "el-cluster":
        executorlib("cluster", n)
    else:
        sys.exit(f"unknown measurement {what}")


if __name__ == "__main__":
    main()
