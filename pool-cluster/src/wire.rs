//! What travels through the server: names of the stream, buckets and subjects, the task
//! message, the claim and result records, the node registry entry, and the store helpers that
//! both sides use. Every record is `postcard`; a record that does not decode is an error for
//! the task concerned, never a panic.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};
use cf_executor_api::{Buffer, CodecStage, TaskError};
use cf_pool_proc::transport::Encoded;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// Payloads (argument or result, buffers included) larger than this go through the object
/// store instead of the message itself (the server's default message limit is 1 MiB), or
/// less on a server whose limit is lower (see [`Stores::limits`]).
pub(crate) const INLINE_MAX: usize = 256 * 1024;

/// The chunk size of payloads in the object store, at most (see [`Stores::limits`]).
const BLOB_CHUNK: usize = 768 * 1024;

/// Room a message keeps beside its payload or chunk: the record around it, the headers.
const ENVELOPE: usize = 4 * 1024;

/// How often a node writes its registry entry.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long the server keeps a registry entry that is no longer refreshed.
const REGISTRY_AGE: Duration = Duration::from_secs(60);

/// How often a client and a node check that the server still has the pool's stream (see
/// [`Stores::keep`]).
const STORE_CHECK: Duration = Duration::from_secs(2);

/// The names one pool uses on the server. `pool` is checked by [`Names::new`].
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) pool: String,
}

impl Names {
    /// `pool` must be 1..=32 characters of `[A-Za-z0-9_-]` (it is part of subjects and bucket
    /// names).
    pub(crate) fn new(pool: &str) -> Result<Self, String> {
        let ok = !pool.is_empty()
            && pool.len() <= 32
            && pool
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(Names {
                pool: pool.to_owned(),
            })
        } else {
            Err(format!(
                "pool name {pool:?} must be 1 to 32 characters of A-Z, a-z, 0-9, '_' and '-' \
                 (it becomes part of subject and bucket names)"
            ))
        }
    }

    /// The work-queue stream holding every build's tasks.
    pub(crate) fn stream(&self) -> String {
        format!("CF_{}_TASKS", self.pool)
    }

    /// The subject tasks of `build` are published on: a node of another build never even
    /// receives them.
    pub(crate) fn task_subject(&self, build: &str) -> String {
        format!("cf.{}.task.{build}", self.pool)
    }

    /// The durable consumer the nodes of `build` share.
    pub(crate) fn consumer(&self, build: &str) -> String {
        format!("run_{build}")
    }

    /// Claims and results, keyed `{client}.c.{task}` and `{client}.r.{task}`.
    pub(crate) fn state_bucket(&self) -> String {
        format!("cf_{}_state", self.pool)
    }

    /// Node registry (`n.{build}.{node}`) and client announcements (`c.{client}`).
    pub(crate) fn registry_bucket(&self) -> String {
        format!("cf_{}_registry", self.pool)
    }

    /// Large payloads.
    pub(crate) fn blob_bucket(&self) -> String {
        format!("cf_{}_blobs", self.pool)
    }
}

pub(crate) fn claim_key(client: &str, task: u64) -> String {
    format!("{client}.c.{task}")
}

pub(crate) fn result_key(client: &str, task: u64) -> String {
    format!("{client}.r.{task}")
}

/// The object-store name of a task's large argument.
pub(crate) fn argument_object(client: &str, task: u64) -> String {
    format!("{client}.{task}.argument")
}

/// The bytes `payload` carries, its attached buffers included.
pub(crate) fn size(payload: &Encoded) -> usize {
    payload.bytes.len() + payload.buffers.iter().map(|b| b.len()).sum::<usize>()
}

/// A payload as carried: inline, or the name of an object-store entry holding it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Carried {
    Inline(Wire),
    Blob(String),
}

/// [`Encoded`] on the wire: the bytes and the attached buffers' bytes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Wire {
    #[serde(with = "serde_bytes")]
    pub(crate) bytes: Vec<u8>,
    pub(crate) buffers: Vec<serde_bytes::ByteBuf>,
}

impl Wire {
    pub(crate) fn from_encoded(e: Encoded) -> Self {
        Wire {
            bytes: e.bytes,
            buffers: e
                .buffers
                .iter()
                .map(|b| serde_bytes::ByteBuf::from(b.to_vec()))
                .collect(),
        }
    }

    pub(crate) fn into_encoded(self) -> Encoded {
        Encoded {
            bytes: self.bytes,
            buffers: self
                .buffers
                .into_iter()
                .map(|b| Buffer::from(b.into_vec()))
                .collect(),
        }
    }
}

/// One task, as published on the task subject.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TaskMsg {
    /// The submitting executor's id (its keys in the state bucket start with it).
    pub(crate) client: String,
    pub(crate) task: u64,
    /// The build the code offsets belong to; a node of another build refuses the task.
    pub(crate) build: String,
    pub(crate) code: i64,
    /// The worker initializer's code, if the executor has one.
    pub(crate) init: Option<i64>,
    /// Kill the worker running it after this long.
    pub(crate) limit_ms: Option<u64>,
    /// Deliveries after which the task fails instead of running again.
    pub(crate) max_deliveries: u32,
    pub(crate) argument: Carried,
}

/// Who runs a task (or that it was cancelled first): the first `create` of the claim key wins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Claim {
    Node {
        node: String,
        delivery: u32,
    },
    Cancelled,
    /// The node that claimed this delivery could not run it (its machine refused it a worker
    /// process, say) and gave it back to the server for another node.
    Refused {
        node: String,
        delivery: u32,
        reason: String,
    },
}

/// A task's outcome, recorded once under its result key.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) node: String,
    pub(crate) result: Result<Carried, TaskError>,
    /// The node's local pool is broken (its initializer failed): the client breaks too.
    pub(crate) breaks_executor: bool,
}

/// A node's registry entry, rewritten every [`HEARTBEAT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeInfo {
    pub(crate) name: String,
    pub(crate) build: String,
    pub(crate) workers: usize,
}

/// A client's announcement, so nodes of other builds can say why they do not run its tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClientInfo {
    pub(crate) name: String,
    pub(crate) build: String,
}

pub(crate) fn to_bytes<T: Serialize>(value: &T) -> bytes::Bytes {
    bytes::Bytes::from(postcard::to_allocvec(value).expect("wire records always encode"))
}

pub(crate) fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable {what} ({e})"))
}

/// Everything on the server one pool uses.
#[derive(Clone)]
pub(crate) struct Stores {
    pub(crate) js: jetstream::Context,
    pub(crate) stream: stream::Stream,
    pub(crate) state: kv::Store,
    pub(crate) registry: kv::Store,
    pub(crate) blobs: object_store::ObjectStore,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Stores {
    /// Opens (or creates) the pool's stream and buckets. `result_ttl` is how long recorded
    /// claims and results are kept (and so how long a late duplicate is recognised).
    pub(crate) async fn open(
        js: jetstream::Context,
        names: &Names,
        result_ttl: Duration,
    ) -> Result<Stores, BoxError> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: names.stream(),
                subjects: vec![format!("cf.{}.task.>", names.pool)],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("stream {}: {e}", names.stream()))?;
        let state = open_kv(
            &js,
            kv::Config {
                bucket: names.state_bucket(),
                history: 1,
                max_age: result_ttl,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("bucket {}: {e}", names.state_bucket()))?;
        let registry = open_kv(
            &js,
            kv::Config {
                bucket: names.registry_bucket(),
                history: 1,
                max_age: REGISTRY_AGE,
                storage: stream::StorageType::File,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("bucket {}: {e}", names.registry_bucket()))?;
        let blobs = match js.get_object_store(names.blob_bucket()).await {
            Ok(store) => store,
            Err(_) => match js
                .create_object_store(object_store::Config {
                    bucket: names.blob_bucket(),
                    max_age: result_ttl,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
            {
                Ok(store) => store,
                // Created by someone else meanwhile?
                Err(e) => js
                    .get_object_store(names.blob_bucket())
                    .await
                    .map_err(|_| format!("object store {}: {e}", names.blob_bucket()))?,
            },
        };
        Ok(Stores {
            js,
            stream,
            state,
            registry,
            blobs,
        })
    }

    /// Checks every [`STORE_CHECK`] that the server still has the stream this `Stores` was
    /// opened on, for as long as `lost` has a receiver. A server restarted without its store
    /// (a container with no volume) has lost the stream, the buckets and the object store;
    /// then this creates them again (the handles here name them, so they serve again as they
    /// are) and bumps `lost`, so its owner can redo what the server forgot: a client publishes
    /// its unfinished tasks again and watches anew, a node opens its consumer again.
    ///
    /// The stream's creation time tells the stream opened here from one created again by
    /// another client or node, which comes up empty too. Only the server's word that the
    /// stream is not there counts: an unanswered request or a server still recovering its
    /// streams says nothing, and creating the stream then would hide the one it recovers.
    pub(crate) async fn keep(
        self,
        names: Names,
        result_ttl: Duration,
        lost: tokio::sync::watch::Sender<u64>,
    ) {
        let mut known = self.stream.cached_info().created;
        loop {
            tokio::time::sleep(STORE_CHECK).await;
            if lost.is_closed() {
                return;
            }
            match self.js.get_stream(names.stream()).await {
                Ok(stream) if stream.cached_info().created == known => continue,
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    log::debug!("cf-pool-cluster: cannot check the pool's stream: {e}");
                    continue;
                }
            }
            match Stores::open(self.js.clone(), &names, result_ttl).await {
                Ok(renewed) => {
                    log::warn!(
                        "cf-pool-cluster: the server lost pool {}'s stream and buckets \
                         (restarted without its store?); they are created again, and what they \
                         held is being redone",
                        names.pool
                    );
                    known = renewed.stream.cached_info().created;
                    lost.send_modify(|generation| *generation += 1);
                }
                Err(e) => log::warn!(
                    "cf-pool-cluster: the server lost pool {}'s stream; cannot create it \
                     again yet: {e}",
                    names.pool
                ),
            }
        }
    }

    /// The consumer the nodes of `build` pull from, created if missing. With `ack_wait`
    /// (a client's setting), an existing consumer with another deadline is updated to it;
    /// without (a node), the consumer is taken as it is, or created with the default.
    pub(crate) async fn consumer(
        &self,
        names: &Names,
        build: &str,
        ack_wait: Option<Duration>,
    ) -> Result<consumer::PullConsumer, BoxError> {
        let name = names.consumer(build);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: names.task_subject(build),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ack_wait.unwrap_or(crate::DEFAULT_ACK_WAIT),
            // Redelivery is bounded per task (TaskMsg::max_deliveries), so the failure is
            // recorded for the client even when it is offline.
            max_deliver: -1,
            max_ack_pending: -1,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = self
            .stream
            .get_or_create_consumer(&name, config.clone())
            .await?;
        match ack_wait {
            Some(wait) if consumer.cached_info().config.ack_wait != wait => {
                log::info!(
                    "cf-pool-cluster: setting the ack deadline of consumer {name} to {wait:?} \
                     (was {:?})",
                    consumer.cached_info().config.ack_wait
                );
                Ok(self.stream.update_consumer(config).await?)
            }
            _ => Ok(consumer),
        }
    }

    /// The largest payload carried inline, and the object store's chunk size, for the server
    /// connected to: its message limit (`max_payload`, 1 MiB by default) bounds both. A server
    /// configured lower than the defaults here needs smaller ones: a message over its limit
    /// is refused, and a refused record would be retried forever.
    pub(crate) fn limits(&self) -> (usize, usize) {
        let max_payload = self.js.client().server_info().max_payload;
        let room = max_payload
            .saturating_sub(ENVELOPE)
            .max(max_payload / 2)
            .max(1);
        (INLINE_MAX.min(room), BLOB_CHUNK.min(room))
    }

    /// Whether [`Stores::carry`] puts `payload` in the object store.
    pub(crate) fn is_large(&self, payload: &Encoded) -> bool {
        size(payload) > self.limits().0
    }

    /// Carries `payload` inline, or through the object store under `name` when `large` (as
    /// [`Stores::is_large`] said once for it: whoever decides keeps the same answer, for the
    /// upload and for deleting the object later).
    ///
    /// An upload is tried `tries` times at most while the server is connected and refuses it
    /// (its store is full, or it lost the object store and nobody has created it again yet),
    /// the pause between tries doubling from 250 ms up to 4 s (4 s of pauses for 5 tries, 16 s
    /// for 8, besides the tries themselves: a server that has just restarted and still
    /// recovers its streams is not taken for a full one); while
    /// the server is away, tries do not count. `Ok(None)`: `wanted` said, before a retry, that
    /// nobody needs the payload any more.
    pub(crate) async fn carry(
        &self,
        name: String,
        payload: Encoded,
        large: bool,
        tries: u32,
        wanted: impl Fn() -> bool,
    ) -> Result<Option<Carried>, BoxError> {
        let wire = Wire::from_encoded(payload);
        if !large {
            return Ok(Some(Carried::Inline(wire)));
        }
        let bytes = postcard::to_allocvec(&wire)?;
        let mut refused = 0;
        let mut pause = Duration::from_millis(250);
        loop {
            let meta = object_store::ObjectMetadata {
                name: name.clone(),
                // The library's default (128 KiB) costs a round trip per chunk; a chunk must
                // stay under the server's message limit (1 MiB by default).
                chunk_size: Some(self.limits().1),
                ..Default::default()
            };
            let Err(e) = self.blobs.put(meta, &mut bytes.as_slice()).await else {
                return Ok(Some(Carried::Blob(name)));
            };
            if self.connected() {
                refused += 1;
            }
            if refused >= tries {
                return Err(e.into());
            }
            log::debug!("cf-pool-cluster: cannot store payload {name} yet: {e}");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(4));
            if !wanted() {
                return Ok(None);
            }
        }
    }

    /// Whether the connection to the server is up: a request that failed while it is was
    /// refused by the server, not lost on the way.
    pub(crate) fn connected(&self) -> bool {
        self.js.client().connection_state() == async_nats::connection::State::Connected
    }

    /// The payload `carried` refers to. A payload in the object store that the server does
    /// not give (it is away or restarting, lost its store, or the object expired), or that
    /// stalls [`FETCH_STALL`] mid-way, is [`Fetch::Unavailable`]: another try, or another
    /// node, may get it.
    pub(crate) async fn fetch(
        &self,
        carried: Carried,
        stage: CodecStage,
    ) -> Result<Encoded, Fetch> {
        let wire = match carried {
            Carried::Inline(wire) => wire,
            Carried::Blob(name) => {
                let failed = |e: String| TaskError::Codec {
                    stage,
                    message: format!("cannot read payload {name} from the object store: {e}"),
                };
                // async-nats's object reader panics on some server errors (it unwraps a
                // consumer it could not create while the server restarts): on a task of its
                // own, such a panic fails this read, not the thread that asked.
                let bytes = match tokio::spawn(read_blob(self.blobs.clone(), name.clone())).await {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(e)) => return Err(Fetch::Unavailable(failed(e))),
                    Err(e) => {
                        return Err(Fetch::Unavailable(failed(format!(
                            "the object store's reader failed ({e})"
                        ))))
                    }
                };
                postcard::from_bytes(&bytes)
                    .map_err(|e| Fetch::Undecodable(failed(e.to_string())))?
            }
        };
        Ok(wire.into_encoded())
    }
}

/// Why [`Stores::fetch`] has no payload.
#[derive(Debug)]
pub(crate) enum Fetch {
    /// The server did not give it (see [`Stores::fetch`]); another try may.
    Unavailable(TaskError),
    /// It arrived and does not decode.
    Undecodable(TaskError),
}

impl Fetch {
    pub(crate) fn into_error(self) -> TaskError {
        match self {
            Fetch::Unavailable(e) | Fetch::Undecodable(e) => e,
        }
    }
}

/// How long reading a payload from the object store may receive nothing before it is given
/// up: a request lost while the server restarted is answered by nobody.
const FETCH_STALL: Duration = Duration::from_secs(30);

/// Reads object `name` whole, giving up when the server sends nothing for [`FETCH_STALL`].
async fn read_blob(blobs: object_store::ObjectStore, name: String) -> Result<Vec<u8>, String> {
    let stalled = || format!("the server sent nothing for {FETCH_STALL:?}");
    let mut object = tokio::time::timeout(FETCH_STALL, blobs.get(name.as_str()))
        .await
        .map_err(|_| stalled())?
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    loop {
        bytes.reserve(64 * 1024);
        let read = tokio::time::timeout(FETCH_STALL, object.read_buf(&mut bytes))
            .await
            .map_err(|_| stalled())?
            .map_err(|e| e.to_string())?;
        if read == 0 {
            return Ok(bytes);
        }
    }
}

/// The server answered that the stream does not exist.
fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

async fn open_kv(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, BoxError> {
    if let Ok(store) = js.get_key_value(config.bucket.as_str()).await {
        return Ok(store);
    }
    let bucket = config.bucket.clone();
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Created by someone else meanwhile?
        Err(e) => Ok(js.get_key_value(bucket).await.map_err(|_| e)?),
    }
}
