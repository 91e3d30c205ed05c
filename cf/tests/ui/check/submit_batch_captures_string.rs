use concurrent_futures::{Executor, ProcessPoolExecutor};

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let name = String::from("cf");
    let _ = pool.submit_batch(move |x: usize| name.len() + x, vec![1, 2]);
}
