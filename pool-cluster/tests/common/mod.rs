//! Test fixtures: a private `nats-server` with JetStream per test (free port, temporary store),
//! nodes started from this test binary, and a cluster executor over both.
//!
//! The server binary is the first of `$CF_NATS_SERVER`, `target/nats/nats-server` (where
//! `.ci/nats` installs 2.15.1), `nats-server` on the `PATH` or in `/usr/sbin` that is 2.10 or
//! newer. Without one, a test prints why and passes, unless `CF_NATS_REQUIRED=1` (set by
//! `.ci/nats`, which installs the server), in which case it fails.
//!
//! Every test binary that uses nodes must contain the entry test:
//!
//! ```ignore
//! #[test]
//! fn node_entry() {
//!     common::node_entry();
//! }
//! ```
#![allow(dead_code, unreachable_pub)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cf_pool_cluster::{
    ClusterBuilder, ClusterExecutor, Executor, Future, Payload, SubmitError, Task,
};

/// Any wait in a test longer than this is a hang.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Serves as a node when started by [`Node::start`]; a no-op test otherwise.
pub fn node_entry() {
    if std::env::var(cf_pool_cluster::node::NODE_ENV).is_ok() {
        let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .try_init();
        cf_pool_cluster::node::run_if_requested();
    }
}

/// The first server binary that exists and is new enough (2.10+): `$CF_NATS_SERVER`, then
/// `target/nats/nats-server` (where `.ci/nats` installs it), then the `PATH` and `/usr/sbin`.
/// `Err` says what was found instead.
fn server_binary() -> Result<PathBuf, String> {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nats/nats-server");
    let path = std::env::var("PATH").unwrap_or_default();
    let candidates = std::env::var_os("CF_NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain([installed])
        .chain(std::env::split_paths(&path).map(|d| d.join("nats-server")))
        .chain([PathBuf::from("/usr/sbin/nats-server")]);
    let mut too_old = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for candidate in candidates.filter(|p| p.is_file()) {
        if !seen.insert(std::fs::canonicalize(&candidate).unwrap_or_else(|_| candidate.clone())) {
            continue;
        }
        match server_version(&candidate) {
            Some((major, minor)) if (major, minor) >= (2, 10) => return Ok(candidate),
            found => too_old.push(format!("{} ({found:?})", candidate.display())),
        }
    }
    Err(if too_old.is_empty() {
        "no nats-server binary".to_owned()
    } else {
        format!(
            "only nats-server binaries older than 2.10: {}",
            too_old.join(", ")
        )
    })
}

/// `(major, minor)` from `nats-server --version` ("nats-server: v2.15.1").
fn server_version(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().last()?.trim_start_matches('v');
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// A private JetStream server; killed (and its store removed) on drop.
pub struct Server {
    binary: PathBuf,
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
    /// A configuration file (`-c`), for a server with limits.
    config: Option<PathBuf>,
}

impl Server {
    /// Starts a server, or `None` (after saying why) when there is no server binary and
    /// `CF_NATS_REQUIRED` is not set.
    pub fn start() -> Option<Server> {
        Self::start_with(None)
    }

    /// A server with this configuration file text (e.g. `jetstream { max_file_store: 64MB }`),
    /// or `None` as [`start`](Self::start) says.
    pub fn start_with(config: Option<&str>) -> Option<Server> {
        let binary = match server_binary() {
            Ok(binary) => binary,
            Err(why) => {
                assert!(
                    std::env::var("CF_NATS_REQUIRED").is_err(),
                    "CF_NATS_REQUIRED is set but there is {why} (run the tests through \
                     `bash .ci/nats`, or set CF_NATS_SERVER to a nats-server 2.10+)"
                );
                eprintln!(
                    "SKIPPED: cluster tests need nats-server 2.10+ with JetStream, and there is \
                     {why}; run them through `bash .ci/nats`, e.g. `bash .ci/nats cargo test -p \
                     cf-pool-cluster` (installs 2.15.1), or set CF_NATS_SERVER"
                );
                return None;
            }
        };
        let port = free_port();
        let store = std::env::temp_dir().join(format!(
            "cf-cluster-test-{}-{port}-{}",
            std::process::id(),
            nanos()
        ));
        std::fs::create_dir_all(&store).expect("create the server's store directory");
        let config = config.map(|text| {
            let path = store.join("server.conf");
            std::fs::write(&path, text).expect("write the server's configuration");
            path
        });
        let mut server = Server {
            binary,
            port,
            store,
            child: None,
            config,
        };
        server.restart();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL: the harshest case; the store is on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with an empty store, as a server in a
    /// container without a volume comes back: every stream and bucket is gone.
    pub fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.store.join("jetstream"));
        self.restart();
    }

    /// Starts the server again on the same port and store, and waits until it listens.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.store.join("server.log")).expect("server log");
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < LIMIT,
                "nats-server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A node: this test binary started as one; killed with SIGKILL on drop.
pub struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    /// A node of `pool` with `workers` workers; `build_suffix` makes it advertise another build.
    pub fn start(url: &str, pool: &str, workers: usize, build_suffix: Option<&str>) -> Node {
        let log = std::env::temp_dir().join(format!(
            "cf-cluster-node-{}-{}.log",
            std::process::id(),
            nanos()
        ));
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command
            .args(["node_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(cf_pool_cluster::node::NODE_ENV, url)
            .env(cf_pool_cluster::node::WORKERS_ENV, workers.to_string())
            .env(cf_pool_cluster::node::POOL_ENV, pool)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("node log"));
        match build_suffix {
            Some(s) => command.env(cf_pool_cluster::node::TEST_BUILD_SUFFIX_ENV, s),
            None => command.env_remove(cf_pool_cluster::node::TEST_BUILD_SUFFIX_ENV),
        };
        let child = command.spawn().expect("start a node");
        Node { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the node's log contains `text`.
    pub fn wait_log(&self, text: &str) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < LIMIT,
                "the node's log never said {text:?}; it says:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An executor with its nodes and server; dropped in that order (the executor waits for its
/// work first).
pub struct Cluster {
    pub executor: ClusterExecutor,
    pub nodes: Vec<Node>,
    pub server: Server,
    pub pool: String,
}

impl Cluster {
    /// A server, nodes with these worker counts, and an executor built by `configure`.
    pub fn start(
        workers: &[usize],
        configure: impl FnOnce(ClusterBuilder) -> ClusterBuilder,
    ) -> Option<Cluster> {
        let server = Server::start()?;
        let pool = "test".to_owned();
        let nodes: Vec<Node> = workers
            .iter()
            .map(|&n| Node::start(&server.url(), &pool, n, None))
            .collect();
        let executor = configure(
            ClusterExecutor::builder(&server.url())
                .pool(&pool)
                .node_timeout(LIMIT),
        )
        .build()
        .expect("build the cluster executor");
        // Every node takes tasks before the scenario starts, so a scenario's own deadlines (a 5 s
        // map timeout) count from a ready cluster, not from processes still starting.
        for node in &nodes {
            node.wait_log("taking tasks");
        }
        Some(Cluster {
            executor,
            nodes,
            server,
            pool,
        })
    }

    pub fn add_node(&mut self, workers: usize) {
        let node = Node::start(&self.server.url(), &self.pool, workers, None);
        self.nodes.push(node);
    }
}

impl Executor for Cluster {
    fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        self.executor.submit(f, arg)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.executor.shutdown(wait, cancel_futures);
    }

    fn max_workers(&self) -> usize {
        self.executor.max_workers()
    }
}

/// A per-test directory: tasks leave markers in it and wait for its release file.
pub struct Dir(PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!(
            "cf-cluster-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    pub fn path(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }

    pub fn release(&self) {
        std::fs::write(self.0.join("release"), b"").unwrap();
    }

    /// The markers whose names start with `prefix`.
    pub fn markers(&self, prefix: &str) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(prefix))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn wait_markers(&self, prefix: &str, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let m = self.markers(prefix);
            if m.len() >= n {
                return m;
            }
            assert!(
                start.elapsed() < LIMIT,
                "only {} of {n} {prefix} markers",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn triple(x: u64) -> u64 {
    x * 3
}

pub fn slow_triple(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(5));
    x * 3
}

/// Counts how often each future's callbacks run: exactly once each, whatever happened.
pub fn count_completions<T: Send + 'static>(
    futures: &[Future<T>],
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for f in futures {
        let count = std::sync::Arc::clone(&count);
        f.add_done_callback(move |_| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    count
}

/// The sum of the bytes: the task of [`submit_large`].
pub fn byte_sum(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|&b| u64::from(b)).sum()
}

/// `n` tasks, task `i` with 300 KiB of byte `i` (over the inline limit: its argument travels
/// through the object store); its result is `i * 300 * 1024`.
pub fn submit_large(executor: &ClusterExecutor, n: u8) -> Vec<Future<u64>> {
    (0..n)
        .map(|i| executor.submit(byte_sum, vec![i; 300 * 1024]).unwrap())
        .collect()
}

/// Each future, the `i`-th of `futures`, gives `3 * i` within [`LIMIT`] (tasks of [`triple`]
/// over `0..`); `what` names them in a failure.
pub fn assert_tripled<'a>(futures: impl IntoIterator<Item = &'a Future<u64>>, what: &str) {
    for (i, f) in (0..).zip(futures) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&(i * 3)), "{what} {i}");
    }
}
