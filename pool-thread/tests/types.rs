//! Auto traits and `Debug` of the public types (as crossbeam's tests assert them).

use cf_pool_thread::{Executor, ThreadPoolBuilder, ThreadPoolExecutor};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync::<ThreadPoolExecutor>();
    assert_send_sync::<ThreadPoolBuilder>();
    assert_send_sync::<cf_pool_thread::Future<Vec<u8>>>();
}

#[test]
fn the_pool_is_usable_as_a_shared_executor() {
    fn takes_executor<E: Executor + 'static>(_: &E) {}
    let pool = ThreadPoolExecutor::new();
    takes_executor(&pool);
    let shared = std::sync::Arc::new(pool);
    let handle = std::thread::spawn(move || shared.spawn(|| 5).unwrap().result().copied());
    assert_eq!(handle.join().unwrap(), Ok(5));
}

#[test]
fn debug_shows_settings_and_state() {
    let builder = ThreadPoolExecutor::builder()
        .max_workers(3)
        .thread_name_prefix("dbg")
        .initializer(|| Ok(()));
    let text = format!("{builder:?}");
    assert!(
        text.contains("max_workers: Some(3)") && text.contains("dbg"),
        "{text}"
    );
    let pool = builder.build().unwrap();
    let text = format!("{pool:?}");
    assert!(
        text.contains("ThreadPoolExecutor") && text.contains("max_workers: 3"),
        "{text}"
    );
    assert!(text.contains("shutdown: false"), "{text}");
}

#[test]
fn debug_counts_the_workers_running_a_task() {
    use std::sync::mpsc;
    use std::time::Duration;
    const LIMIT: Duration = Duration::from_secs(30);

    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let (started_tx, started) = mpsc::channel();
    let (release_tx, release) = mpsc::channel::<()>();
    let release = std::sync::Arc::new(std::sync::Mutex::new(release));
    let blocked: Vec<_> = (0..3)
        .map(|_| {
            let (started_tx, release) = (started_tx.clone(), release.clone());
            pool.spawn(move || {
                started_tx.send(()).unwrap();
                let _ = release.lock().unwrap().recv_timeout(LIMIT);
            })
            .unwrap()
        })
        .collect();
    // Two run (every thread is started), the third waits for one of them.
    for _ in 0..2 {
        started.recv_timeout(LIMIT).expect("a task started");
    }
    let text = format!("{pool:?}");
    assert!(
        text.contains("threads: 2") && text.contains("available: 0"),
        "{text}"
    );
    for _ in 0..3 {
        release_tx.send(()).unwrap();
    }
    for f in &blocked {
        f.result_timeout(LIMIT).expect("released");
    }
    // A worker counts itself available before its result is visible.
    let text = format!("{pool:?}");
    assert!(text.contains("available: 2"), "{text}");
}
