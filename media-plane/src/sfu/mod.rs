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
//!
//! The modules, each with one job:
//! - [`ids`]: typed keys and the slab that hands them out;
//! - [`session`]: the session table and its indexes (id, ufrag, address, shadow);
//! - [`track`]: up-tracks (published) and down-tracks (one subscriber's copy);
//! - [`negotiate`]: SDP offers and answers;
//! - [`subscribe`]: binding down-tracks to up-tracks;
//! - [`forward`]: the per-packet path;
//! - [`select`]: each down-track's simulcast layer, and dynacast;
//! - [`cross`]: rooms that span cores;
//! - [`drive`]: polling `Rtc`s and their events;
//! - [`leave`]: removing a session;
//! - [`outbox`], [`deadlines`]: what the core produces, and when it next needs time.

mod alive;
mod cross;
mod deadlines;
mod drive;
mod forward;
mod ids;
mod leave;
mod negotiate;
mod outbox;
mod select;
mod session;
mod subscribe;
mod track;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use link::{Command, Event as LinkEvent, LeaveReason, TrackKind};
use str0m::media::{MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::Input;

pub use cross::{CrossMsg, CrossRtp, PubRef};
pub use forward::Packet;
pub use ids::{DownKey, Key, SessionKey, Table, UpKey};
pub use outbox::Transmit;

use deadlines::Deadlines;
use negotiate::JoinRequest;
use outbox::Outbox;
use session::Sessions;
use track::{DownTrack, UpTrack};

use crate::demux;

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
    /// Send-side bandwidth estimation (TWCC) toward each subscriber, starting from this
    /// estimate in bits per second; 0 turns it off (every subscriber gets what it asks for).
    pub bwe_initial: u64,
}

/// Default of [`CoreConfig::bwe_initial`]: off. Measured on the virtual clock, str0m's
/// estimate of an application-limited path sinks below the rate actually sent (10 → 1.7
/// Mbit/s while 1.76 flowed), which would pause healthy video; see docs/decisions.md.
pub const BWE_INITIAL: u64 = 0;

/// Default of [`CoreConfig::nack_history`]: long enough for a NACK and its retransmission
/// to cross a 300 ms round trip several times over, like mediasoup's and Janus's buffers.
pub const NACK_HISTORY: Duration = Duration::from_millis(1000);

/// Most packets one subscriber's video stream keeps for NACKs, whatever their age.
const NACK_HISTORY_PACKETS: usize = 1024;

/// Queued retransmissions are dropped past this share of the stream's bytes (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;

/// Counters of one core since it started.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// RTP packets received from publishers and accepted for forwarding.
    pub rx_rtp: u64,
    /// RTP packets handed to subscribers' send streams.
    pub tx_rtp: u64,
    /// Datagrams dropped because no session owns their sender.
    pub unroutable: u64,
    /// STUN from a new address whose MESSAGE-INTEGRITY did not check out (not learned).
    pub unverified_stun: u64,
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

/// The SFU state of one core.
pub struct Core {
    cfg: CoreConfig,
    sessions: Sessions,
    ups: Table<UpKey, UpTrack>,
    downs: Table<DownKey, DownTrack>,
    /// Sessions (shadows included) by room.
    rooms: HashMap<String, Vec<SessionKey>>,
    /// Other cores with members, by room.
    room_cores: HashMap<String, Vec<u32>>,
    out: Outbox,
    deadlines: Deadlines,
    /// Sessions to poll (and renegotiate) before the turn ends.
    dirty: Vec<SessionKey>,
    /// Sessions that may have been marked as ending since the last drain.
    maybe_ending: Vec<SessionKey>,
    counters: Counters,
    /// When layers are next measured and chosen again (once there is a session).
    next_tick: Option<Instant>,
    /// Start of the current bitrate window.
    window_start: Option<Instant>,
    /// Down-tracks that switched layers in the fan-out under way (reused, never shrunk).
    switched: Vec<DownKey>,
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
            sessions: Sessions::default(),
            ups: Table::default(),
            downs: Table::default(),
            rooms: HashMap::new(),
            room_cores: HashMap::new(),
            out: Outbox::default(),
            deadlines: Deadlines::default(),
            dirty: Vec::new(),
            maybe_ending: Vec::new(),
            counters: Counters::default(),
            next_tick: None,
            window_start: None,
            switched: Vec::new(),
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
        self.sessions.live()
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Messages for other cores produced since the last call, as (core, message).
    pub fn take_cross(&mut self) -> std::vec::Drain<'_, (u32, CrossMsg)> {
        self.out.cross.drain(..)
    }

    /// Datagrams produced since the last call.
    pub fn take_transmits(&mut self) -> std::vec::Drain<'_, Transmit> {
        self.out.transmits.drain(..)
    }

    /// Control-link events produced since the last call.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, LinkEvent> {
        self.out.events.drain(..)
    }

    /// Earliest time at which [`Core::handle_timeout`] must be called (O(1) amortized:
    /// stale heap entries are dropped as they surface).
    pub fn next_timeout(&mut self) -> Option<Instant> {
        while let Some((t, key)) = self.deadlines.peek() {
            if self.timer_valid(t, key) {
                return Some(self.next_tick.map_or(t, |tick| tick.min(t)));
            }
            self.deadlines.pop();
        }
        self.next_tick
    }

    fn timer_valid(&self, t: Instant, key: SessionKey) -> bool {
        self.sessions.get(key).is_some_and(|s| s.next_timeout == t || (!s.connected && s.created + self.cfg.connect_timeout == t))
    }

    /// Feeds one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, data: &[u8]) -> Handled {
        let Some(key) = self.sessions.route(source, data) else {
            self.counters.unroutable += 1;
            tracing::debug!(%source, len = data.len(), "datagram from an unknown sender dropped");
            return Handled::Dropped;
        };
        let Ok(contents) = data.try_into() else {
            return Handled::Dropped;
        };
        // A new address routes to the session only once its STUN request proves the session's
        // ICE password; str0m drops the others, and they must not grow the address table.
        let new_stun = demux::is_stun(data) && !self.sessions.knows_addr(key, source);
        let verified = new_stun && self.sessions.get(key).is_some_and(|s| demux::binding_integrity_ok(data, s.ice_pass.as_bytes()));
        let destination = self.destination_for(source);
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        let Some(s) = self.sessions.get_mut(key) else { return Handled::Dropped };
        if s.ending.is_some() {
            return Handled::Dropped;
        }
        let handled = if s.connected { Handled::Connected } else { Handled::Setup };
        if new_stun && !verified {
            self.counters.unverified_stun += 1;
        }
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %s.id, error = %e, "input rejected");
            return handled;
        }
        if verified {
            self.sessions.learn_addr(key, source);
        }
        self.keep_alive(now, key, source, destination, data);
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

    /// Advances time: drives every session whose deadline has passed, and chooses layers
    /// again when their tick is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = Some(now + select::TICK);
            self.tick(now);
        }
        let mut due = Vec::new();
        while let Some((t, key)) = self.deadlines.peek() {
            if t > now {
                break;
            }
            self.deadlines.pop();
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
            Command::Join { req, room, session, identity, grants, subscription, video, offer, .. } => {
                #[cfg(debug_assertions)]
                debug_panic_trigger(&room);
                let j = JoinRequest { room: &room, session: &session, identity: &identity, grants, subscription, video, offer: &offer };
                match self.join(now, j) {
                    Err(error) => self.out.events.push(LinkEvent::JoinFailed { req, error }),
                    Ok(key) => {
                        // The answer must reach the client before any renegotiation offer.
                        let sdp = self.sessions[key].pending_answer.take().unwrap_or_default();
                        self.out.events.push(LinkEvent::Answer { req, sdp });
                        self.dirty.push(key);
                    }
                }
            }
            Command::Answer { session, sdp } => self.accept_answer(now, &session, &sdp),
            Command::Subscribe { session, publisher, track, settings } => {
                if let Some((sub, up)) = self.named_track(&session, &publisher, &track) {
                    self.attach_chosen(now, up, sub, Some(settings));
                }
            }
            Command::Unsubscribe { session, publisher, track } => {
                if let Some((sub, up)) = self.named_track(&session, &publisher, &track) {
                    self.detach(sub, up);
                }
            }
            Command::Leave { session } => {
                if let Some(key) = self.sessions.key_of(&session) {
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
            Command::EndAll { reason } => {
                let keys: Vec<SessionKey> = self.sessions.iter().filter(|(_, s)| s.shadow.is_none()).map(|(k, _)| k).collect();
                for key in keys {
                    self.sessions[key].ending.get_or_insert(reason);
                    self.maybe_ending.push(key);
                }
            }
        }
        self.drain(now);
    }

    /// The subscriber `session` and the up-track `track` of `publisher` in the same room (the
    /// control plane checked this too; a stale or foreign name is ignored).
    fn named_track(&self, session: &str, publisher: &str, track: &str) -> Option<(SessionKey, UpKey)> {
        let sub = self.sessions.key_of(session)?;
        let pubk = self.sessions.key_of(publisher)?;
        if self.sessions[sub].room != self.sessions[pubk].room {
            tracing::debug!(session, publisher, "subscription across rooms ignored");
            return None;
        }
        let up = self.up_by_mid(pubk, Mid::from(track));
        if up.is_none() {
            tracing::debug!(session, publisher, track, "subscription to an unknown track ignored");
        }
        Some((sub, up?))
    }

    /// Takes `bps` as the bandwidth estimate toward `session` (as str0m's estimator reports
    /// it, or scripted by a test) and spends it across the session's video tracks.
    pub fn set_estimate(&mut self, now: Instant, session: &str, bps: u64) {
        if let Some(key) = self.sessions.key_of(session) {
            self.set_estimate_of(now, key, bps);
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
}

/// Debug builds only: a join to the room named by `MEDIA_PLANE_PANIC_ROOM` panics the core,
/// so that tests can prove that a core recovers from a panic.
#[cfg(debug_assertions)]
fn debug_panic_trigger(room: &str) {
    static ROOM: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if ROOM.get_or_init(|| std::env::var("MEDIA_PLANE_PANIC_ROOM").ok()).as_deref() == Some(room) {
        panic!("debug panic trigger: a join to room {room}");
    }
}
