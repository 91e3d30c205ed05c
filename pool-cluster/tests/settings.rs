//! The builder refuses bad settings before it connects: no server is needed here.

use std::time::Duration;

use cf_pool_cluster::{BuildError, ClusterBuilder, ClusterExecutor};

/// A well-formed address where nothing listens: settings are checked before connecting, and
/// a build that gets past them fails to connect quickly.
fn builder() -> ClusterBuilder {
    ClusterExecutor::builder("nats://127.0.0.1:1").connect_timeout(Duration::from_secs(2))
}

fn refused(b: ClusterBuilder) -> (&'static str, String) {
    match b.build() {
        Err(BuildError::Invalid { name, message }) => (name, message),
        Err(other) => panic!("expected an invalid setting, got {other}"),
        Ok(_) => panic!("expected an invalid setting, got an executor"),
    }
}

#[test]
fn zero_workers_are_refused() {
    assert!(matches!(
        builder().max_workers(0).build(),
        Err(BuildError::ZeroWorkers)
    ));
}

#[test]
fn zero_durations_and_deliveries_are_refused_by_name() {
    assert_eq!(refused(builder().max_deliveries(0)).0, "max_deliveries");
    assert_eq!(refused(builder().ack_wait(Duration::ZERO)).0, "ack_wait");
    assert_eq!(
        refused(builder().node_timeout(Duration::ZERO)).0,
        "node_timeout"
    );
    assert_eq!(
        refused(builder().result_ttl(Duration::ZERO)).0,
        "result_ttl"
    );
    assert_eq!(
        refused(builder().task_timeout(Duration::ZERO)).0,
        "task_timeout"
    );
}

#[test]
fn an_ack_deadline_shorter_than_the_nodes_progress_acks_is_refused() {
    for short in [
        Duration::from_nanos(1),
        Duration::from_millis(100),
        Duration::from_millis(999),
    ] {
        let (name, message) = refused(builder().ack_wait(short));
        assert_eq!(name, "ack_wait");
        assert!(message.contains("at least 1s"), "{message}");
    }
}

#[test]
fn a_node_timeout_shorter_than_three_heartbeats_is_refused() {
    for short in [
        Duration::from_nanos(1),
        Duration::from_millis(500),
        Duration::from_millis(2999),
    ] {
        let (name, message) = refused(builder().node_timeout(short));
        assert_eq!(name, "node_timeout");
        assert!(message.contains("at least 3s"), "{message}");
    }
}

#[test]
fn bad_pool_names_and_addresses_are_refused_by_name() {
    assert_eq!(refused(builder().pool("")).0, "pool");
    assert_eq!(refused(builder().pool("has space")).0, "pool");
    assert_eq!(refused(builder().pool(&"x".repeat(33))).0, "pool");
    let (name, _) = refused(ClusterExecutor::builder("http://127.0.0.1:4222"));
    assert_eq!(name, "url");
}

#[test]
fn the_shortest_accepted_settings_pass_the_checks_and_fail_only_to_connect() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = builder()
            .ack_wait(Duration::from_secs(1))
            .node_timeout(Duration::from_secs(3))
            .build()
            .map(drop);
        let _ = tx.send(outcome);
    });
    // Generous (the connect timeout is 2 s): only turns a hang into a failure.
    match rx
        .recv_timeout(Duration::from_secs(120))
        .expect("build returned")
    {
        Err(BuildError::Io(message)) => assert!(!message.is_empty()),
        Err(other) => panic!("expected a connection failure, got {other}"),
        Ok(()) => panic!("nothing listens on port 1"),
    }
}
