//! Looking for an event without sleeping, before a wait sleeps: only when spinning can help.
//!
//! A wait that sleeps costs a futex wake-up on both sides, several microseconds (more on a
//! virtual machine): the side that completes the event makes a system call, and the side that
//! waits is switched out and back in. A short spin saves both when the event comes soon, which
//! is the common case for a result read right after a short task was submitted, and for
//! `as_completed` and `wait` while a pool is working through a batch of short tasks.
//!
//! A spin finds the event early only if the thread that makes it runs meanwhile on another CPU.
//! With one CPU for this process (`taskset -c 0`, a one-CPU quota; read once, from
//! `available_parallelism`, which honours the affinity mask and cgroup quotas) spinning can only
//! delay that thread, so waits sleep at once. With more CPUs, a busy machine may still leave no
//! CPU for the producer: each thread adapts to how its own spins went, as adaptive mutexes do.
//! A spin that found the event restores its full credit; one that ran out costs a credit; with
//! none left the thread sleeps at once, and probes again with one spin every [`PROBE_EVERY`]th
//! wait (so a thread that waits for long tasks, where spinning never pays, wastes one short spin
//! in 16 waits at most).

#[cfg(not(loom))]
use std::cell::Cell;
#[cfg(not(loom))]
use std::sync::OnceLock;
#[cfg(not(loom))]
use std::time::{Duration, Instant};

/// Failed spins in a row before a thread stops spinning.
#[cfg(not(loom))]
const CREDIT: u8 = 4;
/// With no credit left, one wait in this many spins anyway, to notice when spinning pays
/// again.
#[cfg(not(loom))]
const PROBE_EVERY: u8 = 16;
/// Rounds of spin hints, doubling from one: 127 hints in all.
#[cfg(not(loom))]
const ROUNDS: u32 = 7;
/// How long a spin yields its CPU between looks after the hints.
#[cfg(not(loom))]
const YIELD_FOR: Duration = Duration::from_micros(20);

#[cfg(not(loom))]
thread_local! {
    /// (credit, waits since the credit ran out)
    static STATE: Cell<(u8, u8)> = const { Cell::new((CREDIT, 0)) };
}

/// Whether another CPU can run the producer while this thread spins; decided once.
#[cfg(not(loom))]
fn several_cpus() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// Whether this wait should spin before it sleeps.
#[cfg(not(loom))]
fn should_spin() -> bool {
    several_cpus()
        && STATE
            .try_with(|state| match state.get() {
                (0, skipped) if skipped + 1 < PROBE_EVERY => {
                    state.set((0, skipped + 1));
                    false
                }
                _ => true,
            })
            .unwrap_or(false)
}

/// How the spin went: `found` if it saw the event.
#[cfg(not(loom))]
fn record(found: bool) {
    let _ = STATE.try_with(|state| {
        let (credit, _) = state.get();
        state.set(if found {
            (CREDIT, 0)
        } else {
            (credit.saturating_sub(1), 0)
        });
    });
}

/// `true` as soon as `happened` is, looking without sleeping while this thread's policy says
/// spinning can help: [`ROUNDS`] rounds of spin hints, then yields between looks until
/// [`YIELD_FOR`] has passed (crossbeam's backoff, bounded in time). A yield can hand the CPU to
/// another runnable thread for a whole time slice, so on a busy machine this can last
/// milliseconds: only untimed waits call it. `false` if it did not happen meanwhile; the
/// caller then sleeps.
#[cfg(not(loom))]
pub(crate) fn until(happened: impl Fn() -> bool) -> bool {
    if happened() {
        return true;
    }
    if !should_spin() {
        return false;
    }
    for round in 0..ROUNDS {
        for _ in 0..1u32 << round {
            std::hint::spin_loop();
        }
        if happened() {
            record(true);
            return true;
        }
    }
    let start = Instant::now();
    while start.elapsed() < YIELD_FOR {
        std::thread::yield_now();
        if happened() {
            record(true);
            return true;
        }
    }
    record(false);
    false
}

/// Under loom every step is modelled; a spin adds nothing there but states.
#[cfg(loom)]
pub(crate) fn until(_happened: impl Fn() -> bool) -> bool {
    false
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn failed_spins_stop_spinning_and_probes_resume_it() {
        if !several_cpus() {
            // One CPU: never spin, whatever the history.
            record(true);
            assert!(!should_spin());
            return;
        }
        assert!(should_spin(), "a fresh thread spins");
        for _ in 0..CREDIT {
            assert!(should_spin());
            record(false);
        }
        let spins: Vec<bool> = (0..PROBE_EVERY).map(|_| should_spin()).collect();
        assert_eq!(spins.iter().filter(|s| **s).count(), 1, "{spins:?}");
        assert_eq!(spins.last(), Some(&true), "the probe comes last: {spins:?}");
        // The probe found the event: spinning is back.
        record(true);
        assert!(should_spin() && should_spin());
    }

    #[test]
    fn until_sees_an_event_that_already_happened_and_gives_up_on_one_that_does_not() {
        assert!(until(|| true));
        // Never happens: whatever the policy, it gives up (after at most a short spin).
        assert!(!until(|| false));
    }
}
