//! A worker's *black box*: one small shared-memory page per worker that holds what the worker
//! would otherwise take with it when it dies, for the parent to read after it has reaped it.
//!
//! A worker batches results (see [`crate::worker`]): sending each on its own would cost a
//! system call per task. A batched result that is still waiting when a later task crashes the
//! process (`abort`, `exit`, a segfault, `SIGKILL` to itself) would be lost, and its finished
//! task reported as `WorkerDied`. So before the next task starts, every result is either on
//! its way (handed to the kernel) or *recorded* here: its record, exactly as it goes in a
//! `Results` frame, appended to the page, which is memory the parent maps too. A store into
//! shared memory survives the process that made it, so once the worker is dead the parent
//! reads the records it has not received and completes those futures. Recording is a `memcpy`
//! of a few dozen bytes, no system call, so batching keeps its throughput.
//!
//! The page is created by the parent for each worker ([`sys::create_shared_page`]: on Linux a
//! `memfd` sealed against shrinking and growing) and sent with the handshake; the worker maps
//! it. The parent reads it only after the worker has been reaped, with `pread` into a private
//! copy, never through a mapping (so a page truncated by a misbehaving worker reads short
//! instead of faulting): a process the worker forked could still write to it, and a hostile
//! worker could have written anything, so the records are decoded with the same checks as any
//! frame from a worker, and only tasks the worker still held are completed from them (a
//! record that was also sent is simply a duplicate). A worker killed for breaking the protocol
//! (a frame that does not decode or stalls, stray descriptors) is trusted no further: its black
//! box is not read. A frame cut short by the worker's death is no such breach.
//!
//! It also keeps the worker's *last words*: the message and location of a panic that will not
//! unwind (`panic = "abort"`, a panic out of an `extern "C"` function), written by the panic
//! hook's observer in the panicking thread right before the process aborts, with no lock and
//! no allocation (the socket may be held by another thread, and the process is about to die).
//! The parent puts them in the `WorkerDied` of the tasks that worker held.
//!
//! It also says which task the worker *started* last: before the task thread runs a task it
//! writes that task's id here (one store into the page, no system call), after the result of
//! the task before it is safe (sent or recorded). So once the worker is dead, every task it
//! still held other than that one had not started, and the parent can hand those to another
//! worker instead of failing them with the dead one (see `crate::slot`).
//!
//! Layout: a header (bytes of records, count of records, length of the last words, the task
//! started last), the last words, then from [`RECORDS_AT`] the records. A record counts
//! only once the header names it, and the header is written after the record, so a worker
//! that dies in between loses that record alone (the result of a task that had just returned;
//! its task then fails with `WorkerDied`, as if it had been running).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;



use crate::protocol::Kind;
use crate::sys::{self, Map, OwnedHandle};

/// The size of a black box; records take all of it after the header.
pub(crate) const SIZE: usize = 64 * 1024;
/// `u64` bytes of records, `u32` number of records, `u32` bytes of last words, `u64` the id
/// of the task started last plus one (zero: none yet).
const USED_AT: usize = 0;
const COUNT_AT: usize = 8;
const WORDS_LEN_AT: usize = 12;
const STARTED_AT: usize = 16;
const WORDS_AT: usize = 24;
/// The last words are cut to this many bytes.
const WORDS_MAX: usize = RECORDS_AT - WORDS_AT;
const RECORDS_AT: usize = 4096;
/// The most record bytes a black box holds.
pub(crate) const CAPACITY: usize = SIZE - RECORDS_AT;

/// The parent's view of a worker's black box, read after the worker's death.
#[derive(Debug)]
pub(crate) struct Reader {
    fd: OwnedHandle,
}

impl Reader {
    /// A new black box and the descriptor to send to its worker.
    pub(crate) fn create() -> io::Result<(Reader, OwnedHandle)> {
        let fd = sys::create_shared_page(SIZE)?;
        let to_send = fd.try_clone()?;
        Ok((Reader { fd }, to_send))
    }

    /// `len` bytes at `at`, or `None` if they cannot be read (the page was cut short).
    fn read(&self, at: usize, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0; len];
        sys::read_at(&self.fd, &mut buf, at as u64).ok()?;
        Some(buf)
    }

    /// The records the worker left, as the body of a `Results` frame (kind byte first), for
    /// [`crate::protocol::decode_worker_message`]; `None` if it left none. Call only once the
    /// worker is gone.
    pub(crate) fn recorded(&self) -> Option<Vec<u8>> {
        let header = self.read(0, WORDS_AT)?;
        let used = u64::from_le_bytes(header[USED_AT..COUNT_AT].try_into().ok()?);
        let count: [u8; 4] = header[COUNT_AT..COUNT_AT + 4].try_into().ok()?;
        if used == 0 {
            return None;
        }
        // A lying length reads no further than the page.
        let used = usize::try_from(used).ok()?.min(CAPACITY);
        let records = self.read(RECORDS_AT, used)?;
        let mut body = Vec::with_capacity(1 + 4 + used + 4);
        body.push(Kind::Results as u8);
        body.extend_from_slice(&count);
        body.extend_from_slice(&records);
        // No regions released: a dead worker's lends are forgotten with it.
        body.extend_from_slice(&0u32.to_le_bytes());
        Some(body)
    }

    /// What the worker said it started last: `Some(None)` if it started no task, `None` if
    /// the page cannot be read. Call only once the worker is gone. A hostile worker can name
    /// any id here; the parent trusts it only as far as `crate::slot` says.
    pub(crate) fn started(&self) -> Option<Option<u64>> {
        let word = self.read(STARTED_AT, 8)?;
        let plus_one = u64::from_le_bytes(word.try_into().ok()?);
        Some(plus_one.checked_sub(1))
    }

    /// The worker's last words, if it said any: `panicked at {location}: {message}`.
    pub(crate) fn last_words(&self) -> Option<String> {
        let len = self.read(WORDS_LEN_AT, 4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        if len == 0 {
            return None;
        }
        let words = self.read(WORDS_AT, len.min(WORDS_MAX))?;
        Some(String::from_utf8_lossy(&words).into_owned())
    }
}

/// The worker's side of its black box: it appends the records of results not yet sent.
#[derive(Debug)]
pub(crate) struct Writer {
    map: Arc<Map>,
    used: usize,
    count: u32,
}

impl Writer {
    /// Maps the black box the parent sent with the handshake.
    pub(crate) fn adopt(fd: &OwnedHandle) -> io::Result<Writer> {
        // Its last byte must exist: a shorter page would fault the writes below.
        sys::read_at(fd, &mut [0], SIZE as u64 - 1).map_err(|e| {
            io::Error::other(format!(
                "the black box the parent sent is not {SIZE} bytes ({e})"
            ))
        })?;
        let map = Arc::new(sys::map_shared_page(fd, SIZE)?);
        let writer = Writer {
            map,
            used: 0,
            count: 0,
        };
        writer.commit();
        Ok(writer)
    }

    /// Appends one result record; `false` if it does not fit (then it must be sent before
    /// another task runs).
    pub(crate) fn record(&mut self, record: &[u8]) -> bool {
        if record.len() > CAPACITY - self.used {
            return false;
        }
        sys::copy_in(&self.map, RECORDS_AT + self.used, record);
        self.used += record.len();
        self.count += 1;
        self.commit();
        true
    }

    /// Says that task `id` starts now: before this, the result of the task before it must be
    /// sent or recorded (see the module docs).
    pub(crate) fn starting(&self, id: u64) {
        sys::copy_in(&self.map, STARTED_AT, &id.wrapping_add(1).to_le_bytes());
    }

    /// What the fatal panic observer writes through.
    pub(crate) fn last_words(&self) -> LastWords {
        LastWords {
            map: Arc::clone(&self.map),
        }
    }

    /// Forgets every record: all of them have been sent.
    pub(crate) fn clear(&mut self) {
        if self.count != 0 {
            self.used = 0;
            self.count = 0;
            self.commit();
        }
    }

    /// Publishes the header's record fields (12 bytes; the last words beside them are left
    /// alone), after the records they name.
    fn commit(&self) {
        let mut header = [0u8; WORDS_LEN_AT];
        header[USED_AT..COUNT_AT].copy_from_slice(&(self.used as u64).to_le_bytes());
        header[COUNT_AT..WORDS_LEN_AT].copy_from_slice(&self.count.to_le_bytes());
        sys::copy_in(&self.map, USED_AT, &header);
    }
}

/// Where a worker writes its last words (see the module docs).
#[derive(Debug)]
pub(crate) struct LastWords {
    map: Arc<Map>,
}

impl LastWords {
    /// Writes `panicked at {location}: {message}` (cut to what fits), once per process: the
    /// first fatal panic is the one that kills it. No lock, no allocation.
    pub(crate) fn say(&self, message: &str, location: Option<&str>) {
        static SAID: AtomicBool = AtomicBool::new(false);
        if SAID.swap(true, Ordering::AcqRel) {
            return;
        }
        let pieces: [&[u8]; 4] = match location {
            Some(at) => [b"panicked at ", at.as_bytes(), b": ", message.as_bytes()],
            None => [b"panicked: ", b"", b"", message.as_bytes()],
        };
        let mut len = 0;
        for piece in pieces {
            let piece = &piece[..piece.len().min(WORDS_MAX - len)];
            sys::copy_in(&self.map, WORDS_AT + len, piece);
            len += piece.len();
        }
        // The length last: the parent reads only what it names.
        sys::copy_in(&self.map, WORDS_LEN_AT, &(len as u32).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, FrameBuf, ResultFrame, WorkerMessage};

    fn record(id: u64, bytes: &[u8]) -> Vec<u8> {
        let mut f = FrameBuf::new(Kind::Results);
        let start = f.len();
        protocol::push_result(
            &mut f,
            &ResultFrame {
                id,
                nanos: 5,
                ok: true,
                bytes,
                attached: protocol::Attachments::List(vec![]),
            },
        );
        f.finish()[start..].to_vec()
    }

    fn ids(reader: &Reader) -> Vec<u64> {
        let Some(body) = reader.recorded() else {
            return vec![];
        };
        match protocol::decode_worker_message(&body).unwrap() {
            WorkerMessage::Results { records, .. } => records.iter().map(|r| r.id).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_reach_the_reader_until_cleared_and_overflow_is_refused() {
        let (reader, fd) = Reader::create().unwrap();
        let mut writer = Writer::adopt(&fd).unwrap();
        drop(fd);
        assert_eq!(ids(&reader), Vec::<u64>::new());
        assert!(writer.record(&record(1, b"one")));
        assert!(writer.record(&record(2, b"two")));
        assert_eq!(ids(&reader), [1, 2]);
        writer.clear();
        assert_eq!(ids(&reader), Vec::<u64>::new());
        // A record that does not fit is refused, and what was there stays.
        assert!(writer.record(&record(3, b"three")));
        assert!(!writer.record(&record(4, &vec![0; CAPACITY])));
        assert_eq!(ids(&reader), [3]);
    }

    #[test]
    fn last_words_reach_the_reader_cut_to_fit() {
        let (reader, fd) = Reader::create().unwrap();
        let writer = Writer::adopt(&fd).unwrap();
        assert_eq!(reader.last_words(), None);
        let long = "x".repeat(2 * WORDS_MAX);
        writer.last_words().say(&long, Some("src/x.rs:3:5"));
        let words = reader.last_words().unwrap();
        assert!(
            words.starts_with("panicked at src/x.rs:3:5: xxx"),
            "{words}"
        );
        assert_eq!(words.len(), WORDS_MAX);
        // Only the first fatal panic of a process speaks.
        writer.last_words().say("later", None);
        assert_eq!(reader.last_words().unwrap(), words);
    }

    #[test]
    fn recording_and_clearing_results_leave_the_last_words_alone() {
        let (reader, fd) = Reader::create().unwrap();
        let mut writer = Writer::adopt(&fd).unwrap();
        // A fatal panic in another thread of the worker, while the task thread goes on (written
        // as `LastWords::say` writes, which speaks once per process, and the tests share one).
        sys::copy_in(&writer.map, WORDS_AT, b"panicked: boom");
        sys::copy_in(&writer.map, WORDS_LEN_AT, &14u32.to_le_bytes());
        assert!(writer.record(&record(1, b"one")));
        writer.clear();
        assert!(writer.record(&record(2, b"two")));
        assert_eq!(ids(&reader), [2]);
        assert_eq!(reader.last_words().as_deref(), Some("panicked: boom"));
    }

    #[test]
    fn the_task_started_last_reaches_the_reader_beside_records_and_last_words() {
        let (reader, fd) = Reader::create().unwrap();
        let mut writer = Writer::adopt(&fd).unwrap();
        assert_eq!(reader.started(), Some(None));
        writer.starting(0);
        assert_eq!(reader.started(), Some(Some(0)));
        assert!(writer.record(&record(7, b"seven")));
        sys::copy_in(&writer.map, WORDS_AT, b"panicked: boom");
        sys::copy_in(&writer.map, WORDS_LEN_AT, &14u32.to_le_bytes());
        writer.starting(u64::MAX - 1);
        assert_eq!(reader.started(), Some(Some(u64::MAX - 1)));
        writer.clear();
        assert!(writer.record(&record(8, b"eight")));
        // Each field leaves the others alone.
        assert_eq!(ids(&reader), [8]);
        assert_eq!(reader.last_words().as_deref(), Some("panicked: boom"));
        assert_eq!(reader.started(), Some(Some(u64::MAX - 1)));
    }

    #[test]
    fn a_wrongly_sized_page_is_refused() {
        assert!(Writer::adopt(&sys::create_shared_page(4096).unwrap()).is_err());
        assert!(Writer::adopt(&sys::testing::not_a_region()).is_err());
    }
}
