//! Concurrency stress: eight threads submit while another shuts the pool down with
//! `cancel_futures` at a random moment; and done-callbacks that submit, wait, or shut down.
//!
//! After `shutdown(wait = true, cancel_futures = true)` returns, each accepted future is either
//! finished with `work(input)` (a worker had taken it off the queue) or cancelled (it was still
//! queued, or its submitter's own `cancel()` won the race), and never runs after being
//! cancelled; callbacks ran exactly once; every later `submit` is refused with
//! `SubmitError::Shutdown`. Sizes shrink under Miri and in debug builds; the full size
//! (8 x 50,000 tasks) is ignored by default:
//!
//! ```text
//! cargo test --release -p cf-pool-thread --test stress -- --ignored --nocapture
//! ```

mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cf_pool_thread::{Executor, Future, SubmitError, TaskError, ThreadPoolExecutor};
use common::{Latch, OpenOnDrop, LIMIT};

/// A bijective mix: a value that is the right function of its input was not wired to another
/// task's future.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The racing tasks' work: long enough (a few microseconds) that a queue builds up behind the
/// workers, so a shutdown has something to cancel.
fn work(x: u64) -> u64 {
    (0..WORK_ROUNDS).fold(x, |v, _| mix(v))
}

const WORK_ROUNDS: u32 = if cfg!(miri) { 2 } else { 200 };

/// Runs `f` on its own thread; fails the test if it is still running after `limit`.
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::sync_channel(1);
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIMIT * 4) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running (a hang)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
    }
}

/// xorshift64*, seeded from `CF_STRESS_SEED` or the clock; the seed is printed.
struct Rng(u64);

impl Rng {
    fn from_env() -> Self {
        let seed = std::env::var("CF_STRESS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                if cfg!(miri) {
                    return 42; // no clock under Miri's isolation
                }
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("seed: CF_STRESS_SEED={seed}");
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// How a submitter thread hands in its tasks: through the trait one by one, as batches of 16,
/// or as capturing closures (`spawn`) that record that they ran.
#[derive(Debug, Clone, Copy)]
enum Via {
    Submit,
    Batch,
    Spawn,
}

/// When the shutdown strikes: after this many submit attempts, or this many completions.
#[derive(Debug, Clone, Copy)]
enum Moment {
    Submitted(usize),
    Completed(usize),
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

struct Race {
    submitters: u64,
    per_thread: u64,
    workers: usize,
    rounds: usize,
}

/// Everything the threads of one round share.
struct Round {
    pool: ThreadPoolExecutor,
    calls: Arc<Vec<AtomicU8>>,
    ran: Arc<Vec<AtomicU8>>,
    accepted: Vec<Mutex<Accepted>>,
    attempts: AtomicUsize,
    completed: Arc<AtomicUsize>,
    refused: AtomicUsize,
    per_thread: u64,
}

impl Round {
    fn submitter(&self, t: u64) {
        let via = [Via::Submit, Via::Batch, Via::Spawn][t as usize % 3];
        let mut was_refused = false;
        // Every 7th task is cancelled by its submitter, newest first, in bursts: a race
        // with the workers taking them. A cancel() that wins means the task never runs.
        let mut to_cancel: Vec<usize> = Vec::new();
        let mut i = 0;
        while i < self.per_thread {
            let n = if matches!(via, Via::Batch) {
                16.min(self.per_thread - i)
            } else {
                1
            };
            let ids: Vec<u64> = (i..i + n).map(|k| t * self.per_thread + k).collect();
            let outcome = match via {
                Via::Submit => self.pool.submit(work, ids[0]).map(|f| vec![f]),
                Via::Batch => self.pool.submit_batch(work, ids.clone()),
                Via::Spawn => {
                    let (id, ran) = (ids[0], Arc::clone(&self.ran));
                    self.pool
                        .spawn(move || {
                            ran[id as usize].fetch_add(1, Ordering::SeqCst);
                            work(id)
                        })
                        .map(|f| vec![f])
                }
            };
            match outcome {
                Ok(futures) => {
                    assert!(!was_refused, "submit accepted after a refusal");
                    let mut mine = self.accepted[t as usize].lock().unwrap();
                    for (id, f) in ids.into_iter().zip(futures) {
                        let calls = Arc::clone(&self.calls);
                        let completed = Arc::clone(&self.completed);
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
                    self.refused.fetch_add(n as usize, Ordering::SeqCst);
                }
                Err(other) => panic!("submit refused with {other}"),
            }
            if self.attempts.fetch_add(n as usize, Ordering::SeqCst) % 64 < n as usize {
                std::thread::yield_now();
            }
            if to_cancel.len() >= 4 || i + n >= self.per_thread {
                let mut mine = self.accepted[t as usize].lock().unwrap();
                for &k in to_cancel.iter().rev() {
                    mine[k].2 = mine[k].1.cancel();
                }
                to_cancel.clear();
            }
            i += n;
        }
    }

    fn shutter(&self, moment: Moment, total: usize) {
        let deadline = Instant::now() + LIMIT;
        let (counter, target) = match moment {
            Moment::Submitted(n) => (&self.attempts, n),
            Moment::Completed(n) => (&*self.completed, n),
        };
        while counter.load(Ordering::SeqCst) < target.min(total) {
            assert!(Instant::now() < deadline, "no progress towards {moment:?}");
            std::thread::yield_now();
        }
        self.pool.shutdown(true, true);
        // Everything accepted so far must be done now, not eventually.
        for mine in &self.accepted {
            for (id, f, _) in mine.lock().unwrap().iter() {
                assert!(f.done(), "task {id} not done when shutdown(wait) returned");
            }
        }
    }

    fn check(self) -> Tally {
        assert!(matches!(
            self.pool.submit(mix, 0),
            Err(SubmitError::Shutdown)
        ));
        drop(self.pool);
        let mut tally = Tally {
            refused: self.refused.load(Ordering::SeqCst),
            ..Tally::default()
        };
        for (t, mine) in self.accepted.into_iter().enumerate() {
            let spawned = t % 3 == 2;
            for (id, f, cancelled) in mine.into_inner().unwrap() {
                let n = self.calls[id as usize].load(Ordering::SeqCst);
                assert_eq!(n, 1, "task {id}: callbacks ran {n} times");
                let ran = self.ran[id as usize].load(Ordering::SeqCst);
                match f.try_result() {
                    Some(Ok(&v)) => {
                        assert_eq!(v, work(id), "task {id} got another task's value");
                        assert!(
                            !cancelled,
                            "task {id}: cancel() said yes, yet it has a value"
                        );
                        assert!(
                            !spawned || ran == 1,
                            "task {id} has a value, ran {ran} times"
                        );
                        tally.values += 1;
                    }
                    Some(Err(TaskError::Cancelled)) => {
                        tally.cancel_won += usize::from(cancelled);
                        assert_eq!(ran, 0, "task {id} was cancelled but ran");
                        tally.cancelled += 1;
                    }
                    Some(Err(other)) => panic!("task {id}: unexpected outcome {other}"),
                    None => panic!("task {id} pending after shutdown(wait)"),
                }
                tally.accepted += 1;
            }
        }
        assert_eq!(tally.values + tally.cancelled, tally.accepted);
        tally
    }
}

fn run_race(cfg: &Race) {
    let mut rng = Rng::from_env();
    let total = cfg.submitters * cfg.per_thread;
    for r in 0..cfg.rounds {
        let moment = if r % 2 == 0 {
            Moment::Submitted(rng.below(total + total / 3) as usize)
        } else {
            Moment::Completed(rng.below(total) as usize)
        };
        let (submitters, per_thread, workers) = (cfg.submitters, cfg.per_thread, cfg.workers);
        let tally = within("shutdown race", move || {
            let round = Round {
                pool: ThreadPoolExecutor::builder()
                    .max_workers(workers)
                    .build()
                    .unwrap(),
                calls: Arc::new((0..total).map(|_| AtomicU8::new(0)).collect()),
                ran: Arc::new((0..total).map(|_| AtomicU8::new(0)).collect()),
                accepted: (0..submitters).map(|_| Mutex::new(Vec::new())).collect(),
                attempts: AtomicUsize::new(0),
                completed: Arc::new(AtomicUsize::new(0)),
                refused: AtomicUsize::new(0),
                per_thread,
            };
            std::thread::scope(|s| {
                for t in 0..submitters {
                    let round = &round;
                    s.spawn(move || round.submitter(t));
                }
                s.spawn(|| round.shutter(moment, total as usize));
            });
            round.check()
        });
        assert_eq!(tally.accepted + tally.refused, total as usize);
        println!("shutdown at {moment:?} of {total}: {tally:?}");
    }
}

#[test]
fn eight_submitters_race_shutdown_with_cancel_futures() {
    let (per_thread, rounds) = if cfg!(miri) {
        (6, 1)
    } else if cfg!(debug_assertions) {
        (5_000, 4)
    } else {
        (20_000, 4)
    };
    run_race(&Race {
        submitters: 8,
        per_thread,
        workers: 4,
        rounds,
    });
}

#[test]
#[ignore = "full size: cargo test --release -p cf-pool-thread --test stress -- --ignored"]
fn eight_submitters_of_50k_race_shutdown_with_cancel_futures() {
    run_race(&Race {
        submitters: 8,
        per_thread: 50_000,
        workers: 4,
        rounds: 4,
    });
}

/// Drops the test's handle once it is the last one, so the pool is dropped here, not in a
/// callback that still held a clone for a moment.
fn drop_last(pool: Arc<ThreadPoolExecutor>) {
    let deadline = Instant::now() + LIMIT;
    while Arc::strong_count(&pool) > 1 {
        assert!(Instant::now() < deadline, "a callback kept the pool alive");
        std::thread::yield_now();
    }
    drop(pool);
}

/// Each link's callback submits the next link.
fn chain(pool: &Arc<ThreadPoolExecutor>, f: &Future<u64>, left: u32, done: mpsc::Sender<u64>) {
    let weak = Arc::downgrade(pool);
    f.add_done_callback(move |f| {
        let v = *f.result().expect("a link failed");
        if left == 0 {
            done.send(v).unwrap();
            return;
        }
        let pool = weak.upgrade().expect("the test holds the pool");
        let next = pool.submit(mix, v).expect("submit from a callback");
        chain(&pool, &next, left - 1, done);
    });
}

#[test]
fn callbacks_that_submit_new_work() {
    within("callback chains", || {
        let (chains, depth) = if cfg!(miri) { (2u64, 3u32) } else { (8, 200) };
        let pool = Arc::new(
            ThreadPoolExecutor::builder()
                .max_workers(4)
                .build()
                .unwrap(),
        );
        let (tx, rx) = mpsc::channel();
        for c in 0..chains {
            let first = pool.submit(mix, c).unwrap();
            chain(&pool, &first, depth - 1, tx.clone());
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
}

#[test]
fn callback_waits_on_a_future_another_thread_completes() {
    within("callback waits", || {
        let pool = ThreadPoolExecutor::builder()
            .max_workers(4)
            .build()
            .unwrap();
        let latch = Latch::new();
        let _open = OpenOnDrop(latch.clone());
        let gate = latch.clone();
        let slow = pool
            .spawn(move || {
                gate.wait();
                7_u64
            })
            .unwrap();
        let quick = pool.submit(mix, 1).unwrap();
        let (tx, rx) = mpsc::channel();
        quick.add_done_callback(move |_| {
            let _ = tx.send(slow.result_timeout(LIMIT).cloned());
        });
        // The callback is now blocked on `slow` in a worker thread; release it.
        quick.result_timeout(LIMIT).unwrap();
        latch.open();
        assert_eq!(rx.recv_timeout(LIMIT).expect("callback ran"), Ok(7));
    });
}

#[test]
fn callback_submits_work_and_waits_for_it() {
    within("callback submits and waits", || {
        let pool = Arc::new(
            ThreadPoolExecutor::builder()
                .max_workers(4)
                .build()
                .unwrap(),
        );
        let weak = Arc::downgrade(&pool);
        let (tx, rx) = mpsc::channel();
        let first = pool.submit(mix, 1).unwrap();
        first.add_done_callback(move |f| {
            let v = *f.result().unwrap();
            let next = weak.upgrade().unwrap().submit(mix, v).unwrap();
            let _ = tx.send(next.result_timeout(Duration::from_secs(10)).cloned());
        });
        let got = rx.recv_timeout(LIMIT).expect("callback ran");
        drop_last(pool);
        assert_eq!(got, Ok(mix(mix(1))), "the callback's wait for new work");
    });
}

#[test]
fn callback_may_shut_down_the_pool_with_wait() {
    within("shutdown from a callback", || {
        let pool = Arc::new(
            ThreadPoolExecutor::builder()
                .max_workers(2)
                .build()
                .unwrap(),
        );
        let weak = Arc::downgrade(&pool);
        let (tx, rx) = mpsc::channel();
        let f = pool.submit(mix, 3).unwrap();
        f.add_done_callback(move |_| {
            if let Some(pool) = weak.upgrade() {
                pool.shutdown(true, false);
            }
            let _ = tx.send(());
        });
        rx.recv_timeout(LIMIT)
            .expect("shutdown(wait) inside a callback returned");
        assert!(matches!(pool.submit(mix, 4), Err(SubmitError::Shutdown)));
        drop_last(pool);
    });
}

#[test]
fn last_handle_dropped_inside_a_callback() {
    within("drop in a callback", || {
        let pool = ThreadPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap();
        let latch = Latch::new();
        let _open = OpenOnDrop(latch.clone());
        let gate = latch.clone();
        let blocker = pool.spawn(move || gate.wait()).unwrap();
        let (tx, rx) = mpsc::channel();
        let handle = Arc::new(Mutex::new(Some(pool)));
        let inside = Arc::clone(&handle);
        blocker.add_done_callback(move |_| {
            drop(inside.lock().unwrap().take());
            let _ = tx.send(());
        });
        // The pool moves out of reach of this thread: the callback drops it.
        drop(handle);
        latch.open();
        rx.recv_timeout(LIMIT)
            .expect("dropping the pool inside a callback returned");
    });
}
