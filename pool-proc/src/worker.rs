//! The worker process: handshake, optional initializer, then a loop that runs tasks and sends
//! results back. Three threads:
//!
//! * the **task thread** (the one that ran the initializer) runs the tasks of the [`Inbox`] in
//!   order. When it has none it reads the socket itself, so a task sent to an idle worker
//!   reaches the thread that runs it with no hop in between;
//! * the **receiver** reads the socket while a task runs, but only when the parent rings the
//!   worker's doorbell (see `shm::Wire`): it reads up to the frame rung for, queues the tasks
//!   of each frame in the inbox, and answers `Reclaim` by giving back the tasks not started yet
//!   (so the parent can hand them to an idle worker while a long task runs here). Both threads
//!   read under one lock, frame by frame, so frames are handled in order;
//! * the **flusher** sends batched results: results wait in an [`Outbox`] and go when the task
//!   thread has nothing more to run, when 64 KiB are waiting, or at the latest 1 ms after the
//!   oldest was produced, so a quick result never waits for a slow task that follows it.
//!
//! A result waiting in the outbox is also recorded in the worker's black box
//! ([`crate::blackbox`]) before the next task starts, so a crash of that task cannot lose it;
//! so are the id of each task as it starts (the parent hands the tasks queued behind a task
//! that killed the worker to another one) and the message of a panic that will not unwind. `log` records of tasks go to the parent
//! ([`Forward`]).
//!
//! It ends when the parent says `Shutdown`, when the socket closes (the parent died: the
//! lifeline), after `max_tasks_per_child` tasks, or by `SIGKILL` from `PR_SET_PDEATHSIG`.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use cf_executor_api::{call_catching, Buffer, CodecStage, TaskError};

use crate::blackbox;
use crate::protocol::{
    self, FrameBuf, Kind, Reader, ResultFrame, StartFailure, MAX_FRAME, TASK_RECORD_MIN,
};
use crate::shm::{self, FdStream};
use crate::sys::{self, OwnedHandle, Stream};
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
pub(crate) fn run(socket: Stream) -> ! {
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
    frame: FrameBuf<'static>,
    count: u32,
    /// Descriptors of the attached buffers, in record order.
    fds: Vec<OwnedHandle>,
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
    fn into_frame(mut self, released: &[u64]) -> (Vec<u8>, Vec<OwnedHandle>) {
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
    socket: Mutex<Stream>,
    /// Records of the results not known to be sent; locked inside `batch`.
    blackbox: Mutex<blackbox::Writer>,
    /// The regions this worker lends the parent, and the parent's it is done with.
    peer: Arc<shm::Peer>,
    /// Set on exit: the flusher stops.
    closed: AtomicBool,
}

impl Outbox {
    /// Buffers a result and the descriptors of its attached buffers. Before this returns, the
    /// result is safe from a crash of the next task: recorded in the black box (which outlives
    /// this process, see [`crate::blackbox`]) or, if it does not fit there or carries
    /// descriptors, sent.
    fn push(&self, result: &ResultFrame<'_>, fds: Vec<OwnedHandle>) {
        if result.bytes.len() >= protocol::SPLICE_MIN {
            // Far too large for the black box, so it would be sent at once anyway: in a frame
            // of its own, its bytes written from where they are rather than copied into it.
            self.send_alone(result, fds);
            return;
        }
        if !fds.is_empty() && self.batch.lock().fds.len() + fds.len() > shm::FRAME_FDS {
            // Only this thread adds descriptors, so after the flush there is room.
            self.flush();
        }
        let send_now = {
            let mut batch = self.batch.lock();
            // Descriptors die with this process: a result that has some must be sent.
            let keeps_fds = !fds.is_empty();
            batch.fds.extend(fds);
            let start = batch.frame.len();
            protocol::push_result(&mut batch.frame, result);
            batch.count += 1;
            batch.since.get_or_insert_with(Instant::now);
            let recorded = !keeps_fds && self.blackbox.lock().record(batch.frame.since(start));
            if recorded && batch.frame.len() >= FLUSH_BYTES {
                batch.armed = true;
                self.wake.notify_one();
            }
            !recorded
        };
        if send_now {
            self.flush();
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
            cannot_send_results(e);
        }
        // Everything recorded has been sent, unless results came in meanwhile (then they stay
        // recorded, with the sent ones, until a flush that leaves nothing behind).
        if self.batch.lock().count == 0 {
            self.blackbox.lock().clear();
        }
    }

    /// Sends `result` in a `Results` frame of its own, after the results buffered before it,
    /// with its bytes sent in place. Fatal on failure, as [`flush`](Self::flush).
    fn send_alone(&self, result: &ResultFrame<'_>, fds: Vec<OwnedHandle>) {
        self.flush();
        let socket = self.socket.lock();
        // Only this thread pushes results, so none came in since the flush.
        let mut frame = FrameBuf::new(Kind::Results);
        frame.u32(1);
        protocol::push_result_in_place(&mut frame, result);
        protocol::push_released(&mut frame, &self.peer.take_owed());
        if let Err(e) = shm::send_parts(&socket, &frame.finish_parts().parts(), &fds) {
            cannot_send_results(e);
        }
    }

    /// Sends one frame of its own, or nothing if the socket is unusable (for log records: a
    /// log call must not end the process; the next result's send will).
    fn try_send(&self, frame: &[u8]) {
        let _ = shm::send_frame(&self.socket.lock(), frame, &[]);
    }

    /// Sends one frame of its own (not results) in order with the batches; like a failed
    /// flush, a failed send ends the worker.
    fn send(&self, frame: &[u8]) {
        let socket = self.socket.lock();
        if let Err(e) = shm::send_frame(&socket, frame, &[]) {
            let e = io::Error::from(e);
            if e.kind() != io::ErrorKind::BrokenPipe {
                eprintln!(
                    "cf-pool-proc worker {}: cannot write to the parent ({e}); exiting",
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

/// Ends the worker after results could not be sent: they are gone, and the parent would wait
/// for them forever, so it must learn that this worker died (usually the parent is gone).
fn cannot_send_results(e: shm::SendError) -> ! {
    let e = io::Error::from(e);
    if e.kind() != io::ErrorKind::BrokenPipe {
        eprintln!(
            "cf-pool-proc worker {}: cannot send results ({e}); exiting",
            std::process::id()
        );
    }
    exit(70)
}

fn serve(socket: Stream) -> io::Result<()> {
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
    let (Some(blackbox), Some(doorbell)) = (input.get_mut().take_fd(), input.get_mut().take_fd())
    else {
        return Err(io::Error::other(
            "the handshake came without the black box and the doorbell",
        ));
    };
    let doorbell = Stream::from(doorbell);
    if let Err(why) = check_identity(&hello) {
        protocol::write_frame(
            &mut out,
            &protocol::init_failed(StartFailure::Identity, &why),
        )?;
        return Ok(());
    }
    let blackbox = blackbox::Writer::adopt(&blackbox)?;
    // A panic that will not unwind (panic = "abort") leaves its message in the black box.
    if LAST_WORDS.set(blackbox.last_words()).is_ok() {
        cf_executor_api::set_fatal_panic_observer(say_last_words);
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
    let outbox = Arc::new(Outbox {
        batch: Mutex::new(Batch::new()),
        wake: Condvar::new(),
        socket: Mutex::new(out),
        blackbox: Mutex::new(blackbox),
        peer,
        closed: AtomicBool::new(false),
    });
    let inbox = Arc::new(Inbox::new(input));
    // The worker's own threads start before it says `Ready`: one the system refuses (too many
    // processes or threads for the user) is a start failure the parent reports as such, not a
    // death blamed on the task it was sent.
    let flusher = match start_threads(&outbox, &inbox, doorbell) {
        Ok(flusher) => flusher,
        Err(e) => {
            let message = format!("the system refused this worker a thread it needs ({e})");
            protocol::write_frame(
                &mut *outbox.socket.lock(),
                &protocol::init_failed(StartFailure::Resources, &message),
            )?;
            return Ok(());
        }
    };
    protocol::write_frame(
        &mut *outbox.socket.lock(),
        &protocol::ready(std::process::id()),
    )?;
    forward_logs(&outbox, hello.log_level);
    let result = run_tasks(&inbox, &outbox, hello.max_tasks);
    outbox.flush();
    outbox.close();
    let _ = flusher.join();
    result
}

/// Starts the flusher (returned, to join at the end) and the receiver (not joined: at the end it
/// may be blocked on the doorbell, and the process exits anyway). If the receiver cannot be
/// started, the flusher is stopped again.
fn start_threads(
    outbox: &Arc<Outbox>,
    inbox: &Arc<Inbox>,
    doorbell: Stream,
) -> io::Result<std::thread::JoinHandle<()>> {
    let flusher = {
        let outbox = Arc::clone(outbox);
        std::thread::Builder::new()
            .name("cf-worker-flush".into())
            .spawn(move || outbox.flusher())?
    };
    let (inbox, receiver_outbox) = (Arc::clone(inbox), Arc::clone(outbox));
    let receiver = std::thread::Builder::new()
        .name("cf-worker-recv".into())
        .spawn(move || receive(&doorbell, &inbox, &receiver_outbox));
    if let Err(e) = receiver {
        outbox.close();
        let _ = flusher.join();
        return Err(e);
    }
    Ok(flusher)
}

/// Where [`say_last_words`] writes: this worker's black box.
static LAST_WORDS: std::sync::OnceLock<blackbox::LastWords> = std::sync::OnceLock::new();

/// The fatal panic observer (see `cf_executor_api::set_fatal_panic_observer`): runs in the
/// panicking thread right before the process aborts, and leaves the panic's message and
/// location for the parent, without a lock (another thread may hold the socket).
fn say_last_words(message: &str, location: Option<&str>) {
    if let Some(words) = LAST_WORDS.get() {
        words.say(message, location);
    }
}

/// The longest log message forwarded; longer ones are cut (at a character boundary) and marked.
const LOG_MESSAGE_MAX: usize = 64 * 1024;

/// The worker's logger: sends each record to the parent, whose logger prints it (so `log`
/// calls in tasks show as they do on the thread pool). Installed after the initializer, unless
/// the initializer installed a logger of its own, and with the parent's level as the worker's
/// `log::max_level()`, so a disabled level costs a task one comparison, as in the parent.
struct Forward {
    outbox: Arc<Outbox>,
}

thread_local! {
    /// This thread is inside [`Forward::log`]: a record logged while formatting another (a
    /// `Display` that logs) is dropped rather than recursing.
    static FORWARDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || FORWARDING.with(|f| f.replace(true)) {
            return;
        }
        /// Clears the flag however this call ends: a `Display` that panics while the message
        /// is formatted must not silence this thread's logging for good.
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                FORWARDING.with(|f| f.set(false));
            }
        }
        let _done = Done;
        let mut message = record.args().to_string();
        if message.len() > LOG_MESSAGE_MAX {
            let mut cut = LOG_MESSAGE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        let frame = protocol::log_record(&protocol::LogRecord {
            level: record.level(),
            target: record.target(),
            message: &message,
            file: record.file(),
            line: record.line(),
            module_path: record.module_path(),
        });
        self.outbox.try_send(&frame);
    }

    fn flush(&self) {}
}

/// Installs [`Forward`] with the parent's `level` (see [`protocol::Hello`]), unless a logger is
/// already installed (the initializer's own: it keeps its level and output).
fn forward_logs(outbox: &Arc<Outbox>, level: u8) {
    let filter = match level {
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        5 => log::LevelFilter::Trace,
        _ => log::LevelFilter::Off,
    };
    // Once per process, for the process's life: the logger must be `'static`.
    let forward: &'static Forward = Box::leak(Box::new(Forward {
        outbox: Arc::clone(outbox),
    }));
    if log::set_logger(forward).is_ok() {
        log::set_max_level(filter);
    }
}

/// A task received and not started yet.
struct Received {
    id: u64,
    fn_offset: i64,
    /// The frame it came in, and where its payload lies in it (payloads are not copied).
    frame: Arc<Vec<u8>>,
    payload: std::ops::Range<usize>,
    buffers: Result<Vec<Buffer>, String>,
}

impl Received {
    fn payload(&self) -> &[u8] {
        &self.frame[self.payload.clone()]
    }
}

/// Why reading stopped.
enum End {
    /// The parent said `Shutdown`: run what is queued, then exit.
    Shutdown,
    /// End of stream: the parent is gone; stop.
    Closed,
    /// A frame that does not decode, or a read error.
    Failed(io::Error),
}

/// Tasks received and not started, and the socket they come from, shared by the task thread
/// and the receiver (see the module docs for who reads when).
struct Inbox {
    state: Mutex<InboxState>,
    /// `state.tasks.len()`, readable without the lock.
    queued: AtomicUsize,
    /// The parent's socket; whoever holds this lock reads whole frames.
    input: Mutex<Input>,
}

#[derive(Default)]
struct InboxState {
    tasks: VecDeque<Received>,
    /// Set once; nobody reads after it.
    end: Option<End>,
}

struct Input {
    reader: BufReader<FdStream>,
    /// Frames read since the handshake (what a ring of the doorbell counts).
    frames: u64,
}

impl Inbox {
    fn new(reader: BufReader<FdStream>) -> Self {
        Inbox {
            state: Mutex::default(),
            queued: AtomicUsize::new(0),
            input: Mutex::new(Input { reader, frames: 0 }),
        }
    }

    fn push(&self, tasks: Vec<Received>) {
        let mut state = self.state.lock();
        state.tasks.extend(tasks);
        self.queued.store(state.tasks.len(), Ordering::Release);
    }

    fn finish(&self, end: End) {
        self.state.lock().end.get_or_insert(end);
    }

    fn ended(&self) -> bool {
        self.state.lock().end.is_some()
    }

    /// Every task not started yet.
    fn take_all(&self) -> VecDeque<Received> {
        let mut state = self.state.lock();
        self.queued.store(0, Ordering::Release);
        std::mem::take(&mut state.tasks)
    }

    fn is_empty(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0
    }

    /// The next task to run; `None` when the worker should stop. With nothing queued, this
    /// thread reads the socket itself (waiting, if the receiver is reading, for its frame).
    fn next(&self, outbox: &Outbox) -> io::Result<Option<Received>> {
        loop {
            {
                let mut state = self.state.lock();
                if matches!(state.end, Some(End::Closed)) {
                    return Ok(None);
                }
                if let Some(task) = state.tasks.pop_front() {
                    self.queued.store(state.tasks.len(), Ordering::Release);
                    return Ok(Some(task));
                }
                match state.end.take() {
                    Some(End::Failed(e)) => {
                        state.end = Some(End::Closed);
                        return Err(e);
                    }
                    Some(end) => {
                        state.end = Some(end);
                        return Ok(None);
                    }
                    None => {}
                }
            }
            let mut input = self.input.lock();
            // The receiver may have queued tasks or met the end while this thread waited.
            if self.is_empty() && !self.ended() {
                self.read_frame(&mut input, outbox);
            }
        }
    }

    /// Reads one frame and acts on it: queues its tasks, answers `Reclaim`, or records the end.
    fn read_frame(&self, input: &mut Input, outbox: &Outbox) {
        let body = match protocol::read_frame(&mut input.reader, MAX_FRAME, None) {
            Ok(Some(body)) => Arc::new(body),
            Ok(None) => return self.finish(End::Closed),
            Err(e) => return self.finish(End::Failed(e)),
        };
        input.frames += 1;
        shm::begin_frame(&mut input.reader);
        let kind = match Reader::new(&body) {
            Ok((kind, _)) => kind,
            Err(e) => return self.finish(End::Failed(io::Error::other(e))),
        };
        match kind {
            Kind::Tasks => match decode_tasks(&body, input.reader.get_mut()) {
                Ok(tasks) => self.push(tasks),
                Err(e) => return self.finish(End::Failed(e)),
            },
            Kind::Reclaim => {
                let tasks = self.take_all();
                let frame = protocol::returned(tasks.iter().map(|t| (t.id, t.payload())));
                // Dropping them hands their buffers' regions back.
                drop(tasks);
                outbox.send(&frame);
            }
            Kind::Shutdown => return self.finish(End::Shutdown),
            other => {
                return self.finish(End::Failed(io::Error::other(format!(
                    "unexpected {other:?} frame"
                ))))
            }
        }
        if let Err(e) = shm::end_of_frame(&mut input.reader) {
            self.finish(End::Failed(io::Error::other(e)));
        }
    }
}

/// The receiver thread: for each ring of the doorbell, reads the socket up to the frame rung
/// for (the task thread may have read it already). Ends with the doorbell (the parent closed
/// it, or died).
fn receive(mut doorbell: &Stream, inbox: &Inbox, outbox: &Outbox) {
    let mut ring = [0; 8];
    while doorbell.read_exact(&mut ring).is_ok() {
        let wanted = u64::from_le_bytes(ring);
        let mut input = inbox.input.lock();
        // The parent wrote frame `wanted` whole before ringing, so these reads do not wait
        // for bytes that are not coming.
        while input.frames < wanted && !inbox.ended() {
            inbox.read_frame(&mut input, outbox);
        }
    }
}

/// The tasks of a `Tasks` frame, with their attached buffers.
fn decode_tasks(body: &Arc<Vec<u8>>, stream: &mut FdStream) -> io::Result<Vec<Received>> {
    let (_, mut r) = Reader::new(body).map_err(io::Error::other)?;
    // The parent is done with these regions: reusable for results.
    stream
        .peer()
        .release(&r.released().map_err(io::Error::other)?);
    let n = r.count(TASK_RECORD_MIN).map_err(io::Error::other)?;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let task = r.task().map_err(io::Error::other)?;
        let buffers = stream
            .import_all(&task.attached)
            .map_err(io::Error::other)?;
        // The payload is a slice of `body`: its offset there.
        let at = task.payload.as_ptr() as usize - body.as_ptr() as usize;
        tasks.push(Received {
            id: task.id,
            fn_offset: task.fn_offset,
            frame: Arc::clone(body),
            payload: at..at + task.payload.len(),
            buffers,
        });
    }
    r.end().map_err(io::Error::other)?;
    Ok(tasks)
}

/// Runs received tasks in order until `Shutdown` (after the queue), end of stream, or
/// `max_tasks`.
fn run_tasks(inbox: &Inbox, outbox: &Outbox, max_tasks: u64) -> io::Result<()> {
    let peer = Arc::clone(&outbox.peer);
    // A result's large byte strings are encoded straight into regions lent to the parent.
    let place = |bytes: &[u8]| shm::place(&peer, bytes);
    let mut done: u64 = 0;
    while let Some(task) = inbox.next(outbox)? {
        outbox.arm();
        let started = Instant::now();
        let Received {
            id,
            fn_offset,
            frame,
            payload,
            buffers,
        } = task;
        // Every earlier result is safe by now (`Outbox::push`), so should this task kill the
        // process, the parent knows that the tasks it still held after this one never started.
        outbox.blackbox.lock().starting(id);
        let outcome = sys::trampoline_at(fn_offset)(&frame[payload], buffers, &place);
        drop(frame);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (ok, bytes, attached) = match outcome {
            Ok((bytes, attached)) => (true, bytes, attached),
            Err(e) => (
                false,
                encode(&e, CodecStage::SerializeResult, &|_| None)
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
                id,
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
        if inbox.is_empty() {
            // Nothing more to run right now: send what is buffered without waiting.
            outbox.flush();
        }
    }
    Ok(())
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
