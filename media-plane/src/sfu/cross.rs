//! Messages between the cores of one node, for rooms that span cores.
//!
//! The publisher's core forwards each packet once per remote core that has members of the
//! room, handing over the shared `Arc<[u8]>` payload (never a copy). The remote core keeps a
//! *shadow* of the publisher (a session without a peer connection) whose tracks its local
//! subscribers attach to like to any local track.
//!
//! This module holds the messages and how a core applies them.

use std::time::Instant;

use link::LeaveReason;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::Rtc;

use super::forward::Packet;
use super::ids::SessionKey;
use super::session::Session;
use super::Core;
use crate::layers::Slot;

/// A publisher session on some core: core index, slab key and the session's serial number
/// (keys are reused; serials are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PubRef {
    /// Core that owns the publisher.
    pub core: u32,
    /// Session key on that core.
    pub key: SessionKey,
    /// Serial of the session on that core.
    pub serial: u64,
}

/// One message from one core to another.
#[derive(Debug)]
pub enum CrossMsg {
    /// `core` has (or no longer has) members of `room`.
    Members {
        /// Room.
        room: String,
        /// Sending core.
        core: u32,
        /// Whether it has members now.
        present: bool,
    },
    /// A track published on another core, for the receiving core's members of `room`.
    Track {
        /// Room.
        room: String,
        /// The publisher.
        from: PubRef,
        /// Publisher session id (receivers group tracks by it).
        session: String,
        /// Publisher identity.
        identity: String,
        /// Publisher-side mid.
        mid: Mid,
        /// Audio or video.
        kind: MediaKind,
        /// Its simulcast rids, lowest first as offered (empty: one layer).
        rids: Vec<Rid>,
    },
    /// The publisher left; its shadow goes.
    PublisherLeft {
        /// The publisher.
        from: PubRef,
    },
    /// `core` failed and restarted empty: every shadow of its publishers goes, and it has no
    /// members anywhere.
    CoreRestarted {
        /// The restarted core.
        core: u32,
    },
    /// One RTP packet of a published track.
    Rtp(Box<CrossRtp>),
    /// A subscriber on another core asks for a keyframe.
    Keyframe {
        /// The publisher (on the receiving core).
        to: PubRef,
        /// Publisher-side mid.
        mid: Mid,
        /// The layer.
        slot: Slot,
        /// PLI or FIR.
        kind: KeyframeRequestKind,
    },
    /// Which layers of a track a core's subscribers want (a bit per slot); the publisher's
    /// core forwards only those to it, and tells the publisher the union.
    LayersWanted {
        /// The publisher (on the receiving core).
        to: PubRef,
        /// Publisher-side mid.
        mid: Mid,
        /// The core whose subscribers want them.
        core: u32,
        /// Bit `s` set: slot `s` is wanted.
        mask: u32,
    },
}

/// An RTP packet handed to another core: the publisher's track and the shared packet.
#[derive(Debug)]
pub struct CrossRtp {
    /// The publisher.
    pub from: PubRef,
    /// Publisher-side mid.
    pub mid: Mid,
    /// The packet, its payload shared with every other subscriber.
    pub packet: Packet,
}

impl Core {
    /// Applies one message from another core of this node.
    pub fn handle_cross(&mut self, now: Instant, msg: CrossMsg) {
        match msg {
            CrossMsg::Members { room, core, present } => self.room_members_changed(room, core, present),
            CrossMsg::Track { room, from, session, identity, mid, kind, rids } => {
                if self.local_members(&room) == 0 {
                    return;
                }
                let key = match self.sessions.shadow_of(&from) {
                    Some(k) => k,
                    None => self.add_shadow(now, &room, from, &session, &identity),
                };
                self.add_up(now, key, mid, kind, &rids);
            }
            CrossMsg::PublisherLeft { from } => {
                if let Some(key) = self.sessions.shadow_of(&from) {
                    self.sessions[key].ending = Some(LeaveReason::Requested);
                    self.maybe_ending.push(key);
                }
            }
            CrossMsg::CoreRestarted { core } => self.core_restarted(core),
            CrossMsg::Rtp(r) => {
                let Some(key) = self.sessions.shadow_of(&r.from) else { return };
                if let Some(up) = self.up_by_mid(key, r.mid) {
                    self.fan_out(up, &r.packet);
                }
            }
            CrossMsg::Keyframe { to, mid, slot, kind } => {
                if let Some(up) = self.own_up(to, mid) {
                    self.request_keyframe(now, up, slot, kind);
                }
            }
            CrossMsg::LayersWanted { to, mid, core, mask } => {
                if let Some(up) = self.own_up(to, mid) {
                    self.set_remote_wants(up, core, mask);
                }
            }
        }
        self.drain(now);
    }

    /// The up-track `mid` of a publisher on this core, if `to` still names it.
    fn own_up(&self, to: PubRef, mid: Mid) -> Option<super::ids::UpKey> {
        let owned = self.sessions.get(to.key).is_some_and(|s| s.serial == to.serial && s.shadow.is_none());
        owned.then(|| self.up_by_mid(to.key, mid)).flatten()
    }

    /// Another core gained or lost its members of `room`; a newcomer hears of every track
    /// published here.
    /// Forgets everything `core` had: its publishers' shadows end, and its rooms lose it.
    fn core_restarted(&mut self, core: u32) {
        let shadows: Vec<SessionKey> = self.sessions.iter().filter(|(_, s)| s.shadow.is_some_and(|p| p.core == core)).map(|(k, _)| k).collect();
        for key in shadows {
            self.sessions[key].ending = Some(LeaveReason::Requested);
            self.maybe_ending.push(key);
        }
        let rooms: Vec<String> = self.room_cores.iter().filter(|(_, cores)| cores.contains(&core)).map(|(r, _)| r.clone()).collect();
        for room in rooms {
            self.room_members_changed(room, core, false);
        }
    }

    /// The rooms and ids of this core's participant sessions (not shadows): whom to tell when
    /// the core fails.
    pub fn participant_sessions(&self) -> Vec<(String, String)> {
        self.sessions.iter().filter(|(_, s)| s.shadow.is_none()).map(|(_, s)| (s.room.clone(), s.id.clone())).collect()
    }

    fn room_members_changed(&mut self, room: String, core: u32, present: bool) {
        if core == self.cfg.index {
            return;
        }
        self.forget_remote_wants(&room, core);
        let cores = self.room_cores.entry(room.clone()).or_default();
        cores.retain(|c| *c != core);
        if !present {
            if cores.is_empty() {
                self.room_cores.remove(&room);
            }
            return;
        }
        cores.push(core);
        for &key in self.rooms.get(&room).into_iter().flatten() {
            let s = &self.sessions[key];
            if s.shadow.is_some() {
                continue;
            }
            let from = PubRef { core: self.cfg.index, key, serial: s.serial };
            for t in s.ups.iter().filter_map(|u| self.ups.get(*u)) {
                let msg = CrossMsg::Track { room: room.clone(), from, session: s.id.clone(), identity: s.identity.clone(), mid: t.mid, kind: t.kind, rids: t.rids() };
                self.out.cross.push((core, msg));
            }
        }
    }

    /// Sessions of `room` on this core that are not shadows.
    pub(super) fn local_members(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |m| m.iter().filter(|k| self.sessions[**k].shadow.is_none()).count())
    }

    /// Tells every other core that this core has (or no longer has) members of `room`.
    pub(super) fn announce_members(&mut self, room: &str, present: bool) {
        for c in (0..self.cfg.cores).filter(|c| *c != self.cfg.index) {
            self.out.cross.push((c, CrossMsg::Members { room: room.to_string(), core: self.cfg.index, present }));
        }
    }

    /// Tells the other cores with members of the session's room about one of its tracks.
    pub(super) fn announce_track(&mut self, key: SessionKey, mid: Mid, kind: MediaKind, rids: &[Rid]) {
        let s = &self.sessions[key];
        let from = PubRef { core: self.cfg.index, key, serial: s.serial };
        for &c in self.room_cores.get(&s.room).into_iter().flatten() {
            let msg = CrossMsg::Track { room: s.room.clone(), from, session: s.id.clone(), identity: s.identity.clone(), mid, kind, rids: rids.to_vec() };
            self.out.cross.push((c, msg));
        }
    }

    /// Creates the shadow of a publisher on another core and puts it in the room.
    fn add_shadow(&mut self, now: Instant, room: &str, from: PubRef, session: &str, identity: &str) -> SessionKey {
        let s = Session {
            id: session.to_string(),
            identity: identity.to_string(),
            room: room.to_string(),
            rtc: Rtc::builder().set_rtp_mode(true).build(now),
            grants: link::Grants { publish: true, subscribe: false },
            subscription: link::Subscription::None,
            video: link::TrackSettings::default(),
            ufrag: String::new(),
            ice_pass: String::new(),
            liveness: Default::default(),
            addrs: Vec::new(),
            ups: Vec::new(),
            downs: Vec::new(),
            pending: None,
            pending_answer: None,
            next_timeout: now + std::time::Duration::from_secs(86_400 * 365),
            created: now,
            connected: true,
            estimate: None,
            loss_cap: Default::default(),
            probe: Default::default(),
            last_stats: None,
            ending: None,
            serial: self.sessions.next_serial(),
            shadow: Some(from),
        };
        let key = self.sessions.insert(s);
        self.rooms.entry(room.to_string()).or_default().push(key);
        key
    }
}
