//! The watchdog thread, started with the first task that has a time limit: it kills the worker
//! of a task that overran its limit (the only way to stop arbitrary code), and ends with the
//! pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::state::{Pool, PoolState};
use crate::sys;

impl Pool {
    /// Kills workers whose timed task overran; runs until the pool is shut down and empty.
    fn watchdog(&self) {
        self.adopt_thread();
        let mut state = self.state.lock();
        loop {
            if state.shutdown && state.slots.is_empty() {
                state.watchdog = false;
                state.own_threads.remove(&std::thread::current().id());
                return;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            for (_, slot) in &mut state.slots {
                if slot.reaping || slot.timed_out.is_some() {
                    continue;
                }
                let timed = slot
                    .in_flight
                    .iter()
                    .find_map(|(task, f)| f.deadline.map(|(at, limit)| (*task, at, limit)));
                let Some((task, at, limit)) = timed else {
                    continue;
                };
                if at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    continue;
                }
                if let Some(pid) = slot.pid {
                    guarded!(warn!(
                        "cf-pool-proc: task ran past its {limit:?} limit; killing worker {pid}"
                    ));
                    slot.timed_out = Some((task, limit));
                    let _ = sys::signal(pid, sys::Signal::Kill);
                }
            }
            let wake = next.unwrap_or(now + Duration::from_secs(1));
            self.timer.wait_until(&mut state, wake);
        }
    }

    /// Starts the watchdog if it is not running. A pool whose watchdog cannot start must not
    /// take a timed task: its limit would never be enforced.
    pub(crate) fn start_watchdog(self: &Arc<Self>, state: &mut PoolState) -> std::io::Result<()> {
        if state.watchdog {
            return Ok(());
        }
        let pool = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("cf-proc-watchdog".into())
            .spawn(move || pool.watchdog())?;
        state.watchdog = true;
        state.feeders.push(handle);
        Ok(())
    }
}
