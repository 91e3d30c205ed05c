//! CPython's `concurrent.futures` on the same workloads, through `benches/python/compare.py`
//! (standard library only; loky and pebble too when they are installed), which prints its
//! measurements as JSON.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

/// The script shipped with this crate.
#[must_use]
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/compare.py")
}

/// What the script measured.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    /// `platform.python_version()`.
    pub python: String,
    /// `platform.python_implementation()`, normally `CPython`.
    pub implementation: String,
    /// The process pool's start method (`fork` on Linux before Python 3.14).
    pub start_method: String,
    /// The optional process pools found, with their versions (`loky`, `pebble`).
    #[serde(default)]
    pub peers: std::collections::BTreeMap<String, String>,
    /// One row per workload and contender.
    pub results: Vec<Row>,
    /// The resident memory of each idle worker process, per pool.
    #[serde(default)]
    pub memory: Vec<MemoryRow>,
}

/// The idle workers of one Python pool.
#[derive(Debug, Clone, Deserialize)]
pub struct MemoryRow {
    /// `py-proc`, `loky` or `pebble`.
    pub contender: String,
    /// `VmRSS` of each worker, in KiB.
    pub kib: Vec<u64>,
}

/// One measurement: seconds per operation, one value per run.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    /// The workload key, the same as the Rust side's.
    pub workload: String,
    /// `py-proc`, `py-thread`, `py-seq`, `loky` or `pebble`.
    pub contender: String,
    /// Items per operation (tasks, map items, or payload bytes).
    pub items: u64,
    /// Seconds per operation, one per run.
    pub seconds: Vec<f64>,
}

/// The knobs passed to the script, so both sides run the same workloads.
#[derive(Debug, Clone)]
pub struct Args {
    /// Runs per measurement.
    pub runs: usize,
    /// Workers per pool.
    pub workers: usize,
    /// Tasks per submit-throughput run.
    pub tasks: u64,
    /// Tasks (and `map` items below chunksize 256) for the slow peers, loky and pebble.
    pub slow_tasks: u64,
    /// Items per `map` run.
    pub map_items: u64,
    /// `cpu_heavy` argument (smaller than Rust's: Python is about 50x slower per iteration).
    pub cpu_n: u64,
    /// Tasks per CPU-bound run.
    pub cpu_tasks: usize,
    /// Target seconds per sample.
    pub target_seconds: f64,
    /// Only the workloads whose key starts with one of these (all when empty).
    pub only: Vec<String>,
}

/// Runs `python3 script` with `args`. `Ok(None)` if there is no `python3` on the `PATH`.
///
/// # Errors
///
/// The script failed or printed something that is not its JSON report.
pub fn run(script: &Path, args: &Args) -> Result<Option<Report>, String> {
    let output = Command::new("python3")
        .arg(script)
        .args(["--runs", &args.runs.to_string()])
        .args(["--workers", &args.workers.to_string()])
        .args(["--tasks", &args.tasks.to_string()])
        .args(["--slow-tasks", &args.slow_tasks.to_string()])
        .args(["--map-items", &args.map_items.to_string()])
        .args(["--cpu-n", &args.cpu_n.to_string()])
        .args(["--cpu-tasks", &args.cpu_tasks.to_string()])
        .args(["--target-seconds", &args.target_seconds.to_string()])
        .args(["--only", &args.only.join(",")])
        .stderr(std::process::Stdio::inherit())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot run python3: {e}")),
    };
    if !output.status.success() {
        return Err(format!("{} failed: {}", script.display(), output.status));
    }
    serde_json::from_slice(&output.stdout)
        .map(Some)
        .map_err(|e| format!("{} printed no valid report: {e}", script.display()))
}
