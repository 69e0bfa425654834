//! The TURN state machine on a virtual clock: no sockets, no sleeps.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use relay::auth::{long_term_key, rest_password, rest_username, Credentials, Nonces};
use relay::policy::PeerPolicy;
use relay::server::{ClientAction, Config, FiveTuple, RelaySockets, Server, Transport, HEADROOM, TAILROOM};
use relay::stun::{self, attr, method, Builder, Class, Integrity};

const UNIX: u64 = 1_800_000_000;
const PEER: &str = "198.51.100.7:5000";

#[derive(Default)]
struct FakeSockets {
    open: HashSet<SocketAddr>,
    busy: HashSet<u16>,
    closed: Vec<SocketAddr>,
}

impl RelaySockets for FakeSockets {
    fn bind(&mut self, ip: IpAddr, port: u16) -> std::io::Result<SocketAddr> {
        if self.busy.contains(&port) {
            return Err(std::io::Error::from(std::io::ErrorKind::AddrInUse));
        }
        let a = SocketAddr::new(ip, port);
        self.open.insert(a);
        Ok(a)
    }
    fn close(&mut self, addr: SocketAddr) {
        self.open.remove(&addr);
        self.closed.push(addr);
    }
}

struct World {
    now: Instant,
    server: Server,
    sockets: FakeSockets,
}

struct Client {
    tuple: FiveTuple,
    user: String,
    password: String,
    nonce: Option<String>,
    integrity: Integrity,
}

struct Resp {
    class: Class,
    code: Option<u16>,
    attrs: HashMap<u16, Vec<u8>>,
    raw: Vec<u8>,
}

impl Resp {
    fn addr(&self, typ: u16) -> Option<SocketAddr> {
        let m = stun::decode(&self.raw).unwrap();
        m.get(typ).and_then(|v| m.xor_addr(v))
    }
}

fn users() -> Credentials {
    Credentials::Users(HashMap::from([("alice".to_string(), "wonderland".to_string()), ("bob".to_string(), "builder".to_string())]))
}

impl World {
    fn new(f: impl FnOnce(&mut Config)) -> World {
        let now = Instant::now();
        let mut cfg = Config::new("example.org", users(), vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()]);
        cfg.min_port = 50000;
        cfg.max_port = 50099;
        f(&mut cfg);
        World { now, server: Server::new(cfg, now, UNIX, Nonces::new(600)), sockets: FakeSockets::default() }
    }

    fn client(&self, n: u8, user: &str, password: &str) -> Client {
        Client {
            tuple: FiveTuple { client: format!("203.0.113.{n}:40000").parse().unwrap(), server: "192.0.2.1:3478".parse().unwrap(), transport: Transport::Udp },
            user: user.into(),
            password: password.into(),
            nonce: None,
            integrity: Integrity::Sha1,
        }
    }

    fn send(&mut self, c: &Client, data: &[u8]) -> Option<Resp> {
        let action = self.server.handle_client(self.now, c.tuple, data, &mut self.sockets);
        assert_eq!(action, ClientAction::None);
        let replies: Vec<_> = self.server.take_replies().collect();
        let r = replies.into_iter().next()?;
        let m = stun::decode(&r.data).expect("replies decode");
        let code = m.get(attr::ERROR_CODE).map(|v| v[2] as u16 * 100 + v[3] as u16);
        let mut attrs = HashMap::new();
        for t in [attr::REALM, attr::NONCE, attr::LIFETIME, attr::UNKNOWN_ATTRIBUTES] {
            if let Some(v) = m.get(t) {
                attrs.insert(t, v.to_vec());
            }
        }
        Some(Resp { class: m.class, code, attrs, raw: r.data.clone() })
    }

    /// Sends an authenticated request, answering one 401/438 challenge.
    fn request(&mut self, c: &mut Client, m: u16, build: impl Fn(Builder) -> Builder) -> Resp {
        for _ in 0..2 {
            let tid: [u8; 12] = rand::random();
            let mut b = build(Builder::new(m, Class::Request, tid));
            if let Some(n) = &c.nonce {
                let key = long_term_key(&c.user, "example.org", &c.password);
                b = b.attr(attr::USERNAME, c.user.as_bytes()).attr(attr::REALM, b"example.org").attr(attr::NONCE, n.as_bytes()).integrity(&key, c.integrity);
            }
            let r = self.send(c, &b.fingerprint()).expect("a reply");
            if matches!(r.code, Some(401) | Some(438)) && (c.nonce.is_none() || r.code == Some(438)) {
                c.nonce = Some(String::from_utf8(r.attrs[&attr::NONCE].clone()).unwrap());
                continue;
            }
            return r;
        }
        panic!("still challenged");
    }

    fn allocate(&mut self, c: &mut Client) -> Resp {
        self.request(c, method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]))
    }

    fn permit(&mut self, c: &mut Client, peer: &str) -> Resp {
        let p: SocketAddr = peer.parse().unwrap();
        self.request(c, method::CREATE_PERMISSION, |b| b.xor_addr(attr::XOR_PEER_ADDRESS, p))
    }

    fn bind(&mut self, c: &mut Client, ch: u16, peer: &str) -> Resp {
        let p: SocketAddr = peer.parse().unwrap();
        self.request(c, method::CHANNEL_BIND, |b| b.attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0]).xor_addr(attr::XOR_PEER_ADDRESS, p))
    }

    /// A peer sends `payload` to `relay`; returns what the client receives, if anything.
    fn peer_sends(&mut self, relay: SocketAddr, peer: &str, payload: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; HEADROOM + payload.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
        let (_, range) = self.server.handle_peer(self.now, relay, peer.parse().unwrap(), &mut buf, payload.len())?;
        Some(buf[range].to_vec())
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.server.handle_timeout(self.now, &mut self.sockets);
    }
}

fn send_indication(peer: &str, data: &[u8]) -> Vec<u8> {
    Builder::new(method::SEND, Class::Indication, rand::random()).xor_addr(attr::XOR_PEER_ADDRESS, peer.parse().unwrap()).attr(attr::DATA, data).finish()
}

#[test]
fn allocate_needs_credentials_then_succeeds_and_retransmits_idempotently() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    let tid = [1u8; 12];
    let plain = Builder::new(method::ALLOCATE, Class::Request, tid).attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).fingerprint();
    let r = w.send(&c, &plain).unwrap();
    assert_eq!(r.code, Some(401));
    assert_eq!(r.attrs[&attr::REALM], b"example.org");
    let r = w.allocate(&mut c);
    assert_eq!((r.class, r.code), (Class::Success, None), "{:?}", r.code);
    let relay = r.addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(relay.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
    assert!((50000..=50099).contains(&relay.port()));
    assert_eq!(r.attrs[&attr::LIFETIME], 600u32.to_be_bytes());
    assert_eq!(r.addr(attr::XOR_MAPPED_ADDRESS), Some(c.tuple.client));
    let m = stun::decode(&r.raw).unwrap();
    assert!(m.verify(&long_term_key("alice", "example.org", "wonderland")));
    // A second Allocate with another transaction id on the same 5-tuple: 437.
    let r = w.allocate(&mut c);
    assert_eq!(r.code, Some(437));
    assert_eq!(w.server.allocation_count(), 1);
}

#[test]
fn wrong_password_unknown_user_and_stale_nonce() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "not-it");
    assert_eq!(w.allocate(&mut c).code, Some(401));
    let mut c = w.client(2, "mallory", "x");
    assert_eq!(w.allocate(&mut c).code, Some(401));
    let mut c = w.client(3, "bob", "builder");
    assert_eq!(w.allocate(&mut c).code, None);
    // The nonce goes stale after 600 s; the client is told 438 and retries with a new one.
    w.advance(500);
    assert_eq!(w.request(&mut c, method::REFRESH, |b| b).code, None);
    w.advance(150);
    let old = c.nonce.clone();
    let r = w.request(&mut c, method::REFRESH, |b| b);
    assert_eq!(r.code, None);
    assert_ne!(c.nonce, old);
}

#[test]
fn rest_credentials_are_checked_and_expire() {
    let mut w = World::new(|cfg| cfg.credentials = Credentials::Secret("s3cret".into()));
    let user = rest_username(UNIX + 3600, "alice");
    let mut c = w.client(1, &user, &rest_password("s3cret", &user));
    assert_eq!(w.allocate(&mut c).code, None);
    let mut wrong = w.client(2, &user, &rest_password("other", &user));
    assert_eq!(w.allocate(&mut wrong).code, Some(401));
    let old = rest_username(UNIX - 1, "alice");
    let mut expired = w.client(3, &old, &rest_password("s3cret", &old));
    assert_eq!(w.allocate(&mut expired).code, Some(401));
}

#[test]
fn message_integrity_sha256_is_accepted_and_answered_in_kind() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    c.integrity = Integrity::Sha256;
    let r = w.allocate(&mut c);
    assert_eq!(r.code, None);
    let m = stun::decode(&r.raw).unwrap();
    assert_eq!(m.integrity(), Some(Integrity::Sha256));
}

#[test]
fn send_indication_and_data_indication_need_a_permission() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    let relay = w.allocate(&mut c).addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    let ind = send_indication(PEER, b"hello");
    assert_eq!(w.server.handle_client(w.now, c.tuple, &ind, &mut w.sockets), ClientAction::None, "no permission yet");
    assert!(w.peer_sends(relay, PEER, b"back").is_none());
    assert_eq!(w.permit(&mut c, PEER).code, None);
    match w.server.handle_client(w.now, c.tuple, &ind, &mut w.sockets) {
        ClientAction::Relay { relay: r, peer, data } => {
            assert_eq!((r, peer, data), (relay, PEER.parse().unwrap(), &b"hello"[..]));
        }
        other => panic!("{other:?}"),
    }
    let got = w.peer_sends(relay, PEER, b"back").unwrap();
    let m = stun::decode(&got).unwrap();
    assert_eq!((m.method, m.class), (method::DATA, Class::Indication));
    assert_eq!(m.get(attr::DATA), Some(&b"back"[..]));
    assert_eq!(m.xor_addr(m.get(attr::XOR_PEER_ADDRESS).unwrap()), Some(PEER.parse().unwrap()));
    // Permissions are per IP: another port of the same peer IP is fine, another IP is not.
    assert!(w.peer_sends(relay, "198.51.100.7:6000", b"x").is_some());
    assert!(w.peer_sends(relay, "198.51.100.8:5000", b"x").is_none());
}

#[test]
fn channels_carry_channel_data_both_ways_and_reject_conflicts() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    let relay = w.allocate(&mut c).addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(w.bind(&mut c, 0x4001, PEER).code, None);
    let cd = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
    match w.server.handle_client(w.now, c.tuple, &cd, &mut w.sockets) {
        ClientAction::Relay { data, .. } => assert_eq!(data, b"abc"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.peer_sends(relay, PEER, b"xyz").unwrap(), vec![0x40, 0x01, 0x00, 0x03, b'x', b'y', b'z']);
    assert_eq!(w.bind(&mut c, 0x4002, PEER).code, Some(400), "peer already bound to another channel");
    assert_eq!(w.bind(&mut c, 0x4001, "198.51.100.9:1").code, Some(400), "channel bound to another peer");
    assert_eq!(w.bind(&mut c, 0x3FFF, "198.51.100.9:1").code, Some(400), "channel number out of range");
    assert_eq!(w.bind(&mut c, 0x4001, PEER).code, None, "rebinding refreshes");
    // Unknown channel: dropped.
    let cd = [0x40, 0x09, 0x00, 0x01, b'a', 0, 0, 0];
    assert_eq!(w.server.handle_client(w.now, c.tuple, &cd, &mut w.sockets), ClientAction::None);
}

#[test]
fn lifetimes_run_on_the_clock() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    let relay = w.allocate(&mut c).addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert_eq!(w.bind(&mut c, 0x4001, PEER).code, None);
    w.advance(299);
    assert!(w.peer_sends(relay, PEER, b"x").is_some(), "permission lasts 300 s");
    w.advance(2);
    assert!(w.peer_sends(relay, PEER, b"x").is_none(), "permission expired");
    assert_eq!(w.permit(&mut c, PEER).code, None);
    // Refresh keeps the allocation past its first 600 s (now until 901 s).
    assert_eq!(w.request(&mut c, method::REFRESH, |b| b.u32(attr::LIFETIME, 600)).code, None);
    w.advance(300);
    // At 601 s the channel (600 s) and the permission from 301 s have both expired.
    assert!(w.peer_sends(relay, PEER, b"x").is_none());
    assert!(w.sockets.open.contains(&relay));
    w.advance(200);
    assert_eq!(w.server.allocation_count(), 1);
    w.advance(101);
    assert_eq!(w.server.allocation_count(), 0, "allocation expired");
    assert!(!w.sockets.open.contains(&relay));
    assert_eq!(w.permit(&mut c, PEER).code, Some(437));
}

#[test]
fn refresh_with_lifetime_zero_deletes() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    let relay = w.allocate(&mut c).addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    let r = w.request(&mut c, method::REFRESH, |b| b.u32(attr::LIFETIME, 0));
    assert_eq!((r.code, r.attrs[&attr::LIFETIME].clone()), (None, 0u32.to_be_bytes().to_vec()));
    assert_eq!(w.server.allocation_count(), 0);
    assert!(w.sockets.closed.contains(&relay));
    assert_eq!(w.request(&mut c, method::REFRESH, |b| b).code, Some(437));
}

#[test]
fn default_policy_refuses_loopback_and_private_peers() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    w.allocate(&mut c);
    for p in ["127.0.0.1:9", "10.0.0.1:9", "192.168.1.1:9", "[::ffff:127.0.0.1]:9"] {
        let r = if p.starts_with('[') { None } else { Some(w.permit(&mut c, p)) };
        if let Some(r) = r {
            assert_eq!(r.code, Some(403), "{p}");
        }
    }
    assert_eq!(w.bind(&mut c, 0x4001, "127.0.0.1:9").code, Some(403));
    let mut w = World::new(|cfg| cfg.policy = PeerPolicy { allow_loopback: true, ..Default::default() });
    let mut c = w.client(1, "alice", "wonderland");
    w.allocate(&mut c);
    assert_eq!(w.permit(&mut c, "127.0.0.1:9").code, None);
}

#[test]
fn error_codes() {
    // 442 and 400 on REQUESTED-TRANSPORT, 420 on an unknown required attribute.
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    assert_eq!(w.request(&mut c, method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0])).code, Some(442));
    assert_eq!(w.request(&mut c, method::ALLOCATE, |b| b).code, Some(400));
    let r = w.request(&mut c, method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(0x0077, &[0; 4]));
    assert_eq!((r.code, r.attrs.get(&attr::UNKNOWN_ATTRIBUTES).cloned()), (Some(420), Some(vec![0x00, 0x77])));
    // 440 for a family the server has no relay address of.
    let mut w4 = World::new(|cfg| cfg.relay_ips = vec!["192.0.2.1".parse().unwrap()]);
    let mut c4 = w4.client(1, "alice", "wonderland");
    assert_eq!(w4.request(&mut c4, method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0])).code, Some(440));
    // IPv6 relay when asked.
    let r = w.request(&mut c, method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]));
    assert!(r.addr(attr::XOR_RELAYED_ADDRESS).unwrap().is_ipv6());
    // 441: another user on an existing allocation's 5-tuple.
    let mut other = w.client(1, "bob", "builder");
    assert_eq!(w.request(&mut other, method::REFRESH, |b| b).code, Some(441));
    // 437: no allocation (authenticated; unauthenticated, such a request gets no answer).
    let mut c2 = w.client(2, "alice", "wonderland");
    let stray = Builder::new(method::CREATE_PERMISSION, Class::Request, rand::random()).xor_addr(attr::XOR_PEER_ADDRESS, PEER.parse().unwrap()).fingerprint();
    assert!(w.send(&c2, &stray).is_none());
    c2.nonce = c.nonce.clone();
    assert_eq!(w.permit(&mut c2, PEER).code, Some(437));
    // 443: IPv4 peer on an IPv6 allocation.
    assert_eq!(w.permit(&mut c, PEER).code, Some(443));
}

#[test]
fn quotas_and_port_exhaustion() {
    let mut w = World::new(|cfg| cfg.user_quota = 1);
    let mut a = w.client(1, "alice", "wonderland");
    let mut a2 = w.client(2, "alice", "wonderland");
    let mut b = w.client(3, "bob", "builder");
    assert_eq!(w.allocate(&mut a).code, None);
    assert_eq!(w.allocate(&mut a2).code, Some(486));
    assert_eq!(w.allocate(&mut b).code, None);
    let mut w = World::new(|cfg| cfg.total_quota = 1);
    let mut a = w.client(1, "alice", "wonderland");
    let mut b = w.client(3, "bob", "builder");
    assert_eq!(w.allocate(&mut a).code, None);
    assert_eq!(w.allocate(&mut b).code, Some(486));
    let mut w = World::new(|_| {});
    w.sockets.busy = (50000..=50099).collect();
    let mut a = w.client(1, "alice", "wonderland");
    assert_eq!(w.allocate(&mut a).code, Some(508));
}

#[test]
fn bandwidth_cap_drops_excess() {
    let mut w = World::new(|cfg| cfg.max_bps = 80_000); // 10 kB/s
    let mut c = w.client(1, "alice", "wonderland");
    w.allocate(&mut c);
    w.bind(&mut c, 0x4001, PEER);
    let mut frame = vec![0x40, 0x01, 0x03, 0xE8];
    frame.extend_from_slice(&[0u8; 1000]);
    let passed = (0..50).filter(|_| matches!(w.server.handle_client(w.now, c.tuple, &frame, &mut w.sockets), ClientAction::Relay { .. })).count();
    assert!((9..=11).contains(&passed), "one second of burst at 10 kB/s, got {passed}");
}

#[test]
fn malformed_input_is_dropped_or_answered_400_and_others_are_undisturbed() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    let relay = w.allocate(&mut c).addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    w.permit(&mut c, PEER);
    let junk: Vec<Vec<u8>> = vec![vec![], vec![0; 3], vec![0xff; 64], vec![0x40, 0x01, 0xff, 0xff], {
        // A request header with a length that runs past the datagram.
        let mut v = Builder::new(method::ALLOCATE, Class::Request, [3; 12]).attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).finish();
        v[3] = 0x40;
        v
    }];
    let stranger = w.client(9, "x", "y");
    for j in &junk {
        let _ = w.server.handle_client(w.now, c.tuple, j, &mut w.sockets);
        let _ = w.server.handle_client(w.now, stranger.tuple, j, &mut w.sockets);
    }
    let replies: Vec<_> = w.server.take_replies().collect();
    assert!(replies.iter().all(|r| stun::decode(&r.data).unwrap().get(attr::ERROR_CODE).is_some_and(|v| v[2] == 4 && v[3] == 0)));
    assert!(w.peer_sends(relay, PEER, b"still fine").is_some());
    assert!(w.server.counters().dropped >= 5);
}

#[test]
fn twenty_thousand_refreshes_and_permissions_leave_one_timer_entry() {
    let mut w = World::new(|_| {});
    let mut c = w.client(1, "alice", "wonderland");
    let relay = w.allocate(&mut c).addr(attr::XOR_RELAYED_ADDRESS).unwrap();
    for i in 0..20_000u32 {
        if i % 2 == 0 {
            assert_eq!(w.request(&mut c, method::REFRESH, |b| b.u32(attr::LIFETIME, 600)).code, None);
        } else {
            assert_eq!(w.permit(&mut c, PEER).code, None);
        }
        if i % 1000 == 0 {
            w.now += Duration::from_millis(100);
        }
    }
    // One live entry, and at most the one the first permission left behind.
    assert!(w.server.pending_deadlines() <= 2, "{} timer entries", w.server.pending_deadlines());
    // Lifetimes still run: the permission lapses, then the allocation.
    w.advance(301);
    assert!(w.peer_sends(relay, PEER, b"x").is_none());
    assert_eq!(w.server.allocation_count(), 1);
    w.advance(300);
    assert_eq!(w.server.allocation_count(), 0);
    assert_eq!(w.server.pending_deadlines(), 0);
}

#[test]
fn permissions_and_channels_per_allocation_are_capped() {
    let mut w = World::new(|cfg| {
        cfg.max_permissions = 4;
        cfg.max_channels = 2;
    });
    let mut c = w.client(1, "alice", "wonderland");
    w.allocate(&mut c);
    for i in 1..=4 {
        assert_eq!(w.permit(&mut c, &format!("198.51.100.{i}:1")).code, None);
    }
    assert_eq!(w.permit(&mut c, "198.51.100.5:1").code, Some(508), "a fifth peer");
    assert_eq!(w.permit(&mut c, "198.51.100.4:9").code, None, "refreshing a peer it has is fine");
    assert_eq!(w.bind(&mut c, 0x4001, "198.51.100.1:1").code, None);
    assert_eq!(w.bind(&mut c, 0x4002, "198.51.100.2:1").code, None);
    assert_eq!(w.bind(&mut c, 0x4003, "198.51.100.3:1").code, Some(508), "a third channel");
    assert_eq!(w.bind(&mut c, 0x4001, "198.51.100.1:1").code, None, "refreshing a channel");
    // Once they expire, there is room again.
    assert_eq!(w.request(&mut c, method::REFRESH, |b| b.u32(attr::LIFETIME, 3600)).code, None);
    w.advance(601);
    assert_eq!(w.bind(&mut c, 0x4005, "198.51.100.7:1").code, None);
    assert_eq!(w.bind(&mut c, 0x4006, "198.51.100.8:1").code, None);
    for i in 9..=10 {
        assert_eq!(w.permit(&mut c, &format!("198.51.100.{i}:1")).code, None);
    }
    assert_eq!(w.permit(&mut c, "198.51.100.11:1").code, Some(508));
}

#[test]
fn create_permission_to_each_denied_range_is_403() {
    let mut w = World::new(|_| {});
    let mut c4 = w.client(1, "alice", "wonderland");
    w.allocate(&mut c4);
    for p in ["198.18.0.1:9", "198.19.200.1:9", "224.0.0.251:9", "239.255.255.250:9", "255.255.255.255:9", "0.0.0.0:9", "100.64.0.1:9", "169.254.169.254:80"] {
        assert_eq!(w.permit(&mut c4, p).code, Some(403), "{p}");
    }
    let mut c6 = w.client(2, "bob", "builder");
    w.request(&mut c6, method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]));
    for p in ["[64:ff9b::7f00:1]:9", "[64:ff9b:1::a00:1]:9", "[2002:7f00:1::1]:9", "[2001:0:4136:e378::1]:9", "[fec0::1]:9", "[ff02::1]:9", "[ff0e::fb]:9", "[fd00::1]:9", "[::1]:9"] {
        assert_eq!(w.permit(&mut c6, p).code, Some(403), "{p}");
    }
    assert_eq!(w.permit(&mut c6, "[2001:db8::7]:9").code, None, "a public IPv6 peer");
}

#[test]
fn the_relay_never_relays_to_its_own_sockets() {
    let mut w = World::new(|cfg| {
        cfg.policy.own = relay::policy::OwnSockets { ips: vec!["192.0.2.1".parse().unwrap()], ports: vec!["3478".parse().unwrap(), "5349".parse().unwrap()] };
    });
    let mut c = w.client(1, "alice", "wonderland");
    w.allocate(&mut c);
    // The permission is per address: a service on the relay's own host stays reachable.
    assert_eq!(w.permit(&mut c, "192.0.2.1:1").code, None);
    let binding = Builder::new(method::BINDING, Class::Request, rand::random()).fingerprint();
    for own in ["192.0.2.1:3478", "192.0.2.1:5349"] {
        assert_eq!(w.server.handle_client(w.now, c.tuple, &send_indication(own, &binding), &mut w.sockets), ClientAction::None, "{own}");
        assert_eq!(w.bind(&mut c, 0x4001, own).code, Some(403), "{own}");
    }
    // Another port of the host, such as another client's relayed address, is a peer like any other.
    for other in ["192.0.2.1:40000", "192.0.2.1:50042"] {
        match w.server.handle_client(w.now, c.tuple, &send_indication(other, b"ok"), &mut w.sockets) {
            ClientAction::Relay { peer, .. } => assert_eq!(peer, other.parse().unwrap()),
            refused => panic!("{other}: {refused:?}"),
        }
    }
}

#[test]
fn unauthenticated_answers_are_small_and_rate_limited_per_address() {
    let mut w = World::new(|cfg| {
        cfg.unauthenticated_burst = 5;
        cfg.unauthenticated_per_second = 2;
    });
    let attacker = w.client(66, "alice", "wonderland");
    let binding = Builder::new(method::BINDING, Class::Request, rand::random()).finish();
    let allocate = Builder::new(method::ALLOCATE, Class::Request, rand::random()).attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).finish();
    let b = w.send(&attacker, &binding).expect("a binding answer");
    let m = stun::decode(&b.raw).unwrap();
    assert!(m.get(attr::SOFTWARE).is_none(), "no SOFTWARE to anyone who asks");
    assert!(b.raw.len() <= 2 * binding.len(), "binding: {} bytes for {}", b.raw.len(), binding.len());
    let c = w.send(&attacker, &allocate).expect("a challenge");
    assert_eq!(c.code, Some(401));
    assert!(c.attrs[&attr::NONCE].len() <= 20 && stun::decode(&c.raw).unwrap().get(attr::SOFTWARE).is_none());
    // The rest of the burst, then nothing until the bucket refills.
    let answered = (0..20).filter(|_| w.send(&attacker, &binding).is_some()).count();
    assert_eq!(answered, 3);
    // Another address is answered; an authenticated client is not held back.
    let mut other = w.client(7, "bob", "builder");
    assert!(w.send(&other, &binding).is_some());
    w.allocate(&mut other);
    w.now += Duration::from_secs(1);
    assert_eq!((0..5).filter(|_| w.send(&attacker, &binding).is_some()).count(), 2, "two a second");
}
