//! Every section prints the same facts on every backend: the outputs of `ProcessPoolExecutor`,
//! `ThreadPoolExecutor` and `ClusterExecutor` are identical once `cf_demos::normalize` has
//! replaced worker ids (`pid=N`, `thread=N`), timings (`0.123s`), speedups (`1.95x`) and bars,
//! and dropped the lines marked `[process]` / `[thread]` / `[cluster]` as different by nature.
//!
//! The sections run in-process through the library, with their output captured; a process
//! pool here re-executes this test binary as its workers. No assertion is about a duration.

use std::sync::{mpsc, Mutex};
use std::time::Duration;

use cf_demos::{normalize, section, Backend, BackendOutput, LocalCluster, Section, SECTIONS};

/// The cluster test fixtures of `cf-pool-cluster` (a private nats-server per test, found the
/// same way, skipped the same way).
#[path = "../../pool-cluster/tests/common/mod.rs"]
mod cluster_fixtures;

/// Far beyond any section's run time even in a debug build on a busy machine.
const DEADLINE: Duration = Duration::from_secs(240);

/// The timing-driven sections (as_completed order, the CPU comparison) run one at a time, so
/// they do not load the two cores under each other.
static TIMING: Mutex<()> = Mutex::new(());

/// Runs `section` on `backend` in a helper thread and returns its output, failing the test
/// if the section fails or does not finish before [`DEADLINE`].
fn output(section: &'static Section, backend: Backend) -> String {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let result = section.run_on(backend, &mut out).map_err(|e| e.to_string());
        let _ = sender.send(result.map(|()| out));
    });
    match receiver.recv_timeout(DEADLINE) {
        Ok(Ok(bytes)) => String::from_utf8(bytes).expect("demo output is UTF-8"),
        Ok(Err(e)) => panic!("{} on {backend} failed: {e}", section.binary),
        Err(_) => panic!(
            "{} on {backend} did not finish in {DEADLINE:?}",
            section.binary
        ),
    }
}

fn assert_backends_agree(binary: &str) {
    let section = section(binary).expect("a section of that name");
    let _timing =
        matches!(section.number, 5 | 7).then(|| TIMING.lock().unwrap_or_else(|e| e.into_inner()));
    let process = output(section, Backend::Process);
    let thread = output(section, Backend::Thread);
    assert_agree(
        binary,
        (Backend::Process, &process),
        (Backend::Thread, &thread),
    );
}

/// Both outputs carry only their own backend's marker, few of them, and are equal once
/// normalised.
fn assert_agree(binary: &str, (a, a_out): (Backend, &str), (b, b_out): (Backend, &str)) {
    assert!(!a_out.trim().is_empty(), "{binary} printed nothing on {a}");
    for (backend, out) in [(a, a_out), (b, b_out)] {
        for other in [Backend::Process, Backend::Thread, Backend::Cluster] {
            assert!(
                other == backend || !out.contains(other.marker()),
                "{binary} on {backend} printed a {} line:\n{out}",
                other.marker()
            );
        }
        let marker = backend.marker();
        let marked = out
            .lines()
            .filter(|l| l.trim_start().starts_with(marker))
            .count();
        assert!(
            marked <= 4,
            "{binary}: {marked} lines marked {marker}; keep them few"
        );
    }

    let (p, t) = (normalize(a_out), normalize(b_out));
    if p != t {
        let (line, (x, y)) = p
            .lines()
            .zip(t.lines())
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .map_or(
                (p.lines().count().min(t.lines().count()), ("<end>", "<end>")),
                |(i, l)| (i, l),
            );
        panic!(
            "{binary}: the backends disagree at normalised line {}:\n  {a}: {x}\n  {b}: {y}\n\n\
             --- {a} output ---\n{a_out}\n--- {b} output ---\n{b_out}",
            line + 1
        );
    }
}

/// Serves as a cluster node when [`LocalCluster`] starts this test binary as one; a no-op
/// test otherwise (it is the nodes' entry point, not a check).
#[test]
fn node_entry() {
    cf_demos::serve_if_node();
}

/// Every section on a `ClusterExecutor` (a private server, two local nodes started from this
/// test binary) prints what it prints on the process pool, once normalised. Skipped, saying
/// why, when no nats-server 2.10+ is found, unless `CF_NATS_REQUIRED=1`.
#[test]
fn the_cluster_agrees_with_the_process_pool() {
    let Some(server) = cluster_fixtures::Server::start() else {
        return;
    };
    let cluster = LocalCluster::start(
        &server.url(),
        &["node_entry", "--exact", "--nocapture", "--test-threads=1"],
    )
    .unwrap_or_else(|e| panic!("cannot start the local cluster: {e}"));
    for section in &SECTIONS {
        let _timing = matches!(section.number, 5 | 7)
            .then(|| TIMING.lock().unwrap_or_else(|e| e.into_inner()));
        let process = output(section, Backend::Process);
        let on_cluster = output(section, Backend::Cluster);
        assert_agree(
            section.binary,
            (Backend::Process, &process),
            (Backend::Cluster, &on_cluster),
        );
    }
    drop(cluster);
    drop(server);
}

macro_rules! agree {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                assert_backends_agree(stringify!($name));
            }
        )*

        #[test]
        fn every_section_is_tested_in_chapter_order() {
            let tested = [$(stringify!($name)),*];
            let sections: Vec<&str> = SECTIONS.iter().map(|s| s.binary).collect();
            assert_eq!(sections, tested);
            for (i, s) in SECTIONS.iter().enumerate() {
                assert_eq!(usize::from(s.number), i + 1, "{} is out of order", s.binary);
            }
        }
    };
}

agree!(
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
);
