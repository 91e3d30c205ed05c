//! Failures carried faithfully: panics, codec errors at each of the four crossings, and worker
//! deaths of every kind. After each, the same pool must still run work (it heals).
//!
//! Reference: CPython `Lib/test/test_concurrent_futures/test_deadlock.py` (the error / crash
//! matrix) and `test_process_pool.py` (`test_killed_child`); the difference from Python (only
//! the dead worker's futures fail, the pool goes on) is deliberate and in the README.
//
// Runs on Windows too (under Wine in CI): there a crash is an NTSTATUS exit code, named in the
// message, and a worker is ended from outside with `TerminateProcess`. Only raising `SIGSEGV`
// is Unix-only (Windows has no signals); its Windows counterpart is the access violation test.
#![allow(unsafe_code)] // a test must be able to crash a worker on purpose

mod common;

use cf_pool_proc::{CodecStage, Executor, ExitCause, TaskError};
use common::{
    abort_cause, aborts, assert_heals, died, exits, overflows, pid, pool, sleeps, ABORT_NAME, LIMIT,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

fn panics(x: u32) -> u32 {
    if x == 13 {
        panic!("unlucky number {x}");
    }
    x
}

#[test]
fn panic_is_carried_with_message_location_and_backtrace_and_the_worker_lives() {
    let pool = pool(1);
    let before = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    let f = pool.submit(panics, 13).unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Panicked {
            message,
            location,
            backtrace,
        }) => {
            assert_eq!(message, "unlucky number 13");
            assert!(location.unwrap().contains("failures.rs"));
            assert!(backtrace.is_some_and(|b| !b.is_empty()));
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let after = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    assert_eq!(before, after, "the worker survives a panicking task");
}

#[test]
fn exit_in_a_task_fails_that_future_with_the_exit_code_and_the_pool_heals() {
    let pool = pool(2);
    let f = pool.submit(exits, 99).unwrap();
    let (_, cause, message) = died(f.result_timeout(LIMIT));
    assert_eq!(cause, ExitCause::Code(99));
    assert!(message.contains("exited with code 99"), "{message}");
    assert_heals(&pool);
}

#[test]
fn abort_is_reported_by_name() {
    let pool = pool(1);
    let f = pool.submit(aborts, ()).unwrap();
    let (_, cause, message) = died(f.result_timeout(LIMIT));
    assert_eq!(cause, abort_cause(), "{message}");
    assert!(message.contains(ABORT_NAME), "{message}");
    assert_heals(&pool);
}

#[cfg(unix)] // raising a signal: Windows has none (its crash is the access violation below)
fn segfaults(_: ()) -> u32 {
    // SAFETY: none; this deliberately crashes the worker process with SIGSEGV.
    unsafe { libc::raise(libc::SIGSEGV) };
    0
}

#[cfg(unix)]
#[test]
fn segfault_is_reported_as_sigsegv() {
    let pool = pool(1);
    let f = pool.submit(segfaults, ()).unwrap();
    let (_, cause, message) = died(f.result_timeout(LIMIT));
    assert_eq!(cause, ExitCause::Signal(libc::SIGSEGV), "{message}");
    assert!(message.contains("SIGSEGV"), "{message}");
    assert_heals(&pool);
}

#[cfg(windows)]
fn access_violation(_: ()) -> u32 {
    // SAFETY: none; the point is to crash this worker with an access violation.
    unsafe { std::ptr::null_mut::<u32>().write_volatile(1) };
    0
}

#[cfg(windows)]
#[test]
fn an_access_violation_is_named_by_its_ntstatus_and_the_pool_heals() {
    let pool = pool(2);
    let f = pool.submit(access_violation, ()).unwrap();
    let (_, cause, message) = died(f.result_timeout(LIMIT));
    assert_eq!(cause, ExitCause::Code(0xC000_0005_u32 as i32), "{message}");
    assert!(message.contains("STATUS_ACCESS_VIOLATION"), "{message}");
    assert_heals(&pool);
}

/// On every platform: unbounded recursion kills the worker, never the parent; the future fails
/// with `WorkerDied` naming the cause (`SIGSEGV`/`SIGBUS` on Unix, `STATUS_STACK_OVERFLOW` on
/// Windows), and the pool serves on with a new worker.
#[test]
#[cfg_attr(
    windows,
    ignore = "hangs under Wine 8: a stack overflow on the worker's main thread ends that thread \
              only (Wine aborts the thread), the worker's other threads keep the process alive, \
              so no exit code ever comes; on Windows the process ends with STATUS_STACK_OVERFLOW"
)]
fn stack_overflow_kills_only_its_worker_and_is_named() {
    let pool = pool(1);
    let before = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    let f = pool.submit(overflows, ()).unwrap();
    let (dead, cause, message) = died(f.result_timeout(LIMIT));
    assert_eq!(dead, before, "the overflow ran in the worker");
    let name = common::is_stack_overflow(cause)
        .unwrap_or_else(|| panic!("not a stack overflow's cause: {message}"));
    assert!(message.contains(name), "{message}");
    assert_heals(&pool);
    let after = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    assert_ne!(after, before, "a new worker serves");
}

#[test]
fn a_kill_from_outside_fails_only_the_futures_that_worker_held() {
    let pool = pool(2);
    // Two long tasks, one per worker; kill the worker of the first.
    let a = pool.submit(sleeps, 60_000).unwrap();
    let b = pool.submit(sleeps, 300).unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while !(a.running() && b.running() && pool.worker_pids().len() == 2) {
        assert!(std::time::Instant::now() < deadline, "tasks never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // b finishes normally and tells us its worker; the other worker holds a.
    let b_pid = *b.result_timeout(LIMIT).unwrap();
    let victim = pool
        .worker_pids()
        .into_iter()
        .find(|&p| p != b_pid)
        .expect("the worker running a");
    // SIGKILL on Unix, TerminateProcess (`taskkill /F`) on Windows.
    assert!(
        common::sigkill_child(victim),
        "could not kill worker {victim}"
    );
    let (pid, cause, msg) = died(a.result_timeout(LIMIT));
    assert_eq!(cause, common::killed_cause(), "{msg}");
    assert_eq!(pid, victim);
    let named = if cfg!(unix) {
        "SIGKILL"
    } else {
        "exited with code 1"
    };
    assert!(
        msg.contains(&victim.to_string()) && msg.contains(named),
        "{msg}"
    );
    assert_heals(&pool);
}

/// A type whose serde impls fail or panic on demand, to hit each crossing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trap {
    Fine(u8),
    FailSerialize,
    PanicSerialize,
    FailDeserialize,
    PanicDeserialize,
}

impl Serialize for Trap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Trap::Fine(v) => s.serialize_u8(*v),
            Trap::FailSerialize => Err(serde::ser::Error::custom("refusing to serialize")),
            Trap::PanicSerialize => panic!("Serialize exploded"),
            Trap::FailDeserialize => s.serialize_u8(200),
            Trap::PanicDeserialize => s.serialize_u8(201),
        }
    }
}

impl<'de> Deserialize<'de> for Trap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            200 => Err(serde::de::Error::custom("refusing to deserialize")),
            201 => panic!("Deserialize exploded"),
            v => Ok(Trap::Fine(v)),
        }
    }
}

fn echo_trap(t: Trap) -> Trap {
    t
}

/// Returns a trap chosen by the argument, so the result crossing can fail.
fn make_trap(kind: u8) -> Trap {
    match kind {
        0 => Trap::FailSerialize,
        1 => Trap::PanicSerialize,
        2 => Trap::FailDeserialize,
        3 => Trap::PanicDeserialize,
        v => Trap::Fine(v),
    }
}

fn codec_stage(result: Result<&Trap, TaskError>) -> (CodecStage, String) {
    match result {
        Err(TaskError::Codec { stage, message }) => (stage, message),
        other => panic!("expected Codec, got {other:?}"),
    }
}

#[test]
fn argument_that_fails_to_serialize_in_the_parent() {
    let pool = pool(1);
    let f = pool.submit(echo_trap, Trap::FailSerialize).unwrap();
    let (stage, msg) = codec_stage(f.result_timeout(LIMIT));
    assert_eq!(stage, CodecStage::SerializeArgument);
    // The payload codec keeps the text of a custom serde error.
    assert!(msg.contains("refusing to serialize"), "{msg}");
    assert!(f.exception().unwrap().to_string().contains("in the parent"));
    let f = pool.submit(echo_trap, Trap::PanicSerialize).unwrap();
    let (stage, msg) = codec_stage(f.result_timeout(LIMIT));
    assert_eq!(stage, CodecStage::SerializeArgument);
    assert!(msg.contains("Serialize exploded"), "{msg}");
    assert_heals(&pool);
}

#[test]
fn argument_that_fails_or_panics_deserializing_in_the_worker() {
    let pool = pool(1);
    for trap in [Trap::FailDeserialize, Trap::PanicDeserialize] {
        let f = pool.submit(echo_trap, trap).unwrap();
        let (stage, _) = codec_stage(f.result_timeout(LIMIT));
        assert_eq!(stage, CodecStage::DeserializeArgument, "{trap:?}");
    }
    assert_heals(&pool);
}

#[test]
fn result_that_fails_or_panics_serializing_in_the_worker() {
    let pool = pool(1);
    for kind in [0, 1] {
        let f = pool.submit(make_trap, kind).unwrap();
        let (stage, _) = codec_stage(f.result_timeout(LIMIT));
        assert_eq!(stage, CodecStage::SerializeResult, "kind {kind}");
    }
    assert_heals(&pool);
}

#[test]
fn result_that_fails_or_panics_deserializing_in_the_parent() {
    let pool = pool(1);
    for kind in [2, 3] {
        let f = pool.submit(make_trap, kind).unwrap();
        let (stage, _) = codec_stage(f.result_timeout(LIMIT));
        assert_eq!(stage, CodecStage::DeserializeResult, "kind {kind}");
    }
    let ok = pool.submit(make_trap, 9).unwrap();
    assert_eq!(ok.result_timeout(LIMIT), Ok(&Trap::Fine(9)));
    assert_heals(&pool);
}

fn big_then_die(bytes: Vec<u8>) -> u32 {
    if bytes.len() > 1 {
        std::process::abort();
    }
    0
}

#[test]
fn crash_while_a_payload_larger_than_the_socket_buffer_is_in_flight() {
    let pool = pool(1);
    // The first task kills its worker while the next, 32 MiB, is still being written.
    let blocker = pool.submit(big_then_die, vec![0u8; 2]).unwrap();
    let big = pool.submit(big_then_die, vec![7u8; 32 << 20]).unwrap();
    assert!(matches!(
        blocker.result_timeout(LIMIT),
        Err(TaskError::WorkerDied { .. })
    ));
    // Either it died holding the big one too, or the big one ran on the replacement (and
    // killed that one); either way it is a clean error, not a hang.
    assert!(matches!(
        big.result_timeout(LIMIT),
        Err(TaskError::WorkerDied { .. })
    ));
    assert_heals(&pool);
}

#[test]
fn crash_during_shutdown_wait_does_not_hang() {
    let pool = pool(2);
    let futures: Vec<_> = (0..6).map(|_| pool.submit(aborts, ()).unwrap()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pool.shutdown(true, false);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(LIMIT).expect("shutdown(wait) returned");
    for f in futures {
        assert!(matches!(
            f.result_timeout(LIMIT),
            Err(TaskError::WorkerDied { .. })
        ));
    }
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}

/// A payload whose serde impls end the process: the worker dies inside the codec.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bomb {
    Quiet,
    ExitOnDeserialize,
    AbortOnDeserialize,
    ExitOnSerialize,
}

impl Serialize for Bomb {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if *self == Bomb::ExitOnSerialize && cf_pool_proc::is_worker() {
            std::process::exit(7);
        }
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            1 if cf_pool_proc::is_worker() => std::process::exit(5),
            2 if cf_pool_proc::is_worker() => std::process::abort(),
            3 => Ok(Bomb::ExitOnSerialize),
            _ => Ok(Bomb::Quiet),
        }
    }
}

fn echo_bomb(b: Bomb) -> Bomb {
    b
}

#[test]
fn exit_or_crash_inside_the_workers_codec_is_a_worker_death() {
    let pool = pool(1);
    let cases = [
        (Bomb::ExitOnDeserialize, ExitCause::Code(5)),
        (Bomb::AbortOnDeserialize, abort_cause()),
        (Bomb::ExitOnSerialize, ExitCause::Code(7)),
    ];
    for (bomb, cause) in cases {
        let f = pool.submit(echo_bomb, bomb).unwrap();
        match f.result_timeout(LIMIT) {
            Err(TaskError::WorkerDied { cause: got, .. }) => assert_eq!(got, cause, "{bomb:?}"),
            other => panic!("{bomb:?}: expected WorkerDied, got {other:?}"),
        }
    }
    let quiet = pool.submit(echo_bomb, Bomb::Quiet).unwrap();
    assert_eq!(quiet.result_timeout(LIMIT), Ok(&Bomb::Quiet));
    assert_heals(&pool);
}
