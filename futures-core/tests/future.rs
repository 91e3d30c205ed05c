//! `Future` and `Promise` without an executor: states, cancellation, results, errors.
//!
//! Ported from CPython's `Lib/test/test_concurrent_futures/test_future.py` (3.13),
//! `FutureTests`: `test_cancel`, `test_cancelled`, `test_done`, `test_running`,
//! `test_result_with_timeout`, `test_result_with_success`, `test_result_with_cancel`,
//! `test_exception_with_timeout`, `test_exception_with_success`, `test_multiple_set_result`,
//! `test_multiple_set_exception`, `test_repr`. Callbacks are in `callbacks.rs`.
//!
//! Rust additions: dropping an unresolved `Promise` fails the future with `Broken`;
//! `try_unwrap` moves a non-`Clone` value out; `Send`/`Sync` of the public types.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use cf_futures_core::{
    as_completed, wait, AsCompleted, CodecStage, ExitCause, Future, InvalidStateError, Promise,
    ReturnWhen, State, TaskError, TimeoutError, WaitResult,
};
use common::{failure, fixture, within, Kind, Tracked, ALL_KINDS, LONG, SETTLE, VALUE};

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Future<u32>>();
    send_sync::<Promise<u32>>();
    send_sync::<TaskError>();
    send_sync::<InvalidStateError>();
    send_sync::<TimeoutError>();
    send_sync::<State>();
    send_sync::<ReturnWhen>();
    send_sync::<ExitCause>();
    send_sync::<CodecStage>();
    send_sync::<WaitResult<u32>>();
    send_sync::<AsCompleted<u32>>();
    // A handle to a non-Clone, non-Debug value is still a handle.
    send_sync::<Future<Box<dyn Send + Sync>>>();
}

#[test]
fn state_truth_tables() {
    // (kind, state, cancelled(), done(), running())
    let table = [
        (Kind::Pending, State::Pending, false, false, false),
        (Kind::Running, State::Running, false, false, true),
        (Kind::Cancelled, State::Cancelled, true, true, false),
        (Kind::Failed, State::Finished, false, true, false),
        (Kind::Finished, State::Finished, false, true, false),
    ];
    for (kind, state, cancelled, done, running) in table {
        let (p, f) = fixture(kind);
        assert_eq!(f.state(), state, "{kind:?}");
        assert_eq!(p.state(), state, "{kind:?} (promise side)");
        assert_eq!(f.cancelled(), cancelled, "{kind:?}.cancelled()");
        assert_eq!(f.done(), done, "{kind:?}.done()");
        assert_eq!(f.running(), running, "{kind:?}.running()");
        assert_eq!(state.is_done(), done, "{state:?}.is_done()");
    }
}

#[test]
fn cancel_truth_table() {
    // (kind, cancel() returns, state afterwards)
    let table = [
        (Kind::Pending, true, State::Cancelled),
        (Kind::Running, false, State::Running),
        (Kind::Cancelled, true, State::Cancelled),
        (Kind::Failed, false, State::Finished),
        (Kind::Finished, false, State::Finished),
    ];
    for (kind, returns, after) in table {
        let (_p, f) = fixture(kind);
        assert_eq!(f.cancel(), returns, "{kind:?}.cancel()");
        assert_eq!(f.state(), after, "{kind:?} after cancel()");
        // Idempotent: asking again gives the same answer.
        assert_eq!(f.cancel(), returns, "{kind:?}.cancel() twice");
    }
}

#[test]
fn cancel_through_the_promise_matches_the_future() {
    let (p, f) = fixture(Kind::Pending);
    assert!(p.cancel());
    assert!(f.cancelled());
    assert!(p.cancel());
    let (p, _f) = fixture(Kind::Running);
    assert!(!p.cancel());
}

/// An executor that took an unstarted task back cancels its running future as `cancel` would a
/// pending one: callbacks run, a blocked `result` wakes with `Cancelled`; a finished one stays.
#[test]
fn cancel_unstarted_truth_table() {
    let table = [
        (Kind::Pending, true, State::Cancelled),
        (Kind::Running, true, State::Cancelled),
        (Kind::Cancelled, true, State::Cancelled),
        (Kind::Failed, false, State::Finished),
        (Kind::Finished, false, State::Finished),
    ];
    for (kind, returns, after) in table {
        let (p, f) = fixture(kind);
        assert_eq!(p.cancel_unstarted(), returns, "{kind:?}.cancel_unstarted()");
        assert_eq!(f.state(), after, "{kind:?} after cancel_unstarted()");
    }
    let (p, f) = fixture(Kind::Running);
    let called = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&called);
    f.add_done_callback(move |f| {
        assert!(f.cancelled());
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let waiter = {
        let f = f.clone();
        thread::spawn(move || matches!(f.result_timeout(LONG), Err(TaskError::Cancelled)))
    };
    thread::sleep(SETTLE);
    assert!(p.cancel_unstarted());
    assert!(
        waiter.join().unwrap(),
        "the blocked result() did not end Cancelled"
    );
    assert_eq!(called.load(Ordering::SeqCst), 1);
    assert!(!p.set_running_or_notify_cancel());
}

#[test]
fn a_cancelled_future_is_not_started() {
    let (p, f) = fixture(Kind::Pending);
    assert!(f.cancel());
    assert!(!p.set_running_or_notify_cancel());
    assert_eq!(f.state(), State::Cancelled);
}

#[test]
fn a_running_future_cannot_be_cancelled_and_keeps_its_result() {
    let (p, f) = fixture(Kind::Running);
    assert!(!f.cancel());
    p.set_result(7).unwrap();
    assert_eq!(f.result_timeout(LONG), Ok(&7));
}

#[test]
fn set_running_twice_is_refused_not_undefined() {
    let (p, f) = fixture(Kind::Pending);
    assert!(p.set_running_or_notify_cancel());
    assert!(!p.set_running_or_notify_cancel());
    assert_eq!(f.state(), State::Running);
    p.set_result(1).unwrap();
    assert!(!p.set_running_or_notify_cancel());
    assert_eq!(f.state(), State::Finished);
}

#[test]
fn result_timeout_zero_per_state() {
    for kind in ALL_KINDS {
        let (_p, f) = fixture(kind);
        let got = f.result_timeout(Duration::ZERO);
        match kind {
            Kind::Pending | Kind::Running => assert!(
                matches!(
                    got,
                    Err(TaskError::Timeout {
                        killed_worker: None,
                        ..
                    })
                ),
                "{kind:?}: {got:?}"
            ),
            Kind::Cancelled => assert_eq!(got, Err(TaskError::Cancelled), "{kind:?}"),
            Kind::Failed => assert_eq!(got, Err(failure()), "{kind:?}"),
            Kind::Finished => assert_eq!(got, Ok(&VALUE), "{kind:?}"),
        }
        // try_result agrees, without blocking.
        match kind {
            Kind::Pending | Kind::Running => assert_eq!(f.try_result(), None, "{kind:?}"),
            _ => assert_eq!(f.try_result(), Some(got), "{kind:?}"),
        }
    }
}

#[test]
fn a_timed_out_result_leaves_the_future_as_it_was() {
    let (p, f) = fixture(Kind::Running);
    let err = f.result_timeout(Duration::from_millis(1)).unwrap_err();
    assert!(
        err.to_string().contains("still pending or running"),
        "{err}"
    );
    assert_eq!(f.state(), State::Running);
    p.set_result(3).unwrap();
    assert_eq!(f.result_timeout(LONG), Ok(&3));
}

/// Starts a thread blocked in `result()` and checks that it really is blocked.
fn blocked_reader(f: &Future<u32>) -> mpsc::Receiver<Result<u32, TaskError>> {
    let (tx, rx) = mpsc::channel();
    let f = f.clone();
    thread::spawn(move || {
        let _ = tx.send(f.result().copied());
    });
    thread::sleep(SETTLE);
    assert!(
        rx.try_recv().is_err(),
        "result() returned before the future was done"
    );
    rx
}

#[test]
fn blocked_result_returns_when_another_thread_sets_the_result() {
    let (p, f) = fixture(Kind::Pending);
    let rx = blocked_reader(&f);
    let setter = thread::spawn(move || {
        assert!(p.set_running_or_notify_cancel());
        p.set_result(VALUE).unwrap();
    });
    assert_eq!(rx.recv_timeout(LONG).expect("reader woke up"), Ok(VALUE));
    within("join setter", move || setter.join().unwrap());
}

#[test]
fn blocked_result_returns_when_another_thread_sets_an_error() {
    let (p, f) = fixture(Kind::Running);
    let rx = blocked_reader(&f);
    thread::spawn(move || p.set_error(failure()).unwrap());
    assert_eq!(
        rx.recv_timeout(LONG).expect("reader woke up"),
        Err(failure())
    );
}

#[test]
fn blocked_result_returns_when_another_thread_cancels() {
    let (_p, f) = fixture(Kind::Pending);
    let rx = blocked_reader(&f);
    let g = f.clone();
    thread::spawn(move || assert!(g.cancel()));
    assert_eq!(
        rx.recv_timeout(LONG).expect("reader woke up"),
        Err(TaskError::Cancelled)
    );
}

#[test]
fn many_blocked_readers_all_wake() {
    let (p, f) = fixture(Kind::Pending);
    let readers: Vec<_> = (0..8).map(|_| blocked_reader(&f)).collect();
    p.set_result(9).unwrap();
    for rx in readers {
        assert_eq!(rx.recv_timeout(LONG).expect("reader woke up"), Ok(9));
    }
}

#[test]
fn exception_mirrors_result() {
    for kind in [Kind::Cancelled, Kind::Failed, Kind::Finished] {
        let (_p, f) = fixture(kind);
        let expected = f.result_timeout(LONG).err();
        assert_eq!(f.exception(), expected, "{kind:?}");
        assert_eq!(
            f.exception_timeout(Duration::ZERO),
            Ok(expected),
            "{kind:?}"
        );
    }
    let (_p, f) = fixture(Kind::Finished);
    assert_eq!(f.exception(), None);
    let (_p, f) = fixture(Kind::Failed);
    assert_eq!(f.exception(), Some(failure()));
}

#[test]
fn exception_timeout_on_unfinished_futures() {
    for kind in [Kind::Pending, Kind::Running] {
        let (_p, f) = fixture(kind);
        assert!(
            matches!(
                f.exception_timeout(Duration::ZERO),
                Err(TaskError::Timeout { .. })
            ),
            "{kind:?}"
        );
    }
}

#[test]
fn blocked_exception_returns_when_another_thread_sets_an_error() {
    let (p, f) = fixture(Kind::Running);
    let g = f.clone();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(g.exception());
    });
    thread::sleep(SETTLE);
    p.set_error(failure()).unwrap();
    assert_eq!(rx.recv_timeout(LONG).expect("woke up"), Some(failure()));
}

#[test]
fn setting_a_result_twice_is_refused_and_the_first_stays() {
    let (p, f) = fixture(Kind::Running);
    p.set_result(1).unwrap();
    let err = p.set_result(2).unwrap_err();
    assert_eq!(err.state, State::Finished);
    assert!(err.to_string().contains("finished"), "{err}");
    let err = p.set_error(failure()).unwrap_err();
    assert_eq!(err.state, State::Finished);
    let err = p.set_outcome(Ok(3)).unwrap_err();
    assert_eq!(err.state, State::Finished);
    assert_eq!(f.result_timeout(LONG), Ok(&1));
}

#[test]
fn setting_an_error_twice_is_refused_and_the_first_stays() {
    let (p, f) = fixture(Kind::Running);
    p.set_error(failure()).unwrap();
    let err = p.set_error(TaskError::Cancelled).unwrap_err();
    assert_eq!(err.state, State::Finished);
    let err = p.set_result(5).unwrap_err();
    assert!(err.to_string().contains("finished"), "{err}");
    assert_eq!(f.result_timeout(LONG), Err(failure()));
}

#[test]
fn setting_a_cancelled_future_is_refused_naming_cancelled() {
    let (p, f) = fixture(Kind::Cancelled);
    let err = p.set_result(1).unwrap_err();
    assert_eq!(err.state, State::Cancelled);
    assert!(err.to_string().contains("cancelled"), "{err}");
    assert_eq!(p.set_error(failure()).unwrap_err().state, State::Cancelled);
    assert_eq!(f.state(), State::Cancelled);
    assert_eq!(f.result_timeout(LONG), Err(TaskError::Cancelled));
}

#[test]
fn a_result_may_be_set_without_running_first() {
    // As in Python, `set_result` on a pending future is allowed (an executor that never marks
    // running, e.g. a synchronous one).
    let (p, f) = fixture(Kind::Pending);
    p.set_outcome(Ok(4)).unwrap();
    assert_eq!(f.result_timeout(LONG), Ok(&4));
    assert!(!f.cancel());
}

#[test]
fn debug_shows_state_and_outcome() {
    let text = |kind| {
        let (_p, f) = fixture(kind);
        format!("{f:?}")
    };
    let pending = text(Kind::Pending);
    assert!(pending.contains("Pending"), "{pending}");
    assert!(!pending.contains("result"), "{pending}");
    let running = text(Kind::Running);
    assert!(running.contains("Running"), "{running}");
    let cancelled = text(Kind::Cancelled);
    assert!(cancelled.contains("Cancelled"), "{cancelled}");
    let finished = text(Kind::Finished);
    assert!(finished.contains("Finished"), "{finished}");
    assert!(finished.contains("result: 42"), "{finished}");
    let failed = text(Kind::Failed);
    assert!(failed.contains("Finished"), "{failed}");
    assert!(failed.contains("error: Panicked"), "{failed}");
    assert!(failed.contains("fixture failure"), "{failed}");

    let (p, _f) = fixture(Kind::Running);
    let promise = format!("{p:?}");
    assert!(
        promise.contains("Promise") && promise.contains("Running"),
        "{promise}"
    );
}

#[test]
fn state_display_uses_python_words() {
    let words: Vec<String> = [
        State::Pending,
        State::Running,
        State::Cancelled,
        State::Finished,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(words, ["pending", "running", "cancelled", "finished"]);
}

#[test]
fn dropping_an_unresolved_promise_fails_the_future_with_broken() {
    for kind in [Kind::Pending, Kind::Running] {
        let (p, f) = fixture(kind);
        drop(p);
        assert_eq!(f.state(), State::Finished, "{kind:?}");
        let err = f.result_timeout(LONG).unwrap_err();
        assert!(matches!(err, TaskError::Broken { .. }), "{kind:?}: {err:?}");
        assert!(err.to_string().contains("dropped this task"), "{err}");
    }
}

#[test]
fn dropping_a_resolved_promise_keeps_the_outcome() {
    for kind in [Kind::Cancelled, Kind::Failed, Kind::Finished] {
        let (p, f) = fixture(kind);
        let before = f.result_timeout(LONG).copied();
        drop(p);
        assert_eq!(f.result_timeout(LONG).copied(), before, "{kind:?}");
    }
}

#[test]
fn dropping_the_promise_wakes_a_blocked_reader() {
    let (p, f) = fixture(Kind::Running);
    let rx = blocked_reader(&f);
    thread::spawn(move || drop(p));
    let got = rx.recv_timeout(LONG).expect("reader woke up");
    assert!(matches!(got, Err(TaskError::Broken { .. })), "{got:?}");
}

/// Deliberately neither `Clone` nor `Debug`.
struct NotClone(String);

#[test]
fn try_unwrap_moves_a_non_clone_value_out() {
    let p = Promise::new();
    let f = p.future();
    p.set_result(NotClone("moved".into())).unwrap();
    drop(p);
    let out = f.try_unwrap().ok().expect("sole handle");
    assert_eq!(out.expect("a value").0, "moved");
}

#[test]
fn try_unwrap_gives_the_handle_back_when_clones_exist() {
    let p = Promise::new();
    let f = p.future();
    let clone = f.clone();
    p.set_result(NotClone("shared".into())).unwrap();
    drop(p);
    let f = match f.try_unwrap() {
        Ok(_) => panic!("another handle is alive"),
        Err(f) => f,
    };
    assert!(f == clone, "the same future comes back");
    drop(clone);
    let out = f.try_unwrap().ok().expect("now the sole handle");
    assert_eq!(out.expect("a value").0, "shared");
}

#[test]
fn try_unwrap_waits_for_a_handle_the_executor_drops_with_its_promise() {
    // An executor may keep a handle of its own until it lets go of the promise (a cluster's
    // in-flight record holds both): that handle is not the caller's sharing.
    let p = Promise::new();
    let f = p.future();
    let executors_handle = f.clone();
    let executor = thread::spawn(move || {
        p.set_result(NotClone("mine".into())).unwrap();
        thread::sleep(SETTLE);
        drop(executors_handle);
        drop(p);
    });
    let out = within("try_unwrap", move || {
        f.try_unwrap()
            .ok()
            .map(|r| r.unwrap_or_else(|_| panic!("a value")).0)
    });
    executor.join().unwrap();
    assert_eq!(
        out.as_deref(),
        Some("mine"),
        "the executor's handle counted as sharing"
    );
}

#[test]
fn try_unwrap_returns_the_error_of_a_failed_future() {
    let (p, f) = fixture(Kind::Failed);
    drop(p);
    assert_eq!(f.try_unwrap().ok(), Some(Err(failure())));
}

#[test]
fn try_unwrap_waits_for_completion_and_for_the_promise_to_go() {
    let p = Promise::new();
    let f = p.future();
    let handle = within("try_unwrap", move || {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(f.try_unwrap().ok().map(|r| r.ok().map(|v: NotClone| v.0)));
        });
        thread::sleep(SETTLE);
        assert!(rx.try_recv().is_err(), "try_unwrap returned before done");
        p.set_result(NotClone("late".into())).unwrap();
        thread::sleep(SETTLE);
        // Done, but the promise still holds the state: try_unwrap must keep waiting, not fail.
        assert!(rx.try_recv().is_err(), "try_unwrap returned before release");
        drop(p);
        rx.recv_timeout(LONG).expect("try_unwrap woke up")
    });
    assert_eq!(handle, Some(Some("late".to_owned())));
}

/// The executor's usual sequence on another thread (`set_result`, then drop the promise) racing
/// with the sole owner's `try_unwrap`: the owner must always get the value, never its handle back.
#[test]
fn try_unwrap_racing_the_promise_drop_always_gets_the_value() {
    let rounds = if cfg!(miri) { 10 } else { 2_000 };
    within("try_unwrap race", move || {
        for round in 0..rounds {
            let p = Promise::new();
            let f = p.future();
            let producer = thread::spawn(move || {
                p.set_result(NotClone(round.to_string())).unwrap();
                drop(p);
            });
            match f.try_unwrap() {
                Ok(out) => assert_eq!(out.expect("a value").0, round.to_string()),
                Err(_) => panic!("round {round}: handle given back though it was the only one"),
            }
            producer.join().unwrap();
        }
    });
}

#[test]
fn the_value_is_dropped_with_the_last_handle() {
    let (value, drops) = Tracked::new();
    let p = Promise::new();
    let f = p.future();
    let g = f.clone();
    p.set_result(value).unwrap();
    drop(p);
    drop(f);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "a handle is still alive");
    drop(g);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn futures_compare_and_hash_by_identity() {
    let (a, b) = (Promise::<u32>::new(), Promise::<u32>::new());
    assert!(a.future() == a.future());
    assert!(a.future() != b.future());
    // Hashing is by identity, which the interior mutability never changes.
    #[allow(clippy::mutable_key_type)]
    let set: HashSet<_> = [a.future(), b.future(), a.future()].into_iter().collect();
    assert_eq!(set.len(), 2);
}

#[test]
fn futures_from_one_promise_see_the_same_outcome() {
    let (p, f) = fixture(Kind::Running);
    let g = f.clone();
    p.set_result(11).unwrap();
    assert_eq!(f.result_timeout(LONG), Ok(&11));
    assert_eq!(g.result_timeout(LONG), Ok(&11));
    // `wait`/`as_completed` treat them as one future.
    assert_eq!(
        wait([&f, &g], Some(LONG), ReturnWhen::AllCompleted)
            .done
            .len(),
        1
    );
    assert_eq!(as_completed([&f, &g], Some(LONG)).count(), 1);
}

#[test]
fn a_huge_timeout_means_no_deadline_not_an_overflow() {
    let (_p, done) = fixture(Kind::Finished);
    assert_eq!(done.result_timeout(Duration::MAX), Ok(&VALUE));
    assert_eq!(done.exception_timeout(Duration::MAX), Ok(None));
    let (p, f) = fixture(Kind::Running);
    let got = within("result_timeout(MAX)", move || {
        let g = f.clone();
        let setter = thread::spawn(move || {
            thread::sleep(SETTLE);
            p.set_result(2).unwrap();
        });
        let got = g.result_timeout(Duration::MAX).copied();
        setter.join().unwrap();
        got
    });
    assert_eq!(got, Ok(2));
}
