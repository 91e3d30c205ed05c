//! Turning a task's panic into [`TaskError::Panicked`] with message, location and backtrace.
//!
//! `catch_unwind` yields only the payload, so the location and backtrace come from a panic
//! hook. The hook is installed once, chains to whatever hook was there before, and only
//! intercepts panics on threads currently inside [`call_catching`]; every other panic goes to
//! the previous hook unchanged. A task's panic is therefore reported through its future, not
//! printed, as an exception in a Python worker is.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use cf_futures_core::TaskError;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAPTURED: RefCell<Option<(Option<String>, String)>> = const { RefCell::new(None) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                let backtrace = std::backtrace::Backtrace::force_capture().to_string();
                CAPTURED.with(|c| *c.borrow_mut() = Some((location, backtrace)));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into [`TaskError::Panicked`] with the panic's message, location
/// and backtrace. For executor backends; nested calls are fine.
///
/// # Errors
///
/// [`TaskError::Panicked`] if `f` panicked.
///
/// # Examples
///
/// ```
/// use cf_executor_api::{call_catching, TaskError};
///
/// assert_eq!(call_catching(|| 2 + 2), Ok(4));
/// match call_catching(|| -> u8 { panic!("bad input {}", 7) }) {
///     Err(TaskError::Panicked { message, location, .. }) => {
///         assert_eq!(message, "bad input 7");
///         assert!(location.unwrap().contains(".rs:"));
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
pub fn call_catching<R>(f: impl FnOnce() -> R) -> Result<R, TaskError> {
    install_hook();
    let was = CAPTURING.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(was));
    result.map_err(|payload| {
        let (location, backtrace) = CAPTURED
            .with(|c| c.borrow_mut().take())
            .map_or((None, None), |(l, b)| (l, Some(b)));
        TaskError::from_panic(payload.as_ref(), location, backtrace)
    })
}
