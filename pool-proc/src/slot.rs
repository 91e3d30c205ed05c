//! One worker process and the two parent threads that serve it.
//!
//! * The **feeder** (`cf-proc-feed-N`) starts the process (so `PR_SET_PDEATHSIG` is tied to a
//!   thread that outlives the worker), sends the handshake, then moves tasks from the pool's
//!   queue into its prefetch window and writes them, several per frame when the backlog is deep.
//!   It only ever writes.
//! * The **reader** (`cf-proc-read-N`) only ever reads: results (completing futures, running
//!   their callbacks), `Ready`, `InitFailed`. On end of stream, or garbage, it reaps the process
//!   with `waitpid`, fails exactly the futures that worker held with `WorkerDied`, and starts a
//!   replacement if work is waiting.
//!
//! Neither thread holds the pool lock while doing I/O or running user code.

use std::collections::HashMap;
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cf_executor_api::{Buffer, ExitCause};

use crate::blackbox;
use crate::pool::{Attached, Job, Pool, PoolState};
use crate::protocol::{self, FrameBuf, Kind, StartFailure, WorkerMessage, MAX_FRAME};
use crate::shm::{self, FdStream};
use crate::sys;
use crate::task::Completion;

/// Tasks a worker may hold (running + queued in its socket). One until timings show tasks are
/// short, so a long task never has work queued behind it while another worker idles; then the
/// window grows to keep about [`WINDOW_BUDGET_NS`] of work in flight per worker.
const WINDOW_MIN: usize = 1;
const WINDOW_MAX: usize = 128;
const WINDOW_BUDGET_NS: f64 = 2_000_000.0;

/// A worker that holds more than one task and has sent no result for this long is running a
/// long task with work queued behind it: a worker that is idle takes that work back (see
/// [`next_batch`]). Well above the window's time budget, so quick tasks never trigger it.
const RECLAIM_AFTER: Duration = Duration::from_millis(5);

/// How often a reader wakes while waiting, to notice a frame that stopped arriving.
const READ_POLL: Duration = Duration::from_secs(1);
/// A frame from a worker that makes no progress this long is garbage: the worker is killed.
const FRAME_STALL: Duration = Duration::from_secs(10);

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
    ewma_nanos: Option<f64>,
    /// Slow-start cap on the window: doubles with each results frame, so a sudden switch from
    /// quick tasks to long ones strands at most about twice the last window behind them.
    cap: usize,
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
    progress: Option<Instant>,
    /// Taking back its unstarted tasks for an idle worker.
    reclaim: Reclaim,
    /// It gave tasks back (or had none to give) since its last result: while busy it takes
    /// no more work, which would only wait behind the same long task.
    gave_back: bool,
}

/// Where a request to give back unstarted tasks stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Reclaim {
    #[default]
    None,
    /// An idle worker's feeder asked for it; this slot's feeder sends `Reclaim`.
    Wanted,
    /// `Reclaim` sent; the `Returned` answer has not arrived.
    Sent,
}

/// A worker's write half; whoever holds the lock writes whole frames.
pub(crate) type Writer = Arc<parking_lot::Mutex<UnixStream>>;

pub(crate) struct InFlight {
    pub(crate) completion: Box<dyn Completion>,
    /// What it takes to queue the task again if the worker gives it back unstarted (the
    /// payload comes back from the worker).
    fn_offset: i64,
    attached: Attached,
    /// For a task with a time limit: when it expires, and the limit.
    pub(crate) deadline: Option<(Instant, Duration)>,
}

impl SlotState {
    /// How many tasks this worker may hold now.
    fn window(&self) -> usize {
        self.cap.clamp(WINDOW_MIN, self.budget_window())
    }

    /// The window that keeps about [`WINDOW_BUDGET_NS`] of work in flight.
    fn budget_window(&self) -> usize {
        match self.ewma_nanos {
            None => WINDOW_MIN,
            Some(ns) => ((WINDOW_BUDGET_NS / ns.max(1.0)) as usize).clamp(WINDOW_MIN, WINDOW_MAX),
        }
    }

    /// After a results frame: grow the cap (slow start), never past the time budget.
    fn frame_done(&mut self) {
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

    /// Holds work behind a task that has run for [`RECLAIM_AFTER`] without a result, so an
    /// idle worker should take that work back.
    fn stranding(&self, now: Instant) -> Option<Instant> {
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

    fn record_nanos(&mut self, nanos: u64) {
        let x = nanos as f64;
        self.ewma_nanos = Some(match self.ewma_nanos {
            None => x,
            Some(prev) => 0.8 * prev + 0.2 * x,
        });
    }
}

/// Starts the feeder thread of slot `id` (already registered in the state).
pub(crate) fn start(pool: &Arc<Pool>, id: usize) -> io::Result<JoinHandle<()>> {
    let pool = Arc::clone(pool);
    std::thread::Builder::new()
        .name(format!("cf-proc-feed-{id}"))
        .spawn(move || feeder(&pool, id))
}

fn feeder(pool: &Arc<Pool>, id: usize) {
    pool.adopt_thread();
    feed(pool, id);
    pool.release_thread();
}

fn feed(pool: &Arc<Pool>, id: usize) {
    let (reader, out) = match launch(pool, id) {
        Ok(pair) => pair,
        Err(e) => {
            pool.slot_failed_to_start(id, &e);
            return;
        }
    };
    while let Some(jobs) = next_batch(pool, id) {
        let jobs = match jobs {
            Batch::Tasks(jobs) => jobs,
            Batch::Reclaim => {
                if let Err(e) = protocol::write_frame(&mut *out.lock(), &protocol::reclaim()) {
                    log::debug!("cf-pool-proc: write to worker slot {id} failed: {e}");
                    pool.kill_worker(id);
                    break;
                }
                continue;
            }
            Batch::Shutdown => {
                let _ = protocol::write_frame(&mut *out.lock(), &protocol::shutdown());
                break;
            }
        };
        if let Err(e) = send_tasks(&pool.regions, &out, jobs) {
            // Usually the worker is gone; if not, it is now, so the reader fails what it held.
            log::debug!("cf-pool-proc: write to worker slot {id} failed: {e}");
            pool.kill_worker(id);
            break;
        }
    }
    // The worker must not outlive this thread by accident (PDEATHSIG is tied to it): wait for
    // the reader, which returns once the process has exited and been reaped.
    drop(out);
    let _ = reader.join();
}

/// Spawns the process and its reader; returns the reader's handle and the write half.
///
/// Only a failure to create the process is an error. Once it exists, its reader owns it: if it
/// dies before or during the handshake, the reader sees the end of stream, reaps it, and the
/// pool replaces it like any other dead worker.
fn launch(pool: &Arc<Pool>, id: usize) -> io::Result<(JoinHandle<()>, Writer)> {
    let (parent_end, child_end) = UnixStream::pair()?;
    let out = parent_end.try_clone()?;
    let (blackbox, blackbox_fd) = blackbox::Reader::create()?;
    // The reader starts first, so a process is never created without a thread to reap it.
    let (hand_over, child_slot) = mpsc::sync_channel::<Child>(1);
    let reader_pool = Arc::clone(pool);
    let handle = std::thread::Builder::new()
        .name(format!("cf-proc-read-{id}"))
        .spawn(move || {
            if let Ok(child) = child_slot.recv() {
                reader(&reader_pool, id, parent_end, child, &blackbox);
            }
        })?;
    let child = match sys::spawn_worker(&child_end) {
        Ok(child) => child,
        Err(e) => {
            drop(hand_over);
            let _ = handle.join();
            return Err(e);
        }
    };
    drop(child_end);
    let pid = child.id();
    if let Some(slot) = pool.state.lock().slot_mut(id) {
        slot.pid = Some(pid);
    }
    log::debug!("cf-pool-proc: started worker {pid} in slot {id}");
    hand_over
        .send(child)
        .expect("the reader waits for its child");
    // The black box travels with the handshake; the worker maps it, the reader keeps its own
    // mapping, and this descriptor is no longer needed.
    let hello = protocol::hello(&pool.config.hello);
    if let Err(e) = shm::send_frame(&out, &hello, &[blackbox_fd]) {
        log::debug!(
            "cf-pool-proc: worker {pid} died before its handshake: {}",
            io::Error::from(e)
        );
    }
    let out: Writer = Arc::new(parking_lot::Mutex::new(out));
    if let Some(slot) = pool.state.lock().slot_mut(id) {
        slot.writer = Some(Arc::clone(&out));
    }
    Ok((handle, out))
}

enum Batch {
    Tasks(Vec<Sending>),
    Reclaim,
    Shutdown,
}

/// A task taken for a worker (already in its window), to be framed and sent outside the lock.
pub(crate) struct Sending {
    id: u64,
    fn_offset: i64,
    payload: Vec<u8>,
    attached: Attached,
}

/// Frames `jobs`, copies their attached buffers into shared-memory regions, and writes the
/// frame. Runs without the pool lock: exporting copies the bytes. A buffer that cannot be
/// exported fails only its own task, in the worker; so do all of a frame's buffers if the
/// kernel refuses its descriptors. `Err` means the connection is unusable: the caller must
/// kill the worker so that its reader fails what it held.
pub(crate) fn send_tasks(
    regions: &shm::Regions,
    writer: &Writer,
    jobs: Vec<Sending>,
) -> io::Result<()> {
    let mut fds = Vec::new();
    let frame = frame_tasks(&jobs, |attached, messages| {
        shm::export_all(regions, attached, &mut fds, messages)
    });
    let sock = writer.lock();
    match shm::send_frame(&sock, &frame, &fds) {
        Err(shm::SendError::Refused(e)) if !fds.is_empty() => {
            drop(fds);
            let why = format!("the kernel refused to pass its shared-memory descriptor ({e})");
            log::warn!("cf-pool-proc: {why}; failing the frame's tasks that carry buffers");
            let frame = frame_tasks(&jobs, |attached, messages| {
                messages.push(why.clone());
                vec![shm::AttachOut::Failed(messages.len() - 1); attached.len()]
            });
            Ok(shm::send_frame(&sock, &frame, &[])?)
        }
        other => Ok(other?),
    }
}

/// A `Tasks` frame for `jobs`, with `export` deciding each job's attachment records.
fn frame_tasks(
    jobs: &[Sending],
    mut export: impl FnMut(&[Buffer], &mut Vec<String>) -> Vec<shm::AttachOut>,
) -> Vec<u8> {
    let mut frame = FrameBuf::new(Kind::Tasks);
    frame.u32(u32::try_from(jobs.len()).expect("window is small"));
    let mut messages = Vec::new();
    for job in jobs {
        let exported = export(job.attached.as_slice(), &mut messages);
        protocol::push_task(
            &mut frame,
            &protocol::TaskFrame {
                id: job.id,
                fn_offset: job.fn_offset,
                payload: &job.payload,
                attached: exported.iter().map(|a| a.record(&messages)).collect(),
            },
        );
    }
    frame.finish()
}

/// Blocks until this slot should send something; `None` when the slot is finished.
fn next_batch(pool: &Pool, id: usize) -> Option<Batch> {
    let max_tasks = pool.config.max_tasks_per_child;
    let mut state = pool.state.lock();
    loop {
        let idle = state.idle_slots(max_tasks);
        let active = state.active_slots(max_tasks).max(1);
        let queued = state.queue.len();
        let front_timed = state.queue.front().is_some_and(|j| j.timeout.is_some());
        let shutting_down = state.shutdown;
        let slot = state.slot_mut(id)?;
        if slot.dead {
            return None;
        }
        if slot.reclaim == Reclaim::Wanted {
            slot.reclaim = Reclaim::Sent;
            return Some(Batch::Reclaim);
        }
        let retiring = slot.retiring(max_tasks);
        let busy = !slot.in_flight.is_empty();
        let now = Instant::now();
        // A worker stuck in a long task takes no more work: it would wait behind that task.
        let stuck = busy
            && (slot.gave_back
                || slot.reclaim != Reclaim::None
                || slot.progress.is_some_and(|p| now >= p + RECLAIM_AFTER));
        let room = if slot.holds_timed_task() || slot.completing || stuck {
            0
        } else {
            slot.window().saturating_sub(slot.in_flight.len())
        };
        let ready = slot.ready;
        // A busy worker takes work only if the idle ones cannot absorb it all.
        if !retiring && queued > 0 && room > 0 && (!busy || (queued > idle && !front_timed)) {
            let fair = queued.div_ceil(active);
            let mut n = room.min(fair).max(1);
            if let Some(m) = max_tasks {
                n = n.min(usize::try_from(m - slot.sent).unwrap_or(usize::MAX));
            }
            if busy {
                n = n.min(queued - idle);
            }
            if let Some(frame) = take_jobs(&mut state, id, n) {
                return Some(Batch::Tasks(frame));
            }
            continue;
        }
        if (shutting_down || retiring) && !busy && (queued == 0 || retiring) {
            if retiring {
                // The worker exits by itself after its last task; wait for the reader.
                pool.work.wait(&mut state);
                continue;
            }
            return Some(Batch::Shutdown);
        }
        // Idle with nothing queued: take back work stranded behind another worker's long task.
        if !busy && !retiring && ready && queued == 0 {
            let (asked, due) = take_back_stranded(&mut state, id, now);
            if asked {
                pool.work.notify_all();
            }
            if let Some(due) = due {
                pool.work.wait_until(&mut state, due);
                continue;
            }
        }
        pool.work.wait(&mut state);
    }
}

/// For the idle slot `idle`: asks every worker whose unstarted tasks are stranded behind a long
/// one to give them back (its feeder sends `Reclaim`, and the tasks return to the queue), and
/// returns whether it asked any, and when to look again for workers that may become stranded.
fn take_back_stranded(state: &mut PoolState, idle: usize, now: Instant) -> (bool, Option<Instant>) {
    let mut asked = false;
    let mut next: Option<Instant> = None;
    for (i, slot) in state.slots_mut() {
        if *i == idle {
            continue;
        }
        match slot.stranding(now) {
            Some(due) if due <= now => {
                log::trace!(
                    "cf-pool-proc: worker slot {i} ran one task for {RECLAIM_AFTER:?} with {} \
                     more waiting behind it; taking them back for an idle worker",
                    slot.in_flight.len() - 1
                );
                slot.reclaim = Reclaim::Wanted;
                asked = true;
            }
            Some(due) => next = Some(next.map_or(due, |n: Instant| n.min(due))),
            None => {}
        }
    }
    (asked, next)
}

/// Moves up to `n` startable jobs from the queue into slot `id`'s window, for
/// [`send_tasks`]. A job with a time limit travels alone, to an otherwise empty worker, so its
/// clock starts when it starts and killing the worker on expiry stops nothing else. A frame
/// carries at most [`shm::FRAME_FDS`] attached buffers. `None` if every job taken had been
/// cancelled meanwhile, or the next job needs an empty worker.
pub(crate) fn take_jobs(state: &mut PoolState, id: usize, n: usize) -> Option<Vec<Sending>> {
    let empty = state.slot_mut(id)?.in_flight.is_empty();
    let mut taken: Vec<Job> = Vec::with_capacity(n);
    let mut fds = 0;
    while taken.len() < n {
        let Some(job) = state.queue.pop_front() else {
            break;
        };
        let attached = job.attached.as_slice().len();
        let over_fds = !taken.is_empty() && fds + attached > shm::FRAME_FDS;
        if over_fds || (job.timeout.is_some() && !(taken.is_empty() && empty)) {
            state.queue.push_front(job);
            break;
        }
        fds += attached;
        if !job.completion.start() {
            continue;
        }
        let alone = job.timeout.is_some();
        taken.push(job);
        if alone {
            break;
        }
    }
    if taken.is_empty() {
        return None;
    }
    let now = Instant::now();
    let slot = state.slot_mut(id).expect("caller checked the slot");
    slot.sent += taken.len() as u64;
    if empty {
        slot.progress = Some(now);
    }
    let mut sending = Vec::with_capacity(taken.len());
    for job in taken {
        sending.push(Sending {
            id: job.id,
            fn_offset: job.fn_offset,
            payload: job.payload,
            attached: job.attached.clone(),
        });
        slot.in_flight.insert(
            job.id,
            InFlight {
                completion: job.completion,
                fn_offset: job.fn_offset,
                attached: job.attached,
                deadline: job.timeout.map(|t| (now + t, t)),
            },
        );
    }
    Some(sending)
}

fn reader(
    pool: &Arc<Pool>,
    id: usize,
    stream: UnixStream,
    mut child: Child,
    blackbox: &blackbox::Reader,
) {
    pool.adopt_thread();
    let pid = child.id();
    // The timeout only lets the reader notice a frame that stops arriving midway.
    if let Err(e) = stream.set_read_timeout(Some(READ_POLL)) {
        log::debug!("cf-pool-proc: no read timeout for worker {pid}: {e}");
    }
    let mut input = BufReader::with_capacity(256 * 1024, FdStream::new(stream, false));
    let mut init_failure: Option<(StartFailure, String)> = None;
    let trouble: Option<String> = loop {
        let body = match protocol::read_frame(&mut input, MAX_FRAME, Some(FRAME_STALL)) {
            Ok(Some(body)) => body,
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        };
        match handle_frame(pool, id, &body, input.get_mut()) {
            Ok(Some(failure)) => init_failure = Some(failure),
            Ok(None) => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    if let Some(why) = &trouble {
        log::error!("cf-pool-proc: worker {pid} sent a bad frame ({why}); killing it");
        let _ = child.kill();
    }
    if let Some(slot) = pool.state.lock().slot_mut(id) {
        slot.reaping = true;
    }
    let status = child.wait();
    let cause = exit_cause(status);
    recover_results(pool, id, pid, blackbox);
    pool.worker_ended(id, pid, cause, init_failure);
    pool.release_thread();
}

fn exit_cause(status: io::Result<ExitStatus>) -> ExitCause {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => ExitCause::Code(code),
            (None, Some(sig)) => ExitCause::Signal(sig),
            _ => ExitCause::Unknown,
        },
        Err(_) => ExitCause::Unknown,
    }
}

/// The worker of slot `id` gave `tasks` back unstarted (after a `Reclaim`): they go back to the
/// front of the queue, in order, for the idle worker that asked.
fn requeue(pool: &Pool, id: usize, tasks: &[(u64, &[u8])]) -> Result<(), protocol::ProtocolError> {
    let mut state = pool.state.lock();
    let slot = state
        .slot_mut(id)
        .ok_or_else(|| protocol::ProtocolError("tasks returned to a removed slot".into()))?;
    slot.reclaim = Reclaim::None;
    slot.gave_back = true;
    let mut jobs = Vec::with_capacity(tasks.len());
    for &(task, payload) in tasks {
        let entry = slot.in_flight.remove(&task).ok_or_else(|| {
            protocol::ProtocolError(format!(
                "returned task {task}, which this worker does not hold"
            ))
        })?;
        jobs.push(Job {
            id: task,
            fn_offset: entry.fn_offset,
            payload: payload.to_vec(),
            attached: entry.attached,
            completion: Box::new(Started(entry.completion)),
            timeout: entry.deadline.map(|(_, limit)| limit),
        });
    }
    slot.sent -= jobs.len() as u64;
    log::trace!(
        "cf-pool-proc: worker slot {id} gave back {} unstarted task(s)",
        jobs.len()
    );
    for job in jobs.into_iter().rev() {
        state.queue.push_front(job);
    }
    pool.work.notify_all();
    Ok(())
}

/// The completion of a task that was already started (its future is running) and was given
/// back by a busy worker: starting it again must not be refused, and a running future cannot be
/// cancelled (so `shutdown(cancel_futures)` and `terminate_workers`, which drop the queue, fail
/// it with `TaskError::Cancelled` instead).
struct Started(Box<dyn Completion>);

impl Completion for Started {
    fn start(&self) -> bool {
        true
    }
    fn cancel(&self) -> bool {
        false
    }
    fn has_callbacks(&self) -> bool {
        self.0.has_callbacks()
    }
    fn finish(self: Box<Self>, ok: bool, bytes: &[u8], buffers: Result<Vec<Buffer>, String>) {
        self.0.finish(ok, bytes, buffers);
    }
    fn fail(self: Box<Self>, error: cf_executor_api::TaskError) {
        self.0.fail(error);
    }
}

/// Completes the tasks whose results the dead worker `pid` recorded in its black box but had
/// not sent (see [`crate::blackbox`]). Only tasks it still held count: a record that was also
/// sent is a duplicate. A record that does not decode, or names buffers (which cannot outlive
/// the worker), completes nothing: its task fails with `WorkerDied` like the running one.
fn recover_results(pool: &Pool, id: usize, pid: u32, blackbox: &blackbox::Reader) {
    let Some(body) = blackbox.recorded() else {
        return;
    };
    let records = match protocol::decode_worker_message(&body) {
        Ok(WorkerMessage::Results(records)) => records,
        Ok(_) => return,
        Err(e) => {
            log::warn!("cf-pool-proc: worker {pid} left an unreadable black box ({e})");
            return;
        }
    };
    let recovered: Vec<_> = {
        let mut state = pool.state.lock();
        let Some(slot) = state.slot_mut(id) else {
            return;
        };
        records
            .iter()
            .filter(|rec| rec.attached.is_empty())
            .filter_map(|rec| Some((slot.in_flight.remove(&rec.id)?, rec)))
            .collect()
    };
    if !recovered.is_empty() {
        log::debug!(
            "cf-pool-proc: worker {pid} died with {} result(s) not yet sent; completed them \
             from its black box",
            recovered.len()
        );
    }
    for (entry, rec) in recovered {
        entry.completion.finish(rec.ok, rec.bytes, Ok(Vec::new()));
    }
}

/// Handles one frame from a worker. `Ok(Some(..))` reports a worker that could not start.
fn handle_frame(
    pool: &Pool,
    id: usize,
    body: &[u8],
    stream: &mut FdStream,
) -> Result<Option<(StartFailure, String)>, protocol::ProtocolError> {
    let records = match protocol::decode_worker_message(body)? {
        WorkerMessage::Ready { pid } => {
            log::trace!("cf-pool-proc: worker {pid} ready");
            let mut state = pool.state.lock();
            state.startup_deaths = 0;
            if let Some(slot) = state.slot_mut(id) {
                slot.ready = true;
            }
            // Its feeder may now take work stranded behind another worker.
            pool.work.notify_all();
            return Ok(None);
        }
        WorkerMessage::InitFailed { why, message } => return Ok(Some((why, message))),
        WorkerMessage::Returned(tasks) => {
            requeue(pool, id, &tasks)?;
            return Ok(None);
        }
        WorkerMessage::Results(records) => records,
    };
    // Copy attached buffers out before taking the lock.
    let buffers = records
        .iter()
        .map(|rec| stream.import_all(&rec.attached))
        .collect::<Result<Vec<_>, _>>()
        .map_err(protocol::ProtocolError)?;
    let mut done = Vec::with_capacity(records.len());
    let callbacks;
    {
        let mut state = pool.state.lock();
        let slot = state
            .slot_mut(id)
            .ok_or_else(|| protocol::ProtocolError("results for a removed slot".into()))?;
        for (rec, buffers) in records.iter().zip(buffers) {
            let Some(entry) = slot.in_flight.remove(&rec.id) else {
                return Err(protocol::ProtocolError(format!(
                    "result for task {} which this worker does not hold",
                    rec.id
                )));
            };
            slot.record_nanos(rec.nanos);
            done.push((entry.completion, rec.ok, rec.bytes, buffers));
        }
        slot.frame_done();
        slot.progress = Some(Instant::now());
        slot.gave_back = false;
        // Callbacks run on this thread. While they do, this worker takes no new work: a
        // callback that submits and waits would otherwise wait for a result only this thread
        // can read.
        callbacks = done.iter().any(|(c, ..)| c.has_callbacks());
        slot.completing = callbacks;
        let now_idle = slot.in_flight.is_empty();
        // Room in a window matters to a feeder only if work waits (or it must send Shutdown),
        // or if this worker went idle while another holds work it may have to take back;
        // waking every feeder on every results frame cost a futex call per round trip.
        if !state.queue.is_empty() || state.shutdown || (now_idle && state.any_holding_several()) {
            pool.work.notify_all();
        }
    }
    for (completion, ok, bytes, buffers) in done {
        completion.finish(ok, bytes, buffers);
    }
    if callbacks {
        let mut state = pool.state.lock();
        if let Some(slot) = state.slot_mut(id) {
            slot.completing = false;
        }
        if !state.queue.is_empty() || state.shutdown {
            pool.work.notify_all();
        }
    }
    Ok(None)
}
