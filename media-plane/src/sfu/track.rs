//! Published tracks (up-tracks) and each subscriber's copy of one (down-tracks).
//!
//! They live in their own tables beside the session table, so that forwarding can read a
//! publisher's track, write a subscriber's down-track and drive the subscriber's `Rtc` in one
//! pass without borrowing the same table twice.

use std::time::{Duration, Instant};

use link::TrackSettings;
use str0m::media::{MediaKind, Mid, Rid};

use super::ids::{DownKey, SessionKey, UpKey};
use crate::allocate::RaiseHold;
use crate::codec::FrameInfo;
use crate::layers::{LayerView, Selector, Slot, TemporalGate};
use crate::rewrite::Rewrite;
use crate::vp8munge::Vp8Munger;

/// Most layers a track keeps; further rids in an offer are ignored (their packets dropped).
pub const MAX_LAYERS: usize = 4;

/// A layer whose last packet is older than this at the end of a window has stopped within it.
const STILL_SENDING: Duration = Duration::from_millis(200);

/// A bitrate is measured over at least this much of a window.
const MIN_SPAN: Duration = Duration::from_millis(500);

/// A layer that sent nothing for this long is taken as paused by its publisher.
pub const LAYER_IDLE: Duration = Duration::from_millis(1500);

/// One simulcast layer of a published track (a track without simulcast has one, with no rid).
#[derive(Debug, Clone)]
pub struct UpLayer {
    /// Its rid.
    pub rid: Option<Rid>,
    /// Frame size of its last keyframe, where the codec tells.
    pub size: Option<(u16, u16)>,
    /// Payload bytes received in the current measuring window.
    pub window_bytes: u64,
    /// Bitrate measured over the last full window (kept while the layer is paused).
    pub bitrate: u64,
    /// When its last packet arrived.
    pub last_packet: Option<Instant>,
    /// When it last started sending after a pause (or at all).
    pub live_from: Option<Instant>,
    /// When a keyframe was last asked of the publisher for this layer.
    pub last_keyframe_request: Option<Instant>,
    /// It has sent temporal layers above the base.
    pub temporal: bool,
    /// Frames begun in the current measuring window, by temporal layer.
    pub window_frames: [u32; TEMPORAL_LAYERS],
    /// Frames per second of each temporal layer over the last full window.
    pub fps: [u32; TEMPORAL_LAYERS],
}

/// Temporal layers VP8 can signal (TID 0–3).
pub const TEMPORAL_LAYERS: usize = 4;

impl UpLayer {
    /// A layer not heard from yet.
    pub fn new(rid: Option<Rid>) -> Self {
        UpLayer {
            rid,
            size: None,
            window_bytes: 0,
            bitrate: 0,
            last_packet: None,
            live_from: None,
            last_keyframe_request: None,
            temporal: false,
            window_frames: [0; TEMPORAL_LAYERS],
            fps: [0; TEMPORAL_LAYERS],
        }
    }

    /// Closes a measuring window that started at `window_start`. The bitrate is taken over
    /// the part of the window the layer was sending throughout, and only if it still is: a
    /// layer resumed or paused within the window would read low, and a paused layer keeps
    /// the last rate it was measured at (a low reading made the allocator raise a viewer to
    /// it and fall back at every resume, in a cycle of 1–3 s).
    pub fn roll(&mut self, window_start: Instant, now: Instant) {
        let bytes = std::mem::take(&mut self.window_bytes);
        let frames = std::mem::take(&mut self.window_frames);
        let (Some(from), Some(last)) = (self.live_from, self.last_packet) else { return };
        if bytes == 0 || now.saturating_duration_since(last) > STILL_SENDING {
            return;
        }
        let span = now.saturating_duration_since(from.max(window_start));
        if span >= MIN_SPAN {
            let ms = (span.as_millis() as u64).max(1);
            self.bitrate = bytes * 8 * 1000 / ms;
            self.fps = frames.map(|f| u32::try_from(u64::from(f) * 1000 / ms).unwrap_or(u32::MAX));
        }
    }

    /// The highest temporal layer to forward so that the frame rate stays within `max_fps`
    /// (a layer counts as within it up to a tenth over, as measured rates wobble); `None`
    /// when every layer fits or the layer sends no temporal layers.
    pub fn tid_for_fps(&self, max_fps: u32) -> Option<u8> {
        if !self.temporal {
            return None;
        }
        let top = self.fps.iter().rposition(|f| *f > 0)?;
        let mut total = 0u64;
        for (tid, f) in self.fps.iter().enumerate().take(top) {
            total += u64::from(*f);
            let next = total + u64::from(self.fps[tid + 1]);
            // Taking the next layer too would go over the cap by more than a tenth.
            if next * 10 > u64::from(max_fps) * 11 {
                return u8::try_from(tid).ok();
            }
        }
        None
    }

    /// Whether it has sent recently.
    pub fn live(&self, now: Instant) -> bool {
        self.last_packet.is_some_and(|t| now.saturating_duration_since(t) < LAYER_IDLE)
    }
}

/// A track one session publishes (or a shadow carries from another core).
#[derive(Debug)]
pub struct UpTrack {
    /// The publishing session.
    pub owner: SessionKey,
    /// The publisher-side mid.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// Down-tracks bound to it, in any state.
    pub downs: Vec<DownKey>,
    /// By slot, the down-tracks a packet of that layer goes to: open ones whose current or
    /// target layer it is. A disabled, paused or unsubscribed subscription is in none and
    /// costs nothing per packet; one on another layer costs nothing either.
    pub fanout: Vec<Vec<DownKey>>,
    /// Its layers, by slot (the order of the rids in the offer).
    pub layers: Vec<UpLayer>,
    /// Slots someone wants, as a bit set (dynacast); last told to the publisher.
    pub wanted: u32,
    /// Slots that subscribers on other cores want (origin track only), by core.
    pub remote_wanted: Vec<(u32, u32)>,
    /// Its share of a subscriber's bandwidth comes before that of lower ones (screen share).
    pub priority: u8,
}

impl UpTrack {
    /// A new track with one layer per rid (one without a rid when `rids` is empty).
    pub fn new(owner: SessionKey, mid: Mid, kind: MediaKind, rids: &[Rid]) -> Self {
        let layers = if rids.is_empty() { vec![UpLayer::new(None)] } else { rids.iter().take(MAX_LAYERS).map(|r| UpLayer::new(Some(*r))).collect() };
        // Until the first tick says otherwise, the publisher sends (and is taken to be asked for) every layer.
        let fanout = vec![Vec::new(); layers.len()];
        UpTrack { owner, mid, kind, downs: Vec::new(), fanout, layers, wanted: u32::MAX, remote_wanted: Vec::new(), priority: 0 }
    }

    /// Takes a down-track out of every fan-out list.
    pub fn forget(&mut self, dk: DownKey) {
        self.downs.retain(|d| *d != dk);
        for list in &mut self.fanout {
            list.retain(|d| *d != dk);
        }
    }

    /// Whether its layers carry temporal layers above the base.
    pub fn temporal(&self) -> bool {
        self.layers.iter().any(|l| l.temporal)
    }

    /// Whether it is simulcast: more than one layer, so switches wait for keyframes.
    pub fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// Its rids, by slot (empty for a track without simulcast).
    pub fn rids(&self) -> Vec<Rid> {
        self.layers.iter().filter_map(|l| l.rid).collect()
    }

    /// Accounts one received packet of layer `slot`.
    pub fn note_packet(&mut self, slot: Slot, len: usize, frame: &FrameInfo, at: Instant) {
        let Some(l) = self.layers.get_mut(usize::from(slot)) else { return };
        if !l.live(at) {
            l.live_from = Some(at);
        }
        l.last_packet = Some(at);
        l.window_bytes += len as u64;
        if let Some(f) = frame.vp8 {
            let tid = f.tid.unwrap_or(0);
            if tid > 0 {
                l.temporal = true;
            }
            if f.begins_frame {
                if let Some(n) = l.window_frames.get_mut(usize::from(tid)) {
                    *n += 1;
                }
            }
        }
        if frame.size.is_some() {
            l.size = frame.size;
        }
    }

    /// Whether core `core` wants packets of layer `slot` (a core that has not said yet gets all).
    pub fn remote_wants(&self, core: u32, slot: Slot) -> bool {
        self.remote_wanted.iter().find(|(c, _)| *c == core).is_none_or(|(_, m)| m & (1 << slot) != 0)
    }

    /// The slot of `rid`.
    pub fn slot_of(&self, rid: Option<Rid>) -> Option<Slot> {
        self.layers.iter().position(|l| l.rid == rid).and_then(|i| Slot::try_from(i).ok())
    }

    /// Its layers as the selection sees them: every layer (`live_only` false) or those that
    /// sent recently, lowest first. While none has sent yet, every layer counts as live.
    pub fn views(&self, now: Instant, live_only: bool) -> Vec<LayerView> {
        let any_live = self.layers.iter().any(|l| l.live(now));
        let mut v: Vec<LayerView> = self
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| !live_only || !any_live || l.live(now))
            .filter_map(|(i, l)| Some(LayerView { slot: Slot::try_from(i).ok()?, size: l.size, bitrate: l.bitrate }))
            .collect();
        crate::layers::rank(&mut v);
        v
    }
}

/// Where a down-track's m-line is in its negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownState {
    /// Wanted; no m-line yet.
    ToOpen,
    /// Offered to the subscriber with this mid; waiting for its answer.
    Negotiating(Mid),
    /// Sending on this mid.
    Open(Mid),
    /// To be stopped in the next offer.
    ToStop(Mid),
    /// Stopped in an offer; gone once answered.
    NegotiatingStop(Mid),
    /// An m-line the client offered (WHEP) that no track is bound to now.
    Idle(Mid),
}

/// One subscriber's copy of a published track: its m-line and its rewrite state.
#[derive(Debug)]
pub struct DownTrack {
    /// The subscribing session.
    pub subscriber: SessionKey,
    /// The track it carries; `None` once that track is gone.
    pub up: Option<UpKey>,
    /// Audio or video.
    pub kind: MediaKind,
    /// Stream id of the m-line (`a=msid`): the publisher's session id.
    pub stream_id: String,
    /// Track id of the m-line.
    pub track_id: String,
    /// Negotiation state.
    pub state: DownState,
    /// Payload-type map, sequence rebase and timestamp offset.
    pub rewrite: Rewrite,
    /// What the subscriber asked for.
    pub settings: TrackSettings,
    /// The layer it wants, among all the track's layers (dynacast counts it as wanted).
    pub desired: Option<Slot>,
    /// The layer it forwards and the one it switches to at the next keyframe.
    pub selector: Selector,
    /// VP8 picture numbering continuity across switches.
    pub vp8: Vp8Munger,
    /// What the subscriber's bandwidth allows it.
    pub allotted: Allotted,
    /// Holds back raises of `allotted` until they have been possible for a while.
    pub raise_hold: RaiseHold,
    /// Highest temporal layer the allocation allows (`None`: all).
    pub max_tid: Option<u8>,
    /// Which temporal layers go out now, moving toward `max_tid` at safe frames.
    pub temporal: TemporalGate,
    /// Paused for lack of bandwidth (the client was told).
    pub paused: bool,
}

/// What a subscriber's stream allocator gave one of its video tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allotted {
    /// No estimate (yet, or estimation is off): what the client asks for.
    Unlimited,
    /// At most the layer of this slot.
    UpTo(Slot),
    /// The base temporal layer of this slot only (its lowest layer did not fit whole).
    Base(Slot),
    /// Nothing: it does not fit even at its lowest layer.
    Paused,
}

impl Allotted {
    /// The [`Allotted::level`] of the lowest layer, whole.
    const LOWEST_WHOLE: usize = 2;

    /// Whether going from `from` to this is a raise that waits (`allocate::RaiseHold`): a
    /// raise above the lowest layer. Back to the lowest layer (from a pause, or from its base
    /// temporal layer) never waits: a held unpause is a freeze of the hold plus a keyframe.
    pub fn held_over(self, from: Allotted, layers: &[LayerView]) -> bool {
        let to = self.level(layers);
        to > from.level(layers) && to > Self::LOWEST_WHOLE
    }

    /// Its height among `layers` (ranked lowest first): paused lowest, then each layer's
    /// base temporal layer below the whole layer; no limit, or a layer no longer there, is
    /// highest (anything applies at once from there).
    pub fn level(self, layers: &[LayerView]) -> usize {
        let pos = |slot: Slot| layers.iter().position(|l| l.slot == slot);
        match self {
            Allotted::Paused => 0,
            Allotted::Base(slot) => pos(slot).map_or(usize::MAX, |p| 2 * p + 1),
            Allotted::UpTo(slot) => pos(slot).map_or(usize::MAX, |p| 2 * p + 2),
            Allotted::Unlimited => usize::MAX,
        }
    }
}

impl DownTrack {
    /// A down-track waiting for its m-line.
    pub fn wanted(subscriber: SessionKey, up: UpKey, kind: MediaKind, stream_id: String, track_id: String, settings: TrackSettings) -> Self {
        DownTrack { up: Some(up), stream_id, track_id, state: DownState::ToOpen, settings, ..Self::idle(subscriber, Mid::from("-"), kind) }
    }

    /// An m-line offered by the client (WHEP), bound to nothing yet.
    pub fn idle(subscriber: SessionKey, mid: Mid, kind: MediaKind) -> Self {
        DownTrack {
            subscriber,
            up: None,
            kind,
            stream_id: String::new(),
            track_id: String::new(),
            state: DownState::Idle(mid),
            rewrite: Rewrite::default(),
            settings: TrackSettings::default(),
            desired: None,
            selector: Selector::default(),
            vp8: Vp8Munger::default(),
            allotted: Allotted::Unlimited,
            raise_hold: RaiseHold::default(),
            max_tid: None,
            temporal: TemporalGate::default(),
            paused: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_frame_rate_cap_keeps_the_temporal_layers_that_fit_it() {
        let mut l = super::UpLayer::new(None);
        // A 100 fps layer in the pattern 0, 2, 1, 2: 25 fps of TID 0, 25 of TID 1, 50 of TID 2.
        l.fps = [25, 25, 50, 0];
        assert_eq!(l.tid_for_fps(60), None, "not temporal: nothing to leave out");
        l.temporal = true;
        assert_eq!(l.tid_for_fps(100), None);
        assert_eq!(l.tid_for_fps(95), None, "within a tenth");
        assert_eq!(l.tid_for_fps(60), Some(1));
        assert_eq!(l.tid_for_fps(50), Some(1));
        assert_eq!(l.tid_for_fps(46), Some(1), "50 is within a tenth of 46");
        assert_eq!(l.tid_for_fps(40), Some(0));
        assert_eq!(l.tid_for_fps(1), Some(0), "never below the base layer");
        l.fps = [0; super::TEMPORAL_LAYERS];
        assert_eq!(l.tid_for_fps(10), None, "not measured yet");
    }

    use super::*;

    #[test]
    fn a_layer_resumed_or_paused_within_a_window_is_not_measured_low() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = UpLayer::new(None);
        // Sending throughout: 125 bytes every 10 ms = 100 kbit/s.
        let mut t = t0;
        while t < t0 + ms(1000) {
            l.last_packet = Some(t);
            l.live_from.get_or_insert(t);
            l.window_bytes += 125;
            t += ms(10);
        }
        l.roll(t0, t0 + ms(1000));
        assert_eq!(l.bitrate, 100_000);
        // Paused at 300 ms into the next window: the reading is kept, not lowered.
        let w1 = t0 + ms(1000);
        l.window_bytes = 125 * 30;
        l.last_packet = Some(w1 + ms(300));
        l.roll(w1, w1 + ms(1000));
        assert_eq!(l.bitrate, 100_000);
        // Resumed 400 ms into a window: measured over the 600 ms it sent.
        let w2 = t0 + ms(5000);
        l.live_from = Some(w2 + ms(400));
        l.window_bytes = 125 * 60;
        l.last_packet = Some(w2 + ms(995));
        l.roll(w2, w2 + ms(1000));
        assert_eq!(l.bitrate, 100_000);
    }
}
