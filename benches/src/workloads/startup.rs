//! A pool's whole life for one task: build it, get the first result, shut it down (waiting for
//! its workers to exit).

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cf_executor_api::Executor;
use cf_pool_proc::ProcessPoolExecutor;
use cf_pool_thread::ThreadPoolExecutor;

use crate::tasks::noop;

fn first_result<E: Executor>(pool: &E) {
    black_box(
        *pool
            .submit(noop, 1)
            .expect("submit")
            .result()
            .expect("result"),
    );
}

/// `iters` times: build a pool with `make`, get its first result, shut it down.
fn lives<E: Executor>(make: impl Fn() -> E, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let pool = make();
        first_result(&pool);
        drop(pool);
    }
    start.elapsed()
}

/// cf's process pool of `workers` (started on demand: one for one task).
pub fn cf_proc(workers: usize, iters: u64) -> Duration {
    let make = || {
        ProcessPoolExecutor::builder()
            .max_workers(workers)
            .build()
            .expect("build")
    };
    lives(make, iters)
}

/// cf's thread pool of `workers` (started on demand).
pub fn cf_thread(workers: usize, iters: u64) -> Duration {
    let make = || {
        ThreadPoolExecutor::builder()
            .max_workers(workers)
            .build()
            .expect("build")
    };
    lives(make, iters)
}

/// A rayon pool of `workers` (all started at build). Dropping a rayon pool does not wait for
/// its threads to exit, so this is less work than the others do.
pub fn rayon(workers: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .build()
            .expect("rayon pool");
        let (tx, rx) = mpsc::channel();
        pool.spawn(move || {
            let _ = tx.send(noop(1));
        });
        black_box(rx.recv().expect("rayon task ran"));
        drop(pool);
    }
    start.elapsed()
}

/// procspawn's pool of `workers` (all started at build), then `shutdown`.
pub fn procspawn(workers: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let pool = procspawn::Pool::new(workers).expect("procspawn pool");
        black_box(pool.spawn(1, noop).join().expect("procspawn task"));
        pool.shutdown();
    }
    start.elapsed()
}

/// One thread, spawned and joined.
pub fn std_thread(iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(std::thread::spawn(|| noop(1)).join().expect("joined"));
    }
    start.elapsed()
}
