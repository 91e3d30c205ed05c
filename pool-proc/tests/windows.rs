//! The process pool's fault behaviour on Windows (run under Wine by `.ci/windows`): the Unix
//! suites that check the same things do it with signals, which Windows lacks. A panic is carried
//! and the worker lives; an exit and a crash (an access violation) end the worker and fail only
//! its task with `WorkerDied`, the crash named by its NTSTATUS; `kill_workers` ends workers with
//! `TerminateProcess`; 64 workers (`WaitForMultipleObjects`' limit) and more run at once.
#![cfg(windows)]
#![allow(unsafe_code)] // a test must be able to crash a worker on purpose

use std::collections::BTreeSet;
use std::time::Duration;

use cf_pool_proc::{Executor, ExitCause, ProcessPoolExecutor, TaskError};

const LIMIT: Duration = Duration::from_secs(120);

fn pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("build pool")
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn double(x: u64) -> u64 {
    x * 2
}

fn assert_heals(pool: &ProcessPoolExecutor) {
    let f = pool.submit(double, 21).expect("submit after failure");
    assert_eq!(f.result_timeout(LIMIT), Ok(&42));
}

fn panics(x: u32) -> u32 {
    assert!(x != 13, "unlucky number {x}");
    x
}

fn exits(code: i32) -> u32 {
    std::process::exit(code)
}

fn crashes(_: ()) -> u32 {
    // SAFETY: none; the point is to crash this worker with an access violation.
    unsafe { std::ptr::null_mut::<u32>().write_volatile(1) };
    0
}

fn sleeps(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn died(result: Result<&u32, TaskError>) -> (u32, ExitCause, String) {
    match result {
        Err(e @ TaskError::WorkerDied { pid, cause, .. }) => (pid, cause, e.to_string()),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

#[test]
fn a_task_runs_in_another_process() {
    let pool = pool(2);
    let worker = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    assert_ne!(worker, std::process::id());
    assert_heals(&pool);
}

#[test]
fn a_panic_is_carried_and_the_worker_lives() {
    let pool = pool(1);
    let before = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    match pool.submit(panics, 13).unwrap().result_timeout(LIMIT) {
        Err(TaskError::Panicked { message, .. }) => {
            assert!(message.contains("unlucky number 13"), "{message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let after = *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap();
    assert_eq!(before, after, "a panic must not cost the worker");
}

#[test]
fn an_exit_fails_that_future_with_the_exit_code_and_the_pool_heals() {
    let pool = pool(2);
    let (pid, cause, _) = died(pool.submit(exits, 99).unwrap().result_timeout(LIMIT));
    assert_ne!(pid, std::process::id());
    assert_eq!(cause, ExitCause::Code(99));
    assert_heals(&pool);
}

#[test]
fn an_access_violation_is_named_by_its_ntstatus_and_the_pool_heals() {
    let pool = pool(2);
    let (_, cause, message) = died(pool.submit(crashes, ()).unwrap().result_timeout(LIMIT));
    assert_eq!(cause, ExitCause::Code(0xC000_0005_u32 as i32), "{message}");
    assert!(message.contains("STATUS_ACCESS_VIOLATION"), "{message}");
    assert_heals(&pool);
}

#[test]
fn kill_workers_ends_a_busy_worker_with_terminate_process() {
    let pool = pool(1);
    let busy = pool.submit(sleeps, 60_000).unwrap();
    let started = std::time::Instant::now();
    while !busy.running() {
        assert!(started.elapsed() < LIMIT, "the task never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    pool.kill_workers();
    let (_, cause, message) = died(busy.result_timeout(LIMIT));
    assert_eq!(cause, ExitCause::Code(1), "{message}");
}

#[test]
fn sixty_five_workers_run_at_once() {
    // Long tasks, so that all are running at once even though Wine starts processes slowly.
    let n = 65;
    let pool = pool(n);
    let futures: Vec<_> = (0..n)
        .map(|_| pool.submit(sleeps, 30_000).unwrap())
        .collect();
    let pids: BTreeSet<u32> = futures
        .iter()
        .map(|f| *f.result_timeout(LIMIT).unwrap())
        .collect();
    assert_eq!(pids.len(), n, "each task had a worker of its own");
}
