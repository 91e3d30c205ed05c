use concurrent_futures::{Executor, ProcessPoolExecutor};

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let offset = 7_usize;
    let _ = pool.submit(move |x: usize| offset + x, 1);
}
