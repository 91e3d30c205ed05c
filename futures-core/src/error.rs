//! The executor's failures: [`TaskError`] and the small types it is made of.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::State;

/// Why a task produced no value: the executor's failure, shared by every backend.
///
/// A task's *own* errors are values: a task returning `Result<T, E>` gives a
/// `Future<Result<T, E>>` and its `Err` arrives as a successful result. `TaskError` is for what
/// went wrong around the task: it panicked, was cancelled, timed out, its worker process died, the
/// pool broke, a cluster node failed it, or its argument or result could not cross a process
/// boundary.
///
/// Every message says what happened and what to do about it.
///
/// `Debug`, which `unwrap()` and `?` in `main` print, is meant to be read: the kind and the
/// message (with the panic's location) on one line, then a panic's backtrace on lines of its own.
/// The backtrace is shown by `{:#?}`, or by `{:?}` when `RUST_BACKTRACE` asks for backtraces
/// (set and not `0`, as for Rust's own panic messages); otherwise a note says how to see it.
///
/// ```text
/// Panicked: task panicked at src/main.rs:4:5: boom (the panic was caught; ...)
/// note: the task's backtrace was captured; set RUST_BACKTRACE=1 or format this error with {:#?} to see it
/// ```
///
/// # Examples
///
/// ```
/// use cf_futures_core::{Promise, TaskError};
///
/// let promise = Promise::<u32>::new();
/// let future = promise.future();
/// assert!(future.cancel());
/// assert!(matches!(future.result(), Err(TaskError::Cancelled)));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked: the analog of a raised exception in Python.
    #[error(
        "task panicked{}: {message} (the panic was caught; the worker lives on; \
         fix the task or handle this error where you read the result)",
        location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default()
    )]
    Panicked {
        /// The panic payload, if it was a string.
        message: String,
        /// `file:line:column` of the panic, when the backend could capture it. Always the
        /// panic that failed the task: `None` for a payload the task raised with
        /// `std::panic::resume_unwind` (which bypasses the panic hook), never the place of a
        /// panic the task caught itself.
        location: Option<String>,
        /// The backtrace of the thread that panicked, as text, when captured (as `location`).
        backtrace: Option<String>,
    },
    /// The future was cancelled before it started; also the item of a lazy `map` (one with a
    /// `buffersize`) that the executor, shut down meanwhile, no longer took.
    #[error(
        "task was cancelled before it started (by Future::cancel, a dropped map iterator, \
         shutdown(cancel_futures), or a shutdown before a lazy map could submit it)"
    )]
    Cancelled,
    /// No result in time.
    ///
    /// With `killed_worker: None` this is a caller's wait that ran out (`result_timeout`, a
    /// `map` timeout): the task may still be pending or running. With `Some(pid)` the task ran past
    /// its own time limit and the process pool killed the worker running it.
    #[error("{}", timeout_message(*after, *killed_worker))]
    Timeout {
        /// How long was waited, or the task's time limit.
        after: Duration,
        /// The worker process killed because the task overran its limit.
        killed_worker: Option<u32>,
    },
    /// The worker process running the task died.
    ///
    /// Match it with `..`: `TaskError::WorkerDied { pid, cause, .. }`.
    #[error(
        "worker process {pid} died while holding this task ({cause}){}. Unless the pool's \
         workers were stopped on purpose (terminate_workers, kill_workers, a signal from \
         outside), a task it ran ended its process (abort, segfault, exit, stack overflow, out \
         of memory): this one, almost always (a task the worker had not started goes to \
         another worker, unless it was the third worker to die holding it or the worker died \
         before it could start the task it was just sent); fix that task, or retry; a pool \
         that is not shut down replaces the worker",
        last_panic.as_ref().map(|p| format!(" after a panic that could not unwind: {p}")).unwrap_or_default()
    )]
    WorkerDied {
        /// The dead worker's process id.
        pid: u32,
        /// How it ended.
        cause: ExitCause,
        /// The worker's last panic, when it reported one before dying: its message and location,
        /// e.g. `panicked at src/x.rs:3:5: boom`. A panic that cannot unwind (a `panic = "abort"`
        /// profile, a panic out of an `extern "C"` function or out of a destructor during
        /// unwinding) ends the worker with `SIGABRT`; this says which panic it was.
        last_panic: Option<String>,
    },
    /// The executor cannot run tasks any more.
    #[error("executor is broken: {reason}; create a new executor")]
    Broken {
        /// Why, e.g. the initializer's failure.
        reason: String,
    },
    /// No worker could be started to run the task, and none was running to take it: the
    /// operating system refused what a worker needs (a process, a thread, a descriptor: too
    /// many open files, too many processes, out of memory). The task did not run. Python's
    /// process pool raises this `OSError` from `submit`.
    ///
    /// Unlike [`Broken`](TaskError::Broken), the executor is not broken: a later task starts
    /// a worker again, and runs once the cause is gone. Match it with `..`:
    /// `TaskError::WorkerStartFailed { reason, .. }`.
    #[error(
        "could not start a worker to run this task: {reason}; the task did not run. The \
         executor is not broken: later tasks start a worker again once the cause is gone (too \
         many open files: close some or raise the limit, `ulimit -n`; too many processes or \
         threads: end some or raise `ulimit -u`)"
    )]
    WorkerStartFailed {
        /// What the operating system said, e.g. `Too many open files (os error 24)`.
        reason: String,
    },
    /// A cluster could not get the task run by a node: a node took it and stopped answering too
    /// many times (it died, or lost the server past the ack deadline), no node of the
    /// program's build was alive, or the node could not start the task. The analog of Dask's
    /// `KilledWorker`.
    ///
    /// Unlike [`Broken`](TaskError::Broken), the executor is not broken: later tasks run when a
    /// suitable node is there. Unlike [`WorkerDied`](TaskError::WorkerDied), the failure is of a
    /// whole node, not of one worker process on it. Match it with `..`:
    /// `TaskError::NodeFailed { node, .. }`.
    #[error("{}", node_failed_message(node.as_deref(), *deliveries, reason))]
    NodeFailed {
        /// The node concerned, as nodes name themselves (`host:pid:id`): the one that took the
        /// task last. `None` when no node took it (no node of this build was alive) or its name
        /// is unknown.
        node: Option<String>,
        /// How many times nodes took the task on (each redelivery counts), where known.
        deliveries: Option<u32>,
        /// What happened and what to do, e.g. which nodes of other builds were seen.
        reason: String,
    },
    /// An argument or result could not be serialized or deserialized, or its bytes could not be
    /// moved (a large buffer the system refused shared memory or a descriptor for: the message
    /// then says "the system refused" or names the system's error, `(os error N)`; a cluster's
    /// server that refused to store a payload, or did not give one back: "the server refused",
    /// "from the object store").
    #[error("{}", codec_message(*stage, message))]
    Codec {
        /// Which of the four crossings failed.
        stage: CodecStage,
        /// The codec's own message, or the panic message if the impl panicked.
        message: String,
    },
}

impl TaskError {
    /// The variant's name.
    fn kind(&self) -> &'static str {
        match self {
            TaskError::Panicked { .. } => "Panicked",
            TaskError::Cancelled => "Cancelled",
            TaskError::Timeout { .. } => "Timeout",
            TaskError::WorkerDied { .. } => "WorkerDied",
            TaskError::Broken { .. } => "Broken",
            TaskError::WorkerStartFailed { .. } => "WorkerStartFailed",
            TaskError::NodeFailed { .. } => "NodeFailed",
            TaskError::Codec { .. } => "Codec",
        }
    }
}

impl fmt::Debug for TaskError {
    /// `Kind: message` on one line; a panic's backtrace on lines of its own with `{:#?}` or when
    /// `RUST_BACKTRACE` asks for backtraces, else a note saying how to see it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {self}", self.kind())?;
        if let TaskError::Panicked {
            backtrace: Some(backtrace),
            ..
        } = self
        {
            if f.alternate() || backtraces_wanted() {
                write!(
                    f,
                    "\n\nstack backtrace of the task:\n{}",
                    backtrace.trim_end()
                )?;
            } else {
                f.write_str(
                    "\nnote: the task's backtrace was captured; set RUST_BACKTRACE=1 or format \
                     this error with {:#?} to see it",
                )?;
            }
        }
        Ok(())
    }
}

/// Whether `RUST_BACKTRACE` asks for backtraces, as Rust's panic messages read it.
fn backtraces_wanted() -> bool {
    std::env::var_os("RUST_BACKTRACE").is_some_and(|value| value != "0")
}

fn timeout_message(after: Duration, killed_worker: Option<u32>) -> String {
    match killed_worker {
        Some(pid) => format!(
            "task ran past its time limit of {after:?}; worker process {pid} was killed and \
             replaced; raise the limit or make the task faster"
        ),
        None => format!(
            "no result within {after:?}; the task is still pending or running; wait longer, \
             or cancel() it (a `map` that timed out has ended, and cancelled what had not \
             started)"
        ),
    }
}

/// A codec failure, with a hint at the usual cause when the message is the value's (a message
/// that names an operating system error, says the system or a cluster's server refused
/// something, or is about a cluster's object store, is about the transport, not the type).
fn codec_message(stage: CodecStage, message: &str) -> String {
    const TRANSPORT: [&str; 4] = [
        "(os error ",
        "the system refused",
        "the server refused",
        "from the object store",
    ];
    if TRANSPORT.iter().any(|t| message.contains(t)) {
        format!("could not {stage}: {message}")
    } else {
        format!(
            "could not {stage}: {message}; check that the type's Serialize and Deserialize \
             agree and do not need self-describing formats (no serde(untagged), no \
             deserialize_any)"
        )
    }
}

fn node_failed_message(node: Option<&str>, deliveries: Option<u32>, reason: &str) -> String {
    let delivered = match deliveries {
        Some(1) => " (delivered once)".to_owned(),
        Some(n) => format!(" (delivered {n} times)"),
        None => String::new(),
    };
    let who = match node {
        Some(node) => format!("cluster node {node} failed this task{delivered}"),
        None => format!("no cluster node ran this task{delivered}"),
    };
    format!(
        "{who}: {reason}; the executor is not broken: later tasks still run on live nodes of \
         this build"
    )
}

impl TaskError {
    /// A caller-side wait timeout of `after`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = cf_futures_core::TaskError::timeout(Duration::from_millis(5));
    /// assert!(e.to_string().contains("no result within 5ms"));
    /// ```
    #[must_use]
    pub fn timeout(after: Duration) -> Self {
        TaskError::Timeout {
            after,
            killed_worker: None,
        }
    }

    /// A `Panicked` error built from a panic payload as returned by `catch_unwind`.
    ///
    /// # Examples
    ///
    /// ```
    /// let payload = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
    /// let e = cf_futures_core::TaskError::from_panic(payload.as_ref(), None, None);
    /// assert!(e.to_string().contains("boom"));
    /// ```
    #[must_use]
    pub fn from_panic(
        payload: &(dyn std::any::Any + Send),
        location: Option<String>,
        backtrace: Option<String>,
    ) -> Self {
        TaskError::Panicked {
            message: panic_message(payload),
            location,
            backtrace,
        }
    }
}

/// The text of a panic payload (`&str` or `String`), or a placeholder for other types.
///
/// # Examples
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("x = {}", 1)).unwrap_err();
/// assert_eq!(cf_futures_core::panic_message(payload.as_ref()), "x = 1");
/// ```
#[must_use]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// Drops a caught panic's payload without letting a panic in the payload's own destructor
/// unwind further: a task may panic with any value (`std::panic::panic_any`), and one whose
/// `Drop` panics would otherwise unwind out of the code that caught the first panic (a worker
/// thread's loop, say). The destructor's panic is caught (it is reported as any panic is, by
/// the panic hook), and its own payload dropped the same way; a chain of payloads that keep
/// panicking is forgotten after a few, rather than followed forever.
///
/// # Examples
///
/// ```
/// struct Bomb;
/// impl Drop for Bomb {
///     fn drop(&mut self) {
///         panic!("dropped a bomb");
///     }
/// }
///
/// let payload = std::panic::catch_unwind(|| std::panic::panic_any(Bomb)).unwrap_err();
/// cf_futures_core::drop_panic_payload(payload); // does not panic
/// ```
pub fn drop_panic_payload(payload: Box<dyn std::any::Any + Send>) {
    let mut payload = payload;
    for _ in 0..8 {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}

/// Drops `value`, catching a panic from its destructor (a user's type dropped by an executor:
/// a cancelled task's captures, an unused argument, a value nobody kept a future for) and
/// logging it as an error naming `what`: an executor goes on with its other tasks rather than
/// unwind out of its worker or its `shutdown`. The panic is also reported by the panic hook,
/// as any panic is.
///
/// # Examples
///
/// ```
/// struct Bomb;
/// impl Drop for Bomb {
///     fn drop(&mut self) {
///         panic!("dropped a bomb");
///     }
/// }
///
/// cf_futures_core::drop_logging_panic(Bomb, "a cancelled task's closure"); // does not panic
/// ```
pub fn drop_logging_panic<V>(value: V, what: &str) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)));
    if let Err(payload) = dropped {
        log_guarded(|| {
            log::error!(
                "dropping {what} panicked: {}; the executor goes on",
                panic_message(payload.as_ref())
            );
        });
        drop_panic_payload(payload);
    }
}

/// Runs `log`, a call of the `log` crate's macros made on an executor's own thread, so that an
/// application logger that panics (one that writes to a closed pipe, say) cannot unwind that
/// thread: a pool thread that dies leaves the futures it serves pending forever. Python's
/// logging handlers likewise swallow their own errors. The panic is not reported further
/// (the logger is what failed); the panic hook has printed it, as it prints any panic.
///
/// For executor backends; user code need not call it.
///
/// # Examples
///
/// ```
/// cf_futures_core::log_guarded(|| log::warn!("a worker was replaced"));
/// ```
#[doc(hidden)]
pub fn log_guarded(log: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(log)) {
        drop_panic_payload(payload);
    }
}

/// How a worker process ended.
///
/// # Examples
///
/// ```
/// use cf_futures_core::ExitCause;
/// assert_eq!(ExitCause::Signal(9).to_string(), "killed by signal 9 (SIGKILL)");
/// assert_eq!(ExitCause::Code(99).to_string(), "exited with code 99");
/// // A Windows worker that crashed exits with an NTSTATUS, named:
/// assert_eq!(
///     ExitCause::Code(0xC000_0005_u32 as i32).to_string(),
///     "exited with code 0xC0000005 (STATUS_ACCESS_VIOLATION)"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExitCause {
    /// `exit(code)`.
    Code(i32),
    /// Terminated by this signal number.
    Signal(i32),
    /// The channel closed but the exit status could not be read.
    Unknown,
}

impl ExitCause {
    /// The conventional name of a signal (`SIGKILL`), if this is a well-known one.
    #[must_use]
    pub fn signal_name(self) -> Option<&'static str> {
        let ExitCause::Signal(n) = self else {
            return None;
        };
        Some(match n {
            1 => "SIGHUP",
            2 => "SIGINT",
            3 => "SIGQUIT",
            4 => "SIGILL",
            5 => "SIGTRAP",
            6 => "SIGABRT",
            7 => "SIGBUS",
            8 => "SIGFPE",
            9 => "SIGKILL",
            11 => "SIGSEGV",
            13 => "SIGPIPE",
            14 => "SIGALRM",
            15 => "SIGTERM",
            _ => return None,
        })
    }
}

impl ExitCause {
    /// The name of a Windows `NTSTATUS` exit code (`STATUS_ACCESS_VIOLATION` for
    /// `0xC0000005`), if this is a well-known one: what a Windows process that crashed exits
    /// with.
    #[must_use]
    pub fn ntstatus_name(self) -> Option<&'static str> {
        let ExitCause::Code(c) = self else {
            return None;
        };
        Some(match c as u32 {
            0x8000_0003 => "STATUS_BREAKPOINT",
            0xC000_0005 => "STATUS_ACCESS_VIOLATION",
            0xC000_0017 => "STATUS_NO_MEMORY",
            0xC000_001D => "STATUS_ILLEGAL_INSTRUCTION",
            0xC000_008C => "STATUS_ARRAY_BOUNDS_EXCEEDED",
            0xC000_0094 => "STATUS_INTEGER_DIVIDE_BY_ZERO",
            0xC000_0096 => "STATUS_PRIVILEGED_INSTRUCTION",
            0xC000_00FD => "STATUS_STACK_OVERFLOW",
            0xC000_013A => "STATUS_CONTROL_C_EXIT",
            0xC000_0135 => "STATUS_DLL_NOT_FOUND",
            0xC000_0409 => "STATUS_STACK_BUFFER_OVERRUN",
            0xC000_0374 => "STATUS_HEAP_CORRUPTION",
            _ => return None,
        })
    }
}

impl fmt::Display for ExitCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitCause::Code(c) => match self.ntstatus_name() {
                Some(name) => write!(f, "exited with code {:#010X} ({name})", *c as u32),
                None => write!(f, "exited with code {c}"),
            },
            ExitCause::Signal(n) => match self.signal_name() {
                Some(name) => write!(f, "killed by signal {n} ({name})"),
                None => write!(f, "killed by signal {n}"),
            },
            ExitCause::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// Which crossing of a process boundary failed to (de)serialize.
///
/// # Examples
///
/// ```
/// use cf_futures_core::CodecStage;
/// assert_eq!(CodecStage::SerializeArgument.to_string(), "serialize the task's argument in the parent");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CodecStage {
    /// In the parent, at `submit`.
    SerializeArgument,
    /// In the worker, before the task runs.
    DeserializeArgument,
    /// In the worker, after the task returned.
    SerializeResult,
    /// In the parent, when the result arrived.
    DeserializeResult,
}

impl fmt::Display for CodecStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecStage::SerializeArgument => "serialize the task's argument in the parent",
            CodecStage::DeserializeArgument => "deserialize the task's argument in the worker",
            CodecStage::SerializeResult => "serialize the task's result in the worker",
            CodecStage::DeserializeResult => "deserialize the task's result in the parent",
        })
    }
}

/// A [`Promise`](crate::Promise) was asked to complete a future that is already complete.
///
/// The first outcome stays; this error names the state the future was in.
///
/// # Examples
///
/// ```
/// use cf_futures_core::{Promise, State};
///
/// let promise = Promise::new();
/// promise.set_result(1).unwrap();
/// let err = promise.set_result(2).unwrap_err();
/// assert_eq!(err.state, State::Finished);
/// assert_eq!(*promise.future().result().unwrap(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("future is already {state}; its first outcome stays and this one was dropped")]
pub struct InvalidStateError {
    /// The state the future was in.
    pub state: State,
}

/// `as_completed` ran out of time before every future finished.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cf_futures_core::{as_completed, Promise};
///
/// let pending = Promise::<u8>::new();
/// let futures = [pending.future()];
/// let mut it = as_completed(&futures, Some(Duration::ZERO));
/// let err = it.next().unwrap().unwrap_err();
/// assert_eq!(err.to_string(), "1 (of 1) futures unfinished");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{unfinished} (of {total}) futures unfinished")]
pub struct TimeoutError {
    /// How many futures were still not done.
    pub unfinished: usize,
    /// How many distinct futures were given.
    pub total: usize,
}
