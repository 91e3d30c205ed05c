//! For transports that carry tasks beyond one machine (such as `cf-pool-cluster`): how a task
//! is named and encoded on the submitting side, and how a process of the same build runs such a
//! task on a local [`ProcessPoolExecutor`] and hands back the encoded outcome.
//!
//! The process pool names a task by the offset of its monomorphised trampoline (see the
//! [crate documentation](crate)); that offset means the same function in every process that
//! runs the *same build* of the executable, on this machine or another. A transport therefore
//! sends three things: the [`TaskCode`], the [`Encoded`] argument, and the sender's
//! [`build_id`], and the receiver runs the code only if its own `build_id` is the same.
//!
//! ```text
//!  client                                   node (same executable, same build_id)
//!  task_code(f), encode_argument(&a) ──►    pool.submit_encoded(code, encoded, limit)
//!  decode_result::<R>(outcome)       ◄──    Future<Encoded> (or a TaskError)
//! ```
//!
//! # Trust
//!
//! Whoever can hand a [`TaskCode`] to [`ProcessPoolExecutor::submit_encoded`] can run any code
//! of this executable in a worker process: a worker jumps to the offset it is given. The local
//! pool gets offsets only from its own process; a transport must get them from peers it trusts
//! (for a cluster: whoever may publish to its task subjects), and must compare [`build_id`]s
//! first. An offset from another build lands in arbitrary code of the worker process; at worst
//! that worker dies or returns garbage, the calling process is not affected.
//!
//! # Examples
//!
//! ```
//! use cf_pool_proc::transport::{build_id, decode_result, encode_argument, task_code};
//! use cf_pool_proc::ProcessPoolExecutor;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! // The submitting side (here the same process, in a cluster another machine).
//! let code = task_code(square);
//! let argument = encode_argument(&7u64).unwrap();
//! let sender_build = build_id().unwrap().to_owned();
//!
//! // The running side checks the build, then runs the raw task on its local pool.
//! assert_eq!(build_id().unwrap(), sender_build);
//! let pool = ProcessPoolExecutor::builder().max_workers(1).build().unwrap();
//! let outcome = pool.submit_encoded(code, argument, None).unwrap();
//! let outcome = outcome.try_unwrap().unwrap_or_else(|_| unreachable!("the only handle"));
//!
//! // Back on the submitting side.
//! assert_eq!(decode_result::<u64>(outcome), Ok(49));
//! ```

use std::fmt;
use std::io::Read;
use std::sync::OnceLock;
use std::time::Duration;

use cf_executor_api::{
    codec, panic_message, Buffer, CodecStage, Future, Payload, Promise, SubmitError, Task,
    TaskError,
};
use serde::{Deserialize, Serialize};

use crate::executor::{ProcessPoolBuilder, ProcessPoolExecutor};
use crate::task::{encode, trampoline_offset_unchecked, Completion};

/// The name of a task's code (or of an initializer) in every process of the same build: an
/// offset from a fixed function of the executable.
///
/// Only meaningful together with the [`build_id`] of the process that made it.
///
/// # Examples
///
/// ```
/// fn double(x: i32) -> i32 {
///     2 * x
/// }
/// let code = cf_pool_proc::transport::task_code(double);
/// assert_eq!(code, cf_pool_proc::transport::TaskCode::from_raw(code.to_raw()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskCode(i64);

impl TaskCode {
    /// The offset, for a transport's wire format.
    #[must_use]
    pub fn to_raw(self) -> i64 {
        self.0
    }

    /// Back from [`to_raw`](Self::to_raw), as received from a peer of the same build.
    #[must_use]
    pub fn from_raw(raw: i64) -> Self {
        TaskCode(raw)
    }
}

/// The code that runs `f` (decoding `A`, encoding `R`) in a worker of this build.
///
/// `f` must be a fn item or a closure that captures nothing; anything else fails to compile,
/// as for [`submit`](cf_executor_api::Executor::submit).
#[must_use]
pub fn task_code<F, A, R>(f: F) -> TaskCode
where
    F: Task<A, R>,
    A: Payload,
    R: Payload,
{
    TaskCode(trampoline_offset_unchecked(f))
}

/// The code of a worker initializer, for [`ProcessPoolBuilder::initializer_code`].
///
/// # Examples
///
/// ```
/// fn init() -> Result<(), String> {
///     Ok(())
/// }
/// let code = cf_pool_proc::transport::initializer_code(init);
/// let pool = cf_pool_proc::ProcessPoolExecutor::builder().initializer_code(code).build().unwrap();
/// # drop(pool);
/// ```
#[must_use]
pub fn initializer_code(f: fn() -> Result<(), String>) -> TaskCode {
    TaskCode(crate::sys::offset_unchecked(f as usize))
}

/// This executable's build identity: the SHA-256 of the running executable's content, in hex.
///
/// Two processes with the same `build_id` run byte-identical executables, so a [`TaskCode`]
/// means the same function in both, on any machine. Unlike the local pool's handshake (device
/// and inode), it means something across machines. Computed once (the executable is read
/// through `/proc/self/exe`, the running image even if the file was replaced since) and cached.
///
/// # Errors
///
/// Why `/proc/self/exe` could not be read.
pub fn build_id() -> Result<&'static str, String> {
    static ID: OnceLock<Result<String, String>> = OnceLock::new();
    ID.get_or_init(|| hash_executable().map_err(|e| format!("cannot read /proc/self/exe: {e}")))
        .as_deref()
        .map_err(Clone::clone)
}

fn hash_executable() -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open("/proc/self/exe")?;
    let mut hasher = sha2::Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// An encoded argument or result, as [`cf_executor_api::codec`] writes it: the payload's
/// bytes, and the large [`Buffer`]s and byte strings it carries out of band, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The payload's encoding ([`cf_executor_api::codec::encode`]).
    pub bytes: Vec<u8>,
    /// The buffers the payload attached; a transport sends them as it likes, in this order.
    pub buffers: Vec<Buffer>,
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field("bytes", &self.bytes.len())
            .field(
                "buffers",
                &self.buffers.iter().map(|b| b.len()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Encodes a task's argument as the process pool does (a failing or panicking `Serialize` is
/// a `Codec` error).
///
/// # Errors
///
/// [`TaskError::Codec`] with [`CodecStage::SerializeArgument`].
pub fn encode_argument<A: Payload>(arg: &A) -> Result<Encoded, TaskError> {
    encode(arg, CodecStage::SerializeArgument, &|_| None).map(|(bytes, buffers)| Encoded { bytes, buffers })
}

/// Decodes a task's outcome as sent back by [`ProcessPoolExecutor::submit_encoded`] on the
/// running side; errors pass through.
///
/// # Errors
///
/// The task's own [`TaskError`], or [`TaskError::Codec`] with
/// [`CodecStage::DeserializeResult`] if the bytes are not an `R`.
pub fn decode_result<R: Payload>(outcome: Result<Encoded, TaskError>) -> Result<R, TaskError> {
    let Encoded { bytes, buffers } = outcome?;
    let codec = |message| TaskError::Codec {
        stage: CodecStage::DeserializeResult,
        message,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        codec::decode::<R>(&bytes, buffers)
    })) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(codec(e.to_string())),
        Err(p) => Err(codec(format!(
            "Deserialize panicked: {}",
            panic_message(p.as_ref())
        ))),
    }
}

/// Completes a `Future<Encoded>` with the raw record a worker sent.
struct RawCompletion(Promise<Encoded>);

impl Completion for RawCompletion {
    fn start(&self) -> bool {
        self.0.set_running_or_notify_cancel()
    }

    fn cancel(&self) -> bool {
        self.0.cancel()
    }

    fn cancel_unstarted(&self) -> bool {
        self.0.cancel_unstarted()
    }

    fn has_callbacks(&self) -> bool {
        self.0.has_done_callbacks()
    }

    fn finish(self: Box<Self>, ok: bool, bytes: &[u8], buffers: Result<Vec<Buffer>, String>) {
        let outcome = if ok {
            buffers
                .map(|buffers| Encoded {
                    bytes: bytes.to_vec(),
                    buffers,
                })
                .map_err(|message| TaskError::Codec {
                    stage: CodecStage::SerializeResult,
                    message,
                })
        } else {
            Err(
                postcard::from_bytes::<TaskError>(bytes).unwrap_or_else(|e| TaskError::Broken {
                    reason: format!("a worker sent an undecodable error record ({e})"),
                }),
            )
        };
        let _ = self.0.set_outcome(outcome);
    }

    fn fail(self: Box<Self>, error: TaskError) {
        let _ = self.0.set_error(error);
    }
}

impl ProcessPoolExecutor {
    /// Runs a task that another process of the same build encoded ([`task_code`],
    /// [`encode_argument`]); its future holds the encoded result for [`decode_result`] there.
    ///
    /// Everything else is as for [`submit`](cf_executor_api::Executor::submit) (with `limit`,
    /// as [`submit_with_timeout`](Self::submit_with_timeout)): a panic, a dead worker or an
    /// overrun limit fail the future with the same [`TaskError`]s.
    ///
    /// The caller must have checked that the sender's [`build_id`] is this process's; see the
    /// [module documentation](self) for what an offset from elsewhere does.
    ///
    /// # Errors
    ///
    /// As [`submit`](cf_executor_api::Executor::submit);
    /// [`SubmitError::InvalidArgument`] for a zero `limit`.
    pub fn submit_encoded(
        &self,
        code: TaskCode,
        argument: Encoded,
        limit: Option<Duration>,
    ) -> Result<Future<Encoded>, SubmitError> {
        if limit.is_some_and(|l| l.is_zero()) {
            return Err(SubmitError::InvalidArgument {
                name: "limit",
                message: "a task's time limit must be longer than zero".into(),
            });
        }
        // Code outside the executable's image cannot be proven the same in a worker.
        crate::sys::check_code_offset(code.0).map_err(|message| SubmitError::InvalidArgument {
            name: "code",
            message,
        })?;
        let promise = Promise::new();
        let future = promise.future();
        let completion: Box<dyn Completion> = Box::new(RawCompletion(promise));
        let limit = limit.or(self.pool.config.task_timeout);
        self.pool.enqueue(
            code.0,
            limit,
            std::iter::once((Ok((argument.bytes, argument.buffers)), completion)),
        )?;
        Ok(future)
    }
}

impl ProcessPoolBuilder {
    /// Like [`initializer`](Self::initializer), with the code a peer of the same build sent
    /// ([`initializer_code`]).
    #[must_use]
    pub fn initializer_code(self, code: TaskCode) -> Self {
        self.initializer_offset(code.0)
    }
}
