//! The TURN server state machine of one core (sans-IO): allocations, permissions, channel
//! bindings and their expiry, fed with datagrams and time.
//!
//! Expiry works by deadlines: one heap of (deadline, allocation) entries, checked lazily,
//! with no timer per object. An allocation has one live entry, at its earliest deadline;
//! entries it left behind when that deadline moved are dropped when they come due. Relayed data is never copied: [`Server::handle_client`] returns
//! a slice of the client's datagram to send to the peer, and [`Server::handle_peer`] frames
//! the peer's data in place, in headroom the caller leaves in front of it.

pub use crate::counters::{refusal_slot, Counters, REFUSAL_CODES};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use crate::allocation::{Allocation, Full};
use crate::auth::{long_term_key, Credentials, NonceCheck, Nonces};
use crate::policy::PeerPolicy;
use limits::{Bucket, PerSource};
use crate::stun::{self, attr, method, Builder, Class, Integrity, Message};

/// Bytes a caller leaves in front of peer data for [`Server::handle_peer`].
pub const HEADROOM: usize = 48;
/// Bytes a caller leaves after peer data (padding of a Data indication).
pub const TAILROOM: usize = 4;

/// Transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

/// The 5-tuple that identifies an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Client address.
    pub client: SocketAddr,
    /// Server address the client talks to.
    pub server: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// Limits and lifetimes, with coturn's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Realm.
    pub realm: String,
    /// Credentials.
    pub credentials: Credentials,
    /// Relay addresses by family (first IPv4, first IPv6).
    pub relay_ips: Vec<IpAddr>,
    /// Address advertised instead of a relay IP (`--external-ip public[/private]`).
    pub external_ip: Vec<(IpAddr, Option<IpAddr>)>,
    /// Lowest relay port.
    pub min_port: u16,
    /// Highest relay port.
    pub max_port: u16,
    /// This core's index and the number of cores: ports are split so cores never collide.
    pub shard: (u16, u16),
    /// Allocations per username (0: unlimited).
    pub user_quota: usize,
    /// Allocations in total on this core (0: unlimited).
    pub total_quota: usize,
    /// Bits per second per allocation (0: unlimited).
    pub max_bps: u64,
    /// Peer address policy.
    pub policy: PeerPolicy,
    /// Default allocation lifetime (600 s).
    pub default_lifetime: Duration,
    /// Largest allocation lifetime (3600 s).
    pub max_lifetime: Duration,
    /// Permission lifetime (300 s).
    pub permission_lifetime: Duration,
    /// Channel lifetime (600 s).
    pub channel_lifetime: Duration,
    /// Peers one allocation may hold permissions for (more: 508).
    pub max_permissions: usize,
    /// Channels one allocation may bind (more: 508).
    pub max_channels: usize,
    /// Answers to unauthenticated requests (Binding, challenges, errors) one source address
    /// may get at once on this core, then per second; more are dropped.
    pub unauthenticated_burst: u32,
    /// See `unauthenticated_burst`.
    pub unauthenticated_per_second: u32,
    /// SOFTWARE attribute.
    pub software: String,
}

impl Config {
    /// A configuration with coturn's defaults.
    pub fn new(realm: &str, credentials: Credentials, relay_ips: Vec<IpAddr>) -> Self {
        Config {
            realm: realm.to_string(),
            credentials,
            relay_ips,
            external_ip: Vec::new(),
            min_port: 49152,
            max_port: 65535,
            shard: (0, 1),
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            policy: PeerPolicy::default(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            max_permissions: 64,
            max_channels: 64,
            unauthenticated_burst: 64,
            unauthenticated_per_second: 32,
            software: concat!("conference-relay/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Binds relay sockets for the server (the edge where I/O happens).
pub trait RelaySockets {
    /// Binds a UDP socket on `ip:port`; returns the bound address.
    fn bind(&mut self, ip: IpAddr, port: u16) -> std::io::Result<SocketAddr>;
    /// Closes the socket bound on `addr`.
    fn close(&mut self, addr: SocketAddr);
}

/// What to do with a client datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAction<'a> {
    /// Nothing (dropped, or a response is waiting in [`Server::take_replies`]).
    None,
    /// Send `data` from the relay socket `relay` to `peer`.
    Relay {
        /// Relay socket.
        relay: SocketAddr,
        /// Peer.
        peer: SocketAddr,
        /// Application data (borrowed from the client's datagram).
        data: &'a [u8],
    },
}

/// A reply to send to a client.
#[derive(Debug)]
pub struct Reply {
    /// Where to.
    pub tuple: FiveTuple,
    /// Encoded message.
    pub data: Vec<u8>,
}

/// The TURN server of one core.
pub struct Server {
    cfg: Config,
    nonces: Nonces,
    start: Instant,
    start_unix: u64,
    allocations: HashMap<u64, Allocation>,
    by_tuple: HashMap<FiveTuple, u64>,
    by_relay: HashMap<SocketAddr, u64>,
    per_user: HashMap<String, usize>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    unauthenticated: PerSource,
    next_id: u64,
    next_port: u16,
    replies: Vec<Reply>,
    counters: Counters,
}

/// An error answer before it is encoded.
struct Refusal {
    code: u16,
    reason: &'static str,
    /// Attach REALM and a fresh NONCE (401, 438).
    challenge: bool,
    unknown: Vec<u16>,
}

/// A refusal and the key to sign it with, when the request was authenticated.
type Refused = (Refusal, Option<[u8; 16]>);

/// An authenticated request being answered.
struct Asked<'m, 'a> {
    now: Instant,
    tuple: FiveTuple,
    msg: &'m Message<'a>,
    key: [u8; 16],
}

fn refuse(code: u16, reason: &'static str) -> Refusal {
    Refusal { code, reason, challenge: false, unknown: Vec::new() }
}

impl Server {
    /// A server with no allocations; `unix_now` anchors the clock used for REST expiry.
    pub fn new(cfg: Config, now: Instant, unix_now: u64, nonces: Nonces) -> Self {
        let span = (cfg.max_port.saturating_sub(cfg.min_port) as u32 + 1).max(1);
        let offset = (rand::random::<u32>() % span) as u16;
        let unauthenticated = PerSource::new(cfg.unauthenticated_burst, cfg.unauthenticated_per_second, 65_536);
        Server {
            next_port: cfg.min_port.saturating_add(offset),
            cfg,
            nonces,
            start: now,
            start_unix: unix_now,
            allocations: HashMap::new(),
            by_tuple: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            deadlines: BinaryHeap::new(),
            unauthenticated,
            next_id: 1,
            replies: Vec::new(),
            counters: Counters::default(),
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.start_unix + now.saturating_duration_since(self.start).as_secs()
    }

    /// Replies produced since the last call.
    pub fn take_replies(&mut self) -> std::vec::Drain<'_, Reply> {
        self.replies.drain(..)
    }

    /// Live allocations on this core.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Earliest deadline, for the timer.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }

    /// Entries in the timer heap (live and left behind), for tests and metrics.
    pub fn pending_deadlines(&self) -> usize {
        self.deadlines.len()
    }

    /// Expires allocations, permissions and channels whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant, sockets: &mut dyn RelaySockets) {
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            let Some(a) = self.allocations.get_mut(&id) else { continue };
            if a.scheduled != Some(t) {
                continue; // left behind when the deadline moved
            }
            a.scheduled = None;
            if a.expires <= now {
                self.delete(id, sockets);
                continue;
            }
            a.expire(now);
            self.schedule(id);
        }
    }

    /// Makes sure allocation `id` has a heap entry no later than its earliest deadline; adds
    /// one only when that deadline moved earlier, so refreshes add nothing.
    fn schedule(&mut self, id: u64) {
        let Some(a) = self.allocations.get_mut(&id) else { return };
        let next = a.next_deadline();
        if a.scheduled.is_none_or(|s| next < s) {
            a.scheduled = Some(next);
            self.deadlines.push(Reverse((next, id)));
        }
    }

    fn delete(&mut self, id: u64, sockets: &mut dyn RelaySockets) {
        if let Some(a) = self.allocations.remove(&id) {
            self.by_tuple.remove(&a.tuple);
            self.by_relay.remove(&a.relay);
            if let Some(n) = self.per_user.get_mut(&a.username) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_user.remove(&a.username);
                }
            }
            sockets.close(a.relay);
            tracing::debug!(relay = %a.relay, user = %a.username, "allocation deleted");
        }
    }

    /// Whether the client on `tuple` holds an allocation.
    pub fn has_allocation(&self, tuple: &FiveTuple) -> bool {
        self.by_tuple.contains_key(tuple)
    }

    /// Removes every allocation of a client connection (TCP/TLS close).
    pub fn connection_closed(&mut self, tuple: FiveTuple, sockets: &mut dyn RelaySockets) {
        if let Some(id) = self.by_tuple.get(&tuple).copied() {
            self.delete(id, sockets);
        }
    }

    /// Handles one datagram (or stream frame) from a client.
    pub fn handle_client<'a>(&mut self, now: Instant, tuple: FiveTuple, data: &'a [u8], sockets: &mut dyn RelaySockets) -> ClientAction<'a> {
        if stun::is_channel_data(data) {
            return self.channel_data(now, tuple, data);
        }
        let msg = match stun::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.counters.dropped += 1;
                // A request whose header is readable gets 400; anything else is dropped.
                if stun::is_stun(data) && data[0] & 0x01 == 0 && data[1] & 0x10 == 0 && self.may_answer_unauthenticated(now, tuple) {
                    tracing::debug!(client = %tuple.client, error = %e, "malformed request");
                    let mut tid = [0u8; 12];
                    tid.copy_from_slice(&data[8..20]);
                    let m = u16::from_be_bytes([data[0], data[1]]) & 0x3EEF;
                    let reply = Builder::new(m, Class::Error, tid).error(400, "Bad Request").fingerprint();
                    self.replies.push(Reply { tuple, data: reply });
                }
                return ClientAction::None;
            }
        };
        match (msg.method, msg.class) {
            (method::BINDING, Class::Request) => {
                // As small as the protocol allows (no SOFTWARE): anyone may ask, from any address.
                if self.may_answer_unauthenticated(now, tuple) {
                    let reply = Builder::new(method::BINDING, Class::Success, msg.tid).xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client).fingerprint();
                    self.replies.push(Reply { tuple, data: reply });
                }
                ClientAction::None
            }
            (method::SEND, Class::Indication) => self.send_indication(now, tuple, msg),
            // Without credentials and without an allocation, only an Allocate deserves an answer
            // (the challenge); anything else is a probe or a reflection attempt.
            (method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND, Class::Request) if msg.integrity().is_none() && !self.by_tuple.contains_key(&tuple) => {
                self.counters.dropped += 1;
                ClientAction::None
            }
            (method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND, Class::Request) => {
                let (m, tid, integrity) = (msg.method, msg.tid, msg.integrity().unwrap_or(Integrity::Sha1));
                match self.request(now, tuple, &msg, sockets) {
                    Ok(reply) => self.replies.push(Reply { tuple, data: reply }),
                    Err((_, None)) if !self.may_answer_unauthenticated(now, tuple) => {}
                    Err((refusal, key)) => {
                        tracing::debug!(client = %tuple.client, method = m, code = refusal.code, "request refused");
                        self.counters.refused[refusal_slot(refusal.code)] += 1;
                        let mut b = Builder::new(m, Class::Error, tid).error(refusal.code, refusal.reason);
                        if !refusal.unknown.is_empty() {
                            let v: Vec<u8> = refusal.unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
                            b = b.attr(attr::UNKNOWN_ATTRIBUTES, &v);
                        }
                        if refusal.challenge {
                            let nonce = self.nonces.issue(self.unix(now));
                            b = b.attr(attr::REALM, self.cfg.realm.as_bytes()).attr(attr::NONCE, nonce.as_bytes());
                        }
                        if let Some(key) = key {
                            b = b.integrity(&key, integrity);
                        }
                        self.replies.push(Reply { tuple, data: b.fingerprint() });
                    }
                }
                ClientAction::None
            }
            _ => {
                self.counters.dropped += 1;
                ClientAction::None
            }
        }
    }

    /// Whether an answer to an unauthenticated request may go to `tuple`'s source now: such
    /// answers are rate-limited per address, since a spoofed source turns them into reflection.
    fn may_answer_unauthenticated(&mut self, now: Instant, tuple: FiveTuple) -> bool {
        if self.unauthenticated.take(tuple.client.ip(), now) {
            return true;
        }
        self.counters.dropped += 1;
        false
    }

    fn channel_data<'a>(&mut self, now: Instant, tuple: FiveTuple, data: &'a [u8]) -> ClientAction<'a> {
        let Some((ch, payload)) = stun::channel_data(data) else {
            self.counters.dropped += 1;
            return ClientAction::None;
        };
        let Some(a) = self.by_tuple.get(&tuple).and_then(|id| self.allocations.get_mut(id)) else {
            self.counters.dropped += 1;
            return ClientAction::None;
        };
        let Some(&(peer, exp)) = a.channels.get(&ch) else {
            self.counters.dropped += 1;
            return ClientAction::None;
        };
        if exp <= now || !a.permitted(peer.ip(), now) || !a.within_rate(now, payload.len()) {
            self.counters.dropped += 1;
            return ClientAction::None;
        }
        self.counters.to_peer += 1;
        self.counters.bytes_to_peer += payload.len() as u64;
        ClientAction::Relay { relay: a.relay, peer, data: payload }
    }

    fn send_indication<'a>(&mut self, now: Instant, tuple: FiveTuple, msg: Message<'a>) -> ClientAction<'a> {
        let peer = msg.get(attr::XOR_PEER_ADDRESS).and_then(|v| msg.xor_addr(v));
        let data = msg.get(attr::DATA);
        let a = self.by_tuple.get(&tuple).and_then(|id| self.allocations.get_mut(id));
        if let (Some(a), Some(peer), Some(data)) = (a, peer, data) {
            if a.permitted(peer.ip(), now) && self.cfg.policy.permits_peer(peer) && a.within_rate(now, data.len()) {
                self.counters.to_peer += 1;
                self.counters.bytes_to_peer += data.len() as u64;
                return ClientAction::Relay { relay: a.relay, peer, data };
            }
        }
        self.counters.dropped += 1;
        ClientAction::None
    }

    /// Authenticates a request; returns (username, key).
    fn authenticate(&self, now: Instant, msg: &Message<'_>) -> Result<(String, [u8; 16]), Refused> {
        let challenge = |code, reason| (Refusal { code, reason, challenge: true, unknown: Vec::new() }, None);
        if msg.integrity().is_none() {
            return Err(challenge(401, "Unauthorized"));
        }
        let (Some(user), Some(realm), Some(nonce)) = (msg.text(attr::USERNAME), msg.text(attr::REALM), msg.text(attr::NONCE)) else {
            return Err((refuse(400, "Bad Request"), None));
        };
        match self.nonces.check(nonce, self.unix(now)) {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => return Err(challenge(438, "Stale Nonce")),
        }
        if realm != self.cfg.realm {
            return Err(challenge(401, "Unauthorized"));
        }
        let Ok(password) = self.cfg.credentials.password(user, self.unix(now)) else {
            return Err(challenge(401, "Unauthorized"));
        };
        let key = long_term_key(user, &self.cfg.realm, &password);
        if !msg.verify(&key) {
            return Err(challenge(401, "Unauthorized"));
        }
        Ok((user.to_string(), key))
    }

    fn success(&self, msg: &Message<'_>, key: &[u8; 16], f: impl FnOnce(Builder) -> Builder) -> Vec<u8> {
        let b = f(Builder::new(msg.method, Class::Success, msg.tid)).attr(attr::SOFTWARE, self.cfg.software.as_bytes());
        b.integrity(key, msg.integrity().unwrap_or(Integrity::Sha1)).fingerprint()
    }

    fn request(&mut self, now: Instant, tuple: FiveTuple, msg: &Message<'_>, sockets: &mut dyn RelaySockets) -> Result<Vec<u8>, Refused> {
        let unknown = msg.unknown_required();
        if !unknown.is_empty() {
            return Err((Refusal { code: 420, reason: "Unknown Attribute", challenge: false, unknown }, None));
        }
        let (user, key) = self.authenticate(now, msg)?;
        let existing = self.by_tuple.get(&tuple).copied();
        if let Some(id) = existing {
            if self.allocations.get(&id).is_some_and(|a| a.username != user) {
                return Err((refuse(441, "Wrong Credentials"), Some(key)));
            }
        }
        let asked = Asked { now, tuple, msg, key };
        let answer = match (msg.method, existing) {
            (method::ALLOCATE, Some(id)) => self.allocate_again(id, msg),
            (method::ALLOCATE, None) => self.allocate(&asked, user, sockets),
            (_, None) => Err(refuse(437, "Allocation Mismatch")),
            (method::REFRESH, Some(id)) => self.refresh(&asked, id, sockets),
            (method::CREATE_PERMISSION, Some(id)) => self.create_permission(&asked, id),
            (method::CHANNEL_BIND, Some(id)) => self.channel_bind(&asked, id),
            _ => Err(refuse(400, "Bad Request")),
        };
        answer.map_err(|r| (r, Some(key)))
    }

    /// A second Allocate on the same 5-tuple: a retransmission gets the same answer.
    fn allocate_again(&self, id: u64, msg: &Message<'_>) -> Result<Vec<u8>, Refusal> {
        match self.allocations.get(&id) {
            Some(a) if a.allocate_tid == msg.tid => Ok(a.allocate_response.clone()),
            _ => Err(refuse(437, "Allocation Mismatch")),
        }
    }

    fn allocate(&mut self, q: &Asked<'_, '_>, user: String, sockets: &mut dyn RelaySockets) -> Result<Vec<u8>, Refusal> {
        let (now, tuple, msg) = (q.now, q.tuple, q.msg);
        let Some(transport) = msg.get(attr::REQUESTED_TRANSPORT) else {
            return Err(refuse(400, "Bad Request"));
        };
        if transport.first() != Some(&17) {
            return Err(refuse(442, "Unsupported Transport Protocol"));
        }
        if msg.get(attr::RESERVATION_TOKEN).is_some() {
            return Err(refuse(508, "Insufficient Capacity"));
        }
        let want_v6 = match msg.get(attr::REQUESTED_ADDRESS_FAMILY).map(|v| v.first().copied()) {
            None => false,
            Some(Some(1)) => false,
            Some(Some(2)) => true,
            Some(_) => return Err(refuse(440, "Address Family not Supported")),
        };
        let Some(ip) = self.cfg.relay_ips.iter().copied().find(|i| i.is_ipv6() == want_v6) else {
            return Err(refuse(440, "Address Family not Supported"));
        };
        if self.cfg.total_quota > 0 && self.allocations.len() >= self.cfg.total_quota {
            return Err(refuse(486, "Allocation Quota Reached"));
        }
        if self.cfg.user_quota > 0 && self.per_user.get(&user).copied().unwrap_or(0) >= self.cfg.user_quota {
            return Err(refuse(486, "Allocation Quota Reached"));
        }
        let lifetime = self.lifetime(msg);
        let relay = self.bind_port(ip, sockets).ok_or_else(|| refuse(508, "Insufficient Capacity"))?;
        let advertised = self.advertised(relay);
        let id = self.next_id;
        self.next_id += 1;
        let response = self.success(msg, &q.key, |b| {
            b.xor_addr(attr::XOR_RELAYED_ADDRESS, advertised).u32(attr::LIFETIME, lifetime.as_secs() as u32).xor_addr(attr::XOR_MAPPED_ADDRESS, tuple.client)
        });
        let a = Allocation {
            tuple,
            relay,
            username: user.clone(),
            expires: now + lifetime,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            peer_channel: HashMap::new(),
            allocate_tid: msg.tid,
            allocate_response: response.clone(),
            bucket: (self.cfg.max_bps > 0).then(|| Bucket::one_second_of(now, self.cfg.max_bps as f64)),
            scheduled: None,
        };
        self.allocations.insert(id, a);
        self.counters.allocations += 1;
        self.by_tuple.insert(tuple, id);
        self.by_relay.insert(relay, id);
        *self.per_user.entry(user.clone()).or_default() += 1;
        self.schedule(id);
        tracing::debug!(client = %tuple.client, %relay, %user, "allocation created");
        Ok(response)
    }

    fn refresh(&mut self, q: &Asked<'_, '_>, id: u64, sockets: &mut dyn RelaySockets) -> Result<Vec<u8>, Refusal> {
        let msg = q.msg;
        if msg.u32(attr::LIFETIME) == Some(0) {
            self.delete(id, sockets);
            return Ok(self.success(msg, &q.key, |b| b.u32(attr::LIFETIME, 0)));
        }
        let lifetime = self.lifetime(msg);
        let Some(a) = self.allocations.get_mut(&id) else { return Err(refuse(437, "Allocation Mismatch")) };
        if let Some(fam) = msg.get(attr::REQUESTED_ADDRESS_FAMILY).and_then(|v| v.first().copied()) {
            if (fam == 2) != a.relay.is_ipv6() {
                return Err(refuse(443, "Peer Address Family Mismatch"));
            }
        }
        a.expires = q.now + lifetime;
        self.schedule(id);
        Ok(self.success(msg, &q.key, |b| b.u32(attr::LIFETIME, lifetime.as_secs() as u32)))
    }

    fn create_permission(&mut self, q: &Asked<'_, '_>, id: u64) -> Result<Vec<u8>, Refusal> {
        let msg = q.msg;
        let peers: Vec<Option<SocketAddr>> = msg.all(attr::XOR_PEER_ADDRESS).map(|v| msg.xor_addr(v)).collect();
        if peers.is_empty() || peers.iter().any(Option::is_none) {
            return Err(refuse(400, "Bad Request"));
        }
        let Some(a) = self.allocations.get_mut(&id) else { return Err(refuse(437, "Allocation Mismatch")) };
        for p in peers.iter().flatten() {
            if p.is_ipv6() != a.relay.is_ipv6() {
                return Err(refuse(443, "Peer Address Family Mismatch"));
            }
            if !self.cfg.policy.permits(p.ip()) {
                return Err(refuse(403, "Forbidden"));
            }
        }
        let ips: Vec<IpAddr> = peers.iter().flatten().map(SocketAddr::ip).collect();
        if !a.can_permit(&ips, self.cfg.max_permissions) {
            return Err(refuse(508, "Insufficient Capacity"));
        }
        let until = q.now + self.cfg.permission_lifetime;
        for ip in ips {
            a.permit(ip, until, self.cfg.max_permissions).map_err(|_| refuse(508, "Insufficient Capacity"))?;
        }
        self.schedule(id);
        Ok(self.success(msg, &q.key, |b| b))
    }

    fn channel_bind(&mut self, q: &Asked<'_, '_>, id: u64) -> Result<Vec<u8>, Refusal> {
        let msg = q.msg;
        let ch = msg.get(attr::CHANNEL_NUMBER).filter(|v| v.len() == 4).map(|v| u16::from_be_bytes([v[0], v[1]]));
        let peer = msg.get(attr::XOR_PEER_ADDRESS).and_then(|v| msg.xor_addr(v));
        let (Some(ch), Some(peer)) = (ch, peer) else { return Err(refuse(400, "Bad Request")) };
        if !(0x4000..=0x7FFF).contains(&ch) {
            return Err(refuse(400, "Bad Request"));
        }
        let Some(a) = self.allocations.get_mut(&id) else { return Err(refuse(437, "Allocation Mismatch")) };
        if peer.is_ipv6() != a.relay.is_ipv6() {
            return Err(refuse(443, "Peer Address Family Mismatch"));
        }
        if !self.cfg.policy.permits_peer(peer) {
            return Err(refuse(403, "Forbidden"));
        }
        if !a.can_permit(&[peer.ip()], self.cfg.max_permissions) {
            return Err(refuse(508, "Insufficient Capacity"));
        }
        a.bind_channel(ch, peer, q.now + self.cfg.channel_lifetime, self.cfg.max_channels).map_err(|e| match e {
            Full::Conflict => refuse(400, "Bad Request"),
            Full::Channels | Full::Permissions => refuse(508, "Insufficient Capacity"),
        })?;
        a.permit(peer.ip(), q.now + self.cfg.permission_lifetime, self.cfg.max_permissions).map_err(|_| refuse(508, "Insufficient Capacity"))?;
        self.schedule(id);
        Ok(self.success(msg, &q.key, |b| b))
    }

    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        match msg.u32(attr::LIFETIME) {
            Some(s) => Duration::from_secs(s as u64).clamp(self.cfg.default_lifetime, self.cfg.max_lifetime),
            None => self.cfg.default_lifetime,
        }
    }

    fn advertised(&self, relay: SocketAddr) -> SocketAddr {
        for (public, private) in &self.cfg.external_ip {
            match private {
                Some(p) if *p == relay.ip() => return SocketAddr::new(*public, relay.port()),
                None if public.is_ipv4() == relay.is_ipv4() => return SocketAddr::new(*public, relay.port()),
                _ => {}
            }
        }
        relay
    }

    /// Picks this core's next free port in the range and binds it.
    fn bind_port(&mut self, ip: IpAddr, sockets: &mut dyn RelaySockets) -> Option<SocketAddr> {
        let (index, cores) = (self.cfg.shard.0 as u32, self.cfg.shard.1.max(1) as u32);
        let (min, max) = (self.cfg.min_port as u32, self.cfg.max_port as u32);
        let span = max.saturating_sub(min) + 1;
        for _ in 0..span.min(64 * cores) {
            let p = self.next_port as u32;
            self.next_port = if p >= max { min as u16 } else { (p + 1) as u16 };
            if (p - min) % cores != index {
                continue;
            }
            let candidate = SocketAddr::new(ip, p as u16);
            if self.by_relay.contains_key(&candidate) {
                continue;
            }
            match sockets.bind(ip, p as u16) {
                Ok(a) => return Some(a),
                Err(e) => tracing::trace!(port = p, error = %e, "relay port busy"),
            }
        }
        None
    }

    /// Frames data a peer sent to relay socket `relay` for the client, in place.
    ///
    /// The data is at `buf[HEADROOM..HEADROOM + len]` and `buf` has [`TAILROOM`] more bytes.
    /// Returns the client and the range of `buf` to send, or `None` to drop it.
    pub fn handle_peer(&mut self, now: Instant, relay: SocketAddr, peer: SocketAddr, buf: &mut [u8], len: usize) -> Option<(FiveTuple, Range<usize>)> {
        let Some(a) = self.by_relay.get(&relay).and_then(|id| self.allocations.get_mut(id)) else {
            self.counters.dropped += 1;
            return None;
        };
        if !a.permitted(peer.ip(), now) || buf.len() < HEADROOM + len + TAILROOM || !a.within_rate(now, len) {
            self.counters.dropped += 1;
            return None;
        }
        self.counters.to_client += 1;
        self.counters.bytes_to_client += len as u64;
        let tuple = a.tuple;
        if let Some(&ch) = a.peer_channel.get(&peer) {
            if a.channels.get(&ch).is_some_and(|(_, e)| *e > now) {
                // Streams carry ChannelData padded to 4 bytes.
                return Some((tuple, stun::channel_data_in_place(buf, HEADROOM, len, ch, tuple.transport != Transport::Udp)));
            }
        }
        Some((tuple, stun::data_indication_in_place(buf, HEADROOM, len, peer)))
    }
}
