//! Per-subscriber header rewrite of one forwarded track: the publisher's payload types
//! mapped to the subscriber's, and sequence numbers rebased so every subscriber's stream
//! starts near zero (rollover counter 0). The SSRC and the header itself are the
//! subscriber's own send stream's (str0m writes them); each new publisher gets a new track,
//! so no state carries over from one publisher to the next.

/// Rewrite state of one forwarded track.
#[derive(Debug, Default, Clone)]
pub struct Rewrite {
    /// Publisher payload type to subscriber payload type (a handful of entries).
    pt_map: Vec<(u8, u8)>,
    /// Extended sequence number the subscriber's numbering is rebased from.
    seq_base: Option<u64>,
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

    /// The subscriber's extended sequence number for the publisher's extended `in_seq`;
    /// `None` for a packet from before the rebase point.
    pub fn seq(&mut self, in_seq: u64) -> Option<u64> {
        let base = *self.seq_base.get_or_insert(in_seq.saturating_sub(SEQ_SLACK));
        in_seq.checked_sub(base)
    }
}

#[cfg(test)]
mod tests {
    use super::Rewrite;

    #[test]
    fn maps_payload_types_and_rebases_sequence_numbers() {
        let mut r = Rewrite::default();
        assert_eq!(r.pt(96), None);
        r.map_pt(96, 100);
        r.map_pt(96, 101);
        assert_eq!(r.pt(96), Some(100));
        // The first packet sets the base; numbering continues across the 16-bit wrap.
        assert_eq!(r.seq(70_000), Some(1000));
        assert_eq!(r.seq(70_001), Some(1001));
        assert_eq!(r.seq(65_536 + 70_000), Some(66_536));
        // A late packet from just before the first one still maps; older ones do not.
        assert_eq!(r.seq(69_500), Some(500));
        assert_eq!(r.seq(68_999), None);
        // A publisher whose numbering starts near zero.
        let mut z = Rewrite::default();
        assert_eq!(z.seq(5), Some(5));
    }
}
