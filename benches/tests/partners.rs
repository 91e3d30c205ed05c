//! The ping-pong partners answer and go away: the socketpair, shared-memory (futex and spin)
//! and ipc-channel partners, each a re-execution of this test binary, which is why this test
//! has its own `main` (`harness = false`): [`cf_benches::init`] must catch the partner first.
//!
//! No timing is asserted; a watchdog turns a hang into a failure.

use std::time::Duration;

use cf_benches::ipc::IpcPingPong;
use cf_benches::memory;
use cf_benches::physical::{Message, PingPong};
use cf_benches::shm_pingpong::{ShmPingPong, Wait};

fn main() {
    cf_benches::init();
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        eprintln!("partners: hung for 120 s");
        std::process::exit(1);
    });

    let before = memory::children();
    for how in [Wait::Futex, Wait::Spin] {
        let mut shm = ShmPingPong::start(how).expect("shared-memory partner");
        shm.run(1_000);
        assert_eq!(
            memory::children().len(),
            before.len() + 1,
            "{how:?}: one partner"
        );
        drop(shm);
        assert_eq!(memory::children(), before, "{how:?}: the partner is reaped");
    }

    let mut ipc = IpcPingPong::start().expect("ipc-channel partner");
    ipc.round_trips(100);
    for len in [0, 1, 1 << 10, 3 << 20] {
        // `echo` checks the length that comes back.
        ipc.echo(len, 3);
    }
    drop(ipc);
    assert_eq!(
        memory::children(),
        before,
        "ipc-channel: the partner is reaped"
    );

    let mut socket = PingPong::start().expect("socketpair partner");
    socket
        .round_trip(&Message::new(&[7; 100]))
        .expect("an answer");
    drop(socket);
    assert_eq!(
        memory::children(),
        before,
        "socketpair: the partner is reaped"
    );
    println!("partners: ok");
}
