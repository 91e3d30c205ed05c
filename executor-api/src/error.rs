use cf_futures_core::TaskError;

/// Why an executor refused work.
///
/// # Examples
///
/// ```
/// use cf_executor_api::SubmitError;
/// let e = SubmitError::Shutdown;
/// assert!(e.to_string().contains("shut down"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// `shutdown` was called; the executor takes no new work.
    #[error("cannot submit: the executor has been shut down; create a new executor for more work")]
    Shutdown,
    /// The executor cannot run tasks any more (its initializer failed, its workers were killed).
    #[error("cannot submit: the executor is broken: {reason}; create a new executor")]
    Broken {
        /// Why the executor broke.
        reason: String,
    },
    /// A thread the task needs could not be started, and the task was not queued: the
    /// operating system refused it (too many threads, out of memory). On the thread pool, a
    /// worker when none is running; on the process pool, the watchdog that enforces time
    /// limits, for a task that has one. The executor is not broken: a later `submit` tries
    /// again.
    #[error(
        "cannot submit: {reason}; the task was not queued. The executor is not broken: submit \
         again once the cause is gone (too many threads or processes: end some or raise \
         `ulimit -u`)"
    )]
    WorkerStartFailed {
        /// What the operating system said.
        reason: String,
    },
    /// An argument is out of range, e.g. `chunksize = 0`.
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl From<SubmitError> for TaskError {
    /// A submit refused in the middle of a lazy `map` surfaces as this item's error: a shut
    /// down executor's as [`TaskError::Cancelled`] (the item never started, as if
    /// `shutdown(cancel_futures)` had cancelled it), a broken one's as [`TaskError::Broken`]
    /// with the same reason, a worker that could not start as
    /// [`TaskError::WorkerStartFailed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_executor_api::{SubmitError, TaskError};
    ///
    /// assert_eq!(TaskError::from(SubmitError::Shutdown), TaskError::Cancelled);
    /// let broken = SubmitError::Broken { reason: "the initializer failed".into() };
    /// assert_eq!(
    ///     TaskError::from(broken).to_string(),
    ///     "executor is broken: the initializer failed; create a new executor"
    /// );
    /// ```
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Shutdown => TaskError::Cancelled,
            SubmitError::Broken { reason } => TaskError::Broken { reason },
            SubmitError::WorkerStartFailed { reason } => TaskError::WorkerStartFailed { reason },
            other @ SubmitError::InvalidArgument { .. } => TaskError::Broken {
                reason: other.to_string(),
            },
        }
    }
}

/// A builder was given settings it cannot honour.
///
/// # Examples
///
/// ```
/// let e = cf_executor_api::BuildError::ZeroWorkers;
/// assert!(e.to_string().contains("max_workers"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `max_workers(0)`.
    #[error("max_workers must be at least 1 (got 0); leave it unset for the default")]
    ZeroWorkers,
    /// A setting is out of range.
    #[error("invalid setting `{name}`: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The operating system refused a resource (thread, process, socket).
    #[error("could not start the executor: {0}")]
    Io(String),
}
