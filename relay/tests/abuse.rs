//! Hostile clients against the real relay binary on loopback: each attack is contained and a
//! normal client beside it keeps its allocation working. Runs on its own with
//! `cargo test -p relay --test abuse`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relay::auth::long_term_key;
use relay::stun::{self, attr, method, Builder, Class, Integrity};

const REALM: &str = "abuse.test";
const USER: &str = "user";
const PASS: &str = "pass";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The relay on 127.0.0.1 with `extra` flags; returns it and its port once it answers.
fn relay(extra: &[&str]) -> (Kill, u16) {
    let port = free_port();
    let min = 20000 + (port % 20000);
    let child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--realm", REALM, "--cores", "1", "--no-tls"])
        .args(["--user", &format!("{USER}:{PASS}"), "-p", &port.to_string()])
        .args(["--min-port", &min.to_string(), "--max-port", &(min + 999).to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("relay binary");
    let k = Kill(child);
    let c = Client::new(port);
    for _ in 0..100 {
        if c.binding().is_some() {
            return (k, port);
        }
    }
    panic!("relay did not answer");
}

/// A TURN client over UDP with long-term credentials.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    nonce: Option<String>,
}

impl Client {
    fn new(port: u16) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Client { sock, server: SocketAddr::from(([127, 0, 0, 1], port)), nonce: None }
    }

    fn recv(&self, within: Duration) -> Option<Vec<u8>> {
        let end = Instant::now() + within;
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    }

    fn binding(&self) -> Option<Vec<u8>> {
        self.sock.send_to(&Builder::new(method::BINDING, Class::Request, rand::random()).fingerprint(), self.server).unwrap();
        self.recv(Duration::from_millis(200))
    }

    /// An authenticated request (answering the 401 challenge once); the error code, if any,
    /// and the decoded reply's XOR-RELAYED-ADDRESS.
    fn request(&mut self, m: u16, build: impl Fn(Builder) -> Builder) -> (Option<u16>, Option<SocketAddr>) {
        for _ in 0..3 {
            let mut b = build(Builder::new(m, Class::Request, rand::random()));
            if let Some(n) = &self.nonce {
                let key = long_term_key(USER, REALM, PASS);
                b = b.attr(attr::USERNAME, USER.as_bytes()).attr(attr::REALM, REALM.as_bytes()).attr(attr::NONCE, n.as_bytes()).integrity(&key, Integrity::Sha1);
            }
            self.sock.send_to(&b.fingerprint(), self.server).unwrap();
            let raw = self.recv(Duration::from_secs(2)).expect("an answer");
            let msg = stun::decode(&raw).expect("answers decode");
            let code = msg.get(attr::ERROR_CODE).map(|v| v[2] as u16 * 100 + v[3] as u16);
            if matches!(code, Some(401) | Some(438)) {
                self.nonce = msg.text(attr::NONCE).map(str::to_string);
                continue;
            }
            return (code, msg.get(attr::XOR_RELAYED_ADDRESS).and_then(|v| msg.xor_addr(v)));
        }
        panic!("still challenged");
    }

    fn allocate(&mut self) -> SocketAddr {
        let (code, relayed) = self.request(method::ALLOCATE, |b| b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]));
        assert_eq!(code, None, "allocate");
        relayed.expect("a relayed address")
    }

    fn permit(&mut self, peer: SocketAddr) -> Option<u16> {
        self.request(method::CREATE_PERMISSION, |b| b.xor_addr(attr::XOR_PEER_ADDRESS, peer)).0
    }

    fn send(&self, peer: SocketAddr, data: &[u8]) {
        let ind = Builder::new(method::SEND, Class::Indication, rand::random()).xor_addr(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, data).finish();
        self.sock.send_to(&ind, self.server).unwrap();
    }
}

#[test]
fn a_binding_sent_through_the_relay_to_its_own_port_never_comes_back() {
    // Loopback peers allowed (as in `local` mode): before, the relay's own listening socket
    // was such a peer, and a Binding sent to it came back as a Data indication.
    let (_relay, port) = relay(&["--allow-loopback-peers"]);
    let mut c = Client::new(port);
    c.allocate();
    let own = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(c.permit(own), None, "permissions are per address");
    c.send(own, &Builder::new(method::BINDING, Class::Request, rand::random()).fingerprint());
    assert!(c.recv(Duration::from_millis(700)).is_none(), "nothing comes back from the relay's own port");
    // A real peer on the same address still works, both ways.
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    c.send(peer_addr, b"hello");
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer gets the data");
    assert_eq!(&buf[..n], b"hello");
    peer.send_to(b"back", from).unwrap();
    let raw = c.recv(Duration::from_secs(2)).expect("a Data indication");
    assert_eq!(stun::decode(&raw).unwrap().get(attr::DATA), Some(&b"back"[..]));
}

/// Bytes answered to each unauthenticated request, from a server on `port`.
fn answers(port: u16) -> Vec<(&'static str, usize, usize)> {
    let c = Client::new(port);
    let requests: Vec<(&'static str, Vec<u8>)> = vec![
        ("binding", Builder::new(method::BINDING, Class::Request, rand::random()).finish()),
        ("binding+fingerprint", Builder::new(method::BINDING, Class::Request, rand::random()).fingerprint()),
        ("allocate", Builder::new(method::ALLOCATE, Class::Request, rand::random()).attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).finish()),
        ("allocate+fingerprint", Builder::new(method::ALLOCATE, Class::Request, rand::random()).attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).fingerprint()),
        ("refresh", Builder::new(method::REFRESH, Class::Request, rand::random()).finish()),
        ("malformed", vec![0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0xff, 0, 0]),
    ];
    requests
        .into_iter()
        .map(|(name, req)| {
            c.sock.send_to(&req, c.server).unwrap();
            let got = c.recv(Duration::from_secs(2)).map(|r| r.len()).unwrap_or(0);
            (name, req.len(), got)
        })
        .collect()
}

#[test]
fn unauthenticated_answers_amplify_less_than_coturn() {
    let (_ours, port) = relay(&[]);
    let ours = answers(port);
    let coturn_port = free_port();
    let coturn = Command::new("turnserver")
        .args(["-n", "--no-cli", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "-p", &coturn_port.to_string(), "--no-tls", "--no-dtls"])
        .args(["--user", &format!("{USER}:{PASS}"), "--realm", REALM, "-a", "-f", "--log-file", "stdout", "--simple-log"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("coturn's turnserver (bash .ci/test installs it)");
    let _coturn = Kill(coturn);
    let probe = Client::new(coturn_port);
    assert!((0..50).any(|_| probe.binding().is_some()), "coturn answers");
    let theirs = answers(coturn_port);
    let ratio = |v: &[(&str, usize, usize)]| v.iter().map(|(_, q, a)| *a as f64 / *q as f64).fold(0.0, f64::max);
    for ((name, q, a), (_, _, b)) in ours.iter().zip(&theirs) {
        println!("FIGURE relay_amplification request={name} request_bytes={q} ours_bytes={a} coturn_bytes={b}");
        assert!(a <= b, "{name}: {a} bytes against coturn's {b}");
    }
    println!("FIGURE relay_amplification_max ours={:.2} coturn={:.2}", ratio(&ours), ratio(&theirs));
    assert_eq!(ours.iter().filter(|(_, _, a)| *a > 0).count(), 5, "answered: bindings, allocates and the malformed request; a stray refresh is not: {ours:?}");
}

#[test]
fn a_spoofed_source_gets_a_bounded_number_of_answers() {
    let (_relay, port) = relay(&[]);
    let victim = Client::new(port);
    let req = Builder::new(method::BINDING, Class::Request, rand::random()).finish();
    for _ in 0..1000 {
        victim.sock.send_to(&req, victim.server).unwrap();
    }
    let mut answered = 0;
    while victim.recv(Duration::from_millis(300)).is_some() {
        answered += 1;
    }
    println!("FIGURE relay_reflection requests=1000 answers={answered}");
    assert!((60..=100).contains(&answered), "a burst of 64 (less the start-up probe) then 32 a second: {answered}");
    // A normal client from another address still allocates and relays.
    let mut normal = Client::new(port);
    normal.allocate();
}
