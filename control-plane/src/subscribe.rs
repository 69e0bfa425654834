//! Selective subscription (adaptive stream): a WebSocket client's `subscribe` and
//! `unsubscribe`, checked against who publishes what in its room, then relayed to the node
//! hosting it as [`Command::Subscribe`] and [`Command::Unsubscribe`].

use link::Command;
use signaling::{Quality, TrackRef, TrackSettings, MAX_DIMENSION, MAX_TRACKS_PER_MESSAGE};

use crate::error::ApiError;
use crate::state::{node_of, App};

/// The control link's form of a quality.
pub fn link_quality(q: Quality) -> link::Quality {
    match q {
        Quality::Low => link::Quality::Low,
        Quality::Medium => link::Quality::Medium,
        Quality::High => link::Quality::High,
    }
}

/// Checks that the sizes in `s` are within 1..=[`MAX_DIMENSION`] and converts `s` to the
/// control link's form.
pub fn link_settings(s: &TrackSettings) -> Result<link::TrackSettings, ApiError> {
    for (name, value) in [("max_width", s.max_width), ("max_height", s.max_height)] {
        if let Some(v) = value {
            if v == 0 || v > MAX_DIMENSION {
                return Err(ApiError::BadSettings(format!("{name} must be between 1 and {MAX_DIMENSION}, not {v}")));
            }
        }
    }
    Ok(link::TrackSettings { enabled: s.enabled, max_width: s.max_width, max_height: s.max_height, quality: s.quality.map(link_quality) })
}

/// At most 64 characters of client-supplied text, for an error message.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

impl App {
    /// Subscribes `session` to `tracks` (or changes their settings), all or none: every
    /// track must be published by another participant of its room.
    pub fn subscribe(&self, session: &str, tracks: &[TrackRef], settings: Option<TrackSettings>) -> Result<(), ApiError> {
        let settings = link_settings(&settings.unwrap_or_default())?;
        self.relay_subscription(session, tracks, |publisher, track| Command::Subscribe { session: session.to_string(), publisher, track, settings })
    }

    /// Unsubscribes `session` from `tracks`, all or none, checked as [`App::subscribe`] checks.
    pub fn unsubscribe(&self, session: &str, tracks: &[TrackRef]) -> Result<(), ApiError> {
        self.relay_subscription(session, tracks, |publisher, track| Command::Unsubscribe { session: session.to_string(), publisher, track })
    }

    /// Checks `session` may (un)subscribe to each of `tracks`, then sends the node one
    /// command per track made by `command(publisher, track)`; nothing is sent on an error.
    fn relay_subscription(&self, session: &str, tracks: &[TrackRef], command: impl Fn(String, String) -> Command) -> Result<(), ApiError> {
        if tracks.is_empty() || tracks.len() > MAX_TRACKS_PER_MESSAGE {
            return Err(ApiError::BadRequest(format!("tracks must name 1 to {MAX_TRACKS_PER_MESSAGE} tracks, not {}", tracks.len())));
        }
        let st = self.lock();
        let not_found = || ApiError::NotFound(format!("session {session}"));
        let room = st.sessions.get(session).and_then(|r| st.rooms.get(r)).ok_or_else(not_found)?;
        let me = room.participants.get(session).ok_or_else(not_found)?;
        if !me.grants.can_subscribe {
            return Err(ApiError::Forbidden("token lacks the can_subscribe grant".into()));
        }
        if !me.media {
            return Err(ApiError::BadRequest("send your offer before subscribing".into()));
        }
        let mut commands = Vec::with_capacity(tracks.len());
        for t in tracks {
            if t.session == session {
                return Err(ApiError::BadRequest(format!("track {} is your own; you cannot subscribe to it", short(&t.track))));
            }
            let published = room.participants.get(&t.session).is_some_and(|p| p.tracks.iter().any(|i| i.id == t.track));
            if !published {
                return Err(ApiError::TrackNotFound(format!("{}/{}", short(&t.session), short(&t.track))));
            }
            commands.push(command(t.session.clone(), t.track.clone()));
        }
        let node = node_of(&st, session).ok_or(ApiError::NoMediaNode)?;
        for c in commands {
            node.tx.send(c).map_err(|_| ApiError::NoMediaNode)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_between_1_and_16384() {
        let s = |max_width, max_height| TrackSettings { max_width, max_height, ..TrackSettings::default() };
        assert_eq!(link_settings(&TrackSettings::default()).ok(), Some(link::TrackSettings::default()));
        let ok = link_settings(&TrackSettings { enabled: false, max_width: Some(1), max_height: Some(16384), quality: Some(Quality::Medium) });
        assert_eq!(ok.ok(), Some(link::TrackSettings { enabled: false, max_width: Some(1), max_height: Some(16384), quality: Some(link::Quality::Medium) }));
        for bad in [s(Some(0), None), s(None, Some(0)), s(Some(16385), None), s(Some(640), Some(u32::MAX))] {
            assert!(matches!(link_settings(&bad), Err(ApiError::BadSettings(_))), "{bad:?}");
        }
    }

    #[test]
    fn qualities_keep_their_names_on_the_link() {
        for q in [Quality::Low, Quality::Medium, Quality::High] {
            let link = serde_json::to_string(&link_quality(q)).unwrap_or_default();
            assert_eq!(link, serde_json::to_string(&q).unwrap_or_default());
        }
    }
}
