//! A worker's death is learnt from the worker process itself, not from its socket: a task that
//! forks a child (without exec) or starts a daemon hands it a copy of the worker's socket, and
//! that copy stays open after the worker died. Futures, `drop`, `shutdown(wait)`,
//! `kill_workers` and time limits must not wait for such descendants.
// Unix only: it forks (Windows has no fork) and reads `/proc`.
#![cfg(unix)]
#![allow(unsafe_code)] // fork(2) and kill(2) in the tasks and the clean-up

mod common;

use std::time::Duration;

use cf_pool_proc::{Executor, ExitCause, ProcessPoolExecutor, TaskError};

/// Far longer than any limit below: a test that waits for a descendant fails, not passes late.
const DESCENDANT_LIFE: u32 = 300;
const LIMIT: Duration = Duration::from_secs(30);

/// Forks a child that keeps every descriptor of the worker (its socket included) and sleeps;
/// returns its pid.
fn fork_descendant(_: ()) -> i32 {
    // SAFETY: the child only calls async-signal-safe functions (sleep, _exit) before it ends.
    match unsafe { libc::fork() } {
        0 => unsafe {
            libc::sleep(DESCENDANT_LIFE);
            libc::_exit(0)
        },
        pid => {
            assert!(pid > 0, "fork failed");
            pid
        }
    }
}

fn abort(_: ()) {
    std::process::abort();
}

fn spin(_: ()) {
    loop {
        std::hint::spin_loop();
    }
}

fn exit_now(_: ()) {
    std::process::exit(3);
}

/// Kills the descendants a test made (they are not our children: nothing to reap).
fn kill_all(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

fn one_worker() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap()
}

/// One worker forks a descendant, then dies running `task`: the future fails with `cause`.
fn dies_with_a_live_descendant<F>(task: F, cause: ExitCause)
where
    F: cf_pool_proc::Task<(), ()>,
{
    let pool = one_worker();
    let descendant = *pool
        .submit(fork_descendant, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap();
    let doomed = pool.submit(task, ()).unwrap();
    let outcome = doomed.result_timeout(LIMIT).cloned();
    common::within(LIMIT, "drop", move || drop(pool));
    kill_all(&[descendant]);
    match outcome {
        Err(TaskError::WorkerDied { cause: c, .. }) => assert_eq!(c, cause),
        other => panic!("expected WorkerDied({cause}), got {other:?}"),
    }
}

#[test]
fn a_worker_that_dies_fails_its_futures_while_its_descendant_lives() {
    dies_with_a_live_descendant(abort, ExitCause::Signal(libc::SIGABRT));
    dies_with_a_live_descendant(exit_now, ExitCause::Code(3));
}

#[test]
fn shutdown_and_drop_do_not_wait_for_a_workers_descendants() {
    let pool = one_worker();
    let descendant = *pool
        .submit(fork_descendant, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap();
    let pool = common::within(LIMIT, "shutdown(wait)", move || {
        pool.shutdown(true, false);
        pool
    });
    common::within(LIMIT, "drop", move || drop(pool));

    let pool = one_worker();
    let other = *pool
        .submit(fork_descendant, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap();
    common::within(LIMIT, "drop", move || drop(pool));
    kill_all(&[descendant, other]);
}

#[test]
fn kill_workers_and_time_limits_do_not_wait_for_descendants() {
    let pool = one_worker();
    let first = *pool
        .submit(fork_descendant, ())
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap();
    let timed = pool
        .submit_with_timeout(spin, (), Duration::from_millis(200))
        .unwrap();
    let outcome = timed.result_timeout(LIMIT).cloned();
    // The replacement worker forks one too; then kill_workers must still return.
    let second = pool
        .submit(fork_descendant, ())
        .unwrap()
        .result_timeout(LIMIT)
        .copied();
    let busy = pool.submit(spin, ()).unwrap();
    let pool = common::within(LIMIT, "kill_workers", move || {
        pool.kill_workers();
        pool
    });
    let killed = busy.result_timeout(LIMIT).cloned();
    common::within(LIMIT, "drop", move || drop(pool));
    kill_all(&[first]);
    kill_all(&second.iter().copied().collect::<Vec<_>>());
    assert!(
        matches!(
            outcome,
            Err(TaskError::Timeout {
                killed_worker: Some(_),
                ..
            })
        ),
        "{outcome:?}"
    );
    assert!(
        matches!(
            killed,
            Err(TaskError::WorkerDied {
                cause: ExitCause::Signal(libc::SIGKILL),
                ..
            })
        ),
        "{killed:?}"
    );
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
