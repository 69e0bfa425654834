//! Layer selection and dynacast: which layer each down-track forwards, which down-tracks are
//! in their up-track's fan-out, and which layers the publisher is told anyone wants.
//!
//! A down-track is chosen a layer when it opens or its settings change, and again on every
//! tick (layers come and go, learn their sizes, change their bitrates). The decisions are
//! the plain functions of [`crate::layers`].

use std::time::{Duration, Instant};

use link::Event as LinkEvent;
use str0m::bwe::Bitrate;
use str0m::media::{KeyframeRequestKind, MediaKind};

use super::cross::CrossMsg;
use super::ids::{DownKey, UpKey};
use super::ids::SessionKey;
use super::track::{Allotted, DownState};
use crate::allocate::{allocate, layer_rate, Want};
use super::Core;
use crate::layers::{choose, nearest_live, LayerView, Slot};

/// How often layers are measured and chosen again.
pub const TICK: Duration = Duration::from_millis(250);

/// Bitrates are measured over windows of this length.
const WINDOW: Duration = Duration::from_secs(1);

impl Core {
    /// Chooses again the layer of one down-track, from its up-track's layers now.
    pub(super) fn retarget(&mut self, now: Instant, dk: DownKey) {
        let Some(up) = self.downs.get(dk).and_then(|d| d.up) else { return };
        let Some(track) = self.ups.get(up) else { return };
        let (all, live) = (track.views(now, false), track.views(now, true));
        self.retarget_with(now, dk, up, &all, &live);
    }

    /// [`Core::retarget`] with the up-track's layers already ranked (`all`, and `live`).
    fn retarget_with(&mut self, now: Instant, dk: DownKey, up: UpKey, all: &[LayerView], live: &[LayerView]) {
        let Some(track) = self.ups.get(up) else { return };
        let audio = track.kind == MediaKind::Audio;
        let Some(down) = self.downs.get_mut(dk) else { return };
        let (desired, target) = if audio {
            let on = down.settings.enabled.then_some(0);
            (on, on)
        } else {
            let asked = choose(all, &down.settings, None);
            let rank = |slot: Slot| all.iter().position(|l| l.slot == slot);
            let desired = match down.allotted {
                Allotted::Unlimited => asked,
                Allotted::Paused => None,
                Allotted::UpTo(cap) | Allotted::Base(cap) => asked.map(|a| if rank(a) <= rank(cap) { a } else { cap }),
            };
            let target = desired.and_then(|d| nearest_live(live, all, d));
            // The allocation may allow only the base temporal layer; the subscriber's frame
            // rate may allow fewer layers than the one it gets sends.
            let layer = target.and_then(|slot| track.layers.get(usize::from(slot)));
            let by_fps = down.settings.max_fps.zip(layer).and_then(|(fps, l)| l.tid_for_fps(fps));
            let by_bandwidth = matches!(down.allotted, Allotted::Base(_)).then_some(0);
            down.max_tid = by_bandwidth.into_iter().chain(by_fps).min();
            let paused = asked.is_some() && desired.is_none();
            if paused != down.paused {
                down.paused = paused;
                if let (Some(s), Some(p)) = (self.sessions.get(down.subscriber), self.sessions.get(track.owner)) {
                    self.out.events.push(LinkEvent::TrackPaused { session: s.id.clone(), publisher: p.id.clone(), track: track.mid.to_string(), paused });
                }
            }
            (desired, target)
        };
        down.desired = desired;
        if down.selector.target() != target {
            down.selector.set_target(target);
            if let Some(slot) = down.selector.awaiting_keyframe() {
                self.request_keyframe(now, up, slot, KeyframeRequestKind::Pli);
            }
        }
        self.sync_fanout(dk);
    }

    /// Puts a down-track in the fan-out list of each layer it takes packets of now (its
    /// current and its target layer, while it is open), and in no other.
    pub(super) fn sync_fanout(&mut self, dk: DownKey) {
        let Some(down) = self.downs.get(dk) else { return };
        let Some(track) = down.up.and_then(|u| self.ups.get_mut(u)) else { return };
        let open = matches!(down.state, DownState::Open(_));
        for (slot, list) in track.fanout.iter_mut().enumerate() {
            let slot = Slot::try_from(slot).ok();
            let should = open && slot.is_some() && (down.selector.current() == slot || down.selector.target() == slot);
            match (should, list.iter().position(|d| *d == dk)) {
                (true, None) => list.push(dk),
                (false, Some(i)) => {
                    list.swap_remove(i);
                }
                _ => {}
            }
        }
    }

    /// Records a bandwidth estimate toward a session and allocates it.
    pub(super) fn set_estimate_of(&mut self, now: Instant, key: SessionKey, bps: u64) {
        let Some(s) = self.sessions.get_mut(key) else { return };
        s.estimate = Some(bps);
        self.allocate(now, key);
    }

    /// Takes a session's statistics report: the loss its receiver reports may cap what is
    /// allocated to it.
    pub(super) fn loss_report(&mut self, now: Instant, key: SessionKey, loss: Option<f32>, bytes_sent: u64) {
        let Some(s) = self.sessions.get_mut(key) else { return };
        let seconds = s.last_stats.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        s.last_stats = Some(now);
        let Some(estimate) = s.estimate else { return };
        let before = s.loss_cap.apply(estimate);
        s.loss_cap.on_report(loss, bytes_sent, seconds, estimate);
        if s.loss_cap.apply(estimate) != before {
            self.allocate(now, key);
        }
    }

    /// Spends a subscriber's bandwidth estimate across its video tracks, chooses their
    /// layers again, and points probing at what would give every track what it asks for.
    pub(super) fn allocate(&mut self, now: Instant, key: SessionKey) {
        let Some(s) = self.sessions.get(key) else { return };
        let Some(estimate) = s.estimate.map(|e| s.loss_cap.apply(e)) else { return };
        let mut audio = 0;
        let mut video: Vec<DownKey> = Vec::new();
        let mut wants: Vec<Want> = Vec::new();
        for &dk in &s.downs {
            let Some(d) = self.downs.get(dk) else { continue };
            let Some(track) = d.up.and_then(|u| self.ups.get(u)) else { continue };
            if !matches!(d.state, DownState::Open(_)) || !d.settings.enabled {
                continue;
            }
            if track.kind == MediaKind::Audio {
                audio += 1;
                continue;
            }
            let layers = track.views(now, false);
            let cap = choose(&layers, &d.settings, None).and_then(|slot| layers.iter().position(|l| l.slot == slot));
            video.push(dk);
            wants.push(Want { layers, cap, priority: track.priority, temporal: track.temporal() });
        }
        let (got, desired) = allocate(estimate, audio, &wants);
        let mut minimum = 0;
        for ((dk, grant), want) in video.iter().zip(&got).zip(&wants) {
            let allotted = match grant {
                Some(g) if g.base_only => Allotted::Base(want.layers[g.rank].slot),
                Some(g) => Allotted::UpTo(want.layers[g.rank].slot),
                None => Allotted::Paused,
            };
            // Probing keeps a floor of the next step up, so the estimate can grow into it.
            minimum += grant.map_or(0, |g| layer_rate(&want.layers, (g.rank + 1).min(want.cap.unwrap_or(g.rank))));
            if let Some(d) = self.downs.get_mut(*dk) {
                if d.raise_hold.admit(now, allotted.held_over(d.allotted, &want.layers)) {
                    d.allotted = allotted;
                }
            }
            self.retarget(now, *dk);
        }
        if let Some(s) = self.sessions.get_mut(key) {
            let asked = s.probe.desired(now, desired, estimate);
            s.rtc.bwe().set_bitrate(Bitrate::bps(minimum.min(asked)), Bitrate::bps(asked));
            // str0m takes a new desired rate in at its next timeout, due at once.
            self.dirty.push(key);
        }
    }

    /// Measures layers, chooses every down-track's layer again, re-asks for keyframes that
    /// a pending switch still waits for, and tells publishers which layers are wanted.
    pub(super) fn tick(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let window = now.saturating_duration_since(start);
        let roll = window >= WINDOW;
        if roll {
            self.window_start = Some(now);
        }
        let estimated: Vec<SessionKey> = self.sessions.iter().filter(|(_, s)| s.estimate.is_some()).map(|(k, _)| k).collect();
        for key in estimated {
            self.allocate(now, key);
        }
        let ups: Vec<UpKey> = self.ups.iter().map(|(k, _)| k).collect();
        for up in ups {
            let track = &mut self.ups[up];
            if roll {
                for l in &mut track.layers {
                    l.roll(start, now);
                }
            }
            let (all, live) = (track.views(now, false), track.views(now, true));
            for i in 0..self.ups[up].downs.len() {
                let Some(&dk) = self.ups[up].downs.get(i) else { break };
                self.retarget_with(now, dk, up, &all, &live);
                if let Some(slot) = self.downs.get(dk).and_then(|d| d.selector.awaiting_keyframe()) {
                    self.request_keyframe(now, up, slot, KeyframeRequestKind::Pli);
                }
            }
            self.tell_wanted(up);
        }
    }

    /// Tells the publisher (or, for a shadow, the publisher's core) which layers anyone here
    /// wants, when that changed.
    fn tell_wanted(&mut self, up: UpKey) {
        let Some(track) = self.ups.get(up) else { return };
        if track.kind != MediaKind::Video {
            return;
        }
        let local = track.downs.iter().filter_map(|d| self.downs.get(*d)?.desired).fold(0u32, |m, s: Slot| m | (1 << s));
        let Some(owner) = self.sessions.get(track.owner) else { return };
        if let Some(origin) = owner.shadow {
            if local != track.wanted {
                self.out.cross.push((origin.core, CrossMsg::LayersWanted { to: origin, mid: track.mid, core: self.cfg.index, mask: local }));
                self.ups[up].wanted = local;
            }
            return;
        }
        let all = track.remote_wanted.iter().fold(local, |m, (_, r)| m | r);
        if all == track.wanted {
            return;
        }
        if track.simulcast() {
            let rids = track.layers.iter().enumerate().filter(|(i, _)| all & (1 << i) != 0).filter_map(|(_, l)| l.rid.map(|r| r.to_string())).collect();
            self.out.events.push(LinkEvent::LayersWanted { session: owner.id.clone(), track: track.mid.to_string(), rids });
        }
        self.ups[up].wanted = all;
    }

    /// A subscriber core says which layers of a track it wants.
    pub(super) fn set_remote_wants(&mut self, up: UpKey, core: u32, mask: u32) {
        let Some(track) = self.ups.get_mut(up) else { return };
        match track.remote_wanted.iter_mut().find(|(c, _)| *c == core) {
            Some(e) => e.1 = mask,
            None => track.remote_wanted.push((core, mask)),
        }
        self.tell_wanted(up);
    }

    /// Another core left the room: its wishes no longer count.
    pub(super) fn forget_remote_wants(&mut self, room: &str, core: u32) {
        let ups: Vec<UpKey> = self.rooms.get(room).into_iter().flatten().filter_map(|k| self.sessions.get(*k)).flat_map(|s| s.ups.iter().copied()).collect();
        for up in ups {
            if let Some(t) = self.ups.get_mut(up) {
                t.remote_wanted.retain(|(c, _)| *c != core);
            }
            self.tell_wanted(up);
        }
    }
}
