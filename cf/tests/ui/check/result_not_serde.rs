use concurrent_futures::{Executor, ProcessPoolExecutor};

// `std::io::Error` is not serde: the result cannot cross back from a worker.
fn read(path: String) -> Result<String, std::io::Error> {
    std::fs::read_to_string(path)
}

fn main() {
    let pool = ProcessPoolExecutor::new().unwrap();
    let _ = pool.submit(read, "notes.txt".to_string());
}
