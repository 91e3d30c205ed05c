//! A waiter registered with many futures at once: the blocking core of `wait` and
//! `as_completed`. Futures fire it with a key (the index of the future in the caller's
//! list); the waiter never holds a future, so waiting never keeps one alive.
//!
//! The fired keys go into a buffer sized up front for every future registered, and a wait
//! hands that buffer over by swapping it with the caller's (emptied) one, so neither side
//! allocates after the start however many futures complete: with thousands of futures, the
//! growth of these buffers (each large reallocation making the allocator sweep its caches)
//! cost more than the rest of `as_completed`.

use std::time::Instant;

use crate::primitive::{Condvar, Mutex};

#[derive(Debug)]
pub(crate) struct Waiter {
    fired: Mutex<Vec<usize>>,
    cond: Condvar,
}

impl Waiter {
    /// A waiter expecting up to `keys` fires.
    pub(crate) fn with_capacity(keys: usize) -> Self {
        Waiter {
            fired: Mutex::new(Vec::with_capacity(keys)),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn fire(&self, key: usize) {
        self.fired.lock().push(key);
        self.cond.notify_one();
    }

    /// Blocks until at least one key fired, or `deadline`; then swaps the keys fired so far
    /// into `out`, which must be empty (it becomes the waiter's next buffer). Returns `false`
    /// (and leaves `out` empty) only on timeout.
    pub(crate) fn wait_into(&self, deadline: Option<Instant>, out: &mut Vec<usize>) -> bool {
        debug_assert!(out.is_empty());
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
        !out.is_empty()
    }
}
