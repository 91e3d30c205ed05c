//! The platform layer on Windows, over `windows-sys`.
//!
//! * **Channel.** A worker's [`Stream`] is a pair of anonymous pipes, one per direction. Pipes
//!   carry bytes only, so every write is sent as a *chunk*: an 8-byte header (the chunk's length
//!   and how many handles travel with it), the handle values, then the bytes. Readers strip the
//!   headers, so the layers above see the same byte stream as on Unix. Handles travel the way
//!   `DuplicateHandle` allows: the sender duplicates each handle straight *into* the peer's
//!   process (the parent holds its workers' process handles; a worker opens its parent with
//!   `PROCESS_DUP_HANDLE` when it starts) and sends the new value, which the receiver owns
//!   once it has checked that it names a handle. Nobody pulls a handle *out of* another
//!   process: with `DUPLICATE_CLOSE_SOURCE` that needs the source process's cooperation under
//!   Wine (an APC it must run), and a worker killed at that moment left the parent's reader
//!   waiting for ever. Two ends in one process duplicate into it.
//! * **Processes.** A worker is this executable (`GetModuleFileNameW`) with the parent's own
//!   command line, started suspended by `CreateProcessW` with an explicit handle list
//!   (`PROC_THREAD_ATTRIBUTE_HANDLE_LIST`): its two pipe ends, `NUL` as stdin and the parent's
//!   stdout and stderr. Before it runs it joins the parent's Job Object, made with
//!   `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` and never closed: when the parent ends, however it
//!   ends, the system closes the job and kills every worker. A worker's death is learnt from
//!   its process handle, not its pipes (which a process that inherited a copy of them could
//!   keep open): a waiter thread per worker blocks in `WaitForSingleObject` (one wait per
//!   worker, no 64-handle limit) and, once the worker has exited, ends the parent's reads and
//!   writes on its channel (`CancelIoEx`; see [`watch`]). Readers then see the end of the
//!   stream after the bytes already in the pipe, as on Unix after the socket's shutdown. The
//!   same waiter gives the parent's end a read timeout, which anonymous pipes lack. Kill and
//!   terminate are both `TerminateProcess` (Windows has no signal a task could catch).
//! * **Worker entry.** [`WORKER_ENV`](super::WORKER_ENV) holds the parent's pid and the two
//!   inherited handle values. The worker checks that its real parent (the process snapshot's
//!   parent id) has that pid and runs the same executable image, and that both handles are
//!   pipes, before it reads any offset.
//! * **Shared memory.** Regions are page-file-backed file mappings (`CreateFileMappingW`).
//!   Windows has no seals: instead the sender keeps the only handle with write access inside
//!   itself, and what it lends is a duplicate with `FILE_MAP_READ` access only, from which no
//!   process can map a writable view or get write access back; receivers refuse a region they
//!   could map writable. A section's size cannot change once made.
//!
//! Each `unsafe` block carries a `// SAFETY:` comment.

use std::collections::VecDeque;
use std::ffi::{c_void, OsString};
use std::io::{self, Read, Write};
use std::mem::size_of;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, RawHandle};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use cf_executor_api::ExitCause;
use windows_sys::Win32::Foundation::{
    DuplicateHandle, GetHandleInformation, GetLastError, SetHandleInformation,
    DUPLICATE_SAME_ACCESS, ERROR_BROKEN_PIPE, ERROR_NO_DATA, ERROR_OPERATION_ABORTED, GENERIC_READ,
    HANDLE, HANDLE_FLAG_INHERIT, INVALID_HANDLE_VALUE, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, GetFileInformationByHandle, GetFileType, ReadFile, WriteFile,
    BY_HANDLE_FILE_INFORMATION, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_TYPE_PIPE,
    OPEN_EXISTING,
};
use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE, STD_OUTPUT_HANDLE};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W,
    TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Environment::GetCommandLineW;
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
    SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::LibraryLoader::{
    GetModuleFileNameW, GetModuleHandleExW, GetModuleHandleW,
    GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS, GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, VirtualQuery, FILE_MAP_READ,
    FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
};
use windows_sys::Win32::System::Pipes::{CreatePipe, PeekNamedPipe};
use windows_sys::Win32::System::IO::CancelIoEx;
use windows_sys::Win32::System::Threading::{
    CreateProcessW, DeleteProcThreadAttributeList, GetCurrentProcess, GetExitCodeProcess,
    InitializeProcThreadAttributeList, OpenProcess, QueryFullProcessImageNameW, ResumeThread,
    TerminateProcess, UpdateProcThreadAttribute, WaitForSingleObject, CREATE_SUSPENDED,
    CREATE_UNICODE_ENVIRONMENT, EXTENDED_STARTUPINFO_PRESENT, INFINITE,
    LPPROC_THREAD_ATTRIBUTE_LIST, PROCESS_INFORMATION, PROCESS_NAME_WIN32,
    PROCESS_DUP_HANDLE, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE, PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
    STARTF_USESTDHANDLES, STARTUPINFOEXW,
};

pub(crate) use std::os::windows::io::OwnedHandle;

use super::{Received, RegionInfo, Sealed, Signal, FDS_PER_MESSAGE, WORKER_ENV};

/// The exit code `TerminateProcess` gives a worker the pool stops (Windows has no signals;
/// `1` is what CPython's `Popen.terminate` uses too).
pub(crate) const TERMINATED_EXIT: u32 = 1;

/// Bytes a pipe buffers (a hint to `CreatePipe`).
const PIPE_BUFFER: u32 = 256 * 1024;

/// The largest chunk one header announces.
const CHUNK_MAX: usize = 1 << 30;

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Owns `raw`, a handle just returned by a successful call.
fn own(raw: HANDLE) -> OwnedHandle {
    // SAFETY: callers pass a handle a call just created for this process and that nothing else
    // owns, so it is valid and closed exactly once, by the returned value.
    unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) }
}

fn current_process() -> HANDLE {
    // SAFETY: GetCurrentProcess takes nothing and returns a pseudo-handle that needs no closing.
    unsafe { GetCurrentProcess() }
}

/// Duplicates `handle` (of this process) into `target` (a process handle, or this process),
/// with the same access, not inheritable: the new handle's value in `target`.
fn duplicate_into(handle: HANDLE, target: HANDLE) -> io::Result<HANDLE> {
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: `handle` is a live handle of this process (borrowed by the caller for the call),
    // `target` a live process handle with PROCESS_DUP_HANDLE access (ours, or the current
    // process's pseudo-handle); DuplicateHandle writes only `out`.
    let ok = unsafe {
        DuplicateHandle(
            current_process(),
            handle,
            target,
            &mut out,
            0,
            0,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == 0 {
        return Err(last_error());
    }
    Ok(out)
}

/// A new handle to what `handle` names, with `access` (a subset of its own), or the same
/// access if `access` is `None`; `inherit` makes it inheritable.
fn duplicate(handle: HANDLE, access: Option<u32>, inherit: bool) -> io::Result<OwnedHandle> {
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: `handle` is a live handle of this process, borrowed for the call; the duplicate
    // is made in this process and owned by the returned value.
    let ok = unsafe {
        DuplicateHandle(
            current_process(),
            handle,
            current_process(),
            &mut out,
            access.unwrap_or(0),
            i32::from(inherit),
            if access.is_some() {
                0
            } else {
                DUPLICATE_SAME_ACCESS
            },
        )
    };
    if ok == 0 {
        return Err(last_error());
    }
    Ok(own(out))
}

fn raw(h: &OwnedHandle) -> HANDLE {
    h.as_raw_handle() as HANDLE
}

// ---------------------------------------------------------------------------------------------
// The channel.

/// A worker's channel: two anonymous pipes (see the module docs); clones share them.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    pipes: Arc<Pipes>,
}

#[derive(Debug)]
struct Pipes {
    /// Where the peer's chunks arrive (none on a doorbell's sending end).
    read: Option<OwnedHandle>,
    /// Where this end's chunks go (none on a doorbell's receiving end).
    write: Option<OwnedHandle>,
    /// Held while a chunk is written, so chunks of clones never interleave.
    writing: Mutex<()>,
    /// Bytes left in the chunk being read.
    reading: Mutex<usize>,
    /// The process at the other end, into which this end duplicates the handles it sends: the
    /// worker, on the parent's end once it is started; the parent, on a worker's end. Unset:
    /// both ends are in this process.
    peer_process: OnceLock<Arc<OwnedHandle>>,
    /// What ends a blocked read or write from outside: the worker's exit, a read timeout.
    watch: Watch,
}

/// How a channel's waiter (see [`watch`]) reaches its blocked readers and writers.
///
/// Reads and writes are synchronous, so the only way to end one that blocks is to cancel it
/// (`CancelIoEx` on the pipe handle, which ends this process's pending I/O on it from any
/// thread). The protocol, with every access `SeqCst`: a reader or writer counts itself in
/// `inside` *before* it looks at `ended`, and the waiter sets `ended` *before* it looks at
/// `inside`. So either the reader sees `ended` and does not block, or the waiter sees it inside
/// and cancels until it has left: a cancel that lands just before the blocking call starts is
/// repeated. A cancelled read consumed nothing, so no byte is lost.
#[derive(Debug, Default)]
struct Watch {
    /// Whether a waiter watches this channel (only then is a read timeout honoured).
    watched: AtomicBool,
    /// The worker has exited: everything it wrote is in the pipe, so a read that would block
    /// is the end of the stream, and a write goes nowhere.
    ended: AtomicBool,
    /// Reads and writes now between their `ended` check and the end of their system call.
    inside: AtomicUsize,
    /// The read timeout in milliseconds; 0 for none.
    timeout_ms: AtomicU64,
    /// When the read now in progress started ([`now_ms`]); 0 when none is.
    reading_since: AtomicU64,
    /// The waiter cancelled the read in progress for its timeout.
    timed_out: AtomicBool,
}

/// Counts a reader or writer in [`Watch::inside`] for its life.
struct Inside<'a>(&'a AtomicUsize);

impl<'a> Inside<'a> {
    fn enter(count: &'a AtomicUsize) -> Inside<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Inside(count)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Milliseconds on a monotonic clock, never 0.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Stream {
    fn new(read: Option<OwnedHandle>, write: Option<OwnedHandle>) -> Stream {
        Stream {
            pipes: Arc::new(Pipes {
                read,
                write,
                writing: Mutex::new(()),
                reading: Mutex::new(0),
                peer_process: OnceLock::new(),
                watch: Watch::default(),
            }),
        }
    }

    /// Two connected ends.
    pub(crate) fn pair() -> io::Result<(Stream, Stream)> {
        let (r1, w1) = pipe()?;
        let (r2, w2) = pipe()?;
        Ok((Stream::new(Some(r1), Some(w2)), Stream::new(Some(r2), Some(w1))))
    }

    /// Another handle on the same channel (no system call).
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(self.clone())
    }

    /// Sets how long a read may block before it fails with `WouldBlock` (as a socket's
    /// `SO_RCVTIMEO` does). Anonymous pipes have no timeout of their own: the channel's waiter
    /// (see [`watch`]) cancels a read that has blocked that long, so only a watched channel (the
    /// parent's end of a worker's) has one, and the read fails between one and two timeouts
    /// after it started. Elsewhere: `Err(Unsupported)`.
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        let watch = &self.pipes.watch;
        if !watch.watched.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "only the parent's end of a worker's pipes has a read timeout on Windows",
            ));
        }
        let ms = timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        watch.timeout_ms.store(ms, Ordering::SeqCst);
        Ok(())
    }

    /// Writes one chunk: `bytes` (at most [`CHUNK_MAX`] of them) with `handles` (values as the
    /// receiver will see them). Returns how many bytes went.
    fn write_chunk(&self, bytes: &[u8], handles: &[u64]) -> io::Result<usize> {
        let h = self
            .pipes
            .write
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "a read-only end"))?;
        let len = bytes.len().min(CHUNK_MAX);
        let mut head = Vec::with_capacity(8 + 8 * handles.len());
        head.extend_from_slice(&(len as u32).to_le_bytes());
        head.extend_from_slice(&(handles.len() as u32).to_le_bytes());
        for v in handles {
            head.extend_from_slice(&v.to_le_bytes());
        }
        let _guard = self
            .pipes
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.pipes.write_all(raw(h), &head)?;
        self.pipes.write_all(raw(h), &bytes[..len])?;
        Ok(len)
    }

    /// Reads what is left of the current chunk into `buf` (at least one byte, or 0 at the end
    /// of the stream), handing the handles of a new chunk to `handles`.
    fn read_chunk(
        &self,
        buf: &mut [u8],
        mut handles: impl FnMut(OwnedHandle),
    ) -> io::Result<usize> {
        let h = self
            .pipes
            .read
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "a write-only end"))?;
        if buf.is_empty() {
            return Ok(0);
        }
        let mut left = self
            .pipes
            .reading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *left == 0 {
            let mut head = [0u8; 8];
            if !self.pipes.read_exact_or_end(raw(h), &mut head, true)? {
                return Ok(0);
            }
            let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
            let count = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
            if count > FDS_PER_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{count} handles announced with one chunk"),
                ));
            }
            let mut values = vec![0u8; 8 * count];
            if !self.pipes.read_exact_or_end(raw(h), &mut values, false)? && count > 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut bad = None;
            for v in values.chunks_exact(8) {
                let v = u64::from_le_bytes(v.try_into().expect("8 bytes")) as usize as HANDLE;
                match self.adopt(v) {
                    Ok(owned) => handles(owned),
                    Err(e) => bad = Some(e),
                }
            }
            if let Some(e) = bad {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a handle sent with a chunk could not be taken over: {e}"),
                ));
            }
            *left = len;
        }
        let want = buf.len().min(*left);
        let got = self.pipes.read_some(raw(h), &mut buf[..want], true)?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        *left -= got;
        Ok(got)
    }

    /// A handle value the peer sent, as a handle of this process: the peer duplicated it into
    /// this process for us (see the module docs), so it is ours to own. A value that names no
    /// handle here is refused.
    #[allow(clippy::unused_self)]
    fn adopt(&self, value: HANDLE) -> io::Result<OwnedHandle> {
        let mut flags = 0u32;
        // SAFETY: GetHandleInformation only queries `value` and writes `flags`; a value that
        // names no handle of this process makes it fail.
        if unsafe { GetHandleInformation(value, &mut flags) } == 0 {
            return Err(last_error());
        }
        Ok(own(value))
    }

    /// The value under which the peer will find a copy of `handle`, which this duplicates into
    /// the peer's process.
    fn send_handle(&self, handle: &OwnedHandle) -> io::Result<u64> {
        let target = match self.pipes.peer_process.get() {
            Some(peer) => raw(peer),
            None => current_process(),
        };
        Ok(duplicate_into(raw(handle), target)? as usize as u64)
    }
}

impl From<OwnedHandle> for Stream {
    /// The receiving end of a doorbell (the read end of a pipe).
    fn from(read: OwnedHandle) -> Stream {
        Stream::new(Some(read), None)
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Handles where none were expected are closed.
        self.read_chunk(buf, drop)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.write_chunk(buf, &[])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A new anonymous pipe, both ends non-inheritable: (read, write).
fn pipe() -> io::Result<(OwnedHandle, OwnedHandle)> {
    let mut r: HANDLE = std::ptr::null_mut();
    let mut w: HANDLE = std::ptr::null_mut();
    // SAFETY: CreatePipe writes the two new handles into `r` and `w`; null attributes make them
    // non-inheritable.
    if unsafe { CreatePipe(&mut r, &mut w, std::ptr::null(), PIPE_BUFFER) } == 0 {
        return Err(last_error());
    }
    Ok((own(r), own(w)))
}

impl Pipes {
    /// Writes all of `bytes` to `h` (this channel's write end). Fails with `BrokenPipe` once
    /// the worker has exited, even if another process still holds the pipe's read end.
    fn write_all(&self, h: HANDLE, mut bytes: &[u8]) -> io::Result<()> {
        let watch = &self.watch;
        while !bytes.is_empty() {
            let _inside = Inside::enter(&watch.inside);
            if watch.ended.load(Ordering::SeqCst) {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the process at the other end has exited",
                ));
            }
            let n = bytes.len().min(u32::MAX as usize) as u32;
            let mut wrote = 0u32;
            // SAFETY: `bytes` is valid for `n` bytes of reading; `h` is a live pipe handle
            // borrowed from its owner for the call; no OVERLAPPED (a synchronous write).
            let ok =
                unsafe { WriteFile(h, bytes.as_ptr(), n, &mut wrote, std::ptr::null_mut()) };
            if ok == 0 {
                let e = last_error();
                // SAFETY: GetLastError only reads this thread's error code.
                match unsafe { GetLastError() } {
                    ERROR_NO_DATA | ERROR_BROKEN_PIPE => {
                        return Err(io::Error::new(io::ErrorKind::BrokenPipe, e));
                    }
                    // Cancelled: `ended` decides on the next round (a cancel meant for a read
                    // is not ours, and what was written before it counts).
                    ERROR_OPERATION_ABORTED => {}
                    _ => return Err(e),
                }
            }
            bytes = &bytes[wrote as usize..];
        }
        Ok(())
    }

    /// One `ReadFile` on `h` (this channel's read end): bytes read, 0 at the end of the pipe
    /// (every writer gone) or once the worker has exited and nothing it wrote is left to read.
    /// With a timeout set and `may_time_out`, `WouldBlock` when none came in time.
    fn read_some(&self, h: HANDLE, buf: &mut [u8], may_time_out: bool) -> io::Result<usize> {
        let watch = &self.watch;
        let n = buf.len().min(u32::MAX as usize) as u32;
        loop {
            let _inside = Inside::enter(&watch.inside);
            if watch.ended.load(Ordering::SeqCst) && available(h)? == 0 {
                return Ok(0);
            }
            watch.timed_out.store(false, Ordering::SeqCst);
            if may_time_out {
                watch.reading_since.store(now_ms(), Ordering::SeqCst);
            }
            let mut got = 0u32;
            // SAFETY: `buf` is valid for `n` bytes of writing; `h` is a live pipe handle
            // borrowed from its owner for the call; no OVERLAPPED (a synchronous read).
            let ok = unsafe { ReadFile(h, buf.as_mut_ptr(), n, &mut got, std::ptr::null_mut()) };
            watch.reading_since.store(0, Ordering::SeqCst);
            if ok != 0 {
                return Ok(got as usize);
            }
            // SAFETY: GetLastError only reads this thread's error code.
            match unsafe { GetLastError() } {
                ERROR_BROKEN_PIPE => return Ok(0),
                // Cancelled, which read nothing: after the worker's exit the loop's head
                // decides; for the timeout, the caller polls; otherwise read again.
                ERROR_OPERATION_ABORTED => {
                    if watch.timed_out.swap(false, Ordering::SeqCst)
                        && !watch.ended.load(Ordering::SeqCst)
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "nothing arrived within the read timeout",
                        ));
                    }
                }
                _ => return Err(last_error()),
            }
        }
    }

    /// Fills `buf`: `false` if the pipe ended before its first byte, an error if it ended
    /// midway. Only a read of its first byte may time out, and only if `may_time_out`: bytes
    /// already taken would be lost with the error. (A header is written in one call, so its rest follows at once unless
    /// the sender stopped midway on purpose; such a sender is noticed when it exits.)
    fn read_exact_or_end(&self, h: HANDLE, buf: &mut [u8], may_time_out: bool) -> io::Result<bool> {
        let mut at = 0;
        while at < buf.len() {
            match self.read_some(h, &mut buf[at..], may_time_out && at == 0)? {
                0 if at == 0 => return Ok(false),
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => at += n,
            }
        }
        Ok(true)
    }

    /// Cancels this process's pending reads and writes on both pipes (a pending read consumes
    /// nothing); a call with none pending does nothing.
    fn cancel(&self, reads: bool, writes: bool) {
        let ends = [(reads, &self.read), (writes, &self.write)];
        for h in ends.iter().filter(|(on, _)| *on).filter_map(|(_, h)| h.as_ref()) {
            // SAFETY: a live pipe handle of ours; a null OVERLAPPED cancels all of this
            // process's I/O on it, and the call fails harmlessly when there is none.
            unsafe { CancelIoEx(raw(h), std::ptr::null()) };
        }
    }
}

/// Bytes waiting in the pipe `h` (its read end); 0 if every writer is gone and none are left.
fn available(h: HANDLE) -> io::Result<u32> {
    let mut avail = 0u32;
    // SAFETY: `h` is a live pipe read handle borrowed for the call; with no buffer, the call
    // writes only `avail`.
    let ok = unsafe {
        PeekNamedPipe(
            h,
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            &mut avail,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        // SAFETY: GetLastError only reads this thread's error code.
        if unsafe { GetLastError() } == ERROR_BROKEN_PIPE {
            return Ok(0);
        }
        return Err(last_error());
    }
    Ok(avail)
}

/// The waiter's stack: it only waits and cancels.
const WAITER_STACK: usize = 64 * 1024;

/// The longest the waiter sleeps between looks at the channel's read timeout.
const WAITER_TICK_MS: u64 = 1000;

/// Starts the thread that watches `process` for `stream`: once the process has exited, reads
/// of the channel that would block end the stream (after the bytes it wrote before it died)
/// and writes fail, whoever else still holds the pipes; meanwhile it cancels a read that
/// outlives the read timeout. It learns of the exit from the process handle, not the pipe,
/// which a process that inherited a copy of the worker's pipe ends could keep open for ever.
/// It ends when the process has exited and no read or write is left inside, or when the
/// channel is dropped.
fn watch(
    process: Arc<OwnedHandle>,
    pid: u32,
    stream: &Stream,
) -> io::Result<std::thread::JoinHandle<()>> {
    stream.pipes.watch.watched.store(true, Ordering::SeqCst);
    let pipes = Arc::downgrade(&stream.pipes);
    std::thread::Builder::new()
        .name(format!("cf-proc-exit-{pid}"))
        .stack_size(WAITER_STACK)
        .spawn(move || loop {
            let tick = match pipes.upgrade() {
                Some(p) => match p.watch.timeout_ms.load(Ordering::SeqCst) {
                    0 => WAITER_TICK_MS,
                    t => t.min(WAITER_TICK_MS),
                },
                None => return,
            };
            // SAFETY: a wait on the live process handle this thread shares ownership of.
            let woke = unsafe { WaitForSingleObject(raw(&process), tick as u32) };
            let Some(p) = pipes.upgrade() else { return };
            let watch = &p.watch;
            if woke == WAIT_OBJECT_0 {
                watch.ended.store(true, Ordering::SeqCst);
                while watch.inside.load(Ordering::SeqCst) > 0 {
                    p.cancel(true, true);
                    std::thread::sleep(Duration::from_millis(1));
                }
                return;
            }
            if woke != WAIT_TIMEOUT {
                // The wait itself failed: poll, so that the exit is still seen.
                std::thread::sleep(Duration::from_millis(tick));
                continue;
            }
            let timeout = watch.timeout_ms.load(Ordering::SeqCst);
            let since = watch.reading_since.load(Ordering::SeqCst);
            if timeout > 0 && since > 0 && now_ms().saturating_sub(since) >= timeout {
                watch.timed_out.store(true, Ordering::SeqCst);
                p.cancel(true, false);
            }
        })
}

/// The doorbell: the parent's write-only end and the read end to send the worker.
pub(crate) fn doorbell() -> io::Result<(Stream, OwnedHandle)> {
    let (r, w) = pipe()?;
    Ok((Stream::new(None, Some(w)), r))
}

/// Sends `bytes` (up to [`CHUNK_MAX`] of them) with `fds` (at most [`FDS_PER_MESSAGE`]) as one
/// chunk; returns how many bytes went.
pub(crate) fn send_with_fds(
    sock: &Stream,
    bytes: &[u8],
    fds: &[OwnedHandle],
) -> io::Result<usize> {
    if fds.len() > FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many handles for one message",
        ));
    }
    let mut values = Vec::with_capacity(fds.len());
    for fd in fds {
        values.push(sock.send_handle(fd)?);
    }
    sock.write_chunk(bytes, &values)
}

/// Reads into `buf` (at most the rest of one chunk), appending the handles that arrive to
/// `fds`.
pub(crate) fn recv_with_fds(
    sock: &Stream,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedHandle>,
) -> io::Result<Received> {
    let bytes = sock.read_chunk(buf, |h| fds.push_back(h))?;
    Ok(Received { bytes, lost: None })
}

/// Windows has no `SIGPIPE`: a write to a closed pipe fails with an error.
pub(crate) fn ignore_sigpipe() {}

// ---------------------------------------------------------------------------------------------
// Processes.

/// The wide string `s` with its terminating NUL.
fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// The path of the running executable.
fn own_executable() -> io::Result<Vec<u16>> {
    let mut buf = vec![0u16; 512];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` UTF-16 units of writing; a null module names
        // the executable.
        let n = unsafe {
            GetModuleFileNameW(std::ptr::null_mut(), buf.as_mut_ptr(), buf.len() as u32)
        } as usize;
        if n == 0 {
            return Err(last_error());
        }
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// The job every worker joins: closed by the system when this process ends, which kills them.
fn job() -> io::Result<HANDLE> {
    static JOB: OnceLock<Result<OwnedHandle, i32>> = OnceLock::new();
    let job = JOB.get_or_init(|| {
        // SAFETY: null attributes and name: an unnamed job, non-inheritable.
        let h = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if h.is_null() {
            return Err(last_error().raw_os_error().unwrap_or(0));
        }
        let job = own(h);
        // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION (a plain C struct of integers)
        // is valid: no limits.
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: `info` is the structure this information class takes, of the size passed;
        // the job handle is live.
        let ok = unsafe {
            SetInformationJobObject(
                raw(&job),
                JobObjectExtendedLimitInformation,
                (&raw const info).cast::<c_void>(),
                size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if ok == 0 {
            return Err(last_error().raw_os_error().unwrap_or(0));
        }
        Ok(job)
    });
    match job {
        Ok(job) => Ok(raw(job)),
        Err(code) => Err(io::Error::from_raw_os_error(*code)),
    }
}

/// An inheritable copy of this process's standard handle `which`, if it has a valid one.
fn inheritable_std(which: u32) -> Option<OwnedHandle> {
    // SAFETY: GetStdHandle only reads the process's parameters; the handle stays the process's.
    let h = unsafe { GetStdHandle(which) };
    if h.is_null() || h == INVALID_HANDLE_VALUE {
        return None;
    }
    duplicate(h, None, true).ok()
}

/// `NUL`, opened for reading, inheritable.
fn inheritable_null() -> io::Result<OwnedHandle> {
    let attrs = SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: std::ptr::null_mut(),
        bInheritHandle: 1,
    };
    let name = wide("NUL".as_ref());
    // SAFETY: `name` is a NUL-terminated wide string and `attrs` a valid structure, both alive
    // across the call.
    let h = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            &attrs,
            OPEN_EXISTING,
            0,
            std::ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(last_error());
    }
    Ok(own(h))
}

/// This process's environment with [`WORKER_ENV`] set to `value`, as a Unicode environment
/// block.
fn worker_environment(value: &str) -> Vec<u16> {
    let mut block = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k.eq_ignore_ascii_case(WORKER_ENV) {
            continue;
        }
        block.extend(k.encode_wide());
        block.push(u16::from(b'='));
        block.extend(v.encode_wide());
        block.push(0);
    }
    block.extend(WORKER_ENV.encode_utf16());
    block.push(u16::from(b'='));
    block.extend(value.encode_utf16());
    block.push(0);
    block.push(0);
    block
}

/// A worker process: its process handle, shared with the parent's end of its channel and
/// with the waiter that ends that channel when the worker exits (see [`watch`]).
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    process: Arc<OwnedHandle>,
    pid: u32,
    /// Joined once the worker has exited.
    waiter: Option<std::thread::JoinHandle<()>>,
}

impl WorkerProcess {
    /// The worker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Ends the worker (`TerminateProcess`); `Ok` if it had already ended.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        // SAFETY: the process handle is live (owned by `self`) and has PROCESS_TERMINATE.
        if unsafe { TerminateProcess(raw(&self.process), TERMINATED_EXIT) } == 0 {
            let e = last_error();
            // SAFETY: a zero-timeout wait on a live process handle.
            if unsafe { WaitForSingleObject(raw(&self.process), 0) } == WAIT_OBJECT_0 {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits for the worker to end: its exit code (an `NTSTATUS` such as `0xC0000005` when it
    /// crashed). Never waits for its descendants.
    pub(crate) fn wait(&mut self) -> ExitCause {
        // SAFETY: a wait on the live process handle `self` owns.
        if unsafe { WaitForSingleObject(raw(&self.process), INFINITE) } != WAIT_OBJECT_0 {
            return ExitCause::Unknown;
        }
        // The waiter has seen the exit too and returns once no read or write is blocked (the
        // reader, which calls this, has stopped reading).
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.join();
        }
        let mut code = 0u32;
        // SAFETY: the handle is live and has PROCESS_QUERY_INFORMATION; writes only `code`.
        if unsafe { GetExitCodeProcess(raw(&self.process), &mut code) } == 0 {
            return ExitCause::Unknown;
        }
        ExitCause::Code(code as i32)
    }
}

/// Starts a worker serving on `child_end` (see the module docs); `parent_end` learns the
/// worker's process, to pass handles to and from it.
pub(crate) fn spawn_worker(child_end: &Stream, parent_end: &Stream) -> io::Result<WorkerProcess> {
    let (Some(child_read), Some(child_write)) = (&child_end.pipes.read, &child_end.pipes.write)
    else {
        return Err(io::Error::other("a worker needs both directions of its channel"));
    };
    // Inheritable copies for the child only (listed in its handle list), closed once it has
    // them. Windows gives a child only the handles in its list; the lock is for where that is
    // not honoured (Wine was seen not to): two workers started at once would otherwise
    // inherit each other's pipe ends, and one's end of stream would wait for the other's
    // exit. It does not cover a process another thread starts with `bInheritHandles` and no
    // list, which the waiter's watch on the worker's process covers instead (see [`watch`]).
    static SPAWNING: Mutex<()> = Mutex::new(());
    let spawning = SPAWNING.lock().unwrap_or_else(PoisonError::into_inner);
    let read = duplicate(raw(child_read), None, true)?;
    let write = duplicate(raw(child_write), None, true)?;
    let stdin = inheritable_null()?;
    let stdout = inheritable_std(STD_OUTPUT_HANDLE);
    let stderr = inheritable_std(STD_ERROR_HANDLE);
    let mut handles: Vec<HANDLE> = vec![raw(&read), raw(&write), raw(&stdin)];
    handles.extend(stdout.iter().chain(stderr.iter()).map(raw));

    let exe = {
        let mut exe = own_executable()?;
        exe.push(0);
        exe
    };
    // SAFETY: GetCommandLineW returns this process's NUL-terminated command line, valid for
    // the life of the process.
    let mut cmdline = unsafe {
        let p = GetCommandLineW();
        let mut n = 0;
        while *p.add(n) != 0 {
            n += 1;
        }
        std::slice::from_raw_parts(p, n + 1).to_vec()
    };
    let value = format!(
        "{}:{}:{}",
        std::process::id(),
        raw(&read) as usize,
        raw(&write) as usize
    );
    let env = worker_environment(&value);

    let mut size = 0usize;
    // SAFETY: the first call only reports the size the list needs (it fails by design).
    unsafe { InitializeProcThreadAttributeList(std::ptr::null_mut(), 1, 0, &mut size) };
    let mut list_mem = vec![0u64; size.div_ceil(8)];
    let list: LPPROC_THREAD_ATTRIBUTE_LIST = list_mem.as_mut_ptr().cast();
    // SAFETY: `list` points to `size` writable, 8-aligned bytes, as the first call asked.
    if unsafe { InitializeProcThreadAttributeList(list, 1, 0, &mut size) } == 0 {
        return Err(last_error());
    }
    let spawned = (|| {
        // SAFETY: `list` was initialised above; `handles` outlives the list's use (the list
        // stores a pointer to it until CreateProcessW below).
        if unsafe {
            UpdateProcThreadAttribute(
                list,
                0,
                PROC_THREAD_ATTRIBUTE_HANDLE_LIST as usize,
                handles.as_ptr().cast(),
                handles.len() * size_of::<HANDLE>(),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        } == 0
        {
            return Err(last_error());
        }
        // SAFETY: all-zero is a valid STARTUPINFOEXW (null pointers, zero integers).
        let mut si: STARTUPINFOEXW = unsafe { std::mem::zeroed() };
        si.StartupInfo.cb = size_of::<STARTUPINFOEXW>() as u32;
        si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
        si.StartupInfo.hStdInput = raw(&stdin);
        si.StartupInfo.hStdOutput = stdout.as_ref().map_or(std::ptr::null_mut(), raw);
        si.StartupInfo.hStdError = stderr.as_ref().map_or(std::ptr::null_mut(), raw);
        si.lpAttributeList = list;
        // SAFETY: all-zero is a valid PROCESS_INFORMATION, filled in by the call.
        let mut pi: PROCESS_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `exe` and `cmdline` are NUL-terminated wide strings (`cmdline` writable, as
        // CreateProcessW requires), `env` a double-NUL-terminated Unicode block, `si` a valid
        // STARTUPINFOEXW whose attribute list and handles are live; all outlive the call.
        let ok = unsafe {
            CreateProcessW(
                exe.as_ptr(),
                cmdline.as_mut_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                1,
                CREATE_SUSPENDED | CREATE_UNICODE_ENVIRONMENT | EXTENDED_STARTUPINFO_PRESENT,
                env.as_ptr().cast(),
                std::ptr::null(),
                &si.StartupInfo,
                &mut pi,
            )
        };
        if ok == 0 {
            return Err(last_error());
        }
        Ok(pi)
    })();
    // SAFETY: the list was initialised above and is no longer used.
    unsafe { DeleteProcThreadAttributeList(list) };
    drop((read, write, stdin, stdout, stderr));
    drop(spawning);
    let pi = spawned?;
    let process = Arc::new(own(pi.hProcess));
    let thread = own(pi.hThread);
    let mut worker = WorkerProcess {
        process: Arc::clone(&process),
        pid: pi.dwProcessId,
        waiter: None,
    };
    // The worker joins the job before its first instruction runs.
    let joined = job().and_then(|job| {
        // SAFETY: both handles are live; the process handle has PROCESS_SET_QUOTA and
        // PROCESS_TERMINATE (full access, as its creator).
        if unsafe { AssignProcessToJobObject(job, raw(&process)) } == 0 {
            return Err(last_error());
        }
        Ok(())
    });
    if let Err(e) = joined {
        // SAFETY: the live process handle we own, with PROCESS_TERMINATE.
        unsafe { TerminateProcess(raw(&process), TERMINATED_EXIT) };
        return Err(io::Error::new(
            e.kind(),
            format!("a worker could not join the pool's job object: {e}"),
        ));
    }
    let _ = parent_end.pipes.peer_process.set(Arc::clone(&process));
    let started = watch(process, worker.pid, parent_end).and_then(|waiter| {
        worker.waiter = Some(waiter);
        // SAFETY: the suspended main thread's live handle.
        if unsafe { ResumeThread(raw(&thread)) } == u32::MAX {
            return Err(last_error());
        }
        Ok(())
    });
    if let Err(e) = started {
        let _ = worker.kill();
        worker.wait();
        return Err(e);
    }
    Ok(worker)
}

/// Ends process `pid` with `TerminateProcess` (both signals: Windows has no other way).
///
/// Callers guarantee the worker has not been waited for yet: the parent holds its process
/// handle until then, so `pid` cannot name another process.
pub(crate) fn signal(pid: u32, _signal: Signal) -> io::Result<()> {
    // SAFETY: OpenProcess takes plain values; a null result is an error.
    let h = unsafe { OpenProcess(PROCESS_TERMINATE, 0, pid) };
    if h.is_null() {
        return Err(last_error());
    }
    let h = own(h);
    // SAFETY: a live handle with PROCESS_TERMINATE.
    if unsafe { TerminateProcess(raw(&h), TERMINATED_EXIT) } == 0 {
        return Err(last_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Identity and worker entry.

/// What identifies the running executable's file: volume serial number, file index, size and
/// last write time.
pub(crate) fn exe_identity() -> io::Result<[u64; 5]> {
    let path = OsString::from_wide(&own_executable()?);
    let file = std::fs::File::open(path)?;
    // SAFETY: all-zero is a valid BY_HANDLE_FILE_INFORMATION (integers only).
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the file handle is live (owned by `file`); the call writes only `info`.
    if unsafe { GetFileInformationByHandle(file.as_raw_handle() as HANDLE, &mut info) } == 0 {
        return Err(last_error());
    }
    let time = info.ftLastWriteTime;
    Ok([
        u64::from(info.dwVolumeSerialNumber),
        u64::from(info.nFileIndexHigh) << 32 | u64::from(info.nFileIndexLow),
        u64::from(info.nFileSizeHigh) << 32 | u64::from(info.nFileSizeLow),
        u64::from(time.dwHighDateTime) << 32 | u64::from(time.dwLowDateTime),
        0,
    ])
}

/// Whether `addr` lies in the executable's own module (not in a DLL).
pub(crate) fn code_in_executable(addr: usize) -> bool {
    let mut module = std::ptr::null_mut();
    // SAFETY: with FROM_ADDRESS the "name" is an address, only compared against the loader's
    // module ranges; UNCHANGED_REFCOUNT takes no reference; the call writes only `module`.
    let found = unsafe {
        GetModuleHandleExW(
            GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
            addr as *const u16,
            &mut module,
        )
    } != 0;
    // SAFETY: a null name asks for the executable's module, no reference taken.
    found && module == unsafe { GetModuleHandleW(std::ptr::null()) }
}

/// Windows has no set-user-ID programs.
pub(super) fn runs_elevated() -> bool {
    false
}

pub(super) fn remember_executable() {}

/// The image path of process `process` (a handle with query access).
fn image_of(process: HANDLE) -> Option<Vec<u16>> {
    let mut buf = vec![0u16; 32 * 1024];
    let mut n = buf.len() as u32;
    // SAFETY: `buf` is valid for `n` units of writing; the handle is live for the call.
    if unsafe { QueryFullProcessImageNameW(process, PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut n) }
        == 0
    {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// The pid of this process's parent, from a process snapshot.
fn parent_pid() -> Option<u32> {
    // SAFETY: a snapshot of all processes; the handle is owned below.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snap == INVALID_HANDLE_VALUE {
        return None;
    }
    let snap = own(snap);
    // SAFETY: all-zero is a valid PROCESSENTRY32W; dwSize is set as the API requires.
    let mut entry: PROCESSENTRY32W = unsafe { std::mem::zeroed() };
    entry.dwSize = size_of::<PROCESSENTRY32W>() as u32;
    let me = std::process::id();
    // SAFETY: the snapshot handle is live; `entry` is a valid, sized PROCESSENTRY32W.
    let mut more = unsafe { Process32FirstW(raw(&snap), &mut entry) } != 0;
    while more {
        if entry.th32ProcessID == me {
            return Some(entry.th32ParentProcessID);
        }
        // SAFETY: as above.
        more = unsafe { Process32NextW(raw(&snap), &mut entry) } != 0;
    }
    None
}

/// Takes over the channel named by `value` (`pid:read:write`), once proven to come from the
/// real parent: the process that started this one has that pid and runs the same executable,
/// and both handles are pipes. The handles are made non-inheritable at once, so no process
/// this one starts holds them.
pub(super) fn adopt_inherited(value: &str) -> Result<Stream, String> {
    let mut parts = value.split(':').map(str::parse::<usize>);
    let (Some(Ok(pid)), Some(Ok(r)), Some(Ok(w)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("{value:?} names no channel"));
    };
    let parent = parent_pid().ok_or("its parent process cannot be found")?;
    if u32::try_from(pid).ok() != Some(parent) {
        return Err(format!(
            "the channel was made by process {pid}, not by its parent ({parent})"
        ));
    }
    // The handle is also where this worker's channel sends handles (see the module docs).
    // SAFETY: OpenProcess takes plain values; a null result is an error.
    let h = unsafe {
        OpenProcess(
            PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_DUP_HANDLE,
            0,
            parent,
        )
    };
    if h.is_null() {
        return Err(format!("its parent cannot be inspected: {}", last_error()));
    }
    let parent_handle = own(h);
    let theirs = image_of(raw(&parent_handle));
    let mine = image_of(current_process());
    if theirs.is_none() || theirs != mine {
        return Err("its parent runs another executable".into());
    }
    let (r, w) = (r as HANDLE, w as HANDLE);
    for h in [r, w] {
        // SAFETY: GetFileType only queries the handle; an invalid value yields an error code.
        if unsafe { GetFileType(h) } != FILE_TYPE_PIPE {
            return Err("the inherited handles are not pipes".into());
        }
        // SAFETY: changes only the inherit flag of a handle this process holds.
        if unsafe { SetHandleInformation(h, HANDLE_FLAG_INHERIT, 0) } == 0 {
            return Err(format!("cannot make its channel private: {}", last_error()));
        }
    }
    let stream = Stream::new(Some(own(r)), Some(own(w)));
    let _ = stream.pipes.peer_process.set(Arc::new(parent_handle));
    Ok(stream)
}

/// Checked by [`adopt_inherited`] already (Windows has no peer credentials on pipes).
#[allow(clippy::unnecessary_wraps)]
pub(super) fn check_peer_is_parent(_socket: &Stream) -> Result<(), String> {
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared memory.

/// A view of a file mapping (unmapped when dropped).
#[derive(Debug)]
pub(crate) struct Map {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a `Map` is an address range owned by the value, like memmap2's `MmapRaw`: it hands out
// raw pointers only, and every access through them is an `unsafe` copy whose own SAFETY comment
// argues why no other access races with it; unmapping happens once, in `Drop`.
unsafe impl Send for Map {}
// SAFETY: as above: shared `&Map` access only yields raw pointers.
unsafe impl Sync for Map {}

impl Map {
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the base of a view this value mapped and still owns.
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
                Value: self.ptr.cast(),
            })
        };
    }
}

/// Maps a view of `len` bytes of the section `h` (all of it if `len` is 0) with `access`; its
/// length is what the view spans (whole pages).
fn view(h: &OwnedHandle, access: u32, len: usize) -> io::Result<Map> {
    // SAFETY: the section handle is live; a failed call returns null.
    let base = unsafe { MapViewOfFile(raw(h), access, 0, 0, len) };
    if base.Value.is_null() {
        return Err(last_error());
    }
    // SAFETY: all-zero is a valid MEMORY_BASIC_INFORMATION.
    let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: queries the view just mapped; writes only `info`.
    let got = unsafe {
        VirtualQuery(
            base.Value,
            &mut info,
            size_of::<MEMORY_BASIC_INFORMATION>(),
        )
    };
    // Owned from here: unmapped on every return below that does not hand it out.
    let mut map = Map {
        ptr: base.Value.cast(),
        len: if got == 0 { len } else { info.RegionSize },
    };
    if len != 0 {
        if map.len < len {
            return Err(io::Error::other("a view shorter than asked"));
        }
        map.len = len;
    }
    Ok(map)
}

fn section(size: usize) -> io::Result<OwnedHandle> {
    let size = size as u64;
    // SAFETY: INVALID_HANDLE_VALUE asks for a page-file-backed section; null attributes and
    // name: unnamed, non-inheritable. A failed call returns null.
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            (size >> 32) as u32,
            size as u32,
            std::ptr::null(),
        )
    };
    if h.is_null() {
        return Err(last_error());
    }
    Ok(own(h))
}

/// A page shared with one worker (its black box): a section both may map read-write.
pub(crate) fn create_shared_page(size: usize) -> io::Result<OwnedHandle> {
    section(size)
}

pub(crate) fn map_shared_page(h: &OwnedHandle, len: usize) -> io::Result<Map> {
    view(h, FILE_MAP_READ | FILE_MAP_WRITE, len)
}

pub(crate) fn map_read_only(h: &OwnedHandle, len: usize) -> io::Result<Map> {
    view(h, FILE_MAP_READ, len)
}

/// Reads exactly `buf.len()` bytes of the section `h` at `offset`, through a read-only view.
pub(crate) fn read_at(h: &OwnedHandle, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let offset = usize::try_from(offset).map_err(io::Error::other)?;
    let end = offset
        .checked_add(buf.len())
        .ok_or_else(|| io::Error::other("a read past the address space"))?;
    // A view of exactly the bytes up to `end`: the call fails if the section is shorter.
    let map = view(h, FILE_MAP_READ, end).map_err(|e| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} bytes at {offset} are past the section's end ({e})", buf.len()),
        )
    })?;
    // SAFETY: the range is inside the live view (checked above), `buf` is private memory; a
    // section's size never changes, and every byte pattern is a valid `u8`.
    unsafe { std::ptr::copy_nonoverlapping(map.ptr.add(offset), buf.as_mut_ptr(), buf.len()) };
    Ok(())
}

/// A region to lend: a section mapped read-write here, whose only handle (the one returned, to
/// lend) has `FILE_MAP_READ` access only. Windows has no seals; this is its equivalent of
/// [`Sealed::Now`]: no process can map it writable but through the view returned here.
pub(crate) fn create_lendable_region(
    size: usize,
    head: &[u8],
) -> io::Result<(OwnedHandle, Map, Sealed)> {
    let full = section(size)?;
    let map = view(&full, FILE_MAP_READ | FILE_MAP_WRITE, size)?;
    super::copy_in(&map, 0, head);
    let read_only = duplicate(raw(&full), Some(FILE_MAP_READ), false)?;
    drop(full);
    Ok((read_only, map, Sealed::Now))
}

/// Never reached: regions here are [`Sealed::Now`].
#[allow(clippy::unnecessary_wraps)]
pub(crate) fn seal_written(_h: &OwnedHandle, _map: Map) -> io::Result<()> {
    Ok(())
}

/// A received region: refused unless it is a section this process can map but only read.
/// Its size is its view's (whole pages); the key is the same for every region (handles name
/// no file), so receivers tell regions apart by their tags.
pub(crate) fn inspect_region(h: &OwnedHandle) -> Result<RegionInfo, String> {
    let map = view(h, FILE_MAP_READ, 0).map_err(|e| format!("not a shared-memory region: {e}"))?;
    if view(h, FILE_MAP_WRITE, 0).is_ok() {
        return Err("the region could be mapped writable by its receiver".into());
    }
    Ok(RegionInfo {
        size: map.len,
        key: (0, 0),
    })
}

/// Sections have no holes a reader could fault in from a file: the region's size.
pub(crate) fn first_hole(h: &OwnedHandle, _from: u64) -> io::Result<u64> {
    Ok(view(h, FILE_MAP_READ, 0)?.len as u64)
}

/// Helpers for the crate's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::OwnedHandle;

    /// A handle that names no section (a pipe's read end).
    pub(crate) fn not_a_region() -> OwnedHandle {
        super::pipe().unwrap().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;

    /// Turns a hang into a failure.
    const LIMIT: Duration = Duration::from_secs(60);

    /// Not a test: the process the waiter tests watch and then kill.
    #[test]
    #[ignore = "not a test: the process the waiter tests start, watch and kill"]
    fn waiter_test_process() {
        std::thread::sleep(Duration::from_secs(120));
    }

    /// A process to watch (this test binary, sleeping) and a handle to it for the waiter.
    fn process_to_watch() -> (Child, Arc<OwnedHandle>) {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sys::windows::tests::waiter_test_process", "--ignored"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let handle = duplicate(child.as_raw_handle() as HANDLE, None, false).unwrap();
        (child, Arc::new(handle))
    }

    /// Reads `stream` to its end on another thread: what it read, or the error.
    fn read_to_end(stream: Stream) -> mpsc::Receiver<io::Result<Vec<u8>>> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = tx.send((&stream).read_to_end(&mut all).map(|_| all));
        });
        rx
    }

    #[test]
    fn a_read_ends_when_the_process_exits_though_another_holds_the_pipe_open() {
        // `theirs` stays open throughout, as a copy of a dead worker's pipe end held by
        // another process would: only the waiter can end the read.
        let (ours, theirs) = Stream::pair().unwrap();
        let (mut child, process) = process_to_watch();
        let waiter = watch(process, child.id(), &ours).unwrap();
        (&theirs).write_all(b"sent before it died").unwrap();
        let read = read_to_end(ours.clone());
        std::thread::sleep(Duration::from_millis(200));
        assert!(read.try_recv().is_err(), "the read ended while the process lived");
        child.kill().unwrap();
        let got = read.recv_timeout(LIMIT).expect("the read still blocks");
        assert_eq!(got.unwrap(), b"sent before it died");
        // Later reads and writes do not block either.
        assert_eq!((&ours).read(&mut [0u8; 8]).unwrap(), 0);
        let e = (&ours).write_all(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        // The waiter itself ends once nobody is inside (joined off-thread: a hang fails).
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(waiter.join().is_ok());
        });
        assert!(rx.recv_timeout(LIMIT).expect("the waiter never ended"));
        drop(theirs);
    }

    #[test]
    fn a_write_blocked_on_a_full_pipe_fails_when_the_process_exits() {
        // Nobody reads `theirs`, so the write fills the pipe and blocks.
        let (ours, theirs) = Stream::pair().unwrap();
        let (mut child, process) = process_to_watch();
        let _waiter = watch(process, child.id(), &ours).unwrap();
        let (tx, rx) = mpsc::channel();
        let writer = ours.clone();
        std::thread::spawn(move || {
            let _ = tx.send((&writer).write_all(&vec![7u8; 4 << 20]));
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(rx.try_recv().is_err(), "4 MiB fit in the pipe");
        child.kill().unwrap();
        let e = rx.recv_timeout(LIMIT).expect("the write still blocks").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        drop(theirs);
    }

    #[test]
    fn a_watched_read_times_out_and_the_channel_still_works() {
        let (ours, theirs) = Stream::pair().unwrap();
        assert_eq!(
            ours.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap_err()
                .kind(),
            io::ErrorKind::Unsupported,
            "an unwatched pipe has no timeout"
        );
        let (mut child, process) = process_to_watch();
        let _waiter = watch(process, child.id(), &ours).unwrap();
        ours.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = ours.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let first = (&reader).read(&mut buf).map_err(|e| e.kind());
            let _ = tx.send(first.map(|n| buf[..n].to_vec()));
            let second = (&reader).read(&mut buf).map_err(|e| e.kind());
            let _ = tx.send(second.map(|n| buf[..n].to_vec()));
        });
        let first = rx.recv_timeout(LIMIT).expect("the read never timed out");
        assert_eq!(first, Err(io::ErrorKind::WouldBlock));
        (&theirs).write_all(b"late").unwrap();
        let second = rx.recv_timeout(LIMIT).expect("the second read blocks");
        assert_eq!(second, Ok(b"late".to_vec()), "a timed-out read lost or garbled bytes");
        child.kill().unwrap();
    }
}
