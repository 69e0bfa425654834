//! Per-subscriber header rewrite of one forwarded track: the publisher's payload types
//! mapped to the subscriber's, sequence numbers rebased so every subscriber's stream starts
//! near zero (rollover counter 0), and RTP timestamps offset. The SSRC and the header
//! itself are the subscriber's own send stream's (str0m writes them).
//!
//! The source of a subscriber's track can change (a WHEP viewer's broadcaster reconnects
//! with a new session; later, simulcast layers and last-N switching). After
//! [`Rewrite::switch_source`], the new source's first packet continues the subscriber's
//! numbering at the next sequence number, and its timestamp at the last one plus the
//! wall-clock time between them, so the receiver sees one unbroken stream.

use std::time::Instant;

/// Rewrite state of one forwarded track.
#[derive(Debug, Default, Clone)]
pub struct Rewrite {
    /// Publisher payload type to subscriber payload type (a handful of entries).
    pt_map: Vec<(u8, u8)>,
    /// How the current source's numbering maps to the subscriber's.
    source: Option<Offsets>,
    /// The newest packet written to the subscriber.
    last: Option<Written>,
    /// The newest source sequence number mapped or skipped.
    last_in: Option<u64>,
}

/// The current source's mapping.
#[derive(Debug, Clone, Copy)]
struct Offsets {
    /// Oldest extended source sequence number that maps (older: from before this source).
    floor: u64,
    /// Subscriber number = source number + `seq`.
    seq: i64,
    /// Subscriber timestamp = source timestamp + `ts` (wrapping).
    ts: u32,
}

/// The newest packet written.
#[derive(Debug, Clone, Copy)]
struct Written {
    seq: u64,
    ts: u32,
    at: Instant,
}

/// How far below the first forwarded packet the subscriber's numbering starts, so that
/// late packets from just before it still map to a valid number.
const SEQ_SLACK: u64 = 1000;

impl Rewrite {
    /// The subscriber's payload type for the publisher's `pt_in`, once mapped.
    pub fn pt(&self, pt_in: u8) -> Option<u8> {
        self.pt_map.iter().find(|(i, _)| *i == pt_in).map(|(_, o)| *o)
    }

    /// Remembers that the publisher's `pt_in` is `pt_out` for this subscriber.
    pub fn map_pt(&mut self, pt_in: u8, pt_out: u8) {
        if self.pt(pt_in).is_none() {
            self.pt_map.push((pt_in, pt_out));
        }
    }

    /// The next packet comes from a new source: its numbering continues the subscriber's,
    /// and its payload types are mapped afresh (the same number may be another codec).
    pub fn switch_source(&mut self) {
        self.source = None;
        self.last_in = None;
        self.pt_map.clear();
    }

    /// The subscriber's extended sequence number and RTP timestamp for a source packet with
    /// extended sequence number `seq`, timestamp `ts`, received at `at`, of a codec clocked
    /// at `clock_rate` Hz. `None` for a packet from before the current source's first one
    /// (beyond a small slack for the very first source). The caller hands in only the
    /// current source's packets.
    #[inline]
    pub fn map(&mut self, seq: u64, ts: u32, at: Instant, clock_rate: u32) -> Option<(u64, u32)> {
        let o = match self.source {
            Some(o) => o,
            None => self.start_source(seq, ts, at, clock_rate),
        };
        if seq < o.floor {
            return None;
        }
        if self.last_in.is_none_or(|l| seq > l) {
            self.last_in = Some(seq);
        }
        let out = u64::try_from(seq as i64 + o.seq).ok()?;
        let out_ts = ts.wrapping_add(o.ts);
        match &mut self.last {
            Some(w) if out <= w.seq => {}
            last => *last = Some(Written { seq: out, ts: out_ts, at }),
        }
        Some((out, out_ts))
    }

    /// Leaves out packet `seq` of the current source (a temporal layer the subscriber does
    /// not get): the packets after it close the gap. Only the next packet in order can be
    /// left out; for any other (reordered, or before the source's first) this returns false
    /// and the caller forwards it instead, so numbers never collide.
    pub fn skip(&mut self, seq: u64) -> bool {
        let (Some(o), Some(last)) = (&mut self.source, self.last_in) else { return false };
        if seq != last + 1 {
            return false;
        }
        o.seq -= 1;
        self.last_in = Some(seq);
        true
    }

    /// The mapping of a source, set by its first packet.
    #[cold]
    fn start_source(&mut self, seq: u64, ts: u32, at: Instant, clock_rate: u32) -> Offsets {
        let o = match self.last {
            // The first source: numbering starts just above zero, timestamps pass through.
            None => {
                let base = seq.saturating_sub(SEQ_SLACK);
                Offsets { floor: base, seq: -(base as i64), ts: 0 }
            }
            // A later one: the next number, and the time since the last packet.
            Some(w) => {
                let elapsed = at.saturating_duration_since(w.at);
                let ticks = (elapsed.as_micros() * u128::from(clock_rate) / 1_000_000).clamp(1, u128::from(u32::MAX / 2)) as u32;
                let out_ts = w.ts.wrapping_add(ticks);
                Offsets { floor: seq, seq: (w.seq + 1) as i64 - seq as i64, ts: out_ts.wrapping_sub(ts) }
            }
        };
        self.source = Some(o);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::Rewrite;
    use std::time::{Duration, Instant};

    #[test]
    fn maps_payload_types_and_rebases_sequence_numbers() {
        let t = Instant::now();
        let mut r = Rewrite::default();
        assert_eq!(r.pt(96), None);
        r.map_pt(96, 100);
        r.map_pt(96, 101);
        assert_eq!(r.pt(96), Some(100));
        // The first packet sets the base; numbering continues across the 16-bit wrap, and
        // the first source's timestamps pass through.
        assert_eq!(r.map(70_000, 5, t, 90_000), Some((1000, 5)));
        assert_eq!(r.map(70_001, 6, t, 90_000), Some((1001, 6)));
        assert_eq!(r.map(65_536 + 70_000, 7, t, 90_000), Some((66_536, 7)));
        // A late packet from just before the first one still maps; older ones do not.
        assert_eq!(r.map(69_500, 1, t, 90_000), Some((500, 1)));
        assert_eq!(r.map(68_999, 1, t, 90_000), None);
        // A publisher whose numbering starts near zero.
        let mut z = Rewrite::default();
        assert_eq!(z.map(5, 0, t, 90_000), Some((5, 0)));
    }

    #[test]
    fn skipped_packets_leave_no_gap_and_reordered_ones_are_not_skipped() {
        let t = Instant::now();
        let mut r = Rewrite::default();
        assert!(!r.skip(99), "nothing to continue yet");
        assert_eq!(r.map(5000, 0, t, 90_000), Some((1000, 0)));
        assert!(r.skip(5001));
        assert!(r.skip(5002));
        assert_eq!(r.map(5003, 0, t, 90_000), Some((1001, 0)));
        assert!(!r.skip(5005), "out of order: forwarded rather than skipped");
        assert_eq!(r.map(5005, 0, t, 90_000), Some((1003, 0)));
        assert_eq!(r.map(5004, 0, t, 90_000), Some((1002, 0)));
    }

    #[test]
    fn a_new_source_continues_the_numbering_and_the_clock() {
        let t0 = Instant::now();
        let mut r = Rewrite::default();
        r.map_pt(96, 100);
        // Source A: last packet written is number 1001 at timestamp 4,000,000,000.
        assert_eq!(r.map(5000, 3_999_997_000, t0, 90_000), Some((1000, 3_999_997_000)));
        assert_eq!(r.map(5001, 4_000_000_000, t0 + Duration::from_millis(33), 90_000), Some((1001, 4_000_000_000)));
        // Source B starts 500 ms later with its own numbering and clock.
        r.switch_source();
        assert_eq!(r.pt(96), None, "payload types are mapped afresh");
        let t1 = t0 + Duration::from_millis(533);
        let (seq, ts) = r.map(40, 123, t1, 90_000).unwrap();
        assert_eq!(seq, 1002);
        // 500 ms at 90 kHz later, across the 32-bit wrap.
        assert_eq!(ts, 4_000_000_000u32.wrapping_add(45_000));
        // B's next packet keeps B's spacing; B's packets from before its first are dropped
        // (A's no longer reach this track: the fan-out follows the current source only).
        assert_eq!(r.map(41, 123 + 3000, t1, 90_000), Some((1003, ts.wrapping_add(3000))));
        assert_eq!(r.map(39, 100, t1, 90_000), None);
        // A switch with no time between the two sources still moves the clock forward.
        r.switch_source();
        let (seq, ts2) = r.map(1_000_000, 0, t1, 48_000).unwrap();
        assert_eq!((seq, ts2), (1004, ts.wrapping_add(3000).wrapping_add(1)));
    }
}
