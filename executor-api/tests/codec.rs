//! The payload codec: postcard with byte strings out of band. Everything round-trips; byte
//! strings the policy accepts travel as buffers wherever they are in the payload, whatever type
//! wrote them; everything else is exactly postcard's encoding; bad input is an error.

use std::collections::BTreeMap;

use cf_executor_api::{codec, AttachPolicy, Buffer};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

const POLICY: AttachPolicy = AttachPolicy {
    min_len: 64,
    max_count: 4,
};

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Unit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Newtype(#[serde(with = "serde_bytes")] Vec<u8>);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Blob(ByteBuf),
    Pair(u8, #[serde(with = "serde_bytes")] Vec<u8>),
    Named { id: i128, data: bytes::Bytes },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    flag: bool,
    small: (i8, i16, i32, i64, u16, u32, u64, u128),
    floats: (f32, f64),
    letter: char,
    text: String,
    maybe: Option<ByteBuf>,
    nothing: Option<ByteBuf>,
    shapes: Vec<Shape>,
    map: BTreeMap<String, ByteBuf>,
    unit: Unit,
    newtype: Newtype,
    buffer: Buffer,
    plain: Vec<u8>,
    #[serde(with = "serde_bytes")]
    attr: Vec<u8>,
    bytes: bytes::Bytes,
}

fn everything(big: usize) -> Everything {
    Everything {
        flag: true,
        small: (
            -3,
            -300,
            -70_000,
            i64::MIN,
            65_000,
            u32::MAX,
            u64::MAX,
            u128::MAX,
        ),
        floats: (1.5, -2.25e300),
        letter: 'ß',
        text: "texte".into(),
        maybe: Some(ByteBuf::from(pattern(1, big))),
        nothing: None,
        shapes: vec![
            Shape::Empty,
            Shape::Blob(ByteBuf::from(pattern(2, 3))),
            Shape::Pair(9, pattern(3, big)),
            Shape::Named {
                id: -1,
                data: bytes::Bytes::from(pattern(4, 10)),
            },
        ],
        map: [("a".to_owned(), ByteBuf::from(pattern(5, 1)))].into(),
        unit: Unit,
        newtype: Newtype(pattern(6, 7)),
        buffer: Buffer::from(pattern(7, big)),
        plain: pattern(8, 100),
        attr: pattern(9, 5),
        bytes: bytes::Bytes::from(pattern(10, big)),
    }
}

#[test]
fn everything_round_trips_with_large_byte_strings_attached() {
    let value = everything(1000);
    let (bytes, buffers) = codec::encode(&value, POLICY).unwrap();
    // `maybe`, `Pair`'s bytes, `buffer` and `bytes` are over 64 bytes: four buffers, in order.
    assert_eq!(buffers.len(), 4);
    assert_eq!(&*buffers[0], &pattern(1, 1000)[..]);
    assert_eq!(&*buffers[1], &pattern(3, 1000)[..]);
    assert_eq!(&*buffers[2], &pattern(7, 1000)[..]);
    assert_eq!(&*buffers[3], &pattern(10, 1000)[..]);
    assert!(bytes.len() < 300, "{} bytes inline", bytes.len());
    let back: Everything = codec::decode(&bytes, buffers).unwrap();
    assert_eq!(back, value);
}

#[test]
fn without_attachment_everything_stays_inline_and_round_trips() {
    let value = everything(1000);
    let never = AttachPolicy {
        min_len: usize::MAX,
        max_count: 4,
    };
    let (bytes, buffers) = codec::encode(&value, never).unwrap();
    assert!(buffers.is_empty());
    assert!(bytes.len() > 4000);
    assert_eq!(
        codec::decode::<Everything>(&bytes, Vec::new()).unwrap(),
        value
    );
}

#[test]
fn past_max_count_byte_strings_stay_inline() {
    let value: Vec<ByteBuf> = (0..7).map(|i| ByteBuf::from(pattern(i, 100))).collect();
    let (bytes, buffers) = codec::encode(&value, POLICY).unwrap();
    assert_eq!(buffers.len(), 4);
    assert!(bytes.len() > 300);
    assert_eq!(
        codec::decode::<Vec<ByteBuf>>(&bytes, buffers).unwrap(),
        value
    );
}

/// Values without byte strings are encoded exactly as postcard encodes them.
#[test]
fn without_byte_strings_the_encoding_is_postcards() {
    #[derive(Serialize)]
    struct Plain {
        a: Vec<(u64, Option<String>)>,
        b: BTreeMap<u8, Vec<i32>>,
        c: Option<Option<u8>>,
        d: Shape,
        e: [u16; 3],
    }
    let value = Plain {
        a: vec![(1, Some("x".into())), (u64::MAX, None)],
        b: [(1, vec![-1, 2]), (200, vec![])].into(),
        c: Some(None),
        d: Shape::Empty,
        e: [1, 300, 65535],
    };
    let (bytes, buffers) = codec::encode(&value, POLICY).unwrap();
    assert!(buffers.is_empty());
    assert_eq!(bytes, postcard::to_allocvec(&value).unwrap());
}

/// Without byte strings the codec reads postcard's encoding too: every kind of value, nested,
/// and a large plain `Vec<u8>` (read one element at a time through the decoder's own cursor).
#[test]
fn without_byte_strings_postcards_encoding_decodes() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        flag: bool,
        small: (i8, i16, i32, i64, i128, u16, u32, u64, u128),
        floats: (f32, f64),
        letter: char,
        text: String,
        a: Vec<(u64, Option<String>)>,
        b: BTreeMap<u8, Vec<i32>>,
        c: Option<Option<u8>>,
        d: Vec<Shape>,
        e: [u16; 3],
        unit: Unit,
        big: Vec<u8>,
        wide: Vec<u16>,
        last: u8,
    }
    let value = Plain {
        flag: true,
        small: (
            -1,
            -300,
            i32::MIN,
            i64::MAX,
            i128::MIN,
            65_535,
            1 << 31,
            u64::MAX,
            7,
        ),
        floats: (f32::MIN_POSITIVE, -0.5),
        letter: '→',
        text: "text".into(),
        a: vec![(1, Some("x".into())), (u64::MAX, None)],
        b: [(1, vec![-1, 2]), (200, vec![])].into(),
        c: Some(Some(4)),
        d: vec![Shape::Empty, Shape::Empty],
        e: [1, 300, 65535],
        unit: Unit,
        big: pattern(11, 1 << 20),
        wide: (0..1000).collect(),
        last: 42,
    };
    let plain = postcard::to_allocvec(&value).unwrap();
    let back: Plain = codec::decode(&plain, Vec::new()).unwrap();
    assert_eq!(back, value);
    let (bytes, buffers) = codec::encode(&value, POLICY).unwrap();
    assert_eq!(bytes, plain);
    assert_eq!(codec::decode::<Plain>(&bytes, buffers).unwrap(), value);
    // Cut inside the large sequence: an error, not a panic or a short vector.
    let cut = &plain[..plain.len() / 2];
    assert!(codec::decode::<Plain>(cut, Vec::new()).is_err());
}

#[test]
fn sizes_around_the_threshold() {
    for len in [0, 1, 63, 64, 65, 4096] {
        let value = (ByteBuf::from(pattern(1, len)), len as u32);
        let (bytes, buffers) = codec::encode(&value, POLICY).unwrap();
        assert_eq!(buffers.len(), usize::from(len >= 64), "len {len}");
        let back: (ByteBuf, u32) = codec::decode(&bytes, buffers).unwrap();
        assert_eq!(back, value, "len {len}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let value = (ByteBuf::from(pattern(1, 100)), 5u8);
    let (bytes, buffers) = codec::encode(&value, POLICY).unwrap();
    // A missing attachment.
    let err = codec::decode::<(ByteBuf, u8)>(&bytes, Vec::new()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // Every truncation.
    for cut in 0..bytes.len() {
        assert!(codec::decode::<(ByteBuf, u8)>(&bytes[..cut], buffers.clone()).is_err());
    }
    // An unknown tag.
    let mut bad = bytes.clone();
    bad[0] = 7;
    let err = codec::decode::<(ByteBuf, u8)>(&bad, buffers.clone()).unwrap_err();
    assert!(err.to_string().contains("tag 7"), "{err}");
    // Plain postcard bytes of a byte string are not this codec's.
    let plain = postcard::to_allocvec(&ByteBuf::from(vec![1u8; 3])).unwrap();
    assert!(codec::decode::<ByteBuf>(&plain, Vec::new()).is_err());
    // Every single-byte corruption decodes or fails, never panics.
    for i in 0..bytes.len() {
        for flip in [1u8, 0x80, 0xff] {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= flip;
            let _ = codec::decode::<(ByteBuf, u8)>(&corrupt, buffers.clone());
        }
    }
}

/// A buffer the transport delivers as a `Vec` becomes the `ByteBuf` without a copy.
#[test]
fn an_attached_vec_is_handed_over_without_a_copy() {
    let value = ByteBuf::from(pattern(3, 4096));
    let (bytes, buffers) = codec::encode(&value, POLICY).unwrap();
    let delivered = buffers[0].to_vec();
    let address = delivered.as_ptr();
    let back: ByteBuf = codec::decode(&bytes, vec![Buffer::from(delivered)]).unwrap();
    assert_eq!(back.as_ptr(), address);
    assert_eq!(back, value);
}

/// With `decode_copying`, a buffer delivered as a view of the transport's memory becomes its
/// `ByteBuf` through the transport's copy, once per byte string; one delivered as a `Vec` is
/// still handed over as it is. Afterwards (and after a panic inside) plain `decode` copies
/// plainly again.
#[test]
fn decode_copying_copies_views_with_the_transports_copy() {
    use std::cell::Cell;
    thread_local! {
        static COPIES: Cell<usize> = const { Cell::new(0) };
    }
    fn counting(bytes: &[u8]) -> Vec<u8> {
        COPIES.with(|c| c.set(c.get() + 1));
        bytes.to_vec()
    }
    fn panicking(_: &[u8]) -> Vec<u8> {
        panic!("the transport's copy panicked")
    }
    let value = (
        ByteBuf::from(pattern(1, 1000)),
        ByteBuf::from(pattern(2, 2000)),
    );
    let (bytes, buffers) = codec::encode(&value, POLICY).unwrap();
    assert_eq!(buffers.len(), 2);
    let views = || -> Vec<Buffer> {
        buffers
            .iter()
            .map(|b| Buffer::from_owner(Box::<[u8]>::from(&b[..])))
            .collect()
    };

    let back: (ByteBuf, ByteBuf) = codec::decode_copying(&bytes, views(), counting).unwrap();
    assert_eq!(back, value);
    assert_eq!(COPIES.with(Cell::get), 2, "one copy per viewed byte string");

    let vecs: Vec<Buffer> = buffers.iter().map(|b| Buffer::from(b.to_vec())).collect();
    let back: (ByteBuf, ByteBuf) = codec::decode_copying(&bytes, vecs, counting).unwrap();
    assert_eq!(back, value);
    assert_eq!(
        COPIES.with(Cell::get),
        2,
        "a Vec is handed over, not copied"
    );

    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        codec::decode_copying::<(ByteBuf, ByteBuf)>(&bytes, views(), panicking)
    }));
    assert!(panicked.is_err());
    let back: (ByteBuf, ByteBuf) = codec::decode(&bytes, views()).unwrap();
    assert_eq!(back, value, "plain decode copies plainly after the panic");
    assert_eq!(COPIES.with(Cell::get), 2);
}

#[test]
fn encode_reports_postcards_refusals() {
    struct UnknownLength;
    impl Serialize for UnknownLength {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            s.serialize_seq(None)?.end()
        }
    }
    assert!(codec::encode(&UnknownLength, POLICY).is_err());
}

#[test]
fn placed_byte_strings_are_attached_as_placed_and_a_wrong_length_is_not_used() {
    let value = (
        ByteBuf::from(vec![1u8; 500]),
        ByteBuf::from(vec![2u8; 600]),
        Buffer::from(vec![3u8; 700]),
        ByteBuf::from(vec![4u8; 10]),
    );
    let calls = std::cell::Cell::new(0);
    let place = |bytes: &[u8]| {
        calls.set(calls.get() + 1);
        Some(match bytes[0] {
            1 => Buffer::from_owner(Box::<[u8]>::from(bytes)),
            _ => Buffer::from_owner(Box::<[u8]>::from(&bytes[1..])),
        })
    };
    let (bytes, buffers) = codec::encode_placing(&value, POLICY, &place).unwrap();
    assert_eq!(
        calls.get(),
        2,
        "only attached byte strings are placed: not a Buffer, not a short one"
    );
    assert_eq!(buffers.len(), 3);
    assert!(buffers[0].owner::<Box<[u8]>>().is_some(), "placed");
    assert!(
        buffers[1].owner::<Vec<u8>>().is_some(),
        "a placement of the wrong length is copied into a Vec instead"
    );
    assert_eq!(buffers[1].len(), 600);
    let back: (ByteBuf, ByteBuf, Buffer, ByteBuf) = codec::decode(&bytes, buffers).unwrap();
    assert_eq!(back, value);
}
