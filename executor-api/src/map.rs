//! `Executor::map`: a lazy iterator of results in input order.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use cf_futures_core::{Future, TaskError};

use crate::SubmitError;

/// Options of [`Executor::map`](crate::Executor::map), as Python's `map(timeout=, chunksize=,
/// buffersize=)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cf_executor_api::MapOptions;
///
/// let o = MapOptions::new().chunksize(16).buffersize(4).timeout(Duration::from_secs(30));
/// assert_eq!((o.chunksize, o.buffersize), (16, Some(4)));
/// assert_eq!(MapOptions::default().chunksize, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapOptions {
    /// Overall time limit, measured from the `map` call. `None` waits forever.
    pub timeout: Option<Duration>,
    /// Items per task, at least 1. A chunk is one task on every executor (one message for a
    /// process pool) whose results come back together, as in Python's process pool: an item is
    /// yielded once its whole chunk is done, and a `timeout` that runs out during a chunk
    /// fails the chunk, items that finished included. Python's thread pool ignores
    /// `chunksize`; use 1 (the default) for the same behaviour.
    pub chunksize: usize,
    /// With `Some(n)`, at most `n` chunks are submitted ahead of the consumer and the input is
    /// pulled lazily, so infinite iterators work. `None` submits every input at the call.
    pub buffersize: Option<usize>,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            timeout: None,
            chunksize: 1,
            buffersize: None,
        }
    }
}

impl MapOptions {
    /// The defaults: no timeout, `chunksize` 1, no `buffersize`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// Sets [`chunksize`](Self::chunksize).
    #[must_use]
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = chunksize;
        self
    }
    /// Sets [`buffersize`](Self::buffersize).
    #[must_use]
    pub fn buffersize(mut self, buffersize: usize) -> Self {
        self.buffersize = Some(buffersize);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), SubmitError> {
        if self.chunksize == 0 {
            return Err(SubmitError::InvalidArgument {
                name: "chunksize",
                message: "must be at least 1 (got 0)".into(),
            });
        }
        if self.buffersize == Some(0) {
            return Err(SubmitError::InvalidArgument {
                name: "buffersize",
                message: "must be at least 1 (got 0); use None for no limit".into(),
            });
        }
        Ok(())
    }
}

/// One submitted unit of a `map`: a single task, or a chunk whose results travel together.
pub(crate) enum Unit<R> {
    One(Future<R>),
    Chunk(Future<Vec<Result<R, TaskError>>>),
}

impl<R> Unit<R> {
    fn cancel(&self) {
        match self {
            Unit::One(f) => f.cancel(),
            Unit::Chunk(f) => f.cancel(),
        };
    }

    /// Waits up to `left`; `false` if the unit is still not done.
    fn wait(&self, left: Duration) -> bool {
        match self {
            Unit::One(f) => f.result_timeout(left).is_ok() || f.done(),
            Unit::Chunk(f) => f.result_timeout(left).is_ok() || f.done(),
        }
    }
}

/// Submits the next unit of input; `Ok(None)` when the input is exhausted.
pub(crate) type Refill<'a, R> =
    Box<dyn FnMut() -> Result<Option<Unit<R>>, SubmitError> + Send + 'a>;

/// The iterator returned by [`Executor::map`](crate::Executor::map): results in input order.
///
/// Yields `Ok(value)` per input; the first `Err` (a failed task, or the timeout) is yielded once
/// and ends the iteration. Ending early or dropping the iterator cancels every task that has not
/// started.
#[must_use = "without buffersize the work is already submitted; iterate to read the results"]
pub struct Map<'a, R> {
    pending: VecDeque<Unit<R>>,
    /// The results of the chunk being yielded.
    ready: Option<std::vec::IntoIter<Result<R, TaskError>>>,
    refill: Option<Refill<'a, R>>,
    /// Units (tasks or chunks) allowed in flight: `buffersize`, or unbounded.
    capacity: usize,
    deadline: Option<(Instant, Duration)>,
    /// A lazy refill refused by the executor (e.g. shut down meanwhile), yielded last.
    refused: Option<TaskError>,
    finished: bool,
}

impl<'a, R> Map<'a, R> {
    pub(crate) fn new(options: MapOptions, mut refill: Refill<'a, R>) -> Result<Self, SubmitError> {
        let start = Instant::now();
        let mut pending = VecDeque::new();
        let capacity = options.buffersize.unwrap_or(usize::MAX);
        while pending.len() < capacity {
            match refill()? {
                Some(unit) => pending.push_back(unit),
                None => break,
            }
        }
        let deadline = options
            .timeout
            .and_then(|t| start.checked_add(t).map(|d| (d, t)));
        Ok(Map {
            pending,
            ready: None,
            refill: options.buffersize.is_some().then_some(refill),
            capacity,
            deadline,
            refused: None,
            finished: false,
        })
    }

    fn top_up(&mut self) {
        let Some(refill) = self.refill.as_mut() else {
            return;
        };
        while self.pending.len() < self.capacity {
            // The input iterator is the caller's code. If it panics, the map ends, as a Python
            // `map` ends when its input raises: what is in flight is cancelled, and the panic
            // goes on to the caller (a later `next` yields nothing).
            let refilled = match catch_unwind(AssertUnwindSafe(&mut *refill)) {
                Ok(refilled) => refilled,
                Err(payload) => {
                    self.finish();
                    resume_unwind(payload);
                }
            };
            match refilled {
                Ok(Some(unit)) => self.pending.push_back(unit),
                Ok(None) => {
                    self.refill = None;
                    break;
                }
                Err(e) => {
                    // What is in flight is good; the refusal is yielded after it.
                    self.refill = None;
                    self.refused = Some(e.into());
                    break;
                }
            }
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.refill = None;
        self.ready = None;
        for unit in self.pending.drain(..) {
            unit.cancel();
        }
    }

    fn fail(&mut self, error: TaskError) -> Option<Result<R, TaskError>> {
        self.finish();
        Some(Err(error))
    }
}

fn shared_error() -> TaskError {
    TaskError::Broken {
        reason: "internal: a map future was shared; please report this".into(),
    }
}

impl<R> Iterator for Map<'_, R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(results) = self.ready.as_mut() {
                match results.next() {
                    Some(Ok(value)) => return Some(Ok(value)),
                    Some(Err(e)) => return self.fail(e),
                    None => self.ready = None,
                }
            }
            let Some(front) = self.pending.pop_front() else {
                self.finished = true;
                return self.refused.take().map(Err);
            };
            if let Some((deadline, timeout)) = self.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if !front.wait(left) {
                    front.cancel();
                    return self.fail(TaskError::timeout(timeout));
                }
            }
            match front {
                Unit::One(f) => match f.try_unwrap().unwrap_or_else(|_| Err(shared_error())) {
                    Ok(value) => {
                        self.top_up();
                        return Some(Ok(value));
                    }
                    Err(e) => return self.fail(e),
                },
                Unit::Chunk(f) => match f.try_unwrap().unwrap_or_else(|_| Err(shared_error())) {
                    Ok(results) => {
                        self.ready = Some(results.into_iter());
                        self.top_up();
                    }
                    Err(e) => return self.fail(e),
                },
            }
        }
    }
}

impl<R> Drop for Map<'_, R> {
    fn drop(&mut self) {
        for unit in self.pending.drain(..) {
            unit.cancel();
        }
    }
}

impl<R> fmt::Debug for Map<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.pending.len())
            .field("lazy", &self.refill.is_some())
            .field("finished", &self.finished)
            .finish()
    }
}
