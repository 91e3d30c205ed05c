//! `spawn`: capturing closures and non-serde values; panics become `TaskError::Panicked`.
//!
//! Beyond Python's suite (`executor.py` tests exceptions through `result()`): the thread pool's
//! escape hatch from the serde-able task bounds.

mod common;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cf_pool_thread::{as_completed, TaskError, ThreadPoolExecutor};
use common::{thread_name, LIMIT};

fn pool(max_workers: usize) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .max_workers(max_workers)
        .build()
        .unwrap()
}

/// Neither `Serialize` nor `Clone`: only a thread pool can take and return it.
#[derive(Debug, PartialEq)]
struct Report {
    lines: Vec<String>,
}

#[test]
fn spawn_takes_capturing_closures_over_shared_state() {
    let pool = pool(4);
    let hits = Arc::new(AtomicUsize::new(0));
    let table = Arc::new(Mutex::new(HashMap::new()));
    let futures: Vec<_> = (0..100)
        .map(|i| {
            let (hits, table) = (Arc::clone(&hits), Arc::clone(&table));
            pool.spawn(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                table.lock().unwrap().insert(i, i * i);
            })
            .unwrap()
        })
        .collect();
    for f in as_completed(&futures, Some(LIMIT)) {
        f.unwrap().result().unwrap();
    }
    assert_eq!(hits.load(Ordering::SeqCst), 100);
    assert_eq!(table.lock().unwrap().get(&9), Some(&81));
}

#[test]
fn spawn_moves_non_serde_values_in_and_out() {
    let pool = pool(2);
    let header = String::from("report");
    let f = pool
        .spawn(move || Report {
            lines: vec![header, "ok".to_owned()],
        })
        .unwrap();
    assert_eq!(
        f.result_timeout(LIMIT).unwrap(),
        &Report {
            lines: vec!["report".to_owned(), "ok".to_owned()]
        }
    );
    // The sole owner moves the value out without Clone.
    let report = f.try_unwrap().ok().unwrap().unwrap();
    assert_eq!(report.lines.len(), 2);
}

#[test]
fn spawn_may_create_thread_bound_values_inside_the_task() {
    let pool = pool(1);
    // `Rc` cannot cross threads, but a task may use one internally.
    let f = pool
        .spawn(|| {
            let shared = Rc::new(5);
            let other = Rc::clone(&shared);
            *shared + *other
        })
        .unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&10));
}

#[test]
fn a_panic_becomes_panicked_with_message_and_location() {
    let pool = pool(1);
    let f = pool
        .spawn(|| -> u32 { panic!("bad record {}", 17) })
        .unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Panicked {
            message,
            location,
            backtrace,
        }) => {
            assert_eq!(message, "bad record 17");
            let location = location.expect("the location is captured");
            assert!(location.contains("spawn.rs:"), "{location}");
            assert!(backtrace.is_some());
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert!(f.exception().is_some());
}

#[test]
fn the_worker_thread_survives_a_panic() {
    let pool = pool(1);
    let before = pool.spawn(thread_name).unwrap();
    let before = before.result_timeout(LIMIT).unwrap().clone();
    for _ in 0..10 {
        let f = pool.spawn(|| -> () { panic!("again") }).unwrap();
        assert!(matches!(
            f.result_timeout(LIMIT),
            Err(TaskError::Panicked { .. })
        ));
    }
    let after = pool.spawn(thread_name).unwrap();
    assert_eq!(after.result_timeout(LIMIT), Ok(&before));
    assert_eq!(pool.worker_threads(), 1);
}

#[test]
fn a_non_string_panic_payload_is_reported() {
    let pool = pool(1);
    let f = pool
        .spawn(|| -> u8 { std::panic::panic_any(42_i32) })
        .unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Panicked { message, .. }) => assert!(message.contains("non-string")),
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn done_callbacks_run_on_the_worker_thread() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("cb")
        .build()
        .unwrap();
    let latch = common::Latch::new();
    let _open = common::OpenOnDrop(latch.clone());
    let f = {
        let latch = latch.clone();
        pool.spawn(move || latch.wait()).unwrap()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    f.add_done_callback(move |_| tx.send(thread_name()).unwrap());
    latch.open();
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), "cb_0");
}
