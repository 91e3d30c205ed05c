//! A task's panic in a program built with `panic = "abort"`.
//!
//! ```sh
//! cargo run -p cf-pool-thread --example thread_panic_abort   # unwind: the future reports it
//! cargo run -p cf-pool-thread --example thread_panic_abort --config 'profile.dev.panic="abort"'
//! ```
//!
//! With `panic = "unwind"` (Rust's default) the panic is caught and comes back through the future
//! as `TaskError::Panicked`. With `panic = "abort"` nothing can catch it: the process aborts, and
//! stderr shows what Rust's default hook prints (thread, location, message, the `RUST_BACKTRACE`
//! note or the backtrace), exactly as it would without cf.

use std::time::Duration;

use cf_pool_thread::{Executor, ThreadPoolExecutor};

fn failing_task(x: u32) -> u32 {
    if x > 40 {
        panic!("boom {x}");
    }
    x
}

fn main() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let future = pool.submit(failing_task, 42).unwrap();
    match future.result_timeout(Duration::from_secs(30)) {
        Ok(value) => println!("unexpected value {value}"),
        Err(error) => println!("the future reports: {error}"),
    }
}
