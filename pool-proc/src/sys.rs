//! Every `unsafe` operation of the process pool, in one place.
//!
//! Two things need it:
//!
//! * **Task identity.** A task crosses to a worker as the address of its monomorphised
//!   trampoline, sent as an offset from [`anchor`]. Workers are the parent's own executable,
//!   re-executed through `/proc/self/exe` (the running inode, even if the file on disk was
//!   replaced), and before any offset is used the worker checks the parent's [`exe_identity`] and
//!   the offset of [`probe`] against its own ([`Hello`](crate::protocol::Hello)). Same image, same
//!   relative layout: the offset names the same function in both processes. The task value
//!   itself is a zero-sized type (checked at compile time), so the worker conjures it from
//!   nothing.
//! * **Shared memory.** Copying bytes into and out of a shared region ([`copy_in`],
//!   [`copy_out`]) through raw pointers, never references, since another process maps the same
//!   memory (see [`crate::shm`]).
//! * **Process control.** Clearing close-on-exec on the child's socket, `PR_SET_PDEATHSIG`, and
//!   `kill(2)` for timeouts and `kill_workers`, plus adopting the inherited socket in the worker.
//!
//! Each block carries a `// SAFETY:` comment; `tests/identity.rs` exercises each invariant.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use cf_executor_api::{Buffer, TaskError};

/// The environment variable that tells a re-executed binary to serve as a worker, and on which
/// descriptor.
pub(crate) const WORKER_ENV: &str = "CF_POOL_PROC_WORKER_FD";

/// What a trampoline is: decode the argument (with its attached buffers, or why they could not
/// be sent), run the task, encode the result (with the buffers it attaches).
pub(crate) type Trampoline =
    fn(&[u8], Result<Vec<Buffer>, String>) -> Result<(Vec<u8>, Vec<Buffer>), TaskError>;

/// An initializer as sent to workers.
pub(crate) type Initializer = fn() -> Result<(), String>;

/// The fixed point offsets are measured from. Never inlined, so it has one address.
#[inline(never)]
fn anchor() -> u32 {
    0xC0FF_EE00
}

/// A second fixed point: the worker checks that its offset from [`anchor`] matches the
/// parent's, a cheap proof that the code layout is the same.
#[inline(never)]
pub(crate) fn probe() -> u32 {
    0x0BAD_F00D
}

fn anchor_addr() -> usize {
    let f: fn() -> u32 = anchor;
    f as usize
}

/// Offset of a code address from [`anchor`].
pub(crate) fn offset_of(addr: usize) -> i64 {
    addr.wrapping_sub(anchor_addr()) as i64
}

/// Offset of `probe` in this process.
pub(crate) fn probe_offset() -> i64 {
    let f: fn() -> u32 = probe;
    offset_of(f as usize)
}

/// The function at `offset` from the anchor, as a trampoline.
///
/// Only called in a worker after the handshake proved it runs the parent's image.
pub(crate) fn trampoline_at(offset: i64) -> Trampoline {
    let addr = anchor_addr().wrapping_add(offset as usize);
    // SAFETY: `offset` was computed by the parent as `trampoline::<F, A, R> - anchor` (see
    // `task::trampoline_offset`); the handshake verified that this process executes the same
    // file (device, inode, size, mtime) and that `probe - anchor` agrees, so the same offset
    // lands on the same monomorphised function, whose type is exactly `Trampoline`.
    unsafe { std::mem::transmute::<usize, Trampoline>(addr) }
}

/// The function at `offset` from the anchor, as an initializer. Same contract as
/// [`trampoline_at`].
pub(crate) fn initializer_at(offset: i64) -> Initializer {
    let addr = anchor_addr().wrapping_add(offset as usize);
    // SAFETY: as in `trampoline_at`: the parent computed the offset from a value of type
    // `Initializer` in the identical executable image.
    unsafe { std::mem::transmute::<usize, Initializer>(addr) }
}

/// Copies `bytes` into `map` at `offset`.
///
/// # Panics
///
/// If the bytes do not fit in the mapping (the caller sized the region for them).
pub(crate) fn copy_in(map: &memmap2::MmapRaw, offset: usize, bytes: &[u8]) {
    let end = offset
        .checked_add(bytes.len())
        .expect("offset + length overflows");
    assert!(end <= map.len(), "copy past the end of a shared region");
    // SAFETY: `offset..end` lies inside the live mapping (checked above), which is writable
    // (a sender maps its own regions read-write) and cannot shrink (`F_SEAL_SHRINK` is set at
    // creation, so no process can truncate it and fault us). `bytes` is private memory, so the
    // ranges do not overlap. No reference into the shared memory is created. The region has
    // not been sent yet (or its last receiver handed it back by clearing the lease flag), so
    // by protocol no other process touches these bytes now; a misbehaving peer that wrote
    // anyway would race with this copy (formally a data race on memory this process does not
    // otherwise use), and could only change which bytes are sent.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.as_mut_ptr().add(offset), bytes.len());
    }
}

/// Copies `len` bytes out of `map` at `offset` into a new `Vec`; `Err` if the range is
/// outside the mapping or the memory cannot be allocated (never a panic or an abort: the
/// length comes from another process).
pub(crate) fn copy_out(
    map: &memmap2::MmapRaw,
    offset: usize,
    len: usize,
) -> Result<Vec<u8>, String> {
    if offset.checked_add(len).is_none_or(|end| end > map.len()) {
        return Err(format!(
            "{len} bytes at {offset} are outside a {}-byte region",
            map.len()
        ));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|e| format!("cannot allocate {len} bytes for an attached buffer ({e})"))?;
    // SAFETY: the source range is inside the live mapping (checked above) and cannot be
    // truncated under us (the receiver checked `F_SEAL_SHRINK` before mapping). The
    // destination is `out`'s spare capacity, at least `len` bytes, private, so no overlap.
    // Every bit pattern is a valid `u8`, so whatever a peer may have written, the copied bytes
    // are initialised values, and `set_len` covers only what was copied. No reference into
    // the shared memory is created; callers only ever see this private copy. A misbehaving
    // peer writing during the copy would race with it (formally a data race on shared memory)
    // and could only change the bytes copied, which no invariant of this process relies on.
    unsafe {
        std::ptr::copy_nonoverlapping(map.as_ptr().add(offset), out.as_mut_ptr(), len);
        out.set_len(len);
    }
    Ok(out)
}

/// The bytes of a parent's region that a worker reads in place, and the region's lease: made
/// only together ([`Leased::new`]), handed back only when dropped (see [`crate::shm`]).
#[derive(Debug)]
pub(crate) struct Leased {
    map: std::sync::Arc<memmap2::MmapRaw>,
    len: usize,
    /// The region's descriptor: dropping the view clears the lease flag through it.
    fd: std::os::fd::OwnedFd,
}

impl Leased {
    /// Views the `len` bytes after the header of the region `map` maps, taking over its lease
    /// (`fd`, whose flag the sender set before sending it). `None` if they are outside `map`.
    pub(crate) fn new(
        map: std::sync::Arc<memmap2::MmapRaw>,
        len: usize,
        fd: std::os::fd::OwnedFd,
    ) -> Option<Leased> {
        let end = crate::shm::HEADER.checked_add(len)?;
        (end <= map.len()).then_some(Leased { map, len, fd })
    }
}

impl AsRef<[u8]> for Leased {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `HEADER..HEADER + len` is inside the mapping (checked in `new`), which lives
        // as long as `self` (the `Arc`) and cannot shrink (the receiver checked `F_SEAL_SHRINK`
        // before mapping), so the pointer is valid for `len` bytes; every byte pattern is a
        // valid `u8`; and the range does not overlap the header (lease flag, tag). The bytes
        // do not change while the returned borrow lives:
        // * the sender, the parent (which this worker trusts with everything it runs), wrote
        //   them and set the lease flag before sending the descriptor; the socket's
        //   `sendmsg`/`recvmsg` order those writes before this read;
        // * it writes the region again only after reading the flag as free (`pread`), and
        //   this process clears the flag only in `Drop`, which `&mut self` proves runs after
        //   every borrow of `self` has ended; the `pwrite` orders the end of our reads before
        //   the parent's later writes;
        // * a `Leased` exists only with its region's lease (`new` takes the descriptor the
        //   sender lent), so no view can be made over a region that is not lent to us.
        // The one way around this is a task that `fork`s without `exec` and lets the child
        // drop a clone of the buffer: the child's drop would hand the region back early. The
        // parent never views what workers send; it copies it (`copy_out`).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(crate::shm::HEADER), self.len) }
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        // If this fails the region stays lent, and the sender forgets it in time.
        let _ = rustix::io::pwrite(&self.fd, &[crate::shm::FREE], crate::shm::LEASE_AT as u64);
    }
}

/// A value of the zero-sized, `Copy` type `F` (a fn item or non-capturing closure).
pub(crate) fn conjure<F: Copy>() -> F {
    // The same constant every send path evaluates (one error, one message, for a task that
    // captures variables); the build fails unless `F` is zero-sized.
    let () = cf_executor_api::CapturesNothing::<F>::OK;
    // SAFETY: `F` is zero-sized (asserted at compile time above), so "all zero bytes" is no
    // bytes at all; fn items and closures have no validity invariant beyond their type, and
    // `F: Copy` means creating one more value cannot violate ownership of captured state
    // (there is none).
    unsafe { std::mem::zeroed::<F>() }
}

/// Identifies the running executable: device, inode, size and modification time of the image
/// behind `/proc/self/exe`.
pub(crate) fn exe_identity() -> io::Result<[u64; 5]> {
    let m = std::fs::metadata("/proc/self/exe")?;
    Ok([
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
    ])
}

/// Starts a worker: this executable again, serving on `child_end`.
///
/// The child's socket survives `exec` (close-on-exec cleared in the child only, so concurrent
/// spawns elsewhere never inherit it) and the child gets `SIGKILL` when the thread that spawned
/// it ends, which is the slot's feeder thread (it outlives the worker) or the whole parent.
pub(crate) fn spawn_worker(child_end: &UnixStream) -> io::Result<Child> {
    let fd: RawFd = child_end.as_raw_fd();
    let parent = std::process::id();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.env(WORKER_ENV, fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs in the forked child before `exec` and only makes
    // async-signal-safe system calls (fcntl, prctl, getppid) on values copied in before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then no signal would come.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("parent exited during worker start"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `signal` to process `pid`.
///
/// Callers guarantee the child has not been reaped yet (they check the slot's `reaping` flag
/// under the pool lock), so `pid` cannot have been reused by another process.
pub(crate) fn kill(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket a worker inherited, named by [`WORKER_ENV`].
fn inherited_socket() -> Option<UnixStream> {
    let fd: RawFd = std::env::var(WORKER_ENV).ok()?.parse().ok()?;
    // Nested pools started by a task must not mistake themselves for workers.
    std::env::remove_var(WORKER_ENV);
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return None;
    }
    // The descriptor was opened by the parent for this purpose, survived exec, and nothing else
    // in this fresh process owns it; we set close-on-exec again for our own children.
    // SAFETY: `fd` is open (checked above) and owned by nobody else in this process.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(stream)
}

/// Writes to a dead parent must fail with `EPIPE`, not kill the worker before it can log.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

static ENTRY_RAN: AtomicBool = AtomicBool::new(false);

/// Whether this process went through worker-mode detection ([`init`](crate::init) or the
/// static constructor): without it a worker would run the user's `main`.
pub(crate) fn entry_ran() -> bool {
    ENTRY_RAN.load(Ordering::Acquire)
}

/// If this process was started as a worker, serves tasks and exits; never returns then.
pub(crate) fn enter_worker_mode_if_requested() {
    ENTRY_RAN.store(true, Ordering::Release);
    if let Some(socket) = inherited_socket() {
        crate::worker::run(socket);
    }
}

/// Runs before `main` (and before the test harness, in test binaries): a worker never reaches
/// the user's `main`.
#[ctor::ctor]
fn cf_pool_proc_worker_entry() {
    enter_worker_mode_if_requested();
}
