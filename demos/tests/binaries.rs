//! Each demo binary (and `tour`) runs to completion with `--backend thread` and with
//! `--backend process`, exits 0, and prints only its own backend's marked lines.
//!
//! Every run has a deadline; a binary that overruns it is killed and the test fails.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: a debug build of `tour` on a busy two-core machine takes well under a minute.
const DEADLINE: Duration = Duration::from_secs(300);

/// Runs `exe --backend backend`, returning its stdout; fails on timeout or a non-zero exit.
fn run(name: &str, exe: &str, backend: &str) -> String {
    let mut child = Command::new(exe)
        .args(["--backend", backend])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
    // Drain both pipes on their own threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} --backend {backend} ran past {DEADLINE:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    );
    assert!(
        status.success(),
        "{name} --backend {backend} exited with {status}\n--- stderr ---\n{err}\n--- stdout ---\n{out}"
    );
    out
}

fn check(name: &str, exe: &str) {
    let process = run(name, exe, "process");
    let thread = run(name, exe, "thread");
    for (out, backend, other) in [
        (&process, "process", "[thread]"),
        (&thread, "thread", "[process]"),
    ] {
        assert!(
            out.contains(&format!("--bin {name}")) || name == "tour",
            "{name} --backend {backend} printed no heading:\n{out}"
        );
        assert!(
            !out.contains(other),
            "{name} --backend {backend} printed a {other} line:\n{out}"
        );
    }
}

macro_rules! binaries {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name), env!(concat!("CARGO_BIN_EXE_", stringify!($name))));
            }
        )*
    };
}

binaries!(
    s01_basics,
    s02_map_order,
    s03_submit_future,
    s04_map_vs_submit,
    s05_as_completed,
    s06_errors,
    s07_cpu_vs_io,
    s08_callbacks,
    s09_cpu_count,
    s10_pipeline,
    tour,
);
