use concurrent_futures::{Executor, ThreadPoolExecutor};

fn main() {
    let pool = ThreadPoolExecutor::new();
    let weights = vec![1_usize, 2, 3];
    let _ = pool.submit(move |x: usize| weights[x], 1);
}
