//! The diagnostics docs/diagnostics.md lists are really emitted, at the level and with the
//! target it says: a panicking done callback, a worker death and its replacement, a task
//! killed for overrunning its limit, failing initializers on both pools.
//!
//! A capturing `log::Log` collects every record of this test binary (worker processes log
//! nothing: they never install a logger). Log lines come from pool threads, sometimes just
//! after the future they concern completes, so each check polls the records with a deadline.
//! Checks match the level, the target and the stable fragments of a message, not its wording.

use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use cf_executor_api::{Executor, TaskError};
use cf_pool_proc::ProcessPoolExecutor;
use cf_pool_thread::ThreadPoolExecutor;
use log::{Level, LevelFilter, Log, Metadata, Record};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Entry {
    level: Level,
    target: String,
    message: String,
}

static RECORDS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

struct Capture;

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let entry = Entry {
            level: record.level(),
            target: record.target().to_owned(),
            message: record.args().to_string(),
        };
        RECORDS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    fn flush(&self) {}
}

fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Capture).expect("no other logger in this test binary");
        log::set_max_level(LevelFilter::Trace);
    });
}

/// The first record at `level` whose target starts with `target` and whose message contains
/// every fragment; fails the test if none arrives within [`LIMIT`].
fn expect(level: Level, target: &str, fragments: &[&str]) -> Entry {
    let start = Instant::now();
    loop {
        {
            let records = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = records.iter().find(|e| {
                e.level == level
                    && e.target.starts_with(target)
                    && fragments.iter().all(|f| e.message.contains(f))
            }) {
                return e.clone();
            }
            if start.elapsed() > LIMIT {
                panic!(
                    "no {level} record from {target} containing {fragments:?} within {LIMIT:?}; \
                     records: {records:#?}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn square(x: u64) -> u64 {
    x * x
}

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(200));
    x * x
}

fn exit_worker(code: i32) -> u64 {
    std::process::exit(code)
}

fn spin(_: ()) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

fn refuse() -> Result<(), String> {
    Err("diagnostics-test: no database".into())
}

#[test]
fn a_panicking_callback_is_an_error_from_futures_core() {
    capture();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let f = pool.submit(slow_square, 3).unwrap();
    f.add_done_callback(|_| panic!("diagnostics-test: callback bug"));
    f.add_done_callback(|_| {});
    f.result_timeout(LIMIT).unwrap();
    expect(
        Level::Error,
        "cf_futures_core",
        &[
            "done callback panicked",
            "diagnostics-test: callback bug",
            "remaining 1 callback(s)",
        ],
    );
}

#[test]
fn a_worker_death_is_a_warning_and_its_replacement_a_debug_line() {
    capture();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let dead = pool.submit(exit_worker, 3).unwrap();
    let Err(TaskError::WorkerDied { pid, .. }) = dead.result_timeout(LIMIT) else {
        panic!("expected WorkerDied");
    };
    expect(
        Level::Debug,
        "cf_pool_proc",
        &[&format!("started worker {pid} ")],
    );
    expect(
        Level::Warn,
        "cf_pool_proc",
        &[
            &format!("worker {pid} exited with code 3"),
            "holding 1 task(s)",
        ],
    );

    assert_eq!(
        pool.submit(square, 4).unwrap().result_timeout(LIMIT),
        Ok(&16)
    );
    let replacement = pool.worker_pids();
    assert_eq!(replacement.len(), 1);
    expect(
        Level::Debug,
        "cf_pool_proc",
        &[&format!("started worker {} ", replacement[0])],
    );
}

#[test]
fn a_task_past_its_limit_is_a_warning_naming_the_killed_worker() {
    capture();
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let f = pool
        .submit_with_timeout(spin, (), Duration::from_millis(100))
        .unwrap();
    let Err(TaskError::Timeout {
        killed_worker: Some(pid),
        ..
    }) = f.result_timeout(LIMIT)
    else {
        panic!("expected a timeout that killed the worker");
    };
    expect(
        Level::Warn,
        "cf_pool_proc",
        &["ran past its", "limit", &format!("killing worker {pid}")],
    );
}

#[test]
fn a_failing_initializer_is_an_error_on_both_pools() {
    capture();
    let processes = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(refuse)
        .build()
        .unwrap();
    let f = processes.submit(square, 1).unwrap();
    assert!(matches!(
        f.result_timeout(LIMIT),
        Err(TaskError::Broken { .. })
    ));
    expect(
        Level::Error,
        "cf_pool_proc",
        &[
            "initializer failed in worker",
            "diagnostics-test: no database",
        ],
    );

    let threads = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("diagnostics")
        .initializer(refuse)
        .build()
        .unwrap();
    let f = threads.submit(square, 1).unwrap();
    assert!(matches!(
        f.result_timeout(LIMIT),
        Err(TaskError::Broken { .. })
    ));
    expect(
        Level::Debug,
        "cf_pool_thread",
        &["started worker thread diagnostics_0"],
    );
    expect(
        Level::Error,
        "cf_pool_thread",
        &[
            "thread pool diagnostics is broken",
            "initializer failed",
            "diagnostics-test: no database",
        ],
    );
}
