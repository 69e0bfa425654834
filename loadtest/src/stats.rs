//! Measurements: per-thread counters read live by the progress display, per-stream loss
//! and jitter, and latency histograms merged at the end.

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
    }
    t
}

/// A latency histogram in microseconds, 1 µs to 60 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Bytes of codec prefix in front of the stamp (room for a VP8 keyframe header).
pub const PREFIX: usize = 12;

/// Writes the synthetic payload header: codec prefix (its last byte is the simulcast
/// layer), sequence number, send time.
pub fn stamp(payload: &mut [u8], prefix: &[u8; PREFIX], seq: u64, sent_ns: u64) {
    payload[..PREFIX].copy_from_slice(prefix);
    payload[PREFIX..PREFIX + 8].copy_from_slice(&seq.to_be_bytes());
    payload[PREFIX + 8..PREFIX + 16].copy_from_slice(&sent_ns.to_be_bytes());
}

/// Reads a synthetic payload header: (sequence number, send time in ns since the epoch, layer).
pub fn read_stamp(payload: &[u8]) -> Option<(u64, u64, u8)> {
    if payload.len() < PAYLOAD_HEADER {
        return None;
    }
    let seq = u64::from_be_bytes(payload[PREFIX..PREFIX + 8].try_into().ok()?);
    let sent = u64::from_be_bytes(payload[PREFIX + 8..PREFIX + 16].try_into().ok()?);
    Some((seq, sent, payload[PREFIX - 1]))
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
}

impl Default for Sink {
    fn default() -> Self {
        Self { latency: latency_histogram(), join: latency_histogram(), streams: Vec::new() }
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
    }
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
        let mut buf = [0u8; 32];
        stamp(&mut buf, &[1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 2], 7, 99);
        assert_eq!(read_stamp(&buf), Some((7, 99, 2)));
        assert_eq!(read_stamp(&buf[..10]), None);
    }
}
