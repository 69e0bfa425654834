//! Packet demultiplexing helpers: classify a datagram and pull the ICE ufrag out of a STUN request.
//!
//! The per-core [`crate::sfu::Core`] maps a datagram to its session by the sender's
//! address (one hash lookup); only the first STUN request from a new address needs
//! [`stun_local_ufrag`], never a scan over sessions.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// Whether the datagram looks like a STUN message (RFC 8489 header with magic cookie).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= 20 && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// The local (server) ufrag of a STUN Binding request's USERNAME (`local:remote`), if any.
///
/// Returns `None` for anything malformed; never panics on arbitrary input.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
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
            return user.split(':').next();
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
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

    #[test]
    fn finds_local_ufrag() {
        let m = binding_with_username("srvfrag:clientfrag");
        assert_eq!(stun_local_ufrag(&m), Some("srvfrag"));
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
