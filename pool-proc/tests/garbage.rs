//! Garbage from a worker: a task writes bytes of its own to the worker's socket, so the parent
//! reads a frame the worker's protocol code never sent. The parent must treat that worker as
//! broken: kill it, fail exactly the futures it held with `WorkerDied`, and go on; nothing may
//! hang. The decoder itself is fuzzed by `fuzz/fuzz_targets/worker_frame.rs`; the first tests
//! here pin the hand-built frames its seed corpus is made of.
// Unix only for now: it writes to the worker's socket descriptor with libc.
#![cfg(unix)]
#![allow(unsafe_code)] // write(2) on the worker's inherited socket, on purpose

mod common;

use std::time::Duration;

use cf_pool_proc::fuzzing::parse_worker_frame;
use cf_pool_proc::{Executor, ExitCause, ProcessPoolExecutor, TaskError};

const LIMIT: Duration = Duration::from_secs(60);

// Frames as protocol.rs lays them out: u32 LE body length, kind byte, fields little-endian,
// byte strings as u32 LE length + bytes.

fn frame(body: &[u8]) -> Vec<u8> {
    // Magic, body length, body.
    let mut f = b"cfP\x01".to_vec();
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn ready(pid: u32) -> Vec<u8> {
    let mut b = vec![4];
    b.extend_from_slice(&pid.to_le_bytes());
    frame(&b)
}

fn init_failed(message: &str) -> Vec<u8> {
    // Kind, then why the worker could not start (1: the initializer), then the message.
    let mut b = vec![5, 1];
    b.extend_from_slice(&(message.len() as u32).to_le_bytes());
    b.extend_from_slice(message.as_bytes());
    frame(&b)
}

/// A `Results` frame of `(id, nanos, ok, bytes)` records, none with attached buffers.
fn results(records: &[(u64, u64, bool, &[u8])]) -> Vec<u8> {
    let records: Vec<_> = records
        .iter()
        .map(|&(id, nanos, ok, bytes)| (id, nanos, ok, bytes, &[][..]))
        .collect();
    results_attached(&records)
}

/// A `Results` frame whose records list attachments: `Ok(len)` is a region of `len` bytes
/// whose descriptor came with the frame (tag 0, then the length and the lend number, here 1),
/// `Err` a buffer the worker could not send, with why (tag 1). It releases no region.
#[allow(clippy::type_complexity)]
fn results_attached(records: &[(u64, u64, bool, &[u8], &[Result<u64, &str>])]) -> Vec<u8> {
    let mut b = vec![6];
    b.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (id, nanos, ok, bytes, attached) in records {
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&nanos.to_le_bytes());
        b.push(u8::from(*ok));
        b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        b.extend_from_slice(bytes);
        b.extend_from_slice(&(attached.len() as u32).to_le_bytes());
        for a in *attached {
            match a {
                Ok(len) => {
                    b.push(0);
                    b.extend_from_slice(&len.to_le_bytes());
                    b.extend_from_slice(&1u64.to_le_bytes());
                }
                Err(why) => {
                    b.push(1);
                    b.extend_from_slice(&(why.len() as u32).to_le_bytes());
                    b.extend_from_slice(why.as_bytes());
                }
            }
        }
    }
    b.extend_from_slice(&0u32.to_le_bytes()); // released: none
    frame(&b)
}

#[test]
fn hand_built_worker_frames_decode_and_every_mutilation_is_refused() {
    let valid = [
        ready(1234),
        init_failed("no database today"),
        results(&[]),
        results(&[(7, 1500, true, &[49])]),
        results(&[(7, 1, true, b"abc"), (8, 2, false, &[1])]),
        results_attached(&[(9, 3, true, &[0, 1], &[Ok(70_000), Err("no memory")])]),
    ];
    for f in &valid {
        assert_eq!(parse_worker_frame(f, 1 << 20), Ok(()), "{f:?}");
        // The length is checked against `max` before anything is read or allocated.
        let err = parse_worker_frame(f, f.len() - 9).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        for cut in 0..f.len() {
            assert!(
                parse_worker_frame(&f[..cut], 1 << 20).is_err(),
                "cut {cut} of {f:?}"
            );
        }
        // One byte more in the body than its records use.
        let mut long = f[8..].to_vec();
        long.push(0);
        assert!(
            parse_worker_frame(&frame(&long), 1 << 20).is_err(),
            "{long:?}"
        );
    }
    for kind in [0u8, 1, 2, 3, 7, 255] {
        let err = parse_worker_frame(&frame(&[kind, 0, 0, 0, 0]), 1 << 20).unwrap_err();
        assert!(
            err.contains("kind") || err.contains("may not send"),
            "{kind}: {err}"
        );
    }
    assert!(
        parse_worker_frame(&frame(&[]), 1 << 20).is_err(),
        "empty body"
    );
    let absurd_count = frame(&[6, 0xff, 0xff, 0xff, 0xff]);
    assert!(parse_worker_frame(&absurd_count, 1 << 20).is_err());
    let bad_status = results(&[(1, 1, true, b"")]);
    let mut bad_status = bad_status.clone();
    bad_status[8 + 1 + 4 + 16] = 2;
    assert!(parse_worker_frame(&bad_status, 1 << 20).is_err());
    let mut bad_tag = results_attached(&[(1, 1, true, b"", &[Ok(70_000)])]);
    let tag = bad_tag.len() - 4 - 17;
    bad_tag[tag] = 2;
    assert!(parse_worker_frame(&bad_tag, 1 << 20).is_err());
}

/// The fuzz seeds are hand-built frames too; if the protocol changes they must follow.
#[test]
fn fuzz_seed_corpus_matches_the_protocol() {
    const MAXES: [usize; 6] = [16, 64, 256, 4096, 65_536, 1 << 20];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/worker_frame");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("the seed corpus") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&path).unwrap();
        let max = MAXES[usize::from(data[0]) % MAXES.len()];
        let parsed = parse_worker_frame(&data[1..], max);
        let should_parse = !matches!(name.as_str(), "tasks_from_worker" | "ascii_text");
        assert_eq!(parsed.is_ok(), should_parse, "seed {name}: {parsed:?}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} seeds");
}

/// What a task writes to its worker's socket.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
enum Garbage {
    /// A well-framed body of a kind no one sends.
    UnknownKind,
    /// A zero length prefix.
    ZeroLength,
    /// A frame only the parent may send.
    TasksFrame,
    /// A well-formed result for a task this worker does not hold.
    ForeignResult,
    /// A `Returned` frame (tasks given back unstarted) that no `Reclaim` asked for.
    UnaskedReturned,
    /// A trailing byte after a valid `Ready`.
    TrailingByte,
    /// Text, as from a stray `write` to the wrong descriptor: its first four bytes read as a
    /// length of about 1.8 GB.
    Text,
    /// A length prefix promising more bytes than ever come.
    Truncated,
}

impl Garbage {
    fn bytes(self) -> Vec<u8> {
        match self {
            Garbage::UnknownKind => frame(&[0xEE, 1, 2]),
            Garbage::ZeroLength => [&b"cfP\x01"[..], &[0, 0, 0, 0]].concat(),
            Garbage::TasksFrame => frame(&[2, 0, 0, 0, 0]),
            Garbage::ForeignResult => results(&[(u64::MAX, 1, true, &[0])]),
            // Kind 8 with no task: well formed, and harmless but for being unasked.
            Garbage::UnaskedReturned => frame(&[8, 0, 0, 0, 0]),
            Garbage::TrailingByte => {
                let mut f = ready(1);
                f[0] += 1;
                f.push(0);
                f
            }
            Garbage::Text => b"hello from a task\n".to_vec(),
            Garbage::Truncated => {
                // A well-formed header, then far fewer bytes than it promises: the parent must
                // notice the stall (10 s without progress), not wait forever.
                let mut f = b"cfP\x01".to_vec();
                f.extend_from_slice(&1000u32.to_le_bytes());
                f.extend_from_slice(&[6, 1, 0, 0, 0]);
                f
            }
        }
    }
}

/// The descriptors of this worker that are sockets: `(fd, inode)`. stdin/out/err are skipped
/// as they are whatever the test harness inherited to us.
fn sockets() -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if fd <= 2 {
            continue;
        }
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().into_owned();
            if let Some(inode) = target.strip_prefix("socket:") {
                found.push((fd, inode.to_owned()));
            }
        }
    }
    found
}

/// In a worker: find the one socket, write `garbage` to it, return normally (the real result
/// frame then follows the garbage).
fn write_garbage(garbage: Garbage) -> Result<u32, String> {
    let mut socks = sockets();
    socks.sort();
    let mut inodes: Vec<&str> = socks.iter().map(|(_, i)| i.as_str()).collect();
    inodes.sort_unstable();
    inodes.dedup();
    // Two sockets: the channel (inherited at the lowest number, and the worker's own clone of
    // it) and the doorbell that came with the handshake.
    if socks.is_empty() || inodes.len() != 2 {
        return Err(format!(
            "expected two sockets in the worker, found {socks:?}"
        ));
    }
    let fd = socks[0].0;
    let bytes = garbage.bytes();
    let mut written = 0;
    while written < bytes.len() {
        // SAFETY: write(2) from a live buffer to a descriptor this process owns.
        let n = unsafe { libc::write(fd, bytes[written..].as_ptr().cast(), bytes.len() - written) };
        if n <= 0 {
            return Err(format!(
                "write to fd {fd}: {}",
                std::io::Error::last_os_error()
            ));
        }
        written += n as usize;
    }
    Ok(std::process::id())
}

fn sleeps(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn double(x: u64) -> u64 {
    x * 2
}

/// A worker that sends `garbage` is killed; its future fails with `WorkerDied`; a task on
/// another worker is untouched; the pool goes on; nothing leaks.
fn garbage_kills_only_its_worker(garbage: Garbage) {
    let _serial = common::exclusive();
    let snapshot = common::Snapshot::take();
    common::within(LIMIT * 2, &format!("{garbage:?}"), move || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(2)
            .build()
            .unwrap();
        // An innocent task on the first worker, running while the second one misbehaves.
        let innocent = pool.submit(sleeps, 500).unwrap();
        let deadline = std::time::Instant::now() + LIMIT;
        while !innocent.running() {
            assert!(std::time::Instant::now() < deadline, "never started");
            std::thread::sleep(Duration::from_millis(2));
        }
        let culprit = pool.submit(write_garbage, garbage).unwrap();
        let outcome = culprit.result_timeout(Duration::from_secs(20)).cloned();
        let mut pids = pool.worker_pids();
        if matches!(outcome, Err(TaskError::Timeout { .. })) {
            // Unblock the parent's reader so the pool can be dropped, then fail.
            for &p in &pids {
                common::sigkill_child(p);
            }
            drop(pool);
            panic!(
                "{garbage:?}: the garbage frame was never refused; the parent is still \
                 blocked reading it (the culprit's future is pending after 20 s)"
            );
        }
        let innocent_pid = *innocent.result_timeout(LIMIT).expect("innocent task");
        match outcome {
            Err(TaskError::WorkerDied { pid, cause, .. }) => {
                assert_ne!(
                    pid, innocent_pid,
                    "{garbage:?}: the wrong worker was blamed"
                );
                assert_eq!(cause, ExitCause::Signal(libc::SIGKILL), "{garbage:?}");
                pids.push(pid);
            }
            Ok(Err(setup)) => panic!("{garbage:?}: {setup}"),
            other => panic!("{garbage:?}: expected WorkerDied, got {other:?}"),
        }
        let after = pool.submit(double, 21).unwrap();
        assert_eq!(
            after.result_timeout(LIMIT),
            Ok(&42),
            "{garbage:?}: pool goes on"
        );
        pids.extend(pool.worker_pids());
        drop(pool);
        common::assert_gone(pids);
    });
    common::assert_zombies_reaped();
    snapshot.assert_restored();
}

#[test]
fn unknown_kind_from_a_worker() {
    garbage_kills_only_its_worker(Garbage::UnknownKind);
}

#[test]
fn zero_length_frame_from_a_worker() {
    garbage_kills_only_its_worker(Garbage::ZeroLength);
}

#[test]
fn tasks_frame_from_a_worker() {
    garbage_kills_only_its_worker(Garbage::TasksFrame);
}

#[test]
fn result_for_a_task_the_worker_does_not_hold() {
    garbage_kills_only_its_worker(Garbage::ForeignResult);
}

#[test]
fn tasks_given_back_unasked() {
    garbage_kills_only_its_worker(Garbage::UnaskedReturned);
}

#[test]
fn trailing_byte_after_a_valid_message() {
    garbage_kills_only_its_worker(Garbage::TrailingByte);
}

#[test]
fn text_written_to_the_socket() {
    garbage_kills_only_its_worker(Garbage::Text);
}

#[test]
fn length_prefix_promising_more_than_ever_comes() {
    garbage_kills_only_its_worker(Garbage::Truncated);
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
