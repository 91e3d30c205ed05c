//! `Future<T>` as a `std::future::Future`: awaiting a result produced by a plain thread.
//!
//! No CPython counterpart (its `concurrent.futures.Future` is bridged to asyncio by
//! `asyncio.wrap_future`); these check the same promise: awaiting never blocks the runtime,
//! a never-finishing future loses a `select!` against a timer, and many awaits wake.
#![cfg(not(loom))] // tokio does not build under `--cfg loom`

mod common;

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::Duration;

use cf_futures_core::{Future, Promise, TaskError};
use common::{failure, fixture, within, Kind, LONG, SETTLE, VALUE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_a_future_completed_from_a_std_thread() {
    let (p, f) = fixture(Kind::Pending);
    let worker = thread::spawn(move || {
        thread::sleep(SETTLE);
        assert!(p.set_running_or_notify_cancel());
        p.set_result(VALUE).unwrap();
    });
    let got = tokio::time::timeout(LONG, f).await.expect("woken in time");
    assert_eq!(got, Ok(VALUE));
    worker.join().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn await_an_error_on_a_single_threaded_runtime() {
    let (p, f) = fixture(Kind::Running);
    let worker = thread::spawn(move || {
        thread::sleep(SETTLE);
        p.set_error(failure()).unwrap();
    });
    let got = tokio::time::timeout(LONG, f).await.expect("woken in time");
    assert_eq!(got, Err(failure()));
    worker.join().unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn await_an_already_done_future() {
    for kind in [Kind::Finished, Kind::Failed, Kind::Cancelled] {
        let (_p, f) = fixture(kind);
        let expected = f.result_timeout(LONG).copied();
        assert_eq!(
            tokio::time::timeout(LONG, f.clone()).await.unwrap(),
            expected
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn await_sees_cancel_and_a_dropped_promise() {
    let (_p, f) = fixture(Kind::Pending);
    let g = f.clone();
    thread::spawn(move || {
        thread::sleep(SETTLE);
        assert!(g.cancel());
    });
    assert_eq!(
        tokio::time::timeout(LONG, f).await.unwrap(),
        Err(TaskError::Cancelled)
    );

    let (p, f) = fixture(Kind::Running);
    thread::spawn(move || {
        thread::sleep(SETTLE);
        drop(p);
    });
    let got = tokio::time::timeout(LONG, f).await.unwrap();
    assert!(matches!(got, Err(TaskError::Broken { .. })), "{got:?}");
}

#[test]
fn select_with_a_timer_takes_the_timeout_branch_when_the_future_never_completes() {
    // On a single-threaded runtime, so a poll that blocked would starve the timer too. The
    // runtime runs inside `within`, which turns that hang into a failure.
    within("select on a current_thread runtime", || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            // The promise stays alive (dropping it would complete the future with Broken).
            let (p, f) = fixture(Kind::Running);
            let timed_out = tokio::select! {
                r = f.clone() => panic!("a never-completed future resolved: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => true,
            };
            assert!(timed_out);
            // The abandoned await left the future intact; it completes normally afterwards.
            p.set_result(1).unwrap();
            assert_eq!(tokio::time::timeout(LONG, f).await.unwrap(), Ok(1));
        });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_futures_awaited_concurrently() {
    const N: u32 = 200;
    let promises: Vec<Promise<u32>> = (0..N).map(|_| Promise::new()).collect();
    let futures: Vec<Future<u32>> = promises.iter().map(Promise::future).collect();
    let tasks: Vec<_> = futures.into_iter().map(|f| tokio::spawn(f)).collect();
    let mut chunks: Vec<Vec<(u32, Promise<u32>)>> = (0..4).map(|_| Vec::new()).collect();
    for (i, p) in (0..N).zip(promises) {
        chunks[i as usize % 4].push((i, p));
    }
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|mine| {
            thread::spawn(move || {
                for (i, p) in mine {
                    p.set_result(i).unwrap();
                }
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let got = tokio::time::timeout(LONG, task)
            .await
            .unwrap_or_else(|_| panic!("await {i} was never woken"))
            .expect("task did not panic");
        assert_eq!(got, Ok(i as u32));
    }
    for t in threads {
        t.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_future_awaited_by_many_tasks() {
    let (p, f) = fixture(Kind::Running);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(f)
        })
        .collect();
    thread::spawn(move || {
        thread::sleep(SETTLE);
        p.set_result(VALUE).unwrap();
    });
    for t in tasks {
        let got = tokio::time::timeout(LONG, t).await.unwrap().unwrap();
        assert_eq!(got, Ok(VALUE));
    }
}

/// A waker that counts how often it was woken; its `Arc`'s strong count tells whether the
/// future still holds it.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_once(f: &mut Future<u32>, waker: &Arc<Counting>) -> bool {
    let waker = Waker::from(Arc::clone(waker));
    let mut cx = Context::from_waker(&waker);
    Pin::new(f).poll(&mut cx).is_ready()
}

/// An await given up (a timeout that fired, a `select!` branch not taken) leaves no waker, and
/// so no task, behind with a future that is still pending: each was kept until the future
/// completed, about 1.3 KB per abandoned `tokio::time::timeout` over a long task.
#[test]
fn an_abandoned_await_leaves_no_waker_behind() {
    let (p, f) = fixture(Kind::Pending);
    let wakers: Vec<_> = (0..100).map(|_| Arc::new(Counting::default())).collect();
    for waker in &wakers {
        let mut handle = f.clone();
        assert!(!poll_once(&mut handle, waker));
        assert_eq!(Arc::strong_count(waker), 2, "held while awaited");
        drop(handle);
        assert_eq!(Arc::strong_count(waker), 1, "given back with the handle");
    }
    p.set_result(VALUE).unwrap();
    assert!(wakers.iter().all(|w| w.0.load(Ordering::SeqCst) == 0));
}

/// A handle polled from another task swaps its waker rather than adding one; the future wakes
/// the latest, and every handle still awaited.
#[test]
fn a_handle_keeps_only_its_latest_waker_and_completion_wakes_every_awaited_handle() {
    let (p, f) = fixture(Kind::Pending);
    let (first, second, other) = (
        Arc::new(Counting::default()),
        Arc::new(Counting::default()),
        Arc::new(Counting::default()),
    );
    let mut a = f.clone();
    let mut b = f.clone();
    assert!(!poll_once(&mut a, &first));
    assert!(!poll_once(&mut a, &first));
    assert!(!poll_once(&mut a, &second));
    assert!(!poll_once(&mut b, &other));
    assert_eq!(Arc::strong_count(&first), 1, "replaced");
    assert_eq!(Arc::strong_count(&second), 2);
    p.set_result(VALUE).unwrap();
    let woken = |w: &Arc<Counting>| w.0.load(Ordering::SeqCst);
    assert_eq!((woken(&first), woken(&second), woken(&other)), (0, 1, 1));
    assert!(poll_once(&mut a, &second));
    assert!(poll_once(&mut b, &other));
    assert_eq!(Arc::strong_count(&second), 1);
    assert_eq!(Arc::strong_count(&other), 1);
    drop((a, b));
}
