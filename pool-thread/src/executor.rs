//! [`ThreadPoolExecutor`]: the handle users hold, and its [`Executor`] implementation.

use std::fmt;
use std::sync::Arc;

use cf_executor_api::{
    call_catching, Executor, Future, InlineTask, Payload, Promise, SubmitError, Task,
};

use crate::builder::ThreadPoolBuilder;
use crate::job::{Batch, Work};
use crate::worker::Shared;

/// A pool of threads running submitted tasks: Python's `concurrent.futures.ThreadPoolExecutor`.
///
/// Tasks go through the [`Executor`] trait ([`submit`](Executor::submit),
/// [`map`](Executor::map), [`shutdown`](Executor::shutdown)), the same calls as on a process
/// pool, or through [`spawn`](Self::spawn), which also takes capturing closures.
///
/// Dropping the pool is the end of Python's `with` block: it shuts down, runs every queued task
/// and joins every worker thread.
///
/// # Examples
///
/// ```
/// use cf_pool_thread::{Executor, MapOptions, ThreadPoolExecutor};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let pool = ThreadPoolExecutor::builder().max_workers(4).build().unwrap();
/// let future = pool.submit(square, 7).unwrap();
/// assert_eq!(future.result(), Ok(&49));
///
/// let squares: Vec<u64> = pool
///     .map(square, 1..=4, MapOptions::new())
///     .unwrap()
///     .collect::<Result<_, _>>()
///     .unwrap();
/// assert_eq!(squares, [1, 4, 9, 16]);
/// ```
pub struct ThreadPoolExecutor {
    shared: Arc<Shared>,
}

impl ThreadPoolExecutor {
    /// A builder for a pool with non-default settings.
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_pool_thread::{Executor, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::builder().max_workers(8).build().unwrap();
    /// assert_eq!(pool.max_workers(), 8);
    /// ```
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::new()
    }

    /// A pool with the default settings: `min(32, cpu_count() + 4)` workers, threads named
    /// `ThreadPoolExecutor-N_k`, no initializer.
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_pool_thread::{cpu_count, Executor, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// assert_eq!(pool.max_workers(), (cpu_count() + 4).min(32));
    /// assert!(pool.thread_name_prefix().starts_with("ThreadPoolExecutor-"));
    /// ```
    #[must_use]
    pub fn new() -> Self {
        ThreadPoolBuilder::new()
            .build()
            .expect("the default settings are valid")
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        ThreadPoolExecutor { shared }
    }

    /// Schedules any closure: capturing, holding non-serde values, returning anything shareable.
    ///
    /// The thread pool's escape hatch from [`Executor::submit`]'s bounds, which exist for
    /// process pools. A panic in `f` arrives as
    /// [`TaskError::Panicked`](cf_executor_api::TaskError::Panicked); the worker lives on.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Shutdown`] after [`shutdown`](Executor::shutdown),
    /// [`SubmitError::Broken`] after the initializer failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use cf_pool_thread::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let futures: Vec<_> = (0..4)
    ///     .map(|i| {
    ///         let log = Arc::clone(&log);
    ///         pool.spawn(move || log.lock().unwrap().push(i)).unwrap()
    ///     })
    ///     .collect();
    /// for f in &futures {
    ///     f.result().unwrap();
    /// }
    /// assert_eq!(log.lock().unwrap().len(), 4);
    /// ```
    pub fn spawn<F, R>(&self, f: F) -> Result<Future<R>, SubmitError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + Sync + 'static,
    {
        let (task, future) = InlineTask::new(move || call_catching(f));
        self.shared.enqueue(Work::Call(task))?;
        Ok(future)
    }

    /// The prefix of the worker threads' names (`{prefix}_0`, `{prefix}_1`, ...).
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_pool_thread::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::builder().thread_name_prefix("io").build().unwrap();
    /// assert_eq!(pool.thread_name_prefix(), "io");
    /// ```
    #[must_use]
    pub fn thread_name_prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// How many worker threads this pool has started so far (never more than
    /// [`max_workers`](Executor::max_workers)); Python's `len(executor._threads)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_pool_thread::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// assert_eq!(pool.worker_threads(), 0); // threads start on demand
    /// pool.spawn(|| ()).unwrap().result().unwrap();
    /// assert_eq!(pool.worker_threads(), 1);
    /// ```
    #[must_use]
    pub fn worker_threads(&self) -> usize {
        self.shared.started()
    }
}

impl Default for ThreadPoolExecutor {
    /// The same as [`ThreadPoolExecutor::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl Executor for ThreadPoolExecutor {
    /// Queues `f(arg)`; a thread calls `f` directly, nothing is serialized.
    fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        self.spawn(move || f(arg))
    }

    /// Queues one job that runs `f` over `args` in order on one thread, completing each
    /// item's future as it goes; cancelled items are skipped.
    fn submit_batch<F, A, R>(&self, f: F, args: Vec<A>) -> Result<Vec<Future<R>>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        let items: Vec<(A, Promise<R>)> = args.into_iter().map(|a| (a, Promise::new())).collect();
        let futures = items.iter().map(|(_, p)| p.future()).collect();
        if !items.is_empty() {
            self.shared
                .enqueue(Work::Batch(Box::new(Batch::new(f, items))))?;
        }
        Ok(futures)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.shutdown(wait, cancel_futures);
    }

    fn max_workers(&self) -> usize {
        self.shared.max_workers
    }
}

impl Drop for ThreadPoolExecutor {
    /// `shutdown(wait = true)`: runs what is queued and joins every worker thread.
    fn drop(&mut self) {
        self.shared.shutdown(true, false);
    }
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.snapshot();
        f.debug_struct("ThreadPoolExecutor")
            .field("thread_name_prefix", &self.shared.prefix)
            .field("max_workers", &self.shared.max_workers)
            .field("threads", &s.started)
            .field("available", &s.available)
            .field("queued", &s.queued)
            .field("shutdown", &s.shutdown)
            .field("broken", &s.broken)
            .finish()
    }
}
