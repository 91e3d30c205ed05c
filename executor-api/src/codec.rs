//! The payload encoding of cf's transports: postcard, with large byte strings out of band.
//!
//! A task's argument and result cross a process boundary as [`encode`] writes them and
//! [`decode`] reads them. The format is [postcard](https://docs.rs/postcard)'s (compact, not
//! self-describing) with one change: **every byte string** (whatever reaches serde's
//! `serialize_bytes`: `serde_bytes::ByteBuf` and `Bytes`, `#[serde(with = "serde_bytes")]`
//! fields, `bytes::Bytes` with its `serde` feature, a small [`Buffer`]) is written with a one-byte
//! tag. Short ones follow inline; one the [`AttachPolicy`] accepts is copied once into a
//! [`Buffer`] that the transport moves by its own means (a process pool: shared memory), and the
//! payload holds only its index, as for a large [`Buffer`]. A transport that has memory of its
//! own for such bytes ([`encode_placing`]: a process pool's shared-memory region) has them
//! copied straight there, so that one copy is the only one on the sending side. On the way back
//! each index becomes the bytes again, handed to the type's visitor as an owned `Vec<u8>`, which
//! `ByteBuf`, `bytes::Bytes` and `Vec<u8>` fields take without another copy when the transport
//! delivered the buffer as a `Vec` (and with one copy, the one an owned type needs, when it
//! delivered a view of its own memory: the transport's own copy if it decodes with
//! [`decode_copying`]).
//!
//! So a large byte string anywhere in a payload moves at memory speed with no change to user
//! code. A plain `Vec<u8>` without `serde_bytes` is a sequence to serde, serialized one `u8` at
//! a time: this codec cannot tell it from any other sequence (serde has no specialization), so
//! it stays inline; use `serde_bytes` or [`Buffer`] for bulk bytes.
//!
//! Both sides must use this codec: the tag makes its byte strings differ from plain postcard's.
//! A type whose `Serialize` writes bytes must read them back with `deserialize_bytes` or
//! `deserialize_byte_buf` (every common one does); one that writes a byte string and reads a
//! sequence of `u8` (or the reverse) gets a decode error, not wrong data.
//!
//! # Examples
//!
//! ```
//! use cf_executor_api::{codec, AttachPolicy};
//! use serde_bytes::ByteBuf;
//!
//! let policy = AttachPolicy { min_len: 1024, max_count: 8 };
//! let value = (7u32, ByteBuf::from(vec![1u8; 1 << 20]), ByteBuf::from(vec![2u8; 10]));
//! let (bytes, buffers) = codec::encode(&value, policy).unwrap();
//! assert_eq!(buffers.len(), 1); // the MiB went out of band, the 10 bytes stayed inline
//! assert!(bytes.len() < 32);
//! let back: (u32, ByteBuf, ByteBuf) = codec::decode(&bytes, buffers).unwrap();
//! assert_eq!(back, value);
//! ```

use std::cell::Cell;
use std::fmt;

use postcard::ser_flavors::Flavor;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use serde::Deserialize;

use crate::buffer::{attach, attached, attaching, attachment};
use crate::{AttachPolicy, Buffer};

/// Tag of a byte string written inline: postcard's own bytes (length, then the bytes) follow.
const INLINE: u8 = 0;
/// Tag of a byte string the transport carries: the index of its [`Buffer`] follows.
const ATTACHED: u8 = 1;

/// Why a payload could not be encoded or decoded.
///
/// # Examples
///
/// ```
/// let err = cf_executor_api::codec::decode::<u64>(&[], Vec::new()).unwrap_err();
/// assert!(!err.to_string().is_empty());
/// ```
#[derive(Debug)]
pub struct Error(ErrorKind);

#[derive(Debug)]
enum ErrorKind {
    Postcard(postcard::Error),
    Custom(String),
}

impl fmt::Display for Error {
    #[inline]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ErrorKind::Postcard(e) => write!(f, "{e}"),
            ErrorKind::Custom(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl From<postcard::Error> for Error {
    #[inline]
    fn from(e: postcard::Error) -> Self {
        Error(ErrorKind::Postcard(e))
    }
}

impl ser::Error for Error {
    #[inline]
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(ErrorKind::Custom(msg.to_string()))
    }
}

impl de::Error for Error {
    #[inline]
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(ErrorKind::Custom(msg.to_string()))
    }
}

/// Encodes `value`: the payload's bytes, and the buffers to send beside them (every [`Buffer`]
/// and byte string that `policy` accepts, in order).
///
/// # Errors
///
/// What the value's `Serialize` reports, or postcard's refusal (a sequence of unknown length).
/// A panicking `Serialize` panics here.
pub fn encode<T: Serialize + ?Sized>(
    value: &T,
    policy: AttachPolicy,
) -> Result<(Vec<u8>, Vec<Buffer>), Error> {
    encode_placing(value, policy, &|_| None)
}

/// [`encode`], with the transport's own memory for the byte strings it attaches: `place` gets
/// each one the policy accepts and returns a [`Buffer`] holding a copy of exactly those bytes in
/// memory the transport can send without copying again (a process pool: a shared-memory region
/// of the receiving peer's), or `None` to have it copied into a `Vec` as [`encode`] does. A
/// buffer of another length than the bytes is not used (they are copied into a `Vec` instead).
/// [`Buffer`]s in the value are attached as they are: they already own their bytes.
///
/// ```
/// use cf_executor_api::{codec, AttachPolicy, Buffer};
/// use serde_bytes::ByteBuf;
///
/// let policy = AttachPolicy { min_len: 1024, max_count: 8 };
/// let value = ByteBuf::from(vec![1u8; 4096]);
/// let place = |bytes: &[u8]| Some(Buffer::from_owner(Box::<[u8]>::from(bytes)));
/// let (bytes, buffers) = codec::encode_placing(&value, policy, &place).unwrap();
/// let buffers: Vec<Buffer> = buffers
///     .into_iter()
///     .map(|b| Buffer::from(b.try_into_owner::<Box<[u8]>>().unwrap().into_vec()))
///     .collect();
/// assert_eq!(codec::decode::<ByteBuf>(&bytes, buffers).unwrap(), value);
/// ```
///
/// # Errors
///
/// As [`encode`].
pub fn encode_placing<T: Serialize + ?Sized>(
    value: &T,
    policy: AttachPolicy,
    place: Place<'_>,
) -> Result<(Vec<u8>, Vec<Buffer>), Error> {
    let (bytes, buffers) = attaching(policy, || -> Result<Vec<u8>, Error> {
        let mut serializer = postcard::Serializer {
            output: Out(Vec::new()),
        };
        value.serialize(Ser {
            inner: &mut serializer,
            place,
        })?;
        Ok(serializer.output.finalize()?)
    });
    Ok((bytes?, buffers))
}

/// Decodes a `T` from what [`encode`] produced: its bytes and the buffers that came with them.
///
/// # Errors
///
/// Bytes that are not an encoded `T`, a missing buffer, or what the type's `Deserialize`
/// reports. A panicking `Deserialize` panics here.
pub fn decode<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    buffers: Vec<Buffer>,
) -> Result<T, Error> {
    attached(buffers, || {
        let mut rest = bytes;
        T::deserialize(De { rest: &mut rest })
    })
}

/// How a transport copies an attached byte string into the `Vec` its receiving type takes as
/// its own, when the buffer is a view of the transport's memory (see [`decode_copying`]).
pub type CopyOut = fn(&[u8]) -> Vec<u8>;

thread_local! {
    /// Set while [`decode_copying`] runs.
    static COPY_OUT: Cell<CopyOut> = const { Cell::new(copy_plainly) };
}

fn copy_plainly(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

/// [`decode`], with the transport's own copy for the byte strings that arrived as views of its
/// memory: `copy_out` makes the `Vec` that `ByteBuf`, `Bytes` and `serde_bytes` fields take
/// (a process pool: memory it asks the kernel to back with huge pages, so that filling a fresh
/// 16 MiB does not cost four thousand page faults). A buffer delivered as a `Vec` is handed over
/// as it is, without `copy_out`.
///
/// ```
/// use cf_executor_api::{codec, AttachPolicy, Buffer};
/// use serde_bytes::ByteBuf;
///
/// let policy = AttachPolicy { min_len: 1024, max_count: 8 };
/// let value = ByteBuf::from(vec![3u8; 4096]);
/// let (bytes, buffers) = codec::encode(&value, policy).unwrap();
/// // What a receiver holds: views of memory of its own, not `Vec`s.
/// let views: Vec<Buffer> =
///     buffers.iter().map(|b| Buffer::from_owner(Box::<[u8]>::from(&b[..]))).collect();
/// fn copy(bytes: &[u8]) -> Vec<u8> {
///     let mut v = Vec::with_capacity(bytes.len());
///     v.extend_from_slice(bytes);
///     v
/// }
/// assert_eq!(codec::decode_copying::<ByteBuf>(&bytes, views, copy).unwrap(), value);
/// ```
///
/// # Errors
///
/// As [`decode`].
pub fn decode_copying<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    buffers: Vec<Buffer>,
    copy_out: CopyOut,
) -> Result<T, Error> {
    /// Puts the previous copy back however the decode ends (nesting, unwinding).
    struct Restore(CopyOut);
    impl Drop for Restore {
        fn drop(&mut self) {
            COPY_OUT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(COPY_OUT.with(|c| c.replace(copy_out)));
    decode(bytes, buffers)
}

// ---------------------------------------------------------------------------------------------
// Serializing: postcard's serializer does the work; this wrapper only sees that every nested
// value comes back through it, and intercepts `serialize_bytes`.

type PostcardSer = postcard::Serializer<Out>;

/// The encoder's output: a `Vec` that postcard writes into and that [`Ser`] writes single bytes
/// into directly (a `u8` is the one scalar a sequence of bytes is made of, so it is the one
/// worth a shorter path).
struct Out(Vec<u8>);

/// The most a sequence's announced length reserves in the output (64 MiB: address space only,
/// until written).
const RESERVE_MAX: usize = 64 << 20;

impl Flavor for Out {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// A transport's placement of an attached byte string (see [`encode_placing`]).
pub type Place<'a> = &'a dyn Fn(&[u8]) -> Option<Buffer>;

struct Ser<'a> {
    inner: &'a mut PostcardSer,
    place: Place<'a>,
}

/// Every compound value: postcard wrote its header (a length, a variant index); the elements
/// go through [`Ser`].
struct Compound<'a> {
    inner: &'a mut PostcardSer,
    place: Place<'a>,
}

impl<'a> Compound<'a> {
    #[inline]
    fn new(place: Place<'a>, inner: &'a mut PostcardSer) -> Self {
        Compound { inner, place }
    }
}
macro_rules! forward_ser {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            #[inline]
            fn $method(self, $($arg: $ty),*) -> Result<(), Error> {
                Ok(ser::Serializer::$method(self.inner, $($arg),*)?)
            }
        )*
    };
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    forward_ser! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_char(v: char);
        serialize_str(v: &str);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(name: &'static str);
        serialize_unit_variant(name: &'static str, index: u32, variant: &'static str);
    }

    #[inline(always)]
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.inner.output.0.push(v);
        Ok(())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        let place = self.place;
        let copy = || {
            place(v)
                .filter(|placed| placed.len() == v.len())
                .unwrap_or_else(|| Buffer::from(v))
        };
        match attach(v.len(), copy) {
            Some(index) => {
                ser::Serializer::serialize_u8(&mut *self.inner, ATTACHED)?;
                Ok(ser::Serializer::serialize_u32(self.inner, index)?)
            }
            None => {
                ser::Serializer::serialize_u8(&mut *self.inner, INLINE)?;
                Ok(ser::Serializer::serialize_bytes(self.inner, v)?)
            }
        }
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        // postcard: a 1 byte, then the value.
        ser::Serializer::serialize_u8(&mut *self.inner, 1)?;
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        // postcard: the variant index as a varint `u32`, then the value.
        ser::Serializer::serialize_u32(&mut *self.inner, index)?;
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a>, Error> {
        if let Some(len) = len {
            // Every element takes at least a byte unless it is zero-sized, so `len` (and its
            // varint header) is a floor for most sequences: reserving it up front spares a
            // large `Vec<u8>` its doublings, each a fresh mapping to fault in and copy. Capped,
            // since a sequence of zero-sized values takes no room at all.
            self.inner.output.0.reserve(len.min(RESERVE_MAX) + 16);
        }
        Ok(Compound::new(
            self.place,
            ser::Serializer::serialize_seq(self.inner, len)?,
        ))
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>, Error> {
        Ok(Compound::new(
            self.place,
            ser::Serializer::serialize_tuple(self.inner, len)?,
        ))
    }

    #[inline]
    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Compound<'a>, Error> {
        Ok(Compound::new(
            self.place,
            ser::Serializer::serialize_tuple_struct(self.inner, name, len)?,
        ))
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, Error> {
        Ok(Compound::new(
            self.place,
            ser::Serializer::serialize_tuple_variant(self.inner, name, index, variant, len)?,
        ))
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a>, Error> {
        Ok(Compound::new(
            self.place,
            ser::Serializer::serialize_map(self.inner, len)?,
        ))
    }

    #[inline]
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'a>, Error> {
        Ok(Compound::new(
            self.place,
            ser::Serializer::serialize_struct(self.inner, name, len)?,
        ))
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, Error> {
        Ok(Compound::new(
            self.place,
            ser::Serializer::serialize_struct_variant(self.inner, name, index, variant, len)?,
        ))
    }

    #[inline]
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), Error> {
        Ok(ser::Serializer::collect_str(self.inner, value)?)
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }
}

impl Compound<'_> {
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(Ser {
            inner: &mut *self.inner,
            place: self.place,
        })
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(ser::SerializeSeq::end(self.inner)?)
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(ser::SerializeTuple::end(self.inner)?)
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(ser::SerializeTupleStruct::end(self.inner)?)
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(ser::SerializeTupleVariant::end(self.inner)?)
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.element(key)
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(ser::SerializeMap::end(self.inner)?)
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.element(value)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(ser::SerializeStruct::end(self.inner)?)
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;
    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.element(value)
    }
    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(ser::SerializeStructVariant::end(self.inner)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Deserializing: postcard reads every scalar; this wrapper reads the headers of compound values
// itself (postcard's would hand the elements to postcard directly) and resolves byte strings.

type PostcardDe<'de> = postcard::Deserializer<'de, postcard::de_flavors::Slice<'de>>;

/// Where the decoder is: the bytes not read yet.
///
/// The decoder keeps this cursor itself rather than postcard's deserializer, for one reason:
/// a sequence of `u8` (a plain `Vec<u8>`) is read one byte per visitor call, and a cursor that
/// [`Access`] holds by value stays in registers through the visitor's loop. Behind a reference
/// it is stored and reloaded around every byte, because the byte the visitor writes into its
/// `Vec` might, as far as the compiler knows, be the cursor itself (that halved decoding speed).
type Rest<'de> = &'de [u8];

struct De<'a, 'de> {
    rest: &'a mut Rest<'de>,
}

impl<'de> De<'_, 'de> {
    /// Runs postcard's deserializer on the bytes not read yet, and moves past what it read.
    #[inline]
    fn postcard<R>(
        &mut self,
        read: impl FnOnce(&mut PostcardDe<'de>) -> postcard::Result<R>,
    ) -> Result<R, Error> {
        let mut inner = PostcardDe::from_bytes(self.rest);
        let value = read(&mut inner)?;
        *self.rest = inner.finalize()?;
        Ok(value)
    }

    /// A length or variant index, as postcard writes them (a LEB128 varint).
    fn varint(&mut self) -> Result<u64, Error> {
        self.postcard(|inner| u64::deserialize(inner))
    }

    #[inline]
    fn len(&mut self) -> Result<usize, Error> {
        let len = self.varint()?;
        usize::try_from(len).map_err(|_| de::Error::custom(format!("length {len} is too large")))
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8, Error> {
        let (&byte, rest) = self
            .rest
            .split_first()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        *self.rest = rest;
        Ok(byte)
    }

    /// A byte string: inline, or the attached buffer its index names.
    fn bytes<V: Visitor<'de>>(mut self, visitor: V, borrowed: bool) -> Result<V::Value, Error> {
        match self.byte()? {
            INLINE if borrowed => {
                self.postcard(|inner| de::Deserializer::deserialize_bytes(inner, visitor))
            }
            INLINE => self.postcard(|inner| de::Deserializer::deserialize_byte_buf(inner, visitor)),
            ATTACHED => {
                let index = self.postcard(|inner| u32::deserialize(inner))?;
                let buffer = attachment(index).map_err(<Error as de::Error>::custom)?;
                let bytes = buffer
                    .try_into_owner::<Vec<u8>>()
                    .unwrap_or_else(|view| COPY_OUT.with(Cell::get)(&view));
                visitor.visit_byte_buf(bytes)
            }
            tag => Err(de::Error::custom(format!(
                "a byte string starts with tag {tag}, which is neither inline ({INLINE}) nor \
                 attached ({ATTACHED}): the bytes were not written by cf's payload codec"
            ))),
        }
    }

    #[inline]
    fn seq<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Access::new(self.rest, len))
    }
}

macro_rules! forward_de {
    ($($method:ident),* $(,)?) => {
        $(
            #[inline]
            fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Error> {
                self.postcard(|inner| de::Deserializer::$method(inner, visitor))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for De<'_, 'de> {
    type Error = Error;

    forward_de! {
        deserialize_any, deserialize_bool,
        deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64, deserialize_i128,
        deserialize_u16, deserialize_u32, deserialize_u64, deserialize_u128,
        deserialize_f32, deserialize_f64, deserialize_char, deserialize_str, deserialize_string,
        deserialize_identifier, deserialize_ignored_any,
    }

    #[inline(always)]
    fn deserialize_u8<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u8(self.byte()?)
    }

    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.bytes(visitor, true)
    }

    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.bytes(visitor, false)
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Error> {
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            _ => Err(postcard::Error::DeserializeBadOption.into()),
        }
    }

    #[inline]
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Error> {
        let len = self.len()?;
        self.seq(len, visitor)
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.seq(len, visitor)
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.seq(len, visitor)
    }

    #[inline]
    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Error> {
        let len = self.len()?;
        visitor.visit_map(Access::new(self.rest, len))
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.seq(fields.len(), visitor)
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(self)
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple or struct, or the entries of a map: `len` more to read.
///
/// It holds its own copy of the cursor (see [`Rest`]) and hands it back to the decoder it came
/// from when it is dropped, however the visitor ends: done, failed or unwinding.
struct Access<'a, 'de> {
    rest: Rest<'de>,
    len: usize,
    back: &'a mut Rest<'de>,
}

impl<'a, 'de> Access<'a, 'de> {
    #[inline]
    fn new(back: &'a mut Rest<'de>, len: usize) -> Self {
        let rest: Rest<'de> = *back;
        Access { rest, len, back }
    }

    #[inline]
    fn next<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(De {
            rest: &mut self.rest,
        })
    }
}

impl Drop for Access<'_, '_> {
    #[inline]
    fn drop(&mut self) {
        *self.back = self.rest;
    }
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        self.next(seed).map(Some)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.len)
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len -= 1;
        self.next(seed).map(Some)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        self.next(seed)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        Some(self.len)
    }
}

impl<'a, 'de> de::EnumAccess<'de> for De<'a, 'de> {
    type Error = Error;
    type Variant = Self;

    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(mut self, seed: V) -> Result<(V::Value, Self), Error> {
        let index = self.postcard(|inner| u32::deserialize(inner))?;
        let value = seed.deserialize(IntoDeserializer::<Error>::into_deserializer(index))?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for De<'_, 'de> {
    type Error = Error;

    #[inline]
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.seq(len, visitor)
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.seq(fields.len(), visitor)
    }
}
