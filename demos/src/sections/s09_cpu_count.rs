//! Section 9, "os.cpu_count() and Choosing max_workers": `cpu_count()`, the default
//! `max_workers`, and 8 tasks spread over 4 workers.

use std::collections::BTreeSet;
use std::io::Write;

use cf_executor_api::{cpu_count, MapOptions};

use concurrent_futures::{Backend, Executor, Pool};

use crate::{BackendOutput, DemoResult, WorkerId};

/// Returns the worker that ran it: Python's `os.getpid()`, plus the thread.
fn get_worker(_: u64) -> WorkerId {
    WorkerId::current()
}

pub(crate) fn run(backend: Backend, out: &mut dyn Write) -> DemoResult {
    // cpu_count() tells us how many CPUs this process may use (affinity and cgroup quotas
    // included, as Python 3.13's os.process_cpu_count()).
    let cpus = cpu_count();
    writeln!(out, "cpu_count(): {cpus}")?;
    assert!(cpus >= 1, "cpu_count() is never 0");

    // The default max_workers.
    {
        let executor = Pool::new(backend)?;
        let workers = executor.max_workers();
        match backend {
            Backend::Thread => backend.say(
                out,
                format_args!("Default max_workers: {workers} (= min(32, cpu_count() + 4))"),
            )?,
            Backend::Cluster => backend.say(
                out,
                format_args!(
                    "Default max_workers: {workers} (= cpu_count() here; how many tasks run at \
                     once is up to the nodes, each as many as its workers)"
                ),
            )?,
            _ => backend.say(
                out,
                format_args!("Default max_workers: {workers} (= cpu_count())"),
            )?,
        }
    }

    // Practical: which workers ran 8 tasks on a pool of 4.
    let workers: Vec<WorkerId> = {
        let executor = Pool::with_workers(backend, 4)?;
        let workers = executor
            .map(get_worker, 0..8, MapOptions::new())?
            .collect::<Result<_, _>>()?;
        workers
    };
    let main = WorkerId::current();
    let label = |w: &WorkerId| backend.worker_label(*w);
    let unique: BTreeSet<WorkerId> = workers.iter().copied().collect();
    writeln!(out)?;
    writeln!(out, "8 tasks across 4 workers:")?;
    writeln!(
        out,
        "  Workers: [{}]",
        workers.iter().map(label).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(
        out,
        "  Unique workers: {{{}}}",
        unique.iter().map(label).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(
        out,
        "  All differ from main ({}): {}",
        label(&main),
        workers.iter().all(|w| *w != main)
    )?;
    let pids_differ = workers.iter().all(|w| w.pid != main.pid);
    backend.say(
        out,
        format_args!(
            "  All pids differ from main (pid={}): {pids_differ}",
            main.pid
        ),
    )?;
    Ok(())
}
