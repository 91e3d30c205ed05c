use concurrent_futures::{Executor, ProcessPoolExecutor};

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let k = 3_u32;
    // Borrowing a local: a lifetime error (E0373), whose advice, `move`, makes a `Copy`
    // capture that is refused when built.
    let _ = pool.submit(|x: u32| x + k, 1);
}
