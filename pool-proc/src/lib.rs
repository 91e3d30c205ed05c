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

/// Entry points for `cargo fuzz` and the protocol tests; not part of the stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the parent's decoder over one frame as a worker would send it (length prefix
    /// included): the error text for garbage, never a panic, allocation bounded by `max`.
    ///
    /// # Errors
    ///
    /// A description of why the frame was refused.
    pub fn parse_worker_frame(frame: &[u8], max: usize) -> Result<(), String> {
        let body = crate::protocol::read_frame(&mut &frame[..], max)
            .map_err(|e| e.to_string())?
            .ok_or("empty stream")?;
        crate::protocol::decode_worker_message(&body)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
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
