//! How a demo shows the backend it runs on ([`Backend`] and the pools come from
//! `concurrent-futures`: a demo builds a [`Pool`](concurrent_futures::Pool) of the backend
//! chosen on the command line), and how it names the worker that ran a task.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use concurrent_futures::Backend;
use serde::{Deserialize, Serialize};

/// Demo-only presentation of a [`Backend`]: the line markers and worker labels that the
/// comparison of two backends' outputs relies on.
///
/// # Examples
///
/// ```
/// use cf_demos::{Backend, BackendOutput};
/// assert_eq!(Backend::Process.executor_name(), "ProcessPoolExecutor");
/// assert_eq!(Backend::Thread.marker(), "[thread]");
/// ```
pub trait BackendOutput {
    /// The prefix of an output line that differs between the backends by nature (and that the
    /// comparison of the outputs skips): `[process]`, `[thread]` or `[cluster]`.
    fn marker(self) -> &'static str;

    /// How this backend names a worker: its process id (on a cluster, a pid on the node that
    /// ran the task), or its thread.
    ///
    /// Rendered as `pid=N` or `thread=N`, the tokens [`normalize`](crate::normalize) replaces.
    fn worker_label(self, worker: WorkerId) -> String;

    /// Writes `text` as a backend-specific line, `[process] text`; leading spaces of `text`
    /// stay in front of the marker, so indented lines keep their indent.
    ///
    /// # Errors
    ///
    /// As the writer's.
    fn say(self, out: &mut dyn Write, text: fmt::Arguments<'_>) -> io::Result<()>;
}

impl BackendOutput for Backend {
    fn marker(self) -> &'static str {
        match self {
            Backend::Thread => "[thread]",
            Backend::Cluster => "[cluster]",
            // Every other backend runs tasks in worker processes here.
            _ => "[process]",
        }
    }

    fn worker_label(self, worker: WorkerId) -> String {
        match self {
            Backend::Thread => format!("thread={}", worker.thread),
            _ => format!("pid={}", worker.pid),
        }
    }

    fn say(self, out: &mut dyn Write, text: fmt::Arguments<'_>) -> io::Result<()> {
        let text = text.to_string();
        let body = text.trim_start();
        let indent = &text[..text.len() - body.len()];
        writeln!(out, "{indent}{} {body}", self.marker())
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
