//! Leak checks shared by the process pool's tests: no zombie children, no stray worker
//! processes, no descriptors left open; plus a safe way to SIGKILL a worker and a hang guard.
//!
//! The tests of one file run as parallel threads of one process, which share one descriptor
//! table and one set of children, so each check says when it is valid:
//!
//! * [`assert_zombies_reaped`] is valid at any time, in any test. A zombie child is normal for a
//!   moment (a pool's reader thread reaps its worker right after it dies, perhaps for another
//!   test running in parallel); it fails only for a zombie that stays unreaped for [`REAP_LIMIT`].
//! * Descriptor counts and the set of children only mean something while nothing else runs.
//!   [`exclusive`] serialises the tests that take it; inside it, [`Snapshot::take`] before and
//!   [`Snapshot::assert_restored`] after compare exactly. Every test in `chaos.rs`, `stress.rs`
//!   and `garbage.rs` runs that way.
//! * [`assert_clean_at_end`] is the body of the last test of a file (named `zz_no_leaks`, and
//!   libtest starts tests in name order): it waits until every other thread of the test binary
//!   has ended, then requires no children at all and exactly the descriptors that were open
//!   before the harness started (captured by a static constructor). Under `--shuffle` or a name
//!   filter it may run before the others and then checks less; it is never wrong.
#![allow(dead_code, unreachable_pub, unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(unix)]
use std::sync::OnceLock;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
#[cfg(unix)]
use std::time::Instant;

/// How long a dead child may stay a zombie: its reaper is a pool thread that may be descheduled
/// on a loaded machine, but never this long.
pub const REAP_LIMIT: Duration = Duration::from_secs(30);

/// How long [`assert_clean_at_end`] waits for the rest of the binary's tests to finish.
pub const OTHERS_LIMIT: Duration = Duration::from_secs(900);

/// The open descriptors of this process: number -> what it points to.
pub type Fds = BTreeMap<i32, String>;

/// On Windows the leak checks (which read `/proc`) check nothing, and a worker is ended with
/// `TerminateProcess`: the pool tests there check behaviour, not leaks.
#[cfg(windows)]
mod windows_stubs;
#[cfg(windows)]
#[allow(unused_imports)] // a test file that uses none of them
pub use windows_stubs::*;

#[cfg(unix)]
/// The descriptors open before `main` (and so before the test harness) ran.
static AT_START: OnceLock<Fds> = OnceLock::new();

#[cfg(unix)]
#[ctor::ctor]
fn capture_descriptors_at_start() {
    // Worker processes re-execute this binary; they have no use for the baseline.
    if std::env::var_os("CF_POOL_PROC_WORKER_FD").is_none() {
        let _ = AT_START.set(open_fds());
    }
}

#[cfg(unix)]
/// The descriptors open now (the one used to list them excluded).
pub fn open_fds() -> Fds {
    let listing = format!("/proc/{}/fd", std::process::id());
    let mut fds = Fds::new();
    let dir = std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd");
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy().into_owned();
            if target != listing {
                fds.insert(fd, target);
            }
        }
    }
    fds
}

#[cfg(unix)]
/// One child process of this process, as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Child {
    pub pid: u32,
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    /// Start time in clock ticks since boot: tells a reused pid apart.
    pub start: u64,
}

#[cfg(unix)]
/// `(ppid, state, starttime)` of `pid`, if it exists.
fn stat(pid: u32) -> Option<(u32, char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split at the last `)`.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, state, start))
}

#[cfg(unix)]
/// Every child of this process (of any of its threads), zombies included.
pub fn children() -> Vec<Child> {
    let me = std::process::id();
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (ppid, state, start) = stat(pid)?;
            (ppid == me).then_some(Child { pid, state, start })
        })
        .collect()
}

#[cfg(unix)]
/// Whether `child` is still a child of ours (alive or zombie): the same pid and start time.
fn still_there(child: &Child) -> bool {
    stat(child.pid)
        .is_some_and(|(ppid, _, start)| ppid == std::process::id() && start == child.start)
}

#[cfg(unix)]
/// Fails if a child of this process is a zombie now and still one after [`REAP_LIMIT`].
/// Valid at any time, whatever else runs in the process.
pub fn assert_zombies_reaped() {
    let zombies: Vec<Child> = children().into_iter().filter(|c| c.state == 'Z').collect();
    let deadline = Instant::now() + REAP_LIMIT;
    loop {
        let left: Vec<&Child> = zombies.iter().filter(|c| still_there(c)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "zombie children never reaped within {REAP_LIMIT:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(unix)]
/// Fails unless each of `pids` is gone (neither alive nor a zombie child of ours) within
/// [`REAP_LIMIT`]. For the pids of a pool that was dropped: its workers must be reaped.
pub fn assert_gone(pids: impl IntoIterator<Item = u32>) {
    let me = std::process::id();
    let pids: Vec<u32> = pids.into_iter().collect();
    let deadline = Instant::now() + REAP_LIMIT;
    loop {
        // A pid that is no longer our child was reaped (and maybe reused by someone else).
        let left: Vec<(u32, char)> = pids
            .iter()
            .filter_map(|&p| stat(p).filter(|s| s.0 == me).map(|s| (p, s.1)))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workers of a dropped pool still children of ours (pid, state): {left:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// Serialises the tests that hold it, so their descriptor and child accounting is exact. A
/// failed (panicked) holder does not block the others.
pub fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(unix)]
/// Descriptors and children at the start of an [`exclusive`] test.
#[derive(Debug)]
pub struct Snapshot {
    fds: Fds,
    children: Vec<Child>,
}

#[cfg(unix)]
impl Snapshot {
    /// Call with [`exclusive`] held.
    pub fn take() -> Self {
        Snapshot {
            fds: open_fds(),
            children: children(),
        }
    }

    /// Fails unless, within [`REAP_LIMIT`], the descriptor count is back at the snapshot's and
    /// no child exists that did not exist then. Call with [`exclusive`] held, after the pool
    /// was dropped.
    pub fn assert_restored(&self) {
        let deadline = Instant::now() + REAP_LIMIT;
        loop {
            let fds = open_fds();
            let extra_children: Vec<Child> = children()
                .into_iter()
                .filter(|c| {
                    !self
                        .children
                        .iter()
                        .any(|o| o.pid == c.pid && o.start == c.start)
                })
                .collect();
            if fds.len() <= self.fds.len() && extra_children.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "leak: descriptors {} -> {} (new: {:?}); children left: {extra_children:?}",
                    self.fds.len(),
                    fds.len(),
                    new_fds(&self.fds, &fds),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(unix)]
fn new_fds(before: &Fds, now: &Fds) -> Vec<(i32, String)> {
    now.iter()
        .filter(|(fd, target)| before.get(fd) != Some(target))
        .map(|(fd, t)| (*fd, t.clone()))
        .collect()
}

#[cfg(unix)]
/// This thread's kernel id.
fn my_tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .expect("read /proc/thread-self")
}

#[cfg(unix)]
/// Threads of this process other than the main thread and this one: `(tid, name)`.
fn other_threads() -> Vec<(u32, String)> {
    let me = my_tid();
    let main = std::process::id();
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&tid| tid != me && tid != main)
        .map(|tid| {
            let name =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
            (tid, name.trim().to_owned())
        })
        .collect()
}

#[cfg(unix)]
/// The whole-binary leak check; the body of each file's last test (`zz_no_leaks`).
///
/// Waits (up to [`OTHERS_LIMIT`]) until no other thread runs: every other test has finished
/// and every pool thread has exited, which is itself a check that none leaks. Then there must
/// be no child process at all (zombie or alive, after a [`REAP_LIMIT`] grace) and exactly the
/// descriptors that were open before the harness started.
pub fn assert_clean_at_end() {
    let start = Instant::now();
    loop {
        assert!(
            !ABANDONED.load(Ordering::SeqCst),
            "a test of this binary hung and left its thread behind (see its failure); \
             the binary cannot be checked for leaks"
        );
        let others = other_threads();
        if others.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < OTHERS_LIMIT,
            "threads still running {OTHERS_LIMIT:?} after the last test started: {others:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + REAP_LIMIT;
    loop {
        let kids = children();
        if kids.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "children left after every test finished (nobody will reap them): {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_start = AT_START
        .get()
        .expect("the constructor captured the descriptors");
    let deadline = Instant::now() + REAP_LIMIT;
    loop {
        let now = open_fds();
        let extra = new_fds(at_start, &now);
        if extra.is_empty() && now.len() <= at_start.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "descriptors left open after every test finished: {} at start, {} now; new: {extra:?}",
            at_start.len(),
            now.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGKILL to `pid` only if it is (still) a running, unreaped child of this process;
/// `true` if the signal was delivered.
///
/// `pid` comes from `worker_pids()`, which may name a worker that died and was reaped a moment
/// ago; with pids wrapping at 32768 the number may already belong to someone else's process.
/// So a pidfd pins the process first, `waitid(P_PIDFD, WNOWAIT)` (which only works on our own
/// children, and reaps nothing) proves it is ours and not yet dead, and the signal goes through
/// the pidfd: never to a stranger, never to a reused pid.
#[cfg(target_os = "linux")]
pub fn sigkill_child(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: pidfd_open(2) takes two integers and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if pidfd < 0 {
        return false;
    }
    let pidfd = pidfd as libc::c_int;
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid(2) writes only into `info`, which lives across the call. ECHILD: not our
    // child. With WNOHANG a still-running child leaves `si_pid` 0; WNOWAIT reaps nothing.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: reading the pid field of the siginfo waitid filled in (or left zeroed).
    let running_child = rc == 0 && unsafe { info.si_pid() } == 0;
    let sent = running_child && {
        // SAFETY: pidfd_send_signal(2) on a pidfd we own, with no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    };
    // SAFETY: closing the descriptor pidfd_open gave us, once.
    unsafe { libc::close(pidfd) };
    sent
}

/// [`sigkill_child`] where there is no pidfd (macOS, FreeBSD; these tests are only built
/// there, and run on Linux): `waitid(P_PID, WNOWAIT)` proves the pid is a running child of
/// ours, then `kill`. A reaper running between the two could free the pid; on Linux the pidfd
/// version above closes that gap.
#[cfg(all(unix, not(target_os = "linux")))]
pub fn sigkill_child(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid(2) writes only into `info`, which lives across the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            raw as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: reading the pid field of the siginfo waitid filled in (or left zeroed).
    let running_child = rc == 0 && unsafe { info.si_pid() } == 0;
    // SAFETY: kill(2) takes plain integers.
    running_child && unsafe { libc::kill(raw, libc::SIGKILL) } == 0
}

/// Ends this process as `kill_workers` would end it: `SIGKILL` to itself (on Windows
/// `TerminateProcess` with exit code 1, what `kill_workers` passes). For a task that kills its
/// own worker.
pub fn sigkill_self() -> ! {
    // SAFETY: kill(2) on our own pid with plain integers.
    #[cfg(unix)]
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL)
    };
    #[cfg(windows)]
    sigkill_child(std::process::id());
    unreachable!("SIGKILL cannot be caught")
}

/// Set when [`within`] gave up on a hung thread: the binary can no longer be checked for leaks.
static ABANDONED: AtomicBool = AtomicBool::new(false);

/// Runs `f` on its own thread and returns its result; fails the test if it takes longer than
/// `limit` (a hang: the stuck thread is left behind) or panics (the panic is re-raised).
pub fn within<R, F>(limit: Duration, what: &str, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(format!("within:{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a guarded thread");
    match rx.recv_timeout(limit) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            ABANDONED.store(true, Ordering::SeqCst);
            panic!("{what}: still running after {limit:?} (a hang)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
    }
}

/// A small deterministic generator (xorshift64*), seeded from the environment variable `var`
/// if set, else from the clock; the seed is printed so a failing run can be replayed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn from_env(var: &str) -> Self {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    ^ u64::from(std::process::id())
            });
        println!("seed: {var}={seed}");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A bijective mix of the input: a result that is the right function of its input proves it
/// was not wired to another task's future.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A file that tasks in worker processes append their input to, one little-endian `u64` per
/// execution (an `O_APPEND` write of 8 bytes is atomic), so the parent can count how often each
/// task actually ran, in whatever process.
///
/// On Windows it is a directory with one empty file per execution instead: under Wine two
/// processes appending at once can overwrite each other's record (the first Wine run of the
/// chaos tests lost one), and creating a file of a new name cannot lose anything.
#[derive(Debug)]
pub struct Ledger {
    pub path: String,
}

impl Ledger {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir()
            .join(format!("cf-ledger-{}-{tag}", std::process::id()))
            .to_string_lossy()
            .into_owned();
        #[cfg(unix)]
        {
            let _ = std::fs::remove_file(&path);
            std::fs::File::create(&path).expect("create the ledger");
        }
        #[cfg(windows)]
        {
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir(&path).expect("create the ledger");
        }
        Ledger { path }
    }

    /// Called by a task, in a worker: records one execution of task `id`.
    #[cfg(unix)]
    pub fn record(path: &str, id: u64) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open the ledger");
        f.write_all(&id.to_le_bytes())
            .expect("append to the ledger");
    }

    /// Called by a task, in a worker: records one execution of task `id`.
    #[cfg(windows)]
    pub fn record(path: &str, id: u64) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("{id}.{}.{n}", std::process::id());
        std::fs::File::create_new(std::path::Path::new(path).join(name))
            .expect("add to the ledger");
    }

    /// How many times each of tasks `0..n` ran.
    pub fn counts(&self, n: usize) -> Vec<u32> {
        let mut counts = vec![0u32; n];
        for id in self.records() {
            let id = id as usize;
            assert!(id < n, "ledger names task {id} of {n}");
            counts[id] += 1;
        }
        counts
    }

    #[cfg(unix)]
    fn records(&self) -> Vec<u64> {
        let bytes = std::fs::read(&self.path).expect("read the ledger");
        assert_eq!(bytes.len() % 8, 0, "a torn ledger record");
        bytes
            .chunks_exact(8)
            .map(|rec| u64::from_le_bytes(rec.try_into().expect("8 bytes")))
            .collect()
    }

    #[cfg(windows)]
    fn records(&self) -> Vec<u64> {
        std::fs::read_dir(&self.path)
            .expect("read the ledger")
            .map(|e| {
                let name = e.expect("a ledger entry").file_name();
                let name = name.to_string_lossy();
                let id = name.split('.').next().unwrap_or_default();
                id.parse()
                    .unwrap_or_else(|_| panic!("a ledger entry {name:?}"))
            })
            .collect()
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = std::fs::remove_file(&self.path);
        #[cfg(windows)]
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Fault helpers shared by the fault suites (failures, terminate, crash_keeps_results, chaos,
// last_panic, resilience), and what a worker's death looks like on each platform.

use cf_pool_proc::{Executor, ExitCause, ProcessPoolExecutor, TaskError};

/// Generous: how long a future that must resolve may take (Wine starts processes slowly).
pub const LIMIT: Duration = Duration::from_secs(120);

/// A pool of `workers` workers, default settings otherwise.
pub fn pool(workers: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("build pool")
}

/// A task: the worker's pid.
pub fn pid(_: ()) -> u32 {
    std::process::id()
}

/// A task: twice its input.
pub fn double(x: u64) -> u64 {
    x * 2
}

/// Three tasks submitted to `pool` while `refused` lives (a guard under which the system
/// refuses the pool a worker: no descriptors, no threads) fail with `WorkerStartFailed`, whose
/// reason names `errno` (`os error 24`, say) and which says the pool is not broken; after
/// `refused` is dropped, the same pool runs tasks again.
pub fn refused_then_recovered<G>(pool: &ProcessPoolExecutor, refused: G, errno: &str) {
    let futures: Vec<_> = (0..3).map(|x| pool.submit(double, x).unwrap()).collect();
    let errors: Vec<_> = futures
        .iter()
        .map(|f| f.result_timeout(LIMIT).unwrap_err().clone())
        .collect();
    drop(refused);
    for e in &errors {
        let TaskError::WorkerStartFailed { reason, .. } = e else {
            panic!("expected WorkerStartFailed, got {e:?}");
        };
        assert!(reason.contains(errno), "{reason}");
        assert!(e.to_string().contains("not broken"), "{e}");
    }
    let futures: Vec<_> = (0..4).map(|x| pool.submit(double, x).unwrap()).collect();
    for (x, f) in futures.iter().enumerate() {
        assert_eq!(f.result_timeout(LIMIT), Ok(&(2 * x as u64)), "task {x}");
    }
}

/// A task: sleeps `ms`, then returns the worker's pid.
pub fn sleeps(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// A task: `std::process::abort()`.
pub fn aborts(_: ()) -> u32 {
    std::process::abort()
}

/// A task: `std::process::exit(code)`.
pub fn exits(code: i32) -> u32 {
    std::process::exit(code)
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 64]);
    recurse(pad[3] + 1) + pad[7]
}

/// A task: recursion without bound, until the worker's stack overflows.
pub fn overflows(_: ()) -> u64 {
    recurse(0)
}

/// The pool still works after a failure: a new task runs and returns the right value.
pub fn assert_heals(pool: &ProcessPoolExecutor) {
    let f = pool.submit(double, 21).expect("submit after failure");
    assert_eq!(f.result_timeout(LIMIT), Ok(&42));
}

/// The `WorkerDied` a future failed with: `(pid, cause, the error's message)`.
pub fn died<T: std::fmt::Debug>(result: Result<&T, TaskError>) -> (u32, ExitCause, String) {
    match result {
        Err(e @ TaskError::WorkerDied { pid, cause, .. }) => {
            assert_ne!(pid, std::process::id(), "the parent is not a worker");
            (pid, cause, e.to_string())
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
}

/// How a worker ended by `std::process::abort()` dies: `SIGABRT` on Unix; on Windows Rust's
/// `abort` is `__fastfail`, which ends the process with `STATUS_STACK_BUFFER_OVERRUN`.
pub fn abort_cause() -> ExitCause {
    #[cfg(unix)]
    return ExitCause::Signal(libc::SIGABRT);
    #[cfg(windows)]
    return ExitCause::Code(0xC000_0409_u32 as i32);
}

/// The name the message of an abort's `WorkerDied` carries.
pub const ABORT_NAME: &str = if cfg!(windows) {
    "STATUS_STACK_BUFFER_OVERRUN"
} else {
    "SIGABRT"
};

/// How a worker ended from outside ([`sigkill_child`], `kill_workers`, a timeout) dies:
/// `SIGKILL` on Unix; on Windows `TerminateProcess` with exit code 1 (what the pool passes,
/// and [`sigkill_child`] too).
pub fn killed_cause() -> ExitCause {
    #[cfg(unix)]
    return ExitCause::Signal(libc::SIGKILL);
    #[cfg(windows)]
    return ExitCause::Code(1);
}

/// How a worker ended by `terminate_workers` dies: `SIGTERM` on Unix (a signal a task may
/// catch); on Windows there is no such signal and terminating is killing.
pub fn terminated_cause() -> ExitCause {
    #[cfg(unix)]
    return ExitCause::Signal(libc::SIGTERM);
    #[cfg(windows)]
    return killed_cause();
}

/// Whether `cause` is what a stack overflow ends a worker with, and the name its message must
/// carry. On Unix, Rust's guard page handler reports the overflow and then re-raises the
/// signal (`SIGSEGV`, or `SIGBUS` on macOS); on Windows the process ends with
/// `STATUS_STACK_OVERFLOW`.
pub fn is_stack_overflow(cause: ExitCause) -> Option<&'static str> {
    #[cfg(unix)]
    let name = [libc::SIGSEGV, libc::SIGBUS]
        .into_iter()
        .find(|&s| cause == ExitCause::Signal(s))
        .and_then(|_| cause.signal_name());
    #[cfg(windows)]
    let name =
        (cause == ExitCause::Code(0xC000_00FD_u32 as i32)).then_some("STATUS_STACK_OVERFLOW");
    name
}

// ---------------------------------------------------------------------------------------------
// A victim: this test binary re-executed as a parent that the test then kills (parent_killed,
// orphans).

/// Whether this process is a re-executed victim for `role` (its environment variable is set).
pub fn is_victim(role: &str) -> bool {
    std::env::var_os(role).is_some()
}

/// Starts this test binary again to run only its test named `victim`, with the environment
/// variable `role` set to `victim` and `envs` added, and waits (up to `limit`) for a line of
/// its output that contains `marker`: returns the child and the rest of that line after the
/// marker. If the marker never comes, the child is killed and the test fails.
pub fn spawn_victim(
    role: &str,
    envs: &[(&str, &std::ffi::OsStr)],
    marker: &str,
    limit: Duration,
) -> std::process::Child {
    let (child, _) = spawn_victim_saying(role, envs, marker, limit);
    child
}

/// [`spawn_victim`], also returning the rest of the marker's line.
pub fn spawn_victim_saying(
    role: &str,
    envs: &[(&str, &std::ffi::OsStr)],
    marker: &str,
    limit: Duration,
) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "victim", "--nocapture", "--test-threads=1"])
        .env(role, "victim")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the victim");
    let stdout = child.stdout.take().expect("the victim's stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let marker_owned = marker.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints `test victim ... ` on the same line, before the marker.
            if let Some((_, rest)) = line.split_once(&marker_owned) {
                let _ = tx.send(rest.to_owned());
            }
        }
    });
    match rx.recv_timeout(limit) {
        Ok(rest) => (child, rest),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the victim never said {marker:?} within {limit:?}: {e}");
        }
    }
}
