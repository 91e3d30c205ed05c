//! A pool that replaces its workers forever keeps flat threads, mappings and descriptors: the
//! threads that served a replaced worker are reaped, not kept until shutdown (each kept thread
//! holds its stack mapping, so a long-running pool with `max_tasks_per_child` ran out of
//! address space).
//!
//! Its own test binary: the counts are of the whole process. The default test goes through
//! 2,000 replacements; `replaced_20000_times` (ignored by default, run by `.ci/run`) through
//! 20,000.

mod common;

use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const LIMIT: Duration = Duration::from_secs(60);

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

/// Threads, mappings and descriptors of this process now.
fn usage() -> (usize, usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
    (count("/proc/self/task"), maps, count("/proc/self/fd"))
}

/// Runs `n` tasks, each on a fresh worker (`max_tasks_per_child(1)`), in rounds, and waits for
/// the retired workers to be gone.
fn replace(pool: &ProcessPoolExecutor, n: usize) {
    let mut left = n;
    while left > 0 {
        let round = left.min(200);
        let futures: Vec<_> = (0..round).map(|_| pool.submit(pid, ()).unwrap()).collect();
        for f in &futures {
            f.result_timeout(LIMIT).expect("task on a fresh worker");
        }
        left -= round;
    }
    let deadline = Instant::now() + LIMIT;
    while !pool.worker_pids().is_empty() {
        assert!(Instant::now() < deadline, "retired workers still alive");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check(n: usize) {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    // Warm up: the pool's and the allocator's own structures settle first.
    replace(&pool, 200);
    let before = usage();
    replace(&pool, n);
    // A thread that served a retired worker may still be finishing; give it a moment.
    let deadline = Instant::now() + LIMIT;
    let mut after = usage();
    while (after.0 > before.0 + 4 || after.1 > before.1 + 64 || after.2 > before.2 + 4)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        after = usage();
    }
    assert!(
        after.0 <= before.0 + 4 && after.1 <= before.1 + 64 && after.2 <= before.2 + 4,
        "after {n} replacements (threads, mappings, descriptors) went {before:?} -> {after:?}"
    );
    drop(pool);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "counts threads, mappings and descriptors through /proc (under Wine it would read \
              the Wine host process's)"
)]
fn replaced_2000_times_with_flat_threads_mappings_and_descriptors() {
    check(2_000);
}

#[test]
#[ignore = "20,000 worker starts take minutes; .ci/run runs it"]
fn replaced_20000_times_with_flat_threads_mappings_and_descriptors() {
    check(20_000);
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
