//! ipc-channel as a transport between two processes, for comparison with cf-pool-proc's
//! socketpairs: the same partner process (this executable re-executed) answers small typed
//! messages (`IpcSender<u64>`) and echoes byte strings (`IpcBytesSender`).
//!
//! Set-up follows ipc-channel's documented rendezvous: the parent opens an
//! `IpcOneShotServer` and passes its name to the child, which connects and sends the senders
//! of two channels it made; the parent answers with the senders for the replies.

use std::hint::black_box;
use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};

/// Set (with the one-shot server's name) in the environment of a re-executed partner.
pub const SERVER_ENV: &str = "CF_BENCHES_IPC_SERVER";

/// What the partner sends the parent through the one-shot server: where to send requests.
type Hello = (IpcSender<Replies>, IpcSender<u64>, IpcBytesSender);
/// What the parent sends back: where the partner sends its replies.
type Replies = (IpcSender<u64>, IpcBytesSender);

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The partner's side: connects, then echoes numbers and byte strings until the parent hangs
/// up.
pub(crate) fn serve() -> io::Result<()> {
    let name = std::env::var(SERVER_ENV).map_err(other)?;
    let bootstrap = IpcSender::<Hello>::connect(name)?;
    let (replies_tx, replies_rx) = ipc::channel::<Replies>()?;
    let (numbers_tx, numbers_rx) = ipc::channel::<u64>()?;
    let (bytes_tx, bytes_rx) = ipc::bytes_channel()?;
    bootstrap
        .send((replies_tx, numbers_tx, bytes_tx))
        .map_err(other)?;
    let (numbers_back, bytes_back) = replies_rx.recv().map_err(other)?;
    let bytes = std::thread::spawn(move || {
        while let Ok(b) = bytes_rx.recv() {
            if bytes_back.send(&b).is_err() {
                break;
            }
        }
    });
    while let Ok(n) = numbers_rx.recv() {
        if numbers_back.send(n).is_err() {
            break;
        }
    }
    let _ = bytes.join();
    Ok(())
}

/// A partner process reached through ipc-channel.
#[derive(Debug)]
pub struct IpcPingPong {
    numbers: Option<IpcSender<u64>>,
    numbers_back: IpcReceiver<u64>,
    bytes: Option<IpcBytesSender>,
    bytes_back: IpcBytesReceiver,
    child: Child,
}

impl IpcPingPong {
    /// Starts the partner (this executable again) and completes the rendezvous.
    ///
    /// # Errors
    ///
    /// If a channel or the process cannot be created, or the rendezvous fails. (If the partner
    /// died before it connected, `accept` would wait forever: ipc-channel has no timeout there.)
    pub fn start() -> io::Result<Self> {
        let (server, name) = IpcOneShotServer::<Hello>::new()?;
        let child = Command::new("/proc/self/exe")
            .env(crate::helper::HELPER_ENV, "ipc-channel")
            .env(SERVER_ENV, name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let (_, (replies, numbers, bytes)) = server.accept().map_err(other)?;
        let (numbers_tx, numbers_back) = ipc::channel::<u64>()?;
        let (bytes_tx, bytes_back) = ipc::bytes_channel()?;
        replies.send((numbers_tx, bytes_tx)).map_err(other)?;
        let mut pp = IpcPingPong {
            numbers: Some(numbers),
            numbers_back,
            bytes: Some(bytes),
            bytes_back,
            child,
        };
        pp.round_trips(1);
        Ok(pp)
    }

    /// `iters` round trips of a `u64`.
    ///
    /// # Panics
    ///
    /// If the partner is gone.
    pub fn round_trips(&mut self, iters: u64) -> Duration {
        let tx = self.numbers.as_ref().expect("running");
        let start = Instant::now();
        for i in 0..iters {
            tx.send(i).expect("ipc partner alive");
            black_box(self.numbers_back.recv().expect("ipc partner alive"));
        }
        start.elapsed()
    }

    /// `iters` echoes of `len` bytes: each reply is the next message.
    ///
    /// # Panics
    ///
    /// If the partner is gone or sends back something else.
    pub fn echo(&mut self, len: usize, iters: u64) -> Duration {
        let tx = self.bytes.as_ref().expect("running");
        let mut v = crate::tasks::payload(len);
        let start = Instant::now();
        for _ in 0..iters {
            tx.send(&v).expect("ipc partner alive");
            v = self.bytes_back.recv().expect("ipc partner alive");
        }
        let elapsed = start.elapsed();
        assert_eq!(black_box(v).len(), len);
        elapsed
    }
}

impl Drop for IpcPingPong {
    fn drop(&mut self) {
        // Hanging up ends both of the partner's loops.
        self.numbers = None;
        self.bytes = None;
        let _ = self.child.wait();
    }
}
