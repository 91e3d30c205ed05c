//! `ThreadPoolExecutor`: Python's `concurrent.futures.ThreadPoolExecutor`, in Rust.
//!
//! A pool of up to `max_workers` threads running submitted tasks. It implements
//! [`cf_executor_api::Executor`], so code written against that trait runs unchanged on this pool
//! or on `cf-pool-proc`'s process pool; [`ThreadPoolExecutor::spawn`] adds what only threads can
//! do: run capturing closures over non-serde values.
//!
//! | Python                                            | here                                          |
//! |---------------------------------------------------|-----------------------------------------------|
//! | `ThreadPoolExecutor(max_workers=4)`               | `ThreadPoolExecutor::builder().max_workers(4).build()?` |
//! | `ThreadPoolExecutor()`                            | [`ThreadPoolExecutor::new`]                   |
//! | `thread_name_prefix=`, `initializer=`             | [`ThreadPoolBuilder`] methods                 |
//! | `ex.submit(fn, *args)`                            | [`Executor::submit`]`(fn, args)`              |
//! | `ex.submit(lambda: ...)` capturing locals         | [`ThreadPoolExecutor::spawn`]`(move \|\| ...)` |
//! | `ex.map(fn, xs, timeout=, chunksize=, buffersize=)` | [`Executor::map`] with [`MapOptions`]       |
//! | `ex.shutdown(wait=, cancel_futures=)`             | [`Executor::shutdown`]                        |
//! | `with ThreadPoolExecutor() as ex:`                | the pool's `Drop`                             |
//! | `BrokenThreadPool`                                | [`SubmitError::Broken`], [`TaskError::Broken`] |
//!
//! # A short tour
//!
//! ```
//! use std::time::Duration;
//! use cf_pool_thread::{as_completed, Executor, MapOptions, TaskError, ThreadPoolExecutor};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = ThreadPoolExecutor::builder().max_workers(4).build().unwrap();
//!
//! // submit: one task, one future. The same line works on a process pool.
//! let f = pool.submit(square, 7).unwrap();
//! assert_eq!(f.result_timeout(Duration::from_secs(10)), Ok(&49));
//!
//! // Several arguments travel as a tuple; non-capturing closures are tasks too.
//! let g = pool.submit(|(a, b): (f64, f64)| a / b, (1.0, 4.0)).unwrap();
//! assert_eq!(g.result(), Ok(&0.25));
//!
//! // map: results in input order, lazily; chunksize batches items into one task.
//! let squares: Vec<u64> = pool
//!     .map(square, 0..10, MapOptions::new().chunksize(3))
//!     .unwrap()
//!     .collect::<Result<_, _>>()
//!     .unwrap();
//! assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//!
//! // as_completed: whichever finishes first comes first.
//! let futures: Vec<_> = (1..=3).map(|x| pool.submit(square, x).unwrap()).collect();
//! let mut total = 0;
//! for done in as_completed(&futures, Some(Duration::from_secs(10))) {
//!     total += done.unwrap().result().unwrap();
//! }
//! assert_eq!(total, 14);
//!
//! // A panic is the analog of a raised exception: it fails that future only.
//! let bad = pool.spawn(|| -> u64 { panic!("no such user") }).unwrap();
//! assert!(matches!(bad.result(), Err(TaskError::Panicked { message, .. }) if message == "no such user"));
//!
//! // spawn takes capturing closures, which a process pool cannot ship.
//! let words = vec!["a", "bb", "ccc"];
//! let lengths = pool.spawn(move || words.iter().map(|w| w.len()).sum::<usize>()).unwrap();
//! assert_eq!(lengths.result(), Ok(&6));
//!
//! // Dropping the pool (Python's `with` exit) waits for everything and joins the threads.
//! drop(pool);
//! ```
//!
//! # Threads, queue and idle count
//!
//! The pool is one queue of jobs and a set of worker threads, behind one mutex (and, once every
//! thread runs, a second one for the jobs moved out of the queue; see below). `submit`
//! (and `spawn`, `map`, `submit_batch`) only pushes a job and never blocks on a worker. A
//! `submit` or `spawn` allocates once: its call is stored in its future's own allocation
//! ([`cf_executor_api::InlineTask`]), and the queue holds that; a `map` chunk is one such
//! task, over all its items, and a [`submit_batch`](Executor::submit_batch) one boxed job.
//! Threads
//! start on demand: a submit starts a new thread only if the queue now holds more jobs than
//! there are *available* workers (idle, starting, or just finishing a task) and fewer than
//! `max_workers` threads exist; otherwise an idle worker is woken. This is CPython 3.9's idle
//! semaphore, counted exactly (while a thread may still start, the count only goes down under
//! the lock). So 60 blocking tasks
//! on a pool of 4 start exactly 4 threads, and tasks submitted one after another, each awaited,
//! all run on one thread. A worker counts itself available before it publishes a result, so
//! whoever reads that result and submits again always finds it available. (Once all
//! `max_workers` threads run, no submit needs the count, and the workers stop keeping it.)
//!
//! Each worker runs the initializer once, then loops: take the next job, run it, repeat. Once all
//! `max_workers` threads run, a worker that finds no job moved out of the queue moves the whole
//! queue out at once (an O(1) swap), and the workers take jobs from there, oldest first, under
//! a lock of their own: the queue's lock, which every submit takes, then changes hands once per
//! refill rather than once per job. Jobs still start in submission order, as in CPython, so a
//! task that waits for earlier tasks never waits behind one that is blocked while a worker is
//! free, and `shutdown(cancel_futures = true)` cancels jobs moved out of the queue too. When no
//! job is left, up to one worker per CPU (none if the process has only one) watches for one for
//! up to 50 µs (spinning, then yielding its CPU) before sleeping on a condvar, so a burst of
//! submits, or a submit right after the previous result was read, finds a worker awake instead
//! of paying a futex wake-up on both sides; an idle pool is idle again 50 µs after its last task. A task's
//! panic is caught with [`cf_executor_api::call_catching`] and becomes that future's
//! [`TaskError::Panicked`]; the thread lives on. A panic that cannot unwind (every panic of a
//! program built with `panic = "abort"`, or one leaving an `extern "C"` function) cannot reach a
//! future: it is printed as Rust's default hook prints it and the process aborts, as without cf
//! (see `examples/thread_panic_abort.rs`). Workers exit when the pool is shut down and the queue
//! is empty, or when it broke. A `map` chunk (`chunksize` > 1) is one task, run in order on one
//! thread, whose results come back together; a `submit_batch` is one job too, but completes each
//! item's future as it goes. Threads are named `{prefix}_0`, `{prefix}_1`, ... with a default
//! prefix of `ThreadPoolExecutor-N`, as in Python.
//!
//! # Differences from Python
//!
//! * A panicking initializer breaks the pool exactly as one returning `Err` does.
//! * `shutdown(wait = true)` called from one of the pool's own tasks (or the pool dropped
//!   there) does not wait for that task's own thread, where Python would raise.
//! * Idle reuse is deterministic (see above), where CPython's is a benign race.
//! * `map`'s `chunksize` counts, where Python's thread pool ignores it: as in Python's process
//!   pool, a chunk is one task whose results come back together, so an item is yielded once its
//!   whole chunk is done, and a `map` timeout that runs out during a chunk fails it as a whole
//!   (items of it that finished are not yielded). With the default `chunksize` of 1 every item
//!   is its own task, yielded as soon as it is done. A chunk costs one queue entry and one
//!   future instead of one per item: in the benchmark table of `benches/README.md`, `map` over
//!   20 000 no-op items ran about 3 times as many items per second with a `chunksize` of 16,
//!   and 7 times with 256, as with 1.
#![warn(missing_docs)]

/// A `log` macro call (`guarded!(warn!("..."))`) that an application logger which panics
/// cannot unwind out of: most of the pool's calls run on its worker threads, and a worker that
/// dies is never replaced (see `cf_executor_api::log_guarded`).
macro_rules! guarded {
    ($level:ident!($($arg:tt)*)) => {
        ::cf_executor_api::log_guarded(|| ::log::$level!($($arg)*))
    };
}

mod builder;
mod executor;
mod job;
mod worker;

pub use builder::ThreadPoolBuilder;
pub use cf_executor_api::{
    as_completed, cpu_count, wait, Buffer, BuildError, Executor, Future, MapOptions, ReturnWhen,
    SubmitError, TaskError,
};
pub use executor::ThreadPoolExecutor;
