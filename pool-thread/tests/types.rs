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
