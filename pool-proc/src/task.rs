//! What a task is on each side: the monomorphised trampoline the worker runs, and the
//! type-erased completion the parent holds until the result comes back.

use std::panic::{catch_unwind, AssertUnwindSafe};

use cf_executor_api::{
    call_catching, codec, panic_message, Buffer, CodecStage, Payload, Promise, SubmitError, Task,
    TaskError,
};

use crate::{shm, sys};

/// The largest payload a single task or result may have (the frame length is a `u32`).
pub(crate) const MAX_PAYLOAD: usize = u32::MAX as usize - 1024;

/// The offset that names `trampoline::<F, A, R>` in any process running this executable;
/// refused if that code is not in the executable's own image (see [`sys::offset_of`]).
pub(crate) fn trampoline_offset<F, A, R>(f: F) -> Result<i64, SubmitError>
where
    F: Task<A, R>,
    A: Payload,
    R: Payload,
{
    let offset = trampoline_offset_unchecked(f);
    sys::check_code_offset(offset).map_err(|message| SubmitError::InvalidArgument {
        name: "task",
        message,
    })?;
    Ok(offset)
}

/// The offset that names `trampoline::<F, A, R>`, not yet checked to lie in the executable
/// (a transport's [`TaskCode`](crate::transport::TaskCode) is checked when submitted).
pub(crate) fn trampoline_offset_unchecked<F, A, R>(_: F) -> i64
where
    F: Task<A, R>,
    A: Payload,
    R: Payload,
{
    // A task that captures variables fails the build here, with the message every path shares.
    let () = cf_executor_api::CapturesNothing::<F>::OK;
    let t: sys::Trampoline = trampoline::<F, A, R>;
    sys::offset_unchecked(t as usize)
}

fn codec(stage: CodecStage, message: String) -> TaskError {
    TaskError::Codec { stage, message }
}

/// Runs in the worker: decode `A` (with its attached buffers), call the task, encode `R`
/// (large byte strings straight into the regions `place` gives, see [`shm::place`]).
/// Every failure, including a panicking `Deserialize` or `Serialize` and a buffer the parent
/// could not send, becomes a `TaskError` for this task only.
fn trampoline<F, A, R>(
    input: &[u8],
    buffers: Result<Vec<Buffer>, String>,
    place: codec::Place<'_>,
) -> Result<(Vec<u8>, Vec<Buffer>), TaskError>
where
    F: Task<A, R>,
    A: Payload,
    R: Payload,
{
    let buffers = buffers.map_err(|why| codec(CodecStage::SerializeArgument, why))?;
    let arg: A = match catch_unwind(AssertUnwindSafe(|| {
        codec::decode_copying(input, buffers, sys::copy_to_vec)
    })) {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(codec(CodecStage::DeserializeArgument, e.to_string())),
        Err(p) => {
            return Err(codec(
                CodecStage::DeserializeArgument,
                format!("Deserialize panicked: {}", panic_message(p.as_ref())),
            ))
        }
    };
    let f: F = sys::conjure::<F>();
    let value = call_catching(move || f(arg))?;
    encode(&value, CodecStage::SerializeResult, place)
}

/// Encodes a payload and the large [`Buffer`]s it attaches (its large byte strings copied
/// where `place` says, see [`codec::encode_placing`]), turning errors and panics of its
/// `Serialize` into `Codec` errors.
pub(crate) fn encode<T: serde::Serialize>(
    value: &T,
    stage: CodecStage,
    place: codec::Place<'_>,
) -> Result<(Vec<u8>, Vec<Buffer>), TaskError> {
    let encoded = catch_unwind(AssertUnwindSafe(|| {
        codec::encode_placing(value, shm::POLICY, place)
    }));
    match encoded {
        Ok(Ok((bytes, buffers))) if bytes.len() <= MAX_PAYLOAD => Ok((bytes, buffers)),
        Ok(Ok((bytes, _))) => Err(codec(
            stage,
            format!(
                "{} bytes is over the {MAX_PAYLOAD}-byte limit of one message; split the work, \
                 or put bulk bytes in a cf_executor_api::Buffer (it travels in shared memory)",
                bytes.len()
            ),
        )),
        Ok(Err(e)) => Err(codec(stage, e.to_string())),
        Err(p) => Err(codec(
            stage,
            format!("Serialize panicked: {}", panic_message(p.as_ref())),
        )),
    }
}

/// The parent's side of one in-flight task, with the result type erased.
pub(crate) trait Completion: Send {
    /// Pending -> running; `false` if the future was cancelled (drop the task).
    fn start(&self) -> bool;
    /// Cancels if not started.
    fn cancel(&self) -> bool;
    /// Cancels a task marked running that a worker gave back unstarted (see
    /// `Promise::cancel_unstarted`); `false` if it is finished.
    fn cancel_unstarted(&self) -> bool;
    /// Done-callbacks are attached (they will run in the completing thread).
    fn has_callbacks(&self) -> bool;
    /// Completes from a worker's record: `ok` bytes are an encoded `R` (with the buffers it
    /// attached, or why the worker could not send them), else a `TaskError`.
    fn finish(self: Box<Self>, ok: bool, bytes: &[u8], buffers: Result<Vec<Buffer>, String>);
    /// Fails the future.
    fn fail(self: Box<Self>, error: TaskError);
    /// Workers that died holding this task before it started (see `crate::slot`).
    fn deaths(&self) -> u8 {
        0
    }
}

impl<R: Payload + Sync> Completion for Promise<R> {
    fn start(&self) -> bool {
        self.set_running_or_notify_cancel()
    }

    fn cancel(&self) -> bool {
        Promise::cancel(self)
    }

    fn cancel_unstarted(&self) -> bool {
        Promise::cancel_unstarted(self)
    }

    fn has_callbacks(&self) -> bool {
        self.has_done_callbacks()
    }

    fn finish(self: Box<Self>, ok: bool, bytes: &[u8], buffers: Result<Vec<Buffer>, String>) {
        let outcome = if ok {
            let decoded = buffers.map(|buffers| {
                catch_unwind(AssertUnwindSafe(|| codec::decode::<R>(bytes, buffers)))
            });
            match decoded {
                Err(why) => Err(codec(CodecStage::SerializeResult, why)),
                Ok(Ok(Ok(v))) => Ok(v),
                Ok(Ok(Err(e))) => Err(codec(CodecStage::DeserializeResult, e.to_string())),
                Ok(Err(p)) => Err(codec(
                    CodecStage::DeserializeResult,
                    format!("Deserialize panicked: {}", panic_message(p.as_ref())),
                )),
            }
        } else {
            Err(
                postcard::from_bytes::<TaskError>(bytes).unwrap_or_else(|e| TaskError::Broken {
                    reason: format!("a worker sent an undecodable error record ({e})"),
                }),
            )
        };
        if let Err(e) = self.set_outcome(outcome) {
            guarded!(debug!("result for a task that is already {}", e.state));
        }
    }

    fn fail(self: Box<Self>, error: TaskError) {
        let _ = self.set_error(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large byte string goes out of band wherever it is and whatever type wrote it; a small
    /// one stays in the payload; and the worker's decode gets the bytes back.
    #[test]
    fn large_byte_strings_are_attached_small_ones_inline() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Image {
            name: String,
            #[serde(with = "serde_bytes")]
            pixels: Vec<u8>,
            thumbnail: serde_bytes::ByteBuf,
        }
        let image = Image {
            name: "x".into(),
            pixels: vec![7; shm::POLICY.min_len],
            thumbnail: serde_bytes::ByteBuf::from(vec![1; shm::POLICY.min_len - 1]),
        };
        let (bytes, buffers) = encode(&image, CodecStage::SerializeArgument, &|_| None).unwrap();
        assert_eq!(buffers.len(), 1);
        assert_eq!(buffers[0].len(), shm::POLICY.min_len);
        assert!(bytes.len() < shm::POLICY.min_len + 64);
        let back: Image = codec::decode(&bytes, buffers).unwrap();
        assert_eq!(back, image);
    }
}
