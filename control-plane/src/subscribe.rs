//! Selective subscription (adaptive stream): a WebSocket client's `subscribe` and
//! `unsubscribe`, checked against who publishes what in its room, then relayed to the node
//! hosting it as [`Command::Subscribe`] and [`Command::Unsubscribe`].

use link::Command;
use signaling::{TrackRef, TrackSettings, MAX_DIMENSION, MAX_FRAME_RATE, MAX_TRACKS_PER_MESSAGE};

use crate::error::ApiError;
use crate::state::{node_of, App};

/// Checks that the sizes in `s` are within 1..=[`MAX_DIMENSION`] and its frame rate within
/// 1..=[`MAX_FRAME_RATE`].
pub fn checked(s: TrackSettings) -> Result<TrackSettings, ApiError> {
    for (name, value, max) in [("max_width", s.max_width, MAX_DIMENSION), ("max_height", s.max_height, MAX_DIMENSION), ("max_fps", s.max_fps, MAX_FRAME_RATE)] {
        if let Some(v) = value {
            if v == 0 || v > max {
                return Err(ApiError::BadSettings(format!("{name} must be between 1 and {max}, not {v}")));
            }
        }
    }
    Ok(s)
}

/// At most 64 characters of client-supplied text, for an error message.
fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

impl App {
    /// Subscribes `session` to `tracks` (or changes their settings), all or none: every
    /// track must be published by another participant of its room.
    pub fn subscribe(&self, session: &str, tracks: &[TrackRef], settings: Option<TrackSettings>) -> Result<(), ApiError> {
        let settings = checked(settings.unwrap_or_default())?;
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
    use signaling::Quality;

    #[test]
    fn sizes_must_be_between_1_and_16384_and_frame_rates_between_1_and_240() {
        let s = |max_width, max_height| TrackSettings { max_width, max_height, ..TrackSettings::default() };
        let fps = |max_fps| TrackSettings { max_fps, ..TrackSettings::default() };
        assert_eq!(checked(TrackSettings::default()).ok(), Some(TrackSettings::default()));
        let good = TrackSettings { enabled: false, max_width: Some(1), max_height: Some(16384), quality: Some(Quality::Medium), max_fps: Some(240) };
        assert_eq!(checked(good).ok(), Some(good));
        assert_eq!(checked(fps(Some(1))).ok(), Some(fps(Some(1))));
        for bad in [s(Some(0), None), s(None, Some(0)), s(Some(16385), None), s(Some(640), Some(u32::MAX)), fps(Some(0)), fps(Some(241)), fps(Some(u32::MAX))] {
            assert!(matches!(checked(bad), Err(ApiError::BadSettings(_))), "{bad:?}");
        }
    }
}
