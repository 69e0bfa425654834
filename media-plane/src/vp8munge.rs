//! VP8 PictureID, TL0PICIDX and KEYIDX continuity for one subscriber's track.
//!
//! Each simulcast layer numbers its pictures from its own random start (libwebrtc keeps one
//! counter per SSRC). When a down-track switches layers, the first picture of the new layer
//! must follow the last picture sent, or the decoder sees a jump and may drop frames. Like
//! LiveKit's VP8 munger, the offset is fixed at the switch (incoming − last sent − 1) and
//! applied to every later packet of that layer; the rewrite itself is a `Vp8Patch` that str0m
//! applies when it serialises the packet, so the shared payload is never copied.

use crate::codec::Vp8Fields;

/// The rewritten values for one packet (`None` where the descriptor lacks the field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Out {
    /// PictureID to write.
    pub picture_id: Option<u16>,
    /// TL0PICIDX to write.
    pub tl0_pic_idx: Option<u8>,
    /// KEYIDX to write.
    pub key_idx: Option<u8>,
}

/// Offsets subtracted from the incoming values.
#[derive(Debug, Clone, Copy, Default)]
struct Offsets {
    picture_id: u16,
    tl0_pic_idx: u8,
    key_idx: u8,
}

/// Continuity state of one down-track.
#[derive(Debug, Clone, Default)]
pub struct Vp8Munger {
    offsets: Offsets,
    /// The newest values written.
    last: Option<Vp8Out>,
    /// The next packet comes from a new source.
    switching: bool,
    /// The last picture left out (temporal layer dropped).
    skipped: Option<u16>,
}

/// 15-bit PictureID arithmetic.
const PID_MASK: u16 = 0x7fff;

impl Vp8Munger {
    /// The next packet is the first of a new source (a keyframe of another layer, or a new
    /// publisher): its picture will follow the last one written.
    pub fn switch_source(&mut self) {
        self.switching = true;
    }

    /// The values to write for a packet carrying `f`.
    pub fn map(&mut self, f: &Vp8Fields) -> Vp8Out {
        if self.switching {
            self.switching = false;
            if let Some(last) = self.last {
                if let (Some(i), Some(l)) = (f.picture_id, last.picture_id) {
                    self.offsets.picture_id = i.wrapping_sub(l).wrapping_sub(1) & PID_MASK;
                }
                if let (Some(i), Some(l)) = (f.tl0_pic_idx, last.tl0_pic_idx) {
                    self.offsets.tl0_pic_idx = i.wrapping_sub(l).wrapping_sub(1);
                }
                if let (Some(i), Some(l)) = (f.key_idx, last.key_idx) {
                    self.offsets.key_idx = i.wrapping_sub(l).wrapping_sub(1) & 0x1f;
                }
            }
        }
        let width_mask = if f.wide_picture_id { PID_MASK } else { 0x7f };
        let out = Vp8Out {
            picture_id: f.picture_id.map(|p| p.wrapping_sub(self.offsets.picture_id) & width_mask),
            tl0_pic_idx: f.tl0_pic_idx.map(|t| t.wrapping_sub(self.offsets.tl0_pic_idx)),
            key_idx: f.key_idx.map(|k| k.wrapping_sub(self.offsets.key_idx) & 0x1f),
        };
        // Remember the newest picture (a late packet of an older one does not move it back).
        let newer = match (self.last.and_then(|l| l.picture_id), out.picture_id) {
            (Some(l), Some(o)) => o.wrapping_sub(l) & PID_MASK < 0x4000,
            _ => true,
        };
        if newer {
            self.last = Some(out);
        }
        out
    }

    /// A packet of picture `picture_id` was left out: once per picture, later pictures move
    /// down by one, so the subscriber sees no gap.
    pub fn skip(&mut self, picture_id: u16) {
        if self.skipped != Some(picture_id) {
            self.skipped = Some(picture_id);
            self.offsets.picture_id = (self.offsets.picture_id + 1) & PID_MASK;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pid: u16, tl0: u8) -> Vp8Fields {
        Vp8Fields { picture_id: Some(pid), wide_picture_id: true, tl0_pic_idx: Some(tl0), tid: Some(0), key_idx: None, ..Default::default() }
    }

    #[test]
    fn the_first_source_passes_unchanged() {
        let mut m = Vp8Munger::default();
        assert_eq!(m.map(&fields(100, 7)).picture_id, Some(100));
        assert_eq!(m.map(&fields(101, 8)).tl0_pic_idx, Some(8));
    }

    #[test]
    fn skipped_pictures_close_their_gap() {
        let mut m = Vp8Munger::default();
        assert_eq!(m.map(&fields(10, 1)).picture_id, Some(10));
        m.skip(11);
        m.skip(11);
        assert_eq!(m.map(&fields(12, 2)).picture_id, Some(11), "one picture left out, one step back");
        m.skip(13);
        assert_eq!(m.map(&fields(14, 3)).picture_id, Some(12));
    }

    #[test]
    fn a_switch_continues_the_numbering_and_wraps() {
        let mut m = Vp8Munger::default();
        m.map(&fields(0x7ffe, 255));
        m.map(&fields(0x7ffe, 255));
        m.switch_source();
        let a = m.map(&fields(9000, 3));
        assert_eq!((a.picture_id, a.tl0_pic_idx), (Some(0x7fff), Some(0)));
        let b = m.map(&fields(9001, 4));
        assert_eq!((b.picture_id, b.tl0_pic_idx), (Some(0), Some(1)));
        // A late packet of the picture before does not move the newest back.
        assert_eq!(m.map(&fields(9000, 3)).picture_id, Some(0x7fff));
        m.switch_source();
        assert_eq!(m.map(&fields(5, 200)).picture_id, Some(1));
    }
}
