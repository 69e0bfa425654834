//! The control link: JSON messages exchanged over an authenticated WebSocket
//! between the control plane (server) and each media-plane node (client).
//!
//! The control plane never sees a media packet; it only sends commands such as
//! "join this participant with this SDP offer" and receives answers, events and load.

use serde::{Deserialize, Serialize};

/// Path on the control plane's HTTPS listener where media-plane nodes connect.
pub const LINK_PATH: &str = "/internal/link";

/// Header carrying the shared node secret on the link's WebSocket upgrade.
pub const SECRET_HEADER: &str = "x-node-secret";

/// Seconds between two [`Event::Load`] reports of a core.
pub const LOAD_INTERVAL_SECS: u64 = 1;

/// Version of this message set; both sides refuse a mismatch at registration.
pub const PROTOCOL_VERSION: u32 = 2;

/// One core of a media-plane node, as announced at registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CoreInfo {
    /// Index of the core within its node.
    pub core: u32,
    /// UDP port owned by this core's event loop.
    pub port: u16,
}

/// What a participant session may do, derived from its token grants.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grants {
    /// May send media.
    pub publish: bool,
    /// May receive other participants' media.
    pub subscribe: bool,
}

/// Which publishers a session receives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subscription {
    /// Every other publisher in the room (web app, WebSocket clients).
    All,
    /// Only one publisher's tracks (WHEP).
    Only {
        /// Session id of the publisher.
        publisher: String,
        /// Also whoever publishes later under this identity (the broadcaster reconnecting
        /// with a new session): its tracks take over the same m-lines, numbering continued.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
    },
    /// Nothing (WHIP publishers).
    None,
    /// Only the tracks named by [`Command::Subscribe`] (auto-subscribe off).
    Chosen,
}

/// How a subscriber wants a track, and the layer cap in it: the client's own types
/// (`signaling`), so the control plane relays what it checked without converting it.
pub use signaling::{Quality, TrackSettings};

/// Commands from the control plane to a media-plane node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Create a session for a participant from its SDP offer; the node answers with [`Event::Answer`].
    Join {
        /// Correlates the answer.
        req: u64,
        /// Core that hosts the room.
        core: u32,
        /// Room name.
        room: String,
        /// Unique session id (one per connection of an identity).
        session: String,
        /// Participant identity shown to others.
        identity: String,
        /// Grants from the token.
        grants: Grants,
        /// What this session receives.
        subscription: Subscription,
        /// How it wants each video track it receives, until told otherwise per track.
        #[serde(default)]
        video: TrackSettings,
        /// The client's SDP offer.
        offer: String,
    },
    /// Subscribe a session to one published track, or change how it receives it.
    Subscribe {
        /// The subscribing session.
        session: String,
        /// The publishing session (in the same room; the control plane checks).
        publisher: String,
        /// The publisher's track id (as in [`Event::TrackPublished`]).
        track: String,
        /// How it wants the track.
        settings: TrackSettings,
    },
    /// Stop sending one published track to a session.
    Unsubscribe {
        /// The subscribing session.
        session: String,
        /// The publishing session.
        publisher: String,
        /// The publisher's track id.
        track: String,
    },
    /// The client's SDP answer to a server-initiated offer ([`Event::Offer`]).
    Answer {
        /// Session id.
        session: String,
        /// SDP answer.
        sdp: String,
    },
    /// Remove a session and all its state.
    Leave {
        /// Session id.
        session: String,
    },
    /// Remove every session of a room.
    CloseRoom {
        /// Room name.
        room: String,
    },
    /// End every session of the node, with `reason` (the node sends it to its own cores
    /// when its control plane stayed away past the grace period).
    EndAll {
        /// Reported in each session's `SessionEnded`.
        reason: LeaveReason,
    },
}

/// Why a session ended, as told by the media plane.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The control plane asked for it.
    Requested,
    /// ICE or DTLS failed or timed out.
    Timeout,
    /// The peer closed DTLS, or str0m reported an error.
    Closed,
    /// The media core hosting it failed and was restarted empty.
    CoreFailed,
    /// The media plane lost its control link for longer than its grace period.
    ControlLost,
}

/// Why a node refused a [`Command::Join`]; on the wire `{"code": ..., "detail": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum JoinError {
    /// A session with this id already exists on the node.
    #[error("session {0} already exists")]
    SessionExists(String),
    /// The core holds as many sessions as it may (`--capacity-per-core`).
    #[error("core {0} is at capacity")]
    CoreFull(u32),
    /// The SDP offer is malformed or was not accepted.
    #[error("SDP offer rejected: {0}")]
    BadSdp(String),
    /// The core failed while taking the join, and restarted empty.
    #[error("core {0} failed while taking the join")]
    CoreFailed(u32),
}

/// Kind of a media track.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// Messages from a media-plane node to the control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// First message on a link.
    Register {
        /// [`PROTOCOL_VERSION`] of the node.
        version: u32,
        /// Node id, unique in the cluster.
        node: String,
        /// Addresses the node advertises as ICE host candidates.
        addresses: Vec<String>,
        /// The node's cores and their ports.
        cores: Vec<CoreInfo>,
        /// Sessions the node accepts per core.
        capacity_per_core: u32,
    },
    /// Answer to [`Command::Join`].
    Answer {
        /// Request id from the command.
        req: u64,
        /// SDP answer.
        sdp: String,
    },
    /// A [`Command::Join`] failed.
    JoinFailed {
        /// Request id from the command.
        req: u64,
        /// Why.
        error: JoinError,
    },
    /// The node needs to renegotiate with a client (tracks added or removed).
    Offer {
        /// Session id.
        session: String,
        /// SDP offer to relay to the client.
        sdp: String,
    },
    /// A client's answer could not be applied.
    AnswerFailed {
        /// Session id.
        session: String,
        /// Human-readable reason.
        message: String,
    },
    /// A session published a track.
    TrackPublished {
        /// Room name.
        room: String,
        /// Publishing session.
        session: String,
        /// Track id (the publisher's mid).
        track: String,
        /// Audio or video.
        kind: TrackKind,
    },
    /// A session is gone, with all its state.
    SessionEnded {
        /// Room name.
        room: String,
        /// Session id.
        session: String,
        /// Why.
        reason: LeaveReason,
    },
    /// A subscriber's video track was paused (it does not fit the subscriber's bandwidth even
    /// at its lowest layer) or resumed.
    TrackPaused {
        /// The subscribing session.
        session: String,
        /// The publishing session.
        publisher: String,
        /// The publisher's track id.
        track: String,
        /// Paused (true) or resumed (false).
        paused: bool,
    },
    /// Which simulcast layers of a published track someone receives (dynacast): the
    /// publisher may pause the others.
    LayersWanted {
        /// The publishing session.
        session: String,
        /// Its track id.
        track: String,
        /// The rids of the layers wanted; empty when no one wants the track.
        rids: Vec<String>,
    },
    /// The DTLS connection of a session is up.
    Connected {
        /// Session id.
        session: String,
    },
    /// Periodic load report of one core.
    Load {
        /// Core index.
        core: u32,
        /// Sessions on the core.
        sessions: u32,
        /// RTP packets received since the last report (about [`LOAD_INTERVAL_SECS`] ago;
        /// exactly `interval_ms`).
        rx_packets: u64,
        /// RTP packets forwarded since the last report.
        tx_packets: u64,
        /// Share of the interval the core's thread was on the CPU, in thousandths (an
        /// older node leaves it out: 0).
        #[serde(default)]
        busy_permille: u16,
        /// Sessions whose media is connected (ICE and DTLS done); the busy share is theirs
        /// (an older node leaves it out: `None`, which is not the same as none connected).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connected: Option<u32>,
        /// Milliseconds this report covers, measured by the core (a saturated core reports
        /// late; an older node leaves it out: `None`, read as [`LOAD_INTERVAL_SECS`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval_ms: Option<u32>,
        /// Of the busy share, thousandths spent on joins and ICE/DTLS handshakes rather than
        /// on connected sessions (an older node leaves it out: `None`, cost not split).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        setup_permille: Option<u16>,
    },
}

impl Command {
    /// Encodes the command as one WebSocket text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Event {
    /// Encodes the event as one WebSocket text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trips() {
        let c = Command::Join {
            req: 7,
            core: 1,
            room: "r".into(),
            session: "s".into(),
            identity: "i".into(),
            grants: Grants { publish: true, subscribe: false },
            subscription: Subscription::Only { publisher: "p".into(), identity: Some("alice".into()) },
            video: TrackSettings { quality: Some(Quality::Low), ..Default::default() },
            offer: "v=0".into(),
        };
        let back: Command = serde_json::from_str(&c.to_json()).unwrap();
        assert!(matches!(back, Command::Join { req: 7, core: 1, .. }));
    }

    #[test]
    fn a_load_report_without_the_newer_fields_is_read_as_unknown_not_zero() {
        let old = r#"{"type":"load","core":1,"sessions":3,"rx_packets":10,"tx_packets":20,"busy_permille":5}"#;
        let e: Event = serde_json::from_str(old).expect("older load report parses");
        let Event::Load { connected, interval_ms, setup_permille, .. } = e else { panic!("not a load report: {e:?}") };
        assert_eq!((connected, interval_ms, setup_permille), (None, None, None));
        let now = Event::Load { core: 1, sessions: 3, rx_packets: 10, tx_packets: 20, busy_permille: 5, connected: Some(0), interval_ms: Some(1250), setup_permille: Some(0) };
        let back: Event = serde_json::from_str(&now.to_json()).expect("round trip");
        let Event::Load { connected, interval_ms, setup_permille, .. } = back else { panic!("not a load report: {back:?}") };
        assert_eq!((connected, interval_ms, setup_permille), (Some(0), Some(1250), Some(0)));
    }

    #[test]
    fn a_join_failure_is_typed_on_the_wire() {
        let e = Event::JoinFailed { req: 3, error: JoinError::BadSdp("no m-lines".into()) };
        let json = e.to_json();
        assert_eq!(json, r#"{"type":"join_failed","req":3,"error":{"code":"bad_sdp","detail":"no m-lines"}}"#);
        let back: Event = serde_json::from_str(&json).expect("round trip");
        assert!(matches!(back, Event::JoinFailed { req: 3, error: JoinError::BadSdp(ref m) } if m == "no m-lines"));
        let full = Event::JoinFailed { req: 4, error: JoinError::CoreFull(1) };
        let back: Event = serde_json::from_str(&full.to_json()).expect("round trip");
        assert!(matches!(back, Event::JoinFailed { error: JoinError::CoreFull(1), .. }));
        let failed = Event::JoinFailed { req: 5, error: JoinError::CoreFailed(0) };
        let json = serde_json::to_string(&failed).unwrap();
        assert_eq!(json, r#"{"type":"join_failed","req":5,"error":{"code":"core_failed","detail":0}}"#);
    }

    #[test]
    fn track_settings_default_to_enabled_with_no_limit() {
        let s: TrackSettings = serde_json::from_str("{}").expect("empty settings parse");
        assert_eq!(s, TrackSettings::default());
        assert!(s.enabled);
        let c: Command = serde_json::from_str(r#"{"type":"subscribe","session":"a","publisher":"b","track":"1","settings":{"max_width":320,"quality":"medium"}}"#).expect("subscribe parses");
        assert!(matches!(c, Command::Subscribe { settings: TrackSettings { enabled: true, max_width: Some(320), max_height: None, quality: Some(Quality::Medium), max_fps: None }, .. }));
        assert!(serde_json::from_str::<Command>(r#"{"type":"subscribe","session":"a","publisher":"b","track":"1","settings":{"quality":"ultra"}}"#).is_err());
    }

    #[test]
    fn unknown_event_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<Event>(r#"{"type":"nope"}"#).is_err());
    }
}
