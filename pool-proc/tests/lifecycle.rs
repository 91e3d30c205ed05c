//! Worker processes over a pool's life: started on demand, reused when idle, replaced after
//! `max_tasks_per_child`, initialised once, reaped at the end.
//!
//! Reference: CPython `Lib/test/test_concurrent_futures/test_process_pool.py`
//! (`test_saturation`, `test_idle_process_reuse_one`, `test_max_tasks_per_child`,
//! `test_max_tasks_early_shutdown`) and `test_init.py`.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cf_pool_proc::{wait, Executor, ProcessPoolExecutor, ReturnWhen, SubmitError, TaskError};

const LIMIT: Duration = Duration::from_secs(60);

fn pid(_: ()) -> u32 {
    std::process::id()
}

/// Blocks until `path` exists (at most 60 s), then returns this worker's pid.
fn wait_for_file(path: String) -> u32 {
    let start = Instant::now();
    while !Path::new(&path).exists() {
        assert!(start.elapsed() < LIMIT, "release file never appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::process::id()
}

/// Writes its file when dropped: releases the tasks waiting in [`wait_for_file`].
struct Release(PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"go");
    }
}

fn release_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cf-lifecycle-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Reads Linux's `/proc`, so Unix only: under Wine it is the host's `/proc`, whose pids are not
/// the Windows pids of the workers.
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes (its reaper may be an init that does not reap).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn saturation_starts_exactly_max_workers_processes() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(4)
        .build()
        .unwrap();
    let file = release_file("saturation");
    // Written however the test ends: an assertion below must fail as itself, not as the pool's
    // drop waiting for 60 tasks that each wait up to a minute for this file.
    let release = Release(file.clone());
    let path = file.to_string_lossy().into_owned();
    let futures: Vec<_> = (0..60)
        .map(|_| pool.submit(wait_for_file, path.clone()).unwrap())
        .collect();
    let deadline = Instant::now() + LIMIT;
    loop {
        let running = futures.iter().filter(|f| f.running()).count();
        if running >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {running} of 4 tasks running after {LIMIT:?}; workers {:?}",
            pool.worker_pids()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(pool.worker_pids().len(), 4);
    drop(release);
    let pids: HashSet<u32> = futures
        .iter()
        .map(|f| *f.result_timeout(LIMIT).unwrap())
        .collect();
    assert_eq!(pids.len(), 4);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn idle_worker_is_reused_for_sequential_tasks() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(4)
        .build()
        .unwrap();
    let pids: HashSet<u32> = (0..3)
        .map(|_| *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap())
        .collect();
    assert_eq!(pids.len(), 1);
    assert_eq!(pool.worker_pids().len(), 1);
}

#[test]
fn max_tasks_per_child_replaces_the_worker_after_n_tasks() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..4)
        .map(|_| *pool.submit(pid, ()).unwrap().result_timeout(LIMIT).unwrap())
        .collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(pids[2], pids[3], "the 4th task runs in a fresh process");
    // A backlog larger than the limit still completes, over several processes.
    let futures: Vec<_> = (0..20).map(|_| pool.submit(pid, ()).unwrap()).collect();
    let split = wait(&futures, Some(LIMIT), ReturnWhen::AllCompleted);
    assert_eq!(split.done.len(), 20);
    let distinct: HashSet<u32> = futures.iter().map(|f| *f.result().unwrap()).collect();
    assert!(
        distinct.len() >= 7,
        "20 tasks at 3 per child need at least 7 processes"
    );
}

fn fails(_: ()) -> u32 {
    panic!("task failure")
}

#[test]
fn early_shutdown_with_max_tasks_per_child_neither_hangs_nor_errors() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let f = pool.submit(fails, ()).unwrap();
    pool.shutdown(false, false);
    assert!(matches!(
        f.result_timeout(LIMIT),
        Err(TaskError::Panicked { .. })
    ));
}

static INIT_STATE: AtomicU64 = AtomicU64::new(0);

fn init_ok() -> Result<(), String> {
    INIT_STATE.store(4242, Ordering::SeqCst);
    Ok(())
}

fn read_init(_: ()) -> u64 {
    INIT_STATE.load(Ordering::SeqCst)
}

fn init_fails() -> Result<(), String> {
    Err("no database today".into())
}

#[test]
fn initializer_state_is_visible_to_tasks() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(init_ok)
        .build()
        .unwrap();
    let f = pool.submit(read_init, ()).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&4242));
    assert_eq!(
        INIT_STATE.load(Ordering::SeqCst),
        0,
        "the parent is untouched"
    );
}

/// Submits until the pool refuses (a worker may break it before all `n` submits: then `submit`
/// itself refuses, the other correct outcome), and checks that every future, and the refusal,
/// is `Broken` with a reason that contains `needle` and names the initializer.
fn assert_broken_by_initializer(pool: &ProcessPoolExecutor, n: usize, needle: &str) {
    let futures: Vec<_> = (0..n)
        .map_while(|_| match pool.submit(read_init, ()) {
            Ok(f) => Some(f),
            Err(SubmitError::Broken { reason }) => {
                assert!(reason.contains(needle), "{reason}");
                None
            }
            Err(other) => panic!("unexpected refusal {other:?}"),
        })
        .collect();
    assert!(
        !futures.is_empty(),
        "the first submit happens before any worker exists"
    );
    for f in &futures {
        match f.result_timeout(LIMIT) {
            Err(TaskError::Broken { reason }) => assert!(reason.contains(needle), "{reason}"),
            other => panic!("expected Broken, got {other:?}"),
        }
    }
    match pool.submit(read_init, ()) {
        Err(SubmitError::Broken { reason }) => assert!(reason.contains("initializer")),
        other => panic!("expected a Broken refusal, got {other:?}"),
    }
}

#[test]
fn failing_initializer_breaks_the_pool_with_its_reason() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(init_fails)
        .build()
        .unwrap();
    assert_broken_by_initializer(&pool, 5, "no database today");
}

fn init_panics() -> Result<(), String> {
    panic!("initializer exploded")
}

#[test]
fn panicking_initializer_breaks_the_pool_too() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(init_panics)
        .build()
        .unwrap();
    let f = pool.submit(read_init, ()).unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Broken { reason }) => {
            assert!(reason.contains("initializer exploded"), "{reason}");
            // Not a task's panic: no advice that the worker lives on.
            assert!(!reason.contains("lives on"), "{reason}");
        }
        other => panic!("expected Broken, got {other:?}"),
    }
}

fn init_exits() -> Result<(), String> {
    std::process::exit(3)
}

/// An initializer that ends its process instead of returning (here `exit`; `abort` in
/// resilience.rs) breaks the pool as one that fails does, with a reason naming the initializer:
/// its tasks never ran, so they do not fail as tasks that crashed their worker, and the pool
/// does not start a worker per task.
#[test]
fn an_initializer_that_ends_its_process_breaks_the_pool() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(init_exits)
        .build()
        .unwrap();
    assert_broken_by_initializer(&pool, 20, "initializer");
}

#[test]
fn drop_waits_for_work_and_reaps_every_worker() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..10).map(|_| pool.submit(pid, ()).unwrap()).collect();
    let _ = futures[0].result_timeout(LIMIT);
    let pids = pool.worker_pids();
    assert!(!pids.is_empty());
    drop(pool);
    assert!(futures.iter().all(|f| f.done()));
    // On Windows `zz_no_leaks` checks that no worker is left.
    #[cfg(unix)]
    for p in pids {
        assert!(!alive(p), "worker {p} outlived the pool");
        assert!(
            !Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| !s.contains(&format!(") Z {}", std::process::id())))
                    .unwrap_or(true),
            "worker {p} is a zombie of ours"
        );
    }
}

fn am_i_worker(_: ()) -> (bool, bool) {
    (
        cf_pool_proc::is_worker(),
        std::env::var("CF_POOL_PROC_WORKER_FD").is_ok(),
    )
}

#[test]
fn tasks_know_they_run_in_a_worker_and_the_marker_is_not_inherited() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let f = pool.submit(am_i_worker, ()).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&(true, false)));
    assert!(!cf_pool_proc::is_worker());
}

#[test]
fn zero_workers_and_zero_task_limit_are_build_errors() {
    assert!(ProcessPoolExecutor::builder()
        .max_workers(0)
        .build()
        .is_err());
    assert!(ProcessPoolExecutor::builder()
        .max_tasks_per_child(0)
        .build()
        .is_err());
    let pool = ProcessPoolExecutor::new().unwrap();
    assert_eq!(pool.max_workers(), cf_pool_proc::cpu_count());
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}

fn init_slowly() -> Result<(), String> {
    std::thread::sleep(Duration::from_millis(1500));
    Ok(())
}

fn quick(x: u64) -> u64 {
    x + 1
}

/// A task's time limit counts its own run, not its worker's start: with an initializer that
/// takes longer than the limit, timed tasks wait for a ready worker and then finish in time.
/// (Sent to a worker still in its initializer, each was killed there as overrunning.)
#[test]
fn a_slow_initializer_does_not_count_against_a_task_limit() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .initializer(init_slowly)
        .task_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let timed: Vec<_> = (0..4)
        .map(|i| {
            pool.submit_with_timeout(quick, i, Duration::from_millis(500))
                .unwrap()
        })
        .collect();
    let default_limit: Vec<_> = (10..14).map(|i| pool.submit(quick, i).unwrap()).collect();
    for (i, f) in (0..4).zip(&timed).chain((10..14).zip(&default_limit)) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&(i + 1)));
    }
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Two threads call `shutdown(wait=true)` while tasks run: in Python both block until the work
/// is done. The second used to return at once, finding the feeders already taken by the first.
#[test]
fn every_concurrent_shutdown_wait_waits_for_the_work() {
    common::within(LIMIT * 2, "two shutdowns", || {
        let pool = std::sync::Arc::new(
            ProcessPoolExecutor::builder()
                .max_workers(2)
                .build()
                .unwrap(),
        );
        let futures: Vec<_> = (0..4)
            .map(|_| pool.submit(sleep_ms, 1500).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let first = {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || pool.shutdown(true, false))
        };
        // Most likely inside the first one's wait by now (it only makes the test weaker if not).
        std::thread::sleep(Duration::from_millis(200));
        pool.shutdown(true, false);
        let done = futures.iter().filter(|f| f.done()).count();
        first.join().unwrap();
        assert_eq!(
            done, 4,
            "shutdown(wait=true) returned while tasks were still running"
        );
        for f in &futures {
            assert_eq!(f.result_timeout(LIMIT), Ok(&1500));
        }
    });
}
