//! The pool's shared state and the worker loop.
//!
//! One mutex guards the queue and everything a decision depends on: how many workers were
//! started and sleep, shutdown and broken flags; a second one guards the [`Head`], where jobs
//! moved out of the queue wait (see below). The queue holds [`Work`]: a single task is the
//! `InlineTask` whose allocation is also its future's (so a submit allocates once, and the
//! worker frees nothing of the submitter's), a batch is boxed. The work condvar wakes waiting
//! workers; the exited condvar wakes `shutdown(wait)`.
//!
//! A new thread is started only when the queue holds more jobs than there are *available*
//! workers (not running a task) to take them, and fewer than `max_workers` threads exist:
//! CPython 3.9's idle semaphore, kept exact. The available count is an atomic so that a worker
//! finishing a task can count itself available without taking the lock (one lock round trip
//! per task fewer); while a thread may still start, it only goes down under the lock, when a
//! worker takes a job, so a submitter holding the lock never sees a worker as available that
//! will not take its job. Once all `max_workers` threads are started no submit reads the count
//! any more (it is read only to decide whether to start one), so from then on the workers leave
//! it alone: both workers wrote that one cache line twice per task, and on 2 CPUs moving it back
//! and forth cost about 8 % of a burst of no-op tasks. Each worker also keeps a busy flag on a
//! line of its own, which only `Debug` reads (as the number of workers not running a task).
//!
//! A worker that finds no job may become a *spinner*: it watches atomic mirrors of the queue's
//! and the head's lengths, without a lock, for up to [`SPIN_FOR`] before it sleeps on the
//! condvar; a worker that finds both at zero spins without taking either lock. Work submitted
//! in a burst, or a task submitted right after the previous result was read, is then picked up
//! without a futex wake-up, which costs several microseconds (more on a virtual machine) on
//! both sides. At most one worker per CPU spins ([`max_spinners`]), none when the process has
//! one CPU (`taskset -c 0`: the spinner would only delay the submitter); the others sleep at
//! once. A submit wakes a sleeping worker only when the queue and the head together hold more
//! jobs than there are spinners to take them (a spinner may take an older job from the head,
//! so the queue's length alone would undercount); sleepers are counted under the lock, so
//! while none sleeps (a busy pool) a submit reads neither the spinner count nor the condvar.
//! A sleeper a submit notified counts as a spinner until it has woken: it will take a job,
//! and it may not run for a while (the scheduler can leave it queued behind a busy worker on
//! the same CPU). Counted as a sleeper still, it made every submit meanwhile read the head's
//! count and the spinner count, lines the workers write on every job, and notify again; on 2
//! CPUs that ping-pong slowed both sides so much that a burst of no-op tasks took twice as
//! long in about half of the rounds.
//! The first spinner keeps its CPU for [`SPIN_KEEP_CPU`]: on a busy machine `sched_yield` can
//! hand the CPU to another process for a whole time slice, which tripled the round trip in
//! measurements. After that, and for further spinners at once, it yields between looks, so
//! that idle workers do not crowd out the threads that submit and consume (keeping the CPU for
//! all 50 µs cost a third of `map` throughput on 2 CPUs).
//!
//! Once every worker is started, the workers no longer take jobs from the queue one by one:
//! a worker that finds the [`Head`] empty moves the whole queue into it at once (the two
//! `VecDeque`s are swapped under both locks), and workers take jobs from the head, oldest first,
//! under the head's own lock. The submitter then shares the queue's lock with the workers once
//! per refill instead of once per job (on 2 CPUs, that lock's cache line changing hands three
//! times per task was the largest single cost of a burst of small tasks), and the workers still
//! start jobs strictly in submission order, as CPython's do: the head holds the oldest jobs, it
//! is refilled only when empty, and any free worker takes its next job. Before every worker is
//! started, workers pop the queue under its lock, as the available count requires. The lock
//! order is the head's, then the queue's; nothing takes the head's lock while holding the
//! queue's.
//!
//! The queue's mutex, the head and each of the three counters sit on cache lines of their own,
//! since one side writes them on every task and the other reads them on every task.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cf_executor_api::{call_catching, drop_panic_payload, panic_message, SubmitError, TaskError};
use parking_lot::{Condvar, Mutex};

use crate::job::Work;

/// A worker thread's initializer, shared by all workers.
pub(crate) type Initializer = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

thread_local! {
    /// The id of the pool this thread works for (0: none), so `shutdown(wait)` called from a
    /// task does not wait for its own thread.
    static CURRENT_POOL: Cell<usize> = const { Cell::new(0) };
    /// Whether this worker's task has called `shutdown(wait)` of its own pool: it is counted
    /// in `workers_in_shutdown` until it exits.
    static IN_OWN_SHUTDOWN: Cell<bool> = const { Cell::new(false) };
}

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

/// How long an idle worker watches for new work before it sleeps. Long enough to bridge the
/// gap between a result being read and the next submit, short enough that an idle pool is idle.
const SPIN_FOR: Duration = Duration::from_micros(50);
/// How long the first spinner keeps its CPU before it starts yielding between looks.
const SPIN_KEEP_CPU: Duration = Duration::from_micros(10);

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

/// Jobs moved out of the queue in one go, taken by the workers one at a time, oldest first (see
/// the module docs).
struct Head {
    jobs: Mutex<VecDeque<Work>>,
    /// `jobs.len()`, stored under `jobs`' lock whenever it changes; it only grows under the
    /// queue's lock too, so a worker that reads it as zero under the queue's lock may sleep.
    len: AtomicUsize,
}

pub(crate) struct Shared {
    state: Line<Mutex<State>>,
    head: Line<Head>,
    /// Set (under the queue's lock) once `max_workers` threads were started: from then on jobs
    /// are taken from the head.
    all_started: AtomicBool,
    /// `shutdown || broken`, stored under the queue's lock: an idle worker looks at it before it
    /// takes the lock to see whether it should exit.
    closing: AtomicBool,
    /// Workers wait here for work (or shutdown).
    work: Condvar,
    /// `shutdown(wait)` waits here for the workers to exit.
    exited: Condvar,
    /// Workers not running a task: starting, waiting for work, or about to take the next job.
    /// Kept only while a thread may still start, and decremented only under the `state` lock
    /// (see the module docs); once every worker is started, nothing reads or writes it.
    available: Line<AtomicUsize>,
    /// `state.queue.len()`, stored under the lock after every change: what spinning workers
    /// watch.
    queued: Line<AtomicUsize>,
    /// Workers spinning for work right now (at most [`max_spinners`]). A spinner re-checks the
    /// queue and the head under the lock after it stops counting itself here, so a submit that
    /// saw it counted need not wake anyone for one of the jobs waiting.
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
    /// Sleepers a submit notified that have not woken yet: they will take jobs, so a submit
    /// counts them as spinners and does not notify again for them.
    woken: usize,
    /// Workers whose task has called `shutdown(wait)` of this pool, until they exit: they wait
    /// for the other workers, not for each other. (Counted until the exit, not until the wait
    /// ends: a worker whose wait ended first and uncounted itself left the others waiting for
    /// it while it joined them.)
    workers_in_shutdown: usize,
    /// Handles of threads not yet joined.
    handles: Vec<JoinHandle<()>>,
    /// Each started worker's busy flag (running a task), for `Debug`.
    busy: Vec<Arc<Line<AtomicBool>>>,
    shutdown: bool,
    broken: Option<String>,
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
                woken: 0,
                workers_in_shutdown: 0,
                handles: Vec::new(),
                busy: Vec::new(),
                shutdown: false,
                broken: None,
            })),
            head: Line(Head {
                jobs: Mutex::new(VecDeque::new()),
                len: AtomicUsize::new(0),
            }),
            all_started: AtomicBool::new(false),
            closing: AtomicBool::new(false),
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
        // The head's count before the busy flags: a worker sets its flag before it stores the
        // count its pop lowered, so a job that left the head is seen in one or the other.
        let queued = st.queue.len() + self.head.len.load(Ordering::Acquire);
        let busy = st.busy.iter().filter(|b| b.load(Ordering::Relaxed)).count();
        Snapshot {
            started: st.started,
            available: st.live.saturating_sub(busy),
            queued,
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
                    return Err(SubmitError::WorkerStartFailed {
                        reason: format!("could not start a worker thread to run the task: {e}"),
                    });
                }
                guarded!(warn!(
                    "could not start another worker thread ({e}); the task waits for one of \
                     the {} running workers",
                    st.live
                ));
            }
        }
        // Spinners take queued jobs by themselves; wake a sleeper only for the excess, and look
        // at the spinners (a counter the workers write as they go idle) only if someone sleeps.
        // The sleeper is woken after the lock is released, so that it does not wake only to
        // wait for the lock this submit still holds; no wake-up is lost, since a worker looks at
        // the queue and the head and counts itself sleeping under the lock before it sleeps, and
        // the job is in the queue. The head counts too: a spinner may take one of its older
        // jobs instead of this one. (Its count only grows under this lock, so it is never too
        // low here; at worst a sleeper is woken for nothing.)
        let wake = st.sleeping > st.woken && {
            let waiting = st.queue.len() + self.head.len.load(Ordering::Acquire);
            self.spinning.load(Ordering::SeqCst) + st.woken < waiting
        };
        if wake {
            st.woken += 1;
        }
        drop(st);
        if wake {
            self.work.notify_one();
        }
        Ok(())
    }

    fn start_worker(self: &Arc<Self>, st: &mut State) -> io::Result<()> {
        let name = format!("{}_{}", self.prefix, st.started);
        let shared = Arc::clone(self);
        let busy = Arc::new(Line(AtomicBool::new(false)));
        let flag = Arc::clone(&busy);
        let handle = thread::Builder::new()
            .name(name)
            .spawn(move || worker_main(&shared, &flag))?;
        guarded!(debug!(
            "started worker thread {}_{} ({} of at most {})",
            self.prefix,
            st.started,
            st.started + 1,
            self.max_workers
        ));
        // The new thread blocks on our lock until these are consistent.
        st.started += 1;
        st.live += 1;
        self.available.fetch_add(1, Ordering::SeqCst);
        st.handles.push(handle);
        st.busy.push(busy);
        if st.started >= self.max_workers {
            self.all_started.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Stops taking work; see `Executor::shutdown`.
    pub(crate) fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let (cancelled, handles) = {
            // The head's lock first (the lock order), only if its jobs are to go.
            let mut head = cancel_futures.then(|| self.head.jobs.lock());
            let mut st = self.state.lock();
            st.shutdown = true;
            self.closing.store(true, Ordering::Release);
            let cancelled: Vec<_> = match &mut head {
                Some(head) => self.drain(head, &mut st),
                None => Vec::new(),
            };
            self.queued.store(st.queue.len(), Ordering::Release);
            st.woken = st.sleeping;
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
        // A task may shut down (or drop) its own pool: do not wait for this very thread, nor
        // for another worker whose task is in this same wait (two tasks shutting down at once
        // would each wait for the other forever). Any other caller waits for every worker.
        let own = CURRENT_POOL.with(Cell::get) == self.id;
        if own {
            guarded!(debug!(
                "shutdown(wait) called from a worker of this pool; not waiting for it"
            ));
        }
        {
            let mut st = self.state.lock();
            if own && !IN_OWN_SHUTDOWN.with(|c| c.replace(true)) {
                st.workers_in_shutdown += 1;
                // Another worker's wait may have been for this one only.
                self.exited.notify_all();
            }
            while st.live > if own { st.workers_in_shutdown } else { 0 } {
                self.exited.wait(&mut st);
            }
        }
        let me = thread::current().id();
        for handle in handles {
            if handle.thread().id() == me {
                continue;
            }
            if handle.join().is_err() {
                guarded!(error!(
                    "internal: a worker thread panicked outside a task; please report this"
                ));
            }
        }
    }

    /// Takes every job not started, oldest first: the head's, then the queue's.
    fn drain(&self, head: &mut VecDeque<Work>, st: &mut State) -> Vec<Work> {
        let mut all: Vec<Work> = head.drain(..).collect();
        self.head.len.store(0, Ordering::Release);
        all.extend(st.queue.drain(..));
        self.queued.store(0, Ordering::Release);
        all
    }

    /// The next job to run, and whether this worker counted itself not available for it (it
    /// must count itself available again when done); `None` if there is none. Once every
    /// worker is started it comes from the head, which is refilled with the whole queue when
    /// empty, and the count is left alone; before, from the queue, under its lock (see the
    /// module docs). Nothing is locked when both look empty (an idle worker watches them
    /// without the lock). The head's count is looked at first: while it holds jobs, the queue's,
    /// which the submitter writes on every submit, need not be read. `busy` (this worker's flag)
    /// is set before the lock the job was taken under is released, so `Debug` never sees the
    /// job in neither place (exactly so under the queue's lock, which `Debug` takes).
    fn next_job(&self, busy: &AtomicBool) -> Option<(Work, bool)> {
        if self.all_started.load(Ordering::Acquire) {
            if self.head.len.load(Ordering::Acquire) == 0
                && self.queued.load(Ordering::Acquire) == 0
            {
                return None;
            }
            let mut head = self.head.jobs.lock();
            if head.is_empty() && self.queued.load(Ordering::Acquire) > 0 {
                let mut st = self.state.lock();
                std::mem::swap(&mut *head, &mut st.queue);
                self.queued.store(0, Ordering::Release);
                // Before the queue's lock goes: a worker deciding under it whether to sleep
                // must see these jobs (the pop below only lowers the count).
                self.head.len.store(head.len(), Ordering::Release);
            }
            let job = head.pop_front();
            if job.is_some() {
                busy.store(true, Ordering::Relaxed);
            }
            self.head.len.store(head.len(), Ordering::Release);
            drop(head);
            // Every worker is started, so no submit looks at the count any more.
            job.map(|job| (job, false))
        } else {
            if self.queued.load(Ordering::Acquire) == 0 {
                return None;
            }
            let mut st = self.state.lock();
            if st.started >= self.max_workers {
                // The last thread started since the look above: jobs may wait in the head
                // already, older than the queue's, so take the head's way.
                drop(st);
                return self.next_job(busy);
            }
            let job = st.queue.pop_front()?;
            busy.store(true, Ordering::Relaxed);
            self.queued.store(st.queue.len(), Ordering::Release);
            // A submit may start a worker: it must not count this one available.
            self.available.fetch_sub(1, Ordering::SeqCst);
            Some((job, true))
        }
    }

    /// Whether a job waits in the queue or the head (the head's count is exact under the
    /// queue's lock, which every growth of the head holds).
    fn has_work(&self, st: &State) -> bool {
        !st.queue.is_empty() || self.head.len.load(Ordering::Acquire) > 0
    }

    /// The initializer failed: break the pool and fail everything queued with `reason`.
    fn break_pool(&self, reason: String) {
        let (first, kept, drained) = {
            let mut head = self.head.jobs.lock();
            let mut st = self.state.lock();
            let first = st.broken.is_none();
            let kept = st.broken.get_or_insert_with(|| reason.clone()).clone();
            self.closing.store(true, Ordering::Release);
            st.woken = st.sleeping;
            self.work.notify_all();
            let drained = self.drain(&mut head, &mut st);
            (first, kept, drained)
        };
        // Every worker's initializer fails alike: the pool keeps the first reason and logs it
        // as an error, the others only at debug level.
        if first {
            guarded!(error!("thread pool {} is broken: {reason}", self.prefix));
        } else {
            guarded!(debug!(
                "thread pool {}: {reason} (broken already)",
                self.prefix
            ));
        }
        for job in drained {
            job.abandon(Some(TaskError::Broken {
                reason: kept.clone(),
            }));
        }
    }
}

/// Keeps `live`/`available` right however the worker ends, and wakes `shutdown(wait)`.
struct ExitGuard<'a> {
    shared: &'a Shared,
    busy: &'a AtomicBool,
    /// Whether this worker counts itself not available (it took a job while a thread could
    /// still start, and has not finished it).
    counted_out: bool,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.live -= 1;
        if IN_OWN_SHUTDOWN.with(|c| c.replace(false)) {
            st.workers_in_shutdown -= 1;
        }
        self.busy.store(false, Ordering::Relaxed);
        if !self.counted_out {
            self.shared.available.fetch_sub(1, Ordering::SeqCst);
        }
        self.shared.exited.notify_all();
    }
}

fn worker_main(shared: &Shared, busy: &AtomicBool) {
    CURRENT_POOL.with(|c| c.set(shared.id));
    let mut guard = ExitGuard {
        shared,
        busy,
        counted_out: false,
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
    loop {
        if let Some((job, counted_out)) = shared.next_job(busy) {
            guard.counted_out = counted_out;
            // Available again before the result is visible (see `job`), but only after the
            // done-callbacks, which run on this thread: a callback that submits work and
            // waits for it gets another thread (as in CPython, whose idle semaphore is
            // released after the callbacks).
            let readied = Cell::new(false);
            let ready = || {
                readied.set(true);
                busy.store(false, Ordering::Relaxed);
                if counted_out {
                    shared.available.fetch_add(1, Ordering::SeqCst);
                }
            };
            // The task's own panic is caught inside its call; what can still unwind is a
            // destructor of the user's (a cancelled call's captures, a value dropped with its
            // future). Its futures were failed on the way out; the worker goes on.
            let run = panic::catch_unwind(AssertUnwindSafe(|| {
                job.run_and_publish(&mut || ready());
            }));
            if let Err(payload) = run {
                if !readied.get() {
                    ready();
                }
                guarded!(error!(
                    "a panic escaped a task on worker thread {} (a destructor of its closure, \
                     argument or value panicked): {}; its future failed, the worker goes on",
                    thread::current().name().unwrap_or("?"),
                    panic_message(payload.as_ref())
                ));
                drop_panic_payload(payload);
            }
            guard.counted_out = false;
            continue;
        }
        // Nothing to take: exit if the pool is closing and nothing is left, else watch for
        // work without taking the lock, which the submitter needs for every job.
        if shared.closing.load(Ordering::Acquire) {
            let st = shared.state.lock();
            if !shared.has_work(&st) {
                break;
            }
            continue;
        }
        let found = spin_for_work(shared);
        // `spin_for_work` no longer counts this worker as a spinner: from here on a submit
        // wakes it, and the queue and the head are re-checked under the lock before it sleeps.
        let mut st = shared.state.lock();
        if !found && !shared.has_work(&st) && !st.shutdown && st.broken.is_none() {
            st.sleeping += 1;
            shared.work.wait(&mut st);
            st.sleeping -= 1;
            st.woken = st.woken.saturating_sub(1);
        }
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
        if shared.queued.load(Ordering::Acquire) > 0 || shared.head.len.load(Ordering::Acquire) > 0
        {
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

#[cfg(test)]
mod tests {
    use super::*;
    use cf_executor_api::InlineTask;

    fn job() -> Work {
        Work::Call(InlineTask::new(|| Ok::<u8, TaskError>(1)).0)
    }

    /// A pool whose one worker is asleep and, once notified, does not get to run: what a
    /// notified worker looks like while its CPU is busy. No thread is started.
    fn pool_with_a_sleeper_that_does_not_run() -> Arc<Shared> {
        let shared = Shared::new(1, "t".into(), None);
        {
            let mut st = shared.state.lock();
            st.started = 1;
            st.live = 1;
            st.sleeping = 1;
        }
        shared.all_started.store(true, Ordering::Release);
        shared
    }

    #[test]
    fn a_notified_sleeper_is_not_notified_again_before_it_wakes() {
        let shared = pool_with_a_sleeper_that_does_not_run();
        shared.enqueue(job()).unwrap();
        assert_eq!(
            shared.state.lock().woken,
            1,
            "the first job notifies the sleeper"
        );
        for _ in 0..3 {
            shared.enqueue(job()).unwrap();
        }
        let st = shared.state.lock();
        assert_eq!(
            (st.sleeping, st.woken, st.queue.len()),
            (1, 1, 4),
            "later jobs must not notify the same sleeper again"
        );
    }

    #[test]
    fn shutdown_counts_every_sleeper_notified() {
        let shared = pool_with_a_sleeper_that_does_not_run();
        shared.shutdown(false, true);
        let st = shared.state.lock();
        assert_eq!((st.sleeping, st.woken), (1, 1));
    }
}
