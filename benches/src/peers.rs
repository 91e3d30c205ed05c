//! The thread peers, set up as their users set them up: a rayon pool with one result channel
//! kept for its life, tokio's blocking pool, and the futures crate's `ThreadPool`.

use std::sync::mpsc;

/// A rayon pool and one channel its tasks send their results on, made once and reused (as a
/// program that fans work out to rayon and gathers the results keeps its channel).
#[derive(Debug)]
pub struct Rayon {
    /// The pool (`map` and the CPU-bound workloads use its `install`).
    pub pool: rayon::ThreadPool,
    tx: mpsc::Sender<u64>,
    rx: mpsc::Receiver<u64>,
}

impl Rayon {
    /// A pool of `workers` threads, all started.
    ///
    /// # Panics
    ///
    /// If rayon cannot start its threads.
    #[must_use]
    pub fn new(workers: usize) -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .build()
            .expect("rayon pool");
        let (tx, rx) = mpsc::channel();
        Rayon { pool, tx, rx }
    }

    /// `pool.spawn` of `f`, whose value goes to the channel.
    pub fn spawn(&self, f: impl FnOnce() -> u64 + Send + 'static) {
        let tx = self.tx.clone();
        self.pool.spawn(move || {
            let _ = tx.send(f());
        });
    }

    /// The next value a task sent.
    ///
    /// # Panics
    ///
    /// Never: the sender lives as long as `self`.
    pub fn recv(&self) -> u64 {
        self.rx.recv().expect("the pool's sender is alive")
    }
}

/// A tokio runtime whose blocking pool has `workers` threads, for `spawn_blocking`; the runtime
/// itself is current-thread (the caller's `block_on` drives it), so only the blocking pool
/// runs tasks, as a pool of `workers` should.
///
/// # Panics
///
/// If tokio cannot build the runtime.
#[must_use]
pub fn tokio_blocking(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(workers)
        .build()
        .expect("tokio runtime")
}

/// The futures crate's `ThreadPool` of `workers` threads.
///
/// # Panics
///
/// If its threads cannot be started.
#[must_use]
pub fn futures_pool(workers: usize) -> futures::executor::ThreadPool {
    futures::executor::ThreadPool::builder()
        .pool_size(workers)
        .name_prefix("futures-pool-")
        .create()
        .expect("futures ThreadPool")
}
