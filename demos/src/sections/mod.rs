//! The chapter's ten sections, each a function generic over the pool, and the table that maps
//! them to binaries.

use std::io::Write;

use concurrent_futures::Backend;

use crate::DemoResult;

pub(crate) mod s01_basics;
pub(crate) mod s02_map_order;
pub(crate) mod s03_submit_future;
pub(crate) mod s04_map_vs_submit;
pub(crate) mod s05_as_completed;
pub(crate) mod s06_errors;
pub(crate) mod s07_cpu_vs_io;
pub(crate) mod s08_callbacks;
pub(crate) mod s09_cpu_count;
pub(crate) mod s10_pipeline;

/// A demo on one backend, writing to `out`.
pub type DemoFn = fn(Backend, &mut dyn Write) -> DemoResult;

/// How a section uses the backends.
#[derive(Debug, Clone, Copy)]
pub enum Runner {
    /// Runs once per selected backend: the same code on a
    /// [`Pool`](concurrent_futures::Pool) of the backend chosen at run time.
    PerBackend(DemoFn),
    /// Runs once, comparing the pools; shows the rows of the selected backends.
    Compare(fn(&[Backend], &mut dyn Write) -> DemoResult),
}

/// One section of the chapter and the binary that demonstrates it.
#[derive(Debug)]
pub struct Section {
    /// 1 to 10, the order of the chapter.
    pub number: u8,
    /// The binary's name: `cargo run --release -p cf-demos --bin <binary>`.
    pub binary: &'static str,
    /// The chapter's heading.
    pub title: &'static str,
    /// What the demo shows, in one line.
    pub shows: &'static str,
    /// The code.
    pub runner: Runner,
}

impl Section {
    /// Runs the demo on one backend, without a heading: the output two backends must agree on
    /// once [`normalize`](crate::normalize)d.
    ///
    /// # Errors
    ///
    /// A pool that could not be built, a refused submit, a failed write.
    pub fn run_on(&self, backend: Backend, out: &mut dyn Write) -> DemoResult {
        match self.runner {
            Runner::PerBackend(demo) => demo(backend, out),
            Runner::Compare(compare) => compare(&[backend], out),
        }
    }

    /// Runs the demo on `backends`, with a sub-heading per backend where it runs once each.
    ///
    /// # Errors
    ///
    /// As [`run_on`](Self::run_on).
    pub fn run(&self, backends: &[Backend], out: &mut dyn Write) -> DemoResult {
        match self.runner {
            Runner::PerBackend(_) => {
                for (i, &backend) in backends.iter().enumerate() {
                    if i > 0 {
                        writeln!(out)?;
                    }
                    writeln!(
                        out,
                        "── {} (--backend {backend}) ──",
                        backend.executor_name()
                    )?;
                    self.run_on(backend, out)?;
                }
                Ok(())
            }
            Runner::Compare(compare) => compare(backends, out),
        }
    }
}

/// Every section, in the chapter's order.
pub static SECTIONS: [Section; 10] = [
    Section {
        number: 1,
        binary: "s01_basics",
        title: "ProcessPoolExecutor Basics",
        shows: "cpu_count() and squares computed in the pool with map",
        runner: Runner::PerBackend(s01_basics::run),
    },
    Section {
        number: 2,
        binary: "s02_map_order",
        title: "executor.map(): Ordered Parallel Mapping",
        shows: "map yields results in input order, whichever worker ran each item",
        runner: Runner::PerBackend(s02_map_order::run),
    },
    Section {
        number: 3,
        binary: "s03_submit_future",
        title: "executor.submit() and Future Objects",
        shows: "submit returns a Future at once: done(), result(), exception(); many futures kept with their inputs",
        runner: Runner::PerBackend(s03_submit_future::run),
    },
    Section {
        number: 4,
        binary: "s04_map_vs_submit",
        title: "map() vs submit(): When to Use Each",
        shows: "one batch (with one failing item) through map and through submit, and the comparison table",
        runner: Runner::PerBackend(s04_map_vs_submit::run),
    },
    Section {
        number: 5,
        binary: "s05_as_completed",
        title: "as_completed(): Results in Completion Order",
        shows: "as_completed yields futures as they finish: the shortest task first",
        runner: Runner::PerBackend(s05_as_completed::run),
    },
    Section {
        number: 6,
        binary: "s06_errors",
        title: "Error Handling with Futures",
        shows: "a failing task read from its future: as a domain error (Result) and as a panic (TaskError::Panicked)",
        runner: Runner::PerBackend(s06_errors::run),
    },
    Section {
        number: 7,
        binary: "s07_cpu_vs_io",
        title: "CPU-Bound vs I/O-Bound Workloads",
        shows: "sequential vs thread pool vs process pool on CPU-bound and I/O-bound work, as a bar chart",
        runner: Runner::Compare(s07_cpu_vs_io::run),
    },
    Section {
        number: 8,
        binary: "s08_callbacks",
        title: "Callbacks on Futures",
        shows: "add_done_callback: each factorial's callback reports its result",
        runner: Runner::PerBackend(s08_callbacks::run),
    },
    Section {
        number: 9,
        binary: "s09_cpu_count",
        title: "os.cpu_count() and Choosing max_workers",
        shows: "cpu_count(), the default max_workers, and 8 tasks spread over 4 workers",
        runner: Runner::PerBackend(s09_cpu_count::run),
    },
    Section {
        number: 10,
        binary: "s10_pipeline",
        title: "Practical: Real-World Pattern -- Parallel Data Processing",
        shows: "15 records through submit + as_completed, successes and failures collected apart",
        runner: Runner::PerBackend(s10_pipeline::run),
    },
];

/// The section demonstrated by `binary` (`"s05_as_completed"`), if any.
///
/// # Examples
///
/// ```
/// assert_eq!(cf_demos::section("s05_as_completed").unwrap().number, 5);
/// assert!(cf_demos::section("tour").is_none());
/// ```
#[must_use]
pub fn section(binary: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.binary == binary)
}
