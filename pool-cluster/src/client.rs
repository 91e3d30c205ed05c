//! The client side: futures waiting for the cluster, the async tasks that publish tasks and
//! watch their claims and results, and the liveness check of the build's nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::header::HeaderMap;
use async_nats::jetstream::{self, kv};
use cf_executor_api::{CodecStage, Payload, Promise, TaskError};
use cf_pool_proc::transport::{decode_result, Encoded};
use futures_util::StreamExt;
use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc;

/// How long after reconnecting the client waits for heartbeats before the time without a
/// node counts again (see [`Shared::check_alive`]).
const RECONNECT_CATCH_UP: Duration = Duration::from_secs(5);

/// How many times a connected server may refuse a cancel claim before it is given up on.
const CLAIM_REFUSALS: u32 = 5;

/// How many times a connected server may refuse to store a task's argument before the task
/// fails (see [`Shared::message`]).
const UPLOAD_REFUSALS: u32 = 5;

/// How many times the client tries to read a result the server does not give at once.
const FETCH_TRIES: u32 = 6;

use crate::wire::{
    argument_object, claim_key, from_bytes, result_key, to_bytes, Carried, Claim, ClientInfo,
    Fetch, Names, NodeInfo, Outcome, Stores, TaskMsg,
};

/// A waiting future, with its result type erased.
pub(crate) trait Completion: Send {
    /// Pending -> running; `false` if the future was cancelled.
    fn start(&self) -> bool;
    /// Cancels if not started.
    fn cancel(&self) -> bool;
    /// Decodes and completes.
    fn finish(self: Box<Self>, outcome: Result<Encoded, TaskError>);
}

impl<R: Payload + Sync> Completion for Promise<R> {
    fn start(&self) -> bool {
        self.set_running_or_notify_cancel()
    }

    fn cancel(&self) -> bool {
        Promise::cancel(self)
    }

    fn finish(self: Box<Self>, outcome: Result<Encoded, TaskError>) {
        let _ = self.set_outcome(decode_result::<R>(outcome));
    }
}

/// One task the client waits for.
pub(crate) struct Pending {
    pub(crate) completion: Box<dyn Completion>,
    /// The node that claimed it last, for errors.
    pub(crate) node: Option<String>,
    /// When it was submitted: it fails for want of a node only `node_timeout` after that.
    pub(crate) submitted: Instant,
    /// The task as it was published, kept until its result is read: a server that lost its
    /// store has lost the task too, and it is published again ([`Shared::renew`]).
    pub(crate) outgoing: Arc<Outgoing>,
}

/// A task on its way to the server.
pub(crate) struct Outgoing {
    pub(crate) task: u64,
    pub(crate) code: i64,
    pub(crate) limit: Option<Duration>,
    pub(crate) argument: Encoded,
    /// It travels through the object store ([`Stores::is_large`], decided once at submit).
    pub(crate) large: bool,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) pending: HashMap<u64, Pending>,
    pub(crate) next_task: u64,
    /// Tasks taken out of `pending` whose futures are being completed right now.
    pub(crate) completing: usize,
    pub(crate) shutdown: bool,
    pub(crate) broken: Option<String>,
}

impl State {
    /// No future of this executor is left to complete.
    pub(crate) fn idle(&self) -> bool {
        self.pending.is_empty() && self.completing == 0
    }
}

/// What the executor handle and the async tasks share.
pub(crate) struct Shared {
    pub(crate) names: Names,
    /// This executor's id: its keys in the state bucket start with it.
    pub(crate) client: String,
    pub(crate) build: String,
    pub(crate) init: Option<i64>,
    pub(crate) max_deliveries: u32,
    pub(crate) node_timeout: Duration,
    pub(crate) stores: Stores,
    pub(crate) state: Mutex<State>,
    /// Signalled when `pending` becomes empty.
    pub(crate) idle: Condvar,
    pub(crate) outgoing: mpsc::UnboundedSender<Arc<Outgoing>>,
    /// The ack deadline this client set on its build's consumer, set again if the server
    /// loses it.
    pub(crate) ack_wait: Duration,
    /// Bumped when the server has lost the pool's stream and buckets ([`Stores::keep`]): the
    /// watches start again from the new, empty, buckets.
    pub(crate) lost: tokio::sync::watch::Receiver<u64>,
}

impl Shared {
    /// Takes a task out of `pending` to complete it; [`completed`](Self::completed) must
    /// follow, once its future is done (`shutdown(wait)` waits for both).
    fn take(&self, task: u64) -> Option<Pending> {
        let mut state = self.state.lock();
        let pending = state.pending.remove(&task);
        if pending.is_some() {
            state.completing += 1;
        }
        pending
    }

    /// The future of a task from [`take`](Self::take) is done.
    pub(crate) fn completed(&self, n: usize) {
        let mut state = self.state.lock();
        state.completing -= n;
        if state.idle() {
            self.idle.notify_all();
        }
    }

    /// Publishes one task, retrying (same message id, so the server drops duplicates) until
    /// the server has it or nobody waits for it any more.
    pub(crate) async fn publish(self: Arc<Self>, out: Arc<Outgoing>) {
        let Some(payload) = self.message(&out).await else {
            return;
        };
        let first = self.send(&out, payload.clone()).await;
        self.settle(out, payload, first).await;
    }

    /// The task's message, its argument carried (uploaded to the object store first if it is
    /// large); `None` once nobody waits for the task any more.
    pub(crate) async fn message(&self, out: &Outgoing) -> Option<bytes::Bytes> {
        // Refusals by a connected server (a full JetStream store, say): the task fails after
        // a few, rather than upload again and again, each attempt leaving what it uploaded
        // until `result_ttl` and the publisher stuck on it.
        let wanted = || self.state.lock().pending.contains_key(&out.task);
        if !wanted() {
            return None;
        }
        let carried = match self
            .stores
            .carry(
                argument_object(&self.client, out.task),
                out.argument.clone(),
                out.large,
                UPLOAD_REFUSALS,
                wanted,
            )
            .await
        {
            Ok(carried) => carried?,
            Err(e) => {
                self.fail_upload(out, &e.to_string());
                return None;
            }
        };
        let message = TaskMsg {
            client: self.client.clone(),
            task: out.task,
            build: self.build.clone(),
            code: out.code,
            init: self.init,
            limit_ms: out
                .limit
                .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX).max(1)),
            max_deliveries: self.max_deliveries,
            argument: carried,
        };
        Some(to_bytes(&message))
    }

    /// Fails a task whose argument the server refused to store [`UPLOAD_REFUSALS`] times.
    fn fail_upload(&self, out: &Outgoing, why: &str) {
        let Some(pending) = self.take(out.task) else {
            return;
        };
        let size = crate::wire::size(&out.argument);
        let message = format!(
            "the server refused to store this task's argument ({size} bytes) {UPLOAD_REFUSALS} \
             times: {why}; its JetStream storage may be full (max_file_store), and what the \
             attempts uploaded stays there until the pool's result_ttl"
        );
        log::error!("cf-pool-cluster: task {} fails: {message}", out.task);
        pending.completion.finish(Err(TaskError::Codec {
            stage: CodecStage::SerializeArgument,
            message,
        }));
        self.completed(1);
    }

    /// Sends the task's message once, with its message id (the server drops a repeat). When
    /// this returns the message is queued on the connection, which keeps the order of sends;
    /// the server's ack is still to come.
    pub(crate) async fn send(
        &self,
        out: &Outgoing,
        payload: bytes::Bytes,
    ) -> Result<jetstream::context::PublishAckFuture, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}.{}", self.client, out.task).as_str(),
        );
        self.stores
            .js
            .publish_with_headers(self.names.task_subject(&self.build), headers, payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits for the server's ack of the `first` send, sending again until the server has the
    /// task or nobody waits for it any more.
    pub(crate) async fn settle(
        self: Arc<Self>,
        out: Arc<Outgoing>,
        payload: bytes::Bytes,
        first: Result<jetstream::context::PublishAckFuture, String>,
    ) {
        let mut delay = Duration::from_millis(50);
        let mut attempt = first;
        loop {
            let acked = match attempt {
                Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let Err(e) = acked else {
                return;
            };
            log::debug!("cf-pool-cluster: publishing task {} failed: {e}", out.task);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
            if !self.state.lock().pending.contains_key(&out.task) {
                return;
            }
            attempt = self.send(&out, payload.clone()).await;
        }
    }

    /// Redoes, each time the server has lost the pool's stream and buckets, what they held for
    /// this client: the build's consumer, with this client's ack deadline, and every task
    /// still waited for, published again in submission order (a large argument uploaded
    /// again). Queued tasks were lost with the stream; running ones lost their claim and
    /// would be lost if their node died, so they run again too, as after any redelivery
    /// (a result is still recorded once, and the first one wins).
    pub(crate) async fn renew(self: Arc<Self>) {
        let mut lost = self.lost.clone();
        while lost.changed().await.is_ok() {
            let mut delay = Duration::from_millis(250);
            while let Err(e) = self
                .stores
                .consumer(&self.names, &self.build, Some(self.ack_wait))
                .await
            {
                log::debug!("cf-pool-cluster: cannot create the task consumer again yet: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            let mut again: Vec<Arc<Outgoing>> = self
                .state
                .lock()
                .pending
                .values()
                .map(|p| Arc::clone(&p.outgoing))
                .collect();
            again.sort_unstable_by_key(|out| out.task);
            if !again.is_empty() {
                log::warn!(
                    "cf-pool-cluster: publishing {} unfinished task(s) again",
                    again.len()
                );
            }
            for out in again {
                // The publisher drops the repeat of a task the server has (the message id).
                let _ = self.outgoing.send(out);
            }
        }
    }

    /// Follows this client's claims and results, for the executor's whole life. A watch that
    /// fails (the server went away) is opened again, with history, so nothing recorded in the
    /// meantime is missed; entries for tasks no longer pending are ignored.
    pub(crate) async fn watch_results(self: Arc<Self>) {
        let filter = format!("{}.>", self.client);
        let mut lost = self.lost.clone();
        loop {
            lost.mark_unchanged();
            // With history from the start too: a result recorded before this watch exists (a
            // fast task submitted right after `build`) is delivered, not missed.
            let mut watch = match self.stores.state.watch_with_history(&filter).await {
                Ok(w) => w,
                Err(e) => {
                    log::debug!("cf-pool-cluster: cannot watch results: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    entry = watch.next() => match entry {
                        Some(Ok(entry)) => Arc::clone(&self).on_entry(entry),
                        Some(Err(e)) => {
                            log::debug!("cf-pool-cluster: result watch failed: {e}");
                            break;
                        }
                        None => break,
                    },
                    // The bucket this watch followed is gone: what nodes record from now on
                    // goes to a new one, whose entries the watch's position knows nothing of.
                    Ok(()) = lost.changed() => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn on_entry(self: Arc<Self>, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        let mut parts = entry.key.rsplitn(3, '.');
        let (Some(task), Some(kind)) = (parts.next(), parts.next()) else {
            return;
        };
        let Ok(task) = task.parse::<u64>() else {
            return;
        };
        match kind {
            "c" => {
                let Ok(Claim::Node { node, .. }) = from_bytes::<Claim>(&entry.value, "claim")
                else {
                    return;
                };
                let mut state = self.state.lock();
                if let Some(p) = state.pending.get_mut(&task) {
                    // A cancelled future stays cancelled; its result will be ignored.
                    p.completion.start();
                    p.node = Some(node);
                }
            }
            "r" => {
                // This client's own mark of a result it read (see below).
                if entry.value.is_empty() {
                    return;
                }
                let outcome = match from_bytes::<Outcome>(&entry.value, "result") {
                    Ok(o) => o,
                    Err(e) => Outcome {
                        node: "unknown".into(),
                        result: Err(TaskError::Codec {
                            stage: CodecStage::DeserializeResult,
                            message: format!(
                                "the record of the outcome on the server does not decode: {e}"
                            ),
                        }),
                        breaks_executor: false,
                    },
                };
                if outcome.breaks_executor {
                    if let Err(TaskError::Broken { reason }) = &outcome.result {
                        let mut state = self.state.lock();
                        if state.broken.is_none() {
                            log::error!(
                                "cf-pool-cluster: node {} reports: {reason}; the executor is \
                                 broken",
                                outcome.node
                            );
                            state.broken = Some(reason.clone());
                        }
                    }
                }
                if let Err(e @ (TaskError::WorkerDied { .. } | TaskError::Timeout { .. })) =
                    &outcome.result
                {
                    // The pid in the error is a pid on that node.
                    log::warn!(
                        "cf-pool-cluster: task {task} failed on node {}: {e}",
                        outcome.node
                    );
                }
                let Some(pending) = self.take(task) else {
                    // Nobody waits for it (cancelled after a node took it, or failed here for
                    // want of a node): no need to keep it until the bucket's age limit.
                    let mut blobs = vec![argument_object(&self.client, task)];
                    if let Ok(Carried::Blob(name)) = outcome.result {
                        blobs.push(name);
                    }
                    tokio::spawn(async move { self.forget(task, blobs).await });
                    return;
                };
                let shared = Arc::clone(&self);
                tokio::spawn(async move {
                    let mut blobs = Vec::new();
                    if pending.outgoing.large {
                        blobs.push(argument_object(&shared.client, task));
                    }
                    let result = match outcome.result {
                        Ok(carried) => {
                            if let Carried::Blob(name) = &carried {
                                blobs.push(name.clone());
                            }
                            shared.fetch_result(carried).await
                        }
                        Err(e) => Err(e),
                    };
                    pending.completion.finish(result);
                    shared.completed(1);
                    shared.forget(task, blobs).await;
                });
            }
            _ => {}
        }
    }

    /// The result a node recorded, read again a few times (8 s of pauses in all) if the server does
    /// not give it at first (it restarts, say): the task ran, and its result is not given up
    /// lightly.
    async fn fetch_result(&self, carried: Carried) -> Result<Encoded, TaskError> {
        let stage = CodecStage::DeserializeResult;
        let Carried::Blob(name) = carried else {
            return self
                .stores
                .fetch(carried, stage)
                .await
                .map_err(Fetch::into_error);
        };
        let mut pause = Duration::from_millis(250);
        let mut tries = 1;
        loop {
            match self.stores.fetch(Carried::Blob(name.clone()), stage).await {
                Ok(encoded) => return Ok(encoded),
                Err(Fetch::Unavailable(e)) if tries < FETCH_TRIES => {
                    log::debug!("cf-pool-cluster: reading a result failed, trying again: {e}");
                    tries += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => return Err(e.into_error()),
            }
        }
    }

    /// Clears the outcome of a task read (or that nobody waits for) and deletes its payloads
    /// in the object store: they need not wait for the bucket's age limit (under load they
    /// would fill the server's store within the hour). The record becomes an empty mark, which
    /// keeps the key, so a duplicate run still cannot record a second outcome; a duplicate
    /// that still needs the argument fails its fetch, and its result is refused anyway.
    async fn forget(&self, task: u64, blobs: Vec<String>) {
        let key = result_key(&self.client, task);
        if let Err(e) = self.stores.state.put(key, bytes::Bytes::new()).await {
            log::debug!("cf-pool-cluster: cannot clear the result of task {task}: {e}");
        }
        self.delete_objects(blobs).await;
    }

    /// Deletes payloads from the object store (a failure only leaves them to `result_ttl`).
    async fn delete_objects(&self, names: impl IntoIterator<Item = String>) {
        for name in names {
            if let Err(e) = self.stores.blobs.delete(name.as_str()).await {
                log::debug!("cf-pool-cluster: cannot delete payload {name}: {e}");
            }
        }
    }

    /// Cancels task `task` on the cluster: `true` if the cancel claim came first (no node
    /// will run it), `false` if a node claimed it already. While the server cannot be reached
    /// the claim is tried again (every second at most) until it can: callers that must not
    /// wait that long run this in the background or bound their wait. A connected server that
    /// refuses it [`CLAIM_REFUSALS`] times (a full store, say) is given up on: `true`, the
    /// future is cancelled, and a node that runs the task anyway has its result ignored.
    pub(crate) async fn cancel_remote(&self, task: u64) -> bool {
        let key = claim_key(&self.client, task);
        let mut delay = Duration::from_millis(100);
        let mut refused = 0;
        loop {
            match self
                .stores
                .state
                .create(&key, to_bytes(&Claim::Cancelled))
                .await
            {
                Ok(_) => return true,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let Ok(Some(entry)) = self.stores.state.entry(key.as_str()).await else {
                        return false;
                    };
                    match from_bytes::<Claim>(&entry.value, "claim") {
                        Ok(Claim::Cancelled) => return true,
                        // Given back by a node that could not run it: waiting for another
                        // node, as unstarted as before its first claim. A node that claims it
                        // meanwhile changes the revision, and this update fails.
                        Ok(Claim::Refused { .. }) => {
                            return self
                                .stores
                                .state
                                .update(key.as_str(), to_bytes(&Claim::Cancelled), entry.revision)
                                .await
                                .is_ok();
                        }
                        _ => return false,
                    }
                }
                Err(e) => {
                    log::debug!(
                        "cf-pool-cluster: cannot record the cancel of task {task} yet: {e}"
                    );
                    if self.stores.connected() {
                        refused += 1;
                        if refused >= CLAIM_REFUSALS {
                            return true;
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// A future was cancelled by its user: make sure no node starts it.
    pub(crate) async fn cancelled(self: Arc<Self>, task: u64) {
        let Some(pending) = self.take(task) else {
            return;
        };
        self.completed(1);
        // No node will run it: its argument in the object store is not needed any more. (If a
        // node took it first, its argument goes with its outcome, which nobody reads.)
        if self.cancel_remote(task).await && pending.outgoing.large {
            self.delete_objects([argument_object(&self.client, task)])
                .await;
        }
    }

    /// Fails every pending task when no node of this build has been seen for `node_timeout`
    /// (so futures never wait forever on a cluster that cannot run them), and announces this
    /// client so nodes of other builds can say why they ignore it.
    pub(crate) async fn watch_nodes(self: Arc<Self>) {
        let announce = to_bytes(&ClientInfo {
            name: self.client.clone(),
            build: self.build.clone(),
        });
        let mut alive: HashMap<String, (NodeInfo, Instant)> = HashMap::new();
        let mut last_seen = Instant::now();
        let mut offline_since = None;
        // The store generation (see `lost`) this client last announced itself in.
        let mut announced = None;
        let mut lost = self.lost.clone();
        loop {
            let generation = *lost.borrow_and_update();
            if announced != Some(generation)
                && self
                    .stores
                    .registry
                    .put(format!("c.{}", self.client), announce.clone())
                    .await
                    .is_ok()
            {
                announced = Some(generation);
            }
            let mut watch = match self.stores.registry.watch_with_history("n.>").await {
                Ok(w) => w,
                Err(e) => {
                    log::debug!("cf-pool-cluster: cannot watch nodes: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    self.check_alive(&alive, &mut last_seen, &mut offline_since);
                    continue;
                }
            };
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    entry = watch.next() => match entry {
                        Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                            if let Ok(info) = from_bytes::<NodeInfo>(&entry.value, "node entry") {
                                alive.insert(entry.key.clone(), (info, Instant::now()));
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                    Ok(()) = lost.changed() => break,
                    _ = tick.tick() => self.check_alive(&alive, &mut last_seen, &mut offline_since),
                }
            }
        }
    }

    fn check_alive(
        self: &Arc<Self>,
        nodes: &HashMap<String, (NodeInfo, Instant)>,
        last_seen: &mut Instant,
        offline_since: &mut Option<Instant>,
    ) {
        if !self.stores.connected() {
            // Cut off from the server, the client cannot see heartbeats: that is no evidence
            // that the nodes are gone. The timeout counts only while connected, and only once
            // the client had a moment to see heartbeats again (its watch of the registry
            // resumes after the connection does: under load that took over 3 s, and a short
            // node_timeout failed tasks the live nodes were about to run).
            *last_seen = Instant::now() + RECONNECT_CATCH_UP;
            let offline = *offline_since.get_or_insert_with(Instant::now);
            // Except once the executor is shut down: then its owner waits for the end
            // (`shutdown(wait)`, a drop), and a server that never comes back must not make
            // that wait last for ever.
            if offline.elapsed() >= self.node_timeout && self.state.lock().shutdown {
                self.fail_pending(
                    &format!(
                        "the executor was shut down while cut off from the server, and has not \
                         reached it for {:?} (node_timeout); what became of the task is \
                         unknown: it may have run",
                        self.node_timeout
                    ),
                    Duration::ZERO,
                );
            }
            return;
        }
        *offline_since = None;
        let fresh = |seen: &Instant| seen.elapsed() < self.node_timeout;
        if nodes
            .values()
            .any(|(info, seen)| info.build == self.build && fresh(seen))
        {
            *last_seen = Instant::now();
            return;
        }
        if last_seen.elapsed() < self.node_timeout {
            return;
        }
        let others: Vec<String> = nodes
            .values()
            .filter(|(_, seen)| fresh(seen))
            .map(|(info, _)| format!("{} (build {})", info.name, info.build))
            .collect();
        let reason = format!(
            "no node of this program's build ({}) has been alive for {:?}{}; start one from \
             this same executable (cf_pool_cluster::node), pool {}",
            self.build,
            self.node_timeout,
            if others.is_empty() {
                String::new()
            } else {
                format!(
                    "; nodes of other builds, which cannot run its tasks: {}",
                    others.join(", ")
                )
            },
            self.names.pool
        );
        self.fail_pending(&reason, self.node_timeout);
    }

    /// Fails the pending tasks submitted at least `age` ago with `reason`, and makes sure no
    /// node runs them later.
    fn fail_pending(self: &Arc<Self>, reason: &str, age: Duration) {
        let failed: Vec<(u64, Pending)> = {
            let mut state = self.state.lock();
            let overdue: Vec<u64> = state
                .pending
                .iter()
                .filter(|(_, p)| p.submitted.elapsed() >= age)
                .map(|(task, _)| *task)
                .collect();
            let failed: Vec<_> = overdue
                .into_iter()
                .filter_map(|task| state.pending.remove(&task).map(|p| (task, p)))
                .collect();
            state.completing += failed.len();
            failed
        };
        if failed.is_empty() {
            // Tasks wait for a node, none of them long enough yet to fail: looked at again on
            // the next tick, and said once when some do fail.
            return;
        }
        log::error!(
            "cf-pool-cluster: failing {} pending task(s): {reason}",
            failed.len()
        );
        let n = failed.len();
        for (task, pending) in failed {
            // The node that claimed it, if one did before going away.
            pending.completion.finish(Err(TaskError::NodeFailed {
                node: pending.node.clone(),
                deliveries: None,
                reason: reason.to_owned(),
            }));
            // A node started later must not run it: nobody waits for it any more.
            let shared = Arc::clone(self);
            tokio::spawn(async move { shared.cancel_remote(task).await });
        }
        self.completed(n);
    }
}
