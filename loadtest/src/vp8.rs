//! VP8 RTP payload starts as Chrome sends them: an RFC 7741 payload descriptor on every packet
//! (X=1; I, L and T set; 15-bit PictureID; TL0PICIDX; TID 0), and at a frame's start the VP8
//! payload header of RFC 6386 §9.1, whose keyframe form carries the start code and the frame
//! size. The SFU finds keyframes and ranks simulcast layers by these bytes and rewrites the
//! PictureID and TL0PICIDX when it switches layers.

/// Bytes of the payload descriptor on every packet.
pub const DESCRIPTOR_LEN: usize = 6;
/// Bytes of a keyframe's payload header: frame tag, start code, width, height.
pub const KEYFRAME_HEADER_LEN: usize = 10;
/// Bytes [`Vp8Stream::header`] writes: descriptor and room for a keyframe header.
pub const HEADER_LEN: usize = DESCRIPTOR_LEN + KEYFRAME_HEADER_LEN;

/// The keyframe start code.
const START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];
/// Largest first-partition size the 19-bit frame tag field holds.
const MAX_PARTITION: usize = (1 << 19) - 1;
/// PictureID wraps at 15 bits.
const PICTURE_ID_MASK: u16 = 0x7fff;

/// The descriptor state of one VP8 stream (one per simulcast layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Stream {
    picture_id: u16,
    tl0_pic_idx: u8,
    width: u16,
    height: u16,
}

impl Vp8Stream {
    /// A stream of `width`x`height` frames whose first PictureID and TL0PICIDX are given.
    pub fn new(width: u16, height: u16, picture_id: u16, tl0_pic_idx: u8) -> Self {
        Self { picture_id: picture_id & PICTURE_ID_MASK, tl0_pic_idx, width: width & 0x3fff, height: height & 0x3fff }
    }

    /// A stream starting at a random PictureID and TL0PICIDX, as each of Chrome's encoders does.
    pub fn random(width: u16, height: u16) -> Self {
        Self::new(width, height, rand::random::<u16>(), rand::random::<u8>())
    }

    /// PictureID of the current frame.
    #[cfg(test)]
    pub fn picture_id(&self) -> u16 {
        self.picture_id
    }

    /// The codec header of one packet of the current frame. Every packet carries the
    /// descriptor; the first packet of a frame (`frame_start`) also the payload header: for a
    /// keyframe the frame tag (P=0, shown, `first_partition` bytes), start code and size, else
    /// a frame tag with P=1. The rest is zero.
    pub fn header(&self, frame_start: bool, keyframe: bool, first_partition: usize) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        // X=1, N=0, S at a frame start, PID=0.
        h[0] = if frame_start { 0x90 } else { 0x80 };
        // I=1 (PictureID), L=1 (TL0PICIDX), T=1 (TID), K=0.
        h[1] = 0xe0;
        // M=1: 15-bit PictureID, big-endian.
        h[2] = 0x80 | (self.picture_id >> 8) as u8;
        h[3] = self.picture_id as u8;
        h[4] = self.tl0_pic_idx;
        // TID=0, Y=0, KEYIDX unused.
        h[5] = 0x00;
        if frame_start {
            // Frame tag (little-endian 24 bits): P (bit 0), version 0 (bits 1-3), show_frame
            // (bit 4), first partition size (bits 5-23).
            let size = first_partition.min(MAX_PARTITION) as u32;
            let tag = (size << 5) | 0x10 | u32::from(!keyframe);
            h[6..9].copy_from_slice(&tag.to_le_bytes()[..3]);
            if keyframe {
                h[9..12].copy_from_slice(&START_CODE);
                // 14-bit sizes; the top two bits (scaling) stay 0.
                h[12..14].copy_from_slice(&self.width.to_le_bytes());
                h[14..16].copy_from_slice(&self.height.to_le_bytes());
            }
        }
        h
    }

    /// Moves to the next frame: PictureID and (every frame being TID 0) TL0PICIDX go up by one.
    pub fn next_frame(&mut self) {
        self.picture_id = self.picture_id.wrapping_add(1) & PICTURE_ID_MASK;
        self.tl0_pic_idx = self.tl0_pic_idx.wrapping_add(1);
    }
}

/// Length of the RFC 7741 payload descriptor at the start of `payload`, bounds-checked.
pub fn descriptor_len(payload: &[u8]) -> Option<usize> {
    let b0 = *payload.first()?;
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *payload.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            i += if *payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    (i < payload.len()).then_some(i)
}

/// The frame size announced by a packet that starts a VP8 keyframe; `None` for any other
/// packet (or a malformed one).
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let b0 = *payload.first()?;
    // S=1 and PID=0: the start of a frame.
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 {
        return None;
    }
    let h = payload.get(descriptor_len(payload)?..)?;
    if h.first()? & 0x01 != 0 || h.get(3..6)? != START_CODE {
        return None;
    }
    let w = u16::from_le_bytes([*h.get(6)?, *h.get(7)?]) & 0x3fff;
    let ht = u16::from_le_bytes([*h.get(8)?, *h.get(9)?]) & 0x3fff;
    Some((w, ht))
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::format::detect_vp8_keyframe;
    use str0m::rtp::Vp8Descriptor;

    /// A packet as the publisher sends it: header, then some payload bytes.
    fn packet(h: [u8; HEADER_LEN]) -> Vec<u8> {
        let mut p = h.to_vec();
        p.extend_from_slice(&[0xaa; 40]);
        p
    }

    #[test]
    fn keyframes_parse_back_with_str0m() {
        let s = Vp8Stream::new(1280, 720, 0x1234, 7);
        let p = packet(s.header(true, true, 900));
        let d = Vp8Descriptor::parse(&p).expect("str0m parses the descriptor");
        assert_eq!(d.picture_id(), Some(0x1234));
        assert_eq!(d.tl0_pic_idx(), Some(7));
        assert_eq!(d.key_idx(), None);
        assert!(d.starts_keyframe(&p));
        assert!(detect_vp8_keyframe(&p));
        assert_eq!(descriptor_len(&p), Some(DESCRIPTOR_LEN));
        assert_eq!(keyframe_size(&p), Some((1280, 720)));
        // Frame tag: P=0, version 0, shown, first partition 900 bytes.
        let tag = u32::from_le_bytes([p[6], p[7], p[8], 0]);
        assert_eq!(tag & 1, 0);
        assert_eq!((tag >> 1) & 7, 0);
        assert_eq!((tag >> 4) & 1, 1);
        assert_eq!(tag >> 5, 900);
        assert_eq!(&p[9..12], &[0x9d, 0x01, 0x2a]);
    }

    #[test]
    fn delta_frames_and_continuations_are_no_keyframes() {
        let s = Vp8Stream::new(640, 360, 5, 0);
        let delta = packet(s.header(true, false, 100));
        let d = Vp8Descriptor::parse(&delta).expect("descriptor");
        assert_eq!(d.picture_id(), Some(5));
        assert!(!d.starts_keyframe(&delta));
        assert!(!detect_vp8_keyframe(&delta));
        assert_eq!(delta[6] & 1, 1, "P=1 on a delta frame");
        assert_eq!(keyframe_size(&delta), None);
        // A later packet of a keyframe: same descriptor, S=0, no payload header.
        let cont = packet(s.header(false, true, 100));
        let d = Vp8Descriptor::parse(&cont).expect("descriptor");
        assert_eq!(d.picture_id(), Some(5));
        assert!(!d.starts_keyframe(&cont));
        assert!(!detect_vp8_keyframe(&cont));
        assert_eq!(keyframe_size(&cont), None);
    }

    #[test]
    fn picture_id_and_tl0_advance_per_frame_and_wrap() {
        let mut s = Vp8Stream::new(320, 180, 0x7ffe, 0xff);
        s.next_frame();
        assert_eq!(s.picture_id(), 0x7fff);
        let p = packet(s.header(true, false, 10));
        assert_eq!(Vp8Descriptor::parse(&p).expect("descriptor").tl0_pic_idx(), Some(0));
        s.next_frame();
        assert_eq!(s.picture_id(), 0);
        let p = packet(s.header(true, true, 10));
        let d = Vp8Descriptor::parse(&p).expect("descriptor");
        assert_eq!(d.picture_id(), Some(0));
        assert_eq!(d.tl0_pic_idx(), Some(1));
        assert_eq!(keyframe_size(&p), Some((320, 180)));
        // Random starts stay within 15 bits.
        assert!(Vp8Stream::random(1, 1).picture_id() <= 0x7fff);
    }

    #[test]
    fn malformed_payloads_yield_nothing() {
        for p in [&[][..], &[0x90], &[0x90, 0xe0], &[0x90, 0xe0, 0x80, 0x01, 0x02, 0x00], &[0x90, 0xe0, 0x80, 0x01, 0x02, 0x00, 0x50, 0x02]] {
            assert_eq!(keyframe_size(p), None);
        }
        // A keyframe tag without the start code is not trusted for a size.
        let mut p = packet(Vp8Stream::new(1280, 720, 1, 1).header(true, true, 10));
        p[10] = 0;
        assert_eq!(keyframe_size(&p), None);
        // Chrome-style short descriptor (no extension): size still found.
        let mut short = vec![0x10, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
        short.extend_from_slice(&[0; 8]);
        assert_eq!(keyframe_size(&short), Some((640, 480)));
    }
}
