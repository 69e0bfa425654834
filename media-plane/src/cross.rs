//! Messages between the cores of one node, for rooms that span cores.
//!
//! The publisher's core forwards each packet once per remote core that has members of the
//! room, handing over the shared `Arc<[u8]>` payload (never a copy). The remote core keeps a
//! *shadow* of the publisher (a session without a peer connection) whose tracks its local
//! subscribers attach to like to any local track.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::ExtensionValues;

/// A publisher session on some core: core index, slab key and the session's serial number
/// (keys are reused; serials are not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PubRef {
    /// Core that owns the publisher.
    pub core: u32,
    /// Slab key on that core.
    pub key: usize,
    /// Serial of the session on that core.
    pub serial: u64,
}

/// One message from one core to another.
#[derive(Debug)]
pub enum CrossMsg {
    /// `core` has (or no longer has) members of `room`.
    Members {
        /// Room.
        room: String,
        /// Sending core.
        core: u32,
        /// Whether it has members now.
        present: bool,
    },
    /// A track published on another core, for the receiving core's members of `room`.
    Track {
        /// Room.
        room: String,
        /// The publisher.
        from: PubRef,
        /// Publisher session id (receivers group tracks by it).
        session: String,
        /// Publisher identity.
        identity: String,
        /// Publisher-side mid.
        mid: Mid,
        /// Audio or video.
        kind: MediaKind,
    },
    /// The publisher left; its shadow goes.
    PublisherLeft {
        /// The publisher.
        from: PubRef,
    },
    /// One RTP packet of a published track.
    Rtp(Box<CrossRtp>),
    /// A subscriber on another core asks for a keyframe.
    Keyframe {
        /// The publisher (on the receiving core).
        to: PubRef,
        /// Publisher-side mid.
        mid: Mid,
        /// PLI or FIR.
        kind: KeyframeRequestKind,
    },
}

/// An RTP packet handed to another core: header fields and the shared payload.
#[derive(Debug)]
pub struct CrossRtp {
    /// The publisher.
    pub from: PubRef,
    /// Publisher-side mid.
    pub mid: Mid,
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
    /// The payload, shared with every other subscriber.
    pub payload: Arc<[u8]>,
}
