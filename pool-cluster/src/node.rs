//! A node: this same executable, pulling its build's tasks from the server and running them on
//! a local [`ProcessPoolExecutor`].
//!
//! Start one from the program itself, on any machine that can reach the server:
//!
//! * call [`run`] (or [`NodeBuilder::run`]), which serves until the process is killed; or
//! * call [`run_if_requested`] as the first line of `main` and start the binary with
//!   `CF_CLUSTER_NODE=nats://server:4222` (and optionally `CF_CLUSTER_WORKERS`,
//!   `CF_CLUSTER_POOL`): it then serves as a node and never returns.
//!
//! A node runs only tasks published for its own [build](cf_pool_proc::transport::build_id):
//! tasks are published on a subject that names the build, so a node of another build never
//! receives them; it logs, for every client of another build it sees, that it will not run
//! that client's tasks. Each task runs in a worker process of the node's pool, so a task that
//! crashes kills one worker, the node records `WorkerDied` for it and goes on.
//!
//! What a node does with a delivery (see the crate docs for the guarantees this gives):
//!
//! 1. if the task's result is already recorded (a node died after recording it, before its
//!    ack), ack and stop;
//! 2. if the task was delivered more than its `max_deliveries`, record a failure naming the
//!    node that took it last, ack and stop;
//! 3. claim it (`create` of the claim key; a redelivery takes over an earlier node's claim by
//!    revision); a claim that says `Cancelled` means ack and stop;
//! 4. run it on the local pool, sending progress acks every third of the ack deadline (at
//!    least every 250 ms);
//! 5. record the outcome (`create` of the result key: the first outcome wins), then ack.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, AckKind};
use cf_executor_api::{CodecStage, SubmitError, TaskError};
use cf_pool_proc::transport::{build_id, Encoded, TaskCode};
use cf_pool_proc::ProcessPoolExecutor;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::wire::{
    claim_key, from_bytes, result_key, to_bytes, Claim, ClientInfo, Fetch, Names, NodeInfo,
    Outcome, Stores, HEARTBEAT,
};

/// How long the server holds a node's request for tasks open when it has none.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);

/// How much longer than [`FETCH_EXPIRES`] a node waits for the server to end a request for
/// tasks before it asks again.
const FETCH_SLACK: Duration = Duration::from_secs(4);

/// The longest gap between two progress acks of a running task, whatever the deadline.
const PROGRESS_AT_LEAST: Duration = Duration::from_millis(250);

/// How many times a node tries to store a large result the server refuses (16 s of pauses):
/// a server that lost its store refuses until a client or node has created it again.
const RESULT_TRIES: u32 = 8;

/// How long a task a node gave back waits on the server before it is delivered again.
const GIVE_BACK_DELAY: Duration = Duration::from_secs(1);

/// How long a node that gave a task back waits before it takes another in its place: longer
/// than [`GIVE_BACK_DELAY`], so another node has the first chance at that task.
const GIVE_BACK_PAUSE: Duration = Duration::from_secs(2);

/// The environment variable [`run_if_requested`] looks at: the server URL.
pub const NODE_ENV: &str = "CF_CLUSTER_NODE";
/// Worker processes of a node started by [`run_if_requested`] (default: the CPU count).
pub const WORKERS_ENV: &str = "CF_CLUSTER_WORKERS";
/// The pool name of a node started by [`run_if_requested`] (default `cf`).
pub const POOL_ENV: &str = "CF_CLUSTER_POOL";
/// **Test only.** Appended to the build identity this node advertises, so a test can start a
/// node that looks like another build. Never set it in production: a node must advertise its
/// true build.
pub const TEST_BUILD_SUFFIX_ENV: &str = "CF_CLUSTER_TEST_BUILD_SUFFIX";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves as a node with the environment's settings if [`NODE_ENV`] is set, and exits the
/// process when the node stops (status 1 if it could not start); returns at once otherwise.
/// Call it first in `main`.
///
/// # Examples
///
/// The first line of `main`:
///
/// ```no_run
/// cf_pool_cluster::node::run_if_requested();
/// // ... the program as usual, e.g. a ClusterExecutor client.
/// ```
pub fn run_if_requested() {
    let Ok(url) = std::env::var(NODE_ENV) else {
        return;
    };
    let mut builder = NodeBuilder::new(&url);
    if let Ok(n) = std::env::var(WORKERS_ENV) {
        match n.parse() {
            Ok(n) => builder = builder.workers(n),
            Err(e) => {
                eprintln!("cf-pool-cluster node: {WORKERS_ENV}={n:?} is not a number ({e})");
                std::process::exit(1);
            }
        }
    }
    if let Ok(pool) = std::env::var(POOL_ENV) {
        builder = builder.pool(&pool);
    }
    match builder.run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("cf-pool-cluster node: {e}");
            std::process::exit(1);
        }
    }
}

/// Serves as a node of pool `cf` on the server at `url` with `workers` worker processes, until
/// the process is killed.
///
/// # Errors
///
/// As [`NodeBuilder::run`].
pub fn run(url: &str, workers: usize) -> Result<(), String> {
    NodeBuilder::new(url).workers(workers).run()
}

/// A node's settings.
///
/// # Examples
///
/// ```no_run
/// cf_pool_cluster::node::NodeBuilder::new("nats://10.0.0.5:4222")
///     .workers(8)
///     .pool("render")
///     .run()
///     .unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    url: crate::Address,
    workers: usize,
    pool: String,
}

impl NodeBuilder {
    /// A node for the server at `url`: [`cpu_count`](cf_executor_api::cpu_count) workers,
    /// pool `cf`.
    #[must_use]
    pub fn new(url: &str) -> Self {
        NodeBuilder {
            url: crate::Address(url.to_owned()),
            workers: cf_executor_api::cpu_count(),
            pool: "cf".to_owned(),
        }
    }

    /// How many worker processes (and so tasks at once) this node runs; at least 1.
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// The pool to serve (the client's [`pool`](crate::ClusterBuilder::pool)).
    #[must_use]
    pub fn pool(mut self, name: &str) -> Self {
        self.pool = name.to_owned();
        self
    }

    /// Serves until the process is killed. Waits for the server if it is not up yet, and
    /// rides out its restarts.
    ///
    /// # Errors
    ///
    /// Bad settings (no worker, a URL that is not a NATS server address, a bad pool name), no
    /// build identity, or no async runtime.
    pub fn run(self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("a node needs at least 1 worker".into());
        }
        // An address that cannot be parsed never connects: say so now, rather than retry it
        // forever as if the server were down.
        let server = crate::ServerUrl::parse(&self.url.0)?;
        let names = Names::new(&self.pool)?;
        let mut build = build_id()?.to_owned();
        if let Ok(suffix) = std::env::var(TEST_BUILD_SUFFIX_ENV) {
            let suffix: String = suffix.chars().filter(char::is_ascii_alphanumeric).collect();
            log::warn!(
                "cf-pool-cluster node: {TEST_BUILD_SUFFIX_ENV} is set: advertising build \
                 {build}{suffix} (test only)"
            );
            build.push_str(&suffix);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cf-cluster-node")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the node's async runtime: {e}"))?;
        let name = node_name();
        runtime.block_on(serve(self, server, names, build, name));
        Ok(())
    }
}

/// `host:pid:random`, unique enough to tell nodes apart in logs and errors.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}:{}:{}", std::process::id(), &nuid::next()[..6])
}

struct Node {
    names: Names,
    build: String,
    name: String,
    stores: Stores,
    workers: usize,
    /// One local pool per initializer the clients asked for.
    pools: Mutex<HashMap<Option<i64>, Arc<ProcessPoolExecutor>>>,
    /// Bumped when the server has lost the pool's stream and buckets ([`Stores::keep`]).
    lost: tokio::sync::watch::Receiver<u64>,
}

async fn serve(
    settings: NodeBuilder,
    server: crate::ServerUrl,
    names: Names,
    build: String,
    name: String,
) {
    let client = loop {
        match server
            .authenticate(async_nats::ConnectOptions::new())
            .name(format!("cf node {name}"))
            .retry_on_initial_connect()
            .event_callback(|event| async move { crate::log_connection_event(" node", &event) })
            .connect(server.connect())
            .await
        {
            Ok(client) => break client,
            Err(e) => {
                log::warn!("cf-pool-cluster node: cannot connect to {server}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let js = jetstream::new(client);
    let stores = loop {
        match Stores::open(js.clone(), &names, crate::DEFAULT_RESULT_TTL).await {
            Ok(stores) => break stores,
            Err(e) => {
                log::warn!("cf-pool-cluster node: cannot open the pool's stores yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    log::info!(
        "cf-pool-cluster node {name}: serving pool {} for build {build} with {} workers",
        names.pool,
        settings.workers
    );
    // A server restarted without its store comes back without the pool's stream and
    // buckets: they are created again, and the consumer opened again (below).
    let (lost_tx, mut lost) = tokio::sync::watch::channel(0);
    let node = Arc::new(Node {
        names,
        build,
        name,
        stores,
        workers: settings.workers,
        pools: Mutex::new(HashMap::new()),
        lost: lost.clone(),
    });
    tokio::spawn(
        node.stores
            .clone()
            .keep(node.names.clone(), crate::DEFAULT_RESULT_TTL, lost_tx),
    );
    tokio::spawn(heartbeat(Arc::clone(&node)));
    tokio::spawn(watch_clients(Arc::clone(&node), lost.clone()));
    let slots = Arc::new(Semaphore::new(settings.workers));
    // Said once, when the first consumer is open: from then on this node takes tasks.
    let mut taking = false;
    loop {
        lost.mark_unchanged();
        let mut consumer = match node.stores.consumer(&node.names, &node.build, None).await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cf-pool-cluster node: cannot open the task consumer: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !taking {
            taking = true;
            log::info!("cf-pool-cluster node {}: taking tasks", node.name);
        }
        let mut ack_wait = consumer.cached_info().config.ack_wait;
        let mut refreshed = std::time::Instant::now();
        loop {
            if lost.has_changed().unwrap_or(false) {
                break;
            }
            // A client may change the ack deadline (ClusterBuilder::ack_wait): follow it, so
            // progress acks come often enough.
            if refreshed.elapsed() >= Duration::from_secs(1) {
                refreshed = std::time::Instant::now();
                if let Ok(info) = consumer.info().await {
                    ack_wait = info.config.ack_wait;
                }
            }
            // Take only as many tasks as there are free workers: the rest stay on the server
            // for other nodes.
            let free = match Arc::clone(&slots).acquire_owned().await {
                Ok(permit) => {
                    drop(permit);
                    slots.available_permits()
                }
                Err(_) => return,
            };
            let batch = consumer
                .fetch()
                .max_messages(free)
                .expires(FETCH_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    log::debug!("cf-pool-cluster node: fetch failed: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    break;
                }
            };
            let mut failed = false;
            loop {
                // Bounded on this side too: a pull request lost while the server restarted is
                // answered by nobody, and the node would wait for it forever instead of asking
                // again.
                let Ok(next) =
                    tokio::time::timeout(FETCH_EXPIRES + FETCH_SLACK, batch.next()).await
                else {
                    log::debug!("cf-pool-cluster node: a fetch got no answer; asking again");
                    break;
                };
                let Some(message) = next else {
                    break;
                };
                match message {
                    Ok(message) => {
                        let permit = Arc::clone(&slots)
                            .acquire_owned()
                            .await
                            .expect("the semaphore is never closed");
                        let node = Arc::clone(&node);
                        tokio::spawn(async move {
                            node.handle(message, ack_wait).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        log::debug!("cf-pool-cluster node: fetch failed: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                // Open the consumer again: the server may have lost it (and its stream).
                tokio::time::sleep(Duration::from_millis(250)).await;
                break;
            }
        }
    }
}

/// Rewrites this node's registry entry every [`HEARTBEAT`], so clients can tell that a node of
/// their build is alive.
async fn heartbeat(node: Arc<Node>) {
    let key = format!("n.{}.{}", node.build, node.name.replace([':', '.'], "_"));
    let info = to_bytes(&NodeInfo {
        name: node.name.clone(),
        build: node.build.clone(),
        workers: node.workers,
    });
    loop {
        if let Err(e) = node.stores.registry.put(&key, info.clone()).await {
            log::debug!("cf-pool-cluster node: heartbeat failed: {e}");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// Logs, once per client, that a client of another build will not have its tasks run here.
async fn watch_clients(node: Arc<Node>, mut lost: tokio::sync::watch::Receiver<u64>) {
    let mut told = HashSet::new();
    loop {
        lost.mark_unchanged();
        let mut watch = match node.stores.registry.watch_with_history("c.*").await {
            Ok(w) => w,
            Err(e) => {
                log::debug!("cf-pool-cluster node: cannot watch clients: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let entry = tokio::select! {
                entry = watch.next() => entry,
                // The registry was created again: this watch's position means nothing there.
                Ok(()) = lost.changed() => break,
            };
            let Some(Ok(entry)) = entry else {
                break;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(client) = from_bytes::<ClientInfo>(&entry.value, "client entry") else {
                continue;
            };
            if client.build != node.build && told.insert(client.name.clone()) {
                log::warn!(
                    "cf-pool-cluster node {}: refusing the tasks of client {}: it runs build {}, \
                     this node runs build {}; tasks are code offsets, so only a node started \
                     from the client's own executable can run them",
                    node.name,
                    client.name,
                    client.build,
                    node.build
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Node {
    async fn handle(&self, message: jetstream::Message, ack_wait: Duration) {
        let delivery = message
            .info()
            .map_or(1, |i| u32::try_from(i.delivered).unwrap_or(u32::MAX));
        let task = match from_bytes::<crate::wire::TaskMsg>(&message.payload, "task message") {
            Ok(task) => task,
            Err(e) => {
                log::error!(
                    "cf-pool-cluster node {}: dropping a message on {}: {e}",
                    self.name,
                    message.subject
                );
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let claim = claim_key(&task.client, task.task);
        let result = result_key(&task.client, task.task);
        if task.build != self.build {
            // Only a misdirected publish gets here: the subject names the build.
            log::error!(
                "cf-pool-cluster node {}: refusing task {} of client {}: it was built for build \
                 {}, this node runs build {}",
                self.name,
                task.task,
                task.client,
                task.build,
                self.build
            );
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
        match self.stores.state.get(result.as_str()).await {
            Ok(Some(_)) => {
                let _ = message.double_ack().await;
                return;
            }
            Ok(None) => {}
            Err(e) => {
                log::debug!("cf-pool-cluster node: cannot read {result}: {e}");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                    .await;
                return;
            }
        }
        if delivery > task.max_deliveries {
            let last = match self.stores.state.get(claim.as_str()).await {
                Ok(Some(bytes)) => from_bytes::<Claim>(&bytes, "claim").ok(),
                _ => None,
            };
            let silent = || {
                format!(
                    "no node finished it within max_deliveries ({}): the node that took it \
                     last stopped answering (it died, or lost the server for longer than the \
                     ack deadline), and the task is not run again; if the task itself brings \
                     its node down, fix the task, otherwise raise max_deliveries",
                    task.max_deliveries
                )
            };
            let (last, reason) = match last {
                Some(Claim::Refused { node, reason, .. }) => (
                    Some(node),
                    format!(
                        "no node could run it within max_deliveries ({}); the last one to \
                         take it gave it back: {reason}",
                        task.max_deliveries
                    ),
                ),
                Some(Claim::Node { node, .. }) => (Some(node), silent()),
                _ => (None, silent()),
            };
            log::warn!(
                "cf-pool-cluster node {}: task {} of client {} fails: it was delivered {} times, \
                 last to node {}: {reason}",
                self.name,
                task.task,
                task.client,
                delivery - 1,
                last.as_deref().unwrap_or("(unknown)")
            );
            self.record(
                &result,
                Outcome {
                    node: last.clone().unwrap_or_else(|| "unknown".into()),
                    result: Err(TaskError::NodeFailed {
                        node: last,
                        deliveries: Some(delivery - 1),
                        reason,
                    }),
                    breaks_executor: false,
                },
            )
            .await;
            let _ = message.double_ack().await;
            return;
        }
        match self.claim(&claim, delivery).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = message.double_ack().await;
                return;
            }
            Err(e) => {
                log::debug!("cf-pool-cluster node: cannot claim {claim}: {e}");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                    .await;
                return;
            }
        }
        let progress = {
            // A third of the deadline, and at least every 250 ms: the deadline this node knows
            // may be stale for a moment after a client changed it (nodes follow the consumer's
            // configuration within a second or two), and a stale long deadline must not leave a
            // task without progress acks past the new, shorter one.
            let period = (ack_wait / 3).clamp(Duration::from_millis(50), PROGRESS_AT_LEAST);
            let message = message.clone();
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(period).await;
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        log::debug!("cf-pool-cluster node: progress ack failed: {e}");
                    }
                }
            }))
        };
        let crate::wire::TaskMsg {
            client,
            task: id,
            code,
            init,
            limit_ms,
            argument,
            ..
        } = task;
        let (result_value, breaks_executor) = match self.run(code, init, limit_ms, argument).await {
            Ok(ran) => ran,
            Err(reason) => {
                drop(progress);
                self.give_back(message, &claim, delivery, reason).await;
                return;
            }
        };
        let carried = match result_value {
            Ok(encoded) => {
                let large = self.stores.is_large(&encoded);
                self.stores
                    .carry(
                        format!("{client}.{id}.result"),
                        encoded,
                        large,
                        RESULT_TRIES,
                        || true,
                    )
                    .await
                    .map(|carried| carried.expect("a result is always wanted"))
                    .map_err(|e| TaskError::Codec {
                        stage: CodecStage::SerializeResult,
                        message: format!(
                            "the server refused to store the result {RESULT_TRIES} times (its \
                             JetStream storage may be full): {e}"
                        ),
                    })
            }
            Err(e) => Err(e),
        };
        self.record(
            &result,
            Outcome {
                node: self.name.clone(),
                result: carried,
                breaks_executor,
            },
        )
        .await;
        drop(progress);
        // The result is recorded: this worker slot is free now, whatever the ack does. The ack
        // is retried on its own (each try may wait for the server's answer for seconds, after a
        // server restart for every try), so the node goes on taking tasks meanwhile.
        tokio::spawn(async move {
            for _ in 0..10 {
                if message.double_ack().await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Not acked: the task is delivered again, and the next node sees its result
            // recorded.
        });
    }

    /// Gives a task this node could not run back to the server, for another node (or this
    /// one, once the cause is gone): the claim says why, in case it was the last delivery
    /// allowed, and this node waits [`GIVE_BACK_PAUSE`] before it takes another task in its
    /// place, so a node that cannot run anything does not take every task as it comes.
    async fn give_back(
        &self,
        message: jetstream::Message,
        claim: &str,
        delivery: u32,
        reason: String,
    ) {
        log::warn!(
            "cf-pool-cluster node {}: giving back a task it cannot run: {reason}",
            self.name
        );
        let refused = to_bytes(&Claim::Refused {
            node: self.name.clone(),
            delivery,
            reason,
        });
        if let Err(e) = self.stores.state.put(claim, refused).await {
            log::debug!("cf-pool-cluster node: cannot record giving back {claim}: {e}");
        }
        if let Err(e) = message.ack_with(AckKind::Nak(Some(GIVE_BACK_DELAY))).await {
            // Delivered again after the ack deadline instead.
            log::debug!("cf-pool-cluster node: cannot give back {claim}: {e}");
        }
        tokio::time::sleep(GIVE_BACK_PAUSE).await;
    }

    /// Claims the task for this node: `Ok(false)` if it was cancelled (or another node holds
    /// this very delivery).
    async fn claim(&self, key: &str, delivery: u32) -> Result<bool, BoxError> {
        let mine = to_bytes(&Claim::Node {
            node: self.name.clone(),
            delivery,
        });
        match self.stores.state.create(key, mine.clone()).await {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let Some(entry) = self.stores.state.entry(key).await? else {
            return Ok(false);
        };
        match from_bytes::<Claim>(&entry.value, "claim")? {
            Claim::Cancelled => Ok(false),
            // Given back: nobody runs it. Whatever its delivery (after a server lost its
            // store, the task published again counts its deliveries from 1 again).
            Claim::Refused { .. } => Ok(self
                .stores
                .state
                .update(key, mine, entry.revision)
                .await
                .is_ok()),
            Claim::Node {
                delivery: earlier, ..
            } if earlier < delivery => {
                // A redelivery: the earlier node died or went silent; take over.
                Ok(self
                    .stores
                    .state
                    .update(key, mine, entry.revision)
                    .await
                    .is_ok())
            }
            Claim::Node { .. } => Ok(false),
        }
    }

    /// Runs the task on the local pool for its initializer: the encoded result, or the error,
    /// and whether the error means the local pool is broken (which breaks the client too: the
    /// initializer fails the same way on every node of this build). `Err` says why this node
    /// could not run it at all (its machine refused it a process pool or a worker), which is
    /// no failure of the task: another node may run it ([`Node::give_back`]).
    async fn run(
        &self,
        code: i64,
        init: Option<i64>,
        limit_ms: Option<u64>,
        argument: crate::wire::Carried,
    ) -> Result<(Result<Encoded, TaskError>, bool), String> {
        let mut lost = self.lost.clone();
        lost.mark_unchanged();
        let fetched = tokio::select! {
            fetched = self.stores.fetch(argument, CodecStage::DeserializeArgument) => fetched,
            // The argument went with the store; the client publishes the task again, with it.
            Ok(()) = lost.changed() => {
                return Err("the server lost its store while the node read the argument".into());
            }
        };
        let argument = match fetched {
            Ok(a) => a,
            // The server did not give it now (it restarts, say): another delivery may get it.
            Err(Fetch::Unavailable(e)) => return Err(e.to_string()),
            Err(Fetch::Undecodable(e)) => return Ok((Err(e), false)),
        };
        let pool = self.pool(init)?;
        let limit = limit_ms.map(Duration::from_millis);
        let future = match pool.submit_encoded(TaskCode::from_raw(code), argument, limit) {
            Ok(f) => f,
            Err(SubmitError::Broken { reason }) => {
                self.drop_pool(init, &pool);
                return Ok((Err(TaskError::Broken { reason }), true));
            }
            Err(e) => return Err(format!("its process pool refused the task ({e})")),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        future.add_done_callback(move |_| {
            let _ = tx.send(());
        });
        let _ = rx.await;
        let outcome = match future.try_unwrap() {
            Ok(outcome) => outcome,
            Err(_) => unreachable!("the node holds the only handle of its local future"),
        };
        let broken = matches!(outcome, Err(TaskError::Broken { .. }));
        if broken {
            self.drop_pool(init, &pool);
        }
        // This machine refused a worker process (descriptors, processes, memory): a failure of
        // this node, not of the task's code or of the client.
        if let Err(TaskError::WorkerStartFailed { reason }) = outcome {
            return Err(format!(
                "its process pool could not start a worker ({reason}); look at the node \
                 machine's limits (open files, processes, memory)"
            ));
        }
        Ok((outcome, broken))
    }

    fn pool(&self, init: Option<i64>) -> Result<Arc<ProcessPoolExecutor>, String> {
        let mut pools = self.pools.lock();
        if let Some(pool) = pools.get(&init) {
            return Ok(Arc::clone(pool));
        }
        let mut builder = ProcessPoolExecutor::builder().max_workers(self.workers);
        if let Some(code) = init {
            builder = builder.initializer_code(TaskCode::from_raw(code));
        }
        let pool = Arc::new(builder.build().map_err(|e| {
            format!(
                "it cannot start its process pool ({e}); look at the node machine's limits \
                 (processes, open files, memory)"
            )
        })?);
        pools.insert(init, Arc::clone(&pool));
        Ok(pool)
    }

    /// Forgets a broken local pool, so the next task gets a fresh one.
    fn drop_pool(&self, init: Option<i64>, pool: &Arc<ProcessPoolExecutor>) {
        let mut pools = self.pools.lock();
        if pools.get(&init).is_some_and(|p| Arc::ptr_eq(p, pool)) {
            pools.remove(&init);
        }
    }

    /// Records an outcome; the first recorded wins. Retries while the server is away: the
    /// result exists only here until it is recorded.
    async fn record(&self, key: &str, mut outcome: Outcome) {
        if let Err(error) = &mut outcome.result {
            // Three texts at most (a panic's message, location and backtrace) in one record.
            bound_error_text(error, ERROR_TEXT_MAX.min(self.stores.limits().0 / 4));
        }
        let bytes = to_bytes(&outcome);
        let mut delay = Duration::from_millis(50);
        loop {
            match self.stores.state.create(key, bytes.clone()).await {
                Ok(_) => return,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    log::debug!("cf-pool-cluster node: {key} was already recorded (a duplicate)");
                    return;
                }
                Err(e) => {
                    log::debug!("cf-pool-cluster node: cannot record {key} yet: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// A task's progress acks, stopped when the task's handling ends, however it ends: acks that
/// outlived a handling that panicked would keep the server from ever delivering the task again.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The longest text an error keeps in each of its fields on its way to the client.
const ERROR_TEXT_MAX: usize = 32 * 1024;

/// Cuts the text of an error (a panic's message and backtrace, say) to `max` bytes per field
/// ([`ERROR_TEXT_MAX`], less on a server with a low message limit), saying how much was cut:
/// the outcome travels inline, and a message larger than the server takes (1 MiB by default)
/// would be refused forever, the result never recorded and the worker slot never freed.
fn bound_error_text(error: &mut TaskError, max: usize) {
    let cut = |text: &mut String| {
        if text.len() <= max {
            return;
        }
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let dropped = text.len() - end;
        text.truncate(end);
        text.push_str(&format!(
            "... [{dropped} more bytes cut by the cluster node: an error travels in one message]"
        ));
    };
    match error {
        TaskError::Panicked {
            message,
            location,
            backtrace,
        } => {
            cut(message);
            location
                .iter_mut()
                .chain(backtrace.iter_mut())
                .for_each(cut);
        }
        TaskError::WorkerDied { last_panic, .. } => last_panic.iter_mut().for_each(cut),
        TaskError::Broken { reason }
        | TaskError::NodeFailed { reason, .. }
        | TaskError::WorkerStartFailed { reason } => cut(reason),
        TaskError::Codec { message, .. } => cut(message),
        _ => {}
    }
}
