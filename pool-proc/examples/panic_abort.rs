//! A process-pool task's panic in a program built with `panic = "abort"`.
//!
//! ```sh
//! cargo run -p cf-pool-proc --example panic_abort                       # unwind: Panicked
//! cargo run -p cf-pool-proc --example panic_abort --config 'profile.dev.panic="abort"'
//! ```
//!
//! With `panic = "unwind"` (Rust's default) the worker catches the panic and the future fails
//! with `TaskError::Panicked`. With `panic = "abort"` nothing can catch it: the worker prints
//! what Rust's default hook prints and aborts, and the future fails with
//! `TaskError::WorkerDied`, whose `last_panic` carries the panic's location and message.

use std::time::Duration;

use cf_pool_proc::{Executor, ProcessPoolExecutor, TaskError};

fn failing_task(x: u32) -> u32 {
    if x > 40 {
        panic!("boom {x}");
    }
    x
}

fn main() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let future = pool.submit(failing_task, 42).unwrap();
    match future.result_timeout(Duration::from_secs(60)) {
        Ok(value) => println!("unexpected value {value}"),
        Err(TaskError::WorkerDied { last_panic, .. }) => {
            println!("the worker died; its last panic: {last_panic:?}");
        }
        Err(error) => println!("the future reports: {error}"),
    }
}
