use concurrent_futures::{Executor, MapOptions, ProcessPoolExecutor};

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let offset = 7_usize;
    let _ = pool.map(move |x: usize| offset + x, 0..8, MapOptions::new().chunksize(4));
}
