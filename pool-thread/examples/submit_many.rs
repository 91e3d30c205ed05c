//! Submits many no-op tasks and collects them with `as_completed`: the `submit_throughput`
//! workload of `cf-benches` in a form small enough to count instructions per task with a
//! profiler (`cargo run --release -p cf-pool-thread --example submit_many -- TASKS ROUNDS`).

use std::hint::black_box;
use std::time::Instant;

use cf_pool_thread::{as_completed, Executor, ThreadPoolExecutor};

fn noop(x: u64) -> u64 {
    black_box(x)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let tasks: u64 = args.next().map_or(20_000, |s| s.parse().expect("TASKS"));
    let rounds: u64 = args.next().map_or(10, |s| s.parse().expect("ROUNDS"));
    let pool = ThreadPoolExecutor::new();
    let start = Instant::now();
    for _ in 0..rounds {
        let futures: Vec<_> = (0..tasks)
            .map(|i| pool.submit(noop, i).expect("submit"))
            .collect();
        let sum: u64 = as_completed(&futures, None)
            .map(|f| *f.expect("no timeout").result().expect("result"))
            .sum();
        black_box(sum);
    }
    let elapsed = start.elapsed();
    println!(
        "{} tasks in {:?}: {:.0} tasks/s",
        tasks * rounds,
        elapsed,
        (tasks * rounds) as f64 / elapsed.as_secs_f64()
    );
}
