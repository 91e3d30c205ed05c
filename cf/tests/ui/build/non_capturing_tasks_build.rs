//! The counterpart of the failing cases: the same calls with tasks that capture nothing
//! build. (Also makes trybuild run `cargo build` for this group, so post-monomorphisation
//! errors are reached.)

use std::time::Duration;

use concurrent_futures::{Executor, MapOptions, ProcessPoolExecutor};

fn add_seven(x: usize) -> usize {
    x + 7
}

fn main() {
    if std::env::args().count() > 0 {
        return; // built, never run
    }
    let pool = ProcessPoolExecutor::new().unwrap();
    let _ = pool.submit(add_seven, 1);
    let _ = pool.submit(|(x, offset): (usize, usize)| x + offset, (1, 7));
    let _ = pool.submit_batch(add_seven, vec![1, 2]);
    let _ = pool.map(add_seven, 0..8, MapOptions::new());
    let _ = pool.map(add_seven, 0..8, MapOptions::new().chunksize(4));
    let _ = pool.submit_with_timeout(add_seven, 1, Duration::from_secs(1));
}
