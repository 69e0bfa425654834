//! What a load test does: a scenario from flags or a TOML file, validated once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::view::ViewSize;

/// A scenario that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The file is not a valid scenario.
    #[error("bad scenario {0}: {1}")]
    Parse(PathBuf, String),
    /// A value is out of range or inconsistent.
    #[error("bad scenario: {0}")]
    Invalid(String),
}

/// Which server the peers talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Our control plane: REST token, then WebSocket signaling.
    Ours,
    /// Any WHIP/WHEP server: publish by WHIP, subscribe by WHEP.
    Whip,
    /// Janus VideoRoom over its HTTP API.
    Janus,
    /// A TURN server: allocations relaying between synthetic peers.
    Turn,
}

/// Video codec the publishers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// VP8.
    Vp8,
    /// H.264 (packetization mode 1).
    H264,
    /// VP9.
    Vp9,
}

/// Transport from the load tester to the TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TurnTransport {
    /// UDP.
    Udp,
    /// TCP (RFC 4571-style stream framing of STUN and ChannelData).
    Tcp,
}

/// The whole scenario. Every field has a default; a TOML file and then flags override them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Which kind of server.
    pub target: TargetKind,
    /// Control plane URL (`ours`; also used to mint WHIP/WHEP tokens when an API key is given).
    pub url: String,
    /// WHIP endpoint; `{room}` is replaced.
    pub whip_url: String,
    /// WHEP endpoint; `{room}` and `{publisher}` are replaced.
    pub whep_url: String,
    /// Static bearer token for WHIP/WHEP when no API key is given.
    pub bearer: Option<String>,
    /// Janus HTTP API base, e.g. `http://10.77.0.2:8088/janus`.
    pub janus_url: String,
    /// Rooms.
    pub rooms: usize,
    /// Video publishers per room.
    pub video_publishers: usize,
    /// Audio-only publishers per room.
    pub audio_publishers: usize,
    /// Receive-only participants per room.
    pub subscribers: usize,
    /// Seconds of sending.
    pub duration: f64,
    /// Joins per second (all rooms).
    pub join_rate: f64,
    /// Video bitrate per publisher, kbit/s.
    pub video_kbps: u64,
    /// Video frames per second; each frame is split into packets of at most `packet_size`.
    pub fps: u32,
    /// Largest RTP payload in bytes.
    pub packet_size: usize,
    /// Audio bitrate per audio publisher, kbit/s (20 ms packets).
    pub audio_kbps: u64,
    /// Video codec.
    pub codec: VideoCodec,
    /// Send three simulcast layers (rids l, m, h; VP8 or H.264; not with the turn target).
    pub simulcast: bool,
    /// Receive-side bandwidth cap of subscribers, kbit/s (0: none).
    pub subscriber_kbps: u64,
    /// How many subscribers of each room the cap applies to (default: all).
    pub capped_subscribers: Option<usize>,
    /// Subscribers view at most this many video tracks (all audio still plays; ours and whip).
    pub view_tracks: Option<usize>,
    /// Subscribers render video at most this size and ask for it (ours).
    pub view_size: Option<ViewSize>,
    /// Worker threads, one per core by default.
    pub threads: usize,
    /// TURN settings (`target = "turn"`).
    pub turn: TurnScenario,
}

/// TURN load: allocations each relaying between the tester and one synthetic UDP peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnScenario {
    /// TURN server address, `host:port`.
    pub server: String,
    /// Transport to the TURN server.
    pub transport: TurnTransport,
    /// Allocations.
    pub allocations: usize,
    /// Packets per second each allocation sends towards its peer (the peer echoes each one).
    pub rate_pps: f64,
    /// Payload bytes per packet.
    pub packet_size: usize,
    /// Long-term credentials `user:password`.
    pub user: Option<String>,
    /// coturn REST secret (`--static-auth-secret`); usernames are `expiry:loadtest`.
    pub secret: Option<String>,
    /// Realm to expect (taken from the server's 401 when empty).
    pub realm: String,
}

impl Default for TurnScenario {
    fn default() -> Self {
        Self {
            server: "127.0.0.1:3478".into(),
            transport: TurnTransport::Udp,
            allocations: 10,
            rate_pps: 50.0,
            packet_size: 200,
            user: None,
            secret: None,
            realm: String::new(),
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            target: TargetKind::Ours,
            url: "https://127.0.0.1:8443".into(),
            whip_url: String::new(),
            whep_url: String::new(),
            bearer: None,
            janus_url: "http://127.0.0.1:8088/janus".into(),
            rooms: 1,
            video_publishers: 2,
            audio_publishers: 0,
            subscribers: 2,
            duration: 10.0,
            join_rate: 20.0,
            video_kbps: 500,
            fps: 30,
            packet_size: 1000,
            audio_kbps: 32,
            codec: VideoCodec::Vp8,
            simulcast: false,
            subscriber_kbps: 0,
            capped_subscribers: None,
            view_tracks: None,
            view_size: None,
            threads: 0,
            turn: TurnScenario::default(),
        }
    }
}

/// Bytes every synthetic payload starts with: a codec prefix, then sequence and send time.
pub const PAYLOAD_HEADER: usize = crate::stats::PREFIX + 16;

impl Scenario {
    /// Reads a TOML scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Read(path.into(), e))?;
        toml::from_str(&text).map_err(|e| ScenarioError::Parse(path.into(), e.message().to_string()))
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| Err(ScenarioError::Invalid(m));
        if !(PAYLOAD_HEADER..=1200).contains(&self.packet_size) {
            return bad(format!("packet_size must be between {PAYLOAD_HEADER} and 1200"));
        }
        if !(self.duration > 0.0 && self.duration <= 86_400.0) {
            return bad("duration must be between 0 and 86400 seconds".into());
        }
        if self.join_rate.is_nan() || self.join_rate <= 0.0 {
            return bad("join_rate must be positive".into());
        }
        if self.fps == 0 || self.fps > 120 {
            return bad("fps must be between 1 and 120".into());
        }
        if self.target == TargetKind::Turn {
            let t = &self.turn;
            if t.allocations == 0 || t.rate_pps.is_nan() || t.rate_pps <= 0.0 {
                return bad("turn.allocations and turn.rate_pps must be positive".into());
            }
            if !(PAYLOAD_HEADER..=1400).contains(&t.packet_size) {
                return bad(format!("turn.packet_size must be between {PAYLOAD_HEADER} and 1400"));
            }
            if t.user.is_none() == t.secret.is_none() {
                return bad("TURN needs exactly one of turn.user (user:password) and turn.secret".into());
            }
            if t.user.as_deref().is_some_and(|u| !u.contains(':')) {
                return bad("turn.user must be user:password".into());
            }
            return Ok(());
        }
        if self.rooms == 0 || self.video_publishers + self.audio_publishers == 0 {
            return bad("need at least one room and one publisher".into());
        }
        if self.simulcast && self.codec == VideoCodec::Vp9 {
            return bad("simulcast needs codec vp8 or h264".into());
        }
        if self.capped_subscribers.is_some() && self.subscriber_kbps == 0 {
            return bad("capped_subscribers needs subscriber_kbps".into());
        }
        if self.capped_subscribers.is_some_and(|m| m > self.subscribers) {
            return bad(format!("capped_subscribers is more than the {} subscribers per room", self.subscribers));
        }
        if self.view_tracks.is_some() && self.target == TargetKind::Janus {
            return bad("view_tracks works with the ours and whip targets".into());
        }
        if self.view_size.is_some() && self.target != TargetKind::Ours {
            return bad("view_size needs the ours target (it is asked for by signaling)".into());
        }
        match self.target {
            TargetKind::Whip if self.whip_url.is_empty() || self.whep_url.is_empty() => bad("the whip target needs whip_url and whep_url".into()),
            _ => Ok(()),
        }
    }

    /// Publishers per room (video and audio).
    pub fn publishers(&self) -> usize {
        self.video_publishers + self.audio_publishers
    }

    /// Participants per room.
    pub fn participants(&self) -> usize {
        self.publishers() + self.subscribers
    }

    /// Streams every room should deliver: each publisher receives every other publisher's
    /// track; each subscriber every audio track and every video track, or `view_tracks` of them.
    pub fn expected_streams(&self) -> usize {
        let p = self.publishers();
        let video = self.view_tracks.map_or(self.video_publishers, |n| n.min(self.video_publishers));
        self.rooms * (p * p.saturating_sub(1) + self.subscribers * (video + self.audio_publishers))
    }

    /// The receive cap of subscriber `index` (0-based, within its room), kbit/s.
    pub fn subscriber_cap(&self, index: usize) -> Option<u64> {
        (self.subscriber_kbps > 0 && index < self.capped_subscribers.unwrap_or(self.subscribers)).then_some(self.subscriber_kbps)
    }

    /// Video packets per second per publisher (whole frames, each split into equal packets).
    pub fn video_frame(&self) -> (u32, usize) {
        let frame_bytes = (self.video_kbps as usize * 1000 / 8 / self.fps as usize).max(PAYLOAD_HEADER);
        let packets = frame_bytes.div_ceil(self.packet_size).max(1);
        (packets as u32, (frame_bytes / packets).max(PAYLOAD_HEADER))
    }

    /// Audio payload size for 20 ms packets.
    pub fn audio_packet(&self) -> usize {
        (self.audio_kbps as usize * 1000 / 8 / 50).max(PAYLOAD_HEADER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_toml_overrides() {
        Scenario::default().validate().unwrap();
        let s: Scenario = toml::from_str("rooms = 3\nvideo_publishers = 1\nsubscribers = 4\n[turn]\nallocations = 2").unwrap();
        assert_eq!(s.rooms, 3);
        assert_eq!(s.turn.allocations, 2);
        assert_eq!(s.expected_streams(), 3 * 4);
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(toml::from_str::<Scenario>("romos = 3").is_err());
        assert!(toml::from_str::<Scenario>("rooms = -1").is_err());
        let s = Scenario { packet_size: 5, ..Default::default() };
        assert!(s.validate().is_err());
        let s = Scenario { target: TargetKind::Turn, ..Default::default() };
        assert!(s.validate().unwrap_err().to_string().contains("turn.user"));
    }

    #[test]
    fn simulcast_views_and_caps() {
        // Simulcast is for every media target now, VP8 only.
        for target in [TargetKind::Ours, TargetKind::Janus] {
            Scenario { target, simulcast: true, ..Default::default() }.validate().unwrap();
        }
        Scenario { simulcast: true, codec: VideoCodec::H264, ..Default::default() }.validate().unwrap();
        assert!(Scenario { simulcast: true, codec: VideoCodec::Vp9, ..Default::default() }.validate().is_err());
        let s: Scenario = toml::from_str("video_publishers = 3\naudio_publishers = 1\nsubscribers = 4\nview_tracks = 2\nview_size = \"640x360\"\nsubscriber_kbps = 300\ncapped_subscribers = 1").unwrap();
        s.validate().unwrap();
        assert_eq!(s.view_size.map(|v| (v.width, v.height)), Some((640, 360)));
        // 4 publishers see 3 others each; 4 subscribers see 2 of 3 videos and the audio.
        assert_eq!(s.expected_streams(), 4 * 3 + 4 * 3);
        assert_eq!((s.subscriber_cap(0), s.subscriber_cap(1)), (Some(300), None));
        let all = Scenario { subscriber_kbps: 300, ..Default::default() };
        assert_eq!((all.subscriber_cap(0), all.subscriber_cap(1)), (Some(300), Some(300)));
        assert_eq!(Scenario::default().subscriber_cap(0), None);
        assert!(toml::from_str::<Scenario>("view_size = \"big\"").is_err());
        assert!(Scenario { capped_subscribers: Some(1), ..Default::default() }.validate().is_err());
        assert!(Scenario { subscriber_kbps: 1, capped_subscribers: Some(9), ..Default::default() }.validate().is_err());
        assert!(Scenario { target: TargetKind::Janus, view_tracks: Some(1), ..Default::default() }.validate().is_err());
        let whip = Scenario { target: TargetKind::Whip, whip_url: "u".into(), whep_url: "u".into(), ..Default::default() };
        assert!(Scenario { view_size: Some(ViewSize { width: 1, height: 1 }), ..whip.clone() }.validate().is_err());
        Scenario { view_tracks: Some(1), simulcast: true, ..whip }.validate().unwrap();
    }

    #[test]
    fn frames_split_into_packets() {
        let s = Scenario { video_kbps: 1200, fps: 30, packet_size: 1000, ..Default::default() };
        assert_eq!(s.video_frame(), (5, 1000));
        assert_eq!(Scenario { audio_kbps: 32, ..Default::default() }.audio_packet(), 80);
    }
}
