//! A failing initializer is logged as an error once per pool, not once per worker thread.
//!
//! Its own test binary: a logger is global to a process.

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cf_pool_thread::ThreadPoolExecutor;
use common::LIMIT;

struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Debug);
        capture
    })
}

#[test]
#[cfg_attr(miri, ignore = "sleeps; no unsafe code or atomics of its own")]
fn a_failing_initializer_is_logged_as_an_error_once() {
    capture();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(4)
        .initializer(|| {
            // Long enough for every submit below to start a thread of its own.
            std::thread::sleep(Duration::from_millis(100));
            Err("the ledger database is down".into())
        })
        .build()
        .unwrap();
    let futures: Vec<_> = (0..4).map_while(|_| pool.spawn(|| ()).ok()).collect();
    for f in &futures {
        assert!(f.result_timeout(LIMIT).is_err());
    }
    // Shutting down joins every worker, so each has reported its failure by now.
    drop(pool);
    let all = capture().0.lock().unwrap().clone();
    let failures: Vec<_> = all
        .iter()
        .filter(|(_, m)| m.contains("the ledger database"))
        .collect();
    let errors: Vec<_> = failures
        .iter()
        .filter(|(level, _)| *level == log::Level::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{failures:#?}");
    assert!(errors[0].1.contains("is broken"), "{errors:?}");
    // The other workers' failures are still there for whoever turns on debug logging.
    assert_eq!(failures.len(), futures.len(), "{failures:#?}");
}
