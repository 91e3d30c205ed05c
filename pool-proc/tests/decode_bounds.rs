//! What decoding a worker's frame may cost the parent: allocations bounded by the frame's own
//! length (at most twice it: the body, and while it grows, its previous buffer), whatever counts
//! and lengths the frame claims, and no more for a frame that claims more than it holds. A counting
//! allocator measures the peak; this file holds one test so nothing else allocates meanwhile.

#![allow(unsafe_code)] // a counting global allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cf_pool_proc::fuzzing::parse_worker_frame;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = b"cfP\x01".to_vec();
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// One result record with no payload, then `attached` (already encoded, `count` records).
fn one_result(count: u32, attached: &[u8]) -> Vec<u8> {
    let mut b = vec![6];
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&7u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(1);
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(attached);
    b.extend_from_slice(&0u32.to_le_bytes()); // released: none
    frame(&b)
}

/// Peak bytes allocated while the parent decodes `f`, and whether it accepted it.
fn peak_decoding(f: &[u8]) -> (usize, bool) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let ok = parse_worker_frame(f, usize::MAX).is_ok();
    (PEAK.load(Ordering::Relaxed) - base, ok)
}

#[test]
fn decoding_costs_at_most_a_few_times_what_was_received() {
    const N: usize = 200_000;
    let mut shapes: Vec<(&str, Vec<u8>)> = Vec::new();
    // Many failed attachments with empty reasons: the smallest record there is.
    shapes.push((
        "empty failures",
        one_result(N as u32, &[1, 0, 0, 0, 0].repeat(N)),
    ));
    // A count the frame cannot hold, with the bytes of one record per byte claimed.
    shapes.push((
        "lying count",
        one_result(N as u32 * 5, &[1, 0, 0, 0, 0].repeat(N)),
    ));
    // Many result records with nothing in them.
    let mut b = vec![6];
    b.extend_from_slice(&(N as u32).to_le_bytes());
    for i in 0..N as u64 {
        b.extend_from_slice(&i.to_le_bytes());
        b.extend_from_slice(&[0; 8 + 1 + 4 + 4]);
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    shapes.push(("empty results", frame(&b)));
    // Many released regions.
    let mut b = vec![6, 0, 0, 0, 0];
    b.extend_from_slice(&(N as u32).to_le_bytes());
    b.extend_from_slice(&[0; 8].repeat(N));
    shapes.push(("releases", frame(&b)));
    // A length prefix promising 64 MiB, and 1 MB sent.
    let mut f = frame(&[6; 1_000_000]);
    f[4..8].copy_from_slice(&(64u32 << 20).to_le_bytes());
    shapes.push(("lying length", f));
    for (what, f) in &shapes {
        let (peak, ok) = peak_decoding(f);
        eprintln!(
            "{what}: {} bytes, peak {peak} ({:.2}x), accepted: {ok}",
            f.len(),
            peak as f64 / f.len() as f64
        );
        assert!(
            peak <= 2 * f.len() + 4096,
            "{what}: decoding a {}-byte frame allocated {peak} bytes at its peak",
            f.len()
        );
    }
}
