//! cf's benchmarks: its two pools against their peers, on the same workloads, in one run.
//!
//! The same workload code ([`workloads`]) drives both harnesses: the criterion suite
//! (`cargo bench -p cf-benches`) and the `compare` binary
//! (`cargo run --release -p cf-benches --bin compare`), which adds CPython's
//! `concurrent.futures` (and loky and pebble) through `benches/python/compare.py`, prints ratios
//! and draws them ([`chart`]). The peers are set up as their users set them up ([`peers`],
//! [`ipc`]); the machine's limits are measured in the same run ([`physical`],
//! [`shm_pingpong`]).
//! See `benches/README.md` for the method and the latest numbers.
//!
//! Every binary of this crate must call [`init`] first: the process pools re-execute the
//! binary for their workers, and so does the socketpair ping-pong.
#![warn(missing_docs)]

pub mod chart;
pub mod ipc;
pub mod measure;
pub mod memory;
pub mod peers;
pub mod physical;
pub mod python;
pub mod report;
pub mod shm_pingpong;
pub mod tasks;
pub mod workloads;

/// Turns this process into whatever it was re-executed to be (a cf-pool-proc worker, a
/// procspawn worker, one of the ping-pong partners), which never returns; otherwise does nothing.
///
/// Call it as the first line of `main`.
pub fn init() {
    cf_pool_proc::init();
    procspawn::init();
    physical::serve_if_helper();
}

/// The number of CPUs this process may use, and so the worker count of every pool.
#[must_use]
pub fn cores() -> usize {
    cf_executor_api::cpu_count()
}
