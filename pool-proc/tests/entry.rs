//! No ceremony: the pool works from a binary's `main` (the `minimal` example), from integration
//! tests (this file), and from doctests (the crate docs), and a worker never runs the user's
//! `main` or the test harness.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use cf_pool_proc::{Executor, ProcessPoolExecutor};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/entry-<hash> -> target/<profile>/examples/<name>
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    p.pop();
    p.push("examples");
    p.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    p
}

#[test]
fn example_binary_runs_with_no_setup_line() {
    let exe = example("minimal");
    assert!(exe.exists(), "cargo test builds examples: {exe:?}");
    let mut child = Command::new(&exe)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(status.success(), "{out}");
    assert!(out.contains("submit: 7^2 = 49"), "{out}");
    assert!(out.contains("map: [1, 4, 9, 16, 25]"), "{out}");
    assert!(
        out.contains("a worker pid differs from main: true"),
        "{out}"
    );
    // Had a worker run `main`, its lines would appear more than once.
    assert_eq!(out.matches("submit: 7^2").count(), 1, "{out}");
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn integration_test_pool_does_not_rerun_the_harness() {
    // If a worker ran the test harness it would re-run this test recursively and print the
    // harness banner; instead the task simply returns.
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let f = pool.submit(square, 7).unwrap();
    assert_eq!(f.result_timeout(Duration::from_secs(60)), Ok(&49));
    let g = pool.submit(|(a, b): (f64, f64)| a / b, (1.0, 2.0)).unwrap();
    assert_eq!(g.result_timeout(Duration::from_secs(60)), Ok(&0.5));
}

#[test]
fn explicit_init_is_harmless_in_the_parent() {
    cf_pool_proc::init();
    assert!(!cf_pool_proc::is_worker());
}

#[test]
fn zz_no_leaks() {
    common::assert_clean_at_end();
}

#[test]
fn public_types_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<ProcessPoolExecutor>();
    both::<cf_pool_proc::ProcessPoolBuilder>();
    both::<cf_pool_proc::WorkerDeath>();
    both::<cf_pool_proc::Future<Vec<u8>>>();
}
