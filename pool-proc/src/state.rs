//! The pool's shared state: the queue of tasks, the bookkeeping of each worker slot, and the
//! pool's lifecycle (shutdown, broken), all under one lock. The executor front
//! ([`crate::executor`]) and the per-worker threads ([`crate::slot`]) both work on it; it
//! starts no thread and does no I/O of its own but signalling a worker.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use cf_executor_api::{Buffer, TaskError};
use parking_lot::{Condvar, Mutex};

use crate::protocol::Hello;
use crate::sys;
use crate::task::Completion;

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
#[derive(Debug, Default, Clone)]
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
pub(crate) struct Config {
    pub(crate) max_workers: usize,
    pub(crate) max_tasks_per_child: Option<u64>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) on_worker_death: WorkerDeath,
    /// After `terminate_workers`, how long a later `shutdown(wait)` waits for workers to end
    /// before it kills them.
    pub(crate) shutdown_grace: Duration,
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
    /// Fail only the task that worker was running (`WorkerDied`), give the tasks it had not
    /// started to another worker, start a replacement, go on.
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
    pub(crate) slots: Vec<(usize, SlotState)>,
    pub(crate) next_slot: usize,
    pub(crate) next_task: u64,
    pub(crate) shutdown: bool,
    /// `shutdown(cancel_futures)` was called: tasks workers give back are cancelled, not
    /// queued again.
    pub(crate) cancelling: bool,
    /// When `terminate_workers` asked the workers to stop: from then on, `shutdown(wait)`
    /// kills what still runs once the grace period is over.
    pub(crate) terminated: Option<Instant>,
    pub(crate) broken: Option<String>,
    pub(crate) feeders: Vec<JoinHandle<()>>,
    /// Feeder handles a `shutdown(wait)` took out of `feeders` and has not joined yet: another
    /// caller of `shutdown(wait)` waits for them too (see [`Pool::joined`]).
    pub(crate) joining: usize,
    pub(crate) watchdog: bool,
    /// Workers in a row that died before their handshake holding nothing: a binary whose
    /// workers cannot start must break the pool, not respawn forever.
    pub(crate) startup_deaths: u32,
    /// Workers in a row the system refused their own threads (see [`START_REFUSALS_LIMIT`]).
    pub(crate) start_refusals: u32,
    /// The pool's own threads (feeders, readers, watchdog): `shutdown(wait)` called from one of
    /// them (a done-callback) must not wait for itself.
    pub(crate) own_threads: HashSet<ThreadId>,
}

/// Queued tasks that no worker will run: a worker could not be started (the system refused a
/// process, a thread or a descriptor) and none is left. They fail with
/// [`TaskError::WorkerStartFailed`], outside the pool's lock; the pool is not broken, since the
/// cause may pass (descriptors closed, processes ended), and a later `submit` tries again.
/// Keeping them queued instead would hang them for as long as the cause lasts, for good if it
/// never passes.
pub(crate) struct Stranded {
    reason: String,
    jobs: VecDeque<Job>,
}

impl Stranded {
    pub(crate) fn fail(self) {
        for job in self.jobs {
            job.completion.fail(TaskError::WorkerStartFailed {
                reason: self.reason.clone(),
            });
        }
    }
}

/// Workers dying before their handshake this many times in a row break the pool.
pub(crate) const STARTUP_DEATHS_LIMIT: u32 = 10;

/// Workers refused their own threads this many times in a row are not replaced at once any
/// more: each replacement costs a process start and would most likely be refused too. A worker
/// that starts, or the next `submit`, tries again.
pub(crate) const START_REFUSALS_LIMIT: u32 = 3;

impl PoolState {
    /// Breaks the pool with `reason` and logs it once: a pool broken already keeps its first
    /// reason (every worker of a pool whose initializer fails fails the same way, and one
    /// error in the log says it), and the later ones are logged at debug level.
    pub(crate) fn break_once(&mut self, reason: String) {
        if self.broken.is_none() {
            guarded!(error!("cf-pool-proc: {reason}; the pool is broken"));
            self.broken = Some(reason);
        } else {
            guarded!(debug!("cf-pool-proc: {reason} (the pool was broken already)"));
        }
    }

    /// A worker could not be started (`reason`): it is logged, and if no worker is left to
    /// run the queue, the queue is taken out to fail (see [`Stranded`]). The pool is not
    /// broken: the next `submit` tries to start a worker again.
    #[must_use = "the stranded tasks must be failed once the lock is released"]
    pub(crate) fn strand_if_no_workers(&mut self, reason: String) -> Option<Stranded> {
        if self.live_slots() > 0 || self.queue.is_empty() {
            guarded!(warn!(
                "cf-pool-proc: {reason}; {} other worker(s) run the queue",
                self.live_slots()
            ));
            return None;
        }
        guarded!(error!(
            "cf-pool-proc: {reason}; no worker is left to run the {} queued task(s), which \
             fail; the next submit tries again",
            self.queue.len()
        ));
        Some(Stranded {
            reason,
            jobs: std::mem::take(&mut self.queue),
        })
    }

    /// Some worker holds more than one task (so some may be unstarted).
    pub(crate) fn any_holding_several(&self) -> bool {
        self.slots.iter().any(|(_, s)| s.in_flight.len() > 1)
    }

    pub(crate) fn slot_mut(&mut self, id: usize) -> Option<&mut SlotState> {
        self.slots
            .iter_mut()
            .find_map(|(i, s)| (*i == id).then_some(s))
    }

    pub(crate) fn live_slots(&self) -> usize {
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
    /// Signalled when `joining` drops to zero: every `shutdown(wait)` returns only once every
    /// feeder is joined, whichever caller joined it.
    pub(crate) joined: Condvar,
    /// Signalled when a feeder has handed back the payloads it wrote ([`SlotState::sending`]).
    pub(crate) sent: Condvar,
    pub(crate) config: Config,
}

impl Pool {
    /// A worker could not be started (`error`): the pool's slot `id`, registered for it, is
    /// forgotten, and the queue fails (see [`Stranded`]) if no worker is left to run it.
    pub(crate) fn slot_failed_to_start(self: &Arc<Self>, id: usize, error: &std::io::Error) {
        let stranded = {
            let mut state = self.state.lock();
            state.slots.retain(|(i, _)| *i != id);
            self.work.notify_all();
            state.strand_if_no_workers(format!("could not start a worker process: {error}"))
        };
        if let Some(stranded) = stranded {
            stranded.fail();
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

    /// Kills the worker of slot `id` (unless it is already being reaped), for a connection
    /// that can no longer carry frames: its reader then fails what it held, and it is
    /// replaced like any dead worker.
    pub(crate) fn kill_worker(&self, id: usize) {
        let state = self.state.lock();
        if let Some((_, slot)) = state.slots.iter().find(|(i, _)| *i == id) {
            if let (false, Some(pid)) = (slot.reaping, slot.pid) {
                let _ = sys::signal(pid, sys::Signal::Kill);
            }
        }
    }
}

/// Tasks a worker may hold (running + queued in its socket). One until timings show tasks are
/// short, so a long task never has work queued behind it while another worker idles; then the
/// window grows to keep about [`WINDOW_BUDGET_NS`] of work in flight per worker.
const WINDOW_MIN: usize = 1;
const WINDOW_MAX: usize = 128;
const WINDOW_BUDGET_NS: f64 = 2_000_000.0;

/// A worker that holds more than one task and has sent no result for this long is running a
/// long task with work queued behind it: a worker that is idle takes that work back (see
/// [`crate::slot`]). Well above the window's time budget, so quick tasks never trigger it.
pub(crate) const RECLAIM_AFTER: Duration = Duration::from_millis(5);

/// The parent's bookkeeping for one worker, kept in [`PoolState`] under the pool lock.
#[derive(Default)]
pub(crate) struct SlotState {
    pub(crate) pid: Option<u32>,
    pub(crate) in_flight: HashMap<u64, InFlight>,
    /// Tasks sent so far, for `max_tasks_per_child`.
    pub(crate) sent: u64,
    /// The reader saw the end: no more sends, the slot is being removed.
    pub(crate) dead: bool,
    /// `waitpid` is about to run or ran: the pid may no longer be signalled.
    pub(crate) reaping: bool,
    /// Moving average of how long one task runs in this worker, in nanoseconds.
    pub(crate) ewma_nanos: Option<f64>,
    /// Slow-start cap on the window: doubles with each results frame, so a sudden switch from
    /// quick tasks to long ones strands at most about twice the last window behind them.
    pub(crate) cap: usize,
    /// The watchdog killed this worker because task `.0` overran its limit `.1`.
    pub(crate) timed_out: Option<(u64, Duration)>,
    /// The worker said `Ready`: it passed the handshake and its initializer.
    pub(crate) ready: bool,
    /// The reader is running done-callbacks of this worker's results.
    pub(crate) completing: bool,
    /// The write half, once the handshake is sent: the feeder writes through it, and so may
    /// `submit` when this worker is idle (see [`Pool::enqueue`]).
    pub(crate) writer: Option<Writer>,
    /// When this worker last made progress: its last results frame, or work sent to it while
    /// it held none.
    pub(crate) progress: Option<Instant>,
    /// Taking back its unstarted tasks for an idle worker.
    pub(crate) reclaim: Reclaim,
    /// It answered `Reclaim` since its last result and still holds a task (the long one):
    /// it takes no more work, which would only wait behind that task, and is not asked again.
    pub(crate) gave_back: bool,
    /// Its feeder took tasks and has not yet handed their payloads back to
    /// [`InFlight::payload`] (it is writing them): a death waits for it, briefly, so that the
    /// tasks the worker never started can be sent to another.
    pub(crate) sending: bool,
}

/// Where a request to give back unstarted tasks stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reclaim {
    #[default]
    None,
    /// An idle worker's feeder asked for it; this slot's feeder sends `Reclaim`.
    Wanted,
    /// `Reclaim` sent; the `Returned` answer has not arrived.
    Sent,
}

/// A worker's write half; whoever holds the lock writes whole frames.
pub(crate) type Writer = Arc<crate::shm::Link>;

pub(crate) struct InFlight {
    pub(crate) completion: Box<dyn Completion>,
    /// What it takes to queue the task again if the worker gives it back unstarted (the
    /// payload comes back from the worker).
    pub(crate) fn_offset: i64,
    pub(crate) attached: Attached,
    /// For a task with a time limit: when it expires, and the limit.
    pub(crate) deadline: Option<(Instant, Duration)>,
    /// The encoded argument, kept once written for a task that waits behind another in its
    /// worker: should the worker die before starting it, it goes to another worker (see
    /// `crate::slot`). `None` for a task sent to an idle worker, which starts it at once.
    pub(crate) payload: Option<Vec<u8>>,
    /// Workers that died holding this task without starting it, before this one.
    pub(crate) deaths: u8,
}

impl SlotState {
    /// How many tasks this worker may hold now.
    pub(crate) fn window(&self) -> usize {
        self.cap.clamp(WINDOW_MIN, self.budget_window())
    }

    /// The window that keeps about [`WINDOW_BUDGET_NS`] of work in flight.
    pub(crate) fn budget_window(&self) -> usize {
        match self.ewma_nanos {
            None => WINDOW_MIN,
            Some(ns) => ((WINDOW_BUDGET_NS / ns.max(1.0)) as usize).clamp(WINDOW_MIN, WINDOW_MAX),
        }
    }

    /// After a results frame: grow the cap (slow start), never past the time budget.
    pub(crate) fn frame_done(&mut self) {
        self.cap = (self.cap.max(WINDOW_MIN) * 2).min(self.budget_window());
    }

    /// No more tasks will be sent: the worker will exit after what it holds.
    pub(crate) fn retiring(&self, max_tasks: Option<u64>) -> bool {
        max_tasks.is_some_and(|m| self.sent >= m)
    }

    /// Counts toward `idle` capacity: alive, not retiring, holding nothing.
    pub(crate) fn idle(&self, max_tasks: Option<u64>) -> bool {
        !self.dead && !self.retiring(max_tasks) && !self.completing && self.in_flight.is_empty()
    }

    /// Holds a task with a time limit: nothing may queue behind it.
    pub(crate) fn holds_timed_task(&self) -> bool {
        self.in_flight.values().any(|f| f.deadline.is_some())
    }

    /// Whether this worker holds tasks behind the one it runs (which it has not started, unless
    /// the one before them ended meanwhile) and can be asked for them back now.
    pub(crate) fn holds_unstarted(&self) -> bool {
        !self.dead && !self.reaping && self.reclaim == Reclaim::None && self.in_flight.len() >= 2
    }

    /// Whether this worker strands work behind a task that has run for [`RECLAIM_AFTER`]
    /// without a result, so an idle worker should take that work back: `Some(when)`, the
    /// moment it does (or did) if nothing changes; `None` if it holds nothing to take back.
    pub(crate) fn stranding(&self, now: Instant) -> Option<Instant> {
        if self.dead
            || self.reaping
            || self.reclaim != Reclaim::None
            || self.gave_back
            || self.in_flight.len() < 2
            || self.holds_timed_task()
        {
            return None;
        }
        let due = self.progress? + RECLAIM_AFTER;
        Some(due.max(now))
    }

    /// The worker answered `Reclaim` by giving back `ids` unstarted: their entries, in that
    /// order. An answer nobody asked for, or the id of a task it does not hold, is the error
    /// (the worker broke the protocol; its death fails what it held), and then every entry
    /// stays. The answer ends the request, and
    /// the worker counts as stuck behind its long task only if it still holds a task. It
    /// may hold none: its task thread had not read the frame with the tasks yet when the
    /// receiver answered (so it gave back everything), or its results crossed the request
    /// (so it had nothing to give). Such a worker is idle, not stuck: marked stuck, it would
    /// take the next work it is sent and could not be asked to give it back, so a task
    /// waiting behind a long one there would wait for ever.
    pub(crate) fn give_back(
        &mut self,
        ids: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<(u64, InFlight)>, String> {
        if self.reclaim != Reclaim::Sent {
            return Err("tasks given back, but none were asked for".into());
        }
        self.reclaim = Reclaim::None;
        let mut entries = Vec::new();
        for id in ids {
            let Some(entry) = self.in_flight.remove(&id) else {
                self.in_flight.extend(entries);
                return Err(format!("returned task {id}, which this worker does not hold"));
            };
            entries.push((id, entry));
        }
        self.sent -= entries.len() as u64;
        self.gave_back = !self.in_flight.is_empty();
        Ok(entries)
    }

    /// Busy with a task that has run for [`RECLAIM_AFTER`] without a result (or that made
    /// it give work back): more work sent now would wait behind that task.
    pub(crate) fn stuck(&self, now: Instant) -> bool {
        !self.in_flight.is_empty()
            && (self.gave_back
                || self.reclaim != Reclaim::None
                || self.progress.is_some_and(|p| now >= p + RECLAIM_AFTER))
    }

    pub(crate) fn record_nanos(&mut self, nanos: u64) {
        let x = nanos as f64;
        self.ewma_nanos = Some(match self.ewma_nanos {
            None => x,
            Some(prev) => 0.8 * prev + 0.2 * x,
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A completion that only counts as started.
    pub(crate) struct Nothing;

    impl Completion for Nothing {
        fn start(&self) -> bool {
            true
        }
        fn cancel(&self) -> bool {
            false
        }
        fn cancel_unstarted(&self) -> bool {
            false
        }
        fn has_callbacks(&self) -> bool {
            false
        }
        fn finish(self: Box<Self>, _: bool, _: &[u8], _: Result<Vec<Buffer>, String>) {}
        fn fail(self: Box<Self>, _: TaskError) {}
    }

    /// A slot that was sent tasks `ids` (while it held none) at `at`.
    fn holding(ids: impl IntoIterator<Item = u64>, at: Instant) -> SlotState {
        let mut slot = SlotState {
            ready: true,
            progress: Some(at),
            ..SlotState::default()
        };
        for id in ids {
            slot.in_flight.insert(
                id,
                InFlight {
                    completion: Box::new(Nothing),
                    fn_offset: 0,
                    attached: Attached::default(),
                    deadline: None,
                    payload: None,
                    deaths: 0,
                },
            );
            slot.sent += 1;
        }
        slot
    }

    /// Sends `ids` to `slot` as the feeder does when it holds none.
    fn send(slot: &mut SlotState, ids: impl IntoIterator<Item = u64>, at: Instant) {
        let fresh = holding(ids, at);
        slot.sent += fresh.sent;
        slot.in_flight.extend(fresh.in_flight);
        slot.progress = Some(at);
    }

    fn later(t: Instant) -> Instant {
        t + RECLAIM_AFTER * 2
    }

    #[test]
    fn a_worker_that_keeps_its_long_task_is_stuck_and_not_asked_again() {
        let t0 = Instant::now();
        let mut slot = holding(0..5, t0);
        assert!(slot.stranding(later(t0)).is_some_and(|due| due <= later(t0)));
        slot.reclaim = Reclaim::Sent;
        let given = slot.give_back(1..5).unwrap();
        assert_eq!(given.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!((slot.reclaim, slot.sent, slot.in_flight.len()), (Reclaim::None, 1, 1));
        assert!(slot.stuck(later(t0)), "still running task 0");
        assert_eq!(slot.stranding(later(t0)), None);
    }

    /// The receiver answered before the task thread read the tasks: all came back. Sent new
    /// work, the worker must be asked again when that work strands; marked stuck, it never
    /// was, and a task waiting behind a long one there waited for ever.
    #[test]
    fn a_worker_that_gave_back_everything_can_be_asked_again() {
        let t0 = Instant::now();
        let mut slot = holding(0..5, t0);
        slot.reclaim = Reclaim::Sent;
        assert_eq!(slot.give_back(0..5).unwrap().len(), 5);
        assert!(!slot.stuck(later(t0)));
        let t1 = later(t0);
        send(&mut slot, 0..3, t1);
        assert!(!slot.stuck(t1), "just sent");
        assert!(slot.stuck(later(t1)), "its first task ran long");
        assert!(
            slot.stranding(later(t1)).is_some_and(|due| due <= later(t1)),
            "its other tasks can be taken back"
        );
    }

    /// Its results crossed the request: nothing to give, nothing held.
    #[test]
    fn a_worker_that_had_nothing_to_give_can_be_asked_again() {
        let t0 = Instant::now();
        let mut slot = holding(0..2, t0);
        slot.reclaim = Reclaim::Sent;
        slot.in_flight.clear();
        assert!(slot.give_back([]).unwrap().is_empty());
        let t1 = later(t0);
        send(&mut slot, 10..14, t1);
        assert!(slot.stranding(later(t1)).is_some_and(|due| due <= later(t1)));
    }

    /// An id the worker does not hold, or an answer nobody asked for, is a protocol error,
    /// and nothing is taken out.
    #[test]
    fn giving_back_a_task_not_held_keeps_every_entry() {
        let t0 = Instant::now();
        let mut slot = holding(0..3, t0);
        slot.reclaim = Reclaim::Sent;
        let err = slot.give_back([1, 2, 7]).err().expect("task 7 is not held");
        assert!(err.contains("task 7"), "{err}");
        assert_eq!((slot.in_flight.len(), slot.sent), (3, 3));
    }

    #[test]
    fn giving_back_unasked_is_refused() {
        let t0 = Instant::now();
        for reclaim in [Reclaim::None, Reclaim::Wanted] {
            let mut slot = holding(0..3, t0);
            slot.reclaim = reclaim;
            let err = slot.give_back([1]).err().expect("nobody asked");
            assert!(err.contains("asked"), "{err}");
            assert_eq!((slot.in_flight.len(), slot.sent, slot.gave_back), (3, 3, false));
        }
    }
}
