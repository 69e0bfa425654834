//! STUN message codec (RFC 8489) and TURN ChannelData framing (RFC 8656 §12).
//!
//! Decoding borrows the datagram and never panics on arbitrary input; encoding appends
//! attributes and finishes with MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};

/// The magic cookie of every RFC 5389+ message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Largest number of attributes read from one message.
const MAX_ATTRS: usize = 48;

/// STUN and TURN methods.
pub mod method {
    /// Binding.
    pub const BINDING: u16 = 0x001;
    /// Allocate.
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh.
    pub const REFRESH: u16 = 0x004;
    /// Send (indication).
    pub const SEND: u16 = 0x006;
    /// Data (indication).
    pub const DATA: u16 = 0x007;
    /// CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types.
pub mod attr {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME.
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT.
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// MESSAGE-INTEGRITY-SHA256.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// PASSWORD-ALGORITHM.
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// USERHASH.
    pub const USERHASH: u16 = 0x001E;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// PRIORITY (ICE).
    pub const PRIORITY: u16 = 0x0024;
    /// USE-CANDIDATE (ICE).
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;

    /// Comprehension-required attributes this server understands.
    pub const KNOWN_REQUIRED: &[u16] = &[
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        MESSAGE_INTEGRITY_SHA256,
        PASSWORD_ALGORITHM,
        USERHASH,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        PRIORITY,
        USE_CANDIDATE,
    ];
}

/// Message class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Request.
    Request,
    /// Indication.
    Indication,
    /// Success response.
    Success,
    /// Error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x000,
            Class::Indication => 0x010,
            Class::Success => 0x100,
            Class::Error => 0x110,
        }
    }
}

/// Why a datagram is not a valid STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Shorter than a header, or the length field disagrees with the datagram.
    #[error("truncated or mis-sized STUN message")]
    Length,
    /// Not a STUN message (first bits or magic cookie).
    #[error("not a STUN message")]
    NotStun,
    /// An attribute runs past the end.
    #[error("malformed attribute")]
    Attribute,
    /// Too many attributes.
    #[error("too many attributes")]
    TooManyAttributes,
    /// FINGERPRINT present but wrong.
    #[error("bad FINGERPRINT")]
    Fingerprint,
}

/// A decoded message borrowing its datagram.
#[derive(Debug)]
pub struct Message<'a> {
    /// Method.
    pub method: u16,
    /// Class.
    pub class: Class,
    /// Transaction id.
    pub tid: [u8; 12],
    raw: &'a [u8],
    /// (type, value, offset of the attribute header in `raw`).
    attrs: Vec<(u16, &'a [u8], usize)>,
}

/// Whether the datagram could be STUN (first two bits zero and the magic cookie).
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= 20 && b[0] & 0xC0 == 0 && u32::from_be_bytes([b[4], b[5], b[6], b[7]]) == MAGIC_COOKIE
}

/// Whether the datagram is TURN ChannelData. RFC 8656 uses channels 0x4000..=0x4FFF; like
/// coturn we also accept RFC 5766's 0x5000..=0x7FFF, which deployed clients still pick.
pub fn is_channel_data(b: &[u8]) -> bool {
    b.len() >= 4 && (0x40..=0x7F).contains(&b[0])
}

/// Splits ChannelData into (channel, application data); `None` if malformed.
pub fn channel_data(b: &[u8]) -> Option<(u16, &[u8])> {
    if !is_channel_data(b) {
        return None;
    }
    let ch = u16::from_be_bytes([b[0], b[1]]);
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    b.get(4..4 + len).map(|d| (ch, d))
}

/// Total framed size of the message or ChannelData at the start of a TCP stream buffer
/// (ChannelData is padded to 4 bytes on streams). `None` until 4 bytes are there.
pub fn stream_frame_len(b: &[u8]) -> Option<usize> {
    if b.len() < 4 {
        return None;
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    if b[0] & 0xC0 == 0 {
        Some(20 + len)
    } else {
        Some(4 + len.div_ceil(4) * 4)
    }
}

fn split_type(t: u16) -> (u16, Class) {
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = match t & 0x0110 {
        0x000 => Class::Request,
        0x010 => Class::Indication,
        0x100 => Class::Success,
        _ => Class::Error,
    };
    (method, class)
}

fn join_type(method: u16, class: Class) -> u16 {
    (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | class.bits()
}

/// Frames `buf[at..at + len]` as ChannelData for channel `ch` by writing its 4-byte header
/// in front of it (and, when `padded`, zeros up to a multiple of 4 after it, as streams
/// need); returns the range to send. `buf` must have 4 bytes before `at` and 3 after.
pub fn channel_data_in_place(buf: &mut [u8], at: usize, len: usize, ch: u16, padded: bool) -> std::ops::Range<usize> {
    let start = at - 4;
    buf[start..start + 2].copy_from_slice(&ch.to_be_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
    let mut end = at + len;
    while padded && !(end - start).is_multiple_of(4) {
        buf[end] = 0;
        end += 1;
    }
    start..end
}

/// Frames `buf[at..at + len]` as a Data indication from `peer`: header, XOR-PEER-ADDRESS and
/// DATA written in front of it, padding after it; returns the range to send. `buf` must have
/// 48 bytes before `at` and 3 after.
pub fn data_indication_in_place(buf: &mut [u8], at: usize, len: usize, peer: SocketAddr) -> std::ops::Range<usize> {
    let tid: [u8; 12] = rand::random();
    let (addr, addr_len) = xor_addr_value(peer, &tid);
    let head_len = 20 + 4 + addr_len + 4;
    let pad = (4 - len % 4) % 4;
    let body = head_len - 20 + len + pad;
    let start = at - head_len;
    let h = &mut buf[start..at];
    h[0..2].copy_from_slice(&[0x00, 0x17]);
    h[2..4].copy_from_slice(&(body as u16).to_be_bytes());
    h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    h[8..20].copy_from_slice(&tid);
    h[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    h[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
    h[24..24 + addr_len].copy_from_slice(&addr[..addr_len]);
    h[24 + addr_len..26 + addr_len].copy_from_slice(&attr::DATA.to_be_bytes());
    h[26 + addr_len..28 + addr_len].copy_from_slice(&(len as u16).to_be_bytes());
    buf[at + len..at + len + pad].fill(0);
    start..at + len + pad
}

/// Decodes one STUN message; checks FINGERPRINT when present.
pub fn decode(b: &[u8]) -> Result<Message<'_>, StunError> {
    if b.len() < 20 {
        return Err(StunError::Length);
    }
    if !is_stun(b) {
        return Err(StunError::NotStun);
    }
    let len = u16::from_be_bytes([b[2], b[3]]) as usize;
    if !len.is_multiple_of(4) || 20 + len != b.len() {
        return Err(StunError::Length);
    }
    let (method, class) = split_type(u16::from_be_bytes([b[0], b[1]]));
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&b[8..20]);
    let mut attrs = Vec::new();
    let mut i = 20;
    let mut seen_integrity = false;
    while i < b.len() {
        let h = b.get(i..i + 4).ok_or(StunError::Attribute)?;
        let typ = u16::from_be_bytes([h[0], h[1]]);
        let alen = u16::from_be_bytes([h[2], h[3]]) as usize;
        let value = b.get(i + 4..i + 4 + alen).ok_or(StunError::Attribute)?;
        if attrs.len() >= MAX_ATTRS {
            return Err(StunError::TooManyAttributes);
        }
        // After MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count.
        if !seen_integrity || matches!(typ, attr::FINGERPRINT | attr::MESSAGE_INTEGRITY_SHA256) {
            attrs.push((typ, value, i));
        }
        if matches!(typ, attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256) {
            seen_integrity = true;
        }
        if typ == attr::FINGERPRINT {
            if alen != 4 || i + 8 != b.len() {
                return Err(StunError::Fingerprint);
            }
            let want = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
            if fingerprint(b, i) != want {
                return Err(StunError::Fingerprint);
            }
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    if i != b.len() {
        return Err(StunError::Attribute);
    }
    Ok(Message { method, class, tid, raw: b, attrs })
}

/// CRC-32 of `b[..upto]` with the length field adjusted to end after the FINGERPRINT.
fn fingerprint(b: &[u8], upto: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&b[0..2]);
    h.update(&((upto + 8 - 20) as u16).to_be_bytes());
    h.update(&b[4..upto]);
    h.finalize() ^ FINGERPRINT_XOR
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let Ok(mut m) = Hmac::<sha1::Sha1>::new_from_slice(key) else { return [0; 20] };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let Ok(mut m) = Hmac::<sha2::Sha256>::new_from_slice(key) else { return [0; 32] };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which integrity attribute a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
}

impl<'a> Message<'a> {
    /// The first value of attribute `typ`.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attrs.iter().find(|a| a.0 == typ).map(|a| a.1)
    }

    /// Every value of attribute `typ`.
    pub fn all(&self, typ: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.attrs.iter().filter(move |a| a.0 == typ).map(|a| a.1)
    }

    /// Comprehension-required attributes this server does not know.
    pub fn unknown_required(&self) -> Vec<u16> {
        self.attrs.iter().map(|a| a.0).filter(|t| *t < 0x8000 && !attr::KNOWN_REQUIRED.contains(t)).collect()
    }

    /// A UTF-8 attribute.
    pub fn text(&self, typ: u16) -> Option<&'a str> {
        self.get(typ).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A 32-bit attribute.
    pub fn u32(&self, typ: u16) -> Option<u32> {
        let v = self.get(typ)?;
        (v.len() == 4).then(|| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    /// An XOR-encoded address attribute value.
    pub fn xor_addr(&self, value: &[u8]) -> Option<SocketAddr> {
        decode_xor_addr(value, &self.tid)
    }

    /// Which integrity attribute is present (SHA-256 preferred).
    pub fn integrity(&self) -> Option<Integrity> {
        if self.get(attr::MESSAGE_INTEGRITY_SHA256).is_some() {
            Some(Integrity::Sha256)
        } else if self.get(attr::MESSAGE_INTEGRITY).is_some() {
            Some(Integrity::Sha1)
        } else {
            None
        }
    }

    /// Checks MESSAGE-INTEGRITY(-SHA256) with `key` (the long-term or short-term key).
    pub fn verify(&self, key: &[u8]) -> bool {
        let (typ, size) = match self.integrity() {
            Some(Integrity::Sha256) => (attr::MESSAGE_INTEGRITY_SHA256, 32),
            Some(Integrity::Sha1) => (attr::MESSAGE_INTEGRITY, 20),
            None => return false,
        };
        let Some(&(_, value, off)) = self.attrs.iter().find(|a| a.0 == typ) else { return false };
        if value.len() != size {
            return false;
        }
        let b = self.raw;
        let adj = ((off + 4 + size - 20) as u16).to_be_bytes();
        let parts: [&[u8]; 3] = [&b[0..2], &adj, &b[4..off]];
        match size {
            32 => ct_eq(&hmac_sha256(key, &parts), value),
            _ => ct_eq(&hmac_sha1(key, &parts), value),
        }
    }
}

fn decode_xor_addr(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match v[1] {
        0x01 if v.len() == 8 => {
            let mut ip = [0u8; 4];
            for k in 0..4 {
                ip[k] = v[4 + k] ^ cookie[k];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        0x02 if v.len() == 20 => {
            let mut ip = [0u8; 16];
            for k in 0..16 {
                let x = if k < 4 { cookie[k] } else { tid[k - 4] };
                ip[k] = v[4 + k] ^ x;
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// An XOR-encoded address attribute value: the bytes and how many of them are used
/// (8 for IPv4, 20 for IPv6). Fixed-size, so the relay's data path allocates nothing.
pub fn xor_addr_value(addr: SocketAddr, tid: &[u8; 12]) -> ([u8; 20], usize) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = (addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes();
    let mut v = [0u8; 20];
    v[2..4].copy_from_slice(&port);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = 1;
            for (k, o) in ip.octets().iter().enumerate() {
                v[4 + k] = o ^ cookie[k];
            }
            (v, 8)
        }
        IpAddr::V6(ip) => {
            v[1] = 2;
            for (k, o) in ip.octets().iter().enumerate() {
                let x = if k < 4 { cookie[k] } else { tid[k - 4] };
                v[4 + k] = o ^ x;
            }
            (v, 20)
        }
    }
}

/// Builds a message attribute by attribute.
pub struct Builder {
    buf: Vec<u8>,
    tid: [u8; 12],
}

impl Builder {
    /// Starts a message.
    pub fn new(method: u16, class: Class, tid: [u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&join_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid);
        Builder { buf, tid }
    }

    /// Appends an attribute with padding.
    pub fn attr(mut self, typ: u16, value: &[u8]) -> Self {
        self.put(typ, value);
        self
    }

    fn put(&mut self, typ: u16, value: &[u8]) {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self.set_len();
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - 20) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends a 32-bit attribute.
    pub fn u32(self, typ: u16, v: u32) -> Self {
        self.attr(typ, &v.to_be_bytes())
    }

    /// Appends an XOR-encoded address attribute.
    pub fn xor_addr(self, typ: u16, addr: SocketAddr) -> Self {
        let (v, n) = xor_addr_value(addr, &self.tid);
        self.attr(typ, &v[..n])
    }

    /// Appends ERROR-CODE.
    pub fn error(self, code: u16, reason: &str) -> Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    /// Appends MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 computed with `key`.
    pub fn integrity(mut self, key: &[u8], kind: Integrity) -> Self {
        let (typ, size) = match kind {
            Integrity::Sha1 => (attr::MESSAGE_INTEGRITY, 20usize),
            Integrity::Sha256 => (attr::MESSAGE_INTEGRITY_SHA256, 32usize),
        };
        let off = self.buf.len();
        let adj = ((off + 4 + size - 20) as u16).to_be_bytes();
        let parts: [&[u8]; 3] = [&self.buf[0..2], &adj, &self.buf[4..off]];
        match kind {
            Integrity::Sha1 => {
                let mac = hmac_sha1(key, &parts);
                self.put(typ, &mac);
            }
            Integrity::Sha256 => {
                let mac = hmac_sha256(key, &parts);
                self.put(typ, &mac);
            }
        }
        self
    }

    /// Appends FINGERPRINT and returns the datagram.
    pub fn fingerprint(mut self) -> Vec<u8> {
        let off = self.buf.len();
        self.buf.extend_from_slice(&attr::FINGERPRINT.to_be_bytes());
        self.buf.extend_from_slice(&4u16.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.set_len();
        let crc = fingerprint(&self.buf, off);
        let n = self.buf.len();
        self.buf[n - 4..].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }

    /// Returns the datagram without FINGERPRINT.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // RFC 5769 section 2.1: short-term credentials, password "VOkJxbRl1RmTxUk/WvJxBt".
    const REQUEST: &str = "00010058 2112a442 b7e7a701 bc34d686 fa87dfae 80220010 5354554e 20746573 7420636c 69656e74
        00240004 6e0001ff 80290008 932ff9b1 51263b36 00060009 6576746a 3a683676 59202020 00080014 9aeaa70c
        bfd8cb56 781ef2b5 b2d3f249 c1b571a2 80280004 e57a3bcf";
    // 2.2: IPv4 response, mapped 192.0.2.1:32853.
    const RESPONSE_V4: &str = "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 746f7220
        00200008 0001a147 e112a643 00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7 80280004 c07d4c96";
    // 2.3: IPv6 response, mapped [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    const RESPONSE_V6: &str = "01010048 2112a442 b7e7a701 bc34d686 fa87dfae 8022000b 74657374 20766563 746f7220
        00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9 00080014 a382954e 4be67bf1 1784c97c 8292c275
        bfe3ed41 80280004 c8fb0b4c";
    // 2.4: long-term credentials, key MD5("マトリックス:example.org:TheMatrIX").
    const LONG_TERM: &str = "00010060 2112a442 78ad3433 c6ad72c0 29da412e 00060012 e3839ee3 8388e383 aae38383
        e382afe3 82b90000 0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341 0014000b
        6578616d 706c652e 6f726700 00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666";

    #[test]
    fn rfc5769_request() {
        let b = hex(REQUEST);
        let m = decode(&b).unwrap();
        assert_eq!((m.method, m.class), (method::BINDING, Class::Request));
        assert_eq!(m.text(attr::USERNAME), Some("evtj:h6vY"));
        assert!(m.verify(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!m.verify(b"wrong"));
    }

    #[test]
    fn rfc5769_responses() {
        let b = hex(RESPONSE_V4);
        let m = decode(&b).unwrap();
        assert!(m.verify(b"VOkJxbRl1RmTxUk/WvJxBt"));
        let a = m.xor_addr(m.get(attr::XOR_MAPPED_ADDRESS).unwrap()).unwrap();
        assert_eq!(a, "192.0.2.1:32853".parse().unwrap());
        let b = hex(RESPONSE_V6);
        let m = decode(&b).unwrap();
        assert!(m.verify(b"VOkJxbRl1RmTxUk/WvJxBt"));
        let a = m.xor_addr(m.get(attr::XOR_MAPPED_ADDRESS).unwrap()).unwrap();
        assert_eq!(a, "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap());
    }

    #[test]
    fn rfc5769_long_term() {
        let b = hex(LONG_TERM);
        let m = decode(&b).unwrap();
        assert_eq!(m.text(attr::USERNAME), Some("マトリックス"));
        assert_eq!(m.text(attr::REALM), Some("example.org"));
        let key = crate::auth::long_term_key("マトリックス", "example.org", "TheMatrIX");
        assert!(m.verify(&key));
    }

    #[test]
    fn builder_round_trips_with_integrity_and_fingerprint() {
        let tid = [7u8; 12];
        for kind in [Integrity::Sha1, Integrity::Sha256] {
            let b = Builder::new(method::ALLOCATE, Class::Success, tid)
                .xor_addr(attr::XOR_RELAYED_ADDRESS, "[2001:db8::1]:4000".parse().unwrap())
                .u32(attr::LIFETIME, 600)
                .integrity(b"key", kind)
                .fingerprint();
            let m = decode(&b).unwrap();
            assert_eq!((m.method, m.class), (method::ALLOCATE, Class::Success));
            assert_eq!(m.u32(attr::LIFETIME), Some(600));
            assert!(m.verify(b"key"));
            assert_eq!(m.xor_addr(m.get(attr::XOR_RELAYED_ADDRESS).unwrap()), Some("[2001:db8::1]:4000".parse().unwrap()));
        }
    }

    #[test]
    fn corrupt_input_is_an_error_never_a_panic() {
        let b = hex(REQUEST);
        for cut in 0..b.len() {
            let _ = decode(&b[..cut]);
        }
        let mut bad = b.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(decode(&bad).unwrap_err(), StunError::Fingerprint);
        let mut bad = b.clone();
        bad[30] ^= 0xff;
        assert!(decode(&bad).is_err() || !decode(&bad).unwrap().verify(b"VOkJxbRl1RmTxUk/WvJxBt"));
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] = x[i].wrapping_add(0x55);
            let _ = decode(&x);
        }
        assert_eq!(channel_data(&[0x40, 0x00, 0x00, 0x08, 1, 2]), None);
        assert_eq!(channel_data(&[0x40, 0x01, 0x00, 0x02, 1, 2]), Some((0x4001, &[1u8, 2][..])));
    }
}
