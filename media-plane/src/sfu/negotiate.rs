//! SDP: a session is created from the client's offer, m-lines are added and stopped as the
//! tracks it receives come and go (one offer at a time, once connected), and the client's
//! answers open them.

use std::time::Instant;

use link::{Event as LinkEvent, Grants, JoinError, Subscription, TrackSettings};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, Mid, Rid};
use str0m::bwe::Bitrate;
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Input, Rtc};

use super::ids::SessionKey;
use super::session::Session;
use super::track::{DownState, DownTrack};
use super::{kind_of, Core};

/// A participant's request to join, as the control plane sent it.
#[derive(Debug)]
pub struct JoinRequest<'a> {
    /// Room name.
    pub room: &'a str,
    /// Session id.
    pub session: &'a str,
    /// Participant identity.
    pub identity: &'a str,
    /// What its token allows.
    pub grants: Grants,
    /// What it receives.
    pub subscription: Subscription,
    /// How it wants video tracks by default.
    pub video: TrackSettings,
    /// Its SDP offer.
    pub offer: &'a str,
}

impl Core {
    /// Creates a session from a join request, answers its offer and subscribes it to the
    /// room's tracks.
    pub(super) fn join(&mut self, now: Instant, j: JoinRequest<'_>) -> Result<SessionKey, JoinError> {
        if self.sessions.key_of(j.session).is_some() {
            return Err(JoinError::SessionExists(j.session.to_string()));
        }
        if self.session_count() as u32 >= self.cfg.capacity {
            return Err(JoinError::CoreFull(self.cfg.index));
        }
        let offer = SdpOffer::from_sdp_string(j.offer).map_err(|e| JoinError::BadSdp(format!("malformed SDP offer: {e}")))?;
        let receives = j.grants.subscribe && j.subscription != Subscription::None;
        let bwe = (receives && self.cfg.bwe_initial > 0).then(|| Bitrate::bps(self.cfg.bwe_initial));
        // Without estimation nothing reads transport-wide feedback from a receive-only
        // client, which would send it 20 times a second (bench/RESULTS.md, "second round").
        let twcc = bwe.is_some() || offers_to_send(j.offer);
        let exts = extensions(twcc);
        let mut rtc = Rtc::builder()
            .set_extension_map(exts)
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_bwe(bwe)
            // Once a second, the loss its receiver reports caps the estimate (`losscap`).
            .set_stats_interval(bwe.map(|_| std::time::Duration::from_secs(1)))
            .build(now);
        for addr in &self.cfg.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!(%addr, error = %e, "unusable host candidate"),
            }
        }
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| JoinError::BadSdp(format!("SDP offer not accepted: {e}")))?;
        // Let str0m process the negotiated media now, so tracks are announced with the answer.
        rtc.handle_input(Input::Timeout(now)).map_err(|e| JoinError::BadSdp(format!("session setup failed: {e}")))?;
        let creds = rtc.direct_api().local_ice_credentials();
        let s = Session {
            id: j.session.to_string(),
            identity: j.identity.to_string(),
            room: j.room.to_string(),
            rtc,
            grants: j.grants,
            subscription: j.subscription,
            video: j.video,
            ufrag: creds.ufrag,
            ice_pass: creds.pass,
            liveness: Default::default(),
            addrs: Vec::new(),
            ups: Vec::new(),
            downs: Vec::new(),
            pending: None,
            pending_answer: Some(answer.to_sdp_string()),
            next_timeout: now,
            created: now,
            connected: false,
            // With estimation on, layers fit the starting estimate until str0m reports one.
            estimate: bwe.map(|b| b.as_u64()),
            loss_cap: Default::default(),
            probe: Default::default(),
            last_stats: None,
            ending: None,
            serial: self.sessions.next_serial(),
            shadow: None,
        };
        let key = self.sessions.insert(s);
        self.next_tick.get_or_insert(now + super::select::TICK);
        self.deadlines.push(now, key);
        self.deadlines.push(now + self.cfg.connect_timeout, key);
        if self.local_members(j.room) == 0 {
            self.announce_members(j.room, true);
        }
        self.rooms.entry(j.room.to_string()).or_default().push(key);
        self.attach_existing(now, key);
        Ok(key)
    }

    /// Starts an SDP renegotiation for tracks added or removed, if none is pending.
    pub(super) fn negotiate(&mut self, key: SessionKey) {
        let Some(s) = self.sessions.get_mut(key) else { return };
        // Renegotiate only once ICE and DTLS are up: a browser handed an offer while its first
        // negotiation is still settling can restart ICE, and str0m then drops its checks.
        if s.pending.is_some() || s.ending.is_some() || s.pending_answer.is_some() || !s.connected {
            return;
        }
        let mut api = s.rtc.sdp_api();
        for &dk in &s.downs {
            let Some(d) = self.downs.get_mut(dk) else { continue };
            match d.state {
                DownState::ToOpen => {
                    let mid = api.add_media(d.kind, Direction::SendOnly, Some(d.stream_id.clone()), Some(d.track_id.clone()), None);
                    d.state = DownState::Negotiating(mid);
                }
                DownState::ToStop(m) => {
                    api.stop_media(m);
                    d.state = DownState::NegotiatingStop(m);
                }
                _ => {}
            }
        }
        if !api.has_changes() {
            return;
        }
        if let Some((offer, pending)) = api.apply() {
            s.pending = Some(pending);
            self.out.events.push(LinkEvent::Offer { session: s.id.clone(), sdp: offer.to_sdp_string() });
        }
    }

    /// Applies the client's answer to our pending offer: offered lines open, stopped ones go.
    pub(super) fn accept_answer(&mut self, now: Instant, session: &str, sdp: &str) {
        let Some(key) = self.sessions.key_of(session) else { return };
        if let Err(message) = self.apply_answer(key, sdp) {
            self.out.events.push(LinkEvent::AnswerFailed { session: session.to_string(), message });
            return;
        }
        let s = &mut self.sessions[key];
        let mut opened = Vec::new();
        let mut stopped = Vec::new();
        for &dk in &s.downs {
            let Some(d) = self.downs.get_mut(dk) else { continue };
            match d.state {
                DownState::Negotiating(m) if d.up.is_some() => {
                    d.state = DownState::Open(m);
                    opened.push(dk);
                }
                // The track went away while this was negotiated: stop it next round.
                DownState::Negotiating(m) => d.state = DownState::ToStop(m),
                DownState::NegotiatingStop(_) => stopped.push(dk),
                _ => {}
            }
        }
        s.downs.retain(|d| !stopped.contains(d));
        for dk in stopped {
            self.drop_down(dk);
        }
        for dk in opened {
            self.open(now, dk);
        }
        self.dirty.push(key);
    }

    fn apply_answer(&mut self, key: SessionKey, sdp: &str) -> Result<(), String> {
        // An answer nobody asked for is refused before its SDP is parsed.
        if self.sessions[key].pending.is_none() {
            return Err("no offer is pending".into());
        }
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("malformed SDP answer: {e}"))?;
        let s = &mut self.sessions[key];
        let pending = s.pending.take().ok_or("no offer is pending")?;
        s.rtc.sdp_api().accept_answer(pending, answer).map_err(|e| format!("SDP answer not accepted: {e}"))
    }

    /// str0m negotiated an m-line: a WHEP player's receiving line waits for a track; a
    /// publisher's sending line becomes a published track.
    /// `rids`: the simulcast layers a publisher offered, lowest first (empty: one layer).
    pub(super) fn media_added(&mut self, now: Instant, key: SessionKey, mid: Mid, kind: MediaKind, dir: Direction, rids: &[Rid]) {
        let s = &mut self.sessions[key];
        if dir.is_sending() && s.binds_offered_lines() {
            let dk = self.downs.insert(DownTrack::idle(key, mid, kind));
            s.downs.push(dk);
            // Bind tracks the wanted publisher already has.
            let publisher = match &self.sessions[key].subscription {
                Subscription::Only { publisher, .. } => self.sessions.key_of(publisher),
                _ => None,
            };
            if let Some(pub_key) = publisher {
                let ups: Vec<_> = self.sessions[pub_key].ups.iter().copied().filter(|u| self.ups.get(*u).is_some_and(|t| t.kind == kind)).collect();
                for up in ups {
                    self.attach(now, up, key);
                }
            }
            return;
        }
        let s = &self.sessions[key];
        if !dir.is_receiving() || !s.grants.publish || self.up_by_mid(key, mid).is_some() {
            return;
        }
        let s = &self.sessions[key];
        self.out.events.push(LinkEvent::TrackPublished { room: s.room.clone(), session: s.id.clone(), track: mid.to_string(), kind: kind_of(kind) });
        self.announce_track(key, mid, kind, rids);
        self.add_up(now, key, mid, kind, rids);
    }
}

/// str0m's standard RTP header extensions, with or without the transport-wide sequence
/// number (and so the feedback a client sends about it).
fn extensions(twcc: bool) -> ExtensionMap {
    let mut exts = ExtensionMap::empty();
    for (id, e) in ExtensionMap::standard().iter() {
        if twcc || !matches!(e, Extension::TransportSequenceNumber) {
            exts.set(id, e.clone());
        }
    }
    exts
}

/// Whether an SDP offer has a media section that may send (audio or video not marked
/// `recvonly` or `inactive`; a section without a direction is `sendrecv`, RFC 8866).
pub fn offers_to_send(sdp: &str) -> bool {
    let mut sections = sdp.split("\nm=").skip(1);
    sections.any(|m| {
        let media = m.starts_with("audio") || m.starts_with("video");
        media && !m.lines().any(|l| matches!(l.trim_end(), "a=recvonly" | "a=inactive"))
    })
}

#[cfg(test)]
mod tests {
    use super::offers_to_send;

    #[test]
    fn only_audio_or_video_that_may_send_counts() {
        let head = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
        let recv = format!("{head}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        assert!(!offers_to_send(&recv));
        assert!(offers_to_send(&format!("{head}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n")));
        assert!(offers_to_send(&format!("{head}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n")));
        assert!(offers_to_send(&format!("{head}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n")), "no direction is sendrecv");
        assert!(!offers_to_send(&format!("{head}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n")));
        assert!(!offers_to_send("not sdp at all"));
    }
}
