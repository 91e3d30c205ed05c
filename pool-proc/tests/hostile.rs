//! A hostile worker against the parent's resources: a task forges frames on its worker's
//! socket, with descriptors of its choosing, to make the parent pay for memory it never sent
//! (a sparse region claiming a large buffer) or to pin descriptors in the parent (descriptors
//! no record names). The parent must refuse both: kill that worker (its future fails with
//! `WorkerDied`), keep its own memory and descriptor count where they were, and go on.
#![allow(unsafe_code)]
// a BorrowedFd over the worker's inherited socket, on purpose
// The forged regions are Linux memfds, and the worker's socket is found through /proc.
#![cfg(target_os = "linux")]

mod common;

use std::io::IoSlice;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use cf_pool_proc::{
    attaching, AttachPolicy, Buffer, Executor, ExitCause, ProcessPoolExecutor, TaskError,
};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

const LIMIT: Duration = Duration::from_secs(60);
/// The first page of a region is the pool's header; bytes start after it.
const HEADER: u64 = 4096;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = b"cfP\x01".to_vec();
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    f
}

/// A `Results` frame with one successful record for task `id`: `payload`, then one attached
/// region of `len` bytes (lent as `lend`), then no released regions.
fn result_with_region(id: u64, payload: &[u8], len: u64, lend: u64) -> Vec<u8> {
    let mut b = vec![6];
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // nanos
    b.push(1); // ok
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    b.extend_from_slice(&1u32.to_le_bytes()); // one attachment: a region
    b.push(0);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&lend.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // released: none
    frame(&b)
}

/// A `Results` frame with no records and nothing released: valid, names no descriptor.
fn empty_results() -> Vec<u8> {
    let mut b = vec![6];
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    frame(&b)
}

/// The worker's socket (the inherited one; its clone is the same socket).
fn worker_socket() -> i32 {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if fd > 2
            && std::fs::read_link(entry.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        {
            return fd;
        }
    }
    panic!("no socket in the worker");
}

/// Writes `frame` to the worker's socket with `fds` attached to its first byte.
fn send(frame: &[u8], fds: &[OwnedFd]) {
    // SAFETY: the socket is open for the whole life of the worker.
    let sock = unsafe { BorrowedFd::borrow_raw(worker_socket()) };
    let borrowed: Vec<_> = fds.iter().map(std::os::fd::AsFd::as_fd).collect();
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(frame)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(sent, frame.len(), "short write");
}

/// In a worker, as its pool's first task (id 0): forges its own result, a buffer of `len`
/// bytes in a region that has no pages at all (sealed as the pool seals regions, so only its
/// emptiness is wrong). The real result follows.
fn sparse_result(len: u64) -> Buffer {
    let fd = rustix::fs::memfd_create("cf-buffer", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    rustix::fs::ftruncate(&fd, HEADER + len).unwrap();
    let mut seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE;
    seals |= SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    let policy = AttachPolicy {
        min_len: 1,
        max_count: 32,
    };
    let (payload, _) = attaching(policy, || {
        postcard::to_allocvec(&Buffer::from(vec![1u8; 64]))
    });
    send(&result_with_region(0, &payload.unwrap(), len, 1), &[fd]);
    Buffer::from(vec![2u8; 64])
}

/// In a worker: sends a valid frame that names no descriptor, with `n` descriptors attached.
fn stray_descriptors(n: usize) -> u32 {
    let fds: Vec<OwnedFd> = (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect();
    send(&empty_results(), &fds);
    std::process::id()
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn assert_killed<T: std::fmt::Debug>(outcome: Result<&T, TaskError>, what: &str) {
    match outcome {
        Err(TaskError::WorkerDied { cause, .. }) => {
            assert_eq!(cause, ExitCause::Signal(libc::SIGKILL), "{what}");
        }
        other => panic!("{what}: expected the worker to be killed, got {other:?}"),
    }
}

#[test]
fn a_sparse_region_is_refused_not_copied() {
    let _serial = common::exclusive();
    common::within(LIMIT * 2, "sparse region", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap();
        // 256 MiB the worker never paid for: copying it would cost the parent 256 MiB of
        // pages for the holes and 256 MiB for the copy.
        let forged = pool.submit(sparse_result, 256 << 20).unwrap();
        let outcome = forged.result_timeout(LIMIT);
        if let Ok(b) = &outcome {
            panic!(
                "the parent copied a {}-byte buffer out of a sparse region",
                b.len()
            );
        }
        assert_killed(outcome, "sparse region");
        assert!(pool.submit(pid, ()).unwrap().result_timeout(LIMIT).is_ok());
    });
}

#[test]
fn descriptors_no_record_names_are_not_kept() {
    let _serial = common::exclusive();
    common::within(LIMIT * 2, "stray descriptors", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap();
        pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
        let before = common::open_fds().len();
        let stray = pool.submit(stray_descriptors, 200).unwrap();
        let outcome = stray.result_timeout(LIMIT);
        // The parent is back to one worker, and holds what it held with one worker.
        pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
        let after = common::open_fds().len();
        assert!(
            after <= before,
            "the parent holds {after} descriptors, {before} before a worker sent 200 stray ones \
             ({outcome:?})"
        );
        assert_killed(outcome, "stray descriptors");
    });
}

/// In a worker: announces a frame of almost 4 GiB on its socket, then streams up to `mib`
/// MiB of it (the same MiB again and again, which costs the worker nothing) until the parent
/// stops reading.
fn endless_frame(mib: usize) -> u32 {
    use std::io::Write;
    // SAFETY: the socket is open for the whole life of the worker.
    let borrowed = unsafe { BorrowedFd::borrow_raw(worker_socket()) };
    // A clone of our own, closed when this task returns.
    let mut socket = std::fs::File::from(borrowed.try_clone_to_owned().unwrap());
    let mut header = b"cfP\x01".to_vec();
    header.extend_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    socket.write_all(&header).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        if socket.write_all(&chunk).is_err() {
            break;
        }
    }
    std::process::id()
}

/// The address space this process may use, soft and hard (`RLIMIT_AS`).
fn address_space_limit() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) }, 0);
    limit
}

fn set_address_space_limit(limit: libc::rlimit) {
    // SAFETY: setrlimit reads the struct; lowering the soft limit, or raising it back up to the
    // hard limit, is allowed to any process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

/// This process's mapped address space, in bytes (`VmSize`).
fn address_space_used() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    kib * 1024
}

#[test]
fn a_frame_the_parent_cannot_afford_kills_the_worker_not_the_parent() {
    let _serial = common::exclusive();
    common::within(LIMIT * 2, "endless frame", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap();
        pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
        // The parent may map 1 GiB more than it does now: the frame's body, doubling as the
        // bytes arrive, needs 2 GiB before the worker has sent 2 GiB, so it cannot be afforded.
        // An allocation that aborts on failure would end this whole test process here.
        let before = address_space_limit();
        set_address_space_limit(libc::rlimit {
            rlim_cur: address_space_used() + (1 << 30),
            rlim_max: before.rlim_max,
        });
        let endless = pool.submit(endless_frame, 4096).unwrap();
        let outcome = endless.result_timeout(LIMIT);
        set_address_space_limit(before);
        assert_killed(outcome, "endless frame");
        assert!(pool.submit(pid, ()).unwrap().result_timeout(LIMIT).is_ok());
    });
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
