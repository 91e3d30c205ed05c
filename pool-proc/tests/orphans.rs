//! No orphans: when the parent dies, even by SIGKILL, its workers exit, idle or busy.
//!
//! The test binary re-executes itself as the "parent" (`victim` test, selected by an
//! environment variable), reads its worker pids, SIGKILLs it, and watches the workers go.
//! Reference: rayon-core's `tests/stack_overflow_crash.rs` pattern (re-run the test binary).
// Unix only: it watches the workers by pid in `/proc`. On Windows the job object
// (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE) does this job; tests/parent_killed.rs checks it there
// (and everywhere) by watching busy workers' output instead.
#![cfg(unix)]

mod common;

use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const ROLE: &str = "CF_ORPHANS_ROLE";

fn sleep_long(_: ()) -> u32 {
    std::thread::sleep(Duration::from_secs(120));
    0
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

/// Runs only inside the re-executed child: a pool with one busy and one idle worker.
#[test]
fn victim() {
    if std::env::var(ROLE).as_deref() != Ok("victim") {
        return;
    }
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let busy = pool.submit(sleep_long, ()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !busy.running() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    // The first worker is busy, so this starts the second, which then sits idle.
    let idle = *pool
        .submit(pid, ())
        .unwrap()
        .result_timeout(Duration::from_secs(60))
        .unwrap();
    let pids = pool.worker_pids();
    assert!(pids.contains(&idle));
    println!(
        "WORKERS {}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::thread::sleep(Duration::from_secs(120));
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn workers_exit_when_the_parent_is_sigkilled() {
    if common::is_victim(ROLE) {
        return;
    }
    let (mut child, said) =
        common::spawn_victim_saying(ROLE, &[], "WORKERS ", Duration::from_secs(60));
    let pids: Vec<u32> = said.split(' ').map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| alive(p)));
    child.kill().expect("SIGKILL the victim"); // Child::kill is SIGKILL on Unix
    let killed_at = Instant::now();
    child.wait().unwrap();
    // Generous bound against hangs; the figure printed is what matters.
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "workers {pids:?} outlived their SIGKILLed parent"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "workers gone {:?} after the parent's SIGKILL",
        killed_at.elapsed()
    );
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
