//! Forwarding: a packet decrypted once by its publisher's `Rtc` goes to each down-track of
//! its up-track that forwards the packet's layer (header rewrite, shared payload) and once to each other core with
//! members of the room. Nothing here allocates or copies per subscriber, and no list is
//! moved or cloned to satisfy the borrow checker: up-tracks, down-tracks, sessions and the
//! outbox are separate tables.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor, Vp8Patch};

use super::cross::{CrossMsg, CrossRtp, PubRef};
use super::ids::{SessionKey, UpKey};
use super::track::DownState;
use super::{Core, KEYFRAME_THROTTLE};
use crate::codec::{self, FrameInfo, VideoCodec, Vp8Fields};
use crate::layers::{Slot, Verdict};
use crate::vp8munge::Vp8Munger;

/// One received RTP packet as forwarding needs it: the publisher's header fields, what the
/// payload tells (keyframe, VP8 numbering), and the payload, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Payload type as the publisher sent it.
    pub pt: u8,
    /// Codec parameters of that payload type.
    pub params: PayloadParams,
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// Arrival time at the publisher's core.
    pub wallclock: Instant,
    /// Marker bit.
    pub marker: bool,
    /// Header extension values that are forwarded.
    pub ext: ExtensionValues,
    /// The simulcast layer it belongs to.
    pub slot: Slot,
    /// What its payload tells forwarding.
    pub frame: FrameInfo,
    /// Its VP8 descriptor, parsed once, for the per-subscriber numbering patch.
    pub vp8: Option<Vp8Descriptor>,
    /// The payload.
    pub payload: Arc<[u8]>,
}

impl Core {
    /// The up-track of session `key` with publisher-side `mid`.
    pub(super) fn up_by_mid(&self, key: SessionKey, mid: Mid) -> Option<UpKey> {
        let s = self.sessions.get(key)?;
        s.ups.iter().copied().find(|u| self.ups.get(*u).is_some_and(|t| t.mid == mid))
    }

    /// Hands one received RTP packet to every subscriber of its track, here and on every
    /// other core with members of the room.
    pub(super) fn forward(&mut self, key: SessionKey, p: RtpPacket) {
        let Some(s) = self.sessions.get_mut(key) else { return };
        let Some((mid, rid)) = s.rtc.direct_api().stream_rx(&p.header.ssrc).map(|rx| (rx.mid(), rx.rid())) else { return };
        let Some(params) = s.rtc.codec_config().find(|pp| pp.pt() == p.header.payload_type).copied() else { return };
        let Some(up) = s.ups.iter().copied().find(|u| self.ups.get(*u).is_some_and(|t| t.mid == mid)) else { return };
        let track = &mut self.ups[up];
        let Some(slot) = track.slot_of(rid) else { return };
        let codec = if track.kind == MediaKind::Video { VideoCodec::of(params.spec().codec) } else { VideoCodec::Other };
        let frame = codec::inspect(codec, &p.payload);
        track.note_packet(slot, p.payload.len(), &frame, p.timestamp);
        self.counters.rx_rtp += 1;
        let vp8 = if frame.vp8.is_some() { Vp8Descriptor::parse(&p.payload).ok() } else { None };
        let packet = Packet {
            pt: *p.header.payload_type,
            params,
            seq: *p.seq_no,
            ts: p.header.timestamp,
            wallclock: p.timestamp,
            marker: p.header.marker,
            ext: ExtensionValues {
                audio_level: p.header.ext_vals.audio_level,
                voice_activity: p.header.ext_vals.voice_activity,
                video_orientation: p.header.ext_vals.video_orientation,
                ..Default::default()
            },
            slot,
            frame,
            vp8,
            payload: p.payload,
        };
        // Only rooms that span cores pay for the lookup. One message per remote core that
        // wants this layer, not per remote subscriber; the payload is shared.
        if !self.room_cores.is_empty() {
            if let Some(cores) = self.room_cores.get(&s.room) {
                let from = PubRef { core: self.cfg.index, key, serial: s.serial };
                let track = &self.ups[up];
                for &c in cores {
                    if track.remote_wants(c, slot) {
                        let r = CrossRtp { from, mid, packet: packet.clone() };
                        self.out.cross.push((c, CrossMsg::Rtp(Box::new(r))));
                    }
                }
            }
        }
        self.fan_out(up, &packet);
    }

    /// Writes one packet of an up-track to each down-track on this core that forwards its
    /// layer (switching layers at keyframes).
    pub(super) fn fan_out(&mut self, up: UpKey, pkt: &Packet) {
        let Some(track) = self.ups.get(up) else { return };
        let Some(fanout) = track.fanout.get(usize::from(pkt.slot)) else { return };
        let nackable = track.kind == MediaKind::Video;
        let gated = track.simulcast();
        let clock_rate = pkt.params.spec().clock_rate.get();
        for &dk in fanout {
            let Some(down) = self.downs.get_mut(dk) else { continue };
            let DownState::Open(sub_mid) = down.state else { continue };
            let verdict = down.selector.on_packet(pkt.slot, pkt.frame.keyframe_start, gated);
            // Temporal layers: what the allocation allows, coming back only at safe frames.
            let temporal = match pkt.frame.vp8 {
                Some(f) if verdict != Verdict::Drop => {
                    f.tid.is_none_or(|t| down.temporal.admit(down.max_tid, t, f.begins_frame, f.layer_sync, pkt.frame.keyframe_start))
                }
                _ => true,
            };
            match verdict {
                Verdict::Drop => continue,
                Verdict::Forward => {
                    // A temporal layer above what goes out is left out, numbering closed up.
                    if !temporal && down.rewrite.skip(pkt.seq) {
                        if let Some(pid) = pkt.frame.vp8.and_then(|f| f.picture_id) {
                            down.vp8.skip(pid);
                        }
                        continue;
                    }
                }
                Verdict::Switch => {
                    down.rewrite.switch_source();
                    down.vp8.switch_source();
                    // It leaves the old layer's list once this packet is out.
                    self.switched.push(dk);
                }
            }
            let Some(sub) = self.sessions.get_mut(down.subscriber) else { continue };
            let pt = match down.rewrite.pt(pkt.pt) {
                Some(o) => o,
                None => {
                    let Some(local) = sub.rtc.codec_config().match_params(pkt.params) else { continue };
                    let o = *local.pt();
                    down.rewrite.map_pt(pkt.pt, o);
                    o
                }
            };
            let Some((seq, ts)) = down.rewrite.map(pkt.seq, pkt.ts, pkt.wallclock, clock_rate) else { continue };
            let mut write = RtpWrite::new(pt.into(), seq.into(), ts, pkt.wallclock, pkt.payload.clone())
                .marker(pkt.marker)
                .ext_vals(pkt.ext.clone())
                .nackable(nackable);
            if let (Some(fields), Some(desc)) = (&pkt.frame.vp8, &pkt.vp8) {
                if let Some(patch) = vp8_patch(&mut down.vp8, fields, desc) {
                    write = write.vp8_patch(patch);
                }
            }
            let mut api = sub.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(sub_mid, None) else { continue };
            tx.write_rtp(write);
            self.counters.tx_rtp += 1;
            // str0m releases written packets on its next timeout, so rather than polling the
            // subscriber now (which would only return that deadline) make it due at once.
            self.deadlines.arm(&mut sub.next_timeout, pkt.wallclock, down.subscriber);
        }
        while let Some(dk) = self.switched.pop() {
            self.sync_fanout(dk);
        }
    }

    /// Asks the publisher of an up-track for a keyframe of one layer (video only, throttled
    /// per layer, so requests from many subscribers coalesce); a shadow passes the request
    /// to the publisher's core.
    pub(super) fn request_keyframe(&mut self, now: Instant, up: UpKey, slot: Slot, kind: KeyframeRequestKind) {
        let Some(t) = self.ups.get_mut(up) else { return };
        let (owner, mid) = (t.owner, t.mid);
        let Some(layer) = t.layers.get_mut(usize::from(slot)) else { return };
        if t.kind != MediaKind::Video || layer.last_keyframe_request.is_some_and(|last| now < last + KEYFRAME_THROTTLE) {
            return;
        }
        layer.last_keyframe_request = Some(now);
        let rid = layer.rid;
        let Some(p) = self.sessions.get_mut(owner) else { return };
        if let Some(origin) = p.shadow {
            self.out.cross.push((origin.core, CrossMsg::Keyframe { to: origin, mid, slot, kind }));
            return;
        }
        if let Some(rx) = p.rtc.direct_api().stream_rx_by_mid(mid, rid) {
            rx.request_keyframe(kind);
            // str0m sends the request at its next timeout: make that now.
            self.deadlines.arm(&mut p.next_timeout, now, owner);
        }
    }
}

/// The patch that keeps a down-track's VP8 numbering continuous, when it changes anything.
fn vp8_patch(munger: &mut Vp8Munger, fields: &Vp8Fields, desc: &Vp8Descriptor) -> Option<Vp8Patch> {
    let out = munger.map(fields);
    if out.picture_id == fields.picture_id && out.tl0_pic_idx == fields.tl0_pic_idx && out.key_idx == fields.key_idx {
        return None;
    }
    let mut b = desc.patch();
    if let Some(p) = out.picture_id {
        b = b.picture_id(p);
    }
    if let Some(t) = out.tl0_pic_idx {
        b = b.tl0_pic_idx(t);
    }
    if let Some(k) = out.key_idx {
        b = b.key_idx(k);
    }
    b.build().ok()
}
