//! Worker threads: started on demand, reused when idle, named like Python's.
//!
//! Ported from CPython's `Lib/test/test_concurrent_futures/test_thread_pool.py`
//! (`test_saturation`, `test_idle_thread_reuse`, `test_default_workers`,
//! `test_thread_names_assigned`, `test_thread_names_default`) and `executor.py`
//! (`test_max_workers_negative`, here zero).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cf_pool_thread::{cpu_count, BuildError, Executor, ThreadPoolExecutor};
use common::{thread_name, wait_until, Latch, OpenOnDrop, LIMIT};

fn pool(max_workers: usize) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .max_workers(max_workers)
        .build()
        .unwrap()
}

#[test]
fn saturation_starts_exactly_max_workers() {
    let pool = pool(4);
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let running = Arc::new(AtomicUsize::new(0));
    let futures: Vec<_> = (0..60)
        .map(|_| {
            let (latch, running) = (latch.clone(), Arc::clone(&running));
            pool.spawn(move || {
                running.fetch_add(1, Ordering::SeqCst);
                latch.wait();
                thread_name()
            })
            .unwrap()
        })
        .collect();
    wait_until("4 tasks running", || running.load(Ordering::SeqCst) == 4);
    assert_eq!(pool.worker_threads(), 4);
    latch.open();
    let names: HashSet<String> = futures
        .iter()
        .map(|f| f.result_timeout(LIMIT).unwrap().clone())
        .collect();
    assert_eq!(names.len(), 4);
    assert_eq!(pool.worker_threads(), 4);
}

#[test]
fn sequential_tasks_reuse_one_idle_thread() {
    let pool = pool(4);
    for i in 0..20_u64 {
        let f = pool.spawn(move || i * 2).unwrap();
        assert_eq!(f.result_timeout(LIMIT), Ok(&(i * 2)));
    }
    assert_eq!(pool.worker_threads(), 1);
}

#[test]
fn an_idle_thread_is_woken_instead_of_starting_another() {
    let pool = pool(8);
    // Two threads, both blocked, then both idle again.
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let latch = latch.clone();
            pool.spawn(move || latch.wait()).unwrap()
        })
        .collect();
    latch.open();
    for f in &blocked {
        f.result_timeout(LIMIT).unwrap();
    }
    assert_eq!(pool.worker_threads(), 2);
    // Two more at once: the two idle threads take them.
    let again: Vec<_> = (0..2).map(|i| pool.spawn(move || i).unwrap()).collect();
    for f in &again {
        f.result_timeout(LIMIT).unwrap();
    }
    assert_eq!(pool.worker_threads(), 2);
}

#[test]
fn no_thread_starts_before_the_first_task() {
    let pool = pool(4);
    assert_eq!(pool.worker_threads(), 0);
    drop(pool);
}

#[test]
fn thread_names_use_the_given_prefix() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(5)
        .thread_name_prefix("SpecialPool")
        .build()
        .unwrap();
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let running = Arc::new(AtomicUsize::new(0));
    let futures: Vec<_> = (0..5)
        .map(|_| {
            let (latch, running) = (latch.clone(), Arc::clone(&running));
            pool.spawn(move || {
                running.fetch_add(1, Ordering::SeqCst);
                latch.wait();
                thread_name()
            })
            .unwrap()
        })
        .collect();
    wait_until("5 tasks running", || running.load(Ordering::SeqCst) == 5);
    latch.open();
    let mut names: Vec<String> = futures
        .iter()
        .map(|f| f.result_timeout(LIMIT).unwrap().clone())
        .collect();
    names.sort();
    let expected: Vec<String> = (0..5).map(|i| format!("SpecialPool_{i}")).collect();
    assert_eq!(names, expected);
}

#[test]
fn thread_names_default_to_a_numbered_prefix() {
    let a = ThreadPoolExecutor::new();
    let b = ThreadPoolExecutor::builder()
        .thread_name_prefix("")
        .build()
        .unwrap();
    let number = |prefix: &str| -> usize {
        prefix
            .strip_prefix("ThreadPoolExecutor-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected default prefix {prefix:?}"))
    };
    assert_ne!(
        number(a.thread_name_prefix()),
        number(b.thread_name_prefix())
    );
    let name = a.spawn(thread_name).unwrap();
    assert_eq!(
        name.result_timeout(LIMIT).unwrap(),
        &format!("{}_0", a.thread_name_prefix())
    );
}

#[test]
fn zero_workers_is_a_build_error() {
    let err = ThreadPoolExecutor::builder()
        .max_workers(0)
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::ZeroWorkers);
    assert!(err.to_string().contains("max_workers"));
}

#[test]
fn default_max_workers_is_cpu_count_plus_four_up_to_32() {
    assert_eq!(
        ThreadPoolExecutor::new().max_workers(),
        (cpu_count() + 4).min(32)
    );
    assert_eq!(
        ThreadPoolExecutor::default().max_workers(),
        ThreadPoolExecutor::new().max_workers()
    );
    assert_eq!(pool(7).max_workers(), 7);
}

#[test]
fn submit_never_blocks_on_busy_workers() {
    let pool = pool(1);
    let latch = Latch::new();
    let _open = OpenOnDrop(latch.clone());
    let first = {
        let latch = latch.clone();
        pool.spawn(move || latch.wait()).unwrap()
    };
    // The only worker is blocked; 1000 more submits still return at once.
    let queued: Vec<_> = (0..1000_u64)
        .map(|i| pool.spawn(move || i).unwrap())
        .collect();
    assert!(queued.iter().all(|f| !f.done()));
    latch.open();
    first.result_timeout(LIMIT).unwrap();
    let sum: u64 = queued
        .iter()
        .map(|f| *f.result_timeout(LIMIT).unwrap())
        .sum();
    assert_eq!(sum, 999 * 1000 / 2);
}
