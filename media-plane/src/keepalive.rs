//! Liveness of an ICE-lite session whose peer sends no consent checks.
//!
//! str0m's lite agent forgets a candidate pair 15 s after the last Binding request on it, and
//! the session then ends. Browsers send consent checks (RFC 7675) every few seconds, but
//! libnice, the ICE agent of GStreamer's webrtcbin, keeps a pair alive with Binding
//! indications every 25 s (RFC 8445 §11), which a lite agent may not answer and str0m ignores.
//! Consent is the sender's duty, and a lite agent sends no checks of its own, so the peer's
//! traffic is the only sign of life there is. While a connected session receives datagrams
//! (media, RTCP, DTLS, indications), the core hands its `Rtc` a Binding request of its own
//! making every [`INTERVAL`], signed with the session's ICE password, from the address those
//! datagrams came from; str0m's answer to it is dropped ([`is_own_response`]). A peer that is
//! gone sends nothing, and str0m ends the session 15 s after its last datagram.
//!
//! A peer that does send consent checks (every browser) is left alone: no request is made
//! while its own checks arrived within [`QUIET`]. Requests made beside a browser's own checks
//! were seen to lengthen its freezes behind a rate limit, so they are only a fallback.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};

/// How often the peer's traffic refreshes its candidate pair.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// How long the peer's own checks must have been silent before requests are made here; well
/// under the 15 s after which str0m forgets the pair, and above a browser's 4-6 s between
/// consent checks.
pub const QUIET: Duration = Duration::from_secs(8);

/// The first four bytes of the transaction id of every request made here.
const MARK: [u8; 4] = *b"lite";
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_ICE_CONTROLLING: u16 = 0x802A;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
/// A host candidate's priority (RFC 8445 §5.1.2.1); str0m needs one, and the pair exists.
const PRIORITY: u32 = (126 << 24) | (65535 << 8) | 255;

/// The credentials of one session's ICE: ours, and the ufrag its peer uses.
#[derive(Debug, Clone, Copy)]
pub struct Creds<'a> {
    /// Our ufrag (the first half of USERNAME).
    pub local_ufrag: &'a str,
    /// The peer's ufrag (the second half).
    pub remote_ufrag: &'a str,
    /// Our ICE password: the key of MESSAGE-INTEGRITY.
    pub password: &'a str,
}

/// One session's keepalive state: the peer's ufrag, once learned, when it last sent a check of
/// its own, and when the next request is due.
#[derive(Debug, Default)]
pub struct Liveness {
    remote_ufrag: String,
    heard: Option<Instant>,
    next: Option<Instant>,
    made: u64,
}

impl Liveness {
    /// Whether `remote_ufrag` is the peer's ufrag as last learned.
    pub fn knows(&self, remote_ufrag: &str) -> bool {
        self.remote_ufrag == remote_ufrag
    }

    /// Learns the peer's ufrag from a Binding request that passed the integrity check (again
    /// after an ICE restart).
    pub fn learn(&mut self, remote_ufrag: &str) {
        remote_ufrag.clone_into(&mut self.remote_ufrag);
    }

    /// Records that the peer's own authentic Binding request arrived at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.heard = Some(now);
    }

    /// The request to hand the session's `Rtc` for a datagram that arrived at `now`, if one is
    /// due: the peer's ufrag is known, its own checks have been silent for [`QUIET`], and
    /// [`INTERVAL`] passed since the last request.
    pub fn due(&mut self, now: Instant, local_ufrag: &str, password: &str) -> Option<Vec<u8>> {
        let checking = self.heard.is_some_and(|t| now.saturating_duration_since(t) < QUIET);
        if self.remote_ufrag.is_empty() || checking || self.next.is_some_and(|t| now < t) {
            return None;
        }
        self.next = Some(now + INTERVAL);
        self.made += 1;
        Some(binding_request(Creds { local_ufrag, remote_ufrag: &self.remote_ufrag, password }, self.made))
    }
}

/// A Binding request as the controlling peer would send it, numbered `serial`.
pub fn binding_request(creds: Creds<'_>, serial: u64) -> Vec<u8> {
    let user = format!("{}:{}", creds.local_ufrag, creds.remote_ufrag);
    let mut m = Vec::with_capacity(20 + 4 + user.len() + 3 + 8 + 12 + 24);
    m.extend_from_slice(&BINDING_REQUEST);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&MARK);
    m.extend_from_slice(&serial.to_be_bytes());
    attribute(&mut m, ATTR_USERNAME, user.as_bytes());
    attribute(&mut m, ATTR_PRIORITY, &PRIORITY.to_be_bytes());
    attribute(&mut m, ATTR_ICE_CONTROLLING, &serial.to_be_bytes());
    // MESSAGE-INTEGRITY covers the message up to itself, with a length that counts it.
    let len = (m.len() - 20 + 24) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    let tag = match Hmac::<sha1::Sha1>::new_from_slice(creds.password.as_bytes()) {
        Ok(mut mac) => {
            mac.update(&m);
            mac.finalize().into_bytes()
        }
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => Default::default(),
    };
    attribute(&mut m, ATTR_MESSAGE_INTEGRITY, &tag);
    m
}

/// Whether a datagram str0m wants to send is its answer to a request made here.
pub fn is_own_response(data: &[u8]) -> bool {
    data.len() >= 20 && data[0..2] == BINDING_SUCCESS && data[4..8] == MAGIC_COOKIE && data[8..12] == MARK
}

fn attribute(m: &mut Vec<u8>, typ: u16, value: &[u8]) {
    m.extend_from_slice(&typ.to_be_bytes());
    m.extend_from_slice(&(value.len() as u16).to_be_bytes());
    m.extend_from_slice(value);
    m.resize(m.len().next_multiple_of(4), 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demux;

    const CREDS: Creds<'static> = Creds { local_ufrag: "srv1", remote_ufrag: "cli", password: "server-password-000000" };

    #[test]
    fn the_request_names_both_ufrags_and_passes_the_integrity_check() {
        let m = binding_request(CREDS, 7);
        assert!(demux::is_binding_request(&m));
        assert_eq!(demux::stun_ufrags(&m), Some(("srv1", "cli")));
        assert!(demux::binding_integrity_ok(&m, CREDS.password.as_bytes()));
        assert!(!demux::binding_integrity_ok(&m, b"another-password"));
        assert_eq!(m.len() % 4, 0);
        assert_eq!(u16::from_be_bytes([m[2], m[3]]) as usize, m.len() - 20);
    }

    #[test]
    fn one_request_per_interval_once_the_peer_ufrag_is_known() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        assert!(l.due(t0, "srv1", CREDS.password).is_none(), "no ufrag yet");
        l.learn("cli");
        assert!(l.knows("cli") && !l.knows("other"));
        let first = l.due(t0, "srv1", CREDS.password).expect("due at once");
        assert_eq!(demux::stun_ufrags(&first), Some(("srv1", "cli")));
        assert!(l.due(t0 + Duration::from_secs(4), "srv1", CREDS.password).is_none());
        let second = l.due(t0 + INTERVAL, "srv1", CREDS.password).expect("due again");
        assert_ne!(first[8..20], second[8..20], "a new transaction");
        l.learn("restarted");
        let third = l.due(t0 + INTERVAL * 2, "srv1", CREDS.password).expect("due");
        assert_eq!(demux::stun_ufrags(&third), Some(("srv1", "restarted")));
    }

    #[test]
    fn a_peer_that_sends_its_own_checks_gets_no_requests_until_they_stop() {
        let t0 = Instant::now();
        let mut l = Liveness::default();
        l.learn("cli");
        for s in 0..30 {
            let now = t0 + Duration::from_secs(s);
            if s % 5 == 0 && s <= 15 {
                l.heard(now);
            }
            let made = l.due(now, "srv1", CREDS.password);
            // The last check came at 15 s: silence for QUIET means requests from 23 s on.
            assert_eq!(made.is_some(), s == 23 || s == 28, "at {s} s");
        }
    }

    #[test]
    fn only_answers_to_our_own_requests_are_ours() {
        let mut answer = binding_request(CREDS, 1);
        answer[0..2].copy_from_slice(&BINDING_SUCCESS);
        assert!(is_own_response(&answer));
        let mut other = answer.clone();
        other[8] ^= 1;
        assert!(!is_own_response(&other), "another transaction");
        assert!(!is_own_response(&binding_request(CREDS, 1)), "a request, not an answer");
        assert!(!is_own_response(&answer[..19]));
    }
}
