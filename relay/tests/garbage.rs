//! Seeded random and mutated datagrams into the decoder and the TURN state machine, as a
//! CI-sized companion of the cargo-fuzz targets in `relay/fuzz`: nothing may panic, and a
//! well-formed client keeps working afterwards.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use relay::auth::{long_term_key, Credentials, Nonces};
use relay::server::{ClientAction, Config, FiveTuple, RelaySockets, Server, Transport, HEADROOM, TAILROOM};
use relay::stun::{self, attr, method, Builder, Class, Integrity};

struct Sockets;

impl RelaySockets for Sockets {
    fn bind(&mut self, ip: IpAddr, port: u16) -> std::io::Result<SocketAddr> {
        Ok(SocketAddr::new(ip, port))
    }
    fn close(&mut self, _: SocketAddr) {}
}

fn valid_messages() -> Vec<Vec<u8>> {
    let key = long_term_key("u", "r", "p");
    let peer: SocketAddr = "198.51.100.1:9".parse().unwrap();
    vec![
        Builder::new(method::BINDING, Class::Request, [1; 12]).fingerprint(),
        Builder::new(method::ALLOCATE, Class::Request, [2; 12]).attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).integrity(&key, Integrity::Sha1).fingerprint(),
        Builder::new(method::CREATE_PERMISSION, Class::Request, [3; 12]).xor_addr(attr::XOR_PEER_ADDRESS, peer).integrity(&key, Integrity::Sha256).fingerprint(),
        Builder::new(method::SEND, Class::Indication, [4; 12]).xor_addr(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, b"data").finish(),
        vec![0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4],
    ]
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let now = Instant::now();
    let creds = Credentials::Users([("u".to_string(), "p".to_string())].into_iter().collect());
    let mut server = Server::new(Config::new("r", creds, vec!["192.0.2.1".parse().unwrap()]), now, 1_800_000_000, Nonces::new(600));
    let tuple = FiveTuple { client: "203.0.113.1:1000".parse().unwrap(), server: "192.0.2.1:3478".parse().unwrap(), transport: Transport::Udp };
    let seeds = valid_messages();
    for i in 0..30_000u64 {
        let t = now + Duration::from_millis(i * 37);
        let mut d = if rng.random_bool(0.3) {
            (0..rng.random_range(0..200)).map(|_| rng.random()).collect::<Vec<u8>>()
        } else {
            seeds[rng.random_range(0..seeds.len())].clone()
        };
        for _ in 0..rng.random_range(0..4) {
            if d.is_empty() {
                break;
            }
            let at = rng.random_range(0..d.len());
            match rng.random_range(0..3) {
                0 => d[at] ^= 1 << rng.random_range(0..8),
                1 => d.truncate(at),
                _ => d.insert(at, rng.random()),
            }
        }
        let _ = stun::decode(&d);
        let _ = server.handle_client(t, tuple, &d, &mut Sockets);
        let mut buf = vec![0u8; HEADROOM + d.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + d.len()].copy_from_slice(&d);
        let _ = server.handle_peer(t, "192.0.2.1:50000".parse().unwrap(), "198.51.100.1:9".parse().unwrap(), &mut buf, d.len());
        server.handle_timeout(t, &mut Sockets);
        let _ = server.take_replies().count();
    }
    // Still serves a well-formed Binding request.
    let req = Builder::new(method::BINDING, Class::Request, [9; 12]).fingerprint();
    assert_eq!(server.handle_client(now + Duration::from_secs(5000), tuple, &req, &mut Sockets), ClientAction::None);
    let replies: Vec<_> = server.take_replies().collect();
    assert_eq!(replies.len(), 1);
    assert_eq!(stun::decode(&replies[0].data).unwrap().class, Class::Success);
}
