//! Round trip, submit throughput and map throughput of `ClusterExecutor` (a local server and two
//! local nodes of one worker each) against a `ProcessPoolExecutor` of two workers.
//!
//! ```sh
//! bash .ci/nats cargo run --release -p cf-pool-cluster --example compare
//! ```
//!
//! Needs `nats-server` 2.10+ (`$CF_NATS_SERVER`, else `target/nats/nats-server` as `.ci/nats`
//! installs it). Prints medians of 5 runs; the cluster's figures include the server's round
//! trips (publish, claim, result), all on this machine. `compare_dask.py`, beside this file,
//! runs the same workloads on Dask's `LocalCluster`; the figures measured are in this crate's
//! README.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cf_executor_api::{Executor, MapOptions};
use cf_pool_cluster::ClusterExecutor;
use cf_pool_proc::ProcessPoolExecutor;

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn round_trip<E: Executor>(e: &E, n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        e.submit(square, i).unwrap().result().unwrap();
    }
    start.elapsed() / n as u32
}

fn submit_all<E: Executor>(e: &E, n: u64) -> f64 {
    let start = Instant::now();
    let futures: Vec<_> = (0..n).map(|i| e.submit(square, i).unwrap()).collect();
    for f in &futures {
        f.result().unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn map_all<E: Executor>(e: &E, n: u64) -> f64 {
    let start = Instant::now();
    let total = e
        .map(square, 0..n, MapOptions::new().chunksize(500))
        .unwrap()
        .map(Result::unwrap)
        .fold(0u64, u64::wrapping_add);
    std::hint::black_box(total);
    n as f64 / start.elapsed().as_secs_f64()
}

fn measure<E: Executor>(name: &str, e: &E) {
    // Warm up: workers started, connections made.
    round_trip(e, 20);
    let rt = median((0..5).map(|_| round_trip(e, 200)).collect());
    let mut sub: Vec<f64> = (0..5).map(|_| submit_all(e, 2000)).collect();
    let mut map: Vec<f64> = (0..5).map(|_| map_all(e, 100_000)).collect();
    sub.sort_by(f64::total_cmp);
    map.sort_by(f64::total_cmp);
    println!(
        "{name:<8} round trip {:>9.1} us   submit {:>9.0} tasks/s   map(chunksize 500) {:>10.0} items/s",
        rt.as_secs_f64() * 1e6,
        sub[2],
        map[2]
    );
}

fn server_binary() -> PathBuf {
    std::env::var_os("CF_NATS_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/nats/nats-server"),
        PathBuf::from,
    )
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    cf_pool_cluster::node::run_if_requested();

    let processes = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    measure("process", &processes);
    drop(processes);

    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let store = std::env::temp_dir().join(format!("cf-cluster-compare-{}", std::process::id()));
    let _server = Kill(
        Command::new(server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (set CF_NATS_SERVER, or run through .ci/nats)"),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "no server");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("nats://127.0.0.1:{port}");
    let _nodes: Vec<Kill> = (0..2)
        .map(|_| {
            Kill(
                Command::new(std::env::current_exe().unwrap())
                    .env(cf_pool_cluster::node::NODE_ENV, &url)
                    .env(cf_pool_cluster::node::WORKERS_ENV, "1")
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let cluster = ClusterExecutor::builder(&url).build().unwrap();
    measure("cluster", &cluster);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&store);
}
