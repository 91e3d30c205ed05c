//! A task that kills its worker fails alone: the tasks that worker had been handed to run after
//! it (a busy worker is sent work ahead of time, up to 128 quick tasks) never started, so they
//! run on another worker instead of failing with `WorkerDied`. With `kill_workers` they end
//! cancelled, as queued work does.
//!
//! Each test first warms a one-worker pool with quick tasks, so that its window is wide, then
//! submits a task that ends its worker followed by quick tasks, which the busy worker is sent.
//! (Before the pool sent such tasks elsewhere, every test here failed: the quick tasks failed
//! with `WorkerDied` of a worker that never started them.)
//
// On Windows (run under Wine in CI) the same, with the crashes of `crash_keeps_results.rs`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ExitCause, MapOptions, ProcessPoolExecutor, TaskError};
use common::{abort_cause, killed_cause, LIMIT};

/// Quick tasks submitted behind the one that ends the worker.
const BEHIND: u64 = 60;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Op {
    /// `abort()` after a while, so the tasks behind have been sent to this worker.
    AbortLater,
    /// `SIGKILL` to itself after a while.
    KillSelfLater,
    /// Leaves a marker file, then sleeps until it is killed from outside.
    Hang(String),
    /// The quick task: its input doubled, and the pid that ran it.
    Double(u64),
}

fn work(op: Op) -> (u64, u32) {
    match op {
        Op::AbortLater => {
            std::thread::sleep(Duration::from_millis(100));
            std::process::abort()
        }
        Op::KillSelfLater => {
            std::thread::sleep(Duration::from_millis(100));
            common::sigkill_self()
        }
        Op::Hang(marker) => {
            std::fs::write(marker, std::process::id().to_string()).unwrap();
            std::thread::sleep(Duration::from_secs(600));
            unreachable!("killed long before")
        }
        Op::Double(x) => (2 * x, std::process::id()),
    }
}

/// A quick task's future: its doubled input and the pid that ran it.
type Quick = cf_pool_proc::Future<(u64, u32)>;

fn one_worker() -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap()
}

/// Quick tasks until the worker's window is wide.
fn warm(pool: &ProcessPoolExecutor) {
    let ok = pool
        .map(
            work,
            (0..3000).map(Op::Double),
            MapOptions::new().timeout(LIMIT),
        )
        .unwrap()
        .filter(Result::is_ok)
        .count();
    assert_eq!(ok, 3000);
}

/// Submits `op` and then [`BEHIND`] quick tasks, one by one or as one batch.
fn submit_behind(pool: &ProcessPoolExecutor, op: Op, batch: bool) -> (Quick, Vec<Quick>) {
    if batch {
        let mut all = pool
            .submit_batch(
                work,
                std::iter::once(op)
                    .chain((0..BEHIND).map(Op::Double))
                    .collect(),
            )
            .unwrap();
        let first = all.remove(0);
        (first, all)
    } else {
        let first = pool.submit(work, op).unwrap();
        let behind = (0..BEHIND)
            .map(|x| pool.submit(work, Op::Double(x)).unwrap())
            .collect();
        (first, behind)
    }
}

/// The first task failed with `WorkerDied` and `cause`; every task behind it ran, once, on
/// another worker.
fn check(what: &str, first: &Quick, behind: &[Quick], cause: ExitCause) {
    let dead = match first.result_timeout(LIMIT) {
        Err(TaskError::WorkerDied { pid, cause: c, .. }) => {
            assert_eq!(c, cause, "{what}");
            pid
        }
        other => panic!("{what}: expected WorkerDied, got {other:?}"),
    };
    let failed: Vec<_> = behind
        .iter()
        .enumerate()
        .filter_map(|(x, f)| match f.result_timeout(LIMIT) {
            Ok(&(v, pid)) if v == 2 * x as u64 && pid != dead => None,
            other => Some((x, format!("{other:?}"))),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of the {BEHIND} tasks behind the one that ended worker {dead} did not run \
         elsewhere: {failed:?}",
        failed.len()
    );
}

#[test]
fn tasks_behind_an_abort_run_on_another_worker() {
    let pool = one_worker();
    for batch in [false, true] {
        warm(&pool);
        let (first, behind) = submit_behind(&pool, Op::AbortLater, batch);
        check(
            &format!("abort, batch {batch}"),
            &first,
            &behind,
            abort_cause(),
        );
    }
}

#[test]
fn tasks_behind_a_task_that_sigkills_its_worker_run_on_another_worker() {
    let pool = one_worker();
    for batch in [false, true] {
        warm(&pool);
        let (first, behind) = submit_behind(&pool, Op::KillSelfLater, batch);
        check(
            &format!("SIGKILL, batch {batch}"),
            &first,
            &behind,
            killed_cause(),
        );
    }
}

/// A marker file the hanging task writes its pid into, removed at the end.
struct Marker(PathBuf);

impl Marker {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "cf-behind-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        let _ = std::fs::remove_file(&path);
        Marker(path)
    }

    fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    /// The pid the hanging task wrote, once it has.
    fn wait_pid(&self) -> u32 {
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.0) {
                if let Ok(pid) = text.parse() {
                    return pid;
                }
            }
            assert!(start.elapsed() < LIMIT, "the hanging task never started");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A runaway task killed from outside (what a user's own watchdog does): the tasks its worker
/// held behind it run on the replacement.
#[test]
fn tasks_behind_a_worker_killed_from_outside_run_on_another_worker() {
    let pool = one_worker();
    for batch in [false, true] {
        warm(&pool);
        let marker = Marker::new("outside");
        let (first, behind) = submit_behind(&pool, Op::Hang(marker.path()), batch);
        let pid = marker.wait_pid();
        assert!(common::sigkill_child(pid), "could not kill worker {pid}");
        check(
            &format!("killed, batch {batch}"),
            &first,
            &behind,
            killed_cause(),
        );
    }
}

/// `kill_workers` fails the task that ran and cancels those that had not started, wherever
/// they waited: in the queue or in the worker.
#[test]
fn kill_workers_cancels_the_tasks_a_worker_had_not_started() {
    let pool = one_worker();
    warm(&pool);
    let marker = Marker::new("kill-workers");
    let (first, behind) = submit_behind(&pool, Op::Hang(marker.path()), false);
    marker.wait_pid();
    pool.kill_workers();
    match first.result_timeout(LIMIT) {
        Err(TaskError::WorkerDied { cause, .. }) => assert_eq!(cause, killed_cause()),
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    let not_cancelled: Vec<_> = behind
        .iter()
        .enumerate()
        .filter_map(|(x, f)| match f.result_timeout(LIMIT) {
            Err(TaskError::Cancelled) => None,
            other => Some((x, format!("{other:?}"))),
        })
        .collect();
    assert!(
        not_cancelled.is_empty(),
        "{} of the {BEHIND} tasks that never started were not cancelled: {not_cancelled:?}",
        not_cancelled.len()
    );
    assert!(behind.iter().all(|f| f.cancelled()));
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
