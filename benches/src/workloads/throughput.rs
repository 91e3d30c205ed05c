//! Many small tasks submitted at once and collected as they complete: the per-task cost of a
//! pool when it is kept busy.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cf_executor_api::{as_completed, Executor};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::task::SpawnExt;

use crate::peers::Rayon;
use crate::tasks::noop;

/// Submits `tasks` noops, then collects them with `as_completed`; `iters` times.
pub fn cf<E: Executor>(pool: &E, tasks: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let futures: Vec<_> = (0..tasks)
            .map(|i| pool.submit(noop, i).expect("submit"))
            .collect();
        let sum: u64 = as_completed(&futures, None)
            .map(|f| *f.expect("no timeout").result().expect("result"))
            .sum();
        black_box(sum);
    }
    start.elapsed()
}

/// One `pool.spawn` per task, results over the pool's channel, received in completion order.
pub fn rayon(rayon: &Rayon, tasks: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        for i in 0..tasks {
            rayon.spawn(move || noop(i));
        }
        black_box((0..tasks).map(|_| rayon.recv()).sum::<u64>());
    }
    start.elapsed()
}

/// tokio: one `spawn_blocking` per task, the handles collected in completion order
/// (`FuturesUnordered`, the async `as_completed`).
pub fn tokio(rt: &tokio::runtime::Runtime, tasks: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut pending: FuturesUnordered<_> = (0..tasks)
            .map(|i| rt.spawn_blocking(move || noop(i)))
            .collect();
        let sum = rt.block_on(async {
            let mut sum = 0u64;
            while let Some(r) = pending.next().await {
                sum += r.expect("spawn_blocking task");
            }
            sum
        });
        black_box(sum);
    }
    start.elapsed()
}

/// The futures crate's `ThreadPool`: one `spawn_with_handle` per task, the handles collected
/// in completion order (`FuturesUnordered`).
pub fn futures_pool(pool: &futures::executor::ThreadPool, tasks: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut pending: FuturesUnordered<_> = (0..tasks)
            .map(|i| {
                pool.spawn_with_handle(async move { noop(i) })
                    .expect("spawn")
            })
            .collect();
        let sum = futures::executor::block_on(async {
            let mut sum = 0u64;
            while let Some(v) = pending.next().await {
                sum += v;
            }
            sum
        });
        black_box(sum);
    }
    start.elapsed()
}

/// A thread per task, at most `window` alive at once (joined oldest first).
pub fn std_thread(tasks: u64, window: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut live = VecDeque::with_capacity(window);
        let mut sum = 0u64;
        for i in 0..tasks {
            if live.len() == window {
                let h: std::thread::JoinHandle<u64> = live.pop_front().expect("window");
                sum += h.join().expect("joined");
            }
            live.push_back(std::thread::spawn(move || noop(i)));
        }
        sum += live
            .into_iter()
            .map(|h| h.join().expect("joined"))
            .sum::<u64>();
        black_box(sum);
    }
    start.elapsed()
}

/// procspawn's pool with at most `window` tasks in flight (it needs descriptors per task).
pub fn procspawn(pool: &procspawn::Pool, tasks: u64, window: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut live = VecDeque::with_capacity(window);
        let mut sum = 0u64;
        for i in 0..tasks {
            if live.len() == window {
                let h: procspawn::JoinHandle<u64> = live.pop_front().expect("window");
                sum += h.join().expect("procspawn task");
            }
            live.push_back(pool.spawn(i, noop));
        }
        for h in live {
            sum += h.join().expect("procspawn task");
        }
        black_box(sum);
    }
    start.elapsed()
}

/// The calls themselves, no pool.
pub fn sequential(tasks: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box((0..tasks).map(|i| noop(black_box(i))).sum::<u64>());
    }
    start.elapsed()
}
