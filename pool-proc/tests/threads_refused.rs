//! The system refuses the pool a thread (too many processes or threads for the user): the
//! tasks that needed it fail or are refused saying so, the pool is not broken, and it works
//! again once threads are available. A binary of its own: the limit is the process's.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)] // the test lowers RLIMIT_NPROC and, as root, changes the thread's uid

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cf_pool_proc::{Executor, ProcessPoolExecutor, SubmitError, TaskError};
use common::{double, refused_then_recovered, within, LIMIT};

fn spin_forever(_: ()) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

/// While alive, the calling thread cannot start threads or processes: `RLIMIT_NPROC` is 1, and
/// if it runs as root (whom the limit does not bind), this thread alone, not the process, runs
/// as user 65534 (the raw system call changes only the calling thread's ids; the saved id stays
/// 0, to come back).
struct NoNewThreads {
    old: libc::rlimit,
    as_root: bool,
    _one_at_a_time: MutexGuard<'static, ()>,
}

/// The limit is the process's: one test at a time changes it.
static LIMIT_LOCK: Mutex<()> = Mutex::new(());

impl NoNewThreads {
    fn new() -> Self {
        let one_at_a_time = LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads this process's limit into a local.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut old) }, 0);
        let one = libc::rlimit {
            rlim_cur: 1,
            rlim_max: old.rlim_max,
        };
        // SAFETY: sets this process's soft limit from a local, within the hard one.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &one) }, 0);
        // SAFETY: reads the calling thread's effective uid.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            // SAFETY: changes the calling thread's real and effective uid; the saved uid stays
            // 0, so `drop` can change them back.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 0) };
            assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        }
        let refused = std::thread::Builder::new().spawn(|| ()).map(|h| h.join());
        assert!(refused.is_err(), "a thread could still be started");
        NoNewThreads {
            old,
            as_root,
            _one_at_a_time: one_at_a_time,
        }
    }
}

impl Drop for NoNewThreads {
    fn drop(&mut self) {
        if self.as_root {
            // SAFETY: back to uid 0, which the saved uid allows.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) };
            assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        }
        // SAFETY: restores this process's limit from a local.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &self.old) }, 0);
    }
}

#[test]
fn a_refused_thread_fails_the_tasks_it_was_for_and_the_pool_recovers() {
    within(LIMIT * 2, "threads refused, then available again", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(2)
            .build()
            .unwrap();
        // Each worker has a thread of the pool's that starts it.
        refused_then_recovered(&pool, NoNewThreads::new(), "os error 11");
    });
}

#[test]
fn a_time_limit_that_cannot_be_enforced_is_refused_at_submit() {
    within(
        LIMIT * 2,
        "the watchdog refused, then available again",
        || {
            let pool = ProcessPoolExecutor::builder()
                .max_workers(1)
                .build()
                .unwrap();
            assert_eq!(
                pool.submit(double, 1).unwrap().result_timeout(LIMIT),
                Ok(&2)
            );
            let refused = NoNewThreads::new();
            let outcome = pool.submit_with_timeout(spin_forever, (), Duration::from_millis(200));
            drop(refused);
            match outcome {
                Err(SubmitError::WorkerStartFailed { reason }) => {
                    assert!(reason.contains("time limits"), "{reason}");
                }
                other => panic!("expected WorkerStartFailed, got {other:?}"),
            }
            // With threads again, the limit is enforced.
            let f = pool
                .submit_with_timeout(spin_forever, (), Duration::from_millis(200))
                .unwrap();
            let e = f.result_timeout(LIMIT).unwrap_err();
            assert!(
                matches!(
                    e,
                    TaskError::Timeout {
                        killed_worker: Some(_),
                        ..
                    }
                ),
                "{e:?}"
            );
            assert_eq!(
                pool.submit(double, 3).unwrap().result_timeout(LIMIT),
                Ok(&6)
            );
        },
    );
}

/// The marker that makes [`refuse_own_threads`] refuse: one per test process (the worker finds
/// its parent's).
fn refusal_marker(parent: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cf-refuse-worker-threads-{parent}"))
}

/// An initializer: while the parent's marker exists, this worker can start no thread from here
/// on, so it cannot start its own (its result flusher and its receiver).
fn refuse_own_threads() -> Result<(), String> {
    if refusal_marker(std::os::unix::process::parent_id()).exists() {
        // For the rest of this worker's life.
        std::mem::forget(NoNewThreads::new());
    }
    Ok(())
}

/// A worker the system refuses its own threads (it started, but cannot start the threads it
/// needs besides its first) is a start failure: its task fails with `WorkerStartFailed`, saying
/// the task did not run, never `WorkerDied` (which blames the task); the pool is not broken, and
/// works again once threads can be had. Before, the worker said `Ready`, then failed to start
/// its threads and exited with code 70, and its task failed as if it had killed the worker.
#[test]
fn a_worker_refused_its_own_threads_fails_its_task_as_a_start_failure() {
    let _one_at_a_time = LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let marker = refusal_marker(std::process::id());
    std::fs::write(&marker, b"").unwrap();
    let outcome = within(LIMIT * 2, "a worker refused its threads", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .initializer(refuse_own_threads)
            .build()
            .unwrap();
        let refused = pool.submit(double, 21).unwrap();
        let refused = refused.result_timeout(LIMIT).cloned();
        std::fs::remove_file(refusal_marker(std::process::id())).unwrap();
        let later = pool
            .submit(double, 21)
            .unwrap()
            .result_timeout(LIMIT)
            .cloned();
        (refused, later)
    });
    let _ = std::fs::remove_file(&marker);
    match outcome.0 {
        Err(TaskError::WorkerStartFailed { reason }) => {
            assert!(reason.contains("os error 11"), "{reason}");
            assert!(reason.contains("did not run"), "{reason}");
        }
        other => panic!("expected WorkerStartFailed, got {other:?}"),
    }
    assert_eq!(outcome.1, Ok(42), "the pool did not recover");
}

/// An initializer that refuses its threads to the first worker of the test process only (the
/// one that creates the marker).
fn refuse_first_worker_only() -> Result<(), String> {
    let marker = refusal_marker(std::os::unix::process::parent_id()).with_extension("first");
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&marker)
        .is_ok()
    {
        std::mem::forget(NoNewThreads::new());
    }
    Ok(())
}

fn pid_after(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// A refused worker is replaced while the other runs the queue: a batch submitted at once ends
/// on two workers again, not on the one that was not refused.
#[test]
fn a_worker_refused_its_threads_is_replaced_while_the_others_run() {
    let _one_at_a_time = LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let marker = refusal_marker(std::process::id()).with_extension("first");
    let _ = std::fs::remove_file(&marker);
    let outcomes = within(LIMIT * 2, "one of two workers refused", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(2)
            .initializer(refuse_first_worker_only)
            .build()
            .unwrap();
        let futures = pool.submit_batch(pid_after, vec![20; 40]).unwrap();
        futures
            .iter()
            .map(|f| f.result_timeout(LIMIT).cloned())
            .collect::<Vec<_>>()
    });
    let _ = std::fs::remove_file(&marker);
    let mut pids = std::collections::HashSet::new();
    for outcome in &outcomes {
        match outcome {
            Ok(pid) => {
                pids.insert(*pid);
            }
            Err(TaskError::WorkerStartFailed { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        pids.len(),
        2,
        "the refused worker was not replaced: {pids:?}"
    );
}
