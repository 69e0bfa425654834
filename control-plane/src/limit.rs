//! Rate limits as plain state fed with time: a token bucket, tested on a virtual clock.

use std::time::Instant;

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

    /// Takes a token at `now`; false when the bucket is empty (the event is over the limit).
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = self.at.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
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
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = Bucket::new(t0, 1, 1);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
        assert!(!b.take(t0));
    }
}
