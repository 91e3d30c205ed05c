//! Nodes dying, the server restarting, a node of another build, a client losing its
//! connection: work goes on, every future resolves once, nothing waits forever.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cf_pool_cluster::{ClusterExecutor, Executor, Future, TaskError};
use common::{
    assert_tripled, count_completions, slow_triple, submit_large, triple, Cluster, Dir, Node, LIMIT,
};

#[test]
fn node_entry() {
    common::node_entry();
}

/// The pid of the node running this task (the worker's parent).
fn node_pid() -> u32 {
    std::os::unix::process::parent_id()
}

/// Leaves `run-{i}-{node pid}`, waits for the release, returns the node's pid.
fn held((dir, i): (String, u32)) -> u32 {
    let dir = Path::new(&dir);
    let _ = std::fs::write(dir.join(format!("run-{i}-{}", node_pid())), b"");
    let start = Instant::now();
    while !dir.join("release").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "never released");
        std::thread::sleep(Duration::from_millis(10));
    }
    node_pid()
}

fn sleepy_triple(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(500));
    x * 3
}

#[test]
fn node_killed_mid_task_is_redelivered_and_resolves_once() {
    let Some(mut cluster) = Cluster::start(&[1], |b| b.ack_wait(Duration::from_secs(2))) else {
        return;
    };
    let dir = Dir::new("redeliver");
    let f = cluster.executor.submit(held, (dir.path(), 0)).unwrap();
    let completions = count_completions(std::slice::from_ref(&f));
    let first = cluster.nodes[0].pid();
    dir.wait_markers("run-0-", 1);
    let start = Instant::now();
    while !f.running() {
        assert!(
            start.elapsed() < LIMIT,
            "the client never saw the node's claim: {:?}",
            f.state()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    cluster.add_node(1);
    let second = cluster.nodes[1].pid();
    cluster.nodes[0].kill();
    dir.release();
    assert_eq!(f.result_timeout(LIMIT), Ok(&second));
    let runs: HashSet<String> = dir.markers("run-0-").into_iter().collect();
    assert_eq!(
        runs,
        HashSet::from([format!("run-0-{first}"), format!("run-0-{second}")]),
        "ran on the killed node, then once more on the other"
    );
    cluster.executor.shutdown(true, false);
    assert_eq!(completions.load(Ordering::SeqCst), 1);
}

#[test]
fn too_many_deliveries_fail_naming_the_node() {
    let Some(mut cluster) = Cluster::start(&[1], |b| {
        b.ack_wait(Duration::from_secs(1)).max_deliveries(1)
    }) else {
        return;
    };
    let dir = Dir::new("max-deliveries");
    let f = cluster.executor.submit(held, (dir.path(), 0)).unwrap();
    dir.wait_markers("run-0-", 1);
    let first = cluster.nodes[0].pid();
    cluster.add_node(1);
    cluster.nodes[0].kill();
    let e = f
        .exception_timeout(LIMIT)
        .expect("done in time")
        .expect("failed");
    let TaskError::NodeFailed {
        node: Some(node),
        deliveries,
        reason,
    } = &e
    else {
        panic!("expected NodeFailed naming the node, got {e:?}");
    };
    assert_eq!(*deliveries, Some(1), "{e}");
    assert!(
        node.contains(&format!(":{first}:")),
        "names the node (pid {first}): {e}"
    );
    assert!(reason.contains("max_deliveries (1)"), "{e}");
    assert!(!e.to_string().contains("create a new executor"), "{e}");
    dir.release();
    // The other node did not run it.
    assert_eq!(dir.markers("run-0-"), [format!("run-0-{first}")]);
    // The executor is not broken: the next task runs.
    let g = cluster.executor.submit(triple, 5).unwrap();
    assert_eq!(g.result_timeout(LIMIT), Ok(&15));
}

/// Tasks queued, running, with large arguments, and submitted while the server is away, with
/// the server restarted on its store or on an empty one (`empty`): every one completes with
/// its result, and so does one submitted after.
fn restart_mid_run(empty: bool) -> Option<Cluster> {
    let mut cluster = Cluster::start(&[2, 2], |b| b)?;
    let before: Vec<_> = (0..300)
        .map(|i| cluster.executor.submit(slow_triple, i).unwrap())
        .collect();
    let start = Instant::now();
    while before.iter().filter(|f| f.done()).count() < 20 {
        assert!(start.elapsed() < LIMIT, "no progress before the restart");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Arguments over the inline limit travel through the object store.
    let large = submit_large(&cluster.executor, 4);
    cluster.server.stop();
    // Submitting while the server is away works: the tasks are published when it is back.
    let during: Vec<_> = (300..400)
        .map(|i| cluster.executor.submit(slow_triple, i).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    if empty {
        // The queue, the claims, the results recorded and the node registry are all gone:
        // what was queued or running is published again, by the client that waits for it.
        cluster.server.restart_empty();
    } else {
        cluster.server.restart();
    }
    assert_tripled(before.iter().chain(&during), "task");
    for (i, f) in (0..).zip(&large) {
        assert_eq!(
            f.result_timeout(LIMIT),
            Ok(&(i * 300 * 1024)),
            "large task {i}"
        );
    }
    let after = cluster.executor.submit(triple, 1000).unwrap();
    assert_eq!(after.result_timeout(LIMIT), Ok(&3000));
    Some(cluster)
}

#[test]
fn server_restart_mid_run_loses_nothing() {
    let Some(cluster) = restart_mid_run(false) else {
        return;
    };
    // A server that kept its store is not taken for one that lost it (which would publish
    // every unfinished task again).
    for node in &cluster.nodes {
        assert!(!node.log().contains("server lost pool"), "{}", node.log());
    }
}

#[test]
fn server_restarted_without_its_store_loses_nothing() {
    let Some(cluster) = restart_mid_run(true) else {
        return;
    };
    assert!(
        cluster
            .nodes
            .iter()
            .any(|n| n.log().contains("server lost pool")),
        "no node noticed the loss"
    );
    // A client built after the loss works with the nodes that saw it.
    let late = ClusterExecutor::builder(&cluster.server.url())
        .pool(&cluster.pool)
        .node_timeout(LIMIT)
        .build()
        .unwrap();
    assert_eq!(
        late.submit(triple, 7).unwrap().result_timeout(LIMIT),
        Ok(&21)
    );
}

/// Writes `ran-{i}`: proof that a task ran at all.
fn mark((dir, i): (String, u32)) -> u32 {
    let _ = std::fs::write(Path::new(&dir).join(format!("ran-{i}")), b"");
    i
}

#[test]
fn node_of_another_build_is_refused() {
    let Some(server) = common::Server::start() else {
        return;
    };
    let foreign = Node::start(&server.url(), "test", 1, Some("other"));
    foreign.wait_log("serving pool test");
    let executor = cf_pool_cluster::ClusterExecutor::builder(&server.url())
        .pool("test")
        .node_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let dir = Dir::new("foreign");
    let f = executor.submit(mark, (dir.path(), 0)).unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::NodeFailed {
            node: None,
            deliveries: None,
            reason,
        }) => {
            assert!(
                reason.contains("no node of this program's build"),
                "{reason}"
            );
            assert!(
                reason.contains(&format!(":{}:", foreign.pid())),
                "lists the foreign node: {reason}"
            );
        }
        other => panic!("expected NodeFailed (no node of this build), got {other:?}"),
    }
    foreign.wait_log(&format!(
        "refusing the tasks of client {}: it runs build {}",
        executor.client_id(),
        executor.build_id()
    ));
    assert!(
        dir.markers("ran-").is_empty(),
        "the foreign node ran a task"
    );
    // A node of the right build serves the next tasks; the failed one is never run.
    let own = Node::start(&server.url(), "test", 1, None);
    let g = executor.submit(mark, (dir.path(), 1)).unwrap();
    assert_eq!(g.result_timeout(LIMIT), Ok(&1));
    executor.shutdown(true, false);
    assert_eq!(dir.markers("ran-"), ["ran-1"]);
    drop(own);
}

#[test]
fn ten_thousand_tasks_with_random_node_kills() {
    const TASKS: u64 = 10_000;
    let Some(mut cluster) = Cluster::start(&[2, 2, 2], |b| {
        b.ack_wait(Duration::from_secs(2)).max_deliveries(20)
    }) else {
        return;
    };
    let futures: Vec<_> = (0..TASKS)
        .map(|i| cluster.executor.submit(triple, i).unwrap())
        .collect();
    let completions = count_completions(&futures);
    // Kill a node every time another tenth completes, and start a replacement.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut kills = 0;
    let start = Instant::now();
    loop {
        let done = futures.iter().filter(|f| f.done()).count();
        if done == futures.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{done} of {TASKS} done after 600 s"
        );
        if kills < 5 && done as u64 > (kills + 1) * TASKS / 7 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let victim = (seed % cluster.nodes.len() as u64) as usize;
            cluster.nodes.remove(victim).kill();
            cluster.add_node(2);
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(kills, 5, "the nodes were killed while tasks ran");
    for (i, f) in (0..).zip(&futures) {
        assert_eq!(f.try_result(), Some(Ok(&(i * 3))), "task {i}");
    }
    cluster.executor.shutdown(true, false);
    assert_eq!(
        completions.load(Ordering::SeqCst),
        TASKS as usize,
        "each future resolved exactly once"
    );
}

/// Leaves a marker unique to this run (`run-{i}-{node pid}-{worker pid}-{time}`: a duplicate
/// on the same node counts too), then works for `ms` milliseconds.
fn long((dir, i, ms): (String, u32, u64)) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let marker = format!("run-{i}-{}-{}-{now}", node_pid(), std::process::id());
    let _ = std::fs::write(Path::new(&dir).join(marker), b"");
    std::thread::sleep(Duration::from_millis(ms));
    i
}

#[test]
fn long_tasks_are_not_redelivered_while_their_node_lives() {
    // Tasks four times longer than the ack deadline, with an idle node waiting for work: only
    // the progress acks keep the server from handing them to it.
    let Some(cluster) = Cluster::start(&[2, 2], |b| b.ack_wait(Duration::from_secs(1))) else {
        return;
    };
    let dir = Dir::new("progress");
    let futures: Vec<_> = (0..2)
        .map(|i| {
            cluster
                .executor
                .submit(long, (dir.path(), i, 4000))
                .unwrap()
        })
        .collect();
    for (i, f) in (0..).zip(&futures) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&i));
    }
    for i in 0..2 {
        assert_eq!(
            dir.markers(&format!("run-{i}-")).len(),
            1,
            "task {i} ran once"
        );
    }
}

#[test]
fn shutdown_cancelling_from_a_done_callback_cancels_the_unstarted_tasks() {
    let Some(cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    // An executor of its own, shared with its callback (which holds it weakly, so the test's
    // handle is the one that drops it).
    let executor = Arc::new(
        ClusterExecutor::builder(&cluster.server.url())
            .pool(&cluster.pool)
            .node_timeout(LIMIT)
            .build()
            .expect("build the cluster executor"),
    );
    let dir = Dir::new("cancel-from-callback");
    let first = executor.submit(held, (dir.path(), 0)).unwrap();
    dir.wait_markers("run-0-", 1);
    // The node's one worker is busy: these wait on the server, unclaimed.
    let queued: Vec<_> = (1..=4)
        .map(|x| executor.submit(sleepy_triple, x).unwrap())
        .collect();
    let weak = Arc::downgrade(&executor);
    first.add_done_callback(move |_| {
        if let Some(executor) = weak.upgrade() {
            executor.shutdown(false, true);
        }
    });
    dir.release();
    assert_eq!(first.result_timeout(LIMIT), Ok(&cluster.nodes[0].pid()));
    // The node may take the next task before the callback's cancel claims reach the server,
    // and it runs for half a second: the others must be cancelled.
    let mut cancelled = 0;
    for (f, x) in queued.iter().zip(1..) {
        match f.result_timeout(LIMIT) {
            Ok(v) => assert_eq!(*v, x * 3),
            Err(TaskError::Cancelled) => cancelled += 1,
            Err(e) => panic!("task {x} neither ran nor was cancelled: {e}"),
        }
    }
    assert!(
        cancelled >= 3,
        "shutdown(cancel_futures) from a done-callback cancelled {cancelled} of the 4 queued tasks"
    );
    assert!(matches!(
        executor.submit(triple, 1),
        Err(cf_pool_cluster::SubmitError::Shutdown)
    ));
}

#[test]
fn an_executor_dropped_by_its_own_done_callback_fails_what_it_leaves() {
    let Some(cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let executor = ClusterExecutor::builder(&cluster.server.url())
        .pool(&cluster.pool)
        .node_timeout(LIMIT)
        .build()
        .expect("build the cluster executor");
    let dir = Dir::new("drop-from-callback");
    let first = executor.submit(held, (dir.path(), 0)).unwrap();
    dir.wait_markers("run-0-", 1);
    let left = executor.submit(sleepy_triple, 1).unwrap();
    // The callback holds the only handle to the executor and drops it, on the client's own
    // runtime thread.
    let slot = Arc::new(parking_lot::Mutex::new(Some(executor)));
    let in_callback = Arc::clone(&slot);
    let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
    first.add_done_callback(move |_| {
        drop(in_callback.lock().take());
        let _ = dropped_tx.send(());
    });
    dir.release();
    assert_eq!(first.result_timeout(LIMIT), Ok(&cluster.nodes[0].pid()));
    dropped_rx
        .recv_timeout(LIMIT)
        .expect("the callback's drop of the executor returned");
    assert!(slot.lock().is_none());
    match left.result_timeout(LIMIT) {
        Err(TaskError::Broken { reason }) => assert!(
            reason.contains("dropped by one of its own done-callbacks"),
            "{reason}"
        ),
        other => panic!("the task the executor left: {other:?}"),
    }
}

/// A one-node cluster (`node_timeout` 3 s) running a held task (`run-0-`), its server stopped
/// once `queue` more held tasks are submitted behind it: the executor (shared, so that a
/// thread can wait on it), the running task's future, the queued ones, and what must live
/// until the test ends.
struct CutOff {
    executor: Arc<ClusterExecutor>,
    running: Future<u32>,
    queued: Vec<Future<u32>>,
    dir: Dir,
    _rest: (common::Server, Vec<Node>),
}

fn cut_off(name: &str, queue: u32) -> Option<CutOff> {
    let cluster = Cluster::start(&[1], |b| b.node_timeout(Duration::from_secs(3)))?;
    let Cluster {
        executor,
        nodes,
        mut server,
        ..
    } = cluster;
    let executor = Arc::new(executor);
    let dir = Dir::new(name);
    let running = executor.submit(held, (dir.path(), 0)).unwrap();
    dir.wait_markers("run-0-", 1);
    let queued = (1..=queue)
        .map(|i| executor.submit(held, (dir.path(), i)).unwrap())
        .collect();
    server.stop();
    Some(CutOff {
        executor,
        running,
        queued,
        dir,
        _rest: (server, nodes),
    })
}

/// Runs `call` on the executor on a thread of its own, so that a call that never returns
/// fails the test instead of hanging it.
fn returns(executor: &Arc<ClusterExecutor>, call: fn(&ClusterExecutor), what: &str) {
    let (tx, rx) = std::sync::mpsc::channel();
    let executor = Arc::clone(executor);
    std::thread::spawn(move || {
        call(&executor);
        let _ = tx.send(());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{what} did not return"));
}

/// A shut-down executor whose server is gone for good does not wait for ever: `shutdown(wait)`
/// (and a drop) fail what is still pending once the client has been cut off for `node_timeout`,
/// and say so. Before, the wait never ended.
#[test]
fn shutdown_wait_ends_when_the_server_is_gone_for_good() {
    let Some(cut) = cut_off("server-gone", 0) else {
        return;
    };
    returns(&cut.executor, |e| e.shutdown(true, false), "shutdown(wait)");
    let e = cut
        .running
        .exception_timeout(Duration::ZERO)
        .expect("done once shutdown returned")
        .expect("failed");
    let TaskError::NodeFailed { reason, .. } = &e else {
        panic!("expected NodeFailed, got {e:?}");
    };
    assert!(reason.contains("cut off from the server"), "{e}");
    cut.dir.release();
}

/// `shutdown(cancel_futures)` cut off from the server cancels the unstarted tasks and returns
/// (it gives the server 2 s to take the cancel claims, where it waited about 15 s for claims
/// the server could not take; no test here asserts a duration). The running task is not
/// cancelled.
#[test]
fn cancel_futures_cut_off_from_the_server_cancels_the_unstarted_tasks() {
    let Some(cut) = cut_off("cancel-offline", 3) else {
        return;
    };
    returns(
        &cut.executor,
        |e| e.shutdown(false, true),
        "shutdown(false, true)",
    );
    for f in &cut.queued {
        assert!(f.cancelled(), "{:?}", f.state());
    }
    assert!(!cut.running.cancelled());
    cut.dir.release();
}
