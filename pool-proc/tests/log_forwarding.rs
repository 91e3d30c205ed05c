//! `log` records of process-pool tasks reach the parent's logger: level, target, message,
//! module path, file and line, the worker's pid in the message; levels the parent's logger has
//! disabled are disabled in the worker too (its `log::max_level()` is the parent's, so they cost
//! nothing).
//!
//! Its own test binary: a logger is global to a process. Workers re-execute this binary but
//! never run the test harness, so the capturing logger below exists only in the parent.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ProcessPoolExecutor};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Captured {
    level: log::Level,
    target: String,
    message: String,
    file: Option<String>,
    line: Option<u32>,
    module_path: Option<String>,
}

struct Capture(Mutex<Vec<Captured>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(Captured {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
            file: record.file().map(str::to_owned),
            line: record.line(),
            module_path: record.module_path().map(str::to_owned),
        });
    }
    fn flush(&self) {}
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(capture).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Info);
        capture
    })
}

/// Logs at every level, with `tag` in each message; returns the worker's pid and the level
/// filter the worker runs with.
fn chatty(tag: u32) -> (u32, String) {
    log::error!(target: "cf_test::tasks", "error {tag}");
    log::warn!("warn {tag}");
    log::info!("info {tag}");
    log::debug!("debug {tag}");
    log::trace!("trace {tag}");
    (std::process::id(), log::max_level().to_string())
}

/// Waits until the captured records include `n` that end with `needle`. (Ending, not
/// containing: the tests of this file run at once and share the logger, and a needle such as
/// `" 101"` is also inside another test's `"[worker 1016] ..."`, Wine's pids being small.)
fn wait_for(needle: &str, n: usize) -> Vec<Captured> {
    let start = Instant::now();
    loop {
        let found: Vec<Captured> = capture()
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.message.ends_with(needle))
            .cloned()
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            start.elapsed() < LIMIT,
            "only {} records with {needle:?} after {LIMIT:?}: {found:?}",
            found.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn task_logs_reach_the_parents_logger_with_its_level() {
    capture();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    for tag in [101, 202, 303] {
        let (pid, level) = pool
            .submit(chatty, tag)
            .unwrap()
            .result_timeout(LIMIT)
            .unwrap()
            .clone();
        assert_ne!(pid, std::process::id());
        assert_eq!(level, "INFO", "the worker runs with the parent's level");
        let found = wait_for(&format!(" {tag}"), 3);
        let levels: Vec<_> = found.iter().map(|c| c.level).collect();
        assert_eq!(
            levels,
            [log::Level::Error, log::Level::Warn, log::Level::Info],
            "levels in order, none above INFO: {found:?}"
        );
        for c in &found {
            assert!(
                c.message.starts_with(&format!("[worker {pid}] ")),
                "the worker's pid leads the message: {c:?}"
            );
            assert_eq!(c.file.as_deref(), Some(file!()));
            assert!(c.line.is_some());
            // The module the call is in, whatever target it names.
            assert_eq!(c.module_path.as_deref(), Some(module_path!()));
        }
        assert_eq!(found[0].target, "cf_test::tasks");
        assert_eq!(found[1].target, module_path!());
        assert!(found[1].message.ends_with(&format!("warn {tag}")));
    }
    drop(pool);
    let all = capture().0.lock().unwrap().clone();
    assert!(
        !all.iter()
            .any(|c| c.message.contains("debug ") || c.message.contains("trace ")),
        "disabled levels are not forwarded: {all:?}"
    );
}

fn init_fails() -> Result<(), String> {
    Err("the ledger database is down".into())
}

fn nothing(_: ()) {}

/// Every worker of a pool whose initializer fails fails the same way; the log says once that
/// the pool is broken, not once per worker.
#[test]
fn a_failing_initializer_is_logged_as_an_error_once() {
    capture();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(4)
        .initializer(init_fails)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..8)
        .map_while(|_| pool.submit(nothing, ()).ok())
        .collect();
    for f in &futures {
        assert!(f.result_timeout(LIMIT).is_err());
    }
    // Shutting down waits for every worker, so each has reported its failure by now.
    drop(pool);
    let all = capture().0.lock().unwrap().clone();
    let errors: Vec<_> = all
        .iter()
        .filter(|c| c.level == log::Level::Error && c.message.contains("the ledger database"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].message.contains("the pool is broken"),
        "{errors:?}"
    );
}

struct PanickingDisplay;

impl std::fmt::Display for PanickingDisplay {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("this Display panics")
    }
}

/// Logs a record whose formatting panics (the task fails with `Panicked`), and returns its pid.
fn log_unformattable(_: ()) -> u32 {
    log::warn!("never formatted: {}", PanickingDisplay);
    std::process::id()
}

fn log_tagged(tag: u32) -> u32 {
    log::warn!("after the panic {tag}");
    std::process::id()
}

#[test]
fn a_record_whose_display_panics_does_not_silence_the_worker() {
    capture();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let future = pool.submit(log_unformattable, ()).unwrap();
    let failed = future.result_timeout(LIMIT);
    assert!(
        matches!(failed, Err(cf_pool_proc::TaskError::Panicked { .. })),
        "{failed:?}"
    );
    let pid = |tag| {
        *pool
            .submit(log_tagged, tag)
            .unwrap()
            .result_timeout(LIMIT)
            .unwrap()
    };
    let (first, second) = (pid(1), pid(2));
    assert_eq!(first, second, "one worker throughout");
    wait_for("after the panic 1", 1);
    wait_for("after the panic 2", 1);
}
