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

/// A node given an address that is not a NATS server's stops at once with an error saying so,
/// as the client's `build` does, instead of retrying it forever as if the server were down.
/// Needs no server.
#[test]
fn a_node_with_a_malformed_url_refuses_to_start() {
    for url in ["http://127.0.0.1:4222", "::garbage::", "", "nats://"] {
        let (tx, rx) = std::sync::mpsc::channel();
        // On its own thread: a node that did start would serve forever.
        std::thread::spawn(move || {
            let _ = tx.send(
                cf_pool_cluster::node::NodeBuilder::new(url)
                    .workers(1)
                    .run(),
            );
        });
        let e = rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("a node for {url:?} did not stop within {LIMIT:?}"))
            .unwrap_err();
        assert!(e.contains("not a NATS server address"), "{url:?}: {e}");
        let e = match cf_pool_cluster::ClusterExecutor::builder(url).build() {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a client for {url:?} was built"),
        };
        assert!(e.contains("not a NATS server address"), "{url:?}: {e}");
    }
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    ms
}

/// A client built, used and dropped in async code: its runtime is blocked on from a thread of
/// its own there (tokio panics at a `block_on` inside a runtime).
#[test]
fn an_executor_is_built_awaited_and_dropped_in_async_code() {
    let Some(cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let (url, pool) = (cluster.server.url(), cluster.pool.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async move {
        let executor = cf_pool_cluster::ClusterExecutor::builder(&url)
            .pool(&pool)
            .build()
            .expect("built in async code");
        let f = executor.submit(square, 6).unwrap();
        let got = tokio::time::timeout(LIMIT, f).await.expect("in time");
        drop(executor);
        got
    });
    assert_eq!(got, Ok(36));
}

/// Dropped on a thread of some other tokio runtime (here its blocking pool), the executor still
/// waits for its tasks, as anywhere else; it skips the wait only on its own runtime's threads.
/// It used to take any tokio thread for its own, and its futures then never completed.
#[test]
fn dropped_on_another_runtimes_thread_the_executor_waits_for_its_tasks() {
    let Some(cluster) = Cluster::start(&[2], |b| b) else {
        return;
    };
    let common::Cluster {
        executor,
        nodes,
        server,
        ..
    } = cluster;
    let futures: Vec<_> = (0..4).map(|_| executor.submit(nap, 300).unwrap()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || drop(executor))
            .await
            .unwrap();
    });
    for f in &futures {
        assert!(
            f.done(),
            "the drop returned before its task was done: {f:?}"
        );
        assert_eq!(f.result_timeout(LIMIT), Ok(&300));
    }
    drop((nodes, server));
}

fn big_panic(n: usize) -> u64 {
    panic!("{}", "x".repeat(n))
}

/// A task error larger than the server takes in one message (a panic with a 1.1 MB message)
/// reaches the client cut short, and the node's worker goes on: it was refused forever, its
/// result never recorded and its worker slot never freed.
#[test]
fn an_error_larger_than_a_message_arrives_cut_short_and_the_node_goes_on() {
    let Some(cluster) = Cluster::start(&[1], |b| b) else {
        return;
    };
    let f = cluster.executor.submit(big_panic, 1_100_000).unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Panicked { message, .. }) => {
            assert!(message.starts_with("xxxx"), "{}", &message[..100]);
            assert!(message.len() < 64 * 1024, "{} bytes", message.len());
            assert!(
                message.contains("more bytes cut"),
                "{}",
                &message[message.len() - 200..]
            );
        }
        other => panic!("expected the task's panic, got {:.300?}", other),
    }
    let g = cluster.executor.submit(square, 3).unwrap();
    assert_eq!(g.result_timeout(LIMIT), Ok(&9));
}

fn length(b: cf_pool_cluster::Buffer) -> usize {
    b.len()
}

/// A server started with `config`, a client built by `configure` (first: the pool's buckets
/// take its `result_ttl` when they are created), and a one-worker node taking tasks. Dropped in
/// that order.
fn on_server(
    config: &str,
    configure: impl FnOnce(cf_pool_cluster::ClusterBuilder) -> cf_pool_cluster::ClusterBuilder,
) -> Option<(
    cf_pool_cluster::ClusterExecutor,
    common::Node,
    common::Server,
)> {
    let server = common::Server::start_with(Some(config))?;
    let executor = configure(
        cf_pool_cluster::ClusterExecutor::builder(&server.url())
            .pool("test")
            .node_timeout(LIMIT),
    )
    .build()
    .unwrap();
    let node = common::Node::start(&server.url(), "test", 1, None);
    node.wait_log("taking tasks");
    Some((executor, node, server))
}

/// An argument the server refuses to store (its JetStream store is smaller than the argument)
/// fails its task with a clear error after a few refusals, instead of being uploaded again
/// forever while every other task waits; once what the attempts uploaded has expired (the
/// pool's `result_ttl`), the pool runs tasks again.
#[test]
fn an_argument_the_server_cannot_store_fails_its_task_and_the_pool_recovers() {
    let Some((executor, node, server)) = on_server("jetstream { max_file_store: 64MB }", |b| {
        b.result_ttl(std::time::Duration::from_secs(5))
    }) else {
        return;
    };
    let big = cf_pool_cluster::Buffer::from(vec![7u8; 100 << 20]);
    let f = executor.submit(length, big).unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Codec { message, .. }) => {
            assert!(message.contains("refused to store"), "{message}");
        }
        other => panic!("expected a refused upload, got {other:?}"),
    }
    let g = executor.submit(square, 4).unwrap();
    assert_eq!(g.result_timeout(LIMIT), Ok(&16));
    drop(executor);
    drop((node, server));
}

fn bytes_of(n: usize) -> serde_bytes::ByteBuf {
    serde_bytes::ByteBuf::from(vec![7u8; n])
}

/// Results that were read do not stay on the server for `result_ttl`: a steady stream of
/// results, each read at once, several times larger in all than the server's store, goes
/// through (kept for the hour, they filled a 64 MB store after about 330 results of 200 KB).
#[test]
fn results_read_by_the_client_do_not_fill_the_servers_store() {
    let Some((executor, node, server)) = on_server("jetstream { max_file_store: 64MB }", |b| b)
    else {
        return;
    };
    // 1 000 results of 200 KB (200 MB, inline records): three times the store.
    for batch in 0..20 {
        let futures: Vec<_> = (0..50)
            .map(|_| executor.submit(bytes_of, 200_000).unwrap())
            .collect();
        for (i, f) in futures.iter().enumerate() {
            let got = f.result_timeout(LIMIT).map(|b| b.len());
            assert_eq!(got, Ok(200_000), "batch {batch}, task {i}");
        }
    }
    drop(executor);
    drop((node, server));
}

fn echo_bytes(b: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    b
}

/// A server whose message limit (`max_payload`) is below the payloads cf would send inline,
/// or below its object-store chunks: arguments, results and errors are sized to it, so they
/// arrive instead of being refused forever (the future pending, the node's worker slot lost).
#[test]
fn payloads_fit_a_server_with_a_small_message_limit() {
    let Some((executor, node, server)) = on_server("max_payload: 65536", |b| b) else {
        return;
    };
    // A result, an argument, and both, over the limit; then over the default chunk size.
    let f = executor.submit(bytes_of, 100_000).unwrap();
    assert_eq!(f.result_timeout(LIMIT).map(|b| b.len()), Ok(100_000));
    for n in [100_000, 1 << 20] {
        let arg = serde_bytes::ByteBuf::from(vec![5u8; n]);
        let f = executor.submit(echo_bytes, arg.clone()).unwrap();
        assert_eq!(f.result_timeout(LIMIT), Ok(&arg), "{n} bytes");
    }
    // An error larger than a message arrives cut to fit.
    let f = executor.submit(big_panic, 200_000).unwrap();
    match f.result_timeout(LIMIT) {
        Err(TaskError::Panicked { message, .. }) => {
            assert!(message.len() < 64 * 1024, "{} bytes", message.len());
            assert!(message.contains("more bytes cut"), "{}", &message[..100]);
        }
        other => panic!("expected the task's panic, got {:.300?}", other),
    }
    // The node's only worker slot is free.
    let g = executor.submit(square, 3).unwrap();
    assert_eq!(g.result_timeout(LIMIT), Ok(&9));
    drop(executor);
    drop((node, server));
}

/// Bytes the server's JetStream holds, in every stream of its account.
fn stored_bytes(url: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        js.query_account().await.expect("account info").storage
    })
}

/// Waits (at most [`LIMIT`]) until `done` holds for what the server stores.
fn wait_stored(url: &str, what: &str, done: impl Fn(u64) -> bool) {
    let start = std::time::Instant::now();
    loop {
        let stored = stored_bytes(url);
        if done(stored) {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{what}: the server stores {stored} bytes"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A task cancelled before any node took it leaves nothing of its large argument on the
/// server: the argument is deleted at once, not kept until the pool's `result_ttl` (1 h).
#[test]
fn a_cancelled_task_leaves_no_argument_on_the_server() {
    let Some((executor, node, server)) = on_server("", |b| b) else {
        return;
    };
    // The node's only worker is busy: the next task stays queued on the server.
    let busy = executor.submit(nap, 2_000).unwrap();
    let start = std::time::Instant::now();
    while !busy.running() {
        assert!(start.elapsed() < LIMIT, "the first task never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let big = executor
        .submit(echo_bytes, serde_bytes::ByteBuf::from(vec![7u8; 20 << 20]))
        .unwrap();
    wait_stored(
        &server.url(),
        "the argument never reached the server",
        |n| n >= 20 << 20,
    );
    assert!(big.cancel(), "a queued task is cancelled");
    wait_stored(&server.url(), "the cancelled task's argument stayed", |n| {
        n < 10 << 20
    });
    assert_eq!(busy.result_timeout(LIMIT), Ok(&2_000));
    drop(executor);
    drop((node, server));
}
