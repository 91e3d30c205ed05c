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

/// An address with credentials that is refused before connecting (here a port out of range,
/// with and without a scheme) does not show them, nor does a builder's `Debug`.
#[test]
fn a_refused_address_and_a_builder_do_not_show_the_secret() {
    for url in [
        "alice:s3cret@127.0.0.1:99999",
        "nats://alice:s3cret@127.0.0.1:99999",
    ] {
        let e = ClusterExecutor::builder(url)
            .build()
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "shows the password: {e}");
    }
    let url = "nats://alice:s3cret@127.0.0.1:4222";
    let client = format!("{:?}", ClusterExecutor::builder(url));
    let node = format!("{:?}", cf_pool_cluster::node::NodeBuilder::new(url));
    assert!(!client.contains("s3cret"), "{client}");
    assert!(!node.contains("s3cret"), "{node}");
}

/// A token holding a reserved character (`#`) that is not percent-encoded would end the
/// credentials early and make the rest a host: it is refused, saying what to do, without
/// showing the token.
#[test]
fn credentials_cut_short_by_a_reserved_character_are_refused() {
    let e = ClusterExecutor::builder("nats://tok#en@127.0.0.1:1")
        .build()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("percent-encode"), "{e}");
    assert!(
        !e.contains("tok#en") && !e.contains("en@"),
        "shows the token: {e}"
    );
}
