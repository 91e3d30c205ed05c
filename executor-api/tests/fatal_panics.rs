//! The fatal panic observer: called, in the panicking thread, for a panic that will not unwind,
//! with the panic a process pool's worker should report (the task's own, not the runtime's
//! "cannot unwind"), and never for a panic that unwinds. Each case runs in a child process (this
//! test binary again, with `CF_FATAL_CASE` set, running only `child_case`), since it aborts.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use cf_executor_api::{call_catching, set_fatal_panic_observer, TaskError};

const SIGABRT: i32 = 6;

fn observer(message: &str, location: Option<&str>) {
    eprintln!("OBSERVED [{message}] at [{}]", location.unwrap_or("-"));
}

extern "C" fn cannot_unwind(x: u32) -> u32 {
    panic!("boom out of extern C {x}");
}

/// Not a test of its own: does nothing unless the parent test set `CF_FATAL_CASE`.
#[test]
fn child_case() {
    let Ok(case) = std::env::var("CF_FATAL_CASE") else {
        return;
    };
    set_fatal_panic_observer(observer);
    // A panic that unwinds is caught and reported through the result, never observed.
    let caught = call_catching(|| -> u32 { panic!("an ordinary panic") });
    assert!(matches!(caught, Err(TaskError::Panicked { .. })));
    match case.as_str() {
        "inside" => {
            let _ = call_catching(|| cannot_unwind(1));
        }
        "outside" => {
            cannot_unwind(2);
        }
        other => panic!("unknown case {other}"),
    }
    unreachable!("the process should have aborted");
}

fn run_child_case(case: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_case", "--nocapture", "--test-threads=1"])
        .env("CF_FATAL_CASE", case)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.signal(), Some(SIGABRT), "{stderr}");
    assert!(
        !stderr.contains("OBSERVED [an ordinary panic"),
        "an unwinding panic was observed:\n{stderr}"
    );
    stderr
}

#[test]
fn a_task_panic_that_cannot_unwind_is_observed_as_the_task_panic() {
    let stderr = run_child_case("inside");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("OBSERVED"))
        .unwrap_or_else(|| panic!("not observed:\n{stderr}"));
    assert!(
        line.starts_with(
            "OBSERVED [boom out of extern C 1; then, while unwinding: panic in a function that \
             cannot unwind] at [executor-api/tests/fatal_panics.rs:"
        ),
        "{line}"
    );
    // Printed too, as the default hook prints it (the capture had swallowed it).
    assert!(
        stderr.contains("panicked at executor-api/tests/fatal_panics.rs:")
            && stderr.contains("\nboom out of extern C 1\n"),
        "{stderr}"
    );
}

#[test]
fn a_panic_that_cannot_unwind_outside_tasks_is_observed() {
    let stderr = run_child_case("outside");
    assert!(
        stderr.contains("OBSERVED [panic in a function that cannot unwind] at [")
            && stderr.contains("\nboom out of extern C 2\n"),
        "{stderr}"
    );
}
