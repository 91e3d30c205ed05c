#!/usr/bin/env python3
"""CPython's concurrent.futures (and loky and pebble, when installed) on the workloads of cf's
`compare` binary.

Needs only the standard library; `pip install loky pebble` adds those two process pools as
peers (each is skipped when it cannot be imported). Prints one JSON object on stdout:

    {"python": "3.11.7", "implementation": "CPython", "start_method": "fork",
     "peers": {"loky": "3.7.0", "pebble": "5.2.3"},
     "results": [{"workload": "round_trip", "contender": "py-proc", "items": 1,
                  "seconds": [per-operation seconds, one per run]}, ...],
     "memory": [{"contender": "py-proc", "kib": [resident KiB of each idle worker]}, ...]}

The method is the Rust side's: a warm-up on growing batches that sizes the batch so a sample
lasts about --target-seconds, then --runs samples; the caller takes the median. Pools are built once
per workload and warmed up, except in `startup`, which times a pool's whole life.
"""

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

try:
    import loky
except ImportError:
    loky = None
try:
    import pebble
except ImportError:
    pebble = None

CHUNKSIZES = (1, 16, 256)
PAYLOADS = ((1 << 10, "1KiB"), (1 << 20, "1MiB"), (16 << 20, "16MiB"))


def noop(x):
    return x


def cpu_heavy(n):
    """The chapter's CPU-bound task: the sum of squares below n."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def echo(b):
    return b


def calibrate(op, target):
    """Grows the batch until one lasts a quarter of the target; returns the sample size."""
    iters = 1
    while True:
        took = max(op(iters), 1e-9)
        if took >= target / 4 or iters >= 1 << 30:
            return int(min(max(iters * target / took, 1), 1e9))
        iters *= 4


def measure(op, runs, target):
    """op(iters) runs the operation iters times and returns elapsed seconds."""
    iters = calibrate(op, target)
    return [op(iters) / iters for _ in range(runs)]


def measure_group(ops, runs, target):
    """Like measure, for several operations sampled round-robin; {name: seconds}."""
    iters = {name: calibrate(timed(fn), target) for name, fn in ops.items()}
    seconds = {name: [] for name in ops}
    for _ in range(runs):
        for name, fn in ops.items():
            seconds[name].append(timed(fn)(iters[name]) / iters[name])
    return seconds


def timed(fn):
    def op(iters):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return time.perf_counter() - start

    return op


def warm(pool, workers):
    list(pool.map(noop, range(workers * 4)))


class PebblePool:
    """pebble's ProcessPool behind the concurrent.futures calls the workloads make."""

    def __init__(self, workers):
        self.pool = pebble.ProcessPool(max_workers=workers)

    def submit(self, fn, *args):
        return self.pool.submit(fn, None, *args)

    def map(self, fn, items, chunksize=1):
        return self.pool.map(fn, items, chunksize=chunksize).result()

    def pids(self):
        return list(self.pool._pool_manager.worker_manager.workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.close()
        self.pool.join()


def pools(workers):
    """(contender, constructor, slow): slow peers run fewer tasks in the throughput rows."""
    found = [
        ("py-proc", lambda: ProcessPoolExecutor(max_workers=workers), False),
        ("py-thread", lambda: ThreadPoolExecutor(max_workers=workers), False),
    ]
    if loky is not None:
        # What loky's users call; the executor is reused across calls (and shut down by
        # `with`, as here, only when asked).
        found.append(("loky", lambda: loky.get_reusable_executor(max_workers=workers), True))
    if pebble is not None:
        found.append(("pebble", lambda: PebblePool(workers), True))
    return found


def fresh(name, workers):
    """A new pool for the start-up row (loky's reusable executor would not start anew)."""
    if name == "loky":
        return loky.ProcessPoolExecutor(max_workers=workers)
    return next(make for n, make, _ in pools(workers) if n == name)()


def worker_pids(name, pool):
    if name == "pebble":
        return pool.pids()
    return list(pool._processes)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--map-items", type=int, default=20_000)
    p.add_argument("--slow-tasks", type=int, default=2_000,
                   help="tasks and map items of the slow peers (loky, pebble)")
    p.add_argument("--cpu-n", type=int, default=300_000)
    p.add_argument("--cpu-tasks", type=int, default=8)
    p.add_argument("--target-seconds", type=float, default=0.05)
    p.add_argument("--only", default="", help="comma-separated workload key prefixes")
    a = p.parse_args()
    only = [o for o in a.only.split(",") if o]

    def wanted(key):
        return not only or any(key.startswith(o) or o.startswith(key) for o in only)

    runs, target, workers = a.runs, a.target_seconds, a.workers
    results = []

    def record(workload, contender, items, fn, runs=runs):
        """Measures fn (one operation) unless --only leaves the workload out."""
        if not wanted(workload):
            return
        seconds = measure(timed(fn), runs, target)
        results.append(
            {"workload": workload, "contender": contender, "items": items, "seconds": seconds}
        )
        print(f"  python {workload:<18} {contender:<10} done", file=sys.stderr)

    # Each idle worker's resident memory, once it has run a few tasks. First, while this
    # process is small: forked workers (py-proc, pebble) count the pages they share with it.
    memory = []
    for name, make, _ in pools(workers) if wanted("memory") else ():
        if name == "py-thread":
            continue
        with make() as pool:
            warm(pool, workers)
            time.sleep(0.2)
            kib = [k for k in map(rss_kib, worker_pids(name, pool)) if k is not None]
            memory.append({"contender": name, "kib": kib})

    steady = ("round_trip", "submit_throughput", "map_c", "echo_")
    for name, make, slow in pools(workers) if any(map(wanted, steady)) else ():
        with make() as pool:
            warm(pool, workers)

            # Round trip: one task, submitted and awaited.
            record("round_trip", name, 1, lambda: pool.submit(noop, 1).result())

            # Submit throughput: all tasks at once, collected with as_completed.
            tasks = a.slow_tasks if slow else a.tasks

            def submit_all():
                futures = [pool.submit(noop, i) for i in range(tasks)]
                return sum(f.result() for f in as_completed(futures))

            record("submit_throughput", name, tasks, submit_all)

            # map with chunksize (ThreadPoolExecutor accepts and ignores chunksize).
            for c in CHUNKSIZES:
                items = a.slow_tasks if slow and c < 256 else a.map_items
                record(f"map_c{c}", name, items,
                       lambda c=c, n=items: list(pool.map(noop, range(n), chunksize=c)))

            # Payload echo: bytes, which pickle as one string (Python's default is fast).
            for size, label in PAYLOADS:
                data = (bytes(range(251)) * (size // 251 + 1))[:size]
                # A round trip moves the payload twice: there and back.
                record(f"echo_{label}", name, 2 * size,
                       lambda d=data: pool.submit(echo, d).result())

    # CPU-bound scaling over 1..=workers, against the same calls in sequence, sampled
    # round-robin with the pools so that load from elsewhere slows them alike.
    work = [a.cpu_n] * a.cpu_tasks
    for w in range(1, workers + 1):
        if not wanted(f"cpu_w{w}"):
            continue
        with ProcessPoolExecutor(max_workers=w) as proc, ThreadPoolExecutor(max_workers=w) as th:
            warm(proc, w)
            warm(th, w)
            ops = {
                "py-seq": lambda: [cpu_heavy(n) for n in work],
                "py-proc": lambda: list(proc.map(cpu_heavy, work)),
                "py-thread": lambda: list(th.map(cpu_heavy, work)),
            }
            for name, seconds in measure_group(ops, runs, target).items():
                results.append({"workload": f"cpu_w{w}", "contender": name,
                                "items": a.cpu_tasks, "seconds": seconds})
            print(f"  python cpu_w{w} done", file=sys.stderr)

    # A pool's whole life for one task: start, first result, shutdown (waiting for workers).
    for name, _, _ in pools(workers):
        def life(name=name):
            with fresh(name, workers) as pool:
                pool.submit(noop, 1).result()

        # loky starts each worker as a new interpreter (seconds here): fewer runs.
        record("startup", name, 1, life, runs=min(runs, 3) if name == "loky" else runs)

    json.dump(
        {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "start_method": multiprocessing.get_start_method(),
            "peers": {m.__name__: m.__version__ for m in (loky, pebble) if m is not None},
            "results": results,
            "memory": memory,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
