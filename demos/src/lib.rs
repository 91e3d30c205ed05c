//! Chapter 27 of the Python book, "ProcessPoolExecutor and Futures", as runnable Rust.
//!
//! Each section of the chapter is one function here, written once and run on a
//! [`Pool`](concurrent_futures::Pool) of the backend chosen at run time, and one binary in
//! `src/bin/` that runs it on `--backend process`, `--backend thread`, `--backend cluster` or
//! `--backend both` (the two local pools, the default). `tour` runs them all:
//!
//! ```text
//! cargo run --release -p cf-demos --bin tour
//! cargo run --release -p cf-demos --bin s05_as_completed -- --backend thread
//! cargo run --release -p cf-demos --bin tour -- --backend cluster --cluster-url nats://127.0.0.1:4222
//! ```
//!
//! With `--backend cluster` the demo starts [`NODES`] local nodes from its own executable
//! ([`LocalCluster`]) on a NATS server that must already run (see the repository README,
//! *Scaling out*).
//!
//! The functions write to a `&mut dyn Write`, so a test can run a section on both pools and
//! check, after [`normalize`], that they print the same thing:
//!
//! ```
//! use cf_demos::{normalize, section, Backend};
//!
//! let basics = section("s01_basics").unwrap();
//! let mut process = Vec::new();
//! let mut thread = Vec::new();
//! basics.run_on(Backend::Process, &mut process).unwrap();
//! basics.run_on(Backend::Thread, &mut thread).unwrap();
//! let (process, thread) = (String::from_utf8(process).unwrap(), String::from_utf8(thread).unwrap());
//! assert!(thread.contains("Squares: [1, 4, 9, 16, 25]"));
//! assert_eq!(normalize(&process), normalize(&thread));
//! ```
//!
//! # Output conventions
//!
//! Whatever varies between runs is printed as a token [`normalize`] recognises: worker ids as
//! `pid=N` (process pool) or `thread=N` (thread pool), durations as `0.123s`, speedups as
//! `1.95x`, bars between `│` and `│`. The few lines that differ between the pools by nature
//! start with [`BackendOutput::marker`], `[process]`, `[thread]` or `[cluster]`.
#![warn(missing_docs)]

mod backend;
mod cli;
mod cluster;
mod normalize;
mod sections;

pub use backend::{BackendOutput, WorkerId};
pub use cli::{main_for, tour_main, BackendChoice};
pub use cluster::{cluster_url, serve_if_node, LocalCluster, DEMO_POOL, NODES, NODE_WORKERS};
pub use concurrent_futures::Backend;
pub use normalize::normalize;
pub use sections::{section, DemoFn, Runner, Section, SECTIONS};

/// What a demo returns: any failure (pool build, submit, I/O) ends it with a message.
pub type DemoResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The Rust examples of the porting guide, `docs/porting-from-python.md`, compiled and run as
/// doctests so the guide cannot drift from the API.
/// Compiles and runs the README's Rust examples, so the front page never lies.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/porting-from-python.md")]
pub struct PortingGuideDoctests;

/// The examples of each published package's README (what crates.io shows).
#[cfg(doctest)]
pub mod package_readmes {
    #[doc = include_str!("../../cf/README.md")]
    pub struct ConcurrentFutures;
    #[doc = include_str!("../../executor-api/README.md")]
    pub struct ExecutorApi;
    #[doc = include_str!("../../futures-core/README.md")]
    pub struct FuturesCore;
    #[doc = include_str!("../../pool-proc/README.md")]
    pub struct PoolProc;
    #[doc = include_str!("../../pool-thread/README.md")]
    pub struct PoolThread;
}
