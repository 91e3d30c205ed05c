use concurrent_futures::{Executor, ProcessPoolExecutor};

fn square(x: u32) -> u32 {
    x * x
}

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    // A fn pointer is `Copy` and meets the bounds, but no worker can name the function it
    // points to: refused when built, like a `Copy` capture.
    let f: fn(u32) -> u32 = square;
    let _ = pool.submit(f, 3);
}
