//! A task's result reaches its future even when its worker dies right after: only the task that
//! was running when the worker died (and tasks sent to it that had not started) may fail with
//! `WorkerDied`. A user who retries on `WorkerDied` must never re-run work that already ran.
//!
//! Each test warms the worker with quick tasks first, so that its prefetch window is wide and
//! many quick tasks travel (and finish) in the same frame as the crash that follows them: that
//! is when their results would still be waiting to be sent. The crash comes in every form a
//! task can cause: `abort`, `exit`, `SIGKILL` to itself, a segfault, and a crash a little later
//! (after the batched results would have been flushed on their own).
//
// On Windows (run under Wine in CI) the same crashes: `abort` (`__fastfail`), `exit`, the
// worker ending itself with `TerminateProcess`, and an access violation in place of the
// segfault.
#![allow(unsafe_code)] // a task must be able to kill and crash its worker on purpose

mod common;

use std::time::Duration;

use cf_pool_proc::{Executor, ExitCause, MapOptions, ProcessPoolExecutor, TaskError};
use common::{abort_cause, killed_cause, LIMIT};
/// Quick tasks submitted ahead of each crash.
const AHEAD: u64 = 49;

fn double(x: u64) -> u64 {
    x * 2
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Crash {
    Abort,
    Exit,
    KillSelf,
    Segfault,
    AbortLater,
}

fn crash(how: Crash) -> u64 {
    match how {
        Crash::Abort => std::process::abort(),
        Crash::Exit => std::process::exit(7),
        Crash::KillSelf => common::sigkill_self(),
        Crash::Segfault => {
            // SAFETY: raise(3) with a plain integer; the default action ends the process.
            #[cfg(unix)]
            unsafe {
                libc::raise(libc::SIGSEGV)
            };
            // SAFETY: none; an access violation on purpose (Windows has no SIGSEGV).
            #[cfg(windows)]
            unsafe {
                std::ptr::null_mut::<u32>().write_volatile(1)
            };
            unreachable!("the crash ends the process")
        }
        Crash::AbortLater => {
            std::thread::sleep(Duration::from_millis(20));
            std::process::abort()
        }
    }
}

fn expected_cause(how: Crash) -> ExitCause {
    match how {
        Crash::Abort | Crash::AbortLater => abort_cause(),
        Crash::Exit => ExitCause::Code(7),
        Crash::KillSelf => killed_cause(),
        #[cfg(unix)]
        Crash::Segfault => ExitCause::Signal(libc::SIGSEGV),
        #[cfg(windows)]
        Crash::Segfault => ExitCause::Code(0xC000_0005_u32 as i32), // STATUS_ACCESS_VIOLATION
    }
}

fn warm(pool: &ProcessPoolExecutor) {
    let n = pool
        .map(double, 0..3000u64, MapOptions::new().timeout(LIMIT))
        .unwrap()
        .filter(Result::is_ok)
        .count();
    assert_eq!(n, 3000);
}

/// The quick tasks ahead of the crash all succeed; the crash alone fails, with its cause.
fn check(pool: &ProcessPoolExecutor, how: Crash, batch: bool) {
    let (ahead, crashed) = if batch {
        let ahead = pool.submit_batch(double, (0..AHEAD).collect()).unwrap();
        (ahead, pool.submit(crash, how).unwrap())
    } else {
        let ahead: Vec<_> = (0..AHEAD)
            .map(|i| pool.submit(double, i).unwrap())
            .collect();
        (ahead, pool.submit(crash, how).unwrap())
    };
    match crashed.result_timeout(LIMIT) {
        Err(TaskError::WorkerDied { cause, .. }) => assert_eq!(cause, expected_cause(how)),
        other => panic!("{how:?}: expected WorkerDied, got {other:?}"),
    }
    let lost: Vec<_> = ahead
        .iter()
        .enumerate()
        .filter_map(|(i, f)| match f.result_timeout(LIMIT) {
            Ok(&v) if v == 2 * i as u64 => None,
            other => Some((i, format!("{other:?}"))),
        })
        .collect();
    assert!(
        lost.is_empty(),
        "{how:?} (batch: {batch}): {} of {AHEAD} finished tasks lost their results: {lost:?}",
        lost.len()
    );
}

fn pool() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap()
}

#[test]
fn results_survive_an_abort_in_a_later_task() {
    let pool = pool();
    for batch in [true, false] {
        warm(&pool);
        check(&pool, Crash::Abort, batch);
    }
}

#[test]
fn results_survive_an_exit_in_a_later_task() {
    let pool = pool();
    for batch in [true, false] {
        warm(&pool);
        check(&pool, Crash::Exit, batch);
    }
}

#[test]
fn results_survive_a_task_that_sigkills_its_worker() {
    let pool = pool();
    for batch in [true, false] {
        warm(&pool);
        check(&pool, Crash::KillSelf, batch);
    }
}

#[test]
fn results_survive_a_segfault_in_a_later_task() {
    let pool = pool();
    for batch in [true, false] {
        warm(&pool);
        check(&pool, Crash::Segfault, batch);
    }
}

#[test]
fn results_survive_a_crash_after_they_were_sent() {
    let pool = pool();
    warm(&pool);
    check(&pool, Crash::AbortLater, true);
}

/// Many crashes in a row on two workers, each behind a burst of quick tasks: every quick task
/// succeeds, every crash is the only failure.
#[test]
fn results_survive_repeated_crashes_on_several_workers() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    for (round, how) in [Crash::Abort, Crash::KillSelf, Crash::Exit, Crash::Segfault]
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        if round % 4 == 0 {
            warm(&pool);
        }
        check(&pool, how, round % 2 == 0);
    }
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
