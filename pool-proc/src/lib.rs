//! `ProcessPoolExecutor`: Python's process pool for Rust, behind the same `Executor` trait as
//! the thread pool.
#![warn(missing_docs)]

mod pool;
mod protocol;
mod slot;
mod sys;
mod task;
mod worker;

pub use cf_executor_api::*;
pub use pool::{Builder, ProcessPoolExecutor};
pub use worker::is_worker;

/// Enters worker mode if this process was started as a worker; call it first in `main` only
/// if `build` says the static constructor did not run. Harmless otherwise.
///
/// # Examples
///
/// ```
/// cf_pool_proc::init();
/// ```
pub fn init() {
    sys::enter_worker_mode_if_requested();
}
