use std::time::Duration;

use concurrent_futures::ProcessPoolExecutor;

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let name = String::from("cf");
    let _ = pool.submit_with_timeout(move |x: usize| name.len() + x, 1, Duration::from_secs(1));
}
