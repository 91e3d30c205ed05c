//! CPU-bound work: `CPU_TASKS` calls of `cpu_heavy`, on pools of 1..=cores workers, against the
//! same calls one after another.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cf_executor_api::{Executor, MapOptions};
use rayon::prelude::*;

use crate::tasks::cpu_heavy;

/// `pool.map(cpu_heavy, [n; tasks])`, `iters` times.
pub fn cf<E: Executor>(pool: &E, tasks: usize, n: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let total: u64 = pool
            .map(cpu_heavy, vec![n; tasks], MapOptions::new())
            .expect("map")
            .map(|r| r.expect("cpu_heavy"))
            .fold(0, u64::wrapping_add);
        black_box(total);
    }
    start.elapsed()
}

/// A parallel iterator over the same inputs, one task per item.
pub fn rayon(pool: &rayon::ThreadPool, tasks: usize, n: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let total = pool.install(|| {
            vec![n; tasks]
                .into_par_iter()
                .with_max_len(1)
                .map(cpu_heavy)
                .reduce(|| 0, u64::wrapping_add)
        });
        black_box(total);
    }
    start.elapsed()
}

/// procspawn's pool: spawn every task, then join them in order.
pub fn procspawn(pool: &procspawn::Pool, tasks: usize, n: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let handles: Vec<_> = (0..tasks).map(|_| pool.spawn(n, cpu_heavy)).collect();
        let total = handles
            .into_iter()
            .map(|h| h.join().expect("cpu_heavy"))
            .fold(0, u64::wrapping_add);
        black_box(total);
    }
    start.elapsed()
}

/// One thread per task, all started at once.
pub fn std_thread(tasks: usize, n: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let handles: Vec<_> = (0..tasks)
            .map(|_| std::thread::spawn(move || cpu_heavy(n)))
            .collect();
        let total = handles
            .into_iter()
            .map(|h| h.join().expect("joined"))
            .fold(0, u64::wrapping_add);
        black_box(total);
    }
    start.elapsed()
}

/// The best static schedule: `threads` threads started together, each running its equal
/// share of the tasks. What the machine can give; no pool can beat it.
pub fn ideal_split(threads: usize, tasks: usize, n: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let share = tasks.div_ceil(threads);
        let total = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let mine = share.min(tasks.saturating_sub(t * share));
                    s.spawn(move || (0..mine).map(|_| cpu_heavy(n)).fold(0, u64::wrapping_add))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("joined"))
                .fold(0, u64::wrapping_add)
        });
        black_box(total);
    }
    start.elapsed()
}

/// The same calls, one after another.
pub fn sequential(tasks: usize, n: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let total = (0..tasks)
            .map(|_| cpu_heavy(black_box(n)))
            .fold(0, u64::wrapping_add);
        black_box(total);
    }
    start.elapsed()
}
