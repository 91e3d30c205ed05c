//! What Python's process pool lacks: per-task timeouts that actually stop the task (by killing
//! its worker), `terminate_workers` / `kill_workers` (Python 3.14), and the choice between
//! healing (default) and Python's broken-pool policy.
//!
//! Reference: CPython `test_process_pool.py` (`test_terminate_workers`, `test_kill_workers`,
//! `test_killed_child` for the BreakPool policy); pebble's `ProcessPool.schedule(timeout=)`.
//
// On Windows (run under Wine in CI) too: there `terminate_workers` and `kill_workers` are both
// `TerminateProcess` with exit code 1, and an abort is `STATUS_STACK_BUFFER_OVERRUN`.

mod common;

use std::time::{Duration, Instant};

use cf_pool_proc::{
    wait, Executor, ExitCause, ProcessPoolExecutor, ReturnWhen, SubmitError, TaskError, WorkerDeath,
};

const LIMIT: Duration = Duration::from_secs(60);

fn spin(_: ()) -> u32 {
    loop {
        std::hint::spin_loop();
    }
}

fn sleep_ms(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn wait_running(f: &cf_pool_proc::Future<u32>) {
    let deadline = Instant::now() + LIMIT;
    while !f.running() {
        assert!(Instant::now() < deadline, "task never started");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_overdue_task_is_stopped_by_killing_its_worker_and_the_pool_goes_on() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let others: Vec<_> = (0..4).map(|_| pool.submit(sleep_ms, 50).unwrap()).collect();
    let runaway = pool
        .submit_with_timeout(spin, (), Duration::from_millis(200))
        .unwrap();
    match runaway.result_timeout(LIMIT) {
        Err(TaskError::Timeout {
            after,
            killed_worker: Some(pid),
        }) => {
            assert_eq!(after, Duration::from_millis(200));
            assert_ne!(pid, std::process::id());
        }
        other => panic!("expected a Timeout that killed the worker, got {other:?}"),
    }
    let msg = runaway.exception().unwrap().to_string();
    assert!(msg.contains("killed"), "{msg}");
    for f in &others {
        assert!(
            f.result_timeout(LIMIT).is_ok(),
            "untimed work is unaffected"
        );
    }
    assert!(pool.submit(pid, ()).unwrap().result_timeout(LIMIT).is_ok());
}

#[test]
fn a_timed_task_that_finishes_in_time_keeps_its_worker() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let a = pool
        .submit_with_timeout(sleep_ms, 10, Duration::from_secs(30))
        .unwrap();
    let first = *a.result_timeout(LIMIT).unwrap();
    let second = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    assert_eq!(first, second);
}

#[test]
fn a_pool_wide_task_timeout_applies_to_every_submit() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .task_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let f = pool.submit(spin, ()).unwrap();
    assert!(matches!(
        f.result_timeout(LIMIT),
        Err(TaskError::Timeout {
            killed_worker: Some(_),
            ..
        })
    ));
    // Quick tasks under the same limit still succeed, and the pool serves them.
    let g = pool.submit(pid, ()).unwrap();
    assert!(g.result_timeout(LIMIT).is_ok());
    assert!(ProcessPoolExecutor::builder()
        .task_timeout(Duration::ZERO)
        .build()
        .is_err());
    assert!(matches!(
        pool.submit_with_timeout(pid, (), Duration::ZERO),
        Err(SubmitError::InvalidArgument { .. })
    ));
}

/// A limit too long for the clock (`Duration::MAX`, or any that overflows `Instant`) is no
/// limit: the task runs and returns, nothing in the pool panics, and its worker lives on.
#[test]
fn a_limit_too_long_for_the_clock_is_no_limit() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let endless = [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(u64::MAX / 2),
    ];
    for limit in endless {
        let f = pool.submit_with_timeout(pid, (), limit).unwrap();
        assert!(f.result_timeout(LIMIT).is_ok(), "limit {limit:?}: {f:?}");
    }
    // The same worker served them all, and still does.
    let first = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    let f = pool.submit_with_timeout(pid, (), Duration::MAX).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&first));

    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .task_timeout(Duration::MAX)
        .build()
        .unwrap();
    let f = pool.submit(pid, ()).unwrap();
    assert!(f.result_timeout(LIMIT).is_ok(), "{f:?}");
}

fn check_stop(stop: impl Fn(&ProcessPoolExecutor), expected: ExitCause) {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let running = pool.submit(sleep_ms, 60_000).unwrap();
    let queued: Vec<_> = (0..10)
        .map(|_| pool.submit(sleep_ms, 60_000).unwrap())
        .collect();
    wait_running(&running);
    let started = Instant::now();
    stop(&pool);
    assert!(started.elapsed() < LIMIT);
    match running.result_timeout(LIMIT) {
        Err(TaskError::WorkerDied { cause, .. }) => assert_eq!(cause, expected),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    let split = wait(&queued, Some(LIMIT), ReturnWhen::AllCompleted);
    assert!(split.not_done.is_empty());
    assert!(queued
        .iter()
        .all(|f| f.cancelled() || matches!(f.exception(), Some(TaskError::WorkerDied { .. }))));
    assert!(matches!(pool.submit(pid, ()), Err(SubmitError::Shutdown)));
    // The call returned at once; the workers end (and are reaped) soon after.
    let deadline = Instant::now() + LIMIT;
    while !pool.worker_pids().is_empty() {
        assert!(
            Instant::now() < deadline,
            "workers still alive after {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Again, and on a pool that never started a worker: harmless.
    stop(&pool);
    stop(
        &ProcessPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap(),
    );
}

#[test]
fn terminate_workers_stops_running_tasks_with_sigterm() {
    check_stop(
        ProcessPoolExecutor::terminate_workers,
        common::terminated_cause(),
    );
}

#[test]
fn kill_workers_stops_running_tasks_with_sigkill() {
    check_stop(ProcessPoolExecutor::kill_workers, common::killed_cause());
}

fn aborts(_: ()) -> u32 {
    std::process::abort()
}

fn abort_when(path: String) -> u32 {
    let start = Instant::now();
    while !std::path::Path::new(&path).exists() {
        assert!(start.elapsed() < LIMIT, "gate never opened");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::process::abort()
}

#[test]
fn break_pool_policy_reproduces_python() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .on_worker_death(WorkerDeath::BreakPool)
        .build()
        .unwrap();
    let long = pool.submit(sleep_ms, 60_000).unwrap();
    wait_running(&long);
    // The crash waits for a file, so every submit below happens before the pool breaks.
    let gate = std::env::temp_dir().join(format!("cf-breakpool-{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    let crash = pool
        .submit(abort_when, gate.to_string_lossy().into_owned())
        .unwrap();
    wait_running(&crash);
    let pending: Vec<_> = (0..5)
        .map(|_| pool.submit(sleep_ms, 60_000).unwrap())
        .collect();
    std::fs::write(&gate, b"go").unwrap();
    for f in std::iter::once(&crash).chain(&pending).chain([&long]) {
        match f.result_timeout(LIMIT) {
            Err(TaskError::Broken { reason }) => {
                assert!(reason.contains("BreakPool"), "{reason}")
            }
            other => panic!("expected Broken, got {other:?}"),
        }
    }
    assert!(matches!(
        pool.submit(pid, ()),
        Err(SubmitError::Broken { .. })
    ));
    pool.terminate_workers(); // harmless after the pool broke
}

#[test]
fn default_policy_heals_after_a_crash() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let crash = pool.submit(aborts, ()).unwrap();
    assert!(matches!(
        crash.result_timeout(LIMIT),
        Err(TaskError::WorkerDied { .. })
    ));
    assert!(pool.submit(pid, ()).unwrap().result_timeout(LIMIT).is_ok());
}

fn init_aborts() -> Result<(), String> {
    std::process::abort()
}

/// Workers that die in the initializer (before they are ready, so before any task ran) break
/// the pool at the first death, with the cause, instead of failing each task as one that
/// crashed its worker and starting a worker per task.
#[test]
fn workers_that_die_while_starting_break_the_pool_and_never_respawn_forever() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(init_aborts)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..20).filter_map(|_| pool.submit(pid, ()).ok()).collect();
    let split = wait(&futures, Some(LIMIT), ReturnWhen::AllCompleted);
    assert!(split.not_done.is_empty(), "every future resolves");
    let cause = common::abort_cause().to_string();
    for f in &futures {
        match f.exception() {
            Some(TaskError::Broken { reason }) => {
                assert!(
                    reason.contains("initializer") && reason.contains(&cause),
                    "{reason}"
                )
            }
            other => panic!("expected Broken naming the initializer, got {other:?}"),
        }
    }
}
