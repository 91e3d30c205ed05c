//! Section 5, "as_completed(): Results in Completion Order": tasks that take less time the higher
//! their id come back shortest first, not in submission order.

use std::io::Write;
use std::time::{Duration, Instant};

use cf_executor_api::{as_completed, Future, SubmitError};

use concurrent_futures::{Backend, Executor, Pool};

use crate::DemoResult;

const TASKS: u64 = 5;

/// Simulates work of variable duration: higher ids finish faster.
fn variable_work(task_id: u64) -> (u64, f64) {
    let duration = (0.5 - task_id as f64 * 0.1).max(0.05);
    std::thread::sleep(Duration::from_secs_f64(duration));
    (task_id, duration)
}

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    writeln!(
        out,
        "{TASKS} tasks on {TASKS} workers; task i sleeps max(0.5 - 0.1 * i, 0.05) seconds."
    )?;
    writeln!(
        out,
        "(The chapter uses 3 workers. Then tasks 3 and 4 wait for a free worker and finish at\n \
         the same moment as task 0, a three-way tie whose order changes from run to run; one\n \
         worker per task keeps the order the timings say.)"
    )?;

    let executor = Pool::with_workers(backend, TASKS as usize)?;
    let start = Instant::now();
    let futures: Vec<Future<(u64, f64)>> = (0..TASKS)
        .map(|i| executor.submit(variable_work, i))
        .collect::<Result<_, SubmitError>>()?;

    writeln!(out, "Results in completion order:")?;
    for future in as_completed(&futures, None) {
        let future = future?;
        let (task_id, duration) = *future.result()?;
        writeln!(
            out,
            "  Task {task_id} completed (took {duration:.2}s), {:.3}s after submit",
            start.elapsed().as_secs_f64()
        )?;
    }
    Ok(())
}
