//! The `Executor` trait: one interface for `cf`'s thread pool and process pool.
//!
//! A library written against this crate is generic over `E: Executor`; the application picks
//! the backend (`cf-pool-thread`'s `ThreadPoolExecutor` or `cf-pool-proc`'s
//! `ProcessPoolExecutor`). This crate re-exports `cf-futures-core`, so it is the only `cf`
//! dependency such a library needs.
//!
//! # A short tour
//!
//! ```
//! use cf_executor_api::{as_completed, Executor, MapOptions, SubmitError};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! /// Works unchanged on threads or processes.
//! fn sum_of_squares<E: Executor>(executor: &E, n: u64) -> Result<u64, SubmitError> {
//!     let futures: Vec<_> = (0..n)
//!         .map(|x| executor.submit(square, x))
//!         .collect::<Result<_, _>>()?;
//!     Ok(as_completed(&futures, None).map(|f| *f.unwrap().result().unwrap()).sum())
//! }
//!
//! fn ordered<E: Executor>(executor: &E) -> Vec<u64> {
//!     executor
//!         .map(square, 1..=5, MapOptions::new().chunksize(2))
//!         .unwrap()
//!         .collect::<Result<_, _>>()
//!         .unwrap()
//! }
//! # let _ = (sum_of_squares::<Inline>, ordered::<Inline>);
//! # // A minimal executor so this page compiles without a backend crate.
//! # struct Inline;
//! # impl Executor for Inline {
//! #     fn submit<F, A, R>(&self, f: F, arg: A) -> Result<cf_executor_api::Future<R>, SubmitError>
//! #     where F: cf_executor_api::Task<A, R>, A: cf_executor_api::Payload, R: cf_executor_api::Payload + Sync {
//! #         let p = cf_executor_api::Promise::new();
//! #         let _ = p.set_outcome(cf_executor_api::call_catching(|| f(arg)));
//! #         Ok(p.future())
//! #     }
//! #     fn shutdown(&self, _: bool, _: bool) {}
//! #     fn max_workers(&self) -> usize { 1 }
//! # }
//! # assert_eq!(sum_of_squares(&Inline, 4).unwrap(), 14);
//! # assert_eq!(ordered(&Inline), [1, 4, 9, 16, 25]);
//! ```
//!
//! # Tasks
//!
//! A task is `F: Fn(A) -> R + Copy + Send + Sync + 'static` ([`Task`]) with serde-able argument
//! and result ([`Payload`]); several arguments travel as a tuple. Those bounds are what a
//! process pool needs to run `f` in another process; fn items and non-capturing closures meet
//! them. The thread pool accepts anything more through its own `spawn`.
//!
//! # Crossing a process boundary
//!
//! Backends that send tasks elsewhere (cf's process pool, a cluster) encode arguments and
//! results with [`codec`]: postcard, with every large [`Buffer`] and byte string handed to the
//! transport out of band, so bulk bytes move at memory speed whatever serde type holds them.
//!
//! # Errors
//!
//! [`SubmitError`] is an executor refusing work (shut down, broken, bad argument);
//! [`TaskError`] is a task that ran and failed (panicked, cancelled, timed out, worker died).
//! A task's own domain errors are values: return `Result<T, E>` from the task.
#![warn(missing_docs)]
// docs.rs (which passes `--cfg docsrs`) marks feature-gated items such as `ProgressExt`.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod buffer;
pub mod codec;
mod error;
mod map;
mod panic_capture;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "progress")]
mod progress;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use buffer::{attached, attaching, AttachPolicy, Buffer};
pub use cf_futures_core::{
    as_completed, drop_logging_panic, drop_panic_payload, log_guarded, panic_message, wait,
    AsCompleted, CodecStage, ExitCause, Future, InlineTask, InvalidStateError, Promise, ReturnWhen,
    State, TaskError, TimeoutError, WaitResult,
};
pub use error::{BuildError, SubmitError};
pub use map::{Map, MapOptions};
pub use panic_capture::call_catching;
#[doc(hidden)]
pub use panic_capture::{set_fatal_panic_observer, FatalPanicObserver};
#[cfg(feature = "progress")]
pub use progress::{indicatif, ProgressExt, ProgressIter};

/// What a task must be: a plain function of one (serde-able) argument, copyable and shareable.
///
/// Blanket-implemented; name it in bounds instead of spelling out the closure traits.
///
/// # A closure that captures variables
///
/// is refused, because captured values cannot cross a process boundary (Python's "must be
/// picklable"); pass them inside the task's argument (a tuple) instead. The refusal comes in
/// one of two ways, both with the same words, "a task must be a fn item or a closure that
/// captures nothing":
///
/// * a capture that is not `Copy + Send + Sync + 'static` (a `String`, a `Vec`, a reference) is
///   a trait error, reported by `cargo check` and so in an editor;
/// * a capture that is `Copy` (an integer moved in) meets these bounds, and only its size tells
///   it apart: a process pool rejects it when the program is *built* (`cargo build`, `cargo
///   test`), not by `cargo check`, through [`CapturesNothing`]. The thread pool runs such a
///   closure, so code meant for either pool should not rely on that.
///
/// Two cases reach the second way by another road. A closure that *borrows* a local (`|x| x +
/// k`, no `move`) is first a lifetime error, E0373 "closure may outlive the current function",
/// and the compiler suggests `move`: taking that advice makes it a `Copy` capture, refused when
/// built. And a fn *pointer* (`let f: fn(u32) -> u32 = square;`) is `Copy`, but it is a
/// run-time value that no worker can name: it too is refused when built. Pass the fn item
/// itself (`square`), or one task that picks what to do from its argument (an enum).
///
/// On the thread pool, `ThreadPoolExecutor::spawn` takes any `FnOnce` closure.
///
/// # Examples
///
/// ```
/// fn is_task<F: cf_executor_api::Task<(u32, u32), u32>>(_: F) {}
/// fn add((a, b): (u32, u32)) -> u32 { a + b }
/// is_task(add);
/// is_task(|(a, b): (u32, u32)| a * b);
/// ```
///
/// ```compile_fail
/// fn is_task<F: cf_executor_api::Task<u32, usize>>(_: F) {}
/// let name = String::from("cf");
/// is_task(move |x: u32| name.len() + x as usize); // captures a String
/// ```
#[diagnostic::on_unimplemented(
    message = "a task must be a fn item or a closure that captures nothing, `Fn({A}) -> {R}`",
    label = "not a task: captures variables, or does not take `{A}` and return `{R}`",
    note = "captured values cannot cross a process boundary: pass them inside the task's \
            argument (a tuple) instead",
    note = "a task is `Fn({A}) -> {R} + Copy + Send + Sync + 'static`; on the thread pool, \
            `ThreadPoolExecutor::spawn` takes capturing closures"
)]
pub trait Task<A, R>: Fn(A) -> R + Copy + Send + Sync + 'static {}

// `do_not_recommend`: a failed bound is reported as "not a task" with the message above, not
// as the leaf the compiler found inside the closure ("`String: Copy` is not satisfied").
#[diagnostic::do_not_recommend]
impl<F, A, R> Task<A, R> for F where F: Fn(A) -> R + Copy + Send + Sync + 'static {}

/// The build-time half of [`Task`]'s check, for backends that run a task in another process:
/// evaluating `CapturesNothing::<F>::OK` fails the build unless `F` is zero-sized, i.e. a fn
/// item or a closure that captures nothing (only such a task can be named in another process).
///
/// It is a post-monomorphisation check, so `cargo build` reports it and `cargo check` does not.
/// Every path of `cf-pool-proc` that sends a task (`submit`, `submit_batch`, `map` with or
/// without `chunksize`, `submit_with_timeout`) evaluates this one constant, so they all fail
/// with the same message.
///
/// # Examples
///
/// ```
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn send<F: Copy>(_: F) {
///     let () = cf_executor_api::CapturesNothing::<F>::OK;
/// }
/// send(square);
/// send(|x: u64| x + 1);
/// ```
#[derive(Debug)]
pub struct CapturesNothing<F>(std::marker::PhantomData<fn() -> F>);

impl<F> CapturesNothing<F> {
    /// `()`, or a build error saying the task captures variables.
    pub const OK: () = assert!(
        std::mem::size_of::<F>() == 0,
        "a task must be a fn item or a closure that captures nothing; this one is a closure \
         that captures variables, or a fn pointer: captured values cannot cross a process \
         boundary, so pass them inside the task's argument (a tuple) instead; a fn pointer is a \
         run-time value no worker can name, so pass the fn item itself, or one task that picks \
         what to do from its argument (an enum) (on the thread pool, \
         `ThreadPoolExecutor::spawn` takes capturing closures)"
    );
}

/// What crosses to a worker and back: serde in both directions, sendable, owned.
///
/// # Examples
///
/// ```
/// fn is_payload<P: cf_executor_api::Payload>() {}
/// is_payload::<(u64, String, Vec<f64>)>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task's argument or result: it must be serde \
               (`Serialize + Deserialize`), `Send` and `'static`",
    label = "not a payload",
    note = "an error type that is not serde (`std::io::Error`, a library's error) cannot cross \
            to a worker: map it to a `String` (`.map_err(|e| e.to_string())`) or to an error \
            type of your own that derives `Serialize` and `Deserialize`",
    note = "for your own types, `#[derive(Serialize, Deserialize)]` (serde with its `derive` \
            feature); on the thread pool, `ThreadPoolExecutor::spawn` takes any `Send` value"
)]
pub trait Payload: Serialize + DeserializeOwned + Send + 'static {}

// As for `Task`: a failed bound is reported with the message above, not as the leaf inside it.
#[diagnostic::do_not_recommend]
impl<P> Payload for P where P: Serialize + DeserializeOwned + Send + 'static {}

/// An executor: Python's `concurrent.futures.Executor`.
///
/// `Drop` is the `with`-block exit: implementations shut down and wait for their work.
///
/// # Where a task runs
///
/// A process pool's worker is a fresh process (like Python 3.14's default start methods,
/// `forkserver` on Linux and `spawn` on macOS and Windows): it does not see what `main` set up,
/// so a `static` written in `main` has its initial value there. Per-worker state belongs in the
/// pool's `initializer`, or in the task's argument. A thread pool shares the caller's process;
/// code written for any `E: Executor` should not rely on that.
///
/// # Results that are not serde
///
/// A task's result, its error type included, is a [`Payload`] on every backend, because the
/// trait cannot tell them apart: `std::io::Error` and most libraries' errors are not serde, so a
/// task returning `io::Result<T>` does not compile. Map the error in the task, to a `String`
/// (`.map_err(|e| e.to_string())`) or to an error type of your own that derives `Serialize` and
/// `Deserialize` (keeping, say, the `ErrorKind`); or, on the thread pool only, use
/// `ThreadPoolExecutor::spawn`, which takes any `Send + Sync` result.
///
/// # No `dyn Executor`
///
/// The methods are generic (each task is its own monomorphised code), so `Box<dyn Executor>` is
/// not possible; the `concurrent-futures` crate's `Pool` enum holds either pool, chosen at run
/// time, and implements this trait.
///
/// # Examples
///
/// See the [crate documentation](crate) for a backend-generic function.
pub trait Executor: Send + Sync {
    /// Schedules `f(arg)` and returns its future at once; never blocks on a worker.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Shutdown`] after `shutdown`, [`SubmitError::Broken`] when the executor
    /// broke. Failures of the task itself arrive through the future.
    fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync;

    /// Schedules `f` over `args` as one unit (one message for a process pool, one job for a
    /// thread pool); one future per item, each completed on its own.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    fn submit_batch<F, A, R>(&self, f: F, args: Vec<A>) -> Result<Vec<Future<R>>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        args.into_iter().map(|a| self.submit(f, a)).collect()
    }

    /// Schedules `f` over `args` as one task (one message for a process pool) whose result is
    /// the list of per-item outcomes: a panic in one item fails that item only. `map` uses it
    /// for `chunksize > 1` on every executor, as Python's process pool does: the chunk's
    /// results come back together, so a `map` timeout that runs out during a chunk fails the
    /// whole chunk.
    ///
    /// The default submits a closure that captures only `f`; for a fn item or a non-capturing
    /// closure that is still a zero-sized task, so it crosses process boundaries too.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    fn submit_chunk<F, A, R>(
        &self,
        f: F,
        args: Vec<A>,
    ) -> Result<Future<Vec<Result<R, TaskError>>>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        self.submit(
            move |args: Vec<A>| -> Vec<Result<R, TaskError>> {
                args.into_iter().map(|a| call_catching(|| f(a))).collect()
            },
            args,
        )
    }

    /// `f` over `inputs`: a lazy iterator of results in input order.
    ///
    /// Without `buffersize` every input is submitted now; with it, at most `buffersize` chunks
    /// are in flight and `inputs` is pulled as results are consumed, so it may be infinite. The
    /// `timeout` counts from this call. The first failure (or the timeout) is yielded and ends
    /// the iteration; ending early or dropping the iterator cancels the tasks not started.
    ///
    /// # Errors
    ///
    /// [`SubmitError::InvalidArgument`] for `chunksize = 0` or `buffersize = Some(0)`; otherwise
    /// as [`submit`](Self::submit).
    fn map<'a, F, A, R, I>(
        &'a self,
        f: F,
        inputs: I,
        options: MapOptions,
    ) -> Result<Map<'a, R>, SubmitError>
    where
        Self: Sized,
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        options.validate()?;
        let mut inputs = inputs.into_iter();
        let chunksize = options.chunksize;
        let refill = move || -> Result<Option<map::Unit<R>>, SubmitError> {
            if chunksize == 1 {
                return match inputs.next() {
                    Some(arg) => Ok(Some(map::Unit::One(self.submit(f, arg)?))),
                    None => Ok(None),
                };
            }
            let chunk: Vec<A> = inputs.by_ref().take(chunksize).collect();
            if chunk.is_empty() {
                return Ok(None);
            }
            Ok(Some(map::Unit::Chunk(self.submit_chunk(f, chunk)?)))
        };
        Map::new(options, Box::new(refill))
    }

    /// Stops taking work. With `wait`, blocks until every submitted task is done and the
    /// workers have exited; with `cancel_futures`, cancels every task not yet started first.
    /// Idempotent.
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// How many workers the executor may run at once.
    fn max_workers(&self) -> usize;
}

/// The number of CPUs this process may use: the default `max_workers` of a process pool.
///
/// Unlike Python's `os.cpu_count()` it honours CPU affinity and cgroup quotas (as Python 3.13's
/// `os.process_cpu_count()` does), since that is what a pool can actually use. Never 0.
///
/// # Examples
///
/// ```
/// assert!(cf_executor_api::cpu_count() >= 1);
/// ```
#[must_use]
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
