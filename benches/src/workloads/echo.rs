//! A byte payload sent to a task and back. The buffer is moved through every round trip (the
//! result becomes the next argument), so nothing but the pool copies it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cf_executor_api::{Buffer, Executor};
use serde_bytes::ByteBuf;

use crate::tasks::{echo, echo_buffer, echo_bytes, payload};

/// `submit(echo, v)` with a plain `Vec<u8>`: what a user gets by default.
pub fn cf_vec<E: Executor>(pool: &E, len: usize, iters: u64) -> Duration {
    let mut v = payload(len);
    let start = Instant::now();
    for _ in 0..iters {
        v = pool
            .submit(echo, v)
            .expect("submit")
            .try_unwrap()
            .unwrap_or_else(|_| panic!("the only handle to an echo future"))
            .expect("echo");
    }
    let elapsed = start.elapsed();
    assert_eq!(black_box(v).len(), len);
    elapsed
}

/// `submit(echo_bytes, buf)` with a `serde_bytes::ByteBuf`: one byte string, not a sequence.
pub fn cf_bytebuf<E: Executor>(pool: &E, len: usize, iters: u64) -> Duration {
    let mut v = ByteBuf::from(payload(len));
    let start = Instant::now();
    for _ in 0..iters {
        v = pool
            .submit(echo_bytes, v)
            .expect("submit")
            .try_unwrap()
            .unwrap_or_else(|_| panic!("the only handle to an echo future"))
            .expect("echo");
    }
    let elapsed = start.elapsed();
    assert_eq!(black_box(v).len(), len);
    elapsed
}

/// `submit(echo_buffer, buf)` with a [`Buffer`]. Each round trip starts from the `Buffer` the
/// last one returned, which in the parent is a mapping without its descriptor, so every trip
/// copies the payload once into a new memfd: the copy a fresh payload would cost, too.
pub fn cf_buffer<E: Executor>(pool: &E, len: usize, iters: u64) -> Duration {
    let mut v = Buffer::from(payload(len));
    let start = Instant::now();
    for _ in 0..iters {
        v = pool
            .submit(echo_buffer, v)
            .expect("submit")
            .try_unwrap()
            .unwrap_or_else(|_| panic!("the only handle to an echo future"))
            .expect("echo");
    }
    let elapsed = start.elapsed();
    assert_eq!(black_box(v).len(), len);
    elapsed
}

/// procspawn's pool with a plain `Vec<u8>`.
pub fn procspawn(pool: &procspawn::Pool, len: usize, iters: u64) -> Duration {
    let mut v = payload(len);
    let start = Instant::now();
    for _ in 0..iters {
        v = pool.spawn(v, echo).join().expect("procspawn echo");
    }
    let elapsed = start.elapsed();
    assert_eq!(black_box(v).len(), len);
    elapsed
}
