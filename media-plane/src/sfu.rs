//! The per-core SFU state machine (sans-IO).
//!
//! A [`Core`] owns the rooms and sessions of one core and their str0m `Rtc`s. It is fed
//! datagrams, control-link commands and time, and produces datagrams to send
//! ([`Core::take_transmits`]) and control-link events ([`Core::take_events`]). It never
//! touches a socket or a clock, so tests drive it with str0m clients on a virtual clock.
//!
//! Forwarding: an incoming RTP packet is decrypted once by the publisher's `Rtc`; its
//! payload (`Arc<[u8]>`) is handed to every subscriber's send stream without a copy, and
//! each subscriber costs a header rewrite (payload type, sequence number, timestamp) and SRTP protect.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use link::{Command, Event as LinkEvent, Grants, LeaveReason, Subscription, TrackKind};
use slab::Slab;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::format::PayloadParams;
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::cross::{CrossMsg, CrossRtp, PubRef};
use crate::demux;
use crate::rewrite::Rewrite;

/// Minimum interval between two keyframe requests relayed to one published track.
pub const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);

/// Configuration of one core's state machine.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Index of this core within its node.
    pub index: u32,
    /// Address the core's socket is bound to (destination of received datagrams).
    pub local: SocketAddr,
    /// Host candidates advertised to clients (advertised IPs with this core's port).
    pub candidates: Vec<SocketAddr>,
    /// Maximum sessions on this core.
    pub capacity: u32,
    /// A session that has not connected (ICE + DTLS) within this time is removed.
    pub connect_timeout: Duration,
    /// Cores on this node (rooms may span them).
    pub cores: u32,
    /// How long each subscriber's video stream keeps sent packets to answer NACKs with.
    pub nack_history: Duration,
}

/// Default of [`CoreConfig::nack_history`]: long enough for a NACK and its retransmission
/// to cross a 300 ms round trip several times over, like mediasoup's and Janus's buffers.
pub const NACK_HISTORY: Duration = Duration::from_millis(1000);

/// Most packets one subscriber's video stream keeps for NACKs, whatever their age.
const NACK_HISTORY_PACKETS: usize = 1024;

/// Queued retransmissions are dropped past this share of the stream's bytes (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;

/// A datagram to send from this core's socket.
#[derive(Debug)]
pub struct Transmit {
    /// Destination address.
    pub destination: SocketAddr,
    /// Encrypted datagram.
    pub contents: Vec<u8>,
}

/// Counters of one core since it started.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// RTP packets received from publishers and accepted for forwarding.
    pub rx_rtp: u64,
    /// RTP packets handed to subscribers' send streams.
    pub tx_rtp: u64,
    /// Datagrams dropped because no session owns their sender.
    pub unroutable: u64,
    /// Media datagrams dropped unread because they waited too long in the kernel (overload).
    pub shed: u64,
}

/// What a received datagram went to, so that the loop can tell setup work from forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Handled {
    /// Nothing: unknown sender, unreadable, or its session is ending.
    Dropped,
    /// A session still in ICE/DTLS setup (its handshake work).
    Setup,
    /// A connected session: media, RTCP, consent checks.
    Connected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

/// A track this session publishes.
#[derive(Debug)]
struct TrackIn {
    mid: Mid,
    kind: MediaKind,
    /// Subscribers as (session key, subscriber-side mid); the fan-out list.
    subscribers: Vec<(usize, Mid)>,
    last_keyframe_request: Option<Instant>,
}

/// A track this session receives from another session.
#[derive(Debug)]
struct TrackOut {
    /// Publisher session key; `None` once the publisher left.
    publisher: Option<usize>,
    pub_mid: Mid,
    kind: MediaKind,
    /// Stream id of the m-line (`a=msid`): the publisher's session id.
    stream_id: String,
    track_id: String,
    state: OutState,
    /// Payload-type map, sequence rebase and timestamp offset.
    rewrite: Rewrite,
}

impl TrackOut {
    fn mid(&self) -> Option<Mid> {
        match self.state {
            OutState::ToOpen => None,
            OutState::Negotiating(m) | OutState::Open(m) | OutState::ToStop(m) | OutState::NegotiatingStop(m) => Some(m),
        }
    }
}

#[derive(Debug)]
struct Session {
    id: String,
    /// Participant identity, for logs.
    identity: String,
    room: String,
    rtc: Rtc,
    grants: Grants,
    subscription: Subscription,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    tracks_in: Vec<TrackIn>,
    tracks_out: Vec<TrackOut>,
    /// Sending m-lines offered by the client (WHEP) that no track is bound to now, each with
    /// the rewrite state of what it carried last, so that the next source continues it.
    free_slots: Vec<(Mid, MediaKind, Rewrite)>,
    pending: Option<SdpPendingOffer>,
    /// Our SDP answer to the join offer, until it is handed to the control plane.
    pending_answer: Option<String>,
    next_timeout: Instant,
    created: Instant,
    connected: bool,
    ending: Option<LeaveReason>,
    /// Unique on this core (slab keys are reused).
    serial: u64,
    /// For the shadow of a publisher on another core: that publisher. Shadows have no peer
    /// connection; their tracks carry packets arriving from the other core.
    shadow: Option<PubRef>,
}

impl Session {
    fn receives_from(&self, publisher_id: &str, publisher_identity: &str) -> bool {
        if !self.grants.subscribe {
            return false;
        }
        match &self.subscription {
            Subscription::All => true,
            Subscription::Only { publisher, identity } => publisher == publisher_id || identity.as_deref() == Some(publisher_identity),
            Subscription::None => false,
        }
    }
}

/// The SFU state of one core.
pub struct Core {
    cfg: CoreConfig,
    sessions: Slab<Session>,
    by_id: HashMap<String, usize>,
    by_ufrag: FxHashMap<String, usize>,
    /// FxHash: 3× faster than SipHash here (bench `demux`). Only addresses that passed ICE with
    /// valid credentials are inserted, so outsiders cannot flood it with colliding keys.
    by_addr: FxHashMap<SocketAddr, usize>,
    rooms: HashMap<String, Vec<usize>>,
    transmits: Vec<Transmit>,
    events: Vec<LinkEvent>,
    dirty: Vec<usize>,
    /// Sessions that may have been marked as ending since the last drain.
    maybe_ending: Vec<usize>,
    /// Deadlines as (time, session key); entries whose session moved on are skipped lazily.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    counters: Counters,
    /// Serial of the next session.
    next_serial: u64,
    /// Shadows of publishers on other cores.
    shadows: FxHashMap<PubRef, usize>,
    /// Other cores with members, by room.
    room_cores: HashMap<String, Vec<u32>>,
    /// Messages for other cores, as (core, message).
    cross_out: Vec<(u32, CrossMsg)>,
}

fn kind_of(k: MediaKind) -> TrackKind {
    match k {
        MediaKind::Audio => TrackKind::Audio,
        MediaKind::Video => TrackKind::Video,
    }
}

impl Core {
    /// A core with no sessions.
    pub fn new(cfg: CoreConfig) -> Self {
        Core {
            cfg,
            sessions: Slab::new(),
            by_id: HashMap::new(),
            by_ufrag: FxHashMap::default(),
            by_addr: FxHashMap::default(),
            rooms: HashMap::new(),
            transmits: Vec::new(),
            events: Vec::new(),
            dirty: Vec::new(),
            maybe_ending: Vec::new(),
            timers: BinaryHeap::new(),
            counters: Counters::default(),
            next_serial: 1,
            shadows: FxHashMap::default(),
            room_cores: HashMap::new(),
            cross_out: Vec::new(),
        }
    }

    /// This core's configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Changes the NACK history of tracks opened from now on.
    pub fn set_nack_history(&mut self, history: Duration) {
        self.cfg.nack_history = history;
    }

    /// Number of live sessions (shadows of publishers on other cores not counted).
    pub fn session_count(&self) -> usize {
        self.sessions.len() - self.shadows.len()
    }

    /// Messages for other cores produced since the last call, as (core, message).
    pub fn take_cross(&mut self) -> std::vec::Drain<'_, (u32, CrossMsg)> {
        self.cross_out.drain(..)
    }

    /// Applies one message from another core of this node.
    pub fn handle_cross(&mut self, now: Instant, msg: CrossMsg) {
        match msg {
            CrossMsg::Members { room, core, present } => {
                if core == self.cfg.index {
                    return;
                }
                let cores = self.room_cores.entry(room.clone()).or_default();
                cores.retain(|c| *c != core);
                if present {
                    cores.push(core);
                    // Tell the newcomer about every track published here.
                    let members = self.rooms.get(&room).cloned().unwrap_or_default();
                    for key in members {
                        let s = &self.sessions[key];
                        if s.shadow.is_some() {
                            continue;
                        }
                        let from = PubRef { core: self.cfg.index, key, serial: s.serial };
                        for t in &s.tracks_in {
                            let msg = CrossMsg::Track { room: room.clone(), from, session: s.id.clone(), identity: s.identity.clone(), mid: t.mid, kind: t.kind };
                            self.cross_out.push((core, msg));
                        }
                    }
                } else if cores.is_empty() {
                    self.room_cores.remove(&room);
                }
            }
            CrossMsg::Track { room, from, session, identity, mid, kind } => {
                if self.local_members(&room) == 0 {
                    return;
                }
                let key = match self.shadows.get(&from) {
                    Some(k) => *k,
                    None => self.add_shadow(now, &room, from, &session, &identity),
                };
                self.add_track_in(now, key, mid, kind);
            }
            CrossMsg::PublisherLeft { from } => {
                if let Some(key) = self.shadows.get(&from).copied() {
                    self.sessions[key].ending = Some(LeaveReason::Requested);
                    self.maybe_ending.push(key);
                }
            }
            CrossMsg::Rtp(r) => {
                let Some(&key) = self.shadows.get(&r.from) else { return };
                let Some(kind) = self.sessions[key].tracks_in.iter().find(|t| t.mid == r.mid).map(|t| t.kind) else { return };
                self.fan_out(key, r.mid, kind, r.params, r.pt, r.seq, r.ts, r.wallclock, r.marker, &r.ext, &r.payload);
            }
            CrossMsg::Keyframe { to, mid, kind } => {
                if self.sessions.get(to.key).is_some_and(|s| s.serial == to.serial && s.shadow.is_none()) {
                    self.request_keyframe(now, to.key, mid, kind);
                }
            }
        }
        self.drain(now);
    }

    fn local_members(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |m| m.iter().filter(|k| self.sessions[**k].shadow.is_none()).count())
    }

    fn other_cores(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.cfg.cores).filter(move |c| *c != self.cfg.index)
    }

    /// Creates the shadow of a publisher on another core and puts it in the room.
    fn add_shadow(&mut self, now: Instant, room: &str, from: PubRef, session: &str, identity: &str) -> usize {
        let serial = self.next_serial;
        self.next_serial += 1;
        let s = Session {
            id: session.to_string(),
            identity: identity.to_string(),
            room: room.to_string(),
            rtc: Rtc::builder().set_rtp_mode(true).build(now),
            grants: Grants { publish: true, subscribe: false },
            subscription: Subscription::None,
            ufrag: String::new(),
            addrs: Vec::new(),
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            free_slots: Vec::new(),
            pending: None,
            pending_answer: None,
            next_timeout: now + Duration::from_secs(86_400 * 365),
            created: now,
            connected: true,
            ending: None,
            serial,
            shadow: Some(from),
        };
        let key = self.sessions.insert(s);
        self.shadows.insert(from, key);
        self.by_id.insert(session.to_string(), key);
        self.rooms.entry(room.to_string()).or_default().push(key);
        key
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Datagrams produced since the last call.
    pub fn take_transmits(&mut self) -> std::vec::Drain<'_, Transmit> {
        self.transmits.drain(..)
    }

    /// Control-link events produced since the last call.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, LinkEvent> {
        self.events.drain(..)
    }

    /// Earliest time at which [`Core::handle_timeout`] must be called (O(1) amortized:
    /// stale heap entries are dropped as they surface).
    pub fn next_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if self.timer_valid(t, key) {
                return Some(t);
            }
            self.timers.pop();
        }
        None
    }

    fn timer_valid(&self, t: Instant, key: usize) -> bool {
        self.sessions.get(key).is_some_and(|s| s.next_timeout == t || (!s.connected && s.created + self.cfg.connect_timeout == t))
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> Handled {
        let key = match self.by_addr.get(&source) {
            Some(k) => *k,
            None => match demux::stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)) {
                Some(k) => *k,
                None => {
                    self.counters.unroutable += 1;
                    tracing::debug!(%source, len = data.len(), "datagram from an unknown sender dropped");
                    return Handled::Dropped;
                }
            },
        };
        let Ok(contents) = data.try_into() else {
            return Handled::Dropped;
        };
        let destination = self.destination_for(source);
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        let Some(s) = self.sessions.get_mut(key) else { return Handled::Dropped };
        if s.ending.is_some() {
            return Handled::Dropped;
        }
        let handled = if s.connected { Handled::Connected } else { Handled::Setup };
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %s.id, error = %e, "input rejected");
            return handled;
        }
        if !s.addrs.contains(&source) && demux::is_stun(data) {
            tracing::debug!(session = %s.id, identity = %s.identity, %source, "new address for session");
            s.addrs.push(source);
            self.by_addr.insert(source, key);
        }
        self.dirty.push(key);
        self.drain(now);
        handled
    }

    /// The local candidate a datagram from `source` arrived on.
    ///
    /// A socket bound to a wildcard address does not learn the destination address, and str0m
    /// only accepts traffic addressed to one of its candidates: loopback senders reached the
    /// loopback candidate, every other sender the first candidate of its address family.
    pub fn destination_for(&self, source: SocketAddr) -> SocketAddr {
        if !self.cfg.local.ip().is_unspecified() {
            return self.cfg.local;
        }
        let loopback = source.ip().is_loopback();
        self.cfg
            .candidates
            .iter()
            .find(|c| c.ip().is_loopback() == loopback && c.is_ipv4() == source.is_ipv4())
            .or_else(|| self.cfg.candidates.first())
            .copied()
            .unwrap_or(self.cfg.local)
    }

    /// Advances time: drives every session whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if self.timer_valid(t, key) {
                due.push(key);
            }
        }
        // A session can have two valid entries (its deadline and its connect deadline).
        due.sort_unstable();
        due.dedup();
        for key in due {
            let timeout = self.cfg.connect_timeout;
            let Some(s) = self.sessions.get_mut(key) else { continue };
            if !s.connected && s.created + timeout <= now {
                s.ending = Some(LeaveReason::Timeout);
                self.maybe_ending.push(key);
                continue;
            }
            if s.next_timeout > now {
                continue;
            }
            // Forget the consumed deadline so that the next poll always re-arms one.
            s.next_timeout = now + Duration::from_secs(3600);
            if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(session = %s.id, error = %e, "timeout input failed");
                s.ending = Some(LeaveReason::Closed);
            }
            self.dirty.push(key);
        }
        self.drain(now);
    }

    /// Applies one command from the control plane.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Join { req, room, session, identity, grants, subscription, offer, .. } => {
                if let Err((code, message)) = self.join(now, &room, &session, &identity, grants, subscription, &offer) {
                    self.events.push(LinkEvent::JoinFailed { req, code: code.into(), message });
                } else if let Some(&key) = self.by_id.get(&session) {
                    // The answer must reach the client before any renegotiation offer.
                    let sdp = self.sessions[key].pending_answer.take().unwrap_or_default();
                    self.events.push(LinkEvent::Answer { req, sdp });
                    self.dirty.push(key);
                }
            }
            Command::Answer { session, sdp } => self.accept_answer(now, &session, &sdp),
            Command::Leave { session } => {
                if let Some(&key) = self.by_id.get(&session) {
                    self.sessions[key].ending.get_or_insert(LeaveReason::Requested);
                    self.maybe_ending.push(key);
                }
            }
            Command::CloseRoom { room } => {
                for &key in self.rooms.get(&room).into_iter().flatten() {
                    self.sessions[key].ending.get_or_insert(LeaveReason::Requested);
                    self.maybe_ending.push(key);
                }
            }
        }
        self.drain(now);
    }

    /// Counts media datagrams the loop dropped as stale.
    pub fn note_shed(&mut self, n: u64) {
        self.counters.shed += n;
    }

    /// A load report for the control plane, with packet counts since `since` (`interval`
    /// ago), the share of that time the core's thread was busy, and the share it spent on
    /// joins and handshakes (thousandths).
    pub fn load_event(&self, since: Counters, interval: Duration, busy_permille: u16, setup_permille: u16) -> LinkEvent {
        LinkEvent::Load {
            core: self.cfg.index,
            sessions: self.session_count() as u32,
            rx_packets: self.counters.rx_rtp - since.rx_rtp,
            tx_packets: self.counters.tx_rtp - since.tx_rtp,
            busy_permille,
            connected: Some(self.sessions.iter().filter(|(_, s)| s.connected && s.shadow.is_none()).count() as u32),
            interval_ms: Some(u32::try_from(interval.as_millis()).unwrap_or(u32::MAX)),
            setup_permille: Some(setup_permille.min(busy_permille)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        now: Instant,
        room: &str,
        session: &str,
        identity: &str,
        grants: Grants,
        subscription: Subscription,
        offer: &str,
    ) -> Result<(), (&'static str, String)> {
        if self.by_id.contains_key(session) {
            return Err(("session_exists", format!("session {session} already exists")));
        }
        if self.session_count() as u32 >= self.cfg.capacity {
            return Err(("core_full", format!("core {} is at capacity", self.cfg.index)));
        }
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| ("bad_sdp", format!("malformed SDP offer: {e}")))?;
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .build(now);
        for addr in &self.cfg.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!(%addr, error = %e, "unusable host candidate"),
            }
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| ("bad_sdp", format!("SDP offer not accepted: {e}")))?;
        // Let str0m process the negotiated media now, so tracks are announced with the answer.
        if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
            return Err(("bad_sdp", format!("session setup failed: {e}")));
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let s = Session {
            id: session.to_string(),
            identity: identity.to_string(),
            room: room.to_string(),
            rtc,
            grants,
            subscription,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            free_slots: Vec::new(),
            pending: None,
            pending_answer: Some(answer.to_sdp_string()),
            next_timeout: now,
            created: now,
            connected: false,
            ending: None,
            serial: self.next_serial,
            shadow: None,
        };
        self.next_serial += 1;
        let key = self.sessions.insert(s);
        self.timers.push(Reverse((now, key)));
        self.timers.push(Reverse((now + self.cfg.connect_timeout, key)));
        self.by_id.insert(session.to_string(), key);
        self.by_ufrag.insert(ufrag, key);
        let first_here = self.local_members(room) == 0;
        let members = self.rooms.entry(room.to_string()).or_default();
        let existing: Vec<usize> = members.clone();
        members.push(key);
        if first_here {
            let cores: Vec<u32> = self.other_cores().collect();
            for c in cores {
                self.cross_out.push((c, CrossMsg::Members { room: room.to_string(), core: self.cfg.index, present: true }));
            }
        }
        // Subscribe the newcomer to every track already published in the room.
        for pub_key in existing {
            let mids: Vec<Mid> = self.sessions[pub_key].tracks_in.iter().map(|t| t.mid).collect();
            for mid in mids {
                self.attach(now, pub_key, mid, key);
            }
        }
        Ok(())
    }

    /// Creates the subscription of `sub` to track `mid` of `publisher`, if `sub` wants it.
    fn attach(&mut self, now: Instant, publisher: usize, mid: Mid, sub: usize) {
        if publisher == sub {
            return;
        }
        let (pub_id, kind) = {
            let p = &self.sessions[publisher];
            let Some(t) = p.tracks_in.iter().find(|t| t.mid == mid) else { return };
            if !self.sessions[sub].receives_from(&p.id, &p.identity) {
                return;
            }
            (p.id.clone(), t.kind)
        };
        let s = &mut self.sessions[sub];
        if s.tracks_out.iter().any(|o| o.publisher == Some(publisher) && o.pub_mid == mid) {
            return;
        }
        let mut out = TrackOut {
            publisher: Some(publisher),
            pub_mid: mid,
            kind,
            // Receivers group a publisher's tracks by its session id.
            stream_id: pub_id.clone(),
            track_id: format!("{pub_id}-{mid}"),
            state: OutState::ToOpen,
            rewrite: Rewrite::default(),
        };
        if matches!(s.subscription, Subscription::Only { .. }) {
            // WHEP: bind to an m-line the client already offered; no renegotiation.
            // A slot that carried an earlier source continues its numbering and clock.
            let Some(pos) = s.free_slots.iter().position(|(_, k, _)| *k == kind) else { return };
            let (slot, _, mut rewrite) = s.free_slots.remove(pos);
            rewrite.switch_source();
            out.rewrite = rewrite;
            out.state = OutState::Open(slot);
            s.tracks_out.push(out);
            self.open(now, sub, publisher, mid, slot);
        } else {
            s.tracks_out.push(out);
            self.dirty.push(sub);
        }
    }

    /// A subscription became usable: add it to the publisher's fan-out and ask for a keyframe.
    fn open(&mut self, now: Instant, sub: usize, publisher: usize, pub_mid: Mid, sub_mid: Mid) {
        if let Some(s) = self.sessions.get_mut(sub) {
            let mut api = s.rtc.direct_api();
            if let Some(tx) = api.stream_tx_by_mid(sub_mid, None) {
                // str0m keeps 3 s by default; per subscriber that is most of its memory. Only
                // nackable (video) packets are ever cached, so audio streams keep nothing.
                tx.set_rtx_cache(NACK_HISTORY_PACKETS, self.cfg.nack_history, Some(RTX_RATIO_CAP));
            }
        }
        let Some(p) = self.sessions.get_mut(publisher) else { return };
        if let Some(t) = p.tracks_in.iter_mut().find(|t| t.mid == pub_mid) {
            t.subscribers.push((sub, sub_mid));
        }
        self.request_keyframe(now, publisher, pub_mid, KeyframeRequestKind::Pli);
    }

    fn request_keyframe(&mut self, now: Instant, publisher: usize, mid: Mid, kind: KeyframeRequestKind) {
        let Some(p) = self.sessions.get_mut(publisher) else { return };
        let Some(t) = p.tracks_in.iter_mut().find(|t| t.mid == mid) else { return };
        if t.kind != MediaKind::Video || t.last_keyframe_request.is_some_and(|last| now < last + KEYFRAME_THROTTLE) {
            return;
        }
        t.last_keyframe_request = Some(now);
        if let Some(origin) = p.shadow {
            self.cross_out.push((origin.core, CrossMsg::Keyframe { to: origin, mid, kind }));
            return;
        }
        let mut api = p.rtc.direct_api();
        if let Some(rx) = api.stream_rx_by_mid(mid, None) {
            rx.request_keyframe(kind);
            self.dirty.push(publisher);
        }
    }

    fn accept_answer(&mut self, now: Instant, session: &str, sdp: &str) {
        let Some(&key) = self.by_id.get(session) else { return };
        let fail = |core: &mut Core, message: String| {
            core.events.push(LinkEvent::AnswerFailed { session: session.to_string(), message });
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => return fail(self, format!("malformed SDP answer: {e}")),
        };
        let s = &mut self.sessions[key];
        let Some(pending) = s.pending.take() else {
            return fail(self, "no offer is pending".into());
        };
        if let Err(e) = s.rtc.sdp_api().accept_answer(pending, answer) {
            return fail(self, format!("SDP answer not accepted: {e}"));
        }
        let mut opened = Vec::new();
        for o in &mut s.tracks_out {
            if let OutState::Negotiating(m) = o.state {
                match o.publisher {
                    Some(p) => {
                        o.state = OutState::Open(m);
                        opened.push((p, o.pub_mid, m));
                    }
                    // The publisher left while this was negotiated: stop it next round.
                    None => o.state = OutState::ToStop(m),
                }
            }
        }
        s.tracks_out.retain(|o| !matches!(o.state, OutState::NegotiatingStop(_)));
        for (p, pub_mid, m) in opened {
            self.open(now, key, p, pub_mid, m);
        }
        self.dirty.push(key);
    }

    /// Starts an SDP renegotiation for tracks added or removed, if none is pending.
    fn negotiate(&mut self, key: usize) {
        let Some(s) = self.sessions.get_mut(key) else { return };
        // Renegotiate only once ICE and DTLS are up: a browser handed an offer while its first
        // negotiation is still settling can restart ICE, and str0m then drops its checks.
        if s.pending.is_some() || s.ending.is_some() || s.pending_answer.is_some() || !s.connected {
            return;
        }
        let mut api = s.rtc.sdp_api();
        for o in &mut s.tracks_out {
            match o.state {
                OutState::ToOpen => {
                    let mid = api.add_media(o.kind, Direction::SendOnly, Some(o.stream_id.clone()), Some(o.track_id.clone()), None);
                    o.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(m) => {
                    api.stop_media(m);
                    o.state = OutState::NegotiatingStop(m);
                }
                _ => {}
            }
        }
        if !api.has_changes() {
            return;
        }
        if let Some((offer, pending)) = api.apply() {
            s.pending = Some(pending);
            self.events.push(LinkEvent::Offer { session: s.id.clone(), sdp: offer.to_sdp_string() });
        }
    }

    /// Polls dirty sessions until none has output left, then removes ending sessions.
    fn drain(&mut self, now: Instant) {
        loop {
            while let Some(key) = self.dirty.pop() {
                self.negotiate(key);
                self.poll(now, key);
                self.maybe_ending.push(key);
            }
            // Only sessions touched since the last drain can have started ending.
            let mut ending: Vec<(usize, LeaveReason)> = Vec::new();
            for key in self.maybe_ending.drain(..) {
                if let Some(r) = self.sessions.get(key).and_then(|s| s.ending) {
                    if !ending.iter().any(|(k, _)| *k == key) {
                        ending.push((key, r));
                    }
                }
            }
            if ending.is_empty() {
                break;
            }
            for (key, reason) in ending {
                self.remove(key, reason);
            }
        }
    }

    fn poll(&mut self, now: Instant, key: usize) {
        loop {
            let Some(s) = self.sessions.get_mut(key) else { return };
            if s.ending.is_some() {
                return;
            }
            if !s.rtc.is_alive() {
                s.ending = Some(LeaveReason::Closed);
                return;
            }
            match s.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    if s.next_timeout != t {
                        s.next_timeout = t;
                        self.timers.push(Reverse((t, key)));
                    }
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.transmits.push(Transmit { destination: t.destination, contents: t.contents.into() });
                }
                Ok(Output::Event(e)) => self.on_event(now, key, e),
                Err(e) => {
                    tracing::debug!(session = %s.id, error = %e, "poll_output failed");
                    s.ending = Some(LeaveReason::Closed);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, now: Instant, key: usize, e: Event) {
        match e {
            Event::RtpPacket(p) => self.forward(key, p),
            Event::Connected => {
                let s = &mut self.sessions[key];
                s.connected = true;
                self.events.push(LinkEvent::Connected { session: s.id.clone() });
                self.dirty.push(key);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.sessions[key].ending = Some(LeaveReason::Timeout);
            }
            Event::Closed => {
                self.sessions[key].ending = Some(LeaveReason::Closed);
            }
            Event::MediaAdded(m) => self.media_added(now, key, m.mid, m.kind, m.direction),
            Event::KeyframeRequest(req) => {
                let s = &self.sessions[key];
                let target = s.tracks_out.iter().find(|o| o.state == OutState::Open(req.mid)).and_then(|o| o.publisher.map(|p| (p, o.pub_mid)));
                if let Some((p, pub_mid)) = target {
                    self.request_keyframe(now, p, pub_mid, req.kind);
                }
            }
            _ => {}
        }
    }

    fn media_added(&mut self, now: Instant, key: usize, mid: Mid, kind: MediaKind, dir: Direction) {
        let s = &mut self.sessions[key];
        if dir.is_sending() && matches!(s.subscription, Subscription::Only { .. }) {
            s.free_slots.push((mid, kind, Rewrite::default()));
            // Bind tracks the wanted publisher already has.
            if let Subscription::Only { publisher, .. } = &s.subscription {
                if let Some(&pub_key) = self.by_id.get(publisher) {
                    let mids: Vec<Mid> = self.sessions[pub_key].tracks_in.iter().filter(|t| t.kind == kind).map(|t| t.mid).collect();
                    for m in mids {
                        self.attach(now, pub_key, m, key);
                    }
                }
            }
            return;
        }
        if !dir.is_receiving() || !s.grants.publish || s.tracks_in.iter().any(|t| t.mid == mid) {
            return;
        }
        self.events.push(LinkEvent::TrackPublished {
            room: s.room.clone(),
            session: s.id.clone(),
            track: mid.to_string(),
            kind: kind_of(kind),
        });
        // Other cores with members of the room get the track too.
        let from = PubRef { core: self.cfg.index, key, serial: s.serial };
        for &c in self.room_cores.get(&s.room).into_iter().flatten() {
            let msg = CrossMsg::Track { room: s.room.clone(), from, session: s.id.clone(), identity: s.identity.clone(), mid, kind };
            self.cross_out.push((c, msg));
        }
        self.add_track_in(now, key, mid, kind);
    }

    /// Adds a published track to a session (local or shadow) and subscribes the room to it.
    fn add_track_in(&mut self, now: Instant, key: usize, mid: Mid, kind: MediaKind) {
        let s = &mut self.sessions[key];
        if s.tracks_in.iter().any(|t| t.mid == mid) {
            return;
        }
        s.tracks_in.push(TrackIn { mid, kind, subscribers: Vec::new(), last_keyframe_request: None });
        let members = self.rooms.get(&s.room).cloned().unwrap_or_default();
        for sub in members {
            self.attach(now, key, mid, sub);
        }
    }

    /// Hands one received RTP packet to every subscriber of its track, sharing the payload,
    /// here and on every other core with members of the room.
    fn forward(&mut self, key: usize, p: RtpPacket) {
        let s = &mut self.sessions[key];
        let ssrc = p.header.ssrc;
        let Some(mid) = s.rtc.direct_api().stream_rx(&ssrc).map(|rx| rx.mid()) else { return };
        let Some(params) = s.rtc.codec_config().find(|pp| pp.pt() == p.header.payload_type).copied() else { return };
        let Some(kind) = s.tracks_in.iter().find(|t| t.mid == mid).map(|t| t.kind) else { return };
        let from = PubRef { core: self.cfg.index, key, serial: s.serial };
        // Only rooms that span cores pay for the lookup; the core list is copied to the stack
        // (a node has far fewer than 256 cores), so no per-packet allocation either way.
        let mut remote = [0u32; 256];
        let spanning = if self.room_cores.is_empty() { None } else { self.room_cores.get(&s.room) };
        let n = spanning.map_or(0, |v| {
            let n = v.len().min(remote.len());
            remote[..n].copy_from_slice(&v[..n]);
            n
        });
        self.counters.rx_rtp += 1;
        let ext = ExtensionValues {
            audio_level: p.header.ext_vals.audio_level,
            voice_activity: p.header.ext_vals.voice_activity,
            video_orientation: p.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let pt = *p.header.payload_type;
        let seq: u64 = *p.seq_no;
        // One message per remote core, not per remote subscriber; the payload is shared.
        for &c in &remote[..n] {
            let r = CrossRtp { from, mid, pt, params, seq, ts: p.header.timestamp, wallclock: p.timestamp, marker: p.header.marker, ext: ext.clone(), payload: p.payload.clone() };
            self.cross_out.push((c, CrossMsg::Rtp(Box::new(r))));
        }
        self.fan_out(key, mid, kind, params, pt, seq, p.header.timestamp, p.timestamp, p.header.marker, &ext, &p.payload);
    }

    /// Writes one packet of track `mid` of session `key` to each of its local subscribers:
    /// payload type mapping, sequence rebase, and the shared payload.
    #[allow(clippy::too_many_arguments)]
    fn fan_out(
        &mut self,
        key: usize,
        mid: Mid,
        kind: MediaKind,
        params: PayloadParams,
        pt_in: u8,
        in_seq: u64,
        ts: u32,
        wallclock: Instant,
        marker: bool,
        ext: &ExtensionValues,
        payload: &std::sync::Arc<[u8]>,
    ) {
        let Some(track) = self.sessions[key].tracks_in.iter_mut().find(|t| t.mid == mid) else { return };
        let subscribers = std::mem::take(&mut track.subscribers);
        for &(sub_key, sub_mid) in &subscribers {
            let Some(sub) = self.sessions.get_mut(sub_key) else { continue };
            let Some(out) = sub.tracks_out.iter_mut().find(|o| o.state == OutState::Open(sub_mid)) else { continue };
            let pt = match out.rewrite.pt(pt_in) {
                Some(o) => o,
                None => {
                    let Some(local) = sub.rtc.codec_config().match_params(params) else { continue };
                    let o = *local.pt();
                    out.rewrite.map_pt(pt_in, o);
                    o
                }
            };
            let Some((seq, ts)) = out.rewrite.map(in_seq, ts, wallclock, params.spec().clock_rate.get()) else { continue };
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(sub_mid, None) else { continue };
            tx.write_rtp(
                RtpWrite::new(pt.into(), seq.into(), ts, wallclock, payload.clone())
                    .marker(marker)
                    .ext_vals(ext.clone())
                    .nackable(kind == MediaKind::Video),
            );
            self.counters.tx_rtp += 1;
            // str0m releases written packets on its next timeout, so rather than polling the
            // subscriber now (which would only return that deadline) make it due at once.
            if sub.next_timeout > wallclock {
                sub.next_timeout = wallclock;
                self.timers.push(Reverse((wallclock, sub_key)));
            }
        }
        if let Some(s) = self.sessions.get_mut(key) {
            if let Some(track) = s.tracks_in.iter_mut().find(|t| t.mid == mid) {
                track.subscribers = subscribers;
            }
        }
    }

    /// Removes a session and every reference to it, and tells the room.
    fn remove(&mut self, key: usize, reason: LeaveReason) {
        let s = self.sessions.remove(key);
        self.by_id.remove(&s.id);
        if !s.ufrag.is_empty() {
            self.by_ufrag.remove(&s.ufrag);
        }
        if let Some(from) = s.shadow {
            self.shadows.remove(&from);
        } else if !s.tracks_in.is_empty() {
            let from = PubRef { core: self.cfg.index, key, serial: s.serial };
            for &c in self.room_cores.get(&s.room).into_iter().flatten() {
                self.cross_out.push((c, CrossMsg::PublisherLeft { from }));
            }
        }
        for a in &s.addrs {
            self.by_addr.remove(a);
        }
        let members = self.rooms.entry(s.room.clone()).or_default();
        members.retain(|k| *k != key);
        let members = members.clone();
        if members.is_empty() {
            self.rooms.remove(&s.room);
        }
        for other in members {
            let o = &mut self.sessions[other];
            for t in &mut o.tracks_in {
                t.subscribers.retain(|(k, _)| *k != key);
            }
            let mut changed = false;
            for out in &mut o.tracks_out {
                if out.publisher == Some(key) {
                    out.publisher = None;
                    changed = true;
                    if let OutState::Open(m) = out.state {
                        out.state = OutState::ToStop(m);
                    }
                }
            }
            // Tracks never negotiated are simply forgotten; WHEP slots are freed.
            let whep = matches!(o.subscription, Subscription::Only { .. });
            let mut freed = Vec::new();
            o.tracks_out.retain_mut(|t| {
                if t.publisher.is_none() && whep {
                    if let Some(m) = t.mid() {
                        freed.push((m, t.kind, std::mem::take(&mut t.rewrite)));
                    }
                    return false;
                }
                !(t.publisher.is_none() && t.state == OutState::ToOpen)
            });
            o.free_slots.extend(freed);
            if changed {
                self.dirty.push(other);
            }
        }
        if s.shadow.is_some() {
            return;
        }
        // The last local member left: other cores stop sending, and shadows go.
        if self.local_members(&s.room) == 0 {
            let cores: Vec<u32> = self.other_cores().collect();
            for c in cores {
                self.cross_out.push((c, CrossMsg::Members { room: s.room.clone(), core: self.cfg.index, present: false }));
            }
            let shadows: Vec<usize> = self.rooms.get(&s.room).cloned().unwrap_or_default();
            for k in shadows {
                self.sessions[k].ending = Some(LeaveReason::Requested);
                self.maybe_ending.push(k);
            }
        }
        tracing::info!(session = %s.id, identity = %s.identity, room = %s.room, ?reason, "session ended");
        self.events.push(LinkEvent::SessionEnded { room: s.room, session: s.id, reason });
    }
}
