//! A worker keeps freed memory for its next task, within a bound.
//!
//! Tasks come to a worker one after another with payloads of similar sizes. With glibc's
//! defaults a freed 16 MiB went back to the kernel as often as not, and the next task's 16 MiB
//! came back as 4096 fresh pages, each a page fault. A worker tunes glibc's allocator to keep
//! up to 64 MiB of freed memory (allocations up to 32 MiB from its heap), and no more: above
//! that, freed memory is returned as before. Linux with glibc only: elsewhere the worker's
//! allocator keeps its defaults.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod common;

use std::hint::black_box;
use std::time::Duration;

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const LIMIT: Duration = Duration::from_secs(60);

/// This process's minor page faults so far (`/proc/self/stat`, field 10).
fn minor_faults() -> i64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) may hold spaces: count from the parenthesis that ends it.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name
        .split_whitespace()
        .nth(7)
        .unwrap()
        .parse()
        .unwrap()
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Fills and frees `len` bytes, then fills `len` bytes again: the page faults of the second.
fn faults_of_a_second_fill(len: usize) -> i64 {
    let first = vec![1u8; len];
    black_box(&first);
    drop(first);
    let before = minor_faults();
    let second = vec![2u8; len];
    black_box(&second);
    minor_faults() - before
}

/// Allocates `total` bytes in 1 MiB pieces, fills and frees them all: the worker's resident
/// memory before, and after the free.
fn resident_before_and_after(total: usize) -> (u64, u64) {
    let before = resident_bytes();
    let pieces: Vec<Vec<u8>> = (0..total >> 20)
        .map(|i| vec![i as u8 | 1; 1 << 20])
        .collect();
    black_box(&pieces);
    drop(pieces);
    (before, resident_bytes())
}

/// A second 16 MiB (or 24 MiB) in a worker reuses the first one's pages: a handful of faults,
/// not one per page (4096 for 16 MiB).
#[test]
fn a_worker_refills_freed_memory_without_page_faults() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    for len in [16 << 20, 24 << 20, 16 << 20] {
        let faults = *pool
            .submit(faults_of_a_second_fill, len)
            .unwrap()
            .result_timeout(LIMIT)
            .unwrap();
        let pages = (len / 4096) as i64;
        assert!(
            faults < pages / 16,
            "refilling {len} freed bytes took {faults} page faults ({pages} pages)"
        );
    }
}

/// What a worker keeps is bounded: 160 MiB freed at once goes back to the kernel, all but what
/// the tuning allows (64 MiB), with room for the allocator's own rounding.
#[test]
fn a_worker_returns_freed_memory_above_the_bound() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let (before, after) = *pool
        .submit(resident_before_and_after, 160 << 20)
        .unwrap()
        .result_timeout(LIMIT)
        .unwrap();
    assert!(
        after < before + (64 << 20) + (16 << 20),
        "after freeing 160 MiB the worker holds {} MiB more than before",
        (after.saturating_sub(before)) >> 20
    );
}
