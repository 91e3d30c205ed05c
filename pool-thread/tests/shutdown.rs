//! Shutdown and drop: what is cancelled, what completes, and that every thread is joined.
//!
//! Ported from CPython's `Lib/test/test_concurrent_futures/test_shutdown.py`
//! (`ThreadPoolShutdownTest`: `test_context_manager_shutdown`, `test_del_shutdown`,
//! `test_shutdown_no_wait`, `test_cancel_futures`) with the thread pool's exact counts.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use cf_pool_thread::{Executor, MapOptions, SubmitError, TaskError, ThreadPoolExecutor};
use common::{wait_until, Latch, OpenOnDrop, LIMIT};

fn pool(max_workers: usize) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .max_workers(max_workers)
        .build()
        .unwrap()
}

/// Counts, when a thread exits, that it did: thread-local destructors run before `join`
/// returns.
struct ExitCounter(Arc<AtomicUsize>);

impl Drop for ExitCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<ExitCounter>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn drop_joins_every_worker_thread() {
    let exited = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&exited);
    let pool = ThreadPoolExecutor::builder()
        .max_workers(4)
        .initializer(move || {
            let counter = ExitCounter(Arc::clone(&counter));
            ON_EXIT.with(|e| *e.borrow_mut() = Some(counter));
            Ok(())
        })
        .build()
        .unwrap();
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let futures: Vec<_> = (0..8)
        .map(|_| {
            let latch = latch.clone();
            pool.spawn(move || latch.wait()).unwrap()
        })
        .collect();
    wait_until("4 threads", || pool.worker_threads() == 4);
    latch.open();
    drop(pool);
    assert_eq!(exited.load(Ordering::SeqCst), 4, "every thread exited");
    assert!(futures.iter().all(|f| f.try_result() == Some(Ok(&()))));
}

#[test]
fn shutdown_wait_joins_and_later_drop_is_a_no_op() {
    let pool = pool(2);
    let futures: Vec<_> = (0..10_u32)
        .map(|i| pool.spawn(move || i).unwrap())
        .collect();
    pool.shutdown(true, false);
    assert!(futures.iter().all(|f| f.done()));
    pool.shutdown(true, false);
    drop(pool);
}

#[test]
fn shutdown_cancel_futures_cancels_exactly_the_queued_tasks() {
    let pool = pool(4);
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let futures: Vec<_> = (0..50)
        .map(|_| {
            let latch = latch.clone();
            pool.spawn(move || latch.wait()).unwrap()
        })
        .collect();
    wait_until("4 tasks running", || {
        futures.iter().filter(|f| f.running()).count() == 4
    });
    pool.shutdown(false, true);
    assert_eq!(futures.iter().filter(|f| f.cancelled()).count(), 46);
    latch.open();
    pool.shutdown(true, false);
    assert_eq!(
        futures
            .iter()
            .filter(|f| f.try_result() == Some(Ok(&())))
            .count(),
        4
    );
    assert_eq!(pool.spawn(|| ()).unwrap_err(), SubmitError::Shutdown);
}

#[test]
fn a_cancelled_queued_task_never_runs() {
    let pool = pool(1);
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let blocker = {
        let latch = latch.clone();
        pool.spawn(move || latch.wait()).unwrap()
    };
    let queued = {
        let ran = Arc::clone(&ran);
        pool.spawn(move || ran.fetch_add(1, Ordering::SeqCst))
            .unwrap()
    };
    assert!(queued.cancel());
    latch.open();
    blocker.result_timeout(LIMIT).unwrap();
    pool.shutdown(true, false);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(queued.result(), Err(TaskError::Cancelled));
}

#[test]
fn a_cancelled_batch_item_is_skipped_and_the_rest_run() {
    let pool = pool(1);
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let blocker = {
        let latch = latch.clone();
        pool.spawn(move || latch.wait()).unwrap()
    };
    let items = pool.submit_batch(|x: u32| x * 10, vec![1, 2, 3]).unwrap();
    assert!(items[1].cancel());
    latch.open();
    blocker.result_timeout(LIMIT).unwrap();
    assert_eq!(items[0].result_timeout(LIMIT), Ok(&10));
    assert_eq!(items[1].result_timeout(LIMIT), Err(TaskError::Cancelled));
    assert_eq!(items[2].result_timeout(LIMIT), Ok(&30));
}

#[test]
fn shutdown_no_wait_then_drop_joins() {
    let pool = pool(2);
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let futures: Vec<_> = (0..4)
        .map(|_| {
            let latch = latch.clone();
            pool.spawn(move || latch.wait()).unwrap()
        })
        .collect();
    pool.shutdown(false, false);
    assert!(futures.iter().all(|f| !f.done()));
    latch.open();
    drop(pool);
    assert!(futures.iter().all(|f| f.try_result() == Some(Ok(&()))));
}

#[test]
fn a_task_may_shut_down_its_own_pool_without_deadlock() {
    let pool = Arc::new(pool(1));
    let inner = Arc::clone(&pool);
    let f = pool
        .spawn(move || {
            inner.shutdown(true, false);
            "shut down from inside"
        })
        .unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&"shut down from inside"));
    assert_eq!(pool.spawn(|| "").unwrap_err(), SubmitError::Shutdown);
}

#[test]
fn two_tasks_shutting_down_their_pool_at_once_do_not_wait_for_each_other() {
    // The two calls race: many rounds, so an order that deadlocks one in a hundred shows.
    for _ in 0..if cfg!(miri) { 2 } else { 200 } {
        two_tasks_shut_down_at_once();
    }
}

fn two_tasks_shut_down_at_once() {
    let pool = Arc::new(pool(2));
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let futures: Vec<_> = (0..2)
        .map(|i| {
            let (inner, barrier) = (Arc::clone(&pool), Arc::clone(&barrier));
            pool.spawn(move || {
                // Both tasks run (two workers) before either shuts down.
                barrier.wait();
                inner.shutdown(true, false);
                i
            })
            .unwrap()
        })
        .collect();
    for (f, i) in futures.iter().zip(0..) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&i), "task {i}");
    }
    // A caller outside the pool still waits for both workers to end.
    let (tx, rx) = mpsc::channel();
    let outer = Arc::clone(&pool);
    std::thread::spawn(move || {
        outer.shutdown(true, false);
        let _ = tx.send(());
    });
    rx.recv_timeout(LIMIT)
        .expect("the outside shutdown(wait) returned");
    assert_eq!(pool.worker_threads(), 2);
}

#[test]
fn the_last_handle_dropped_inside_a_task_does_not_deadlock() {
    let pool = Arc::new(pool(2));
    let inner = Arc::clone(&pool);
    let (tx, rx) = mpsc::channel();
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let gate = latch.clone();
    pool.spawn(move || {
        gate.wait();
        drop(inner); // the last handle: runs the pool's Drop on its own worker
        tx.send("dropped").unwrap();
    })
    .unwrap();
    // Not the last handle: the task's is, so the pool's Drop runs on its own worker thread.
    drop(pool);
    latch.open();
    assert_eq!(rx.recv_timeout(LIMIT), Ok("dropped"));
}

#[test]
fn dropping_a_map_iterator_cancels_what_has_not_started() {
    let pool = pool(1);
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let blocker = {
        let latch = latch.clone();
        pool.spawn(move || latch.wait()).unwrap()
    };
    let it = pool
        .map(count_run, 0..10, MapOptions::new().buffersize(4))
        .unwrap();
    drop(it);
    latch.open();
    blocker.result_timeout(LIMIT).unwrap();
    pool.shutdown(true, false);
    assert_eq!(MAP_RUNS.load(Ordering::SeqCst), 0);
}

static MAP_RUNS: AtomicUsize = AtomicUsize::new(0);

fn count_run(x: u64) -> u64 {
    MAP_RUNS.fetch_add(1, Ordering::SeqCst);
    x
}

fn double(x: u64) -> u64 {
    x * 2
}

/// A lazy `map` (with a `buffersize`) over an endless input, shut down while it is consumed:
/// the items already submitted still arrive, then one `Cancelled` for the item the executor no
/// longer took (as if `shutdown(cancel_futures)` had cancelled it; the pool is not broken), and
/// the iteration ends.
#[test]
fn a_lazy_map_shut_down_midway_yields_what_was_submitted_then_cancelled() {
    let pool = pool(2);
    let mut results = pool
        .map(double, 0.., MapOptions::new().buffersize(2))
        .unwrap();
    assert_eq!(results.next(), Some(Ok(0)));
    pool.shutdown(false, false);
    let rest: Vec<_> = results.by_ref().take(10).collect();
    assert_eq!(rest, [Ok(2), Ok(4), Err(TaskError::Cancelled)]);
    assert_eq!(results.next(), None);
    let error = rest[2].clone().unwrap_err().to_string();
    assert!(error.contains("shutdown before a lazy map"), "{error}");
}
