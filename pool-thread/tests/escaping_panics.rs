//! Panics that escape a task's call: a destructor of the user's that panics on a worker thread
//! (a cancelled task's captures, a panic payload, a value nobody holds a future for). Each
//! fails at most its own future; the worker thread lives on and runs the next task, and no
//! waiter hangs.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cf_executor_api::State;
use cf_pool_thread::{Executor, TaskError, ThreadPoolExecutor};
use common::{Latch, OpenOnDrop, LIMIT};

/// Panics when dropped, unless defused; counts the drops that panicked.
struct Bomb {
    armed: bool,
    exploded: Arc<AtomicUsize>,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.armed && !std::thread::panicking() {
            self.exploded.fetch_add(1, Ordering::SeqCst);
            panic!("a bomb went off in a destructor");
        }
    }
}

fn bomb(exploded: &Arc<AtomicUsize>) -> Bomb {
    Bomb {
        armed: true,
        exploded: Arc::clone(exploded),
    }
}

/// One worker, so a dead worker would leave every later task queued forever.
fn one_worker() -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap()
}

/// The next task still runs, on the same (only) worker thread, and the pool counts it idle.
fn assert_worker_lives(pool: &ThreadPoolExecutor) {
    let next = pool.spawn(|| 7).unwrap();
    assert_eq!(next.result_timeout(LIMIT), Ok(&7));
    assert_eq!(pool.worker_threads(), 1);
    common::wait_until("the worker counted idle again", || {
        format!("{pool:?}").contains("available: 1")
    });
}

/// The pool's one worker, held by a task waiting at a latch, so that what is submitted next
/// stays queued; the latch opens on drop too, so a failed assertion never leaves it waiting.
struct Held {
    latch: Latch,
    _open: OpenOnDrop,
    blocker: cf_pool_thread::Future<()>,
}

impl Held {
    fn on(pool: &ThreadPoolExecutor) -> Held {
        let latch = Latch::new();
        let gate = latch.clone();
        Held {
            _open: OpenOnDrop(latch.clone()),
            blocker: pool.spawn(move || gate.wait()).unwrap(),
            latch,
        }
    }

    /// Waits until the holding task runs (it may still be queued right after `on`).
    fn wait_running(&self) {
        common::wait_until("the holding task runs", || {
            self.blocker.state() == State::Running
        });
    }

    /// Lets the holding task finish, and waits for it.
    fn release(self) {
        self.latch.open();
        self.blocker.result_timeout(LIMIT).unwrap();
    }
}

#[test]
#[cfg_attr(miri, ignore = "unwinds through a destructor; nothing here is unsafe")]
fn a_cancelled_task_whose_captures_panic_when_dropped_leaves_the_worker_alive() {
    let pool = one_worker();
    let exploded = Arc::new(AtomicUsize::new(0));
    let held = Held::on(&pool);
    let guard = bomb(&exploded);
    let cancelled = pool
        .spawn(move || {
            let mut guard = guard;
            guard.armed = false;
            1
        })
        .unwrap();
    assert!(cancelled.cancel());
    held.release();
    assert_worker_lives(&pool);
    assert_eq!(
        exploded.load(Ordering::SeqCst),
        1,
        "the captures were dropped"
    );
    assert_eq!(cancelled.state(), State::Cancelled);
}

#[test]
#[cfg_attr(miri, ignore = "unwinds through a destructor; nothing here is unsafe")]
fn a_panic_payload_whose_destructor_panics_fails_only_its_task() {
    let pool = one_worker();
    let exploded = Arc::new(AtomicUsize::new(0));
    let payload = bomb(&exploded);
    let f = pool
        .spawn(move || -> u32 { std::panic::panic_any(payload) })
        .unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Panicked { message, .. }) => {
            assert_eq!(message, "<non-string panic payload>");
        }
        other => panic!("expected the task's panic, got {other:?}"),
    }
    assert_worker_lives(&pool);
    assert_eq!(exploded.load(Ordering::SeqCst), 1);
}

#[test]
#[cfg_attr(miri, ignore = "unwinds through a destructor; nothing here is unsafe")]
fn a_value_whose_destructor_panics_on_the_worker_leaves_the_worker_alive() {
    let pool = one_worker();
    let exploded = Arc::new(AtomicUsize::new(0));
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let gate = latch.clone();
    let counter = Arc::clone(&exploded);
    // Nobody keeps its future, so the worker drops the value when it publishes it.
    drop(
        pool.spawn(move || {
            gate.wait();
            bomb(&counter)
        })
        .unwrap(),
    );
    latch.open();
    assert_worker_lives(&pool);
    assert_eq!(exploded.load(Ordering::SeqCst), 1);
}

#[test]
#[cfg_attr(miri, ignore = "unwinds through a destructor; nothing here is unsafe")]
fn a_batch_item_cancelled_with_an_argument_that_panics_when_dropped_fails_no_other_item() {
    let pool = one_worker();
    let held = Held::on(&pool);
    let futures = pool
        .submit_batch(defuse, vec![Armed(1), Armed(2), Armed(3)])
        .unwrap();
    assert!(futures[1].cancel());
    held.release();
    assert_eq!(futures[0].result_timeout(LIMIT), Ok(&1));
    assert_eq!(futures[1].state(), State::Cancelled);
    // The rest of the batch still runs.
    assert_eq!(futures[2].result_timeout(LIMIT), Ok(&3));
    assert_worker_lives(&pool);
}

/// A batch argument whose destructor panics: the task defuses it; a cancelled item's argument
/// is dropped unused.
#[derive(serde::Serialize, serde::Deserialize)]
struct Armed(u32);

impl Drop for Armed {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("argument {} dropped unused", self.0);
        }
    }
}

fn defuse(armed: Armed) -> u32 {
    let n = armed.0;
    std::mem::forget(armed);
    n
}

#[test]
#[cfg_attr(miri, ignore = "unwinds through a destructor; nothing here is unsafe")]
fn shutdown_cancelling_tasks_whose_captures_panic_when_dropped_cancels_them_all() {
    let pool = one_worker();
    let exploded = Arc::new(AtomicUsize::new(0));
    let held = Held::on(&pool);
    let queued: Vec<_> = (0..3)
        .map(|_| {
            let guard = bomb(&exploded);
            pool.spawn(move || {
                let mut guard = guard;
                guard.armed = false;
            })
            .unwrap()
        })
        .collect();
    let batch = pool.submit_batch(defuse, vec![Armed(1), Armed(2)]).unwrap();
    held.wait_running();
    // Returns (the destructors' panics are caught and logged), and cancels every queued task.
    pool.shutdown(false, true);
    held.release();
    for f in &queued {
        assert_eq!(f.state(), State::Cancelled);
    }
    for f in &batch {
        assert_eq!(f.state(), State::Cancelled);
    }
    assert_eq!(exploded.load(Ordering::SeqCst), 3);
}

/// Made by a batch; panics when dropped.
#[derive(serde::Serialize, serde::Deserialize)]
struct Loud(u32);

impl Drop for Loud {
    fn drop(&mut self) {
        if self.0 == 0 && !std::thread::panicking() {
            panic!("result {} dropped", self.0);
        }
    }
}

fn loud(n: u32) -> Loud {
    Loud(n)
}

#[test]
#[cfg_attr(miri, ignore = "unwinds through a destructor; nothing here is unsafe")]
fn a_batch_result_whose_destructor_panics_on_the_worker_fails_no_other_item() {
    let pool = one_worker();
    let held = Held::on(&pool);
    let mut futures = pool.submit_batch(loud, vec![0, 1, 2]).unwrap();
    // Nobody keeps item 0's future: the worker drops its value, which panics.
    drop(futures.remove(0));
    held.release();
    for (f, n) in futures.iter().zip([1, 2]) {
        assert_eq!(f.result_timeout(LIMIT).map(|v| v.0), Ok(n));
    }
    assert_worker_lives(&pool);
}
