//! The executor front: [`ProcessPoolExecutor`] and its builder. `submit` encodes the argument
//! in the caller's thread and queues the task in the shared state ([`crate::state`]); the
//! per-worker threads ([`crate::slot`]) do the rest. `shutdown` and the `*_workers` calls
//! change the state and wait for those threads.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cf_executor_api::codec::Place;
use cf_executor_api::{
    cpu_count, Buffer, BuildError, CodecStage, Executor, Future, Payload, Promise, SubmitError,
    Task, TaskError,
};
use parking_lot::{Condvar, Mutex};

use crate::protocol::Hello;
use crate::{shm, slot};
use crate::state::{Attached, Config, Job, Pool, PoolState, Reclaim, WorkerDeath, Writer};
use crate::sys;
use crate::task::{encode, trampoline_offset, Completion};

/// A task as `submit` hands it to the queue: its encoded argument (or why encoding failed)
/// and its completion.
type EncodedTask = (
    Result<(Vec<u8>, Vec<Buffer>), TaskError>,
    Box<dyn Completion>,
);

/// A new future for `arg`, and the task that will complete it, argument already encoded (its
/// large byte strings copied where `place` says, see [`shm::place`]).
fn encoded<A: Payload, R: Payload + Sync>(arg: &A, place: Place<'_>) -> (Future<R>, EncodedTask) {
    let promise = Promise::<R>::new();
    let future = promise.future();
    let payload = encode(arg, CodecStage::SerializeArgument, place);
    (future, (payload, Box::new(promise)))
}
/// How long `shutdown(wait)` waits for workers after `terminate_workers` before it kills them,
/// unless [`ProcessPoolBuilder::shutdown_grace`] says otherwise.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Pool {
    /// The latency path: a lone small job and an idle worker. Takes the job for that worker and
    /// returns the frame for the caller to write, skipping the hop through the feeder thread.
    fn direct_send(&self, state: &mut PoolState) -> Option<(usize, Writer, Vec<slot::Sending>)> {
        const DIRECT_MAX: usize = 16 * 1024;
        let job = state.queue.front()?;
        if state.queue.len() != 1 || job.payload.len() > DIRECT_MAX {
            return None;
        }
        let (id, writer) = self.idle_worker(state)?;
        let jobs = slot::take_jobs(self, state, id, 1)?;
        Some((id, writer, jobs))
    }

    /// The idle worker that [`Pool::direct_send`] gives a lone job to.
    fn idle_worker(&self, state: &PoolState) -> Option<(usize, Writer)> {
        let max_tasks = self.config.max_tasks_per_child;
        state.slots.iter().find_map(|(id, s)| {
            let usable = s.idle(max_tasks) && !s.reaping && s.timed_out.is_none();
            usable.then(|| s.writer.clone().map(|w| (*id, w))).flatten()
        })
    }

    /// Where `submit` places a large byte string of its argument: in a region of the worker
    /// that will most likely run it, the one [`Pool::direct_send`] would take if nothing is
    /// queued (an idle worker). Sent to another worker after all, it is copied again, into a
    /// region of that one's (regions are per worker, see [`shm::export`]). `None` when no
    /// worker is idle or work is queued: the codec then copies it into a `Vec`.
    fn place(&self, bytes: &[u8]) -> Option<Buffer> {
        let writer = {
            let state = self.state.lock();
            if !state.queue.is_empty() {
                return None;
            }
            self.idle_worker(&state)?.1
        };
        shm::place(writer.peer(), bytes)
    }
    /// Stops taking work, cancels what is queued and signals every worker; does not wait.
    fn stop_workers(&self, signal: sys::Signal) {
        // The workers are signalled at once: asking them for their unstarted tasks first
        // would race with the signal (each task would end cancelled or `WorkerDied` by chance).
        self.shutdown_taking_back(false, true, false);
        let mut state = self.state.lock();
        state.terminated.get_or_insert_with(Instant::now);
        Self::signal_all(&state, signal);
    }

    /// Sends `signal` to every worker not yet being reaped.
    fn signal_all(state: &PoolState, signal: sys::Signal) {
        for (_, slot) in &state.slots {
            if let (false, Some(pid)) = (slot.reaping, slot.pid) {
                let _ = sys::signal(pid, signal);
            }
        }
    }

    /// After `terminate_workers`: waits until every worker has ended or the grace period is
    /// over, then kills the workers that still run (a task that ignores `SIGTERM`).
    fn end_terminated_workers(&self) {
        let mut state = self.state.lock();
        let Some(since) = state.terminated else {
            return;
        };
        // A grace too long for the clock (`Duration::MAX`, say) waits for as long as it takes.
        let deadline = since.checked_add(self.config.shutdown_grace);
        while !state.slots.is_empty() {
            match deadline {
                Some(d) if Instant::now() >= d => break,
                Some(d) => {
                    self.work.wait_until(&mut state, d);
                }
                None => self.work.wait(&mut state),
            }
        }
        if !state.slots.is_empty() {
            guarded!(warn!(
                "cf-pool-proc: {} worker(s) still running {:?} after terminate_workers; killing \
                 them",
                state.slots.len(),
                self.config.shutdown_grace
            ));
            Self::signal_all(&state, sys::Signal::Kill);
        }
    }

    /// Queues already-encoded tasks (encoding happens before, outside the lock).
    pub(crate) fn enqueue(
        self: &Arc<Self>,
        fn_offset: i64,
        timeout: Option<Duration>,
        items: impl IntoIterator<Item = EncodedTask>,
    ) -> Result<(), SubmitError> {
        let mut rejected = Vec::new();
        let direct;
        let mut stranded = None;
        {
            let mut state = self.state.lock();
            if let Some(reason) = &state.broken {
                return Err(SubmitError::Broken {
                    reason: reason.clone(),
                });
            }
            if state.shutdown {
                return Err(SubmitError::Shutdown);
            }
            if timeout.is_some() {
                if let Err(e) = self.start_watchdog(&mut state) {
                    return Err(SubmitError::WorkerStartFailed {
                        reason: format!(
                            "could not start the thread that enforces task time limits: {e}"
                        ),
                    });
                }
            }
            for (payload, completion) in items {
                match payload {
                    Ok((payload, attached)) => {
                        let id = state.next_task;
                        state.next_task += 1;
                        state.queue.push_back(Job {
                            id,
                            fn_offset,
                            payload,
                            attached: Attached::new(attached),
                            completion,
                            timeout,
                        });
                    }
                    Err(e) => rejected.push((completion, e)),
                }
            }
            direct = self.direct_send(&mut state);
            if direct.is_none() {
                stranded = self.spawn_as_needed(&mut state);
                self.work.notify_all();
            }
        }
        if let Some(stranded) = stranded {
            stranded.fail();
        }
        if let Some((id, writer, jobs)) = direct {
            // The worker is idle: it has read everything sent to it, so a small frame fits in
            // the socket buffer and this write does not wait for the worker; and its task
            // thread reads it.
            if let Err(e) = slot::send_tasks(&writer, &jobs, false) {
                guarded!(debug!("cf-pool-proc: direct send failed: {e}; its reader handles it"));
                self.kill_worker(id);
            }
        }
        for (completion, e) in rejected {
            completion.fail(e);
        }
        Ok(())
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shutdown_taking_back(wait, cancel_futures, true);
    }

    /// [`shutdown`](Self::shutdown); with `cancel_futures`, `take_back` also asks busy workers
    /// for the tasks they hold and have not started, to cancel them.
    fn shutdown_taking_back(&self, wait: bool, cancel_futures: bool, take_back: bool) {
        let cancelled = {
            let mut state = self.state.lock();
            state.shutdown = true;
            self.work.notify_all();
            self.timer.notify_all();
            if cancel_futures {
                state.cancelling = true;
                // Tasks already handed to a busy worker and not started yet count as running
                // (see `crate::slot`): ask for them back, to cancel them as they return.
                for (_, slot) in &mut state.slots {
                    if take_back && slot.holds_unstarted() {
                        slot.reclaim = Reclaim::Wanted;
                    }
                }
                std::mem::take(&mut state.queue)
            } else {
                VecDeque::new()
            }
        };
        for job in cancelled {
            // A task a busy worker gave back is marked running, though it never started.
            if !job.completion.cancel() {
                job.completion.cancel_unstarted();
            }
        }
        if !wait {
            return;
        }
        let me = std::thread::current().id();
        if self.state.lock().own_threads.contains(&me) {
            // A done-callback on a reader thread: the threads finish on their own once the
            // workers drain; waiting here would wait for this very thread.
            guarded!(debug!("cf-pool-proc: shutdown(wait) from the pool's own thread; not waiting"));
            return;
        }
        self.end_terminated_workers();
        loop {
            let feeders = {
                let mut state = self.state.lock();
                let feeders = std::mem::take(&mut state.feeders);
                state.joining += feeders.len();
                feeders
            };
            if feeders.is_empty() {
                break;
            }
            for handle in feeders {
                if handle.thread().id() != me && handle.join().is_err() {
                    guarded!(error!("cf-pool-proc: a feeder thread panicked"));
                }
                let mut state = self.state.lock();
                state.joining -= 1;
                if state.joining == 0 {
                    self.joined.notify_all();
                }
            }
        }
        // Another thread's `shutdown(wait)` may be joining feeders it took: every caller
        // waits until the work is done, as in Python.
        let mut state = self.state.lock();
        while state.joining > 0 {
            self.joined.wait(&mut state);
        }
    }
}

/// Builds a [`ProcessPoolExecutor`].
///
/// # Examples
///
/// ```
/// use cf_pool_proc::ProcessPoolExecutor;
///
/// let pool = ProcessPoolExecutor::builder()
///     .max_workers(2)
///     .max_tasks_per_child(100)
///     .build()
///     .unwrap();
/// assert_eq!(cf_executor_api::Executor::max_workers(&pool), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProcessPoolBuilder {
    max_workers: Option<usize>,
    /// The initializer's code offset (see `transport::initializer_code`).
    initializer: Option<i64>,
    max_tasks_per_child: Option<u64>,
    task_timeout: Option<Duration>,
    on_worker_death: WorkerDeath,
    shutdown_grace: Option<Duration>,
}

impl ProcessPoolBuilder {
    /// At most `n` worker processes (default [`cpu_count()`]); 0 is an error at `build`.
    #[must_use]
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Runs `init` once in each worker before its first task. If it returns `Err` or panics,
    /// the pool is broken: queued futures fail with [`TaskError::Broken`] naming the reason and
    /// later `submit`s are refused. So is it if it ends its process instead of returning
    /// (`exit`, `abort`, a crash): the reason then names the worker's exit code or signal.
    ///
    /// Like a task, it must be a plain `fn` (or a closure that captures nothing): it is named
    /// across the process boundary by address.
    #[must_use]
    pub fn initializer(self, init: fn() -> Result<(), String>) -> Self {
        self.initializer_offset(sys::offset_unchecked(init as usize))
    }

    /// Sets the initializer by its code offset (from this process, or a peer of the same build).
    pub(crate) fn initializer_offset(mut self, offset: i64) -> Self {
        self.initializer = Some(offset);
        self
    }

    /// Replaces each worker by a fresh process after it ran `n` tasks (0 is an error).
    #[must_use]
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// A time limit for every task (see
    /// [`submit_with_timeout`](ProcessPoolExecutor::submit_with_timeout)); `Duration::ZERO` is
    /// an error at `build`, and one too long for the clock (`Duration::MAX`) is no limit. A
    /// `map` with `chunksize` above 1 sends each chunk as one task: the limit covers the whole
    /// chunk, and a chunk that overruns it fails as a whole (its items' `Timeout`), results of
    /// items that had finished included.
    #[must_use]
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// What happens when a worker dies unexpectedly; see [`WorkerDeath`].
    #[must_use]
    pub fn on_worker_death(mut self, policy: WorkerDeath) -> Self {
        self.on_worker_death = policy;
        self
    }

    /// How long, after [`terminate_workers`](ProcessPoolExecutor::terminate_workers), a later
    /// `shutdown(wait = true)` or `drop` waits for the workers to end before it kills those that
    /// still run with `SIGKILL` (default [`DEFAULT_SHUTDOWN_GRACE`], 5 s). A task may catch or
    /// ignore `SIGTERM`; it cannot keep the pool's end waiting longer than this. A grace too
    /// long for the clock (`Duration::MAX`) waits for as long as the workers take.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = Some(grace);
        self
    }

    /// Creates the pool. No process starts until work arrives.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`] for `max_workers(0)`, [`BuildError::Invalid`] for
    /// `max_tasks_per_child(0)` or when worker-mode detection is missing (see
    /// [`init`](crate::init)), [`BuildError::Io`] when `/proc/self/exe` cannot be inspected.
    pub fn build(self) -> Result<ProcessPoolExecutor, BuildError> {
        let max_workers = self.max_workers.unwrap_or_else(cpu_count);
        if max_workers == 0 {
            return Err(BuildError::ZeroWorkers);
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(BuildError::Invalid {
                name: "max_tasks_per_child",
                message: "must be at least 1 (got 0); leave it unset for no limit".into(),
            });
        }
        if self.task_timeout == Some(Duration::ZERO) {
            return Err(BuildError::Invalid {
                name: "task_timeout",
                message: "must be longer than zero; leave it unset for no limit".into(),
            });
        }
        if !sys::entry_ran() {
            return Err(BuildError::Invalid {
                name: "worker entry",
                message: "cf-pool-proc's worker entry point did not run in this executable \
                          (its static constructor was not linked); call \
                          `cf_pool_proc::init()` (or `concurrent_futures::init()`) as the first \
                          line of `main`"
                    .into(),
            });
        }
        let exe = sys::exe_identity()
            .map_err(|e| BuildError::Io(format!("cannot inspect this program's executable: {e}")))?;
        let init_offset = match self.initializer {
            None => 0,
            Some(offset) => sys::check_code_offset(offset).map(|()| offset).map_err(|message| BuildError::Invalid {
                name: "initializer",
                message,
            })?,
        };
        let hello = Hello {
            // Set again for each worker as it starts (see `slot`).
            log_level: 0,
            exe,
            probe_offset: sys::probe_offset(),
            init_offset,
            max_tasks: self.max_tasks_per_child.unwrap_or(0),
        };
        Ok(ProcessPoolExecutor {
            pool: Arc::new(Pool {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                timer: Condvar::new(),
                joined: Condvar::new(),
                sent: Condvar::new(),
                config: Config {
                    max_workers,
                    max_tasks_per_child: self.max_tasks_per_child,
                    task_timeout: self.task_timeout,
                    on_worker_death: self.on_worker_death,
                    shutdown_grace: self.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
                    hello,
                },
            }),
        })
    }
}

/// Python's `ProcessPoolExecutor`: runs tasks in worker processes of this same executable.
///
/// See the [crate documentation](crate) for the architecture, the rules for tasks, and what
/// happens when a worker dies.
///
/// # Examples
///
/// ```
/// use cf_pool_proc::{Executor, ProcessPoolExecutor};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// let pool = ProcessPoolExecutor::builder().max_workers(2).build().unwrap();
/// let f = pool.submit(square, 7).unwrap();
/// assert_eq!(f.result(), Ok(&49));
/// ```
pub struct ProcessPoolExecutor {
    pub(crate) pool: Arc<Pool>,
}

impl ProcessPoolExecutor {
    /// A pool with the defaults: [`cpu_count()`] workers, no initializer, no task limit.
    ///
    /// # Errors
    ///
    /// As [`ProcessPoolBuilder::build`].
    pub fn new() -> Result<Self, BuildError> {
        ProcessPoolBuilder::default().build()
    }

    /// A [`ProcessPoolBuilder`] for the settings Python takes as constructor arguments.
    #[must_use]
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    /// The pids of the worker processes alive now (started on demand, so possibly none).
    #[must_use]
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pool
            .state
            .lock()
            .slots
            .iter()
            .filter(|(_, s)| !s.dead)
            .filter_map(|(_, s)| s.pid)
            .collect()
    }

    /// Like [`submit`](Executor::submit), with a time limit: if the task runs longer than
    /// `limit`, the worker running it is killed (the only way to stop arbitrary code) and
    /// replaced, and the future fails with [`TaskError::Timeout`] naming the killed pid. Other
    /// tasks are unaffected: a timed task runs alone in its worker. The limit counts from when
    /// the task is sent to its worker, which is never a worker still starting: the process's
    /// start and the [`initializer`](ProcessPoolBuilder::initializer) do not count against it.
    /// A limit too long for the clock (`Duration::MAX`) is no limit.
    ///
    /// # Errors
    ///
    /// As [`submit`](Executor::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use cf_pool_proc::{ProcessPoolExecutor, TaskError};
    ///
    /// fn spin(_: ()) -> u64 {
    ///     loop {
    ///         std::hint::spin_loop();
    ///     }
    /// }
    ///
    /// let pool = ProcessPoolExecutor::builder().max_workers(1).build().unwrap();
    /// let f = pool.submit_with_timeout(spin, (), Duration::from_millis(100)).unwrap();
    /// assert!(matches!(
    ///     f.result_timeout(Duration::from_secs(30)),
    ///     Err(TaskError::Timeout { killed_worker: Some(_), .. })
    /// ));
    /// ```
    pub fn submit_with_timeout<F, A, R>(
        &self,
        f: F,
        arg: A,
        limit: Duration,
    ) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        if limit.is_zero() {
            return Err(SubmitError::InvalidArgument {
                name: "limit",
                message: "a task's time limit must be longer than zero".into(),
            });
        }
        self.submit_timed(f, arg, Some(limit))
    }

    fn submit_timed<F, A, R>(
        &self,
        f: F,
        arg: A,
        limit: Option<Duration>,
    ) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        let offset = trampoline_offset(f)?;
        let (future, task) = encoded(&arg, &|bytes| self.pool.place(bytes));
        self.pool.enqueue(offset, limit, std::iter::once(task))?;
        Ok(future)
    }

    /// Python 3.14's `terminate_workers()`: shuts down, cancels the queue, sends `SIGTERM` to
    /// every worker, and returns at once, without waiting for them to end. Running futures fail
    /// with [`TaskError::WorkerDied`] as their workers end; later `submit`s are refused.
    /// Harmless before any worker started, after the pool broke, and when called again.
    ///
    /// A task may catch or ignore `SIGTERM`, so its worker may go on running. A later
    /// `shutdown(wait = true)` or `drop` waits for the workers at most the builder's
    /// [`shutdown_grace`](ProcessPoolBuilder::shutdown_grace) (5 s by default), counted from
    /// this call, then kills those that still run with `SIGKILL`, and reaps them all.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = cf_pool_proc::ProcessPoolExecutor::new().unwrap();
    /// pool.terminate_workers();
    /// ```
    pub fn terminate_workers(&self) {
        self.pool.stop_workers(sys::Signal::Terminate);
    }

    /// Like [`terminate_workers`](Self::terminate_workers) with `SIGKILL`, which a task cannot
    /// catch or ignore: signals every worker and returns at once; the workers end promptly, and
    /// a later `shutdown(wait = true)` or `drop` reaps them.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = cf_pool_proc::ProcessPoolExecutor::new().unwrap();
    /// pool.kill_workers();
    /// ```
    pub fn kill_workers(&self) {
        self.pool.stop_workers(sys::Signal::Kill);
    }

    fn submit_many<F, A, R>(&self, f: F, args: Vec<A>) -> Result<Vec<Future<R>>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        let offset = trampoline_offset(f)?;
        let (futures, items): (Vec<_>, Vec<_>) = args.iter().map(|arg| encoded(arg, &|_| None)).unzip();
        self.pool
            .enqueue(offset, self.pool.config.task_timeout, items)?;
        Ok(futures)
    }
}

impl Executor for ProcessPoolExecutor {
    fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        self.submit_timed(f, arg, self.pool.config.task_timeout)
    }

    fn submit_batch<F, A, R>(&self, f: F, args: Vec<A>) -> Result<Vec<Future<R>>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        self.submit_many(f, args)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.pool.shutdown(wait, cancel_futures);
    }

    fn max_workers(&self) -> usize {
        self.pool.config.max_workers
    }
}

impl Drop for ProcessPoolExecutor {
    /// The `with`-block exit: shut down, wait for the work, reap every worker.
    fn drop(&mut self) {
        self.pool.shutdown(true, false);
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.state.lock();
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.pool.config.max_workers)
            .field("workers", &state.live_slots())
            .field("queued", &state.queue.len())
            .field("shutdown", &state.shutdown)
            .field("broken", &state.broken)
            .finish()
    }
}
