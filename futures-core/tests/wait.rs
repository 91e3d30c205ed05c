//! `wait(&futures, timeout, ReturnWhen)`.
//!
//! Ported from CPython's `Lib/test/test_concurrent_futures/test_wait.py` (3.13), `WaitTests`:
//! `test_20369` (duplicates), `test_first_completed`,
//! `test_first_completed_some_already_completed`, `test_first_exception`,
//! `test_first_exception_some_already_complete`, `test_first_exception_one_already_failed`,
//! `test_all_completed`, `test_timeout`; and the "no lost wake-up" stress of many futures
//! completing concurrently.
//!
//! Python has two cancelled states (`CANCELLED` and `CANCELLED_AND_NOTIFIED`) and counts a
//! merely `CANCELLED` future as not done; here cancellation is a single, done state, so
//! cancelled futures land in `done` and never count as exceptions.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use cf_futures_core::{wait, Future, Promise, ReturnWhen, TaskError};
use common::{failure, fixture, within, Kind, Tracked, LONG, SETTLE, VALUE};

/// Asserts that `got` holds exactly the futures in `want` (as sets, by identity).
#[track_caller]
fn assert_same(got: &[Future<u32>], want: &[&Future<u32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for w in want {
        assert!(got.contains(w), "{what}: missing {w:?} in {got:?}");
    }
}

/// Completes `p` with `outcome` on another thread after a short pause, so the waiter is most
/// likely blocked by then (the result does not depend on it).
fn complete_later(p: Promise<u32>, outcome: Result<u32, TaskError>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(SETTLE);
        assert!(p.set_running_or_notify_cancel());
        p.set_outcome(outcome).unwrap();
    })
}

#[test]
fn duplicates_count_once() {
    let (_a, done) = fixture(Kind::Finished);
    let (_b, pending) = fixture(Kind::Pending);
    let split = wait(
        [&done, &pending, &done, &pending],
        Some(Duration::ZERO),
        ReturnWhen::AllCompleted,
    );
    assert_same(&split.done, &[&done], "done");
    assert_same(&split.not_done, &[&pending], "not_done");
}

#[test]
fn empty_input_returns_at_once() {
    for rw in [
        ReturnWhen::FirstCompleted,
        ReturnWhen::FirstException,
        ReturnWhen::AllCompleted,
    ] {
        let split = within("wait on nothing", move || {
            wait(std::iter::empty::<&Future<u32>>(), None, rw)
        });
        assert!(split.done.is_empty() && split.not_done.is_empty(), "{rw:?}");
    }
}

#[test]
fn first_completed_returns_as_soon_as_one_is_done() {
    let (_p1, never) = fixture(Kind::Pending);
    let (p2, soon) = fixture(Kind::Pending);
    let setter = complete_later(p2, Ok(VALUE));
    let fs = [never.clone(), soon.clone()];
    // No timeout: if FIRST_COMPLETED waited for more, this would hang and `within` would fail.
    let split = within("FIRST_COMPLETED", move || {
        wait(&fs, None, ReturnWhen::FirstCompleted)
    });
    assert_same(&split.done, &[&soon], "done");
    assert_same(&split.not_done, &[&never], "not_done");
    setter.join().unwrap();
}

#[test]
fn first_completed_returns_at_once_if_one_already_is() {
    for kind in [Kind::Finished, Kind::Failed, Kind::Cancelled] {
        let (_p1, never) = fixture(Kind::Pending);
        let (_p2, running) = fixture(Kind::Running);
        let (_p3, done) = fixture(kind);
        let fs = [never.clone(), done.clone(), running.clone()];
        let split = within("FIRST_COMPLETED, one done", move || {
            wait(&fs, None, ReturnWhen::FirstCompleted)
        });
        assert_same(&split.done, &[&done], "done");
        assert_same(&split.not_done, &[&never, &running], "not_done");
    }
}

#[test]
fn first_exception_returns_on_the_first_failure() {
    // CPython: future1 succeeds, then future2 raises, future3 blocks.
    let (p1, ok) = fixture(Kind::Pending);
    let (p2, fails) = fixture(Kind::Pending);
    let (_p3, blocked) = fixture(Kind::Pending);
    let worker = thread::spawn(move || {
        thread::sleep(SETTLE);
        p1.set_result(VALUE).unwrap();
        thread::sleep(SETTLE);
        p2.set_error(failure()).unwrap();
    });
    let fs = [ok.clone(), fails.clone(), blocked.clone()];
    let split = within("FIRST_EXCEPTION", move || {
        wait(&fs, None, ReturnWhen::FirstException)
    });
    assert_same(&split.done, &[&ok, &fails], "done");
    assert_same(&split.not_done, &[&blocked], "not_done");
    worker.join().unwrap();
}

#[test]
fn first_exception_with_some_already_complete() {
    // CPython: SUCCESSFUL_FUTURE, CANCELLED_FUTURE, CANCELLED_AND_NOTIFIED_FUTURE, a future that
    // raises, a future that blocks. A cancelled future is done but is not an exception, so wait
    // must not return before the real failure arrives.
    let (_a, finished) = fixture(Kind::Finished);
    let (_b, cancelled) = fixture(Kind::Cancelled);
    let (p, fails) = fixture(Kind::Pending);
    let (_c, blocked) = fixture(Kind::Pending);
    let setter = complete_later(p, Err(failure()));
    let fs = [
        finished.clone(),
        cancelled.clone(),
        fails.clone(),
        blocked.clone(),
    ];
    let split = within("FIRST_EXCEPTION, some complete", move || {
        wait(&fs, None, ReturnWhen::FirstException)
    });
    assert_same(&split.done, &[&finished, &cancelled, &fails], "done");
    assert_same(&split.not_done, &[&blocked], "not_done");
    setter.join().unwrap();
}

#[test]
fn first_exception_returns_at_once_if_one_already_failed() {
    let (_a, failed) = fixture(Kind::Failed);
    let (_b, blocked) = fixture(Kind::Running);
    let fs = [blocked.clone(), failed.clone()];
    let split = within("FIRST_EXCEPTION, one failed", move || {
        wait(&fs, None, ReturnWhen::FirstException)
    });
    assert_same(&split.done, &[&failed], "done");
    assert_same(&split.not_done, &[&blocked], "not_done");
}

#[test]
fn first_exception_counts_a_broken_promise_as_a_failure() {
    let (p, broken) = fixture(Kind::Running);
    let (_b, blocked) = fixture(Kind::Pending);
    let dropper = thread::spawn(move || {
        thread::sleep(SETTLE);
        drop(p);
    });
    let fs = [broken.clone(), blocked.clone()];
    let split = within("FIRST_EXCEPTION, broken", move || {
        wait(&fs, None, ReturnWhen::FirstException)
    });
    assert_same(&split.done, &[&broken], "done");
    assert_same(&split.not_done, &[&blocked], "not_done");
    dropper.join().unwrap();
}

#[test]
fn first_exception_without_failures_waits_for_all() {
    let (p1, a) = fixture(Kind::Pending);
    let (p2, b) = fixture(Kind::Pending);
    let (p3, c) = fixture(Kind::Pending);
    let worker = thread::spawn(move || {
        for p in [p1, p2] {
            thread::sleep(SETTLE);
            p.set_result(VALUE).unwrap();
        }
        thread::sleep(SETTLE);
        assert!(p3.cancel(), "a cancellation is not an exception either");
    });
    let fs = [a.clone(), b.clone(), c.clone()];
    let split = within("FIRST_EXCEPTION, no failure", move || {
        wait(&fs, None, ReturnWhen::FirstException)
    });
    assert_same(&split.done, &[&a, &b, &c], "done");
    assert!(split.not_done.is_empty());
    worker.join().unwrap();
}

#[test]
fn all_completed_waits_for_all() {
    let (_a, finished) = fixture(Kind::Finished);
    let (_b, failed) = fixture(Kind::Failed);
    let (_c, cancelled) = fixture(Kind::Cancelled);
    let (p1, later) = fixture(Kind::Pending);
    let (p2, last) = fixture(Kind::Pending);
    let worker = thread::spawn(move || {
        thread::sleep(SETTLE);
        p1.set_error(failure()).unwrap();
        thread::sleep(SETTLE);
        p2.set_result(VALUE).unwrap();
    });
    let fs = [
        finished.clone(),
        failed.clone(),
        cancelled.clone(),
        later.clone(),
        last.clone(),
    ];
    // A failure does not end ALL_COMPLETED early: `last` must be done too.
    let split = within("ALL_COMPLETED", move || {
        wait(&fs, None, ReturnWhen::AllCompleted)
    });
    assert_same(
        &split.done,
        &[&finished, &failed, &cancelled, &later, &last],
        "done",
    );
    assert!(split.not_done.is_empty());
    worker.join().unwrap();
}

#[test]
fn a_timeout_returns_the_current_split() {
    for rw in [
        ReturnWhen::FirstException,
        ReturnWhen::AllCompleted,
        ReturnWhen::FirstCompleted,
    ] {
        for timeout in [Duration::ZERO, Duration::from_millis(20)] {
            let (_a, finished) = fixture(Kind::Finished);
            let (_b, cancelled) = fixture(Kind::Cancelled);
            let (_c, pending) = fixture(Kind::Pending);
            let (_d, running) = fixture(Kind::Running);
            let fs = [
                finished.clone(),
                pending.clone(),
                cancelled.clone(),
                running.clone(),
            ];
            let split = within("wait with a timeout", move || wait(&fs, Some(timeout), rw));
            assert_same(&split.done, &[&finished, &cancelled], "done");
            assert_same(&split.not_done, &[&pending, &running], "not_done");
        }
    }
}

#[test]
fn the_split_keeps_input_order() {
    let fixtures: Vec<_> = [
        Kind::Pending,
        Kind::Finished,
        Kind::Running,
        Kind::Cancelled,
        Kind::Failed,
    ]
    .into_iter()
    .map(fixture)
    .collect();
    let fs: Vec<_> = fixtures.iter().map(|(_, f)| f.clone()).collect();
    let split = wait(&fs, Some(Duration::ZERO), ReturnWhen::AllCompleted);
    assert!(split.done == [fs[1].clone(), fs[3].clone(), fs[4].clone()]);
    assert!(split.not_done == [fs[0].clone(), fs[2].clone()]);
}

#[test]
fn a_late_completion_after_a_timeout_is_harmless() {
    // The waiter is unregistered on timeout; completing afterwards must not touch it.
    let (p, f) = fixture(Kind::Pending);
    let split = wait([&f], Some(Duration::ZERO), ReturnWhen::AllCompleted);
    assert_eq!(split.not_done.len(), 1);
    p.set_result(1).unwrap();
    let split = wait([&f], Some(Duration::ZERO), ReturnWhen::AllCompleted);
    assert_eq!(split.done.len(), 1);
}

#[test]
fn many_futures_completed_concurrently_no_lost_wakeup() {
    const FUTURES: usize = 100;
    const THREADS: usize = 10;
    let rounds = if cfg!(miri) { 1 } else { 5 };
    for round in 0..rounds {
        let promises: Vec<Promise<u32>> = (0..FUTURES).map(|_| Promise::new()).collect();
        let futures: Vec<Future<u32>> = promises.iter().map(Promise::future).collect();
        let start = Arc::new(Barrier::new(THREADS + 1));
        let mut chunks: Vec<Vec<Promise<u32>>> = (0..THREADS).map(|_| Vec::new()).collect();
        for (i, p) in promises.into_iter().enumerate() {
            chunks[i % THREADS].push(p);
        }
        let completers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    for p in chunk {
                        if p.set_running_or_notify_cancel() {
                            p.set_result(VALUE).unwrap();
                        }
                    }
                })
            })
            .collect();
        start.wait();
        // A lost wake-up shows as a timeout with futures left in `not_done`.
        let split = wait(&futures, Some(LONG), ReturnWhen::AllCompleted);
        assert_eq!(split.done.len(), FUTURES, "round {round}");
        assert!(split.not_done.is_empty(), "round {round}");
        for c in completers {
            c.join().unwrap();
        }
    }
}

#[test]
fn wait_does_not_keep_a_future_alive() {
    let (value, drops) = Tracked::new();
    let p = Promise::new();
    let completes = p.future();
    let (_never_promise, never) = {
        let p = Promise::<Tracked>::new();
        let f = p.future();
        (p, f)
    };
    // Completed while `wait` is registered with it, so the waiter is fired through it.
    let setter = thread::spawn(move || {
        thread::sleep(SETTLE);
        p.set_result(value).unwrap();
    });
    let fs = [completes, never];
    let (fs, split) = within("FIRST_COMPLETED", move || {
        let split = wait(&fs, None, ReturnWhen::FirstCompleted);
        (fs, split)
    });
    setter.join().unwrap();
    assert_eq!(split.done.len(), 1);
    drop(split);
    drop(fs);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the finished future's state outlived every handle"
    );
}

#[test]
fn a_huge_timeout_means_no_deadline_not_an_overflow() {
    let (p, f) = fixture(Kind::Pending);
    let setter = complete_later(p, Ok(VALUE));
    let fs = [f.clone()];
    let split = within("wait(MAX)", move || {
        wait(&fs, Some(Duration::MAX), ReturnWhen::AllCompleted)
    });
    assert_same(&split.done, &[&f], "done");
    setter.join().unwrap();
}

/// The same future by another handle, and a repeat after many distinct futures, count once.
#[test]
fn repeats_by_other_handles_and_late_repeats_count_once() {
    let promises: Vec<Promise<usize>> = (0..100).map(|_| Promise::new()).collect();
    let futures: Vec<Future<usize>> = promises.iter().map(Promise::future).collect();
    promises[7].set_result(7).unwrap();
    let again = promises[7].future();
    let input = futures.iter().chain([&futures[0], &again, &futures[99]]);
    let split = wait(input, Some(Duration::ZERO), ReturnWhen::AllCompleted);
    assert_eq!(split.done, vec![again.clone()]);
    assert_eq!(split.not_done.len(), 99);
}
