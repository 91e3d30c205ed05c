//! A worker that dies of a panic that could not unwind reports it: `WorkerDied::last_panic`
//! carries the panic's location and message (the worker wrote them to its black box in the
//! panic hook, right before it aborted). Both ways a panic cannot unwind: a panic leaving an
//! `extern "C"` function (under this test's `panic = "unwind"`), and a real `panic = "abort"`
//! build of `examples/panic_abort.rs`.
//
// On Windows (run under Wine in CI) the abort is `__fastfail`, exit code
// `STATUS_STACK_BUFFER_OVERRUN`; the black box works the same.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ProcessPoolExecutor, TaskError};

const LIMIT: Duration = Duration::from_secs(60);
/// Generous: the first build of the fixture compiles the crate's dependencies again.
const BUILD_LIMIT: Duration = Duration::from_secs(900);

extern "C" fn cannot_unwind(x: u32) -> u32 {
    panic!("boom out of extern C {x}");
}

fn dies_panicking(x: u32) -> u32 {
    cannot_unwind(x)
}

fn aborts(_: ()) -> u32 {
    std::process::abort()
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

#[test]
fn a_panic_that_cannot_unwind_is_the_workers_last_panic() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let f = pool.submit(dies_panicking, 7).unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::WorkerDied {
            cause,
            last_panic: Some(words),
            ..
        }) => {
            assert_eq!(cause, common::abort_cause());
            assert!(
                words.starts_with("panicked at pool-proc/tests/last_panic.rs:")
                    && words.contains("boom out of extern C 7"),
                "{words}"
            );
            let shown = f.exception().unwrap().to_string();
            assert!(shown.contains("boom out of extern C 7"), "{shown}");
        }
        other => panic!("expected WorkerDied with its last panic, got {other:?}"),
    }
    // The replacement starts with nothing to say: an abort without a panic has no last panic.
    assert!(pool.submit(pid, ()).unwrap().result_timeout(LIMIT).is_ok());
    match pool.submit(aborts, ()).unwrap().result_timeout(LIMIT) {
        Err(TaskError::WorkerDied {
            last_panic: None, ..
        }) => {}
        other => panic!("expected WorkerDied without a last panic, got {other:?}"),
    }
}

/// Runs `command` with its output in files under `dir`; kills it after `limit`.
fn run(mut command: Command, dir: &Path, what: &str, limit: Duration) -> (ExitStatus, String) {
    std::fs::create_dir_all(dir).unwrap();
    let out_path = dir.join(format!("{what}.stdout"));
    let err_path = dir.join(format!("{what}.stderr"));
    command
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    let mut child = command.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; its stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    (status, format!("{stdout}\n--- stderr ---\n{stderr}"))
}

/// Builds `examples/panic_abort.rs` with `panic = "abort"` in the dev profile, in a target
/// directory of its own (the outer `cargo test` holds the lock of the usual one).
fn build_abort_fixture() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target/panic-abort-fixture");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args([
            "build",
            "--quiet",
            "-p",
            "cf-pool-proc",
            "--example",
            "panic_abort",
        ])
        .args(["--config", "profile.dev.panic=\"abort\""])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let (status, output) = run(cargo, &target, "build-proc", BUILD_LIMIT);
    assert!(
        status.success(),
        "building the fixture failed: {status}\n{output}"
    );
    target.join(format!(
        "debug/examples/panic_abort{}",
        std::env::consts::EXE_SUFFIX
    ))
}

#[test]
#[cfg_attr(
    windows,
    ignore = "under Wine the cargo this test runs is the Linux one, which builds a Linux \
              fixture; on Windows it builds and runs the Windows one"
)]
fn a_panic_abort_build_reports_the_workers_last_panic() {
    let binary = build_abort_fixture();
    let dir = binary.parent().unwrap().to_owned();
    let (status, output) = run(Command::new(&binary), &dir, "run-proc", LIMIT);
    assert!(status.success(), "{status}\n{output}");
    assert!(
        output.contains("the worker died; its last panic: Some(\"panicked at pool-proc/examples/panic_abort.rs:")
            && output.contains("boom 42"),
        "{output}"
    );
    // The worker printed what Rust's default hook prints, too.
    assert!(
        output.contains("panicked at pool-proc/examples/panic_abort.rs:"),
        "{output}"
    );
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}
