//! `as_completed(&futures, timeout)`.
//!
//! Ported from CPython's `Lib/test/test_concurrent_futures/test_as_completed.py` (3.13),
//! `AsCompletedTests`: `test_no_timeout`, `test_future_times_out` (timeout 0 yields the finished
//! ones then raises), `test_duplicate_futures`, `test_free_reference_yielded_future`,
//! `test_correct_timeout_exception_msg` ("N (of M) futures unfinished"); plus yielding already
//! finished futures first and many futures completing concurrently.

mod common;

use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use cf_futures_core::{as_completed, Future, Promise, TimeoutError};
use common::{fixture, within, Kind, Tracked, LONG, SETTLE, VALUE};

#[test]
fn yields_every_future() {
    let promises: Vec<Promise<u32>> = (0..10).map(|_| Promise::new()).collect();
    let futures: Vec<Future<u32>> = promises.iter().map(Promise::future).collect();
    let worker = thread::spawn(move || {
        // Complete out of order, some with errors, one cancelled.
        for (i, p) in promises.into_iter().enumerate().rev() {
            match i % 3 {
                0 => p.set_result(i as u32).unwrap(),
                1 => p.set_error(common::failure()).unwrap(),
                _ => assert!(p.cancel()),
            }
        }
    });
    let expected = futures.clone();
    let yielded: Vec<Future<u32>> = within("as_completed", move || {
        as_completed(&futures, Some(LONG))
            .collect::<Result<_, _>>()
            .expect("no timeout")
    });
    assert_eq!(yielded.len(), expected.len());
    for f in &expected {
        assert!(yielded.contains(f), "{f:?} not yielded");
        assert!(f.done());
    }
    worker.join().unwrap();
}

#[test]
fn yields_finished_futures_first_then_in_completion_order() {
    let (p0, first_pending) = fixture(Kind::Pending);
    let (_a, finished) = fixture(Kind::Finished);
    let (p2, second_pending) = fixture(Kind::Running);
    let (_b, cancelled) = fixture(Kind::Cancelled);
    let fs = [
        first_pending.clone(),
        finished.clone(),
        second_pending.clone(),
        cancelled.clone(),
    ];
    let mut it = as_completed(&fs, Some(LONG));
    let next =
        |it: &mut cf_futures_core::AsCompleted<u32>| it.next().expect("more").expect("no timeout");
    // The two already done come first, before anything else completes.
    let early = [next(&mut it), next(&mut it)];
    assert!(early.contains(&finished) && early.contains(&cancelled));
    // Then each as it completes: second before first because it completes first.
    p2.set_result(2).unwrap();
    assert!(next(&mut it) == second_pending);
    let setter = thread::spawn(move || {
        thread::sleep(SETTLE);
        p0.set_result(0).unwrap();
    });
    let (mut it, got) = within("as_completed next", move || {
        let got = it.next();
        (it, got)
    });
    assert!(got.expect("more").expect("no timeout") == first_pending);
    assert!(it.next().is_none());
    assert!(it.next().is_none(), "fused");
    setter.join().unwrap();
}

#[test]
fn duplicates_are_yielded_once() {
    let (_a, f) = fixture(Kind::Finished);
    let (p, g) = fixture(Kind::Running);
    p.set_result(1).unwrap();
    let yielded: Vec<_> = as_completed([&f, &g, &f, &g, &f], Some(LONG))
        .map(|r| r.expect("no timeout"))
        .collect();
    assert_eq!(yielded.len(), 2);
    assert!(yielded.contains(&f) && yielded.contains(&g));
}

#[test]
fn timeout_zero_yields_the_finished_then_errors() {
    let (_a, finished) = fixture(Kind::Finished);
    let (_b, failed) = fixture(Kind::Failed);
    let (_c, cancelled) = fixture(Kind::Cancelled);
    let (_d, pending) = fixture(Kind::Pending);
    let (_e, running) = fixture(Kind::Running);
    let fs = [
        pending.clone(),
        finished.clone(),
        running.clone(),
        failed.clone(),
        cancelled.clone(),
        pending.clone(),
    ];
    let mut it = as_completed(&fs, Some(Duration::ZERO));
    let mut yielded = Vec::new();
    let err = loop {
        match it.next().expect("ends with an error, not silently") {
            Ok(f) => yielded.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(yielded.len(), 3);
    for f in [&finished, &failed, &cancelled] {
        assert!(yielded.contains(f), "{f:?} not yielded");
    }
    assert_eq!(
        err,
        TimeoutError {
            unfinished: 2,
            total: 5
        }
    );
    assert_eq!(err.to_string(), "2 (of 5) futures unfinished");
    assert!(it.next().is_none(), "nothing after the timeout error");
}

#[test]
fn timeout_error_counts_distinct_futures() {
    let (_p, pending) = fixture(Kind::Pending);
    let fs = [pending.clone(), pending.clone(), pending];
    let err = as_completed(&fs, Some(Duration::from_millis(10)))
        .next()
        .expect("an item")
        .expect_err("times out");
    assert_eq!(err.to_string(), "1 (of 1) futures unfinished");
}

#[test]
fn the_timeout_runs_from_the_call() {
    // A nonzero timeout that passes while the iterator sits unused: the first `next` yields the
    // finished future and then reports the pending one without waiting again.
    let (_a, finished) = fixture(Kind::Finished);
    let (_b, pending) = fixture(Kind::Pending);
    let fs = [finished, pending];
    let mut it = as_completed(&fs, Some(SETTLE));
    thread::sleep(SETTLE * 2);
    assert!(it.next().expect("an item").is_ok());
    let err = it.next().expect("an item").expect_err("timed out");
    assert_eq!((err.unfinished, err.total), (1, 2));
}

#[test]
fn empty_input_ends_at_once() {
    let none: [Future<u32>; 0] = [];
    assert!(as_completed(&none, None).next().is_none());
    assert!(as_completed(&none, Some(Duration::ZERO)).next().is_none());
}

#[test]
fn many_futures_completed_concurrently_are_all_yielded() {
    const FUTURES: usize = 100;
    let rounds = if cfg!(miri) { 1 } else { 5 };
    for round in 0..rounds {
        let promises: Vec<Promise<u32>> = (0..FUTURES).map(|_| Promise::new()).collect();
        let futures: Vec<Future<u32>> = promises.iter().map(Promise::future).collect();
        let it = as_completed(&futures, Some(LONG));
        let mut chunks: Vec<Vec<Promise<u32>>> = (0..10).map(|_| Vec::new()).collect();
        for (i, p) in promises.into_iter().enumerate() {
            chunks[i % 10].push(p);
        }
        let completers: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                thread::spawn(move || {
                    for p in chunk {
                        p.set_result(VALUE).unwrap();
                    }
                })
            })
            .collect();
        // A lost wake-up ends in the timeout error instead.
        let yielded: Vec<_> = it
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(yielded.len(), FUTURES);
        for c in completers {
            c.join().unwrap();
        }
    }
}

#[test]
fn a_yielded_future_is_not_kept_alive() {
    // CPython's test_free_reference_yielded_future: once the caller drops a yielded future,
    // nothing in the (still running) iterator refers to it.
    let (value, drops) = Tracked::new();
    let p = Promise::new();
    p.set_result(value).unwrap();
    let done = p.future();
    drop(p);
    let blocker = Promise::<Tracked>::new();
    let late = Promise::<Tracked>::new();
    let (late_value, late_drops) = Tracked::new();
    let futures = vec![done, blocker.future(), late.future()];
    let mut it = as_completed(&futures, Some(LONG));
    drop(futures);

    let yielded = it.next().expect("an item").expect("no timeout");
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    // The sole handle left is the yielded one: try_unwrap proves it and moves the value out.
    let Ok(value) = yielded.try_unwrap() else {
        panic!("the iterator holds no clone");
    };
    drop(value);
    assert_eq!(drops.load(Ordering::SeqCst), 1);

    // Also for a future that completes while the iterator waits on it.
    let setter = thread::spawn(move || {
        thread::sleep(SETTLE);
        late.set_result(late_value).unwrap();
    });
    let (it, yielded) = within("as_completed next", move || {
        let y = it.next();
        (it, y)
    });
    setter.join().unwrap();
    drop(yielded.expect("an item").expect("no timeout"));
    assert_eq!(late_drops.load(Ordering::SeqCst), 1);
    drop(it);
    drop(blocker);
}

#[test]
fn dropping_the_iterator_early_leaves_the_futures_usable() {
    let (p, f) = fixture(Kind::Pending);
    let it = as_completed([&f], Some(LONG));
    assert_eq!(it.size_hint(), (0, Some(2)));
    drop(it);
    p.set_result(5).unwrap();
    assert_eq!(f.result_timeout(LONG), Ok(&5));
    assert_eq!(as_completed([&f], Some(Duration::ZERO)).count(), 1);
}

#[test]
fn a_huge_timeout_means_no_deadline_not_an_overflow() {
    let (p, f) = fixture(Kind::Running);
    let setter = thread::spawn(move || {
        thread::sleep(SETTLE);
        p.set_result(VALUE).unwrap();
    });
    let fs = [f.clone()];
    let yielded = within("as_completed(MAX)", move || {
        as_completed(&fs, Some(Duration::MAX)).collect::<Vec<_>>()
    });
    assert_eq!(yielded.len(), 1);
    assert!(yielded[0].as_ref().expect("no timeout") == &f);
    setter.join().unwrap();
}

#[test]
fn futures_done_after_the_call_are_found_by_looking_again_then_by_waiting() {
    // The iterator looks at unfinished futures again (without registering) while that keeps
    // finding a good share of them done, and registers only when it would block: each path
    // must yield every future exactly once.
    let promises: Vec<Promise<u32>> = (0..40).map(|_| Promise::new()).collect();
    let futures: Vec<Future<u32>> = promises.iter().map(Promise::future).collect();
    promises[..10].iter().for_each(|p| p.set_result(1).unwrap());
    let mut it = as_completed(&futures, Some(LONG));
    let mut yielded = Vec::new();
    for _ in 0..10 {
        yielded.push(it.next().expect("more").expect("no timeout"));
    }
    // Done after the call: found by looking again.
    promises[10..30]
        .iter()
        .for_each(|p| p.set_result(2).unwrap());
    for _ in 0..20 {
        yielded.push(it.next().expect("more").expect("no timeout"));
    }
    // Done while the iterator waits: found through the registered waiter.
    let rest: Vec<Promise<u32>> = promises.into_iter().skip(30).collect();
    let setter = thread::spawn(move || {
        thread::sleep(SETTLE);
        for p in rest {
            p.set_result(3).unwrap();
        }
    });
    let (it, yielded) = within("as_completed rest", move || {
        let mut it = it;
        for _ in 0..10 {
            yielded.push(it.next().expect("more").expect("no timeout"));
        }
        (it, yielded)
    });
    let mut it = it;
    assert!(it.next().is_none());
    setter.join().unwrap();
    let mut ids: Vec<_> = yielded
        .iter()
        .map(|f| futures.iter().position(|g| g == f))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "each future yielded once");
}

/// The same future by other handles, not only the same handle again: each future once.
#[test]
fn repeats_by_other_handles_are_yielded_once() {
    let promises: Vec<Promise<u32>> = (0..3).map(|_| Promise::new()).collect();
    for (i, p) in promises.iter().enumerate() {
        p.set_result(i as u32).unwrap();
    }
    let fs: Vec<Future<u32>> = [0, 1, 0, 2, 1, 0]
        .iter()
        .map(|&i| promises[i].future())
        .collect();
    let yielded: Vec<u32> = as_completed(&fs, Some(LONG))
        .map(|r| *r.expect("no timeout").result().expect("a value"))
        .collect();
    assert_eq!(yielded, [0, 1, 2]);
}

/// A repeat that comes after many distinct futures, each held in one place only, is still
/// found: whatever the pool does to avoid a set of all of them must not miss it.
#[test]
fn a_late_repeat_of_an_early_future_is_yielded_once() {
    let promises: Vec<Promise<usize>> = (0..200).map(|_| Promise::new()).collect();
    let futures: Vec<Future<usize>> = promises.iter().map(Promise::future).collect();
    for (i, p) in promises.iter().enumerate() {
        p.set_result(i).unwrap();
    }
    for repeat in [0, 99, 199] {
        let input = futures.iter().chain(std::iter::once(&futures[repeat]));
        let mut yielded: Vec<usize> = as_completed(input, Some(LONG))
            .map(|r| *r.expect("no timeout").result().expect("a value"))
            .collect();
        yielded.sort_unstable();
        assert_eq!(yielded, (0..200).collect::<Vec<_>>(), "repeat of #{repeat}");
    }
}

/// Futures the caller also keeps elsewhere (in another list, as map keys) are not taken for
/// repeats.
#[test]
fn futures_held_elsewhere_too_are_all_yielded() {
    let promises: Vec<Promise<usize>> = (0..50).map(|_| Promise::new()).collect();
    let futures: Vec<Future<usize>> = promises.iter().map(Promise::future).collect();
    let elsewhere: Vec<Future<usize>> = futures.iter().step_by(2).cloned().collect();
    for (i, p) in promises.iter().enumerate() {
        p.set_result(i).unwrap();
    }
    assert_eq!(as_completed(&futures, Some(LONG)).count(), 50);
    assert_eq!(elsewhere.len(), 25);
}
