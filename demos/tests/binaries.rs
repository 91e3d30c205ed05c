//! Each demo binary (and `tour`) runs to completion with `--backend thread` and with
//! `--backend process`, exits 0, and prints only its own backend's marked lines. `tour
//! --backend cluster` starts its own nodes on a private server and prints what `tour --backend
//! process` prints, once normalised (skipped without a nats-server unless
//! `CF_NATS_REQUIRED=1`); without a server a cluster demo fails saying how to start one.
//!
//! Every run has a deadline; a binary that overruns it is killed and the test fails.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Generous: a debug build of `tour` on a busy two-core machine takes well under a minute.
const DEADLINE: Duration = Duration::from_secs(300);

/// The cluster test fixtures of `cf-pool-cluster` (a private nats-server per test).
#[path = "../../pool-cluster/tests/common/mod.rs"]
mod cluster_fixtures;

/// Runs `exe --backend backend`, returning its stdout; fails on timeout or a non-zero exit.
fn run(name: &str, exe: &str, backend: &str) -> String {
    let (status, out, err) = run_with(name, exe, &["--backend", backend]);
    assert!(
        status.success(),
        "{name} --backend {backend} exited with {status}\n--- stderr ---\n{err}\n--- stdout ---\n{out}"
    );
    out
}

/// Runs `exe args`, returning how it ended, its stdout and its stderr; fails on timeout.
fn run_with(name: &str, exe: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let backend = args.join(" ");
    let mut child = Command::new(exe)
        .args(args)
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
            panic!("{name} {backend} ran past {DEADLINE:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
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

/// The tour on a cluster (its own two nodes, on a private server) prints the chapter as the
/// process pool does, once normalised and with the sub-headings that name the executor
/// aligned.
#[test]
fn tour_on_the_cluster_agrees_with_the_process_pool() {
    let Some(server) = cluster_fixtures::Server::start() else {
        return;
    };
    let exe = env!("CARGO_BIN_EXE_tour");
    let process = run("tour", exe, "process");
    let (status, cluster, err) = run_with(
        "tour",
        exe,
        &["--backend", "cluster", "--cluster-url", &server.url()],
    );
    assert!(
        status.success(),
        "tour --backend cluster exited with {status}\n--- stderr ---\n{err}\n--- stdout ---\n{cluster}"
    );
    assert!(
        err.contains("2 local nodes of 3 workers"),
        "no word of the local nodes on stderr:\n{err}"
    );
    assert!(
        cluster.contains("── ClusterExecutor (--backend cluster) ──"),
        "{cluster}"
    );
    let aligned = cluster.replace(
        "── ClusterExecutor (--backend cluster) ──",
        "── ProcessPoolExecutor (--backend process) ──",
    );
    let (p, c) = (cf_demos::normalize(&process), cf_demos::normalize(&aligned));
    if p != c {
        let (line, (x, y)) = p
            .lines()
            .zip(c.lines())
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .unwrap_or((p.lines().count().min(c.lines().count()), ("<end>", "<end>")));
        panic!(
            "tour: process and cluster disagree at normalised line {}:\n  process: {x}\n  \
             cluster: {y}\n\n--- process ---\n{process}\n--- cluster ---\n{cluster}",
            line + 1
        );
    }
}

/// Without a server, `--backend cluster` fails at once, naming the address and how to start a
/// server; it starts no node.
#[test]
fn a_cluster_demo_without_a_server_says_how_to_start_one() {
    // Port 1 on the loopback: nothing listens there, the connection is refused at once.
    let (status, out, err) = run_with(
        "s01_basics",
        env!("CARGO_BIN_EXE_s01_basics"),
        &[
            "--backend",
            "cluster",
            "--cluster-url",
            "nats://127.0.0.1:1",
        ],
    );
    assert_eq!(status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    for needle in [
        "s01_basics: --backend cluster needs a NATS server",
        "nats://127.0.0.1:1",
        "nats-server -js",
        "bash .ci/nats",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(out.is_empty(), "printed before failing:\n{out}");
}
