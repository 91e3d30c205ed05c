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
