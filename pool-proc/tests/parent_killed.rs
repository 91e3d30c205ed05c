//! No orphans, on every platform: when the parent is killed (`Child::kill`: `SIGKILL` on Unix,
//! `TerminateProcess` on Windows), its busy workers stop too.
//!
//! The test binary re-executes itself as the "parent" (`victim`, selected by an environment
//! variable), whose two workers each run a task that appends a byte to a file of its own every
//! few milliseconds. Once both files grow, the test kills the parent and watches the files: they
//! must stop growing. It needs neither `/proc` nor process ids, so it runs under Wine as well
//! (where a kill-on-close Job Object does this job; on Linux `PR_SET_PDEATHSIG`, on the portable
//! Unix path a lifeline pipe). `tests/orphans.rs` checks the same on Unix by process id.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const ROLE: &str = "CF_PARENT_KILLED_ROLE";
const DIR: &str = "CF_PARENT_KILLED_DIR";
/// A bound that turns a hang into a failure; nothing here is timed.
const LIMIT: Duration = Duration::from_secs(60);

/// In a worker: appends a byte to `path` every 5 ms, for two minutes at most.
fn heartbeat(path: String) -> u32 {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        file.write_all(b".").unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    0
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn beats(dir: &Path) -> [PathBuf; 2] {
    [dir.join("worker-0"), dir.join("worker-1")]
}

/// Runs only inside the re-executed child: two workers, each busy with a heartbeat.
#[test]
fn victim() {
    if std::env::var(ROLE).as_deref() != Ok("victim") {
        return;
    }
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let files = beats(&dir);
    let _running: Vec<_> = files
        .iter()
        .map(|f| {
            pool.submit(heartbeat, f.to_string_lossy().into_owned())
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + LIMIT;
    while files.iter().any(|f| size(f) == 0) {
        assert!(Instant::now() < deadline, "the heartbeats never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("BEATING");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn busy_workers_stop_when_the_parent_is_killed() {
    if common::is_victim(ROLE) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("cf-parent-killed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = common::spawn_victim(ROLE, &[(DIR, dir.as_os_str())], "BEATING", LIMIT);
    child.kill().unwrap();
    child.wait().unwrap();

    // The files must stop growing: wait for a quiet second (200 beats would land in it).
    let files = beats(&dir);
    let killed_at = Instant::now();
    let mut last = files.each_ref().map(|f| size(f));
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) {
        assert!(
            killed_at.elapsed() < LIMIT,
            "workers outlived their killed parent: their heartbeat files are still growing \
             ({last:?} bytes)"
        );
        std::thread::sleep(Duration::from_millis(50));
        let now = files.each_ref().map(|f| size(f));
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
