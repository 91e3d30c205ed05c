//! Workers' backlogs: once every worker is started, a worker takes a few jobs from a long queue
//! at a time. None of that may show: a job behind a long one in a backlog still runs while a
//! worker is free, whether that worker found the queue empty or is kept busy by an endless
//! supply; a single worker keeps submission order; `shutdown(cancel_futures)` cancels what sits
//! in a backlog. Each scenario fills the queue while gate tasks hold every worker, so that
//! backlogs are taken when the gate opens.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use cf_pool_thread::{Executor, Future, ThreadPoolExecutor};
use common::{wait_until, Latch, OpenOnDrop, LIMIT};

fn pool(max_workers: usize) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .max_workers(max_workers)
        .build()
        .unwrap()
}

/// Occupies every worker of `pool` with a task waiting at the returned latch.
fn hold_workers(pool: &ThreadPoolExecutor, workers: usize) -> (OpenOnDrop, Vec<Future<()>>) {
    let gate = Latch::new();
    let running = Arc::new(Mutex::new(0));
    let held = (0..workers)
        .map(|_| {
            let (gate, running) = (gate.clone(), Arc::clone(&running));
            pool.spawn(move || {
                *running.lock().unwrap() += 1;
                gate.wait();
            })
            .unwrap()
        })
        .collect();
    wait_until("every worker holds a gate task", || {
        *running.lock().unwrap() == workers
    });
    (OpenOnDrop(gate), held)
}

/// Where a [`waiter`] learns the futures it waits for.
type Deps = mpsc::Sender<Vec<Future<()>>>;

/// A task that waits (at most [`LIMIT`]) for every future sent on `deps`; `Err` names the
/// first one that did not finish.
fn waiter(pool: &ThreadPoolExecutor) -> (Future<Result<(), String>>, Deps) {
    let (tx, rx) = mpsc::channel::<Vec<Future<()>>>();
    let f = pool
        .spawn(move || {
            let deps = rx.recv_timeout(LIMIT).map_err(|e| e.to_string())?;
            for (i, d) in deps.iter().enumerate() {
                d.result_timeout(LIMIT)
                    .map_err(|e| format!("job {i} queued after the waiter: {e}"))?;
            }
            Ok(())
        })
        .unwrap();
    (f, tx)
}

#[test]
fn jobs_behind_a_waiting_task_run_on_a_free_worker() {
    let pool = pool(2);
    let (gate, held) = hold_workers(&pool, 2);
    let (w, deps_tx) = waiter(&pool);
    let deps: Vec<Future<()>> = (0..16).map(|_| pool.spawn(|| ()).unwrap()).collect();
    deps_tx.send(deps.clone()).unwrap();
    drop(gate);
    assert_eq!(w.result_timeout(LIMIT), Ok(&Ok(())));
    for f in deps.iter().chain(&held) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&()));
    }
}

#[test]
fn jobs_behind_a_waiting_task_run_while_other_work_keeps_coming() {
    let pool = Arc::new(pool(2));
    let (gate, _held) = hold_workers(&pool, 2);
    let (w, deps_tx) = waiter(&pool);
    let deps: Vec<Future<()>> = (0..16).map(|_| pool.spawn(|| ()).unwrap()).collect();
    deps_tx.send(deps.clone()).unwrap();
    // Tasks that queue a successor until the waiter is done: the other worker always finds
    // the queue non-empty, so it never runs out of work to go looking for stranded jobs.
    let stop = Arc::new(AtomicBool::new(false));
    let chains: Vec<Future<()>> = (0..64)
        .map(|_| relay(&pool, &stop).expect("pool accepts work"))
        .collect();
    drop(gate);
    let outcome = w.result_timeout(LIMIT).cloned();
    stop.store(true, Ordering::SeqCst);
    assert_eq!(outcome, Ok(Ok(())));
    for f in &chains {
        assert_eq!(f.result_timeout(LIMIT), Ok(&()));
    }
    // A relay still running may queue one more, which shutdown refuses.
    pool.shutdown(true, false);
}

/// A task that, unless `stop` is set, queues another like it (and holds the pool meanwhile).
fn relay(
    pool: &Arc<ThreadPoolExecutor>,
    stop: &Arc<AtomicBool>,
) -> Result<Future<()>, cf_pool_thread::SubmitError> {
    let weak = Arc::downgrade(pool);
    let stop = Arc::clone(stop);
    pool.spawn(move || {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Some(pool) = weak.upgrade() {
            let _ = relay(&pool, &stop);
        }
    })
}

#[test]
fn one_worker_runs_jobs_in_submission_order() {
    let pool = pool(1);
    let (gate, _held) = hold_workers(&pool, 1);
    let order = Arc::new(Mutex::new(Vec::new()));
    let jobs = if cfg!(miri) { 60 } else { 500 };
    let fs: Vec<Future<()>> = (0..jobs)
        .map(|i| {
            let order = Arc::clone(&order);
            pool.spawn(move || order.lock().unwrap().push(i)).unwrap()
        })
        .collect();
    drop(gate);
    for f in &fs {
        assert_eq!(f.result_timeout(LIMIT), Ok(&()));
    }
    assert_eq!(*order.lock().unwrap(), (0..jobs).collect::<Vec<_>>());
}

#[test]
fn shutdown_cancels_jobs_sitting_in_a_backlog() {
    let pool = pool(1);
    let (gate, _held) = hold_workers(&pool, 1);
    // Runs next, with the jobs after it taken into the worker's backlog.
    let second_gate = OpenOnDrop(Latch::new());
    let running = Arc::new(AtomicBool::new(false));
    let second = {
        let (latch, running) = (second_gate.0.clone(), Arc::clone(&running));
        pool.spawn(move || {
            running.store(true, Ordering::SeqCst);
            latch.wait();
        })
        .unwrap()
    };
    let ran = Arc::new(Mutex::new(Vec::new()));
    let rest: Vec<Future<()>> = (0..100)
        .map(|i| {
            let ran = Arc::clone(&ran);
            pool.spawn(move || ran.lock().unwrap().push(i)).unwrap()
        })
        .collect();
    drop(gate);
    wait_until("the second gate task runs", || {
        running.load(Ordering::SeqCst)
    });
    pool.shutdown(false, true);
    drop(second_gate);
    assert_eq!(second.result_timeout(LIMIT), Ok(&()));
    for (i, f) in rest.iter().enumerate() {
        assert!(
            f.cancelled(),
            "job {i} was queued when the pool shut down with cancel_futures, but is {:?}",
            f.state()
        );
    }
    assert_eq!(*ran.lock().unwrap(), Vec::<i32>::new());
}
