use concurrent_futures::{Backend, Executor, Pool};

fn main() {
    let pool = Pool::new(Backend::Thread).unwrap();
    let offset = 7_usize;
    // Built for every backend the Pool may hold, so the process pool's check applies.
    let _ = pool.submit(move |x: usize| offset + x, 1);
}
