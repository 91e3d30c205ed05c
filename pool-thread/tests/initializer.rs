//! The initializer: once per worker thread; a failure breaks the pool.
//!
//! Ported from CPython's `Lib/test/test_concurrent_futures/test_init.py`
//! (`InitializerMixin`, `FailingInitializerMixin`) for threads.

mod common;

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cf_pool_thread::{Executor, SubmitError, TaskError, ThreadPoolExecutor};
use common::{Latch, OpenOnDrop, LIMIT};

thread_local! {
    static CONNECTION: Cell<Option<usize>> = const { Cell::new(None) };
}

#[test]
fn initializer_runs_once_per_worker_thread_and_its_state_is_visible() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let pool = ThreadPoolExecutor::builder()
        .max_workers(3)
        .initializer(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            CONNECTION.with(|c| c.set(Some(n)));
            Ok(())
        })
        .build()
        .unwrap();
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let running = Arc::new(AtomicUsize::new(0));
    let futures: Vec<_> = (0..30)
        .map(|_| {
            let (latch, running) = (latch.clone(), Arc::clone(&running));
            pool.spawn(move || {
                running.fetch_add(1, Ordering::SeqCst);
                latch.wait();
                CONNECTION.with(Cell::get)
            })
            .unwrap()
        })
        .collect();
    common::wait_until("3 tasks running", || running.load(Ordering::SeqCst) == 3);
    latch.open();
    let mut seen: Vec<usize> = futures
        .iter()
        .map(|f| {
            f.result_timeout(LIMIT)
                .unwrap()
                .expect("initialized thread")
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [0, 1, 2], "each of the 3 threads has its own state");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(pool.worker_threads(), 3);
}

fn assert_names_initializer(reason: &str, needle: &str) {
    assert!(
        reason.contains(needle),
        "reason {reason:?} should contain {needle:?}"
    );
    assert!(reason.contains("initializer"), "{reason:?}");
}

#[test]
fn failing_initializer_breaks_the_pool() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .thread_name_prefix("doomed")
        .initializer(|| Err("database unreachable".to_owned()))
        .build()
        .unwrap();
    let futures: Vec<_> = (0..10_u64)
        .filter_map(|i| pool.spawn(move || i).ok())
        .collect();
    assert!(!futures.is_empty(), "the first submit cannot know yet");
    for f in &futures {
        match f.result_timeout(LIMIT) {
            Err(TaskError::Broken { reason }) => {
                assert_names_initializer(&reason, "database unreachable");
                assert!(reason.contains("doomed_"), "names the thread: {reason:?}");
            }
            other => panic!("expected Broken, got {other:?}"),
        }
    }
    match pool.submit(|x: u8| x, 1) {
        Err(SubmitError::Broken { reason }) => {
            assert_names_initializer(&reason, "database unreachable");
        }
        other => panic!("expected Broken, got {other:?}"),
    }
    assert!(format!("{pool:?}").contains("database unreachable"));
}

#[test]
fn panicking_initializer_breaks_the_pool_too() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(|| panic!("config file missing"))
        .build()
        .unwrap();
    let f = pool.spawn(|| 1).unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Broken { reason }) => {
            assert_names_initializer(&reason, "config file missing");
            assert!(reason.contains("panicked"), "{reason:?}");
        }
        other => panic!("expected Broken, got {other:?}"),
    }
    assert!(matches!(pool.spawn(|| 2), Err(SubmitError::Broken { .. })));
}

#[test]
fn a_late_initializer_failure_spares_running_tasks() {
    // The first thread initializes, the second fails: the first's running task still finishes,
    // the queued ones fail.
    let started = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&started);
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .initializer(move || match count.fetch_add(1, Ordering::SeqCst) {
            0 => Ok(()),
            _ => Err("second worker refused".to_owned()),
        })
        .build()
        .unwrap();
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let running = {
        let latch = latch.clone();
        pool.spawn(move || {
            latch.wait();
            "finished"
        })
        .unwrap()
    };
    common::wait_until("first task running", || running.running());
    let queued = pool.spawn(|| "never").unwrap();
    assert!(matches!(
        queued.result_timeout(LIMIT),
        Err(TaskError::Broken { .. })
    ));
    latch.open();
    assert_eq!(running.result_timeout(LIMIT), Ok(&"finished"));
    assert!(matches!(pool.spawn(|| ""), Err(SubmitError::Broken { .. })));
}
