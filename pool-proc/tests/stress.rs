//! Concurrency stress: eight threads submit while another shuts the pool down with
//! `cancel_futures` at a random moment; and done-callbacks that submit, wait, or shut down.
//!
//! After `shutdown(wait = true, cancel_futures = true)` each accepted future is in exactly one
//! of two states, and already so when `shutdown` returns:
//!
//! * finished with `mix(input)`: it had been handed to a worker (`set_running` happens when a
//!   task enters a worker's window), and a window is always run to the end; or
//! * cancelled: it was still in the pool's queue, which shutdown drains, or its submitter's
//!   own `cancel()` (every 7th task) won the race with the workers.
//!
//! Nothing else is possible without a fault: no worker dies here (so no `WorkerDied`), payloads
//! are plain integers (no `Codec`), no initializer (no `Broken`). A ledger the workers append
//! to proves values ran exactly once and cancelled tasks never ran. Every `submit` after the
//! shutdown is refused with `SubmitError::Shutdown`, and once refused, always refused.
//!
//! The full size (8 x 50,000 tasks, four rounds) is ignored by default:
//!
//! ```text
//! cargo test --release -p cf-pool-proc --test stress -- --ignored --nocapture
//! ```

mod common;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, Future, ProcessPoolExecutor, SubmitError, TaskError};
use common::{mix, Ledger, Rng};

const LIMIT: Duration = Duration::from_secs(60);

fn task((id, ledger): (u64, String)) -> u64 {
    Ledger::record(&ledger, id);
    mix(id)
}

struct Race {
    submitters: u64,
    per_thread: u64,
    workers: usize,
    rounds: usize,
    limit: Duration,
}

/// One submitter's accepted tasks: `(id, future, whether its own cancel() succeeded)`.
type Accepted = Vec<(u64, Future<u64>, bool)>;

#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    values: usize,
    cancelled: usize,
    /// Of those, cancelled by the submitter's own `cancel()`.
    cancel_won: usize,
    refused: usize,
}

/// When the shutdown thread strikes: after this many submit attempts (racing the submitters),
/// or after this many futures completed (racing the workers' windows).
#[derive(Debug, Clone, Copy)]
enum Moment {
    Submitted(usize),
    Completed(usize),
}

fn shutdown_race(cfg: &Race, moment: Moment) -> Tally {
    let total = cfg.submitters * cfg.per_thread;
    let (submitters, per_thread, workers) = (cfg.submitters, cfg.per_thread, cfg.workers);
    common::within(cfg.limit, "shutdown race", move || {
        let ledger = Ledger::new("stress");
        let pool = ProcessPoolExecutor::builder()
            .max_workers(workers)
            .build()
            .unwrap();
        let calls: Arc<Vec<AtomicU8>> = Arc::new((0..total).map(|_| AtomicU8::new(0)).collect());
        let accepted: Vec<Mutex<Accepted>> =
            (0..submitters).map(|_| Mutex::new(Vec::new())).collect();
        let attempts = AtomicUsize::new(0);
        let completed = Arc::new(AtomicUsize::new(0));
        let refused = AtomicUsize::new(0);
        let shut = AtomicBool::new(false);

        std::thread::scope(|s| {
            for t in 0..submitters {
                let (pool, calls, mine) = (&pool, &calls, &accepted[t as usize]);
                let (attempts, refused, ledger) = (&attempts, &refused, &ledger.path);
                let completed = &completed;
                s.spawn(move || {
                    let mut was_refused = false;
                    // Every 7th task is cancelled by its submitter, newest first, in bursts: a race
                    // with the workers taking them. A cancel() that wins means the task never runs.
                    let mut to_cancel: Vec<usize> = Vec::new();
                    let mut i = 0;
                    while i < per_thread {
                        // Every other thread submits in batches of 16 (one message per batch).
                        let n = if t % 2 == 1 {
                            16.min(per_thread - i)
                        } else {
                            1
                        };
                        let ids: Vec<u64> = (i..i + n).map(|k| t * per_thread + k).collect();
                        let args: Vec<_> = ids.iter().map(|&id| (id, ledger.clone())).collect();
                        let outcome = if n == 1 {
                            pool.submit(task, args.into_iter().next().unwrap())
                                .map(|f| vec![f])
                        } else {
                            pool.submit_batch(task, args)
                        };
                        match outcome {
                            Ok(futures) => {
                                assert!(!was_refused, "submit accepted after a refusal");
                                let mut mine = mine.lock().unwrap();
                                for (id, f) in ids.into_iter().zip(futures) {
                                    let calls = Arc::clone(calls);
                                    let completed = Arc::clone(completed);
                                    f.add_done_callback(move |_| {
                                        calls[id as usize].fetch_add(1, Ordering::SeqCst);
                                        completed.fetch_add(1, Ordering::SeqCst);
                                    });
                                    if id % 7 == 3 {
                                        to_cancel.push(mine.len());
                                    }
                                    mine.push((id, f, false));
                                }
                            }
                            Err(SubmitError::Shutdown) => {
                                was_refused = true;
                                refused.fetch_add(n as usize, Ordering::SeqCst);
                            }
                            Err(other) => panic!("submit refused with {other}"),
                        }
                        // Pace the submitters so submitting overlaps running.
                        if attempts.fetch_add(n as usize, Ordering::SeqCst) % 16 < n as usize {
                            std::thread::sleep(Duration::from_micros(500));
                        }
                        if to_cancel.len() >= 4 || i + n >= per_thread {
                            let mut mine = mine.lock().unwrap();
                            for &k in to_cancel.iter().rev() {
                                mine[k].2 = mine[k].1.cancel();
                            }
                            to_cancel.clear();
                        }
                        i += n;
                    }
                });
            }
            s.spawn(|| {
                let deadline = Instant::now() + LIMIT;
                let (counter, target) = match moment {
                    Moment::Submitted(n) => (&attempts, n),
                    Moment::Completed(n) => (&*completed, n),
                };
                while counter.load(Ordering::SeqCst) < target.min(total as usize) {
                    assert!(Instant::now() < deadline, "no progress towards {moment:?}");
                    std::thread::sleep(Duration::from_micros(100));
                }
                pool.shutdown(true, true);
                shut.store(true, Ordering::SeqCst);
                // Everything accepted so far must be done now, not eventually.
                for mine in &accepted {
                    for (id, f, _) in mine.lock().unwrap().iter() {
                        assert!(f.done(), "task {id} not done when shutdown(wait) returned");
                    }
                }
            });
        });
        assert!(shut.load(Ordering::SeqCst));
        assert!(matches!(
            pool.submit(task, (0, String::new())),
            Err(SubmitError::Shutdown)
        ));
        drop(pool);

        let ran = ledger.counts(total as usize);
        let mut tally = Tally {
            refused: refused.load(Ordering::SeqCst),
            ..Tally::default()
        };
        for mine in accepted {
            for (id, f, cancelled) in mine.into_inner().unwrap() {
                let n = calls[id as usize].load(Ordering::SeqCst);
                assert_eq!(n, 1, "task {id}: callbacks ran {n} times");
                let ran = ran[id as usize];
                match f.try_result() {
                    Some(Ok(&v)) => {
                        assert_eq!(v, mix(id), "task {id} got another task's value");
                        assert!(
                            !cancelled,
                            "task {id}: cancel() said yes, yet it has a value"
                        );
                        assert_eq!(ran, 1, "task {id} has a value and ran {ran} times");
                        tally.values += 1;
                    }
                    Some(Err(TaskError::Cancelled)) => {
                        tally.cancel_won += usize::from(cancelled);
                        assert_eq!(ran, 0, "task {id} was cancelled but ran {ran} times");
                        tally.cancelled += 1;
                    }
                    Some(Err(other)) => panic!("task {id}: unexpected outcome {other}"),
                    None => panic!("task {id} pending after shutdown(wait)"),
                }
                tally.accepted += 1;
            }
        }
        assert_eq!(tally.accepted + tally.refused, total as usize);
        assert_eq!(tally.values + tally.cancelled, tally.accepted);
        println!("shutdown at {moment:?} of {total}: {tally:?}");
        tally
    })
}

fn run_race(cfg: &Race) {
    let _serial = common::exclusive();
    let snapshot = common::Snapshot::take();
    let mut rng = Rng::from_env("CF_STRESS_SEED");
    let total = cfg.submitters * cfg.per_thread;
    for round in 0..cfg.rounds {
        let moment = if round % 2 == 0 {
            // A quarter of these come after the last submit: only unstarted work is cancelled.
            Moment::Submitted(rng.below(total + total / 3) as usize)
        } else {
            Moment::Completed(rng.below(total) as usize)
        };
        shutdown_race(cfg, moment);
    }
    common::assert_zombies_reaped();
    snapshot.assert_restored();
}

// It once lost a ledger record under Wine (appends from several processes to one file are not
// atomic there); the ledger is a file per execution on Windows now (tests/common).
#[test]
fn eight_submitters_race_shutdown_with_cancel_futures() {
    run_race(&Race {
        submitters: 8,
        per_thread: 1_000,
        workers: 2,
        rounds: 4,
        limit: Duration::from_secs(120),
    });
}

#[test]
#[ignore = "full size, release: cargo test --release -p cf-pool-proc --test stress -- --ignored"]
fn eight_submitters_of_50k_race_shutdown_with_cancel_futures() {
    run_race(&Race {
        submitters: 8,
        per_thread: 50_000,
        workers: 2,
        rounds: 4,
        limit: Duration::from_secs(600),
    });
}

fn pool(workers: usize) -> Arc<ProcessPoolExecutor> {
    Arc::new(
        ProcessPoolExecutor::builder()
            .max_workers(workers)
            .build()
            .unwrap(),
    )
}

/// Drops the test's handle once it is the last one (callbacks may still hold clones for a
/// moment after their last action), so the pool is never dropped on a pool thread here.
fn drop_last(pool: Arc<ProcessPoolExecutor>) {
    let deadline = Instant::now() + LIMIT;
    while Arc::strong_count(&pool) > 1 {
        assert!(Instant::now() < deadline, "a callback kept the pool alive");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(pool);
}

fn step(x: u64) -> u64 {
    mix(x)
}

/// Each link's callback submits the next link; `chains` chains of `depth` links run at once.
fn chain(pool: &Arc<ProcessPoolExecutor>, f: Future<u64>, left: u32, done: mpsc::Sender<u64>) {
    let weak = Arc::downgrade(pool);
    f.add_done_callback(move |f| {
        let v = *f.result().expect("a link failed");
        if left == 0 {
            done.send(v).unwrap();
            return;
        }
        // Never hold the pool past this block: the test must own the last handle.
        let next = {
            let pool = weak.upgrade().expect("the test holds the pool");
            let next = pool.submit(step, v).expect("submit from a callback");
            chain(&pool, next.clone(), left - 1, done);
            next
        };
        drop(next);
    });
}

#[test]
fn callbacks_that_submit_new_work() {
    let _serial = common::exclusive();
    let snapshot = common::Snapshot::take();
    common::within(LIMIT, "callback chains", || {
        let (chains, depth) = (8u64, 50u32);
        let pool = pool(2);
        let (tx, rx) = mpsc::channel();
        for c in 0..chains {
            let first = pool.submit(step, c).unwrap();
            chain(&pool, first, depth - 1, tx.clone());
        }
        let mut ends: Vec<u64> = (0..chains)
            .map(|_| rx.recv_timeout(LIMIT).expect("a chain stalled"))
            .collect();
        let mut expected: Vec<u64> = (0..chains)
            .map(|c| (0..depth).fold(c, |v, _| mix(v)))
            .collect();
        ends.sort_unstable();
        expected.sort_unstable();
        assert_eq!(ends, expected);
        drop_last(pool);
    });
    common::assert_zombies_reaped();
    snapshot.assert_restored();
}

fn sleeps(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn callback_waits_on_a_future_another_worker_completes() {
    let _serial = common::exclusive();
    let snapshot = common::Snapshot::take();
    common::within(LIMIT, "callback waits", || {
        let pool = pool(2);
        let slow = pool.submit(sleeps, 300).unwrap();
        let deadline = Instant::now() + LIMIT;
        while !slow.running() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        // The first worker is busy, so this runs on (and completes through) the second.
        let quick = pool.submit(step, 1).unwrap();
        let (tx, rx) = mpsc::channel();
        quick.add_done_callback(move |_| {
            let _ = tx.send(slow.result_timeout(LIMIT).cloned());
        });
        assert_eq!(rx.recv_timeout(LIMIT).expect("callback ran"), Ok(300));
        drop_last(pool);
    });
    common::assert_zombies_reaped();
    snapshot.assert_restored();
}

#[test]
fn callback_submits_work_and_waits_for_it() {
    let _serial = common::exclusive();
    let snapshot = common::Snapshot::take();
    common::within(LIMIT, "callback submits and waits", || {
        let pool = pool(2);
        let weak = Arc::downgrade(&pool);
        let (tx, rx) = mpsc::channel();
        let first = pool.submit(step, 1).unwrap();
        first.add_done_callback(move |f| {
            let v = *f.result().unwrap();
            let next = weak.upgrade().unwrap().submit(step, v).unwrap();
            let _ = tx.send(next.result_timeout(Duration::from_secs(10)).cloned());
        });
        let got = rx.recv_timeout(LIMIT).expect("callback ran");
        let expected = mix(mix(1));
        drop_last(pool);
        assert_eq!(got, Ok(expected), "the callback's wait for new work");
    });
    common::assert_zombies_reaped();
    snapshot.assert_restored();
}

#[test]
fn callback_may_shut_down_the_pool_with_wait() {
    let _serial = common::exclusive();
    let snapshot = common::Snapshot::take();
    let pids = common::within(LIMIT, "shutdown from a callback", || {
        let pool = pool(2);
        let (tx, rx) = mpsc::channel();
        let weak = Arc::downgrade(&pool);
        let f = pool.submit(step, 3).unwrap();
        f.add_done_callback(move |_| {
            if let Some(pool) = weak.upgrade() {
                pool.shutdown(true, false);
            }
            let _ = tx.send(());
        });
        let pids = pool.worker_pids();
        let returned = rx.recv_timeout(Duration::from_secs(20));
        assert!(
            returned.is_ok(),
            "shutdown(wait) inside a callback never returned"
        );
        assert!(matches!(pool.submit(step, 4), Err(SubmitError::Shutdown)));
        drop_last(pool);
        pids
    });
    common::assert_gone(pids);
    common::assert_zombies_reaped();
    snapshot.assert_restored();
}

#[test]
fn last_handle_dropped_inside_a_callback() {
    let _serial = common::exclusive();
    let snapshot = common::Snapshot::take();
    common::within(LIMIT, "drop in a callback", || {
        let pool = pool(1);
        let (tx, rx) = mpsc::channel();
        let gate = pool.submit(sleeps, 200).unwrap();
        let handle = Arc::clone(&pool);
        gate.add_done_callback(move |_| {
            drop(handle);
            let _ = tx.send(());
        });
        // From here the callback's handle is the last one.
        drop(pool);
        let returned = rx.recv_timeout(Duration::from_secs(20));
        assert!(
            returned.is_ok(),
            "dropping the pool inside a callback never returned"
        );
    });
    common::assert_zombies_reaped();
    snapshot.assert_restored();
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
