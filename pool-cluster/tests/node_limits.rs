//! A node whose machine refuses it a worker process (here: no descriptor left for the worker's
//! socket) gives the task back for another node; when no node can run it within
//! `max_deliveries`, it fails as a failure of the node, `NodeFailed`, naming the cause. The
//! client is not broken, and the node runs tasks again once the cause is gone.
#![cfg(target_os = "linux")]
#![allow(unsafe_code)] // the test sets a node's descriptor limit with prlimit

mod common;

use cf_pool_cluster::{Executor, TaskError};
use common::{assert_tripled, Cluster, LIMIT};

#[test]
fn node_entry() {
    common::node_entry();
}

fn triple(x: u64) -> u64 {
    x * 3
}

/// The lowest descriptor number `pid` does not use: with its soft limit there, it cannot
/// make a new descriptor.
fn lowest_free_descriptor(pid: u32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the node's descriptors")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|fd| !used.contains(fd)).expect("a free number")
}

/// Sets the soft descriptor limit of process `pid`; returns the old one.
fn set_soft_limit(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads the limits of process `pid` into a local.
    let got = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(got, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: sets the soft limit of process `pid` from a local, within its hard limit.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

#[test]
fn a_node_that_cannot_start_a_worker_fails_the_task_as_its_own_failure() {
    let Some(cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let node = cluster.nodes[0].pid();
    let old = set_soft_limit(node, lowest_free_descriptor(node));
    let outcome = cluster
        .executor
        .submit(triple, 1)
        .unwrap()
        .result_timeout(LIMIT)
        .cloned();
    set_soft_limit(node, old);
    let Err(
        e @ TaskError::NodeFailed {
            node: Some(_),
            reason,
            ..
        },
    ) = &outcome
    else {
        panic!("expected NodeFailed naming the node, got {outcome:?}");
    };
    assert!(reason.contains("could not start a worker"), "{e}");
    assert!(reason.contains("no node could run it"), "{e}");
    assert!(reason.contains("os error 24"), "{e}");
    // Neither the client nor the node is broken: with descriptors again, the task runs.
    let f = cluster.executor.submit(triple, 2).unwrap();
    assert_eq!(f.result_timeout(LIMIT), Ok(&6));
}

#[test]
fn a_task_a_node_cannot_start_runs_on_another_node() {
    // Deliveries to spare: this node may take a task back more than once before the second
    // node has started.
    let Some(mut cluster) = Cluster::start(&[1], |b| b.max_deliveries(20)) else {
        return;
    };
    let node = cluster.nodes[0].pid();
    let old = set_soft_limit(node, lowest_free_descriptor(node));
    let futures: Vec<_> = (0..4)
        .map(|i| cluster.executor.submit(triple, i).unwrap())
        .collect();
    cluster.nodes[0].wait_log("giving back a task it cannot run");
    cluster.add_node(1);
    assert_tripled(&futures, "task");
    set_soft_limit(node, old);
}
