//! Section 7, "CPU-Bound vs I/O-Bound Workloads": sequential, thread pool and process pool on
//! the chapter's two workloads, timed and drawn as bars, with what the numbers mean in Rust.
//!
//! This section compares the pools, so it always runs both local pools; `--backend` picks which
//! pool rows are shown, and `--backend cluster` adds a row for the cluster.

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use cf_executor_api::{cpu_count, MapOptions, Payload, ProgressExt, Task};

use concurrent_futures::{Backend, Executor, Pool};

use crate::{BackendOutput, DemoResult};

/// Workers per pool, as in the chapter.
const WORKERS: usize = 4;
/// Tasks per workload, as in the chapter.
const TASKS: usize = 8;
/// Loop length of one CPU task. Python's 1.5 million iterations take Rust half a millisecond;
/// 8 x 300 million take well under a second in a release build. Debug builds are some 20
/// times slower per iteration, so they run less, which keeps `cargo test` quick.
const CPU_N: u64 = if cfg!(debug_assertions) {
    8_000_000
} else {
    300_000_000
};
/// Seconds one I/O task waits, as in the chapter.
const IO_SECONDS: f64 = 0.2;
/// Width of the longest bar, in characters.
const BAR_WIDTH: usize = 40;

/// CPU-bound: the sum of squares below `n`. `black_box` hides each `i` from the optimizer, so
/// LLVM cannot replace the loop with a closed formula and the work is really done.
///
/// Never inlined, so the sequential run and both pools execute the very same machine code: an
/// inlined copy per call site can land at a different alignment, and a tight loop's speed
/// depends on that (we measured one copy running at half the speed of another).
#[inline(never)]
fn cpu_heavy(n: u64) -> u64 {
    let mut total: u64 = 0;
    for i in 0..n {
        let i = black_box(i);
        total = total.wrapping_add(i.wrapping_mul(i));
    }
    total
}

/// I/O-bound: waits as a network call would.
fn io_heavy(seconds: f64) -> f64 {
    std::thread::sleep(Duration::from_secs_f64(seconds));
    seconds
}

/// One row of a chart.
struct Row {
    backend: Option<Backend>,
    label: &'static str,
    seconds: f64,
}

pub(crate) fn run(backends: &[Backend], out: &mut dyn Write) -> DemoResult {
    writeln!(
        out,
        "CPU-bound: {TASKS} x cpu_heavy({}) (a sum of squares); {WORKERS} workers per pool",
        with_underscores(CPU_N)
    )?;
    let rows = measure(cpu_heavy, &[CPU_N; TASKS], "CPU-bound", backends)?;
    chart(&rows, backends, out)?;
    writeln!(
        out,
        "{}",
        CPU_TEXT.replace("{cpus}", &cpu_count().to_string())
    )?;

    writeln!(out)?;
    writeln!(
        out,
        "I/O-bound: {TASKS} x io_heavy({IO_SECONDS}) (a {IO_SECONDS}-second wait); {WORKERS} workers per pool"
    )?;
    let rows = measure(io_heavy, &[IO_SECONDS; TASKS], "I/O-bound", backends)?;
    chart(&rows, backends, out)?;
    writeln!(out, "{IO_TEXT}")?;
    writeln!(out)?;
    writeln!(out, "{TABLE}")?;
    Ok(())
}

/// The workload sequentially, then on each local pool (and on the cluster if it is among
/// `backends`), each run under a progress bar on stderr (hidden when stderr is not a terminal,
/// so compared output never sees it).
fn measure<F, A, R>(
    f: F,
    workload: &[A],
    what: &str,
    backends: &[Backend],
) -> Result<Vec<Row>, Box<dyn std::error::Error + Send + Sync>>
where
    F: Task<A, R>,
    A: Payload + Clone,
    R: Payload + Sync,
{
    let mut rows = vec![
        sequential(f, workload, what),
        timed_pool(Backend::Thread, f, workload, what)?,
        timed_pool(Backend::Process, f, workload, what)?,
    ];
    if backends.contains(&Backend::Cluster) {
        rows.push(timed_pool(Backend::Cluster, f, workload, what)?);
    }
    Ok(rows)
}

/// The baseline: every task in turn on this thread.
fn sequential<F, A, R>(f: F, workload: &[A], what: &str) -> Row
where
    F: Fn(A) -> R,
    A: Clone,
{
    let start = Instant::now();
    // The bar steps as each call returns (the call runs inside `next`).
    workload
        .iter()
        .map(|arg| black_box(f(black_box(arg.clone()))))
        .progress(workload.len(), format!("{what}, sequential"))
        .for_each(drop);
    Row {
        backend: None,
        label: "Sequential",
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// The workload through `map` on a fresh pool, timed like the chapter's `with` block: from
/// creating the pool to having shut it down.
fn timed_pool<F, A, R>(
    backend: Backend,
    f: F,
    workload: &[A],
    what: &str,
) -> Result<Row, Box<dyn std::error::Error + Send + Sync>>
where
    F: Task<A, R>,
    A: Payload + Clone,
    R: Payload + Sync,
{
    let what = format!("{what}, {}", backend.executor_name());
    let start = Instant::now();
    {
        let executor = Pool::with_workers(backend, WORKERS)?;
        for result in executor
            .map(f, workload.to_vec(), MapOptions::new())?
            .progress(workload.len(), what)
        {
            black_box(result?);
        }
    }
    Ok(Row {
        backend: Some(backend),
        label: backend.executor_name(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Prints the rows of the selected backends (and the baseline) as times, speedups and bars.
/// Pool rows start with their backend's marker: they are what differs between the backends.
fn chart(rows: &[Row], backends: &[Backend], out: &mut dyn Write) -> DemoResult {
    let baseline = rows[0].seconds;
    let longest = rows
        .iter()
        .map(|r| r.seconds)
        .fold(f64::MIN_POSITIVE, f64::max);
    for row in rows {
        let marker = match row.backend {
            Some(b) if !backends.contains(&b) => continue,
            Some(b) => b.marker(),
            None => "",
        };
        writeln!(
            out,
            "{marker:<9} {:<19} {:>7.3}s  speedup {:>5.2}x  │{}│",
            row.label,
            row.seconds,
            baseline / row.seconds,
            bar(row.seconds / longest)
        )?;
    }
    Ok(())
}

/// `300000000` as Rust writes it: `300_000_000`.
fn with_underscores(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('_');
        }
        out.push(c);
    }
    out
}

/// A bar of `fraction` (0 to 1) of [`BAR_WIDTH`], in eighths of a character.
fn bar(fraction: f64) -> String {
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * (BAR_WIDTH * 8) as f64).round() as usize;
    let full = eighths / 8;
    let mut bar = "█".repeat(full);
    if full < BAR_WIDTH {
        bar.push(PARTIAL[eighths % 8]);
        bar.push_str(&" ".repeat(BAR_WIDTH - full - 1));
    }
    bar
}

const CPU_TEXT: &str = "\
What Rust shows: there is no GIL. Rust threads run CPU-bound code truly in parallel, so
the thread pool scales with the cores ({cpus} here) just as the process pool does; the
process pool also pays to start its workers and to serialize every argument and result.
(Both are bounded by the cores that are free: on a busy machine both speedups fall.)
What processes buy in Rust is isolation, not speed:
  - a segfault, abort, stack overflow, leak or runaway loop kills one worker, not the
    program: its future fails with TaskError::WorkerDied and the pool starts a new worker;
  - a task that overruns can be stopped by killing its worker process (a thread cannot
    be killed from outside);
  - code that is not thread-safe (global state, a C library with one global context) can
    still run in parallel, one copy per process.";

const IO_TEXT: &str = "\
Both pools overlap the waiting: 8 waits on 4 workers take about two rounds of 0.2 s.
Threads are cheaper to start and need no serialization, so for I/O-bound work prefer
ThreadPoolExecutor (or async I/O).";

const TABLE: &str = "\
| Workload  | Bottleneck    | Best executor in Rust  | Why                                        |
|-----------|---------------|------------------------|--------------------------------------------|
| CPU-bound | Computation   | ThreadPoolExecutor     | no GIL: threads run in parallel            |
|           |               | ProcessPoolExecutor    | when tasks need isolation (crash, timeout) |
| I/O-bound | Network, disk | ThreadPoolExecutor     | waiting needs no core; threads are cheap   |
| Mixed     | Both          | Depends                | profile first; consider async I/O          |";
