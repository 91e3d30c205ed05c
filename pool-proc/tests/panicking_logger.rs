//! An application logger that panics (a `println!` logger whose stdout pipe was closed by
//! `| head`, say) must not stop the pool: its records arrive on the pool's own threads (a
//! worker's forwarded log, the watchdog's warning when it kills an overrunning task), and a
//! pool thread that unwinds used to leave every future it served pending and `shutdown`
//! waiting forever. Python's logging handlers swallow their own errors likewise.
//! A binary of its own: the logger is process-wide.

mod common;

use std::sync::Once;
use std::time::Duration;

use cf_pool_proc::{Executor, ProcessPoolExecutor, TaskError};
use common::within;

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

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Fragile).unwrap();
        log::set_max_level(log::LevelFilter::Info);
    });
}

fn logs_then_doubles(x: u64) -> u64 {
    log::warn!("task {x} logs");
    x * 2
}

fn spin(_: ()) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

#[test]
fn a_panicking_logger_does_not_stop_the_pool_reading_results() {
    install();
    within(LIMIT * 2, "pool with a panicking logger", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap();
        for x in 1..=3 {
            let f = pool.submit(logs_then_doubles, x).unwrap();
            assert_eq!(f.result_timeout(LIMIT), Ok(&(x * 2)));
        }
        pool.shutdown(true, false);
    });
}

#[test]
fn a_panicking_logger_does_not_stop_the_watchdog_killing_an_overrun() {
    install();
    within(LIMIT * 2, "watchdog with a panicking logger", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap();
        let f = pool
            .submit_with_timeout(spin, (), Duration::from_millis(200))
            .unwrap();
        match f.result_timeout(LIMIT) {
            Err(TaskError::Timeout {
                killed_worker: Some(_),
                ..
            }) => {}
            other => panic!("the overrunning task: {other:?}"),
        }
        let after = pool.submit(logs_then_doubles, 4).unwrap();
        assert_eq!(after.result_timeout(LIMIT), Ok(&8));
    });
}
