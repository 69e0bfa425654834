//! Hostile clients against the real relay binary on loopback: each attack is contained and a
//! normal client beside it keeps its allocation working. Runs on its own with
//! `cargo test -p relay --test abuse`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use relay::auth::long_term_key;
use relay::stun::{self, attr, method, Builder, Class, Integrity};

const REALM: &str = "abuse.test";
const USER: &str = "user";
const PASS: &str = "pass";

mod common;

use common::{free_port, spawn_relay, Kill};

/// The relay on 127.0.0.1 with `extra` flags; returns it and its port once it answers.
fn relay(extra: &[&str]) -> (Kill, u16) {
    relay_with(extra, &["--no-tls"])
}

/// [`relay`] with TLS on `tls_port`, using a development certificate in `dir`.
fn relay_tls(extra: &[&str], dir: &std::path::Path, tls_port: u16) -> (Kill, u16) {
    let (paths, _) = certs::ensure_dev(dir, &certs::default_names(&[])).unwrap();
    let (cert, key) = (paths.cert.display().to_string(), paths.key.display().to_string());
    relay_with(extra, &["--cert", &cert, "--pkey", &key, "--tls-listening-port", &tls_port.to_string()])
}

fn relay_with(extra: &[&str], tls: &[&str]) -> (Kill, u16) {
    let port = free_port();
    let mut args: Vec<String> = ["--realm", REALM, "--cores", "1", "--user", &format!("{USER}:{PASS}")].iter().map(|s| s.to_string()).collect();
    args.extend(tls.iter().chain(extra).map(|s| s.to_string()));
    let k = spawn_relay(port, &args);
    let mut c = Client::new(port);
    for _ in 0..100 {
        if c.binding().is_some() {
            return (k, port);
        }
    }
    panic!("relay did not answer");
}

/// A TURN client over UDP or TCP with long-term credentials.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    tcp: Option<(TcpStream, Vec<u8>)>,
    nonce: Option<String>,
}

impl Client {
    fn new(port: u16) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Client { sock, server: SocketAddr::from(([127, 0, 0, 1], port)), tcp: None, nonce: None }
    }

    /// The same client over TCP.
    fn tcp(port: u16) -> Client {
        let mut c = Client::new(port);
        let s = TcpStream::connect(c.server).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        c.tcp = Some((s, Vec::new()));
        c
    }

    fn send_raw(&mut self, data: &[u8]) {
        match &mut self.tcp {
            Some((s, _)) => s.write_all(data).unwrap(),
            None => {
                self.sock.send_to(data, self.server).unwrap();
            }
        }
    }

    fn recv(&mut self, within: Duration) -> Option<Vec<u8>> {
        let end = Instant::now() + within;
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            match &mut self.tcp {
                Some((s, pending)) => {
                    if let Some(len) = stun::stream_frame_len(pending).filter(|l| pending.len() >= *l) {
                        return Some(pending.drain(..len).collect());
                    }
                    if let Ok(n) = s.read(&mut buf) {
                        pending.extend_from_slice(&buf[..n]);
                    }
                }
                None => {
                    if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                        return Some(buf[..n].to_vec());
                    }
                }
            }
        }
        None
    }

    fn binding(&mut self) -> Option<Vec<u8>> {
        self.send_raw(&Builder::new(method::BINDING, Class::Request, rand::random()).fingerprint());
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
            self.send_raw(&b.fingerprint());
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

    fn send(&mut self, peer: SocketAddr, data: &[u8]) {
        let ind = Builder::new(method::SEND, Class::Indication, rand::random()).xor_addr(attr::XOR_PEER_ADDRESS, peer).attr(attr::DATA, data).finish();
        self.send_raw(&ind);
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
    let mut c = Client::new(port);
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
            c.send_raw(&req);
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
    let mut probe = Client::new(coturn_port);
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
    let mut victim = Client::new(port);
    let req = Builder::new(method::BINDING, Class::Request, rand::random()).finish();
    for _ in 0..1000 {
        victim.send_raw(&req);
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

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// CPU seconds process `pid` has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

/// A UDP client allocates, and a peer's datagram comes back through it: the normal call.
fn normal_client_relays(port: u16) {
    let mut c = Client::new(port);
    c.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(c.permit(peer.local_addr().unwrap()), None);
    c.send(peer.local_addr().unwrap(), b"ping");
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).expect("the normal client's data reaches its peer");
    assert_eq!(&buf[..n], b"ping");
    peer.send_to(b"pong", from).unwrap();
    assert!(c.recv(Duration::from_secs(2)).is_some(), "and the answer comes back");
}

/// A TCP connection from the loopback address `from` (127.0.0.0/8 is all ours).
fn tcp_from(from: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(s.into())
}

/// When the relay closed each of `conns` (EOF or reset), measured from `since`, polling all of
/// them for up to `within`; None for those still open.
fn close_times(conns: &mut [TcpStream], since: Instant, within: Duration) -> Vec<Option<Duration>> {
    let mut when = vec![None; conns.len()];
    let mut b = [0u8; 16];
    for s in conns.iter() {
        s.set_nonblocking(true).unwrap();
    }
    while since.elapsed() < within && when.iter().any(Option::is_none) {
        for (s, w) in conns.iter_mut().zip(when.iter_mut()) {
            if w.is_none() {
                match s.read(&mut b) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    _ => *w = Some(since.elapsed()),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    when
}

#[test]
fn a_thousand_silent_tcp_connections_get_their_share_then_the_idle_deadline() {
    let (relay_proc, port) = relay(&["--allow-loopback-peers", "--max-connections-per-ip", "100", "--stream-idle-timeout", "2"]);
    let pid = relay_proc.0.id();
    let (rss0, cpu0) = (rss_kib(pid), cpu_secs(pid));
    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..1000).map(|_| tcp_from([127, 0, 0, 2], port).unwrap()).collect();
    normal_client_relays(port);
    let when = close_times(&mut silent, t0, Duration::from_secs(6));
    let rss = rss_kib(pid).saturating_sub(rss0);
    let at_once = when.iter().filter(|w| w.is_some_and(|d| d < Duration::from_millis(1500))).count();
    let at_deadline = when.iter().filter(|w| w.is_some_and(|d| d >= Duration::from_millis(1500))).count();
    println!("FIGURE relay_silent_tcp connections=1000 refused_at_once={at_once} closed_at_deadline={at_deadline} rss_growth_kib={rss} cpu_s={:.2}", cpu_secs(pid) - cpu0);
    assert_eq!(at_deadline, 100, "the address's 100 wait for the idle deadline");
    assert_eq!(at_once, 900, "the rest are refused at once");
    // A client on TCP that allocates is not cut at the deadline.
    let mut kept = Client::tcp(port);
    kept.allocate();
    std::thread::sleep(Duration::from_secs(3));
    assert!(kept.binding().is_some(), "an allocated TCP client stays");
    normal_client_relays(port);
}

#[test]
fn a_tcp_client_that_never_reads_while_its_peer_floods_costs_bounded_memory() {
    let (relay_proc, port) = relay(&["--allow-loopback-peers"]);
    let pid = relay_proc.0.id();
    let mut slow = Client::tcp(port);
    let relayed = slow.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(slow.permit(peer.local_addr().unwrap()), None);
    let (rss0, cpu0) = (rss_kib(pid), cpu_secs(pid));
    // 40,000 datagrams of 1000 bytes (40 MB) toward a client that reads nothing.
    let payload = [7u8; 1000];
    for i in 0..40_000 {
        let _ = peer.send_to(&payload, relayed);
        if i % 5000 == 0 {
            normal_client_relays(port);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let growth = rss_kib(pid).saturating_sub(rss0);
    println!("FIGURE relay_tcp_never_reads flood_mb=40 rss_growth_kib={growth} cpu_s={:.2}", cpu_secs(pid) - cpu0);
    assert!(growth < 16 * 1024, "the queue toward the client is bounded: {growth} KiB");
    normal_client_relays(port);
}

#[test]
fn silent_tls_connections_get_their_share_then_the_handshake_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let tls_port = free_port();
    let (_relay, port) = relay_tls(&["--allow-loopback-peers", "--max-connections-per-ip", "100", "--stream-idle-timeout", "2"], dir.path(), tls_port);
    let t0 = Instant::now();
    let mut silent: Vec<TcpStream> = (0..300).map(|_| tcp_from([127, 0, 0, 3], tls_port).unwrap()).collect();
    normal_client_relays(port);
    let when = close_times(&mut silent, t0, Duration::from_secs(6));
    let at_deadline = when.iter().filter(|w| w.is_some_and(|d| d >= Duration::from_millis(1500))).count();
    let at_once = when.iter().filter(|w| w.is_some_and(|d| d < Duration::from_millis(1500))).count();
    println!("FIGURE relay_silent_tls connections=300 refused_at_once={at_once} closed_at_deadline={at_deadline}");
    assert_eq!((at_once, at_deadline), (200, 100));
    normal_client_relays(port);
}

#[test]
fn twenty_thousand_refreshes_and_permissions_on_one_allocation_cost_the_relay_little() {
    let (relay_proc, port) = relay(&["--allow-loopback-peers"]);
    let pid = relay_proc.0.id();
    let mut c = Client::new(port);
    c.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (rss0, cpu0) = (rss_kib(pid), cpu_secs(pid));
    let t0 = Instant::now();
    for i in 0..20_000u32 {
        let code = if i % 2 == 0 { c.request(method::REFRESH, |b| b.u32(attr::LIFETIME, 600)).0 } else { c.permit(peer) };
        assert_eq!(code, None, "request {i}");
        if i % 5000 == 0 {
            normal_client_relays(port);
        }
    }
    let (took, cpu) = (t0.elapsed(), cpu_secs(pid) - cpu0);
    // Nothing is left to work through at the deadlines: the relay idles afterwards.
    let cpu1 = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs(2));
    let idle = cpu_secs(pid) - cpu1;
    let growth = rss_kib(pid).saturating_sub(rss0);
    println!("FIGURE relay_refresh_flood requests=20000 wall_s={:.2} cpu_s={cpu:.2} idle_cpu_s_after={idle:.2} rss_growth_kib={growth}", took.as_secs_f64());
    assert!(cpu < 5.0, "20,000 requests cost the relay {cpu:.2} s of CPU");
    assert!(idle < 0.2, "the relay idles after them ({idle:.2} s in 2 s)");
    assert!(growth < 8 * 1024, "no memory kept per request: {growth} KiB");
    normal_client_relays(port);
}

#[test]
fn create_permission_to_each_denied_range_is_refused_by_the_binary() {
    // The default policy: no --allow-loopback-peers.
    let (_relay, port) = relay(&[]);
    let mut c = Client::new(port);
    let relayed = c.allocate();
    let denied = ["127.0.0.1:9", "10.1.2.3:9", "172.16.0.1:9", "192.168.1.1:9", "100.64.0.1:9", "169.254.169.254:80", "198.18.0.1:9", "198.19.200.1:9", "224.0.0.251:9", "239.255.255.250:9", "255.255.255.255:9", "0.0.0.0:9"];
    let mut codes = Vec::new();
    for p in denied.iter().map(|p| p.parse::<SocketAddr>().unwrap()).chain([relayed, SocketAddr::from(([127, 0, 0, 1], port))]) {
        codes.push((p, c.permit(p)));
    }
    println!("FIGURE relay_denied_peers tried={} refused_403={}", codes.len(), codes.iter().filter(|(_, code)| *code == Some(403)).count());
    for (p, code) in &codes {
        assert_eq!(*code, Some(403), "{p}");
    }
    // A public peer is allowed, and the allocation still works.
    assert_eq!(c.permit("8.8.8.8:53".parse().unwrap()), None, "a public peer");
}
