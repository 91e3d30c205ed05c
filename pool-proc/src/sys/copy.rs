//! Large copies, shared with helper threads when this process may use more than one CPU.
//!
//! Every byte an attached buffer carries is copied twice on its way: into a shared-memory region
//! by its sender, out of it by its receiver (see `crate::shm`). While one side of a pool copies,
//! the other side waits for it, so a second CPU is often idle at that moment; and two threads
//! copy faster than one while the bytes are still in the cache (not from memory, where one
//! thread already draws about what there is).
//!
//! So a copy of [`SHARED_MIN`] bytes or more is cut into [`PIECE`]-sized pieces, and up to
//! [`MAX_HELPERS`] short-lived threads (one fewer than the CPUs this process may use) take
//! pieces alongside the caller. The caller never waits for a helper to *start*: it copies pieces
//! until none is left to take, then waits only for pieces a helper has taken and not finished
//! (at most one each, a [`PIECE`]). A helper that starts late finds nothing left and ends
//! without touching either buffer; a helper that cannot be started at all (no threads left)
//! leaves the whole copy to the caller. Where the process may use one CPU only
//! (`available_parallelism`, which follows CPU affinity and cgroup quotas), no helper is
//! started: there a second thread could only take turns with the first.
//!
//! What it buys depends on what the other CPU was doing and on the cache, so here are the
//! figures measured on the 2-vCPU machine this was written on (32 MiB of L3; medians):
//!
//! * 16 MiB copies back to back between the same two buffers (which then mostly stay in the
//!   cache): 0.42 ms shared against 0.65 ms alone (`copy_scaling` below prints these);
//! * the 16 MiB echoes of `benches` (`compare`, interleaved runs): `Buffer` 1.18-1.25x the
//!   bandwidth, `serde_bytes::ByteBuf` 1.06-1.12x;
//! * a steady loop of 16 MiB `ByteBuf` echoes: 3 % faster; with both CPUs kept busy by other
//!   processes: no change (the caller does nearly every piece itself);
//! * copies from memory (buffers the cache does not hold), or a copy that starts after the
//!   other CPU idled for a few ms: no gain.
//!
//! A helper costs a thread start (tens of microseconds) against at least 0.3 ms of copying, and
//! counts, while it lives, against the process's thread limits (`RLIMIT_NPROC`, a cgroup's
//! `pids.max`); where those refuse it, the caller copies alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread;

/// Copies this long and longer are shared (below, a thread start costs more than it saves:
/// measured here, cache-warm 4 MiB copies were 1.3x slower split).
pub(crate) const SHARED_MIN: usize = if cfg!(miri) { 64 } else { 8 << 20 };
/// What one thread takes at a time: short enough that the caller's last wait is brief, long
/// enough that taking a piece costs nothing next to copying it.
const PIECE: usize = if cfg!(miri) { 16 } else { 1 << 20 };
/// At most this many helpers per copy (beyond four threads, memory is the limit anyway).
const MAX_HELPERS: usize = 3;

/// Helpers a shared copy may start: [`helpers_for`] the CPUs this process may use. Read once
/// (it reads cgroup files on Linux).
fn helpers() -> usize {
    static HELPERS: OnceLock<usize> = OnceLock::new();
    *HELPERS.get_or_init(|| {
        helpers_for(thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    })
}

/// One fewer than `cpus`, at most [`MAX_HELPERS`]: none on one CPU, where a helper could only
/// take turns with the caller.
fn helpers_for(cpus: usize) -> usize {
    cpus.saturating_sub(1).min(MAX_HELPERS)
}

/// One copy being shared: where from, where to, and which pieces are taken and done.
struct Shared {
    src: *const u8,
    dst: *mut u8,
    len: usize,
    pieces: usize,
    /// The next piece to take; past `pieces`, none is left.
    next: AtomicUsize,
    /// Pieces copied. The caller returns once all are. A lock and a condition variable, not
    /// a counter and `Thread::unpark`: an unpark the caller no longer waits for would stay
    /// pending on its thread and wake the next, unrelated `park` there.
    done: Mutex<usize>,
    all_done: Condvar,
}

// SAFETY: `src` and `dst` are only dereferenced in `take_pieces`, for a piece taken through
// `next` (each piece by exactly one thread), while the caller of `copy` is still inside it:
// it returns only once `done` counts every piece, and a thread that takes no piece touches
// neither pointer. What `copy`'s caller promised about the two ranges (valid, not
// overlapping, and, for `dst`, written by nothing else during the call) therefore holds for
// every access from any thread.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`: every field but the two pointers is `Sync`, and the pointers are
// only used for disjoint pieces, each by the one thread that took it.
unsafe impl Sync for Shared {}

impl Shared {
    /// Copies pieces until none is left to take.
    fn take_pieces(&self) {
        loop {
            let piece = self.next.fetch_add(1, Ordering::Relaxed);
            if piece >= self.pieces {
                return;
            }
            let at = piece * PIECE;
            let n = PIECE.min(self.len - at);
            // SAFETY: `at + n <= len`, so both ranges lie inside what `copy`'s caller promised
            // is valid (for reads at `src`, for writes at `dst`) and not overlapping; this
            // thread alone took `piece` (`fetch_add` hands each number out once), so no other
            // thread writes these destination bytes; and `copy` has not returned, since
            // `done` does not count this piece yet.
            unsafe { std::ptr::copy_nonoverlapping(self.src.add(at), self.dst.add(at), n) };
            // The lock orders this piece's bytes before the caller's return.
            self.piece_done();
        }
    }

    fn piece_done(&self) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        *done += 1;
        if *done == self.pieces {
            self.all_done.notify_all();
        }
    }
}

/// Copies `len` bytes from `src` to `dst`, as `std::ptr::copy_nonoverlapping` does, with
/// helper threads for long copies (see the module docs). Returns once every byte is copied.
///
/// # Safety
///
/// As for `copy_nonoverlapping`: `src` is valid for reads and `dst` for writes of `len` bytes,
/// for the whole call, and the two ranges do not overlap. In addition nothing else writes
/// `dst..dst + len` during the call (several threads of this process write it).
pub(crate) unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract, passed on.
    unsafe { copy_with(src, dst, len, helpers(), start_helper) };
}

/// Starts a helper on `shared`; `false` if no thread could be had.
fn start_helper(shared: Arc<Shared>) -> bool {
    thread::Builder::new()
        .name("cf-copy".into())
        .spawn(move || shared.take_pieces())
        .is_ok()
}

/// [`copy`] with `helpers` helpers, each started by `start` (tests start them late, or not at
/// all).
///
/// # Safety
///
/// As for [`copy`].
unsafe fn copy_with(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    helpers: usize,
    start: impl Fn(Arc<Shared>) -> bool,
) {
    let pieces = len.div_ceil(PIECE);
    if len < SHARED_MIN || helpers == 0 {
        // SAFETY: the caller's contract (see `copy`).
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    }
    let shared = Arc::new(Shared {
        src,
        dst,
        len,
        pieces,
        next: AtomicUsize::new(0),
        done: Mutex::new(0),
        all_done: Condvar::new(),
    });
    for _ in 0..helpers {
        if !start(Arc::clone(&shared)) {
            break;
        }
    }
    shared.take_pieces();
    // Only pieces a helper took and has not finished are left: at most one per helper.
    let mut done = shared.done.lock().unwrap_or_else(PoisonError::into_inner);
    while *done < pieces {
        done = shared
            .all_done
            .wait(done)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 20) as u8)
            .collect()
    }

    /// Runs `f` on a thread of its own and waits at most a minute for it: a copy that waits
    /// for a piece nobody copies fails the test instead of hanging it.
    fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("the copy hung")
    }

    fn copied(
        src: &[u8],
        helpers: usize,
        start: impl Fn(Arc<Shared>) -> bool + Send + 'static,
    ) -> Vec<u8> {
        let src = src.to_vec();
        within(move || {
            let mut dst = vec![0u8; src.len()];
            // SAFETY: two distinct live buffers of `src.len()` bytes, nothing else writes `dst`.
            unsafe { copy_with(src.as_ptr(), dst.as_mut_ptr(), src.len(), helpers, start) };
            dst
        })
    }

    /// Every byte arrives, at lengths around the threshold and not a whole number of pieces,
    /// with any number of helpers.
    #[test]
    fn shared_copies_are_exact() {
        for len in [0, 1, SHARED_MIN - 1, SHARED_MIN, SHARED_MIN + PIECE / 2 + 7, 3 * SHARED_MIN + 1]
        {
            let src = pattern(len, len as u8);
            for helpers in 0..=MAX_HELPERS {
                assert!(copied(&src, helpers, start_helper) == src, "{len} bytes, {helpers}");
            }
        }
    }

    /// Helpers that cannot be started leave the copy whole, to the caller.
    #[test]
    fn a_copy_without_helpers_is_whole() {
        let src = pattern(SHARED_MIN + 12345, 9);
        assert!(copied(&src, MAX_HELPERS, |_| false) == src);
    }

    /// The caller does not wait for a helper to start, and a helper that starts after the
    /// copy ended takes no piece (so touches neither buffer, which may be gone by then).
    #[test]
    fn a_late_helper_takes_nothing() {
        let (tx, rx) = mpsc::channel::<Arc<Shared>>();
        let src = pattern(2 * SHARED_MIN, 3);
        // The helper is only queued here; it runs below, after the copy has returned.
        let dst = copied(&src, 2, move |shared| tx.send(shared).is_ok());
        assert!(dst == src);
        drop(dst);
        drop(src);
        let mut late = 0;
        for helper in rx.try_iter() {
            // Checked before the helper runs: one that found a piece would now write freed
            // memory.
            assert!(
                helper.next.load(Ordering::Relaxed) >= helper.pieces,
                "the caller left pieces behind"
            );
            helper.take_pieces();
            assert_eq!(*helper.done.lock().unwrap(), helper.pieces);
            late += 1;
        }
        assert_eq!(late, 2);
    }

    /// No helper where the process may use one CPU; one fewer than the CPUs, at most
    /// [`MAX_HELPERS`], elsewhere.
    #[test]
    fn helpers_leave_one_cpu_to_the_caller() {
        assert_eq!(helpers_for(0), 0);
        assert_eq!(helpers_for(1), 0);
        assert_eq!(helpers_for(2), 1);
        assert_eq!(helpers_for(64), MAX_HELPERS);
    }

    /// A `start` for `copy_with` whose helper takes the first piece at once (so the caller
    /// cannot) and writes it only after a while; the helper's handle goes to `tx`, for the test
    /// to join before it frees the buffers.
    fn slow_first_piece(
        tx: mpsc::Sender<thread::JoinHandle<()>>,
    ) -> impl Fn(Arc<Shared>) -> bool + Send + 'static {
        move |shared: Arc<Shared>| {
            let piece = shared.next.fetch_add(1, Ordering::Relaxed);
            assert_eq!(piece, 0);
            let helper = thread::spawn(move || {
                thread::sleep(std::time::Duration::from_millis(50));
                // SAFETY: as in `take_pieces`: piece 0 was taken for this thread, and the copy
                // waits for it (the test keeps both buffers until this thread is joined).
                unsafe { std::ptr::copy_nonoverlapping(shared.src, shared.dst, PIECE) };
                shared.piece_done();
            });
            tx.send(helper).is_ok()
        }
    }

    /// Two copies in a row on one thread: the second waits for its own helper's piece, whatever
    /// the first left behind on that thread.
    #[test]
    fn copies_in_a_row_each_wait_for_their_helpers() {
        let src = pattern(SHARED_MIN, 8);
        let dst = within(move || {
            let mut dst = vec![0u8; src.len()];
            for round in 0..2 {
                dst.fill(0);
                let (tx, rx) = mpsc::channel();
                let start = slow_first_piece(tx);
                // SAFETY: two distinct live buffers, kept until the helper is joined.
                unsafe { copy_with(src.as_ptr(), dst.as_mut_ptr(), src.len(), 1, start) };
                let written = dst[..PIECE] == src[..PIECE];
                rx.recv().unwrap().join().unwrap();
                assert!(written, "round {round}: returned before the helper's piece was written");
            }
            (dst, src)
        });
        assert!(dst.0 == dst.1);
    }

    /// A helper that took a piece and is slow to finish it holds the caller until it does.
    #[test]
    fn the_caller_waits_for_pieces_a_helper_took() {
        let src = pattern(SHARED_MIN, 5);
        let (tx, rx) = mpsc::channel();
        let start = slow_first_piece(tx);
        let (written, dst, src) = within(move || {
            let mut dst = vec![0u8; src.len()];
            // SAFETY: two distinct live buffers, kept until the helper is joined.
            unsafe { copy_with(src.as_ptr(), dst.as_mut_ptr(), src.len(), 1, start) };
            let written = dst[..PIECE] == src[..PIECE];
            rx.recv().unwrap().join().unwrap();
            (written, dst, src)
        });
        assert!(written, "the copy returned before the helper's piece was written");
        assert!(dst == src);
    }

    /// Prints how long 16 and 64 MiB copies take alone and shared (`cargo test --release -p
    /// cf-pool-proc copy_scaling -- --ignored --nocapture`): the figures in the module docs.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn copy_scaling() {
        for mib in [4usize, 16, 64] {
            let src = pattern(mib << 20, 1);
            let mut dst = vec![0u8; src.len()];
            let mut times = [Vec::new(), Vec::new()];
            for _ in 0..41 {
                for (i, helpers) in [0, helpers()].into_iter().enumerate() {
                    // No `within` here: a measurement, run only by hand.
                    let t = Instant::now();
                    // SAFETY: two distinct live buffers, nothing else writes `dst`.
                    unsafe {
                        copy_with(src.as_ptr(), dst.as_mut_ptr(), src.len(), helpers, start_helper);
                    }
                    times[i].push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            for t in &mut times {
                t.sort_by(f64::total_cmp);
            }
            println!(
                "{mib} MiB: alone {:.3} ms, shared ({} helpers) {:.3} ms",
                times[0][20],
                helpers(),
                times[1][20]
            );
        }
    }
}
