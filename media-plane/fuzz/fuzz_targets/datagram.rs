//! Arbitrary datagrams into a core that hosts a connected call, as if sent from a
//! participant's verified address and from a stranger's: the demux (STUN, DTLS, RTP, RTCP)
//! and everything behind it must neither panic nor stop the call.
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use media_plane::sim::World;

thread_local! {
    static WORLD: RefCell<World> = RefCell::new({
        let mut w = World::new();
        w.join("a", "room", true);
        w.join("b", "room", false);
        w.connect_all();
        w.run_media(5);
        w
    });
}

fuzz_target!(|data: &[u8]| {
    WORLD.with(|w| {
        let mut w = w.borrow_mut();
        let known = w.peers[0].addr;
        let stranger: SocketAddr = "198.51.100.9:4000".parse().unwrap_or(known);
        let now = w.now;
        w.core.handle_datagram(now, known, data);
        w.core.handle_datagram(now, stranger, data);
        // Keep the clock moving so timers and outputs run as in a real loop.
        w.step(std::time::Duration::from_millis(1));
    });
});
