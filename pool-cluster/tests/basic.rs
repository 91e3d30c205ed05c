//! Submit and result on a small cluster; the smoke test of the fixtures.

mod common;

use cf_pool_cluster::{Executor, TaskError};
use common::{Cluster, LIMIT};

#[test]
fn node_entry() {
    common::node_entry();
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn submit_and_result() {
    let Some(cluster) = Cluster::start(&[2], |b| b) else {
        return;
    };
    let f = cluster.executor.submit(square, 7).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&49));
    let g = cluster
        .executor
        .submit(|s: String| s.len(), "four".to_owned())
        .unwrap();
    assert_eq!(g.result_timeout(LIMIT), Ok(&4));
    let p = cluster
        .executor
        .submit(|_: ()| -> u8 { panic!("boom") }, ())
        .unwrap();
    assert!(
        matches!(p.result_timeout(LIMIT), Err(TaskError::Panicked { .. })),
        "{p:?}"
    );
}

fn spin(_: ()) -> u64 {
    loop {
        std::hint::spin_loop();
    }
}

fn abort(_: ()) -> u64 {
    std::process::abort()
}

/// The pid of the node running this task (the worker's parent).
fn node_pid(_: ()) -> u32 {
    std::os::unix::process::parent_id()
}

#[test]
fn time_limit_kills_the_worker_on_its_node() {
    let Some(cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let f = cluster
        .executor
        .submit_with_timeout(spin, (), std::time::Duration::from_millis(300))
        .unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Timeout {
            killed_worker: Some(pid),
            ..
        }) => assert_ne!(pid, std::process::id()),
        other => panic!("expected a Timeout that killed a worker, got {other:?}"),
    }
    // The node goes on, with a new worker.
    let g = cluster.executor.submit(square, 3).unwrap();
    assert_eq!(g.result_timeout(LIMIT), Ok(&9));
}

#[test]
fn a_crashing_task_kills_one_worker_and_the_node_goes_on() {
    let Some(cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let node = cluster.nodes[0].pid();
    let f = cluster.executor.submit(abort, ()).unwrap();
    assert!(
        matches!(f.result_timeout(LIMIT), Err(TaskError::WorkerDied { .. })),
        "{f:?}"
    );
    let g = cluster.executor.submit(node_pid, ()).unwrap();
    assert_eq!(
        g.result_timeout(LIMIT),
        Ok(&node),
        "the same node runs the next task"
    );
}

/// Tasks started so far in this worker process.
static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Which task this worker started it as (0 for its first): with one node of one worker, every
/// task of the test runs in one process, one after the other.
fn start_rank(_: u64) -> u64 {
    STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

/// Tasks reach the server in submission order, so one worker starts them in that order, as the
/// thread and process pools do. (Each was published from a task of its own and reached the
/// server in any order; a batch's first tasks could then wait behind later ones.)
#[test]
fn one_worker_starts_tasks_in_submission_order() {
    let Some(cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    for round in 0..5 {
        let futures: Vec<_> = (0..100)
            .map(|i| cluster.executor.submit(start_rank, i).unwrap())
            .collect();
        let ranks: Vec<u64> = futures
            .iter()
            .map(|f| *f.result_timeout(LIMIT).unwrap())
            .collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]),
            "round {round}: tasks started in the order {ranks:?}"
        );
    }
}
