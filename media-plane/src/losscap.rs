//! A loss-based ceiling on one subscriber's bandwidth estimate, as in Google Congestion
//! Control's loss-based controller: above 10 % loss the ceiling drops to the rate that got
//! through (sent × (1 − loss / 2)); below 2 % it rises by 8 % a report, and goes once it is
//! above the delay-based estimate. A policer drops packets without queueing them, so the
//! delay-based estimate alone never sees it (bench/RESULTS.md, `bwe-cap.sh`).

/// Above this fraction lost, the ceiling comes down.
const HIGH_LOSS: f32 = 0.10;

/// Below this fraction lost, the ceiling goes up.
const LOW_LOSS: f32 = 0.02;

/// Growth of the ceiling per report with little loss.
const GROWTH: f64 = 1.08;

/// The ceiling of one subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossCap {
    cap: Option<u64>,
    /// Bytes sent at the previous report.
    last_bytes: Option<u64>,
}

impl LossCap {
    /// Takes one report: the fraction lost since the last, the bytes sent in all so far,
    /// the seconds since the last report, and the delay-based estimate now.
    pub fn on_report(&mut self, loss: Option<f32>, bytes_sent: u64, seconds: f64, estimate: u64) {
        let sent = self.last_bytes.map(|b| bytes_sent.saturating_sub(b));
        self.last_bytes = Some(bytes_sent);
        let (Some(loss), Some(sent)) = (loss, sent) else { return };
        if seconds <= 0.0 {
            return;
        }
        let rate = sent as f64 * 8.0 / seconds;
        if loss > HIGH_LOSS {
            let through = (rate * (1.0 - f64::from(loss) / 2.0)).round() as u64;
            self.cap = Some(self.cap.map_or(through, |c| c.min(through)));
        } else if loss < LOW_LOSS {
            if let Some(c) = self.cap {
                let raised = (c as f64 * GROWTH).round() as u64;
                self.cap = (raised < estimate).then_some(raised);
            }
        }
    }

    /// The estimate to allocate: the delay-based one, under the ceiling if there is one.
    pub fn apply(&self, estimate: u64) -> u64 {
        self.cap.map_or(estimate, |c| c.min(estimate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_loss_brings_the_ceiling_to_what_got_through_and_it_recovers() {
        let mut l = LossCap::default();
        l.on_report(Some(0.4), 0, 1.0, 10_000_000);
        assert_eq!(l.apply(10_000_000), 10_000_000, "the first report only sets the byte count");
        // 500 kbit/s sent, 40 % lost: 400 kbit/s through the 1 − loss/2 rule.
        l.on_report(Some(0.4), 62_500, 1.0, 10_000_000);
        assert_eq!(l.apply(10_000_000), 400_000);
        assert_eq!(l.apply(300_000), 300_000, "never above the delay-based estimate");
        // Moderate loss holds it; little loss raises it 8 % a report until it is gone.
        l.on_report(Some(0.05), 62_500 + 50_000, 1.0, 10_000_000);
        assert_eq!(l.apply(10_000_000), 400_000);
        l.on_report(Some(0.0), 62_500 + 100_000, 1.0, 10_000_000);
        assert_eq!(l.apply(10_000_000), 432_000);
        l.on_report(Some(0.0), 62_500 + 150_000, 1.0, 440_000);
        assert_eq!(l.apply(10_000_000), 10_000_000, "above the estimate: the ceiling goes");
    }

    #[test]
    fn reports_without_loss_figures_change_nothing() {
        let mut l = LossCap::default();
        l.on_report(None, 100, 1.0, 1_000_000);
        l.on_report(None, 200, 1.0, 1_000_000);
        l.on_report(Some(0.5), 300, 0.0, 1_000_000);
        assert_eq!(l, LossCap { cap: None, last_bytes: Some(300) });
    }
}
