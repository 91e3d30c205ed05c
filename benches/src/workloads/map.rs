//! `map` over many small items, in input order, with a chunk size.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cf_executor_api::{Executor, MapOptions};
use rayon::prelude::*;

use crate::tasks::{noop, noop_chunk};

/// `pool.map(noop, 0..items, chunksize)`, collected; `iters` times.
pub fn cf<E: Executor>(pool: &E, items: u64, chunksize: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let out: Vec<u64> = pool
            .map(noop, 0..items, MapOptions::new().chunksize(chunksize))
            .expect("map")
            .collect::<Result<_, _>>()
            .expect("results");
        black_box(out);
    }
    start.elapsed()
}

/// `map` done by hand with one task (and one future) per chunk, `submit(noop_chunk, chunk)`:
/// what Python's `map(chunksize=)` does, and what cf's `map` could do (it makes one future
/// per item).
pub fn cf_chunk_tasks<E: Executor>(pool: &E, items: u64, chunksize: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let all: Vec<u64> = (0..items).collect();
        let futures: Vec<_> = all
            .chunks(chunksize)
            .map(|c| pool.submit(noop_chunk, c.to_vec()).expect("submit"))
            .collect();
        let mut out = Vec::with_capacity(all.len());
        for f in futures {
            let chunk = f
                .try_unwrap()
                .unwrap_or_else(|_| panic!("the only handle to a chunk future"))
                .expect("chunk");
            out.extend(chunk);
        }
        black_box(out);
    }
    start.elapsed()
}

/// A parallel iterator split no finer than `chunksize`, collected in order.
pub fn rayon(pool: &rayon::ThreadPool, items: u64, chunksize: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let out: Vec<u64> = pool.install(|| {
            // rayon indexes ranges of usize, not u64.
            (0..items as usize)
                .into_par_iter()
                .with_min_len(chunksize)
                .map(|i| noop(i as u64))
                .collect()
        });
        black_box(out);
    }
    start.elapsed()
}

/// procspawn has no `map`: one task per chunk, at most `window` chunks in flight, in order.
pub fn procspawn(
    pool: &procspawn::Pool,
    items: u64,
    chunksize: usize,
    window: usize,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut out = Vec::with_capacity(items as usize);
        let mut live: VecDeque<procspawn::JoinHandle<Vec<u64>>> = VecDeque::new();
        let all: Vec<u64> = (0..items).collect();
        for chunk in all.chunks(chunksize) {
            if live.len() == window {
                out.extend(live.pop_front().expect("window").join().expect("chunk"));
            }
            live.push_back(pool.spawn(chunk.to_vec(), noop_chunk));
        }
        for h in live {
            out.extend(h.join().expect("chunk"));
        }
        black_box(out);
    }
    start.elapsed()
}

/// `(0..items).map(noop).collect()`.
pub fn sequential(items: u64, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let out: Vec<u64> = (0..items).map(|i| noop(black_box(i))).collect();
        black_box(out);
    }
    start.elapsed()
}
