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

/// Each of `shorts` given to `set` is refused as too short, naming the setting and the minimum.
fn refused_below(
    set: fn(ClusterBuilder, Duration) -> ClusterBuilder,
    setting: &str,
    minimum: &str,
    shorts: [Duration; 3],
) {
    for short in shorts {
        let (name, message) = refused(set(builder(), short));
        assert_eq!(name, setting);
        assert!(
            message.contains(&format!("at least {minimum}")),
            "{message}"
        );
    }
}

#[test]
fn an_ack_deadline_shorter_than_the_nodes_progress_acks_is_refused() {
    let shorts = [1, 100_000_000, 999_000_000].map(Duration::from_nanos);
    refused_below(ClusterBuilder::ack_wait, "ack_wait", "1s", shorts);
}

#[test]
fn a_node_timeout_shorter_than_three_heartbeats_is_refused() {
    let shorts = [1, 500_000_000, 2_999_000_000].map(Duration::from_nanos);
    refused_below(ClusterBuilder::node_timeout, "node_timeout", "3s", shorts);
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
