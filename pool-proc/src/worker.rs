//! The worker process: handshake, optional initializer, then a loop that runs task batches and
//! sends results back. The task thread reads a frame and runs its tasks in order; results are
//! batched in an [`Outbox`] and sent when the frame is done, when 64 KiB are waiting, or at the
//! latest 1 ms after the oldest was produced (a small flusher thread sees to that, so a quick
//! result never waits for a slow task that follows it).
//!
//! It ends when the parent says `Shutdown`, when the socket closes (the parent died: the
//! lifeline), after `max_tasks_per_child` tasks, or by `SIGKILL` from `PR_SET_PDEATHSIG`.

use std::io::{self, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use cf_executor_api::{call_catching, CodecStage, TaskError};

use crate::protocol::{
    self, FrameBuf, Kind, Reader, ResultFrame, StartFailure, MAX_FRAME, TASK_RECORD_MIN,
};
use crate::shm::{self, FdStream};
use crate::sys::{self, OwnedFd, UnixStream};
use crate::task::encode;

/// Flush buffered results once this many bytes are waiting...
const FLUSH_BYTES: usize = 64 * 1024;
/// ...or the oldest has waited this long.
const FLUSH_AFTER: Duration = Duration::from_millis(1);

static IS_WORKER: AtomicBool = AtomicBool::new(false);

/// `true` inside a worker process of a [`ProcessPoolExecutor`](crate::ProcessPoolExecutor).
///
/// # Examples
///
/// ```
/// assert!(!cf_pool_proc::is_worker());
/// ```
#[must_use]
pub fn is_worker() -> bool {
    IS_WORKER.load(Ordering::Relaxed)
}

/// Serves on `socket` until told to stop, then exits the process.
pub(crate) fn run(socket: UnixStream) -> ! {
    IS_WORKER.store(true, Ordering::Relaxed);
    sys::ignore_sigpipe();
    match serve(socket) {
        Ok(()) => exit(0),
        Err(e) => {
            eprintln!("cf-pool-proc worker {}: {e}", std::process::id());
            exit(70)
        }
    }
}

/// Ends the worker process with `code`, after flushing what tasks printed.
fn exit(code: i32) -> ! {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    std::process::exit(code)
}

struct Batch {
    frame: FrameBuf,
    count: u32,
    /// Descriptors of the attached buffers, in record order.
    fds: Vec<OwnedFd>,
    /// When the oldest buffered result was produced.
    since: Option<Instant>,
    /// The flusher is watching this batch (a task started while results waited).
    armed: bool,
}

impl Batch {
    fn new() -> Self {
        let mut frame = FrameBuf::new(Kind::Results);
        frame.u32(0);
        Batch {
            frame,
            count: 0,
            fds: Vec::new(),
            since: None,
            armed: false,
        }
    }

    /// The frame, handing back the parent's regions lent as `released` (at its end).
    fn into_frame(mut self, released: &[u64]) -> (Vec<u8>, Vec<OwnedFd>) {
        protocol::push_released(&mut self.frame, released);
        let mut bytes = self.frame.finish();
        let at = protocol::HEADER + 1;
        bytes[at..at + 4].copy_from_slice(&self.count.to_le_bytes());
        (bytes, self.fds)
    }
}

/// Results waiting to go to the parent. The task thread fills it; whoever flushes takes the
/// socket lock first, then the batch, so frames leave in order. A flusher thread bounds how
/// long a quick task's result can wait behind a slow task that follows it in the same frame.
struct Outbox {
    batch: Mutex<Batch>,
    wake: Condvar,
    socket: Mutex<UnixStream>,
    /// The regions this worker lends the parent, and the parent's it is done with.
    peer: Arc<shm::Peer>,
    /// Set on exit: the flusher stops.
    closed: AtomicBool,
}

impl Outbox {
    /// Buffers a result and the descriptors of its attached buffers.
    fn push(&self, result: &ResultFrame<'_>, fds: Vec<OwnedFd>) {
        if !fds.is_empty() && self.batch.lock().fds.len() + fds.len() > shm::FRAME_FDS {
            // Only this thread adds descriptors, so after the flush there is room.
            self.flush();
        }
        let mut batch = self.batch.lock();
        batch.fds.extend(fds);
        protocol::push_result(&mut batch.frame, result);
        batch.count += 1;
        batch.since.get_or_insert_with(Instant::now);
        if batch.frame.len() >= FLUSH_BYTES {
            batch.armed = true;
            self.wake.notify_one();
        }
    }

    /// Called before a task starts: results waiting now might wait for the whole task, so the
    /// flusher takes charge of them. Costs nothing when nothing waits (a lone task per frame,
    /// whose result the task thread sends itself), and one wake-up per batch otherwise.
    fn arm(&self) {
        let mut batch = self.batch.lock();
        if batch.count > 0 && !batch.armed {
            batch.armed = true;
            self.wake.notify_one();
        }
    }

    /// Sends what is buffered. A batch that cannot be sent is fatal: its results are gone, and
    /// the parent would wait for them forever, so the worker exits and the parent fails those
    /// tasks with `WorkerDied` (usually the parent is gone anyway).
    fn flush(&self) {
        let socket = self.socket.lock();
        let full = {
            let mut batch = self.batch.lock();
            if batch.count == 0 {
                return;
            }
            std::mem::replace(&mut *batch, Batch::new())
        };
        let (frame, fds) = full.into_frame(&self.peer.take_owed());
        if let Err(e) = shm::send_frame(&socket, &frame, &fds) {
            let e = io::Error::from(e);
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!(
                    "cf-pool-proc worker {}: cannot send results ({e}); exiting",
                    std::process::id()
                );
            }
            exit(70);
        }
    }

    fn flusher(&self) {
        loop {
            {
                let mut batch = self.batch.lock();
                loop {
                    if self.closed.load(Ordering::Acquire) {
                        return;
                    }
                    match batch.since.filter(|_| batch.armed) {
                        None => {
                            self.wake.wait(&mut batch);
                        }
                        Some(since) => {
                            let due = since + FLUSH_AFTER;
                            if batch.frame.len() >= FLUSH_BYTES || Instant::now() >= due {
                                break;
                            }
                            self.wake.wait_until(&mut batch, due);
                        }
                    }
                }
            }
            self.flush();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _guard = self.batch.lock();
        self.wake.notify_all();
    }
}

fn serve(socket: UnixStream) -> io::Result<()> {
    let mut out = socket.try_clone()?;
    let peer = Arc::new(shm::Peer::default());
    let mut input =
        BufReader::with_capacity(256 * 1024, FdStream::new(socket, true, Arc::clone(&peer)));

    let Some(body) = protocol::read_frame(&mut input, MAX_FRAME, None)? else {
        return Ok(());
    };
    let hello = match Reader::new(&body) {
        Ok((Kind::Hello, mut r)) => r.hello().map_err(io::Error::other)?,
        _ => return Err(io::Error::other("the first frame was not a Hello")),
    };
    if let Err(why) = check_identity(&hello) {
        protocol::write_frame(
            &mut out,
            &protocol::init_failed(StartFailure::Identity, &why),
        )?;
        return Ok(());
    }
    if hello.init_offset != 0 {
        let init = sys::initializer_at(hello.init_offset);
        let failure = match call_catching(init) {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(message),
            Err(TaskError::Panicked {
                message, location, ..
            }) => Some(match location {
                Some(at) => format!("panicked at {at}: {message}"),
                None => format!("panicked: {message}"),
            }),
            Err(other) => Some(other.to_string()),
        };
        if let Some(message) = failure {
            protocol::write_frame(
                &mut out,
                &protocol::init_failed(StartFailure::Initializer, &message),
            )?;
            return Ok(());
        }
    }
    protocol::write_frame(&mut out, &protocol::ready(std::process::id()))?;

    let outbox = Arc::new(Outbox {
        batch: Mutex::new(Batch::new()),
        wake: Condvar::new(),
        socket: Mutex::new(out),
        peer,
        closed: AtomicBool::new(false),
    });
    let flusher = {
        let outbox = Arc::clone(&outbox);
        std::thread::Builder::new()
            .name("cf-worker-flush".into())
            .spawn(move || outbox.flusher())?
    };
    let result = run_tasks(&mut input, &outbox, hello.max_tasks);
    outbox.flush();
    outbox.close();
    let _ = flusher.join();
    result
}

/// Reads task frames and runs them until `Shutdown`, end of stream, or `max_tasks`.
fn run_tasks(input: &mut BufReader<FdStream>, outbox: &Outbox, max_tasks: u64) -> io::Result<()> {
    let peer = Arc::clone(input.get_ref().peer());
    let mut done: u64 = 0;
    loop {
        let Some(body) = protocol::read_frame(input, MAX_FRAME, None)? else {
            return Ok(());
        };
        let (kind, mut r) = Reader::new(&body).map_err(io::Error::other)?;
        match kind {
            Kind::Tasks => {
                // The parent is done with these regions: reusable for this frame's results.
                peer.release(&r.released().map_err(io::Error::other)?);
                let n = r.count(TASK_RECORD_MIN).map_err(io::Error::other)?;
                for _ in 0..n {
                    let task = r.task().map_err(io::Error::other)?;
                    let buffers = input
                        .get_mut()
                        .import_all(&task.attached)
                        .map_err(io::Error::other)?;
                    outbox.arm();
                    let started = Instant::now();
                    let outcome = sys::trampoline_at(task.fn_offset)(task.payload, buffers);
                    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let (ok, bytes, attached) = match outcome {
                        Ok((bytes, attached)) => (true, bytes, attached),
                        Err(e) => (
                            false,
                            encode(&e, CodecStage::SerializeResult)
                                .map(|(bytes, _)| bytes)
                                .unwrap_or_default(),
                            Vec::new(),
                        ),
                    };
                    let mut fds = Vec::new();
                    let mut messages = Vec::new();
                    let exported = shm::export_all(&peer, &attached, &mut fds, &mut messages);
                    drop(attached);
                    outbox.push(
                        &ResultFrame {
                            id: task.id,
                            nanos,
                            ok,
                            bytes: &bytes,
                            attached: exported.iter().map(|a| a.record(&messages)).collect(),
                        },
                        fds,
                    );
                    done += 1;
                    if max_tasks != 0 && done >= max_tasks {
                        return Ok(());
                    }
                }
                r.end().map_err(io::Error::other)?;
                shm::end_of_frame(input).map_err(io::Error::other)?;
                // Nothing more to run right now: send what is buffered without waiting.
                outbox.flush();
            }
            Kind::Shutdown => return Ok(()),
            other => return Err(io::Error::other(format!("unexpected {other:?} frame"))),
        }
    }
}

fn check_identity(hello: &protocol::Hello) -> Result<(), String> {
    let mine = sys::exe_identity().map_err(|e| format!("cannot inspect /proc/self/exe: {e}"))?;
    if mine != hello.exe || sys::probe_offset() != hello.probe_offset {
        return Err(
            "the worker is not running the parent's executable image (it changed on disk or \
             the layout differs), so task code offsets cannot be trusted; rebuild and restart"
                .into(),
        );
    }
    Ok(())
}
