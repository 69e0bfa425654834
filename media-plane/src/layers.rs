//! Simulcast layers: which layer each subscriber should get (from what it asked for, the
//! layers that are live, and its bandwidth), and when it may switch (only at a keyframe of
//! the target layer, so the decoder never sees a picture it cannot decode).
//!
//! Plain state, no I/O: the SFU core feeds it packets and decisions, tests feed it scripts.

use link::{Quality, TrackSettings};

/// A layer slot of one published track: the index of its rid in the offer (stable).
pub type Slot = u8;

/// What is known of one layer of a published track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerView {
    /// Its slot.
    pub slot: Slot,
    /// Frame size from its last keyframe, if the codec tells.
    pub size: Option<(u16, u16)>,
    /// Measured bitrate, bits per second.
    pub bitrate: u64,
}

/// Orders layers lowest first: by frame size where every layer's is known, else by offer
/// order (Chrome's and our web app's encodings go lowest first), else by bitrate.
pub fn rank(layers: &mut [LayerView]) {
    if layers.iter().all(|l| l.size.is_some()) {
        layers.sort_by_key(|l| l.size.map(|(w, h)| u32::from(w) * u32::from(h)));
    } else {
        layers.sort_by_key(|l| l.slot);
    }
}

/// The layer a subscriber should receive: the lowest layer that covers the size it renders
/// (or the highest there is), no higher than its quality cap, then lowered until it fits
/// `budget` (bits per second). `None`: nothing (disabled, or no live layer).
/// `layers` must be ranked ([`rank`]) and hold only live layers.
pub fn choose(layers: &[LayerView], wanted: &TrackSettings, budget: Option<u64>) -> Option<Slot> {
    if !wanted.enabled || layers.is_empty() {
        return None;
    }
    let top = layers.len() - 1;
    let mut pick = match wanted.quality {
        Some(Quality::Low) => 0,
        Some(Quality::Medium) => usize::from(top >= 2),
        Some(Quality::High) | None => top,
    };
    if wanted.max_width.is_some() || wanted.max_height.is_some() {
        let (w, h) = (wanted.max_width.unwrap_or(0), wanted.max_height.unwrap_or(0));
        // A layer whose size is not known yet (it has sent no keyframe, perhaps because
        // dynacast paused it) may cover the tile: choosing it is how its size gets known.
        let covers = layers.iter().position(|l| l.size.is_none_or(|(lw, lh)| u32::from(lw) >= w && u32::from(lh) >= h));
        let any_known = layers.iter().any(|l| l.size.is_some());
        if let Some(c) = covers.filter(|_| any_known) {
            pick = pick.min(c);
        } else if !any_known {
            // Sizes unknown (H.264): guess from the share of the top layer's 720p.
            let area = u64::from(w.max(1)) * u64::from(h.max(1));
            let needed = if area <= 320 * 180 { 0 } else if area <= 640 * 360 { 1 } else { top };
            pick = pick.min(needed.min(top));
        }
    }
    if let Some(b) = budget {
        while pick > 0 && layers[pick].bitrate > b {
            pick -= 1;
        }
        if layers[pick].bitrate > b && layers[pick].bitrate > 0 {
            return None;
        }
    }
    Some(layers[pick].slot)
}

/// The layer to forward for a subscriber that wants `desired`: it if it is live, else the
/// nearest live layer below it, else the nearest above. `live` is ranked.
pub fn nearest_live(live: &[LayerView], all: &[LayerView], desired: Slot) -> Option<Slot> {
    if live.iter().any(|l| l.slot == desired) {
        return Some(desired);
    }
    let rank_of = |slot: Slot| all.iter().position(|l| l.slot == slot);
    let want = rank_of(desired)?;
    let below = live.iter().rev().find(|l| rank_of(l.slot).is_some_and(|r| r < want));
    below.or_else(|| live.iter().find(|l| rank_of(l.slot).is_some_and(|r| r > want))).map(|l| l.slot)
}

/// What to do with one received packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for this subscriber.
    Drop,
    /// Forward it.
    Forward,
    /// Forward it, and it starts a new source: rebase numbering and clock from here.
    Switch,
}

/// Which temporal layers of one down-track's VP8 stream go out. Decided at the first packet
/// of each frame and held for the rest of it. Going down applies from the next frame; going
/// up waits for a frame that a decoder can take without the layers left out so far: a
/// keyframe, or a layer-sync frame (RFC 7741's Y bit, which depends only on the base layer).
/// Starting up at any frame would hand the decoder a frame whose reference it never got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TemporalGate {
    /// Highest temporal layer that goes out now (`None`: all).
    ceiling: Option<u8>,
    /// Whether the frame in progress goes out.
    frame_passes: bool,
}

impl TemporalGate {
    /// Whether a packet of temporal layer `tid` goes out, when the allocation allows
    /// `target` (`None`: all); `begins_frame`, `sync` and `keyframe` describe its frame.
    pub fn admit(&mut self, target: Option<u8>, tid: u8, begins_frame: bool, sync: bool, keyframe: bool) -> bool {
        if !begins_frame && !keyframe {
            return self.frame_passes;
        }
        let lower = match (target, self.ceiling) {
            (Some(t), Some(c)) => t < c,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if lower || keyframe {
            self.ceiling = target;
        } else if self.ceiling.is_some_and(|c| tid > c) && sync && target.is_none_or(|t| tid <= t) {
            self.ceiling = if target.is_some_and(|t| t == tid) { target } else { Some(tid) };
        }
        self.frame_passes = self.ceiling.is_none_or(|c| tid <= c);
        self.frame_passes
    }
}

/// One down-track's layer state: the layer it forwards and the one it should forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selector {
    current: Option<Slot>,
    target: Option<Slot>,
}

impl Selector {
    /// Sets the layer to forward from now on (`None`: pause). A pause takes effect at once;
    /// any other change waits for a keyframe of the new layer.
    pub fn set_target(&mut self, target: Option<Slot>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// The layer being forwarded.
    pub fn current(&self) -> Option<Slot> {
        self.current
    }

    /// The layer wanted.
    pub fn target(&self) -> Option<Slot> {
        self.target
    }

    /// The layer whose keyframe is awaited, if a switch is pending.
    pub fn awaiting_keyframe(&self) -> Option<Slot> {
        if self.target != self.current {
            self.target
        } else {
            None
        }
    }

    /// Decides for one packet of layer `slot`. `gated`: the track is simulcast, so a switch
    /// must start at a keyframe (a single-layer track starts at once, asking for one).
    pub fn on_packet(&mut self, slot: Slot, keyframe_start: bool, gated: bool) -> Verdict {
        if self.target == Some(slot) && self.current != self.target && (keyframe_start || !gated) {
            self.current = self.target;
            return Verdict::Switch;
        }
        if self.current == Some(slot) {
            Verdict::Forward
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn temporal_layers_come_back_only_at_a_sync_frame_and_go_at_once() {
        let mut g = TemporalGate::default();
        // All layers: L1T3 frames 0, 2, 1, 2 pass; a frame's later packets follow its first.
        assert!(g.admit(None, 0, true, false, true));
        assert!(g.admit(None, 2, true, false, false));
        assert!(g.admit(None, 2, false, false, false));
        // Base only from the next frame.
        assert!(!g.admit(Some(0), 1, true, false, false));
        assert!(!g.admit(Some(0), 1, false, false, false));
        assert!(g.admit(Some(0), 0, true, false, false));
        assert!(!g.admit(Some(0), 2, true, true, false));
        // All allowed again: a TL2 frame that references a TL1 frame left out waits...
        assert!(!g.admit(None, 2, true, false, false));
        assert!(!g.admit(None, 1, true, false, false), "not a sync frame");
        // ...until a sync frame of TL1, then TL2 needs its own sync frame.
        assert!(g.admit(None, 1, true, true, false));
        assert!(g.admit(None, 1, false, false, false));
        assert!(!g.admit(None, 2, true, false, false));
        assert!(g.admit(None, 2, true, true, false));
        assert!(g.admit(None, 2, true, false, false));
        assert!(g.admit(None, 0, true, false, false));
    }

    #[test]
    fn a_keyframe_opens_every_allowed_layer_at_once() {
        let mut g = TemporalGate::default();
        assert!(g.admit(Some(0), 0, true, false, true));
        assert!(!g.admit(Some(0), 1, true, true, false));
        assert!(g.admit(None, 0, true, false, true), "keyframe");
        assert!(g.admit(None, 2, true, false, false), "no sync needed after a keyframe");
        assert!(g.admit(Some(1), 1, true, false, false));
        assert!(!g.admit(Some(1), 2, true, true, false), "above the allocation");
    }

    use super::*;

    fn three() -> Vec<LayerView> {
        let mut l = vec![
            LayerView { slot: 2, size: Some((1280, 720)), bitrate: 1_500_000 },
            LayerView { slot: 0, size: Some((320, 180)), bitrate: 150_000 },
            LayerView { slot: 1, size: Some((640, 360)), bitrate: 500_000 },
        ];
        rank(&mut l);
        l
    }

    fn settings(q: Option<Quality>, w: Option<u32>, h: Option<u32>) -> TrackSettings {
        TrackSettings { enabled: true, max_width: w, max_height: h, quality: q, max_fps: None }
    }

    #[test]
    fn layers_rank_by_size_when_known_else_by_offer_order() {
        assert_eq!(three().iter().map(|l| l.slot).collect::<Vec<_>>(), vec![0, 1, 2]);
        let mut l = vec![LayerView { slot: 1, size: None, bitrate: 9 }, LayerView { slot: 0, size: Some((1, 1)), bitrate: 1 }];
        rank(&mut l);
        assert_eq!(l[0].slot, 0);
    }

    #[test]
    fn choice_follows_quality_size_and_budget() {
        let l = three();
        assert_eq!(choose(&l, &TrackSettings::default(), None), Some(2));
        assert_eq!(choose(&l, &settings(Some(Quality::Low), None, None), None), Some(0));
        assert_eq!(choose(&l, &settings(Some(Quality::Medium), None, None), None), Some(1));
        assert_eq!(choose(&l, &settings(None, Some(320), Some(180)), None), Some(0));
        assert_eq!(choose(&l, &settings(None, Some(400), Some(200)), None), Some(1));
        assert_eq!(choose(&l, &settings(None, Some(4000), Some(3000)), None), Some(2));
        assert_eq!(choose(&l, &TrackSettings::default(), Some(600_000)), Some(1));
        assert_eq!(choose(&l, &TrackSettings::default(), Some(100_000)), None, "not even the lowest fits: paused");
        assert_eq!(choose(&l, &TrackSettings { enabled: false, ..Default::default() }, None), None);
        assert_eq!(choose(&[], &TrackSettings::default(), None), None);
        // The middle layer has not told its size: it may cover a 568×320 tile, so it is
        // chosen (and, wanted, it will be sent and tell).
        let mut partly = l.clone();
        partly[1].size = None;
        assert_eq!(choose(&partly, &settings(None, Some(568), Some(320)), None), Some(1));
        assert_eq!(choose(&partly, &settings(None, Some(300), Some(170)), None), Some(0));
        let two = &l[..2];
        assert_eq!(choose(two, &settings(Some(Quality::Medium), None, None), None), Some(0));
    }

    #[test]
    fn a_paused_layer_is_stood_in_for_by_the_nearest_live_one() {
        let all = three();
        let live: Vec<LayerView> = all.iter().copied().filter(|l| l.slot != 2).collect();
        assert_eq!(nearest_live(&live, &all, 2), Some(1));
        assert_eq!(nearest_live(&live, &all, 0), Some(0));
        let top_only: Vec<LayerView> = all.iter().copied().filter(|l| l.slot == 2).collect();
        assert_eq!(nearest_live(&top_only, &all, 0), Some(2));
        assert_eq!(nearest_live(&[], &all, 0), None);
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target_layer() {
        let mut s = Selector::default();
        s.set_target(Some(2));
        assert_eq!(s.on_packet(2, false, true), Verdict::Drop);
        assert_eq!(s.awaiting_keyframe(), Some(2));
        assert_eq!(s.on_packet(2, true, true), Verdict::Switch);
        assert_eq!(s.on_packet(2, false, true), Verdict::Forward);
        s.set_target(Some(0));
        assert_eq!(s.on_packet(0, false, true), Verdict::Drop);
        assert_eq!(s.on_packet(2, false, true), Verdict::Forward, "the old layer goes on until the switch");
        assert_eq!(s.on_packet(0, true, true), Verdict::Switch);
        assert_eq!(s.on_packet(2, true, true), Verdict::Drop);
        s.set_target(None);
        assert_eq!(s.on_packet(0, true, true), Verdict::Drop, "a pause is immediate");
    }

    #[test]
    fn a_single_layer_track_starts_at_once() {
        let mut s = Selector::default();
        s.set_target(Some(0));
        assert_eq!(s.on_packet(0, false, false), Verdict::Switch);
        assert_eq!(s.on_packet(0, false, false), Verdict::Forward);
    }
}
