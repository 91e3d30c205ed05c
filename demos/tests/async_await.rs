//! Pool futures awaited from tokio, on both pools: `.await` yields the outcome, a timer wins a
//! `tokio::select!` against a slow task without stopping it, many futures are awaited at once,
//! and done callbacks feeding a channel give completion order in async code.
//!
//! Every test runs inside `tokio::time::timeout`, so a lost wake-up fails instead of hanging.
//! The only timing assumptions are margins of half a second or more.

use std::time::Duration;

use concurrent_futures::{Backend, Executor, Future, Pool, SubmitError, TaskError};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(120);

fn square(x: u64) -> u64 {
    x * x
}

fn sleepy((id, ms): (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    id
}

fn divide((a, b): (i64, i64)) -> i64 {
    a / b
}

/// Runs `test` on a current-thread runtime (so a blocking `poll` would stall it), bounded by
/// [`DEADLINE`].
fn run<T: std::future::Future<Output = ()>>(test: T) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    runtime
        .block_on(async { tokio::time::timeout(DEADLINE, test).await })
        .unwrap_or_else(|_| panic!("the test did not finish within {DEADLINE:?}"));
}

async fn await_yields_the_outcome(backend: Backend) {
    let pool = Pool::with_workers(backend, 2).unwrap();
    let f = pool.submit(square, 7).unwrap();
    assert_eq!(f.clone().await, Ok(49));
    // Awaiting a clone left the original usable, and a done future is ready at once.
    assert_eq!(f.result(), Ok(&49));
    assert_eq!(f.await, Ok(49));

    let bad = pool.submit(divide, (1, 0)).unwrap();
    match bad.await {
        Err(TaskError::Panicked { message, .. }) => assert!(message.contains("divide by zero")),
        other => panic!("expected a panic, got {other:?}"),
    }
}

async fn a_timer_wins_the_select_and_the_task_runs_on(backend: Backend) {
    let pool = Pool::with_workers(backend, 1).unwrap();
    let slow = pool.submit(sleepy, (5, 1_500)).unwrap();
    let timed_out = tokio::select! {
        _ = slow.clone() => false,
        () = tokio::time::sleep(Duration::from_millis(50)) => true,
    };
    assert!(
        timed_out,
        "a 1.5 s task beat a 50 ms timer: poll must not block"
    );
    assert!(!slow.done(), "the timer fired while the task was pending");
    assert_eq!(
        slow.await,
        Ok(5),
        "losing the race only stopped the waiting"
    );
}

async fn many_awaited_at_once(backend: Backend) {
    let pool = Pool::with_workers(backend, 4).unwrap();
    let futures: Vec<Future<u64>> = (0..32)
        .map(|x| pool.submit(square, x))
        .collect::<Result<_, SubmitError>>()
        .unwrap();
    let handles: Vec<_> = futures.iter().cloned().map(tokio::spawn).collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("the awaiting task ran").unwrap());
    }
    assert_eq!(results, (0..32).map(square).collect::<Vec<_>>());

    // Many awaits of one future: each gets the outcome.
    let one = pool.submit(sleepy, (9, 100)).unwrap();
    let waiters: Vec<_> = (0..4).map(|_| tokio::spawn(one.clone())).collect();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap(), Ok(9));
    }
}

async fn completion_order_through_done_callbacks(backend: Backend) {
    let pool = Pool::with_workers(backend, 2).unwrap();
    let slow = pool.submit(sleepy, (0, 1_000)).unwrap();
    let fast = pool.submit(sleepy, (1, 0)).unwrap();
    let futures = [slow, fast];

    let (sender, mut done) = mpsc::unbounded_channel();
    for f in &futures {
        let sender = sender.clone();
        f.add_done_callback(move |f| sender.send(f.clone()).unwrap());
    }
    drop(sender);

    let mut order = Vec::new();
    let mut seen = 0;
    while let Some(f) = done.recv().await {
        seen += 1;
        let finished = futures.iter().filter(|f| f.done()).count();
        assert!(finished >= seen, "a future arrived before it was done");
        order.push(f.await.unwrap());
    }
    assert_eq!(
        order,
        [1, 0],
        "the fast task (0 ms) before the slow one (1 s)"
    );
}

/// The same future is `Send + 'static`, so it can move into `tokio::spawn`; it is also `Unpin`,
/// so `select!` can poll it by reference.
#[test]
fn futures_fit_tokio() {
    fn spawnable<F: std::future::Future + Send + Unpin + 'static>(_: &F) {}
    let pool = Pool::with_workers(Backend::Thread, 1).unwrap();
    let f = pool.submit(square, 2).unwrap();
    spawnable(&f);
    run(async move { assert_eq!(tokio::spawn(f).await.unwrap(), Ok(4)) });
}

macro_rules! on_both_pools {
    ($($name:ident),* $(,)?) => {
        mod process {
            $(
                #[test]
                fn $name() {
                    super::run(super::$name(super::Backend::Process));
                }
            )*
        }
        mod thread {
            $(
                #[test]
                fn $name() {
                    super::run(super::$name(super::Backend::Thread));
                }
            )*
        }
    };
}

on_both_pools!(
    await_yields_the_outcome,
    a_timer_wins_the_select_and_the_task_runs_on,
    many_awaited_at_once,
    completion_order_through_done_callbacks,
);
