//! No orphans: when the parent dies, even by SIGKILL, its workers exit, idle or busy.
//!
//! The test binary re-executes itself as the "parent" (`victim` test, selected by an
//! environment variable), reads its worker pids, SIGKILLs it, and watches the workers go.
//! Reference: rayon-core's `tests/stack_overflow_crash.rs` pattern (re-run the test binary).
// Unix only: it SIGKILLs the parent and reads `/proc`; on Windows the job object
// (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE) does this job, not yet tested here.
#![cfg(unix)]
#![allow(unsafe_code)] // kill(2) on the victim

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
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
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "victim", "--nocapture", "--test-threads=1"])
        .env(ROLE, "victim")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints `test victim ... ` on the same line, before our marker.
            if let Some((_, rest)) = line.split_once("WORKERS ") {
                let pids: Vec<u32> = rest.split(' ').map(|p| p.parse().unwrap()).collect();
                let _ = tx.send(pids);
            }
        }
    });
    let pids = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(p) => p,
        Err(e) => {
            let _ = child.kill();
            panic!("victim never reported its workers: {e}");
        }
    };
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| alive(p)));
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
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
