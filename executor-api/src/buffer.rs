//! [`Buffer`]: immutable bytes that a process pool moves through shared memory.
//!
//! Python's answer to large payloads is pickle protocol 5's out-of-band buffers
//! (`PickleBuffer`): the pickle stream holds a reference, and the bytes travel beside it. A
//! [`Buffer`] is the same idea for serde. Inside an ordinary `Serialize` call it is a plain byte
//! string (so JSON, postcard or any other format sees bytes), but while a transport
//! [attaches](attaching) buffers, a large one is written as a small reference and the buffer
//! itself is handed to the transport, which moves it by its own means (`cf-pool-proc` copies it
//! into a shared-memory region whose descriptor crosses the worker's socket, and the worker
//! reads it there: no per-byte encoding, no socket). On the receiving side the transport
//! supplies the buffers ([`attached`]) and each reference becomes the buffer again.
//!
//! A thread pool never serializes, so a `Buffer` costs there what an `Arc<Vec<u8>>` costs.
//!
//! The payload [`codec`](crate::codec) attaches byte strings the same way, through the same
//! [`attaching`] and [`attached`] calls: a large `serialize_bytes` becomes a `Buffer` (one copy,
//! into the transport's own memory if it offers some) and shares the attachments' numbering
//! with the `Buffer`s of the payload.
//!
//! # The wire form
//!
//! `Buffer` serializes as an enum `{ Inline(bytes), Attached(u32) }`. `Attached(i)` is the
//! `i`-th buffer handed to the transport during that one encode; it never appears outside an
//! [`attaching`] call, and decoding it outside [`attached`] is an error, not a panic.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What can own a [`Buffer`]'s bytes: a `Vec<u8>`, a memory map, a transport's shared segment.
trait Owner: Send + Sync + 'static {
    fn bytes(&self) -> &[u8];
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: AsRef<[u8]> + Send + Sync + 'static> Owner for T {
    fn bytes(&self) -> &[u8] {
        self.as_ref()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// Immutable, cheaply cloned bytes that a process pool sends through shared memory.
///
/// Use it for large byte payloads (images, columns, compressed blobs) in a task's argument or
/// result, alone or inside your own `Serialize` types. In `cf-pool-proc`, a `Buffer` of 64 KiB
/// or more skips serde and the socket: it is copied into a shared-memory region that the pool
/// reuses from task to task, where the worker reads it in place (a result is copied out into
/// the parent's memory), so it moves at memory speed.
///
/// Byte strings as serde writes them (`serde_bytes::ByteBuf`, `#[serde(with = "serde_bytes")]`
/// fields, `bytes::Bytes` with its `serde` feature) take the same road with no change to your
/// types: the process pool's payload codec ([`codec`](crate::codec)) copies each large one
/// straight into the pool's shared memory on the way out (or into a `Buffer`, where the pool
/// has no region to offer) and hands it to the receiving type as its own `Vec` on the way in:
/// one copy more than a `Buffer` where the receiver would have read in place. A plain `Vec<u8>`, by contrast, is a sequence to
/// serde, encoded one element at a time, and crosses the socket: tens of times slower at 16 MiB
/// (see `benches/README.md`). Add `#[serde(with = "serde_bytes")]` to such a field, or use
/// `Buffer`.
///
/// Cloning shares the bytes (an `Arc`); [`into_vec`](Buffer::into_vec) gives them back without
/// a copy when this is the only handle to a `Buffer` made from a `Vec`.
///
/// # For transports
///
/// Python's answer to large payloads is pickle protocol 5's out-of-band buffers; this is the
/// same idea for serde. A `Buffer` serializes as an enum `{ Inline(bytes), Attached(u32) }`.
/// Outside a transport it is always `Inline`, so JSON, postcard or any other format sees plain
/// bytes. Inside [`attaching`], a buffer the [`AttachPolicy`] accepts is written as
/// `Attached(i)` and handed to the transport, which moves it by its own means; the receiver
/// decodes inside [`attached`] with the same buffers, in order. Decoding `Attached` anywhere
/// else is an error, not a panic.
///
/// # Examples
///
/// ```
/// use cf_executor_api::Buffer;
///
/// let image = Buffer::from(vec![7u8; 1 << 20]);
/// let copy = image.clone(); // shares the bytes
/// assert_eq!(copy.len(), 1 << 20);
/// assert_eq!(image[0], 7);
/// drop(copy);
/// let bytes: Vec<u8> = image.into_vec(); // the original Vec, not a copy
/// assert_eq!(bytes.len(), 1 << 20);
/// ```
#[derive(Clone)]
pub struct Buffer {
    owner: Arc<dyn Owner>,
}

impl Buffer {
    /// An empty buffer.
    #[must_use]
    pub fn new() -> Self {
        Buffer::from(Vec::new())
    }

    /// A buffer over bytes that `owner` keeps alive, without copying them: a memory map, a
    /// `bytes::Bytes`, a `Box<[u8]>`.
    ///
    /// ```
    /// use cf_executor_api::Buffer;
    /// let b = Buffer::from_owner(Box::<[u8]>::from(&b"abc"[..]));
    /// assert_eq!(&*b, b"abc");
    /// ```
    pub fn from_owner<T: AsRef<[u8]> + Send + Sync + 'static>(owner: T) -> Self {
        Buffer {
            owner: Arc::new(owner),
        }
    }

    /// The bytes as a `Vec`: the original one, without a copy, if this buffer was made from a
    /// `Vec<u8>` and no clone of it is alive; otherwise a copy.
    #[must_use]
    pub fn into_vec(self) -> Vec<u8> {
        self.try_into_owner::<Vec<u8>>()
            .unwrap_or_else(|shared| shared.to_vec())
    }

    /// The owner this buffer was made from ([`Buffer::from_owner`], or `From<Vec<u8>>`), if it
    /// is a `T`. For transports that place bytes in memory of their own and look for it.
    ///
    /// ```
    /// use cf_executor_api::Buffer;
    /// let b = Buffer::from(vec![1u8, 2]);
    /// assert_eq!(b.owner::<Vec<u8>>(), Some(&vec![1, 2]));
    /// assert!(b.owner::<Box<[u8]>>().is_none());
    /// ```
    #[must_use]
    pub fn owner<T: AsRef<[u8]> + Send + Sync + 'static>(&self) -> Option<&T> {
        self.owner.as_any().downcast_ref::<T>()
    }

    /// The owner this buffer was made from ([`Buffer::from_owner`], or `From<Vec<u8>>`), if it
    /// is a `T` and this is the only handle to it (no clone is alive); otherwise the buffer,
    /// unchanged. For transports that place bytes in memory of their own and want it back.
    ///
    /// ```
    /// use cf_executor_api::Buffer;
    /// let b = Buffer::from_owner(Box::<[u8]>::from(&b"abc"[..]));
    /// let b = b.try_into_owner::<Vec<u8>>().unwrap_err(); // not a Vec
    /// let keep = b.clone();
    /// let b = b.try_into_owner::<Box<[u8]>>().unwrap_err(); // shared
    /// drop(keep);
    /// assert_eq!(&*b.try_into_owner::<Box<[u8]>>().unwrap(), b"abc");
    /// ```
    ///
    /// # Errors
    ///
    /// The buffer itself, if its owner is not a `T` or is shared with a clone.
    pub fn try_into_owner<T: AsRef<[u8]> + Send + Sync + 'static>(self) -> Result<T, Buffer> {
        if !self.owner.as_any().is::<T>() {
            return Err(self);
        }
        match self.owner.into_any().downcast::<T>() {
            Ok(owner) => Arc::try_unwrap(owner).map_err(|shared| Buffer { owner: shared }),
            Err(_) => unreachable!("the owner was just checked to be a T"),
        }
    }
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer::new()
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.owner.bytes()
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::borrow::Borrow<[u8]> for Buffer {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Self {
        Buffer::from_owner(v)
    }
}

impl From<&[u8]> for Buffer {
    fn from(v: &[u8]) -> Self {
        Buffer::from(v.to_vec())
    }
}

impl From<Buffer> for Vec<u8> {
    fn from(b: Buffer) -> Self {
        b.into_vec()
    }
}

impl PartialEq for Buffer {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Buffer {}

impl PartialEq<[u8]> for Buffer {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u8>> for Buffer {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == **other
    }
}

impl Hash for Buffer {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 16;
        let head = &self[..self.len().min(SHOWN)];
        write!(f, "Buffer({} bytes: {head:02x?}", self.len())?;
        if self.len() > SHOWN {
            f.write_str("…")?;
        }
        f.write_str(")")
    }
}

/// How a transport wants buffers attached: which are worth it, and how many per encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachPolicy {
    /// Buffers shorter than this stay inline (a side channel has a fixed cost).
    pub min_len: usize,
    /// At most this many buffers are attached per encode; later ones stay inline.
    pub max_count: usize,
}

thread_local! {
    /// Set while [`attaching`] runs: the policy and the buffers attached so far.
    static SINK: RefCell<Option<(AttachPolicy, Vec<Buffer>)>> = const { RefCell::new(None) };
    /// Set while [`attached`] runs: the buffers that `Attached(i)` refers to.
    /// Each is taken by the one reference to it, so a decoded value owns its buffer alone.
    static SOURCE: RefCell<Option<Vec<Option<Buffer>>>> = const { RefCell::new(None) };
}

/// Restores a thread-local slot when an encode or decode ends, even by panic, so nesting and
/// unwinding leave it as it was.
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    previous: Option<Option<T>>,
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        // `None` once the normal path has restored the slot itself.
        if let Some(previous) = self.previous.take() {
            self.key.with(|slot| *slot.borrow_mut() = previous);
        }
    }
}

/// Runs `encode` (a serde serialization on this thread) with buffer attachment on: every
/// [`Buffer`] it serializes that `policy` accepts is written as a reference and returned,
/// in order, beside `encode`'s result. For transports; see [`Buffer`]'s "For transports".
///
/// ```
/// use cf_executor_api::{attached, attaching, AttachPolicy, Buffer};
///
/// let value = (1u8, Buffer::from(vec![9; 100]), Buffer::from(vec![1, 2]));
/// let policy = AttachPolicy { min_len: 10, max_count: 8 };
/// let (bytes, buffers) = attaching(policy, || serde_json::to_vec(&value).unwrap());
/// assert_eq!(buffers.len(), 1); // the short one stayed inline
/// assert!(bytes.len() < 40);
///
/// let back: (u8, Buffer, Buffer) =
///     attached(buffers, || serde_json::from_slice(&bytes).unwrap());
/// assert_eq!(back, value);
/// ```
pub fn attaching<R>(policy: AttachPolicy, encode: impl FnOnce() -> R) -> (R, Vec<Buffer>) {
    let previous = SINK.with(|s| s.borrow_mut().replace((policy, Vec::new())));
    let mut restore = Restore {
        key: &SINK,
        previous: Some(previous),
    };
    let out = encode();
    let previous = restore.previous.take().flatten();
    let (_, buffers) = SINK
        .with(|s| std::mem::replace(&mut *s.borrow_mut(), previous))
        .expect("attaching's slot is set while it runs");
    (out, buffers)
}

/// Runs `decode` (a serde deserialization on this thread) with the `buffers` that an
/// [`attaching`] encode returned, so each reference in the bytes becomes its buffer again.
pub fn attached<R>(buffers: Vec<Buffer>, decode: impl FnOnce() -> R) -> R {
    let buffers = buffers.into_iter().map(Some).collect();
    let previous = SOURCE.with(|s| s.borrow_mut().replace(buffers));
    let _restore = Restore {
        key: &SOURCE,
        previous: Some(previous),
    };
    decode()
}

/// `Serialize` side of the wire form, borrowing.
#[derive(Serialize)]
#[serde(rename = "Buffer")]
enum WireOut<'a> {
    Inline(#[serde(with = "serde_bytes")] &'a [u8]),
    Attached(u32),
}

/// `Deserialize` side of the wire form, owning.
#[derive(Deserialize)]
#[serde(rename = "Buffer")]
enum WireIn {
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    Attached(u32),
}

/// Attaches `len` bytes (made into a buffer by `make`, only if attached) to the [`attaching`]
/// call running on this thread, if there is one and its policy accepts them; the index to write
/// in their place.
pub(crate) fn attach(len: usize, make: impl FnOnce() -> Buffer) -> Option<u32> {
    SINK.with(|s| {
        let mut slot = s.borrow_mut();
        let (policy, list) = slot.as_mut()?;
        if len < policy.min_len.max(1) || list.len() >= policy.max_count {
            return None;
        }
        list.push(make());
        Some(u32::try_from(list.len() - 1).expect("max_count fits in u32"))
    })
}

/// Takes the buffer that `index` refers to in the [`attached`] call running on this thread
/// (a well-formed payload refers to each once).
pub(crate) fn attachment(index: u32) -> Result<Buffer, String> {
    SOURCE.with(|s| match s.borrow_mut().as_mut() {
        Some(list) => {
            let count = list.len();
            match list.get_mut(index as usize) {
                Some(slot) => slot.take().ok_or_else(|| {
                    format!("attached buffer {index} is referred to twice in one payload")
                }),
                None => Err(format!(
                    "attached buffer {index} is missing: only {count} came with this payload"
                )),
            }
        }
        None => {
            Err("an attached Buffer was decoded outside the transport that attached it".to_owned())
        }
    })
}

impl Serialize for Buffer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match attach(self.len(), || self.clone()) {
            Some(i) => WireOut::Attached(i).serialize(serializer),
            None => WireOut::Inline(self).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Buffer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match WireIn::deserialize(deserializer)? {
            WireIn::Inline(bytes) => Ok(Buffer::from(bytes)),
            WireIn::Attached(i) => attachment(i).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: AttachPolicy = AttachPolicy {
        min_len: 4,
        max_count: 2,
    };

    #[test]
    fn plain_serde_sees_bytes() {
        let b = Buffer::from(vec![1, 2, 3, 4, 5]);
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"Inline":[1,2,3,4,5]}"#);
        let back: Buffer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn attaching_respects_min_len_and_max_count() {
        let big = || Buffer::from(vec![7; 10]);
        let value = vec![big(), Buffer::from(vec![1]), big(), big()];
        let (json, list) = attaching(POLICY, || serde_json::to_string(&value).unwrap());
        assert_eq!(
            list.len(),
            2,
            "two attached, the third over max_count is inline"
        );
        assert!(json.contains(r#"{"Attached":0}"#) && json.contains(r#"{"Attached":1}"#));
        let back: Vec<Buffer> = attached(list, || serde_json::from_str(&json).unwrap());
        assert_eq!(back, value);
    }

    #[test]
    fn attached_outside_a_transport_or_missing_is_an_error_not_a_panic() {
        let err = serde_json::from_str::<Buffer>(r#"{"Attached":0}"#).unwrap_err();
        assert!(err.to_string().contains("outside the transport"), "{err}");
        let err = attached(vec![], || {
            serde_json::from_str::<Buffer>(r#"{"Attached":3}"#).unwrap_err()
        });
        assert!(err.to_string().contains("missing"), "{err}");
        let err = attached(vec![Buffer::from(vec![1; 9])], || {
            serde_json::from_str::<(Buffer, Buffer)>(r#"[{"Attached":0},{"Attached":0}]"#)
                .unwrap_err()
        });
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn slots_are_restored_after_nesting_and_panics() {
        let (inner, outer) = attaching(POLICY, || {
            let (_, inner) = attaching(POLICY, || serde_json::to_string(&Buffer::from(vec![0; 9])));
            let _ = serde_json::to_string(&Buffer::from(vec![1; 9]));
            inner
        });
        assert_eq!((inner.len(), outer.len()), (1, 1));
        assert_eq!(outer[0][0], 1);
        let caught = std::panic::catch_unwind(|| attaching(POLICY, || panic!("encode failed")));
        assert!(caught.is_err());
        // Nothing is attached any more on this thread.
        let json = serde_json::to_string(&Buffer::from(vec![2; 9])).unwrap();
        assert!(json.contains("Inline"));
    }

    #[test]
    fn into_vec_reuses_a_sole_vec_and_copies_otherwise() {
        let v = vec![5u8; 1000];
        let ptr = v.as_ptr();
        let back = Buffer::from(v).into_vec();
        assert_eq!(back.as_ptr(), ptr);
        let shared = Buffer::from(vec![6u8; 10]);
        let keep = shared.clone();
        assert_eq!(shared.into_vec(), keep.to_vec());
        let boxed = Buffer::from_owner(Box::<[u8]>::from(&[1u8, 2][..]));
        assert_eq!(boxed.into_vec(), [1, 2]);
    }

    #[test]
    fn debug_shows_length_and_a_prefix() {
        let s = format!("{:?}", Buffer::from(vec![0xab; 40]));
        assert!(s.starts_with("Buffer(40 bytes: [ab, ab"), "{s}");
        assert!(s.ends_with("…)"), "{s}");
    }
}
