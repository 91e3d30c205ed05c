//! The shared core of the `cf` executors: Python's `concurrent.futures.Future`, in Rust.
//!
//! A [`Future<T>`] is a cheap, cloneable, `Send + Sync` handle to the outcome of one task; its
//! producer side, held by an executor, is a [`Promise<T>`]. A future is `Pending`, then
//! `Running`, then `Finished` (with a value or a [`TaskError`]), or `Cancelled` before it started.
//!
//! | Python                         | here                                          |
//! |--------------------------------|-----------------------------------------------|
//! | `f.result()` / `f.result(t)`   | [`Future::result`] / [`Future::result_timeout`] |
//! | `f.exception()`                | [`Future::exception`]                         |
//! | `f.done()`, `running()`, `cancelled()`, `cancel()` | same names                |
//! | `f.add_done_callback(fn)`      | [`Future::add_done_callback`]                 |
//! | `wait(fs, timeout, return_when)` | [`wait`] with [`ReturnWhen`]                |
//! | `as_completed(fs, timeout)`    | [`as_completed`]                              |
//! | exceptions                     | [`TaskError`] values                          |
//!
//! # A short tour
//!
//! ```
//! use std::time::Duration;
//! use cf_futures_core::{as_completed, wait, Promise, ReturnWhen, TaskError};
//!
//! // An executor holds promises; users hold futures.
//! let promises: Vec<Promise<u64>> = (0..4).map(|_| Promise::new()).collect();
//! let futures: Vec<_> = promises.iter().map(Promise::future).collect();
//!
//! futures[0].add_done_callback(|f| println!("first done: {:?}", f.result()));
//! let worker = std::thread::spawn(move || {
//!     for (i, p) in promises.into_iter().enumerate() {
//!         if p.set_running_or_notify_cancel() {
//!             if i == 3 {
//!                 p.set_error(TaskError::Broken { reason: "demo".into() }).unwrap();
//!             } else {
//!                 p.set_result(i as u64 * 10).unwrap();
//!             }
//!         }
//!     }
//! });
//!
//! let split = wait(&futures, Some(Duration::from_secs(10)), ReturnWhen::AllCompleted);
//! assert_eq!(split.done.len(), 4);
//! let mut values: Vec<u64> = as_completed(&futures, None)
//!     .filter_map(|f| f.unwrap().result().ok().copied())
//!     .collect();
//! values.sort();
//! assert_eq!(values, [0, 10, 20]);
//! worker.join().unwrap();
//! ```
//!
//! # Blocking, trying, timing out
//!
//! As `crossbeam-channel` does for `recv`, every blocking read comes in three forms:
//! [`Future::result`] blocks, [`Future::try_result`] never blocks, [`Future::result_timeout`]
//! gives up with [`TaskError::Timeout`]. `await`ing a future (it implements
//! [`std::future::Future`] for `T: Clone`) never blocks a runtime thread.
//!
//! # Threads and locks
//!
//! Each future is one allocation: a mutex-protected state plus a write-once outcome cell, a
//! count of its `Future` handles and a word saying whether the promise still holds it (what
//! `try_unwrap` needs; a gate to wait at is allocated only when it must wait). An executor
//! may store the task's call in that same allocation ([`InlineTask`]), so a queued task
//! costs one allocation. No user code
//! (callbacks) and no other lock ever runs while that mutex is held. Whether a future is done
//! can be read without the lock (its outcome cell is set in the critical section that makes it
//! done), which `as_completed` and the promise's drop use. The mutex and condvars come
//! from `parking_lot` through one internal shim, which `--cfg loom` replaces with `loom`'s
//! model-checked types (`tests/loom.rs`).
//!
//! # Waiting without sleeping first
//!
//! A thread that sleeps until a future is done costs a futex wake-up on both sides, several
//! microseconds (more on a virtual machine). So an untimed wait (`result()`, and [`wait`] and
//! [`as_completed`] without a timeout) first looks again without sleeping for about 20 µs (a few
//! spin hints, then yielding its CPU between looks), when that can help: never when the process
//! has a single CPU (the thread that would complete the future needs that CPU), and less and
//! less often on a thread whose recent looks found nothing (a failed look costs a credit; with
//! none left, one wait in 16 looks, to notice when looking pays again). When other threads are
//! runnable, one yield can last a whole time slice, so the look can last milliseconds; a timed
//! wait therefore never looks first, and sleeps at once.
#![warn(missing_docs)]

/// A `log` macro call (`guarded!(error!("..."))`) that an application logger which panics
/// cannot unwind out of: see [`log_guarded`].
macro_rules! guarded {
    ($level:ident!($($arg:tt)*)) => {
        $crate::log_guarded(|| ::log::$level!($($arg)*))
    };
}

mod error;
mod future;
mod primitive;
mod spin;
mod wait;
mod waiter;

pub use error::{
    drop_logging_panic, drop_panic_payload, log_guarded, panic_message, CodecStage, ExitCause,
    InvalidStateError, TaskError, TimeoutError,
};
#[cfg(not(loom))]
pub use future::InlineTask;
pub use future::{Future, Promise, State};
pub use wait::{as_completed, wait, AsCompleted, ReturnWhen, WaitResult};
