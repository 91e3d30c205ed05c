//! [`ThreadPoolBuilder`]: the settings of a [`ThreadPoolExecutor`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cf_executor_api::{cpu_count, BuildError};

use crate::worker::{Initializer, Shared};
use crate::ThreadPoolExecutor;

/// Numbers the default thread name prefixes, `ThreadPoolExecutor-0`, `-1`, ... as CPython does.
static DEFAULT_PREFIX_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The default `max_workers` of a thread pool: `min(32, cpu_count() + 4)`, as in Python 3.8+.
///
/// At least 5 threads so I/O-bound work overlaps even on one CPU, at most 32 so a big machine
/// does not start hundreds of threads for it.
pub(crate) fn default_max_workers() -> usize {
    (cpu_count() + 4).min(32)
}

/// Settings for a [`ThreadPoolExecutor`]; start with [`ThreadPoolExecutor::builder`].
///
/// Python's `ThreadPoolExecutor(max_workers=, thread_name_prefix=, initializer=)` as a builder.
/// Nothing is started by [`build`](Self::build): threads start on demand, one per submitted task
/// that finds no idle thread, up to `max_workers`.
///
/// # Examples
///
/// ```
/// use cf_pool_thread::{Executor, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::builder()
///     .max_workers(2)
///     .thread_name_prefix("fetch")
///     .initializer(|| {
///         eprintln!("worker {:?} ready", std::thread::current().name());
///         Ok(())
///     })
///     .build()
///     .unwrap();
/// let name = pool
///     .spawn(|| std::thread::current().name().map(str::to_owned))
///     .unwrap();
/// assert_eq!(name.result().unwrap().as_deref(), Some("fetch_0"));
/// assert_eq!(pool.max_workers(), 2);
/// ```
#[derive(Default)]
#[must_use = "a builder does nothing until .build()"]
pub struct ThreadPoolBuilder {
    max_workers: Option<usize>,
    thread_name_prefix: Option<String>,
    initializer: Option<Initializer>,
}

impl ThreadPoolBuilder {
    /// A builder with every setting at its default; the same as
    /// [`ThreadPoolExecutor::builder`].
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = cf_pool_thread::ThreadPoolBuilder::new().build().unwrap();
    /// # drop(pool);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The most threads the pool may run at once. Default: `min(32, cpu_count() + 4)`.
    ///
    /// `0` makes [`build`](Self::build) fail with [`BuildError::ZeroWorkers`].
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_pool_thread::{Executor, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::builder().max_workers(3).build().unwrap();
    /// assert_eq!(pool.max_workers(), 3);
    /// ```
    pub fn max_workers(mut self, max_workers: usize) -> Self {
        self.max_workers = Some(max_workers);
        self
    }

    /// Names the worker threads `{prefix}_0`, `{prefix}_1`, ...
    ///
    /// Default (also for an empty prefix): `ThreadPoolExecutor-N`, where `N` counts the pools
    /// this process built without a prefix, as in Python.
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_pool_thread::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::builder().thread_name_prefix("db").build().unwrap();
    /// assert_eq!(pool.thread_name_prefix(), "db");
    /// ```
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name_prefix = Some(prefix.into());
        self
    }

    /// Runs `initializer` once in every worker thread, before it takes its first task.
    ///
    /// If it returns `Err(message)` or panics, the pool becomes *broken*: every queued future
    /// fails with [`TaskError::Broken`](cf_executor_api::TaskError::Broken) whose reason
    /// contains `message`, and later submits fail with
    /// [`SubmitError::Broken`](cf_executor_api::SubmitError::Broken). Tasks already running
    /// finish.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use cf_pool_thread::ThreadPoolExecutor;
    ///
    /// thread_local!(static CONNECTED: Cell<bool> = const { Cell::new(false) });
    ///
    /// let pool = ThreadPoolExecutor::builder()
    ///     .initializer(|| {
    ///         CONNECTED.with(|c| c.set(true));
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let seen = pool.spawn(|| CONNECTED.with(Cell::get)).unwrap();
    /// assert_eq!(seen.result(), Ok(&true));
    /// ```
    pub fn initializer<F>(mut self, initializer: F) -> Self
    where
        F: Fn() -> Result<(), String> + Send + Sync + 'static,
    {
        self.initializer = Some(Arc::new(initializer));
        self
    }

    /// Builds the pool. No thread starts until the first task is submitted.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`] for `max_workers(0)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_pool_thread::{BuildError, ThreadPoolExecutor};
    ///
    /// let err = ThreadPoolExecutor::builder().max_workers(0).build().unwrap_err();
    /// assert_eq!(err, BuildError::ZeroWorkers);
    /// ```
    pub fn build(self) -> Result<ThreadPoolExecutor, BuildError> {
        let max_workers = self.max_workers.unwrap_or_else(default_max_workers);
        if max_workers == 0 {
            return Err(BuildError::ZeroWorkers);
        }
        let prefix = match self.thread_name_prefix {
            Some(prefix) if !prefix.is_empty() => prefix,
            _ => format!(
                "ThreadPoolExecutor-{}",
                DEFAULT_PREFIX_COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        };
        Ok(ThreadPoolExecutor::from_shared(Shared::new(
            max_workers,
            prefix,
            self.initializer,
        )))
    }
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("max_workers", &self.max_workers)
            .field("thread_name_prefix", &self.thread_name_prefix)
            .field("initializer", &self.initializer.as_ref().map(|_| ".."))
            .finish()
    }
}
