//! Rate limits as plain state fed with time: a token bucket, and buckets per source address,
//! tested on a virtual clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use crate::gate::Source;

/// A token bucket: `burst` tokens at most, refilled at `per_second`; each event takes one.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(now: Instant, burst: u32, per_second: u32) -> Self {
        Bucket { tokens: f64::from(burst), burst: f64::from(burst), per_second: f64::from(per_second), at: now }
    }

    /// A full bucket whose burst is one second of `rate` (units a second), such as the bits of
    /// a bandwidth cap.
    pub fn one_second_of(now: Instant, rate: f64) -> Self {
        Bucket { tokens: rate, burst: rate, per_second: rate, at: now }
    }

    /// Takes a token at `now`; false when the bucket is empty (the event is over the limit).
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(now, 1.0)
    }

    /// Takes `n` tokens at `now`; false, taking nothing, when fewer are left.
    pub fn take_n(&mut self, now: Instant, n: f64) -> bool {
        self.tokens = self.level(now);
        self.at = self.at.max(now);
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }

    /// Whether an event at `now` would pass, without taking a token.
    pub fn would_pass(&self, now: Instant) -> bool {
        self.level(now) >= 1.0
    }

    /// Whether the bucket has refilled to its burst by `now` (it remembers nothing).
    pub fn is_full(&self, now: Instant) -> bool {
        self.level(now) >= self.burst
    }

    fn level(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at);
        (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst)
    }
}

/// One [`Bucket`] per source address (an IPv4 address or an IPv6 /64), created full on the
/// source's first event. At most `capacity` sources are remembered: full buckets are
/// forgotten first, and while every remembered bucket is in use, new sources are refused.
#[derive(Debug)]
pub struct PerSource {
    buckets: HashMap<Source, Bucket>,
    burst: u32,
    per_second: u32,
    capacity: usize,
}

impl PerSource {
    /// No source seen yet.
    pub fn new(burst: u32, per_second: u32, capacity: usize) -> Self {
        PerSource { buckets: HashMap::new(), burst, per_second, capacity }
    }

    /// Takes a token from `ip`'s bucket; false when over its limit.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.bucket(ip, now) {
            Some(b) => b.take(now),
            None => false,
        }
    }

    /// Whether an event from `ip` would pass now, without taking a token.
    pub fn would_pass(&self, ip: IpAddr, now: Instant) -> bool {
        match self.buckets.get(&Source::of(ip)) {
            Some(b) => b.would_pass(now),
            None => self.buckets.len() < self.capacity || self.buckets.values().any(|b| b.is_full(now)),
        }
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn bucket(&mut self, ip: IpAddr, now: Instant) -> Option<&mut Bucket> {
        let key = Source::of(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.capacity {
                return None;
            }
        }
        Some(self.buckets.entry(key).or_insert_with(|| Bucket::new(now, self.burst, self.per_second)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(t0, 5, 10);
        assert_eq!((0..8).filter(|_| b.take(t0)).count(), 5, "the burst, then nothing at the same instant");
        // One second later: ten more, at most the burst at once.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| b.take(t1)).count(), 5, "refill is capped by the burst");
        // A steady 10 a second goes through.
        let mut ok = 0;
        for i in 1..=50u32 {
            ok += u32::from(b.take(t1 + Duration::from_millis(100) * i));
        }
        assert_eq!(ok, 50);
    }

    #[test]
    fn each_source_has_its_own_bucket_and_idle_ones_make_room() {
        let t0 = Instant::now();
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let mut p = PerSource::new(2, 1, 2);
        assert!(p.take(ip(1), t0) && p.take(ip(1), t0));
        assert!(!p.take(ip(1), t0) && !p.would_pass(ip(1), t0));
        assert!(p.take(ip(2), t0), "another source is not held back");
        assert!(!p.take(ip(3), t0), "no room: both remembered sources are in use");
        // Two seconds on, both buckets are full again and can be forgotten.
        let t2 = t0 + Duration::from_secs(2);
        assert!(p.would_pass(ip(3), t2) && p.take(ip(3), t2));
        assert_eq!(p.len(), 1);
        assert!(p.take(ip(1), t2), "a forgotten source starts full");
    }

    #[test]
    fn a_second_of_a_rate_in_units() {
        let t0 = Instant::now();
        let mut b = Bucket::one_second_of(t0, 8000.0);
        assert!(b.take_n(t0, 6000.0));
        assert!(!b.take_n(t0, 4000.0), "2000 left");
        assert!(b.take_n(t0 + Duration::from_millis(250), 4000.0), "2000 more a quarter second later");
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::new(t0, 1, 1);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
        assert!(!b.take(t0));
    }
}
