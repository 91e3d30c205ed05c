//! Large [`Buffer`]s travel beside a frame, through shared-memory regions passed over the
//! worker's socket.
//!
//! While an argument or result is encoded, every `Buffer` of at least [`POLICY`]`.min_len`
//! bytes is *attached* (see `cf_executor_api::attaching`) instead of being written into the
//! payload. When the frame is sent, each attached buffer is copied into a *region*: a `memfd`
//! of the sending process, mapped read-write there, whose descriptor travels in the ancillary
//! data of the frame's first bytes (so a frame's descriptors have always arrived by the time
//! its last byte has), with a *lend* number. The receiver maps the region read-only and hands
//! it back by naming that number in a frame of its own, on the same socket (see
//! [`crate::protocol`]):
//!
//! * the parent copies what a worker sends into its own memory and hands the region back in
//!   its next `Tasks` frame: it never lets user code see memory a worker can write;
//! * a worker reads what the parent sends in place (a `Buffer` over the mapping, no copy) and
//!   hands the region back, in its next `Results` frame, once that `Buffer` is dropped. A task
//!   that keeps its argument's `Buffer` past its end keeps the region lent (a mapping, no
//!   descriptor); to keep the bytes for long, copy them (`Buffer::from(b.to_vec())`).
//!
//! A large *byte string* (what reaches serde's `serialize_bytes`: `serde_bytes::ByteBuf` and
//! the like) needs no copy at send time: the payload codec writes it straight into a region
//! while encoding ([`place`], `cf_executor_api::codec::encode_placing`), and the `Buffer` it
//! attaches is a view of that region ([`Placed`]), which [`export`] lends as it is. A worker
//! places its results in its regions for the parent; `submit` places an argument in a region
//! of the idle worker it will most likely be sent to, and if it goes to another worker after
//! all, it is copied into one of that worker's regions like any `Buffer`. A placed region is
//! lent at most once, to the peer it was placed for, while the parent may keep viewing it (it
//! keeps a task's buffers until the result comes, to send them again if the task is taken
//! back); it is written again only once that view is dropped *and* the peer handed it back.
//!
//! # Isolation
//!
//! What a receiver maps can change only when its sender writes it, and a sender writes only
//! regions nobody else is reading:
//!
//! * **Sealed at birth.** A sender maps a new region read-write and at once seals it against
//!   every *new* writer (`F_SEAL_FUTURE_WRITE`), before its descriptor ever leaves: from then
//!   on no process can `write` it, map it writable or punch holes in it, whatever descriptor it
//!   holds or reopens through `/proc/self/fd`; only the sender's own mapping (not inherited by
//!   a `fork`) writes it. It is sealed against resizing too, so no one can truncate it under a
//!   reader. Receivers check all of that before mapping (`sys::inspect_region`). Where the
//!   kernel lacks that seal (before Linux 5.1), a region is written once and then sealed
//!   against all writes (`F_SEAL_WRITE`), and never reused: slower, as safe.
//! * **Per worker.** The parent keeps one [`Peer`] per worker: regions lent to a worker are
//!   only ever lent to that worker again, and are forgotten with it. A worker that keeps a
//!   descriptor or mapping of its region sees only its own later arguments there.
//! * **Handed back over the receiver's own socket.** Nothing in a region says whether it is
//!   lent; the receiver names the lend in a frame on its socket, and a sender releases only
//!   lends it made to that peer (each lend has a new number, so a stale or repeated release
//!   matches nothing). No worker can release a region lent to another.
//!
//! # Cost, and what bounds it
//!
//! Regions are reused, and that is the point: a new shared page costs the kernel about as much
//! as copying it three times over (allocation, accounting, freeing; measured in
//! `benches/README.md`). So a sender keeps, per peer, a few idle regions and the ones it lent
//! ([`Outbound`]), and the receiver keeps its mappings of the sender's regions ([`Inbound`]),
//! keyed by inode and tag, so a reused region costs one `memcpy` into it, one out of it in the
//! parent, none in a worker, and no page faults.
//!
//! The parent pays for nothing a worker did not: a buffer is at most [`ATTACHED_MAX`] bytes, in
//! a region of at most [`HEADER`] + [`ATTACHED_MAX`] rounded up to a power of two; and before
//! copying, the parent checks that the worker's region has memory behind every byte it will
//! read (`sys::first_hole`: reading a hole would make the *reader* allocate the page). Pages
//! of a region sealed against writers can be added, never removed, so each mapping is checked
//! once per length it has not seen yet.
//!
//! Retention is bounded: a sender keeps, for each peer, at most [`KEPT_MAX`] idle and as many
//! lent regions, [`RETAIN_BYTES`] in all, none over [`RETAIN_MAX`] (bigger ones are used
//! once); each receiver (each worker, each of the parent's reader threads) caches at most
//! [`CACHED_MAX`] mappings of its peer's regions, [`RETAIN_BYTES`] in all. A cached mapping
//! keeps its region's memory alive after the sender forgot it, so with `n` workers the worst
//! case is `RETAIN_BYTES × 4n`. A region lent to a process that dies is forgotten with its
//! [`Peer`]; the kernel frees it when the last descriptor and mapping go. Descriptors that
//! arrive with a frame but that no record of it names are closed as soon as the frame is
//! handled, and the peer that sent them is broken ([`end_of_frame`]).
//!
//! A buffer that cannot be exported (no memory, no descriptors left, the kernel refusing more
//! descriptors in flight, over [`ATTACHED_MAX`]) is sent as an [`Attachment::Failed`] record
//! with the reason; the receiving side fails that one task with a `Codec` error that says so,
//! and nothing else is affected. A receiver that cannot accept descriptors (it is out of them)
//! loses them in transit: the kernel drops them and says so, and the records of that frame
//! past the descriptors that did arrive fail their tasks the same way, with the reason, while
//! their regions are handed back unread. A frame's descriptors are those that arrived by its
//! end, so a loss never makes one frame take another's.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cf_executor_api::{AttachPolicy, Buffer};


use crate::protocol::{Attachment, Attachments, Released};
use crate::sys::{self, Map, OwnedHandle, Sealed, Stream};

/// Which buffers are attached: 64 KiB and up (below that, the few syscalls cost more than
/// copying through the socket), at most 32 per argument or result (the rest inline).
pub(crate) const POLICY: AttachPolicy = AttachPolicy {
    min_len: 64 * 1024,
    max_count: 32,
};

/// Descriptors in one frame, at most. The kernel allows [`sys::FDS_PER_MESSAGE`].
pub(crate) const FRAME_FDS: usize = 128;

/// Descriptors a receiver holds that no frame has claimed yet: at most those of the frame it
/// is reading and of the next one, which a read may have reached. More is a broken peer.
const PENDING_FDS: usize = 2 * FRAME_FDS;

/// A region's first page holds its tag (bytes 0..8, see [`Inbound`]), written before it is
/// sealed; the bytes start here, page-aligned.
pub(crate) const HEADER: usize = 4096;
const TAG_AT: usize = 0;
/// The smallest region: regions are sized in powers of two from here, so sizes that differ a
/// little share regions.
const REGION_MIN: usize = 64 * 1024;
/// Idle regions a sender keeps for reuse, and lent regions it remembers, per peer (each list;
/// both within [`RETAIN_BYTES`]). Each is a descriptor in the sender.
const KEPT_MAX: usize = 16;
/// Regions larger than this are used once, not kept: a rare huge payload should not pin its
/// memory for the life of the pool.
const RETAIN_MAX: usize = 64 << 20;
/// Bytes of idle and lent regions a sender keeps per peer, and of mappings a receiver caches.
const RETAIN_BYTES: usize = 128 << 20;
/// Mappings of a peer's regions a receiver keeps.
const CACHED_MAX: usize = 8;
/// The largest buffer one attachment carries (4 GiB - 1, the largest frame too): a sender
/// refuses to attach more, and a receiver treats a larger claim as a broken peer.
pub(crate) const ATTACHED_MAX: usize = u32::MAX as usize;
/// The largest region a receiver maps.
const REGION_MAX: usize = HEADER + (1 << 32);

/// A region of this process: a memfd mapped read-write here, and nowhere writable else.
#[derive(Debug)]
struct Region {
    fd: OwnedHandle,
    map: Map,
    /// Bytes available after [`HEADER`].
    capacity: usize,
    /// [`Sealed::Now`]: reusable; else lent once and sealed for good after one write.
    sealed: Sealed,
}

impl Region {
    fn new(len: usize) -> io::Result<Region> {
        let capacity = len
            .max(REGION_MIN)
            .checked_next_power_of_two()
            .unwrap_or(len);
        let mut head = [0u8; TAG_AT + 8];
        head[TAG_AT..].copy_from_slice(&new_tag().to_le_bytes());
        let (fd, map, sealed) = sys::create_lendable_region(HEADER + capacity, &head)?;
        Ok(Region {
            fd,
            map,
            capacity,
            sealed,
        })
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This side's business with one peer: the regions it lends that peer, and the lends of the
/// peer's regions it is done with and has not said so yet. The parent has one per worker
/// (dropped with the worker's threads, and with it every region ever lent to that worker); a
/// worker has one, for the parent.
#[derive(Debug, Default)]
pub(crate) struct Peer {
    out: Mutex<Outbound>,
    /// Lends of the peer's regions to name in this side's next frame.
    owed: Mutex<Vec<u64>>,
}

impl Peer {
    /// The peer is done with these lends (named in a frame it sent): their regions may be
    /// written again.
    pub(crate) fn release(&self, released: &Released<'_>) {
        if !released.is_empty() {
            self.release_all(released.iter());
        }
    }

    /// Takes back lends whose descriptors were never sent (the send was refused).
    pub(crate) fn unlend(&self, lends: Vec<u64>) {
        self.release_all(lends);
    }

    /// See [`Peer::release`]. Lends this side never made to this peer, or already forgot, are
    /// ignored.
    fn release_all(&self, lends: impl IntoIterator<Item = u64>) {
        let mut out = lock(&self.out);
        for lend in lends {
            out.release(lend);
        }
    }

    /// The lends of the peer's regions this side is done with, to name in the frame it is
    /// about to send (and only there: they are forgotten here).
    pub(crate) fn take_owed(&self) -> Vec<u64> {
        std::mem::take(&mut *lock(&self.owed))
    }

    fn owe(&self, lend: u64) {
        lock(&self.owed).push(lend);
    }
}

/// A sender's regions for one peer: idle ones to reuse, lent ones to reuse once released.
#[derive(Debug, Default)]
struct Outbound {
    idle: Vec<Region>,
    lent: VecDeque<(u64, Region)>,
    /// Lends of regions that a [`Placed`] still holds, and whether the peer released them yet:
    /// the region joins `idle` or `lent` when that view is dropped.
    viewed: Vec<(u64, bool)>,
    /// The number of the next lend (never reused, so a stale release matches nothing).
    next_lend: u64,
}

impl Outbound {
    /// The smallest idle region of at least `len` bytes.
    fn take(&mut self, len: usize) -> Option<Region> {
        let best = self
            .idle
            .iter()
            .enumerate()
            .filter(|(_, r)| r.capacity >= len)
            .min_by_key(|(_, r)| r.capacity)
            .map(|(i, _)| i)?;
        Some(self.idle.swap_remove(best))
    }

    fn new_lend(&mut self) -> u64 {
        self.next_lend += 1;
        self.next_lend
    }

    fn bytes(&self) -> usize {
        self.idle
            .iter()
            .chain(self.lent.iter().map(|(_, r)| r))
            .map(|r| r.capacity)
            .sum()
    }

    /// Remembers a region just lent, then trims what is kept to the limits: the largest idle
    /// regions go first, then the oldest lent ones (forgetting a lent region is always safe:
    /// the receiver holds its own descriptor or mapping, and this side never writes it again).
    fn lend(&mut self, lend: u64, region: Region) {
        if region.capacity > RETAIN_MAX {
            return;
        }
        self.lent.push_back((lend, region));
        self.trim();
    }

    /// The peer released `lend`: its region is idle again (or will be, once the [`Placed`]
    /// view of it is dropped).
    fn release(&mut self, lend: u64) {
        if let Some(at) = self.lent.iter().position(|(l, _)| *l == lend) {
            let (_, region) = self.lent.remove(at).expect("just found");
            self.idle.push(region);
            self.trim();
        } else if let Some((_, released)) = self.viewed.iter_mut().find(|(l, _)| *l == lend) {
            *released = true;
        }
    }

    fn trim(&mut self) {
        if self.idle.len() <= KEPT_MAX
            && self.lent.len() <= KEPT_MAX
            && self.bytes() <= RETAIN_BYTES
        {
            return;
        }
        self.idle.sort_by_key(|r| r.capacity);
        while self.idle.len() > KEPT_MAX || (!self.idle.is_empty() && self.bytes() > RETAIN_BYTES) {
            self.idle.pop();
        }
        while self.lent.len() > KEPT_MAX || (!self.lent.is_empty() && self.bytes() > RETAIN_BYTES) {
            self.lent.pop_front();
        }
    }
}

/// One of this side's regions for `peer` with bytes written after [`HEADER`] (by [`fill`] or
/// [`place`]), through the mapping [`Filled::bytes`] now owns: nothing of this process writes
/// the region again before it is a [`Region`] again.
#[derive(Debug)]
struct Filled {
    fd: OwnedHandle,
    bytes: sys::Written,
    capacity: usize,
    sealed: Sealed,
}

impl Filled {
    fn into_region(self) -> Region {
        Region {
            fd: self.fd,
            map: self.bytes.into_map(),
            capacity: self.capacity,
            sealed: self.sealed,
        }
    }
}

/// One of `peer`'s idle regions of at least `len` bytes, or a new one. It is this caller's to
/// write: neither idle nor lent.
fn region_for(peer: &Peer, len: usize) -> io::Result<Region> {
    if len > ATTACHED_MAX {
        return Err(io::Error::other(format!(
            "over the {ATTACHED_MAX}-byte limit of one attached buffer; split it"
        )));
    }
    let taken = lock(&peer.out).take(len);
    match taken {
        Some(region) => Ok(region),
        None => Region::new(len),
    }
}

/// Copies `bytes` into `region` (from [`region_for`]).
fn fill(region: Region, bytes: &[u8]) -> Filled {
    let Region {
        fd,
        map,
        capacity,
        sealed,
    } = region;
    Filled {
        fd,
        bytes: sys::Written::new(map, HEADER, bytes),
        capacity,
        sealed,
    }
}

/// A byte string the payload codec placed straight into one of this side's regions for
/// `peer` (see [`place`]): the owner of the `Buffer`s that hold it. [`export`] lends that region
/// to `peer` once without copying the bytes again, while this view of it lives on (the parent
/// keeps a task's buffers until its result, to send them again if the task is taken back).
/// The region is a [`Region`] again, idle or lent, only when this is dropped.
#[derive(Debug)]
struct Placed {
    /// `Some` until dropped.
    filled: Option<Filled>,
    peer: Arc<Peer>,
    /// The lend the region went out as, if it did.
    lent: Mutex<Option<u64>>,
}

impl AsRef<[u8]> for Placed {
    fn as_ref(&self) -> &[u8] {
        self.filled.as_ref().map_or(&[], |f| f.bytes.as_ref())
    }
}

impl Placed {
    /// Lends the region to its peer, the first time: a descriptor and the lend to name it by.
    /// `None` if it was lent before (a task sent again after its worker gave it back; its
    /// lend may still be out).
    fn lend(&self) -> io::Result<Option<(OwnedHandle, u64)>> {
        let mut lent = lock(&self.lent);
        if lent.is_some() {
            return Ok(None);
        }
        let filled = self.filled.as_ref().expect("Some until dropped");
        let fd = filled.fd.try_clone()?;
        let lend = {
            let mut out = lock(&self.peer.out);
            let lend = out.new_lend();
            out.viewed.push((lend, false));
            lend
        };
        *lent = Some(lend);
        Ok(Some((fd, lend)))
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        let Some(filled) = self.filled.take() else {
            return;
        };
        // Now nothing of this process reads the region: it may be written again once its peer
        // is done with it.
        let region = filled.into_region();
        let lent = *lock(&self.lent);
        let mut out = lock(&self.peer.out);
        match lent {
            None => out.idle.push(region),
            Some(lend) => {
                let at = out.viewed.iter().position(|&(l, _)| l == lend);
                let (_, released) = out.viewed.swap_remove(at.expect("recorded when lent"));
                if released {
                    out.idle.push(region);
                } else {
                    out.lend(lend, region);
                    return;
                }
            }
        }
        out.trim();
    }
}

/// The payload codec's placement for byte strings sent to `peer` (see
/// `cf_executor_api::codec::encode_placing`): copies `bytes` into one of `peer`'s regions,
/// which [`export`] lends to `peer` without another copy. `None` if no region can be had (the
/// codec then copies the bytes into a `Vec`, and [`export`] says why that one cannot be
/// sent), or if regions are sealed for good after one write on this kernel (they must be
/// unmapped before they are lent).
pub(crate) fn place(peer: &Arc<Peer>, bytes: &[u8]) -> Option<Buffer> {
    let region = region_for(peer, bytes.len()).ok()?;
    if region.sealed != Sealed::Now {
        return None;
    }
    Some(Buffer::from_owner(Placed {
        filled: Some(fill(region, bytes)),
        peer: Arc::clone(peer),
        lent: Mutex::new(None),
    }))
}

/// Lends `buf` to `peer`: the region it was placed in for `peer` (see [`place`]), or else a
/// copy in one of the regions lent to `peer` (a new one if none is idle). Returns a descriptor
/// for it to send and the lend to name it by.
pub(crate) fn export(peer: &Peer, buf: &Buffer) -> io::Result<(OwnedHandle, u64)> {
    if let Some(placed) = buf.owner::<Placed>() {
        // Only the peer a region was placed for may be lent it (regions are per peer).
        if std::ptr::eq(&*placed.peer, peer) {
            if let Some(sent) = placed.lend()? {
                return Ok(sent);
            }
        }
    }
    lend(peer, fill(region_for(peer, buf.len())?, buf))
}

/// Lends a region just filled for `peer`.
fn lend(peer: &Peer, filled: Filled) -> io::Result<(OwnedHandle, u64)> {
    let region = filled.into_region();
    if region.sealed == Sealed::AfterWriting {
        let Region { fd, map, .. } = region;
        sys::seal_written(&fd, map)?;
        return Ok((fd, lock(&peer.out).new_lend()));
    }
    let mut out = lock(&peer.out);
    match region.fd.try_clone() {
        Ok(fd) => {
            let lend = out.new_lend();
            out.lend(lend, region);
            Ok((fd, lend))
        }
        Err(e) => {
            // Never sent: still idle.
            out.idle.push(region);
            Err(e)
        }
    }
}

/// The lease of a parent's region a worker reads in place: dropped with the last clone of the
/// `Buffer` over it, it names the lend in the worker's next frame.
#[derive(Debug)]
struct Lease {
    lend: u64,
    peer: Arc<Peer>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.peer.owe(self.lend);
    }
}

/// A cached mapping of a peer's region.
#[derive(Debug)]
struct Cached {
    /// (device, inode).
    key: (u64, u64),
    /// The tag the region was made with.
    tag: [u8; 8],
    map: Arc<Map>,
    /// Bytes after [`HEADER`] known to have memory behind them (checked once: a region sealed
    /// against writers can gain pages, never lose them).
    backed: usize,
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
    /// The `len` bytes of the region behind `fd`, lent as `lend`: copied out (and the region
    /// handed back at once) or viewed in place. The outer `Err` is a protocol violation (the
    /// peer is broken); the inner one fails only the task (this process cannot allocate the
    /// bytes).
    fn import(
        &mut self,
        peer: &Arc<Peer>,
        fd: OwnedHandle,
        len: usize,
        lend: u64,
    ) -> Result<Result<Buffer, String>, String> {
        let sys::RegionInfo { size, key } = sys::inspect_region(&fd)?;
        if len == 0 || len > ATTACHED_MAX || HEADER.checked_add(len).is_none_or(|end| end > size) {
            return Err(format!(
                "a {len}-byte buffer announced in a {size}-byte region"
            ));
        }
        if size > REGION_MAX {
            return Err(format!(
                "a {size}-byte region is over the {REGION_MAX}-byte limit"
            ));
        }
        let mut tag = [0u8; 8];
        sys::read_at(&fd, &mut tag, TAG_AT as u64)
            .map_err(|e| format!("cannot read a region's tag ({e})"))?;
        // The key alone could name a reused inode number on kernels that recycle them; the
        // tag, written once when the region was made, tells regions apart.
        let found = self
            .maps
            .iter()
            .position(|c| c.key == key && c.tag == tag && c.map.len() == size);
        let at = match found {
            Some(at) => at,
            None => {
                self.maps.retain(|c| c.key != key);
                let map = sys::map_read_only(&fd, size)
                    .map_err(|e| format!("cannot map a region ({e})"))?;
                self.maps.push_back(Cached {
                    key,
                    tag,
                    map: Arc::new(map),
                    backed: 0,
                });
                self.maps.len() - 1
            }
        };
        let cached = &mut self.maps[at];
        let outcome = if self.in_place {
            let lease = Lease {
                lend,
                peer: Arc::clone(peer),
            };
            let view = sys::Leased::new(Arc::clone(&cached.map), HEADER, len, lease)
                .expect("the range was checked");
            Ok(Buffer::from_owner(view))
        } else {
            // Reading a hole would make this process allocate the page: the sender must have
            // paid for every byte it asks us to copy.
            if cached.backed < len {
                let hole = sys::first_hole(&fd, HEADER as u64)
                    .map_err(|e| format!("cannot inspect a region's pages ({e})"))?;
                let backed = usize::try_from(hole).unwrap_or(usize::MAX) - HEADER;
                if backed < len {
                    return Err(format!(
                        "a {len}-byte buffer in a region with no memory behind byte {backed}: \
                         its sender never wrote it"
                    ));
                }
                cached.backed = backed;
            }
            let bytes = sys::copy_out(&cached.map, HEADER, len);
            peer.owe(lend);
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
}

/// Exports `buffers` for one task or result: appends descriptors to `fds` and returns one
/// record per buffer. Past [`FRAME_FDS`] descriptors, or when export fails, the record says
/// why.
pub(crate) fn export_all(
    peer: &Peer,
    buffers: &[Buffer],
    fds: &mut Vec<OwnedHandle>,
    messages: &mut Vec<String>,
) -> Vec<AttachOut> {
    buffers
        .iter()
        .map(|b| {
            let len = b.len();
            let result = if fds.len() >= FRAME_FDS {
                Err(io::Error::other("too many buffers in one frame"))
            } else {
                export(peer, b)
            };
            match result {
                Ok((fd, lend)) => {
                    fds.push(fd);
                    AttachOut::Descriptor {
                        len: len as u64,
                        lend,
                    }
                }
                Err(e) => {
                    let hint = if sys::out_of_descriptors(&e) {
                        "; the system refused it, not the value: close descriptors or raise \
                         `ulimit -n`"
                    } else if e.raw_os_error().is_some() {
                        "; the system refused it, not the value"
                    } else {
                        ""
                    };
                    messages.push(format!(
                        "a {len}-byte Buffer could not be placed in shared memory: {e}{hint}"
                    ));
                    AttachOut::Failed(messages.len() - 1)
                }
            }
        })
        .collect()
}

/// What [`export_all`] made of one buffer: a lent region, or a failure (an index into the
/// messages it collected).
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttachOut {
    Descriptor { len: u64, lend: u64 },
    Failed(usize),
}

impl AttachOut {
    /// The lend, for a region.
    pub(crate) fn lend(&self) -> Option<u64> {
        match *self {
            AttachOut::Descriptor { lend, .. } => Some(lend),
            AttachOut::Failed(_) => None,
        }
    }

    pub(crate) fn record<'a>(&self, messages: &'a [String]) -> Attachment<'a> {
        match *self {
            AttachOut::Descriptor { len, lend } => Attachment::Descriptor { len, lend },
            AttachOut::Failed(i) => Attachment::Failed(messages[i].as_bytes()),
        }
    }
}

/// A worker's socket as the parent's writers see it: whoever holds the lock writes whole
/// frames; and the parent's business with that worker (its [`Peer`]).
#[derive(Debug)]
pub(crate) struct Link {
    wire: parking_lot::Mutex<Wire>,
    peer: Arc<Peer>,
}

/// The write half of a worker's socket, and its doorbell.
///
/// A worker's task thread reads the socket itself while it has nothing to run, so a task sent
/// to an idle worker costs no thread hop there. While a task runs, the worker's receiver thread
/// reads instead, but only when rung: a ring is the number of a frame, written to the doorbell
/// (a second socket), and the receiver reads the socket until it has read that frame. Only a
/// busy worker is rung:
///
/// * for a frame it must see before its task ends (`Reclaim`, `Shutdown`), after the frame;
/// * for tasks sent behind a running one, once more than [`RING_BYTES`] of them wait unread,
///   before the frame that would pass that mark, so this side's writes never fill the socket
///   and block (and a `Reclaim` can always be sent). Fewer bytes than that may wait until the
///   worker is done, as they would in any queue.
///
/// A ring for a frame comes after its first byte is written or about to be, and this side
/// writes whole frames, so a rung receiver never waits for bytes that are not coming.
#[derive(Debug)]
pub(crate) struct Wire {
    sock: Stream,
    doorbell: Stream,
    /// Frames sent since the handshake: the number a ring carries.
    frames: u64,
    /// Bytes sent to the busy worker since the last ring, perhaps unread.
    unrung: usize,
}

/// The most bytes of frames left unread in a busy worker's socket: well under the smallest
/// default socket buffer (8 KiB on macOS and FreeBSD).
const RING_BYTES: usize = 4096;

impl Link {
    pub(crate) fn new(sock: Stream, doorbell: Stream, peer: Arc<Peer>) -> Self {
        Link {
            wire: parking_lot::Mutex::new(Wire {
                sock,
                doorbell,
                frames: 0,
                unrung: 0,
            }),
            peer,
        }
    }
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Wire> {
        self.wire.lock()
    }
    pub(crate) fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }
}

impl Wire {
    /// Sends `frame` with `fds` (see [`send_frame`]) to a worker that is `busy` (it has tasks
    /// in flight; otherwise it has read every frame sent before) and rings as [`Wire`] says:
    /// `urgent` frames are always rung.
    pub(crate) fn send(
        &mut self,
        frame: &[u8],
        fds: &[OwnedHandle],
        busy: bool,
        urgent: bool,
    ) -> Result<(), SendError> {
        self.send_parts(&[frame], fds, busy, urgent)
    }

    /// [`send`](Self::send) for a frame given as its parts, written one after another.
    pub(crate) fn send_parts(
        &mut self,
        parts: &[&[u8]],
        fds: &[OwnedHandle],
        busy: bool,
        urgent: bool,
    ) -> Result<(), SendError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !busy {
            self.unrung = 0;
        }
        let early = busy && !urgent && self.unrung + len > RING_BYTES;
        if early {
            self.ring(self.frames + 1)?;
        }
        send_parts(&self.sock, parts, fds)?;
        self.frames += 1;
        if urgent {
            self.ring(self.frames)?;
        } else if busy && !early {
            self.unrung += len;
        }
        Ok(())
    }

    /// Asks the worker's receiver to read up to frame `n`.
    fn ring(&mut self, n: u64) -> Result<(), SendError> {
        self.unrung = 0;
        (&mut &self.doorbell)
            .write_all(&n.to_le_bytes())
            .map_err(SendError::Broken)
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
    sock: &Stream,
    frame: &[u8],
    fds: &[OwnedHandle],
) -> Result<(), SendError> {
    send_parts(sock, &[frame], fds)
}

/// Sends a frame given as its parts, written one after another, with `fds` attached to its
/// first bytes. The caller holds the socket's writer lock, so no other frame comes between.
pub(crate) fn send_parts(
    sock: &Stream,
    parts: &[&[u8]],
    fds: &[OwnedHandle],
) -> Result<(), SendError> {
    let Some((&first, rest)) = parts.split_first() else {
        return Ok(());
    };
    let sent = if fds.is_empty() {
        loop {
            match (&mut &*sock).write(first) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SendError::Refused(e)),
            }
        }
    } else {
        sys::send_with_fds(sock, first, fds).map_err(SendError::Refused)?
    };
    (&mut &*sock)
        .write_all(&first[sent..])
        .map_err(SendError::Broken)?;
    for part in rest {
        (&mut &*sock).write_all(part).map_err(SendError::Broken)?;
    }
    Ok(())
}

/// The receiving half of a worker socket: reads bytes with `recvmsg` and keeps the
/// descriptors that arrive with them, in order, for the frames that name them.
#[derive(Debug)]
pub(crate) struct FdStream {
    sock: Stream,
    fds: VecDeque<OwnedHandle>,
    /// For each of `fds`: how many bytes of the stream had arrived once it had (the end of the
    /// read that brought it). A frame's descriptors come with its first bytes, so once a frame
    /// ending at or after that point is handled, the descriptor was its to claim.
    arrived: VecDeque<u64>,
    /// Bytes read from the socket so far.
    received: u64,
    /// For each read that lost descriptors (the kernel dropped those this process could not
    /// take, see `sys::Received`): where it ended, as in `arrived`, and why. Its frame's
    /// records past the descriptors that did arrive fail their task, not the connection.
    lost: VecDeque<(u64, String)>,
    /// Where the frame being handled ends in the stream (see [`begin_frame`]).
    frame_end: u64,
    inbound: Inbound,
    peer: Arc<Peer>,
}

impl FdStream {
    /// `in_place`: read attached buffers in place (a worker, from the parent it trusts)
    /// rather than copy them out (the parent, from a worker). `peer`: this side's business
    /// with the other end, shared with whoever writes to it.
    pub(crate) fn new(sock: Stream, in_place: bool, peer: Arc<Peer>) -> Self {
        FdStream {
            sock,
            fds: VecDeque::new(),
            arrived: VecDeque::new(),
            received: 0,
            lost: VecDeque::new(),
            frame_end: 0,
            inbound: Inbound {
                in_place,
                ..Inbound::default()
            },
            peer,
        }
    }

    pub(crate) fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }

    /// The buffers a record names, in order: copied out of the peer's regions, or read in
    /// place (see [`FdStream::new`]). `Err` only for a protocol violation (a descriptor named
    /// but not sent, or not a region the peer may lend); an `Attachment::Failed` from the
    /// sender becomes `Ok(Err(reason))`.
    pub(crate) fn import_all(
        &mut self,
        records: &Attachments<'_>,
    ) -> Result<Result<Vec<Buffer>, String>, String> {
        if records.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        if records.len() > POLICY.max_count {
            return Err(format!(
                "{} buffers attached to one record; a sender attaches at most {}",
                records.len(),
                POLICY.max_count
            ));
        }
        let mut buffers = Vec::with_capacity(records.len());
        let mut failure = None;
        for record in records.iter() {
            match record {
                Attachment::Descriptor { len, lend } => {
                    let fd = match self.next_fd() {
                        Next::Fd(fd) => fd,
                        Next::Lost(why) => {
                            // Its region stays the peer's: hand it back unread.
                            self.peer.owe(lend);
                            failure.get_or_insert(why);
                            continue;
                        }
                        Next::Missing => {
                            return Err("a frame names a descriptor that did not arrive".into())
                        }
                    };
                    let len = usize::try_from(len).map_err(|_| format!("length {len}"))?;
                    match self.inbound.import(&self.peer, fd, len, lend)? {
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

/// What the frame being handled has for its next descriptor record.
enum Next {
    Fd(OwnedHandle),
    /// The kernel dropped it on the way (this process could not take it): why.
    Lost(String),
    /// It never was sent: a protocol violation.
    Missing,
}

impl FdStream {
    /// The next descriptor that arrived, for a frame that carries one outside any attachment
    /// record (the handshake carries the worker's black box, see [`crate::blackbox`]).
    pub(crate) fn take_fd(&mut self) -> Option<OwnedHandle> {
        self.arrived.pop_front();
        self.fds.pop_front()
    }

    /// The next descriptor of the frame being handled. Without a loss, the next that arrived
    /// (a frame whose descriptors were not all sent is the peer's error, which the frame's end
    /// catches). After a loss, the descriptors a frame has are those that arrived by its end;
    /// past them, the frame lost the rest if a lossy read came by its end.
    fn next_fd(&mut self) -> Next {
        let own = |at: &u64| *at <= self.frame_end;
        if self.lost.is_empty() || self.arrived.front().is_some_and(own) {
            self.arrived.pop_front();
            return self.fds.pop_front().map_or(Next::Missing, Next::Fd);
        }
        match self.lost.front() {
            Some((at, why)) if own(at) => Next::Lost(format!(
                "a buffer was lost in transit: the system refused this process the descriptor \
                 it came with ({why}); close descriptors or raise `ulimit -n`"
            )),
            _ => Next::Missing,
        }
    }
}

/// Called once a frame has been read from `input`, before it is handled: notes where it ends,
/// which tells its descriptors from those of the frames after it.
pub(crate) fn begin_frame(input: &mut BufReader<FdStream>) {
    let buffered = input.buffer().len() as u64;
    let stream = input.get_mut();
    stream.frame_end = stream.received - buffered;
}

/// Called once a frame read from `input` is handled: closes the descriptors that came with it
/// (or an earlier frame) that no record claimed, and says so: no working peer sends them, and
/// none may pin descriptors here.
pub(crate) fn end_of_frame(input: &mut BufReader<FdStream>) -> Result<(), String> {
    let buffered = input.buffer().len() as u64;
    let stream = input.get_mut();
    let handled = stream.received - buffered;
    let mut stray = 0;
    while stream.arrived.front().is_some_and(|&at| at <= handled) {
        stream.arrived.pop_front();
        drop(stream.fds.pop_front());
        stray += 1;
    }
    let lossy = stream.lost.iter().take_while(|(at, _)| *at <= handled).count();
    stream.lost.drain(..lossy);
    if stray > 0 {
        return Err(format!(
            "{stray} descriptors came with a frame that named none of them"
        ));
    }
    Ok(())
}

impl Read for FdStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let before = self.fds.len();
        let sys::Received { bytes: got, lost } = sys::recv_with_fds(&self.sock, buf, &mut self.fds)?;
        self.received += got as u64;
        if let Some(why) = lost {
            guarded!(warn!(
                "cf-pool-proc: descriptors sent by a peer were lost in transit ({why}); the \
                 buffers they carried fail their tasks"
            ));
            self.lost.push_back((self.received, why.to_string()));
        }
        let came = self.fds.len() - before;
        self.arrived
            .extend(std::iter::repeat_n(self.received, came));
        if self.fds.len() > PENDING_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} descriptors arrived that no frame named", self.fds.len()),
            ));
        }
        Ok(got)
    }
}

// Unix only: these use a socket's non-blocking mode and the Linux and portable-Unix region
// checks (seals, `/proc`); Windows regions are exercised by tests/buffers.rs under Wine.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Exports a copy of `bytes`, as a sender does with a `Buffer` it was given.
    fn export(peer: &Peer, bytes: &[u8]) -> io::Result<(OwnedHandle, u64)> {
        super::export(peer, &Buffer::from(bytes))
    }

    /// The rings waiting on `doorbell`, without blocking.
    fn rings(doorbell: &Stream) -> Vec<u64> {
        doorbell.set_nonblocking(true).unwrap();
        let mut all = Vec::new();
        let mut ring = [0; 8];
        while (&mut &*doorbell).read_exact(&mut ring).is_ok() {
            all.push(u64::from_le_bytes(ring));
        }
        all
    }

    #[test]
    fn a_busy_worker_is_rung_before_its_socket_could_fill_and_for_urgent_frames() {
        let (sock, _worker) = Stream::pair().unwrap();
        let (bell, worker_bell) = Stream::pair().unwrap();
        let link = Link::new(sock, bell, Arc::new(Peer::default()));
        let frame = vec![0; RING_BYTES / 2 - 1];
        let mut wire = link.lock();
        // An idle worker reads by itself: no ring, however much is sent.
        for _ in 0..4 {
            wire.send(&frame, &[], false, false).unwrap();
        }
        assert_eq!(rings(&worker_bell), Vec::<u64>::new());
        // Busy: two frames fit under the mark; the third would pass it and is rung for first.
        wire.send(&frame, &[], true, false).unwrap();
        wire.send(&frame, &[], true, false).unwrap();
        assert_eq!(rings(&worker_bell), Vec::<u64>::new());
        wire.send(&frame, &[], true, false).unwrap();
        assert_eq!(rings(&worker_bell), [7]);
        // The count starts again after a ring.
        wire.send(&frame, &[], true, false).unwrap();
        assert_eq!(rings(&worker_bell), Vec::<u64>::new());
        // An urgent frame is rung for after it is sent, busy or not.
        wire.send(b"reclaim", &[], true, true).unwrap();
        wire.send(b"shutdown", &[], false, true).unwrap();
        assert_eq!(rings(&worker_bell), [9, 10]);
        // A frame larger than the mark, to a busy worker, is rung for before it is written.
        wire.send(&vec![0; RING_BYTES + 1], &[], true, false).unwrap();
        assert_eq!(rings(&worker_bell), [11]);
    }

    fn inode(fd: &OwnedHandle) -> (u64, u64) {
        sys::inspect_region(fd).unwrap().key
    }

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect()
    }

    fn one(len: u64, lend: u64) -> Attachments<'static> {
        Attachments::List(vec![Attachment::Descriptor { len, lend }])
    }

    /// Sends one frame body `b"xy"` with `fds` over a socket pair and reads it back with the
    /// descriptors, as a receiver would (`in_place`: as a worker).
    fn through_socket(fds: &[OwnedHandle], in_place: bool) -> FdStream {
        let (a, b) = Stream::pair().unwrap();
        send_frame(&a, b"xy", fds).unwrap();
        let mut stream = FdStream::new(b, in_place, Arc::default());
        let mut got = [0u8; 2];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"xy");
        stream
    }

    #[test]
    fn a_region_is_reused_only_after_the_receiver_hands_it_back() {
        let sender = Peer::default();
        let first = bytes(3, 100_000);
        let (fd, lend) = export(&sender, &first).unwrap();
        let ino = inode(&fd);
        // Still lent: the next export must not touch it.
        let (second, _) = export(&sender, &bytes(5, 100_000)).unwrap();
        assert_ne!(inode(&second), ino);
        // The receiver copies the first out and owes it back...
        let mut stream = through_socket(&[fd], false);
        let got = stream.import_all(&one(100_000, lend)).unwrap().unwrap();
        assert_eq!(*got[0], *first);
        let owed = stream.peer().take_owed();
        assert_eq!(owed, [lend]);
        assert!(stream.peer().take_owed().is_empty(), "owed once");
        // ...releases naming lends never made, or made to someone else, change nothing...
        sender.release_all([lend + 100, 0]);
        let (fd, _) = export(&sender, &bytes(1, 100_000)).unwrap();
        assert_ne!(inode(&fd), ino);
        // ...and once the sender hears of it, it is reused; a shorter payload reads back
        // exactly. A repeated release of the old lend matches nothing.
        sender.release_all(owed);
        let third = bytes(7, 70_000);
        let (fd, lend3) = export(&sender, &third).unwrap();
        assert_eq!(inode(&fd), ino);
        assert_ne!(lend3, lend, "every lend has its own number");
        sender.release_all([lend]);
        let (other, _) = export(&sender, &bytes(8, 70_000)).unwrap();
        assert_ne!(inode(&other), ino, "a stale release freed a lent region");
        let mut stream = through_socket(&[fd], false);
        let got = stream.import_all(&one(70_000, lend3)).unwrap().unwrap();
        assert_eq!(*got[0], *third);
    }

    #[test]
    fn a_buffer_read_in_place_holds_its_region_until_dropped() {
        let sender = Peer::default();
        let first = bytes(3, 100_000);
        let (fd, lend) = export(&sender, &first).unwrap();
        let ino = inode(&fd);
        let mut stream = through_socket(&[fd], true);
        let buffer = stream
            .import_all(&one(100_000, lend))
            .unwrap()
            .unwrap()
            .remove(0);
        assert_eq!(*buffer, *first);
        // Read in place, so nothing is owed while the buffer (or a clone) lives...
        let clone = buffer.clone();
        drop(buffer);
        assert!(stream.peer().take_owed().is_empty());
        assert_eq!(*clone, *first, "the bytes did not change under the reader");
        // ...and the lend is owed once the last clone is dropped.
        drop(clone);
        let owed = stream.peer().take_owed();
        assert_eq!(owed, [lend]);
        sender.release_all(owed);
        let (again, _) = export(&sender, &bytes(7, 100_000)).unwrap();
        assert_eq!(inode(&again), ino);
    }

    #[test]
    #[cfg_attr(feature = "portable-unix", ignore = "Linux memfd seals; the portable path's read-only descriptors are tested in sys::unix")]
    fn a_receiver_cannot_write_a_region_or_reopen_it_for_writing() {
        let sender = Peer::default();
        let payload = bytes(3, 100_000);
        let (fd, _) = export(&sender, &payload).unwrap();
        let reopened = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        let attempts = [
            std::fs::File::from(fd.try_clone().unwrap()),
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&reopened)
                .unwrap(),
        ];
        for file in &attempts {
            use std::os::unix::fs::FileExt;
            assert!(
                file.write_at(b"x", HEADER as u64).is_err(),
                "write through {file:?}"
            );
            assert!(
                file.write_at(b"x", 0).is_err(),
                "write to the header through {file:?}"
            );
            assert!(file.set_len(1).is_err(), "truncate through {file:?}");
            let writable = memmap2::MmapOptions::new().len(HEADER).map_raw(file);
            assert!(writable.is_err(), "a writable mapping through {file:?}");
        }
        // The sender's own mapping still writes it (that is how it is reused).
        let stream_bytes = {
            let mut stream = through_socket(&[fd], false);
            stream.import_all(&one(100_000, 1)).unwrap().unwrap()
        };
        assert_eq!(*stream_bytes[0], *payload);
    }

    #[test]
    #[cfg_attr(feature = "portable-unix", ignore = "Linux memfd seals")]
    fn without_future_write_seals_a_region_is_written_once_and_never_reused() {
        sys::testing::pretend_no_future_write(true);
        let sender = Peer::default();
        let payload = bytes(5, 100_000);
        let (fd, lend) = export(&sender, &payload).unwrap();
        let ino = inode(&fd);
        sys::testing::pretend_no_future_write(false);
        {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::from(fd.try_clone().unwrap());
            assert!(
                file.write_at(b"x", HEADER as u64).is_err(),
                "sealed for good"
            );
        }
        let mut stream = through_socket(&[fd], true);
        let got = stream.import_all(&one(100_000, lend)).unwrap().unwrap();
        assert_eq!(*got[0], *payload);
        drop(got);
        sender.release_all(stream.peer().take_owed());
        assert!(lock(&sender.out).idle.is_empty() && lock(&sender.out).lent.is_empty());
        let (again, _) = export(&sender, &payload).unwrap();
        assert_ne!(inode(&again), ino, "a region sealed for good was reused");
    }

    /// The region a placed buffer is in, and its lend, as [`export`] sends it.
    fn export_placed(peer: &Peer, placed: &Buffer) -> (OwnedHandle, u64) {
        super::export(peer, placed).unwrap()
    }

    #[test]
    fn a_placed_buffer_is_lent_without_a_copy_and_reused_only_when_released_and_dropped() {
        let sender = Arc::new(Peer::default());
        let payload = bytes(3, 100_000);
        for release_first in [true, false] {
            let placed = place(&sender, &payload).expect("a region");
            assert_eq!(*placed, *payload);
            let (fd, lend) = export_placed(&sender, &placed);
            let ino = inode(&fd);
            let mut stream = through_socket(&[fd], false);
            let got = stream.import_all(&one(100_000, lend)).unwrap().unwrap();
            assert_eq!(*got[0], *payload, "the receiver reads what was placed");
            let owed = stream.peer().take_owed();
            // Released while this side still views it, or viewed no more but not released:
            // either way the region is not written again.
            if release_first {
                sender.release_all(owed.iter().copied());
                let (other, _) = export(&sender, &bytes(5, 100_000)).unwrap();
                assert_ne!(inode(&other), ino, "reused while still viewed");
                assert_eq!(*placed, *payload, "the placed bytes changed under their view");
                drop(placed);
            } else {
                drop(placed);
                let (other, _) = export(&sender, &bytes(5, 100_000)).unwrap();
                assert_ne!(inode(&other), ino, "reused before it was released");
                sender.release_all(owed);
            }
            // Both done: reused.
            let (again, _) = export(&sender, &bytes(7, 100_000)).unwrap();
            assert_eq!(inode(&again), ino, "release first: {release_first}");
        }
    }

    #[test]
    fn a_placed_buffer_is_lent_once_and_only_to_its_own_peer() {
        let mine = Arc::new(Peer::default());
        let other = Peer::default();
        let payload = bytes(9, 200_000);
        let placed = place(&mine, &payload).unwrap();
        // Another peer gets a copy in a region of its own...
        let (theirs, lend) = export_placed(&other, &placed);
        let mut stream = through_socket(&[theirs.try_clone().unwrap()], false);
        assert_eq!(
            *stream.import_all(&one(200_000, lend)).unwrap().unwrap()[0],
            *payload
        );
        // ...and its own peer gets the region, once; sent again, it is a copy.
        let (first, _) = export_placed(&mine, &placed);
        let (second, _) = export_placed(&mine, &placed);
        assert_ne!(inode(&first), inode(&theirs));
        assert_ne!(inode(&second), inode(&first));
        // A placed buffer never sent is idle again for its own peer when dropped, not for
        // another.
        let unsent = place(&mine, &payload).unwrap();
        let idle_before = lock(&mine.out).idle.len();
        drop(unsent);
        let unsent_ino = {
            let out = lock(&mine.out);
            assert_eq!(out.idle.len(), idle_before + 1);
            inode(&out.idle.last().unwrap().fd)
        };
        assert!(lock(&other.out).idle.is_empty());
        let (reused, _) = export(&mine, &payload).unwrap();
        assert_eq!(inode(&reused), unsent_ino);
    }

    #[test]
    fn descriptors_are_taken_in_order_and_failures_reported() {
        let sender = Peer::default();
        let payloads = [bytes(1, 65_536), bytes(2, 200_000), bytes(9, 1 << 20)];
        let (fds, lends): (Vec<_>, Vec<_>) =
            payloads.iter().map(|p| export(&sender, p).unwrap()).unzip();
        let mut stream = through_socket(&fds, false);
        let records: Vec<_> = payloads
            .iter()
            .zip(&lends)
            .map(|(p, &lend)| Attachment::Descriptor {
                len: p.len() as u64,
                lend,
            })
            .collect();
        let got = stream
            .import_all(&Attachments::List(records[..2].to_vec()))
            .unwrap()
            .unwrap();
        assert_eq!(
            (*got[0] == *payloads[0], *got[1] == *payloads[1]),
            (true, true)
        );
        // The failure is reported, and the descriptor named beside it is still consumed.
        let mixed = Attachments::List(vec![records[2], Attachment::Failed(b"no memory")]);
        assert_eq!(stream.import_all(&mixed).unwrap(), Err("no memory".into()));
        // Naming a descriptor that never came is a protocol error.
        let err = stream
            .import_all(&Attachments::List(records[..1].to_vec()))
            .unwrap_err();
        assert!(err.contains("did not arrive"), "{err}");
        // So is attaching more buffers to one record than any sender does.
        let many = vec![Attachment::Failed(b""); POLICY.max_count + 1];
        let err = stream.import_all(&Attachments::List(many)).unwrap_err();
        assert!(err.contains("at most 32"), "{err}");
    }

    #[test]
    #[cfg_attr(feature = "portable-unix", ignore = "Linux memfd seals; the portable path's checks are tested in sys::unix")]
    fn foreign_descriptors_are_refused_before_mapping() {
        let sender = Peer::default();
        let (small, _) = export(&sender, &bytes(1, 65_536)).unwrap();
        let mut stream = through_socket(
            &[
                sys::testing::not_a_region(),
                sys::testing::resizable_region(1 << 20),
                sys::testing::writable_region(1 << 20),
                small,
            ],
            false,
        );
        let err = stream.import_all(&one(10, 1)).unwrap_err();
        assert!(err.contains("not a memfd"), "{err}");
        let err = stream.import_all(&one(10, 1)).unwrap_err();
        assert!(err.contains("may change size"), "{err}");
        let err = stream.import_all(&one(10, 1)).unwrap_err();
        assert!(err.contains("not sealed against writing"), "{err}");
        let err = stream.import_all(&one(u64::MAX, 1)).unwrap_err();
        assert!(err.contains("announced"), "{err}");
        // Huge pages: their holes cannot be found, so they are refused (where the kernel makes
        // them at all).
        match sys::testing::huge_page_region(2 << 20) {
            Some(huge) => {
                let mut stream = through_socket(&[huge], false);
                let err = stream.import_all(&one(10, 1)).unwrap_err();
                assert!(err.contains("not ordinary shared memory"), "{err}");
            }
            None => eprintln!("no huge-page memfd on this kernel: that refusal is not exercised"),
        }
    }

    #[test]
    fn lying_lengths_and_unbacked_bytes_are_errors_never_copies() {
        use sys::testing::sparse_region;
        // Smaller than the header, and an empty buffer: the peer is broken.
        let mut stream = through_socket(&[sparse_region(100), sparse_region(1 << 20)], false);
        for _ in 0..2 {
            let err = stream.import_all(&one(0, 1)).unwrap_err();
            assert!(err.contains("announced"), "{err}");
        }
        // A sparse terabyte costs nothing to make; it is over the limit of a region.
        let mut stream = through_socket(&[sparse_region(1 << 40)], false);
        let err = stream.import_all(&one(1 << 20, 1)).unwrap_err();
        assert!(err.contains("over the"), "{err}");
        // A sparse region of allowed size: copying it would cost the reader every page. So
        // would a region its sender wrote only the start of.
        let mut stream = through_socket(&[sparse_region((HEADER + (64 << 20)) as u64)], false);
        let err = stream.import_all(&one(64 << 20, 1)).unwrap_err();
        assert!(err.contains("no memory behind byte 0"), "{err}");
        let sender = Peer::default();
        let (fd, lend) = export(&sender, &bytes(1, 200_000)).unwrap();
        let mut stream = through_socket(&[fd.try_clone().unwrap(), fd], false);
        let err = stream.import_all(&one(250_000, lend)).unwrap_err();
        assert!(err.contains("no memory behind byte 200704"), "{err}");
        // What it did write is fine.
        let got = stream.import_all(&one(200_000, lend)).unwrap().unwrap();
        assert_eq!(*got[0], *bytes(1, 200_000));
    }

    #[test]
    fn stray_descriptors_are_closed_when_their_frame_is_done() {
        let (a, b) = Stream::pair().unwrap();
        let named =
            |n: usize| -> Vec<OwnedHandle> { (0..n).map(|_| sys::testing::not_a_region()).collect() };
        // Frame 1 carries three descriptors and names one; frame 2 carries one and names it.
        send_frame(&a, b"one", &named(3)).unwrap();
        send_frame(&a, b"two", &named(1)).unwrap();
        let mut input = BufReader::new(FdStream::new(b, false, Arc::default()));
        let mut got = [0u8; 3];
        input.read_exact(&mut got).unwrap();
        // The read may have reached frame 2 already: its descriptor must survive.
        let claimed = input
            .get_mut()
            .fds
            .pop_front()
            .map(|_| input.get_mut().arrived.pop_front());
        assert!(claimed.is_some());
        let err = end_of_frame(&mut input).unwrap_err();
        assert!(err.contains("2 descriptors"), "{err}");
        input.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"two");
        assert_eq!(
            input.get_ref().fds.len(),
            1,
            "frame 2's descriptor was kept"
        );
        input.get_mut().fds.pop_front();
        input.get_mut().arrived.pop_front();
        end_of_frame(&mut input).unwrap();
    }

    #[test]
    fn a_frame_that_lost_descriptors_fails_those_records_and_keeps_the_next_frames() {
        let (a, b) = Stream::pair().unwrap();
        // Frames 1 and 2 each carry one descriptor; frame 1 names two, one of which the
        // kernel dropped on the way (as when this process is out of descriptors).
        send_frame(&a, b"one", &[sys::testing::not_a_region()]).unwrap();
        send_frame(&a, b"two", &[sys::testing::not_a_region()]).unwrap();
        let mut input = BufReader::new(FdStream::new(b, false, Arc::default()));
        let mut got = [0u8; 3];
        input.read_exact(&mut got).unwrap();
        let frame1_fd_at = input.get_ref().arrived[0];
        input
            .get_mut()
            .lost
            .push_back((frame1_fd_at, "Too many open files (os error 24)".into()));
        begin_frame(&mut input);
        assert!(matches!(input.get_mut().next_fd(), Next::Fd(_)));
        match input.get_mut().next_fd() {
            Next::Lost(why) => assert!(why.contains("os error 24"), "{why}"),
            _ => panic!("the second record's descriptor was lost"),
        }
        // Frame 2's descriptor, if the read reached it, is not taken for frame 1.
        assert!(matches!(input.get_mut().next_fd(), Next::Lost(_)));
        end_of_frame(&mut input).unwrap();
        assert!(input.get_ref().lost.is_empty(), "the loss ends with its frame");
        input.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"two");
        begin_frame(&mut input);
        assert!(matches!(input.get_mut().next_fd(), Next::Fd(_)));
        assert!(matches!(input.get_mut().next_fd(), Next::Missing));
        end_of_frame(&mut input).unwrap();
    }

    #[test]
    fn retention_stays_within_its_limits() {
        let sender = Peer::default();
        // Nothing handed back: lent regions pile up to the byte limit, then the oldest are
        // forgotten.
        let mut lends = Vec::new();
        for i in 0..12 {
            lends.push(export(&sender, &bytes(i, 16 << 20)).unwrap().1);
            let out = lock(&sender.out);
            assert!(out.bytes() <= RETAIN_BYTES, "{} bytes kept", out.bytes());
            assert!(out.lent.len() <= KEPT_MAX);
        }
        // A region over RETAIN_MAX is used once and not kept.
        drop(export(&sender, &bytes(1, RETAIN_MAX + 1)).unwrap());
        assert!(lock(&sender.out).bytes() <= RETAIN_BYTES);
        // Many small lends, never handed back: at most KEPT_MAX descriptors stay.
        for i in 0..(3 * KEPT_MAX) {
            lends.push(export(&sender, &bytes(i as u8, 70_000)).unwrap().1);
        }
        assert!(lock(&sender.out).lent.len() <= KEPT_MAX);
        // Everything handed back: what stays idle is within the limits.
        sender.release_all(lends);
        let out = lock(&sender.out);
        assert!(out.idle.len() <= KEPT_MAX, "{} idle", out.idle.len());
        assert!(out.bytes() <= RETAIN_BYTES, "{} bytes kept", out.bytes());
    }
}
