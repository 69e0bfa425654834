//! A receive-side bandwidth cap: a token bucket a subscriber's datagrams pass through before
//! str0m sees them. What exceeds the rate (beyond a small burst) is dropped, as a congested
//! access link would. Time comes from the caller, so tests run on virtual time.

use std::time::{Duration, Instant};

/// How long a burst at the full rate the bucket absorbs.
const BURST: Duration = Duration::from_millis(50);
/// The smallest burst: two full-size datagrams.
const MIN_BURST_BYTES: f64 = 3000.0;

/// Datagrams and bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Datagrams.
    pub datagrams: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: usize) {
        self.datagrams += 1;
        self.bytes += bytes as u64;
    }
}

/// A token bucket of `kbps` kbit/s with a burst of 50 ms at that rate (at least 3000 bytes).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    kbps: u64,
    bytes_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
    first: Option<Instant>,
    /// Datagrams let through.
    pub passed: Tally,
    /// Datagrams dropped.
    pub dropped: Tally,
}

impl TokenBucket {
    /// A full bucket of `kbps` kbit/s.
    pub fn new(kbps: u64) -> Self {
        let bytes_per_s = kbps as f64 * 1000.0 / 8.0;
        let burst = (bytes_per_s * BURST.as_secs_f64()).max(MIN_BURST_BYTES);
        Self { kbps, bytes_per_s, burst, tokens: burst, last: None, first: None, passed: Tally::default(), dropped: Tally::default() }
    }

    /// The configured rate, kbit/s.
    pub fn kbps(&self) -> u64 {
        self.kbps
    }

    /// Whether a datagram of `bytes` arriving at `now` fits; takes its tokens if so.
    pub fn admit(&mut self, now: Instant, bytes: usize) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.bytes_per_s).min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
        self.first.get_or_insert(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            self.passed.add(bytes);
            true
        } else {
            self.dropped.add(bytes);
            false
        }
    }

    /// Bit rate let through, kbit/s, from the first datagram offered to the last.
    pub fn passed_kbps(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a => self.passed.bytes as f64 * 8.0 / 1000.0 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Bit rate offered (passed and dropped), kbit/s, over the same span.
    pub fn offered_kbps(&self) -> f64 {
        let passed = self.passed.bytes as f64;
        if passed == 0.0 {
            return 0.0;
        }
        self.passed_kbps() * (passed + self.dropped.bytes as f64) / passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        // 800 kbit/s = 100 kB/s; burst 5000 bytes.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(800);
        assert!(b.admit(t0, 2500));
        assert!(b.admit(t0, 2500));
        assert!(!b.admit(t0, 1), "the burst is spent");
        // 10 ms later: 1000 bytes of tokens.
        let t = t0 + Duration::from_millis(10);
        assert!(!b.admit(t, 1200));
        assert!(b.admit(t, 1000));
        assert_eq!(b.passed, Tally { datagrams: 3, bytes: 6000 });
        assert_eq!(b.dropped, Tally { datagrams: 2, bytes: 1201 });
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(800);
        assert!(b.admit(t0, 5000));
        let t = t0 + Duration::from_secs(10);
        assert!(b.admit(t, 5000));
        assert!(!b.admit(t, 1));
        // Small rates still let a full datagram through.
        let mut slow = TokenBucket::new(8);
        assert!(slow.admit(t0, 1500));
        assert!(slow.admit(t0, 1500));
        assert!(!slow.admit(t0, 1500));
    }

    #[test]
    fn long_run_rate_converges_to_the_cap() {
        // Offer 2 Mbit/s (1000-byte datagrams every 4 ms) to a 500 kbit/s bucket for 10 s.
        let t0 = Instant::now();
        let mut b = TokenBucket::new(500);
        for i in 0..2500u32 {
            b.admit(t0 + Duration::from_millis(4) * i, 1000);
        }
        let kbps = b.passed_kbps();
        assert!((495.0..=510.0).contains(&kbps), "{kbps}");
        let offered = b.offered_kbps();
        assert!((1990.0..=2010.0).contains(&offered), "{offered}");
        // Time never runs backwards for the bucket.
        let before = b.passed;
        b.admit(t0, 1);
        assert!(b.passed.datagrams <= before.datagrams + 1);
    }
}
