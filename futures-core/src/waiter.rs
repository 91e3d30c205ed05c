//! A waiter registered with many futures at once: the blocking core of `wait` and
//! `as_completed`. Futures fire it with a key (the index of the future in the caller's
//! list); the waiter never holds a future, so waiting never keeps one alive.
//!
//! The fired keys go into a buffer sized up front for every future registered, and a wait
//! hands that buffer over by swapping it with the caller's (emptied) one, so neither side
//! allocates after the start however many futures complete: with thousands of futures, the
//! growth of these buffers (each large reallocation making the allocator sweep its caches)
//! cost more than the rest of `as_completed`.
//!
//! An untimed wait that finds no key looks again without sleeping for a few microseconds first,
//! as [`spin::until`] decides, before it sleeps on the condvar. While a pool works through a
//! batch of short tasks, keys come every few hundred nanoseconds: sleeping between them cost a
//! futex wake-up on the completing worker and a switch on the waiting side for every few keys
//! (about 320 of each per round of 20 000 no-op tasks on 2 CPUs, nearly every futex call the
//! round made). A timed wait sleeps at once, as `Future::result_timeout` does: a look yields its
//! CPU, and when other threads are runnable one yield can last a whole time slice
//! (milliseconds), which a short timeout must not overrun.

use std::time::Instant;

use crate::primitive::{AtomicBool, Condvar, Mutex, Ordering};
use crate::spin;

#[derive(Debug)]
pub(crate) struct Waiter {
    fired: Mutex<Vec<usize>>,
    /// Whether `fired` holds a key; written under its lock, read without it by a spinning wait.
    any: AtomicBool,
    cond: Condvar,
}

impl Waiter {
    /// A waiter expecting up to `keys` fires.
    pub(crate) fn with_capacity(keys: usize) -> Self {
        Waiter {
            fired: Mutex::new(Vec::with_capacity(keys)),
            any: AtomicBool::new(false),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn fire(&self, key: usize) {
        let mut fired = self.fired.lock();
        fired.push(key);
        self.any.store(true, Ordering::Release);
        drop(fired);
        self.cond.notify_one();
    }

    /// Blocks until at least one key fired, or `deadline`; then swaps the keys fired so far
    /// into `out`, which must be empty (it becomes the waiter's next buffer). Returns `false`
    /// (and leaves `out` empty) only on timeout. Without a deadline, looks without sleeping
    /// first (see the module docs).
    pub(crate) fn wait_into(&self, deadline: Option<Instant>, out: &mut Vec<usize>) -> bool {
        debug_assert!(out.is_empty());
        if deadline.is_none() {
            spin::until(|| self.any.load(Ordering::Acquire));
        }
        let mut fired = self.fired.lock();
        while fired.is_empty() {
            match deadline {
                None => self.cond.wait(&mut fired),
                Some(d) => {
                    if Instant::now() >= d || self.cond.wait_until(&mut fired, d) {
                        break;
                    }
                }
            }
        }
        std::mem::swap(&mut *fired, out);
        self.any.store(false, Ordering::Relaxed);
        !out.is_empty()
    }
}
