//! Many small tasks submitted at once and collected as they complete: the per-task cost of a
//! pool when it is kept busy.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cf_executor_api::{as_completed, Executor};

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

/// One `pool.spawn` per task, results over a channel, received in completion order.
pub fn rayon(pool: &rayon::ThreadPool, tasks: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let (tx, rx) = mpsc::channel();
        for i in 0..tasks {
            let tx = tx.clone();
            pool.spawn(move || {
                let _ = tx.send(noop(i));
            });
        }
        drop(tx);
        black_box(rx.iter().sum::<u64>());
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
