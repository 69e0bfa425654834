//! When to ask str0m's estimator for another probe toward a subscriber that gets less than
//! it asks for.
//!
//! str0m sends an allocation probe when the desired bitrate rises above its estimate, and
//! otherwise grows the estimate additively (at most 1.5× what is sent) or probes after 15 s
//! of stagnation. A subscriber held below what it asks for (a link that was limited and may
//! have recovered) keeps asking for the same rate, so it would climb back slowly. While the
//! allocation is short, after [`RETRY`] (then at waits that double up to [`RETRY_MAX`]
//! while it stays short) the desired rate handed to str0m dips to the
//! estimate for [`DIP`] and then comes back: a rise, hence a probe (at 1–2× the
//! desired rate, capped at 2× the estimate). LiveKit's stream allocator probes a deficient
//! subscriber in the same spirit, for its next layer.

use std::time::{Duration, Instant};

/// Time before the first probe of a subscriber that falls short of what it asks for.
pub const RETRY: Duration = Duration::from_secs(3);

/// Longest time between two probes: while probes keep failing (the subscriber stays short),
/// the wait doubles up to this. A probe through a limited link costs its media some delay,
/// or loss behind a policer.
pub const RETRY_MAX: Duration = Duration::from_secs(6);

/// How long the dip lasts, however often the allocation runs meanwhile: long enough for
/// str0m's probe controller to take the lower rate in (it does at the session's next timeout)
/// before the rise.
pub const DIP: Duration = Duration::from_millis(200);

/// Whether and when one subscriber's next probe is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeRetry {
    /// Since when the allocation has been short, or the last probe asked for.
    since: Option<Instant>,
    /// The wait before the next probe.
    wait: Duration,
    /// When the current dip began, while it lasts.
    dip: Option<Instant>,
}

impl ProbeRetry {
    /// The desired bitrate to hand str0m at `now`, for a subscriber that asks for `desired`
    /// and is estimated `estimate` (bits per second).
    pub fn desired(&mut self, now: Instant, desired: u64, estimate: u64) -> u64 {
        if let Some(at) = self.dip {
            if now.saturating_duration_since(at) < DIP {
                return estimate.min(desired);
            }
            self.dip = None;
            return desired;
        }
        if desired <= estimate {
            self.since = None;
            return desired;
        }
        let since = *self.since.get_or_insert_with(|| {
            self.wait = RETRY;
            now
        });
        if now.saturating_duration_since(since) < self.wait {
            return desired;
        }
        self.since = Some(now);
        self.wait = (self.wait * 2).min(RETRY_MAX);
        self.dip = Some(now);
        estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `desired` returns at each 250 ms step for `steps` steps.
    fn run(p: &mut ProbeRetry, t0: Instant, steps: u32, desired: u64, estimate: u64) -> Vec<u64> {
        (0..steps).map(|i| p.desired(t0 + Duration::from_millis(250) * i, desired, estimate)).collect()
    }

    #[test]
    fn a_subscriber_that_gets_what_it_asks_for_is_never_probed_again() {
        let mut p = ProbeRetry::default();
        assert!(run(&mut p, Instant::now(), 100, 1_000_000, 2_000_000).iter().all(|&d| d == 1_000_000));
    }

    #[test]
    fn a_short_subscriber_dips_once_per_retry_and_comes_back_at_once() {
        let mut p = ProbeRetry::default();
        let out = run(&mut p, Instant::now(), 40, 1_500_000, 300_000);
        let dips: Vec<usize> = out.iter().enumerate().filter(|(_, &d)| d == 300_000).map(|(i, _)| i).collect();
        // The first dip RETRY after it fell short (12 steps of 250 ms), then the wait doubles
        // up to RETRY_MAX (24 steps).
        assert_eq!(dips, vec![12, 36]);
        for i in dips {
            assert_eq!(out[i + 1], 1_500_000, "the rise that asks for the probe follows the dip");
        }
    }

    #[test]
    fn a_dip_outlasts_allocations_that_come_close_together() {
        let mut p = ProbeRetry::default();
        let t0 = Instant::now();
        p.desired(t0, 1_500_000, 300_000);
        assert_eq!(p.desired(t0 + RETRY, 1_500_000, 300_000), 300_000);
        assert_eq!(p.desired(t0 + RETRY + Duration::from_millis(10), 1_500_000, 320_000), 320_000, "an estimate event right after the dip keeps it");
        assert_eq!(p.desired(t0 + RETRY + DIP, 1_500_000, 320_000), 1_500_000);
    }

    #[test]
    fn the_wait_starts_again_when_the_subscriber_is_short_again() {
        let mut p = ProbeRetry::default();
        let t0 = Instant::now();
        assert!(run(&mut p, t0, 10, 1_500_000, 300_000).iter().all(|&d| d == 1_500_000));
        assert_eq!(p.desired(t0 + Duration::from_millis(2600), 1_000_000, 2_000_000), 1_000_000);
        let t1 = t0 + Duration::from_secs(3);
        assert!(run(&mut p, t1, 12, 1_500_000, 300_000).iter().all(|&d| d == 1_500_000), "a new shortfall waits a full RETRY");
        assert_eq!(p.desired(t1 + RETRY, 1_500_000, 300_000), 300_000);
    }
}
