//! What forwarding needs to know of a video payload, read once per received packet: whether
//! it starts a keyframe, the VP8 descriptor fields a layer switch rewrites, and the frame
//! size a VP8 keyframe or an H.264 sequence parameter set announces (which ranks simulcast
//! layers).
//!
//! The parse is bounds-checked byte by byte: a malformed payload yields no fields, never a
//! panic (fuzz target `codec_inspect`).

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitReader, ByteReader};
use str0m::format::{detect_h264_keyframe, detect_h264_nalu, Codec};

/// The codec of a forwarded track, as far as forwarding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// VP8 (RFC 7741).
    Vp8,
    /// H.264 (RFC 6184).
    H264,
    /// Anything else, audio included: no keyframes to wait for.
    Other,
}

impl VideoCodec {
    /// The forwarding view of a str0m codec.
    pub fn of(codec: Codec) -> Self {
        match codec {
            Codec::Vp8 => VideoCodec::Vp8,
            Codec::H264 => VideoCodec::H264,
            _ => VideoCodec::Other,
        }
    }
}

/// The VP8 payload descriptor fields that a layer switch rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp8Fields {
    /// PictureID, 7 or 15 bits.
    pub picture_id: Option<u16>,
    /// Whether the PictureID field is 15 bits wide.
    pub wide_picture_id: bool,
    /// TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
    /// Temporal layer index.
    pub tid: Option<u8>,
    /// KEYIDX.
    pub key_idx: Option<u8>,
    /// The packet starts a frame (S bit with partition index 0).
    pub begins_frame: bool,
    /// RFC 7741's Y bit: the frame depends only on the base temporal layer, so a decoder
    /// that had only the base layer can take it.
    pub layer_sync: bool,
}

/// What one received video packet tells forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameInfo {
    /// The packet starts a keyframe: a decoder can start (or switch layers) here.
    pub keyframe_start: bool,
    /// The frame size a VP8 keyframe announces.
    pub size: Option<(u16, u16)>,
    /// VP8 descriptor fields.
    pub vp8: Option<Vp8Fields>,
}

/// Reads what forwarding needs from one RTP payload.
pub fn inspect(codec: VideoCodec, payload: &[u8]) -> FrameInfo {
    match codec {
        VideoCodec::Vp8 => inspect_vp8(payload).unwrap_or_default(),
        // A keyframe usually starts with its SPS (alone or in a STAP-A), then the IDR slice.
        VideoCodec::H264 => {
            let sps = detect_h264_nalu(payload, 7);
            // Only a keyframe's packet carries the SPS: the parse is paid once per keyframe.
            FrameInfo { keyframe_start: sps || detect_h264_keyframe(payload), size: if sps { h264_size(payload) } else { None }, vp8: None }
        }
        VideoCodec::Other => FrameInfo::default(),
    }
}

/// H.264: the picture size of the SPS in a single-NAL or STAP-A payload (RFC 6184 §5.6, §5.7.1).
fn h264_size(p: &[u8]) -> Option<(u16, u16)> {
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    match p.first()? & 0x1f {
        SPS => sps_size(p),
        STAP_A => {
            let mut rest = p.get(1..)?;
            while rest.len() > 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let nal = rest.get(2..2 + len)?;
                if nal.first().is_some_and(|b| b & 0x1f == SPS) {
                    return sps_size(nal);
                }
                rest = &rest[2 + len..];
            }
            None
        }
        _ => None,
    }
}

/// The cropped picture size a sequence parameter set NAL unit (header included) describes.
fn sps_size(nal: &[u8]) -> Option<(u16, u16)> {
    let sps = SeqParameterSet::from_bits(BitReader::new(ByteReader::skipping_h264_header(nal))).ok()?;
    let (w, h) = sps.pixel_dimensions().ok()?;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

/// VP8: descriptor (RFC 7741 §4.2), then the payload header of a partition start, and for a
/// keyframe the frame tag, start code and size (RFC 6386 §9.1).
fn inspect_vp8(p: &[u8]) -> Option<FrameInfo> {
    let b0 = *p.first()?;
    let mut i = 1;
    let mut f = Vp8Fields::default();
    if b0 & 0x80 != 0 {
        let x = *p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            let m = *p.get(i)?;
            i += 1;
            if m & 0x80 != 0 {
                let lo = *p.get(i)?;
                i += 1;
                f.picture_id = Some((u16::from(m & 0x7f) << 8) | u16::from(lo));
                f.wide_picture_id = true;
            } else {
                f.picture_id = Some(u16::from(m & 0x7f));
            }
        }
        if x & 0x40 != 0 {
            f.tl0_pic_idx = Some(*p.get(i)?);
            i += 1;
        }
        if x & 0x30 != 0 {
            let b = *p.get(i)?;
            i += 1;
            if x & 0x20 != 0 {
                f.tid = Some(b >> 6);
                f.layer_sync = b & 0x20 != 0;
            }
            if x & 0x10 != 0 {
                f.key_idx = Some(b & 0x1f);
            }
        }
    }
    let header = p.get(i..).filter(|h| !h.is_empty())?;
    let partition_start = b0 & 0x10 != 0 && b0 & 0x07 == 0;
    f.begins_frame = partition_start;
    let keyframe_start = partition_start && header[0] & 0x01 == 0;
    let size = if keyframe_start && header.len() >= 10 && header[3..6] == [0x9d, 0x01, 0x2a] {
        let w = u16::from_le_bytes([header[6], header[7]]) & 0x3fff;
        let h = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
        Some((w, h))
    } else {
        None
    };
    Some(FrameInfo { keyframe_start, size, vp8: Some(f) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 packet as Chrome sends it (15-bit PictureID, TL0PICIDX, TID).
    fn vp8_packet(picture_id: u16, tl0: u8, keyframe: bool, size: (u16, u16)) -> Vec<u8> {
        crate::sim::vp8_payload(picture_id, tl0, keyframe, size, 40)
    }

    #[test]
    fn a_vp8_keyframe_shows_its_size_and_descriptor() {
        let info = inspect(VideoCodec::Vp8, &vp8_packet(0x1234, 7, true, (1280, 720)));
        assert!(info.keyframe_start);
        assert_eq!(info.size, Some((1280, 720)));
        let f = info.vp8.expect("descriptor");
        assert_eq!((f.picture_id, f.wide_picture_id, f.tl0_pic_idx, f.tid, f.key_idx), (Some(0x1234), true, Some(7), Some(0), None));
        // str0m reads the same descriptor.
        let d = str0m::rtp::Vp8Descriptor::parse(&vp8_packet(0x1234, 7, true, (1280, 720))).expect("str0m parses it");
        assert_eq!(d.picture_id(), Some(0x1234));
    }

    #[test]
    fn a_delta_frame_is_no_keyframe() {
        let info = inspect(VideoCodec::Vp8, &vp8_packet(5, 1, false, (0, 0)));
        assert!(!info.keyframe_start);
        assert_eq!(info.size, None);
    }

    #[test]
    fn a_continuation_packet_is_no_keyframe_start() {
        let mut p = vp8_packet(5, 1, true, (320, 180));
        p[0] &= !0x10;
        assert!(!inspect(VideoCodec::Vp8, &p).keyframe_start);
    }

    #[test]
    fn truncated_or_garbage_payloads_yield_nothing() {
        for len in 0..12 {
            let p = vp8_packet(300, 1, true, (640, 360));
            let _ = inspect(VideoCodec::Vp8, &p[..len]);
        }
        assert_eq!(inspect(VideoCodec::Vp8, &[]), FrameInfo::default());
        assert_eq!(inspect(VideoCodec::Vp8, &[0xff]), FrameInfo::default());
        assert!(!inspect(VideoCodec::H264, &[0xff, 0xff]).keyframe_start);
    }

    /// A 1920×1080 baseline SPS (from h264-reader's tests; it holds emulation prevention bytes).
    const SPS_1080P: [u8; 25] = [0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20];

    #[test]
    fn h264_sizes_come_from_the_sps_alone_or_in_a_stap_a() {
        assert_eq!(inspect(VideoCodec::H264, &SPS_1080P).size, Some((1920, 1080)));
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut stap = vec![0x78];
        for nal in [&pps[..], &SPS_1080P[..], &[0x65, 0x88, 0x84][..]] {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        let f = inspect(VideoCodec::H264, &stap);
        assert!(f.keyframe_start);
        assert_eq!(f.size, Some((1920, 1080)));
        // Cut short before the SPS ends, or a STAP-A whose sizes lie: no size, no panic.
        let sps_end = 1 + 2 + pps.len() + 2 + SPS_1080P.len();
        for len in 0..stap.len() {
            assert_eq!(inspect(VideoCodec::H264, &stap[..len]).size, (len >= sps_end).then_some((1920, 1080)), "{len}");
        }
        assert_eq!(inspect(VideoCodec::H264, &[0x78, 0xff, 0xff, 0x67]).size, None);
        assert_eq!(inspect(VideoCodec::H264, &[0x41, 0x9a]).size, None, "not a keyframe");
    }

    #[test]
    fn h264_keyframes_start_at_the_sps_or_the_idr() {
        assert!(inspect(VideoCodec::H264, &[0x67, 0x42, 0x00]).keyframe_start);
        assert!(inspect(VideoCodec::H264, &[0x65, 0x88]).keyframe_start);
        assert!(!inspect(VideoCodec::H264, &[0x41, 0x9a]).keyframe_start);
    }
}
