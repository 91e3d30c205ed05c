//! The machine's limits, measured in the same run as the pools: a Unix socketpair ping-pong
//! between two processes (what any process pool must pay per round trip), a ping-pong between
//! two threads over channels (the same for a thread pool), `memcpy`, and the four copies a
//! byte-string echo needs ([`copy_chain`]).
//!
//! The ping-pong partner is this very executable re-executed with [`HELPER_ENV`] set; it finds
//! its end of the socketpair on its standard input, so no descriptor juggling (and no `unsafe`)
//! is needed. [`crate::init`] turns such a process into the echo server before `main` does
//! anything else.

use std::hint::black_box;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::helper::HELPER_ENV;

/// Bytes in one small ping-pong message: about one `noop` task frame of cf-pool-proc
/// (length, kind, count, id, code offset, payload) and one result frame.
pub const SMALL_MESSAGE: usize = 32;

/// The socketpair partner: echoes frames on its standard input until the parent hangs up.
pub(crate) fn serve() -> io::Result<()> {
    let socket = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut out = socket.try_clone()?;
    // Buffered like a pool worker's reader: a small frame arrives in one `read`.
    let mut input = BufReader::with_capacity(64 * 1024, socket);
    let mut frame = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let n = u32::from_le_bytes(len) as usize;
        frame.resize(4 + n, 0);
        frame[..4].copy_from_slice(&len);
        input.read_exact(&mut frame[4..])?;
        out.write_all(&frame)?;
    }
}

/// A length-prefixed message ready to send, so a round trip copies nothing in user space.
#[derive(Debug, Clone)]
pub struct Message {
    frame: Vec<u8>,
}

impl Message {
    /// Frames `payload`.
    ///
    /// # Panics
    ///
    /// If `payload` is 4 GiB or more.
    #[must_use]
    pub fn new(payload: &[u8]) -> Self {
        let len = u32::try_from(payload.len()).expect("payload under 4 GiB");
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(payload);
        Message { frame }
    }

    /// A message whose frame is `len` bytes in all, header included.
    #[must_use]
    pub fn of_frame_len(len: usize) -> Self {
        Self::new(&crate::tasks::payload(len.saturating_sub(4)))
    }
}

/// A partner process at the other end of a socketpair that sends every frame back.
#[derive(Debug)]
pub struct PingPong {
    socket: UnixStream,
    child: Child,
    reply: Vec<u8>,
}

impl PingPong {
    /// Starts the partner (this executable again).
    ///
    /// # Errors
    ///
    /// If the socketpair or the process cannot be created.
    pub fn start() -> io::Result<Self> {
        let (mine, theirs) = UnixStream::pair()?;
        let child = Command::new("/proc/self/exe")
            .env(HELPER_ENV, "socketpair")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()?;
        let mut pp = PingPong {
            socket: mine,
            child,
            reply: Vec::new(),
        };
        // Proves the partner is up before anything is timed.
        pp.round_trip(&Message::of_frame_len(SMALL_MESSAGE))?;
        Ok(pp)
    }

    /// Sends `message` and reads it back.
    ///
    /// # Errors
    ///
    /// If the partner is gone.
    pub fn round_trip(&mut self, message: &Message) -> io::Result<()> {
        self.socket.write_all(&message.frame)?;
        self.reply.resize(message.frame.len(), 0);
        self.socket.read_exact(&mut self.reply)?;
        black_box(&self.reply);
        Ok(())
    }

    /// `iters` round trips of `message`.
    ///
    /// # Panics
    ///
    /// If the partner dies.
    pub fn run(&mut self, message: &Message, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.round_trip(message).expect("ping-pong partner alive");
        }
        start.elapsed()
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }
}

/// A partner thread that sends every value back over a channel: one thread wake-up each way,
/// the floor under a thread pool's round trip.
#[derive(Debug)]
pub struct ThreadPingPong {
    to: Option<mpsc::Sender<u64>>,
    from: mpsc::Receiver<u64>,
    partner: Option<JoinHandle<()>>,
}

impl ThreadPingPong {
    /// Starts the partner thread.
    ///
    /// # Panics
    ///
    /// If the thread cannot be spawned.
    #[must_use]
    pub fn start() -> Self {
        let (to, their_in) = mpsc::channel::<u64>();
        let (their_out, from) = mpsc::channel::<u64>();
        let partner = std::thread::Builder::new()
            .name("thread-pingpong".into())
            .spawn(move || {
                for v in their_in {
                    if their_out.send(v).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the ping-pong thread");
        ThreadPingPong {
            to: Some(to),
            from,
            partner: Some(partner),
        }
    }

    /// `iters` round trips.
    ///
    /// # Panics
    ///
    /// If the partner thread is gone.
    pub fn run(&mut self, iters: u64) -> Duration {
        let to = self.to.as_ref().expect("running");
        let start = Instant::now();
        for i in 0..iters {
            to.send(i).expect("partner alive");
            black_box(self.from.recv().expect("partner alive"));
        }
        start.elapsed()
    }
}

impl Drop for ThreadPingPong {
    fn drop(&mut self) {
        self.to = None;
        if let Some(h) = self.partner.take() {
            let _ = h.join();
        }
    }
}

/// `iters` rounds of the four copies a byte-string echo through a process pool cannot do
/// without, in this one thread, between buffers allocated (and faulted in) beforehand: no
/// process, no socket, no wake-up, no fresh memory. Per round, `src`'s bytes go into a first
/// buffer (the parent's shared-memory region), from it into a second (the worker's
/// `ByteBuf`), a third (the worker's region) and a fourth (the parent's result).
///
/// Serde hands a serializer a borrowed slice that may be a temporary, so a sender must copy
/// it while serializing; and a receiver's `ByteBuf` owns a `Vec` from the global allocator,
/// which no shared mapping can be. So each direction costs two copies, whatever the transport:
/// this is the best a `ByteBuf` echo can do, next to the single warm [`memcpy`].
#[must_use]
pub fn copy_chain(src: &[u8], iters: u64) -> Duration {
    let mut bufs: Vec<Vec<u8>> = (1..=4u8).map(|i| vec![i; src.len()]).collect();
    let start = Instant::now();
    for _ in 0..iters {
        bufs[0].copy_from_slice(black_box(src));
        for k in 1..bufs.len() {
            let (done, next) = bufs.split_at_mut(k);
            next[0].copy_from_slice(black_box(&done[k - 1]));
        }
        black_box(&mut bufs);
    }
    start.elapsed()
}

/// `iters` copies of `src` into a buffer allocated (and faulted in) beforehand. Both stay in
/// the cache between copies wherever it holds twice the payload (a 16 MiB payload in a 32 MiB
/// last-level cache), so this is the speed of the cache there, of memory elsewhere; see
/// [`UncachedCopy`] for memory's.
#[must_use]
pub fn memcpy(src: &[u8], iters: u64) -> Duration {
    // Not `vec![0; n]`: zeroed memory comes from the OS untouched, and the first copy would
    // time page faults rather than the copy.
    let mut dst = vec![1u8; src.len()];
    dst.copy_from_slice(src);
    let start = Instant::now();
    for _ in 0..iters {
        dst.copy_from_slice(black_box(src));
        black_box(&mut dst);
    }
    start.elapsed()
}

/// Copies of one payload between buffers that are not in the cache when each copy starts: the
/// speed of memory for one copy, whatever the cache holds. The payloads are slots of a source
/// and a destination arena, each at least four times the last-level cache (the rule of the
/// STREAM benchmark), taken in turn, so a slot has left the cache by the time it comes round
/// again.
///
/// Context, not a limit of an echo: copies in a chain (an echo's, or [`copy_chain`]'s) read
/// part of what the copy before them left in the cache, and run faster than this.
#[derive(Debug)]
pub struct UncachedCopy {
    src: Vec<u8>,
    dst: Vec<u8>,
    len: usize,
    slots: usize,
    next: usize,
}

/// The least an arena holds, whatever the cache the machine reports.
const ARENA_MIN: usize = 128 << 20;
/// The most an arena holds, however large the cache.
const ARENA_MAX: usize = 1 << 30;
/// What an arena holds where the cache size cannot be read.
const ARENA_UNKNOWN: usize = 256 << 20;

impl UncachedCopy {
    /// Arenas for `len`-byte payloads, allocated and faulted in now.
    #[must_use]
    pub fn new(len: usize) -> Self {
        let len = len.max(1);
        let arena = last_level_cache().map_or(ARENA_UNKNOWN, |cache| {
            (4 * cache).clamp(ARENA_MIN, ARENA_MAX)
        });
        let slots = arena.div_ceil(len).max(2);
        // Not `vec![0; n]`: zeroed memory comes from the OS untouched (see [`memcpy`]).
        UncachedCopy {
            src: vec![1u8; slots * len],
            dst: vec![2u8; slots * len],
            len,
            slots,
            next: 0,
        }
    }

    /// `iters` copies, each from and into the next slots.
    pub fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            let at = self.next * self.len;
            let range = at..at + self.len;
            self.dst[range.clone()].copy_from_slice(black_box(&self.src[range]));
            black_box(&mut self.dst);
            self.next = (self.next + 1) % self.slots;
        }
        start.elapsed()
    }

    /// Bytes of each arena.
    #[must_use]
    pub fn arena_bytes(&self) -> usize {
        self.slots * self.len
    }
}

/// The largest CPU cache of CPU 0, in bytes, as Linux reports it; `None` elsewhere.
fn last_level_cache() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("size")).ok())
        .filter_map(|size| parse_cache_size(size.trim()))
        .max()
}

/// `"32768K"` (sysfs's way) to bytes.
fn parse_cache_size(size: &str) -> Option<usize> {
    let (digits, unit) = match size.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => size.split_at(at),
        None => (size, ""),
    };
    let n: usize = digits.parse().ok()?;
    let scale = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod uncached_tests {
    use super::*;

    #[test]
    fn cache_sizes_read_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("32768K"), Some(32 << 20));
        assert_eq!(parse_cache_size("2M"), Some(2 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("12Q"), None);
        assert_eq!(parse_cache_size(""), None);
    }

    /// The arena outgrows the cache four times over, and every slot is used in turn.
    #[test]
    fn an_uncached_copy_walks_arenas_four_times_the_cache() {
        let len = 16 << 20;
        let mut copy = UncachedCopy::new(len);
        let cache = last_level_cache().unwrap_or(0);
        assert!(copy.arena_bytes() >= (4 * cache).min(ARENA_MAX));
        assert!(copy.arena_bytes() >= ARENA_MIN);
        // A payload that does not divide the arena: the slots still cover it.
        let odd = UncachedCopy::new(3 << 20);
        assert!(odd.arena_bytes() >= (4 * cache).clamp(ARENA_MIN, ARENA_MAX));
        copy.run(copy.slots as u64 + 1);
        assert_eq!(copy.next, 1);
        assert!(copy.dst.iter().all(|&b| b == 1), "a slot was never copied");
    }
}
