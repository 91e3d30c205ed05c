//! The transport API (`cf_pool_proc::transport`): a task encoded on one side and run raw on a
//! local pool gives the same outcomes as `submit`, errors included.

mod common;

use std::time::Duration;

use cf_pool_proc::transport::{
    build_id, decode_result, encode_argument, initializer_code, task_code, Encoded, TaskCode,
};
use cf_pool_proc::{Buffer, CodecStage, ProcessPoolExecutor, TaskError};
use serde_bytes::ByteBuf;

const LIMIT: Duration = Duration::from_secs(60);

fn run(pool: &ProcessPoolExecutor, code: TaskCode, arg: Encoded) -> Result<Encoded, TaskError> {
    let f = pool
        .submit_encoded(code, arg, None)
        .expect("submit_encoded");
    f.result_timeout(LIMIT).cloned()
}

fn add((a, b): (u32, u32)) -> u32 {
    a + b
}

fn fail(message: String) -> u32 {
    panic!("{message}")
}

fn reverse(b: Buffer) -> Buffer {
    Buffer::from(b.iter().rev().copied().collect::<Vec<u8>>())
}

fn spin(_: ()) -> u32 {
    loop {
        std::hint::spin_loop();
    }
}

static INIT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn init() -> Result<(), String> {
    INIT.store(77, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

fn read_init(_: ()) -> u32 {
    INIT.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn round_trip_values_errors_and_buffers() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let out = run(
        &pool,
        task_code(add),
        encode_argument(&(2u32, 3u32)).unwrap(),
    );
    assert_eq!(decode_result::<u32>(out), Ok(5));

    let out = run(
        &pool,
        task_code(fail),
        encode_argument(&"raw boom".to_owned()).unwrap(),
    );
    match decode_result::<u32>(out) {
        Err(TaskError::Panicked { message, .. }) => assert_eq!(message, "raw boom"),
        other => panic!("expected Panicked, got {other:?}"),
    }

    // Large buffers are attached out of band in both directions.
    let big = Buffer::from((0..1_000_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    let arg = encode_argument(&big).unwrap();
    assert_eq!(arg.buffers.len(), 1, "a large buffer travels attached");
    let back = decode_result::<Buffer>(run(&pool, task_code(reverse), arg)).unwrap();
    assert!(big.iter().rev().eq(back.iter()));

    // So are byte strings as serde writes them, small ones inline: decoded as they were encoded.
    let bytes = (
        ByteBuf::from(vec![9u8; 1 << 20]),
        ByteBuf::from(vec![1u8, 2]),
    );
    let arg = encode_argument(&bytes).unwrap();
    assert_eq!(arg.buffers.len(), 1, "a large byte string travels attached");
    let back = decode_result::<(ByteBuf, ByteBuf)>(run(&pool, task_code(swap_bytes), arg)).unwrap();
    assert_eq!(back, (bytes.1, bytes.0));
}

fn swap_bytes((a, b): (ByteBuf, ByteBuf)) -> (ByteBuf, ByteBuf) {
    (b, a)
}

#[test]
fn decoding_as_the_wrong_type_is_a_codec_error() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let out = run(
        &pool,
        task_code(add),
        encode_argument(&(1u32, 1u32)).unwrap(),
    );
    assert!(matches!(
        decode_result::<String>(out),
        Err(TaskError::Codec {
            stage: CodecStage::DeserializeResult,
            ..
        })
    ));
    // An argument too short for the task's `A` (postcard is not self-describing, so only what
    // cannot decode is caught): the worker says so, the pool goes on.
    let out = run(&pool, task_code(add), encode_argument(&()).unwrap());
    assert!(
        matches!(
            decode_result::<u32>(out),
            Err(TaskError::Codec {
                stage: CodecStage::DeserializeArgument,
                ..
            })
        ),
        "a mismatched argument is refused"
    );
    let out = run(
        &pool,
        task_code(add),
        encode_argument(&(4u32, 5u32)).unwrap(),
    );
    assert_eq!(decode_result::<u32>(out), Ok(9));
}

#[test]
fn time_limit_and_initializer_code() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer_code(initializer_code(init))
        .build()
        .unwrap();
    let out = run(&pool, task_code(read_init), encode_argument(&()).unwrap());
    assert_eq!(decode_result::<u32>(out), Ok(77));
    let f = pool
        .submit_encoded(
            task_code(spin),
            encode_argument(&()).unwrap(),
            Some(Duration::from_millis(200)),
        )
        .unwrap();
    assert!(matches!(
        f.result_timeout(LIMIT),
        Err(TaskError::Timeout {
            killed_worker: Some(_),
            ..
        })
    ));
    assert!(pool
        .submit_encoded(
            task_code(spin),
            encode_argument(&()).unwrap(),
            Some(Duration::ZERO)
        )
        .is_err());
}

#[test]
fn build_id_is_a_stable_content_hash() {
    let id = build_id().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(build_id().unwrap(), id);
    // The hash of the executable's bytes, not of its inode: a copy has the same identity.
    let exe = std::fs::read("/proc/self/exe").unwrap();
    use sha2::Digest;
    let expected: String = sha2::Sha256::digest(&exe)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(id, expected);
}

#[cfg(unix)]
fn init_ok() -> Result<(), String> {
    Ok(())
}

#[test]
fn code_in_a_shared_library_is_refused_at_submit_and_at_build() {
    // Codes are offsets from one fixed function of the executable: one far from any image, and
    // (on Unix) one that names the C library's `malloc` (a shared library, mapped wherever the
    // loader put it), found from the offset of a function of ours.
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut codes = vec![TaskCode::from_raw(i64::MAX / 2)];
    #[cfg(unix)]
    {
        let ours = init_ok as fn() -> Result<(), String> as usize;
        let anchor = ours.wrapping_sub(initializer_code(init_ok).to_raw() as usize);
        let malloc = libc::malloc as *const () as usize;
        codes.push(TaskCode::from_raw(malloc.wrapping_sub(anchor) as i64));
    }

    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    for code in codes {
        let refused = pool
            .submit_encoded(code, encode_argument(&(1u32, 2u32)).unwrap(), None)
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("outside the executable's own image"),
            "{refused}"
        );
        let refused = ProcessPoolExecutor::builder()
            .initializer_code(code)
            .build()
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("outside the executable's own image"),
            "{refused}"
        );
    }
    // A raw code of our own is accepted, and runs.
    let add_code = TaskCode::from_raw(task_code(add).to_raw());
    let sum = run(&pool, add_code, encode_argument(&(1u32, 2u32)).unwrap());
    assert_eq!(decode_result::<u32>(sum).unwrap(), 3);
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
