use concurrent_futures::{Executor, ProcessPoolExecutor};

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let offset = 7_usize;
    let _ = pool.submit_batch(move |x: usize| offset + x, vec![1, 2]);
}
