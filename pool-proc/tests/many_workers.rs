//! More workers than `WaitForMultipleObjects` can wait for (64): a pool of 70 starts all 70 and
//! each runs a task at the same time. The Windows pool waits on each worker separately (see
//! `sys/windows.rs`); this checks it, and runs everywhere (70 processes are cheap on Linux).
//!
//! Each task checks in (a file named by its pid) and then waits until all 70 have, so no
//! worker can finish one task and take another: 70 distinct pids means 70 live workers. A task
//! that waits in vain gives up after a while and the count comes out short: a failure, not a
//! hang.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ProcessPoolExecutor};

/// More than `MAXIMUM_WAIT_OBJECTS` (64).
const WORKERS: usize = 70;
/// How long a task waits for the others to check in (Wine starts processes slowly).
const GATHER: Duration = Duration::from_secs(240);
/// How long the parent waits for each result: more than [`GATHER`].
const LIMIT: Duration = Duration::from_secs(300);

/// Checks in under `dir`, waits (up to [`GATHER`]) until `n` tasks have, returns the pid.
fn gather((dir, n): (String, usize)) -> u32 {
    let me = std::process::id();
    std::fs::write(PathBuf::from(&dir).join(me.to_string()), b"").expect("check in");
    let start = Instant::now();
    while start.elapsed() < GATHER {
        let here = std::fs::read_dir(&dir).map_or(0, Iterator::count);
        if here >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    me
}

#[test]
fn seventy_workers_all_start_and_run_a_task_at_the_same_time() {
    let dir = std::env::temp_dir().join(format!("cf-many-workers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(WORKERS)
        .build()
        .expect("build pool");
    let arg = (dir.to_string_lossy().into_owned(), WORKERS);
    let futures: Vec<_> = (0..WORKERS)
        .map(|_| pool.submit(gather, arg.clone()).expect("submit"))
        .collect();
    let pids: BTreeSet<u32> = futures
        .iter()
        .map(|f| *f.result_timeout(LIMIT).expect("a gathered task"))
        .collect();
    let checked_in = std::fs::read_dir(&dir).map_or(0, Iterator::count);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(checked_in, WORKERS, "tasks that checked in");
    assert_eq!(
        pids.len(),
        WORKERS,
        "each task had a worker of its own, all alive at once"
    );
    assert!(!pids.contains(&std::process::id()));
    common::assert_heals(&pool);
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
