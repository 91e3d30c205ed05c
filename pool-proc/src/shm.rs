//! Large [`Buffer`]s travel beside a frame, through shared-memory regions passed over the
//! worker's socket.
//!
//! While an argument or result is encoded, every `Buffer` of at least [`POLICY`]`.min_len`
//! bytes is *attached* (see `cf_executor_api::attaching`) instead of being written into the
//! payload. When the frame is sent, each attached buffer is copied into a *region*: a `memfd`
//! of the sending process, mapped read-write there, whose descriptor travels in the ancillary
//! data of the frame's first bytes (so a frame's descriptors have always arrived by the time
//! its last byte has). The receiver maps the region and hands it back by clearing its *lease
//! flag* (byte 0 of the file) once done with it:
//!
//! * the parent copies what a worker sends into its own memory and hands the region back at
//!   once: it never lets user code see memory a worker (running arbitrary tasks) can write;
//! * a worker reads what the parent sends in place (a `Buffer` over the mapping, no copy) and
//!   hands the region back when that `Buffer` is dropped. The parent writes a region only when
//!   its flag is clear, so the bytes cannot change under the reader. A task that keeps its
//!   argument's `Buffer` past its end keeps the region (and a descriptor) lent with it; to keep
//!   the bytes for long, copy them (`Buffer::from(b.to_vec())`).
//!
//! Regions are reused, and that is the point: a new shared page costs the kernel about as much
//! as copying it three times over (allocation, accounting, freeing; measured in
//! `benches/README.md`). So the sender keeps a few idle regions ([`Outbound`]) and reclaims
//! lent ones whose flag is clear, and the receiver keeps its mappings of the sender's regions
//! ([`Inbound`]), keyed by inode, so a reused region costs one `memcpy` into it, one out of it
//! in the parent, none in a worker, and no page faults.
//!
//! Regions are sealed against shrinking and growing at creation: a receiver checks that before
//! mapping, so no process can truncate a region under a reader (which would fault it).
//!
//! Retention is bounded: a sender (each pool, each worker) keeps at most [`KEPT_MAX`] idle and
//! as many lent regions, [`RETAIN_BYTES`] in all, none over [`RETAIN_MAX`] (bigger ones are
//! used once); each receiver (each worker, each of the parent's reader threads) caches at most
//! [`CACHED_MAX`] mappings of its peer's regions, [`RETAIN_BYTES`] in all. A cached mapping
//! keeps its region's memory alive after the sender forgot it, so with `n` workers the worst
//! case is `RETAIN_BYTES × (1 + 3n)`. A region lent to a process that dies is forgotten when
//! it falls off the lent list; the kernel frees it when the last descriptor and mapping go.
//!
//! A buffer that cannot be exported (no memory, no descriptors left, the kernel refusing more
//! descriptors in flight) is sent as an [`Attachment::Failed`] record with the reason; the
//! receiving side fails that one task with a `Codec` error that says so, and nothing else is
//! affected. A receiver that cannot accept descriptors (it is out of them) loses them in
//! transit; that is a broken connection, and the worker is replaced.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use cf_executor_api::{AttachPolicy, Buffer};
use memmap2::MmapRaw;

use crate::protocol::Attachment;
use crate::sys::{self, OwnedFd, UnixStream};

/// Which buffers are attached: 64 KiB and up (below that, the few syscalls cost more than
/// copying through the socket), at most 32 per argument or result (the rest inline).
pub(crate) const POLICY: AttachPolicy = AttachPolicy {
    min_len: 64 * 1024,
    max_count: 32,
};

/// Descriptors in one frame, at most. The kernel allows [`sys::FDS_PER_MESSAGE`].
pub(crate) const FRAME_FDS: usize = 128;

/// Descriptors a receiver holds that no frame has claimed yet. Frames carry at most
/// [`FRAME_FDS`], and a reader holds at most one frame plus a read-ahead buffer's worth; more
/// than this is a peer sending descriptors it never names.
const PENDING_FDS: usize = 4 * FRAME_FDS;

/// A region's first page holds the lease flag (byte 0) and the region's tag (bytes 8..16, see
/// [`Inbound`]); the bytes start here, page-aligned.
pub(crate) const HEADER: usize = 4096;
pub(crate) const LEASE_AT: usize = 0;
const TAG_AT: usize = 8;
/// The smallest region: regions are sized in powers of two from here, so sizes that differ a
/// little share regions.
const REGION_MIN: usize = 64 * 1024;
/// Idle regions a process keeps for reuse, and lent regions it remembers, to reclaim once the
/// receiver is done (each list; both within [`RETAIN_BYTES`]).
const KEPT_MAX: usize = 64;
/// Regions larger than this are used once, not kept: a rare huge payload should not pin its
/// memory for the life of the pool.
const RETAIN_MAX: usize = 64 << 20;
/// Bytes of idle and lent regions a process keeps, and of mappings a receiver caches.
const RETAIN_BYTES: usize = 128 << 20;
/// Mappings of a peer's regions a receiver keeps.
const CACHED_MAX: usize = 8;

/// The lease flag: set while the receiver may still read the region.
const LENT: u8 = 1;
pub(crate) const FREE: u8 = 0;

/// A region of this process: a memfd mapped read-write.
#[derive(Debug)]
struct Region {
    fd: OwnedFd,
    map: MmapRaw,
    /// Bytes available after [`HEADER`].
    capacity: usize,
}

impl Region {
    fn new(len: usize) -> io::Result<Region> {
        let capacity = len
            .max(REGION_MIN)
            .checked_next_power_of_two()
            .unwrap_or(len);
        let fd = sys::create_region(HEADER + capacity)?;
        sys::write_at(&fd, &new_tag().to_le_bytes(), TAG_AT as u64)?;
        let map = sys::map_read_write(&fd, HEADER + capacity)?;
        Ok(Region { fd, map, capacity })
    }

    fn lease(&self) -> io::Result<u8> {
        let mut flag = [0u8];
        sys::read_at(&self.fd, &mut flag, LEASE_AT as u64)?;
        Ok(flag[0])
    }

    fn set_lease(&self, flag: u8) -> io::Result<()> {
        sys::write_at(&self.fd, &[flag], LEASE_AT as u64)
    }
}

/// A tag no other region of this machine is likely to have: the process id, a clock reading and
/// a counter, mixed.
fn new_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = clock
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A sender's regions: idle ones to reuse, lent ones to reclaim. Each pool has one (dropped
/// with it), and so does each worker.
#[derive(Debug, Default)]
pub(crate) struct Regions(Mutex<Outbound>);

impl Regions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outbound> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct Outbound {
    idle: Vec<Region>,
    lent: VecDeque<Region>,
}

impl Outbound {
    /// An idle region of at least `len` bytes, reclaiming lent regions first if none is.
    fn take(&mut self, len: usize) -> Option<Region> {
        if !self.idle.iter().any(|r| r.capacity >= len) {
            self.reclaim();
        }
        let best = self
            .idle
            .iter()
            .enumerate()
            .filter(|(_, r)| r.capacity >= len)
            .min_by_key(|(_, r)| r.capacity)
            .map(|(i, _)| i)?;
        Some(self.idle.swap_remove(best))
    }

    /// Moves lent regions whose receiver is done to the idle list.
    fn reclaim(&mut self) {
        let mut still_lent = VecDeque::with_capacity(self.lent.len());
        for region in self.lent.drain(..) {
            match region.lease() {
                Ok(FREE) => self.idle.push(region),
                Ok(_) => still_lent.push_back(region),
                Err(_) => {} // unusable: forget it
            }
        }
        self.lent = still_lent;
    }

    fn bytes(&self) -> usize {
        self.idle.iter().chain(&self.lent).map(|r| r.capacity).sum()
    }

    /// Remembers a region just sent, then trims what is kept to the limits: the largest idle
    /// regions go first, then the oldest lent ones (forgetting a lent region is always safe:
    /// the receiver holds its own descriptor or mapping).
    fn lend(&mut self, region: Region) {
        if region.capacity > RETAIN_MAX {
            return;
        }
        self.lent.push_back(region);
        if self.lent.len() <= KEPT_MAX && self.bytes() <= RETAIN_BYTES {
            return;
        }
        self.reclaim();
        self.idle.sort_by_key(|r| r.capacity);
        while self.idle.len() > KEPT_MAX || (!self.idle.is_empty() && self.bytes() > RETAIN_BYTES) {
            self.idle.pop();
        }
        while self.lent.len() > KEPT_MAX || (!self.lent.is_empty() && self.bytes() > RETAIN_BYTES) {
            self.lent.pop_front();
        }
    }
}

/// Copies `buf` into one of `regions`, marks it lent, and returns a descriptor for it to send.
pub(crate) fn export(regions: &Regions, buf: &[u8]) -> io::Result<OwnedFd> {
    let taken = regions.lock().take(buf.len());
    let region = match taken {
        Some(region) => region,
        None => Region::new(buf.len())?,
    };
    // Until the descriptor is on its way, the region is still ours: on any failure it goes
    // back to the idle list instead of waiting, flagged, for a reader that never comes.
    let sent = region.set_lease(LENT).and_then(|()| {
        sys::copy_in(&region.map, HEADER, buf);
        region.fd.try_clone()
    });
    let mut kept = regions.lock();
    match sent {
        Ok(fd) => {
            kept.lend(region);
            Ok(fd)
        }
        Err(e) => {
            if region.set_lease(FREE).is_ok() {
                kept.idle.push(region);
            }
            Err(e)
        }
    }
}

/// Hands a region read in place back to its sender: clears its lease flag. If this fails the
/// region stays lent, and the sender forgets it in time.
fn hand_back(fd: &OwnedFd) {
    let _ = sys::write_at(fd, &[FREE], LEASE_AT as u64);
}

/// A cached mapping of a peer's region.
#[derive(Debug)]
struct Cached {
    /// (device, inode).
    key: (u64, u64),
    /// The tag the region was made with.
    tag: [u8; 8],
    map: Arc<MmapRaw>,
}

/// A receiver's mappings of its peer's regions, by (device, inode). Each mapping keeps its
/// region's memory alive, so an inode number cannot be reused while it is cached here.
#[derive(Debug, Default)]
struct Inbound {
    maps: VecDeque<Cached>,
    /// Read buffers in place, holding the region's lease until the buffer is dropped, instead
    /// of copying them out. Only for a peer this process trusts: workers, receiving from the
    /// parent.
    in_place: bool,
}

impl Inbound {
    /// Copies the `len` bytes of the region behind `fd` and hands the region back. The outer
    /// `Err` is a protocol violation (the peer is broken); the inner one fails only the task
    /// (this process cannot allocate the bytes).
    fn import(&mut self, lease: OwnedFd, len: usize) -> Result<Result<Buffer, String>, String> {
        let fd = &lease;
        let sys::RegionInfo { size, key } = sys::inspect_region(fd)?;
        if len == 0 || HEADER.checked_add(len).is_none_or(|end| end > size) {
            return Err(format!(
                "a {len}-byte buffer announced in a {size}-byte region"
            ));
        }
        let mut tag = [0u8; 8];
        sys::read_at(fd, &mut tag, TAG_AT as u64)
            .map_err(|e| format!("cannot read a region's tag ({e})"))?;
        // The key alone could name a reused inode number on kernels that recycle them; the
        // tag, written once when the region was made, tells regions apart.
        let cached = self
            .maps
            .iter()
            .find(|c| c.key == key && c.tag == tag && c.map.len() == size);
        let map = match cached {
            Some(c) => Arc::clone(&c.map),
            None => {
                self.maps.retain(|c| c.key != key);
                let map = sys::map_read_only(fd, size)
                    .map_err(|e| format!("cannot map a region ({e})"))?;
                let map = Arc::new(map);
                self.maps.push_back(Cached {
                    key,
                    tag,
                    map: Arc::clone(&map),
                });
                map
            }
        };
        let outcome = if self.in_place {
            // The lease stays with the buffer: `Leased` hands the region back when dropped.
            let view = sys::Leased::new(map, HEADER, len, lease, hand_back)
                .expect("the range was checked");
            Ok(Buffer::from_owner(view))
        } else {
            let bytes = sys::copy_out(&map, HEADER, len);
            sys::write_at(fd, &[FREE], LEASE_AT as u64)
                .map_err(|e| format!("cannot hand a region back ({e})"))?;
            bytes.map(Buffer::from)
        };
        // Keep what fits the cache's limits (the newest mapping may itself be too big; a
        // buffer read in place keeps its mapping alive on its own).
        while self.maps.len() > CACHED_MAX
            || self.maps.iter().map(|c| c.map.len()).sum::<usize>() > RETAIN_BYTES
        {
            self.maps.pop_front();
        }
        Ok(outcome)
    }

    /// Turns a record's attachment list into buffers, taking descriptors from `fds` in
    /// order. `Err` only for a protocol violation (a descriptor named but not sent, or not a
    /// region); an `Attachment::Failed` from the sender becomes `Ok(Err(reason))`.
    fn import_all(
        &mut self,
        records: &[Attachment<'_>],
        fds: &mut VecDeque<OwnedFd>,
    ) -> Result<Result<Vec<Buffer>, String>, String> {
        let mut buffers = Vec::with_capacity(records.len());
        let mut failure = None;
        for record in records {
            match *record {
                Attachment::Descriptor { len } => {
                    let fd = fds.pop_front().ok_or_else(|| {
                        "a frame names a descriptor that did not arrive".to_string()
                    })?;
                    let len = usize::try_from(len).map_err(|_| format!("length {len}"))?;
                    match self.import(fd, len)? {
                        Ok(buffer) => buffers.push(buffer),
                        Err(why) => {
                            failure.get_or_insert(why);
                        }
                    }
                }
                Attachment::Failed(why) => {
                    failure.get_or_insert_with(|| String::from_utf8_lossy(why).into_owned());
                }
            }
        }
        Ok(match failure {
            Some(why) => Err(why),
            None => Ok(buffers),
        })
    }
}

/// Exports `buffers` for one task or result: appends descriptors to `fds` and returns one
/// record per buffer. Past `budget` descriptors, or when export fails, the record says why.
pub(crate) fn export_all(
    regions: &Regions,
    buffers: &[Buffer],
    fds: &mut Vec<OwnedFd>,
    messages: &mut Vec<String>,
) -> Vec<AttachOut> {
    buffers
        .iter()
        .map(|b| {
            let result = if fds.len() >= FRAME_FDS {
                Err(io::Error::other("too many buffers in one frame"))
            } else {
                export(regions, b)
            };
            match result {
                Ok(fd) => {
                    fds.push(fd);
                    AttachOut::Descriptor(b.len() as u64)
                }
                Err(e) => {
                    messages.push(format!(
                        "a {}-byte Buffer could not be placed in shared memory: {e}",
                        b.len()
                    ));
                    AttachOut::Failed(messages.len() - 1)
                }
            }
        })
        .collect()
}

/// What [`export_all`] made of one buffer: a descriptor, or a failure (an index into the
/// messages it collected).
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttachOut {
    Descriptor(u64),
    Failed(usize),
}

impl AttachOut {
    pub(crate) fn record<'a>(&self, messages: &'a [String]) -> Attachment<'a> {
        match *self {
            AttachOut::Descriptor(len) => Attachment::Descriptor { len },
            AttachOut::Failed(i) => Attachment::Failed(messages[i].as_bytes()),
        }
    }
}

/// Why [`send_frame`] failed.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Nothing was sent: the first `sendmsg` failed. With descriptors, the kernel may refuse
    /// them alone (`ETOOMANYREFS`: too many in flight for this user); the same frame without
    /// them may go through.
    Refused(io::Error),
    /// Part of the frame was sent: the connection is unusable.
    Broken(io::Error),
}

impl From<SendError> for io::Error {
    fn from(e: SendError) -> io::Error {
        match e {
            SendError::Refused(e) | SendError::Broken(e) => e,
        }
    }
}

/// Sends `frame` with `fds` attached to its first bytes.
pub(crate) fn send_frame(
    sock: &UnixStream,
    frame: &[u8],
    fds: &[OwnedFd],
) -> Result<(), SendError> {
    let sent = if fds.is_empty() {
        loop {
            match (&mut &*sock).write(frame) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SendError::Refused(e)),
            }
        }
    } else {
        sys::send_with_fds(sock, frame, fds).map_err(SendError::Refused)?
    };
    (&mut &*sock)
        .write_all(&frame[sent..])
        .map_err(SendError::Broken)
}

/// The receiving half of a worker socket: reads bytes with `recvmsg` and keeps the
/// descriptors that arrive with them, in order, for the frames that name them.
#[derive(Debug)]
pub(crate) struct FdStream {
    sock: UnixStream,
    fds: VecDeque<OwnedFd>,
    inbound: Inbound,
}

impl FdStream {
    /// `in_place`: read attached buffers in place (a worker, from the parent it trusts)
    /// rather than copy them out (the parent, from a worker).
    pub(crate) fn new(sock: UnixStream, in_place: bool) -> Self {
        FdStream {
            sock,
            fds: VecDeque::new(),
            inbound: Inbound {
                in_place,
                ..Inbound::default()
            },
        }
    }

    /// The buffers a record names, in order: copied out of the peer's regions, or read in
    /// place (see [`FdStream::new`]).
    /// See [`Inbound::import_all`].
    pub(crate) fn import_all(
        &mut self,
        records: &[Attachment<'_>],
    ) -> Result<Result<Vec<Buffer>, String>, String> {
        if records.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        self.inbound.import_all(records, &mut self.fds)
    }
}

impl Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = sys::recv_with_fds(&self.sock, buf, &mut self.fds)?;
        if self.fds.len() > PENDING_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} descriptors arrived that no frame named", self.fds.len()),
            ));
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(fd: &OwnedFd) -> (u64, u64) {
        sys::inspect_region(fd).unwrap().key
    }

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect()
    }

    /// Sends one frame body `b"xy"` with `fds` over a socket pair and reads it back with the
    /// descriptors, as a receiver would.
    fn through_socket(fds: &[OwnedFd]) -> FdStream {
        let (a, b) = UnixStream::pair().unwrap();
        send_frame(&a, b"xy", fds).unwrap();
        let mut stream = FdStream::new(b, false);
        let mut got = [0u8; 2];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"xy");
        stream
    }

    #[test]
    fn a_region_is_reused_only_after_the_receiver_hands_it_back() {
        let regions = Regions::default();
        let first = bytes(3, 100_000);
        let fd = export(&regions, &first).unwrap();
        let ino = inode(&fd);
        // Still lent: the next export must not touch it.
        let second = export(&regions, &bytes(5, 100_000)).unwrap();
        assert_ne!(inode(&second), ino);
        // The receiver copies the first out and hands it back...
        let mut stream = through_socket(&[fd]);
        let got = stream
            .import_all(&[Attachment::Descriptor { len: 100_000 }])
            .unwrap()
            .unwrap();
        assert_eq!(*got[0], *first);
        // ...so now it is reused, and a shorter payload reads back exactly.
        let third = bytes(7, 70_000);
        let fd = export(&regions, &third).unwrap();
        assert_eq!(inode(&fd), ino);
        let mut stream = through_socket(&[fd]);
        let got = stream
            .import_all(&[Attachment::Descriptor { len: 70_000 }])
            .unwrap()
            .unwrap();
        assert_eq!(*got[0], *third);
    }

    #[test]
    fn a_buffer_read_in_place_holds_its_region_until_dropped() {
        let regions = Regions::default();
        let first = bytes(3, 100_000);
        let fd = export(&regions, &first).unwrap();
        let ino = inode(&fd);
        let (a, b) = UnixStream::pair().unwrap();
        send_frame(&a, b"xy", &[fd]).unwrap();
        let mut stream = FdStream::new(b, true);
        let mut got = [0u8; 2];
        stream.read_exact(&mut got).unwrap();
        let buffer = stream
            .import_all(&[Attachment::Descriptor { len: 100_000 }])
            .unwrap()
            .unwrap()
            .remove(0);
        assert_eq!(*buffer, *first);
        // Read in place, so the region stays lent while the buffer lives...
        let other = export(&regions, &bytes(5, 100_000)).unwrap();
        assert_ne!(inode(&other), ino);
        assert_eq!(*buffer, *first, "the bytes did not change under the reader");
        // ...and goes back when it is dropped.
        drop(buffer);
        let again = export(&regions, &bytes(7, 100_000)).unwrap();
        assert_eq!(inode(&again), ino);
    }

    #[test]
    fn descriptors_are_taken_in_order_and_failures_reported() {
        let regions = Regions::default();
        let payloads = [bytes(1, 65_536), bytes(2, 200_000), bytes(9, 1 << 20)];
        let fds: Vec<_> = payloads
            .iter()
            .map(|p| export(&regions, p).unwrap())
            .collect();
        let mut stream = through_socket(&fds);
        let records: Vec<_> = payloads
            .iter()
            .map(|p| Attachment::Descriptor {
                len: p.len() as u64,
            })
            .collect();
        let got = stream.import_all(&records[..2]).unwrap().unwrap();
        assert_eq!(
            (*got[0] == *payloads[0], *got[1] == *payloads[1]),
            (true, true)
        );
        // The failure is reported, and the descriptor named beside it is still consumed.
        let mixed = [records[2], Attachment::Failed(b"no memory")];
        assert_eq!(stream.import_all(&mixed).unwrap(), Err("no memory".into()));
        // Naming a descriptor that never came is a protocol error.
        let err = stream.import_all(&records[..1]).unwrap_err();
        assert!(err.contains("did not arrive"), "{err}");
    }

    #[test]
    fn foreign_descriptors_are_refused_before_mapping() {
        let pipe = sys::testing::not_a_region();
        let unsealed = sys::testing::resizable_region(1 << 20);
        let regions = Regions::default();
        let small = export(&regions, &bytes(1, 65_536)).unwrap();
        let mut stream = through_socket(&[pipe, unsealed, small]);
        let one = |len| [Attachment::Descriptor { len }];
        let err = stream.import_all(&one(10)).unwrap_err();
        assert!(err.contains("not a memfd"), "{err}");
        let err = stream.import_all(&one(10)).unwrap_err();
        assert!(err.contains("may change size"), "{err}");
        let err = stream.import_all(&one(u64::MAX)).unwrap_err();
        assert!(err.contains("announced"), "{err}");
    }

    /// A sealed memfd as a misbehaving peer might make it: any size, no tag.
    fn foreign_region(size: usize) -> OwnedFd {
        sys::create_region(size).unwrap()
    }

    #[test]
    fn lying_lengths_are_errors_never_panics_or_aborts() {
        // Smaller than the header, and an empty buffer: the peer is broken.
        let mut stream = through_socket(&[foreign_region(100), foreign_region(1 << 20)]);
        let err = stream
            .import_all(&[Attachment::Descriptor { len: 0 }])
            .unwrap_err();
        assert!(err.contains("announced"), "{err}");
        let err = stream
            .import_all(&[Attachment::Descriptor { len: 0 }])
            .unwrap_err();
        assert!(err.contains("announced"), "{err}");
        // A sparse terabyte costs nothing to make; copying it out must fail the one task, not
        // abort the process.
        let mut stream = through_socket(&[foreign_region(1 << 40)]);
        let outcome = stream
            .import_all(&[Attachment::Descriptor {
                len: (1 << 40) - HEADER as u64,
            }])
            .unwrap();
        let why = outcome.unwrap_err();
        assert!(why.contains("cannot allocate"), "{why}");
    }

    #[test]
    fn retention_stays_within_its_limits() {
        let regions = Regions::default();
        // Nothing handed back: lent regions pile up to the byte limit, then the oldest are
        // forgotten.
        let mut fds = Vec::new();
        for i in 0..12 {
            fds.push(export(&regions, &bytes(i, 16 << 20)).unwrap());
            let out = regions.lock();
            assert!(out.bytes() <= RETAIN_BYTES, "{} bytes kept", out.bytes());
            assert!(out.lent.len() <= KEPT_MAX);
        }
        // A region over RETAIN_MAX is used once and not kept.
        drop(export(&regions, &bytes(1, RETAIN_MAX + 1)).unwrap());
        assert!(regions.lock().bytes() <= RETAIN_BYTES);
        // Everything handed back: what stays idle is within the limits.
        for fd in &fds {
            sys::write_at(fd, &[FREE], LEASE_AT as u64).unwrap();
        }
        for i in 0..10 {
            drop(export(&regions, &bytes(i, 100_000)).unwrap());
        }
        let mut out = regions.lock();
        out.reclaim();
        assert!(out.idle.len() <= KEPT_MAX, "{} idle", out.idle.len());
        assert!(out.bytes() <= RETAIN_BYTES, "{} bytes kept", out.bytes());
    }
}
