//! `--backend cluster`: the demos on a `ClusterExecutor`, with local nodes the demo starts
//! itself from its own executable (a node must be the client's very build).
//!
//! A demo binary calls [`serve_if_node`] first: started by [`LocalCluster::start`] it is a
//! node, serving until its parent goes away. The client side is the ordinary
//! `Pool::with_workers(Backend::Cluster, n)`, which connects to the server named by
//! `CF_CLUSTER_URL` and the pool named by `CF_CLUSTER_POOL`; [`LocalCluster::start`] sets both.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use concurrent_futures::{
    cluster_node, ClusterExecutor, Executor, Future, CLUSTER_URL_ENV, DEFAULT_CLUSTER_URL,
};

/// Set in the environment of the nodes [`LocalCluster`] starts: [`serve_if_node`] then ends
/// the node when its standard input closes, that is when the demo that started it ends, even
/// by `SIGKILL`.
const LIFELINE_ENV: &str = "CF_DEMOS_NODE_LIFELINE";

/// The pool the demos' clients and nodes use on the server (its stream and buckets are
/// `CF_cf-demos_TASKS`, `cf_cf-demos_*`).
pub const DEMO_POOL: &str = "cf-demos";

/// How many nodes [`LocalCluster::start`] starts.
pub const NODES: usize = 2;

/// Worker processes per node: 6 in all, enough for the largest pool a section asks for
/// (section 5's one worker for each of its 5 tasks).
pub const NODE_WORKERS: usize = 3;

/// How long [`LocalCluster::start`] waits for its nodes to serve.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Serves as a cluster node if this process was started as one (`CF_CLUSTER_NODE` set), and
/// never returns then; returns at once otherwise. The first call in a demo's `main`.
pub fn serve_if_node() {
    if std::env::var_os(cluster_node::NODE_ENV).is_none() {
        return;
    }
    if std::env::var_os(LIFELINE_ENV).is_some() {
        std::thread::spawn(|| {
            // Nothing is ever written: this returns when the demo that started us is gone.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
    }
    // Windows' standard library cannot name a worker's parent: tell the workers who we are.
    #[cfg(windows)]
    std::env::set_var(NODE_PID_ENV, std::process::id().to_string());
    cluster_node::run_if_requested();
}

/// The server URL for `--backend cluster`: `flag` if given, else `$CF_CLUSTER_URL`, else
/// `$CF_NATS_URL` (the server `bash .ci/nats` starts), else `nats://127.0.0.1:4222`.
#[must_use]
pub fn cluster_url(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var(CLUSTER_URL_ENV).ok())
        .or_else(|| std::env::var("CF_NATS_URL").ok())
        .unwrap_or_else(|| DEFAULT_CLUSTER_URL.to_owned())
}

/// Nodes started from this executable, serving [`DEMO_POOL`] on one server; killed on drop.
#[derive(Debug)]
pub struct LocalCluster {
    url: String,
    nodes: Vec<Child>,
}

/// The node's pid: a task that returns it tells which node ran it.
fn node_of_worker(pause_ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(pause_ms));
    parent_id()
}

#[cfg(unix)]
fn parent_id() -> u32 {
    std::os::unix::process::parent_id()
}

/// Windows' standard library has no parent pid: the node passes its own to its workers (see
/// `NODE_PID_ENV`). The cluster demos are built for Windows but have not run there.
#[cfg(windows)]
fn parent_id() -> u32 {
    std::env::var(NODE_PID_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Set by a node for its workers on Windows (which inherit the node's environment).
#[cfg(windows)]
const NODE_PID_ENV: &str = "CF_DEMOS_NODE_PID";

impl LocalCluster {
    /// Checks the server at `url`, points `Pool::with_workers(Backend::Cluster, n)` at it and
    /// at [`DEMO_POOL`], starts [`NODES`] nodes of [`NODE_WORKERS`] workers from this
    /// executable (with `node_args` as their arguments: none for a demo binary, the node
    /// entry's test name for a test), and returns once every node has run a task.
    ///
    /// # Errors
    ///
    /// No usable server at `url` (the message says how to start one), a node that could not
    /// be started, or nodes that did not all serve within a minute.
    pub fn start(url: &str, node_args: &[&str]) -> Result<LocalCluster, String> {
        // Set before any thread of ours exists: the sections build their pools from these.
        std::env::set_var(CLUSTER_URL_ENV, url);
        std::env::set_var(cluster_node::POOL_ENV, DEMO_POOL);
        let client = ClusterExecutor::builder(url)
            .pool(DEMO_POOL)
            .connect_timeout(Duration::from_secs(5))
            .node_timeout(READY_WITHIN)
            .build()
            .map_err(|e| no_server(url, &e.to_string()))?;
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this executable to start nodes from: {e}"))?;
        let mut cluster = LocalCluster {
            url: url.to_owned(),
            nodes: Vec::new(),
        };
        for _ in 0..NODES {
            let node = Command::new(&exe)
                .args(node_args)
                .env(cluster_node::NODE_ENV, url)
                .env(cluster_node::WORKERS_ENV, NODE_WORKERS.to_string())
                .env(cluster_node::POOL_ENV, DEMO_POOL)
                .env(LIFELINE_ENV, "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start a node ({}): {e}", exe.display()))?;
            cluster.nodes.push(node);
        }
        cluster.wait_ready(&client)?;
        Ok(cluster)
    }

    /// The server the nodes serve.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The nodes' process ids.
    #[must_use]
    pub fn node_pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Child::id).collect()
    }

    /// Sends rounds of short tasks, one per worker of the whole cluster, until every node has
    /// run one (which also starts their worker processes).
    fn wait_ready(&mut self, client: &ClusterExecutor) -> Result<(), String> {
        let expected: BTreeSet<u32> = self.node_pids().into_iter().collect();
        let mut seen = BTreeSet::new();
        let start = Instant::now();
        while seen != expected {
            for node in &mut self.nodes {
                if let Ok(Some(status)) = node.try_wait() {
                    return Err(format!(
                        "a local node (pid {}) ended at start ({status}); its messages are above",
                        node.id()
                    ));
                }
            }
            let left = READY_WITHIN.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "the local nodes did not all serve within {READY_WITHIN:?} (nodes {expected:?}, \
                     served: {seen:?})"
                ));
            }
            let round: Vec<Future<u32>> = (0..NODES * NODE_WORKERS)
                .map(|_| client.submit(node_of_worker, 50))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cannot submit to the cluster: {e}"))?;
            for f in &round {
                match f.result_timeout(left) {
                    Ok(pid) => {
                        seen.insert(*pid);
                    }
                    Err(e) => return Err(format!("the local nodes did not serve: {e}")),
                }
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    /// Kills the nodes (their workers follow them) and reaps them.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// The error for a server that cannot be used, with the ways to start one.
fn no_server(url: &str, error: &str) -> String {
    format!(
        "--backend cluster needs a NATS server with JetStream (2.10 or newer) at {url}, and \
         there is none it can use: {error}\n\
         Start one, e.g. `nats-server -js` (listens on {DEFAULT_CLUSTER_URL}), or run the demo \
         through `bash .ci/nats <command>`, which installs nats-server 2.15.1 into target/nats \
         and starts it for <command> (its URL in CF_NATS_URL, which the demos read); another \
         server: --cluster-url nats://host:port or {CLUSTER_URL_ENV}. The demo starts its own \
         {NODES} nodes from this executable."
    )
}
