//! Section 6, "Error Handling with Futures": one task of four divides by zero. The failure is
//! read from its future twice: as the task's own error value (`Result<f64, String>`), and as a
//! panic the future carries (`TaskError::Panicked`), Rust's closest match to a raised exception.

use std::io::Write;

use cf_executor_api::{Future, SubmitError, TaskError};

use concurrent_futures::{Backend, Executor, Pool};

use crate::DemoResult;

/// Divides `a` by `b`, reporting a zero divisor as an error value. (Rust's `f64` division does
/// not fail: `30.0 / 0.0` is `inf`; so the task checks, and says so in its return type.)
fn divide((a, b): (f64, f64)) -> Quotient {
    if b == 0.0 {
        Err("division by zero".to_owned())
    } else {
        Ok(a / b)
    }
}

/// Divides `a` by `b` in integers, which panics on a zero divisor.
fn divide_or_panic((a, b): (i64, i64)) -> i64 {
    a / b
}

/// What `divide` returns: the quotient, or why there is none.
type Quotient = Result<f64, String>;

const TASKS: [(i64, i64); 4] = [(10, 2), (20, 4), (30, 0), (40, 5)];

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    let executor = Pool::with_workers(backend, 2)?;

    writeln!(
        out,
        "1. The task returns its failure: divide((a, b)) -> Result<f64, String>"
    )?;
    let futures: Vec<(Future<Quotient>, (f64, f64))> = TASKS
        .iter()
        .map(|&(a, b)| {
            let args = (a as f64, b as f64);
            Ok((executor.submit(divide, args)?, args))
        })
        .collect::<Result<_, SubmitError>>()?;
    for (future, (a, b)) in &futures {
        match future.result()? {
            Ok(result) => writeln!(out, "  {a:?} / {b:?} = {result:?}")?,
            Err(message) => {
                writeln!(out, "  {a:?} / {b:?} = ERROR ({message})")?;
                writeln!(out, "    future.result() = {:?}", future.result())?;
            }
        }
    }

    writeln!(out)?;
    writeln!(
        out,
        "2. The task panics: divide_or_panic((a, b)) -> i64 (integer division by zero panics)"
    )?;
    let futures: Vec<(Future<i64>, (i64, i64))> = TASKS
        .iter()
        .map(|&args| Ok((executor.submit(divide_or_panic, args)?, args)))
        .collect::<Result<_, SubmitError>>()?;
    for (future, (a, b)) in &futures {
        match future.result() {
            Ok(result) => writeln!(out, "  {a} / {b} = {result}")?,
            Err(TaskError::Panicked { .. }) => {
                writeln!(out, "  {a} / {b} = ERROR (the task panicked)")?;
                // Inspect the error stored in the future.
                writeln!(
                    out,
                    "    future.exception() = {}",
                    exception_summary(future.exception())
                )?;
            }
            Err(other) => return Err(other.into()),
        }
    }
    writeln!(
        out,
        "  (the panic was caught in the worker, which lives on: the other three ran normally)"
    )?;
    Ok(())
}

/// `Some(Panicked { .. })` with the backtrace summarised: it is long, and its frames differ
/// between a worker process and a worker thread.
fn exception_summary(exception: Option<TaskError>) -> String {
    match exception {
        Some(TaskError::Panicked {
            message,
            location,
            backtrace,
        }) => format!(
            "Some(Panicked {{ message: {message:?}, location: {location:?}, backtrace: {} }})",
            if backtrace.is_some() {
                "Some(<captured>)"
            } else {
                "None"
            }
        ),
        other => format!("{other:?}"),
    }
}
