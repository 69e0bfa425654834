//! Interop with coturn's own client, `turnutils_uclient`, and its echo peer
//! `turnutils_peer` (Debian package `coturn`, client tools only): our relay on loopback.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port, spawn_relay, Kill};

fn wait_udp(port: u16) {
    // The relay answers a STUN Binding request once it is up.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let req = relay::stun::Builder::new(relay::stun::method::BINDING, relay::stun::Class::Request, [5; 12]).fingerprint();
    let end = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        let _ = s.send_to(&req, ("127.0.0.1", port));
        if s.recv(&mut buf).is_ok() {
            return;
        }
    }
    panic!("relay did not come up on {port}");
}

struct Setup {
    port: u16,
    tls_port: u16,
    peer_port: u16,
    _certs: Option<tempfile::TempDir>,
    _relay: Kill,
    _peer: Kill,
}

fn setup(extra: &[&str]) -> Setup {
    setup_with(extra, false)
}

fn setup_with(extra: &[&str], tls: bool) -> Setup {
    setup_full(extra, tls, "127.0.0.1")
}

fn setup_full(extra: &[&str], tls: bool, peer_ip: &str) -> Setup {
    let port = free_port();
    // turnutils_peer also listens on peer_port + 1 with SO_REUSEPORT; keep the relay clear of it.
    let peer_port = loop {
        let p = free_port();
        if p != port && p + 1 != port && p != port + 1 {
            break p;
        }
    };
    let tls_port = free_port();
    let certs_dir = tls.then(|| tempfile::tempdir().unwrap());
    let mut tls_args: Vec<String> = Vec::new();
    if let Some(d) = &certs_dir {
        let (paths, _) = certs::ensure_dev(d.path(), &certs::default_names(&[])).unwrap();
        tls_args = vec!["--cert".into(), paths.cert.display().to_string(), "--pkey".into(), paths.key.display().to_string()];
    }
    let mut args = tls_args;
    args.extend(["--realm", "north.gov", "--cores", "2", "--tls-listening-port", &tls_port.to_string()].iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let relay = spawn_relay(port, &args);
    let peer = Command::new("turnutils_peer")
        .args(["-p", &peer_port.to_string(), "-L", peer_ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer from the coturn package (bash .ci/test installs it)");
    let s = Setup { port, tls_port, peer_port, _certs: certs_dir, _relay: relay, _peer: Kill(peer) };
    wait_udp(port);
    s
}

/// One uclient run at a time: nine relays, echo peers and clients pacing packets at once on a
/// two-core machine stalled a relay for half a second once, and the burst overflowed a socket.
static ONE_CLIENT_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs turnutils_uclient; returns (sent, received, lost, output).
fn uclient(s: &Setup, flags: &[&str]) -> (u64, u64, Option<u64>, String) {
    let _turn = ONE_CLIENT_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("turnutils_uclient")
        .args(flags)
        .args(["-e", if flags.contains(&"-x") { "::1" } else { "127.0.0.1" }])
        .args(["-r", &s.peer_port.to_string(), "-n", "200", "-m", "4", "-l", "170", "-z", "5", "-c"])
        .args(["-p", &(if flags.contains(&"-S") { s.tls_port } else { s.port }).to_string(), "127.0.0.1"])
        .output()
        .expect("turnutils_uclient from the coturn package");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let grab = |key: &str| -> u64 {
        text.lines()
            .filter_map(|l| l.split(key).nth(1))
            .filter_map(|r| r.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok()))
            .next_back()
            .unwrap_or(0)
    };
    let lost = text.lines().filter_map(|l| l.split("Total lost packets ").nth(1)).filter_map(|r| r.split(' ').next().and_then(|d| d.parse().ok())).next_back();
    (grab("tot_send_msgs="), grab("tot_recv_msgs="), lost, text)
}

fn assert_clean(s: &Setup, flags: &[&str]) {
    let (sent, recv, lost, text) = uclient(s, flags);
    assert_eq!((sent, recv, lost), (800, 800, Some(0)), "flags {flags:?}:\n{text}");
}

#[test]
fn udp_with_channels() {
    let s = setup(&["--allow-loopback-peers", "--user", "test:secret"]);
    assert_clean(&s, &["-u", "test", "-w", "secret"]);
}

#[test]
fn udp_with_send_indications() {
    let s = setup(&["--allow-loopback-peers", "--user", "test:secret"]);
    assert_clean(&s, &["-s", "-u", "test", "-w", "secret"]);
}

#[test]
fn io_uring_backend_over_udp_and_tcp() {
    let s = setup(&["--allow-loopback-peers", "--user", "test:secret", "--io-uring"]);
    assert_clean(&s, &["-u", "test", "-w", "secret"]);
    assert_clean(&s, &["-t", "-u", "test", "-w", "secret"]);
}

#[test]
fn tcp_transport() {
    let s = setup(&["--allow-loopback-peers", "--user", "test:secret"]);
    assert_clean(&s, &["-t", "-u", "test", "-w", "secret"]);
}

#[test]
fn ipv6_relay_on_request() {
    let s = setup_full(&["--allow-loopback-peers", "--user", "test:secret", "--relay-ip", "::1"], false, "::1");
    assert_clean(&s, &["-x", "-u", "test", "-w", "secret"]);
}

#[test]
fn tls_transport() {
    let s = setup_with(&["--allow-loopback-peers", "--user", "test:secret"], true);
    assert_clean(&s, &["-t", "-S", "-u", "test", "-w", "secret"]);
}

#[test]
fn rest_credentials_and_a_wrong_secret() {
    let s = setup(&["--allow-loopback-peers", "--use-auth-secret", "--static-auth-secret", "northsecret"]);
    assert_clean(&s, &["-W", "northsecret", "-u", "alice"]);
    let (_, recv, lost, text) = uclient(&s, &["-W", "wrongsecret", "-u", "alice"]);
    assert_eq!((recv, lost), (0, None), "{text}");
    assert!(text.contains("Cannot complete Allocation"), "{text}");
}

#[test]
fn wrong_password_is_refused() {
    let s = setup(&["--allow-loopback-peers", "--user", "test:secret"]);
    let (_, recv, _, text) = uclient(&s, &["-u", "test", "-w", "nope"]);
    assert_eq!(recv, 0, "{text}");
    assert!(text.contains("Cannot complete Allocation"), "{text}");
}

#[test]
fn default_policy_refuses_a_loopback_peer() {
    let s = setup(&["--user", "test:secret"]);
    let (_, recv, _, text) = uclient(&s, &["-u", "test", "-w", "secret"]);
    assert_eq!(recv, 0, "{text}");
    assert!(text.contains("403"), "the relay must answer 403 Forbidden:\n{text}");
}
