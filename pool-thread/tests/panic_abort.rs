//! A task's panic that will not unwind is printed as Rust's default hook prints it, not swallowed
//! by the panic capture: in a program built with `panic = "abort"` (a real build of
//! `examples/thread_panic_abort.rs` with that profile), and under `panic = "unwind"` for the panics the
//! runtime raises when unwinding cannot go on (a panic leaving an `extern "C"` function, a
//! destructor panicking while a panic unwinds). Before, all of these died printing only `Aborted`.

// Miri cannot start processes, and these tests are all about processes.
#![cfg(not(miri))]

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cf_pool_thread::{Executor, ThreadPoolExecutor};

/// Generous: the first build of the fixture compiles the crate's dependencies again.
const BUILD_LIMIT: Duration = Duration::from_secs(900);
const RUN_LIMIT: Duration = Duration::from_secs(60);
const SIGABRT: i32 = 6;

/// Runs `command` with stdout and stderr in files under `dir`; kills it after `limit`.
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
        thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(&err_path).unwrap())
}

fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("target")
}

/// Builds `examples/thread_panic_abort.rs` with `panic = "abort"` in the dev profile, in a target
/// directory of its own (the outer `cargo test` holds the lock of the usual one).
fn build_abort_fixture() -> PathBuf {
    let target = workspace_target().join("panic-abort-fixture");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args([
            "build",
            "--quiet",
            "-p",
            "cf-pool-thread",
            "--example",
            "thread_panic_abort",
        ])
        .args(["--config", "profile.dev.panic=\"abort\""])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let (status, stderr) = run(cargo, &target, "build", BUILD_LIMIT);
    assert!(
        status.success(),
        "building the fixture failed: {status}\n{stderr}"
    );
    target.join("debug/examples/thread_panic_abort")
}

#[test]
fn panic_abort_build_prints_the_panic_like_the_default_hook() {
    let binary = build_abort_fixture();
    let dir = workspace_target().join("panic-abort-fixture");

    let mut quiet = Command::new(&binary);
    quiet.env_remove("RUST_BACKTRACE");
    let (status, stderr) = run(quiet, &dir, "run-quiet", RUN_LIMIT);
    assert_eq!(status.signal(), Some(SIGABRT), "{status}\n{stderr}");
    assert!(
        stderr.contains("thread 'ThreadPoolExecutor-")
            && stderr.contains("panicked at pool-thread/examples/thread_panic_abort.rs:")
            && stderr.contains("boom 42")
            && stderr.contains("RUST_BACKTRACE=1"),
        "the default hook's text is missing:\n{stderr}"
    );

    let mut traced = Command::new(&binary);
    traced.env("RUST_BACKTRACE", "1");
    let (status, stderr) = run(traced, &dir, "run-backtrace", RUN_LIMIT);
    assert_eq!(status.signal(), Some(SIGABRT), "{status}\n{stderr}");
    assert!(
        stderr.contains("boom 42") && stderr.contains("stack backtrace:"),
        "no backtrace with RUST_BACKTRACE=1:\n{stderr}"
    );
}

// The two cases below run in a child process: this test binary again, with `CF_ABORT_CASE` set,
// running only `child_case`.

extern "C" fn cannot_unwind(x: u32) -> u32 {
    panic!("boom out of extern C {x}");
}

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("boom in a destructor");
    }
}

fn through_extern_c(x: u32) -> u32 {
    cannot_unwind(x)
}

fn destructor_while_unwinding(x: u32) -> u32 {
    let _guard = PanicsOnDrop;
    panic!("boom before the destructor {x}");
}

/// Not a test of its own: does nothing unless the parent test set `CF_ABORT_CASE`.
#[test]
fn child_case() {
    let task: fn(u32) -> u32 = match std::env::var("CF_ABORT_CASE").as_deref() {
        Ok("extern-c") => through_extern_c,
        Ok("destructor") => destructor_while_unwinding,
        _ => return,
    };
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let future = pool.submit(task, 7).unwrap();
    let _ = future.result_timeout(RUN_LIMIT);
    unreachable!("the process should have aborted");
}

fn run_child_case(case: &str) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(["--exact", "child_case", "--nocapture", "--test-threads=1"])
        .env("CF_ABORT_CASE", case)
        .env_remove("RUST_BACKTRACE");
    let dir = workspace_target().join("panic-abort-fixture");
    let (status, stderr) = run(child, &dir, case, RUN_LIMIT);
    assert_eq!(status.signal(), Some(SIGABRT), "{status}\n{stderr}");
    stderr
}

#[test]
fn a_panic_out_of_extern_c_is_printed_before_the_abort() {
    let stderr = run_child_case("extern-c");
    assert!(
        stderr.contains("panicked at pool-thread/tests/panic_abort.rs:")
            && stderr.contains("boom out of extern C 7")
            && stderr.contains("panic in a function that cannot unwind"),
        "{stderr}"
    );
}

#[test]
fn a_destructor_panicking_during_unwinding_is_printed_before_the_abort() {
    let stderr = run_child_case("destructor");
    assert!(
        stderr.contains("boom before the destructor 7")
            && stderr.contains("boom in a destructor")
            && stderr.contains("panic in a destructor during cleanup"),
        "{stderr}"
    );
}
