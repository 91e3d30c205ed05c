//! A waiter registered with many futures at once: the blocking core of `wait` and
//! `as_completed`. Futures fire it with a key (the index of the future in the caller's
//! list); the waiter never holds a future, so waiting never keeps one alive.

use std::time::Instant;

use crate::primitive::{Condvar, Mutex};

#[derive(Debug)]
pub(crate) struct Waiter {
    fired: Mutex<Vec<usize>>,
    cond: Condvar,
}

impl Waiter {
    pub(crate) fn new() -> Self {
        Waiter {
            fired: Mutex::new(Vec::new()),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn fire(&self, key: usize) {
        self.fired.lock().push(key);
        self.cond.notify_one();
    }

    /// Blocks until at least one key fired, or `deadline`; returns the keys fired so far
    /// (empty only on timeout).
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Vec<usize> {
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
        std::mem::take(&mut *fired)
    }
}
