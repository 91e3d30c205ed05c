//! The floor under a process round trip when no socket is involved: two processes that share
//! one page and hand a counter back and forth, either sleeping on it (futex wait/wake, what a
//! blocking design pays per hop) or spinning on it (what busy-waiting buys when both processes
//! have a CPU of their own).
//!
//! The page is a memfd that the partner (this executable re-executed) finds on its standard
//! input; both map it shared. The protocol uses three words of the page, only ever touched
//! through atomics: `turn` (odd: a ping waits for the partner; even: the reply is there),
//! `sleepers` (how many sides sleep on `turn`, so a move calls `FUTEX_WAKE` only when someone
//! sleeps) and `stop`.
//!
//! A spinning side gives up after a while (a few thousand spins, then a few thousand yields)
//! and sleeps like the futex side: while other workloads are measured, an idle partner then
//! takes no CPU from them. In a running ping-pong the answer comes long before that.
//!
//! This module maps memory itself, so it holds the crate's only `unsafe` blocks; the pools' own
//! platform code is elsewhere (cf-pool-proc's `sys`), and this is just a yardstick.
#![allow(unsafe_code)]

use std::fs::File;
use std::hint::{black_box, spin_loop};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapMut;
use rustix::thread::futex;

/// How a side waits for the other's move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Sleep in `futex(FUTEX_WAIT)` at once; the mover calls `futex(FUTEX_WAKE)`.
    Futex,
    /// Spin on the word, then yield the CPU between looks (so a shared CPU still progresses),
    /// and sleep only when the partner has been silent for a long while.
    Spin,
}

impl Wait {
    fn env_value(self) -> &'static str {
        match self {
            Wait::Futex => "shm-futex",
            Wait::Spin => "shm-spin",
        }
    }

    pub(crate) fn from_env_value(v: &str) -> Option<Self> {
        match v {
            "shm-futex" => Some(Wait::Futex),
            "shm-spin" => Some(Wait::Spin),
            _ => None,
        }
    }
}

/// Spins before a spinning waiter starts yielding its CPU.
const SPINS_BEFORE_YIELD: u32 = 1 << 12;
/// Spins and then yields before a spinning waiter sleeps (a yield takes a microsecond or so).
const SPINS_BEFORE_SLEEP: u32 = SPINS_BEFORE_YIELD + (1 << 12);

/// The words of the page.
const TURN: usize = 0;
const SLEEPERS: usize = 1;
const STOP: usize = 2;

/// One shared page and the two words in it.
struct Page {
    /// Kept for the lifetime of the references below.
    map: MmapMut,
}

impl Page {
    /// Maps `file` (a memfd of at least one page) shared.
    fn map(file: &File) -> io::Result<Self> {
        // SAFETY: `MmapMut::map_mut` is unsafe because another process may change the file
        // under the mapping. Here the file is a memfd that only this process and its ping-pong
        // partner can reach, and both touch the mapped bytes only through atomics (`word`), so a
        // concurrent change is never a data race. The file was sized to a page before it was
        // shared.
        let map = unsafe { MmapMut::map_mut(file)? };
        if map.len() < 4 * 3 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "page too small",
            ));
        }
        Ok(Page { map })
    }

    /// The `i`th 32-bit word of the page ([`TURN`], [`SLEEPERS`] or [`STOP`]).
    fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i <= STOP, "the page holds three words");
        let ptr = self.map.as_ptr().cast::<u32>().cast_mut().wrapping_add(i);
        // SAFETY: the mapping is page-aligned and at least 12 bytes long (checked in `map`), so
        // `ptr` is aligned for `u32` and in bounds. It lives as long as `self.map`, which the
        // returned reference borrows. Every access to these bytes, in either process, is
        // atomic: nothing reads or writes them non-atomically, which is what `from_ptr` asks.
        unsafe { AtomicU32::from_ptr(ptr) }
    }
}

/// Waits until `done(turn)`, spinning first if `how` says so, then sleeping on the futex.
fn wait_until(page: &Page, how: Wait, done: impl Fn(u32) -> bool) -> u32 {
    let (turn, sleepers) = (page.word(TURN), page.word(SLEEPERS));
    let mut spins = 0u32;
    loop {
        let v = turn.load(Ordering::Acquire);
        if done(v) {
            return v;
        }
        if how == Wait::Spin && spins < SPINS_BEFORE_SLEEP {
            spins += 1;
            if spins < SPINS_BEFORE_YIELD {
                spin_loop();
            } else {
                std::thread::yield_now();
            }
            continue;
        }
        // Announce the sleep, then look once more: a mover stores `turn` and then reads
        // `sleepers` (both SeqCst), so either it sees us and wakes us, or we see its move here.
        sleepers.fetch_add(1, Ordering::SeqCst);
        let v = turn.load(Ordering::SeqCst);
        if !done(v) {
            // Shared (not process-private) futex: the partner waits on its own mapping of the
            // page. A changed value or an interruption just means: look again.
            let _ = futex::wait(turn, futex::Flags::empty(), v, None);
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stores `v` in `turn` and wakes the partner if it sleeps.
fn publish(page: &Page, v: u32) {
    page.word(TURN).store(v, Ordering::SeqCst);
    if page.word(SLEEPERS).load(Ordering::SeqCst) != 0 {
        let _ = futex::wake(page.word(TURN), futex::Flags::empty(), 1);
    }
}

/// The partner's side: answers every ping until told to stop.
pub(crate) fn serve(how: Wait) -> io::Result<()> {
    let file = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let page = Page::map(&file)?;
    let stop = page.word(STOP);
    loop {
        let v = wait_until(&page, how, |v| {
            v % 2 == 1 || stop.load(Ordering::SeqCst) != 0
        });
        if stop.load(Ordering::SeqCst) != 0 {
            return Ok(());
        }
        publish(&page, v.wrapping_add(1));
    }
}

/// A partner process sharing a page with this one.
pub struct ShmPingPong {
    page: Page,
    how: Wait,
    child: Child,
}

impl std::fmt::Debug for ShmPingPong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmPingPong")
            .field("how", &self.how)
            .field("child", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl ShmPingPong {
    /// Starts the partner (this executable again) and proves it answers.
    ///
    /// # Errors
    ///
    /// If the memfd, the mapping or the process cannot be created.
    pub fn start(how: Wait) -> io::Result<Self> {
        let fd: OwnedFd =
            rustix::fs::memfd_create("cf-benches-pingpong", rustix::fs::MemfdFlags::CLOEXEC)?;
        let file = File::from(fd);
        file.set_len(4096)?;
        let page = Page::map(&file)?;
        let child = Command::new("/proc/self/exe")
            .env(crate::helper::HELPER_ENV, how.env_value())
            .stdin(Stdio::from(file))
            .stdout(Stdio::null())
            .spawn()?;
        let mut pp = ShmPingPong { page, how, child };
        pp.run(1);
        Ok(pp)
    }

    /// `iters` round trips: publish an odd value, wait for the partner's even one.
    pub fn run(&mut self, iters: u64) -> Duration {
        let turn = self.page.word(TURN);
        let start = Instant::now();
        for _ in 0..iters {
            let ping = turn.load(Ordering::Relaxed).wrapping_add(1);
            publish(&self.page, ping);
            black_box(wait_until(&self.page, self.how, |v| v != ping));
        }
        start.elapsed()
    }
}

impl Drop for ShmPingPong {
    fn drop(&mut self) {
        self.page.word(STOP).store(1, Ordering::SeqCst);
        // Same parity, so the partner cannot take it for a ping; it wakes and sees `stop`.
        let turn = self.page.word(TURN).load(Ordering::Relaxed);
        publish(&self.page, turn.wrapping_add(2));
        let _ = self.child.wait();
    }
}
