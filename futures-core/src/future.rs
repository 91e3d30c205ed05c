//! The state machine: [`Future`] (consumer handle) and [`Promise`] (producer handle).
//!
//! One `Inner` per task, shared through an `Arc`:
//!
//! * `shared` (a mutex) holds the [`State`], the done-callbacks, the registered waiters of
//!   `wait`/`as_completed`, the async wakers, and the *release* bookkeeping described below;
//! * `cond` wakes threads blocked in `result()`;
//! * `outcome` is written exactly once, under the mutex, before the state becomes done; after
//!   that it is immutable, which is what lets `result()` hand out `&T` without holding a lock.
//!
//! Completion takes the callbacks, waiters and wakers out under the lock and runs or notifies
//! them after releasing it, so no user code and no other lock ever runs under `shared`.
//!
//! *Release*: [`Future::try_unwrap`] moves the value out of a sole owner's future (such as the
//! `map` iterator's) without requiring `T: Clone`, so it must wait until the [`Promise`] has
//! dropped its `Arc<Inner>`. `Inner` counts the live `Future` handles (`handles`) apart from the
//! `Arc`'s own count, so a sole owner can tell that every other strong reference is the promise's.
//! The promise's drop moves `release` from `HELD` to `GONE` just before it drops its `Arc`:
//!
//! * if `try_unwrap` comes first, it allocates a [`ReleaseGate`] (in an `Arc` of its own, so the
//!   promise can open it after its `Arc<Inner>` is gone), parks it in `shared` and marks `release`
//!   `WAITING`; the promise's drop finds it there and opens it last;
//! * if the promise came first (`GONE`), its `Arc` goes within a few instructions: `try_unwrap`
//!   yields until the strong count says so (or another handle appears).
//!
//! No task pays for a gate unless its value is unwrapped while its promise is still held: this
//! was one of three allocations per submitted task.
//!
//! *Inline tasks*: `Inner` ends in a tail of any type, which every handle sees as an opaque
//! `dyn` tail (a fat `Arc`; `()` for a [`Promise::new`]). [`InlineTask::new`] puts the
//! executor's call there, so a queued task is one allocation instead of a future plus a boxed
//! job, and the queue holds the same `Arc`, erased to a `dyn Job` that can run the call and
//! then act as the promise (it becomes a [`Promise`] to publish, abandon or drop, so the
//! promise's protocol above is the one code path). `try_unwrap` takes the outcome out through
//! `Arc::get_mut`, which works on an unsized `Inner`. The tail sits under the future's own
//! mutex, at the end of [`Shared`]: a worker takes the call out and marks the future running
//! in one critical section, and the allocation needs no lock of the call's own (which cost two
//! more atomic operations per task on the worker). The call runs with the lock released. An
//! inline task's future is made with its one handle already counted. Under loom the tail is `()` and there are no
//! inline tasks (loom's `Arc` cannot be unsized); the state machine it checks is the same.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU64;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{drop_panic_payload, panic_message, InvalidStateError, TaskError};
use crate::primitive::{yield_now, Arc, AtomicU32, Condvar, Mutex, Ordering};
use crate::spin;
use crate::waiter::Waiter;

/// The life cycle of a future, as in Python's `concurrent.futures`.
///
/// `Pending -> Running -> Finished`, or `Pending -> Cancelled`. A failed task is `Finished` with an
/// error outcome. `Finished` and `Cancelled` are final.
///
/// # Examples
///
/// ```
/// use cf_futures_core::{Promise, State};
///
/// let p = Promise::<()>::new();
/// assert_eq!(p.future().state(), State::Pending);
/// assert!(p.set_running_or_notify_cancel());
/// assert_eq!(p.future().state(), State::Running);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Submitted, not started.
    Pending,
    /// Started by a worker.
    Running,
    /// Cancelled before it started.
    Cancelled,
    /// Completed with a value or an error.
    Finished,
}

impl State {
    /// `true` for `Cancelled` and `Finished`.
    #[must_use]
    pub fn is_done(self) -> bool {
        matches!(self, State::Cancelled | State::Finished)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Cancelled => "cancelled",
            State::Finished => "finished",
        })
    }
}

type Callback<T> = Box<dyn FnOnce(&Future<T>) + Send + 'static>;

/// What the future's mutex guards: its state and listeners, and the tail (see [`Inner`]).
struct Shared<T, S: ?Sized = Tail> {
    state: State,
    /// The first registered waiter, kept inline: `as_completed` and `wait` register one per
    /// future, and two allocations (the box and its vector) per future were most of their
    /// cost.
    waiter: Option<(Arc<Waiter>, usize)>,
    /// Allocated on first need: most futures never get a callback, a second waiter, a waker or
    /// a gate, and a million pending ones should not carry three empty vectors each.
    listeners: Option<Box<Listeners<T>>>,
    /// `()`, or an [`InlineTask`]'s call and then its outcome: see *Inline tasks* above. Under
    /// the future's own lock, so that a worker takes the call and marks the future running in
    /// one critical section. (Under loom it is `()` and never read.)
    #[cfg_attr(loom, allow(dead_code))]
    tail: S,
}

struct Listeners<T> {
    callbacks: Vec<Callback<T>>,
    waiters: Vec<(Arc<Waiter>, usize)>,
    /// One per handle being awaited, under the key the handle keeps (see [`Future`]'s
    /// `std::future::Future` impl).
    wakers: Vec<(NonZeroU64, Waker)>,
    /// The last waker key handed out.
    waker_keys: u64,
    /// The gate a `try_unwrap` waits at, while `release` is `WAITING`. It is parked only once
    /// the future is done (after completion took the listeners out), so completion never
    /// finds one. Kept here, not in [`Shared`], to keep the future's allocation small (see
    /// [`Inner`]).
    gate: Option<Arc<ReleaseGate>>,
}

impl<T, S: ?Sized> Shared<T, S> {
    /// `Pending -> Running`: `true` if the task may run now; `false` if it was cancelled (or,
    /// with a debug log, if it already ran: an executor bug, never undefined behaviour).
    fn start(&mut self) -> bool {
        match self.state {
            State::Pending => {
                self.state = State::Running;
                true
            }
            State::Cancelled => false,
            other => {
                guarded!(debug!("set_running_or_notify_cancel on a {other} future"));
                false
            }
        }
    }

    fn listeners(&mut self) -> &mut Listeners<T> {
        self.listeners.get_or_insert_with(|| {
            Box::new(Listeners {
                callbacks: Vec::new(),
                waiters: Vec::new(),
                wakers: Vec::new(),
                waker_keys: 0,
                gate: None,
            })
        })
    }
}

/// What the rest of a future's allocation holds, seen through a [`Future`]: nothing (`()`) for
/// a [`Promise::new`]'s future, the job itself for an [`InlineTask`]'s. Only the task can name
/// it; every handle sees just an opaque tail.
#[cfg(not(loom))]
type Tail = dyn Opaque;
/// loom's `Arc` cannot be unsized, and the model checks no [`InlineTask`].
#[cfg(loom)]
type Tail = ();

/// Anything that may sit at the end of a shared [`Inner`]: only `Send`, since it is reached
/// only under the future's lock.
#[cfg(not(loom))]
pub(crate) trait Opaque: Send {}
#[cfg(not(loom))]
impl<S: Send + ?Sized> Opaque for S {}

/// A task's whole shared state, in one allocation with the `Arc`'s two counts.
///
/// For a task that takes and returns a word, the allocation is 112 bytes, so 128 with glibc's
/// header: the largest block glibc keeps in its *fastbins* when freed, which it hands back out
/// in a few instructions, where a larger block is merged with its free neighbours on every
/// free and split off again on every allocation. It was 136 bytes (a 144-byte block); the two
/// counters below are `u32`s and the try_unwrap gate moved to the listeners to get under the
/// line. (Measured on the submit-throughput workload: see the commit that did it.)
pub(crate) struct Inner<T, S: ?Sized = Tail> {
    cond: Condvar,
    /// The error is boxed so a value's cell stays small (`TaskError` is 72 bytes).
    outcome: OnceLock<Result<T, Box<TaskError>>>,
    /// Live `Future` handles (not the promise): see *Release* above. A `u32` (see above): two
    /// billion handles to one future abort the process, as an `Arc`'s overflow does.
    handles: AtomicU32,
    /// `HELD`, `WAITING` (a gate is parked with the listeners) or `GONE`: see *Release* above.
    release: AtomicU32,
    /// Last, since it ends in the tail, whose size only the task knows.
    shared: Mutex<Shared<T, S>>,
}

impl<T, S> Inner<T, S> {
    /// A pending future's state, with `handles` live `Future` handles to come.
    fn new(tail: S, handles: u32) -> Self {
        Inner {
            cond: Condvar::new(),
            outcome: OnceLock::new(),
            handles: AtomicU32::new(handles),
            release: AtomicU32::new(HELD),
            shared: Mutex::new(Shared {
                state: State::Pending,
                waiter: None,
                listeners: None,
                tail,
            }),
        }
    }
}

impl<T, S: ?Sized> Inner<T, S> {
    /// `Promise::set_running_or_notify_cancel`.
    fn set_running(&self) -> bool {
        self.shared.lock().start()
    }

    /// `Promise::has_done_callbacks`.
    fn has_done_callbacks(&self) -> bool {
        self.shared
            .lock()
            .listeners
            .as_ref()
            .is_some_and(|l| !l.callbacks.is_empty())
    }
}

/// The promise holds its `Arc<Inner>` and nobody waits for it to go.
const HELD: u32 = 0;
/// A `try_unwrap` parked a [`ReleaseGate`] with the listeners and waits at it.
const WAITING: u32 = 1;
/// The promise dropped (or is about to drop, within a few instructions) its `Arc<Inner>`.
const GONE: u32 = 2;

/// Opened by the promise's `Drop` once its `Arc<Inner>` is gone, for a `try_unwrap` that came
/// before it (see *Release* above).
struct ReleaseGate {
    released: Mutex<bool>,
    cond: Condvar,
}

impl ReleaseGate {
    fn open(&self) {
        *self.released.lock() = true;
        self.cond.notify_all();
    }

    fn wait(&self) {
        let mut released = self.released.lock();
        while !*released {
            self.cond.wait(&mut released);
        }
    }
}

/// A cheap, cloneable handle to the eventual outcome of one task.
///
/// Every clone refers to the same task; equality and hashing are by identity, so a `Future` can
/// key a `HashMap` the way Python code keys a dict with futures.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cf_futures_core::{Promise, State};
///
/// let promise = Promise::new();
/// let future = promise.future();
/// assert!(!future.done());
/// std::thread::spawn(move || promise.set_result(7_u64).unwrap());
/// assert_eq!(future.result_timeout(Duration::from_secs(10)), Ok(&7));
/// assert_eq!(future.state(), State::Finished);
/// assert_eq!(future.exception(), None);
/// ```
pub struct Future<T> {
    inner: Arc<Inner<T>>,
    /// The key of the waker this handle left with the future when it was last polled (awaited)
    /// and not ready; its drop takes that waker back (see the `std::future::Future` impl).
    waker: Option<NonZeroU64>,
}

/// The producer side of a [`Future`]: what an executor holds to report progress and outcome.
///
/// Dropping a promise whose future is not done fails the future with [`TaskError::Broken`], so a
/// task an executor loses can never leave a waiter hanging.
///
/// # Examples
///
/// ```
/// use cf_futures_core::{Promise, TaskError};
///
/// let promise = Promise::<u8>::new();
/// let future = promise.future();
/// drop(promise);
/// assert!(matches!(future.result(), Err(TaskError::Broken { .. })));
/// ```
pub struct Promise<T> {
    /// `Some` until `Drop`, which takes it so the `Arc` is released before release-waiters wake.
    inner: Option<Arc<Inner<T>>>,
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        self.clone_counted().0
    }
}

impl<T> Drop for Future<T> {
    fn drop(&mut self) {
        if let Some(key) = self.waker {
            // An await given up (a timeout, a `select!` branch not taken): its waker, and the
            // task it keeps alive, go with it.
            let waker = self.inner.shared.lock().listeners.as_mut().and_then(|l| {
                let at = l.wakers.iter().position(|(k, _)| *k == key)?;
                Some(l.wakers.swap_remove(at))
            });
            drop(waker);
        }
        self.inner.handles.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> PartialEq for Future<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<T> Eq for Future<T> {}

impl<T> Hash for Future<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl<T> Future<T> {
    /// A handle owning `inner`, one of the strong references, counted in `handles`.
    fn from_arc(inner: Arc<Inner<T>>) -> Self {
        Self::from_arc_counted(inner).0
    }

    /// [`from_arc`](Self::from_arc), and how many handles the future has right after (the new
    /// one included).
    fn from_arc_counted(inner: Arc<Inner<T>>) -> (Self, u32) {
        let before = inner.handles.fetch_add(1, Ordering::SeqCst);
        if before > u32::MAX / 2 {
            // Two billion handles to one future (32 GiB of them) can only be a leak in a loop;
            // the count must not wrap (`try_unwrap` trusts it), so stop as `Arc` does.
            std::process::abort();
        }
        (Future { inner, waker: None }, before + 1)
    }

    /// A clone, and how many handles the future has right after it (the clone included). Other
    /// threads may add or drop handles at any time, so the count is exact only about handles
    /// the caller holds or borrows: it is at least their number.
    pub(crate) fn clone_counted(&self) -> (Self, u32) {
        Self::from_arc_counted(Arc::clone(&self.inner))
    }

    /// Identity of the shared state, for de-duplication.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.inner.shared.lock().state
    }

    /// `true` once the future is finished or cancelled.
    #[must_use]
    pub fn done(&self) -> bool {
        self.state().is_done()
    }

    /// `true` while a worker runs the task.
    #[must_use]
    pub fn running(&self) -> bool {
        self.state() == State::Running
    }

    /// `true` if the future was cancelled.
    #[must_use]
    pub fn cancelled(&self) -> bool {
        self.state() == State::Cancelled
    }

    /// Cancels the task if it has not started.
    ///
    /// Returns `true` if the future is now cancelled (also when it already was), `false` if it is
    /// running or finished. Cancelling runs the done-callbacks.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = cf_futures_core::Promise::<u8>::new();
    /// let f = p.future();
    /// assert!(f.cancel());
    /// assert!(f.cancel());
    /// assert!(!p.set_running_or_notify_cancel());
    /// ```
    pub fn cancel(&self) -> bool {
        cancel(&self.inner)
    }

    /// Blocks until the future is done and returns its value, or the error that ended it.
    ///
    /// Like a channel's `recv`, it looks a few times (spinning briefly, then yielding its CPU,
    /// for about 20 µs at most) before it sleeps, so a result that is moments away costs no
    /// sleep and wake-up (several microseconds each on a virtual machine), but only when
    /// spinning can help: never when the process has one CPU (the spin would only keep the
    /// producer from running), and not while this thread's recent spins kept running out (a
    /// busy machine, or long tasks); it tries again now and then. The timed waits
    /// (`result_timeout`, which `map` uses) sleep at once.
    ///
    /// # Errors
    ///
    /// The task's [`TaskError`]: `Cancelled`, `Panicked`, `WorkerDied`, ...
    pub fn result(&self) -> Result<&T, TaskError> {
        self.wait_done(None);
        self.outcome()
    }

    /// The outcome if the future is done, `None` without blocking otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = cf_futures_core::Promise::new();
    /// assert!(p.future().try_result().is_none());
    /// p.set_result("ok").unwrap();
    /// assert_eq!(p.future().try_result(), Some(Ok(&"ok")));
    /// ```
    #[must_use]
    pub fn try_result(&self) -> Option<Result<&T, TaskError>> {
        self.done().then(|| self.outcome())
    }

    /// Like [`result`](Self::result), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`TaskError::Timeout`] if the future is not done in time (it goes on), otherwise as
    /// [`result`](Self::result).
    pub fn result_timeout(&self, timeout: Duration) -> Result<&T, TaskError> {
        if self.wait_done(Some(timeout)) {
            self.outcome()
        } else {
            Err(TaskError::timeout(timeout))
        }
    }

    /// Blocks until done; `None` if the task produced a value, its error otherwise.
    #[must_use]
    pub fn exception(&self) -> Option<TaskError> {
        self.result().err()
    }

    /// Like [`exception`](Self::exception), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`TaskError::Timeout`] if the future is not done in time.
    pub fn exception_timeout(&self, timeout: Duration) -> Result<Option<TaskError>, TaskError> {
        if self.wait_done(Some(timeout)) {
            Ok(self.outcome().err())
        } else {
            Err(TaskError::timeout(timeout))
        }
    }

    /// Attaches `callback`, called with this future once it is done.
    ///
    /// Callbacks run in the order added, in the thread that completes the future; a callback
    /// added to a done future runs at once in the caller's thread. A panicking callback is caught
    /// and logged (`log::error!`), and the next callback still runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let p = cf_futures_core::Promise::new();
    /// let (tx, rx) = mpsc::channel();
    /// p.future().add_done_callback(move |f| tx.send(*f.result().unwrap()).unwrap());
    /// p.set_result(5).unwrap();
    /// assert_eq!(rx.recv().unwrap(), 5);
    /// ```
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(&Future<T>) + Send + 'static,
    {
        let mut shared = self.inner.shared.lock();
        if shared.state.is_done() {
            drop(shared);
            run_callbacks(self, vec![Box::new(callback)]);
        } else {
            shared.listeners().callbacks.push(Box::new(callback));
        }
    }

    /// Blocks until done, then moves the outcome out if this is the only handle left.
    ///
    /// Gives the handle back (`Err(self)`) if other clones exist. Waits for the executor to drop
    /// its side first, so a sole owner always gets the value; `T` need not be `Clone`. A failed
    /// or cancelled future yields (a clone of) its error whether or not other handles exist.
    ///
    /// The wait is for the [`Promise`] to be dropped, not only completed: a promise you hold
    /// yourself must be dropped before this is called on the same thread, or it waits forever.
    /// Called from one of this future's own done-callbacks, while its completion still holds
    /// the promise, it gives the handle back at once (the callback's `&Future` is another
    /// handle anyway).
    ///
    /// # Errors
    ///
    /// `Err(self)` when another handle to the same task is alive and the task has a value.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = cf_futures_core::Promise::new();
    /// let f = p.future();
    /// p.set_result(String::from("moved")).unwrap();
    /// drop(p);
    /// assert_eq!(f.try_unwrap().ok().unwrap(), Ok(String::from("moved")));
    /// ```
    pub fn try_unwrap(self) -> Result<Result<T, TaskError>, Future<T>> {
        self.wait_done(None);
        if let Err(e) = self.outcome() {
            return Ok(Err(e));
        }
        // Inside one of this future's own done-callbacks the promise is held until they return
        // (and the callback's `&Future` is another handle): give this one back, not wait.
        if Completing::running(self.id()) {
            return Err(self);
        }
        // The executor's side first: until it has let go, what looks like another handle may
        // be one it holds for a moment after completing (a cluster's in-flight record does).
        self.wait_for_promise();
        if self.inner.handles.load(Ordering::SeqCst) != 1 {
            return Err(self);
        }
        let mut inner = Arc::clone(&self.inner);
        drop(self);
        match Arc::get_mut(&mut inner) {
            Some(sole) => Ok(sole
                .outcome
                .take()
                .expect("a done future has an outcome")
                .map_err(|e| *e)),
            None => Err(Future::from_arc(inner)),
        }
    }

    /// Waits until the promise has dropped its `Arc<Inner>`, or another handle appeared; see
    /// *Release* in the module docs.
    fn wait_for_promise(&self) {
        let gate = {
            let mut shared = self.inner.shared.lock();
            if self.inner.release.load(Ordering::SeqCst) == GONE {
                None
            } else {
                let gate = Arc::clone(shared.listeners().gate.get_or_insert_with(|| {
                    Arc::new(ReleaseGate {
                        released: Mutex::new(false),
                        cond: Condvar::new(),
                    })
                }));
                // Under the lock the promise's drop takes the gate under, so it finds the gate
                // parked whenever it sees `WAITING`.
                match self.inner.release.compare_exchange(
                    HELD,
                    WAITING,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) | Err(WAITING) => Some(gate),
                    Err(_) => {
                        shared.listeners().gate = None;
                        None
                    }
                }
            }
        };
        match gate {
            Some(gate) => gate.wait(),
            None => {
                // The promise is between its last look at `release` and dropping its `Arc`.
                while Arc::strong_count(&self.inner) > 1
                    && self.inner.handles.load(Ordering::SeqCst) == 1
                {
                    yield_now();
                }
            }
        }
    }

    /// Waits until done or `timeout`; returns whether the future is done.
    fn wait_done(&self, timeout: Option<Duration>) -> bool {
        if timeout.is_none() && self.spin_until_done() {
            return true;
        }
        let mut shared = self.inner.shared.lock();
        if shared.state.is_done() {
            return true;
        }
        match timeout {
            None => {
                while !shared.state.is_done() {
                    self.inner.cond.wait(&mut shared);
                }
                true
            }
            Some(t) => {
                let Some(deadline) = Instant::now().checked_add(t) else {
                    drop(shared);
                    return self.wait_done(None);
                };
                while !shared.state.is_done() {
                    if self.inner.cond.wait_until(&mut shared, deadline) {
                        return shared.state.is_done();
                    }
                }
                true
            }
        }
    }

    /// Looks for completion without sleeping, as [`spin::until`] decides; `true` once the
    /// outcome is set.
    ///
    /// The outcome is set under the lock that a done state is read under, and the state
    /// becomes done in that same critical section, so a caller that sees the outcome here and
    /// then asks for the state (taking the lock) sees it done.
    fn spin_until_done(&self) -> bool {
        spin::until(|| self.inner.outcome.get().is_some())
    }

    /// The outcome of a done future.
    fn outcome(&self) -> Result<&T, TaskError> {
        match self.inner.outcome.get() {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err((**e).clone()),
            None => unreachable!("outcome read before the future was done"),
        }
    }

    /// `true` if done, without taking the lock: the outcome is set in the critical section
    /// that makes the state done, so anyone who then takes the lock sees it done.
    pub(crate) fn is_done_now(&self) -> bool {
        self.inner.outcome.get().is_some()
    }

    /// `true` if finished with an error (not cancelled): what `FirstException` waits for.
    pub(crate) fn failed(&self) -> bool {
        self.state() == State::Finished && matches!(self.inner.outcome.get(), Some(Err(_)))
    }

    /// Registers `waiter` to be fired with `key` on completion. Returns `true` (and registers
    /// nothing) if the future is already done.
    pub(crate) fn register(&self, waiter: &Arc<Waiter>, key: usize) -> bool {
        let mut shared = self.inner.shared.lock();
        if shared.state.is_done() {
            return true;
        }
        if shared.waiter.is_none() {
            shared.waiter = Some((Arc::clone(waiter), key));
        } else {
            shared.listeners().waiters.push((Arc::clone(waiter), key));
        }
        false
    }

    pub(crate) fn unregister(&self, waiter: &Arc<Waiter>) {
        let mut shared = self.inner.shared.lock();
        if shared
            .waiter
            .as_ref()
            .is_some_and(|(w, _)| Arc::ptr_eq(w, waiter))
        {
            shared.waiter = None;
        }
        if let Some(listeners) = shared.listeners.as_mut() {
            listeners.waiters.retain(|(w, _)| !Arc::ptr_eq(w, waiter));
        }
    }
}

impl<T> Default for Promise<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Promise<T> {
    /// A new pending promise; get its consumer handle with [`future`](Self::future).
    #[must_use]
    pub fn new() -> Self {
        let inner: Arc<Inner<T, ()>> = Arc::new(Inner::new((), 0));
        Promise { inner: Some(inner) }
    }

    fn inner(&self) -> &Arc<Inner<T>> {
        self.inner
            .as_ref()
            .expect("only Drop takes the inner state")
    }

    /// A consumer handle to this promise's future.
    #[must_use]
    pub fn future(&self) -> Future<T> {
        Future::from_arc(Arc::clone(self.inner()))
    }

    /// Marks the task running. Returns `false` if it was cancelled (then do not run it).
    ///
    /// Also `false`, with a debug log, if the future was already running or finished: calling
    /// it twice is an executor bug, never undefined behaviour.
    #[must_use]
    pub fn set_running_or_notify_cancel(&self) -> bool {
        self.inner().set_running()
    }

    /// Completes the future with a value.
    ///
    /// # Errors
    ///
    /// [`InvalidStateError`] if the future is already finished or cancelled; the first outcome
    /// stays.
    pub fn set_result(&self, value: T) -> Result<(), InvalidStateError> {
        complete(self.inner(), Ok(value), State::Finished)
    }

    /// Completes the future with an error.
    ///
    /// # Errors
    ///
    /// [`InvalidStateError`] if the future is already finished or cancelled.
    pub fn set_error(&self, error: TaskError) -> Result<(), InvalidStateError> {
        complete(self.inner(), Err(error), State::Finished)
    }

    /// Completes the future with `outcome`, value or error.
    ///
    /// # Errors
    ///
    /// [`InvalidStateError`] if the future is already finished or cancelled.
    pub fn set_outcome(&self, outcome: Result<T, TaskError>) -> Result<(), InvalidStateError> {
        complete(self.inner(), outcome, State::Finished)
    }

    /// Cancels the future if it has not started; see [`Future::cancel`].
    pub fn cancel(&self) -> bool {
        cancel(self.inner())
    }

    /// Cancels a future this executor marked running whose task then never started: it handed
    /// the task to a worker ahead of time and took it back unstarted. What [`cancel`](Self::cancel)
    /// does to a pending future, done to a running one (callbacks run, waiters wake, the
    /// outcome is `TaskError::Cancelled`), in one step: no one sees the future pending on the
    /// way. `true` if the future is cancelled now; `false` if it is finished. Only the executor
    /// may call it, and only for a task that has not run and will not: a task that did start
    /// goes on running, and its result is then refused (`InvalidStateError`).
    ///
    /// # Examples
    ///
    /// ```
    /// let p = cf_futures_core::Promise::<u8>::new();
    /// assert!(p.set_running_or_notify_cancel());
    /// assert!(!p.future().cancel());
    /// assert!(p.cancel_unstarted());
    /// assert!(p.future().cancelled());
    /// ```
    pub fn cancel_unstarted(&self) -> bool {
        let cancelled = Err(Box::new(TaskError::Cancelled));
        match complete_inner(self.inner(), cancelled, State::Cancelled, &mut None, true) {
            Ok(()) => true,
            Err(e) => e.state == State::Cancelled,
        }
    }

    /// The future's current state.
    #[must_use]
    pub fn state(&self) -> State {
        self.inner().shared.lock().state
    }

    /// Whether done-callbacks are waiting to run. An executor that completes futures on a
    /// thread it also needs for other work can steer new work elsewhere while they run.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = cf_futures_core::Promise::<u8>::new();
    /// assert!(!p.has_done_callbacks());
    /// p.future().add_done_callback(|_| {});
    /// assert!(p.has_done_callbacks());
    /// ```
    #[must_use]
    pub fn has_done_callbacks(&self) -> bool {
        self.inner().has_done_callbacks()
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        // The outcome is set in the same critical section that makes the state done: once it
        // is there, the future is done (or becomes so before anyone can look), and the lock
        // need not be taken to find out.
        if inner.outcome.get().is_none() && !inner.shared.lock().state.is_done() {
            let _ = complete(
                &inner,
                Err(TaskError::Broken {
                    reason: "the executor dropped this task without completing it (it shut \
                             down, was killed, or failed internally)"
                        .into(),
                }),
                State::Finished,
            );
        }
        // Drop our handle before opening a gate, so `try_unwrap` past it finds itself alone.
        let gate = if inner.release.swap(GONE, Ordering::SeqCst) == WAITING {
            inner
                .shared
                .lock()
                .listeners
                .as_mut()
                .and_then(|l| l.gate.take())
        } else {
            None
        };
        drop(inner);
        if let Some(gate) = gate {
            gate.open();
        }
    }
}

fn cancel<T>(inner: &Arc<Inner<T>>) -> bool {
    let state = inner.shared.lock().state;
    match state {
        State::Cancelled => true,
        State::Running | State::Finished => false,
        // Re-checked under the lock inside `complete`: a racing start wins.
        State::Pending => match complete(inner, Err(TaskError::Cancelled), State::Cancelled) {
            Ok(()) => true,
            Err(e) => e.state == State::Cancelled,
        },
    }
}

/// The single transition into a done state.
fn complete<T>(
    inner: &Arc<Inner<T>>,
    outcome: Result<T, TaskError>,
    to: State,
) -> Result<(), InvalidStateError> {
    complete_boxed(inner, outcome.map_err(Box::new), to)
}

/// [`complete`] with the error already boxed, as the outcome cell keeps it.
fn complete_boxed<T>(
    inner: &Arc<Inner<T>>,
    outcome: Result<T, Box<TaskError>>,
    to: State,
) -> Result<(), InvalidStateError> {
    complete_then(inner, outcome, to, &mut None)
}

/// [`complete_boxed`], calling `ready` (if given) once on the way: before the outcome becomes
/// visible when there are no done-callbacks to run, after running them otherwise, and also
/// when the transition fails. An inline task's executor counts its worker available there
/// (see [`InlineTask::run_and_publish`]); the lock it already takes for the transition tells
/// whether callbacks are waiting, so that costs no lock of its own.
fn complete_then<T>(
    inner: &Arc<Inner<T>>,
    outcome: Result<T, Box<TaskError>>,
    to: State,
    ready: &mut Option<&mut dyn FnMut()>,
) -> Result<(), InvalidStateError> {
    let result = complete_inner(inner, outcome, to, ready, false);
    if let Some(ready) = ready.take() {
        ready();
    }
    result
}

/// `unstarted`: the executor says a running future's task never started, so it may be cancelled
/// too (see [`Promise::cancel_unstarted`]).
fn complete_inner<T>(
    inner: &Arc<Inner<T>>,
    outcome: Result<T, Box<TaskError>>,
    to: State,
    ready: &mut Option<&mut dyn FnMut()>,
    unstarted: bool,
) -> Result<(), InvalidStateError> {
    let mut shared = inner.shared.lock();
    match (shared.state, to) {
        (State::Pending, _) | (State::Running, State::Finished) => {}
        (State::Running, State::Cancelled) if unstarted => {}
        (state, _) => return Err(InvalidStateError { state }),
    }
    if shared
        .listeners
        .as_ref()
        .is_none_or(|l| l.callbacks.is_empty())
    {
        if let Some(ready) = ready.take() {
            ready();
        }
    }
    if inner.outcome.set(outcome).is_err() {
        unreachable!("outcome is set once, under the lock, before the state becomes done");
    }
    shared.state = to;
    let first_waiter = shared.waiter.take();
    let listeners = shared.listeners.take();
    inner.cond.notify_all();
    drop(shared);

    if let Some((waiter, key)) = first_waiter {
        waiter.fire(key);
    }
    let Some(listeners) = listeners else {
        return Ok(());
    };
    let Listeners {
        callbacks,
        waiters,
        wakers,
        gate,
        ..
    } = *listeners;
    debug_assert!(
        gate.is_none(),
        "a gate is parked only once the future is done"
    );
    for (waiter, key) in waiters {
        waiter.fire(key);
    }
    for (_, waker) in wakers {
        // A waker is an async runtime's code, and this is often a pool's own thread: one
        // that panics (its executor gone, say) must not unwind into it (a pool thread that
        // dies leaves the futures it serves pending), nor stop the done-callbacks.
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| waker.wake())) {
            guarded!(error!(
                "a waker panicked when its future completed: {}; the future's other wakers and \
                 its done callbacks still run",
                panic_message(payload.as_ref())
            ));
            drop_panic_payload(payload);
        }
    }
    if !callbacks.is_empty() {
        let future = Future::from_arc(Arc::clone(inner));
        let _completing = Completing::enter(future.id());
        run_callbacks(&future, callbacks);
    }
    Ok(())
}

#[cfg(not(loom))]
thread_local! {
    /// The future (its id) whose completion runs its done-callbacks on this thread, 0 if none:
    /// its promise cannot be released before they return (see [`Future::try_unwrap`]).
    static COMPLETING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as running the done-callbacks of a completion, until dropped (restoring
/// the mark of a completion it runs inside, for a callback that completes another future).
struct Completing {
    #[cfg(not(loom))]
    previous: usize,
}

impl Completing {
    fn enter(id: usize) -> Self {
        #[cfg(not(loom))]
        {
            Completing {
                previous: COMPLETING.with(|c| c.replace(id)),
            }
        }
        #[cfg(loom)]
        {
            let _ = id;
            Completing {}
        }
    }

    /// Whether this thread is running the done-callbacks of the completion of future `id`.
    fn running(id: usize) -> bool {
        #[cfg(not(loom))]
        {
            COMPLETING.try_with(std::cell::Cell::get) == Ok(id)
        }
        #[cfg(loom)]
        {
            let _ = id;
            false
        }
    }
}

impl Drop for Completing {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        let _ = COMPLETING.try_with(|c| c.set(self.previous));
    }
}

fn run_callbacks<T>(future: &Future<T>, callbacks: Vec<Callback<T>>) {
    let mut queue: VecDeque<_> = callbacks.into();
    while let Some(cb) = queue.pop_front() {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| cb(future))) {
            guarded!(error!(
                "a done callback panicked: {}; the future is {}; the remaining {} callback(s) still run",
                panic_message(payload.as_ref()),
                future.state(),
                queue.len()
            ));
            drop_panic_payload(payload);
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        let mut d = f.debug_struct("Future");
        d.field("state", &state);
        if state == State::Finished {
            match self.inner.outcome.get() {
                Some(Ok(v)) => d.field("result", v),
                Some(Err(e)) => d.field("error", e),
                None => &mut d,
            };
        }
        d.finish()
    }
}

impl<T> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("state", &self.state())
            .finish()
    }
}

/// Awaiting a `Future` yields a clone of its outcome; the pool's threads never block the
/// async runtime.
///
/// Each awaited handle leaves one waker with the future while it is pending (the latest task
/// that polled it), and takes it back when dropped: an await given up (a `tokio::time::timeout`
/// that fired, a `select!` branch not taken) leaves nothing behind, however often it happens
/// before the task completes. The wakers are woken in the thread that completes the future
/// (often a pool's own), before the done-callbacks; a waker that panics there (its runtime
/// gone, say) is caught and logged (`log::error!`), as a callback is.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let p = cf_futures_core::Promise::new();
/// let f = p.future();
/// std::thread::spawn(move || p.set_result(3).unwrap());
/// assert_eq!(f.await, Ok(3));
/// # }
/// ```
impl<T: Clone> std::future::Future for Future<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut shared = this.inner.shared.lock();
        if shared.state.is_done() {
            drop(shared);
            // Completion took the wakers: this handle left none behind.
            this.waker = None;
            return Poll::Ready(this.outcome().cloned());
        }
        // Each awaited handle keeps one waker with the future, replaced when the handle is
        // polled from another task, and taken back when the handle is dropped: an await given
        // up leaves nothing behind.
        let listeners = shared.listeners();
        let mine = this
            .waker
            .and_then(|key| listeners.wakers.iter_mut().find(|(k, _)| *k == key));
        let stale = match mine {
            Some((_, waker)) if waker.will_wake(cx.waker()) => None,
            Some((_, waker)) => Some(std::mem::replace(waker, cx.waker().clone())),
            None => {
                listeners.waker_keys += 1;
                let key = NonZeroU64::new(listeners.waker_keys).expect("counts up from 1");
                listeners.wakers.push((key, cx.waker().clone()));
                this.waker = Some(key);
                None
            }
        };
        drop(shared);
        drop(stale);
        Poll::Pending
    }
}

/// A call stored in its own future's allocation: an executor's queue entry that costs no
/// allocation besides the future's.
///
/// [`InlineTask::new`] allocates the future's shared state with the call at its end and hands
/// back the future plus this task, which is the future's [`Promise`] and its job in one: the
/// executor queues it, [`run`](Self::run)s it on a worker (the call runs only if the future
/// was not cancelled), then [`publish`](Self::publish)es the outcome; run and publish are apart
/// so that a pool can count the worker available in between. Dropped unpublished, it fails the
/// future with [`TaskError::Broken`], as a promise does.
///
/// # Examples
///
/// ```
/// use cf_futures_core::InlineTask;
///
/// let (mut task, future) = InlineTask::new(|| Ok(6 * 7));
/// assert!(!task.has_done_callbacks());
/// std::thread::spawn(move || {
///     task.run();
///     task.publish().unwrap();
/// });
/// assert_eq!(future.result(), Ok(&42));
/// ```
#[cfg(not(loom))]
pub struct InlineTask {
    /// `Some` until it is published, abandoned or dropped.
    job: Option<Arc<dyn Job>>,
}

/// The job at the end of an [`InlineTask`]'s allocation, under the future's lock (see
/// [`Shared`]). Only the task's owner takes the call out or puts an outcome in; taken, the
/// call runs with the lock released.
#[cfg(not(loom))]
enum Step<F, T> {
    /// Queued.
    Ready(F),
    /// Ran (or found cancelled): the outcome to publish, if any. The error is boxed as in the
    /// outcome cell, so the allocation is not sized for a 72-byte `TaskError`.
    Ran(Option<Result<T, Box<TaskError>>>),
}

/// An [`InlineTask`]'s operations, erased over the call's and the value's types.
#[cfg(not(loom))]
trait Job: Send + Sync {
    fn run(&self);
    fn run_and_publish(self: Arc<Self>, ready: &mut dyn FnMut()) -> Result<(), InvalidStateError>;
    fn has_done_callbacks(&self) -> bool;
    fn publish(self: Arc<Self>) -> Result<(), InvalidStateError>;
    fn abandon(self: Arc<Self>, error: Option<TaskError>);
    fn release(self: Arc<Self>);
}

#[cfg(not(loom))]
impl<T, F> Inner<T, Step<F, T>>
where
    F: FnOnce() -> Result<T, TaskError> + Send + 'static,
    T: Send + Sync + 'static,
{
    /// The promise this task is, as a [`Promise`] (whose drop completes the protocol).
    fn promise(self: Arc<Self>) -> Promise<T> {
        Promise { inner: Some(self) }
    }

    /// Drops the call (and its captures) or a kept outcome now, not when the last handle to
    /// the future goes: the task will not run or publish. A panic in their destructors is
    /// caught and logged, so the future is still completed (cancelled, or failed) after.
    fn clear(&self) {
        let step = self.take_step();
        crate::error::drop_logging_panic(step, "a task that will not run (its closure's captures)");
    }

    /// Takes the step out, leaving `Ran(None)`.
    fn take_step(&self) -> Step<F, T> {
        std::mem::replace(&mut self.shared.lock().tail, Step::Ran(None))
    }

    /// Takes the step out and, if it is the call, marks the future running in the same
    /// critical section: the call is to run if the flag is `true`, and to be dropped (with the
    /// lock released, like every value of the user's) if the future was cancelled.
    fn take_step_starting(&self) -> (Step<F, T>, bool) {
        let mut shared = self.shared.lock();
        let step = std::mem::replace(&mut shared.tail, Step::Ran(None));
        let start = matches!(step, Step::Ready(_)) && shared.start();
        (step, start)
    }
}

#[cfg(not(loom))]
impl<T, F> Job for Inner<T, Step<F, T>>
where
    F: FnOnce() -> Result<T, TaskError> + Send + 'static,
    T: Send + Sync + 'static,
{
    fn run(&self) {
        let kept = match self.take_step_starting() {
            (Step::Ready(call), true) => Step::Ran(Some(call().map_err(Box::new))),
            // Cancelled: the call goes, nothing is kept.
            (Step::Ready(call), false) => {
                drop(call);
                return;
            }
            // A second `run`: keep what the first one kept.
            (ran @ Step::Ran(_), _) => ran,
        };
        self.shared.lock().tail = kept;
    }

    fn run_and_publish(self: Arc<Self>, ready: &mut dyn FnMut()) -> Result<(), InvalidStateError> {
        // Should anything unwind out of here (the drop of a cancelled call's captures, say: an
        // executor's call catches the task's own panics), the guard drops the task as a
        // promise, which fails a future left running with `Broken`, so no waiter hangs.
        let guard = PromiseOnUnwind(Some(self));
        let this = guard.0.as_ref().expect("taken only below");
        let mut ready = Some(ready);
        let outcome = match this.take_step_starting() {
            (Step::Ready(call), true) => Some(call().map_err(Box::new)),
            // Cancelled before it started.
            (Step::Ready(_), false) => None,
            // `run` ran it: publish what it kept.
            (Step::Ran(outcome), _) => outcome,
        };
        let promise = guard.into_promise();
        match outcome {
            Some(outcome) => complete_then(promise.inner(), outcome, State::Finished, &mut ready),
            None => {
                if let Some(ready) = ready {
                    ready();
                }
                Ok(())
            }
        }
    }

    fn has_done_callbacks(&self) -> bool {
        Inner::has_done_callbacks(self)
    }

    fn publish(self: Arc<Self>) -> Result<(), InvalidStateError> {
        let outcome = match self.take_step() {
            Step::Ran(outcome) => outcome,
            Step::Ready(_) => None,
        };
        let promise = self.promise();
        match outcome {
            Some(outcome) => complete_boxed(promise.inner(), outcome, State::Finished),
            None => Ok(()),
        }
    }

    fn abandon(self: Arc<Self>, error: Option<TaskError>) {
        self.clear();
        let promise = self.promise();
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

    fn release(self: Arc<Self>) {
        self.clear();
        drop(self.promise());
    }
}

/// An inline task being run: dropped as its [`Promise`] if the run unwinds (see
/// [`InlineTask::run_and_publish`]).
#[cfg(not(loom))]
struct PromiseOnUnwind<T, F>(Option<Arc<Inner<T, Step<F, T>>>>)
where
    F: FnOnce() -> Result<T, TaskError> + Send + 'static,
    T: Send + Sync + 'static;

#[cfg(not(loom))]
impl<T, F> PromiseOnUnwind<T, F>
where
    F: FnOnce() -> Result<T, TaskError> + Send + 'static,
    T: Send + Sync + 'static,
{
    fn into_promise(mut self) -> Promise<T> {
        self.0.take().expect("taken once").promise()
    }
}

#[cfg(not(loom))]
impl<T, F> Drop for PromiseOnUnwind<T, F>
where
    F: FnOnce() -> Result<T, TaskError> + Send + 'static,
    T: Send + Sync + 'static,
{
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            drop(task.promise());
        }
    }
}

#[cfg(not(loom))]
impl InlineTask {
    /// A pending future whose allocation also holds `call`, and the task that runs it.
    ///
    /// `call` returns the outcome: an executor catches the task's panic inside it.
    pub fn new<T, F>(call: F) -> (InlineTask, Future<T>)
    where
        F: FnOnce() -> Result<T, TaskError> + Send + 'static,
        T: Send + Sync + 'static,
    {
        // Made with its one handle counted, so the handle costs no atomic add of its own.
        let inner: Arc<Inner<T, Step<F, T>>> = Arc::new(Inner::new(Step::Ready(call), 1));
        let future = Future {
            inner: Arc::clone(&inner) as Arc<Inner<T>>,
            waker: None,
        };
        (InlineTask { job: Some(inner) }, future)
    }

    fn job(&self) -> &Arc<dyn Job> {
        self.job
            .as_ref()
            .expect("only publish, abandon and Drop take the job")
    }

    /// Marks the future running and runs the call, keeping its outcome for
    /// [`publish`](Self::publish); does nothing if the future was cancelled, or on a second
    /// call.
    pub fn run(&mut self) {
        self.job().run();
    }

    /// [`run`](Self::run) and [`publish`](Self::publish) in one, calling `ready` once in
    /// between: just before the outcome becomes visible if no done-callbacks are waiting to
    /// run, just after they ran otherwise (also when the future was cancelled, or completed by
    /// other means). A pool counts its worker available in `ready`, so that whoever sees the
    /// outcome finds the worker available, but not while callbacks (which may submit and wait)
    /// still run on it. Before the outcome, `ready` runs while the future's lock is held
    /// (which is how it comes first at no cost): it must not call anything on this future,
    /// which would deadlock. It locks the future twice (to start the call, and to publish),
    /// where [`run`](Self::run), [`has_done_callbacks`](Self::has_done_callbacks) and
    /// [`publish`](Self::publish) lock it five times.
    ///
    /// # Errors
    ///
    /// [`InvalidStateError`] if the future was already completed by other means.
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_futures_core::InlineTask;
    ///
    /// let (task, future) = InlineTask::new(|| Ok(6 * 7));
    /// let mut readied = 0;
    /// task.run_and_publish(&mut || readied += 1).unwrap();
    /// assert_eq!(readied, 1);
    /// assert_eq!(future.result(), Ok(&42));
    /// ```
    pub fn run_and_publish(mut self, ready: &mut dyn FnMut()) -> Result<(), InvalidStateError> {
        match self.job.take() {
            Some(job) => job.run_and_publish(ready),
            None => {
                ready();
                Ok(())
            }
        }
    }

    /// Whether done-callbacks are waiting to run; see [`Promise::has_done_callbacks`].
    #[must_use]
    pub fn has_done_callbacks(&self) -> bool {
        self.job().has_done_callbacks()
    }

    /// Completes the future with the outcome [`run`](Self::run) kept (nothing if it did not
    /// run: cancelled), running its done-callbacks on this thread, and lets go of it.
    ///
    /// # Errors
    ///
    /// [`InvalidStateError`] if the future was already completed by other means.
    pub fn publish(mut self) -> Result<(), InvalidStateError> {
        match self.job.take() {
            Some(job) => job.publish(),
            None => Ok(()),
        }
    }

    /// The task will never run: cancels its future (`None`) or fails it with `error` (a
    /// cancelled future stays cancelled).
    pub fn abandon(mut self, error: Option<TaskError>) {
        if let Some(job) = self.job.take() {
            job.abandon(error);
        }
    }
}

#[cfg(not(loom))]
impl Drop for InlineTask {
    /// As a [`Promise`]'s drop: an unpublished future fails with [`TaskError::Broken`].
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            job.release();
        }
    }
}

#[cfg(not(loom))]
impl fmt::Debug for InlineTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineTask")
            .field("published", &self.job.is_none())
            .finish()
    }
}

#[cfg(all(test, not(loom), target_pointer_width = "64"))]
mod size_tests {
    use super::*;

    /// A task taking and returning a word must stay a 128-byte block with glibc's header (its
    /// largest fastbin size; see [`Inner`]): 120 bytes with the `Arc`'s two counts.
    #[test]
    fn a_word_task_fits_a_fastbin_block() {
        fn size_of_val<X>(_: &X) -> usize {
            std::mem::size_of::<X>()
        }
        let arg = 7_u64;
        let call = move || -> Result<u64, TaskError> { Ok(arg) };
        let inner = Inner::<u64, Step<_, u64>>::new(Step::Ready(call), 1);
        assert!(
            2 * std::mem::size_of::<usize>() + size_of_val(&inner) <= 120,
            "a word task's allocation grew to {} bytes",
            2 * std::mem::size_of::<usize>() + size_of_val(&inner)
        );
    }
}
