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
    /// Leave the room; the server closes the socket.
    Leave,
    /// Keep-alive; the server replies `pong`.
    Ping,
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
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Grants { can_publish: true, can_subscribe: true }
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
            grants: Grants { can_publish: false, can_subscribe: true },
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
            ClientMsg::Join { token: "t".into() },
            ClientMsg::Offer { sdp: "v=0".into() },
            ClientMsg::Answer { sdp: "v=0".into() },
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
            ServerMsg::error(ErrorCode::RoomFull, "room r is full"),
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
        assert_eq!(s(&ClientMsg::Join { token: "t".into() }), r#"{"type":"join","token":"t"}"#);
        assert_eq!(s(&ClientMsg::Offer { sdp: "v=0".into() }), r#"{"type":"offer","sdp":"v=0"}"#);
        assert_eq!(s(&ClientMsg::Leave), r#"{"type":"leave"}"#);
        assert_eq!(s(&ClientMsg::Ping), r#"{"type":"ping"}"#);
        let s = |m: &ServerMsg| serde_json::to_string(m).unwrap();
        assert_eq!(s(&ServerMsg::Pong), r#"{"type":"pong"}"#);
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
                r#"{"type":"joined","room":"r","identity":"bob","session":"PA_2","grants":{"can_publish":false,"can_subscribe":true},"#,
                r#""participants":[{"identity":"alice","session":"PA_1","via":"websocket","tracks":[{"id":"0","kind":"audio"},{"id":"1","kind":"video"}],"joined_at":1700000000}],"#,
                r#""ice_servers":[{"urls":["stun:h:3478"]},{"urls":["turn:h:3478?transport=udp"],"username":"1:bob","credential":"pw"}]}"#
            )
        );
    }

    #[test]
    fn documented_client_json_parses() {
        let p = |s: &str| serde_json::from_str::<ClientMsg>(s).unwrap();
        assert_eq!(p(r#"{"type":"join","token":"t"}"#), ClientMsg::Join { token: "t".into() });
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
        assert_eq!(serde_json::from_str::<Grants>(r#"{"can_publish":false}"#).unwrap(), Grants { can_publish: false, can_subscribe: true });
        let stun: IceServer = serde_json::from_str(r#"{"urls":["stun:h:3478"]}"#).unwrap();
        assert_eq!((stun.username, stun.credential), (None, None));
    }
}
