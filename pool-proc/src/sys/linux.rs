//! The Linux implementation of the platform layer: `memfd` regions sealed against resizing,
//! `MSG_CMSG_CLOEXEC` on receive, `MSG_NOSIGNAL` on send, `PR_SET_PDEATHSIG` for workers, and
//! `/proc/self/exe` for the running image.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{RegionInfo, Signal, WorkerProcess, FDS_PER_MESSAGE, WORKER_ENV};

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

/// A new region: a close-on-exec `memfd` of `size` bytes, sealed against shrinking and growing
/// (and against removing those seals), all zero.
pub(crate) fn create_region(size: usize) -> io::Result<OwnedFd> {
    let fd =
        rustix::fs::memfd_create("cf-buffer", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    Ok(fd)
}

/// Checks that `fd` is a region whose size can never change (a `memfd` sealed against
/// shrinking and growing), and returns its size and identity; `Err` says why not.
pub(crate) fn inspect_region(fd: &OwnedFd) -> Result<RegionInfo, String> {
    let seals = rustix::fs::fcntl_get_seals(fd)
        .map_err(|e| format!("an attached descriptor is not a memfd ({e})"))?;
    if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
        return Err(format!(
            "an attached memfd may change size ({seals:?}), so it cannot be mapped safely"
        ));
    }
    let st = rustix::fs::fstat(fd).map_err(|e| format!("cannot inspect a region ({e})"))?;
    Ok(RegionInfo {
        size: usize::try_from(st.st_size).unwrap_or(0),
        key: (st.st_dev, st.st_ino),
    })
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
/// close-on-exec) to `fds`. `Err` if descriptors were lost in transit. Retries on `EINTR`.
pub(crate) fn recv_with_fds(
    sock: &UnixStream,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
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
    if got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors sent with a frame were lost in transit (is this process out of \
             descriptors? raise `ulimit -n`)",
        ));
    }
    Ok(got.bytes)
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// Starts a worker: this executable again, serving on `child_end`.
///
/// The child's socket survives `exec` (close-on-exec cleared in the child only, so concurrent
/// spawns elsewhere never inherit it) and the child gets `SIGKILL` when the thread that spawned
/// it ends, which is the slot's feeder thread (it outlives the worker) or the whole parent.
pub(crate) fn spawn_worker(child_end: &UnixStream) -> io::Result<WorkerProcess> {
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
    Ok(WorkerProcess {
        child: cmd.spawn()?,
    })
}

/// Sends `signal` to process `pid`.
///
/// Callers guarantee the child has not been reaped yet (they check the slot's `reaping` flag
/// under the pool lock), so `pid` cannot have been reused by another process.
pub(crate) fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    let signal = match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket a worker inherited, named by [`WORKER_ENV`].
pub(super) fn inherited_socket() -> Option<UnixStream> {
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

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A `memfd` that may still change size: a region no pool would make.
    pub(crate) fn resizable_region(size: u64) -> OwnedFd {
        let fd = rustix::fs::memfd_create("plain", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .unwrap();
        rustix::fs::ftruncate(&fd, size).unwrap();
        fd
    }

    /// A descriptor that is not a shared-memory region at all.
    pub(crate) fn not_a_region() -> OwnedFd {
        let (a, _b) = UnixStream::pair().unwrap();
        a.into()
    }
}
