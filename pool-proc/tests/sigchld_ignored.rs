//! A parent that ignores `SIGCHLD`, as daemons often set it: the kernel then reaps the workers
//! itself and their exit status cannot be read. A worker retiring after its
//! `max_tasks_per_child` still ends as asked, not as a death, so a `BreakPool` pool keeps
//! working. A binary of its own: the signal's disposition is process-wide.
#![cfg(unix)]
#![allow(unsafe_code)] // the test sets SIGCHLD to SIG_IGN, as a daemon would

mod common;

use std::time::Duration;

use cf_pool_proc::{Executor, ProcessPoolExecutor, WorkerDeath};
use common::within;

const LIMIT: Duration = Duration::from_secs(60);

fn double(x: u64) -> u64 {
    x * 2
}

#[test]
fn workers_retiring_while_sigchld_is_ignored_do_not_break_the_pool() {
    // SAFETY: sets a signal's disposition to "ignore"; no handler runs, and the test binary's
    // other threads do not depend on SIGCHLD.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    within(LIMIT * 2, "retirements with SIGCHLD ignored", || {
        let pool = ProcessPoolExecutor::builder()
            .max_workers(1)
            .max_tasks_per_child(1)
            .on_worker_death(WorkerDeath::BreakPool)
            .build()
            .unwrap();
        for x in 0..5 {
            let f = pool.submit(double, x).unwrap();
            assert_eq!(f.result_timeout(LIMIT), Ok(&(x * 2)), "task {x}");
        }
    });
}
