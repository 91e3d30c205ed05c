//! What sits in the work queue ([`Work`]): one task, stored in its own future's allocation
//! ([`InlineTask`], so a submit allocates once), or one batch ([`Batch`], boxed as a [`Job`]).
//!
//! Running a job is split in two so that the worker can count itself available *between*
//! computing the outcome and publishing it. A caller that reads a result and submits again
//! then always finds the worker available and no second thread is started: this is what makes
//! "3 sequential tasks run on 1 thread" deterministic rather than the race it is in CPython,
//! where the worker releases its idle token only after the result is visible.

use cf_executor_api::{call_catching, drop_logging_panic, InlineTask, Promise, TaskError};

/// One queued unit of work.
pub(crate) enum Work {
    /// `spawn`/`submit`: the call lives in its future's allocation.
    Call(InlineTask),
    /// `submit_batch`.
    Batch(Box<dyn Job>),
}

impl Work {
    /// Runs the user's code (skipping cancelled items); keeps the last outcome for `publish`.
    pub(crate) fn run(&mut self) {
        match self {
            Work::Call(task) => task.run(),
            Work::Batch(job) => job.run(),
        }
    }

    /// Whether publishing will run done-callbacks on this thread.
    pub(crate) fn has_callbacks(&self) -> bool {
        match self {
            Work::Call(task) => task.has_done_callbacks(),
            Work::Batch(job) => job.has_callbacks(),
        }
    }

    /// Runs the work and completes its future(s), calling `ready` once in between: before
    /// the last outcome becomes visible, or after its done-callbacks ran if it has any.
    pub(crate) fn run_and_publish(self, ready: &mut dyn FnMut()) {
        match self {
            Work::Call(task) => {
                if let Err(e) = task.run_and_publish(ready) {
                    internal_double_completion(&e);
                }
            }
            mut work @ Work::Batch(_) => {
                work.run();
                if work.has_callbacks() {
                    work.publish();
                    ready();
                } else {
                    ready();
                    work.publish();
                }
            }
        }
    }

    /// Completes the future(s) `run` left unpublished.
    pub(crate) fn publish(self) {
        match self {
            Work::Call(task) => {
                if let Err(e) = task.publish() {
                    internal_double_completion(&e);
                }
            }
            Work::Batch(job) => job.publish(),
        }
    }

    /// The work will never run: cancel its futures (`None`) or fail them with `error`.
    pub(crate) fn abandon(self, error: Option<TaskError>) {
        match self {
            Work::Call(task) => task.abandon(error),
            Work::Batch(job) => job.abandon(error),
        }
    }
}

/// A unit of queued work, with its promise(s).
pub(crate) trait Job: Send {
    /// Runs the user's code (skipping cancelled items); keeps the last outcome for `publish`.
    fn run(&mut self);
    /// Whether publishing will run done-callbacks on this thread.
    fn has_callbacks(&self) -> bool;
    /// Completes the future(s) `run` left unpublished.
    fn publish(self: Box<Self>);
    /// The job will never run: cancel its futures (`None`) or fail them with `error`.
    fn abandon(self: Box<Self>, error: Option<TaskError>);
}

/// One task function over several arguments, run in order, each with its own promise.
pub(crate) struct Batch<F, A, R> {
    f: F,
    items: Vec<(A, Promise<R>)>,
    last: Option<(Promise<R>, Result<R, TaskError>)>,
}

impl<F, A, R> Batch<F, A, R> {
    pub(crate) fn new(f: F, items: Vec<(A, Promise<R>)>) -> Self {
        Batch {
            f,
            items,
            last: None,
        }
    }
}

impl<F, A, R> Job for Batch<F, A, R>
where
    F: Fn(A) -> R + Copy + Send,
    A: Send,
    R: Send + Sync,
{
    fn run(&mut self) {
        let items = std::mem::take(&mut self.items);
        let count = items.len();
        for (i, (arg, promise)) in items.into_iter().enumerate() {
            // A cancelled item is skipped; the others still run, even if the destructor of its
            // unused argument panics.
            if !promise.set_running_or_notify_cancel() {
                drop_logging_panic(arg, "the argument of a cancelled batch item");
                continue;
            }
            let f = self.f;
            let outcome = call_catching(move || f(arg));
            if i + 1 == count {
                self.last = Some((promise, outcome));
            } else {
                // Published (and the promise dropped) at once, so a `map` consumer reading
                // this item does not wait for the rest of the batch. Nobody may hold the
                // future any more: the value then goes with the promise, and a panic in its
                // destructor must not stop the rest of the batch.
                settle(&promise, outcome);
                drop_logging_panic(promise, "the result of a batch item nobody kept");
            }
        }
    }

    fn has_callbacks(&self) -> bool {
        self.last
            .as_ref()
            .is_some_and(|(p, _)| p.has_done_callbacks())
    }

    fn publish(self: Box<Self>) {
        if let Some((promise, outcome)) = self.last {
            settle(&promise, outcome);
        }
    }

    fn abandon(self: Box<Self>, error: Option<TaskError>) {
        // Every future first, then the arguments, whose destructors may panic.
        for (_, promise) in &self.items {
            abandon_one(promise, error.clone());
        }
        for (arg, _) in self.items {
            drop_logging_panic(arg, "the argument of a batch item that will not run");
        }
    }
}

fn settle<R>(promise: &Promise<R>, outcome: Result<R, TaskError>) {
    if let Err(e) = promise.set_outcome(outcome) {
        internal_double_completion(&e);
    }
}

/// Only this pool completes a running future, so this is a bug, not a user error.
fn internal_double_completion(e: &dyn std::fmt::Display) {
    guarded!(error!(
        "internal: a worker completed a task twice: {e}; please report this"
    ));
}

fn abandon_one<R>(promise: &Promise<R>, error: Option<TaskError>) {
    match error {
        None => {
            promise.cancel();
        }
        Some(error) => {
            // A future the user already cancelled stays cancelled.
            let _ = promise.set_error(error);
        }
    }
}
