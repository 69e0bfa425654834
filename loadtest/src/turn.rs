//! TURN load: each allocation relays between the load tester (as TURN client) and a synthetic
//! UDP peer. The client sends ChannelData at a set rate; the peer stamps and echoes every
//! packet back through the relayed address. Both directions are measured like media streams.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use relay::stun::{self, attr, method, Class, Integrity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::peer::{Ctx, PeerError};
use crate::scenario::{TurnScenario, TurnTransport};
use crate::stats::{self, Counters, Stream};

/// How the client reaches the TURN server.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
}

impl Link {
    async fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Link::Udp(s) => match s.try_send(b) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => s.send(b).await.map(|_| ()),
                r => r.map(|_| ()),
            },
            Link::Tcp(s, _) => {
                // ChannelData is padded to a multiple of 4 on streams (RFC 8656 §12.5).
                let pad = if stun::is_channel_data(b) { (4 - b.len() % 4) % 4 } else { 0 };
                s.write_all(b).await?;
                if pad > 0 {
                    s.write_all(&[0u8; 3][..pad]).await?;
                }
                Ok(())
            }
        }
    }

    /// Receives one datagram or stream frame into `out`.
    async fn recv(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        match self {
            Link::Udp(s) => {
                out.resize(2048, 0);
                let n = s.recv(out).await?;
                out.truncate(n);
                Ok(())
            }
            Link::Tcp(s, buf) => loop {
                if let Some(n) = stun::stream_frame_len(buf) {
                    if buf.len() >= n {
                        out.clear();
                        out.extend_from_slice(&buf[..n]);
                        buf.drain(..n);
                        return Ok(());
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }
}

/// The credentials of one client.
struct Auth {
    user: String,
    key: [u8; 16],
    realm: String,
    nonce: String,
}

fn tid() -> [u8; 12] {
    rand::random()
}

/// Sends a request and waits for its response (retransmitting on UDP).
async fn transact(link: &mut Link, req: &[u8], buf: &mut Vec<u8>) -> Result<(), PeerError> {
    let want: [u8; 12] = req[8..20].try_into().map_err(|_| PeerError::Refused("short request".into()))?;
    for _ in 0..5 {
        link.send(req).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
        loop {
            match tokio::time::timeout_at(deadline, link.recv(buf)).await {
                Err(_) => break,
                Ok(r) => r?,
            }
            if stun::is_stun(buf) && buf[8..20] == want {
                return Ok(());
            }
        }
    }
    Err(PeerError::Refused("TURN server did not answer".into()))
}

fn error_code(m: &stun::Message<'_>) -> Option<u16> {
    m.get(attr::ERROR_CODE).filter(|v| v.len() >= 4).map(|v| (v[2] & 7) as u16 * 100 + v[3] as u16)
}

impl Auth {
    fn sign(&self, b: stun::Builder) -> Vec<u8> {
        b.attr(attr::USERNAME, self.user.as_bytes())
            .attr(attr::REALM, self.realm.as_bytes())
            .attr(attr::NONCE, self.nonce.as_bytes())
            .integrity(&self.key, Integrity::Sha1)
            .fingerprint()
    }

    /// Sends an authenticated request; on 438 (stale nonce) retries once with the new nonce.
    async fn request(&mut self, link: &mut Link, make: &dyn Fn() -> stun::Builder, buf: &mut Vec<u8>) -> Result<(), PeerError> {
        for _ in 0..2 {
            transact(link, &self.sign(make()), buf).await?;
            let m = stun::decode(buf).map_err(|e| PeerError::Refused(format!("bad STUN from the server: {e}")))?;
            match m.class {
                Class::Success => return Ok(()),
                _ => match error_code(&m) {
                    Some(438) => self.nonce = m.text(attr::NONCE).unwrap_or_default().to_string(),
                    code => return Err(PeerError::Refused(format!("TURN error {}", code.unwrap_or(0)))),
                },
            }
        }
        Err(PeerError::Refused("TURN nonce keeps going stale".into()))
    }
}

/// One allocation relaying between this client and its own UDP peer until `end`.
pub async fn allocation(t: &TurnScenario, local_ip: IpAddr, index: usize, start: Instant, until: Instant, end: Instant, ctx: &Ctx) -> Result<(), PeerError> {
    tokio::time::sleep_until(start.into()).await;
    let join_start = Instant::now();
    let server: SocketAddr = tokio::net::lookup_host(&t.server).await?.next().ok_or_else(|| PeerError::Refused(format!("{} does not resolve", t.server)))?;
    let mut link = match t.transport {
        TurnTransport::Udp => {
            let s = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
            s.connect(server).await?;
            Link::Udp(s)
        }
        TurnTransport::Tcp => {
            let s = TcpStream::connect(server).await?;
            let _ = s.set_nodelay(true);
            Link::Tcp(s, Vec::new())
        }
    };
    let peer = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let peer_addr = peer.local_addr()?;
    let mut buf = Vec::with_capacity(2048);

    // Allocate: the first attempt only learns realm and nonce (401).
    let alloc = || stun::Builder::new(method::ALLOCATE, Class::Request, tid()).u32(attr::REQUESTED_TRANSPORT, 17 << 24).u32(attr::LIFETIME, 600);
    transact(&mut link, &alloc().fingerprint(), &mut buf).await?;
    let m = stun::decode(&buf).map_err(|e| PeerError::Refused(format!("bad STUN from the server: {e}")))?;
    if error_code(&m) != Some(401) {
        return Err(PeerError::Refused(format!("expected 401 to an unauthenticated Allocate, got {:?}", error_code(&m))));
    }
    let realm = if t.realm.is_empty() { m.text(attr::REALM).unwrap_or_default().to_string() } else { t.realm.clone() };
    let nonce = m.text(attr::NONCE).unwrap_or_default().to_string();
    let (user, password) = match (&t.user, &t.secret) {
        (Some(up), _) => up.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())).ok_or_else(|| PeerError::Refused("turn.user must be user:password".into()))?,
        (None, Some(secret)) => {
            let expiry = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 3600;
            let user = relay::auth::rest_username(expiry, &format!("loadtest{index}"));
            let pass = relay::auth::rest_password(secret, &user);
            (user, pass)
        }
        (None, None) => return Err(PeerError::Refused("no TURN credentials".into())),
    };
    let mut auth = Auth { key: relay::auth::long_term_key(&user, &realm, &password), user, realm, nonce };
    auth.request(&mut link, &alloc, &mut buf).await?;
    let m = stun::decode(&buf).map_err(|e| PeerError::Refused(e.to_string()))?;
    let relayed = m.get(attr::XOR_RELAYED_ADDRESS).and_then(|v| m.xor_addr(v)).ok_or_else(|| PeerError::Refused("no XOR-RELAYED-ADDRESS".into()))?;
    let channel = 0x4000 + (index % 0x1000) as u16;
    let perm = || stun::Builder::new(method::CREATE_PERMISSION, Class::Request, tid()).xor_addr(attr::XOR_PEER_ADDRESS, peer_addr);
    auth.request(&mut link, &perm, &mut buf).await?;
    let bind = || stun::Builder::new(method::CHANNEL_BIND, Class::Request, tid()).u32(attr::CHANNEL_NUMBER, (channel as u32) << 16).xor_addr(attr::XOR_PEER_ADDRESS, peer_addr);
    auth.request(&mut link, &bind, &mut buf).await?;
    Counters::bump(&ctx.counters.connected, 1);

    let gap = Duration::from_secs_f64(1.0 / t.rate_pps);
    let mut out = vec![0u8; 4 + t.packet_size];
    out[0..2].copy_from_slice(&channel.to_be_bytes());
    out[2..4].copy_from_slice(&(t.packet_size as u16).to_be_bytes());
    let mut echo = vec![0u8; 2048];
    let mut seq = 0u64;
    let mut next = Instant::now();
    let mut there: Option<Stream> = None;
    let mut back: Option<Stream> = None;
    let mut first = true;
    let mut sleep = pin!(tokio::time::sleep_until(next.into()));
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::select! {
            _ = &mut sleep => {
                let now = Instant::now();
                if now < until {
                    seq += 1;
                    stats::stamp(&mut out[4..], &[0; stats::PREFIX], seq, stats::ns_since(ctx.epoch, now));
                    link.send(&out).await?;
                    Counters::bump(&ctx.counters.sent, 1);
                    next = if next + gap < now { now + gap } else { next + gap };
                    sleep.as_mut().reset(next.min(end).into());
                } else {
                    sleep.as_mut().reset(end.into());
                }
            }
            r = peer.recv_from(&mut echo) => {
                let (n, from) = r?;
                if from != relayed {
                    continue;
                }
                if let Some(stats::Stamp { seq: s, sent_ns: sent, .. }) = stats::read_stamp(&echo[..n]) {
                    let now = Instant::now();
                    record(ctx, &mut there, (index as u64) << 1, s, sent, now, join_start, &mut first, n);
                    // Echo with a fresh stamp so the way back is measured on its own.
                    stats::stamp(&mut echo[..n], &[0; stats::PREFIX], s, stats::ns_since(ctx.epoch, now));
                    let _ = peer.try_send_to(&echo[..n], relayed);
                    Counters::bump(&ctx.counters.sent, 1);
                }
            }
            r = link.recv(&mut buf) => {
                r?;
                if let Some((ch, data)) = stun::channel_data(&buf) {
                    if ch == channel {
                        if let Some(stats::Stamp { seq: s, sent_ns: sent, .. }) = stats::read_stamp(data) {
                            let n = data.len();
                            record(ctx, &mut back, ((index as u64) << 1) | 1, s, sent, Instant::now(), join_start, &mut first, n);
                        }
                    }
                }
            }
        }
    }
    ctx.sink.borrow_mut().streams.extend(there.into_iter().chain(back));
    // Release the allocation (Refresh with lifetime 0).
    let release = || stun::Builder::new(method::REFRESH, Class::Request, tid()).u32(attr::LIFETIME, 0);
    let _ = tokio::time::timeout(Duration::from_secs(2), auth.request(&mut link, &release, &mut buf)).await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn record(ctx: &Ctx, stream: &mut Option<Stream>, key: u64, seq: u64, sent: u64, now: Instant, join_start: Instant, first: &mut bool, bytes: usize) {
    let now_ns = stats::ns_since(ctx.epoch, now);
    let mut sink = ctx.sink.borrow_mut();
    if *first {
        *first = false;
        let _ = sink.join.record((now - join_start).as_micros().max(1) as u64);
    }
    let s = stream.get_or_insert_with(|| Stream::new(key, seq, now_ns, sent));
    let lost = sink.record(s, seq, sent, now_ns);
    Counters::bump(&ctx.counters.received, 1);
    Counters::bump(&ctx.counters.bytes, bytes as u64);
    if lost > 0 {
        Counters::bump(&ctx.counters.lost, lost as u64);
    }
}
