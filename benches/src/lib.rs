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
mod helper;
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
    serve_if_helper();
}

/// If this process is a ping-pong partner (of the socketpair, the shared-memory or the
/// ipc-channel ping-pong), answers until the parent hangs up, then exits.
fn serve_if_helper() {
    let Some(role) = std::env::var_os(helper::HELPER_ENV) else {
        return;
    };
    let role = role.to_string_lossy();
    let served = if role == "ipc-channel" {
        ipc::serve()
    } else if let Some(how) = shm_pingpong::Wait::from_env_value(&role) {
        shm_pingpong::serve(how)
    } else {
        physical::serve()
    };
    let code = match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cf-benches ping-pong helper: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// The number of CPUs this process may use, and so the worker count of every pool.
#[must_use]
pub fn cores() -> usize {
    cf_executor_api::cpu_count()
}
