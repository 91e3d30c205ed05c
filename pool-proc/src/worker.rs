//! The worker process: handshake, optional initializer, then a loop that runs task batches and
//! sends results back. Single-threaded: it reads a frame, runs its tasks in order, and writes
//! results, batching them while tasks are quick.
//!
//! It ends when the parent says `Shutdown`, when the socket closes (the parent died: the
//! lifeline), after `max_tasks_per_child` tasks, or by `SIGKILL` from `PR_SET_PDEATHSIG`.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use cf_executor_api::{call_catching, CodecStage};

use crate::protocol::{self, FrameBuf, Kind, Reader, ResultFrame, MAX_FRAME, TASK_RECORD_MIN};
use crate::sys;
use crate::task::encode;

/// Flush buffered results once this many bytes are waiting...
const FLUSH_BYTES: usize = 64 * 1024;
/// ...or the oldest has waited this long.
const FLUSH_AFTER: Duration = Duration::from_millis(1);

static IS_WORKER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `true` inside a worker process of a [`ProcessPoolExecutor`](crate::ProcessPoolExecutor).
///
/// # Examples
///
/// ```
/// assert!(!cf_pool_proc::is_worker());
/// ```
#[must_use]
pub fn is_worker() -> bool {
    IS_WORKER.load(std::sync::atomic::Ordering::Relaxed)
}

/// Serves on `socket` until told to stop, then exits the process.
pub(crate) fn run(socket: UnixStream) -> ! {
    IS_WORKER.store(true, std::sync::atomic::Ordering::Relaxed);
    sys::ignore_sigpipe();
    let code = match serve(socket) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cf-pool-proc worker {}: {e}", std::process::id());
            70
        }
    };
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    std::process::exit(code)
}

struct Batch {
    frame: FrameBuf,
    count: u32,
    since: Option<Instant>,
}

impl Batch {
    fn new() -> Self {
        let mut frame = FrameBuf::new(Kind::Results);
        frame.u32(0);
        Batch {
            frame,
            count: 0,
            since: None,
        }
    }

    fn flush(&mut self, out: &mut UnixStream) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let full = std::mem::replace(self, Batch::new());
        let mut bytes = full.frame.finish();
        bytes[5..9].copy_from_slice(&full.count.to_le_bytes());
        protocol::write_frame(out, &bytes)
    }
}

fn serve(socket: UnixStream) -> io::Result<()> {
    let mut out = socket.try_clone()?;
    let mut input = BufReader::with_capacity(256 * 1024, socket);

    let Some(body) = protocol::read_frame(&mut input, MAX_FRAME)? else {
        return Ok(());
    };
    let hello = match Reader::new(&body) {
        Ok((Kind::Hello, mut r)) => r.hello().map_err(io::Error::other)?,
        _ => return Err(io::Error::other("the first frame was not a Hello")),
    };
    if let Err(why) = check_identity(&hello) {
        protocol::write_frame(&mut out, &protocol::init_failed(&why))?;
        return Ok(());
    }
    if hello.init_offset != 0 {
        let init = sys::initializer_at(hello.init_offset);
        let failure = match call_catching(init) {
            Ok(Ok(())) => None,
            Ok(Err(message)) => Some(message),
            Err(panic) => Some(panic.to_string()),
        };
        if let Some(message) = failure {
            protocol::write_frame(&mut out, &protocol::init_failed(&message))?;
            return Ok(());
        }
    }
    protocol::write_frame(&mut out, &protocol::ready(std::process::id()))?;

    let mut done: u64 = 0;
    let mut batch = Batch::new();
    loop {
        let Some(body) = protocol::read_frame(&mut input, MAX_FRAME)? else {
            return Ok(());
        };
        let (kind, mut r) = Reader::new(&body).map_err(io::Error::other)?;
        match kind {
            Kind::Tasks => {
                let n = r.count(TASK_RECORD_MIN).map_err(io::Error::other)?;
                for _ in 0..n {
                    let task = r.task().map_err(io::Error::other)?;
                    let started = Instant::now();
                    let outcome = sys::trampoline_at(task.fn_offset)(task.payload);
                    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let (ok, bytes) = match outcome {
                        Ok(bytes) => (true, bytes),
                        Err(e) => (
                            false,
                            encode(&e, CodecStage::SerializeResult).unwrap_or_default(),
                        ),
                    };
                    protocol::push_result(
                        &mut batch.frame,
                        &ResultFrame {
                            id: task.id,
                            nanos,
                            ok,
                            bytes: &bytes,
                        },
                    );
                    batch.count += 1;
                    let since = *batch.since.get_or_insert(started);
                    done += 1;
                    if hello.max_tasks != 0 && done >= hello.max_tasks {
                        batch.flush(&mut out)?;
                        return Ok(());
                    }
                    if batch.frame.len() >= FLUSH_BYTES || since.elapsed() >= FLUSH_AFTER {
                        batch.flush(&mut out)?;
                    }
                }
                r.end().map_err(io::Error::other)?;
                batch.flush(&mut out)?;
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
