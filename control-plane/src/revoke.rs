//! Tokens revoked by a kick: every token of the kicked identity for that room issued up to
//! the kick is refused until it would have expired. A token minted in a later second works:
//! `iat` counts whole seconds, so one minted in the kick's own second is refused as well.

use std::collections::HashMap;

use crate::token::{Claims, MAX_TTL};

/// Kicks remembered per room and identity, fed with Unix time.
#[derive(Debug, Default)]
pub struct Revocations {
    kicks: HashMap<(String, String), u64>,
}

impl Revocations {
    /// Revokes the tokens of `identity` in `room` issued at or before `now`.
    pub fn kick(&mut self, room: &str, identity: &str, now: u64) {
        self.kicks.retain(|_, at| at.saturating_add(MAX_TTL) > now);
        self.kicks.insert((room.to_string(), identity.to_string()), now);
    }

    /// Whether `claims` belong to a token revoked by a kick.
    pub fn revoked(&self, claims: &Claims) -> bool {
        self.kicks.get(&(claims.room.clone(), claims.sub.clone())).is_some_and(|at| claims.iat <= *at)
    }

    /// Kicks remembered now.
    pub fn len(&self) -> usize {
        self.kicks.len()
    }

    /// Whether no kick is remembered.
    pub fn is_empty(&self) -> bool {
        self.kicks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Grants;

    fn claims(room: &str, sub: &str, iat: u64) -> Claims {
        Claims { iss: "k".into(), sub: sub.into(), room: room.into(), grants: Grants::default(), iat, nbf: iat, exp: iat + 3600, open: false }
    }

    #[test]
    fn tokens_up_to_the_kick_are_refused_later_ones_and_others_are_not() {
        let mut r = Revocations::default();
        r.kick("room", "mallory", 1000);
        assert!(r.revoked(&claims("room", "mallory", 400)));
        assert!(r.revoked(&claims("room", "mallory", 1000)));
        assert!(!r.revoked(&claims("room", "mallory", 1001)), "a token minted after the kick");
        assert!(!r.revoked(&claims("other", "mallory", 400)), "another room");
        assert!(!r.revoked(&claims("room", "alice", 400)), "another identity");
    }

    #[test]
    fn kicks_are_forgotten_once_every_token_they_revoke_has_expired() {
        let mut r = Revocations::default();
        r.kick("a", "x", 1000);
        r.kick("b", "y", 1000 + MAX_TTL - 1);
        assert_eq!(r.len(), 2);
        r.kick("c", "z", 1000 + MAX_TTL);
        assert_eq!(r.len(), 2, "the first kick is past every token's life");
    }
}
