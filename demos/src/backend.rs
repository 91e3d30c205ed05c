//! The two backends a demo runs on, how a demo builds a pool of either kind, and how it names
//! the worker that ran a task.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use cf_executor_api::{BuildError, Executor};
use cf_pool_proc::ProcessPoolExecutor;
use cf_pool_thread::ThreadPoolExecutor;
use serde::{Deserialize, Serialize};

/// One of the two pools.
///
/// # Examples
///
/// ```
/// use cf_demos::Backend;
/// assert_eq!(Backend::Process.executor_name(), "ProcessPoolExecutor");
/// assert_eq!(Backend::Thread.marker(), "[thread]");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `cf_pool_proc::ProcessPoolExecutor`: tasks run in worker processes.
    Process,
    /// `cf_pool_thread::ThreadPoolExecutor`: tasks run on worker threads of this process.
    Thread,
}

impl Backend {
    /// Both, in the order demos run them (the chapter is about processes, so they come first).
    pub const ALL: [Backend; 2] = [Backend::Process, Backend::Thread];

    /// The `--backend` value: `process` or `thread`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Backend::Process => "process",
            Backend::Thread => "thread",
        }
    }

    /// The executor's type name, as the chapter spells it.
    #[must_use]
    pub fn executor_name(self) -> &'static str {
        match self {
            Backend::Process => "ProcessPoolExecutor",
            Backend::Thread => "ThreadPoolExecutor",
        }
    }

    /// The prefix of an output line that differs between the backends by nature (and that the
    /// comparison of the two outputs skips): `[process]` or `[thread]`.
    #[must_use]
    pub fn marker(self) -> &'static str {
        match self {
            Backend::Process => "[process]",
            Backend::Thread => "[thread]",
        }
    }

    /// How this backend names a worker: its process id, or its thread.
    ///
    /// Rendered as `pid=N` or `thread=N`, the tokens [`normalize`](crate::normalize) replaces.
    #[must_use]
    pub fn worker_label(self, worker: WorkerId) -> String {
        match self {
            Backend::Process => format!("pid={}", worker.pid),
            Backend::Thread => format!("thread={}", worker.thread),
        }
    }

    /// Writes `text` as a backend-specific line, `[process] text`; leading spaces of `text`
    /// stay in front of the marker, so indented lines keep their indent.
    ///
    /// # Errors
    ///
    /// As the writer's.
    pub fn say(self, out: &mut dyn Write, text: fmt::Arguments<'_>) -> io::Result<()> {
        let text = text.to_string();
        let body = text.trim_start();
        let indent = &text[..text.len() - body.len()];
        writeln!(out, "{indent}{} {body}", self.marker())
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A pool a demo can build: an [`Executor`] plus the constructors the chapter uses.
///
/// `Executor` has no constructor (the application picks and builds the backend), so the
/// backend-generic demos need this small extension to create pools of a given size.
pub trait DemoPool: Executor + Sized {
    /// Which backend this is.
    const BACKEND: Backend;

    /// `Executor(max_workers=n)`.
    ///
    /// # Errors
    ///
    /// As the backend's builder: `n == 0`, or the OS refused.
    fn with_workers(n: usize) -> Result<Self, BuildError>;

    /// `Executor()`: the backend's default `max_workers`.
    ///
    /// # Errors
    ///
    /// As the backend's builder.
    fn with_default_workers() -> Result<Self, BuildError>;
}

impl DemoPool for ProcessPoolExecutor {
    const BACKEND: Backend = Backend::Process;

    fn with_workers(n: usize) -> Result<Self, BuildError> {
        ProcessPoolExecutor::builder().max_workers(n).build()
    }

    fn with_default_workers() -> Result<Self, BuildError> {
        ProcessPoolExecutor::new()
    }
}

impl DemoPool for ThreadPoolExecutor {
    const BACKEND: Backend = Backend::Thread;

    fn with_workers(n: usize) -> Result<Self, BuildError> {
        ThreadPoolExecutor::builder().max_workers(n).build()
    }

    fn with_default_workers() -> Result<Self, BuildError> {
        Ok(ThreadPoolExecutor::new())
    }
}

/// Where a piece of code runs: the process id and a small per-process thread number.
///
/// A task returns it to say which worker ran it; Python's `os.getpid()` is the `pid` half.
/// Thread numbers count from 1 in each process in the order threads first ask.
///
/// # Examples
///
/// ```
/// use cf_demos::WorkerId;
/// let here = WorkerId::current();
/// assert_eq!(here, WorkerId::current());
/// assert_eq!(here.pid, std::process::id());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId {
    /// `std::process::id()`.
    pub pid: u32,
    /// This thread's number within its process.
    pub thread: u64,
}

impl WorkerId {
    /// The calling thread's identity.
    #[must_use]
    pub fn current() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        thread_local! {
            static THREAD: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        WorkerId {
            pid: std::process::id(),
            thread: THREAD.with(|t| *t),
        }
    }
}
