//! Who receives what: published tracks are added to a room, subscribers get a down-track for
//! each track they want, and down-tracks are bound, opened and unbound.

use std::time::Instant;

use link::TrackSettings;
use str0m::media::{MediaKind, Mid, Rid};

use super::ids::{DownKey, SessionKey, UpKey};
use super::track::{DownState, DownTrack, UpTrack};
use super::{Core, NACK_HISTORY_PACKETS, RTX_RATIO_CAP};

impl Core {
    /// Adds a published track to a session (local or shadow) and subscribes the room to it.
    pub(super) fn add_up(&mut self, now: Instant, owner: SessionKey, mid: Mid, kind: MediaKind, rids: &[Rid]) {
        if self.up_by_mid(owner, mid).is_some() {
            return;
        }
        let up = self.ups.insert(UpTrack::new(owner, mid, kind, rids));
        let s = &mut self.sessions[owner];
        s.ups.push(up);
        let members = self.rooms.get(&s.room).cloned().unwrap_or_default();
        for sub in members {
            self.attach(now, up, sub);
        }
    }

    /// Subscribes a newcomer to every track already published in its room.
    pub(super) fn attach_existing(&mut self, now: Instant, sub: SessionKey) {
        let room = &self.sessions[sub].room;
        let ups: Vec<UpKey> = self.rooms.get(room).into_iter().flatten().flat_map(|m| self.sessions[*m].ups.iter().copied()).collect();
        for up in ups {
            self.attach(now, up, sub);
        }
    }

    /// Gives `sub` a down-track of `up`, if its subscription takes that track and it has none yet.
    pub(super) fn attach(&mut self, now: Instant, up: UpKey, sub: SessionKey) {
        let Some(p) = self.ups.get(up).and_then(|t| self.sessions.get(t.owner)) else { return };
        if self.sessions.get(sub).is_some_and(|s| s.receives_from(&p.id, &p.identity)) {
            self.attach_chosen(now, up, sub, None);
        }
    }

    /// The down-track of `up` that `sub` has, if any.
    pub(super) fn down_of(&self, sub: SessionKey, up: UpKey) -> Option<DownKey> {
        self.sessions.get(sub)?.downs.iter().copied().find(|d| self.downs.get(*d).is_some_and(|d| d.up == Some(up)))
    }

    /// Gives `sub` a down-track of `up` with `settings` (else the session's defaults), or
    /// applies them to the one it has.
    pub(super) fn attach_chosen(&mut self, now: Instant, up: UpKey, sub: SessionKey, settings: Option<TrackSettings>) {
        let Some(track) = self.ups.get(up) else { return };
        let (publisher, kind) = (track.owner, track.kind);
        if publisher == sub {
            return;
        }
        if let Some(dk) = self.down_of(sub, up) {
            if let (Some(set), Some(d)) = (settings, self.downs.get_mut(dk)) {
                d.settings = set;
                self.retarget(now, dk);
            }
            return;
        }
        let (Some(p), Some(s)) = (self.sessions.get(publisher), self.sessions.get(sub)) else { return };
        if !s.grants.subscribe {
            return;
        }
        let settings = settings.unwrap_or(s.video);
        // Receivers group a publisher's tracks by its session id.
        let (stream_id, track_id) = (p.id.clone(), format!("{}-{}", p.id, track.mid));
        if s.binds_offered_lines() {
            // WHEP: bind to an m-line the client already offered; no renegotiation.
            // A line that carried an earlier source continues its numbering and clock.
            let idle = s.downs.iter().copied().find(|d| self.downs.get(*d).is_some_and(|d| d.kind == kind && matches!(d.state, DownState::Idle(_))));
            let Some(dk) = idle else { return };
            let down = &mut self.downs[dk];
            let DownState::Idle(mid) = down.state else { return };
            down.up = Some(up);
            down.stream_id = stream_id;
            down.track_id = track_id;
            down.state = DownState::Open(mid);
            down.settings = settings;
            down.rewrite.switch_source();
            self.ups[up].downs.push(dk);
            self.open(now, dk);
        } else {
            let dk = self.downs.insert(DownTrack::wanted(sub, up, kind, stream_id, track_id, settings));
            self.sessions[sub].downs.push(dk);
            self.ups[up].downs.push(dk);
            self.dirty.push(sub);
        }
    }

    /// A down-track became open: size its NACK history, choose its layer (asking for a
    /// keyframe of it) and put it in the fan-out.
    pub(super) fn open(&mut self, now: Instant, dk: DownKey) {
        let Some(down) = self.downs.get(dk) else { return };
        let (Some(_), DownState::Open(mid)) = (down.up, down.state) else { return };
        if let Some(s) = self.sessions.get_mut(down.subscriber) {
            if let Some(tx) = s.rtc.direct_api().stream_tx_by_mid(mid, None) {
                // str0m keeps 3 s by default; per subscriber that is most of its memory. Only
                // nackable (video) packets are ever cached, so audio streams keep nothing.
                tx.set_rtx_cache(NACK_HISTORY_PACKETS, self.cfg.nack_history, Some(RTX_RATIO_CAP));
            }
        }
        // Under an estimate, a new video track takes its share at once rather than starting
        // on the layer it asks for.
        let (sub, video) = (down.subscriber, down.kind == MediaKind::Video);
        if video && self.sessions.get(sub).is_some_and(|s| s.estimate.is_some()) {
            self.allocate(now, sub);
        } else {
            self.retarget(now, dk);
        }
    }

    /// The track a down-track carried is gone: a WHEP line goes idle (keeping its rewrite
    /// state for the next source), an open m-line is stopped at the next offer, and one not
    /// yet offered is dropped.
    pub(super) fn unbind(&mut self, dk: DownKey) {
        let Some(down) = self.downs.get_mut(dk) else { return };
        down.up = None;
        down.selector.set_target(None);
        down.desired = None;
        let sub = down.subscriber;
        let whep = self.sessions.get(sub).is_some_and(|s| s.binds_offered_lines());
        match down.state {
            DownState::Open(m) | DownState::Negotiating(m) if whep => down.state = DownState::Idle(m),
            DownState::Open(m) => down.state = DownState::ToStop(m),
            DownState::ToOpen => {
                self.downs.remove(dk);
                if let Some(s) = self.sessions.get_mut(sub) {
                    s.downs.retain(|d| *d != dk);
                }
            }
            // Settled when the answer comes (Negotiating becomes ToStop), or already going.
            DownState::Negotiating(_) | DownState::ToStop(_) | DownState::NegotiatingStop(_) | DownState::Idle(_) => {}
        }
        self.dirty.push(sub);
    }

    /// Removes a down-track from its up-track's lists and from the table.
    pub(super) fn drop_down(&mut self, dk: DownKey) {
        let Some(down) = self.downs.remove(dk) else { return };
        if let Some(up) = down.up.and_then(|u| self.ups.get_mut(u)) {
            up.forget(dk);
        }
    }

    /// Stops sending `up` to `sub`: its down-track leaves the up-track and its m-line goes.
    pub(super) fn detach(&mut self, sub: SessionKey, up: UpKey) {
        let Some(dk) = self.down_of(sub, up) else { return };
        if let Some(t) = self.ups.get_mut(up) {
            t.forget(dk);
        }
        self.unbind(dk);
    }
}
