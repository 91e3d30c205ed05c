//! Turning a task's panic into [`TaskError::Panicked`] with message, location and backtrace.
//!
//! `catch_unwind` yields only the payload, so the location and backtrace come from a panic
//! hook. The hook is installed once, chains to whatever hook was there before, and only
//! intercepts panics on threads currently inside [`call_catching`]; every other panic goes to
//! the previous hook unchanged. A task's panic is therefore reported through its future, not
//! printed, as an exception in a Python worker is.
//!
//! A panic that will not unwind is never swallowed: nothing would report it. That is every
//! panic in a program built with `panic = "abort"`, and under `panic = "unwind"` the panics the
//! runtime raises when unwinding cannot go on (out of an `extern "C"` function, out of a
//! destructor during unwinding), which abort the process right after the hook returns. For
//! those the hook prints the task's panics it had captured (if any, since they started it),
//! hands the panic to the previous hook (Rust's default hook prints message, location and the
//! backtrace or the `RUST_BACKTRACE` note, as it would without cf), and then tells the
//! [fatal panic observer](set_fatal_panic_observer), if one is set, so that a process pool's
//! worker can pass the message on before it dies.

use std::any::{Any, TypeId};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::{Once, PoisonError, RwLock};

use cf_futures_core::{drop_panic_payload, panic_message, TaskError};

/// What the hook saw of a panic it intercepted.
struct Record {
    /// Which payload it was, to match it with what `catch_unwind` returns.
    payload: PayloadId,
    message: String,
    location: Option<String>,
    backtrace: Backtrace,
}

/// Which panic payload a hook call saw, comparable with the payload `catch_unwind` returns later.
///
/// A hook record belongs to a caught payload only if it describes that payload: a task may catch
/// a panic itself and later fail through `std::panic::resume_unwind`, which does not call the
/// hook, and the record left by the caught panic must not be reported for it. std hands the hook
/// the payload it then moves into the box `catch_unwind` returns, so a string payload keeps its
/// text where it was: a formatted message (`String`) keeps its heap buffer, a literal one
/// (`&'static str`) points at the same static text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayloadId {
    /// A `&'static str` payload: where its text is, and its length.
    Literal(usize, usize),
    /// A `String` payload: where its buffer is, and its length.
    Formatted(usize, usize),
    /// Any other payload (`std::panic::panic_any`): moved into a new box, so only its type can be
    /// compared.
    Other(TypeId),
}

impl PayloadId {
    fn of(payload: &(dyn Any + Send)) -> Self {
        if let Some(text) = payload.downcast_ref::<&'static str>() {
            PayloadId::Literal(text.as_ptr() as usize, text.len())
        } else if let Some(text) = payload.downcast_ref::<String>() {
            PayloadId::Formatted(text.as_ptr() as usize, text.len())
        } else {
            PayloadId::Other((*payload).type_id())
        }
    }
}

/// How many intercepted panics a [`call_catching`] frame keeps: one per panic that may still be
/// unwinding (a destructor that panics while another panic unwinds adds one), plus panics the task
/// caught itself; beyond this the oldest go.
const KEPT: usize = 8;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// The panics intercepted on this thread inside the innermost [`call_catching`], oldest first.
    static CAPTURED: Cell<Vec<Record>> = const { Cell::new(Vec::new()) };
}

/// Called, in the panicking thread, for a panic that will not unwind: with the panic's message
/// and its `file:line:column`.
pub type FatalPanicObserver = fn(message: &str, location: Option<&str>);

static OBSERVER: RwLock<Option<FatalPanicObserver>> = RwLock::new(None);

/// Sets the function the capture hook calls for a panic that will not unwind (and so ends the
/// process), on any thread, after the panic was printed. Replaces an earlier observer.
///
/// For executor backends: a process pool's worker uses it to tell the parent which panic is
/// about to kill it. The observer runs inside the panic hook: it must not panic, and should
/// only record or send the text.
///
/// When a task's panic could not finish unwinding (it left an `extern "C"` function, or a
/// destructor panicked while it unwound), the runtime's own panic ("panic in a function that
/// cannot unwind") is the one that kills the process; the observer then gets the task's first
/// panic still held (message and location, since that is the one to fix), with the later ones
/// and the runtime's message appended.
#[doc(hidden)]
pub fn set_fatal_panic_observer(observer: FatalPanicObserver) {
    install_hook();
    *OBSERVER.write().unwrap_or_else(PoisonError::into_inner) = Some(observer);
}

/// Whether the panic this hook call reports will not unwind, so the process aborts after the
/// hook returns.
///
/// `panic = "abort"` is known when this crate is compiled (`cfg!(panic = "abort")`; a profile's
/// `panic` setting applies to every crate of the program). The runtime's non-unwinding panics
/// come with `can_unwind: false`, which std exposes as `PanicHookInfo::can_unwind` only on
/// nightly; its `Debug` output carries the field on stable, so it is read from there.
fn will_not_unwind(info: &PanicHookInfo<'_>) -> bool {
    cfg!(panic = "abort") || format!("{info:?}").contains("can_unwind: false")
}

fn location_of(info: &PanicHookInfo<'_>) -> Option<String> {
    info.location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // `try_with`: a panic in a thread-local's destructor must not panic again here.
            let capturing = CAPTURING.try_with(Cell::get).unwrap_or(false);
            if will_not_unwind(info) {
                let earlier = if capturing {
                    CAPTURED.try_with(Cell::take).unwrap_or_default()
                } else {
                    Vec::new()
                };
                for record in &earlier {
                    print_captured(record);
                }
                previous(info);
                notify_observer(info, &earlier);
            } else if capturing {
                let record = Record {
                    payload: PayloadId::of(info.payload()),
                    message: panic_message(info.payload()),
                    location: location_of(info),
                    backtrace: Backtrace::force_capture(),
                };
                let _ = CAPTURED.try_with(|c| {
                    let mut records = c.take();
                    if records.len() == KEPT {
                        records.remove(0);
                    }
                    records.push(record);
                    c.set(records);
                });
            } else {
                previous(info);
            }
        }));
    });
}

/// Prints a captured panic as Rust's default hook would have printed it, for a task whose
/// panic could not finish unwinding (it will never reach its future).
fn print_captured(record: &Record) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let location = record.location.as_deref().unwrap_or("<unknown location>");
    let backtrace = match std::env::var("RUST_BACKTRACE").as_deref() {
        Err(_) | Ok("0") => String::new(),
        Ok("full") => format!("stack backtrace:\n{:#}\n", record.backtrace),
        Ok(_) => format!("stack backtrace:\n{}\n", record.backtrace),
    };
    eprint!(
        "\nthread '{name}' panicked at {location}:\n{}\n{backtrace}note: cf caught this panic to \
         report it through the task's future, but it could not finish unwinding:\n",
        record.message
    );
}

fn notify_observer(info: &PanicHookInfo<'_>, earlier: &[Record]) {
    let observer = *OBSERVER.read().unwrap_or_else(PoisonError::into_inner);
    let Some(observer) = observer else {
        return;
    };
    let message = panic_message(info.payload());
    let Some((first, later)) = earlier.split_first() else {
        return observer(&message, location_of(info).as_deref());
    };
    let mut text = first.message.clone();
    for record in later {
        text.push_str("; then, at ");
        text.push_str(record.location.as_deref().unwrap_or("<unknown location>"));
        text.push_str(": ");
        text.push_str(&record.message);
    }
    text.push_str("; then, while unwinding: ");
    text.push_str(&message);
    observer(&text, first.location.as_deref());
}

/// Runs `f`, turning a panic into [`TaskError::Panicked`] with the panic's message, location
/// and backtrace. For executor backends; nested calls are fine.
///
/// The location and backtrace are those of the panic that reached this call: a panic the task
/// caught itself leaves nothing behind, for this task or the next one on the thread. A payload
/// re-raised with `std::panic::resume_unwind` keeps the location where it was first raised (as a
/// re-raised exception keeps its traceback in Python); a new payload given to `resume_unwind`
/// never went through the panic hook, so it has neither.
///
/// A panic that will not unwind (`panic = "abort"`, or out of an `extern "C"` function) cannot
/// be caught: it is printed as Rust's default hook prints it, and the process aborts.
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
    // This frame's records start empty and end with it; an enclosing frame's (a call in a
    // destructor while the enclosing task's panic unwinds) are put back afterwards.
    let enclosing = CAPTURED.with(Cell::take);
    let was = CAPTURING.with(|c| c.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(was));
    let captured = CAPTURED.with(|c| c.replace(enclosing));
    result.map_err(|payload| {
        let id = PayloadId::of(payload.as_ref());
        let (location, backtrace) = captured
            .into_iter()
            .rev()
            .find(|r| r.payload == id)
            .map_or((None, None), |r| {
                (r.location, Some(r.backtrace.to_string()))
            });
        let error = TaskError::from_panic(payload.as_ref(), location, backtrace);
        // A payload whose destructor panics must not unwind out of the caller (a worker).
        drop_panic_payload(payload);
        error
    })
}
