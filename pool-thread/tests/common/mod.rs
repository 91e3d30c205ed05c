//! Helpers shared by the thread pool's tests: every wait here is bounded.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Long enough that only a hang reaches it (wider under Miri, which interprets every
/// instruction).
pub const LIMIT: Duration = if cfg!(miri) {
    Duration::from_secs(600)
} else {
    Duration::from_secs(30)
};

/// A gate tasks wait on until the test opens it; a task never waits past [`LIMIT`].
#[derive(Clone, Default)]
pub struct Latch(Arc<(Mutex<bool>, Condvar)>);

impl Latch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    /// Blocks until opened; panics after [`LIMIT`].
    pub fn wait(&self) {
        let (lock, cond) = &*self.0;
        let (open, timeout) = cond
            .wait_timeout_while(lock.lock().unwrap(), LIMIT, |open| !*open)
            .unwrap();
        assert!(
            *open && !timeout.timed_out(),
            "latch not opened within {LIMIT:?}"
        );
    }
}

/// Opens the latch when dropped, so a failing assertion never leaves tasks blocked.
pub struct OpenOnDrop(pub Latch);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Polls `condition` every millisecond; panics with `what` after [`LIMIT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The current thread's name.
pub fn thread_name() -> String {
    thread::current().name().unwrap_or("<unnamed>").to_owned()
}
