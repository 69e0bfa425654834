//! The stream allocator of one subscriber: spends its bandwidth estimate across the video
//! tracks it receives, by priority, each capped by what the client asked for.
//!
//! Like LiveKit's allocator: first every track gets its lowest layer, by priority, while
//! the budget lasts (a track that does not fit even so is paused); then tracks are raised a
//! layer at a time, by priority, up to their caps. Audio is set aside first, so video never
//! starves it. A plain function of its inputs, tested on scripted estimates.

use std::time::{Duration, Instant};

use crate::layers::LayerView;

/// How long a raise of a track's allocation must stay possible before it is made. Lowering
/// is immediate. A probe through a policer with a burst allowance can read more than the
/// link holds for a second or two; a raise on it would be undone, after a freeze.
pub const RAISE_HOLD: Duration = Duration::from_secs(2);

/// Holds back raises of one track's allocation until they have been possible for
/// [`RAISE_HOLD`] without a break.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaiseHold {
    since: Option<Instant>,
}

impl RaiseHold {
    /// Whether the new allocation may be applied at `now`; `raise` says it is higher than
    /// the one in force.
    pub fn admit(&mut self, now: Instant, raise: bool) -> bool {
        if !raise {
            self.since = None;
            return true;
        }
        let since = *self.since.get_or_insert(now);
        if now.saturating_duration_since(since) < RAISE_HOLD {
            return false;
        }
        self.since = None;
        true
    }
}

/// Bandwidth set aside per audio track before video is allocated (Opus plus headers).
pub const AUDIO_RESERVE: u64 = 64_000;

/// One video track a subscriber wants.
#[derive(Debug, Clone)]
pub struct Want {
    /// Its layers, ranked lowest first.
    pub layers: Vec<LayerView>,
    /// The highest rank the client's settings allow (`None`: it wants nothing).
    pub cap: Option<usize>,
    /// Higher goes first (screen share above camera).
    pub priority: u8,
    /// The publisher sends temporal layers: the lowest layer's base alone (counted at half
    /// its rate) is a step below the lowest layer.
    pub temporal: bool,
}

/// What one track gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The rank of its layer.
    pub rank: usize,
    /// Only the base temporal layer of it.
    pub base_only: bool,
}

/// The rate a layer is counted at: its measured bitrate, or a guess by rank before any.
pub fn layer_rate(layers: &[LayerView], rank: usize) -> u64 {
    let measured = layers.get(rank).map_or(0, |l| l.bitrate);
    if measured > 0 {
        return measured;
    }
    match (layers.len(), rank) {
        (1, _) => 1_000_000,
        (_, 0) => 150_000,
        (n, r) if r + 1 < n => 500_000,
        _ => 1_500_000,
    }
}

/// What each track gets (`None`: paused or not wanted), and the rate it would take to
/// give every track its cap (what probing should aim for).
pub fn allocate(estimate: u64, audio_tracks: usize, wants: &[Want]) -> (Vec<Option<Grant>>, u64) {
    let mut budget = estimate.saturating_sub(AUDIO_RESERVE * audio_tracks as u64);
    let mut order: Vec<usize> = (0..wants.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(wants[i].priority));
    let mut got: Vec<Option<Grant>> = vec![None; wants.len()];
    for &i in &order {
        if wants[i].cap.is_none() {
            continue;
        }
        let need = layer_rate(&wants[i].layers, 0);
        if need <= budget {
            budget -= need;
            got[i] = Some(Grant { rank: 0, base_only: false });
        } else if wants[i].temporal && need / 2 <= budget {
            budget -= need / 2;
            got[i] = Some(Grant { rank: 0, base_only: true });
        }
    }
    loop {
        let mut raised = false;
        for &i in &order {
            let (Some(now), Some(cap)) = (got[i], wants[i].cap) else { continue };
            let layers = &wants[i].layers;
            let (next, extra) = if now.base_only {
                (Grant { rank: now.rank, base_only: false }, layer_rate(layers, now.rank) - layer_rate(layers, now.rank) / 2)
            } else if now.rank < cap {
                (Grant { rank: now.rank + 1, base_only: false }, layer_rate(layers, now.rank + 1).saturating_sub(layer_rate(layers, now.rank)))
            } else {
                continue;
            };
            if extra <= budget {
                budget -= extra;
                got[i] = Some(next);
                raised = true;
            }
        }
        if !raised {
            break;
        }
    }
    let desired = wants.iter().filter_map(|w| w.cap.map(|c| layer_rate(&w.layers, c))).sum::<u64>() + AUDIO_RESERVE * audio_tracks as u64;
    (got, desired)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_raise_waits_until_it_has_been_possible_for_the_hold_and_a_drop_does_not() {
        let mut h = RaiseHold::default();
        let t0 = Instant::now();
        let step = Duration::from_millis(250);
        assert!(!h.admit(t0, true));
        assert!(!h.admit(t0 + step * 4, true));
        assert!(h.admit(t0 + step * 8, true), "possible for 2 s");
        assert!(!h.admit(t0 + step * 9, true), "the next raise waits again");
        assert!(h.admit(t0 + step * 10, false), "a drop goes through at once and resets the wait");
        assert!(!h.admit(t0 + step * 11, true));
        assert!(!h.admit(t0 + step * 18, true));
        assert!(h.admit(t0 + step * 19, true));
    }

    use super::*;

    fn layers() -> Vec<LayerView> {
        vec![
            LayerView { slot: 0, size: Some((320, 180)), bitrate: 150_000 },
            LayerView { slot: 1, size: Some((640, 360)), bitrate: 500_000 },
            LayerView { slot: 2, size: Some((1280, 720)), bitrate: 1_500_000 },
        ]
    }

    fn want(cap: Option<usize>, priority: u8) -> Want {
        Want { layers: layers(), cap, priority, temporal: false }
    }

    fn ranks(got: &[Option<Grant>]) -> Vec<Option<usize>> {
        got.iter().map(|g| g.map(|g| g.rank)).collect()
    }

    #[test]
    fn plenty_gives_every_track_its_cap() {
        let (got, desired) = allocate(10_000_000, 2, &[want(Some(2), 0), want(Some(1), 0)]);
        assert_eq!(ranks(&got), vec![Some(2), Some(1)]);
        assert_eq!(desired, 1_500_000 + 500_000 + 128_000);
    }

    #[test]
    fn a_drop_lowers_layers_before_pausing_any() {
        // 300 kbit/s: audio 64k, then two low layers (300k) do not both fit.
        let (got, _) = allocate(300_000, 1, &[want(Some(2), 0), want(Some(2), 0)]);
        assert_eq!(ranks(&got), vec![Some(0), None], "the second is paused, not both starved");
        let (got, _) = allocate(900_000, 1, &[want(Some(2), 0), want(Some(2), 0)]);
        assert_eq!(ranks(&got), vec![Some(1), Some(0)], "raised a layer at a time, in order");
    }

    #[test]
    fn priority_goes_first_and_audio_is_never_starved() {
        let (got, _) = allocate(400_000, 4, &[want(Some(2), 0), want(Some(2), 9)]);
        // 400k - 256k audio = 144k: not even one low layer (150k); audio keeps its share.
        assert_eq!(ranks(&got), vec![None, None]);
        let (got, _) = allocate(800_000, 1, &[want(Some(2), 0), want(Some(2), 9)]);
        assert_eq!(ranks(&got), vec![Some(0), Some(1)], "the screen share climbs first");
    }

    #[test]
    fn with_temporal_layers_the_base_alone_comes_before_a_pause() {
        let t = Want { temporal: true, ..want(Some(2), 0) };
        // 150k: one full low layer and, for the second, its base at half the rate.
        let (got, _) = allocate(150_000 + 75_000, 0, &[t.clone(), t.clone()]);
        assert_eq!(got, vec![Some(Grant { rank: 0, base_only: false }), Some(Grant { rank: 0, base_only: true })]);
        let (got, _) = allocate(70_000, 0, std::slice::from_ref(&t));
        assert_eq!(got, vec![None], "not even the base fits");
        let (got, _) = allocate(150_000, 0, &[t]);
        assert_eq!(got, vec![Some(Grant { rank: 0, base_only: false })]);
    }

    #[test]
    fn unwanted_tracks_take_nothing_and_unknown_rates_are_guessed() {
        let (got, desired) = allocate(1_000_000, 0, &[want(None, 0), want(Some(0), 0)]);
        assert_eq!(ranks(&got), vec![None, Some(0)]);
        assert_eq!(desired, 150_000);
        let unknown = vec![LayerView { slot: 0, size: None, bitrate: 0 }];
        assert_eq!(layer_rate(&unknown, 0), 1_000_000);
    }
}
