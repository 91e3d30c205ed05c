//! Progress bars over `map` and `as_completed` (feature `progress`), drawn with `indicatif`.

use std::borrow::Cow;
use std::fmt;

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};

/// The `indicatif` this crate draws with, for [`ProgressExt::progress_with`] and custom styles.
pub use indicatif;

const BAR: &str = "{msg} [{bar:32}] {pos}/{len} ({elapsed}, eta {eta})";
const SPINNER: &str = "{spinner} {msg}: {pos} done ({elapsed})";

/// A progress bar on stderr over any iterator, made for [`Executor::map`](crate::Executor::map)
/// and [`as_completed`](crate::as_completed): one step per item yielded.
///
/// Available with the `progress` feature. The bar is drawn on stderr, so stdout stays clean
/// for the program's output, and it is hidden when stderr is not a terminal (a pipe, a log
/// file, CI), so nothing needs switching off in scripts. It is cleared when the iterator ends
/// or is dropped.
///
/// Give the number of items when you know it (`futures.len()`, the input's length): neither
/// `map` nor `as_completed` knows its exact length up front (`as_completed`'s `size_hint`
/// counts a possible timeout error; a lazy `map` may be infinite). With `None` the length
/// comes from the iterator's `size_hint` if that is exact, and otherwise a spinner counts.
///
/// The method name is `indicatif::ProgressIterator`'s too; import one of the two traits per
/// scope.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cf_executor_api::{as_completed, Executor, MapOptions, ProgressExt, Promise, TaskError};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// // A bar over `map`: the caller knows how many inputs there are.
/// fn squares<E: Executor>(executor: &E, n: u64) -> Result<Vec<u64>, TaskError> {
///     executor
///         .map(square, 0..n, MapOptions::new())?
///         .progress(n as usize, "squares")
///         .collect()
/// }
///
/// // A bar over `as_completed`, completing in whatever order the work finishes.
/// let promises: Vec<Promise<u64>> = (0..4).map(|_| Promise::new()).collect();
/// let futures: Vec<_> = promises.iter().map(Promise::future).collect();
/// let worker = std::thread::spawn(move || {
///     for (i, p) in promises.into_iter().enumerate().rev() {
///         p.set_result(i as u64).unwrap();
///     }
/// });
/// let mut total = 0;
/// let timeout = Some(Duration::from_secs(10));
/// for done in as_completed(&futures, timeout).progress(futures.len(), "tasks") {
///     total += done.unwrap().result().unwrap();
/// }
/// assert_eq!(total, 6);
/// worker.join().unwrap();
/// # let _ = squares::<Inline>;
/// # struct Inline;
/// # impl Executor for Inline {
/// #     fn submit<F, A, R>(&self, f: F, arg: A) -> Result<cf_executor_api::Future<R>, cf_executor_api::SubmitError>
/// #     where F: cf_executor_api::Task<A, R>, A: cf_executor_api::Payload, R: cf_executor_api::Payload + Sync {
/// #         let p = Promise::new();
/// #         let _ = p.set_outcome(cf_executor_api::call_catching(|| f(arg)));
/// #         Ok(p.future())
/// #     }
/// #     fn shutdown(&self, _: bool, _: bool) {}
/// #     fn max_workers(&self) -> usize { 1 }
/// # }
/// # assert_eq!(squares(&Inline, 4).unwrap(), [0, 1, 4, 9]);
/// ```
pub trait ProgressExt: Iterator + Sized {
    /// Wraps the iterator in a bar of `len` steps (or, with `None`, of the exact `size_hint`
    /// if there is one, else a spinner) labelled `label`.
    fn progress(
        self,
        len: impl Into<Option<usize>>,
        label: impl Into<Cow<'static, str>>,
    ) -> ProgressIter<Self> {
        let len = len.into().or_else(|| match self.size_hint() {
            (low, Some(high)) if low == high => Some(high),
            _ => None,
        });
        let bar = match len {
            Some(len) => ProgressBar::new(len as u64).with_style(style(BAR)),
            None => ProgressBar::new_spinner().with_style(style(SPINNER)),
        };
        ProgressIter {
            inner: self,
            bar: bar
                .with_message(label)
                .with_finish(ProgressFinish::AndClear),
            owned: true,
        }
    }

    /// Wraps the iterator in a bar you built: your style, your finish behaviour, or a bar of a
    /// [`MultiProgress`](indicatif::MultiProgress). Each item yielded is one step. When the
    /// iterator ends with the bar full (or lengthless), the bar finishes as its
    /// [`ProgressFinish`] says (indicatif's default leaves it on screen); a bar that is not
    /// full yet stays open, so one bar can span several iterators.
    ///
    /// # Examples
    ///
    /// ```
    /// use cf_executor_api::indicatif::ProgressBar;
    /// use cf_executor_api::ProgressExt;
    ///
    /// // One bar across two loops.
    /// let bar = ProgressBar::new(6).with_message("both halves");
    /// let first: u32 = (0..3).progress_with(bar.clone()).sum();
    /// let second: u32 = (3..6).progress_with(bar.clone()).sum();
    /// assert_eq!((first + second, bar.position()), (15, 6));
    /// ```
    fn progress_with(self, bar: ProgressBar) -> ProgressIter<Self> {
        ProgressIter {
            inner: self,
            bar,
            owned: false,
        }
    }
}

impl<I: Iterator> ProgressExt for I {}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the built-in templates are valid")
        .progress_chars("█▉▊▋▌▍▎▏  ")
}

/// The iterator returned by [`ProgressExt::progress`]: the same items, one bar step each.
#[must_use = "iterators are lazy; the bar advances as items are consumed"]
pub struct ProgressIter<I> {
    inner: I,
    bar: ProgressBar,
    /// Made by [`ProgressExt::progress`]: finished (cleared) when the iterator ends, full or not.
    owned: bool,
}

impl<I> ProgressIter<I> {
    /// The bar, e.g. to change its message or to print a line above it
    /// ([`ProgressBar::println`] or [`ProgressBar::suspend`]).
    #[must_use]
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

impl<I: Iterator> Iterator for ProgressIter<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<Self::Item> {
        match self.inner.next() {
            Some(item) => {
                self.bar.inc(1);
                Some(item)
            }
            None => {
                let full = self
                    .bar
                    .length()
                    .is_none_or(|len| self.bar.position() >= len);
                if (self.owned || full) && !self.bar.is_finished() {
                    self.bar.finish_using_style();
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<I: fmt::Debug> fmt::Debug for ProgressIter<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressIter")
            .field("inner", &self.inner)
            .field("position", &self.bar.position())
            .field("length", &self.bar.length())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_pass_through_and_each_is_one_step() {
        let mut it = (1..=4).progress(4, "four");
        assert_eq!(it.bar().length(), Some(4));
        assert_eq!(it.next(), Some(1));
        assert_eq!(it.bar().position(), 1);
        assert_eq!(it.by_ref().collect::<Vec<_>>(), [2, 3, 4]);
        assert!(
            it.bar().is_finished(),
            "an own bar finishes when the iterator ends"
        );
    }

    #[test]
    fn the_length_comes_from_the_caller_or_an_exact_size_hint() {
        assert_eq!(
            [1, 2, 3].iter().progress(None, "hint").bar().length(),
            Some(3)
        );
        assert_eq!((0..).progress(None, "endless").bar().length(), None);
        let inexact = (0..10).filter(|x| x % 2 == 0);
        assert_eq!(inexact.progress(None, "filter").bar().length(), None);
        assert_eq!((0..10).progress(7, "caller").bar().length(), Some(7));
    }

    #[test]
    fn an_own_bar_finishes_even_when_the_iteration_ends_early() {
        let mut it = (0..2).progress(5, "short");
        assert_eq!(it.by_ref().count(), 2);
        assert!(it.bar().is_finished());
    }

    #[test]
    fn a_shared_bar_stays_open_until_full() {
        let bar = ProgressBar::hidden();
        bar.set_length(5);
        let mut first = (0..2).progress_with(bar.clone());
        assert_eq!(first.by_ref().count(), 2);
        assert!(!bar.is_finished());
        assert_eq!((0..3).progress_with(bar.clone()).count(), 3);
        assert!(bar.is_finished());
        assert_eq!(bar.position(), 5);
    }

    #[test]
    fn a_lengthless_bar_finishes_at_the_end() {
        let bar = ProgressBar::hidden();
        assert_eq!((0..3).progress_with(bar.clone()).count(), 3);
        assert!(bar.is_finished());
    }
}
