//! Signatures as the Standard Webhooks specification makes them: the `webhook-signature`
//! header is `v1,` and the base64 HMAC-SHA256, keyed with the API secret's bytes, of
//! `{webhook-id}.{webhook-timestamp}.{body}`. A receiver checks it and refuses timestamps
//! more than [`TOLERANCE`] from its clock (replays).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the event id.
pub const ID_HEADER: &str = "webhook-id";
/// Header carrying the Unix time of sending (seconds).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// How far a timestamp may be from the receiver's clock, in seconds.
pub const TOLERANCE: u64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp is too old or too far ahead.
    #[error("timestamp {0} is outside the tolerance")]
    Stale(u64),
    /// No `v1,` signature matches.
    #[error("no matching signature")]
    Mismatch,
}

fn mac(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header value for one delivery.
pub fn signature(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    signature_with_key(secret.as_bytes(), id, timestamp, body)
}

fn signature_with_key(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let tag = mac(key, id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag))
}

/// Checks a delivery as a receiver would, at Unix time `now`: the timestamp is within
/// [`TOLERANCE`] and one of the space-separated signatures in `header` matches.
pub fn verify(secret: &str, id: &str, timestamp: u64, body: &[u8], header: &str, now: u64) -> Result<(), VerifyError> {
    if now.abs_diff(timestamp) > TOLERANCE {
        return Err(VerifyError::Stale(timestamp));
    }
    for sig in header.split(' ') {
        let Some(b64) = sig.strip_prefix("v1,") else { continue };
        let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(b64) else { continue };
        if mac(secret.as_bytes(), id, timestamp, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let body = br#"{"event":"room_started"}"#;
        let sig = signature(SECRET, "EV_1", 1_700_000_000, body);
        assert!(sig.starts_with("v1,"));
        assert_eq!(verify(SECRET, "EV_1", 1_700_000_000, body, &sig, 1_700_000_010), Ok(()));
        // Another secret, id, time or body.
        assert_eq!(verify("another-secret-another-secret-xx", "EV_1", 1_700_000_000, body, &sig, 1_700_000_000), Err(VerifyError::Mismatch));
        assert_eq!(verify(SECRET, "EV_2", 1_700_000_000, body, &sig, 1_700_000_000), Err(VerifyError::Mismatch));
        assert_eq!(verify(SECRET, "EV_1", 1_700_000_001, body, &sig, 1_700_000_001), Err(VerifyError::Mismatch));
        assert_eq!(verify(SECRET, "EV_1", 1_700_000_000, br#"{"event":"room_finished"}"#, &sig, 1_700_000_000), Err(VerifyError::Mismatch));
        // Junk next to a good signature, and junk alone.
        assert_eq!(verify(SECRET, "EV_1", 1_700_000_000, body, &format!("v1,@@@ v2,x {sig}"), 1_700_000_000), Ok(()));
        assert_eq!(verify(SECRET, "EV_1", 1_700_000_000, body, "v1,", 1_700_000_000), Err(VerifyError::Mismatch));
    }

    #[test]
    fn an_old_or_future_timestamp_is_a_replay() {
        let sig = signature(SECRET, "EV_1", 1_700_000_000, b"{}");
        assert_eq!(verify(SECRET, "EV_1", 1_700_000_000, b"{}", &sig, 1_700_000_000 + TOLERANCE + 1), Err(VerifyError::Stale(1_700_000_000)));
        assert_eq!(verify(SECRET, "EV_1", 1_700_000_000, b"{}", &sig, 1_700_000_000 - TOLERANCE - 1), Err(VerifyError::Stale(1_700_000_000)));
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks libraries' tests: secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw (the key is
        // the base64-decoded part), id msg_p5jXN8AQM9LWM0D4loKWxJek, timestamp 1614265330.
        let key = base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature_with_key(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
