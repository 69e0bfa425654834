//! Selective subscription on our signaling: a subscriber that views at most N video tracks
//! (all audio still plays), each rendered at most W x H. It joins with auto-subscribe off
//! when it limits the tracks and sends `subscribe` as tracks appear; a track freed by a
//! leaving publisher goes to one that was waiting.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use signaling::{ClientMsg, ServerMsg, TrackKind, TrackRef, TrackSettings, MAX_DIMENSION};

/// A size a subscriber renders video at, `WxH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ViewSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A view size that is not `WxH` with both between 1 and 16384.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad view size {0:?}: expected WxH, e.g. 640x360, each between 1 and {MAX_DIMENSION}")]
pub struct BadViewSize(String);

impl FromStr for ViewSize {
    type Err = BadViewSize;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadViewSize(s.chars().take(32).collect());
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let (width, height): (u32, u32) = (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?);
        if !(1..=MAX_DIMENSION).contains(&width) || !(1..=MAX_DIMENSION).contains(&height) {
            return Err(bad());
        }
        Ok(Self { width, height })
    }
}

impl TryFrom<String> for ViewSize {
    type Error = BadViewSize;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ViewSize> for String {
    fn from(v: ViewSize) -> Self {
        v.to_string()
    }
}

impl fmt::Display for ViewSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// One subscriber's choice of tracks.
#[derive(Debug, Clone)]
pub struct View {
    /// Most video tracks viewed at once; `None`: all (auto-subscribe stays on).
    max_video: Option<usize>,
    /// Settings of every video subscription.
    settings: Option<TrackSettings>,
    /// This client's own session (its own tracks are never subscribed).
    own_session: String,
    /// Video tracks subscribed.
    viewing: Vec<TrackRef>,
    /// Video tracks over the limit, in order of appearance.
    waiting: Vec<TrackRef>,
    /// Every track seen (track_published can repeat what joined listed).
    known: HashSet<TrackRef>,
}

impl View {
    /// A view of at most `max_video` video tracks at most `size` each; `None` when neither is set.
    pub fn new(max_video: Option<usize>, size: Option<ViewSize>) -> Option<Self> {
        if max_video.is_none() && size.is_none() {
            return None;
        }
        let settings = size.map(|s| TrackSettings { max_width: Some(s.width), max_height: Some(s.height), ..TrackSettings::default() });
        Some(Self { max_video, settings, own_session: String::new(), viewing: Vec::new(), waiting: Vec::new(), known: HashSet::new() })
    }

    /// The join's `auto_subscribe`: off when the tracks are chosen here.
    pub fn auto_subscribe(&self) -> Option<bool> {
        self.max_video.map(|_| false)
    }

    /// Video tracks subscribed now.
    #[cfg(test)]
    pub fn viewing(&self) -> usize {
        self.viewing.len()
    }

    /// The messages to send in reply to a server message: `subscribe` for tracks that appear
    /// (in `joined` or `track_published`) and for waiting tracks a leaving publisher makes room for.
    pub fn on_message(&mut self, msg: &ServerMsg) -> Vec<ClientMsg> {
        let mut out = Vec::new();
        match msg {
            ServerMsg::Joined { session, participants, .. } => {
                self.own_session.clone_from(session);
                for p in participants {
                    for t in &p.tracks {
                        out.extend(self.published(&p.session, &t.id, t.kind));
                    }
                }
            }
            ServerMsg::TrackPublished { session, track, kind, .. } => out.extend(self.published(session, track, *kind)),
            ServerMsg::ParticipantLeft { session, .. } => out.extend(self.left(session)),
            _ => {}
        }
        out
    }

    fn published(&mut self, session: &str, track: &str, kind: TrackKind) -> Option<ClientMsg> {
        let t = TrackRef { session: session.into(), track: track.into() };
        if session == self.own_session || !self.known.insert(t.clone()) {
            return None;
        }
        match kind {
            // With auto-subscribe on, audio comes anyway.
            TrackKind::Audio => self.max_video.map(|_| ClientMsg::Subscribe { tracks: vec![t], settings: None }),
            TrackKind::Video if self.max_video.is_some_and(|m| self.viewing.len() >= m) => {
                self.waiting.push(t);
                None
            }
            TrackKind::Video => {
                self.viewing.push(t.clone());
                Some(ClientMsg::Subscribe { tracks: vec![t], settings: self.settings })
            }
        }
    }

    fn left(&mut self, session: &str) -> Vec<ClientMsg> {
        self.known.retain(|t| t.session != session);
        self.viewing.retain(|t| t.session != session);
        self.waiting.retain(|t| t.session != session);
        let mut out = Vec::new();
        while self.max_video.is_some_and(|m| self.viewing.len() < m) && !self.waiting.is_empty() {
            let t = self.waiting.remove(0);
            self.viewing.push(t.clone());
            out.push(ClientMsg::Subscribe { tracks: vec![t], settings: self.settings });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signaling::{Grants, ParticipantView, TrackInfo, Via};

    fn published(session: &str, track: &str, kind: TrackKind) -> ServerMsg {
        ServerMsg::TrackPublished { identity: format!("id-{session}"), session: session.into(), track: track.into(), kind }
    }

    fn subscribed(msgs: &[ClientMsg]) -> Vec<(String, String, Option<TrackSettings>)> {
        msgs.iter()
            .filter_map(|m| match m {
                ClientMsg::Subscribe { tracks, settings } => Some(tracks.iter().map(|t| (t.session.clone(), t.track.clone(), *settings)).collect::<Vec<_>>()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("640x360".parse(), Ok(ViewSize { width: 640, height: 360 }));
        assert_eq!(" 1280X720 ".parse::<ViewSize>().map(|v| v.to_string()), Ok("1280x720".to_string()));
        for bad in ["640", "0x360", "640x", "x", "20000x10", "axb", ""] {
            assert!(bad.parse::<ViewSize>().is_err(), "{bad}");
        }
        assert!(View::new(None, None).is_none());
    }

    #[test]
    fn at_most_n_video_tracks_all_audio_and_freed_slots_refilled() {
        let size = ViewSize { width: 640, height: 360 };
        let mut v = View::new(Some(1), Some(size)).expect("a view");
        assert_eq!(v.auto_subscribe(), Some(false));
        let joined = ServerMsg::Joined {
            room: "r".into(),
            identity: "me".into(),
            session: "ME".into(),
            grants: Grants::default(),
            participants: vec![ParticipantView {
                identity: "a".into(),
                session: "A".into(),
                via: Via::Websocket,
                tracks: vec![TrackInfo { id: "0".into(), kind: TrackKind::Video }, TrackInfo { id: "1".into(), kind: TrackKind::Audio }],
                joined_at: 0,
            }],
            ice_servers: vec![],
        };
        let want = Some(TrackSettings { max_width: Some(640), max_height: Some(360), ..TrackSettings::default() });
        assert_eq!(subscribed(&v.on_message(&joined)), vec![("A".into(), "0".into(), want), ("A".into(), "1".into(), None)]);
        // A repeat of a known track, our own track, and a second video over the limit: nothing.
        assert!(v.on_message(&published("A", "0", TrackKind::Video)).is_empty());
        assert!(v.on_message(&published("ME", "0", TrackKind::Video)).is_empty());
        assert!(v.on_message(&published("B", "0", TrackKind::Video)).is_empty());
        assert_eq!(subscribed(&v.on_message(&published("B", "1", TrackKind::Audio))), vec![("B".into(), "1".into(), None)]);
        assert_eq!(v.viewing(), 1);
        // A leaves: B's waiting video takes the slot.
        let left = ServerMsg::ParticipantLeft { identity: "a".into(), session: "A".into() };
        assert_eq!(subscribed(&v.on_message(&left)), vec![("B".into(), "0".into(), want)]);
        assert_eq!(v.viewing(), 1);
    }

    #[test]
    fn size_only_keeps_auto_subscribe_and_sets_video_sizes() {
        let mut v = View::new(None, Some(ViewSize { width: 320, height: 180 })).expect("a view");
        assert_eq!(v.auto_subscribe(), None);
        assert!(v.on_message(&published("A", "1", TrackKind::Audio)).is_empty());
        let got = subscribed(&v.on_message(&published("A", "0", TrackKind::Video)));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].2.and_then(|s| s.max_height), Some(180));
        // No limit: every video track.
        assert_eq!(subscribed(&v.on_message(&published("B", "0", TrackKind::Video))).len(), 1);
        assert_eq!(v.viewing(), 2);
    }
}
