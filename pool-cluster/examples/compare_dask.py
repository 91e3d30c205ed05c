"""Dask's LocalCluster on the workloads of compare.rs, for the same table.

    python3 -m venv /tmp/dask && /tmp/dask/bin/pip install "dask[distributed]"
    /tmp/dask/bin/python pool-cluster/examples/compare_dask.py

Two worker processes of one thread each (compare.rs: two nodes of one worker each), the
scheduler in this process's LocalCluster; every task is submitted with pure=False, so Dask runs
it instead of reusing an earlier result of the same call. Prints medians of 5 runs, as
compare.rs does.
"""

import statistics
import time

from dask.distributed import Client, LocalCluster


def square(x):
    return x * x


def squares(chunk):
    return [x * x for x in chunk]


def round_trip(client, n):
    start = time.perf_counter()
    for i in range(n):
        client.submit(square, i, pure=False).result()
    return (time.perf_counter() - start) / n


def submit_all(client, n):
    start = time.perf_counter()
    futures = [client.submit(square, i, pure=False) for i in range(n)]
    client.gather(futures)
    return n / (time.perf_counter() - start)


def map_all(client, n, chunksize=500):
    # compare.rs's map(chunksize 500): one task per chunk of 500 items.
    start = time.perf_counter()
    chunks = [range(i, min(i + chunksize, n)) for i in range(0, n, chunksize)]
    results = client.gather(client.map(squares, chunks, pure=False))
    total = sum(sum(r) for r in results)
    assert total == sum(x * x for x in range(n))
    return n / (time.perf_counter() - start)


def main():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        round_trip(client, 20)  # warm up
        rt = statistics.median(round_trip(client, 200) for _ in range(5))
        sub = statistics.median(submit_all(client, 2000) for _ in range(5))
        mp = statistics.median(map_all(client, 100_000) for _ in range(5))
        print(f"{'dask':<8} round trip {rt * 1e6:>9.1f} us   submit {sub:>9.0f} tasks/s   "
              f"map(chunksize 500) {mp:>10.0f} items/s")


if __name__ == "__main__":
    main()
