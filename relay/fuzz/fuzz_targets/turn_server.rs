//! Arbitrary datagrams from clients and peers into one TURN server state machine.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use relay::auth::{Credentials, Nonces};
use relay::server::{Config, FiveTuple, RelaySockets, Server, Transport, HEADROOM, TAILROOM};

struct Sockets;

impl RelaySockets for Sockets {
    fn bind(&mut self, ip: IpAddr, port: u16) -> std::io::Result<SocketAddr> {
        Ok(SocketAddr::new(ip, port))
    }
    fn close(&mut self, _: SocketAddr) {}
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let creds = Credentials::Users([("u".to_string(), "p".to_string())].into_iter().collect());
    let cfg = Config::new("r", creds, vec!["192.0.2.1".parse().unwrap()]);
    let mut server = Server::new(cfg, now, 1_800_000_000, Nonces::new(600));
    let tuple = FiveTuple { client: "203.0.113.1:1000".parse().unwrap(), server: "192.0.2.1:3478".parse().unwrap(), transport: Transport::Udp };
    // Split the input into datagrams at 0xFF 0xFF markers; odd ones come from a peer.
    for (i, chunk) in data.split(|b| *b == 0xFF).enumerate() {
        let t = now + Duration::from_secs(i as u64 * 7);
        if i % 2 == 0 {
            let _ = server.handle_client(t, tuple, chunk, &mut Sockets);
        } else {
            let mut buf = vec![0u8; HEADROOM + chunk.len() + TAILROOM];
            buf[HEADROOM..HEADROOM + chunk.len()].copy_from_slice(chunk);
            let _ = server.handle_peer(t, "192.0.2.1:50000".parse().unwrap(), "198.51.100.1:9".parse().unwrap(), &mut buf, chunk.len());
        }
        server.handle_timeout(t, &mut Sockets);
        let _ = server.take_replies().count();
    }
});
