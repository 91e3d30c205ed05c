//! Done-callbacks: outcome seen, order, thread, panics, already-done futures.
//!
//! Ported from CPython's `Lib/test/test_concurrent_futures/test_future.py` (3.13),
//! `FutureTests`: `test_done_callback_with_result`, `test_done_callback_with_exception`,
//! `test_done_callback_with_cancel`, `test_done_callback_raises`,
//! `test_done_callback_already_successful`, `test_done_callback_already_failed`,
//! `test_done_callback_already_cancelled`, `test_done_callback_raises_already_succeeded`.
//!
//! Python logs a raising callback with `LOGGER.exception`; here a panicking callback is caught
//! and reported through `log::error!`, which a capturing logger checks.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, ThreadId};

use cf_futures_core::{Future, Promise, State, TaskError};
use common::{failure, fixture, logger, within, Kind, LONG, VALUE};

/// What a callback saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    state: State,
    outcome: Result<u32, TaskError>,
    thread: ThreadId,
}

/// A callback that reports what it saw on a channel.
fn reporter(tx: mpsc::Sender<Seen>) -> impl FnOnce(&Future<u32>) + Send + 'static {
    move |f| {
        let _ = tx.send(Seen {
            state: f.state(),
            // Never blocks: a callback only runs on a done future.
            outcome: f.try_result().expect("done in a callback").copied(),
            thread: thread::current().id(),
        });
    }
}

/// Completes a pending future from another thread as `kind` says; returns that thread's id.
fn complete_elsewhere(p: Promise<u32>, f: &Future<u32>, kind: Kind) -> ThreadId {
    let f = f.clone();
    within("completing thread", move || {
        match kind {
            Kind::Finished => {
                assert!(p.set_running_or_notify_cancel());
                p.set_result(VALUE).unwrap();
            }
            Kind::Failed => {
                assert!(p.set_running_or_notify_cancel());
                p.set_error(failure()).unwrap();
            }
            Kind::Cancelled => assert!(f.cancel()),
            other => unreachable!("{other:?} is not done"),
        }
        thread::current().id()
    })
}

#[test]
fn callbacks_see_the_outcome_and_run_in_the_completing_thread() {
    let expected = [
        (Kind::Finished, State::Finished, Ok(VALUE)),
        (Kind::Failed, State::Finished, Err(failure())),
        (Kind::Cancelled, State::Cancelled, Err(TaskError::Cancelled)),
    ];
    for (kind, state, outcome) in expected {
        let (p, f) = fixture(Kind::Pending);
        let (tx, rx) = mpsc::channel();
        f.add_done_callback(reporter(tx));
        assert!(
            rx.try_recv().is_err(),
            "{kind:?}: ran before the future was done"
        );
        let completer = complete_elsewhere(p, &f, kind);
        let seen = rx.recv_timeout(LONG).expect("callback ran");
        assert_eq!(
            seen,
            Seen {
                state,
                outcome,
                thread: completer
            },
            "{kind:?}"
        );
        assert!(rx.try_recv().is_err(), "{kind:?}: ran twice");
    }
}

#[test]
fn callbacks_run_once_each_in_the_order_added() {
    let (p, f) = fixture(Kind::Running);
    let order = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5 {
        let order = Arc::clone(&order);
        f.add_done_callback(move |_| order.lock().unwrap().push(i));
    }
    p.set_result(1).unwrap();
    // Completion after the fact (refused) and dropping the promise run nothing again.
    assert!(p.set_result(2).is_err());
    drop(p);
    assert!(!f.cancel());
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[test]
fn cancelling_a_pending_future_runs_its_callbacks() {
    let (_p, f) = fixture(Kind::Pending);
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(reporter(tx));
    assert!(f.cancel());
    let seen = rx
        .try_recv()
        .expect("ran at once, in the cancelling thread");
    assert_eq!(seen.state, State::Cancelled);
    assert_eq!(seen.thread, thread::current().id());
    // Cancelling again does not run it again.
    assert!(f.cancel());
    assert!(rx.try_recv().is_err());
}

#[test]
fn dropping_an_unresolved_promise_runs_the_callbacks_with_broken() {
    let (p, f) = fixture(Kind::Running);
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(reporter(tx));
    drop(p);
    let seen = rx.try_recv().expect("ran when the promise dropped");
    assert!(
        matches!(seen.outcome, Err(TaskError::Broken { .. })),
        "{seen:?}"
    );
}

#[test]
fn callback_added_to_a_done_future_runs_at_once_in_the_callers_thread() {
    for kind in [Kind::Finished, Kind::Failed, Kind::Cancelled] {
        let (_p, f) = fixture(kind);
        let expected = f.result_timeout(LONG).copied();
        let (tx, rx) = mpsc::channel();
        f.add_done_callback(reporter(tx));
        // Already delivered when add_done_callback returned: no waiting involved.
        let seen = rx.try_recv().expect("ran at once");
        assert_eq!(seen.thread, thread::current().id(), "{kind:?}");
        assert_eq!(seen.outcome, expected, "{kind:?}");
    }
}

#[test]
fn a_callback_may_add_another_callback() {
    let (p, f) = fixture(Kind::Running);
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |f| {
        // The future is done now, so this one runs at once, nested.
        f.add_done_callback(reporter(tx));
    });
    p.set_result(VALUE).unwrap();
    assert_eq!(rx.try_recv().expect("nested ran").outcome, Ok(VALUE));
}

#[test]
fn a_callback_may_block_on_the_future_it_watches() {
    // Callbacks run after the lock is released and the state is final: result() must not
    // deadlock inside one.
    let (p, f) = fixture(Kind::Running);
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |f| {
        let _ = tx.send(f.result_timeout(LONG).copied());
    });
    within("set_result with a blocking callback", move || {
        p.set_result(3).unwrap()
    });
    assert_eq!(rx.recv_timeout(LONG).expect("ran"), Ok(3));
}

#[test]
fn a_panicking_callback_does_not_stop_later_ones_and_is_logged() {
    let logger = logger();
    let cases = [
        (Kind::Finished, "finished", "cb-panic-after-success"),
        (Kind::Failed, "finished", "cb-panic-after-failure"),
        (Kind::Cancelled, "cancelled", "cb-panic-after-cancel"),
    ];
    for (kind, state_word, marker) in cases {
        let (p, f) = fixture(Kind::Pending);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&ran);
        f.add_done_callback(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
        f.add_done_callback(move |_| panic!("{marker}"));
        let r = Arc::clone(&ran);
        f.add_done_callback(move |_| {
            r.fetch_add(10, Ordering::SeqCst);
        });
        complete_elsewhere(p, &f, kind);
        assert_eq!(ran.load(Ordering::SeqCst), 11, "{kind:?}: both others ran");
        let logged = logger.find(log::Level::Error, marker);
        assert_eq!(logged.len(), 1, "{kind:?}: logged once: {logged:?}");
        assert!(
            logged[0].contains(state_word),
            "{kind:?}: the log names the state: {}",
            logged[0]
        );
    }
}

#[test]
fn a_panicking_callback_on_a_done_future_is_logged_not_propagated() {
    let logger = logger();
    let (_p, f) = fixture(Kind::Finished);
    // Must return normally: the panic is caught inside add_done_callback.
    f.add_done_callback(|_| panic!("cb-panic-already-succeeded"));
    let logged = logger.find(log::Level::Error, "cb-panic-already-succeeded");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("finished"), "{}", logged[0]);
    // The future is unaffected.
    assert_eq!(f.result_timeout(LONG), Ok(&VALUE));
}

#[test]
fn the_completer_does_not_see_a_callback_panic() {
    let (p, f) = fixture(Kind::Running);
    f.add_done_callback(|_| panic!("cb-panic-completer"));
    // set_result returns Ok: the task did complete, whatever its observers did.
    within("set_result", move || p.set_result(1)).unwrap();
    assert_eq!(f.result_timeout(LONG), Ok(&1));
}

#[test]
fn callbacks_racing_completion_run_exactly_once() {
    // Callbacks added from several threads while another completes: each runs exactly once,
    // whether it was queued (runs in the completer) or added late (runs in its adder).
    let rounds = if cfg!(miri) { 5 } else { 200 };
    within("callback race", move || {
        for _ in 0..rounds {
            let (p, f) = fixture(Kind::Running);
            let count = Arc::new(AtomicUsize::new(0));
            let adders: Vec<_> = (0..4)
                .map(|_| {
                    let (f, count) = (f.clone(), Arc::clone(&count));
                    thread::spawn(move || {
                        for _ in 0..25 {
                            let count = Arc::clone(&count);
                            f.add_done_callback(move |_| {
                                count.fetch_add(1, Ordering::SeqCst);
                            });
                        }
                    })
                })
                .collect();
            p.set_result(0).unwrap();
            for a in adders {
                a.join().unwrap();
            }
            assert_eq!(count.load(Ordering::SeqCst), 100);
        }
    });
}

/// `try_unwrap` inside one of the future's own done-callbacks: the completion holds the promise
/// until the callbacks return, so waiting for it would wait forever (and wedge the thread that
/// completes the future: a pool's worker). It gives the handle back instead.
#[test]
fn try_unwrap_in_the_futures_own_callback_gives_the_handle_back() {
    let promise = Promise::<String>::new();
    let future = promise.future();
    let mine = future.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    future.add_done_callback(move |_| {
        let _ = tx.send(mine.try_unwrap().map_err(|back| back.done()));
    });
    drop(future);
    let setter = std::thread::spawn(move || promise.set_result("v".into()).unwrap());
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("try_unwrap returned inside the callback");
    assert_eq!(got, Err(true), "the handle comes back, done");
    setter.join().unwrap();
}
