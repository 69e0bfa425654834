//! Published tracks (up-tracks) and each subscriber's copy of one (down-tracks).
//!
//! They live in their own tables beside the session table, so that forwarding can read a
//! publisher's track, write a subscriber's down-track and drive the subscriber's `Rtc` in one
//! pass without borrowing the same table twice.

use std::time::Instant;

use str0m::media::{MediaKind, Mid};

use super::ids::{DownKey, SessionKey, UpKey};
use crate::rewrite::Rewrite;

/// A track one session publishes (or a shadow carries from another core).
#[derive(Debug)]
pub struct UpTrack {
    /// The publishing session.
    pub owner: SessionKey,
    /// The publisher-side mid.
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// Down-tracks bound to it, in any state; packets go to those that are open.
    pub downs: Vec<DownKey>,
    /// When a keyframe was last asked of the publisher for this track.
    pub last_keyframe_request: Option<Instant>,
}

/// Where a down-track's m-line is in its negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownState {
    /// Wanted; no m-line yet.
    ToOpen,
    /// Offered to the subscriber with this mid; waiting for its answer.
    Negotiating(Mid),
    /// Sending on this mid.
    Open(Mid),
    /// To be stopped in the next offer.
    ToStop(Mid),
    /// Stopped in an offer; gone once answered.
    NegotiatingStop(Mid),
    /// An m-line the client offered (WHEP) that no track is bound to now.
    Idle(Mid),
}

/// One subscriber's copy of a published track: its m-line and its rewrite state.
#[derive(Debug)]
pub struct DownTrack {
    /// The subscribing session.
    pub subscriber: SessionKey,
    /// The track it carries; `None` once that track is gone.
    pub up: Option<UpKey>,
    /// Audio or video.
    pub kind: MediaKind,
    /// Stream id of the m-line (`a=msid`): the publisher's session id.
    pub stream_id: String,
    /// Track id of the m-line.
    pub track_id: String,
    /// Negotiation state.
    pub state: DownState,
    /// Payload-type map, sequence rebase and timestamp offset.
    pub rewrite: Rewrite,
}

impl DownTrack {
    /// A down-track waiting for its m-line.
    pub fn wanted(subscriber: SessionKey, up: UpKey, kind: MediaKind, stream_id: String, track_id: String) -> Self {
        DownTrack { subscriber, up: Some(up), kind, stream_id, track_id, state: DownState::ToOpen, rewrite: Rewrite::default() }
    }

    /// An m-line offered by the client (WHEP), bound to nothing yet.
    pub fn idle(subscriber: SessionKey, mid: Mid, kind: MediaKind) -> Self {
        DownTrack { subscriber, up: None, kind, stream_id: String::new(), track_id: String::new(), state: DownState::Idle(mid), rewrite: Rewrite::default() }
    }
}
