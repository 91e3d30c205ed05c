//! `ProcessPoolExecutor`: the builder, the shared state, `submit` and `shutdown`.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use cf_executor_api::{
    cpu_count, Buffer, BuildError, CodecStage, Executor, ExitCause, Future, Payload, Promise,
    SubmitError, Task, TaskError,
};
use parking_lot::{Condvar, Mutex};

use crate::protocol::{Hello, StartFailure};
use crate::slot::{self, SlotState};
use crate::sys;
use crate::task::{encode, trampoline_offset, Completion};

/// One queued task: its code, its encoded argument, and how to complete its future.
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) fn_offset: i64,
    pub(crate) payload: Vec<u8>,
    /// Large buffers the argument attached; they travel as memfds ([`crate::shm`]).
    pub(crate) attached: Attached,
    pub(crate) completion: Box<dyn Completion>,
    /// Kill the worker if the task runs longer than this.
    pub(crate) timeout: Option<Duration>,
}

/// A task's attached buffers, in one pointer: a million queued tasks without any (the usual
/// case) should not carry an empty `Vec` each.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // the point: one word in the queue instead of three
pub(crate) struct Attached(Option<Box<Vec<Buffer>>>);

impl Attached {
    pub(crate) fn new(buffers: Vec<Buffer>) -> Self {
        Attached((!buffers.is_empty()).then(|| Box::new(buffers)))
    }
    pub(crate) fn as_slice(&self) -> &[Buffer] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// A task as `submit` hands it to the queue: its encoded argument (or why encoding failed)
/// and its completion.
type EncodedTask = (
    Result<(Vec<u8>, Vec<Buffer>), TaskError>,
    Box<dyn Completion>,
);

/// A new future for `arg`, and the task that will complete it, argument already encoded.
fn encoded<A: Payload, R: Payload + Sync>(arg: &A) -> (Future<R>, EncodedTask) {
    let promise = Promise::<R>::new();
    let future = promise.future();
    let payload = encode(arg, CodecStage::SerializeArgument);
    (future, (payload, Box::new(promise)))
}

pub(crate) struct Config {
    pub(crate) max_workers: usize,
    pub(crate) max_tasks_per_child: Option<u64>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) on_worker_death: WorkerDeath,
    pub(crate) hello: Hello,
}

/// What the pool does when a worker process dies unexpectedly.
///
/// # Examples
///
/// ```
/// use cf_pool_proc::{ProcessPoolExecutor, WorkerDeath};
/// let pool = ProcessPoolExecutor::builder()
///     .on_worker_death(WorkerDeath::BreakPool)
///     .build()
///     .unwrap();
/// # drop(pool);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WorkerDeath {
    /// Fail only the futures that worker held (`WorkerDied`), start a replacement, go on.
    #[default]
    Replace,
    /// Python's behaviour: the pool is broken; every pending and running future fails with
    /// [`TaskError::Broken`], the other workers are stopped, and later `submit`s are refused.
    BreakPool,
}

/// Everything mutable, under one lock. Slots are few (at most `max_workers`), so scans are cheap.
#[derive(Default)]
pub(crate) struct PoolState {
    pub(crate) queue: VecDeque<Job>,
    slots: Vec<(usize, SlotState)>,
    next_slot: usize,
    next_task: u64,
    pub(crate) shutdown: bool,
    pub(crate) broken: Option<String>,
    feeders: Vec<JoinHandle<()>>,
    watchdog: bool,
    /// Workers in a row that died before their handshake holding nothing: a binary whose
    /// workers cannot start must break the pool, not respawn forever.
    pub(crate) startup_deaths: u32,
    /// The pool's own threads (feeders, readers, watchdog): `shutdown(wait)` called from one of
    /// them (a done-callback) must not wait for itself.
    own_threads: HashSet<ThreadId>,
}

/// Workers dying before their handshake this many times in a row break the pool.
const STARTUP_DEATHS_LIMIT: u32 = 10;

impl PoolState {
    pub(crate) fn slot_mut(&mut self, id: usize) -> Option<&mut SlotState> {
        self.slots
            .iter_mut()
            .find_map(|(i, s)| (*i == id).then_some(s))
    }

    fn live_slots(&self) -> usize {
        self.slots.iter().filter(|(_, s)| !s.dead).count()
    }

    pub(crate) fn idle_slots(&self, max_tasks: Option<u64>) -> usize {
        self.slots.iter().filter(|(_, s)| s.idle(max_tasks)).count()
    }

    pub(crate) fn active_slots(&self, max_tasks: Option<u64>) -> usize {
        self.slots
            .iter()
            .filter(|(_, s)| !s.dead && !s.retiring(max_tasks))
            .count()
    }
}

/// The state shared by the executor handle and its feeder and reader threads.
pub(crate) struct Pool {
    pub(crate) state: Mutex<PoolState>,
    /// Feeders wait here for work, window room, or the end.
    pub(crate) work: Condvar,
    /// The watchdog waits here for the next deadline or a new timed task.
    pub(crate) timer: Condvar,
    pub(crate) config: Config,
    /// Shared-memory regions for attached buffers, reused across tasks; freed with the pool.
    pub(crate) regions: crate::shm::Regions,
}

impl Pool {
    /// Starts workers while queued work exceeds idle capacity, up to `max_workers`.
    fn spawn_as_needed(self: &Arc<Self>, state: &mut PoolState) {
        let max_tasks = self.config.max_tasks_per_child;
        while state.broken.is_none()
            && state.queue.len() > state.idle_slots(max_tasks)
            && state.live_slots() < self.config.max_workers
        {
            let id = state.next_slot;
            state.next_slot += 1;
            state.slots.push((id, SlotState::default()));
            match slot::start(self, id) {
                Ok(handle) => state.feeders.push(handle),
                Err(e) => {
                    state.slots.retain(|(i, _)| *i != id);
                    let reason = format!("could not start a feeder thread: {e}");
                    self.break_if_no_workers(state, &reason);
                    return;
                }
            }
        }
    }

    /// With no worker left to run the queue, fail it and refuse new work.
    fn break_if_no_workers(&self, state: &mut PoolState, reason: &str) {
        if state.live_slots() == 0 && !state.queue.is_empty() {
            log::error!("cf-pool-proc: {reason}; the pool is broken");
            state.broken = Some(reason.to_owned());
        }
    }

    pub(crate) fn slot_failed_to_start(self: &Arc<Self>, id: usize, error: &std::io::Error) {
        let reason = format!("could not start a worker process: {error}");
        log::error!("cf-pool-proc: {reason}");
        let failed = {
            let mut state = self.state.lock();
            state.slots.retain(|(i, _)| *i != id);
            self.break_if_no_workers(&mut state, &reason);
            self.work.notify_all();
            if state.broken.is_some() {
                std::mem::take(&mut state.queue)
            } else {
                VecDeque::new()
            }
        };
        for job in failed {
            job.completion.fail(TaskError::Broken {
                reason: reason.clone(),
            });
        }
    }

    /// Registers the calling thread as one of the pool's own.
    pub(crate) fn adopt_thread(&self) {
        self.state
            .lock()
            .own_threads
            .insert(std::thread::current().id());
    }

    pub(crate) fn release_thread(&self) {
        self.state
            .lock()
            .own_threads
            .remove(&std::thread::current().id());
    }

    /// The reader of slot `id` saw its worker end and reaped it.
    pub(crate) fn worker_ended(
        self: &Arc<Self>,
        id: usize,
        pid: u32,
        cause: cf_executor_api::ExitCause,
        init_failure: Option<(StartFailure, String)>,
    ) {
        let (orphans, queued, error, timed_out) = {
            let mut state = self.state.lock();
            let Some(pos) = state.slots.iter().position(|(i, _)| *i == id) else {
                return;
            };
            let (_, mut slot) = state.slots.remove(pos);
            slot.dead = true;
            let orphans: Vec<_> = slot.in_flight.drain().collect();
            let timed_out = slot.timed_out;
            let unexpected = !orphans.is_empty() || cause != ExitCause::Code(0);
            let mut queued = VecDeque::new();
            // Only a death that made no progress counts: one that held tasks failed them, so the
            // queue drains; one that held nothing leaves the queue as it was and would respawn
            // forever.
            if !slot.ready && orphans.is_empty() && init_failure.is_none() && !state.shutdown {
                state.startup_deaths += 1;
                if state.startup_deaths >= STARTUP_DEATHS_LIMIT && state.broken.is_none() {
                    let reason = format!(
                        "{STARTUP_DEATHS_LIMIT} workers in a row died before their handshake \
                         (the last, {pid}, {cause}); something in this executable kills a fresh \
                         process, e.g. a static constructor"
                    );
                    log::error!("cf-pool-proc: {reason}; the pool is broken");
                    state.broken = Some(reason);
                }
            }
            if let Some((why, message)) = init_failure {
                let reason = match why {
                    StartFailure::Initializer => {
                        format!("the initializer failed in worker {pid}: {message}")
                    }
                    StartFailure::Identity => format!("worker {pid} refused to start: {message}"),
                };
                log::error!("cf-pool-proc: {reason}; the pool is broken");
                state.broken.get_or_insert(reason);
            } else if unexpected && timed_out.is_none() {
                log::warn!(
                    "cf-pool-proc: worker {pid} {cause} holding {} task(s){}",
                    orphans.len(),
                    if state.shutdown {
                        " during shutdown"
                    } else {
                        ""
                    }
                );
                if self.config.on_worker_death == WorkerDeath::BreakPool
                    && state.broken.is_none()
                    && !state.shutdown
                {
                    let reason = format!(
                        "worker process {pid} {cause}, and the pool is set to \
                         WorkerDeath::BreakPool"
                    );
                    log::error!("cf-pool-proc: {reason}; the pool is broken");
                    state.broken = Some(reason);
                    for (_, other) in &state.slots {
                        if let (false, Some(p)) = (other.reaping, other.pid) {
                            let _ = sys::kill(p, libc::SIGKILL);
                        }
                    }
                }
            }
            if state.broken.is_some() {
                queued = std::mem::take(&mut state.queue);
            }
            let error = match &state.broken {
                Some(reason) => TaskError::Broken {
                    reason: reason.clone(),
                },
                None => TaskError::WorkerDied { pid, cause },
            };
            if state.broken.is_none() {
                let before = state.next_slot;
                self.spawn_as_needed(&mut state);
                if state.next_slot != before {
                    log::info!(
                        "cf-pool-proc: worker {pid} ended ({cause}); started a replacement for \
                         {} queued task(s)",
                        state.queue.len()
                    );
                }
            }
            self.work.notify_all();
            self.timer.notify_all();
            (orphans, queued, error, timed_out)
        };
        for (task, f) in orphans {
            let e = match timed_out {
                Some((timed, limit)) if timed == task => TaskError::Timeout {
                    after: limit,
                    killed_worker: Some(pid),
                },
                _ => error.clone(),
            };
            f.completion.fail(e);
        }
        for job in queued {
            job.completion.fail(error.clone());
        }
    }

    /// The latency path: a lone small job and an idle worker. Takes the job for that worker and
    /// returns the frame for the caller to write, skipping the hop through the feeder thread.
    fn direct_send(
        &self,
        state: &mut PoolState,
    ) -> Option<(usize, slot::Writer, Vec<slot::Sending>)> {
        const DIRECT_MAX: usize = 16 * 1024;
        let job = state.queue.front()?;
        if state.queue.len() != 1 || job.payload.len() > DIRECT_MAX {
            return None;
        }
        let max_tasks = self.config.max_tasks_per_child;
        let (id, writer) = state.slots.iter().find_map(|(id, s)| {
            let usable = s.idle(max_tasks) && !s.reaping && s.timed_out.is_none();
            usable.then(|| s.writer.clone().map(|w| (*id, w))).flatten()
        })?;
        let jobs = slot::take_jobs(state, id, 1)?;
        Some((id, writer, jobs))
    }

    /// Kills the worker of slot `id` (unless it is already being reaped), for a connection
    /// that can no longer carry frames: its reader then fails what it held, and it is
    /// replaced like any dead worker.
    pub(crate) fn kill_worker(&self, id: usize) {
        let state = self.state.lock();
        if let Some((_, slot)) = state.slots.iter().find(|(i, _)| *i == id) {
            if let (false, Some(pid)) = (slot.reaping, slot.pid) {
                let _ = sys::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Kills workers whose timed task overran; runs until the pool is shut down and empty.
    fn watchdog(&self) {
        self.adopt_thread();
        let mut state = self.state.lock();
        loop {
            if state.shutdown && state.slots.is_empty() {
                state.watchdog = false;
                state.own_threads.remove(&std::thread::current().id());
                return;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for (_, slot) in &mut state.slots {
                if slot.reaping || slot.timed_out.is_some() {
                    continue;
                }
                let timed = slot
                    .in_flight
                    .iter()
                    .find_map(|(task, f)| f.deadline.map(|(at, limit)| (*task, at, limit)));
                let Some((task, at, limit)) = timed else {
                    continue;
                };
                if at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    continue;
                }
                if let Some(pid) = slot.pid {
                    log::warn!(
                        "cf-pool-proc: task ran past its {limit:?} limit; killing worker {pid}"
                    );
                    slot.timed_out = Some((task, limit));
                    let _ = sys::kill(pid, libc::SIGKILL);
                }
            }
            let wake = next.unwrap_or(now + Duration::from_secs(1));
            self.timer.wait_until(&mut state, wake);
        }
    }

    fn start_watchdog(self: &Arc<Self>, state: &mut PoolState) {
        if state.watchdog {
            return;
        }
        let pool = Arc::clone(self);
        match std::thread::Builder::new()
            .name("cf-proc-watchdog".into())
            .spawn(move || pool.watchdog())
        {
            Ok(handle) => {
                state.watchdog = true;
                state.feeders.push(handle);
            }
            Err(e) => log::error!("cf-pool-proc: cannot start the timeout watchdog: {e}"),
        }
    }

    /// Stops taking work, cancels what is queued, signals every worker, and waits for them.
    fn stop_workers(&self, signal: i32) {
        self.shutdown(false, true);
        {
            let state = self.state.lock();
            for (_, slot) in &state.slots {
                if let (false, Some(pid)) = (slot.reaping, slot.pid) {
                    let _ = sys::kill(pid, signal);
                }
            }
        }
        self.shutdown(true, false);
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
            if timeout.is_some() {
                self.start_watchdog(&mut state);
            }
            direct = self.direct_send(&mut state);
            if direct.is_none() {
                self.spawn_as_needed(&mut state);
                self.work.notify_all();
            }
        }
        if let Some((id, writer, jobs)) = direct {
            // The worker is idle: it has read everything sent to it, so a small frame fits in
            // the socket buffer and this write does not wait for the worker.
            if let Err(e) = slot::send_tasks(&self.regions, &writer, jobs) {
                log::debug!("cf-pool-proc: direct send failed: {e}; its reader handles it");
                self.kill_worker(id);
            }
        }
        for (completion, e) in rejected {
            completion.fail(e);
        }
        Ok(())
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let cancelled = {
            let mut state = self.state.lock();
            state.shutdown = true;
            self.work.notify_all();
            self.timer.notify_all();
            if cancel_futures {
                std::mem::take(&mut state.queue)
            } else {
                VecDeque::new()
            }
        };
        for job in cancelled {
            job.completion.cancel();
        }
        if !wait {
            return;
        }
        let me = std::thread::current().id();
        if self.state.lock().own_threads.contains(&me) {
            // A done-callback on a reader thread: the threads finish on their own once the
            // workers drain; waiting here would wait for this very thread.
            log::debug!("cf-pool-proc: shutdown(wait) from the pool's own thread; not waiting");
            return;
        }
        loop {
            let feeders = std::mem::take(&mut self.state.lock().feeders);
            if feeders.is_empty() {
                break;
            }
            for handle in feeders {
                if handle.thread().id() == me {
                    continue;
                }
                if handle.join().is_err() {
                    log::error!("cf-pool-proc: a feeder thread panicked");
                }
            }
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
    /// later `submit`s are refused.
    ///
    /// Like a task, it must be a plain `fn` (or a closure that captures nothing): it is named
    /// across the process boundary by address.
    #[must_use]
    pub fn initializer(self, init: fn() -> Result<(), String>) -> Self {
        self.initializer_offset(sys::offset_of(init as usize))
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
    /// an error at `build`.
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
                          `cf_pool_proc::init()` as the first line of `main`"
                    .into(),
            });
        }
        let exe = sys::exe_identity()
            .map_err(|e| BuildError::Io(format!("cannot inspect /proc/self/exe: {e}")))?;
        let hello = Hello {
            exe,
            probe_offset: sys::probe_offset(),
            init_offset: self.initializer.unwrap_or(0),
            max_tasks: self.max_tasks_per_child.unwrap_or(0),
        };
        Ok(ProcessPoolExecutor {
            pool: Arc::new(Pool {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                timer: Condvar::new(),
                config: Config {
                    max_workers,
                    max_tasks_per_child: self.max_tasks_per_child,
                    task_timeout: self.task_timeout,
                    on_worker_death: self.on_worker_death,
                    hello,
                },
                regions: crate::shm::Regions::default(),
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
    /// tasks are unaffected: a timed task runs alone in its worker.
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
        let (future, task) = encoded(&arg);
        self.pool
            .enqueue(trampoline_offset(f), limit, std::iter::once(task))?;
        Ok(future)
    }

    /// Python 3.14's `terminate_workers()`: shuts down, cancels the queue, sends `SIGTERM` to
    /// every worker, and waits until all are reaped. Running futures fail with
    /// [`TaskError::WorkerDied`]; later `submit`s are refused. Harmless before any worker
    /// started and after the pool broke.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = cf_pool_proc::ProcessPoolExecutor::new().unwrap();
    /// pool.terminate_workers();
    /// ```
    pub fn terminate_workers(&self) {
        self.pool.stop_workers(libc::SIGTERM);
    }

    /// Like [`terminate_workers`](Self::terminate_workers) with `SIGKILL`, which a task cannot
    /// catch or ignore.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = cf_pool_proc::ProcessPoolExecutor::new().unwrap();
    /// pool.kill_workers();
    /// ```
    pub fn kill_workers(&self) {
        self.pool.stop_workers(libc::SIGKILL);
    }

    fn submit_many<F, A, R>(&self, f: F, args: Vec<A>) -> Result<Vec<Future<R>>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        let (futures, items): (Vec<_>, Vec<_>) = args.iter().map(encoded).unzip();
        self.pool
            .enqueue(trampoline_offset(f), self.pool.config.task_timeout, items)?;
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
