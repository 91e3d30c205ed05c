//! A server that wants credentials: the client and nodes take them in the address
//! (`nats://user:password@host:port`, `nats://token@host:port`), as other NATS clients do; a
//! wrong or missing one is a clear error that does not show the secret.

mod common;

use cf_pool_cluster::{ClusterExecutor, Executor};
use common::{Node, Server, LIMIT};

#[test]
fn node_entry() {
    common::node_entry();
}

fn square(x: u64) -> u64 {
    x * x
}

/// `url` with `credentials@` after its scheme.
fn with(url: &str, credentials: &str) -> String {
    url.replacen("://", &format!("://{credentials}@"), 1)
}

fn runs_tasks_with(config: &str, good: &str, bad: &str, secret: &str) {
    let Some(server) = Server::start_with(Some(config)) else {
        return;
    };
    let url = server.url();
    for wrong in [url.clone(), with(&url, bad)] {
        let e = ClusterExecutor::builder(&wrong)
            .pool("test")
            .build()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("authorization"), "{e}");
        assert!(e.contains("nats://user:password@host:port"), "{e}");
        assert!(
            !e.contains(secret) && !e.contains(bad),
            "shows a secret: {e}"
        );
    }
    let executor = ClusterExecutor::builder(&with(&url, good))
        .pool("test")
        .node_timeout(LIMIT)
        .build()
        .unwrap();
    let node = Node::start(&with(&url, good), "test", 1, None);
    node.wait_log("taking tasks");
    assert_eq!(
        executor.submit(square, 4).unwrap().result_timeout(LIMIT),
        Ok(&16)
    );
    drop(executor);
    assert!(
        !node.log().contains(secret),
        "the node's log shows the secret"
    );
}

#[test]
fn user_and_password_in_the_address() {
    runs_tasks_with(
        "authorization { user: alice, password: \"hunter2 pw\" }",
        "alice:hunter2%20pw",
        "alice:wrongpw",
        "hunter2",
    );
}

#[test]
fn token_in_the_address() {
    runs_tasks_with(
        "authorization { token: s3cret }",
        "s3cret",
        "wrongtoken",
        "s3cret",
    );
}
