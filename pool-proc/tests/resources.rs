//! Resource bounds: a million pending tasks cost memory, never descriptors.
//!
//! Its own test binary, so no other test's workers disturb the descriptor count.
//! Reference: the design's rule against a channel per task (a peer runs out of descriptors at a
//! few thousand pending tasks).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const LIMIT: Duration = Duration::from_secs(120);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn wait_for_file(path: String) -> u64 {
    let start = Instant::now();
    while !Path::new(&path).exists() {
        assert!(start.elapsed() < LIMIT, "release file never appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    0
}

fn add_one(x: u64) -> u64 {
    x + 1
}

#[test]
#[cfg_attr(windows, ignore = "counts descriptors and memory through /proc")]
fn a_million_pending_tasks_keep_descriptors_flat() {
    let n: u64 = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let file = std::env::temp_dir().join(format!("cf-resources-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let blocker = pool
        .submit(wait_for_file, file.to_string_lossy().into_owned())
        .unwrap();
    let started = Instant::now();
    while !blocker.running() {
        assert!(started.elapsed() < LIMIT, "the blocking task never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let fds_before = open_fds();
    let rss_before = rss_bytes();
    let mut futures = Vec::with_capacity(n as usize);
    for i in 0..n {
        futures.push(pool.submit(add_one, i).unwrap());
    }
    let fds_pending = open_fds();
    let rss_pending = rss_bytes();
    let per_task = (rss_pending.saturating_sub(rss_before)) as f64 / n as f64;
    println!(
        "{n} pending tasks: descriptors {fds_before} -> {fds_pending}, \
         memory {per_task:.0} bytes per pending task (incl. the caller's Future handle)"
    );
    assert_eq!(
        fds_before, fds_pending,
        "pending tasks must not open descriptors"
    );
    std::fs::write(&file, b"go").unwrap();
    for (i, f) in futures.iter().enumerate().step_by(9973) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&(i as u64 + 1)));
    }
    let last = futures.last().unwrap();
    assert_eq!(last.result_timeout(LIMIT), Ok(&n));
    let _ = std::fs::remove_file(&file);
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
