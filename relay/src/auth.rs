//! TURN authentication: long-term credentials with realm and nonce (RFC 8489 §9.2), and
//! coturn-compatible TURN REST ephemeral credentials (`--use-auth-secret`).

use std::collections::HashMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

/// How usernames map to passwords.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `--user name:password` entries.
    Users(HashMap<String, String>),
    /// `--static-auth-secret`: username `<expiry-unix-time>[:<user>]`,
    /// password `base64(HMAC-SHA1(secret, username))`.
    Secret(String),
}

/// Why a request's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, or a REST username that is expired or malformed.
    #[error("unauthorized")]
    Unauthorized,
}

/// The long-term key: MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The TURN REST password for `username` under `secret`.
pub fn rest_password(secret: &str, username: &str) -> String {
    let Ok(mut m) = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else { return String::new() };
    m.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// A REST username for `user` valid until `expiry` (Unix seconds).
pub fn rest_username(expiry: u64, user: &str) -> String {
    if user.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{user}")
    }
}

impl Credentials {
    /// The password of `username` at Unix time `unix_now`.
    pub fn password(&self, username: &str, unix_now: u64) -> Result<String, AuthError> {
        match self {
            Credentials::Users(m) => m.get(username).cloned().ok_or(AuthError::Unauthorized),
            Credentials::Secret(secret) => {
                let expiry: u64 = username.split(':').next().and_then(|t| t.parse().ok()).ok_or(AuthError::Unauthorized)?;
                if expiry < unix_now {
                    return Err(AuthError::Unauthorized);
                }
                Ok(rest_password(secret, username))
            }
        }
    }
}

/// Stateless nonces: 8 hex digits of Unix time plus a 48-bit MAC (20 characters, short so
/// that a challenge stays small), so any core can check any nonce.
#[derive(Clone)]
pub struct Nonces {
    secret: [u8; 32],
    /// Seconds a nonce stays fresh (coturn's `stale-nonce` default: 600).
    pub lifetime: u64,
}

/// What a nonce check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by us and fresh.
    Valid,
    /// Issued by us, too old: answer 438.
    Stale,
    /// Not ours.
    Invalid,
}

impl Nonces {
    /// Nonces under a random secret.
    pub fn new(lifetime: u64) -> Self {
        Nonces { secret: rand::random(), lifetime }
    }

    fn mac(&self, ts: &str) -> String {
        let Ok(mut m) = Hmac::<sha1::Sha1>::new_from_slice(&self.secret) else { return String::new() };
        m.update(ts.as_bytes());
        m.finalize().into_bytes()[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A fresh nonce.
    pub fn issue(&self, unix_now: u64) -> String {
        let ts = format!("{:08x}", unix_now as u32);
        let mac = self.mac(&ts);
        format!("{ts}{mac}")
    }

    /// Checks a nonce from a request.
    pub fn check(&self, nonce: &str, unix_now: u64) -> NonceCheck {
        if nonce.len() != 20 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (ts, mac) = nonce.split_at(8);
        if self.mac(ts) != mac {
            return NonceCheck::Invalid;
        }
        match u64::from_str_radix(ts, 16) {
            Ok(t) if t + self.lifetime >= unix_now => NonceCheck::Valid,
            Ok(_) => NonceCheck::Stale,
            Err(_) => NonceCheck::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_follow_coturn() {
        let c = Credentials::Secret("north".into());
        let user = rest_username(2_000, "alice");
        assert_eq!(user, "2000:alice");
        assert_eq!(c.password(&user, 1_000).unwrap(), rest_password("north", "2000:alice"));
        assert_eq!(c.password(&user, 2_001), Err(AuthError::Unauthorized));
        assert_eq!(c.password("alice", 1_000), Err(AuthError::Unauthorized));
        // Known answer: base64(HMAC-SHA1("north", "2000:alice")) is 28 characters.
        assert_eq!(rest_password("north", "2000:alice").len(), 28);
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let n = Nonces::new(600);
        let x = n.issue(1_000);
        assert_eq!(n.check(&x, 1_500), NonceCheck::Valid);
        assert_eq!(n.check(&x, 1_700), NonceCheck::Stale);
        let mut forged = x.clone();
        forged.replace_range(0..1, "1");
        assert_eq!(n.check(&forged, 1_000), NonceCheck::Invalid);
        assert_eq!(n.check("short", 1_000), NonceCheck::Invalid);
        assert_eq!(Nonces::new(600).check(&x, 1_000), NonceCheck::Invalid);
    }
}
