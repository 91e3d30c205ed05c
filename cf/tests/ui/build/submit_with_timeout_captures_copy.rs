use std::time::Duration;

use concurrent_futures::ProcessPoolExecutor;

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let offset = 7_usize;
    let _ = pool.submit_with_timeout(move |x: usize| offset + x, 1, Duration::from_secs(1));
}
