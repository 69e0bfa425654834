//! Typed messages of the WebSocket signaling protocol at `/ws` (docs/signaling.md).
//!
//! JSON text frames, one message each, tagged by `type` in snake_case. The control plane
//! serializes [`ServerMsg`] and parses [`ClientMsg`]; clients (the load tester) do the
//! reverse, so both ends share one definition of the wire form. The web app speaks the same
//! JSON by hand.

#![warn(missing_docs)]

use std::fmt;

use serde::{Deserialize, Serialize};

/// Messages from the client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message: the access token (JWT) for one room.
    Join {
        /// The JWT.
        token: String,
        /// Receive every other participant's tracks without asking (absent: true); off when
        /// this or the token's `auto_subscribe` grant says false.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auto_subscribe: Option<bool>,
    },
    /// The client's one offer, sent right after `joined`.
    Offer {
        /// SDP offer.
        sdp: String,
    },
    /// Answer to a server `offer`.
    Answer {
        /// SDP answer.
        sdp: String,
    },
    /// Receive these tracks, or change how they are received; each subscribe sets their
    /// settings in full (absent: the defaults).
    Subscribe {
        /// The tracks, at most [`MAX_TRACKS_PER_MESSAGE`].
        tracks: Vec<TrackRef>,
        /// How to receive them (absent: enabled, no size limit, the best layer that fits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<TrackSettings>,
    },
    /// Stop receiving these tracks.
    Unsubscribe {
        /// The tracks, at most [`MAX_TRACKS_PER_MESSAGE`].
        tracks: Vec<TrackRef>,
    },
    /// Leave the room; the server closes the socket.
    Leave,
    /// Keep-alive; the server replies `pong`.
    Ping,
}

impl ClientMsg {
    /// A `join` with `token` and the server's default auto-subscribe.
    pub fn join(token: impl Into<String>) -> Self {
        ClientMsg::Join { token: token.into(), auto_subscribe: None }
    }
}

/// Most tracks one `subscribe` or `unsubscribe` may name.
pub const MAX_TRACKS_PER_MESSAGE: usize = 256;

/// Largest `max_width` or `max_height` a subscriber may ask for, in pixels.
pub const MAX_DIMENSION: u32 = 16384;

/// Largest frame rate a subscription may ask for.
pub const MAX_FRAME_RATE: u32 = 240;

/// One published track: its publisher's session and its track id (as in `track_published`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TrackRef {
    /// The publisher's session id.
    pub session: String,
    /// The publisher's track id.
    pub track: String,
}

/// A simulcast layer a subscriber asks for at most, lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// The lowest layer.
    Low,
    /// The middle layer.
    Medium,
    /// The highest layer.
    High,
}

impl Quality {
    /// The name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }
}

impl std::str::FromStr for Quality {
    type Err = UnknownQuality;

    /// Parses `low`, `medium` or `high` (any ASCII case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Quality::Low),
            "medium" => Ok(Quality::Medium),
            "high" => Ok(Quality::High),
            _ => Err(UnknownQuality(s.chars().take(32).collect())),
        }
    }
}

/// A quality name other than `low`, `medium` or `high`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown quality {0:?}: expected low, medium or high")]
pub struct UnknownQuality(pub String);

/// How a subscriber wants a track received (audio ignores all but `enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSettings {
    /// Receive it at all (default true); a disabled track stays subscribed but sends nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Largest width it is rendered at, 1 to [`MAX_DIMENSION`]; the best layer that fits is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    /// Largest height it is rendered at, 1 to [`MAX_DIMENSION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// Highest layer wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// Highest frame rate wanted, 1 to [`MAX_FRAME_RATE`]: where the publisher sends temporal
    /// layers, those above it are left out (frame rates are measured, so a cap between two
    /// layers gets the lower one, within a tenth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<u32>,
}

impl Default for TrackSettings {
    fn default() -> Self {
        TrackSettings { enabled: true, max_width: None, max_height: None, quality: None, max_fps: None }
    }
}

/// Messages from the server to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Join accepted.
    Joined {
        /// Room name.
        room: String,
        /// The client's own identity.
        identity: String,
        /// The client's own session id.
        session: String,
        /// What the token allows.
        grants: Grants,
        /// Others already in the room.
        participants: Vec<ParticipantView>,
        /// ICE servers for the RTCPeerConnection.
        ice_servers: Vec<IceServer>,
    },
    /// Answer to the client's offer.
    Answer {
        /// SDP answer.
        sdp: String,
    },
    /// Server-initiated renegotiation; the client replies with `answer`.
    Offer {
        /// SDP offer.
        sdp: String,
    },
    /// Someone joined.
    ParticipantJoined {
        /// Who joined.
        participant: ParticipantView,
    },
    /// Someone left; remove their tile.
    ParticipantLeft {
        /// Their identity.
        identity: String,
        /// Their session id.
        session: String,
    },
    /// Someone published a track.
    TrackPublished {
        /// Publisher identity.
        identity: String,
        /// Publisher session id (also the stream id of the track on the receiving side).
        session: String,
        /// Track id.
        track: String,
        /// Audio or video.
        kind: TrackKind,
    },
    /// A video track this client receives was paused because it does not fit the client's
    /// bandwidth even at its lowest layer (`paused: true`), or resumed.
    TrackPaused {
        /// The publisher's session id.
        session: String,
        /// The publisher's track id.
        track: String,
        /// Paused (true) or resumed (false).
        paused: bool,
    },
    /// Which simulcast layers of this client's own published track anyone receives; it may
    /// stop encoding the others (`RTCRtpSender.setParameters`, `active: false`).
    LayersWanted {
        /// The client's own track id (its mid).
        track: String,
        /// The rids wanted; empty when no one receives the track.
        rids: Vec<String>,
    },
    /// An error; `code` is machine-readable.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable text.
        message: String,
    },
    /// Reply to `ping`.
    Pong,
}

impl ServerMsg {
    /// An `error` message with `code` and `message`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error { code, message: message.into() }
    }
}

/// Machine-readable code of an `error` message (and of the REST API's errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed message, unknown `type`, a second `join` or `offer`.
    BadRequest,
    /// Message before `join`, or a bad token.
    Unauthorized,
    /// The token is past its `exp`.
    TokenExpired,
    /// The token lacks a grant.
    Forbidden,
    /// The room does not exist and auto-create is off.
    RoomNotFound,
    /// Unknown participant or session (REST API).
    NotFound,
    /// The room already exists (REST API).
    RoomExists,
    /// The room is at `max_participants`.
    RoomFull,
    /// Offer or answer SDP rejected.
    BadSdp,
    /// The request body is too large (REST API).
    PayloadTooLarge,
    /// The content type is not what the endpoint takes (REST API).
    UnsupportedMediaType,
    /// No media-plane node is registered.
    NoMediaNode,
    /// Every media core that could take the participant is full or too busy.
    NoCapacity,
    /// The media plane did not answer, or ICE/DTLS timed out.
    MediaTimeout,
    /// The method is not supported on this resource (REST API).
    MethodNotAllowed,
    /// The media connection closed.
    MediaClosed,
    /// The media node went away or restarted.
    MediaLost,
    /// Removed by the API.
    Kicked,
    /// The room was deleted.
    RoomClosed,
    /// The same identity joined again; this connection was replaced.
    DuplicateIdentity,
    /// A `subscribe` or `unsubscribe` names a track that is not published in the room.
    TrackNotFound,
    /// A `subscribe` asks for settings out of range (a size of 0 or above 16384).
    BadSettings,
    /// The token was issued before its identity was removed from the room (a kick); ask the
    /// application for a new one.
    TokenRevoked,
    /// Too many requests from this address (HTTP 429); try again later.
    TooManyRequests,
    /// A code this side does not know (from a newer server); never sent.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RoomNotFound => "room_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RoomExists => "room_exists",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::BadSdp => "bad_sdp",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NoMediaNode => "no_media_node",
            ErrorCode::NoCapacity => "no_capacity",
            ErrorCode::MediaTimeout => "media_timeout",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::MediaClosed => "media_closed",
            ErrorCode::MediaLost => "media_lost",
            ErrorCode::Kicked => "kicked",
            ErrorCode::RoomClosed => "room_closed",
            ErrorCode::DuplicateIdentity => "duplicate_identity",
            ErrorCode::TrackNotFound => "track_not_found",
            ErrorCode::BadSettings => "bad_settings",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an access token allows (also the `grants` claim of the JWT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// May publish media (default true).
    #[serde(default = "yes")]
    pub can_publish: bool,
    /// May receive media (default true).
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    /// Receives every other participant's tracks without asking (default true); when false
    /// only the tracks it subscribes to.
    #[serde(default = "yes")]
    pub auto_subscribe: bool,
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Grants { can_publish: true, can_subscribe: true, auto_subscribe: true }
    }
}

/// How a participant is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// WebSocket signaling (web app, SDKs).
    Websocket,
    /// WHIP publisher.
    Whip,
    /// WHEP player.
    Whep,
}

/// Kind of a media track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// A published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// Track id (publisher mid).
    pub id: String,
    /// Audio or video.
    pub kind: TrackKind,
}

/// Public view of a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantView {
    /// Identity from the token.
    pub identity: String,
    /// Session id.
    pub session: String,
    /// Connection kind.
    pub via: Via,
    /// Published tracks.
    pub tracks: Vec<TrackInfo>,
    /// Unix time of joining (seconds).
    pub joined_at: u64,
}

/// One STUN or TURN server, as `RTCIceServer` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (absent for STUN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track_ref(session: &str, track: &str) -> TrackRef {
        TrackRef { session: session.into(), track: track.into() }
    }

    fn alice() -> ParticipantView {
        ParticipantView {
            identity: "alice".into(),
            session: "PA_1".into(),
            via: Via::Websocket,
            tracks: vec![TrackInfo { id: "0".into(), kind: TrackKind::Audio }, TrackInfo { id: "1".into(), kind: TrackKind::Video }],
            joined_at: 1_700_000_000,
        }
    }

    fn joined() -> ServerMsg {
        ServerMsg::Joined {
            room: "r".into(),
            identity: "bob".into(),
            session: "PA_2".into(),
            grants: Grants { can_publish: false, ..Grants::default() },
            participants: vec![alice()],
            ice_servers: vec![
                IceServer { urls: vec!["stun:h:3478".into()], username: None, credential: None },
                IceServer { urls: vec!["turn:h:3478?transport=udp".into()], username: Some("1:bob".into()), credential: Some("pw".into()) },
            ],
        }
    }

    #[test]
    fn client_messages_round_trip() {
        let all = [
            ClientMsg::join("t"),
            ClientMsg::Join { token: "t".into(), auto_subscribe: Some(false) },
            ClientMsg::Offer { sdp: "v=0".into() },
            ClientMsg::Answer { sdp: "v=0".into() },
            ClientMsg::Subscribe { tracks: vec![track_ref("PA_1", "1")], settings: None },
            ClientMsg::Subscribe {
                tracks: vec![track_ref("PA_1", "0"), track_ref("PA_1", "1")],
                settings: Some(TrackSettings { enabled: false, max_width: Some(640), max_height: Some(360), quality: Some(Quality::Medium), max_fps: Some(15) }),
            },
            ClientMsg::Unsubscribe { tracks: vec![track_ref("PA_1", "1")] },
            ClientMsg::Leave,
            ClientMsg::Ping,
        ];
        for m in all {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ClientMsg>(&json).unwrap(), m, "{json}");
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let all = [
            joined(),
            ServerMsg::Answer { sdp: "v=0".into() },
            ServerMsg::Offer { sdp: "v=0".into() },
            ServerMsg::ParticipantJoined { participant: alice() },
            ServerMsg::ParticipantLeft { identity: "alice".into(), session: "PA_1".into() },
            ServerMsg::TrackPublished { identity: "alice".into(), session: "PA_1".into(), track: "1".into(), kind: TrackKind::Video },
            ServerMsg::TrackPaused { session: "PA_1".into(), track: "1".into(), paused: true },
            ServerMsg::LayersWanted { track: "1".into(), rids: vec!["q".into(), "h".into()] },
            ServerMsg::error(ErrorCode::RoomFull, "room r is full"),
            ServerMsg::error(ErrorCode::TrackNotFound, "no such track"),
            ServerMsg::Pong,
        ];
        for m in all {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ServerMsg>(&json).unwrap(), m, "{json}");
        }
    }

    #[test]
    fn wire_form_matches_the_documented_json() {
        let s = |m: &ClientMsg| serde_json::to_string(m).unwrap();
        assert_eq!(s(&ClientMsg::join("t")), r#"{"type":"join","token":"t"}"#);
        assert_eq!(s(&ClientMsg::Join { token: "t".into(), auto_subscribe: Some(false) }), r#"{"type":"join","token":"t","auto_subscribe":false}"#);
        assert_eq!(
            s(&ClientMsg::Subscribe { tracks: vec![track_ref("PA_1", "1")], settings: None }),
            r#"{"type":"subscribe","tracks":[{"session":"PA_1","track":"1"}]}"#
        );
        assert_eq!(
            s(&ClientMsg::Subscribe {
                tracks: vec![track_ref("PA_1", "1")],
                settings: Some(TrackSettings { max_width: Some(640), quality: Some(Quality::Low), ..TrackSettings::default() })
            }),
            r#"{"type":"subscribe","tracks":[{"session":"PA_1","track":"1"}],"settings":{"enabled":true,"max_width":640,"quality":"low"}}"#
        );
        assert_eq!(s(&ClientMsg::Unsubscribe { tracks: vec![track_ref("PA_1", "0")] }), r#"{"type":"unsubscribe","tracks":[{"session":"PA_1","track":"0"}]}"#);
        assert_eq!(s(&ClientMsg::Offer { sdp: "v=0".into() }), r#"{"type":"offer","sdp":"v=0"}"#);
        assert_eq!(s(&ClientMsg::Leave), r#"{"type":"leave"}"#);
        assert_eq!(s(&ClientMsg::Ping), r#"{"type":"ping"}"#);
        let s = |m: &ServerMsg| serde_json::to_string(m).unwrap();
        assert_eq!(s(&ServerMsg::Pong), r#"{"type":"pong"}"#);
        assert_eq!(
            s(&ServerMsg::TrackPaused { session: "PA_1".into(), track: "1".into(), paused: true }),
            r#"{"type":"track_paused","session":"PA_1","track":"1","paused":true}"#
        );
        assert_eq!(s(&ServerMsg::LayersWanted { track: "1".into(), rids: vec!["q".into()] }), r#"{"type":"layers_wanted","track":"1","rids":["q"]}"#);
        assert_eq!(s(&ServerMsg::LayersWanted { track: "1".into(), rids: vec![] }), r#"{"type":"layers_wanted","track":"1","rids":[]}"#);
        assert_eq!(
            s(&ServerMsg::error(ErrorCode::TrackNotFound, "track PA_9/1 not found")),
            r#"{"type":"error","code":"track_not_found","message":"track PA_9/1 not found"}"#
        );
        assert_eq!(s(&ServerMsg::error(ErrorCode::BadRequest, "malformed")), r#"{"type":"error","code":"bad_request","message":"malformed"}"#);
        assert_eq!(
            s(&ServerMsg::ParticipantLeft { identity: "alice".into(), session: "PA_1".into() }),
            r#"{"type":"participant_left","identity":"alice","session":"PA_1"}"#
        );
        assert_eq!(
            s(&ServerMsg::TrackPublished { identity: "alice".into(), session: "PA_1".into(), track: "1".into(), kind: TrackKind::Video }),
            r#"{"type":"track_published","identity":"alice","session":"PA_1","track":"1","kind":"video"}"#
        );
        assert_eq!(
            s(&ServerMsg::ParticipantJoined { participant: alice() }),
            r#"{"type":"participant_joined","participant":{"identity":"alice","session":"PA_1","via":"websocket","tracks":[{"id":"0","kind":"audio"},{"id":"1","kind":"video"}],"joined_at":1700000000}}"#
        );
        assert_eq!(
            s(&joined()),
            concat!(
                r#"{"type":"joined","room":"r","identity":"bob","session":"PA_2","grants":{"can_publish":false,"can_subscribe":true,"auto_subscribe":true},"#,
                r#""participants":[{"identity":"alice","session":"PA_1","via":"websocket","tracks":[{"id":"0","kind":"audio"},{"id":"1","kind":"video"}],"joined_at":1700000000}],"#,
                r#""ice_servers":[{"urls":["stun:h:3478"]},{"urls":["turn:h:3478?transport=udp"],"username":"1:bob","credential":"pw"}]}"#
            )
        );
    }

    #[test]
    fn documented_client_json_parses() {
        let p = |s: &str| serde_json::from_str::<ClientMsg>(s).unwrap();
        assert_eq!(p(r#"{"type":"join","token":"t"}"#), ClientMsg::join("t"));
        assert_eq!(p(r#"{"type":"join","token":"t","auto_subscribe":true}"#), ClientMsg::Join { token: "t".into(), auto_subscribe: Some(true) });
        assert_eq!(p(r#"{"type":"answer","sdp":"v=0"}"#), ClientMsg::Answer { sdp: "v=0".into() });
        assert_eq!(p(r#"{"type":"leave"}"#), ClientMsg::Leave);
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"join"}"#).is_err());
        assert!(serde_json::from_str::<ClientMsg>("{not json").is_err());
    }

    #[test]
    fn an_unknown_error_code_parses_as_unknown() {
        let m: ServerMsg = serde_json::from_str(r#"{"type":"error","code":"brand_new_code","message":"later"}"#).unwrap();
        assert_eq!(m, ServerMsg::error(ErrorCode::Unknown, "later"));
    }

    #[test]
    fn error_code_text_is_its_wire_form() {
        let all = [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::TokenExpired,
            ErrorCode::Forbidden,
            ErrorCode::RoomNotFound,
            ErrorCode::NotFound,
            ErrorCode::RoomExists,
            ErrorCode::RoomFull,
            ErrorCode::BadSdp,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::NoMediaNode,
            ErrorCode::NoCapacity,
            ErrorCode::MediaTimeout,
            ErrorCode::MethodNotAllowed,
            ErrorCode::MediaClosed,
            ErrorCode::MediaLost,
            ErrorCode::Kicked,
            ErrorCode::RoomClosed,
            ErrorCode::DuplicateIdentity,
            ErrorCode::TrackNotFound,
            ErrorCode::BadSettings,
            ErrorCode::TokenRevoked,
            ErrorCode::TooManyRequests,
            ErrorCode::Unknown,
        ];
        for c in all {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<ErrorCode>(&format!("\"{}\"", c.as_str())).unwrap(), c);
        }
    }

    #[test]
    fn grants_default_to_true_and_ice_servers_skip_absent_credentials() {
        assert_eq!(serde_json::from_str::<Grants>("{}").unwrap(), Grants::default());
        assert_eq!(serde_json::from_str::<Grants>(r#"{"can_publish":false}"#).unwrap(), Grants { can_publish: false, can_subscribe: true, auto_subscribe: true });
        assert_eq!(serde_json::from_str::<Grants>(r#"{"auto_subscribe":false}"#).unwrap(), Grants { auto_subscribe: false, ..Grants::default() });
        let stun: IceServer = serde_json::from_str(r#"{"urls":["stun:h:3478"]}"#).unwrap();
        assert_eq!((stun.username, stun.credential), (None, None));
    }

    #[test]
    fn documented_subscription_json_parses() {
        let p = |s: &str| serde_json::from_str::<ClientMsg>(s);
        assert_eq!(
            p(r#"{"type":"subscribe","tracks":[{"session":"PA_1","track":"1"}],"settings":{"max_height":180,"quality":"high"}}"#).unwrap(),
            ClientMsg::Subscribe {
                tracks: vec![track_ref("PA_1", "1")],
                settings: Some(TrackSettings { enabled: true, max_width: None, max_height: Some(180), quality: Some(Quality::High), max_fps: None })
            }
        );
        assert_eq!(
            p(r#"{"type":"subscribe","tracks":[{"session":"PA_1","track":"1"}],"settings":{"enabled":false}}"#).unwrap(),
            ClientMsg::Subscribe { tracks: vec![track_ref("PA_1", "1")], settings: Some(TrackSettings { enabled: false, ..TrackSettings::default() }) }
        );
        assert_eq!(p(r#"{"type":"unsubscribe","tracks":[]}"#).unwrap(), ClientMsg::Unsubscribe { tracks: vec![] });
        // An unknown quality, a negative size or a track without its session does not parse.
        for bad in [
            r#"{"type":"subscribe","tracks":[{"session":"PA_1","track":"1"}],"settings":{"quality":"ultra"}}"#,
            r#"{"type":"subscribe","tracks":[{"session":"PA_1","track":"1"}],"settings":{"max_width":-1}}"#,
            r#"{"type":"subscribe","tracks":[{"track":"1"}]}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"unsubscribe","tracks":"PA_1"}"#,
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quality_names_parse_in_any_case_and_nothing_else() {
        for q in [Quality::Low, Quality::Medium, Quality::High] {
            assert_eq!(q.as_str().parse::<Quality>(), Ok(q));
            assert_eq!(q.as_str().to_ascii_uppercase().parse::<Quality>(), Ok(q));
            assert_eq!(serde_json::to_string(&q).unwrap(), format!("\"{}\"", q.as_str()));
        }
        assert!(Quality::Low < Quality::Medium && Quality::Medium < Quality::High);
        assert_eq!("ultra".parse::<Quality>(), Err(UnknownQuality("ultra".into())));
        assert!("".parse::<Quality>().is_err());
    }
}
