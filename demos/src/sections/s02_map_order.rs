//! Section 2, "executor.map(): Ordered Parallel Mapping": results come back in input order, each
//! tagged with the worker that computed it.

use std::collections::BTreeSet;
use std::io::Write;

use cf_executor_api::MapOptions;

use concurrent_futures::{Backend, Executor, Pool};

use crate::{BackendOutput, DemoResult, WorkerId};

/// Processes an item and returns (input, result, worker): Python's `(x, x * x, os.getpid())`.
fn process_item(x: u64) -> (u64, u64, WorkerId) {
    (x, x * x, WorkerId::current())
}

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    // map() preserves input order.
    let results: Vec<(u64, u64, WorkerId)> = {
        let executor = Pool::with_workers(backend, 2)?;
        let results = executor
            .map(process_item, 0..8, MapOptions::new())?
            .collect::<Result<_, _>>()?;
        results
    };

    let main = WorkerId::current();
    writeln!(out, "Main: {}", backend.worker_label(main))?;
    writeln!(out)?;
    writeln!(out, "Results (order preserved):")?;
    for (x, squared, worker) in &results {
        writeln!(
            out,
            "  {x}^2 = {squared} (worker {})",
            backend.worker_label(*worker)
        )?;
    }

    let workers: BTreeSet<WorkerId> = results.iter().map(|(_, _, w)| *w).collect();
    let labels: Vec<String> = workers.iter().map(|w| backend.worker_label(*w)).collect();
    writeln!(out)?;
    writeln!(out, "Unique workers: {{{}}}", labels.join(", "))?;
    writeln!(
        out,
        "(Which worker runs what is up to the pool: with tasks this small, the first worker\n \
         to start may take them all before the second is up.)"
    )?;
    writeln!(
        out,
        "All workers differ from main: {}",
        workers.iter().all(|w| *w != main)
    )?;
    let pids_differ = workers.iter().all(|w| w.pid != main.pid);
    match backend {
        Backend::Thread => backend.say(
            out,
            format_args!(
                "Worker pids differ from the main pid: {pids_differ} (worker threads live in the main process)"
            ),
        )?,
        Backend::Cluster => backend.say(
            out,
            format_args!(
                "Worker pids differ from the main pid: {pids_differ} (each worker is a process on a node)"
            ),
        )?,
        // Every other backend runs tasks in worker processes.
        _ => backend.say(
            out,
            format_args!(
                "Worker pids differ from the main pid: {pids_differ} (each worker is its own process)"
            ),
        )?,
    }
    Ok(())
}
