//! The platform layer: every `unsafe` operation and every operating-system call of the process
//! pool, behind one internal API that names no operating system.
//!
//! The modules above this one (the pool's state, its per-worker threads, the worker loop, the
//! frame codec, the shared-memory protocol) use only what is declared here, and this layer uses
//! nothing of theirs (the worker loop reaches [`enter_worker_mode_if_requested`] as a function
//! pointer, from the crate root's static constructor). One module per OS family implements the
//! parts that differ:
//!
//! * `linux`: Linux's best tools (`memfd` with seals, `PR_SET_PDEATHSIG`, `MSG_CMSG_CLOEXEC`,
//!   `close_range`, `SO_PEERCRED`, `/proc/self/exe`);
//! * `unix`: only what macOS and FreeBSD have too (`shm_open`, a lifeline pipe, `issetugid`,
//!   the peer's pid from `LOCAL_PEERPID`/`LOCAL_PEERCRED`), used there and, with the
//!   `portable-unix` feature, on Linux, where the test suite runs over it;
//! * `windows` (`windows-sys`): anonymous pipes that carry handles (`DuplicateHandle`),
//!   `CreateProcessW` with an explicit handle list, a kill-on-close Job Object, page-file-backed
//!   file mappings lent through read-only handles. Its module docs say how each guarantee below
//!   is met there; in short:
//!   - task identity: the same offsets, from the same anchor inside the executable's module
//!     (`GetModuleHandleExW` says whether code is in it), and [`exe_identity`] from the file's
//!     volume serial number, file index, size and write time;
//!   - shared memory: Windows has no seals. A region's only handle with write access stays in
//!     its sender, which keeps the one writable view; what travels is a duplicate with
//!     `FILE_MAP_READ` access only, from which no process can map a writable view (receivers
//!     check that they cannot), and a section's size never changes. So the SAFETY arguments
//!     below hold with "sealed against every writer" read as "no handle that can write it ever
//!     left the sender";
//!   - handle passing: in-band, a chunk header before each write carries the handle values;
//!     the parent duplicates what it sends into the worker and pulls what a worker sends out of
//!     it, so a worker can name only handles of its own;
//!   - processes: workers die with the parent through the job (the system closes it when the
//!     parent ends, however it ends); a worker's death is the end of its pipe (its ends are
//!     made non-inheritable before any task runs), then a wait on its process handle; both
//!     [`Signal`]s are `TerminateProcess` (exit code 1);
//!   - worker entry: the worker's real parent (from a process snapshot) must be the process
//!     named in [`WORKER_ENV`] and run the same image, and the inherited handles must be pipes.
//!
//! What this module guarantees, by area:
//!
//! * **Task identity** ([`offset_of`], [`trampoline_at`], [`initializer_at`], [`conjure`],
//!   [`exe_identity`], [`probe_offset`]). A task crosses to a worker as the address of its
//!   monomorphised trampoline, sent as an offset from a fixed anchor function, because ASLR
//!   moves the image as a whole. Workers are the parent's own executable, re-executed from the
//!   running image, and before any offset is used the worker checks the parent's
//!   [`exe_identity`] and [`probe_offset`] against its own (the handshake). Same image, same
//!   relative layout: the offset names the same function in both processes. The task value
//!   itself is a zero-sized type (checked at compile time), so the worker conjures it from
//!   nothing.
//! * **Shared memory** ([`create_lendable_region`], [`seal_written`], [`inspect_region`],
//!   [`first_hole`], [`map_read_only`], [`read_at`], [`copy_in`], [`copy_out`], [`Leased`],
//!   [`Written`]).
//!   A region is an anonymous shared-memory file whose size cannot change once made, so no
//!   process can truncate it under a reader, and that only its sender's own mapping can write:
//!   it is sealed against every new writer before its descriptor ever leaves the sender, so a
//!   receiver holding (or reopening) that descriptor cannot write it, map it writable or punch
//!   holes in it. Bytes are copied in and out through raw pointers, since another process
//!   maps the same memory; the two views that hand out references ([`Leased`], [`Written`])
//!   say why no process writes the bytes while they are borrowed. Copies of 8 MiB and more
//!   are shared with short-lived helper threads of the same process, all within the call
//!   (`copy`).
//! * **Descriptor passing** ([`send_with_fds`], [`recv_with_fds`]): descriptors travel in a
//!   message's ancillary data and arrive close-on-exec; a send never raises `SIGPIPE`; a
//!   receive says when the kernel dropped descriptors this process could not take
//!   ([`Received::lost`]), and why if it can tell, without losing the bytes.
//! * **Processes** ([`WorkerProcess`], [`signal`], [`ignore_sigpipe`]): a worker is this
//!   executable started again with only its socket inherited, dies with the thread that
//!   started it or with the parent, and is signalled only while it has not been reaped.
//! * **Worker entry** ([`enter_worker_mode_if_requested`], [`entry_ran`]): a static constructor
//!   turns a process started as a worker into one before `main` runs.
//!
//! Each `unsafe` block carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

#[cfg(unix)]
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use cf_executor_api::{Buffer, TaskError};
#[cfg(unix)]
use cf_executor_api::ExitCause;

mod copy;
#[cfg(unix)]
mod posix;

#[cfg(all(target_os = "linux", not(feature = "portable-unix")))]
mod linux;
#[cfg(all(target_os = "linux", not(feature = "portable-unix")))]
use linux as imp;

#[cfg(any(
    target_os = "macos",
    target_os = "freebsd",
    all(target_os = "linux", feature = "portable-unix")
))]
mod unix;
#[cfg(any(
    target_os = "macos",
    target_os = "freebsd",
    all(target_os = "linux", feature = "portable-unix")
))]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub(crate) use imp::{
    create_lendable_region, create_shared_page, exe_identity, first_hole, ignore_sigpipe,
    inspect_region, recv_with_fds, seal_written, send_with_fds,
};
#[cfg(windows)]
pub(crate) use imp::{
    code_in_executable, doorbell, map_read_only, map_shared_page, read_at, signal, spawn_worker,
    Map, OwnedHandle, Stream, WorkerProcess,
};
/// A view of a shared-memory region, with `as_ptr`, `as_mut_ptr` and `len`.
#[cfg(unix)]
pub(crate) use memmap2::MmapRaw as Map;
#[cfg(unix)]
pub(crate) use posix::signal;
/// A descriptor (a handle, on Windows) this process owns, closed when dropped.
#[cfg(unix)]
pub(crate) use std::os::fd::OwnedFd as OwnedHandle;
/// A connected local byte stream, one per worker, that can carry [`OwnedHandle`]s
/// ([`send_with_fds`], [`recv_with_fds`]): a Unix-domain socket here, a pair of pipes on
/// Windows. What the layers above use of it: `pair`, `try_clone`, `Read` and `Write` on `&Self`,
/// `set_read_timeout`, and `From<OwnedHandle>` for a received doorbell.
#[cfg(unix)]
pub(crate) use std::os::unix::net::UnixStream as Stream;

/// Whether `e` says this process (or the system) has no descriptor or handle left to give.
pub(crate) fn out_of_descriptors(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    let codes = [libc::EMFILE, libc::ENFILE];
    // ERROR_TOO_MANY_OPEN_FILES.
    #[cfg(windows)]
    let codes = [4];
    e.raw_os_error().is_some_and(|code| codes.contains(&code))
}

/// What one [`recv_with_fds`] brought: how many bytes, and, if descriptors sent with them did
/// not all arrive (the kernel drops those this process cannot take, most often because it is
/// out of descriptors), why, as far as can be told.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) bytes: usize,
    pub(crate) lost: Option<std::io::Error>,
}

/// A one-way stream for the parent to ring a worker with: the parent's end (which refuses
/// whatever a worker writes there, rather than buffering it), and the worker's end, to send
/// with the handshake (the worker reads it as `Stream::from`).
#[cfg(unix)]
pub(crate) fn doorbell() -> io::Result<(Stream, OwnedHandle)> {
    let (ours, theirs) = Stream::pair()?;
    ours.shutdown(std::net::Shutdown::Read)?;
    Ok((ours, OwnedHandle::from(theirs)))
}

/// The environment variable that tells a re-executed binary to serve as a worker, and on which
/// descriptor.
pub(crate) const WORKER_ENV: &str = "CF_POOL_PROC_WORKER_FD";

/// The most descriptors one message may carry (the kernel's `SCM_MAX_FD`).
pub(crate) const FDS_PER_MESSAGE: usize = 253;

/// What a trampoline is: decode the argument (with its attached buffers, or why they could not
/// be sent), run the task, encode the result (with the buffers it attaches).
pub(crate) type Trampoline = fn(
    &[u8],
    Result<Vec<Buffer>, String>,
    cf_executor_api::codec::Place<'_>,
) -> Result<(Vec<u8>, Vec<Buffer>), TaskError>;

/// An initializer as sent to workers.
pub(crate) type Initializer = fn() -> Result<(), String>;

/// A signal the pool sends to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Asks the worker to end (`SIGTERM`): a task may catch or ignore it.
    Terminate,
    /// Ends the worker (`SIGKILL`): nothing can catch it.
    Kill,
}

/// How a region from [`create_lendable_region`] is protected against writers other than the
/// mapping its sender holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// Already: no new writer can appear, and the sender may write it again and again.
    Now,
    /// Not yet (the kernel lacks a seal for "no *new* writers"): the sender writes it once,
    /// then [`seal_written`] closes it to all writers for good.
    AfterWriting,
}

/// A shared-memory region as the receiver found it: its size and what identifies its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RegionInfo {
    /// Bytes in the file; it can never change (checked by [`inspect_region`]).
    pub(crate) size: usize,
    /// Device and inode: the same file received twice has the same key while it lives.
    pub(crate) key: (u64, u64),
}

// ---------------------------------------------------------------------------------------------
// Task identity (the same on every platform).

/// The fixed point offsets are measured from. Never inlined, so it has one address.
#[inline(never)]
fn anchor() -> u32 {
    0xC0FF_EE00
}

/// A second fixed point: the worker checks that its offset from [`anchor`] matches the
/// parent's, a cheap proof that the code layout is the same.
#[inline(never)]
fn probe() -> u32 {
    0x0BAD_F00D
}

fn anchor_addr() -> usize {
    let f: fn() -> u32 = anchor;
    f as usize
}

fn raw_offset(addr: usize) -> i64 {
    addr.wrapping_sub(anchor_addr()) as i64
}

/// Offset of the code at `addr` from [`anchor`], unchecked: for a code name that
/// [`check_code_offset`] checks before it is used (a transport's task code, an initializer).
pub(crate) fn offset_unchecked(addr: usize) -> i64 {
    raw_offset(addr)
}

/// Checks a code offset the way [`offset_of`] checks an address: `Err` if it names code
/// outside the executable's own image.
pub(crate) fn check_code_offset(offset: i64) -> Result<(), String> {
    offset_of(anchor_addr().wrapping_add(offset as usize)).map(drop)
}

/// Offset of the code at `addr` (a task's trampoline, an initializer) from [`anchor`], for a
/// worker to find the same code. `Err` if that code, or the anchor, is not in the
/// executable's own image (a shared library loaded at run time, say): the handshake proves
/// only that workers run the same executable, so an offset into anything else could name
/// other code in a worker.
pub(crate) fn offset_of(addr: usize) -> Result<i64, String> {
    if !code_in_executable(anchor_addr()) {
        return Err("cf-pool-proc itself is not linked into the executable (it lives in a \
                    shared library), so no code offset it computes can be proven to name the \
                    same code in a worker; link cf-pool-proc into the program"
            .into());
    }
    if !code_in_executable(addr) {
        return Err("this code lives outside the executable's own image (in a shared library \
                    loaded at run time, e.g. a cdylib or dylib), and workers only prove that \
                    they run the same executable; move the task into the program itself, or \
                    call the library from a task defined there"
            .into());
    }
    Ok(raw_offset(addr))
}

/// Offset of `probe` in this process.
pub(crate) fn probe_offset() -> i64 {
    let f: fn() -> u32 = probe;
    raw_offset(f as usize)
}

/// Whether `addr` lies in an executable segment of the main program's own image (not in a
/// shared library). The segments are read once, with `dl_iterate_phdr` (whose first object is
/// the main program), and cached: a check costs a few comparisons.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub(crate) fn code_in_executable(addr: usize) -> bool {
    use std::sync::OnceLock;
    static SEGMENTS: OnceLock<Vec<(usize, usize)>> = OnceLock::new();

    /// `PT_LOAD` and `PF_X` of the ELF specification.
    const PT_LOAD: u32 = 1;
    const PF_X: u32 = 1;

    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Vec` passed to dl_iterate_phdr below, alive and not
        // otherwise borrowed during the call; `info` points to a valid `dl_phdr_info` whose
        // `dlpi_phdr` array has `dlpi_phnum` entries, for the duration of this callback.
        unsafe {
            let segments = &mut *data.cast::<Vec<(usize, usize)>>();
            let info = &*info;
            for i in 0..usize::from(info.dlpi_phnum) {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type == PT_LOAD && ph.p_flags & PF_X != 0 {
                    let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
                    segments.push((start, start.wrapping_add(ph.p_memsz as usize)));
                }
            }
        }
        1 // the first object is the main program: stop there
    }

    let segments = SEGMENTS.get_or_init(|| {
        let mut segments: Vec<(usize, usize)> = Vec::new();
        // SAFETY: the callback only reads what the loader passes it and writes to `segments`,
        // which outlives the call; returning non-zero stops the walk.
        unsafe {
            libc::dl_iterate_phdr(Some(first_object), (&raw mut segments).cast());
        }
        segments
    });
    segments
        .iter()
        .any(|&(start, end)| (start..end).contains(&addr))
}

/// Whether `addr` lies in the main program's own image: `dladdr` names the image holding it,
/// which must be image 0 of the dynamic loader, the main executable.
#[cfg(target_os = "macos")]
pub(crate) fn code_in_executable(addr: usize) -> bool {
    // SAFETY: an all-zero Dl_info (null pointers) is a valid value of this plain C struct.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables and writes into `info`.
    if unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) } == 0 {
        return false;
    }
    // SAFETY: _dyld_get_image_header(0) returns the main executable's header (or null).
    let main = unsafe { _dyld_get_image_header(0) };
    !main.is_null() && info.dli_fbase.cast_const() == main
}

// dyld's own declaration (<mach-o/dyld.h>). The libc crate's binding is deprecated in favour of
// the mach2 crate; one function does not justify a dependency.
#[cfg(target_os = "macos")]
unsafe extern "C" {
    fn _dyld_get_image_header(image_index: u32) -> *const libc::c_void;
}

/// The function at `offset` from the anchor, as a trampoline.
///
/// Only called in a worker after the handshake proved it runs the parent's image.
pub(crate) fn trampoline_at(offset: i64) -> Trampoline {
    let addr = anchor_addr().wrapping_add(offset as usize);
    // SAFETY: `offset` was computed by the parent as `trampoline::<F, A, R> - anchor` (see
    // `task::trampoline_offset`); the handshake verified that this process executes the same
    // image (`exe_identity`) and that `probe - anchor` agrees, so the same offset lands on the
    // same monomorphised function, whose type is exactly `Trampoline`.
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

// ---------------------------------------------------------------------------------------------
// Shared memory (the same on every platform once a region is open and checked).

/// Maps the whole region `fd` (of `len` bytes) read-only.
#[cfg(unix)]
pub(crate) fn map_read_only(fd: &OwnedHandle, len: usize) -> io::Result<Map> {
    memmap2::MmapOptions::new().len(len).map_raw_read_only(fd)
}

/// Maps the whole page `fd` (of `len` bytes, made by [`create_shared_page`] in the parent)
/// read-write, shared with the parent, which reads the file.
#[cfg(unix)]
pub(crate) fn map_shared_page(fd: &OwnedHandle, len: usize) -> io::Result<Map> {
    memmap2::MmapOptions::new().len(len).map_raw(fd)
}

/// Reads exactly `buf.len()` bytes of the file `fd` at `offset` (not through a mapping).
#[cfg(unix)]
pub(crate) fn read_at(fd: &OwnedHandle, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let n = rustix::io::pread(fd, &mut *buf, offset)?;
    if n != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read {n} of {} bytes at {offset}", buf.len()),
        ));
    }
    Ok(())
}

/// Copies `bytes` into `map` at `offset`.
///
/// # Panics
///
/// If the bytes do not fit in the mapping (the caller sized the region for them).
pub(crate) fn copy_in(map: &Map, offset: usize, bytes: &[u8]) {
    let end = offset
        .checked_add(bytes.len())
        .expect("offset + length overflows");
    assert!(end <= map.len(), "copy past the end of a shared region");
    // SAFETY: `offset..end` lies inside the live mapping (checked above), which is writable
    // (the sender's own mapping from `create_lendable_region`) and cannot shrink (regions are
    // sealed against resizing, so no process can truncate it and fault us). `bytes` is private
    // memory, so the ranges do not overlap. No reference into the shared memory is created.
    // No other process writes these bytes: the region is sealed against every writer but this
    // mapping, made before the seal in this process and not inherited by forks. No other
    // process reads them now either: the region has not been lent yet, or the one peer it was
    // lent to handed it back (named its lend in a frame on its own socket, see `crate::shm`); a
    // peer that handed it back early and kept reading would only see its own bytes change.
    // A long copy is shared with helper threads of this process (`copy::copy`), all inside
    // this call.
    unsafe {
        copy::copy(bytes.as_ptr(), map.as_mut_ptr().add(offset), bytes.len());
    }
}

/// Large copies into fresh memory ask for huge pages from this size on (two huge pages' worth:
/// below it, a 2 MiB-aligned stretch inside the allocation is too short to matter).
pub(crate) const HUGE_PAGES_MIN: usize = 4 << 20;

/// Asks the kernel to back the 2 MiB-aligned stretch of `spare` with huge pages (Linux's
/// `MADV_HUGEPAGE`; elsewhere, and below [`HUGE_PAGES_MIN`], nothing). `spare` is memory about
/// to be written whole, the spare capacity of a new `Vec`.
///
/// Why: a fresh 16 MiB takes 4096 page faults as it is first written, and on a virtual machine
/// they cost more than the copy (measured here: 16 ms to fill a fresh 16 MiB against 3 ms for
/// the same copy into memory already faulted in, 4 ms with huge pages). The advice changes how
/// the pages are backed, never what they hold; with transparent huge pages off
/// (`/sys/kernel/mm/transparent_hugepage/enabled` = `never`) it does nothing, and an error is
/// ignored (the copy is right either way).
pub(crate) fn advise_huge_pages(spare: &mut [std::mem::MaybeUninit<u8>]) {
    let worth_it = spare.len() >= HUGE_PAGES_MIN;
    #[cfg(not(target_os = "linux"))]
    let _ = worth_it;
    #[cfg(target_os = "linux")]
    if worth_it {
        const HUGE: usize = 2 << 20;
        let start = spare.as_mut_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let end = (start + spare.len()) / HUGE * HUGE;
        if end > first {
            // SAFETY: `first..end` lies inside `spare`, memory this process owns and nothing
            // else refers to (a new `Vec`'s spare capacity), and is page-aligned (2 MiB-aligned).
            // `MADV_HUGEPAGE` only marks the range as eligible for huge pages: it never changes
            // or discards the bytes, unlike the advices that do (`MADV_DONTNEED`, `MADV_FREE`).
            let _ = unsafe {
                rustix::mm::madvise(
                    first as *mut std::ffi::c_void,
                    end - first,
                    rustix::mm::Advice::LinuxHugepage,
                )
            };
        }
    }
}

/// A new `Vec` holding a copy of `bytes`, in memory advised as [`advise_huge_pages`] says: how
/// a worker turns an attached byte string it reads in place into the `Vec` a `ByteBuf` takes
/// (`cf_executor_api::codec::decode_copying`).
pub(crate) fn copy_to_vec(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    advise_huge_pages(out.spare_capacity_mut());
    // SAFETY: `out`'s spare capacity is at least `bytes.len()` bytes of private memory that
    // nothing else refers to, so the ranges do not overlap and nothing else writes the
    // destination; `set_len` covers exactly the bytes the copy initialised.
    unsafe {
        copy::copy(bytes.as_ptr(), out.as_mut_ptr(), bytes.len());
        out.set_len(bytes.len());
    }
    out
}

/// Copies `len` bytes out of `map` at `offset` into a new `Vec`; `Err` if the range is
/// outside the mapping or the memory cannot be allocated (never a panic or an abort: the
/// length comes from another process).
pub(crate) fn copy_out(
    map: &Map,
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
    advise_huge_pages(out.spare_capacity_mut());
    // SAFETY: the source range is inside the live mapping (checked above) and cannot be
    // truncated under us (the receiver checked with `inspect_region` that its size cannot
    // change before mapping). The destination is `out`'s spare capacity, at least `len` bytes,
    // private, so no overlap. Every bit pattern is a valid `u8`, so whatever the sender's
    // mapping (the only writable one: `inspect_region` checked the write seals) holds, the
    // copied bytes are initialised values, and `set_len` covers only what was copied. No
    // reference into the shared memory is created; callers only ever see this private copy. A
    // misbehaving sender writing during the copy would race with it (formally a data race on
    // shared memory) and could only change the bytes copied, which no invariant of this
    // process relies on. A long copy is shared with helper threads (`copy::copy`), all inside
    // this call, each writing pieces of `out` no other writes.
    unsafe {
        copy::copy(map.as_ptr().add(offset), out.as_mut_ptr(), len);
        out.set_len(len);
    }
    Ok(out)
}

/// The bytes of a parent's region that a worker reads in place, and the region's lease `L`:
/// made only together ([`Leased::new`]); dropping the view drops the lease, whose own `Drop`
/// hands the region back (see `crate::shm`).
#[derive(Debug)]
pub(crate) struct Leased<L> {
    map: std::sync::Arc<Map>,
    start: usize,
    len: usize,
    /// Dropped after every borrow of the view has ended.
    _lease: L,
}

impl<L> Leased<L> {
    /// Views the `len` bytes at `start` of the region `map` maps (read-only, after
    /// `inspect_region` accepted it), taking over its lease. `None` if the bytes are outside
    /// `map`.
    pub(crate) fn new(
        map: std::sync::Arc<Map>,
        start: usize,
        len: usize,
        lease: L,
    ) -> Option<Leased<L>> {
        let end = start.checked_add(len)?;
        (end <= map.len()).then_some(Leased {
            map,
            start,
            len,
            _lease: lease,
        })
    }
}

impl<L> AsRef<[u8]> for Leased<L> {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `start..start + len` is inside the mapping (checked in `new`), which lives as
        // long as `self` (the `Arc`) and cannot shrink (`inspect_region` checked the resize
        // seals before it was mapped), so the pointer is valid for `len` bytes, and every byte
        // pattern is a valid `u8`. The bytes do not change while the returned borrow lives:
        // * no process but the sender can write them at all: `inspect_region` checked that
        //   the region is sealed against every writer but the mappings made before the seal,
        //   and the sender (the parent, which this worker trusts with the code it runs) seals
        //   a region right after mapping it, before its descriptor ever leaves it; so neither
        //   this process (whatever a task reopens through `/proc`) nor any other worker can
        //   write it;
        // * the sender wrote them before sending the descriptor (the socket's `sendmsg` and
        //   `recvmsg` order those writes before this read), and writes the region again only
        //   after this process hands it back, which only `L`'s `Drop` does (it records the
        //   lend, and a later frame on this worker's own socket names it); that `Drop` runs
        //   when `self` is dropped, after every borrow of `self` has ended, and the lock of
        //   the list it records into, then the `sendmsg` that carries it, order the end of our
        //   reads before the sender's later writes. Regions are the parent's per worker, and
        //   their lends are numbered, so no other worker, and no stale frame, can hand this
        //   one back.
        // Outside this argument: a process allowed to write the parent's memory (a debugger,
        // or one of the same user where the kernel permits `ptrace`) can change anything, and
        // a task that `fork`s without `exec` and lets the child both drop a clone of the buffer
        // and send a frame on the inherited socket would hand the region back early.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }
}

/// Bytes this process wrote into one of its own regions, and the mapping it wrote them
/// through, owned: a byte string the payload codec placed in a region (see `crate::shm`),
/// readable here until [`Written::into_map`] gives the mapping back, whether or not the region
/// was lent meanwhile.
#[derive(Debug)]
pub(crate) struct Written {
    map: Map,
    start: usize,
    len: usize,
}

impl Written {
    /// Copies `bytes` into `map` at `start` (as [`copy_in`]) and keeps the mapping, so nothing
    /// in this process writes it again until [`Written::into_map`]. `map` must be the sender's
    /// writable mapping of a region from [`create_lendable_region`] that no peer may be reading
    /// now (as for [`copy_in`]).
    ///
    /// # Panics
    ///
    /// If the bytes do not fit in the mapping (the caller sized the region for them).
    pub(crate) fn new(map: Map, start: usize, bytes: &[u8]) -> Written {
        copy_in(&map, start, bytes);
        Written {
            map,
            start,
            len: bytes.len(),
        }
    }

    /// The mapping back, to lend its region: the view is gone with `self`.
    pub(crate) fn into_map(self) -> Map {
        self.map
    }
}

impl AsRef<[u8]> for Written {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `start..start + len` is inside the mapping (`copy_in` asserted it in `new`),
        // which lives as long as `self` (owned) and cannot shrink (regions are sealed against
        // resizing, or, on the portable path, every descriptor but the sender's is read-only),
        // so the pointer is valid for `len` bytes, all initialised by `new`'s copy, and every
        // byte pattern is a valid `u8`. The bytes do not change while the returned borrow
        // lives: this process writes a region only through its mapping (`copy_in`), and this
        // mapping is owned by `self`, which never writes after `new` and gives the mapping up
        // only by value (`into_map`, which ends every borrow of `self` first), so no write of
        // this process can reach the region before then, whoever it is lent to meanwhile; and
        // no other process can write the region at all (sealed against every writer but the
        // mapping made before the seal in this process, not inherited by forks; on the
        // portable path every other descriptor is read-only), so a peer it is lent to only
        // reads it.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A worker process of this pool: started by [`spawn_worker`], reaped by [`WorkerProcess::wait`].
///
/// A worker's death is learnt from the process itself, not from its socket (which a task's
/// forked child or daemon may still hold open long after the worker died): a small waiter
/// thread blocks in `waitid(WEXITED | WNOWAIT)` on the worker's pid and, once the worker has
/// exited, shuts the parent's end of its socket down in both directions. Readers then see end
/// of stream after the bytes already queued (so results the worker sent before it died are
/// still read), and a writer blocked on a full socket fails at once. The waiter does not reap
/// (`WNOWAIT`): the pid stays the worker's until [`WorkerProcess::wait`], which joins the
/// waiter first, so the waiter never waits on a recycled pid. It costs one thread with a small
/// stack per worker and no system call per task.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct WorkerProcess {
    child: std::process::Child,
    /// The parent's end of the worker's lifeline, where the platform has one (the portable
    /// path): the worker dies when it closes, which is when this process dies.
    _lifeline: Option<OwnedHandle>,
    /// Ends the worker's socket when the worker exits; joined before the worker is reaped.
    waiter: Option<std::thread::JoinHandle<()>>,
}

/// The waiter thread's stack: it only makes two system calls.
#[cfg(unix)]
const WAITER_STACK: usize = 64 * 1024;

#[cfg(unix)]
impl WorkerProcess {
    /// Takes charge of a started worker: `socket` (any descriptor of the parent's end of the
    /// worker's socket) is shut down as soon as the worker exits. If the waiter thread cannot
    /// start, the worker is killed and reaped, and the error returned.
    fn watch(
        (child, lifeline): (std::process::Child, Option<OwnedHandle>),
        socket: &Stream,
    ) -> io::Result<WorkerProcess> {
        let mut worker = WorkerProcess {
            child,
            _lifeline: lifeline,
            waiter: None,
        };
        let pid = worker.pid();
        let started = socket.try_clone().and_then(|socket| {
            std::thread::Builder::new()
                .name(format!("cf-proc-exit-{pid}"))
                .stack_size(WAITER_STACK)
                .spawn(move || {
                    posix::wait_exited(pid);
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                })
        });
        match started {
            Ok(waiter) => {
                worker.waiter = Some(waiter);
                Ok(worker)
            }
            Err(e) => {
                let _ = worker.kill();
                worker.wait();
                Err(e)
            }
        }
    }

    /// The worker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the worker (`SIGKILL`) unless it was already reaped.
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        self.child.kill()
    }

    /// Waits for the worker to end and reaps it: how it ended. Never waits for the worker's
    /// descendants.
    pub(crate) fn wait(&mut self) -> ExitCause {
        use std::os::unix::process::ExitStatusExt;
        // The waiter returns once the worker has exited; it must be done before the pid is
        // released by the reap below.
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.join();
        }
        match self.child.wait() {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => ExitCause::Code(code),
                (None, Some(sig)) => ExitCause::Signal(sig),
                _ => ExitCause::Unknown,
            },
            Err(_) => ExitCause::Unknown,
        }
    }
}

/// Starts a worker: this executable again, serving on `child_end`; `parent_end` is shut down
/// when the worker exits (see [`WorkerProcess`]).
#[cfg(unix)]
pub(crate) fn spawn_worker(
    child_end: &Stream,
    parent_end: &Stream,
) -> io::Result<WorkerProcess> {
    WorkerProcess::watch(imp::spawn_worker(child_end)?, parent_end)
}

// ---------------------------------------------------------------------------------------------
// Worker entry.

static ENTRY_RAN: AtomicBool = AtomicBool::new(false);

/// Whether this process went through worker-mode detection ([`init`](crate::init) or the
/// static constructor): without it a worker would run the user's `main`.
pub(crate) fn entry_ran() -> bool {
    ENTRY_RAN.load(Ordering::Acquire)
}

/// The exit status of a process that was asked to serve as a worker and refused
/// (`EX_SOFTWARE`).
pub(crate) const REFUSED_EXIT: i32 = 70;

/// If this process was started as a worker, calls `serve` with the socket it inherited (which
/// serves tasks and exits); never returns then.
///
/// Worker mode runs code at offsets another process sends, so it is entered only on proof
/// that only the real parent can give, checked before any offset is read: this program does
/// not run with elevated privileges (set-user-ID, set-group-ID, file capabilities), and the
/// kernel-attested peer of the inherited socket is this process's parent, running the same
/// executable. A process started with [`WORKER_ENV`] that fails either check prints why and
/// exits with [`REFUSED_EXIT`] before `main`; it never runs as a worker, nor its `main`.
pub(crate) fn enter_worker_mode_if_requested(serve: fn(Stream) -> !) {
    ENTRY_RAN.store(true, Ordering::Release);
    imp::remember_executable();
    let Some(value) = std::env::var_os(WORKER_ENV) else {
        return;
    };
    // Nested pools started by a task must not mistake themselves for workers.
    std::env::remove_var(WORKER_ENV);
    match worker_socket(&value) {
        Ok(socket) => {
            keep_freed_memory_warm();
            serve(socket)
        }
        Err(why) => {
            eprintln!(
                "cf-pool-proc: process {} was started as a process-pool worker ({WORKER_ENV} \
                 is set) but {why}; refusing worker mode and exiting",
                std::process::id()
            );
            std::process::exit(REFUSED_EXIT);
        }
    }
}

/// Tunes a worker's C allocator (glibc on Linux; elsewhere nothing) to keep freed memory for
/// the next task: allocations up to 32 MiB (the most glibc allows on 64-bit) come from its heap
/// rather than from a mapping of their own, and up to 64 MiB of freed heap is kept rather than
/// trimmed.
///
/// Why: a worker's tasks come one after another with payloads of similar sizes, and glibc's
/// defaults hand a freed 16 MiB back to the kernel (trimmed, or unmapped) as often as not, so
/// the next task's 16 MiB came back as 4096 fresh pages, each a page fault (on this project's
/// virtual machine, filling a fresh 16 MiB took 16 ms against 3 ms for the copy alone). It made
/// a 16 MiB `ByteBuf` echo alternate between two speeds from one round of tasks to the next.
/// The cost is memory: an idle worker may hold up to 64 MiB it no longer uses, until it ends
/// (`shutdown`, or `max_tasks_per_child`) or a later task reuses it. Only glibc's
/// allocator is tuned: a program with its own `#[global_allocator]` keeps that allocator's
/// behaviour.
fn keep_freed_memory_warm() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const HEAP_ALLOCATIONS_UP_TO: libc::c_int = 32 << 20;
        const KEEPS_FREED: libc::c_int = 64 << 20;
        // SAFETY: `mallopt` only sets two of glibc's allocator parameters (documented values
        // for `M_MMAP_THRESHOLD`, at most `HEAP_MAX_SIZE / 2`, and `M_TRIM_THRESHOLD`); it
        // touches no memory of ours, and glibc serialises it with its own allocations. A
        // refusal (return value 0) leaves the defaults, which are correct, only slower.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_ALLOCATIONS_UP_TO);
            libc::mallopt(libc::M_TRIM_THRESHOLD, KEEPS_FREED);
        }
    }
}

/// The worker's socket, once proven to come from the real parent (see
/// [`enter_worker_mode_if_requested`]).
fn worker_socket(value: &std::ffi::OsStr) -> Result<Stream, String> {
    if imp::runs_elevated() {
        return Err(
            "this program runs with elevated privileges (set-user-ID, set-group-ID or \
                    file capabilities), and such a program never serves as a worker"
                .into(),
        );
    }
    let value = value
        .to_str()
        .ok_or_else(|| format!("{value:?} names no descriptor"))?;
    let socket = imp::adopt_inherited(value)?;
    imp::check_peer_is_parent(&socket)?;
    Ok(socket)
}

/// Helpers for the crate's unit tests: descriptors a misbehaving peer might send.
#[cfg(test)]
pub(crate) mod testing {
    pub(crate) use super::imp::testing::*;
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn in_this_crate(x: u32) -> u32 {
        x + 1
    }

    #[test]
    fn code_of_the_executable_is_accepted_and_library_code_refused() {
        let f: fn(u32) -> u32 = in_this_crate;
        assert!(offset_of(f as usize).is_ok());
        assert!(offset_of(anchor_addr()).is_ok_and(|o| o == 0));
        // `malloc` lives in the C library, a shared library loaded at run time.
        let malloc = libc::malloc as *const () as usize;
        let err = offset_of(malloc).unwrap_err();
        assert!(err.contains("outside the executable's own image"), "{err}");
        // Neither data nor a made-up address is code of the executable.
        static DATA: u8 = 0;
        assert!(!code_in_executable(&raw const DATA as usize));
        assert!(!code_in_executable(usize::MAX - 7));
    }
}

#[cfg(test)]
mod huge_page_tests {
    use super::*;

    /// The copy is exact at every size around the threshold, advised or not.
    #[test]
    fn copies_to_a_vec_are_exact_around_the_huge_page_threshold() {
        for len in [0, 1, HUGE_PAGES_MIN - 1, HUGE_PAGES_MIN, HUGE_PAGES_MIN + 4099] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let copy = copy_to_vec(&bytes);
            assert_eq!(copy.len(), len);
            assert!(copy == bytes, "a {len}-byte copy differs");
        }
    }

    /// `(start, end, flags)` of the mapping that holds `addr`, from `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn mapping_of(addr: usize) -> (usize, usize, Vec<String>) {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut current = None;
        for line in smaps.lines() {
            let range = line.split_once(' ').and_then(|(r, _)| r.split_once('-'));
            if let Some((lo, hi)) = range {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    current = Some((lo, hi));
                    continue;
                }
            }
            if let (Some(flags), Some((lo, hi))) = (line.strip_prefix("VmFlags:"), current) {
                if (lo..hi).contains(&addr) {
                    return (lo, hi, flags.split_whitespace().map(str::to_owned).collect());
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[cfg(target_os = "linux")]
    fn thp_present() -> bool {
        let present = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
        if !present {
            eprintln!("skipped: this kernel has no transparent huge pages");
        }
        present
    }

    /// The advice covers exactly the 2 MiB-aligned stretch of the slice it is given: in a fresh
    /// anonymous mapping, that stretch becomes a mapping of its own marked `hg` (huge pages
    /// advised), and the pages around it, inside the mapping but outside the stretch, are not.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_advice_covers_the_aligned_stretch_of_its_slice_and_nothing_else() {
        const HUGE: usize = 2 << 20;
        if !thp_present() {
            return;
        }
        let mut map = memmap2::MmapMut::map_anon(8 * HUGE).unwrap();
        let base = map.as_ptr() as usize;
        let (from, to) = (HUGE / 2 + 123, 7 * HUGE);
        // SAFETY: `MaybeUninit<u8>` has `u8`'s layout, and the slice borrows `map` mutably.
        let spare = unsafe {
            std::slice::from_raw_parts_mut(
                map.as_mut_ptr().add(from).cast::<std::mem::MaybeUninit<u8>>(),
                to - from,
            )
        };
        advise_huge_pages(spare);
        let first = (base + from).next_multiple_of(HUGE);
        let end = (base + to) / HUGE * HUGE;
        assert!(end - first >= 2 * HUGE);
        let (lo, hi, flags) = mapping_of(first);
        assert!(flags.iter().any(|f| f == "hg"), "not advised: {flags:?}");
        assert_eq!((lo, hi), (first, end), "the advised stretch");
        for outside in [first - 4096, end] {
            let (_, _, flags) = mapping_of(outside);
            assert!(!flags.iter().any(|f| f == "hg"), "{outside:#x} was advised too");
        }
        // Below the threshold no advice is given, though the slice holds a whole aligned 2 MiB.
        let mut map = memmap2::MmapMut::map_anon(4 * HUGE).unwrap();
        let base = map.as_ptr() as usize;
        let at = base.next_multiple_of(HUGE) - base;
        // SAFETY: as above; `at + HUGE_PAGES_MIN - 1` is within the 8 MiB mapping.
        let small = unsafe {
            std::slice::from_raw_parts_mut(
                map.as_mut_ptr().add(at).cast::<std::mem::MaybeUninit<u8>>(),
                HUGE_PAGES_MIN - 1,
            )
        };
        advise_huge_pages(small);
        let (_, _, flags) = mapping_of(base + at);
        assert!(!flags.iter().any(|f| f == "hg"), "a short slice was advised");
    }

    /// A large copy's own pages are advised.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_copy_is_advised_huge_pages() {
        if !thp_present() {
            return;
        }
        let len = 3 * HUGE_PAGES_MIN;
        let copy = copy_to_vec(&vec![7u8; len]);
        let first = (copy.as_ptr() as usize).next_multiple_of(2 << 20);
        let (_, _, flags) = mapping_of(first);
        assert!(flags.iter().any(|f| f == "hg"), "not advised: {flags:?}");
        assert!(copy.iter().all(|&b| b == 7));
    }
}
