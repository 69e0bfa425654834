//! Measurements: per-thread counters read live by the progress display, per-stream loss
//! and jitter, and latency histograms merged at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::scenario::PAYLOAD_HEADER;

/// Live counters of one worker thread, on their own cache line so threads never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// Media packets sent.
    pub sent: AtomicU64,
    /// Media packets received.
    pub received: AtomicU64,
    /// Payload bytes received.
    pub bytes: AtomicU64,
    /// Packets missing from sequence gaps (net of late arrivals).
    pub lost: AtomicU64,
    /// Connections that reached DTLS connected (or allocations made, for TURN).
    pub connected: AtomicU64,
    /// Connections that failed.
    pub failed: AtomicU64,
    /// Video frames received whole (see [`Frames`]).
    pub frames: AtomicU64,
}

impl Counters {
    /// Adds one to a counter (relaxed: these are statistics).
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

/// Sums of all threads' counters at one instant.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Totals {
    /// Packets sent.
    pub sent: u64,
    /// Packets received.
    pub received: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Packets lost.
    pub lost: u64,
    /// Connected.
    pub connected: u64,
    /// Failed.
    pub failed: u64,
    /// Video frames received whole.
    pub frames: u64,
}

/// Sums the counters of all threads.
pub fn totals(all: &[std::sync::Arc<Counters>]) -> Totals {
    let mut t = Totals::default();
    for c in all {
        t.sent += c.sent.load(Relaxed);
        t.received += c.received.load(Relaxed);
        t.bytes += c.bytes.load(Relaxed);
        t.lost += c.lost.load(Relaxed);
        t.connected += c.connected.load(Relaxed);
        t.failed += c.failed.load(Relaxed);
        t.frames += c.frames.load(Relaxed);
    }
    t
}

/// A latency histogram in microseconds, 1 µs to 60 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Bytes in front of the stamp: the codec header area, then the sending connection's serial
/// (4 bytes, big-endian) and the layer (1 byte).
pub const PREFIX: usize = 24;
/// Bytes of the codec header area at the start of the prefix (a VP8 descriptor and keyframe
/// header fit).
pub const CODEC_AREA: usize = PREFIX - 5;
/// Layer byte of audio packets.
pub const AUDIO_LAYER: u8 = 0xff;

/// A payload prefix: `codec` bytes (at most [`CODEC_AREA`], the rest zero), the sending
/// connection's serial and the layer.
pub fn prefix(codec: &[u8], source: u32, layer: u8) -> [u8; PREFIX] {
    let mut p = [0u8; PREFIX];
    let n = codec.len().min(CODEC_AREA);
    p[..n].copy_from_slice(&codec[..n]);
    p[CODEC_AREA..PREFIX - 1].copy_from_slice(&source.to_be_bytes());
    p[PREFIX - 1] = layer;
    p
}

/// Writes the synthetic payload header: prefix (see [`prefix`]), sequence number, send time.
pub fn stamp(payload: &mut [u8], prefix: &[u8; PREFIX], seq: u64, sent_ns: u64) {
    payload[..PREFIX].copy_from_slice(prefix);
    payload[PREFIX..PREFIX + 8].copy_from_slice(&seq.to_be_bytes());
    payload[PREFIX + 8..PREFIX + 16].copy_from_slice(&sent_ns.to_be_bytes());
}

/// What a receiver reads from a synthetic payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number (per sending connection and layer).
    pub seq: u64,
    /// Send time, ns since the epoch.
    pub sent_ns: u64,
    /// Serial of the sending connection.
    pub source: u32,
    /// Simulcast layer index, or [`AUDIO_LAYER`].
    pub layer: u8,
}

/// Reads a synthetic payload header.
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    if payload.len() < PAYLOAD_HEADER {
        return None;
    }
    let seq = u64::from_be_bytes(payload[PREFIX..PREFIX + 8].try_into().ok()?);
    let sent_ns = u64::from_be_bytes(payload[PREFIX + 8..PREFIX + 16].try_into().ok()?);
    let source = u32::from_be_bytes(payload[CODEC_AREA..PREFIX - 1].try_into().ok()?);
    Some(Stamp { seq, sent_ns, source, layer: payload[PREFIX - 1] })
}

/// One received stream (per SSRC, and per simulcast layer when the SFU switches layers).
#[derive(Debug, Clone)]
pub struct Stream {
    /// Identifies the stream across layers: connection serial and SSRC (or allocation and direction).
    pub key: u64,
    /// Lowest sequence number seen.
    pub first_seq: u64,
    /// Highest sequence number seen.
    pub last_seq: u64,
    /// Packets received.
    pub received: u64,
    /// RFC 3550 interarrival jitter estimate, ns.
    pub jitter_ns: f64,
    last: (u64, u64),
}

impl Stream {
    /// A stream whose first packet had this sequence number.
    pub fn new(key: u64, seq: u64, now_ns: u64, sent_ns: u64) -> Self {
        Self { key, first_seq: seq, last_seq: seq, received: 0, jitter_ns: 0.0, last: (now_ns, sent_ns) }
    }

    /// Expected packets between the first and last sequence numbers seen.
    pub fn expected(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }
}

/// Everything a worker thread measures, merged at the end.
#[derive(Debug)]
pub struct Sink {
    /// One-way latency, µs.
    pub latency: Histogram<u64>,
    /// From the start of a join to its first media packet, µs.
    pub join: Histogram<u64>,
    /// Finished streams.
    pub streams: Vec<Stream>,
    /// Video received per (receiver, publisher track, SSRC).
    pub tracks: Vec<TrackRx>,
    /// Video sent per publisher and layer.
    pub sent: Vec<SentLayers>,
    /// Bandwidth-capped receivers.
    pub capped: Vec<CappedRx>,
}

impl Default for Sink {
    fn default() -> Self {
        Self { latency: latency_histogram(), join: latency_histogram(), streams: Vec::new(), tracks: Vec::new(), sent: Vec::new(), capped: Vec::new() }
    }
}

impl Sink {
    /// Records one received packet of `stream`; returns the packets newly found missing
    /// (negative when a late packet fills a gap).
    pub fn record(&mut self, stream: &mut Stream, seq: u64, sent_ns: u64, now_ns: u64) -> i64 {
        stream.received += 1;
        let (prev_arrival, prev_sent) = stream.last;
        // RFC 3550 §6.4.1: J += (|D| - J) / 16, D = (Rj - Ri) - (Sj - Si).
        let d = (now_ns as i128 - prev_arrival as i128) - (sent_ns as i128 - prev_sent as i128);
        if stream.received > 1 {
            stream.jitter_ns += ((d.unsigned_abs() as f64) - stream.jitter_ns) / 16.0;
        }
        stream.last = (now_ns, sent_ns);
        let _ = self.latency.record((now_ns.saturating_sub(sent_ns) / 1000).max(1));
        if seq > stream.last_seq {
            let gap = (seq - stream.last_seq - 1) as i64;
            stream.last_seq = seq;
            gap
        } else if seq < stream.first_seq {
            stream.first_seq = seq;
            0
        } else if stream.received > 1 {
            -1
        } else {
            0
        }
    }

    /// Adds another sink.
    pub fn merge(&mut self, other: Sink) {
        let _ = self.latency.add(&other.latency);
        let _ = self.join.add(&other.join);
        self.streams.extend(other.streams);
        self.tracks.extend(other.tracks);
        self.sent.extend(other.sent);
        self.capped.extend(other.capped);
    }
}

/// A frame size, `(width, height)`; `(0, 0)` before any keyframe said.
pub type Resolution = (u16, u16);

/// "WxH", or "unknown" for packets before the first keyframe.
pub fn resolution_name(r: Resolution) -> String {
    if r == (0, 0) {
        "unknown".into()
    } else {
        format!("{}x{}", r.0, r.1)
    }
}

/// Video one receiver got of one publisher track on one SSRC (an SFU switching simulcast
/// layers keeps the SSRC, so the layers show up in `by_resolution` and `by_layer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRx {
    /// The receiving participant.
    pub receiver: String,
    /// Serial of the publishing connection (from the payload).
    pub source: u32,
    /// SSRC the packets arrived on.
    pub ssrc: u32,
    /// Packets.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Keyframes (their first packets).
    pub keyframes: u64,
    /// Packets by the resolution of the latest keyframe before (or at) them.
    pub by_resolution: BTreeMap<Resolution, u64>,
    /// Packets by the layer the publisher sent them on.
    pub by_layer: BTreeMap<u8, u64>,
    /// Resolution of the latest keyframe.
    pub current: Resolution,
    /// Frames that arrived whole.
    pub frames: Frames,
}

/// Counts the video frames that arrive whole: every packet after the previous frame's last
/// (marker) packet up to this frame's marker arrived in order, with no gap. What a decoder
/// could decode without waiting for a retransmission; the frame in progress at the start
/// does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frames {
    /// Frames that arrived whole.
    pub whole: u64,
    /// Sequence number expected next, once one packet arrived.
    next: Option<u64>,
    /// The frame in progress lost or reordered a packet (or began before the first packet).
    broken: bool,
}

impl Default for Frames {
    fn default() -> Self {
        Self { whole: 0, next: None, broken: true }
    }
}

impl Frames {
    /// Counts one packet with (extended) sequence number `seq`; true when it completes a whole frame.
    pub fn packet(&mut self, seq: u64, marker: bool) -> bool {
        if self.next.is_some_and(|n| n != seq) {
            self.broken = true;
        }
        self.next = Some(seq.wrapping_add(1));
        if !marker {
            return false;
        }
        let whole = !self.broken;
        self.broken = false;
        self.whole += u64::from(whole);
        whole
    }
}

impl TrackRx {
    /// An empty record.
    pub fn new(receiver: &str, source: u32, ssrc: u32) -> Self {
        Self { receiver: receiver.into(), source, ssrc, packets: 0, bytes: 0, keyframes: 0, by_resolution: BTreeMap::new(), by_layer: BTreeMap::new(), current: (0, 0), frames: Frames::default() }
    }

    /// Counts one packet of `bytes` sent on `layer`; `keyframe` is the size a keyframe start announces.
    pub fn record(&mut self, bytes: usize, keyframe: Option<Resolution>, layer: u8) {
        if let Some(size) = keyframe {
            self.keyframes += 1;
            self.current = size;
        }
        self.packets += 1;
        self.bytes += bytes as u64;
        *self.by_resolution.entry(self.current).or_default() += 1;
        *self.by_layer.entry(layer).or_default() += 1;
    }
}

/// Video one publisher connection sent, by layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentLayers {
    /// The publishing participant.
    pub publisher: String,
    /// Serial of its connection (as stamped in the payloads).
    pub source: u32,
    /// Packets by layer index.
    pub by_layer: BTreeMap<u8, u64>,
}

/// What a bandwidth-capped receiver let through and dropped.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CappedRx {
    /// The receiving participant.
    pub subscriber: String,
    /// The cap, kbit/s.
    pub cap_kbps: u64,
    /// Received (let through) bit rate on the wire, kbit/s.
    pub received_kbps: f64,
    /// Offered (let through and dropped) bit rate on the wire, kbit/s.
    pub offered_kbps: f64,
    /// Datagrams let through.
    pub passed: crate::bucket::Tally,
    /// Datagrams dropped.
    pub dropped: crate::bucket::Tally,
}

/// One receiver's view of one publisher track, for the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrackReport {
    /// The receiving participant.
    pub receiver: String,
    /// The publishing participant ("?" when its connection is unknown).
    pub publisher: String,
    /// SSRC the packets arrived on.
    pub ssrc: u32,
    /// Packets.
    pub packets: u64,
    /// Keyframes.
    pub keyframes: u64,
    /// Frames that arrived whole.
    pub frames: u64,
    /// Packets by keyframe resolution ("WxH"; "unknown" before the first keyframe).
    pub by_resolution: BTreeMap<String, u64>,
    /// Packets by the rid they were sent on.
    pub by_rid: BTreeMap<String, u64>,
    /// Resolution of the last keyframe received.
    pub last_resolution: String,
}

/// One publisher's sent video, for the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PublisherReport {
    /// The publishing participant.
    pub publisher: String,
    /// Packets by rid.
    pub by_rid: BTreeMap<String, u64>,
}

/// Per-layer accounting of a run: what publishers sent per rid, what receivers got per
/// resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LayerReport {
    /// Packets all publishers sent, by rid.
    pub sent_by_rid: BTreeMap<String, u64>,
    /// Per publisher.
    pub publishers: Vec<PublisherReport>,
    /// Packets all receivers got, by keyframe resolution.
    pub received_by_resolution: BTreeMap<String, u64>,
    /// Packets all receivers got, by the rid they were sent on.
    pub received_by_rid: BTreeMap<String, u64>,
    /// Receiver tracks by the resolution of the last keyframe they got.
    pub tracks_by_last_resolution: BTreeMap<String, u64>,
    /// Per receiver and publisher track, sorted.
    pub tracks: Vec<TrackReport>,
}

/// Builds the per-layer report; `rid` names a layer index.
pub fn layer_report(tracks: &[TrackRx], sent: &[SentLayers], rid: impl Fn(u8) -> String) -> LayerReport {
    let mut r = LayerReport::default();
    let named = |m: &BTreeMap<u8, u64>| -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (l, n) in m {
            *out.entry(rid(*l)).or_default() += n;
        }
        out
    };
    for s in sent {
        let by_rid = named(&s.by_layer);
        for (k, n) in &by_rid {
            *r.sent_by_rid.entry(k.clone()).or_default() += n;
        }
        r.publishers.push(PublisherReport { publisher: s.publisher.clone(), by_rid });
    }
    r.publishers.sort_by(|a, b| a.publisher.cmp(&b.publisher));
    for t in tracks {
        let publisher = sent.iter().find(|s| s.source == t.source).map_or_else(|| "?".to_string(), |s| s.publisher.clone());
        let by_resolution: BTreeMap<String, u64> = t.by_resolution.iter().map(|(res, n)| (resolution_name(*res), *n)).collect();
        let by_rid = named(&t.by_layer);
        for (k, n) in &by_resolution {
            *r.received_by_resolution.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &by_rid {
            *r.received_by_rid.entry(k.clone()).or_default() += n;
        }
        let last_resolution = resolution_name(t.current);
        *r.tracks_by_last_resolution.entry(last_resolution.clone()).or_default() += 1;
        r.tracks.push(TrackReport { receiver: t.receiver.clone(), publisher, ssrc: t.ssrc, packets: t.packets, keyframes: t.keyframes, frames: t.frames.whole, by_resolution, by_rid, last_resolution });
    }
    r.tracks.sort_by(|a, b| (&a.receiver, &a.publisher, a.ssrc).cmp(&(&b.receiver, &b.publisher, b.ssrc)));
    r
}

/// "k1 n1, k2 n2" of a count map, or "-" when empty.
pub fn counts_line(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

/// Nanoseconds since `epoch`.
pub fn ns_since(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_late_packets() {
        let mut sink = Sink::default();
        let mut s = Stream::new(9, 1, 0, 0);
        assert_eq!(sink.record(&mut s, 1, 0, 1000), 0);
        assert_eq!(sink.record(&mut s, 4, 10, 2000), 2);
        assert_eq!(sink.record(&mut s, 3, 5, 3000), -1);
        assert_eq!(s.expected(), 4);
        assert_eq!(s.received, 3);
        let mut buf = [0u8; PAYLOAD_HEADER];
        stamp(&mut buf, &prefix(&[1, 2, 3, 4], 0xdead_beef, 2), 7, 99);
        assert_eq!(&buf[..4], &[1, 2, 3, 4]);
        assert_eq!(read_stamp(&buf), Some(Stamp { seq: 7, sent_ns: 99, source: 0xdead_beef, layer: 2 }));
        assert_eq!(read_stamp(&buf[..10]), None);
        // A codec header longer than its area is cut, never spills into the serial.
        let p = prefix(&[0xaa; 40], 1, 0);
        assert_eq!(&p[CODEC_AREA..], &[0, 0, 0, 1, 0]);
    }

    #[test]
    fn only_frames_whole_and_in_order_count() {
        let mut f = Frames::default();
        // Joined mid-frame: that frame does not count; the next two do.
        assert!(!f.packet(10, true));
        assert!(!f.packet(11, false));
        assert!(f.packet(12, true));
        assert!(f.packet(13, true));
        // A gap breaks the frame it falls in, and only that one.
        assert!(!f.packet(15, false));
        assert!(!f.packet(16, true));
        assert!(f.packet(17, true));
        // A late packet (reordered or retransmitted) breaks the frame too.
        assert!(!f.packet(19, false));
        assert!(!f.packet(18, false));
        assert!(!f.packet(20, true));
        assert_eq!(f.whole, 3);
    }

    #[test]
    fn per_layer_accounting() {
        let names = |l: u8| ["l", "m", "h"].get(usize::from(l)).map_or("?".to_string(), |s| s.to_string());
        // A receiver gets two delta packets before any keyframe, then layer h, then a switch to l.
        let mut t = TrackRx::new("room 0 sub-2", 7, 1111);
        t.record(100, None, 2);
        t.record(100, None, 2);
        t.record(100, Some((1280, 720)), 2);
        t.record(100, None, 2);
        t.record(50, Some((320, 180)), 0);
        t.record(50, None, 0);
        t.record(50, None, 0);
        assert_eq!((t.packets, t.bytes, t.keyframes), (7, 550, 2));
        assert_eq!(t.by_resolution, BTreeMap::from([((0, 0), 2), ((1280, 720), 2), ((320, 180), 3)]));
        assert_eq!(t.by_layer, BTreeMap::from([(0, 3), (2, 4)]));
        // Another receiver of an unknown connection.
        let mut u = TrackRx::new("room 0 sub-1", 99, 2222);
        u.record(10, Some((640, 360)), 1);
        let sent = vec![
            SentLayers { publisher: "room 0 video-0".into(), source: 7, by_layer: BTreeMap::from([(0, 10), (1, 20), (2, 40)]) },
            SentLayers { publisher: "room 0 video-1".into(), source: 8, by_layer: BTreeMap::from([(2, 5)]) },
        ];
        let r = layer_report(&[t, u], &sent, names);
        let m = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect::<BTreeMap<_, _>>();
        assert_eq!(r.sent_by_rid, m(&[("l", 10), ("m", 20), ("h", 45)]));
        assert_eq!(r.publishers[1].by_rid, m(&[("h", 5)]));
        assert_eq!(r.received_by_resolution, m(&[("unknown", 2), ("1280x720", 2), ("320x180", 3), ("640x360", 1)]));
        assert_eq!(r.received_by_rid, m(&[("l", 3), ("m", 1), ("h", 4)]));
        assert_eq!(r.tracks_by_last_resolution, m(&[("320x180", 1), ("640x360", 1)]));
        // Sorted by receiver; the publisher is named from its connection serial.
        assert_eq!(r.tracks[0].receiver, "room 0 sub-1");
        assert_eq!(r.tracks[0].publisher, "?");
        assert_eq!(r.tracks[1].publisher, "room 0 video-0");
        assert_eq!(r.tracks[1].last_resolution, "320x180");
        assert_eq!(counts_line(&r.sent_by_rid), "h 45, l 10, m 20");
        assert_eq!(counts_line(&BTreeMap::new()), "-");
    }
}
