//! The smallest complete program: square numbers in worker processes with `submit`, `map` and
//! `as_completed`. Run with `cargo run -p cf-pool-proc --example minimal`.

use cf_pool_proc::{as_completed, Executor, MapOptions, ProcessPoolExecutor};

fn square(x: u64) -> u64 {
    x * x
}

fn whoami(_: ()) -> u32 {
    std::process::id()
}

fn main() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .expect("pool");
    let f = pool.submit(square, 7).expect("submit");
    println!("submit: 7^2 = {}", f.result().expect("result"));

    let squares: Vec<u64> = pool
        .map(square, 1..=5, MapOptions::default())
        .expect("map")
        .collect::<Result<_, _>>()
        .expect("results");
    println!("map: {squares:?}");

    let futures: Vec<_> = (1..=4)
        .map(|x| pool.submit(square, x).expect("submit"))
        .collect();
    let mut done: Vec<u64> = as_completed(&futures, None)
        .map(|f| *f.expect("no timeout").result().expect("value"))
        .collect();
    done.sort_unstable();
    println!("as_completed: {done:?}");
    let pid = *pool
        .submit(whoami, ())
        .expect("submit")
        .result()
        .expect("pid");
    println!(
        "a worker pid differs from main: {}",
        pid != std::process::id()
    );
}
