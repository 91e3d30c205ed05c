//! The parent's decoder for what a worker sends, fed garbage.
//!
//! A worker is the parent's own executable, but a task runs arbitrary code in it and can write
//! anything to the inherited socket; the parent must refuse such a frame (and kill the worker)
//! without panicking and without letting a length field drive an allocation past `max`.
//!
//! Input layout: byte 0 picks `max` from [`MAXES`], the rest is the byte stream as read from the
//! socket (a `u32` little-endian body length, then the body; trailing bytes are ignored, as
//! they would be the next frame).
//!
//! Properties checked, besides "never panics":
//! * live heap growth during the call stays within [`ALLOC_FACTOR`] `* max` plus a small
//!   constant: the body buffer (at most `max` bytes), the lossy UTF-8 copy of an `InitFailed`
//!   message (at most 3 bytes per input byte), and short error strings (records, attachments
//!   and released lends are checked and read in place, never indexed);
//! * a frame that decodes has a length prefix in `1..=max` and one of the three kinds a
//!   worker may send (`Ready` = 4, `InitFailed` = 5, `Results` = 6);
//! * decoding is deterministic.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};

use libfuzzer_sys::fuzz_target;

const MAXES: [usize; 6] = [16, 64, 256, 4096, 65_536, 1 << 20];
const ALLOC_FACTOR: usize = 4;
const ALLOC_SLACK: usize = 4096;

/// Counts bytes allocated while armed; `PEAK` is the highest live growth seen.
struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grow(by: isize) {
    if ARMED.load(Relaxed) {
        let now = LIVE.fetch_add(by, Relaxed) + by;
        PEAK.fetch_max(now, Relaxed);
    }
}

// SAFETY: every method forwards to `System` unchanged; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() as isize);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        grow(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn parse(frame: &[u8], max: usize) -> (Result<(), String>, usize) {
    LIVE.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    ARMED.store(true, Relaxed);
    let result = cf_pool_proc::fuzzing::parse_worker_frame(frame, max);
    ARMED.store(false, Relaxed);
    // The result's own error string is still live here and counted, as it should be.
    (result, PEAK.load(Relaxed).max(0) as usize)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let max = MAXES[usize::from(pick) % MAXES.len()];
    let (result, peak) = parse(frame, max);
    assert!(
        peak <= ALLOC_FACTOR * max + ALLOC_SLACK,
        "decoding a {}-byte input with max {max} grew the heap by {peak} bytes",
        frame.len()
    );
    if result.is_ok() {
        // Header: 4-byte magic, u32 body length; then the kind byte.
        assert_eq!(&frame[..4], b"cfP\x01", "accepted a frame without the magic");
        let len = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
        assert!(
            (1..=max).contains(&len),
            "accepted a length prefix of {len}"
        );
        assert!(
            matches!(frame[8], 4..=6),
            "accepted a frame of kind {} from a worker",
            frame[8]
        );
    }
    let (again, _) = parse(frame, max);
    assert_eq!(result, again, "decoding is not deterministic");
});
