//! One task, submitted and awaited, again and again: the fixed cost of a pool.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cf_executor_api::Executor;
use futures::task::SpawnExt;

use crate::peers::Rayon;
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

/// `pool.spawn` sending the result over the pool's channel (made once, reused), then `recv`.
pub fn rayon(rayon: &Rayon, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        rayon.spawn(move || noop(i));
        black_box(rayon.recv());
    }
    start.elapsed()
}

/// tokio: `block_on(spawn_blocking(..))`, what synchronous code does with a runtime.
pub fn tokio(rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        let handle = rt.spawn_blocking(move || noop(i));
        black_box(rt.block_on(handle).expect("spawn_blocking task"));
    }
    start.elapsed()
}

/// The futures crate's `ThreadPool`: `block_on(spawn_with_handle(..))`.
pub fn futures_pool(pool: &futures::executor::ThreadPool, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        let handle = pool
            .spawn_with_handle(async move { noop(i) })
            .expect("spawn");
        black_box(futures::executor::block_on(handle));
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
