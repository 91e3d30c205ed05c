//! The diagnostics cf's crates send through the `log` facade, made visible with `env_logger`:
//! a panicking done callback, a worker process that dies and its replacement, a task killed
//! for overrunning its time limit, and initializers that fail. docs/diagnostics.md lists
//! every message, its level and its target.
//!
//! ```text
//! cargo run -p cf-demos --example logging
//! RUST_LOG=cf_pool_proc=trace cargo run -p cf-demos --example logging   # also "worker ... ready"
//! RUST_LOG=off cargo run -p cf-demos --example logging                  # stdout only
//! ```
//!
//! Without `RUST_LOG` the filter is [`DEFAULT_FILTER`]. What the example does goes to stdout,
//! the log to stderr; the two interleave on a terminal.

use std::error::Error;
use std::time::Duration;

use cf_executor_api::{Executor, TaskError};
use cf_pool_proc::ProcessPoolExecutor;
use cf_pool_thread::ThreadPoolExecutor;

/// Debug for the pools (worker starts), warnings and errors from the futures.
const DEFAULT_FILTER: &str = "cf_pool_proc=debug,cf_pool_thread=debug,cf_futures_core=warn";

/// A bound on every wait here.
const LIMIT: Duration = Duration::from_secs(30);

fn square(x: u64) -> u64 {
    x * x
}

/// Takes long enough for callbacks to be added before it finishes.
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(200));
    x * x
}

/// Ends its worker process the hard way, as a crash would.
fn exit_worker(code: i32) -> u64 {
    std::process::exit(code)
}

/// Never returns on its own.
fn spin(_: ()) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

/// An initializer that cannot do its job.
fn connect() -> Result<(), String> {
    Err("no database at postgres://db.invalid/app".into())
}

fn step(text: &str) {
    // Give the previous step's log lines (written from pool threads) a moment to land first.
    std::thread::sleep(Duration::from_millis(100));
    println!("\n── {text}");
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER))
        .init();

    step("1. A done callback panics: cf_futures_core logs an error, the next callback runs");
    let pool = ProcessPoolExecutor::builder().max_workers(1).build()?;
    let f = pool.submit(slow_square, 3)?;
    // Both run when the result arrives, in the pool's reader thread. (The panic also goes
    // through the panic hook, which prints its own "panicked at" message.)
    f.add_done_callback(|_| panic!("a bug in a callback"));
    f.add_done_callback(|f| println!("   the second callback still ran: {:?}", f.result()));
    f.result_timeout(LIMIT)?;

    step("2. A worker dies holding a task: a warning; the replacement's start is a debug line");
    let dead = pool.submit(exit_worker, 3)?;
    match dead.result_timeout(LIMIT) {
        Err(TaskError::WorkerDied { pid, cause, .. }) => {
            println!("   future: worker {pid} died ({cause})");
        }
        other => println!("   unexpected: {other:?}"),
    }
    let after = pool.submit(square, 4)?;
    println!(
        "   the pool goes on: square(4) = {:?}",
        after.result_timeout(LIMIT)
    );

    step("3. A task overruns its time limit: a warning; its worker is killed (and replaced on demand)");
    let stuck = pool.submit_with_timeout(spin, (), Duration::from_millis(200))?;
    println!("   future: {:?}", stuck.result_timeout(LIMIT).err());
    drop(pool);

    step("4. A process pool's initializer fails: an error; the pool is broken");
    let broken = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(connect)
        .build()?;
    let f = broken.submit(square, 5)?;
    println!("   future: {:?}", f.result_timeout(LIMIT).err());
    println!(
        "   next submit: {:?}",
        broken.submit(square, 6).err().map(|e| e.to_string())
    );
    drop(broken);

    step("5. A thread pool's initializer fails: an error from cf_pool_thread");
    let threads = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("db")
        .initializer(connect)
        .build()?;
    let f = threads.submit(square, 7)?;
    println!("   future: {:?}", f.result_timeout(LIMIT).err());
    drop(threads);

    step("done");
    Ok(())
}
