//! Model-checked races of the future state machine, under `loom`.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p cf-futures-core --test loom --release`.
//!
//! `--cfg loom` swaps the crate's mutex, condvars and `Arc` (the `primitive` shim) for loom's, so
//! loom explores every interleaving of the operations below at those points. Every state
//! transition happens under the mutex; the `Arc` is modelled because `try_unwrap` depends on when
//! the promise's reference goes away. The write-once outcome cell stays `std` (it is written only
//! under the mutex, before the state is published). A lost wake-up shows up as a loom deadlock, a
//! leaked `Arc` as a loom leak report, a double transition or a callback run twice as a failed
//! assertion. Each model stays at two or three threads so the search finishes quickly.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use cf_futures_core::{as_completed, wait, Future, Promise, ReturnWhen, State, TaskError};

/// Adds a callback counting its runs; returns the counter.
fn count_callbacks(f: &Future<u32>) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    f.add_done_callback(move |f| {
        assert!(f.done(), "a callback runs on a done future");
        c.fetch_add(1, Ordering::SeqCst);
    });
    calls
}

#[test]
fn start_and_complete_vs_cancel() {
    loom::model(|| {
        let p = Promise::<u32>::new();
        let f = p.future();
        let calls = count_callbacks(&f);
        let g = f.clone();
        let canceller = thread::spawn(move || g.cancel());

        let started = p.set_running_or_notify_cancel();
        let set = started && p.set_result(1).is_ok();
        let cancelled = canceller.join().unwrap();

        assert!(started != cancelled, "exactly one of start and cancel wins");
        assert_eq!(set, started, "a started task can always complete");
        if cancelled {
            assert_eq!(f.state(), State::Cancelled);
            assert_eq!(f.try_result(), Some(Err(TaskError::Cancelled)));
        } else {
            assert_eq!(f.state(), State::Finished);
            assert_eq!(f.try_result(), Some(Ok(&1)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn set_result_on_pending_vs_cancel() {
    loom::model(|| {
        let p = Promise::<u32>::new();
        let f = p.future();
        let calls = count_callbacks(&f);
        let g = f.clone();
        let canceller = thread::spawn(move || g.cancel());

        let set = p.set_result(1);
        let cancelled = canceller.join().unwrap();

        match set {
            Ok(()) => {
                assert!(!cancelled);
                assert_eq!(f.try_result(), Some(Ok(&1)));
            }
            Err(e) => {
                assert_eq!(
                    e.state,
                    State::Cancelled,
                    "refused because it was cancelled"
                );
                assert!(cancelled);
                assert_eq!(f.try_result(), Some(Err(TaskError::Cancelled)));
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn complete_vs_add_done_callback() {
    loom::model(|| {
        let p = Promise::<u32>::new();
        let f = p.future();
        let completer = thread::spawn(move || p.set_result(5).unwrap());

        // Added before or after completion depending on the interleaving: runs once either way
        // and sees the value.
        let seen = Arc::new(AtomicUsize::new(0));
        let s = Arc::clone(&seen);
        f.add_done_callback(move |f| {
            let v = *f.try_result().expect("done").expect("a value");
            s.fetch_add(v as usize, Ordering::SeqCst);
        });
        completer.join().unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 5);
    });
}

#[test]
fn result_waiter_vs_completer() {
    loom::model(|| {
        let p = Promise::<u32>::new();
        let f = p.future();
        let completer = thread::spawn(move || {
            assert!(p.set_running_or_notify_cancel());
            p.set_result(7).unwrap();
        });
        // Blocks (untimed) until woken: a lost wake-up is a loom deadlock.
        assert_eq!(f.result(), Ok(&7));
        completer.join().unwrap();
    });
}

#[test]
fn result_waiter_vs_canceller() {
    loom::model(|| {
        let p = Promise::<u32>::new();
        let f = p.future();
        let g = f.clone();
        let canceller = thread::spawn(move || assert!(g.cancel()));
        assert_eq!(f.result(), Err(TaskError::Cancelled));
        canceller.join().unwrap();
        drop(p);
    });
}

#[test]
fn async_waiter_vs_completer() {
    loom::model(|| {
        let p = Promise::<u32>::new();
        let f = p.future();
        let completer = thread::spawn(move || p.set_result(3).unwrap());
        // The waker is registered and taken under the state mutex: no lost wake-up.
        assert_eq!(loom::future::block_on(f), Ok(3));
        completer.join().unwrap();
    });
}

#[test]
fn wait_all_vs_two_completers() {
    loom::model(|| {
        let (a, b) = (Promise::<u32>::new(), Promise::<u32>::new());
        let futures = [a.future(), b.future()];
        let ta = thread::spawn(move || a.set_result(1).unwrap());
        let tb = thread::spawn(move || b.set_error(TaskError::Cancelled).unwrap());
        let split = wait(&futures, None, ReturnWhen::AllCompleted);
        assert_eq!(split.done.len(), 2);
        assert!(split.not_done.is_empty());
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

#[test]
fn wait_first_completed_vs_completer() {
    loom::model(|| {
        let (a, b) = (Promise::<u32>::new(), Promise::<u32>::new());
        let futures = [a.future(), b.future()];
        let ta = thread::spawn(move || {
            a.set_result(1).unwrap();
            a
        });
        let split = wait(&futures, None, ReturnWhen::FirstCompleted);
        assert!(split.done == [futures[0].clone()]);
        assert!(split.not_done == [futures[1].clone()]);
        drop(ta.join().unwrap());
        drop(b);
    });
}

#[test]
fn as_completed_vs_completer() {
    loom::model(|| {
        let (a, b) = (Promise::<u32>::new(), Promise::<u32>::new());
        let futures = [a.future(), b.future()];
        let completer = thread::spawn(move || {
            b.set_result(2).unwrap();
            a.set_result(1).unwrap();
        });
        let mut values: Vec<u32> = as_completed(&futures, None)
            .map(|f| *f.expect("no timeout").result().expect("a value"))
            .collect();
        values.sort_unstable();
        assert_eq!(values, [1, 2]);
        completer.join().unwrap();
    });
}

#[test]
fn promise_drop_vs_cancel() {
    loom::model(|| {
        let p = Promise::<u32>::new();
        let f = p.future();
        let calls = count_callbacks(&f);
        let dropper = thread::spawn(move || drop(p));
        let cancelled = f.cancel();
        dropper.join().unwrap();

        let outcome = f.try_result().expect("done either way");
        if cancelled {
            assert_eq!(outcome, Err(TaskError::Cancelled));
        } else {
            assert!(
                matches!(outcome, Err(TaskError::Broken { .. })),
                "{outcome:?}"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn try_unwrap_vs_complete_and_drop() {
    loom::model(|| {
        let p = Promise::<u32>::new();
        let f = p.future();
        let producer = thread::spawn(move || {
            p.set_result(9).unwrap();
            drop(p);
        });
        // The sole user handle always gets the value, never its handle back.
        match f.try_unwrap() {
            Ok(outcome) => assert_eq!(outcome, Ok(9)),
            Err(_) => panic!("handle given back though it was the only one"),
        }
        producer.join().unwrap();
    });
}
