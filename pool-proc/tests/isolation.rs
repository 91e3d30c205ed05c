//! Isolation of the shared-memory regions that carry large `Buffer`s, attacked from inside a
//! worker with the means any task has (safe Rust and `/proc`).
//!
//! A task finds the regions its worker was lent (`/proc/self/fd` and, where this process may
//! open them, `/proc/self/map_files`), reopens them for writing, and keeps what it opened. It
//! then tries to write the bytes it was lent, to forge "handed back" for them, and, while a task
//! on *another* worker holds its own argument, to read that argument's secret and to rewrite it.
//! The pool must make all of that fail: regions are the parent's per worker (never reused
//! across workers), sealed so that no receiver can write them, and handed back over the
//! receiver's own socket (nothing in a region says whether it is lent).
// Unix only: it attacks regions through `/proc` and memfd seals, which Windows lacks.
#![cfg(unix)]
#![allow(unsafe_code)] // one mmap(2) in the attack, on purpose

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cf_pool_proc::{Buffer, Executor, ProcessPoolExecutor};

const LIMIT: Duration = Duration::from_secs(60);
/// Big enough to be attached (64 KiB and up), one size for all, so that a pool that reuses
/// regions across workers hands the victim the very region the attacker was lent.
const LEN: usize = 1 << 20;
/// Where the bytes of a region start (the first page is the pool's header).
const DATA_AT: u64 = 4096;
const SECRET: &[u8; 16] = b"victim's secret!";

fn pattern(seed: u8) -> Vec<u8> {
    (0..LEN)
        .map(|i| (i as u8).wrapping_mul(seed) ^ 0x5a)
        .collect()
}

/// The victim's argument: a pattern that starts with the secret.
fn secret_pattern() -> Vec<u8> {
    let mut v = pattern(7);
    v[..SECRET.len()].copy_from_slice(SECRET);
    v
}

/// Handles the attacker keeps between its tasks (they run in the same worker process).
static KEPT: Mutex<Vec<(String, File)>> = Mutex::new(Vec::new());

/// Every way this process can name a region that carries buffers: descriptors and mapped
/// files. (A worker's black-box page, `cf-worker-blackbox`, is its own to write by design.)
fn region_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for dir in ["/proc/self/fd", "/proc/self/map_files"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_region = std::fs::read_link(entry.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:cf-buffer"));
            if is_region {
                paths.push(entry.path());
            }
        }
    }
    paths
}

/// What the attack managed; every count but `handles` must stay zero.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Attack {
    /// Regions it could open at all (read-only if not writable).
    handles: usize,
    /// Regions it could open for writing.
    opened_for_write: usize,
    /// Writes that went through: to the bytes, or to the first page (a lease flag lived there).
    writes: usize,
    /// Writable shared mappings it could make.
    writable_maps: usize,
    /// Times it read the victim's secret.
    secrets_seen: usize,
    /// Its own argument changed while it held it.
    own_bytes_changed: bool,
}

/// Tries to write through `file` at `at`, by `pwrite` and through a shared writable mapping.
fn try_write(file: &File, at: u64, attack: &mut Attack) {
    if file.write_at(&[0xEE; 8], at).is_ok() {
        attack.writes += 1;
    }
    let len = 2 * 4096;
    // SAFETY: a fresh mapping the kernel places; nothing of ours lives there; unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(file),
            0,
        )
    };
    if map != libc::MAP_FAILED {
        attack.writable_maps += 1;
        // SAFETY: `map` is a live mapping of `len` bytes.
        unsafe {
            map.cast::<u8>().add(at as usize).write_volatile(0xEE);
            libc::munmap(map, len);
        }
    }
}

/// In the attacker's worker: opens every region it can name, tries to write each, keeps them.
fn grab(arg: Buffer) -> (u32, Attack) {
    let mut attack = Attack::default();
    let mut kept = KEPT.lock().unwrap();
    for path in region_paths() {
        let name = path.display().to_string();
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => {
                attack.handles += 1;
                attack.opened_for_write += 1;
                try_write(&file, DATA_AT, &mut attack);
                try_write(&file, 0, &mut attack);
                kept.push((name, file));
            }
            Err(_) => {
                if let Ok(file) = File::open(&path) {
                    attack.handles += 1;
                    kept.push((name, file));
                }
            }
        }
    }
    attack.own_bytes_changed = !arg.iter().eq(pattern(3).iter());
    (std::process::id(), attack)
}

/// In the attacker's worker: until `stop` exists (or a minute passes), reads every kept
/// region looking for the victim's secret and tries to rewrite it and to clear its first page.
fn scribble(stop: PathBuf) -> (u32, Attack) {
    let mut attack = Attack::default();
    let kept = KEPT.lock().unwrap();
    let deadline = Instant::now() + LIMIT;
    while !stop.exists() && Instant::now() < deadline {
        for (_, file) in kept.iter() {
            let mut head = [0u8; 16];
            if file.read_at(&mut head, DATA_AT).is_ok() && &head == SECRET {
                attack.secrets_seen += 1;
            }
            if file.write_at(&[0xEE; 4096], DATA_AT).is_ok() {
                attack.writes += 1;
            }
            // Where the lease flag of a region used to be: zero means "handed back".
            if file.write_at(&[0], 0).is_ok() {
                attack.writes += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (std::process::id(), attack)
}

/// In the victim's worker: holds its argument for a while, checking it never changes.
fn victim(arg: Buffer) -> (u32, bool) {
    let expected = secret_pattern();
    let until = Instant::now() + Duration::from_millis(500);
    let mut intact = true;
    while Instant::now() < until {
        intact &= arg.iter().eq(expected.iter());
        std::thread::sleep(Duration::from_millis(5));
    }
    (std::process::id(), intact)
}

#[test]
fn a_worker_can_neither_write_its_regions_nor_reach_another_workers_buffers() {
    let _serial = common::exclusive();
    common::within(LIMIT * 2, "isolation attack", || {
        let stop = std::env::temp_dir().join(format!("cf-isolation-stop-{}", std::process::id()));
        let _ = std::fs::remove_file(&stop);
        let pool = ProcessPoolExecutor::builder()
            .max_workers(2)
            .build()
            .unwrap();
        // The attacker's worker is the only one: it is lent a region, opens it, keeps it.
        let (attacker, first) = pool
            .submit(grab, Buffer::from(pattern(3)))
            .unwrap()
            .result_timeout(LIMIT)
            .unwrap()
            .clone();
        // It goes on attacking while a second worker takes a buffer of the same size.
        let scribbling = pool.submit(scribble, stop.clone()).unwrap();
        let deadline = Instant::now() + LIMIT;
        while !scribbling.running() {
            assert!(Instant::now() < deadline, "the attack never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        let held = pool.submit(victim, Buffer::from(secret_pattern())).unwrap();
        let (victim_pid, intact) = *held.result_timeout(LIMIT).unwrap();
        std::fs::write(&stop, b"").unwrap();
        let (scribbler, later) = scribbling.result_timeout(LIMIT).unwrap().clone();
        let _ = std::fs::remove_file(&stop);
        assert_eq!(attacker, scribbler, "the attack ran in one worker");
        assert_ne!(attacker, victim_pid, "the victim ran in another worker");
        eprintln!("attack on its own region: {first:?}; on the victim's: {later:?}");
        // Opening for writing may succeed (the kernel checks seals on write, not on open);
        // writing must not.
        assert_eq!(
            (first.writes, first.writable_maps),
            (0, 0),
            "a task could write, or map writably, the region it was lent: {first:?}"
        );
        assert!(
            !first.own_bytes_changed,
            "a buffer changed while its task held it"
        );
        assert_eq!(later.secrets_seen, 0, "one worker read another's buffer");
        assert_eq!(later.writes, 0, "one worker wrote a region: {later:?}");
        assert!(intact, "a buffer changed while its task held it");
    });
}
