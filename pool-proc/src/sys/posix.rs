//! What both Unix implementations of the platform layer share: starting the worker's command,
//! marking inherited descriptors close-on-exec in the child, waiting for and signalling a
//! worker. Only POSIX calls (and `close_range` where the kernel has it).

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Received, Signal, WORKER_ENV};

/// The command that starts a worker: `program` (this executable) with the parent's command
/// line (`argv[0]` included), [`WORKER_ENV`] set to `env`, stdin from `/dev/null` and the
/// parent's stdout and stderr.
pub(super) fn worker_command(program: &Path, env: String) -> Command {
    let mut args = std::env::args_os();
    let mut cmd = Command::new(program);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    cmd.args(args)
        .env(WORKER_ENV, env)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    cmd
}

/// What a `recvmsg` on `sock` brought: `bytes`, and, if the kernel dropped descriptors sent
/// with them (`truncated`: `MSG_CTRUNC`), why: the error of making a descriptor now, most
/// often `EMFILE`, or a plain statement when one can be made again (the shortage passed).
pub(super) fn received(sock: &impl std::os::fd::AsFd, bytes: usize, truncated: bool) -> Received {
    let lost = truncated.then(|| match rustix::io::fcntl_dupfd_cloexec(sock, 0) {
        Err(e) => io::Error::from(e),
        Ok(probe) => {
            drop(probe);
            io::Error::other("the kernel dropped them (a descriptor can be made again now)")
        }
    });
    Received { bytes, lost }
}

/// One past the highest descriptor number this process may have open (its `RLIMIT_NOFILE`),
/// for the fallback of [`close_on_exec_from`].
pub(super) fn open_max() -> libc::c_int {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into `limit`, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return 1 << 20;
    }
    libc::c_int::try_from(limit.rlim_cur).unwrap_or(libc::c_int::MAX)
}

/// In a forked child before `exec`: marks every descriptor from 3 up close-on-exec
/// (`close_range(CLOSE_RANGE_CLOEXEC)` where the kernel has it, Linux 5.11 and FreeBSD 13, else
/// one `fcntl` per possible descriptor below `open_max`), then clears the flag on `keep`, so
/// the new program holds its standard streams and `keep` only. Close-on-exec, rather than
/// closing, keeps the descriptor through which the standard library reports a failed `exec`.
/// Async-signal-safe, no allocation: its error is a raw OS error code.
///
/// # Safety
///
/// Only for a forked child before `exec`: it changes the flags of descriptors that other
/// threads of a live process may rely on.
pub(super) unsafe fn keep_only(keep: &[RawFd], open_max: libc::c_int) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    // SAFETY: close_range(2) takes plain integers; with CLOSE_RANGE_CLOEXEC it only sets flags.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    #[cfg(target_os = "freebsd")]
    // SAFETY: close_range(2) takes plain integers; with CLOSE_RANGE_CLOEXEC it only sets flags.
    let done = unsafe {
        libc::close_range(
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    } == 0;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let done = false;
    if !done {
        for fd in 3..open_max {
            // SAFETY: fcntl(F_SETFD) on an integer; a closed descriptor fails with EBADF.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    for &fd in keep {
        // SAFETY: fcntl(F_SETFD) on an integer the caller's process holds open.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Returns once the child `pid` has exited, without reaping it (`waitid` with `WNOWAIT`), or
/// at once if it is not a child of ours (any more).
pub(super) fn wait_exited(pid: u32) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let options = rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
    while let Err(rustix::io::Errno::INTR) =
        rustix::process::waitid(rustix::process::WaitId::Pid(pid), options)
    {}
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
