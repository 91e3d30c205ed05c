//! The thread pool through the backend-generic `Executor` trait: the same call sites a process
//! pool takes.

mod common;

use std::time::Duration;

use cf_pool_thread::{
    as_completed, wait, Executor, MapOptions, ReturnWhen, SubmitError, TaskError,
    ThreadPoolExecutor,
};
use common::LIMIT;

fn square(x: u64) -> u64 {
    x * x
}

/// A library function: generic over the backend, knows nothing about threads.
fn run<E: Executor>(executor: &E) -> Result<u64, SubmitError> {
    let futures = (1..=10)
        .map(|x| executor.submit(square, x))
        .collect::<Result<Vec<_>, _>>()?;
    let split = wait(&futures, Some(LIMIT), ReturnWhen::AllCompleted);
    assert!(split.not_done.is_empty());
    let total: u64 = as_completed(&futures, Some(LIMIT))
        .map(|f| *f.unwrap().result().unwrap())
        .sum();
    Ok(total)
}

fn mapped<E: Executor>(executor: &E) -> Result<Vec<u64>, TaskError> {
    executor
        .map(square, 0..6, MapOptions::new().chunksize(2))?
        .collect()
}

#[test]
fn submit_square_7() {
    let pool = ThreadPoolExecutor::new();
    let f = pool.submit(square, 7).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&49));
}

#[test]
fn non_capturing_closures_and_tuples_are_tasks() {
    let pool = ThreadPoolExecutor::new();
    let f = pool.submit(|(a, b): (f64, f64)| a / b, (1.0, 4.0)).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&0.25));
    let g = pool
        .submit(|(s, n): (String, usize)| s.repeat(n), ("ab".to_owned(), 3))
        .unwrap();
    assert_eq!(g.result_timeout(LIMIT).map(String::as_str), Ok("ababab"));
}

#[test]
fn a_generic_function_runs_on_the_thread_pool() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(3)
        .build()
        .unwrap();
    assert_eq!(run(&pool), Ok(385));
    assert_eq!(mapped(&pool), Ok(vec![0, 1, 4, 9, 16, 25]));
    pool.shutdown(true, false);
    assert_eq!(run(&pool), Err(SubmitError::Shutdown));
}

#[test]
fn a_task_returning_result_keeps_its_own_error_as_a_value() {
    fn parse(s: String) -> Result<u32, String> {
        s.parse().map_err(|e| format!("{s:?}: {e}"))
    }
    let pool = ThreadPoolExecutor::new();
    let good = pool.submit(parse, "42".to_owned()).unwrap();
    let bad = pool.submit(parse, "x".to_owned()).unwrap();
    assert_eq!(good.result_timeout(LIMIT), Ok(&Ok(42)));
    assert!(matches!(bad.result_timeout(LIMIT), Ok(Err(_))));
}

#[test]
fn a_future_can_be_awaited() {
    let pool = ThreadPoolExecutor::new();
    let f = pool.submit(square, 12).unwrap();
    // A minimal executor for the std Future: poll until ready with a thread-parking waker.
    let value = block_on(f);
    assert_eq!(value, Ok(144));
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let start = std::time::Instant::now();
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "future not ready within {LIMIT:?}");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}
