//! A byte payload sent to a task and back. The buffer is moved through every round trip (the
//! result becomes the next argument), so nothing but the pool copies it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cf_executor_api::{Buffer, Executor, Payload, Task};
use serde_bytes::ByteBuf;

use crate::tasks::{echo, echo_buffer, echo_bytes, payload};

/// `iters` round trips of `v` through `task` (an echo), each result the next argument.
fn round_trips<E, T, F>(pool: &E, task: F, mut v: T, iters: u64) -> (Duration, T)
where
    E: Executor,
    T: Payload + Sync,
    F: Task<T, T>,
{
    let start = Instant::now();
    for _ in 0..iters {
        v = pool
            .submit(task, v)
            .expect("submit")
            .try_unwrap()
            .unwrap_or_else(|_| panic!("the only handle to an echo future"))
            .expect("echo");
    }
    (start.elapsed(), v)
}

/// `submit(echo, v)` with a plain `Vec<u8>`: what a user gets by default.
pub fn cf_vec<E: Executor>(pool: &E, len: usize, iters: u64) -> Duration {
    let (elapsed, v) = round_trips(pool, echo, payload(len), iters);
    assert_eq!(black_box(v).len(), len);
    elapsed
}

/// `submit(echo_bytes, buf)` with a `serde_bytes::ByteBuf`: one byte string, not a sequence.
pub fn cf_bytebuf<E: Executor>(pool: &E, len: usize, iters: u64) -> Duration {
    let (elapsed, v) = round_trips(pool, echo_bytes, ByteBuf::from(payload(len)), iters);
    assert_eq!(black_box(v).len(), len);
    elapsed
}

/// `submit(echo_buffer, buf)` with a [`Buffer`], which a process pool moves through shared
/// memory. Every trip really moves the bytes: the parent copies the `Buffer` it got back into a
/// region again, the worker reads it there and copies its result into a region of its own, and
/// the parent copies that out.
pub fn cf_buffer<E: Executor>(pool: &E, len: usize, iters: u64) -> Duration {
    let (elapsed, v) = round_trips(pool, echo_buffer, Buffer::from(payload(len)), iters);
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
