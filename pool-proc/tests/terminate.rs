//! `terminate_workers` and `kill_workers` signal and return (Python 3.14's meaning); a later
//! `shutdown(wait)` or `drop` is bounded: after the builder's `shutdown_grace` it kills a worker
//! whose task ignores `SIGTERM`.
//
// On Windows (run under Wine in CI) both calls are `TerminateProcess` with exit code 1: there
// is no signal a task could catch or ignore, so `terminate_workers` ends a task at once and the
// grace never comes into play; the same calls must still return at once and end the task.
#![cfg_attr(unix, allow(unsafe_code))] // a task ignores SIGTERM on purpose

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ExitCause, ProcessPoolExecutor, TaskError, DEFAULT_SHUTDOWN_GRACE};
use common::killed_cause;

/// Generous: a call that should return at once must return within this.
const LIMIT: Duration = Duration::from_secs(60);

/// Ignores `SIGTERM` (on Unix; Windows has none), leaves `ready` behind, then sleeps far longer
/// than any test runs.
fn stubborn(ready: String) -> u32 {
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN)
    };
    std::fs::write(ready, b"").unwrap();
    std::thread::sleep(Duration::from_secs(600));
    0
}

/// Sleeps `secs` seconds: a task that ends when told to (`SIGTERM` ends it).
fn sleep_secs(secs: u64) -> u32 {
    std::thread::sleep(Duration::from_secs(secs));
    0
}

/// Runs `f` on a helper thread; fails the test if it does not return within [`LIMIT`].
fn returns<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{what} did not return within {LIMIT:?}"))
}

/// A pool running one `stubborn` task that has started ignoring `SIGTERM`.
fn with_stubborn_task(
    grace: Option<Duration>,
    name: &str,
) -> (ProcessPoolExecutor, cf_pool_proc::Future<u32>) {
    let mut builder = ProcessPoolExecutor::builder().max_workers(1);
    if let Some(grace) = grace {
        builder = builder.shutdown_grace(grace);
    }
    let pool = builder.build().unwrap();
    let ready = std::env::temp_dir().join(format!("cf-terminate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let f = pool
        .submit(stubborn, ready.to_string_lossy().into_owned())
        .unwrap();
    let start = Instant::now();
    while !Path::new(&ready).exists() {
        assert!(start.elapsed() < LIMIT, "the task never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = std::fs::remove_file(&ready);
    (pool, f)
}

fn assert_killed(f: &cf_pool_proc::Future<u32>, expected: ExitCause) {
    match f.result_timeout(LIMIT) {
        Err(TaskError::WorkerDied { cause, .. }) => assert_eq!(cause, expected),
        other => panic!("expected WorkerDied ({expected}), got {other:?}"),
    }
}

/// On Unix the task ignores `SIGTERM` and outlives `terminate_workers`, and `drop` kills it
/// after the grace; on Windows `terminate_workers` already ended it.
#[test]
fn terminate_returns_while_a_task_ignores_sigterm_and_drop_kills_it_after_the_grace() {
    let (pool, f) = with_stubborn_task(Some(Duration::from_millis(200)), "drop");
    let pool = returns("terminate_workers", move || {
        pool.terminate_workers();
        pool
    });
    // The task ignored SIGTERM: it still runs.
    #[cfg(unix)]
    assert!(!f.done());
    let pids = pool.worker_pids();
    returns("drop after terminate_workers", move || drop(pool));
    assert_killed(&f, killed_cause());
    common::assert_gone(pids);
}

#[test]
fn shutdown_wait_after_terminate_is_bounded_by_the_default_grace() {
    assert_eq!(DEFAULT_SHUTDOWN_GRACE, Duration::from_secs(5));
    let (pool, f) = with_stubborn_task(None, "shutdown");
    let pool = returns("terminate_workers", move || {
        pool.terminate_workers();
        pool
    });
    let pool = returns("shutdown(wait) after terminate_workers", move || {
        pool.shutdown(true, false);
        pool
    });
    assert_killed(&f, killed_cause());
    assert!(pool.worker_pids().is_empty(), "shutdown(wait) reaped them");
}

#[test]
fn kill_workers_returns_and_drop_reaps() {
    let (pool, f) = with_stubborn_task(Some(Duration::from_secs(600)), "kill");
    let pool = returns("kill_workers", move || {
        pool.kill_workers();
        pool
    });
    assert_killed(&f, killed_cause());
    let pids = pool.worker_pids();
    returns("drop after kill_workers", move || drop(pool));
    common::assert_gone(pids);
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}

/// A grace too long for the clock waits for the workers as long as they take, without a panic
/// (here they end at once: the task honours `SIGTERM`).
#[test]
fn a_grace_too_long_for_the_clock_waits_without_a_panic() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .shutdown_grace(Duration::MAX)
        .build()
        .unwrap();
    let f = pool.submit(sleep_secs, 600).unwrap();
    let start = Instant::now();
    while !f.running() {
        assert!(start.elapsed() < LIMIT, "the task never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    pool.terminate_workers();
    returns(
        "drop after terminate_workers with a grace of Duration::MAX",
        move || drop(pool),
    );
    assert!(matches!(
        f.result_timeout(LIMIT),
        Err(TaskError::WorkerDied { .. })
    ));
}
