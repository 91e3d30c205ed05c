//! Helpers shared by the integration tests: hang guards, a capturing logger, futures in every
//! state, and a value that counts its drops.
//!
//! Every test that could block goes through [`within`] or a `*_timeout` call, so a bug fails
//! the test instead of hanging CI.
#![allow(dead_code)] // each test crate uses a different subset

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cf_futures_core::{Future, Promise, TaskError};

/// Generous bound for anything expected to happen "soon"; only ever reached by a bug. Miri
/// interprets every instruction (a caught panic's backtrace alone takes it tens of seconds), so
/// the bound is wider there.
pub(crate) const LONG: Duration = if cfg!(miri) {
    Duration::from_secs(600)
} else {
    Duration::from_secs(10)
};

/// A pause that gives another thread the chance to block first. Correctness never depends on it;
/// it only makes the tested interleaving likely.
pub(crate) const SETTLE: Duration = Duration::from_millis(50);

/// Runs `f` on a new thread and returns its result, failing the test if it takes longer than
/// [`LONG`] (a hang) or panics.
pub(crate) fn within<R, F>(what: &str, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LONG) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still blocked after {LONG:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the thread panicked"),
    }
}

/// The five observable conditions of a future, as in CPython's test_future.py fixtures
/// (`PENDING_FUTURE`, `RUNNING_FUTURE`, `CANCELLED_FUTURE`, `EXCEPTION_FUTURE`,
/// `SUCCESSFUL_FUTURE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pending,
    Running,
    Cancelled,
    Failed,
    Finished,
}

pub(crate) const ALL_KINDS: [Kind; 5] = [
    Kind::Pending,
    Kind::Running,
    Kind::Cancelled,
    Kind::Failed,
    Kind::Finished,
];

/// The error a `Failed` fixture holds.
pub(crate) fn failure() -> TaskError {
    TaskError::Panicked {
        message: "fixture failure".into(),
        location: None,
        backtrace: None,
    }
}

/// The value a `Finished` fixture holds.
pub(crate) const VALUE: u32 = 42;

/// A future in the given condition. The promise is returned too: dropping it would complete a
/// pending or running future with `Broken`.
pub(crate) fn fixture(kind: Kind) -> (Promise<u32>, Future<u32>) {
    let p = Promise::new();
    let f = p.future();
    match kind {
        Kind::Pending => {}
        Kind::Running => assert!(p.set_running_or_notify_cancel()),
        Kind::Cancelled => assert!(f.cancel()),
        Kind::Failed => {
            assert!(p.set_running_or_notify_cancel());
            p.set_error(failure()).unwrap();
        }
        Kind::Finished => {
            assert!(p.set_running_or_notify_cancel());
            p.set_result(VALUE).unwrap();
        }
    }
    (p, f)
}

/// A value that counts how many times it was dropped: proves whether a future's shared state
/// (which owns the value) is still alive.
#[derive(Debug)]
pub(crate) struct Tracked(pub(crate) Arc<AtomicUsize>);

impl Tracked {
    pub(crate) fn new() -> (Self, Arc<AtomicUsize>) {
        let drops = Arc::new(AtomicUsize::new(0));
        (Tracked(Arc::clone(&drops)), drops)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A `log::Log` that keeps every record, so tests can assert on what was logged.
#[derive(Debug)]
pub(crate) struct CapturingLogger {
    records: Mutex<Vec<(log::Level, String)>>,
}

impl log::Log for CapturingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.records
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

/// The process-wide capturing logger, installed on first use.
pub(crate) fn logger() -> &'static CapturingLogger {
    static LOGGER: OnceLock<&'static CapturingLogger> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let logger: &'static CapturingLogger = Box::leak(Box::new(CapturingLogger {
            records: Mutex::new(Vec::new()),
        }));
        log::set_logger(logger).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        logger
    })
}

impl CapturingLogger {
    /// The messages logged at `level` that contain `needle`.
    pub(crate) fn find(&self, level: log::Level, needle: &str) -> Vec<String> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, m)| *l == level && m.contains(needle))
            .map(|(_, m)| m.clone())
            .collect()
    }
}
