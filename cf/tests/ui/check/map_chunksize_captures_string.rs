use concurrent_futures::{Executor, MapOptions, ProcessPoolExecutor};

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let name = String::from("cf");
    let _ = pool.map(move |x: usize| name.len() + x, 0..8, MapOptions::new().chunksize(4));
}
