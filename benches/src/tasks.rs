//! The task functions every contender runs. All are fn items, so the process pools can name
//! them in a worker (cf-pool-proc by code offset, procspawn by its own marshalling).

use std::hint::black_box;

use cf_executor_api::Buffer;
use serde_bytes::ByteBuf;

/// The smallest task: returns its argument. A round trip of this measures pure overhead.
#[inline(never)]
pub fn noop(x: u64) -> u64 {
    black_box(x)
}

/// The chapter's `cpu_heavy`: the sum of `i * i` for `i` in `0..n`.
///
/// `black_box` hides each `i` from the optimiser so the loop is really run (no closed formula).
/// Never inlined, so the sequential baseline and every pool execute the same machine code at
/// the same alignment (a tight loop's speed depends on it).
#[inline(never)]
pub fn cpu_heavy(n: u64) -> u64 {
    let mut total: u64 = 0;
    for i in 0..n {
        let i = black_box(i);
        total = total.wrapping_add(i.wrapping_mul(i));
    }
    total
}

/// Sends the bytes back: what a user writes by default. serde encodes a `Vec<u8>` as a
/// sequence, one element at a time.
#[inline(never)]
pub fn echo(bytes: Vec<u8>) -> Vec<u8> {
    black_box(bytes)
}

/// Sends the bytes back as a [`ByteBuf`], which serde encodes as one byte string (a copy).
#[inline(never)]
pub fn echo_bytes(bytes: ByteBuf) -> ByteBuf {
    black_box(bytes)
}

/// Sends the bytes back as a [`Buffer`]: in the process pool, the bytes travel in shared
/// memory, and a buffer returned unchanged goes back without a copy.
#[inline(never)]
pub fn echo_buffer(bytes: Buffer) -> Buffer {
    black_box(bytes)
}

/// `noop` over a whole chunk: how procspawn (which has no `map`) batches work.
pub fn noop_chunk(xs: Vec<u64>) -> Vec<u64> {
    xs.into_iter().map(noop).collect()
}

/// A payload of `len` bytes that is not all zeros (so nothing can take a zero-page shortcut).
#[must_use]
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_compute_what_they_say() {
        assert_eq!(noop(7), 7);
        assert_eq!(cpu_heavy(4), 1 + 4 + 9);
        assert_eq!(echo(vec![1, 2]), [1, 2]);
        assert_eq!(echo_bytes(ByteBuf::from(vec![3])).into_vec(), [3]);
        assert_eq!(noop_chunk(vec![5, 6]), [5, 6]);
        assert_eq!(payload(300)[251], 0);
    }
}
