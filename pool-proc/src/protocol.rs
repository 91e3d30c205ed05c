//! The wire protocol between the parent and one worker, over one `Stream` pair.
//!
//! Every message is a *frame*: a 4-byte magic, a little-endian `u32` body length, then the
//! body, whose first byte is the [`Kind`]. Bodies are laid out by hand (fixed-width integers and length-prefixed
//! byte strings) so payload bytes are copied once, never re-encoded. Task arguments and results
//! inside are `postcard`-encoded by the trampolines.
//!
//! Both sides check a frame's length against [`MAX_FRAME`] before allocating, and every decoder
//! here returns a [`ProtocolError`] on truncated or garbled input instead of panicking: the
//! parent treats a worker that sends garbage as dead.
//!
//! ```text
//! parent -> worker   Hello { exe identity, probe offset, initializer offset, max_tasks,
//!                            log level }
//!                    Tasks { released, [ { id u64, fn offset i64, payload bytes, attachments } ... ] }
//!                    Shutdown
//!                    Reclaim                       (give back the tasks not started)
//! worker -> parent   Ready { pid }
//!                    InitFailed { identity | initializer, message }
//!                    Results { [ { id u64, nanos u64, ok u8, bytes, attachments } ... ], released }
//!                    Returned [ { id u64, payload bytes } ... ]
//!                    Log { level u8, line u32, target bytes, message bytes, file bytes,
//!                          module_path bytes }
//! attachments        count u32, then per buffer:
//!                      0 len u64 lend u64 (a region, lent under that number) | 1 message bytes (failed)
//! released           count u32, then lend u64 per region the sender of the frame is done with
//! ```
//!
//! Attached buffers (see [`crate::shm`]) travel as memfd descriptors in the ancillary data of
//! the frame's first bytes; a record names how many it takes, in order. Each is lent under a
//! number, and the receiver hands it back by naming that number in a later frame of its own
//! (`released`): first thing in a `Tasks` frame, so a worker can reuse its regions for the
//! results of those very tasks; last thing in a `Results` frame, which the parent decodes
//! whole and applies before completing any future.
//!
//! Decoding a frame allocates at most a small multiple of its length: counts are checked
//! against the bytes left at the smallest size their records can have, attachment and release
//! lists are read in place (no allocation), and the one index the parent builds (a `Results`
//! frame's records) is reserved fallibly, so a claim it cannot afford is a [`ProtocolError`]
//! (the worker is killed), never an abort.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// The largest frame either side accepts: 4 GiB - 1 (the length prefix is a `u32`).
pub(crate) const MAX_FRAME: usize = u32::MAX as usize;

/// Opens every frame, so text or bytes a task writes to the socket are refused at once
/// instead of being read as a length.
const MAGIC: u32 = u32::from_le_bytes(*b"cfP\x01");

/// Magic and body length.
pub(crate) const HEADER: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Hello = 1,
    Tasks = 2,
    Shutdown = 3,
    Ready = 4,
    InitFailed = 5,
    Results = 6,
    /// Parent to worker: send back the tasks you hold and have not started.
    Reclaim = 7,
    /// Worker to parent: the tasks it gave back (ids and payloads), which it will never run.
    Returned = 8,
    /// Worker to parent: a `log` record, for the parent's logger.
    Log = 9,
}

impl Kind {
    fn from_byte(b: u8) -> Result<Kind, ProtocolError> {
        Ok(match b {
            1 => Kind::Hello,
            2 => Kind::Tasks,
            3 => Kind::Shutdown,
            4 => Kind::Ready,
            5 => Kind::InitFailed,
            6 => Kind::Results,
            7 => Kind::Reclaim,
            8 => Kind::Returned,
            9 => Kind::Log,
            other => return Err(ProtocolError(format!("unknown frame kind {other}"))),
        })
    }
}

/// A frame that does not decode: truncated, oversized or of an unknown kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Facts the worker checks to prove it is the parent's own build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) exe: [u64; 5],
    pub(crate) probe_offset: i64,
    /// 0 = no initializer.
    pub(crate) init_offset: i64,
    /// 0 = unlimited.
    pub(crate) max_tasks: u64,
    /// The parent's `log::max_level()` when the worker started (0 = off ... 5 = trace): the
    /// worker forwards records up to it and costs nothing for the others.
    pub(crate) log_level: u8,
}

/// One buffer attached to a task or result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attachment<'a> {
    /// The next descriptor that came with the frame: a region holding `len` bytes, lent under
    /// the number `lend` (the receiver names it to hand the region back).
    Descriptor { len: u64, lend: u64 },
    /// The sender could not export it; why.
    Failed(&'a [u8]),
}

/// Smallest encoded attachment record: an [`Attachment::Failed`] with an empty reason.
const ATTACHMENT_MIN: usize = 1 + 4;

/// The attachments of one task or result: built by a sender as a list, or decoded from a
/// frame, where they stay encoded (checked once, read again on each iteration) so that no
/// count a peer claims sizes an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attachments<'a> {
    /// To be sent.
    List(Vec<Attachment<'a>>),
    /// As received: `count` well-formed records, exactly filling `raw`.
    Wire { count: usize, raw: &'a [u8] },
}

impl<'a> Attachments<'a> {
    /// How many buffers.
    pub(crate) fn len(&self) -> usize {
        match self {
            Attachments::List(list) => list.len(),
            Attachments::Wire { count, .. } => *count,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Attachment<'a>> + '_ {
        let (list, raw, count) = match self {
            Attachments::List(list) => (&list[..], &[][..], 0),
            Attachments::Wire { count, raw } => (&[][..], *raw, *count),
        };
        let mut r = Reader { body: raw };
        list.iter().copied().chain((0..count).map(move |_| {
            r.attachment()
                .expect("attachment records are checked when the frame is decoded")
        }))
    }
}

impl<'a> FromIterator<Attachment<'a>> for Attachments<'a> {
    fn from_iter<I: IntoIterator<Item = Attachment<'a>>>(iter: I) -> Self {
        Attachments::List(iter.into_iter().collect())
    }
}

/// The lends of regions a frame's sender is done with, as received (checked, read in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released<'a> {
    raw: &'a [u8],
}

impl Released<'_> {
    pub(crate) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

/// One task as it travels to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskFrame<'a> {
    pub(crate) id: u64,
    pub(crate) fn_offset: i64,
    pub(crate) payload: &'a [u8],
    pub(crate) attached: Attachments<'a>,
}

/// One outcome as it travels back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResultFrame<'a> {
    pub(crate) id: u64,
    /// How long the task ran in the worker, for the parent's prefetch window.
    pub(crate) nanos: u64,
    /// `true`: `bytes` is the postcard-encoded result; `false`: a postcard-encoded `TaskError`.
    pub(crate) ok: bool,
    pub(crate) bytes: &'a [u8],
    pub(crate) attached: Attachments<'a>,
}

/// Payloads at least this long are not copied into their frame: they are sent from where they
/// are, between the frame's other bytes (see [`FrameBuf::payload`]).
pub(crate) const SPLICE_MIN: usize = 64 * 1024;

/// Builds one frame; `finish` patches the length prefix.
#[derive(Debug)]
pub(crate) struct FrameBuf<'a> {
    buf: Vec<u8>,
    /// Payloads sent in place: each goes at its offset of `buf`, before the bytes written after
    /// it, in order.
    spliced: Vec<(usize, &'a [u8])>,
    /// Their total length.
    spliced_len: usize,
}

impl<'a> FrameBuf<'a> {
    pub(crate) fn new(kind: Kind) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&MAGIC.to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.push(kind as u8);
        FrameBuf {
            buf,
            spliced: Vec::new(),
            spliced_len: 0,
        }
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// A length, then the bytes, copied into the frame.
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).expect("payload sizes are checked before framing");
        self.u32(len);
        self.buf.extend_from_slice(b);
        self
    }
    /// As [`bytes`](Self::bytes), but bytes of [`SPLICE_MIN`] or more are not copied: the frame
    /// keeps a reference and [`finish_parts`](Self::finish_parts) hands them to the sender in
    /// place. Copying a 16 MiB payload into a fresh frame cost as much as the socket's own
    /// copies of it.
    pub(crate) fn payload(&mut self, b: &'a [u8]) -> &mut Self {
        if b.len() < SPLICE_MIN {
            return self.bytes(b);
        }
        let len = u32::try_from(b.len()).expect("payload sizes are checked before framing");
        self.u32(len);
        self.spliced.push((self.buf.len(), b));
        self.spliced_len += b.len();
        self
    }
    /// The frame's length so far, payloads sent in place included.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() + self.spliced_len
    }
    /// The bytes written from `start` on (e.g. the record just pushed), in a frame that has no
    /// payload sent in place.
    pub(crate) fn since(&self, start: usize) -> &[u8] {
        debug_assert!(self.spliced.is_empty(), "a spliced frame has no contiguous bytes");
        &self.buf[start..]
    }
    /// The frame in one buffer (payloads sent in place are copied in; without them, the
    /// buffer the frame was written in, as it is).
    pub(crate) fn finish(self) -> Vec<u8> {
        self.finish_parts().into_vec()
    }
    /// The frame as its parts, with the length prefix patched.
    pub(crate) fn finish_parts(mut self) -> Frame<'a> {
        let body = u32::try_from(self.len() - HEADER).expect("frame sizes are checked");
        self.buf[4..HEADER].copy_from_slice(&body.to_le_bytes());
        Frame {
            buf: self.buf,
            spliced: self.spliced,
        }
    }
}

/// A finished frame: its own bytes, with payloads to send in place between them.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    buf: Vec<u8>,
    spliced: Vec<(usize, &'a [u8])>,
}

impl Frame<'_> {
    /// The frame's bytes, in order, as slices to write one after another.
    pub(crate) fn parts(&self) -> Vec<&[u8]> {
        let mut parts = Vec::with_capacity(2 * self.spliced.len() + 1);
        let mut at = 0;
        for &(offset, payload) in &self.spliced {
            parts.push(&self.buf[at..offset]);
            parts.push(payload);
            at = offset;
        }
        parts.push(&self.buf[at..]);
        parts.retain(|p| !p.is_empty());
        parts
    }
    /// The frame in one buffer: its own when nothing is sent in place, else a new one.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        if self.spliced.is_empty() {
            return self.buf;
        }
        self.parts().concat()
    }
}

pub(crate) fn hello(h: &Hello) -> Vec<u8> {
    let mut f = FrameBuf::new(Kind::Hello);
    for v in h.exe {
        f.u64(v);
    }
    f.i64(h.probe_offset)
        .i64(h.init_offset)
        .u64(h.max_tasks)
        .u8(h.log_level);
    f.finish()
}

pub(crate) fn shutdown() -> Vec<u8> {
    FrameBuf::new(Kind::Shutdown).finish()
}

pub(crate) fn reclaim() -> Vec<u8> {
    FrameBuf::new(Kind::Reclaim).finish()
}

/// A `Returned` frame: the tasks a worker gives back unstarted, with their payloads.
pub(crate) fn returned<'a>(tasks: impl ExactSizeIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut f = FrameBuf::new(Kind::Returned);
    f.u32(u32::try_from(tasks.len()).expect("a worker holds fewer than 2^32 tasks"));
    for (id, payload) in tasks {
        f.u64(id).bytes(payload);
    }
    f.finish()
}

/// A `log` record as it travels to the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogRecord<'a> {
    pub(crate) level: log::Level,
    pub(crate) target: &'a str,
    pub(crate) message: &'a str,
    pub(crate) file: Option<&'a str>,
    pub(crate) line: Option<u32>,
    pub(crate) module_path: Option<&'a str>,
}

pub(crate) fn log_record(r: &LogRecord<'_>) -> Vec<u8> {
    let mut f = FrameBuf::new(Kind::Log);
    f.u8(r.level as u8)
        .u32(r.line.unwrap_or(0))
        .bytes(r.target.as_bytes())
        .bytes(r.message.as_bytes())
        .bytes(r.file.unwrap_or("").as_bytes())
        .bytes(r.module_path.unwrap_or("").as_bytes());
    f.finish()
}

pub(crate) fn ready(pid: u32) -> Vec<u8> {
    let mut f = FrameBuf::new(Kind::Ready);
    f.u32(pid);
    f.finish()
}

/// Why a worker could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartFailure {
    /// It is not running the parent's executable image.
    Identity = 0,
    /// The pool's initializer returned `Err` or panicked.
    Initializer = 1,
    /// The system refused it a thread it needs (too many processes or threads for the user):
    /// not the pool's fault nor the task's, and it may pass.
    Resources = 2,
}

pub(crate) fn init_failed(why: StartFailure, message: &str) -> Vec<u8> {
    let mut f = FrameBuf::new(Kind::InitFailed);
    f.u8(why as u8).bytes(message.as_bytes());
    f.finish()
}

/// Appends one task to a `Tasks` frame under construction (count is patched by the caller); a
/// large payload is sent in place (see [`FrameBuf::payload`]).
pub(crate) fn push_task<'a>(f: &mut FrameBuf<'a>, t: &TaskFrame<'a>) {
    f.u64(t.id).i64(t.fn_offset).payload(t.payload);
    push_attachments(f, &t.attached);
}

/// Appends one result to a `Results` frame under construction, its bytes copied in.
pub(crate) fn push_result(f: &mut FrameBuf<'_>, r: &ResultFrame<'_>) {
    f.u64(r.id).u64(r.nanos).u8(u8::from(r.ok)).bytes(r.bytes);
    push_attachments(f, &r.attached);
}

/// [`push_result`], with a large result's bytes sent in place (see [`FrameBuf::payload`]).
pub(crate) fn push_result_in_place<'a>(f: &mut FrameBuf<'a>, r: &ResultFrame<'a>) {
    f.u64(r.id).u64(r.nanos).u8(u8::from(r.ok)).payload(r.bytes);
    push_attachments(f, &r.attached);
}

fn push_attachments(f: &mut FrameBuf<'_>, attached: &Attachments<'_>) {
    f.u32(u32::try_from(attached.len()).expect("attachments are capped by the policy"));
    for a in attached.iter() {
        match a {
            Attachment::Descriptor { len, lend } => f.u8(0).u64(len).u64(lend),
            Attachment::Failed(why) => f.u8(1).bytes(why),
        };
    }
}

/// Appends the lends of regions this side is done with: at the start of a `Tasks` frame's
/// body, at the end of a `Results` frame's.
pub(crate) fn push_released(f: &mut FrameBuf<'_>, lends: &[u64]) {
    f.u32(u32::try_from(lends.len()).expect("lends are bounded by what was lent"));
    for &lend in lends {
        f.u64(lend);
    }
}

/// Reads one frame body (kind byte first). `Ok(None)` on a clean end of stream between frames.
///
/// Nothing in the header is trusted: the magic must match and the length must be within
/// `1..=max`, and the body buffer grows only as bytes actually arrive, so a lying length costs
/// at most twice what was really sent. With a read timeout on the stream, a frame that stops
/// arriving midway for longer than `stall` is an error (between frames, waiting is fine).
pub(crate) fn read_frame(
    r: &mut impl Read,
    max: usize,
    stall: Option<Duration>,
) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    let mut progress = Instant::now();
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                got += n;
                progress = Instant::now();
            }
            Err(e) => waited(e, got > 0, progress, stall)?,
        }
    }
    let magic = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    if magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame magic {magic:#010x}: not a cf-pool-proc frame"),
        ));
    }
    let len = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is outside 1..={max}"),
        ));
    }
    let mut body = Vec::new();
    let mut filled = 0;
    while filled < len {
        if filled == body.len() {
            // Exactly: `resize` alone would round the capacity up to twice what is asked. And
            // fallibly: a peer may send gigabytes under a length it never completes, and the
            // reader must fail (the parent then kills that worker), not abort its process.
            let grown = (body.len() * 2).max(64 * 1024).min(len);
            body.try_reserve_exact(grown - body.len()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "no memory for the {grown} bytes a frame of {len} bytes needs after \
                         {filled} bytes of it"
                    ),
                )
            })?;
            body.resize(grown, 0);
        }
        match r.read(&mut body[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                filled += n;
                progress = Instant::now();
            }
            Err(e) => waited(e, true, progress, stall)?,
        }
    }
    Ok(Some(body))
}

/// A read that returned `e`: interruptions and read timeouts are retried, unless the frame is
/// partly read and has made no progress for `stall`.
fn waited(
    e: io::Error,
    mid_frame: bool,
    progress: Instant,
    stall: Option<Duration>,
) -> io::Result<()> {
    match e.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => match stall {
            Some(limit) if mid_frame && progress.elapsed() >= limit => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("a frame stalled midway for {limit:?}"),
            )),
            _ => Ok(()),
        },
        _ => Err(e),
    }
}

pub(crate) fn write_frame(w: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    w.write_all(frame)
}

/// A cursor over a frame body that fails cleanly on truncation.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    body: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Splits off the kind byte.
    pub(crate) fn new(body: &'a [u8]) -> Result<(Kind, Self), ProtocolError> {
        let (&k, rest) = body
            .split_first()
            .ok_or_else(|| ProtocolError("empty frame".into()))?;
        Ok((Kind::from_byte(k)?, Reader { body: rest }))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.body.len() < n {
            return Err(ProtocolError(format!(
                "truncated: wanted {n} more bytes, {} left",
                self.body.len()
            )));
        }
        let (head, rest) = self.body.split_at(n);
        self.body = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, ProtocolError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A count of records, each at least `min_record` bytes: rejects counts the body cannot hold.
    pub(crate) fn count(&mut self, min_record: usize) -> Result<usize, ProtocolError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_record) > self.body.len() {
            return Err(ProtocolError(format!(
                "count {n} cannot fit in {} bytes",
                self.body.len()
            )));
        }
        Ok(n)
    }
    pub(crate) fn end(&self) -> Result<(), ProtocolError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError(format!("{} trailing bytes", self.body.len())))
        }
    }

    pub(crate) fn hello(&mut self) -> Result<Hello, ProtocolError> {
        let mut exe = [0u64; 5];
        for v in &mut exe {
            *v = self.u64()?;
        }
        let h = Hello {
            exe,
            probe_offset: self.i64()?,
            init_offset: self.i64()?,
            max_tasks: self.u64()?,
            log_level: self.u8()?,
        };
        self.end()?;
        Ok(h)
    }
    fn attachment(&mut self) -> Result<Attachment<'a>, ProtocolError> {
        match self.u8()? {
            0 => Ok(Attachment::Descriptor {
                len: self.u64()?,
                lend: self.u64()?,
            }),
            1 => Ok(Attachment::Failed(self.bytes()?)),
            other => Err(ProtocolError(format!("bad attachment tag {other}"))),
        }
    }
    /// Checks a list of attachment records and keeps it encoded: no allocation.
    fn attachments(&mut self) -> Result<Attachments<'a>, ProtocolError> {
        let count = self.count(ATTACHMENT_MIN)?;
        let start = self.body;
        for _ in 0..count {
            self.attachment()?;
        }
        let raw = &start[..start.len() - self.body.len()];
        Ok(Attachments::Wire { count, raw })
    }
    /// A list of released lends (see [`push_released`]); no allocation.
    pub(crate) fn released(&mut self) -> Result<Released<'a>, ProtocolError> {
        let n = self.count(8)?;
        Ok(Released {
            raw: self.take(n * 8)?,
        })
    }
    pub(crate) fn task(&mut self) -> Result<TaskFrame<'a>, ProtocolError> {
        Ok(TaskFrame {
            id: self.u64()?,
            fn_offset: self.i64()?,
            payload: self.bytes()?,
            attached: self.attachments()?,
        })
    }
    pub(crate) fn result(&mut self) -> Result<ResultFrame<'a>, ProtocolError> {
        let id = self.u64()?;
        let nanos = self.u64()?;
        let ok = match self.u8()? {
            0 => false,
            1 => true,
            other => return Err(ProtocolError(format!("bad result status {other}"))),
        };
        Ok(ResultFrame {
            id,
            nanos,
            ok,
            bytes: self.bytes()?,
            attached: self.attachments()?,
        })
    }
}

/// A decoded frame from a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerMessage<'a> {
    Ready {
        pid: u32,
    },
    InitFailed {
        why: StartFailure,
        message: String,
    },
    /// Outcomes, and the lends of the parent's regions the worker is done with.
    Results {
        records: ResultRecords<'a>,
        released: Released<'a>,
    },
    /// Tasks given back unstarted after a `Reclaim`: ids and payloads.
    Returned(Vec<(u64, &'a [u8])>),
    /// A record of the worker's `log` calls.
    Log(LogMessage),
}

/// A worker's `log` record as the parent receives it (text that is not UTF-8 is replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogMessage {
    pub(crate) level: log::Level,
    pub(crate) target: String,
    pub(crate) message: String,
    pub(crate) file: Option<String>,
    pub(crate) line: Option<u32>,
    pub(crate) module_path: Option<String>,
}

/// The records of a `Results` frame, as received: checked once, decoded again on each
/// iteration, so that decoding allocates nothing however many a frame claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResultRecords<'a> {
    count: usize,
    raw: &'a [u8],
}

impl<'a> ResultRecords<'a> {
    pub(crate) fn len(&self) -> usize {
        self.count
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = ResultFrame<'a>> {
        let mut r = Reader { body: self.raw };
        (0..self.count).map(move |_| {
            r.result()
                .expect("result records are checked when the frame is decoded")
        })
    }
}

/// Decodes a worker's frame body completely; anything but a well-formed message from the
/// worker's vocabulary is an error. Nothing is allocated but an `InitFailed` message's text
/// (at most three bytes per byte received).
pub(crate) fn decode_worker_message(body: &[u8]) -> Result<WorkerMessage<'_>, ProtocolError> {
    let (kind, mut r) = Reader::new(body)?;
    let message = match kind {
        Kind::Ready => WorkerMessage::Ready { pid: r.u32()? },
        Kind::InitFailed => WorkerMessage::InitFailed {
            why: match r.u8()? {
                0 => StartFailure::Identity,
                1 => StartFailure::Initializer,
                2 => StartFailure::Resources,
                other => return Err(ProtocolError(format!("bad start failure {other}"))),
            },
            message: String::from_utf8_lossy(r.bytes()?).into_owned(),
        },
        Kind::Results => {
            let count = r.count(RESULT_RECORD_MIN)?;
            let start = r.body;
            for _ in 0..count {
                r.result()?;
            }
            let raw = &start[..start.len() - r.body.len()];
            WorkerMessage::Results {
                records: ResultRecords { count, raw },
                released: r.released()?,
            }
        }
        Kind::Returned => {
            let n = r.count(RETURNED_RECORD_MIN)?;
            let mut tasks = Vec::with_capacity(n);
            for _ in 0..n {
                tasks.push((r.u64()?, r.bytes()?));
            }
            WorkerMessage::Returned(tasks)
        }
        Kind::Log => {
            let level = match r.u8()? {
                1 => log::Level::Error,
                2 => log::Level::Warn,
                3 => log::Level::Info,
                4 => log::Level::Debug,
                5 => log::Level::Trace,
                other => return Err(ProtocolError(format!("bad log level {other}"))),
            };
            let line = r.u32()?;
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let target = text(r.bytes()?);
            let message = text(r.bytes()?);
            let file = r.bytes()?;
            let module_path = r.bytes()?;
            let named = |b: &[u8]| (!b.is_empty()).then(|| text(b));
            WorkerMessage::Log(LogMessage {
                level,
                target,
                message,
                file: named(file),
                line: (line != 0).then_some(line),
                module_path: named(module_path),
            })
        }
        other => return Err(ProtocolError(format!("a worker may not send {other:?}"))),
    };
    r.end()?;
    Ok(message)
}

/// Minimum encoded size of a task record (id + offset + length + attachment count).
pub(crate) const TASK_RECORD_MIN: usize = 8 + 8 + 4 + 4;
/// Minimum encoded size of a returned task (id + payload length).
pub(crate) const RETURNED_RECORD_MIN: usize = 8 + 4;
/// Minimum encoded size of a result record (id + nanos + status + length + attachment count).
pub(crate) const RESULT_RECORD_MIN: usize = 8 + 8 + 1 + 4 + 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_and_truncation_is_an_error() {
        let mut f = FrameBuf::new(Kind::Results);
        f.u32(2);
        push_result(
            &mut f,
            &ResultFrame {
                id: 7,
                nanos: 1,
                ok: true,
                bytes: b"abc",
                attached: Attachments::List(vec![
                    Attachment::Descriptor {
                        len: 70_000,
                        lend: 3,
                    },
                    Attachment::Failed(b"no memory"),
                ]),
            },
        );
        push_result(
            &mut f,
            &ResultFrame {
                id: 8,
                nanos: 2,
                ok: false,
                bytes: b"",
                attached: Attachments::List(vec![]),
            },
        );
        push_released(&mut f, &[5, 9]);
        let frame = f.finish();
        let body = read_frame(&mut &frame[..], MAX_FRAME, None)
            .unwrap()
            .unwrap();
        let WorkerMessage::Results { records, released } = decode_worker_message(&body).unwrap()
        else {
            panic!("not results");
        };
        assert_eq!(records.len(), 2);
        let decoded: Vec<_> = records.iter().collect();
        assert_eq!(decoded[0].bytes, b"abc");
        assert_eq!(
            decoded[0].attached.iter().collect::<Vec<_>>(),
            [
                Attachment::Descriptor {
                    len: 70_000,
                    lend: 3
                },
                Attachment::Failed(b"no memory")
            ]
        );
        assert_eq!(decoded[0].attached.len(), 2);
        assert!(!decoded[1].ok && decoded[1].attached.is_empty());
        assert_eq!(released.iter().collect::<Vec<_>>(), [5, 9]);
        for cut in 1..body.len() {
            assert!(
                decode_worker_message(&body[..cut]).is_err(),
                "cut at {cut} decoded"
            );
        }
    }

    /// A frame with nothing sent in place is handed over in the buffer it was written in: a
    /// worker's results batch is one such frame per flush, and a copy of it was pure cost.
    #[test]
    fn a_frame_without_spliced_payloads_is_not_copied() {
        let mut f = FrameBuf::new(Kind::Results);
        f.u32(0).bytes(&[1; 100]);
        let frame = f.finish_parts();
        let written_at = frame.buf.as_ptr();
        let bytes = frame.into_vec();
        assert_eq!(bytes.as_ptr(), written_at, "the same buffer");
        assert_eq!(bytes.len(), HEADER + 1 + 4 + 4 + 100, "header, kind, u32, length, bytes");
    }

    /// Payloads of `SPLICE_MIN` or more are sent in place: the parts, written one after
    /// another, are exactly the frame a copying build makes, and it reads back.
    #[test]
    fn spliced_payloads_make_the_same_frame() {
        let big: Vec<u8> = (0..SPLICE_MIN + 3).map(|i| (i % 251) as u8).collect();
        let small = vec![7u8; SPLICE_MIN - 1];
        let task = |id, payload| TaskFrame {
            id,
            fn_offset: -8,
            payload,
            attached: Attachments::List(vec![Attachment::Descriptor { len: 1, lend: 2 }]),
        };
        let build = |copied: bool| {
            let mut f = FrameBuf::new(Kind::Tasks);
            push_released(&mut f, &[42]);
            f.u32(3);
            for (id, payload) in [(1, &big[..]), (2, &small[..]), (3, &big[..])] {
                if copied {
                    f.u64(id).i64(-8).bytes(payload);
                    push_attachments(&mut f, &task(id, payload).attached);
                } else {
                    push_task(&mut f, &task(id, payload));
                }
            }
            f
        };
        let spliced = build(false);
        let len = spliced.len();
        let frame = spliced.finish_parts();
        let parts = frame.parts();
        // Head, big, between, big, tail: the small payload was copied.
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[1].as_ptr(), big.as_ptr(), "sent from where it is");
        let joined = parts.concat();
        assert_eq!(joined.len(), len);
        assert_eq!(joined, build(true).finish());
        assert_eq!(frame.into_vec(), joined);
        let body = read_frame(&mut &joined[..], MAX_FRAME, None).unwrap().unwrap();
        let (_, mut r) = Reader::new(&body).unwrap();
        assert_eq!(r.released().unwrap().iter().collect::<Vec<_>>(), [42]);
        assert_eq!(r.count(TASK_RECORD_MIN).unwrap(), 3);
        for (id, payload) in [(1, &big[..]), (2, &small[..]), (3, &big[..])] {
            let t = r.task().unwrap();
            assert_eq!((t.id, t.payload), (id, payload));
        }
        r.end().unwrap();
    }

    #[test]
    fn tasks_carry_releases_first() {
        let mut f = FrameBuf::new(Kind::Tasks);
        push_released(&mut f, &[42]);
        f.u32(1);
        push_task(
            &mut f,
            &TaskFrame {
                id: 1,
                fn_offset: -8,
                payload: b"p",
                attached: Attachments::List(vec![Attachment::Descriptor { len: 1, lend: 2 }]),
            },
        );
        let frame = f.finish();
        let (kind, mut r) = Reader::new(&frame[HEADER..]).unwrap();
        assert_eq!(kind, Kind::Tasks);
        assert_eq!(r.released().unwrap().iter().collect::<Vec<_>>(), [42]);
        assert_eq!(r.count(TASK_RECORD_MIN).unwrap(), 1);
        let task = r.task().unwrap();
        assert_eq!((task.id, task.fn_offset, task.payload), (1, -8, &b"p"[..]));
        assert_eq!(
            task.attached.iter().collect::<Vec<_>>(),
            [Attachment::Descriptor { len: 1, lend: 2 }]
        );
        r.end().unwrap();
    }

    #[test]
    fn oversized_empty_and_foreign_frames_are_refused_before_allocation() {
        let header = |len: u32| [MAGIC.to_le_bytes(), len.to_le_bytes()].concat();
        let err = read_frame(&mut &header(u32::MAX)[..], 1024, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(read_frame(&mut &header(0)[..], 1024, None).is_err());
        assert!(read_frame(&mut &[][..], 1024, None).unwrap().is_none());
        let err = read_frame(&mut &b"hello from a task"[..], MAX_FRAME, None).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
        // A length that promises more than is sent: an error at the end, and the buffer only
        // grew with what arrived.
        let mut short = header(1 << 30);
        short.extend_from_slice(&[6; 100]);
        let err = read_frame(&mut &short[..], MAX_FRAME, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn absurd_counts_are_refused() {
        let mut f = FrameBuf::new(Kind::Results);
        f.u32(u32::MAX);
        let frame = f.finish();
        let (_, mut r) = Reader::new(&frame[HEADER..]).unwrap();
        assert!(r.count(RESULT_RECORD_MIN).is_err());
        // Counts are checked at the smallest size of their records: five empty failures fit
        // in 25 bytes, six do not.
        let failures = |n: u32| {
            let mut b = n.to_le_bytes().to_vec();
            b.extend_from_slice(&[1, 0, 0, 0, 0].repeat(5));
            b
        };
        assert_eq!(
            Reader { body: &failures(5) }.attachments().unwrap().len(),
            5
        );
        let err = Reader { body: &failures(6) }.attachments().unwrap_err();
        assert!(err.0.contains("cannot fit"), "{err}");
        let mut released = 4u32.to_le_bytes().to_vec();
        released.extend_from_slice(&[0; 31]);
        assert!(Reader { body: &released }.released().is_err());
    }
}
