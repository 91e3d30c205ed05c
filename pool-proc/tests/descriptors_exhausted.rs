//! The parent runs out of file descriptors: a worker cannot be started. The tasks that had no
//! worker to run them fail, saying why; the pool is not broken, and once descriptors are
//! available again it starts workers and runs tasks as before. A binary of its own: the
//! descriptor limit is process-wide.
#![cfg(unix)]
#![allow(unsafe_code)] // the test lowers and restores RLIMIT_NOFILE

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cf_pool_proc::{Buffer, Executor, ProcessPoolExecutor, TaskError};
use common::{double, refused_then_recovered, within, LIMIT};

/// The limit is the process's: one test at a time changes it.
static LIMIT_LOCK: Mutex<()> = Mutex::new(());

/// The lowest descriptor number not in use: with the soft limit there, no new descriptor can
/// be made (a new one takes the lowest free number, which must be below the limit).
fn lowest_free_descriptor() -> libc::rlim_t {
    // SAFETY: duplicates standard input onto the lowest free number and closes that copy at
    // once; no other descriptor is touched.
    let fd = unsafe { libc::dup(0) };
    assert!(fd >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is the duplicate made above, owned by nothing else.
    unsafe { libc::close(fd) };
    fd as libc::rlim_t
}

fn set_soft_limit(soft: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads this process's descriptor limit into a local.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let old = lim.rlim_cur;
    lim.rlim_cur = soft;
    // SAFETY: sets this process's soft descriptor limit, within the hard one.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    old
}

/// While alive, this process cannot make a new descriptor.
struct NoNewDescriptors(libc::rlim_t);

impl NoNewDescriptors {
    fn new() -> Self {
        NoNewDescriptors(set_soft_limit(lowest_free_descriptor()))
    }
}

impl Drop for NoNewDescriptors {
    fn drop(&mut self) {
        set_soft_limit(self.0);
    }
}

#[test]
fn a_pool_that_cannot_start_a_worker_fails_those_tasks_and_recovers() {
    let _one_at_a_time = LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    within(
        LIMIT * 2,
        "descriptors exhausted, then available again",
        || {
            let pool = ProcessPoolExecutor::builder()
                .max_workers(2)
                .build()
                .unwrap();
            // No descriptor left: the worker's socket cannot be made.
            refused_then_recovered(&pool, NoNewDescriptors::new(), "os error 24");
        },
    );
}

#[test]
fn a_retired_worker_that_cannot_be_replaced_does_not_break_the_pool() {
    let _one_at_a_time = LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    within(
        LIMIT * 2,
        "a replacement refused while descriptors are exhausted",
        || {
            let pool = ProcessPoolExecutor::builder()
                .max_workers(1)
                .max_tasks_per_child(1)
                .build()
                .unwrap();
            assert_eq!(
                pool.submit(double, 1).unwrap().result_timeout(LIMIT),
                Ok(&2)
            );
            // The worker retires after its task; wait until it is gone.
            let deadline = Instant::now() + LIMIT;
            while !pool.worker_pids().is_empty() {
                assert!(Instant::now() < deadline, "the retired worker never ended");
                std::thread::sleep(Duration::from_millis(5));
            }
            // Its replacement cannot start.
            let refused = NoNewDescriptors::new();
            let outcome = pool
                .submit(double, 2)
                .unwrap()
                .result_timeout(LIMIT)
                .cloned();
            drop(refused);
            assert!(
                matches!(outcome, Err(TaskError::WorkerStartFailed { .. })),
                "{outcome:?}"
            );
            assert_eq!(
                pool.submit(double, 3).unwrap().result_timeout(LIMIT),
                Ok(&6)
            );
        },
    );
}

fn length(b: Buffer) -> usize {
    b.len()
}

#[test]
fn a_large_buffer_that_cannot_get_a_descriptor_fails_its_task_naming_the_system() {
    let _one_at_a_time = LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    within(
        LIMIT * 2,
        "a buffer sent while descriptors are exhausted",
        || {
            let pool = ProcessPoolExecutor::builder()
                .max_workers(1)
                .build()
                .unwrap();
            assert_eq!(
                pool.submit(double, 1).unwrap().result_timeout(LIMIT),
                Ok(&2)
            );
            let refused = NoNewDescriptors::new();
            let outcome = pool
                .submit(length, Buffer::from(vec![7u8; 1 << 20]))
                .unwrap()
                .result_timeout(LIMIT)
                .cloned();
            drop(refused);
            let Err(e @ TaskError::Codec { .. }) = &outcome else {
                panic!("expected a Codec error, got {outcome:?}");
            };
            let text = e.to_string();
            assert!(
                text.contains("os error 24") && text.contains("ulimit -n"),
                "{text}"
            );
            assert!(
                !text.contains("Serialize and Deserialize"),
                "blames the type: {text}"
            );
            // Only that task failed: the worker and the pool go on.
            let f = pool
                .submit(length, Buffer::from(vec![7u8; 1 << 20]))
                .unwrap();
            assert_eq!(f.result_timeout(LIMIT), Ok(&(1 << 20)));
        },
    );
}

fn big(len: usize) -> Buffer {
    Buffer::from(vec![3u8; len])
}

fn worker_pid(_: ()) -> u32 {
    std::process::id()
}

#[test]
fn a_large_result_the_parent_cannot_take_fails_its_task_and_keeps_the_worker() {
    let _one_at_a_time = LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    within(
        LIMIT * 2,
        "a buffer received while descriptors are exhausted",
        || {
            let pool = ProcessPoolExecutor::builder()
                .max_workers(1)
                .build()
                .unwrap();
            let pid = *pool
                .submit(worker_pid, ())
                .unwrap()
                .result_timeout(LIMIT)
                .unwrap();
            // The worker sends its result's region with a descriptor the parent cannot take.
            let refused = NoNewDescriptors::new();
            let outcome = pool
                .submit(big, 1 << 20)
                .unwrap()
                .result_timeout(LIMIT)
                .map(|b| b.len());
            drop(refused);
            let Err(e @ TaskError::Codec { .. }) = &outcome else {
                panic!("expected a Codec error, got {outcome:?}");
            };
            let text = e.to_string();
            assert!(
                text.contains("lost in transit") && text.contains("ulimit -n"),
                "{text}"
            );
            assert!(
                !text.contains("Serialize and Deserialize"),
                "blames the type: {text}"
            );
            // The worker did nothing wrong: it lives on, and its region was handed back.
            for _ in 0..3 {
                let f = pool.submit(big, 1 << 20).unwrap();
                assert_eq!(f.result_timeout(LIMIT).map(|b| b.len()), Ok(1 << 20));
            }
            assert_eq!(
                pool.submit(worker_pid, ()).unwrap().result_timeout(LIMIT),
                Ok(&pid)
            );
        },
    );
}
