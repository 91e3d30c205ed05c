//! The pool's shared state and the worker loop.
//!
//! One mutex guards everything a decision depends on: the queue, how many workers were
//! started, shutdown and broken flags. The queue holds [`Work`]: a single task is the
//! `InlineTask` whose allocation is also its future's (so a submit allocates once, and the
//! worker frees nothing of the submitter's), a batch is boxed. The work condvar wakes waiting workers; the exited
//! condvar wakes `shutdown(wait)`.
//!
//! A new thread is started only when the queue holds more jobs than there are *available*
//! workers (not running a task) to take them, and fewer than `max_workers` threads exist:
//! CPython 3.9's idle semaphore, kept exact. The available count is an atomic so that a worker
//! finishing a task can count itself available without taking the lock (one lock round trip
//! per task fewer); it only ever goes down under the lock, when a worker takes a job, so a
//! submitter holding the lock never sees a worker as available that will not take its job.
//! Once all `max_workers` threads are started no submit reads the count any more (it is read
//! only to decide whether to start one), so from then on a worker takes it down after
//! releasing the lock, and a submit does not take the cache miss of reading it.
//!
//! A worker that finds the queue empty may become a *spinner*: it watches an atomic mirror of
//! the queue length, without the lock, for up to [`SPIN_FOR`] before it sleeps on the condvar.
//! Work submitted in a burst, or a task submitted right after the previous result was read, is
//! then picked up without a futex wake-up, which costs several microseconds (more on a virtual
//! machine) on both sides. At most one worker per CPU spins ([`max_spinners`]), none when the
//! process has one CPU (`taskset -c 0`: the spinner would only delay the submitter); the others
//! sleep at once. A submit wakes a sleeping worker only when the queue holds more jobs than
//! there are spinners to take them; sleepers are counted under the lock, so while none sleeps
//! (a busy pool) a submit reads neither the spinner count nor the condvar. A worker that
//! finishes a task and sees the queue's mirror at zero goes straight to spinning rather than
//! taking the lock only to find the queue empty. The first spinner keeps its CPU for [`SPIN_KEEP_CPU`]: on
//! a busy machine `sched_yield` can hand the CPU to another process for a whole time slice,
//! which tripled the round trip in measurements. After that, and for further spinners at once,
//! it yields between looks, so that idle workers do not crowd out the threads that submit and
//! consume (keeping the CPU for all 50 µs cost a third of `map` throughput on 2 CPUs).
//!
//! Once every worker is started and none sleeps, a worker that takes a job from a long queue
//! also takes up to [`BATCH_MAX`] more (at most `1 / (2 × workers)` of what is queued) into its own
//! [`Backlog`], and runs them before it comes back: the queue's mutex is then taken once per
//! batch instead of once per job, by a submitter and workers that would otherwise pass its cache
//! line back and forth on every task. A backlog is never stranded behind a long task: a worker
//! that finds the queue empty takes half of another's backlog (under the queue's lock, which
//! also keeps a worker from sleeping while any backlog holds a job, and a backlog from filling
//! while any worker sleeps), and every [`STUCK_CHECK`]-th job it takes from the queue, a worker
//! takes the whole backlog of any worker that started no job since its previous look. Backlogs
//! hold the oldest jobs, so a single worker still runs jobs in submission order; `shutdown`
//! with `cancel_futures` and a broken pool empty them along with the queue. The lock order is
//! the queue's, then a backlog's; an owner takes only its own backlog's lock.
//!
//! The queue's mutex and each of the three counters sit on cache lines of their own, since one
//! side writes them on every task and the other reads them on every task.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cf_executor_api::{call_catching, SubmitError, TaskError};
use parking_lot::{Condvar, Mutex};

use crate::job::Work;

/// A worker thread's initializer, shared by all workers.
pub(crate) type Initializer = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

thread_local! {
    /// The id of the pool this thread works for (0: none), so `shutdown(wait)` called from a
    /// task does not wait for its own thread.
    static CURRENT_POOL: Cell<usize> = const { Cell::new(0) };
}

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

/// How long an idle worker watches for new work before it sleeps. Long enough to bridge the
/// gap between a result being read and the next submit, short enough that an idle pool is idle.
const SPIN_FOR: Duration = Duration::from_micros(50);
/// How long the first spinner keeps its CPU before it starts yielding between looks.
const SPIN_KEEP_CPU: Duration = Duration::from_micros(10);
/// The most jobs a worker takes into its backlog at once.
const BATCH_MAX: usize = 16;
/// How often (in jobs taken from the queue) a worker looks for a backlog whose owner is stuck.
const STUCK_CHECK: u32 = 64;

/// How many workers of one pool may spin at once: one per CPU, and none when the process has a
/// single CPU (a spinner could only keep the thread that submits from running).
fn max_spinners() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| match cf_executor_api::cpu_count() {
        1 => 0,
        n => n,
    })
}

/// Keeps its value on a cache line of its own: the counters below are written by the workers on
/// every task and read by every submit (or the reverse), and sharing a line with the queue's
/// mutex made each of those writes a cache miss for the other side.
#[repr(align(64))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Jobs one worker took from the queue in one go, to run in order before it takes more (see the
/// module docs), with what other workers read without its lock.
#[repr(align(64))]
struct Backlog {
    jobs: Mutex<VecDeque<Work>>,
    /// `jobs.len()`, stored under `jobs`' lock whenever it changes.
    len: AtomicUsize,
    /// Jobs the owner has started so far (only the owner writes it): a count that has not moved
    /// between two looks means the owner is still in the same job.
    started: AtomicUsize,
}

impl Backlog {
    fn new() -> Self {
        Backlog {
            jobs: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
        }
    }

    /// Moves `n` jobs from the front of `from` to the back of this backlog.
    fn take_from(&self, from: &mut VecDeque<Work>, n: usize) {
        let mut jobs = self.jobs.lock();
        jobs.extend(from.drain(..n));
        self.len.store(jobs.len(), Ordering::Relaxed);
    }

    /// The front half (rounded up) of this backlog, or all of it.
    fn give(&self, all: bool) -> VecDeque<Work> {
        let mut jobs = self.jobs.lock();
        let n = if all {
            jobs.len()
        } else {
            jobs.len().div_ceil(2)
        };
        let given: VecDeque<Work> = jobs.drain(..n).collect();
        self.len.store(jobs.len(), Ordering::Relaxed);
        given
    }

    fn pop(&self) -> Option<Work> {
        let mut jobs = self.jobs.lock();
        let job = jobs.pop_front();
        self.len.store(jobs.len(), Ordering::Relaxed);
        job
    }
}

pub(crate) struct Shared {
    state: Line<Mutex<State>>,
    /// Workers wait here for work (or shutdown).
    work: Condvar,
    /// `shutdown(wait)` waits here for the workers to exit.
    exited: Condvar,
    /// Workers not running a task: starting, waiting for work, or about to take the next job.
    /// Decremented only under the `state` lock (see the module docs).
    available: Line<AtomicUsize>,
    /// `state.queue.len()`, stored under the lock after every change: what spinning workers
    /// watch.
    queued: Line<AtomicUsize>,
    /// Workers spinning for work right now (at most [`max_spinners`]). A spinner re-checks the
    /// queue under the lock after it stops counting itself here, so a submit that saw it
    /// counted need not wake anyone.
    spinning: Line<AtomicUsize>,
    pub(crate) max_workers: usize,
    pub(crate) prefix: String,
    initializer: Option<Initializer>,
    id: usize,
}

struct State {
    queue: VecDeque<Work>,
    /// Worker threads that have not exited.
    live: usize,
    /// Worker threads started so far; also the index in the next thread's name.
    started: usize,
    /// Workers waiting on the work condvar (counted under this lock before they wait, so a
    /// submit that finds none need not look at the spinners or wake anyone).
    sleeping: usize,
    /// Handles of threads not yet joined.
    handles: Vec<JoinHandle<()>>,
    /// Every started worker's backlog, by the worker's index.
    backlogs: Vec<Arc<Backlog>>,
    shutdown: bool,
    broken: Option<String>,
}

impl State {
    /// Jobs in the workers' backlogs.
    fn backlogged(&self) -> usize {
        self.backlogs
            .iter()
            .map(|b| b.len.load(Ordering::Relaxed))
            .sum()
    }

    /// Takes every job not started: the queue's and the backlogs', oldest first.
    fn drain_all(&mut self) -> Vec<Work> {
        let mut all: Vec<Work> = Vec::new();
        for backlog in &self.backlogs {
            all.extend(backlog.give(true));
        }
        all.extend(self.queue.drain(..));
        all
    }

    /// Moves jobs from other workers' backlogs into `me`'s: half of the first non-empty one
    /// (`stuck` is `None`), or all of each whose owner started no job since `stuck` last saw it
    /// (`stuck` holds what this worker saw of each at its previous look). `true` if it moved any.
    fn take_backlog(&self, me: usize, stuck: Option<&mut Vec<usize>>) -> bool {
        let own = &self.backlogs[me];
        let others = (1..self.backlogs.len()).map(|k| (me + k) % self.backlogs.len());
        match stuck {
            None => {
                for i in others {
                    let other = &self.backlogs[i];
                    if other.len.load(Ordering::Relaxed) > 0 {
                        let mut jobs = other.give(false);
                        if !jobs.is_empty() {
                            let n = jobs.len();
                            own.take_from(&mut jobs, n);
                            return true;
                        }
                    }
                }
                false
            }
            Some(seen) => {
                seen.resize(self.backlogs.len(), usize::MAX);
                let mut moved = false;
                for i in others {
                    let other = &self.backlogs[i];
                    let started = other.started.load(Ordering::Relaxed);
                    if started == seen[i] && other.len.load(Ordering::Relaxed) > 0 {
                        let mut jobs = other.give(true);
                        let n = jobs.len();
                        own.take_from(&mut jobs, n);
                        moved |= n > 0;
                    }
                    seen[i] = started;
                }
                moved
            }
        }
    }
}

/// A snapshot for `Debug`.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) started: usize,
    pub(crate) available: usize,
    pub(crate) queued: usize,
    pub(crate) shutdown: bool,
    pub(crate) broken: Option<String>,
}

impl Shared {
    pub(crate) fn new(
        max_workers: usize,
        prefix: String,
        initializer: Option<Initializer>,
    ) -> Arc<Self> {
        Arc::new(Shared {
            state: Line(Mutex::new(State {
                queue: VecDeque::new(),
                live: 0,
                started: 0,
                sleeping: 0,
                handles: Vec::new(),
                backlogs: Vec::new(),
                shutdown: false,
                broken: None,
            })),
            work: Condvar::new(),
            exited: Condvar::new(),
            available: Line(AtomicUsize::new(0)),
            queued: Line(AtomicUsize::new(0)),
            spinning: Line(AtomicUsize::new(0)),
            max_workers,
            prefix,
            initializer,
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let st = self.state.lock();
        Snapshot {
            started: st.started,
            available: self.available.load(Ordering::SeqCst),
            queued: st.queue.len() + st.backlogged(),
            shutdown: st.shutdown,
            broken: st.broken.clone(),
        }
    }

    pub(crate) fn started(&self) -> usize {
        self.state.lock().started
    }

    /// Queues `job`, starting a worker if no available one will take it. Never blocks on a
    /// worker.
    pub(crate) fn enqueue(self: &Arc<Self>, job: Work) -> Result<(), SubmitError> {
        let mut st = self.state.lock();
        if let Some(reason) = &st.broken {
            return Err(SubmitError::Broken {
                reason: reason.clone(),
            });
        }
        if st.shutdown {
            return Err(SubmitError::Shutdown);
        }
        st.queue.push_back(job);
        self.queued.store(st.queue.len(), Ordering::Release);
        // SeqCst pairs with the worker's increment before it publishes a result: whoever saw
        // that result and submits again sees the worker available. Once every worker is
        // started (the steady state) the counter is not read at all: the workers write it on
        // every task, and reading it was a cache miss on every submit.
        if st.started < self.max_workers && self.available.load(Ordering::SeqCst) < st.queue.len() {
            if let Err(e) = self.start_worker(&mut st) {
                if st.live == 0 {
                    // No thread will ever take this job: refuse it rather than hang.
                    let job = st.queue.pop_back();
                    self.queued.store(st.queue.len(), Ordering::Release);
                    drop(st);
                    drop(job);
                    return Err(SubmitError::Broken {
                        reason: format!(
                            "could not start a worker thread ({e}); the task was not queued"
                        ),
                    });
                }
                log::warn!(
                    "could not start another worker thread ({e}); the task waits for one of \
                     the {} running workers",
                    st.live
                );
            }
        }
        // Spinners take queued jobs by themselves; wake a sleeper only for the excess, and look
        // at the spinners (a counter the workers write as they go idle) only if someone sleeps.
        // The sleeper is woken after the lock is released, so that it does not wake only to
        // wait for the lock this submit still holds; no wake-up is lost, since a worker looks at
        // the queue and counts itself sleeping under the lock before it sleeps, and the job is
        // in the queue.
        let wake = st.sleeping > 0 && self.spinning.load(Ordering::SeqCst) < st.queue.len();
        drop(st);
        if wake {
            self.work.notify_one();
        }
        Ok(())
    }

    fn start_worker(self: &Arc<Self>, st: &mut State) -> io::Result<()> {
        let name = format!("{}_{}", self.prefix, st.started);
        let shared = Arc::clone(self);
        let backlog = Arc::new(Backlog::new());
        let own = Arc::clone(&backlog);
        let index = st.started;
        let handle = thread::Builder::new()
            .name(name)
            .spawn(move || worker_main(&shared, index, &own))?;
        st.backlogs.push(backlog);
        log::debug!(
            "started worker thread {}_{} ({} of at most {})",
            self.prefix,
            st.started,
            st.started + 1,
            self.max_workers
        );
        // The new thread blocks on our lock until these are consistent.
        st.started += 1;
        st.live += 1;
        self.available.fetch_add(1, Ordering::SeqCst);
        st.handles.push(handle);
        Ok(())
    }

    /// Stops taking work; see `Executor::shutdown`.
    pub(crate) fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let (cancelled, handles) = {
            let mut st = self.state.lock();
            st.shutdown = true;
            let cancelled: Vec<_> = if cancel_futures {
                st.drain_all()
            } else {
                Vec::new()
            };
            self.queued.store(st.queue.len(), Ordering::Release);
            self.work.notify_all();
            let handles = if wait {
                std::mem::take(&mut st.handles)
            } else {
                Vec::new()
            };
            (cancelled, handles)
        };
        // Outside the lock: cancelling runs the futures' callbacks.
        for job in cancelled {
            job.abandon(None);
        }
        if !wait {
            return;
        }
        // A task may shut down (or drop) its own pool: do not wait for this very thread.
        let own = usize::from(CURRENT_POOL.with(Cell::get) == self.id);
        if own == 1 {
            log::debug!("shutdown(wait) called from a worker of this pool; not waiting for it");
        }
        {
            let mut st = self.state.lock();
            while st.live > own {
                self.exited.wait(&mut st);
            }
        }
        let me = thread::current().id();
        for handle in handles {
            if handle.thread().id() == me {
                continue;
            }
            if handle.join().is_err() {
                log::error!(
                    "internal: a worker thread panicked outside a task; please report this"
                );
            }
        }
    }

    /// The initializer failed: break the pool and fail everything queued with `reason`.
    fn break_pool(&self, reason: String) {
        let (reason, drained) = {
            let mut st = self.state.lock();
            let reason = st.broken.get_or_insert(reason).clone();
            self.work.notify_all();
            let drained = st.drain_all();
            self.queued.store(0, Ordering::Release);
            (reason, drained)
        };
        log::error!("thread pool {} is broken: {reason}", self.prefix);
        for job in drained {
            job.abandon(Some(TaskError::Broken {
                reason: reason.clone(),
            }));
        }
    }
}

/// Keeps `live`/`available` right however the worker ends, and wakes `shutdown(wait)`.
struct ExitGuard<'a> {
    shared: &'a Shared,
    busy: bool,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.live -= 1;
        if !self.busy {
            self.shared.available.fetch_sub(1, Ordering::SeqCst);
        }
        self.shared.exited.notify_all();
    }
}

fn worker_main(shared: &Shared, me: usize, backlog: &Backlog) {
    CURRENT_POOL.with(|c| c.set(shared.id));
    let mut guard = ExitGuard {
        shared,
        busy: false,
    };
    if let Some(init) = &shared.initializer {
        let name = thread::current().name().unwrap_or("?").to_owned();
        let failure = match call_catching(|| init()) {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(format!(
                "the initializer failed in worker thread `{name}`: {message}"
            )),
            Err(TaskError::Panicked {
                message, location, ..
            }) => Some(format!(
                "the initializer panicked in worker thread `{name}`{}: {message}",
                location.map(|l| format!(" at {l}")).unwrap_or_default()
            )),
            Err(other) => Some(format!(
                "the initializer failed in worker thread `{name}`: {other}"
            )),
        };
        if let Some(reason) = failure {
            shared.break_pool(reason);
            return;
        }
    }
    // What this worker saw of the others' started-job counts at its last look for a stuck one.
    let mut seen = Vec::new();
    let mut taken: u32 = 0;
    let mut st = shared.state.lock();
    loop {
        if let Some(job) = st.queue.pop_front() {
            let all_started = st.started >= shared.max_workers;
            if all_started {
                taken = taken.wrapping_add(1);
                if taken % STUCK_CHECK == 0 {
                    st.take_backlog(me, Some(&mut seen));
                }
                if st.sleeping == 0 {
                    let n = (st.queue.len() / (2 * st.live.max(1))).min(BATCH_MAX);
                    if n > 0 {
                        backlog.take_from(&mut st.queue, n);
                    }
                }
            }
            shared.queued.store(st.queue.len(), Ordering::Release);
            guard.busy = true;
            if all_started {
                // Every worker is started, so no submit looks at the count any more: it need
                // not change under the lock (which the submitter waits for meanwhile).
                drop(st);
                shared.available.fetch_sub(1, Ordering::SeqCst);
            } else {
                // A submit may start a worker: it must not count this one available.
                shared.available.fetch_sub(1, Ordering::SeqCst);
                drop(st);
            }
            run_counted(shared, backlog, job);
            guard.busy = false;
            run_backlog(shared, backlog, &mut guard);
            if shared.queued.load(Ordering::Acquire) > 0 {
                st = shared.state.lock();
                continue;
            }
            // Nothing queued: watch for work without taking the lock, which the submitter
            // needs for every job (shutdown is noticed under the lock below).
        } else {
            if st.take_backlog(me, None) {
                drop(st);
                run_backlog(shared, backlog, &mut guard);
                st = shared.state.lock();
                continue;
            }
            if st.shutdown || st.broken.is_some() {
                break;
            }
            drop(st);
        }
        let found = spin_for_work(shared);
        // `spin_for_work` no longer counts this worker as a spinner: from here on a submit
        // wakes it, and the queue is re-checked under the lock before it sleeps. So are the
        // backlogs: a worker does not sleep while another's backlog holds a job.
        st = shared.state.lock();
        if !found
            && st.queue.is_empty()
            && st.backlogged() == 0
            && !st.shutdown
            && st.broken.is_none()
        {
            st.sleeping += 1;
            shared.work.wait(&mut st);
            st.sleeping -= 1;
        }
    }
    drop(st);
}

/// Runs `job`, counting it as started (for [`State::take_backlog`]'s look for a stuck worker);
/// the worker counts itself available again before the outcome is visible (see `job`), but
/// only after the done-callbacks, which run on this thread: a callback that submits work and
/// waits for it gets another thread (as in CPython, whose idle semaphore is released after the
/// callbacks).
fn run_counted(shared: &Shared, backlog: &Backlog, job: Work) {
    let started = backlog.started.load(Ordering::Relaxed);
    backlog
        .started
        .store(started.wrapping_add(1), Ordering::Relaxed);
    job.run_and_publish(&mut || {
        shared.available.fetch_add(1, Ordering::SeqCst);
    });
}

/// Runs this worker's backlog, oldest first, until it is empty (others may take from it
/// meanwhile). Backlogs fill only once every worker is started, so the available count is
/// not read and changes outside the lock.
fn run_backlog(shared: &Shared, backlog: &Backlog, guard: &mut ExitGuard<'_>) {
    while let Some(job) = backlog.pop() {
        guard.busy = true;
        shared.available.fetch_sub(1, Ordering::SeqCst);
        run_counted(shared, backlog, job);
        guard.busy = false;
    }
}

/// Watches the queue for up to [`SPIN_FOR`] without the lock, if no more than
/// [`max_spinners`] workers already do; `true` if work appeared.
fn spin_for_work(shared: &Shared) -> bool {
    let max = max_spinners();
    let Ok(others) = shared
        .spinning
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max).then_some(n + 1)
        })
    else {
        return false;
    };
    // The first spinner keeps its CPU for a few microseconds (the latency path: a caller that
    // reads a result and submits again); after that, and for the other spinners at once, it
    // yields between looks, so the threads that submit and consume get to run.
    let keep_cpu_for = if others == 0 {
        SPIN_KEEP_CPU
    } else {
        Duration::ZERO
    };
    let start = Instant::now();
    let mut round: u32 = 0;
    let mut polite = false;
    let found = loop {
        if shared.queued.load(Ordering::Acquire) > 0 {
            break true;
        }
        round = round.wrapping_add(1);
        if polite {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        if round % 64 == 0 {
            let spun = start.elapsed();
            if spun >= SPIN_FOR {
                break false;
            }
            polite = spun >= keep_cpu_for;
        }
    };
    shared.spinning.fetch_sub(1, Ordering::SeqCst);
    found
}
