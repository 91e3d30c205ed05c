//! Awaiting pool futures from async code (tokio), on both pools: `.await` a result, give up
//! on a slow task with `tokio::select!` and a timer, await many at once, and read results in
//! completion order (an async `as_completed`) through a channel fed by `add_done_callback`.
//!
//! `cargo run -p cf-demos --example async_await`
//!
//! A pool's `Future<T>` implements `std::future::Future<Output = Result<T, TaskError>>` for
//! `T: Clone`: awaiting it registers a waker and never blocks a runtime thread; the pool's own
//! threads wake the task. The pools themselves are not async: `submit` returns at once, but
//! dropping a pool waits for its work, so this example builds and drops pools outside
//! `block_on`.

use std::error::Error;
use std::time::{Duration, Instant};

use cf_executor_api::{Executor, Future, SubmitError, TaskError};
use cf_pool_proc::ProcessPoolExecutor;
use cf_pool_thread::ThreadPoolExecutor;
use tokio::sync::mpsc;

/// Every async wait in this example is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

/// Sleeps `ms` milliseconds, then returns `id`: work of a known duration.
fn sleepy((id, ms): (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    id
}

/// Completion order in async code: each future's done callback sends it down a channel, so
/// `recv().await` yields the futures as they finish (a duplicate in `futures` arrives twice).
///
/// The callbacks run in the pool's threads; an unbounded sender never blocks them.
fn completions<T: Send + Sync + 'static>(
    futures: &[Future<T>],
) -> mpsc::UnboundedReceiver<Future<T>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    for future in futures {
        let sender = sender.clone();
        future.add_done_callback(move |f| {
            // The receiver may be gone if the reader gave up; nothing to do then.
            let _ = sender.send(f.clone());
        });
    }
    receiver
}

/// The same async code on either pool.
async fn tour<E: Executor>(executor: &E) -> Result<(), Box<dyn Error + Send + Sync>> {
    // 1. `.await` a result: Python's `await asyncio.wrap_future(f)`, without the wrapping.
    let value = executor.submit(square, 7)?.await?;
    println!("  square(7).await = {value}");

    // 2. A timeout: race a slow task against a timer. Losing the race only stops *waiting*;
    //    the task runs on (a process pool's `submit_with_timeout` kills it instead).
    let slow = executor.submit(sleepy, (0, 500))?;
    tokio::select! {
        outcome = slow.clone() => println!("  the slow task finished first: {outcome:?}"),
        () = tokio::time::sleep(Duration::from_millis(50)) => {
            println!("  gave up on the slow task after 50 ms; done() = {}", slow.done());
        }
    }
    println!(
        "  ...and it still completes: {:?}",
        tokio::time::timeout(LIMIT, slow).await?
    );

    // 3. Many at once: each future awaited in its own tokio task, all pending together.
    let futures: Vec<Future<u64>> = (1..=8)
        .map(|x| executor.submit(square, x))
        .collect::<Result<_, SubmitError>>()?;
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut squares = Vec::new();
    for handle in handles {
        squares.push(handle.await??);
    }
    println!("  eight squares awaited concurrently: {squares:?}");

    // 4. Completion order: the async `as_completed`.
    let start = Instant::now();
    let futures: Vec<Future<u64>> = [(0, 300), (1, 200), (2, 100), (3, 0)]
        .into_iter()
        .map(|job| executor.submit(sleepy, job))
        .collect::<Result<_, SubmitError>>()?;
    let mut done = completions(&futures);
    for _ in 0..futures.len() {
        let future = done.recv().await.ok_or("a done callback was dropped")?;
        let id: Result<u64, TaskError> = future.await;
        println!(
            "  task {} completed after {:.2}s",
            id?,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let runtime = tokio::runtime::Runtime::new()?;

    println!("ProcessPoolExecutor:");
    let processes = ProcessPoolExecutor::builder().max_workers(4).build()?;
    runtime.block_on(async { tokio::time::timeout(LIMIT, tour(&processes)).await? })?;
    drop(processes); // Python's `with` exit: waits for the work, reaps the workers

    println!("ThreadPoolExecutor:");
    let threads = ThreadPoolExecutor::builder().max_workers(4).build()?;
    runtime.block_on(async { tokio::time::timeout(LIMIT, tour(&threads)).await? })?;
    Ok(())
}
