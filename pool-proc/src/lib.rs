//! `ProcessPoolExecutor`: Python's process pool for Rust, behind the same
//! [`Executor`] trait as the thread pool, so the same call sites work on both.
//!
//! ```
//! use cf_pool_proc::{as_completed, Executor, MapOptions, ProcessPoolExecutor};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = ProcessPoolExecutor::builder().max_workers(2).build().unwrap();
//! let f = pool.submit(square, 7).unwrap();                       // same line as for threads
//! let g = pool.submit(|(a, b): (f64, f64)| a / b, (1.0, 2.0)).unwrap(); // non-capturing closure
//! assert_eq!((f.result(), g.result()), (Ok(&49), Ok(&0.5)));
//!
//! let squares: Vec<u64> = pool
//!     .map(square, 1..=5, MapOptions::new().chunksize(2))
//!     .unwrap()
//!     .collect::<Result<_, _>>()
//!     .unwrap();
//! assert_eq!(squares, [1, 4, 9, 16, 25]);
//! ```
//!
//! # Why processes, in a language without a GIL
//!
//! In Rust threads already run CPU-bound work in parallel. Processes buy *isolation*: a
//! segfault, `abort`, stack overflow, leak or runaway loop in a task kills one worker, not your
//! program; a task past its time limit can actually be stopped, by killing its worker
//! ([`ProcessPoolExecutor::submit_with_timeout`]); and code that is not thread-safe (a C
//! library with global state) can run in parallel, one copy per process.
//!
//! # What a task may be
//!
//! A task is a fn item or a closure that captures nothing, `Fn(A) -> R` with `A` and `R`
//! serde types (several arguments travel as a tuple). That is Rust's answer to "must be
//! picklable", checked when the program is compiled: a capturing closure fails to build with a
//! message saying why. Arguments and results travel in [`cf_executor_api::codec`]'s encoding
//! (postcard, with large byte strings out of band), so types that need a self-describing format
//! (`#[serde(untagged)]`, `deserialize_any`) are refused with a `Codec` error that keeps the
//! text of a custom serde error.
//!
//! **Large byte payloads**: put them in a [`Buffer`] (anywhere in the argument or result,
//! inside your own types too). A `Buffer` of 64 KiB or more does not go through serde or the
//! socket: it is copied into a shared-memory region (a `memfd` the pool reuses from task to
//! task for the same worker, whose descriptor crosses the socket, sealed so that only its
//! sender can ever write it); the worker reads it in place, and the parent copies a result out
//! of the worker's region. A 16 MiB round trip then runs at memory speed (three copies, each of
//! 8 MiB and more shared with a second CPU when one is free), where a `Vec<u8>`
//! (which serde encodes element by element) manages a few hundred MiB/s. Byte strings as serde
//! writes them (`serde_bytes::ByteBuf`, `#[serde(with = "serde_bytes")]`, `bytes::Bytes`) of
//! 64 KiB or more take the same road with no change to their types: the codec writes them
//! straight into a region of the receiving side (the worker's result always; a `submit`'s
//! argument when a worker is idle, else it copies them once more on the way), and the one copy
//! more than a `Buffer` is the worker's, into the owned `Vec` the type is made of. Python's nearest
//! equivalent is pickle protocol 5's out-of-band buffers. Regions are reused, which is what
//! makes them fast, so memory stays reserved between tasks: the pool keeps up to 128 MiB of
//! regions for each worker, each worker 128 MiB of its own, and each side may keep up to
//! 128 MiB of the other side's mapped (so at most 128 MiB × 4 × workers, reached only after
//! many large buffers). A worker's regions go with it; the rest goes with the pool. A task that keeps its argument's `Buffer` after it
//! returns (in a static, say) keeps that region lent to it; copy what you keep
//! (`Buffer::from(b.to_vec())`).
//!
//! Fresh memory is the other cost of a large payload: a new 16 MiB is 4096 page faults when it
//! is first written, and on a virtual machine they cost more than the copy itself (measured
//! here: 16 ms, against 3 ms for the same copy into memory already in use). So, on Linux, the
//! copies that land in new memory (a result copied out in the parent, a byte string copied into
//! its `Vec` in a worker) ask for huge pages (`MADV_HUGEPAGE`, 4 MiB and up; 4 ms), and a
//! worker tunes glibc's allocator to keep up to 64 MiB of what it frees for the next task
//! rather than return it to the kernel at once: an idle worker may hold that much more memory.
//! A program with its own `#[global_allocator]` keeps that allocator's behaviour.
//!
//! ```
//! use cf_pool_proc::{Buffer, Executor, ProcessPoolExecutor};
//!
//! fn brighten(image: Buffer) -> Buffer {
//!     Buffer::from(image.iter().map(|p| p.saturating_add(10)).collect::<Vec<u8>>())
//! }
//!
//! let pool = ProcessPoolExecutor::builder().max_workers(1).build().unwrap();
//! let image = Buffer::from(vec![100u8; 4 << 20]);
//! let out = pool.submit(brighten, image).unwrap();
//! assert!(out.result().unwrap().iter().all(|&p| p == 110));
//! ```
//!
//! Workers are this same executable, started again (through `/proc/self/exe` on Linux), with your
//! program's command line (`std::env::args()` in a task is the parent's, `argv[0]` included;
//! a `LazyLock` that parses it gets the same configuration). They never run your `main`, or
//! the test harness: a static constructor enters worker mode before `main`, so nothing parses
//! the arguments twice. So
//! a binary, an example, an integration test and a doctest all work with no setup line. If a
//! platform or linker drops that constructor, [`ProcessPoolBuilder::build`] says so and asks for
//! [`init()`] as the first line of `main`.
//!
//! # How a task is named in another process
//!
//! A task travels as the address of a monomorphised *trampoline* (decode `A`, call the task,
//! encode `R`), sent as an offset from a fixed anchor function, because ASLR moves the image
//! as a whole. Before any offset is used, the worker proves it runs the parent's image: the
//! parent sends the executable's device, inode, size and modification time and the offset of a
//! probe function, and the worker compares them with its own. Because the worker is started
//! from the running inode, a rebuild on disk cannot slip in. All `unsafe` code (this, shared
//! memory and process control) is in the platform layer, `sys`, each block with its `SAFETY`
//! argument.
//! Tasks and initializers must live in the executable itself: one whose code is in a shared
//! library loaded at run time (a `cdylib` or `dylib`) is refused at `submit` (or `build`) with
//! an error that says so (`SubmitError::InvalidArgument`, `BuildError::Invalid`), since the
//! handshake proves only the executable.
//!
//! # Platforms
//!
//! Linux uses its own tools (sealed `memfd`s, `PR_SET_PDEATHSIG`, `close_range`,
//! `SO_PEERCRED`, `/proc/self/exe`). macOS and FreeBSD use a portable Unix path: regions are
//! `shm_open` objects whose every descriptor is read-only once mapped, workers watch a
//! lifeline pipe to die with the parent, the executable is `std::env::current_exe()` read
//! before `main`. The portable path is built and linted for those targets and tested on Linux
//! (the `portable-unix` feature, a test knob, selects it there); it has not run on a Mac or a
//! FreeBSD machine.
//!
//! Windows (x86_64-pc-windows-gnu and -msvc) uses `windows-sys`: each worker's channel is a
//! pair of anonymous pipes that also carry handles, workers are started by `CreateProcessW`
//! with an explicit handle list and join a Job Object that kills them when the parent ends,
//! regions are file mappings lent through read-only handles (Windows has no seals), and both
//! `terminate_workers` and `kill_workers` use `TerminateProcess` (a worker so ended exits with
//! code 1; one that crashed exits with an NTSTATUS, named in `WorkerDied`'s message). As on
//! Unix, a worker's death is learnt from the process, not its channel: a waiter thread per
//! worker waits on its process handle and then ends the parent's reads and writes on its
//! pipes, and it also gives those reads the timeout that pipes lack. The suite runs under Wine
//! on Linux (`.ci/windows`); it has not run on Windows itself. On any other target the crate fails to build with a message saying so.
//!
//! # Architecture
//!
//! ```text
//!  submit / map ──► queue (in process, one mutex) ──► feeder N ──frames──► worker process N
//!                                                         ▲                      │
//!           futures completed, callbacks run ◄── reader N ◄──────── results ─────┘
//!                                   watchdog (only with time limits): kills overdue workers
//! ```
//!
//! The modules are layered; each imports only from the layers below it:
//!
//! ```text
//!  executor   ProcessPoolExecutor and its builder: encode, queue, shutdown (no I/O of its own)
//!     │
//!  slot       the per-worker threads: feeder (start, handshake, send), reader (results, death)
//!  watchdog   kills the worker of a task past its time limit
//!     │
//!  state      the shared pool state under one lock: queue, worker slots, lifecycle
//!  worker     the worker process's loop (entered from the crate root)
//!  shm        shared-memory regions for large Buffers, descriptors beside frames
//!  protocol   frames and their size-checked decoders
//!  task       trampolines (worker side) and completions (parent side)
//!     │
//!  sys        the platform layer: every unsafe block and every OS call, one module per OS
//!             family behind one internal API; it imports nothing of the pool (its one call
//!             upward is the worker entry the crate root defines)
//! ```
//!
//! * **`submit` never blocks on a worker**: it encodes the argument in the caller's thread,
//!   appends a job to the queue, and starts a worker if queued work exceeds idle workers
//!   (Python 3.9+ on-demand start and idle reuse), up to `max_workers`.
//! * **One socket pair per worker**, for its whole life, multiplexed by task id: a million
//!   pending tasks open no descriptor. No named rendezvous: the worker inherits its end as a
//!   descriptor (close-on-exec cleared only in the child), so no other local process can
//!   connect first.
//! * **A worker inherits nothing else**: no descriptor of your program reaches it but its
//!   standard input (`/dev/null`), output and error, even those opened without close-on-exec
//!   (a pipe, a build tool's jobserver, a listening socket, a lock file): between `fork` and
//!   `exec` every other descriptor is marked close-on-exec (`close_range` on Linux 5.11 and
//!   later, one `fcntl` per possible descriptor before). So a pipe your program opened sees
//!   end-of-file when you close your end, whatever workers run.
//! * **The feeder thread** of each worker only writes. It starts the process (so
//!   `PR_SET_PDEATHSIG` is tied to a thread that outlives the worker) and feeds it a prefetch
//!   window of tasks: one until timings are known, then growing (slow start) to keep about 2 ms
//!   of work in flight, so deep backlogs of short tasks travel many per frame. When a task
//!   turns out long (no result for 5 ms) with tasks queued behind it in its worker, a worker
//!   that goes idle takes those back (`Reclaim`: the busy worker returns the tasks it has not
//!   started, and they go to the front of the queue), so tasks never wait behind a long one
//!   while a worker idles, and a task that waits for one submitted after it cannot deadlock
//!   the pool. The busy worker then takes no more work until its long task ends; one that
//!   gave back everything (it had not started the tasks yet) or nothing (they had finished
//!   meanwhile) is idle, and is treated so. `map(chunksize)` batches explicitly. Taking tasks
//!   back needs the busy worker's answer (only it knows which it started), so a worker that
//!   cannot answer (stopped with `SIGSTOP`, or frozen by a debugger) keeps its unstarted
//!   tasks, up to a window's worth, until it runs again or dies (a task's time limit kills
//!   it; its unstarted tasks then go to another worker, as any dead worker's do). Python's
//!   pool, which hands each idle worker one task at a time, strands fewer.
//!   A task handed to a worker ahead of time counts as running (its `cancel()` returns
//!   `false`, and a timed-out or dropped `map` cannot cancel it), as the few tasks in Python's
//!   call queue do; `shutdown(cancel_futures)` asks every busy worker for its unstarted tasks
//!   and cancels them as they come back, so they never run.
//! * **The reader thread** of each worker only reads: it completes futures and runs their
//!   callbacks. Neither thread holds the pool lock during I/O or user code. While a reader runs
//!   callbacks its worker takes no new work, so a callback may submit and wait for the result,
//!   provided another worker can run it: with `max_workers(1)` that wait cannot end (CPython's
//!   process pool deadlocks there too). `shutdown(wait)` from a callback does not wait.
//! * **The worker** runs tasks on one thread (the one that ran the initializer), catches
//!   panics, and batches results (sent when it has nothing more to run, when 64 KiB wait, or
//!   within 1 ms). With nothing to run, that thread reads the socket itself, so a task sent
//!   to an idle worker reaches the thread that runs it with no hop in between; while a task
//!   runs, a second thread reads when the parent rings the worker's doorbell (a second
//!   socket), so the parent can take back unstarted tasks at any time and never blocks
//!   writing to a busy worker. A batched result is never lost to a crash of a later task:
//!   before the next task starts, it is recorded in the worker's *black box*, a small shared
//!   page the parent reads after the worker died.
//! * **Frames** are a `u32` length and a hand-laid body; payload bytes are copied, not
//!   re-encoded. Every length is checked before allocation, and a worker that sends a malformed
//!   frame is killed and treated as dead.
//!
//! # When a worker dies
//!
//! A worker that dies (signal, `exit`, `abort`, segfault, stack overflow, killed from outside)
//! is seen from the process itself: a small waiter thread per worker blocks in
//! `waitid(WNOWAIT)` and, when the worker has exited, ends the parent's side of its socket, so
//! its reader reads what the worker sent before dying, then sees end of stream and reaps it.
//! A task that forked a child or started a daemon (which holds a copy of the worker's socket)
//! therefore delays nothing: the dead worker's futures fail at once, and `drop`,
//! `shutdown(wait)`, `kill_workers` and time limits never wait for a worker's descendants.
//! Only the task it was running fails, with [`TaskError::WorkerDied`] naming the pid and the
//! exit code or signal. Tasks it finished keep their results, even those it had not sent yet,
//! so retrying on `WorkerDied` never re-runs work that already ran. Tasks it had been handed
//! ahead of time and had not started go back to the front of the queue, for another worker:
//! the worker notes each task in its black box as it starts it, so the parent knows which it
//! never started, and the parent keeps the payload of a task sent to a busy worker until its
//! result comes. (Such a task still fails with the worker if it was the third worker to die
//! holding it, if it was sent to an idle worker that died before it could start it, or if the
//! worker broke the protocol, which makes its black box untrustworthy. In a shutdown that
//! cancels, `terminate_workers` and `kill_workers`, it ends cancelled instead.) A
//! replacement starts if work is waiting, and the pool goes on. [`WorkerDeath::BreakPool`]
//! restores Python's behaviour instead (everything pending fails, the pool is broken). A panic
//! is not a death: it comes back as [`TaskError::Panicked`] with the worker's message,
//! location and backtrace, and the worker lives on; unless it cannot unwind (`panic = "abort"`,
//! a panic out of an `extern "C"` function), and then the worker prints it as Rust does, writes
//! it to its black box, and aborts: the `WorkerDied` then carries it as `last_panic`.
//!
//! A worker the system will not start (no descriptor left for its socket, too many processes
//! or threads) fails only the tasks that no running worker can take, with
//! [`TaskError::WorkerStartFailed`] saying what the system refused. The pool is not broken: the
//! next `submit` starts a worker again, and runs once the cause is gone. So does a worker that
//! started but was refused the threads it needs besides its first (it says so before it is
//! ready, and runs nothing): it is replaced at once twice, and after a third refusal in a row
//! only when a worker starts or a task is submitted. Python raises the
//! same `OSError` from `submit`; cf's `submit` never waits for a worker, so the future carries
//! it. Workers that start and then die before their handshake are another matter: ten in a
//! row break the pool, since something in the executable kills every fresh process. A large
//! [`Buffer`] whose shared memory or descriptor the system refuses, on either side, fails only
//! its task, with a [`TaskError::Codec`] that says what the system refused; the worker lives
//! on.
//!
//! Workers never outlive the parent: an idle worker sees its socket close and exits; a busy one
//! gets `SIGKILL` from `PR_SET_PDEATHSIG` (on Linux) or from its lifeline watchdog (on the
//! portable path). Every child is reaped.
//!
//! [`terminate_workers`](ProcessPoolExecutor::terminate_workers) and
//! [`kill_workers`](ProcessPoolExecutor::kill_workers) (Python 3.14) cancel the queue, signal
//! every worker and return at once. A task may ignore `SIGTERM`, so the pool's end is bounded
//! instead: a later `shutdown(wait = true)` or `drop` waits at most
//! [`shutdown_grace`](ProcessPoolBuilder::shutdown_grace) (5 s by default) after
//! `terminate_workers`, then kills what still runs with `SIGKILL` and reaps it. A plain
//! `shutdown(wait = true)` still waits for every running task, however long, as Python's does.
//!
//! # Logging
//!
//! A task's `log` calls (`log::warn!` and the rest) reach your process's logger, as they do on
//! the thread pool: each worker forwards its records over its socket, and the parent logs them
//! with their level, target, module path, file and line, the message prefixed with
//! `[worker {pid}] `. A worker takes your `log::max_level()` when it starts, so a level your
//! logger disabled costs a task nothing but a comparison. An `initializer` that installs its own
//! logger in the worker keeps it (then nothing is forwarded); forwarding starts once the
//! initializer has returned, so the initializer's own records are not forwarded (its `Err`
//! message is). See `docs/diagnostics.md`.
//!
//! # Threat model
//!
//! The parent trusts its own executable; workers trust the parent (they run the code offsets
//! it sends). The parent does *not* trust what comes back: a worker running a buggy or hostile
//! task may write anything to its socket, and gets a decoder that allocates only a small
//! multiple of what it sent, a kill and `WorkerDied`, never a parent crash. Workers cannot
//! reach each other's data through the pool: shared-memory regions are the parent's per
//! worker, sealed so that no receiver can write them (not even through a descriptor reopened
//! from `/proc`), and handed back over the receiver's own socket, so no worker can release a
//! region another is reading. The parent copies only what a worker's own pages back, and
//! keeps no descriptor a worker sends without naming it. Other local users cannot join the
//! rendezvous, since there is none on the file system. Workers are not a sandbox: they run as
//! your user, with what the OS lets such a process do. The full model, what each defence
//! rests on and where it stops: `docs/security.md` in the repository.
#![warn(missing_docs)]

pub use cf_executor_api::*;

#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "freebsd",
    windows
)))]
compile_error!(
    "cf-pool-proc supports Linux, macOS, FreeBSD and Windows; this target is none of them. \
     The thread pool, cf-pool-thread, builds everywhere."
);

/// A `log` macro call (`guarded!(warn!("..."))`) that a logger which panics cannot unwind out
/// of: most of the pool's calls run on its own threads (readers, feeders, the watchdog), and a
/// thread of the pool that dies leaves the futures it serves pending and `shutdown` waiting
/// (see `cf_executor_api::log_guarded`).
macro_rules! guarded {
    ($level:ident!($($arg:tt)*)) => {
        ::cf_executor_api::log_guarded(|| ::log::$level!($($arg)*))
    };
}

/// Declares the items that exist only on the supported platforms (on any other, the one
/// `compile_error!` above is the whole build output).
macro_rules! supported {
    ($($item:item)*) => {
        $(
            #[cfg(any(
                target_os = "linux",
                target_os = "macos",
                target_os = "freebsd",
                windows
            ))]
            $item
        )*
    };
}

supported! {
mod blackbox;
mod executor;
mod protocol;
mod shm;
mod slot;
mod state;
mod sys;
mod task;
pub mod transport;
mod watchdog;
mod worker;

/// Entry points for `cargo fuzz` and the protocol tests; not part of the stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the parent's decoder over one frame as a worker would send it (length prefix
    /// included): the error text for garbage, never a panic, allocation bounded by `max`.
    ///
    /// # Errors
    ///
    /// A description of why the frame was refused.
    pub fn parse_worker_frame(frame: &[u8], max: usize) -> Result<(), String> {
        let body = crate::protocol::read_frame(&mut &frame[..], max, None)
            .map_err(|e| e.to_string())?
            .ok_or("empty stream")?;
        crate::protocol::decode_worker_message(&body)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
pub use executor::{ProcessPoolBuilder, ProcessPoolExecutor, DEFAULT_SHUTDOWN_GRACE};
pub use state::WorkerDeath;
pub use worker::is_worker;

/// Enters worker mode if this process was started as a worker; call it first in `main` only
/// if `build` says the static constructor did not run. Harmless otherwise.
///
/// # Examples
///
/// ```
/// cf_pool_proc::init();
/// ```
pub fn init() {
    sys::enter_worker_mode_if_requested(worker::run);
}

/// Runs before `main` (and before the test harness, in test binaries): a worker never reaches
/// the user's `main`. The platform layer checks that this process was started as a worker by
/// its real parent, then hands the inherited socket to the worker loop. Not under Miri, which
/// runs only this crate's process-free unit tests (`.ci/miri`) and rejects the constructor's
/// calling convention.
#[cfg_attr(not(miri), ctor::ctor)]
#[cfg_attr(miri, allow(dead_code))]
fn cf_pool_proc_worker_entry() {
    sys::enter_worker_mode_if_requested(worker::run);
}
}
