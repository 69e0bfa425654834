//! The events and their JSON body, shaped as LiveKit's webhook events.

use serde::Serialize;
use signaling::{ParticipantView, TrackInfo};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A room got its first participant.
    RoomStarted,
    /// A room's last participant left, or the room was deleted while in use.
    RoomFinished,
    /// A participant was admitted.
    ParticipantJoined,
    /// A participant's session ended.
    ParticipantLeft,
    /// A participant published a track.
    TrackPublished,
    /// A published track ended (its publisher left).
    TrackUnpublished,
}

/// The room an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomInfo {
    /// Name.
    pub name: String,
    /// Unix time of creation (seconds).
    pub created_at: u64,
    /// Participants after the event.
    pub num_participants: usize,
}

/// One webhook event: the JSON body of one POST.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unique id; also the `webhook-id` header, for deduplication by the receiver.
    pub id: String,
    /// What happened.
    pub event: Kind,
    /// Unix time of the event (seconds).
    pub created_at: u64,
    /// The room.
    pub room: RoomInfo,
    /// The participant, for participant and track events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantView>,
    /// The track, for track events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackInfo>,
}
