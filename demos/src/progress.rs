//! A one-line progress report on stderr for the demos that take more than a second.

use std::io::{IsTerminal, Write};

/// `label: done/total, what` on one stderr line, rewritten in place; silent when stderr is not
/// a terminal (tests, logs, pipes), so it never mixes into compared output.
///
/// # Examples
///
/// ```
/// let mut p = cf_demos::Progress::new("cpu", 2);
/// p.step("sequential");
/// p.step("sequential");
/// p.finish();
/// ```
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    done: usize,
    total: usize,
    enabled: bool,
}

impl Progress {
    /// A progress line for `total` steps.
    #[must_use]
    pub fn new(label: &'static str, total: usize) -> Self {
        Progress {
            label,
            done: 0,
            total,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// One more step done; `what` says what is running now.
    pub fn step(&mut self, what: &str) {
        self.done = (self.done + 1).min(self.total);
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2K  {}: {}/{} {what}",
                self.label, self.done, self.total
            );
            let _ = err.flush();
        }
    }

    /// Clears the line, e.g. before printing to stdout on the same terminal; the next
    /// [`step`](Self::step) draws it again.
    pub fn clear(&mut self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }

    /// Clears the line for good.
    pub fn finish(&mut self) {
        self.clear();
        self.enabled = false;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
