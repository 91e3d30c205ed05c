//! One task, submitted and awaited, again and again: the fixed cost of a pool.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cf_executor_api::Executor;

use crate::tasks::noop;

/// `submit(noop, i).result()`, `iters` times, on any cf executor.
pub fn cf<E: Executor>(pool: &E, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        let f = pool.submit(noop, i).expect("submit");
        black_box(*f.result().expect("result"));
    }
    start.elapsed()
}

/// `pool.spawn` sending the result over a channel, then `recv`.
pub fn rayon(pool: &rayon::ThreadPool, iters: u64) -> Duration {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    for i in 0..iters {
        let tx = tx.clone();
        pool.spawn(move || {
            let _ = tx.send(noop(i));
        });
        black_box(rx.recv().expect("rayon task ran"));
    }
    start.elapsed()
}

/// A new thread per task: `std::thread::spawn(..).join()`.
pub fn std_thread(iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(std::thread::spawn(move || noop(i)).join().expect("joined"));
    }
    start.elapsed()
}

/// procspawn's pool: `pool.spawn(i, noop).join()`.
pub fn procspawn(pool: &procspawn::Pool, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(pool.spawn(i, noop).join().expect("procspawn task"));
    }
    start.elapsed()
}

/// The call itself, no pool.
pub fn sequential(iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(noop(black_box(i)));
    }
    start.elapsed()
}
