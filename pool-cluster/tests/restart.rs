//! Server restarts, with the store and without it, at the awkward moments: a large result
//! finished while the server is away, a large argument being downloaded, several losses in a
//! row, a `map` with `buffersize`, shutdowns, cancels, clients and nodes that start around
//! the loss. Every future completes once, with its result; nothing hangs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cf_pool_cluster::{ClusterExecutor, Executor, Future, MapOptions};
use common::{
    assert_tripled, byte_sum, count_completions, slow_triple, submit_large, triple, Cluster, Dir,
    LIMIT,
};

#[test]
fn node_entry() {
    common::node_entry();
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn wait_release(dir: &Path) {
    let start = Instant::now();
    while !dir.join("release").exists() {
        assert!(start.elapsed() < Duration::from_secs(150), "never released");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Leaves `run-{i}-{unique}` (one per run), waits for the release, returns `i`.
fn held((dir, i): (String, u32)) -> u32 {
    let dir = Path::new(&dir);
    let _ = std::fs::write(dir.join(format!("run-{i}-{}", unique())), b"");
    wait_release(dir);
    i
}

/// As `held`, and returns a result over the inline limit (through the object store).
fn held_large((dir, i): (String, u32)) -> Vec<u8> {
    let dir = Path::new(&dir);
    let _ = std::fs::write(dir.join(format!("run-{i}-{}", unique())), b"");
    wait_release(dir);
    vec![i as u8; 300 * 1024]
}

fn sleepy_triple(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    x * 3
}

/// The cluster's executor, shared with other threads (the cluster keeps an idle one of
/// another pool in its place).
fn shared_executor(cluster: &mut Cluster) -> Arc<ClusterExecutor> {
    Arc::new(std::mem::replace(
        &mut cluster.executor,
        ClusterExecutor::builder(&cluster.server.url())
            .pool("other")
            .build()
            .unwrap(),
    ))
}

/// Runs `f` on a thread; panics if it does not end within `LIMIT`.
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{what} did not end within {LIMIT:?}"))
}

// ---------------------------------------------------------------------------------------------
// Large results finished while the server is away

/// A task whose large result is ready while the server is away for `away`, which then comes
/// back on its store or empty: the result arrives (the node stores it again until the server
/// takes it; a server that lost its store refuses it until the store is created again).
fn large_result_finished_while_server_away(away: Duration, empty: bool) {
    let Some(mut cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let dir = Dir::new("large-away");
    let f = cluster
        .executor
        .submit(held_large, (dir.path(), 7))
        .unwrap();
    dir.wait_markers("run-7-", 1);
    cluster.server.stop();
    dir.release();
    std::thread::sleep(away);
    if empty {
        cluster.server.restart_empty();
    } else {
        cluster.server.restart();
    }
    let r = f.result_timeout(LIMIT);
    assert!(
        matches!(r, Ok(v) if v.len() == 300 * 1024 && v[0] == 7),
        "{:?}",
        r.map(|v| v.len())
    );
}

#[test]
fn large_result_finished_while_server_down_kept_store() {
    // Long enough for the node's first upload of the result to give up.
    large_result_finished_while_server_away(Duration::from_secs(8), false);
}

#[test]
fn large_result_finished_while_server_down_empty_store() {
    large_result_finished_while_server_away(Duration::from_secs(8), true);
}

#[test]
fn large_result_finished_during_short_outage_empty_store() {
    large_result_finished_while_server_away(Duration::from_millis(500), true);
}

// ---------------------------------------------------------------------------------------------
// Repeated losses, map, shutdown

#[test]
fn restart_empty_three_times() {
    let Some(mut cluster) = Cluster::start(&[2, 2], |b| b) else {
        return;
    };
    let futures: Vec<_> = (0..300)
        .map(|i| cluster.executor.submit(slow_triple, i).unwrap())
        .collect();
    let completions = count_completions(&futures);
    let start = Instant::now();
    while futures.iter().filter(|f| f.done()).count() < 20 {
        assert!(start.elapsed() < LIMIT);
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.server.restart_empty();
    // Before anyone noticed the first loss.
    std::thread::sleep(Duration::from_millis(700));
    cluster.server.restart_empty();
    // After they noticed it, and republished.
    std::thread::sleep(Duration::from_secs(5));
    cluster.server.restart_empty();
    assert_tripled(&futures, "task");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(completions.load(Ordering::SeqCst), futures.len());
    let after = cluster.executor.submit(triple, 5).unwrap();
    assert_eq!(after.result_timeout(LIMIT), Ok(&15));
}

#[test]
fn restart_empty_during_map_with_buffersize() {
    let Some(mut cluster) = Cluster::start(&[2], |b| b) else {
        return;
    };
    let executor = shared_executor(&mut cluster);
    let e = Arc::clone(&executor);
    let handle = std::thread::spawn(move || {
        e.map(sleepy_triple, 0..200u64, MapOptions::new().buffersize(6))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
    });
    std::thread::sleep(Duration::from_secs(1));
    cluster.server.restart_empty();
    std::thread::sleep(Duration::from_secs(3));
    cluster.server.restart_empty();
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(start.elapsed() < LIMIT * 2, "map hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = handle.join().unwrap().expect("map failed");
    assert_eq!(out, (0..200u64).map(|x| x * 3).collect::<Vec<_>>());
}

#[test]
fn restart_empty_while_shutdown_wait_blocks() {
    let Some(mut cluster) = Cluster::start(&[2], |b| b) else {
        return;
    };
    let executor = shared_executor(&mut cluster);
    let futures: Vec<_> = (0..100)
        .map(|i| executor.submit(sleepy_triple, i).unwrap())
        .collect();
    let e = Arc::clone(&executor);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        e.shutdown(true, false);
        let _ = tx.send(());
    });
    std::thread::sleep(Duration::from_millis(500));
    cluster.server.restart_empty();
    rx.recv_timeout(LIMIT)
        .expect("shutdown(wait) did not return");
    for (i, f) in (0..).zip(&futures) {
        assert_eq!(f.result_timeout(Duration::ZERO), Ok(&(i * 3)), "task {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Cancellation across a loss

/// Task 0 of `held` running on the cluster's only worker, tasks 1 to 6 queued behind it (the
/// client has had 300 ms to publish them).
fn one_running_six_queued(cluster: &Cluster, dir: &Dir) -> (Future<u32>, Vec<Future<u32>>) {
    let running = cluster.executor.submit(held, (dir.path(), 0)).unwrap();
    dir.wait_markers("run-0-", 1);
    let queued = (1..=6)
        .map(|i| cluster.executor.submit(held, (dir.path(), i)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    (running, queued)
}

/// None of the `held` tasks `tasks` left a marker: none ran.
fn assert_never_ran(dir: &Dir, tasks: std::ops::RangeInclusive<u32>) {
    for i in tasks {
        assert!(
            dir.markers(&format!("run-{i}-")).is_empty(),
            "cancelled task {i} ran"
        );
    }
}

/// Futures cancelled before the loss stay cancelled and never run.
#[test]
fn cancelled_before_loss_never_runs() {
    let Some(mut cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let dir = Dir::new("cancel-before");
    let (running, queued) = one_running_six_queued(&cluster, &dir);
    for f in &queued[..3] {
        assert!(f.cancel(), "{:?}", f.state());
    }
    std::thread::sleep(Duration::from_millis(300));
    cluster.server.restart_empty();
    std::thread::sleep(Duration::from_secs(6));
    dir.release();
    assert_eq!(running.result_timeout(LIMIT), Ok(&0));
    for (i, f) in (4..).zip(&queued[3..]) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&i));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_never_ran(&dir, 1..=3);
    // The running task may run twice (docs); more is not acceptable.
    assert!(dir.markers("run-0-").len() <= 2);
}

/// `shutdown(cancel_futures)` right after a loss, before anyone `noticed` it, or after the
/// client noticed it and published its tasks again: the queued tasks are cancelled and never
/// run, and the running one's result still arrives.
fn shutdown_cancel_futures_around_a_loss(noticed: bool) {
    let Some(mut cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let dir = Dir::new("cancel-around-loss");
    let (running, queued) = one_running_six_queued(&cluster, &dir);
    cluster.server.restart_empty();
    if noticed {
        // Noticed, and republished (the node's only worker still runs task 0's first copy).
        std::thread::sleep(Duration::from_secs(6));
    }
    let executor = shared_executor(&mut cluster);
    let e = Arc::clone(&executor);
    within("shutdown(false, true)", move || e.shutdown(false, true));
    for f in &queued {
        assert!(f.cancelled(), "{:?}", f.state());
    }
    if !noticed {
        std::thread::sleep(Duration::from_secs(6));
    }
    dir.release();
    assert_eq!(running.result_timeout(LIMIT), Ok(&0));
    std::thread::sleep(Duration::from_secs(3));
    assert_never_ran(&dir, 1..=6);
}

#[test]
fn shutdown_cancel_futures_right_after_loss() {
    shutdown_cancel_futures_around_a_loss(false);
}

#[test]
fn shutdown_cancel_futures_after_republish() {
    shutdown_cancel_futures_around_a_loss(true);
}

// ---------------------------------------------------------------------------------------------
// Long tasks, late nodes, late clients

#[test]
fn long_task_across_loss_resolves_once() {
    let Some(mut cluster) = Cluster::start(&[1, 1], |b| b) else {
        return;
    };
    let dir = Dir::new("long");
    let f = cluster.executor.submit(held, (dir.path(), 3)).unwrap();
    let completions = count_completions(std::slice::from_ref(&f));
    dir.wait_markers("run-3-", 1);
    cluster.server.restart_empty();
    // Republished: the other node runs it too.
    dir.wait_markers("run-3-", 2);
    dir.release();
    assert_eq!(f.result_timeout(LIMIT), Ok(&3));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(completions.load(Ordering::SeqCst), 1);
    assert_eq!(dir.markers("run-3-").len(), 2);
}

#[test]
fn node_started_only_after_the_loss() {
    let Some(mut cluster) = Cluster::start(&[], |b| b) else {
        return;
    };
    let futures: Vec<_> = (0..20)
        .map(|i| cluster.executor.submit(triple, i).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    cluster.server.restart_empty();
    std::thread::sleep(Duration::from_secs(4));
    cluster.add_node(2);
    assert_tripled(&futures, "task");
}

/// A client built while the server is back but empty, before the others noticed.
#[test]
fn client_built_right_after_loss() {
    let Some(mut cluster) = Cluster::start(&[2], |b| b) else {
        return;
    };
    let old: Vec<_> = (0..50)
        .map(|i| cluster.executor.submit(sleepy_triple, i).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    cluster.server.restart_empty();
    let late = ClusterExecutor::builder(&cluster.server.url())
        .pool(&cluster.pool)
        .node_timeout(LIMIT)
        .ack_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let new: Vec<_> = (0..50).map(|i| late.submit(triple, i).unwrap()).collect();
    assert_tripled(&new, "new task");
    assert_tripled(&old, "old task");
}

/// A client built while the server is down, which then comes back empty: `build` waits for
/// it (its connect timeout), and the client works.
#[test]
fn client_built_while_server_down_connects_when_back_empty() {
    let Some(mut cluster) = Cluster::start(&[2], |b| b) else {
        return;
    };
    cluster.server.stop();
    let url = cluster.server.url();
    let pool = cluster.pool.clone();
    let builder = std::thread::spawn(move || {
        ClusterExecutor::builder(&url)
            .pool(&pool)
            .node_timeout(LIMIT)
            .connect_timeout(Duration::from_secs(20))
            .build()
    });
    std::thread::sleep(Duration::from_secs(2));
    cluster.server.restart_empty();
    // `build` waits for a server that refuses connections, up to its connect timeout.
    let late = builder
        .join()
        .unwrap()
        .expect("build waits for the server to come back");
    let f = late.submit(triple, 4).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&12));
}

// ---------------------------------------------------------------------------------------------
// Settings after the loss

/// A short node_timeout must not fail tasks because the registry came back empty.
#[test]
fn short_node_timeout_survives_loss() {
    let Some(mut cluster) = Cluster::start(&[2], |b| b.node_timeout(Duration::from_secs(3))) else {
        return;
    };
    let futures: Vec<_> = (0..100)
        .map(|i| cluster.executor.submit(sleepy_triple, i).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    cluster.server.stop();
    std::thread::sleep(Duration::from_secs(4));
    cluster.server.restart_empty();
    assert_tripled(&futures, "task");
}

// ---------------------------------------------------------------------------------------------
// Large arguments

/// Large arguments whose upload or publish is cut by the loss.
#[test]
fn large_arguments_in_flight_at_loss() {
    let Some(mut cluster) = Cluster::start(&[2], |b| b) else {
        return;
    };
    let mut bad = Vec::new();
    for (round, delay) in [50u64, 150, 300, 600].into_iter().enumerate() {
        let futures: Vec<_> = (0..150u32)
            .map(|i| {
                cluster
                    .executor
                    .submit(byte_sum, vec![(i % 200) as u8; 300 * 1024])
                    .unwrap()
            })
            .collect();
        std::thread::sleep(Duration::from_millis(delay));
        let done = futures.iter().filter(|f| f.done()).count();
        cluster.server.restart_empty();
        eprintln!("round {round}: {done} done at the loss");
        for (i, f) in (0u64..).zip(&futures) {
            let r = f.result_timeout(LIMIT);
            if r != Ok(&((i % 200) * 300 * 1024)) {
                bad.push(format!("round {round} task {i}: {r:?}"));
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Large arguments submitted while the server is down, which comes back empty.
#[test]
fn large_arguments_submitted_while_down() {
    let Some(mut cluster) = Cluster::start(&[2], |b| b) else {
        return;
    };
    cluster.server.stop();
    let futures = submit_large(&cluster.executor, 6);
    std::thread::sleep(Duration::from_secs(1));
    cluster.server.restart_empty();
    let mut bad = Vec::new();
    for (i, f) in (0..).zip(&futures) {
        let r = f.result_timeout(LIMIT);
        if r != Ok(&(i * 300 * 1024)) {
            bad.push(format!("task {i}: {r:?}"));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// A node with a debug log (async-nats too).
struct DebugNode {
    child: std::process::Child,
    log: PathBuf,
}

impl DebugNode {
    fn start(url: &str, workers: usize) -> DebugNode {
        let log = std::env::temp_dir().join(format!("cf-probe-node-{}.log", unique()));
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["node_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(cf_pool_cluster::node::NODE_ENV, url)
            .env(cf_pool_cluster::node::WORKERS_ENV, workers.to_string())
            .env(cf_pool_cluster::node::POOL_ENV, "test")
            .env("RUST_LOG", "cf_pool_cluster=debug,async_nats=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        DebugNode { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn wait_log(&self, text: &str) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(start.elapsed() < LIMIT, "{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DebugNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var("KEEP_NODE_LOG").is_err() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("node log kept: {}", self.log.display());
        }
    }
}

/// A very large argument being downloaded by the node when the server loses its store.
#[test]
fn huge_argument_download_cut_by_loss() {
    huge_download(true);
}

/// The same with a server that keeps its store.
#[test]
fn huge_argument_download_cut_by_kept_restart() {
    huge_download(false);
}

fn huge_download(empty: bool) {
    let Some(mut cluster) = Cluster::start(&[], |b| b) else {
        return;
    };
    let node = DebugNode::start(&cluster.server.url(), 1);
    node.wait_log("taking tasks");
    let mut bad = Vec::new();
    for round in 0..4u8 {
        let f = cluster
            .executor
            .submit(byte_sum, vec![round + 1; 48 << 20])
            .unwrap();
        let start = Instant::now();
        while !f.running() && !f.done() {
            assert!(start.elapsed() < LIMIT);
            std::thread::sleep(Duration::from_millis(2));
        }
        if empty {
            cluster.server.restart_empty();
        } else {
            cluster.server.restart();
        }
        let r = f.result_timeout(LIMIT);
        eprintln!("round {round}: {r:?}");
        if r != Ok(&(u64::from(round + 1) * (48 << 20))) {
            bad.push(format!("round {round}: {r:?}"));
            if r.is_err() && !f.done() {
                let pid = node.child.id();
                eprintln!(
                    "node alive: {:?}",
                    std::fs::read_to_string(format!("/proc/{pid}/status")).map(|s| s
                        .lines()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" | "))
                );
                eprintln!("{:?}", cluster.executor);
                let small = cluster.executor.submit(triple, 2).unwrap();
                let small = small.result_timeout(Duration::from_secs(30));
                eprintln!("a small task on the same node after the hang: {small:?}");
                panic!("hang: {bad:#?}; a small task after it: {small:?}");
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
