//! The session table of one core, and the indexes that find a session by id, by ICE ufrag,
//! by sender address, or (for shadows) by the publisher it stands for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::{Index, IndexMut};
use std::time::Instant;

use link::{Grants, LeaveReason, Subscription, TrackSettings};
use rustc_hash::FxHashMap;
use str0m::change::SdpPendingOffer;
use str0m::Rtc;

use super::cross::PubRef;
use super::ids::{DownKey, SessionKey, Table, UpKey};
use crate::demux;
use crate::keepalive::Liveness;
use crate::losscap::LossCap;
use crate::probe::ProbeRetry;

/// Addresses one session may be reached from at once (a client's candidates over time: Wi-Fi,
/// cellular, a relay); a spoofed stream of sources cannot grow its table beyond this.
pub const MAX_ADDRS: usize = 8;

/// One participant connection, or the shadow of a publisher on another core.
#[derive(Debug)]
pub struct Session {
    /// Session id, unique in the cluster.
    pub id: String,
    /// Participant identity, for logs and WHEP follow.
    pub identity: String,
    /// Room name.
    pub room: String,
    /// The peer connection (for a shadow, an unused one).
    pub rtc: Rtc,
    /// What the token allows.
    pub grants: Grants,
    /// Which publishers it receives.
    pub subscription: Subscription,
    /// How it wants the video tracks it receives, unless told otherwise per track.
    pub video: TrackSettings,
    /// Server ICE ufrag (empty for shadows).
    pub ufrag: String,
    /// Server ICE password: the key of its clients' STUN MESSAGE-INTEGRITY.
    pub ice_pass: String,
    /// Its peer's ufrag and the requests that keep its candidate pair alive (`keepalive`).
    pub liveness: Liveness,
    /// Addresses that passed ICE for it, oldest first, at most [`MAX_ADDRS`].
    pub addrs: Vec<SocketAddr>,
    /// Tracks it publishes.
    pub ups: Vec<UpKey>,
    /// Tracks it receives, and (WHEP) its idle m-lines.
    pub downs: Vec<DownKey>,
    /// Our renegotiation offer, until the client answers.
    pub pending: Option<SdpPendingOffer>,
    /// Our SDP answer to the join offer, until it is handed to the control plane.
    pub pending_answer: Option<String>,
    /// When its `Rtc` next wants time.
    pub next_timeout: Instant,
    /// When it was created.
    pub created: Instant,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The latest send-side bandwidth estimate toward it (bits per second), once there is one.
    pub estimate: Option<u64>,
    /// A ceiling on that estimate from the loss its receiver reports.
    pub loss_cap: LossCap,
    /// When to ask for another probe while it gets less than it asks for.
    pub probe: ProbeRetry,
    /// When its last statistics report came.
    pub last_stats: Option<Instant>,
    /// Set once it is to be removed.
    pub ending: Option<LeaveReason>,
    /// Unique on this core (keys are reused).
    pub serial: u64,
    /// For the shadow of a publisher on another core: that publisher. Shadows have no peer
    /// connection; their tracks carry packets arriving from the other core.
    pub shadow: Option<PubRef>,
}

impl Session {
    /// Whether it receives the tracks of `publisher_id` (whose identity is `publisher_identity`).
    pub fn receives_from(&self, publisher_id: &str, publisher_identity: &str) -> bool {
        if !self.grants.subscribe {
            return false;
        }
        match &self.subscription {
            Subscription::All => true,
            Subscription::Only { publisher, identity } => publisher == publisher_id || identity.as_deref() == Some(publisher_identity),
            Subscription::None | Subscription::Chosen => false,
        }
    }

    /// A WHEP player: it binds tracks to the m-lines it offered and is never renegotiated.
    pub fn binds_offered_lines(&self) -> bool {
        matches!(self.subscription, Subscription::Only { .. })
    }
}

/// Every session of one core, with its indexes.
#[derive(Default)]
pub struct Sessions {
    table: Table<SessionKey, Session>,
    by_id: HashMap<String, SessionKey>,
    by_ufrag: FxHashMap<String, SessionKey>,
    /// FxHash: 3× faster than SipHash here (bench `demux`). Only addresses that passed ICE with
    /// valid credentials are inserted, so outsiders cannot flood it with colliding keys.
    by_addr: FxHashMap<SocketAddr, SessionKey>,
    shadows: FxHashMap<PubRef, SessionKey>,
    next_serial: u64,
}

impl Sessions {
    /// A fresh serial number for a new session.
    pub fn next_serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Stores a session and indexes it by id, ufrag and (for a shadow) its publisher.
    pub fn insert(&mut self, s: Session) -> SessionKey {
        let (id, ufrag, shadow) = (s.id.clone(), s.ufrag.clone(), s.shadow);
        let key = self.table.insert(s);
        self.by_id.insert(id, key);
        if !ufrag.is_empty() {
            self.by_ufrag.insert(ufrag, key);
        }
        if let Some(from) = shadow {
            self.shadows.insert(from, key);
        }
        key
    }

    /// Removes a session and every index entry that points at it.
    pub fn remove(&mut self, key: SessionKey) -> Option<Session> {
        let s = self.table.remove(key)?;
        self.by_id.remove(&s.id);
        if !s.ufrag.is_empty() {
            self.by_ufrag.remove(&s.ufrag);
        }
        if let Some(from) = s.shadow {
            self.shadows.remove(&from);
        }
        for a in &s.addrs {
            self.by_addr.remove(a);
        }
        Some(s)
    }

    /// The session under `key`.
    pub fn get(&self, key: SessionKey) -> Option<&Session> {
        self.table.get(key)
    }

    /// The session under `key`, mutably.
    pub fn get_mut(&mut self, key: SessionKey) -> Option<&mut Session> {
        self.table.get_mut(key)
    }

    /// The session with this id.
    pub fn key_of(&self, id: &str) -> Option<SessionKey> {
        self.by_id.get(id).copied()
    }

    /// The shadow standing for `from` on this core.
    pub fn shadow_of(&self, from: &PubRef) -> Option<SessionKey> {
        self.shadows.get(from).copied()
    }

    /// The session a datagram from `source` belongs to: by its address once ICE passed,
    /// else by the ufrag of a STUN Binding request.
    pub fn route(&self, source: SocketAddr, data: &[u8]) -> Option<SessionKey> {
        match self.by_addr.get(&source) {
            Some(k) => Some(*k),
            None => demux::stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)).copied(),
        }
    }

    /// Whether datagrams from `source` already route to the session by address.
    pub fn knows_addr(&self, key: SessionKey, source: SocketAddr) -> bool {
        self.by_addr.get(&source) == Some(&key)
    }

    /// Records that `source` passed ICE for the session (its STUN integrity checked). A
    /// session keeps its last [`MAX_ADDRS`] addresses; the oldest makes room.
    pub fn learn_addr(&mut self, key: SessionKey, source: SocketAddr) {
        let Some(s) = self.table.get_mut(key) else { return };
        if s.addrs.contains(&source) {
            return;
        }
        tracing::debug!(session = %s.id, identity = %s.identity, %source, "new address for session");
        if s.addrs.len() >= MAX_ADDRS {
            let old = s.addrs.remove(0);
            if self.by_addr.get(&old) == Some(&key) {
                self.by_addr.remove(&old);
            }
        }
        s.addrs.push(source);
        if let Some(previous) = self.by_addr.insert(source, key).filter(|k| *k != key) {
            // The address moved to another session (a client reconnecting from the same port).
            if let Some(p) = self.table.get_mut(previous) {
                p.addrs.retain(|a| *a != source);
            }
        }
    }

    /// Participant sessions (shadows not counted).
    pub fn live(&self) -> usize {
        self.table.len() - self.shadows.len()
    }

    /// Every (key, session), shadows included.
    pub fn iter(&self) -> impl Iterator<Item = (SessionKey, &Session)> {
        self.table.iter()
    }
}

impl Index<SessionKey> for Sessions {
    type Output = Session;
    fn index(&self, key: SessionKey) -> &Session {
        &self.table[key]
    }
}

impl IndexMut<SessionKey> for Sessions {
    fn index_mut(&mut self, key: SessionKey) -> &mut Session {
        &mut self.table[key]
    }
}
