//! Access tokens: HS256 JWTs carrying the room, the identity, grants and expiry.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What a token allows (defined with the signaling messages, which carry it in `joined`).
pub use signaling::Grants;

/// JWT claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// API key that minted the token.
    pub iss: String,
    /// Participant identity.
    pub sub: String,
    /// Room the token is valid for.
    pub room: String,
    /// Grants.
    pub grants: Grants,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Minted by the open join (`/app/token`): the identity is only a display name, so a
    /// second join with it gets a distinct identity instead of replacing the first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
}

/// The longest lifetime a token may be minted with: 30 days.
pub const MAX_TTL: u64 = 30 * 24 * 3600;

/// Mints and verifies tokens with one API key and secret.
#[derive(Clone)]
pub struct TokenKeys {
    api_key: String,
    enc: EncodingKey,
    dec: DecodingKey,
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl TokenKeys {
    /// Keys for an API key and its secret.
    pub fn new(api_key: &str, api_secret: &str) -> Self {
        TokenKeys {
            api_key: api_key.to_string(),
            enc: EncodingKey::from_secret(api_secret.as_bytes()),
            dec: DecodingKey::from_secret(api_secret.as_bytes()),
        }
    }

    /// Mints a token valid for `ttl_seconds` from now (at most [`MAX_TTL`]).
    pub fn mint(&self, room: &str, identity: &str, grants: Grants, ttl_seconds: u64) -> Result<String, ApiError> {
        self.sign(&self.claims(room, identity, grants, ttl_seconds))
    }

    /// Mints an open-join token (see [`Claims::open`]) valid for `ttl_seconds` from now.
    pub fn mint_open(&self, room: &str, name: &str, ttl_seconds: u64) -> Result<String, ApiError> {
        self.sign(&Claims { open: true, ..self.claims(room, name, Grants::default(), ttl_seconds) })
    }

    fn claims(&self, room: &str, identity: &str, grants: Grants, ttl_seconds: u64) -> Claims {
        let now = unix_now();
        Claims {
            iss: self.api_key.clone(),
            sub: identity.to_string(),
            room: room.to_string(),
            grants,
            iat: now,
            nbf: now.saturating_sub(1),
            exp: now + ttl_seconds.min(MAX_TTL),
            open: false,
        }
    }

    fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.enc).map_err(|e| ApiError::BadRequest(format!("cannot mint token: {e}")))
    }

    /// Verifies signature, issuer and expiry (no leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_issuer(&[&self.api_key]);
        v.set_required_spec_claims(&["exp", "sub", "iss"]);
        v.validate_nbf = true;
        decode::<Claims>(token, &self.dec, &v).map(|d| d.claims).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ApiError::TokenExpired,
            _ => ApiError::Unauthorized(format!("invalid token: {e}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let k = TokenKeys::new("key", "secret-secret-secret-secret-1234");
        let t = k.mint("room", "alice", Grants { can_publish: false, auto_subscribe: false, ..Grants::default() }, 60).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!((c.room.as_str(), c.sub.as_str(), c.grants.can_publish, c.grants.can_subscribe, c.grants.auto_subscribe), ("room", "alice", false, true, false));
        assert!(!c.open, "signed by the operator's side");
        assert!(k.verify(&k.mint_open("room", "bob", 60).unwrap()).unwrap().open);
        let long = k.verify(&k.mint("room", "alice", Grants::default(), 10 * MAX_TTL).unwrap()).unwrap();
        assert_eq!(long.exp - long.iat, MAX_TTL);
    }

    #[test]
    fn a_token_minted_before_auto_subscribe_existed_auto_subscribes() {
        let secret = "secret-secret-secret-secret-1234";
        let now = unix_now();
        let old = serde_json::json!({
            "iss": "key", "sub": "alice", "room": "room",
            "grants": {"can_publish": true, "can_subscribe": false},
            "iat": now, "nbf": now - 1, "exp": now + 60,
        });
        let t = encode(&Header::new(Algorithm::HS256), &old, &EncodingKey::from_secret(secret.as_bytes())).unwrap();
        let c = TokenKeys::new("key", secret).verify(&t).unwrap();
        assert_eq!(c.grants, Grants { can_publish: true, can_subscribe: false, auto_subscribe: true });
    }

    #[test]
    fn wrong_secret_and_expired_are_refused() {
        let k = TokenKeys::new("key", "secret-secret-secret-secret-1234");
        let other = TokenKeys::new("key", "another-secret-another-secret-12");
        let t = k.mint("room", "alice", Grants::default(), 60).unwrap();
        assert!(matches!(other.verify(&t), Err(ApiError::Unauthorized(_))));
        let mut c = k.verify(&t).unwrap();
        c.exp = unix_now() - 10;
        c.nbf = c.exp - 100;
        let expired = encode(&Header::new(Algorithm::HS256), &c, &EncodingKey::from_secret(b"secret-secret-secret-secret-1234")).unwrap();
        assert!(matches!(k.verify(&expired), Err(ApiError::TokenExpired)));
        assert!(matches!(k.verify("garbage"), Err(ApiError::Unauthorized(_))));
    }
}
