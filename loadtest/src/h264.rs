//! H.264 RTP payload starts for synthetic video (RFC 6184): a keyframe begins with a STAP-A
//! holding a baseline-profile sequence parameter set that announces the layer's picture size,
//! as encoders send SPS and PPS ahead of an IDR slice; other frames begin with a non-IDR
//! slice header. The SFU finds keyframes and ranks simulcast layers by these bytes.

use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitReader, ByteReader};

/// The first bytes of a delta frame: a non-IDR slice NAL header (NRI 2) and the start of its slice header.
pub const DELTA_START: [u8; 2] = [0x41, 0x9a];

/// NAL unit types used here.
const SPS: u8 = 7;
const STAP_A: u8 = 24;

/// The first bytes of a keyframe of a `width`×`height` picture: a STAP-A (NRI 3) whose one
/// aggregated unit is an SPS.
pub fn keyframe_start(width: u16, height: u16) -> Vec<u8> {
    let sps = sps(width, height);
    let mut out = vec![0x60 | STAP_A];
    // An SPS is a dozen bytes: its length always fits.
    out.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    out.extend_from_slice(&sps);
    out
}

/// The picture size that a keyframe start written by [`keyframe_start`] announces, read with
/// h264-reader; None for any other payload.
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    if payload.first()? & 0x1f != STAP_A {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*payload.get(1)?, *payload.get(2)?]));
    let nal = payload.get(3..3 + len)?;
    if nal.first()? & 0x1f != SPS {
        return None;
    }
    let sps = SeqParameterSet::from_bits(BitReader::new(ByteReader::skipping_h264_header(nal))).ok()?;
    let (w, h) = sps.pixel_dimensions().ok()?;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

/// A baseline-profile SPS NAL unit, header included, for a `width`×`height`
/// 4:2:0 progressive picture, cropped from whole macroblocks.
fn sps(width: u16, height: u16) -> Vec<u8> {
    let (mbs_w, mbs_h) = (u32::from(width).div_ceil(16).max(1), u32::from(height).div_ceil(16).max(1));
    // 4:2:0 and frame_mbs_only: the crop unit is 2 pixels each way.
    let crop_right = (mbs_w * 16 - u32::from(width)) / 2;
    let crop_bottom = (mbs_h * 16 - u32::from(height)) / 2;
    let mut b = Bits::default();
    b.put(66, 8); // profile_idc: baseline
    b.put(0xc0, 8); // constraint_set0 and set1
    // level_idc: the lowest of 3.1, 4 and 5.1 whose frame size (in macroblocks) holds the picture.
    let level = match mbs_w * mbs_h {
        0..=3600 => 31,
        3601..=8192 => 40,
        _ => 51,
    };
    b.put(level, 8);
    b.ue(0); // seq_parameter_set_id
    b.ue(0); // log2_max_frame_num_minus4
    b.ue(2); // pic_order_cnt_type
    b.ue(1); // max_num_ref_frames
    b.put(0, 1); // gaps_in_frame_num_value_allowed_flag
    b.ue(mbs_w - 1);
    b.ue(mbs_h - 1);
    b.put(1, 1); // frame_mbs_only_flag
    b.put(1, 1); // direct_8x8_inference_flag
    let cropped = crop_right > 0 || crop_bottom > 0;
    b.put(u32::from(cropped), 1);
    if cropped {
        b.ue(0);
        b.ue(crop_right);
        b.ue(0);
        b.ue(crop_bottom);
    }
    b.put(0, 1); // vui_parameters_present_flag
    b.put(1, 1); // rbsp_stop_one_bit
    let mut nal = vec![0x60 | SPS];
    // Emulation prevention: no 0x000000–0x000003 inside the unit.
    let mut zeros = 0;
    for byte in b.finish() {
        if zeros >= 2 && byte <= 3 {
            nal.push(3);
            zeros = 0;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        nal.push(byte);
    }
    nal
}

/// A big-endian bit writer with Exp-Golomb codes.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    /// The low `n` bits of `v`, most significant first.
    fn put(&mut self, v: u32, n: u32) {
        for i in (0..n).rev() {
            if self.used.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (v >> i) & 1 == 1 {
                if let Some(last) = self.bytes.last_mut() {
                    *last |= 0x80 >> (self.used % 8);
                }
            }
            self.used += 1;
        }
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self, v: u32) {
        let code = v + 1;
        let len = 32 - code.leading_zeros();
        self.put(0, len - 1);
        self.put(code, len);
    }

    /// The bytes, the last one padded with zeros.
    fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_starts_announce_each_layer_size_and_fit_the_codec_area() {
        for (w, h) in [(1280, 720), (640, 360), (320, 180), (1920, 1080), (176, 144), (100, 50)] {
            let start = keyframe_start(w, h);
            assert_eq!(keyframe_size(&start), Some((w, h)), "{w}x{h}");
            assert!(start.len() <= crate::vp8::HEADER_LEN, "{w}x{h}: {} bytes", start.len());
        }
        assert_eq!(keyframe_size(&DELTA_START), None);
        assert_eq!(keyframe_size(&keyframe_start(640, 360)[..6]), None, "cut short");
    }
}
