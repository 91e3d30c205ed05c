//! One worker process and the two parent threads that serve it.
//!
//! * The **feeder** (`cf-proc-feed-N`) starts the process (so `PR_SET_PDEATHSIG` is tied to a
//!   thread that outlives the worker), sends the handshake, then moves tasks from the pool's
//!   queue into its prefetch window and writes them, several per frame when the backlog is deep.
//!   It only ever writes.
//!   When its worker is idle and another holds tasks behind a long one, it asks that worker's
//!   feeder to send `Reclaim` (see [`next_batch`]).
//! * The **reader** (`cf-proc-read-N`) only ever reads: results (completing futures, running
//!   their callbacks), `Ready`, `InitFailed`, `Returned` (tasks given back, queued again) and
//!   `Log` (records for this process's logger). On end of stream, or garbage, it reaps the
//!   process with `waitpid`, completes the tasks whose results the worker left in its black box
//!   ([`crate::blackbox`]), fails the task it was running with `WorkerDied` (with its last
//!   panic, if any), queues again those it had not started (see [`Pool::worker_ended`]), and
//!   starts a replacement if work is waiting.
//!
//! Neither thread holds the pool lock while doing I/O or running user code.

use std::collections::VecDeque;
use std::io::{self, BufReader};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cf_executor_api::{Buffer, ExitCause, TaskError};

use crate::blackbox;
use crate::protocol::{self, FrameBuf, Kind, StartFailure, WorkerMessage, MAX_FRAME};
use crate::shm::{self, FdStream};
use crate::state::{
    Attached, InFlight, Job, Pool, PoolState, Reclaim, SlotState, Stranded, WorkerDeath, Writer,
    RECLAIM_AFTER, START_REFUSALS_LIMIT, STARTUP_DEATHS_LIMIT,
};
use crate::sys::{self, Stream, WorkerProcess};
use crate::task::Completion;

/// How often a reader wakes while waiting, to notice a frame that stopped arriving.
const READ_POLL: Duration = Duration::from_secs(1);
/// A frame from a worker that makes no progress this long is garbage: the worker is killed.
const FRAME_STALL: Duration = Duration::from_secs(10);

impl Pool {
    /// Starts workers while queued work exceeds idle capacity, up to `max_workers`. If a
    /// worker's thread cannot be started and no worker is left, returns the queue to fail
    /// once the lock is released (see [`Stranded`]).
    #[must_use = "the stranded tasks must be failed once the lock is released"]
    pub(crate) fn spawn_as_needed(self: &Arc<Self>, state: &mut PoolState) -> Option<Stranded> {
        let max_tasks = self.config.max_tasks_per_child;
        while state.broken.is_none()
            && state.queue.len() > state.idle_slots(max_tasks)
            && state.live_slots() < self.config.max_workers
        {
            reap_finished_threads(state);
            let id = state.next_slot;
            state.next_slot += 1;
            state.slots.push((id, SlotState::default()));
            match start(self, id) {
                Ok(handle) => state.feeders.push(handle),
                Err(e) => {
                    state.slots.retain(|(i, _)| *i != id);
                    return state.strand_if_no_workers(format!(
                        "could not start the thread that starts a worker process: {e}"
                    ));
                }
            }
        }
        None
    }
    /// After slot `id`'s feeder wrote `jobs` (or failed to): the payloads of those that wait
    /// behind another task in the worker (all of them if it was `busy`, all but the first
    /// otherwise) are kept with the task until its result comes, so that a worker that dies
    /// before starting them does not take them along ([`Pool::worker_ended`]).
    fn keep_payloads(&self, id: usize, jobs: Vec<Sending>, busy: bool) {
        let mut state = self.state.lock();
        let Some(slot) = state.slot_mut(id) else {
            return;
        };
        slot.sending = false;
        for (i, job) in jobs.into_iter().enumerate() {
            if busy || i > 0 {
                if let Some(entry) = slot.in_flight.get_mut(&job.id) {
                    entry.payload = Some(job.payload);
                }
            }
        }
        drop(state);
        self.sent.notify_all();
    }

    /// The reader of slot `id` saw its worker end and reaped it. `started` is the task the
    /// worker said it started last (`Some(None)`: none), `None` if it is not to be believed.
    ///
    /// The tasks it held fail with it, except those it had not started, which go back to the
    /// front of the queue for another worker (or, in a shutdown that cancels, end cancelled):
    /// a task that kills its worker fails alone. Before the next task starts, a worker has sent
    /// or recorded the result of the one before ([`crate::blackbox`]), so what it held besides
    /// the task it started last never ran. A task goes back only if its payload was kept
    /// ([`Pool::keep_payloads`]), the pool is not broken, and fewer than [`RESENDS_MAX`]
    /// workers died holding it, so that a task the worker lied about, or a process that dies
    /// before every task, cannot go round forever.
    pub(crate) fn worker_ended(
        self: &Arc<Self>,
        id: usize,
        pid: u32,
        cause: cf_executor_api::ExitCause,
        init_failure: Option<(StartFailure, String)>,
        last_panic: Option<String>,
        started: Option<Option<u64>>,
    ) {
        let mut stranded = None;
        let mut unstarted_cancelled = Vec::new();
        let (orphans, queued, error, timed_out) = {
            let mut state = self.state.lock();
            // A feeder still writing to the dead worker fails at once; wait for it to hand
            // back the payloads, so the tasks it wrote can be sent again (bounded: a feeder
            // stuck in a write to a socket a forked task keeps open gives up its tasks).
            let settle = Instant::now() + SEND_SETTLE;
            let pos = loop {
                let Some(pos) = state.slots.iter().position(|(i, _)| *i == id) else {
                    return;
                };
                if !state.slots[pos].1.sending || Instant::now() >= settle {
                    break pos;
                }
                self.sent.wait_until(&mut state, settle);
            };
            let (_, mut slot) = state.slots.remove(pos);
            slot.dead = true;
            let orphans: Vec<_> = slot.in_flight.drain().collect();
            let timed_out = slot.timed_out;
            // A worker that held nothing and was due to end (it ran its `max_tasks_per_child`,
            // or the pool is shutting down) ended as asked, even when its exit status cannot
            // be read: with `SIGCHLD` ignored (as daemons set it) the kernel reaps children
            // itself, and every status is unknown.
            let due_to_end = slot.retiring(self.config.max_tasks_per_child) || state.shutdown;
            let clean = cause == ExitCause::Code(0)
                || (cause == ExitCause::Unknown && orphans.is_empty() && due_to_end);
            let unexpected = !orphans.is_empty() || !clean;
            // Ended before saying `Ready`, which a worker says right after its initializer (and
            // before it runs any task), and not because the pool stopped it or a limit ran out.
            let died_starting =
                !slot.ready && init_failure.is_none() && !state.shutdown && timed_out.is_none();
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
                    state.break_once(reason);
                }
            }
            let mut start_refused = None;
            if let Some((why, message)) = init_failure {
                let reason = match why {
                    StartFailure::Initializer => {
                        format!("the initializer failed in worker {pid}: {message}")
                    }
                    StartFailure::Identity => format!("worker {pid} refused to start: {message}"),
                    StartFailure::Resources => format!(
                        "worker {pid} could not start: {message}; the task did not run; close \
                         processes or threads, or raise `ulimit -u`"
                    ),
                };
                if why == StartFailure::Resources {
                    start_refused = Some(reason);
                } else {
                    state.break_once(reason);
                }
            } else if died_starting && self.config.hello.init_offset != 0 {
                // With an initializer, that is almost surely the initializer ending the process
                // (exit, abort, a crash) instead of returning: every worker would do the same,
                // one task at a time, and its tasks never ran. Python breaks the pool too.
                let reason = format!(
                    "worker {pid} {cause} before it was ready, while starting or running the \
                     initializer; an initializer must return Ok(()) or Err(message), not end \
                     its process"
                );
                state.break_once(reason);
            } else if unexpected && timed_out.is_none() {
                guarded!(warn!(
                    "cf-pool-proc: worker {pid} {cause} holding {} task(s){}{}",
                    orphans.len(),
                    if state.shutdown {
                        " during shutdown"
                    } else {
                        ""
                    },
                    last_panic
                        .as_deref()
                        .map(|p| format!("; its last words: {p}"))
                        .unwrap_or_default()
                ));
                if self.config.on_worker_death == WorkerDeath::BreakPool
                    && state.broken.is_none()
                    && !state.shutdown
                {
                    let reason = format!(
                        "worker process {pid} {cause}, and the pool is set to \
                         WorkerDeath::BreakPool"
                    );
                    state.break_once(reason);
                    for (_, other) in &state.slots {
                        if let (false, Some(p)) = (other.reaping, other.pid) {
                            let _ = sys::signal(p, sys::Signal::Kill);
                        }
                    }
                }
            }
            if state.broken.is_some() {
                queued = std::mem::take(&mut state.queue);
            }
            let (orphans, resend) = match started {
                Some(started) if state.broken.is_none() => unstarted(orphans, started),
                _ => (orphans, Vec::new()),
            };
            if !resend.is_empty() {
                guarded!(debug!(
                    "cf-pool-proc: worker {pid} ended holding {} task(s) it had not started; {}",
                    resend.len(),
                    if state.cancelling { "cancelled" } else { "queued again" }
                ));
            }
            if state.cancelling {
                unstarted_cancelled = resend;
            } else {
                for job in resend.into_iter().rev() {
                    state.queue.push_front(job);
                }
            }
            let error = match (&state.broken, &start_refused) {
                (Some(reason), _) => TaskError::Broken {
                    reason: reason.clone(),
                },
                (None, Some(reason)) => TaskError::WorkerStartFailed {
                    reason: reason.clone(),
                },
                (None, None) => TaskError::WorkerDied {
                    pid,
                    cause,
                    last_panic,
                },
            };
            let replace = match start_refused {
                Some(reason) => {
                    // Replaced a few times (the cause may pass: a process or thread of the
                    // user's ended), then no more until a worker starts or the next submit:
                    // the other workers run the queue, or with none left it fails.
                    state.start_refusals += 1;
                    let retry = state.start_refusals < START_REFUSALS_LIMIT;
                    if !retry {
                        stranded = state.strand_if_no_workers(reason);
                    }
                    retry
                }
                None => true,
            };
            if replace && state.broken.is_none() {
                let before = state.next_slot;
                stranded = self.spawn_as_needed(&mut state);
                if state.next_slot != before {
                    guarded!(info!(
                        "cf-pool-proc: worker {pid} ended ({cause}); started a replacement for \
                         {} queued task(s)",
                        state.queue.len()
                    ));
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
        for job in unstarted_cancelled {
            job.completion.cancel_unstarted();
        }
        if let Some(stranded) = stranded {
            stranded.fail();
        }
    }
}

/// How long a worker's death waits for its feeder to finish a write (see
/// [`Pool::worker_ended`]); a write to a dead worker fails at once.
const SEND_SETTLE: Duration = Duration::from_secs(2);

/// A task goes to at most this many workers that die before starting it; then it fails with
/// the last one.
const RESENDS_MAX: u8 = 3;

/// Splits what a dead worker held into the tasks that fail with it and those it never started
/// that can run elsewhere (as jobs, in the order they were submitted): every task but
/// `started`, the one it said it started last, whose payload was kept and that fewer than
/// [`RESENDS_MAX`] workers died holding.
fn unstarted(
    orphans: Vec<(u64, InFlight)>,
    started: Option<u64>,
) -> (Vec<(u64, InFlight)>, Vec<Job>) {
    let (mut resend, fail): (Vec<_>, Vec<_>) = orphans.into_iter().partition(|(task, entry)| {
        Some(*task) != started && entry.payload.is_some() && entry.deaths < RESENDS_MAX - 1
    });
    resend.sort_unstable_by_key(|(task, _)| *task);
    let jobs = resend
        .into_iter()
        .map(|(id, entry)| Job {
            id,
            fn_offset: entry.fn_offset,
            payload: entry.payload.expect("partitioned on it"),
            attached: entry.attached,
            completion: Box::new(Started(entry.completion, entry.deaths + 1)),
            timeout: entry.deadline.map(|(_, limit)| limit),
        })
        .collect();
    (fail, jobs)
}

/// Joins the pool's threads that have ended (the feeders of workers that were replaced, each of
/// which joined its reader), so a pool that replaces workers forever does not keep a stack per
/// replacement until shutdown. Joining an ended thread does not wait.
fn reap_finished_threads(state: &mut PoolState) {
    let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut state.feeders)
        .into_iter()
        .partition(JoinHandle::is_finished);
    state.feeders = running;
    for handle in ended {
        if handle.join().is_err() {
            guarded!(error!("cf-pool-proc: a feeder thread panicked"));
        }
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
        // A busy worker reads only when rung (see `shm::Wire`).
        let (jobs, busy) = match jobs {
            Batch::Tasks { jobs, busy } => (jobs, busy),
            Batch::Reclaim => {
                if let Err(e) = out.lock().send(&protocol::reclaim(), &[], true, true) {
                    guarded!(debug!(
                        "cf-pool-proc: write to worker slot {id} failed: {}",
                        io::Error::from(e)
                    ));
                    pool.kill_worker(id);
                    break;
                }
                continue;
            }
            Batch::Shutdown => {
                let _ = out.lock().send(&protocol::shutdown(), &[], false, true);
                break;
            }
        };
        let sent = send_tasks(&out, &jobs, busy);
        pool.keep_payloads(id, jobs, busy);
        if let Err(e) = sent {
            // Usually the worker is gone; if not, it is now, so the reader fails what it held.
            guarded!(debug!("cf-pool-proc: write to worker slot {id} failed: {e}"));
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
    let (parent_end, child_end) = Stream::pair()?;
    let out = parent_end.try_clone()?;
    // One way only: whatever a worker writes there is refused, never buffered here.
    let (doorbell, worker_doorbell) = sys::doorbell()?;
    let (blackbox, blackbox_fd) = blackbox::Reader::create()?;
    // The parent's regions for this worker only: lent to no other, forgotten with it.
    let peer = Arc::new(shm::Peer::default());
    let reader_peer = Arc::clone(&peer);
    // The reader starts first, so a process is never created without a thread to reap it.
    let (hand_over, child_slot) = mpsc::sync_channel::<WorkerProcess>(1);
    let reader_pool = Arc::clone(pool);
    let handle = std::thread::Builder::new()
        .name(format!("cf-proc-read-{id}"))
        .spawn(move || {
            if let Ok(child) = child_slot.recv() {
                reader(&reader_pool, id, parent_end, child, reader_peer, &blackbox);
            }
        })?;
    let child = match sys::spawn_worker(&child_end, &out) {
        Ok(child) => child,
        Err(e) => {
            drop(hand_over);
            let _ = handle.join();
            return Err(e);
        }
    };
    drop(child_end);
    let pid = child.pid();
    if let Some(slot) = pool.state.lock().slot_mut(id) {
        slot.pid = Some(pid);
    }
    guarded!(debug!("cf-pool-proc: started worker {pid} in slot {id}"));
    hand_over
        .send(child)
        .expect("the reader waits for its child");
    // The black box travels with the handshake; the worker maps it, the reader keeps its own
    // mapping, and this descriptor is no longer needed.
    // The logger's level now, so a logger installed after the pool was built counts.
    let hello = protocol::hello(&protocol::Hello {
        log_level: log::max_level() as u8,
        ..pool.config.hello
    });
    let fds = [blackbox_fd, worker_doorbell];
    if let Err(e) = shm::send_frame(&out, &hello, &fds) {
        guarded!(debug!(
            "cf-pool-proc: worker {pid} died before its handshake: {}",
            io::Error::from(e)
        ));
    }
    let out: Writer = Arc::new(shm::Link::new(out, doorbell, peer));
    if let Some(slot) = pool.state.lock().slot_mut(id) {
        slot.writer = Some(Arc::clone(&out));
    }
    Ok((handle, out))
}

enum Batch {
    /// Tasks for the worker; `busy`: it has tasks in flight, so it must be rung.
    Tasks { jobs: Vec<Sending>, busy: bool },
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
pub(crate) fn send_tasks(writer: &Writer, jobs: &[Sending], busy: bool) -> io::Result<()> {
    let peer = writer.peer();
    // The worker's regions the reader copied out: handed back first thing in the frame.
    let released = peer.take_owed();
    let mut fds = Vec::new();
    let mut lent = Vec::new();
    let mut messages = Vec::new();
    let frame = frame_tasks(jobs, &released, &mut messages, |attached, messages| {
        let exported = shm::export_all(peer, attached, &mut fds, messages);
        lent.extend(exported.iter().filter_map(shm::AttachOut::lend));
        exported
    });
    let mut wire = writer.lock();
    match wire.send_parts(&frame.parts(), &fds, busy, false) {
        Err(shm::SendError::Refused(e)) if !fds.is_empty() => {
            // Never sent: those regions are idle again.
            drop(fds);
            peer.unlend(lent);
            let why = format!("the kernel refused to pass its shared-memory descriptor ({e})");
            guarded!(warn!("cf-pool-proc: {why}; failing the frame's tasks that carry buffers"));
            let mut messages = Vec::new();
            let frame = frame_tasks(jobs, &released, &mut messages, |attached, messages| {
                messages.push(why.clone());
                vec![shm::AttachOut::Failed(messages.len() - 1); attached.len()]
            });
            Ok(wire.send_parts(&frame.parts(), &[], busy, false)?)
        }
        other => Ok(other?),
    }
}

/// A `Tasks` frame for `jobs`, handing back the worker's regions lent as `released`, with
/// `export` deciding each job's attachment records (and writing into `messages` why those it
/// could not export failed). Large payloads are sent from the jobs, in place.
fn frame_tasks<'a>(
    jobs: &'a [Sending],
    released: &[u64],
    messages: &'a mut Vec<String>,
    mut export: impl FnMut(&[Buffer], &mut Vec<String>) -> Vec<shm::AttachOut>,
) -> protocol::Frame<'a> {
    let exported: Vec<_> = jobs
        .iter()
        .map(|job| export(job.attached.as_slice(), messages))
        .collect();
    let messages: &'a [String] = messages;
    let mut frame = FrameBuf::new(Kind::Tasks);
    protocol::push_released(&mut frame, released);
    frame.u32(u32::try_from(jobs.len()).expect("window is small"));
    for (job, exported) in jobs.iter().zip(&exported) {
        protocol::push_task(
            &mut frame,
            &protocol::TaskFrame {
                id: job.id,
                fn_offset: job.fn_offset,
                payload: &job.payload,
                attached: exported.iter().map(|a| a.record(messages)).collect(),
            },
        );
    }
    frame.finish_parts()
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
        let room = if slot.holds_timed_task() || slot.completing || slot.stuck(now) {
            0
        } else {
            slot.window().saturating_sub(slot.in_flight.len())
        };
        let ready = slot.ready;
        // A task with a time limit waits for a worker that is ready (started, its initializer
        // run): its clock starts when it is sent, and must not count the process's start or
        // the initializer's work.
        let startable = ready || !front_timed;
        // A busy worker takes work only if the idle ones cannot absorb it all.
        if !retiring
            && queued > 0
            && room > 0
            && startable
            && (!busy || (queued > idle && !front_timed))
        {
            let fair = queued.div_ceil(active);
            let mut n = room.min(fair).max(1);
            if let Some(m) = max_tasks {
                n = n.min(usize::try_from(m - slot.sent).unwrap_or(usize::MAX));
            }
            if busy {
                n = n.min(queued - idle);
            }
            if let Some(jobs) = take_jobs(pool, &mut state, id, n) {
                if let Some(slot) = state.slot_mut(id) {
                    slot.sending = true;
                }
                return Some(Batch::Tasks { jobs, busy });
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
/// one to give them back (its feeder sends `Reclaim`, and the tasks return to the queue);
/// returns whether it asked any, and when to look again for workers that may become stranded.
fn take_back_stranded(state: &mut PoolState, idle: usize, now: Instant) -> (bool, Option<Instant>) {
    let mut asked = false;
    let mut next: Option<Instant> = None;
    for (i, slot) in &mut state.slots {
        if *i == idle {
            continue;
        }
        match slot.stranding(now) {
            Some(due) if due <= now => {
                guarded!(trace!(
                    "cf-pool-proc: worker slot {i} ran one task for {RECLAIM_AFTER:?} with {} \
                     more waiting behind it; taking them back for an idle worker",
                    slot.in_flight.len() - 1
                ));
                slot.reclaim = Reclaim::Wanted;
                asked = true;
            }
            Some(due) => next = Some(next.map_or(due, |n: Instant| n.min(due))),
            None => {}
        }
    }
    (asked, next)
}

/// The most payload bytes a `Tasks` frame of several jobs carries: a frame's length is a `u32`
/// ([`MAX_FRAME`]), and each payload alone may be nearly that ([`crate::task::MAX_PAYLOAD`]),
/// so a batch of large arguments goes in several frames.
const FRAME_PAYLOAD_BUDGET: usize = 1 << 30;
// Room in a frame for the records around the payloads.
const _: () = assert!(FRAME_PAYLOAD_BUDGET < MAX_FRAME / 2);

/// Whether a job with `attached` buffers and a `payload`-byte argument joins a `Tasks` frame
/// that holds `taken` jobs so far, with `fds` buffers and `bytes` payload bytes among them. The
/// first job always does: its payload fits a frame on its own (checked at submit).
fn fits_frame(taken: usize, fds: usize, bytes: usize, attached: usize, payload: usize) -> bool {
    taken == 0
        || (fds + attached <= shm::FRAME_FDS
            && bytes.saturating_add(payload) <= FRAME_PAYLOAD_BUDGET)
}

/// Moves up to `n` startable jobs from the queue into slot `id`'s window, for
/// [`send_tasks`]. A job with a time limit travels alone, to an otherwise empty worker, so its
/// clock starts when it starts and killing the worker on expiry stops nothing else. A frame
/// carries at most [`shm::FRAME_FDS`] attached buffers and, beyond its first job,
/// [`FRAME_PAYLOAD_BUDGET`] payload bytes. `None` if every job taken had been
/// cancelled meanwhile, or the next job needs an empty worker. A job with a time limit gets its
/// deadline here, when it leaves for the worker, and the watchdog is told (it may be sleeping
/// until a later deadline, or for its idle second). A worker still starting (not yet `Ready`)
/// gets no timed job, so the process's start and the initializer do not count against a limit.
pub(crate) fn take_jobs(
    pool: &Pool,
    state: &mut PoolState,
    id: usize,
    n: usize,
) -> Option<Vec<Sending>> {
    let slot = state.slot_mut(id)?;
    // A timed job goes only to a worker that is empty and ready (see [`next_batch`]).
    let alone_ok = slot.in_flight.is_empty() && slot.ready;
    let empty = slot.in_flight.is_empty();
    let mut taken: Vec<Job> = Vec::with_capacity(n);
    let (mut fds, mut bytes) = (0, 0);
    while taken.len() < n {
        let Some(job) = state.queue.pop_front() else {
            break;
        };
        let attached = job.attached.as_slice().len();
        let fits = fits_frame(taken.len(), fds, bytes, attached, job.payload.len());
        if !fits || (job.timeout.is_some() && !(taken.is_empty() && alone_ok)) {
            state.queue.push_front(job);
            break;
        }
        fds += attached;
        bytes += job.payload.len();
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
    let mut timed = false;
    for job in taken {
        // A limit too long for the clock (`Duration::MAX`, say) is no limit.
        let deadline = job
            .timeout
            .and_then(|t| now.checked_add(t).map(|at| (at, t)));
        timed |= deadline.is_some();
        sending.push(Sending {
            id: job.id,
            fn_offset: job.fn_offset,
            payload: job.payload,
            attached: job.attached.clone(),
        });
        slot.in_flight.insert(
            job.id,
            InFlight {
                deaths: job.completion.deaths(),
                completion: job.completion,
                fn_offset: job.fn_offset,
                attached: job.attached,
                deadline,
                payload: None,
            },
        );
    }
    if timed {
        pool.timer.notify_all();
    }
    Some(sending)
}

fn reader(
    pool: &Arc<Pool>,
    id: usize,
    stream: Stream,
    mut child: WorkerProcess,
    peer: Arc<shm::Peer>,
    blackbox: &blackbox::Reader,
) {
    pool.adopt_thread();
    let pid = child.pid();
    // The timeout only lets the reader notice a frame that stops arriving midway.
    if let Err(e) = stream.set_read_timeout(Some(READ_POLL)) {
        guarded!(debug!("cf-pool-proc: no read timeout for worker {pid}: {e}"));
    }
    let mut input = BufReader::with_capacity(256 * 1024, FdStream::new(stream, false, peer));
    let mut init_failure: Option<(StartFailure, String)> = None;
    // A worker that broke the protocol (a frame that does not decode, stray descriptors) is
    // not trusted afterwards, its black box included; a frame cut short by the worker's death
    // is not such a breach.
    let mut broke_protocol = true;
    let trouble: Option<String> = loop {
        let body = match protocol::read_frame(&mut input, MAX_FRAME, Some(FRAME_STALL)) {
            Ok(Some(body)) => body,
            Ok(None) => break None,
            Err(e) => {
                broke_protocol = !matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                );
                break Some(e.to_string());
            }
        };
        shm::begin_frame(&mut input);
        match handle_frame(pool, id, &body, input.get_mut()) {
            Ok(Some(failure)) => init_failure = Some(failure),
            Ok(None) => {}
            Err(e) => break Some(e.to_string()),
        }
        if let Err(e) = shm::end_of_frame(&mut input) {
            break Some(e);
        }
    };
    if let Some(why) = &trouble {
        if broke_protocol {
            guarded!(error!("cf-pool-proc: worker {pid} sent a bad frame ({why}); killing it"));
        } else {
            // Its end of the connection went away mid-frame or with our frames unread (a
            // worker that ends resets the connection): it is ending, not misbehaving.
            guarded!(debug!("cf-pool-proc: worker {pid}'s connection ended ({why})"));
        }
        let _ = child.kill();
    }
    if let Some(slot) = pool.state.lock().slot_mut(id) {
        slot.reaping = true;
    }
    let cause = child.wait();
    if trouble.is_none() || !broke_protocol {
        recover_results(pool, id, pid, blackbox);
    }
    // A worker that broke the protocol is not believed about what it started either.
    let started = if trouble.is_none() || !broke_protocol {
        blackbox.started()
    } else {
        None
    };
    pool.worker_ended(id, pid, cause, init_failure, blackbox.last_words(), started);
    pool.release_thread();
}

/// The worker of slot `id` gave `tasks` back unstarted (after a `Reclaim`): they go back to the
/// front of the queue, in order, for the idle worker that asked.
fn requeue(pool: &Pool, id: usize, tasks: &[(u64, &[u8])]) -> Result<(), protocol::ProtocolError> {
    let mut state = pool.state.lock();
    let slot = state
        .slot_mut(id)
        .ok_or_else(|| protocol::ProtocolError("tasks returned to a removed slot".into()))?;
    let given = slot
        .give_back(tasks.iter().map(|&(task, _)| task))
        .map_err(protocol::ProtocolError)?;
    if state.cancelling {
        // `shutdown(cancel_futures)` asked for them back: they never run.
        pool.work.notify_all();
        drop(state);
        guarded!(trace!(
            "cf-pool-proc: worker slot {id} gave back {} unstarted task(s); cancelled",
            given.len()
        ));
        for (_, entry) in given {
            entry.completion.cancel_unstarted();
        }
        return Ok(());
    }
    let jobs: Vec<Job> = given
        .into_iter()
        .zip(tasks)
        .map(|((id, entry), &(_, payload))| Job {
            id,
            fn_offset: entry.fn_offset,
            payload: payload.to_vec(),
            attached: entry.attached,
            completion: Box::new(Started(entry.completion, entry.deaths)),
            timeout: entry.deadline.map(|(_, limit)| limit),
        })
        .collect();
    guarded!(trace!(
        "cf-pool-proc: worker slot {id} gave back {} unstarted task(s)",
        jobs.len()
    ));
    for job in jobs.into_iter().rev() {
        state.queue.push_front(job);
    }
    pool.work.notify_all();
    Ok(())
}

/// The completion of a task that was already started (its future is running) and was given
/// back by a busy worker: starting it again must not be refused, and a user's `cancel` cannot
/// reach a running future (`shutdown(cancel_futures)` and `terminate_workers`, which drop the
/// queue, cancel it with `cancel_unstarted`).
struct Started(Box<dyn Completion>, u8);

impl Completion for Started {
    fn deaths(&self) -> u8 {
        self.1
    }
    fn start(&self) -> bool {
        true
    }
    fn cancel(&self) -> bool {
        false
    }
    fn cancel_unstarted(&self) -> bool {
        self.0.cancel_unstarted()
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
        Ok(WorkerMessage::Results { records, .. }) => records,
        Ok(_) => return,
        Err(e) => {
            guarded!(warn!("cf-pool-proc: worker {pid} left an unreadable black box ({e})"));
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
        guarded!(debug!(
            "cf-pool-proc: worker {pid} died with {} result(s) not yet sent; completed them \
             from its black box",
            recovered.len()
        ));
    }
    for (entry, rec) in recovered {
        entry.completion.finish(rec.ok, rec.bytes, Ok(Vec::new()));
    }
}

/// The pid of slot `id`'s worker, for messages about it.
fn pid_of(pool: &Pool, id: usize) -> u32 {
    pool.state
        .lock()
        .slot_mut(id)
        .and_then(|s| s.pid)
        .unwrap_or(0)
}

/// Hands a worker's `log` record to this process's logger: same level, target, module path,
/// file and line, the message prefixed with the worker's pid. Subject to the logger's filter as
/// a record of this process would be (the worker sent only records up to the level in force
/// when it started).
fn forward_log(pid: u32, record: &protocol::LogMessage) {
    let protocol::LogMessage {
        level,
        target,
        message,
        file,
        line,
        module_path,
    } = record;
    if *level > log::max_level() {
        return;
    }
    // On the reader thread: a logger that panics must not end it (see `guarded!`).
    cf_executor_api::log_guarded(|| {
        let logger = log::logger();
        let metadata = log::Metadata::builder().level(*level).target(target).build();
        if !logger.enabled(&metadata) {
            return;
        }
        logger.log(
            &log::Record::builder()
                .metadata(metadata)
                .args(format_args!("[worker {pid}] {message}"))
                .file(file.as_deref())
                .line(*line)
                .module_path(module_path.as_deref())
                .build(),
        );
    });
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
            guarded!(trace!("cf-pool-proc: worker {pid} ready"));
            let mut state = pool.state.lock();
            state.startup_deaths = 0;
            state.start_refusals = 0;
            if let Some(slot) = state.slot_mut(id) {
                slot.ready = true;
            }
            // Its feeder may now take work stranded behind another worker.
            pool.work.notify_all();
            return Ok(None);
        }
        WorkerMessage::InitFailed { why, message } => return Ok(Some((why, message))),
        WorkerMessage::Log(record) => {
            forward_log(pid_of(pool, id), &record);
            return Ok(None);
        }
        WorkerMessage::Returned(tasks) => {
            requeue(pool, id, &tasks)?;
            return Ok(None);
        }
        WorkerMessage::Results { records, released } => {
            // Before any future completes, so that work it prompts can reuse those regions.
            stream.peer().release(&released);
            records
        }
    };
    // A worker returns at most the tasks it holds: that bounds what the parent allocates for
    // the records below, whatever count the frame claims.
    let held = pool
        .state
        .lock()
        .slot_mut(id)
        .map_or(0, |s| s.in_flight.len());
    if records.len() > held {
        return Err(protocol::ProtocolError(format!(
            "{} results from a worker holding {held} tasks",
            records.len()
        )));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::MAX_PAYLOAD;

    #[test]
    fn a_dead_workers_unstarted_tasks_go_back_in_order_but_not_forever() {
        use crate::state::tests::Nothing;
        let entry = |payload: Option<&[u8]>, deaths| InFlight {
            completion: Box::new(Nothing),
            fn_offset: 3,
            attached: Attached::default(),
            deadline: None,
            payload: payload.map(<[u8]>::to_vec),
            deaths,
        };
        let held = || {
            vec![
                (9, entry(Some(b"nine"), 0)),
                (4, entry(Some(b"four"), 1)),
                // Sent while the worker was idle: its payload was not kept.
                (5, entry(None, 0)),
                (6, entry(Some(b"six"), 0)),
                // The third worker to die holding it.
                (7, entry(Some(b"seven"), RESENDS_MAX - 1)),
            ]
        };
        let ids = |fail: &[(u64, InFlight)]| {
            let mut ids: Vec<u64> = fail.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids
        };
        // It started 6: 6 fails with it, and so do 5 (no payload) and 7 (too many deaths).
        let (fail, resend) = unstarted(held(), Some(6));
        assert_eq!(ids(&fail), [5, 6, 7]);
        let back: Vec<_> = resend
            .iter()
            .map(|j| (j.id, j.payload.as_slice(), j.fn_offset, j.completion.deaths()))
            .collect();
        assert_eq!(back, [(4, &b"four"[..], 3, 2), (9, &b"nine"[..], 3, 1)]);
        // Started nothing (or a task it no longer held): every kept payload goes back.
        for started in [None, Some(42)] {
            let (fail, resend) = unstarted(held(), started);
            assert_eq!(ids(&fail), [5, 7]);
            assert_eq!(resend.iter().map(|j| j.id).collect::<Vec<_>>(), [4, 6, 9]);
            assert!(resend.iter().all(|j| !j.completion.cancel() && j.completion.start()));
        }
    }

    #[test]
    fn a_first_job_always_fits_a_frame() {
        assert!(fits_frame(0, 0, 0, shm::FRAME_FDS + 1, MAX_PAYLOAD));
    }

    #[test]
    fn jobs_whose_payloads_would_overflow_a_frame_wait_for_the_next() {
        // Two arguments of 2 GiB each: together past a frame's `u32` length.
        let two_gib = 2 << 30;
        assert!(!fits_frame(1, 0, two_gib, 0, two_gib));
        assert!(!fits_frame(1, 0, FRAME_PAYLOAD_BUDGET, 0, 1));
        assert!(fits_frame(1, 0, FRAME_PAYLOAD_BUDGET - 1, 0, 1));
    }

    #[test]
    fn buffers_past_a_frames_descriptors_wait_for_the_next() {
        assert!(fits_frame(1, shm::FRAME_FDS - 1, 0, 1, 0));
        assert!(!fits_frame(1, shm::FRAME_FDS, 0, 1, 0));
    }
}
