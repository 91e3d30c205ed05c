//! `wait` and `as_completed`: block on many futures through one registered [`Waiter`], never by
//! polling them (an untimed wait looks at the waiter for a few microseconds before it sleeps:
//! see `Waiter`). Futures may come from different executors.
//!
//! `wait` registers its waiter with every future not yet done. `as_completed` first takes what
//! is done (a lock-free look at each future's outcome cell) and registers only when it would
//! otherwise block; see [`AsCompleted`]. Either way the keys of completed futures collect in
//! buffers sized once for all the futures, which the waiting side swaps rather than grows.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::error::TimeoutError;
use crate::future::Future;
use crate::primitive::Arc;
use crate::waiter::Waiter;

/// When [`wait`] returns, as in Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReturnWhen {
    /// As soon as any future is done.
    FirstCompleted,
    /// As soon as any future fails (cancelled ones do not count); otherwise like `AllCompleted`.
    FirstException,
    /// When every future is done.
    #[default]
    AllCompleted,
}

/// What [`wait`] returns: the futures split by whether they were done.
///
/// Each list keeps the order of the input, without duplicates.
pub struct WaitResult<T> {
    /// Finished or cancelled futures.
    pub done: Vec<Future<T>>,
    /// The others.
    pub not_done: Vec<Future<T>>,
}

impl<T: fmt::Debug> fmt::Debug for WaitResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitResult")
            .field("done", &self.done)
            .field("not_done", &self.not_done)
            .finish()
    }
}

fn dedup<'a, T: 'a>(futures: impl IntoIterator<Item = &'a Future<T>>) -> Vec<Future<T>> {
    let futures = futures.into_iter();
    // Sized once, not grown by doubling (each large reallocation is costly with thousands).
    let mut unique: Vec<Future<T>> = Vec::with_capacity(futures.size_hint().0);
    let mut distinct = Distinct::new(unique.capacity());
    for f in futures {
        if let Some(f) = distinct.clone_if_new(f, || unique.iter().map(Future::id)) {
            unique.push(f);
        }
    }
    unique
}

/// Picks the distinct futures of an input, in order, keeping a set of those seen only once it
/// could matter.
///
/// Right after a clone, the future has at least two handles: the borrowed one (alive for the
/// whole call) and the clone. Had an earlier item of this call been the same future, by this
/// handle or another, the clone kept from it would be a third; so a count of exactly two proves
/// the item new, whatever other threads do (they can add handles, and drop only their own).
/// The set is therefore built only at the first clone that finds more than two (a repeat, or a
/// future the caller also keeps elsewhere, say as a map's key), from the futures kept so far,
/// and every later item goes through it. A batch of futures just submitted and collected in
/// one list never needs it. For 20 000 futures the set is about 300 KiB, built on every call.
/// Submitting 20 000 no-op tasks to a 2-thread pool and collecting them, 40 rounds alternating
/// with and without the set in one small program, four times (while the pool still took jobs
/// in per-worker batches, an earlier version of its queue): skipping it took 22 to 27 % off a
/// round (the allocator gave the set's memory back and faulted it in again every round), and 0
/// to 11 % with glibc's trimming turned off.
struct Distinct {
    seen: Option<HashSet<usize, BuildHasherDefault<IdHasher>>>,
    /// How many items the input says it has: the set's size if it is built.
    expected: usize,
}

impl Distinct {
    fn new(expected: usize) -> Self {
        Distinct {
            seen: None,
            expected,
        }
    }

    /// A clone of `f`, unless an earlier item was the same future. `kept` lists the ids of the
    /// futures kept so far; it is called at most once, when the set is built.
    fn clone_if_new<T, I: Iterator<Item = usize>>(
        &mut self,
        f: &Future<T>,
        kept: impl FnOnce() -> I,
    ) -> Option<Future<T>> {
        let (clone, handles) = f.clone_counted();
        if self.seen.is_none() && handles > 2 {
            let mut seen =
                HashSet::with_capacity_and_hasher(self.expected, BuildHasherDefault::default());
            seen.extend(kept());
            self.seen = Some(seen);
        }
        let repeat = self
            .seen
            .as_mut()
            .is_some_and(|seen| !seen.insert(clone.id()));
        (!repeat).then_some(clone)
    }
}

/// Hashes a future's id (an address) for [`Distinct`]: a multiply that spreads the address's
/// bits, with its high half folded into the low one (addresses' low bits are all zero, and a
/// table picks buckets by the low bits). SipHash, the default, resists hash flooding, which
/// addresses this process allocated cannot mount, and cost a tenth of `as_completed`.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_usize(&mut self, id: usize) {
        self.write_u64(id as u64);
    }
    fn write_u64(&mut self, id: u64) {
        let h = (self.0 ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Waits for `futures` as `return_when` says, or until `timeout`; a timeout is not an error, it
/// returns the split as it is.
///
/// Duplicates count once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cf_futures_core::{wait, Promise, ReturnWhen};
///
/// let (a, b) = (Promise::new(), Promise::<i32>::new());
/// a.set_result(1).unwrap();
/// let fs = [a.future(), b.future(), a.future()];
/// let split = wait(&fs, Some(Duration::from_secs(5)), ReturnWhen::FirstCompleted);
/// assert_eq!(split.done, vec![a.future()]);
/// assert_eq!(split.not_done, vec![b.future()]);
/// ```
pub fn wait<'a, T: 'a>(
    futures: impl IntoIterator<Item = &'a Future<T>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> WaitResult<T> {
    let futures = dedup(futures);
    let deadline = deadline_after(timeout);
    let waiter = Arc::new(Waiter::with_capacity(futures.len()));
    let mut fired = Vec::with_capacity(futures.len());
    let mut done = vec![false; futures.len()];
    let mut done_count = 0;
    let mut failed = false;
    for (i, f) in futures.iter().enumerate() {
        if f.register(&waiter, i) {
            done[i] = true;
            done_count += 1;
            failed |= f.failed();
        }
    }
    loop {
        let satisfied = match return_when {
            ReturnWhen::FirstCompleted => done_count > 0,
            ReturnWhen::FirstException => failed || done_count == futures.len(),
            ReturnWhen::AllCompleted => done_count == futures.len(),
        };
        if satisfied || futures.is_empty() {
            break;
        }
        fired.clear();
        if !waiter.wait_into(deadline, &mut fired) {
            break;
        }
        for &i in &fired {
            if !done[i] {
                done[i] = true;
                done_count += 1;
                failed |= futures[i].failed();
            }
        }
    }
    for (i, f) in futures.iter().enumerate() {
        if !done[i] {
            f.unregister(&waiter);
        }
    }
    let (done, not_done) = futures.into_iter().partition(Future::done);
    WaitResult { done, not_done }
}

/// Yields each of `futures` as it becomes done: those already done first, then in completion
/// order. Duplicates are yielded once.
///
/// The order is that of completion as each call of `next` finds it: futures that finished
/// while the caller was busy between two calls come in the order they appear in `futures`,
/// not necessarily the order they finished in (Python's `as_completed` has its waiter record
/// the order of every completion after its first `next`; this iterator registers one only
/// when it would otherwise block, which is most of its cost saved on a large batch). No
/// future is yielded before one that was already done when `next` was called, and none is
/// yielded twice or missed.
///
/// With a `timeout` (measured from this call) the iterator yields one
/// `Err(TimeoutError)` naming how many futures are unfinished, then ends. A yielded future is no
/// longer referenced by the iterator.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cf_futures_core::{as_completed, Promise};
///
/// let promises: Vec<Promise<u32>> = (0..3).map(|_| Promise::new()).collect();
/// let futures: Vec<_> = promises.iter().map(|p| p.future()).collect();
/// promises[2].set_result(2).unwrap();
/// promises[0].set_result(0).unwrap();
/// promises[1].set_result(1).unwrap();
/// let order: Vec<u32> = as_completed(&futures, Some(Duration::from_secs(5)))
///     .map(|f| *f.unwrap().result().unwrap())
///     .collect();
/// assert_eq!(order.len(), 3);
/// ```
pub fn as_completed<'a, T: 'a>(
    futures: impl IntoIterator<Item = &'a Future<T>>,
    timeout: Option<Duration>,
) -> AsCompleted<T> {
    let futures = futures.into_iter();
    let len = futures.size_hint().0;
    // One pass: each future's state is looked at while its cache lines are at hand (with
    // thousands of futures, every extra pass over them is a pass of cache misses).
    let mut slots = Vec::with_capacity(len);
    let mut ready = Vec::with_capacity(len);
    let mut pending = Vec::with_capacity(len);
    let mut distinct = Distinct::new(len);
    for f in futures {
        let kept = || slots.iter().flatten().map(Future::id);
        let Some(f) = distinct.clone_if_new(f, kept) else {
            continue;
        };
        if f.is_done_now() {
            ready.push(slots.len());
        } else {
            pending.push(slots.len());
        }
        slots.push(Some(f));
    }
    AsCompleted {
        next: 0,
        total: slots.len(),
        remaining: slots.len(),
        slots,
        ready,
        pending,
        waiter: None,
        deadline: deadline_after(timeout),
        finished: false,
    }
}

/// The iterator returned by [`as_completed`].
///
/// It registers its waiter with the futures only when it would otherwise block: until then it
/// looks at the unfinished ones again (without locking them) each time it has yielded all it
/// knew done, as long as such a look still finds a good share of them done. Most of a large
/// batch of short tasks is done by the time it is collected, and a registration (a lock, and
/// a completion that takes the waiter's lock too) per future was most of `as_completed`'s cost.
pub struct AsCompleted<T> {
    slots: Vec<Option<Future<T>>>,
    /// Indices of done futures not yet yielded: `ready[next..]`. Swapped with the waiter's
    /// buffer when used up, so it never grows.
    ready: Vec<usize>,
    next: usize,
    /// Indices of futures not done at the last look, while no waiter is registered.
    pending: Vec<usize>,
    /// Registered with every future in `pending` once looking stopped paying.
    waiter: Option<Arc<Waiter>>,
    deadline: Option<Instant>,
    remaining: usize,
    total: usize,
    finished: bool,
}

impl<T> AsCompleted<T> {
    fn unregister_rest(&mut self) {
        if let Some(waiter) = &self.waiter {
            for f in self.slots.iter().flatten() {
                f.unregister(waiter);
            }
        }
    }

    /// Moves the futures of `pending` that are done now into `ready`; `true` if that was a
    /// quarter of them or more (then it is worth looking again before registering).
    fn look_again(&mut self) -> bool {
        let before = self.pending.len();
        let (slots, ready) = (&self.slots, &mut self.ready);
        self.pending.retain(|&i| {
            let done = slots[i].as_ref().is_some_and(Future::is_done_now);
            if done {
                ready.push(i);
            }
            !done
        });
        let found = before - self.pending.len();
        found > 0 && found * 4 >= before
    }

    /// Registers a waiter with every future in `pending`; those done meanwhile go to `ready`.
    fn register(&mut self) {
        let waiter = Arc::new(Waiter::with_capacity(self.pending.len()));
        for i in self.pending.drain(..) {
            if let Some(f) = &self.slots[i] {
                if f.register(&waiter, i) {
                    self.ready.push(i);
                }
            }
        }
        self.waiter = Some(waiter);
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Result<Future<T>, TimeoutError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        loop {
            while let Some(&i) = self.ready.get(self.next) {
                self.next += 1;
                if let Some(f) = self.slots[i].take() {
                    self.remaining -= 1;
                    return Some(Ok(f));
                }
            }
            if self.remaining == 0 {
                self.finished = true;
                return None;
            }
            self.ready.clear();
            self.next = 0;
            if self.waiter.is_none() {
                if self.look_again() {
                    continue;
                }
                self.register();
                if !self.ready.is_empty() {
                    continue;
                }
            }
            let waiter = self.waiter.as_ref().expect("registered above");
            if !waiter.wait_into(self.deadline, &mut self.ready) {
                self.finished = true;
                self.unregister_rest();
                return Some(Err(TimeoutError {
                    unfinished: self.remaining,
                    total: self.total,
                }));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.finished {
            (0, Some(0))
        } else {
            (0, Some(self.remaining + 1))
        }
    }
}

impl<T> Drop for AsCompleted<T> {
    fn drop(&mut self) {
        self.unregister_rest();
    }
}

impl<T> fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.remaining)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}
