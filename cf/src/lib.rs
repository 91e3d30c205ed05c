//! Python's `concurrent.futures`, in Rust: one dependency for the whole of cf.
//!
//! This crate re-exports the [`Executor`] trait and everything around it (`Future`,
//! `as_completed`, `wait`, `MapOptions`, errors, [`Buffer`]) from `cf-executor-api`, the two
//! pools, [`ThreadPoolExecutor`] (feature `thread`) and [`ProcessPoolExecutor`] (feature
//! `process`, on Linux, macOS and FreeBSD), and adds [`Pool`]: an executor whose backend is chosen at run time.
//! Both features are on by default. The feature `cluster` adds `ClusterExecutor` (from
//! `cf-pool-cluster`: the same trait over a NATS JetStream server and nodes on other machines)
//! as a third backend.
//!
//! ```toml
//! [dependencies]
//! concurrent-futures = "0.1"
//! serde = { version = "1", features = ["derive"] }  # for your own argument and result types
//! ```
//!
//! A library that only *uses* an executor can depend on `cf-executor-api` alone and be generic
//! over `E: Executor`; an application picks the backend, with this crate.
//!
//! # Choosing the backend at run time
//!
//! Python writes `Pool = ProcessPoolExecutor if isolate else ThreadPoolExecutor`. In Rust a
//! `Box<dyn Executor>` is not possible (the trait's methods are generic: each task is its own
//! monomorphised code, which is how a process pool names it in another process), so cf offers
//! an enum instead: [`Pool`] holds either pool and implements [`Executor`] by forwarding.
//!
//! ```
//! use concurrent_futures::{Backend, Executor, MapOptions, Pool};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let isolate = std::env::args().any(|a| a == "--isolate");
//! let backend = if isolate { Backend::Process } else { Backend::Thread };
//! let pool = Pool::with_workers(backend, 4)?;
//! let squares: Vec<u64> = pool.map(square, 1..=5, MapOptions::new())?.collect::<Result<_, _>>()?;
//! assert_eq!(squares, [1, 4, 9, 16, 25]);
//!
//! // A backend named on the command line or in a config file:
//! let pool = Pool::new("process".parse::<Backend>()?)?;
//! assert_eq!(pool.submit(square, 7)?.result(), Ok(&49));
//! # Ok(())
//! # }
//! ```
//!
//! A pool configured beyond its size (an initializer, `max_tasks_per_child`, ...) is built with
//! its own builder and converted: `Pool::from(ProcessPoolExecutor::builder()...build()?)`.
//!
//! The calls one backend has and the other lacks are inherent methods of [`Pool`] that say so:
//! [`Pool::submit_with_timeout`] is refused by the thread pool (a thread cannot be stopped),
//! [`Pool::terminate_workers`] and [`Pool::kill_workers`] return [`Unsupported`] there, and
//! [`Pool::worker_pids`] is `None`. [`Pool::as_thread`] and [`Pool::as_process`] reach
//! everything else, such as [`ThreadPoolExecutor::spawn`] for capturing closures.
//!
//! # Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `thread` | yes | [`ThreadPoolExecutor`], [`Pool::Thread`], [`Backend::Thread`] |
//! | `process` | yes | [`ProcessPoolExecutor`], [`Pool::Process`], [`Backend::Process`] (Linux, macOS, FreeBSD; elsewhere the feature adds nothing) |
//! | `cluster` | no | `ClusterExecutor`, `Pool::Cluster`, `Backend::Cluster`, `cluster_node` (where `process` builds) |
//! | `progress` | no | `ProgressExt`: progress bars over `map` and `as_completed` |
//!
//! `cluster` is off by default because it brings an async runtime and a NATS client (tokio,
//! async-nats, rustls, ring and their dependencies: the crate's normal dependency tree grows
//! from 38 crates to 132) that a program on one machine does not need. With it,
//! `Pool::new(Backend::Cluster)` connects to the server named by `CF_CLUSTER_URL` (default
//! `nats://127.0.0.1:4222`), pool `CF_CLUSTER_POOL` (default `cf`); the tasks run on the nodes
//! of that pool: this same executable, started with `CF_CLUSTER_NODE=<url>`
//! (`cluster_node::run_if_requested()` as the first line of `main`). A cluster configured
//! beyond that is built with its own builder and converted:
//! `Pool::from(ClusterExecutor::builder(url)...build()?)`.
//!
//! [`Pool`] and [`Backend`] are `#[non_exhaustive]`: more backends may come behind features of
//! their own, so a `match` on them needs a `_` arm.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without a backend `Pool` and `Backend` have no variants: every method's body is a `match`
// with no arms, which the compiler rightly calls unreachable code that ignores its arguments.
#![cfg_attr(
    not(any(
        feature = "thread",
        all(
            any(feature = "process", feature = "cluster"),
            any(
                target_os = "linux",
                target_os = "macos",
                target_os = "freebsd",
                windows
            )
        )
    )),
    allow(unreachable_code, unused_variables)
)]

use std::fmt;
use std::str::FromStr;

pub use cf_executor_api::*;
#[cfg(all(
    feature = "process",
    any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )
))]
pub use cf_pool_proc::{init, ProcessPoolBuilder, ProcessPoolExecutor, WorkerDeath};
#[cfg(feature = "thread")]
pub use cf_pool_thread::{ThreadPoolBuilder, ThreadPoolExecutor};

/// The cluster's node side (`cf_pool_cluster::node`): [`run_if_requested`](cluster_node::run_if_requested)
/// as the first line of `main` makes this program serve as a node when `CF_CLUSTER_NODE` is
/// set.
#[cfg(all(
    feature = "cluster",
    any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )
))]
pub use cf_pool_cluster::node as cluster_node;
#[cfg(all(
    feature = "cluster",
    any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )
))]
pub use cf_pool_cluster::{ClusterBuilder, ClusterExecutor};

/// The environment variable naming the server `Pool::new(Backend::Cluster)` connects to.
#[cfg(all(
    feature = "cluster",
    any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )
))]
pub const CLUSTER_URL_ENV: &str = "CF_CLUSTER_URL";

/// The server `Pool::new(Backend::Cluster)` connects to when [`CLUSTER_URL_ENV`] is not set.
#[cfg(all(
    feature = "cluster",
    any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )
))]
pub const DEFAULT_CLUSTER_URL: &str = "nats://127.0.0.1:4222";

/// Which kind of pool: the run-time choice behind a [`Pool`].
///
/// Parses from and displays as its [`name`](Backend::name), exactly (`thread`, not `Thread`).
/// A name this build does not have is an [`UnknownBackend`] that lists the ones it has, and
/// says which cargo feature adds a backend of cf the build lacks.
///
/// # Examples
///
/// ```
/// use concurrent_futures::Backend;
///
/// assert_eq!("thread".parse::<Backend>(), Ok(Backend::Thread));
/// assert_eq!(Backend::Process.to_string(), "process");
/// assert_eq!(Backend::Process.executor_name(), "ProcessPoolExecutor");
/// assert!("fibre".parse::<Backend>().unwrap_err().to_string().contains("thread"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Worker processes: [`ProcessPoolExecutor`]. Isolation: a crash or a task past its time
    /// limit takes one worker, not the program.
    #[cfg(all(
        feature = "process",
        any(
            target_os = "linux",
            target_os = "macos",
            target_os = "freebsd",
            windows
        )
    ))]
    Process,
    /// Worker threads of this process: [`ThreadPoolExecutor`]. The cheaper choice when tasks
    /// need no isolation (Rust has no GIL: threads run CPU-bound work in parallel).
    #[cfg(feature = "thread")]
    Thread,
    /// Nodes on other machines, through a NATS JetStream server: `ClusterExecutor` (feature
    /// `cluster`). Each node runs tasks on a local process pool, so the isolation of
    /// [`Backend::Process`] holds there too.
    #[cfg(all(
        feature = "cluster",
        any(
            target_os = "linux",
            target_os = "macos",
            target_os = "freebsd",
            windows
        )
    ))]
    Cluster,
}

impl Backend {
    /// Every backend this build has, process pool first.
    pub const ALL: &'static [Backend] = &[
        #[cfg(all(
            feature = "process",
            any(
                target_os = "linux",
                target_os = "macos",
                target_os = "freebsd",
                windows
            )
        ))]
        Backend::Process,
        #[cfg(feature = "thread")]
        Backend::Thread,
        #[cfg(all(
            feature = "cluster",
            any(
                target_os = "linux",
                target_os = "macos",
                target_os = "freebsd",
                windows
            )
        ))]
        Backend::Cluster,
    ];

    /// The backends that need nothing beyond this machine (every one but the cluster), process
    /// pool first: what a program or test can build without a server.
    pub const LOCAL: &'static [Backend] = &[
        #[cfg(all(
            feature = "process",
            any(
                target_os = "linux",
                target_os = "macos",
                target_os = "freebsd",
                windows
            )
        ))]
        Backend::Process,
        #[cfg(feature = "thread")]
        Backend::Thread,
    ];

    /// The short name, as on a command line: `process`, `thread` or `cluster`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Process => "process",
            #[cfg(feature = "thread")]
            Backend::Thread => "thread",
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Cluster => "cluster",
        }
    }

    /// The pool's type name, as Python spells it: `ProcessPoolExecutor`, `ThreadPoolExecutor`
    /// or `ClusterExecutor`.
    #[must_use]
    pub fn executor_name(self) -> &'static str {
        match self {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Process => "ProcessPoolExecutor",
            #[cfg(feature = "thread")]
            Backend::Thread => "ThreadPoolExecutor",
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Cluster => "ClusterExecutor",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that [`Backend::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBackend(String);

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = Backend::ALL.iter().map(|b| b.name()).collect();
        write!(
            f,
            "unknown backend {:?}; this build has: {}",
            self.0,
            known.join(", ")
        )?;
        // A backend of cf that this build lacks: say what would add it.
        let missing = [
            ("process", "Linux, macOS, FreeBSD and Windows"),
            ("thread", "every platform"),
            ("cluster", "Linux, macOS, FreeBSD and Windows"),
        ]
        .into_iter()
        .find(|(name, _)| self.0 == *name);
        if let Some((name, platforms)) = missing {
            write!(
                f,
                " (`{name}` needs concurrent-futures' cargo feature `{name}`, on {platforms})"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownBackend {}

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Backend::ALL
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

/// An operation the pool's backend does not have, such as killing the workers of a thread
/// pool.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{Backend, Pool};
///
/// let pool = Pool::with_workers(Backend::Thread, 1).unwrap();
/// let e = pool.kill_workers().unwrap_err();
/// assert_eq!(e.backend, Backend::Thread);
/// assert!(e.to_string().contains("kill_workers"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The method called.
    pub operation: &'static str,
    /// The backend that lacks it.
    pub backend: Backend,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.backend {
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Cluster => {
                "its workers belong to the nodes, which serve other clients too; stop a node \
                 by stopping its process, or use `shutdown(wait, cancel_futures)`"
            }
            // Threads (the only other backend an `Unsupported` is made for).
            #[allow(unreachable_patterns)] // the only variant in a cluster-only build
            _ => {
                "a thread cannot be stopped from outside; use a process pool where tasks must \
                 be stopped"
            }
        };
        write!(
            f,
            "`{}` is not available on the {} backend: {why}",
            self.operation,
            self.backend.executor_name()
        )
    }
}

impl std::error::Error for Unsupported {}

/// An executor whose backend is chosen at run time: Python's
/// `Pool = ProcessPoolExecutor if isolate else ThreadPoolExecutor`.
///
/// It implements [`Executor`] by forwarding to the pool it holds, so everything written for
/// `E: Executor` takes it, and its methods behave exactly as that pool's. Dropping it drops the
/// pool (shut down, wait for the work, join or reap the workers).
///
/// See the [crate documentation](crate) for an example.
#[derive(Debug)]
#[non_exhaustive]
pub enum Pool {
    /// A process pool.
    #[cfg(all(
        feature = "process",
        any(
            target_os = "linux",
            target_os = "macos",
            target_os = "freebsd",
            windows
        )
    ))]
    Process(ProcessPoolExecutor),
    /// A thread pool.
    #[cfg(feature = "thread")]
    Thread(ThreadPoolExecutor),
    /// A cluster executor.
    #[cfg(all(
        feature = "cluster",
        any(
            target_os = "linux",
            target_os = "macos",
            target_os = "freebsd",
            windows
        )
    ))]
    Cluster(ClusterExecutor),
}

/// Runs `$body` with `$pool` bound to the pool inside `$self`, whichever backend it is.
macro_rules! forward {
    ($self:expr, $pool:ident => $body:expr) => {
        match *$self {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Process(ref $pool) => $body,
            #[cfg(feature = "thread")]
            Pool::Thread(ref $pool) => $body,
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Cluster(ref $pool) => $body,
        }
    };
}

impl Pool {
    /// `Executor()`: a pool of `backend` with that backend's default `max_workers`
    /// ([`cpu_count()`] for processes, Python's `min(32, cpu_count() + 4)` for threads).
    ///
    /// The cluster backend connects to the server named by `CF_CLUSTER_URL` (default
    /// `nats://127.0.0.1:4222`), pool `CF_CLUSTER_POOL` (default `cf`).
    ///
    /// # Errors
    ///
    /// As the backend's builder: the OS refused a resource; for the cluster, no server could be
    /// used at that address within 10 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Backend, Executor, Pool};
    ///
    /// let pool = Pool::new(Backend::Thread).unwrap();
    /// assert!(pool.max_workers() >= 1);
    /// ```
    pub fn new(backend: Backend) -> Result<Self, BuildError> {
        Ok(match backend {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Process => Pool::Process(ProcessPoolExecutor::new()?),
            #[cfg(feature = "thread")]
            Backend::Thread => Pool::Thread(ThreadPoolExecutor::new()),
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Cluster => Pool::Cluster(cluster_from_env(None)?),
        })
    }

    /// `Executor(max_workers=n)`: a pool of `backend` with at most `n` workers.
    ///
    /// A cluster only *reports* `n` as its `max_workers`: its nodes decide how many tasks run at
    /// once (each as many as its workers). It connects as [`Pool::new`] says.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`] for `n == 0`; otherwise as the backend's builder.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Backend, Executor, Pool};
    ///
    /// for &backend in Backend::LOCAL {
    ///     let pool = Pool::with_workers(backend, 2).unwrap();
    ///     assert_eq!((pool.backend(), pool.max_workers()), (backend, 2));
    /// }
    /// ```
    pub fn with_workers(backend: Backend, n: usize) -> Result<Self, BuildError> {
        Ok(match backend {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Process => {
                Pool::Process(ProcessPoolExecutor::builder().max_workers(n).build()?)
            }
            #[cfg(feature = "thread")]
            Backend::Thread => Pool::Thread(ThreadPoolExecutor::builder().max_workers(n).build()?),
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Backend::Cluster => Pool::Cluster(cluster_from_env(Some(n))?),
        })
    }

    /// Which backend this pool is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        match *self {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Process(_) => Backend::Process,
            #[cfg(feature = "thread")]
            Pool::Thread(_) => Backend::Thread,
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Cluster(_) => Backend::Cluster,
        }
    }

    /// The thread pool, if this is one: for what only threads do, such as
    /// [`ThreadPoolExecutor::spawn`] of a capturing closure.
    #[cfg(feature = "thread")]
    #[must_use]
    pub fn as_thread(&self) -> Option<&ThreadPoolExecutor> {
        match *self {
            Pool::Thread(ref pool) => Some(pool),
            #[allow(unreachable_patterns)] // the only variant in a thread-only build
            _ => None,
        }
    }

    /// The process pool, if this is one.
    #[cfg(all(
        feature = "process",
        any(
            target_os = "linux",
            target_os = "macos",
            target_os = "freebsd",
            windows
        )
    ))]
    #[must_use]
    pub fn as_process(&self) -> Option<&ProcessPoolExecutor> {
        match *self {
            Pool::Process(ref pool) => Some(pool),
            #[allow(unreachable_patterns)] // the only variant in a process-only build
            _ => None,
        }
    }

    /// The cluster executor, if this is one: for its [`ClusterExecutor::client_id`] and
    /// [`ClusterExecutor::build_id`].
    #[cfg(all(
        feature = "cluster",
        any(
            target_os = "linux",
            target_os = "macos",
            target_os = "freebsd",
            windows
        )
    ))]
    #[must_use]
    pub fn as_cluster(&self) -> Option<&ClusterExecutor> {
        match *self {
            Pool::Cluster(ref pool) => Some(pool),
            #[allow(unreachable_patterns)] // the only variant in a cluster-only build
            _ => None,
        }
    }

    /// The pids of the live worker processes ([`ProcessPoolExecutor::worker_pids`]); `None` for
    /// a backend whose workers are not processes of its own (threads, a cluster's nodes).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Backend, Pool};
    ///
    /// assert_eq!(Pool::with_workers(Backend::Thread, 1).unwrap().worker_pids(), None);
    /// assert!(Pool::with_workers(Backend::Process, 1).unwrap().worker_pids().is_some());
    /// ```
    #[must_use]
    pub fn worker_pids(&self) -> Option<Vec<u32>> {
        match *self {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Process(ref pool) => Some(pool.worker_pids()),
            #[cfg(feature = "thread")]
            Pool::Thread(_) => None,
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Cluster(_) => None,
        }
    }

    /// [`ProcessPoolExecutor::submit_with_timeout`]: a task whose worker is killed when it runs
    /// past `limit`. Only a process pool can stop a running task (on a cluster, the process
    /// pool of the node that runs it).
    ///
    /// # Errors
    ///
    /// On the thread pool, always [`SubmitError::InvalidArgument`] naming `limit` (rather than
    /// a limit that would not be kept); otherwise as the process pool's.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{Backend, Pool, SubmitError};
    ///
    /// fn double(x: u32) -> u32 {
    ///     x * 2
    /// }
    ///
    /// let processes = Pool::with_workers(Backend::Process, 1).unwrap();
    /// let f = processes.submit_with_timeout(double, 21, Duration::from_secs(30)).unwrap();
    /// assert_eq!(f.result(), Ok(&42));
    ///
    /// let threads = Pool::with_workers(Backend::Thread, 1).unwrap();
    /// let refused = threads.submit_with_timeout(double, 21, Duration::from_secs(30));
    /// assert!(matches!(refused, Err(SubmitError::InvalidArgument { name: "limit", .. })));
    /// ```
    pub fn submit_with_timeout<F, A, R>(
        &self,
        f: F,
        arg: A,
        limit: std::time::Duration,
    ) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        match *self {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Process(ref pool) => pool.submit_with_timeout(f, arg, limit),
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Cluster(ref pool) => pool.submit_with_timeout(f, arg, limit),
            #[cfg(feature = "thread")]
            Pool::Thread(_) => {
                let _ = (f, arg, limit);
                Err(SubmitError::InvalidArgument {
                    name: "limit",
                    message: "the thread pool cannot stop a running task, so it takes no time \
                              limit; build the pool with Backend::Process for tasks that must \
                              be stopped, or wait with `result_timeout` (which stops only the \
                              waiting)"
                        .into(),
                })
            }
        }
    }

    /// [`ProcessPoolExecutor::terminate_workers`] (Python 3.14): shut down, cancel what is
    /// queued, `SIGTERM` every worker and reap it.
    ///
    /// # Errors
    ///
    /// [`Unsupported`] on a backend whose workers cannot be stopped from outside (threads) or
    /// are not its own (a cluster's nodes); nothing is done then. Call [`Executor::shutdown`]
    /// there instead.
    pub fn terminate_workers(&self) -> Result<(), Unsupported> {
        match *self {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Process(ref pool) => {
                pool.terminate_workers();
                Ok(())
            }
            #[cfg(feature = "thread")]
            Pool::Thread(_) => Err(Unsupported {
                operation: "terminate_workers",
                backend: Backend::Thread,
            }),
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Cluster(_) => Err(Unsupported {
                operation: "terminate_workers",
                backend: Backend::Cluster,
            }),
        }
    }

    /// [`ProcessPoolExecutor::kill_workers`] (Python 3.14): as
    /// [`terminate_workers`](Self::terminate_workers) with `SIGKILL`.
    ///
    /// # Errors
    ///
    /// As [`terminate_workers`](Self::terminate_workers).
    pub fn kill_workers(&self) -> Result<(), Unsupported> {
        match *self {
            #[cfg(all(
                feature = "process",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Process(ref pool) => {
                pool.kill_workers();
                Ok(())
            }
            #[cfg(feature = "thread")]
            Pool::Thread(_) => Err(Unsupported {
                operation: "kill_workers",
                backend: Backend::Thread,
            }),
            #[cfg(all(
                feature = "cluster",
                any(
                    target_os = "linux",
                    target_os = "macos",
                    target_os = "freebsd",
                    windows
                )
            ))]
            Pool::Cluster(_) => Err(Unsupported {
                operation: "kill_workers",
                backend: Backend::Cluster,
            }),
        }
    }
}

#[cfg(all(
    feature = "process",
    any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )
))]
impl From<ProcessPoolExecutor> for Pool {
    fn from(pool: ProcessPoolExecutor) -> Self {
        Pool::Process(pool)
    }
}

#[cfg(feature = "thread")]
impl From<ThreadPoolExecutor> for Pool {
    fn from(pool: ThreadPoolExecutor) -> Self {
        Pool::Thread(pool)
    }
}

#[cfg(all(
    feature = "cluster",
    any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )
))]
impl From<ClusterExecutor> for Pool {
    fn from(pool: ClusterExecutor) -> Self {
        Pool::Cluster(pool)
    }
}

/// A cluster executor on the server and pool the environment names ([`CLUSTER_URL_ENV`],
/// `CF_CLUSTER_POOL`); a server that cannot be used is an error naming the variable.
#[cfg(all(
    feature = "cluster",
    any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        windows
    )
))]
fn cluster_from_env(max_workers: Option<usize>) -> Result<ClusterExecutor, BuildError> {
    let url = std::env::var(CLUSTER_URL_ENV).unwrap_or_else(|_| DEFAULT_CLUSTER_URL.to_owned());
    let mut builder = ClusterExecutor::builder(&url);
    if let Ok(pool) = std::env::var(cluster_node::POOL_ENV) {
        builder = builder.pool(&pool);
    }
    if let Some(n) = max_workers {
        builder = builder.max_workers(n);
    }
    builder.build().map_err(|e| match e {
        BuildError::Io(message) => BuildError::Io(format!(
            "{message}; the cluster backend uses the server named by {CLUSTER_URL_ENV} \
             (default {DEFAULT_CLUSTER_URL})"
        )),
        other => other,
    })
}

impl Executor for Pool {
    fn submit<F, A, R>(&self, f: F, arg: A) -> Result<Future<R>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        forward!(self, pool => pool.submit(f, arg))
    }

    fn submit_batch<F, A, R>(&self, f: F, args: Vec<A>) -> Result<Vec<Future<R>>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        forward!(self, pool => pool.submit_batch(f, args))
    }

    fn submit_chunk<F, A, R>(
        &self,
        f: F,
        args: Vec<A>,
    ) -> Result<Future<Vec<Result<R, TaskError>>>, SubmitError>
    where
        F: Task<A, R>,
        A: Payload,
        R: Payload + Sync,
    {
        forward!(self, pool => pool.submit_chunk(f, args))
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        forward!(self, pool => pool.shutdown(wait, cancel_futures));
    }

    fn max_workers(&self) -> usize {
        forward!(self, pool => pool.max_workers())
    }
}
