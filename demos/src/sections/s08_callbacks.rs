//! Section 8, "Callbacks on Futures": each factorial's future gets a callback with
//! `add_done_callback`, and the callback reports the result.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use cf_executor_api::Future;

use concurrent_futures::{Backend, Executor, Pool};

use crate::{BackendOutput, DemoResult};

/// Computes `n!` iteratively; `None` if it does not fit a `u128` (past 34!).
fn compute_factorial(n: u32) -> Option<u128> {
    (2..=u128::from(n)).try_fold(1_u128, u128::checked_mul)
}

/// The callback: formats its report and hands it to the printer.
///
/// Callbacks run in whichever thread completes the future, so two may run at once; they send
/// their lines to the main thread, which prints them in submission order. The text is still
/// the callback's.
fn on_complete(
    index: usize,
    n: u32,
    future: &Future<Option<u128>>,
    lines: &mpsc::Sender<(usize, String)>,
) {
    let line = match future.result() {
        Ok(Some(result)) => format!("  Callback: {n}! finished, result = {result}"),
        Ok(None) => format!("  Callback: {n}! finished, too large for u128"),
        Err(error) => format!("  Callback: {n}! failed: {error}"),
    };
    // The receiver outlives every callback unless the demo already failed.
    let _ = lines.send((index, line));
}

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    let inputs: [u32; 4] = [5, 8, 10, 12];
    let (sender, lines) = mpsc::channel();
    {
        let executor = Pool::with_workers(backend, 2)?;
        writeln!(out, "Submitting tasks with callbacks:")?;
        for (index, n) in inputs.into_iter().enumerate() {
            let future = executor.submit(compute_factorial, n)?;
            let sender = sender.clone();
            future.add_done_callback(move |f| on_complete(index, n, f, &sender));
        }
        drop(sender);

        // Print each callback's line as soon as every earlier one has been printed.
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        while next < inputs.len() {
            let (index, line) = lines
                .recv_timeout(Duration::from_secs(60))
                .map_err(|e| format!("no callback report within 60 s: {e}"))?;
            waiting.insert(index, line);
            while let Some(line) = waiting.remove(&next) {
                writeln!(out, "{line}")?;
                next += 1;
            }
        }
    }
    writeln!(out, "All tasks completed.")?;
    match backend {
        Backend::Thread => backend.say(
            out,
            format_args!(
                "Callbacks run on the pool's worker threads right after each task (or at once \
                 in the caller's thread if the future was already done)."
            ),
        )?,
        Backend::Cluster => backend.say(
            out,
            format_args!(
                "Callbacks run in this process, not on the nodes: on the cluster client's \
                 threads as each result arrives from the server (or at once in the caller's \
                 thread if the future was already done)."
            ),
        )?,
        // Every other backend runs tasks in worker processes.
        _ => backend.say(
            out,
            format_args!(
                "Callbacks run in this process, not in the workers: on the pool's result-reader \
                 threads as each result arrives (or at once in the caller's thread if the future \
                 was already done)."
            ),
        )?,
    }
    Ok(())
}
