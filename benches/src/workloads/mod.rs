//! The workloads, each written once per contender.
//!
//! Every function has the shape criterion's `iter_custom` wants: run the workload `iters` times
//! and return the time it took. Pools are built by the caller (except in [`startup`], which
//! times building one), so the time is the workload's alone. Workers are warm: each group runs
//! a round of work before it measures.

pub mod echo;
pub mod map;
pub mod round_trip;
pub mod scaling;
pub mod startup;
pub mod throughput;

/// Tasks per submit-throughput run, as the issue asks.
pub const SUBMIT_TASKS: u64 = 20_000;

/// Items per `map` run.
pub const MAP_ITEMS: u64 = 20_000;

/// The `map` chunk sizes compared.
pub const CHUNKSIZES: [usize; 3] = [1, 16, 256];

/// Payload sizes of the echo benchmark: 1 KiB, 1 MiB, 16 MiB.
pub const PAYLOADS: [(usize, &str); 3] =
    [(1 << 10, "1KiB"), (1 << 20, "1MiB"), (16 << 20, "16MiB")];

/// Tasks in one CPU-bound run (the chapter uses 8).
pub const CPU_TASKS: usize = 8;

/// `cpu_heavy(n)` argument: about 10 ms of work per task on a 2020s x86-64 core.
pub const CPU_N: u64 = 10_000_000;

/// procspawn opens two IPC channels (socketpairs) per task, so a deep backlog runs out of file
/// descriptors; its submit and map runs keep at most this many tasks in flight.
pub const PROCSPAWN_WINDOW: usize = 256;
