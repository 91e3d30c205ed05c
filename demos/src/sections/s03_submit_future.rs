//! Section 3, "executor.submit() and Future Objects": `submit` returns a `Future` at once; read
//! it with `done()`, `result()` and `exception()`. Then many futures, each kept with its input.

use std::io::Write;
use std::time::Duration;

use cf_executor_api::Future;

use concurrent_futures::{Backend, Executor, Pool};

use crate::DemoResult;

/// Computes the square of a number, taking 100 ms over it as real work would, so that `done()`
/// right after `submit` is reliably `false` (the chapter's "may or may not be done yet").
fn square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(100));
    x * x
}

/// Computes the cube of a number.
fn cube(x: u64) -> u64 {
    x.pow(3)
}

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    // submit() returns a Future.
    {
        let executor = Pool::with_workers(backend, 1)?;
        let future: Future<u64> = executor.submit(square, 7)?;

        // Inspect the future.
        writeln!(out, "Type: {}", std::any::type_name_of_val(&future))?;
        writeln!(out, "Done: {}", future.done())?;

        // Get the result (blocks if not yet ready).
        let result: u64 = *future.result()?;
        writeln!(out, "Result: {result}")?;
        writeln!(out, "Done after result(): {}", future.done())?;
        writeln!(out, "Exception: {:?}", future.exception())?;
    }

    // Submit several tasks and keep each future with its input (Python keys a dict by future;
    // a Vec of pairs keeps the submission order for printing).
    writeln!(out)?;
    let executor = Pool::with_workers(backend, 2)?;
    let futures: Vec<(Future<u64>, u64)> = (1..7)
        .map(|n| Ok((executor.submit(cube, n)?, n)))
        .collect::<Result<_, cf_executor_api::SubmitError>>()?;

    writeln!(out, "Results from submit():")?;
    for (future, input) in &futures {
        let result: u64 = *future.result()?;
        writeln!(out, "  {input}^3 = {result}")?;
    }
    Ok(())
}
