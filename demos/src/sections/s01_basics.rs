//! Section 1, "ProcessPoolExecutor Basics": `cpu_count()`, then squares through `map` in a
//! pool of two workers.

use std::io::Write;

use cf_executor_api::{cpu_count, MapOptions};

use concurrent_futures::{Backend, Executor, Pool};

use crate::DemoResult;

/// Computes the square of a number: a plain `fn`, so it can run in a worker process.
fn square(x: u64) -> u64 {
    x * x
}

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    writeln!(out, "CPU count: {}", cpu_count())?;

    // The `with` block: the pool lives in this scope; dropping it shuts it down and waits.
    let results: Vec<u64> = {
        let executor = Pool::with_workers(backend, 2)?;
        let results = executor
            .map(square, [1, 2, 3, 4, 5], MapOptions::new())?
            .collect::<Result<_, _>>()?;
        results
    };

    writeln!(out, "Squares: {results:?}")?;
    Ok(())
}
