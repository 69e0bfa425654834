//! Packet demultiplexing helpers: classify a datagram and pull the ICE ufrag out of a STUN request.
//!
//! The per-core [`crate::sfu::Core`] maps a datagram to its session by the sender's
//! address (one hash lookup); only the first STUN request from a new address needs
//! [`stun_local_ufrag`], never a scan over sessions.

use hmac::{Hmac, Mac};

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];

/// Whether the datagram looks like a STUN message (RFC 8489 header with magic cookie).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// The local (server) ufrag of a STUN Binding request's USERNAME (`local:remote`), if any.
///
/// Returns `None` for anything malformed; never panics on arbitrary input.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    stun_ufrags(data).map(|(local, _)| local)
}

/// Both halves of a STUN message's USERNAME (`local:remote`; the remote half is empty when
/// there is no colon), if it has one.
///
/// Returns `None` for anything malformed; never panics on arbitrary input.
pub fn stun_ufrags(data: &[u8]) -> Option<(&str, &str)> {
    if !is_stun(data) {
        return None;
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + alen)?;
        if typ == ATTR_USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            return Some(user.split_once(':').unwrap_or((user, "")));
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// Whether the datagram is a STUN Binding request (by its header alone).
pub fn is_binding_request(data: &[u8]) -> bool {
    is_stun(data) && data[0..2] == BINDING_REQUEST
}

/// Whether the datagram is a STUN Binding request whose MESSAGE-INTEGRITY checks out under
/// the short-term credential `password` (RFC 8489 §14.5: HMAC-SHA1 over the message up to the
/// attribute, with the length field counting up to its end). Anything else is false.
pub fn binding_integrity_ok(data: &[u8], password: &[u8]) -> bool {
    if !is_binding_request(data) {
        return false;
    }
    let len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let Some(body) = data.get(20..20 + len) else { return false };
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let Some(value) = body.get(i + 4..i + 4 + alen) else { return false };
        if typ == ATTR_MESSAGE_INTEGRITY {
            if alen != 20 {
                return false;
            }
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(password) else { return false };
            let upto = 20 + i;
            let counted = (i + 4 + 20) as u16;
            mac.update(&data[0..2]);
            mac.update(&counted.to_be_bytes());
            mac.update(&data[4..upto]);
            return mac.verify_slice(value).is_ok();
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_with_username(user: &str) -> Vec<u8> {
        let mut attr = vec![0x00, 0x06];
        attr.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attr.extend_from_slice(user.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[9; 12]);
        m.extend_from_slice(&attr);
        m
    }

    /// `binding_with_username` plus MESSAGE-INTEGRITY under `password`.
    fn signed_binding(user: &str, password: &[u8]) -> Vec<u8> {
        let mut m = binding_with_username(user);
        let body_len = u16::from_be_bytes([m[2], m[3]]) as usize + 24;
        m[2..4].copy_from_slice(&(body_len as u16).to_be_bytes());
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(password).unwrap();
        mac.update(&m);
        let tag = mac.finalize().into_bytes();
        m.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        m.extend_from_slice(&tag);
        m
    }

    #[test]
    fn integrity_is_checked_with_the_password() {
        let m = signed_binding("srv:cli", b"secret-password");
        assert!(binding_integrity_ok(&m, b"secret-password"));
        assert!(!binding_integrity_ok(&m, b"another-password"));
        let mut tampered = m.clone();
        tampered[30] ^= 1;
        assert!(!binding_integrity_ok(&tampered, b"secret-password"));
        assert!(!binding_integrity_ok(&binding_with_username("srv:cli"), b"secret-password"), "no integrity at all");
        for cut in 0..m.len() {
            assert!(!binding_integrity_ok(&m[..cut], b"secret-password"));
        }
    }

    #[test]
    fn finds_local_ufrag() {
        let m = binding_with_username("srvfrag:clientfrag");
        assert_eq!(stun_local_ufrag(&m), Some("srvfrag"));
        assert_eq!(stun_ufrags(&m), Some(("srvfrag", "clientfrag")));
        assert_eq!(stun_ufrags(&binding_with_username("lonely")), Some(("lonely", "")));
        assert!(is_binding_request(&m));
    }

    #[test]
    fn truncated_or_garbage_is_none() {
        let m = binding_with_username("abc:def");
        for cut in 0..m.len() {
            let _ = stun_local_ufrag(&m[..cut]);
        }
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        let mut bad_len = m.clone();
        bad_len[3] = 0xff;
        assert_eq!(stun_local_ufrag(&bad_len), None);
    }
}
