#!/usr/bin/env python3
"""CPython's concurrent.futures on the workloads of cf's `compare` binary.

Standard library only. Prints one JSON object on stdout:

    {"python": "3.11.7", "implementation": "CPython", "start_method": "fork",
     "results": [{"workload": "round_trip", "contender": "py-proc", "items": 1,
                  "seconds": [per-operation seconds, one per run]}, ...]}

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


def pools(workers):
    return (
        ("py-proc", lambda: ProcessPoolExecutor(max_workers=workers)),
        ("py-thread", lambda: ThreadPoolExecutor(max_workers=workers)),
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--map-items", type=int, default=20_000)
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

    def record(workload, contender, items, fn):
        """Measures fn (one operation) unless --only leaves the workload out."""
        if not wanted(workload):
            return
        seconds = measure(timed(fn), runs, target)
        results.append(
            {"workload": workload, "contender": contender, "items": items, "seconds": seconds}
        )
        print(f"  python {workload:<18} {contender:<10} done", file=sys.stderr)

    steady = ("round_trip", "submit_throughput", "map_c", "echo_")
    for name, make in pools(workers) if any(map(wanted, steady)) else ():
        with make() as pool:
            warm(pool, workers)

            # Round trip: one task, submitted and awaited.
            record("round_trip", name, 1, lambda: pool.submit(noop, 1).result())

            # Submit throughput: all tasks at once, collected with as_completed.
            def submit_all():
                futures = [pool.submit(noop, i) for i in range(a.tasks)]
                return sum(f.result() for f in as_completed(futures))

            record("submit_throughput", name, a.tasks, submit_all)

            # map with chunksize (ThreadPoolExecutor accepts and ignores chunksize).
            for c in CHUNKSIZES:
                record(f"map_c{c}", name, a.map_items,
                       lambda c=c: list(pool.map(noop, range(a.map_items), chunksize=c)))

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
    for name, make in pools(workers):
        def life(make=make):
            with make() as pool:
                pool.submit(noop, 1).result()

        record("startup", name, 1, life)

    json.dump(
        {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "start_method": multiprocessing.get_start_method(),
            "results": results,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
