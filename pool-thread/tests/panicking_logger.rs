//! An application logger that panics must not take a worker thread down: the pool logs on its
//! workers (a done-callback that panicked, a panic that escaped a task), and a worker that
//! unwinds is never replaced, so with every worker gone later tasks would wait forever.
//! A binary of its own: the logger is process-wide.

use std::sync::mpsc;
use std::time::Duration;

use cf_pool_thread::{Executor, ThreadPoolExecutor};

const LIMIT: Duration = Duration::from_secs(60);

/// Panics on every record.
struct Fragile;

impl log::Log for Fragile {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        panic!("this logger fails: {}", record.args());
    }
    fn flush(&self) {}
}

fn double(x: u64) -> u64 {
    x * 2
}

#[test]
fn a_panicking_logger_does_not_end_the_only_worker() {
    log::set_logger(&Fragile).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    // The task waits for the callback to be added, so the callback runs on the worker, which
    // logs its panic: with this logger, that log panics too.
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let f = pool
        .spawn(move || {
            let _ = gate_rx.recv_timeout(LIMIT);
            2_u64
        })
        .unwrap();
    let (ran_tx, ran_rx) = mpsc::channel();
    f.add_done_callback(move |_| {
        let _ = ran_tx.send(std::thread::current().name().map(str::to_owned));
        panic!("a callback that panics");
    });
    gate_tx.send(()).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&2));
    let ran_on = ran_rx.recv_timeout(LIMIT).expect("the callback ran");
    assert!(
        ran_on.is_some_and(|name| name.starts_with("ThreadPoolExecutor-")),
        "the callback ran on the worker"
    );
    // The one worker must still be there to run this.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let next = pool.submit(double, 21).unwrap();
        let _ = tx.send(next.result_timeout(LIMIT).copied());
    });
    assert_eq!(
        rx.recv_timeout(LIMIT * 2).expect("the next task's result"),
        Ok(42)
    );
}
