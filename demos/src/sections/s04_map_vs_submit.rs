//! Section 4, "map() vs submit(): When to Use Each": one batch, with one item that fails, through
//! `map` and through `submit`; then the chapter's comparison table, for Rust.

use std::io::Write;

use cf_executor_api::{Future, MapOptions, SubmitError, TaskError};

use concurrent_futures::{Backend, Executor, Pool};

use crate::DemoResult;

/// `100 / x`: integer division, which panics for `x == 0` (Rust's ZeroDivisionError).
fn hundred_over(x: u64) -> u64 {
    100 / x
}

/// The batch, with a zero in the middle.
const BATCH: [u64; 6] = [1, 2, 4, 0, 5, 10];

/// A short description of a task's failure, without its backtrace.
pub(crate) fn describe(error: &TaskError) -> String {
    match error {
        TaskError::Panicked { message, .. } => format!("task panicked: {message}"),
        other => other.to_string(),
    }
}

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    let executor = Pool::with_workers(backend, 2)?;
    writeln!(out, "The batch: 100 / x for x in {BATCH:?}")?;

    // map(): one lazy iterator of results in input order; the first failure ends it.
    writeln!(out)?;
    writeln!(out, "map(hundred_over, batch):")?;
    let mut yielded = 0;
    for outcome in executor.map(hundred_over, BATCH, MapOptions::new())? {
        yielded += 1;
        match outcome {
            Ok(value) => writeln!(out, "  Ok({value})")?,
            Err(error) => writeln!(out, "  Err({}): the iteration ends here", describe(&error))?,
        }
    }
    writeln!(
        out,
        "  {} of {} items yielded; the rest were dropped (cancelled if not started)",
        yielded,
        BATCH.len()
    )?;

    // submit(): one Future per task, each holding its own outcome.
    writeln!(out)?;
    writeln!(out, "[executor.submit(hundred_over, x) for x in batch]:")?;
    let futures: Vec<(u64, Future<u64>)> = BATCH
        .iter()
        .map(|&x| Ok((x, executor.submit(hundred_over, x)?)))
        .collect::<Result<_, SubmitError>>()?;
    for (x, future) in &futures {
        match future.result() {
            Ok(value) => writeln!(out, "  100 / {x} = {value}")?,
            Err(error) => writeln!(out, "  100 / {x} -> {}", describe(&error))?,
        }
    }
    writeln!(
        out,
        "  {} of {} futures hold a value; the failure stayed in its own future",
        futures
            .iter()
            .filter(|(_, f)| f.exception().is_none())
            .count(),
        futures.len()
    )?;

    writeln!(out)?;
    writeln!(out, "{TABLE}")?;
    Ok(())
}

const TABLE: &str = "\
| Feature        | map()                                   | submit()                                    |
|----------------|-----------------------------------------|---------------------------------------------|
| Returns        | lazy iterator of Result<R, TaskError>   | one Future<R> per call                      |
| Order          | results in input order                  | completion order (with as_completed)        |
| Arguments      | one iterable; several args as tuples    | one argument per call; a tuple for several  |
| Use case       | batch: same function, many inputs       | different tasks or custom handling          |
| Error handling | first Err ends the iteration            | each error stays in its Future              |

Rule of thumb: map() to apply one function to many inputs; submit() for more control
over individual tasks (callbacks, as_completed, wait, cancel).";
