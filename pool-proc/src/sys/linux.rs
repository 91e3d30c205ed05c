//! The Linux implementation of the platform layer: `memfd` regions sealed against resizing and
//! against new writers, `MSG_CMSG_CLOEXEC` on receive, `MSG_NOSIGNAL` on send,
//! `PR_SET_PDEATHSIG` for workers, and `/proc/self/exe` for the running image.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Child;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{posix, Received, RegionInfo, Sealed, FDS_PER_MESSAGE};

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

// ---------------------------------------------------------------------------------------------
// Shared memory.

/// `statfs` type of the file system `memfd`s live on without `MFD_HUGETLB` (`TMPFS_MAGIC`).
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// A new region of `size` bytes for this process to lend: a close-on-exec `memfd` starting
/// with `head`, sealed against resizing, mapped read-write here (a mapping no child of a
/// `fork` inherits), and then sealed against every *new* way of writing it
/// (`F_SEAL_FUTURE_WRITE`): from now on no process, this one included, can `write` it, punch
/// holes in it, or map it writable, whatever descriptor it holds or reopens through `/proc`;
/// only the mapping returned here can change its bytes. On kernels without that seal (before
/// Linux 5.1) the region comes back [`Sealed::AfterWriting`]: write it once, then hand the
/// mapping to [`seal_written`].
pub(crate) fn create_lendable_region(
    size: usize,
    head: &[u8],
) -> io::Result<(OwnedFd, memmap2::MmapRaw, Sealed)> {
    let fd =
        rustix::fs::memfd_create("cf-buffer", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    if rustix::io::pwrite(&fd, head, 0)? != head.len() {
        return Err(io::Error::other("short write of a region's header"));
    }
    let map = memmap2::MmapOptions::new().len(size).map_raw(&fd)?;
    map.advise(memmap2::Advice::DontFork)?;
    let resize = SealFlags::SHRINK | SealFlags::GROW;
    let future_write = if without_future_write() {
        Err(rustix::io::Errno::INVAL)
    } else {
        rustix::fs::fcntl_add_seals(&fd, resize | SealFlags::FUTURE_WRITE | SealFlags::SEAL)
    };
    match future_write {
        Ok(()) => Ok((fd, map, Sealed::Now)),
        Err(rustix::io::Errno::INVAL) => {
            rustix::fs::fcntl_add_seals(&fd, resize)?;
            Ok((fd, map, Sealed::AfterWriting))
        }
        Err(e) => Err(e.into()),
    }
}

/// A new page of `size` zero bytes that a child writes and this process reads (a worker's black
/// box): a close-on-exec `memfd`, sealed against resizing (so neither side can truncate it
/// under the other), to be mapped read-write by the child only; this process reads it with
/// [`read_at`](super::read_at), not through a mapping.
pub(crate) fn create_shared_page(size: usize) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        "cf-worker-blackbox",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}

/// Ends the one writable mapping of a region made [`Sealed::AfterWriting`] and seals it
/// against all writes (`F_SEAL_WRITE`), for good: it can be lent once, never reused.
pub(crate) fn seal_written(fd: &OwnedFd, map: memmap2::MmapRaw) -> io::Result<()> {
    drop(map);
    rustix::fs::fcntl_add_seals(fd, SealFlags::WRITE | SealFlags::SEAL)?;
    Ok(())
}

/// Checks that `fd` is a region the sender can lend safely: a `memfd` on ordinary shared
/// memory (not huge pages), sealed against resizing (no process can truncate it under a
/// reader, which would fault it) and against new writers (`F_SEAL_FUTURE_WRITE` or
/// `F_SEAL_WRITE`: no process can write it, punch holes in it or map it writable, so only the
/// mappings its sender made before sealing can change it, and its pages can only be added,
/// never taken away). Returns its size and identity; `Err` says what is wrong.
pub(crate) fn inspect_region(fd: &OwnedFd) -> Result<RegionInfo, String> {
    let seals = rustix::fs::fcntl_get_seals(fd)
        .map_err(|e| format!("an attached descriptor is not a memfd ({e})"))?;
    if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
        return Err(format!(
            "an attached memfd may change size ({seals:?}), so it cannot be mapped safely"
        ));
    }
    if !seals.intersects(SealFlags::FUTURE_WRITE | SealFlags::WRITE) {
        return Err(format!(
            "an attached memfd is not sealed against writing ({seals:?}): its receiver could \
             change it, or holes could be punched in it under a reader"
        ));
    }
    let fs = rustix::fs::fstatfs(fd).map_err(|e| format!("cannot inspect a region ({e})"))?;
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    if fs.f_type as u64 != TMPFS_MAGIC {
        return Err(format!(
            "an attached memfd is not ordinary shared memory (file system type {:#x}; huge \
             pages are refused, as their holes cannot be found)",
            fs.f_type
        ));
    }
    let st = rustix::fs::fstat(fd).map_err(|e| format!("cannot inspect a region ({e})"))?;
    Ok(RegionInfo {
        size: usize::try_from(st.st_size).unwrap_or(0),
        key: (st.st_dev, st.st_ino),
    })
}

/// The offset of the first hole (bytes no page backs) at or after `from` in the region `fd`,
/// its size if none. Reading a hole makes the *reader* allocate a page.
pub(crate) fn first_hole(fd: &OwnedFd, from: u64) -> io::Result<u64> {
    Ok(rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(from))?)
}

// ---------------------------------------------------------------------------------------------
// Descriptor passing.

/// Sends what of `bytes` one `sendmsg` takes, with `fds` attached (at most
/// [`FDS_PER_MESSAGE`]); never raises `SIGPIPE`. Retries on `EINTR`.
pub(crate) fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds.len() > FDS_PER_MESSAGE || !control.push(SendAncillaryMessage::ScmRights(&borrowed))
        {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        match rustix::net::sendmsg(
            sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives into `buf` with one `recvmsg`, appending the descriptors that arrive (already
/// close-on-exec) to `fds`. Descriptors lost in
/// transit are reported in [`Received::lost`], with the bytes that came. Retries on `EINTR`.
pub(crate) fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<Received> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => break got,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(posix::received(
        sock,
        got.bytes,
        got.flags.contains(ReturnFlags::CTRUNC),
    ))
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// Starts a worker: this executable again, serving on `child_end`, with the parent's command
/// line (`argv[0]` included, so `std::env::args()` in a task is the parent's).
///
/// The child keeps only its standard streams and its socket: every other descriptor it
/// inherited from this process (even those opened without close-on-exec) is marked
/// close-on-exec in the child before `exec` (`close_range(CLOSE_RANGE_CLOEXEC)`, or one
/// `fcntl` per possible descriptor on kernels older than 5.11), so the worker never holds the
/// program's pipes, sockets or lock files. Close-on-exec, rather than closing, keeps the
/// descriptor through which the standard library reports a failed `exec`. The socket's own
/// close-on-exec flag is cleared in the child only, so concurrent spawns elsewhere never
/// inherit it. The child gets `SIGKILL` when the thread that spawned it ends, which is the
/// slot's feeder thread (it outlives the worker) or the whole parent.
pub(super) fn spawn_worker(child_end: &UnixStream) -> io::Result<(Child, Option<OwnedFd>)> {
    let fd: RawFd = child_end.as_raw_fd();
    let parent = std::process::id();
    // Everything the hook needs is computed here, before the fork.
    let open_max = posix::open_max();
    let mut cmd = posix::worker_command(Path::new("/proc/self/exe"), fd.to_string());
    // SAFETY: the closure runs in the forked child before `exec`. It only makes
    // async-signal-safe system calls (close_range or fcntl, prctl, getppid) on integers copied
    // in before the fork, and allocates nothing: its errors are raw OS error codes.
    unsafe {
        cmd.pre_exec(move || {
            posix::keep_only(&[fd], open_max)?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then no signal would come.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => io::Error::other("the parent exited while a worker started"),
        _ => e,
    })?;
    // No lifeline: PR_SET_PDEATHSIG does its work.
    Ok((child, None))
}

/// Whether this process runs with privileges its invoker does not have: set-user-ID,
/// set-group-ID or file capabilities (the kernel's `AT_SECURE`, which also makes the dynamic
/// loader ignore `LD_PRELOAD`).
pub(super) fn runs_elevated() -> bool {
    // SAFETY: getauxval(3) reads the auxiliary vector the kernel gave this process; it takes
    // and returns integers.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Nothing to remember: `/proc/self/exe` always names the running image.
pub(super) fn remember_executable() {}

/// Takes ownership of descriptor `value`, inherited from the parent as the worker's socket, and
/// sets it close-on-exec again (for this worker's own children). `Err` if it is not open.
pub(super) fn adopt_inherited(value: &str) -> Result<UnixStream, String> {
    let fd: RawFd = value
        .parse()
        .map_err(|_| format!("{value:?} names no descriptor"))?;
    // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!("descriptor {fd} is not open"));
    }
    // The descriptor was opened by the parent for this purpose, survived exec, and nothing else
    // in this fresh process (which has not reached `main`) owns it.
    // SAFETY: `fd` is open (checked above) and owned by nobody else in this process.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(stream)
}

/// Proves the worker's socket comes from its real parent: the kernel-attested process at the
/// other end (`SO_PEERCRED`: the process that made the socket pair) is this process's parent
/// (`getppid`), and that parent runs this very executable (`/proc/<parent>/exe` and
/// `/proc/self/exe` are the same file). Only the process that started this one can pass.
pub(super) fn check_peer_is_parent(socket: &UnixStream) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(socket)
        .map_err(|e| format!("the kernel cannot say who holds the other end of its socket ({e})"))?
        .pid;
    let parent = rustix::process::getppid().ok_or("it has no parent process")?;
    if peer != parent {
        return Err(format!(
            "the other end of its socket belongs to process {}, not to its parent {}",
            peer.as_raw_nonzero(),
            parent.as_raw_nonzero()
        ));
    }
    let theirs = std::fs::metadata(format!("/proc/{}/exe", parent.as_raw_nonzero()))
        .map_err(|e| format!("cannot inspect its parent's executable ({e})"))?;
    let mine = std::fs::metadata("/proc/self/exe")
        .map_err(|e| format!("cannot inspect its own executable ({e})"))?;
    if (theirs.dev(), theirs.ino()) != (mine.dev(), mine.ino()) {
        return Err("its parent runs another executable".into());
    }
    Ok(())
}

/// Writes to a dead parent must fail with `EPIPE`, not kill the worker before it can log.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

#[cfg(test)]
thread_local! {
    /// This thread pretends the kernel lacks `F_SEAL_FUTURE_WRITE` (unit tests only).
    static WITHOUT_FUTURE_WRITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the kernel's `F_SEAL_FUTURE_WRITE` is to be ignored (only ever in unit tests).
fn without_future_write() -> bool {
    #[cfg(test)]
    return WITHOUT_FUTURE_WRITE.with(std::cell::Cell::get);
    #[cfg(not(test))]
    false
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Makes this thread's new regions behave as on a kernel without `F_SEAL_FUTURE_WRITE`.
    pub(crate) fn pretend_no_future_write(yes: bool) {
        WITHOUT_FUTURE_WRITE.with(|c| c.set(yes));
    }

    /// A `memfd` that may still change size: a region no pool would make.
    pub(crate) fn resizable_region(size: u64) -> OwnedFd {
        let fd = rustix::fs::memfd_create("plain", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        fd
    }

    /// A `memfd` of `size` bytes sealed as a region is, with no pages at all.
    pub(crate) fn sparse_region(size: u64) -> OwnedFd {
        let fd = rustix::fs::memfd_create("peer", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::FUTURE_WRITE;
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
        fd
    }

    /// A huge-page `memfd` sealed as a region is, if this kernel can make one.
    pub(crate) fn huge_page_region(size: u64) -> Option<OwnedFd> {
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING | MemfdFlags::HUGETLB;
        let fd = rustix::fs::memfd_create("huge", flags).ok()?;
        rustix::fs::ftruncate(&fd, size).ok()?;
        let resize = SealFlags::SHRINK | SealFlags::GROW;
        rustix::fs::fcntl_add_seals(&fd, resize | SealFlags::FUTURE_WRITE)
            .or_else(|_| rustix::fs::fcntl_add_seals(&fd, resize | SealFlags::WRITE))
            .ok()?;
        Some(fd)
    }

    /// A `memfd` sealed against resizing only: its receiver could write it.
    pub(crate) fn writable_region(size: u64) -> OwnedFd {
        let fd = resizable_region(size);
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
        fd
    }

    /// A descriptor that is not a shared-memory region at all.
    pub(crate) fn not_a_region() -> OwnedFd {
        let (a, _b) = UnixStream::pair().unwrap();
        a.into()
    }
}
