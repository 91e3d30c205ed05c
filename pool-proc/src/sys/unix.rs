//! The portable Unix implementation of the platform layer: only what macOS and FreeBSD have
//! too. Used on macOS and FreeBSD, and on Linux with the `portable-unix` feature (a test knob:
//! the whole test suite runs over this path on Linux).
//!
//! What it uses instead of Linux's tools, and what that changes:
//!
//! * **Regions** are POSIX shared-memory objects (`shm_open`, unlinked at once), not sealed
//!   `memfd`s. The sender opens each object twice, maps it read-write through one descriptor,
//!   then closes that one: from then on every descriptor of the region (the one it keeps and
//!   the ones it sends) is read-only, so no process can write it, map it writable or truncate
//!   it through a descriptor; only the sender's mapping changes its bytes. The receiver checks
//!   that the descriptor it got is read-only. On macOS and FreeBSD nothing reopens an
//!   unlinked object; on Linux `/proc/<pid>/fd` could reopen it for writing, which is why
//!   Linux proper uses sealed `memfd`s. Huge pages do not arise (no `MFD_HUGETLB`). Where
//!   `SEEK_HOLE` does not work on shared memory the receiver cannot tell holes from pages and
//!   copies what it is sent.
//! * **Parent death**: no `PR_SET_PDEATHSIG`. Each worker inherits the read end of a
//!   *lifeline* pipe whose write end only the parent holds (close-on-exec); a watchdog thread
//!   in the worker blocks reading it and kills the worker (`SIGKILL`, as the Linux path does)
//!   when it sees end of file, which happens when the parent process dies, however it dies,
//!   whether the worker is busy or idle. (A child the parent `fork`s without `exec` also holds
//!   the write end, and delays this until it exits.)
//! * **Descriptors received** are set close-on-exec right after `recvmsg` (macOS has no
//!   `MSG_CMSG_CLOEXEC`). A pool's own `exec`s mark everything else close-on-exec first, so no
//!   worker can inherit one in between.
//! * **`SIGPIPE`**: `MSG_NOSIGNAL` where the system has it (Linux, FreeBSD); on macOS a send
//!   to a dead peer relies on `SIGPIPE` being ignored, as Rust programs do from startup and
//!   workers do too ([`ignore_sigpipe`]).
//! * **The executable** is `std::env::current_exe()`, read once before `main` (a path: macOS
//!   has no `/proc/self/exe`). The identity check compares device, inode, size and
//!   modification time of that file as the parent saw it before its `main` and as the worker
//!   sees it, plus the probe offset: it proves the worker runs the file the parent was started
//!   from, unless that file was replaced between the two starts by one of identical size,
//!   time stamp and layout.
//! * **Who may become a worker**: `issetugid()` (Linux: `AT_SECURE`) refuses privileged
//!   programs; the socket's peer pid (`LOCAL_PEERPID` on macOS, `LOCAL_PEERCRED` on FreeBSD,
//!   `SO_PEERCRED` on Linux) must be the parent's. The parent's executable is not compared:
//!   these systems have no `/proc/<pid>/exe`. A parent that started this process could run it
//!   any way it likes anyway; what the check keeps out is anyone else.
//! * **Closing inherited descriptors**: `close_range(CLOSE_RANGE_CLOEXEC)` on FreeBSD and
//!   Linux, one `fcntl` per possible descriptor (up to `RLIMIT_NOFILE`) where it fails and on
//!   macOS.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Child;
use std::sync::OnceLock;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{posix, Received, RegionInfo, Sealed, FDS_PER_MESSAGE};

/// The executable this process was started from and its identity, read before `main`.
static EXE: OnceLock<Result<(PathBuf, [u64; 5]), String>> = OnceLock::new();

/// Reads [`EXE`]; called first thing in the worker entry, before `main`.
pub(super) fn remember_executable() {
    EXE.get_or_init(|| {
        let path = std::env::current_exe().map_err(|e| e.to_string())?;
        let m = std::fs::metadata(&path).map_err(|e| e.to_string())?;
        let id = [
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
        ];
        Ok((path, id))
    });
}

fn executable() -> io::Result<&'static (PathBuf, [u64; 5])> {
    remember_executable();
    EXE.get()
        .expect("initialised above")
        .as_ref()
        .map_err(|e| io::Error::other(format!("cannot find this program's executable: {e}")))
}

/// Identifies the executable this process was started from: device, inode, size and
/// modification time, as read before `main`.
pub(crate) fn exe_identity() -> io::Result<[u64; 5]> {
    Ok(executable()?.1)
}

// ---------------------------------------------------------------------------------------------
// Shared memory.

/// A new region of `size` bytes for this process to lend: an unlinked POSIX shared-memory
/// object starting with `head`, mapped read-write here; the descriptor returned (and every
/// one made from it) is read-only, and no writable one remains (see the module docs).
pub(crate) fn create_lendable_region(
    size: usize,
    head: &[u8],
) -> io::Result<(OwnedFd, memmap2::MmapRaw, Sealed)> {
    use rustix::fs::Mode;
    use rustix::shm::OFlags;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Short: macOS allows 31 bytes.
    let name = format!(
        "/cf{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let writable = rustix::shm::open(
        name.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )?;
    let read_only = rustix::shm::open(name.as_str(), OFlags::RDONLY, Mode::empty());
    let _ = rustix::shm::unlink(name.as_str());
    let read_only = read_only?;
    set_cloexec(&writable)?;
    set_cloexec(&read_only)?;
    rustix::fs::ftruncate(&writable, size as u64)?;
    if rustix::io::pwrite(&writable, head, 0)? != head.len() {
        return Err(io::Error::other("short write of a region's header"));
    }
    let map = memmap2::MmapOptions::new().len(size).map_raw(&writable)?;
    drop(writable);
    Ok((read_only, map, Sealed::Now))
}

/// A new page of `size` zero bytes that a child writes and this process reads (a worker's black
/// box): an unlinked, close-on-exec POSIX shared-memory object. Nothing seals its size here, so
/// this process reads it with [`read_at`](super::read_at) (a short read, never a fault, if the
/// child truncated it), not through a mapping.
pub(crate) fn create_shared_page(size: usize) -> io::Result<OwnedFd> {
    use rustix::fs::Mode;
    use rustix::shm::OFlags;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "/cfb{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let fd = rustix::shm::open(
        name.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )?;
    let _ = rustix::shm::unlink(name.as_str());
    set_cloexec(&fd)?;
    rustix::fs::ftruncate(&fd, size as u64)?;
    Ok(fd)
}

/// Not used on this path ([`create_lendable_region`] never returns [`Sealed::AfterWriting`]);
/// ends the mapping.
pub(crate) fn seal_written(_fd: &OwnedFd, map: memmap2::MmapRaw) -> io::Result<()> {
    drop(map);
    Ok(())
}

/// Checks that `fd` is a region the sender can lend safely here: a descriptor opened
/// read-only (so neither this process nor the sender, which keeps none writable, can resize
/// it through a descriptor). Returns its size and identity; `Err` says what is wrong.
pub(crate) fn inspect_region(fd: &OwnedFd) -> Result<RegionInfo, String> {
    let flags = rustix::fs::fcntl_getfl(fd)
        .map_err(|e| format!("an attached descriptor cannot be inspected ({e})"))?;
    if flags & rustix::fs::OFlags::RWMODE != rustix::fs::OFlags::RDONLY {
        return Err(
            "an attached region was sent writable, so it could change size under a reader".into(),
        );
    }
    let st = rustix::fs::fstat(fd).map_err(|e| format!("cannot inspect a region ({e})"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err("an attached descriptor is not a shared-memory region".into());
    }
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(RegionInfo {
        size: usize::try_from(st.st_size).unwrap_or(0),
        key: (st.st_dev as u64, st.st_ino as u64),
    })
}

/// The offset of the first hole at or after `from` in the region `fd`, its size if none or
/// if the system cannot tell (`SEEK_HOLE` on shared memory is not everywhere).
pub(crate) fn first_hole(fd: &OwnedFd, from: u64) -> io::Result<u64> {
    match rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(from)) {
        Ok(at) => Ok(at),
        Err(_) => Ok(rustix::fs::fstat(fd)?.st_size as u64),
    }
}

fn set_cloexec(fd: &impl AsFd) -> io::Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Descriptor passing.

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
const NO_SIGPIPE: SendFlags = SendFlags::NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
const NO_SIGPIPE: SendFlags = SendFlags::empty();

/// Sends what of `bytes` one `sendmsg` takes, with `fds` attached (at most
/// [`FDS_PER_MESSAGE`]). Retries on `EINTR`.
pub(crate) fn send_with_fds(sock: &UnixStream, bytes: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds.len() > FDS_PER_MESSAGE || !control.push(SendAncillaryMessage::ScmRights(&borrowed))
        {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        match rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut control, NO_SIGPIPE) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives into `buf` with one `recvmsg`, appending the descriptors that arrive to `fds`
/// after setting each close-on-exec. Descriptors lost in
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
            RecvFlags::empty(),
        ) {
            Ok(got) => break got,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut failed = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            for fd in received {
                if let Err(e) = set_cloexec(&fd) {
                    failed.get_or_insert(e);
                }
                fds.push_back(fd);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(posix::received(
        sock,
        got.bytes,
        got.flags.contains(ReturnFlags::CTRUNC),
    ))
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A new lifeline: a pipe, both ends close-on-exec. The worker inherits the read end; only
/// this process holds the write end (in the worker's [`super::WorkerProcess`]), so it closes
/// when this process dies.
fn lifeline() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let (read, write) = {
        // No pipe2 on macOS: a program's own fork+exec in another thread could inherit these
        // in between (and hold the worker's lifeline until it exits); the pool's own spawns
        // cannot (they mark everything close-on-exec first).
        let (read, write) = rustix::pipe::pipe()?;
        set_cloexec(&read)?;
        set_cloexec(&write)?;
        (read, write)
    };
    Ok((read, write))
}

/// Starts a worker: this executable again (the file it was started from), serving on
/// `child_end`, with the parent's command line and the lifeline; every other inherited
/// descriptor is marked close-on-exec in the child before `exec` (see the module docs).
pub(super) fn spawn_worker(child_end: &UnixStream) -> io::Result<(Child, Option<OwnedFd>)> {
    let fd: RawFd = child_end.as_raw_fd();
    let (life_read, life_write) = lifeline()?;
    let life = life_read.as_raw_fd();
    // Everything the hook needs is computed here, before the fork.
    let open_max = posix::open_max();
    let mut cmd = posix::worker_command(&executable()?.0, format!("{fd}:{life}"));
    // SAFETY: the closure runs in the forked child before `exec`. It only makes
    // async-signal-safe system calls (close_range or fcntl) on integers copied in before the
    // fork, and allocates nothing: its errors are raw OS error codes.
    unsafe {
        cmd.pre_exec(move || posix::keep_only(&[fd, life], open_max));
    }
    let child = cmd.spawn()?;
    drop(life_read);
    Ok((child, Some(life_write)))
}

/// Whether this process runs with privileges its invoker does not have (set-user-ID,
/// set-group-ID, file capabilities).
pub(super) fn runs_elevated() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: getauxval(3) reads the auxiliary vector; it takes and returns integers.
    return unsafe { libc::getauxval(libc::AT_SECURE) != 0 };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: issetugid(2) takes nothing and returns an integer.
    return unsafe { libc::issetugid() != 0 };
}

/// Takes ownership of the worker's socket and lifeline, named by `value` (`socket:lifeline`),
/// sets both close-on-exec, and starts the lifeline's watchdog.
pub(super) fn adopt_inherited(value: &str) -> Result<UnixStream, String> {
    let parse = |s: Option<&str>| -> Result<RawFd, String> {
        s.and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{value:?} names no descriptor"))
    };
    let mut parts = value.split(':');
    let (sock, life) = (parse(parts.next())?, parse(parts.next())?);
    for fd in [sock, life] {
        // SAFETY: fcntl(F_GETFD) only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(format!("descriptor {fd} is not open"));
        }
    }
    if sock == life {
        return Err(format!("{value:?} names one descriptor twice"));
    }
    // SAFETY: both are open (checked above), distinct, inherited across exec for this purpose,
    // and owned by nothing else in this process, which has not reached `main`.
    let (stream, life) = unsafe { (UnixStream::from_raw_fd(sock), OwnedFd::from_raw_fd(life)) };
    set_cloexec(&stream).map_err(|e| e.to_string())?;
    set_cloexec(&life).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("cf-worker-lifeline".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut byte = [0u8];
            // Only the parent holds the write end and never writes: any return is its death.
            while let Err(rustix::io::Errno::INTR) = rustix::io::read(&life, &mut byte) {}
            // SAFETY: raise(3) with a plain signal number; SIGKILL ends the process at once,
            // as `PR_SET_PDEATHSIG` does on Linux.
            unsafe { libc::raise(libc::SIGKILL) };
        })
        .map_err(|e| format!("cannot watch the parent ({e})"))?;
    Ok(stream)
}

/// The pid of the process at the other end of `socket`, as the kernel records it.
fn peer_pid(socket: &UnixStream) -> io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::net::sockopt::socket_peercred(socket)?
            .pid
            .as_raw_nonzero()
            .get())
    }
    #[cfg(target_os = "macos")]
    {
        let mut pid: libc::pid_t = 0;
        let mut len = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `pid`, which lives across the call.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_LOCAL,
                libc::LOCAL_PEERPID,
                (&raw mut pid).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pid)
    }
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: an all-zero xucred is a valid value of this plain C struct.
        let mut cred: libc::xucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`, which lives across the
        // call.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_LOCAL,
                libc::LOCAL_PEERCRED,
                (&raw mut cred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: since FreeBSD 13 the kernel fills `cr_pid`; the union holds a plain integer.
        Ok(unsafe { cred.cr_pid__c_anonymous_union.cr_pid })
    }
}

/// Proves the worker's socket comes from its real parent: the kernel-recorded process at the
/// other end is this process's parent (see the module docs for what is not compared here).
pub(super) fn check_peer_is_parent(socket: &UnixStream) -> Result<(), String> {
    let peer = peer_pid(socket).map_err(|e| {
        format!("the kernel cannot say who holds the other end of its socket ({e})")
    })?;
    let parent = rustix::process::getppid()
        .map(|p| p.as_raw_nonzero().get())
        .ok_or("it has no parent process")?;
    if peer != parent {
        return Err(format!(
            "the other end of its socket belongs to process {peer}, not to its parent {parent}"
        ));
    }
    Ok(())
}

/// Writes to a dead parent must fail with `EPIPE`, not kill the worker before it can log.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// No effect here: this path never seals regions.
    pub(crate) fn pretend_no_future_write(_: bool) {}

    /// A region sent writable: its receiver (or sender) could resize it.
    pub(crate) fn resizable_region(size: u64) -> OwnedFd {
        tempfile_like(size)
    }

    /// A region with no pages at all, sent as a region is.
    pub(crate) fn sparse_region(size: u64) -> OwnedFd {
        let file = tempfile_like(size);
        read_only_twin(&file)
    }

    /// None: huge-page regions are a Linux `memfd` matter.
    pub(crate) fn huge_page_region(_size: u64) -> Option<OwnedFd> {
        None
    }

    /// A region sent writable.
    pub(crate) fn writable_region(size: u64) -> OwnedFd {
        tempfile_like(size)
    }

    /// A descriptor that is not a shared-memory region at all.
    pub(crate) fn not_a_region() -> OwnedFd {
        let (a, _b) = UnixStream::pair().unwrap();
        a.into()
    }

    /// An unlinked read-write file of `size` bytes (no pages).
    fn tempfile_like(size: u64) -> OwnedFd {
        use rustix::fs::Mode;
        use rustix::shm::OFlags;
        let name = format!("/cft{}.{size}", std::process::id());
        let fd = rustix::shm::open(
            name.as_str(),
            OFlags::CREATE | OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        )
        .unwrap();
        let _ = rustix::shm::unlink(name.as_str());
        rustix::fs::ftruncate(&fd, size).unwrap();
        fd
    }

    /// A read-only descriptor of the same file as `fd`.
    fn read_only_twin(fd: &OwnedFd) -> OwnedFd {
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        std::fs::File::open(path).unwrap().into()
    }

    #[test]
    fn a_lent_region_has_no_writable_descriptor() {
        let (fd, map, sealed) = create_lendable_region(1 << 16, b"head").unwrap();
        assert_eq!(sealed, Sealed::Now);
        let info = inspect_region(&fd).unwrap();
        assert_eq!(info.size, 1 << 16);
        // The sender's mapping writes; nothing else can.
        super::super::copy_in(&map, 100, b"bytes");
        assert!(rustix::io::pwrite(&fd, b"x", 0).is_err());
        assert!(rustix::fs::ftruncate(&fd, 0).is_err());
        assert!(memmap2::MmapOptions::new().len(1 << 16).map_raw(&fd).is_err());
        let copy = super::super::copy_out(&map_read_only_for_test(&fd), 100, 5).unwrap();
        assert_eq!(copy, b"bytes");
        let mut head = [0u8; 4];
        super::super::read_at(&fd, &mut head, 0).unwrap();
        assert_eq!(&head, b"head");
    }

    fn map_read_only_for_test(fd: &OwnedFd) -> memmap2::MmapRaw {
        super::super::map_read_only(fd, 1 << 16).unwrap()
    }

    #[test]
    fn writable_and_foreign_descriptors_are_refused() {
        let err = inspect_region(&writable_region(1 << 16)).unwrap_err();
        assert!(err.contains("sent writable"), "{err}");
        let err = inspect_region(&not_a_region()).unwrap_err();
        assert!(err.contains("sent writable") || err.contains("not a shared-memory"), "{err}");
        let (read_end, _write_end) = rustix::pipe::pipe().unwrap();
        let err = inspect_region(&read_end).unwrap_err();
        assert!(err.contains("not a shared-memory region"), "{err}");
    }
}
