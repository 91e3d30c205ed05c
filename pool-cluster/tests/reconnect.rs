//! A client that loses its connection while its tasks run (the nodes keep theirs) and gets it
//! back: its futures survive and get the results recorded meanwhile; tasks submitted while it
//! was away are published when it is back.

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cf_pool_cluster::{ClusterExecutor, Executor};
use common::{Node, Server, LIMIT};
use parking_lot::Mutex;

#[test]
fn node_entry() {
    common::node_entry();
}

/// A TCP forwarder to the server that can cut every connection and refuse new ones.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (c, l) = (Arc::clone(&cut), Arc::clone(&live));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut live = l.lock();
                live.push(client.try_clone().unwrap());
                live.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, live }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.live.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Waits for the release file, then leaves `done-{i}` and returns `i * 2`.
fn held((dir, i): (String, u64)) -> u64 {
    let dir = Path::new(&dir);
    let start = Instant::now();
    while !dir.join("release").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "never released");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::write(dir.join(format!("done-{i}")), b"");
    i * 2
}

fn double(x: u64) -> u64 {
    x * 2
}

#[test]
fn client_reconnects_and_keeps_its_futures() {
    let Some(server) = Server::start() else {
        return;
    };
    let _nodes = [
        Node::start(&server.url(), "test", 2, None),
        Node::start(&server.url(), "test", 2, None),
    ];
    let proxy = Proxy::start(server.port);
    let executor = ClusterExecutor::builder(&proxy.url())
        .pool("test")
        // Shorter than the cut below: time without a connection must not count as time
        // without nodes.
        .node_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("cf-cluster-reconnect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.to_string_lossy().into_owned();
    let held: Vec<_> = (0..4)
        .map(|i| executor.submit(held, (path.clone(), i)).unwrap())
        .collect();
    let start = Instant::now();
    while !held.iter().all(|f| f.running()) {
        assert!(start.elapsed() < LIMIT, "the held tasks never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    proxy.cut();
    // Submitted while the client is cut off.
    let while_away: Vec<_> = (10..20)
        .map(|i| executor.submit(double, i).unwrap())
        .collect();
    std::fs::write(dir.join("release"), b"").unwrap();
    // The nodes finish (and record) the held tasks while the client cannot see it.
    let start = Instant::now();
    while (0..4).any(|i| !dir.join(format!("done-{i}")).exists()) {
        assert!(start.elapsed() < LIMIT, "the held tasks never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(4500));
    assert!(
        held.iter().all(|f| !f.done()),
        "the client cannot have seen results while cut off"
    );
    proxy.restore();
    for (i, f) in (0..).zip(&held) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&(i * 2)));
    }
    for (i, f) in (10..).zip(&while_away) {
        assert_eq!(f.result_timeout(LIMIT), Ok(&(i * 2)));
    }
    drop(executor);
    let _ = std::fs::remove_dir_all(&dir);
}
