//! The conformance suite: what every executor must do, whatever runs its tasks, written once,
//! generic over `E: Executor`, run by every backend's own tests.
//!
//! Ported from CPython's `Lib/test/test_concurrent_futures/` (3.13, plus 3.14's `buffersize`
//! tests): `executor.py` (`ExecutorTest`), `test_thread_pool.py`, `test_process_pool.py`,
//! `test_shutdown.py`, `test_init.py`. Each scenario's docs name the test it comes from.
//!
//! # What it checks
//!
//! The behaviour Python's tests assert for every executor, one scenario (one public function
//! here, one `#[test]` in a backend's suite) each:
//!
//! * **Submitting**: a submitted call's future gives its result ([`submit_pow`]); the executor
//!   reports its `max_workers` ([`max_workers_reported`]); a function generic over
//!   `E: Executor` runs on it ([`generic_function`]).
//! * **`map`**: results equal a sequential map and keep input order, with or without
//!   `chunksize` ([`map_matches_sequential`], [`map_empty_input`]); the first failing item is
//!   yielded after the items before it and ends the iteration ([`map_failing_item_ends_iteration`]);
//!   a timeout yields what finished, then `Timeout`, and cancels what has not started
//!   ([`map_timeout_cancels_the_rest`]); dropping the iterator cancels the unstarted
//!   ([`map_drop_cancels_unstarted`]); without `buffersize` every input is submitted at once
//!   ([`map_without_buffersize_submits_everything`]); with it, output stays ordered, an infinite
//!   input works, and exactly `buffersize` inputs are taken ahead ([`map_buffersize_ordered`],
//!   [`map_buffersize_infinite_input`], [`map_buffersize_bounds_lookahead`]), and an input that
//!   panics ends the map, cancelling what is in flight ([`map_input_panic_ends_the_map`]);
//!   `chunksize = 0`
//!   and `buffersize = 0` are refused before anything runs ([`map_invalid_arguments`]);
//!   batched items complete one by one, a failing item failing only itself
//!   ([`submit_batch_items_complete_individually`]).
//! * **Shutdown**: `submit` after `shutdown` is refused and `shutdown` is idempotent
//!   ([`submit_after_shutdown`]); `shutdown(wait)` leaves every result available
//!   ([`shutdown_wait_completes_all`]); `cancel_futures` cancels exactly the unstarted
//!   ([`shutdown_cancel_futures`]); a task cancelled right after submit does not hang shutdown
//!   ([`cancelled_submit_then_shutdown_returns`]); dropping the executor (Python's `with` exit)
//!   waits for the work ([`drop_waits_for_work`]); `shutdown(wait = false)` returns at once and
//!   the work still completes ([`shutdown_no_wait_returns_at_once`]).
//! * **Workers**: 60 blocked tasks on a pool of 4 start exactly 4 workers ([`saturation`]); tasks
//!   submitted and awaited one after another run on one worker ([`idle_worker_reuse`]).
//! * **Initializers**: tasks see what the initializer set ([`initializer_state_visible`]); a
//!   failing one breaks the executor, failing pending futures and later submits with its
//!   reason ([`failing_initializer_breaks_executor`]).
//! * **Failures**: a panicking task fails its own future with `Panicked` and its message, and
//!   the worker lives on ([`panic_becomes_panicked`]); its location and backtrace are those of
//!   the panic that failed it, never of one a task caught itself ([`panic_after_caught_panic`]);
//!   an async waker that panics when its future completes is contained, the done-callbacks
//!   still run and the executor goes on ([`panicking_waker_is_contained`]).
//! * **Bulk bytes** (not in Python; pickle protocol 5's out-of-band buffers are the nearest):
//!   [`Buffer`] payloads of every size arrive intact both ways ([`buffers_round_trip`]), and so
//!   do byte strings as serde writes them (`serde_bytes`), which a process pool also sends out
//!   of band ([`byte_strings_round_trip`]).
//!
//! Every task here is a fn item with a serde-able argument and result, so the same scenario runs
//! on a process pool. Tests and tasks synchronise through files in a per-test temporary
//! directory (a *gate*), which works across processes; a task waiting on a gate gives up
//! (panics) after 60 s, and every wait in the test itself is bounded, so a bug fails instead of
//! hanging. No scenario asserts a duration.
//!
//! Enable the `conformance` feature as a dev-dependency and invoke
//! [`conformance_tests!`](crate::conformance_tests) with a function building the backend from a
//! [`Config`]:
//!
//! ```no_run
//! // pool-xyz/tests/conformance.rs
//! # mod backend {
//! # use cf_executor_api::*;
//! # #[derive(Debug)] pub struct MyExecutor;
//! # impl Executor for MyExecutor {
//! #     fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>, SubmitError>
//! #     where F: Task<A, R>, A: Payload, R: Payload + Sync {
//! #         let p = Promise::new();
//! #         let _ = p.set_outcome(call_catching(|| f(arg)));
//! #         Ok(p.future())
//! #     }
//! #     fn shutdown(&self, _: bool, _: bool) {}
//! #     fn max_workers(&self) -> usize { 1 }
//! # }
//! # impl MyExecutor {
//! #     pub fn new(_: usize, _: Option<fn() -> Result<(), String>>) -> Self { MyExecutor }
//! # }
//! # }
//! # use backend::MyExecutor;
//! cf_executor_api::conformance_tests!(make);
//!
//! fn make(config: cf_executor_api::conformance::Config) -> MyExecutor {
//!     MyExecutor::new(config.max_workers, config.initializer)
//! }
//! # fn main() {}
//! ```

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{as_completed, wait, Buffer, Executor, MapOptions, ReturnWhen, SubmitError, TaskError};

/// How long any single wait in a scenario may take before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(30);
/// How long a gated task waits for its release before it panics; longer than [`LIMIT`] so the
/// test's own timeout reports the problem first.
const GATE_LIMIT: Duration = Duration::from_secs(60);
/// The `map` timeout of `map_timeout`: the fast items must finish within it (CPython uses 5 s).
const MAP_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(1);

/// What a scenario asks the backend for.
///
/// # Examples
///
/// ```
/// let c = cf_executor_api::conformance::Config::new(4);
/// assert_eq!((c.max_workers, c.initializer.is_none()), (4, true));
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Config {
    /// The pool's `max_workers`; always at least 1.
    pub max_workers: usize,
    /// Run once in every worker before its first task.
    pub initializer: Option<fn() -> Result<(), String>>,
}

impl Config {
    /// `max_workers` workers, no initializer.
    #[must_use]
    pub fn new(max_workers: usize) -> Self {
        Config {
            max_workers,
            initializer: None,
        }
    }

    fn with_initializer(mut self, initializer: fn() -> Result<(), String>) -> Self {
        self.initializer = Some(initializer);
        self
    }
}

/// Expands to one `#[test]` per conformance scenario, each building its executor with `$make`,
/// a `fn(Config) -> E` where `E: Executor + 'static`.
///
/// See the [module documentation](crate::conformance) for an example.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            submit_pow,
            max_workers_reported,
            map_matches_sequential,
            map_failing_item_ends_iteration,
            map_timeout_cancels_the_rest,
            map_buffersize_ordered,
            map_buffersize_infinite_input,
            map_buffersize_bounds_lookahead,
            map_input_panic_ends_the_map,
            map_invalid_arguments,
            map_empty_input,
            map_without_buffersize_submits_everything,
            map_drop_cancels_unstarted,
            submit_batch_items_complete_individually,
            submit_after_shutdown,
            shutdown_wait_completes_all,
            shutdown_cancel_futures,
            cancelled_submit_then_shutdown_returns,
            drop_waits_for_work,
            shutdown_no_wait_returns_at_once,
            saturation,
            idle_worker_reuse,
            initializer_state_visible,
            failing_initializer_breaks_executor,
            panic_becomes_panicked,
            panic_after_caught_panic,
            panicking_waker_is_contained,
            generic_function,
            buffers_round_trip,
            byte_strings_round_trip,
            quick_tasks_do_not_wait_behind_a_long_one,
            dependent_tasks_do_not_deadlock,
        );
    };
    (@each $make:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[test]
            fn $scenario() {
                $crate::conformance::$scenario($make);
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Tasks: fn items with serde-able arguments and results, so a process pool can run them.

fn pow((base, exp): (u64, u32)) -> u64 {
    base.pow(exp)
}

fn square(x: i64) -> i64 {
    x * x
}

/// Panics with "attempt to divide by zero" for `b == 0`: CPython's `divmod(1, 0)`.
fn divide((a, b): (i64, i64)) -> i64 {
    a / b
}

fn panic_with(message: String) -> u32 {
    panic!("{message}")
}

/// Which worker ran this: the process and the thread.
fn worker_identity(_: ()) -> String {
    format!("{}:{:?}", std::process::id(), thread::current().id())
}

/// Leaves marker `started-{i}` in `dir` and returns `i` at once.
fn mark((dir, i): (String, u32)) -> u32 {
    let _ = fs::write(Path::new(&dir).join(format!("started-{i}")), b"");
    i
}

/// Leaves marker `started-{i}`, waits for the gate's release, returns the worker's identity.
fn gated((dir, i): (String, u32)) -> String {
    mark((dir.clone(), i));
    let dir = Path::new(&dir);
    let release = dir.join(RELEASE);
    let start = Instant::now();
    // A removed directory also releases: the gate is gone, nothing will ever release it.
    while !release.exists() && dir.exists() {
        assert!(
            start.elapsed() < GATE_LIMIT,
            "conformance task {i} was not released within {GATE_LIMIT:?} ({}); the scenario \
             must release its gate",
            dir.display()
        );
        thread::sleep(POLL);
    }
    worker_identity(())
}

/// `gated` when `gate` is true, otherwise returns at once; for `map` over mixed inputs.
fn gated_if((dir, i, gate): (String, u32, bool)) -> String {
    if gate {
        gated((dir, i))
    } else {
        worker_identity(())
    }
}

/// Leaves marker `started-{i}`; then, given `Some(j)`, waits until task `j` has left its
/// marker (giving up, with a panic, after [`GATE_LIMIT`]). For tasks that depend on each other.
fn mark_then_await((dir, i, awaited): (String, u32, Option<u32>)) -> u32 {
    mark((dir.clone(), i));
    if let Some(j) = awaited {
        let marker = Path::new(&dir).join(format!("started-{j}"));
        let start = Instant::now();
        while !marker.exists() && Path::new(&dir).exists() {
            assert!(
                start.elapsed() < GATE_LIMIT,
                "conformance task {i} waited {GATE_LIMIT:?} for task {j}, which never started"
            );
            thread::sleep(POLL);
        }
    }
    i
}

static INIT_STATE: AtomicU64 = AtomicU64::new(0);
const INIT_MAGIC: u64 = 0x00C0_FFEE;
const INIT_FAILURE: &str = "conformance initializer refused to start";

fn init_set_state() -> Result<(), String> {
    INIT_STATE.store(INIT_MAGIC, Ordering::SeqCst);
    Ok(())
}

fn read_init_state(_: ()) -> u64 {
    INIT_STATE.load(Ordering::SeqCst)
}

fn init_fails() -> Result<(), String> {
    Err(INIT_FAILURE.into())
}

// ---------------------------------------------------------------------------------------------
// Test-side helpers.

const RELEASE: &str = "release";

/// A per-test directory through which the test holds gated tasks and counts started ones.
///
/// Dropping it releases every task and removes the directory, so a failing assertion never
/// leaves tasks blocked (and the executor's `Drop` never hangs).
#[derive(Debug)]
struct Gate {
    dir: PathBuf,
}

impl Gate {
    fn new(scenario: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "cf-conformance-{scenario}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create the scenario's temporary directory");
        Gate { dir }
    }

    fn path(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    fn arg(&self, i: u32) -> (String, u32) {
        (self.path(), i)
    }

    fn release(&self) {
        fs::write(self.dir.join(RELEASE), b"").expect("write the release file");
    }

    fn is_started(&self, i: u32) -> bool {
        self.dir.join(format!("started-{i}")).exists()
    }

    fn started(&self) -> usize {
        fs::read_dir(&self.dir).map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("started-"))
                .count()
        })
    }

    /// Waits until at least `n` tasks have started.
    fn wait_started(&self, n: usize) {
        let start = Instant::now();
        while self.started() < n {
            assert!(
                start.elapsed() < LIMIT,
                "only {} of {n} tasks started within {LIMIT:?}",
                self.started()
            );
            thread::sleep(POLL);
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join(RELEASE), b"");
        // A task may write a marker while we remove: retry a little.
        for _ in 0..100 {
            if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(POLL);
        }
    }
}

/// Runs `f` on a helper thread and fails the test if it does not return within [`LIMIT`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not return within {LIMIT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

fn limited() -> MapOptions {
    MapOptions::new().timeout(LIMIT)
}

fn assert_broken_by_initializer(reason: &str) {
    assert!(
        reason.contains(INIT_FAILURE),
        "the Broken reason should name the initializer's error {INIT_FAILURE:?}, got {reason:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios: submit and map.

/// `submit(pow, (2, 8))` is 256. (`executor.py`: `test_submit`, `test_submit_keyword`.)
pub fn submit_pow<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    let f = ex.submit(pow, (2, 8)).expect("submit");
    assert_eq!(f.result_timeout(LIMIT), Ok(&256));
    let g = ex.submit(pow, (3, 4)).expect("submit");
    assert_eq!(g.result_timeout(LIMIT), Ok(&81));
}

/// `max_workers()` reports the configured number.
pub fn max_workers_reported<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    assert_eq!(make(Config::new(3)).max_workers(), 3);
    assert_eq!(make(Config::new(1)).max_workers(), 1);
}

/// `map` equals a sequential map, also with `chunksize = 3`. (`executor.py`: `test_map`.)
pub fn map_matches_sequential<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(4));
    let inputs: Vec<(u64, u32)> = (0..10).map(|i| (i, i as u32)).collect();
    let expected: Vec<u64> = inputs.iter().copied().map(pow).collect();
    let squares: Vec<i64> = (-50..50).map(square).collect();
    for chunksize in [1, 3] {
        let got: Result<Vec<u64>, _> = ex
            .map(pow, inputs.clone(), limited().chunksize(chunksize))
            .expect("map")
            .collect();
        assert_eq!(got, Ok(expected.clone()), "chunksize {chunksize}");
        let got: Result<Vec<i64>, _> = ex
            .map(square, -50..50, limited().chunksize(chunksize))
            .expect("map")
            .collect();
        assert_eq!(got, Ok(squares.clone()), "chunksize {chunksize}");
    }
}

/// A failing item: the items before it, then its error, then the end. (`executor.py`:
/// `test_map_exception`.)
pub fn map_failing_item_ends_iteration<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    let is_divide_panic = |item: Option<Result<i64, TaskError>>| {
        matches!(item, Some(Err(TaskError::Panicked { ref message, .. }))
            if message.contains("divide by zero"))
    };

    let mut it = ex
        .map(divide, [(1, 2), (1, 3), (1, 0), (1, 5)], limited())
        .expect("map");
    assert_eq!(it.next(), Some(Ok(0)));
    assert_eq!(it.next(), Some(Ok(0)));
    assert!(is_divide_panic(it.next()));
    assert_eq!(it.next(), None);

    // The failing item in the middle of a chunk: the chunk's earlier items still arrive.
    let inputs = [(10, 1), (10, 2), (10, 5), (10, 10), (1, 0), (1, 1), (2, 1)];
    let mut it = ex.map(divide, inputs, limited().chunksize(3)).expect("map");
    for expected in [10, 5, 2, 1] {
        assert_eq!(it.next(), Some(Ok(expected)));
    }
    assert!(is_divide_panic(it.next()));
    assert_eq!(it.next(), None);
}

/// `map` with a timeout yields what finished in time, then `Timeout`, and the futures not
/// started are cancelled. (`executor.py`: `test_map_timeout`.)
pub fn map_timeout_cancels_the_rest<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    let gate = Gate::new("map_timeout");
    const GATED: u32 = 20;
    let inputs = (0..2 + GATED).map(|i| (gate.path(), i, i >= 2));
    let mut it = ex
        .map(gated_if, inputs, MapOptions::new().timeout(MAP_TIMEOUT))
        .expect("map");
    let t0 = std::time::Instant::now();
    let a = it.next();
    assert!(
        matches!(a, Some(Ok(_))),
        "first fast item: {a:?} after {:?}",
        t0.elapsed()
    );
    let b = it.next();
    assert!(
        matches!(b, Some(Ok(_))),
        "second fast item: {b:?} after {:?}",
        t0.elapsed()
    );
    match it.next() {
        Some(Err(TaskError::Timeout { after, .. })) => assert_eq!(after, MAP_TIMEOUT),
        other => panic!("expected the map timeout, got {other:?}"),
    }
    assert!(it.next().is_none(), "the iteration ends after the timeout");
    drop(it);

    gate.release();
    let ex = Arc::new(ex);
    let waiter = Arc::clone(&ex);
    bounded("shutdown(wait) after a map timeout", move || {
        waiter.shutdown(true, false);
    });
    // Only the tasks already running (plus what a process pool may have sent ahead to its
    // workers) ran; a map that did not cancel would have run all of them.
    let started = gate.started();
    assert!(
        started <= GATED as usize / 2,
        "{started} of {GATED} gated tasks ran after the map timed out; the rest should have \
         been cancelled"
    );
}

/// `buffersize` 1, 2, 4, 8 keep the output ordered, also with `chunksize`. (3.14
/// `executor.py`: `test_map_buffersize_on_multiple_iterables` and friends.)
pub fn map_buffersize_ordered<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(4));
    let expected: Vec<i64> = (0..40).map(square).collect();
    for buffersize in [1, 2, 4, 8] {
        for chunksize in [1, 3] {
            let got: Result<Vec<i64>, _> = ex
                .map(
                    square,
                    0..40,
                    limited().buffersize(buffersize).chunksize(chunksize),
                )
                .expect("map")
                .collect();
            assert_eq!(
                got,
                Ok(expected.clone()),
                "buffersize {buffersize}, chunksize {chunksize}"
            );
        }
    }
}

/// With `buffersize`, `map` works on an infinite iterator. (3.14 `executor.py`:
/// `test_map_buffersize_on_infinite_iterable`.)
pub fn map_buffersize_infinite_input<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(4));
    let expected: Vec<i64> = (0..20).map(square).collect();
    for buffersize in [1, 2, 4, 8] {
        let got: Result<Vec<i64>, _> = ex
            .map(square, 0.., limited().buffersize(buffersize))
            .expect("map")
            .take(20)
            .collect();
        assert_eq!(got, Ok(expected.clone()), "buffersize {buffersize}");
    }
}

/// An input iterator that panics while the map takes more of it ends the map: the panic
/// reaches the caller, what is in flight is cancelled, and the map yields nothing after.
/// (3.14 `executor.py`: the `buffersize` generator, which takes the next input before it
/// yields each result and ends when the input raises.)
pub fn map_input_panic_ends_the_map<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    let inputs = (0..).inspect(|&i: &i64| assert!(i != 5, "the input fails at 5"));
    let mut it = ex
        .map(square, inputs, limited().buffersize(2))
        .expect("map");
    let mut got = Vec::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for r in it.by_ref() {
            got.push(r);
        }
    }));
    let payload = caught.expect_err("the input's panic reaches the caller");
    assert_eq!(
        crate::panic_message(payload.as_ref()),
        "the input fails at 5"
    );
    // Each result is yielded after the next input is taken: the fourth never is.
    assert_eq!(got, [Ok(0), Ok(1), Ok(4)]);
    assert_eq!(it.next(), None, "the map ended");
    assert_eq!(it.next(), None, "the map stays ended");
}

/// The call consumes exactly `buffersize` inputs (chunks) before the first `next()`, and one
/// more per result. (3.14 `executor.py`: `test_map_buffersize_when_buffer_is_full`.)
pub fn map_buffersize_bounds_lookahead<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(4));
    for buffersize in [1, 2, 4, 8] {
        let consumed = AtomicUsize::new(0);
        let inputs = (0..).inspect(|_| {
            consumed.fetch_add(1, Ordering::SeqCst);
        });
        let mut it = ex
            .map(square, inputs, limited().buffersize(buffersize))
            .expect("map");
        assert_eq!(consumed.load(Ordering::SeqCst), buffersize, "before next()");
        assert_eq!(it.next(), Some(Ok(0)));
        assert_eq!(
            consumed.load(Ordering::SeqCst),
            buffersize + 1,
            "after one next()"
        );
        drop(it);

        let consumed = AtomicUsize::new(0);
        let inputs = (0..).inspect(|_| {
            consumed.fetch_add(1, Ordering::SeqCst);
        });
        let it = ex
            .map(
                square,
                inputs,
                limited().buffersize(buffersize).chunksize(3),
            )
            .expect("map");
        assert_eq!(
            consumed.load(Ordering::SeqCst),
            3 * buffersize,
            "chunksize 3"
        );
        drop(it);
    }
}

/// `buffersize = 0` and `chunksize = 0` are refused before anything is submitted. (3.14
/// `executor.py`: `test_map_buffersize_value_validation`; `test_process_pool.py`:
/// `test_map_chunksize` for the chunksize check.)
pub fn map_invalid_arguments<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    let gate = Gate::new("map_invalid");
    let args = || (0..4).map(|i| gate.arg(i));
    match ex.map(mark, args(), MapOptions::new().buffersize(0)) {
        Err(SubmitError::InvalidArgument { name, .. }) => assert_eq!(name, "buffersize"),
        other => panic!("buffersize 0: expected InvalidArgument, got {other:?}"),
    }
    match ex.map(mark, args(), MapOptions::new().chunksize(0)) {
        Err(SubmitError::InvalidArgument { name, .. }) => assert_eq!(name, "chunksize"),
        other => panic!("chunksize 0: expected InvalidArgument, got {other:?}"),
    }
    let ex = Arc::new(ex);
    let waiter = Arc::clone(&ex);
    bounded("shutdown(wait)", move || waiter.shutdown(true, false));
    assert_eq!(gate.started(), 0, "a refused map must not submit anything");
}

/// `map` over an empty input finishes at once. (`executor.py`: `test_map` on `[]`.)
pub fn map_empty_input<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    for options in [
        limited(),
        limited().chunksize(3),
        limited().buffersize(2),
        limited().buffersize(2).chunksize(3),
    ] {
        let mut it = ex.map(square, Vec::new(), options).expect("map");
        assert_eq!(it.next(), None, "{options:?}");
        assert_eq!(it.next(), None, "{options:?}");
    }
}

/// Without `buffersize`, `map` submits every input even if the iterator is never advanced.
/// (3.14 `executor.py`: the eager half of the `buffersize` tests.)
pub fn map_without_buffersize_submits_everything<E: Executor + 'static>(
    make: impl Fn(Config) -> E,
) {
    let ex = make(Config::new(2));
    let gate = Gate::new("map_eager");
    let it = ex
        .map(mark, (0..10).map(|i| gate.arg(i)), limited())
        .expect("map");
    gate.wait_started(10);
    drop(it);
}

/// Dropping a `map` iterator cancels the tasks not yet started. (`executor.py`:
/// `test_map_timeout`'s cancellation, and the generator's `close()` in 3.14.)
pub fn map_drop_cancels_unstarted<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(1));
    let gate = Gate::new("map_drop");
    const TASKS: u32 = 20;
    let it = ex
        .map(gated, (0..TASKS).map(|i| gate.arg(i)), limited())
        .expect("map");
    gate.wait_started(1);
    drop(it);
    gate.release();
    let ex = Arc::new(ex);
    let waiter = Arc::clone(&ex);
    bounded("shutdown(wait)", move || waiter.shutdown(true, false));
    let started = gate.started();
    assert!(
        started <= TASKS as usize / 2,
        "{started} of {TASKS} tasks ran after their map iterator was dropped"
    );
}

/// `submit_batch`: one future per item, in order, each with its own outcome; a panicking
/// item fails only itself. (What `map(chunksize)` is built on.)
pub fn submit_batch_items_complete_individually<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    let futures = ex
        .submit_batch(divide, vec![(4, 2), (1, 0), (9, 3)])
        .expect("submit_batch");
    assert_eq!(futures.len(), 3);
    assert_eq!(futures[0].result_timeout(LIMIT), Ok(&2));
    assert!(matches!(
        futures[1].result_timeout(LIMIT),
        Err(TaskError::Panicked { .. })
    ));
    assert_eq!(futures[2].result_timeout(LIMIT), Ok(&3));
    assert!(ex
        .submit_batch(square, Vec::new())
        .expect("empty batch")
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Scenarios: shutdown and drop.

/// `shutdown` then `submit` (or `map`) is refused with `Shutdown`; `shutdown` is idempotent.
/// (`executor.py`: `test_run_after_shutdown`; `test_shutdown.py`: repeated shutdowns.)
pub fn submit_after_shutdown<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    assert_eq!(
        ex.submit(square, 3).expect("submit").result_timeout(LIMIT),
        Ok(&9)
    );
    ex.shutdown(true, false);
    assert_eq!(ex.submit(square, 3).unwrap_err(), SubmitError::Shutdown);
    assert_eq!(
        ex.map(square, 0..3, MapOptions::new()).unwrap_err(),
        SubmitError::Shutdown
    );
    assert_eq!(
        ex.map(square, 0..3, MapOptions::new().buffersize(2))
            .unwrap_err(),
        SubmitError::Shutdown
    );
    ex.shutdown(true, false);
    ex.shutdown(false, true);
    ex.shutdown(true, true);
    assert_eq!(ex.submit(square, 3).unwrap_err(), SubmitError::Shutdown);
}

/// 50 tasks then `shutdown(wait)`: every result is available. (`test_shutdown.py`:
/// `test_hang_issue12364`.)
pub fn shutdown_wait_completes_all<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = Arc::new(make(Config::new(4)));
    let futures: Vec<_> = (0..50)
        .map(|i| ex.submit(square, i).expect("submit"))
        .collect();
    let waiter = Arc::clone(&ex);
    bounded("shutdown(wait) with 50 queued tasks", move || {
        waiter.shutdown(true, false);
    });
    for (i, f) in (0..).zip(&futures) {
        assert_eq!(
            f.try_result(),
            Some(Ok(&(i * i))),
            "task {i} after shutdown(wait)"
        );
    }
}

/// 50 blocked tasks then `shutdown(cancel_futures)`: the unstarted are cancelled, the rest
/// complete. (`test_shutdown.py`: `test_cancel_futures`.)
pub fn shutdown_cancel_futures<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = Arc::new(make(Config::new(4)));
    let gate = Gate::new("cancel_futures");
    let futures: Vec<_> = (0..50)
        .map(|i| ex.submit(gated, gate.arg(i)).expect("submit"))
        .collect();
    gate.wait_started(4);
    ex.shutdown(false, true);
    let cancelled = futures.iter().filter(|f| f.cancelled()).count();
    assert!(
        cancelled > 20,
        "only {cancelled} of 50 blocked tasks were cancelled"
    );
    for (i, f) in (0..).zip(&futures) {
        if gate.is_started(i) {
            assert!(!f.cancelled(), "task {i} started, yet it is cancelled");
        }
    }
    gate.release();
    let waiter = Arc::clone(&ex);
    bounded("shutdown(wait) after cancel_futures", move || {
        waiter.shutdown(true, false);
    });
    for f in futures.iter().filter(|f| !f.cancelled()) {
        assert!(
            f.done(),
            "a future neither cancelled nor done: {:?}",
            f.state()
        );
        assert!(matches!(f.try_result(), Some(Ok(_))), "{f:?}");
    }
    assert!(
        futures.iter().filter(|f| !f.cancelled()).count() >= 4,
        "the running tasks complete"
    );
}

/// A submitted task cancelled right away, then `shutdown(wait)`: returns promptly.
/// (`test_shutdown.py`: `test_hang_gh94440`.)
pub fn cancelled_submit_then_shutdown_returns<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = Arc::new(make(Config::new(1)));
    ex.submit(worker_identity, ())
        .expect("submit")
        .result_timeout(LIMIT)
        .expect("first task");
    let f = ex.submit(square, 3).expect("submit");
    f.cancel();
    let waiter = Arc::clone(&ex);
    bounded("shutdown(wait) after a cancel", move || {
        waiter.shutdown(true, false);
    });
    assert!(f.done(), "{:?}", f.state());
}

/// Dropping the executor (the `with` exit) waits for all submitted work. (`executor.py`:
/// `test_context_manager_shutdown`; `test_shutdown.py`: `test_del_shutdown`.)
pub fn drop_waits_for_work<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(4));
    let gate = Gate::new("drop_waits");
    let blocked: Vec<_> = (0..8)
        .map(|i| ex.submit(gated, gate.arg(i)).expect("submit"))
        .collect();
    let quick: Vec<_> = (0..50)
        .map(|i| ex.submit(square, i).expect("submit"))
        .collect();
    let (tx, rx) = mpsc::channel();
    let observed = (blocked.clone(), quick.clone());
    thread::spawn(move || {
        drop(ex);
        let (blocked, quick) = observed;
        let all_done = blocked.iter().all(|f| f.done()) && quick.iter().all(|f| f.done());
        let _ = tx.send(all_done);
    });
    // Release only once the drop is (very likely) blocked: a drop that does not wait returns
    // before the release and sees unfinished futures.
    thread::sleep(Duration::from_millis(20));
    gate.release();
    match rx.recv_timeout(LIMIT) {
        Ok(all_done) => assert!(all_done, "drop returned before the submitted work finished"),
        Err(e) => panic!("dropping the executor did not return within {LIMIT:?}: {e}"),
    }
    for f in &blocked {
        assert!(matches!(f.try_result(), Some(Ok(_))), "{f:?}");
    }
}

/// `shutdown(wait = false)` returns at once; the work still completes. (`test_shutdown.py`:
/// `test_shutdown_no_wait`.)
pub fn shutdown_no_wait_returns_at_once<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = Arc::new(make(Config::new(2)));
    let gate = Gate::new("no_wait");
    let futures: Vec<_> = (0..6)
        .map(|i| ex.submit(gated, gate.arg(i)).expect("submit"))
        .collect();
    // The tasks are blocked until the release below: a shutdown that waited would hang here.
    let waiter = Arc::clone(&ex);
    bounded("shutdown(wait = false) with blocked tasks", move || {
        waiter.shutdown(false, false);
    });
    assert_eq!(ex.submit(square, 2).unwrap_err(), SubmitError::Shutdown);
    gate.release();
    for f in &futures {
        assert!(f.result_timeout(LIMIT).is_ok(), "{f:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios: workers.

/// 60 blocked tasks on a pool of 4 start exactly 4 workers. (`test_thread_pool.py`,
/// `test_process_pool.py`: `test_saturation`.)
pub fn saturation<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(4));
    assert_eq!(ex.max_workers(), 4);
    let gate = Gate::new("saturation");
    let futures: Vec<_> = (0..60)
        .map(|i| ex.submit(gated, gate.arg(i)).expect("submit"))
        .collect();
    gate.wait_started(4);
    let running = gate.started();
    assert!(running <= 4, "{running} tasks run at once on 4 workers");
    gate.release();
    let workers: HashSet<String> = futures
        .iter()
        .map(|f| f.result_timeout(LIMIT).expect("gated task").clone())
        .collect();
    assert_eq!(workers.len(), 4, "distinct workers: {workers:?}");
}

/// Tasks submitted one after another, each awaited, run on one worker. (`test_thread_pool.py`:
/// `test_idle_thread_reuse`; `test_process_pool.py`: `test_idle_process_reuse_one`,
/// `test_idle_process_reuse_multiple`.)
pub fn idle_worker_reuse<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(4));
    let workers: HashSet<String> = (0..3)
        .map(|_| {
            ex.submit(worker_identity, ())
                .expect("submit")
                .result_timeout(LIMIT)
                .expect("task")
                .clone()
        })
        .collect();
    assert_eq!(workers.len(), 1, "distinct workers: {workers:?}");

    let ex = make(Config::new(4));
    let mut futures = Vec::new();
    for waited in [true, false, true, false, true, false] {
        let f = ex.submit(worker_identity, ()).expect("submit");
        if waited {
            f.result_timeout(LIMIT).expect("task");
        }
        futures.push(f);
    }
    let workers: HashSet<String> = futures
        .iter()
        .map(|f| f.result_timeout(LIMIT).expect("task").clone())
        .collect();
    assert!(workers.len() <= 3, "distinct workers: {workers:?}");
}

/// Tasks see the state the initializer set. (`test_init.py`: `InitializerMixin.test_initializer`.)
pub fn initializer_state_visible<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2).with_initializer(init_set_state));
    let futures: Vec<_> = (0..6)
        .map(|_| ex.submit(read_init_state, ()).expect("submit"))
        .collect();
    for f in &futures {
        assert_eq!(f.result_timeout(LIMIT), Ok(&INIT_MAGIC));
    }
}

/// A failing initializer breaks the executor: pending futures fail with `Broken` naming the
/// initializer's error, and later submits are refused the same way. (`test_init.py`:
/// `FailingInitializerMixin.test_initializer`.)
pub fn failing_initializer_breaks_executor<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2).with_initializer(init_fails));
    let check_future = |f: &crate::Future<i64>| match f.result_timeout(LIMIT) {
        Err(TaskError::Broken { reason }) => assert_broken_by_initializer(&reason),
        other => panic!("expected Broken, got {other:?}"),
    };
    for i in 0..5 {
        match ex.submit(square, i) {
            Ok(f) => check_future(&f),
            // A backend that starts its workers eagerly may be broken already.
            Err(SubmitError::Broken { reason }) => assert_broken_by_initializer(&reason),
            Err(other) => panic!("expected Broken, got {other:?}"),
        }
    }
    // At some point the executor is broken, and from then on submit says so.
    let start = Instant::now();
    let reason = loop {
        match ex.submit(square, 1) {
            Err(SubmitError::Broken { reason }) => break reason,
            Ok(f) => check_future(&f),
            Err(other) => panic!("expected Broken, got {other:?}"),
        }
        assert!(
            start.elapsed() < LIMIT,
            "the executor did not break within {LIMIT:?}"
        );
        thread::sleep(POLL);
    };
    assert_broken_by_initializer(&reason);
    assert!(matches!(
        ex.submit(square, 1),
        Err(SubmitError::Broken { .. })
    ));
}

/// A panicking task fails its own future with `Panicked` and the message; the worker lives on.
/// (`executor.py`: exceptions through `result()`.)
pub fn panic_becomes_panicked<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(1));
    let before = ex.submit(worker_identity, ()).expect("submit");
    let before = before.result_timeout(LIMIT).expect("task").clone();
    let f = ex
        .submit(panic_with, "conformance panic 42".to_owned())
        .expect("submit");
    match f.result_timeout(LIMIT) {
        Err(TaskError::Panicked { message, .. }) => assert_eq!(message, "conformance panic 42"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert!(matches!(f.exception(), Some(TaskError::Panicked { .. })));
    let after = ex.submit(worker_identity, ()).expect("submit");
    assert_eq!(
        after.result_timeout(LIMIT),
        Ok(&before),
        "the worker survives a panicking task"
    );
}

/// What [`panic_after_caught_panic`] does, by number (a task's argument must cross processes).
fn panic_after_caught_panic_task(case: u8) -> u32 {
    use std::panic::{catch_unwind, resume_unwind};
    let caught = catch_unwind(|| -> u32 { panic!("caught inside the task, case {case}") });
    match case {
        // Caught its own panic and returns normally.
        0 => 0,
        // Fails through `resume_unwind` with a new payload, which never met the panic hook.
        1 => resume_unwind(Box::new(format!("resumed, case {case}"))),
        // Re-raises the payload it caught: it keeps where it was raised.
        2 => resume_unwind(caught.expect_err("the inner panic was caught")),
        // Panics anew after the caught one: the new panic's own place.
        _ => panic!("raised after a caught panic at line {}", line!()),
    }
}

/// Not in CPython, whose tracebacks belong to their exception: a task's reported location and
/// backtrace are those of the panic that failed it. A panic the task caught itself never shows
/// up later, neither when the task then fails through `resume_unwind` with another payload nor
/// in the next task on the same worker; a re-raised payload keeps its original place.
pub fn panic_after_caught_panic<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(1));
    let outcome = |case: u8| {
        ex.submit(panic_after_caught_panic_task, case)
            .expect("submit")
            .result_timeout(LIMIT)
            .cloned()
    };
    let this_file = file!();
    for round in 0..2 {
        // First (round 1: again right after a task that caught a panic and succeeded).
        assert_eq!(outcome(0), Ok(0), "round {round}");
        match outcome(1) {
            Err(TaskError::Panicked {
                message,
                location,
                backtrace,
            }) => {
                assert_eq!(message, "resumed, case 1");
                assert_eq!(location, None, "a stale location for resume_unwind");
                assert_eq!(backtrace, None, "a stale backtrace for resume_unwind");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        match outcome(2) {
            Err(TaskError::Panicked {
                message, location, ..
            }) => {
                assert_eq!(message, "caught inside the task, case 2");
                let location = location.expect("a re-raised payload keeps its location");
                assert!(location.starts_with(this_file), "{location}");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        match outcome(3) {
            Err(TaskError::Panicked {
                message,
                location,
                backtrace,
            }) => {
                let line = message
                    .strip_prefix("raised after a caught panic at line ")
                    .unwrap_or_else(|| panic!("unexpected message {message:?}"));
                let location = location.expect("a location");
                assert!(
                    location.starts_with(&format!("{this_file}:{line}:")),
                    "{location}"
                );
                assert!(backtrace.is_some());
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
        // A task on the same worker that fails through resume_unwind only.
        match outcome(1) {
            Err(TaskError::Panicked { location, .. }) => {
                assert_eq!(location, None, "a location leaked from an earlier task");
            }
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
}

struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("this waker's executor is gone");
    }
}

/// An async runtime's waker that panics when its future completes (its executor gone, say)
/// is contained: the future completes, its done-callbacks run, and the executor goes on and
/// drops. (Not in Python, which has no wakers; it logs a done-callback's exception the same
/// way.)
pub fn panicking_waker_is_contained<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    use std::future::Future as _;
    let ex = make(Config::new(1));
    let gate = Gate::new("panicking_waker");
    let mut f = ex.submit(gated, gate.arg(0)).expect("submit");
    let waker = std::task::Waker::from(Arc::new(PanickingWaker));
    let polled = std::pin::Pin::new(&mut f).poll(&mut std::task::Context::from_waker(&waker));
    assert!(polled.is_pending(), "the gated task is still running");
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |_| {
        let _ = tx.send(());
    });
    gate.release();
    rx.recv_timeout(LIMIT)
        .expect("the done callback did not run after the waker panicked");
    assert!(f.result_timeout(LIMIT).is_ok(), "{f:?}");
    let g = ex
        .submit(square, 7)
        .expect("submit after the waker panicked");
    assert_eq!(g.result_timeout(LIMIT), Ok(&49));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        drop(ex);
        let _ = tx.send(());
    });
    rx.recv_timeout(LIMIT)
        .expect("dropping the executor did not return");
}

/// A library function generic over `E: Executor` runs on the backend.
pub fn generic_function<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    fn sum_of_squares<E: Executor>(executor: &E, n: i64) -> Result<i64, TaskError> {
        let futures = (0..n)
            .map(|x| executor.submit(square, x))
            .collect::<Result<Vec<_>, _>>()?;
        let split = wait(&futures, Some(LIMIT), ReturnWhen::AllCompleted);
        assert!(split.not_done.is_empty(), "unfinished after {LIMIT:?}");
        let mut total = 0;
        for f in as_completed(&futures, Some(LIMIT)) {
            total += f
                .map_err(|e| TaskError::Broken {
                    reason: e.to_string(),
                })?
                .result()?;
        }
        let mapped: i64 = executor
            .map(square, 0..n, limited().chunksize(4))?
            .sum::<Result<i64, _>>()?;
        assert_eq!(total, mapped);
        Ok(total)
    }
    let ex = make(Config::new(3));
    assert_eq!(sum_of_squares(&ex, 10), Ok(285));
}

/// Bytes of length `len` that differ with `seed` and along the buffer. Under Miri (which
/// interprets every byte) lengths are capped: what matters there is the thread pool's sharing,
/// not a process pool's size thresholds.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let len = if cfg!(miri) { len.min(512) } else { len };
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(31)
                .wrapping_add(seed.wrapping_mul(131)) as u8
        })
        .collect()
}

/// The size of the fresh buffer every [`check_and_reverse`] answer carries.
const BIG: usize = 3 << 20;

/// What [`buffers_round_trip`] sends: buffers of every size class, nested, and more than a
/// transport may attach to one payload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Parcel {
    seed: u64,
    buffers: Vec<Buffer>,
}

/// Checks every buffer against its pattern and answers with new buffers of its own (one
/// reversed per input, plus a large fresh one), so both directions carry fresh bytes.
fn check_and_reverse(p: Parcel) -> Result<Parcel, String> {
    for (i, b) in p.buffers.iter().enumerate() {
        let expected = pattern(p.seed + i as u64, b.len());
        if **b != *expected {
            return Err(format!("buffer {i} ({} bytes) arrived altered", b.len()));
        }
    }
    let mut buffers: Vec<Buffer> = p
        .buffers
        .iter()
        .map(|b| Buffer::from(b.iter().rev().copied().collect::<Vec<u8>>()))
        .collect();
    buffers.push(Buffer::from(pattern(p.seed, BIG)));
    Ok(Parcel {
        seed: p.seed,
        buffers,
    })
}

/// Not in CPython (pickle protocol 5 buffers are its nearest kin): [`Buffer`] payloads of
/// every size (empty, small, at and around a transport's attach threshold, several MiB, more
/// buffers than one payload may attach), in both directions, concurrently and one after
/// another, arrive intact. A process pool moves the large ones through shared memory and reuses
/// its regions, so stale or crossed bytes would show here.
pub fn buffers_round_trip<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    const SIZES: [usize; 9] = [
        0,
        1,
        1000,
        64 * 1024 - 1,
        64 * 1024,
        64 * 1024 + 1,
        300_000,
        2 << 20,
        5 << 20,
    ];
    let ex = make(Config::new(2));
    let parcel = |seed: u64, sizes: &[usize]| Parcel {
        seed,
        buffers: sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| Buffer::from(pattern(seed + i as u64, len)))
            .collect(),
    };
    let many = [70_000; 40];
    let count = if cfg!(miri) { 3 } else { 12 };
    let parcels: Vec<Parcel> = (0..count)
        .map(|seed| match seed % 3 {
            0 => parcel(seed * 100, &SIZES),
            1 => parcel(seed * 100, &many),
            _ => parcel(seed * 100, &SIZES[6..]),
        })
        .collect();
    let futures: Vec<_> = parcels
        .iter()
        .map(|p| ex.submit(check_and_reverse, p.clone()).expect("submit"))
        .collect();
    for (p, f) in parcels.iter().zip(&futures) {
        let back = f
            .result_timeout(LIMIT)
            .expect("finished")
            .as_ref()
            .expect("the task saw its buffers intact");
        assert_eq!(back.buffers.len(), p.buffers.len() + 1);
        for (sent, got) in p.buffers.iter().zip(&back.buffers) {
            assert!(
                sent.iter().rev().eq(got.iter()),
                "a {}-byte buffer came back altered",
                sent.len()
            );
        }
        assert_eq!(*back.buffers[p.buffers.len()], *pattern(p.seed, BIG));
    }
    // One after another, shrinking: a reused region must yield exactly the new bytes.
    for (round, len) in [(1u64, 4 << 20), (2, 1 << 20), (3, 100_000), (4, 3 << 20)]
        .into_iter()
        .take(if cfg!(miri) { 1 } else { 4 })
    {
        let p = parcel(round * 7, &[len]);
        let back = ex
            .submit(check_and_reverse, p.clone())
            .expect("submit")
            .result_timeout(LIMIT)
            .expect("finished")
            .clone()
            .expect("intact");
        assert!(p.buffers[0].iter().rev().eq(back.buffers[0].iter()));
    }
}

/// What [`byte_strings_round_trip`] sends: byte strings as users write them, with no [`Buffer`]
/// in sight.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Bytes {
    seed: u64,
    bufs: Vec<serde_bytes::ByteBuf>,
    #[serde(with = "serde_bytes")]
    field: Vec<u8>,
    maybe: Option<serde_bytes::ByteBuf>,
}

impl Bytes {
    fn new(seed: u64, lens: &[usize]) -> Self {
        Bytes {
            seed,
            bufs: lens
                .iter()
                .enumerate()
                .map(|(i, &len)| serde_bytes::ByteBuf::from(pattern(seed + i as u64, len)))
                .collect(),
            field: pattern(seed + 1000, lens.last().copied().unwrap_or(0)),
            maybe: Some(serde_bytes::ByteBuf::from(pattern(seed + 2000, BIG))),
        }
    }

    /// Every byte string reversed, so the answer carries fresh bytes.
    fn reversed(&self) -> Self {
        let rev = |b: &[u8]| b.iter().rev().copied().collect::<Vec<u8>>();
        Bytes {
            seed: self.seed,
            bufs: self
                .bufs
                .iter()
                .map(|b| serde_bytes::ByteBuf::from(rev(b)))
                .collect(),
            field: rev(&self.field),
            maybe: self
                .maybe
                .as_ref()
                .map(|b| serde_bytes::ByteBuf::from(rev(b))),
        }
    }
}

/// Checks every byte string against its pattern and answers with all of them reversed.
fn check_and_reverse_bytes(b: Bytes) -> Result<Bytes, String> {
    let lens: Vec<usize> = b.bufs.iter().map(|x| x.len()).collect();
    if b != Bytes::new(b.seed, &lens) {
        return Err(format!("byte strings of {lens:?} bytes arrived altered"));
    }
    Ok(b.reversed())
}

/// Not in CPython: byte strings as serde writes them (`serde_bytes::ByteBuf`, a
/// `#[serde(with = "serde_bytes")]` field, in an `Option`, in a `Vec`) of every size around a
/// transport's attach threshold, up to several MiB and more than one payload may attach, arrive
/// intact both ways, concurrently and one after another. A process pool's payload codec sends
/// the large ones out of band, as [`Buffer`]s, so crossed or stale bytes would show here.
pub fn byte_strings_round_trip<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    const LENS: [usize; 7] = [
        0,
        1,
        64 * 1024 - 1,
        64 * 1024,
        64 * 1024 + 1,
        300_000,
        // Miri runs this byte by byte: a few hundred KiB there, several MiB elsewhere.
        if cfg!(miri) { 300_001 } else { 2 << 20 },
    ];
    let ex = make(Config::new(2));
    let count = if cfg!(miri) { 2 } else { 4 };
    let sent: Vec<Bytes> = (0..count)
        .map(|seed| match seed % 2 {
            0 => Bytes::new(seed * 100, &LENS),
            _ => Bytes::new(seed * 100, &[70_000; 40][..if cfg!(miri) { 3 } else { 40 }]),
        })
        .collect();
    let futures: Vec<_> = sent
        .iter()
        .map(|b| {
            ex.submit(check_and_reverse_bytes, b.clone())
                .expect("submit")
        })
        .collect();
    for (b, f) in sent.iter().zip(&futures) {
        let back = f
            .result_timeout(LIMIT)
            .expect("finished")
            .as_ref()
            .expect("the task saw its byte strings intact");
        assert!(*back == b.reversed(), "byte strings came back altered");
    }
    for (round, len) in [(1u64, 3 << 20), (2, 100_000), (3, 1 << 20)]
        .into_iter()
        .take(if cfg!(miri) { 1 } else { 3 })
    {
        let b = Bytes::new(round * 7, &[len]);
        let back = ex
            .submit(check_and_reverse_bytes, b.clone())
            .expect("submit")
            .result_timeout(LIMIT)
            .expect("finished")
            .clone()
            .expect("intact");
        assert!(back == b.reversed(), "a reused region gave stale bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios: scheduling. CPython's workers share one call queue, so a task never waits for a
// particular busy worker; a backend that sends work ahead to its workers must keep that true.

/// Runs enough quick tasks that both workers of `ex` have started and any adaptive batching a
/// backend does has grown (the condition under which work could be queued behind a busy one).
fn warm_up<E: Executor>(ex: &E) {
    let n = if cfg!(miri) { 20 } else { 3000 };
    let done = ex
        .map(square, 0..n, limited())
        .expect("map")
        .filter(Result::is_ok)
        .count();
    assert_eq!(done, n as usize, "warm-up tasks");
}

/// Quick tasks submitted one by one while a long task runs all finish while it still runs: a
/// worker that goes idle takes the work that waits behind a busy one. (CPython's workers share
/// one call queue; a backend that sends work ahead to a worker must not strand it there.)
pub fn quick_tasks_do_not_wait_behind_a_long_one<E: Executor + 'static>(
    make: impl Fn(Config) -> E,
) {
    let ex = make(Config::new(2));
    warm_up(&ex);
    for round in 0..3 {
        let gate = Gate::new("quick_behind_long");
        let long = ex.submit(gated_if, (gate.path(), 0, true)).expect("submit");
        gate.wait_started(1);
        let quick: Vec<_> = (1..10)
            .map(|i| {
                ex.submit(gated_if, (gate.path(), i, false))
                    .expect("submit")
            })
            .collect();
        for (i, f) in quick.iter().enumerate() {
            assert!(
                f.result_timeout(LIMIT).is_ok(),
                "round {round}: quick task {} did not finish within {LIMIT:?} while a long \
                 task ran and another worker was free ({:?})",
                i + 1,
                f.exception()
            );
        }
        assert!(!long.done(), "the long task waits for its gate");
        gate.release();
        assert!(long.result_timeout(LIMIT).is_ok(), "the long task");
    }
}

/// A task that waits for the task submitted right after it never deadlocks with two workers:
/// both workers are busy when the two are submitted, so a backend that sends work ahead could
/// queue the second behind the first; the worker that goes idle must take it. Several rounds,
/// since where a backend puts each task may depend on timing.
pub fn dependent_tasks_do_not_deadlock<E: Executor + 'static>(make: impl Fn(Config) -> E) {
    let ex = make(Config::new(2));
    warm_up(&ex);
    for round in 0..5 {
        let blockers = Gate::new("dependent_blockers");
        let busy: Vec<_> = (0..2)
            .map(|i| ex.submit(gated, blockers.arg(i)).expect("submit"))
            .collect();
        blockers.wait_started(2);
        let gate = Gate::new("dependent_tasks");
        // Task 0 waits for task 1; quick tasks follow.
        let futures: Vec<_> = (0..10)
            .map(|i| {
                ex.submit(mark_then_await, (gate.path(), i, (i == 0).then_some(1)))
                    .expect("submit")
            })
            .collect();
        blockers.release();
        for f in &busy {
            assert!(f.result_timeout(LIMIT).is_ok(), "round {round}: a blocker");
        }
        for (i, f) in futures.iter().enumerate() {
            assert_eq!(
                f.result_timeout(LIMIT),
                Ok(&(i as u32)),
                "round {round}: task {i} (task 0 waits for task 1, two workers)"
            );
        }
    }
}
