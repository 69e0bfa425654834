//! When a failed delivery is tried again: exponential backoff from [`FIRST`], doubling up to
//! [`LONGEST`], for at most [`ATTEMPTS`] tries in all. Plain arithmetic, tested without a clock.

use std::time::Duration;

/// Tries per event, the first included.
pub const ATTEMPTS: u32 = 6;

/// The wait after the first failure.
pub const FIRST: Duration = Duration::from_millis(500);

/// The longest wait between two tries.
pub const LONGEST: Duration = Duration::from_secs(8);

/// The wait before try number `attempt + 1` after try `attempt` (counted from 1) failed, or
/// None when the event is given up.
pub fn after(attempt: u32) -> Option<Duration> {
    if attempt == 0 || attempt >= ATTEMPTS {
        return None;
    }
    let doubled = FIRST.saturating_mul(1 << (attempt - 1).min(16));
    Some(doubled.min(LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_and_end_after_the_last_try() {
        let waits: Vec<Option<Duration>> = (1..=ATTEMPTS).map(after).collect();
        let ms: Vec<Option<u128>> = waits.iter().map(|w| w.map(|d| d.as_millis())).collect();
        assert_eq!(ms, vec![Some(500), Some(1000), Some(2000), Some(4000), Some(8000), None]);
        assert_eq!(after(0), None);
        assert_eq!(after(u32::MAX), None);
    }
}
