use concurrent_futures::{Executor, ProcessPoolExecutor};

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let name = String::from("cf");
    let _ = pool.submit(move |x: usize| name.len() + x, 1);
}
