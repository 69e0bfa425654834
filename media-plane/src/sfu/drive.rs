//! Driving the sessions' `Rtc`s: polling those touched in a turn until they have nothing
//! left to say, reacting to their events, and removing those that ended.

use std::time::{Duration, Instant};

use link::{Event as LinkEvent, LeaveReason};
use str0m::bwe::BweKind;
use str0m::media::Rid;
use str0m::{Event, IceConnectionState, Input, Output, Reason};

use super::ids::SessionKey;
use crate::keepalive;
use super::outbox::Transmit;
use super::track::DownState;
use super::Core;

/// Most timeouts already due that one poll of a session feeds at once (a keyframe's packets).
const PACER_SPINS: u32 = 256;

/// How late a session's housekeeping may run, so that it is mostly done in a turn that
/// packets woke anyway rather than in a wake-up of its own (`bench/RESULTS.md`, "Real-call
/// rate, third look"): RTCP reports (every second or more) and stats by up to 50 ms,
/// transport-wide feedback rounds by 20 ms, NACK rounds by 10 ms. Handshakes, the pacer and
/// the estimator keep their exact deadlines.
pub fn timer_slack(reason: Reason) -> Duration {
    match reason {
        Reason::Feedback | Reason::Stats | Reason::PauseCheck => Duration::from_millis(50),
        Reason::Twcc => Duration::from_millis(20),
        Reason::Nack => Duration::from_millis(10),
        _ => Duration::ZERO,
    }
}

impl Core {
    /// Polls dirty sessions until none has output left, then removes ending sessions.
    pub(super) fn drain(&mut self, now: Instant) {
        loop {
            while let Some(key) = self.dirty.pop() {
                self.negotiate(key);
                self.poll(now, key);
                self.maybe_ending.push(key);
            }
            // Only sessions touched since the last drain can have started ending.
            self.maybe_ending.sort_unstable();
            self.maybe_ending.dedup();
            let mut removed = false;
            while let Some(key) = self.maybe_ending.pop() {
                if let Some(reason) = self.sessions.get(key).and_then(|s| s.ending) {
                    self.remove(key, reason);
                    removed = true;
                }
            }
            if !removed && self.dirty.is_empty() {
                break;
            }
        }
    }

    fn poll(&mut self, now: Instant, key: SessionKey) {
        let mut spins = 0;
        loop {
            let Some(s) = self.sessions.get_mut(key) else { return };
            if s.ending.is_some() {
                return;
            }
            if !s.rtc.is_alive() {
                s.ending = Some(LeaveReason::Closed);
                return;
            }
            match s.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // With estimation on, str0m's pacer releases one packet per timeout input:
                    // feed the ones already due now, so a frame leaves in this turn.
                    if t <= now && spins < PACER_SPINS {
                        spins += 1;
                        if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                            tracing::debug!(session = %s.id, error = %e, "timeout input failed");
                            s.ending = Some(LeaveReason::Closed);
                            return;
                        }
                        continue;
                    }
                    // Housekeeping may run late by a little, with whatever wakes the core next.
                    let t = t + timer_slack(s.rtc.last_timeout_reason());
                    if s.next_timeout != t {
                        s.next_timeout = t;
                        self.deadlines.push(t, key);
                    }
                    return;
                }
                // str0m's answers to the requests that keep the pair alive stay here.
                Ok(Output::Transmit(t)) if keepalive::is_own_response(&t.contents) => {}
                Ok(Output::Transmit(t)) => {
                    self.out.transmits.push(Transmit { destination: t.destination, contents: t.contents.into() });
                }
                Ok(Output::Event(e)) => self.on_event(now, key, e),
                Err(e) => {
                    tracing::debug!(session = %s.id, error = %e, "poll_output failed");
                    s.ending = Some(LeaveReason::Closed);
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, now: Instant, key: SessionKey, e: Event) {
        match e {
            Event::RtpPacket(p) => self.forward(key, p),
            Event::Connected => {
                let s = &mut self.sessions[key];
                s.connected = true;
                self.out.events.push(LinkEvent::Connected { session: s.id.clone() });
                self.dirty.push(key);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.sessions[key].ending = Some(LeaveReason::Timeout);
            }
            Event::Closed => {
                self.sessions[key].ending = Some(LeaveReason::Closed);
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.set_estimate_of(now, key, estimate.as_u64());
            }
            Event::PeerStats(st) => self.loss_report(now, key, st.egress_loss_fraction, st.bytes_tx),
            Event::MediaAdded(m) => {
                let rids: Vec<Rid> = m.simulcast.map(|s| s.recv.iter().map(|l| l.rid).collect()).unwrap_or_default();
                self.media_added(now, key, m.mid, m.kind, m.direction, &rids);
            }
            Event::KeyframeRequest(req) => {
                let s = &self.sessions[key];
                let down = s.downs.iter().filter_map(|d| self.downs.get(*d)).find(|d| d.state == DownState::Open(req.mid));
                // The layer it receives, or the one it is about to.
                if let Some((up, Some(slot))) = down.and_then(|d| Some((d.up?, d.selector.current().or(d.selector.target())))) {
                    self.request_keyframe(now, up, slot, req.kind);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use str0m::{PacerReason, Reason};

    use super::timer_slack;

    #[test]
    fn only_housekeeping_runs_late() {
        for r in [Reason::Feedback, Reason::Stats, Reason::PauseCheck, Reason::Twcc, Reason::Nack] {
            assert!(timer_slack(r) > Duration::ZERO, "{r:?}");
        }
        for r in [Reason::DTLS, Reason::Ice, Reason::Pacer(PacerReason::Handle), Reason::BweDelayControl, Reason::BweProbeControl, Reason::SendStream, Reason::ReceiveReorder] {
            assert_eq!(timer_slack(r), Duration::ZERO, "{r:?}");
        }
        assert!(timer_slack(Reason::Nack) <= Duration::from_millis(10), "repair is not held back for long");
    }
}
