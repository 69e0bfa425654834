//! Which peer addresses a relay may talk to (the CVE-2020-26262 class): private, loopback,
//! link-local, unspecified and multicast ranges are refused unless explicitly allowed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address range in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    net: IpAddr,
    prefix: u8,
}

/// A range that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid address range {0:?}: expected ADDR, ADDR/PREFIX or ADDR-ADDR")]
pub struct RangeError(String);

impl IpRange {
    /// `net/prefix`.
    pub const fn new(net: IpAddr, prefix: u8) -> Self {
        IpRange { net, prefix }
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix.min(32)) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix.min(128)) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RangeError(s.to_string());
        if let Some((a, p)) = s.split_once('/') {
            let net: IpAddr = a.trim().parse().map_err(|_| err())?;
            let prefix: u8 = p.trim().parse().map_err(|_| err())?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(err());
            }
            return Ok(IpRange { net, prefix });
        }
        // coturn also accepts "a-b"; we take exact single addresses or CIDR ranges only,
        // and a dash range whose ends are equal.
        let one = s.split('-').next().unwrap_or(s).trim();
        let net: IpAddr = one.parse().map_err(|_| err())?;
        Ok(IpRange { net, prefix: if net.is_ipv4() { 32 } else { 128 } })
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpRange {
    IpRange::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix)
}

const fn v6(segs: [u16; 8], prefix: u8) -> IpRange {
    IpRange::new(IpAddr::V6(Ipv6Addr::new(segs[0], segs[1], segs[2], segs[3], segs[4], segs[5], segs[6], segs[7])), prefix)
}

/// Refused by default.
pub const DEFAULT_DENIED: &[IpRange] = &[
    v4(0, 0, 0, 0, 8),
    v4(10, 0, 0, 0, 8),
    v4(100, 64, 0, 0, 10),
    v4(127, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
    v4(224, 0, 0, 0, 4),
    v4(240, 0, 0, 0, 4),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// The peer policy of a relay.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// `--allow-loopback-peers`.
    pub allow_loopback: bool,
    /// `--allowed-peer-ip`: allowed even when inside a denied range.
    pub allowed: Vec<IpRange>,
    /// `--denied-peer-ip`: refused in addition to the defaults.
    pub denied: Vec<IpRange>,
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses are judged as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v) => match v.to_ipv4_mapped() {
            Some(m) => IpAddr::V4(m),
            None => {
                let s = v.segments();
                if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
                    IpAddr::V4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8))
                } else {
                    ip
                }
            }
        },
        v4 => v4,
    }
}

impl PeerPolicy {
    /// Whether the relay may send to and receive from `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.allowed.iter().any(|r| r.contains(ip)) {
            return true;
        }
        if self.allow_loopback && ip.is_loopback() {
            return true;
        }
        !(DEFAULT_DENIED.iter().any(|r| r.contains(ip)) || self.denied.iter().any(|r| r.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_refuse_private_ranges_and_mapped_forms() {
        let p = PeerPolicy::default();
        for bad in ["127.0.0.1", "10.1.2.3", "172.16.5.4", "192.168.1.1", "169.254.1.1", "0.0.0.0", "224.0.0.1", "::1", "::", "fd00::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1"] {
            assert!(!p.permits(ip(bad)), "{bad} must be refused");
        }
        for good in ["192.0.2.10", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(p.permits(ip(good)), "{good} must be allowed");
        }
    }

    #[test]
    fn explicit_allow_and_deny() {
        let p = PeerPolicy { allow_loopback: true, allowed: vec!["10.0.0.0/8".parse().unwrap()], denied: vec!["192.0.2.0/24".parse().unwrap()] };
        assert!(p.permits(ip("127.0.0.1")) && p.permits(ip("::ffff:127.0.0.1")) && p.permits(ip("10.9.9.9")));
        assert!(!p.permits(ip("192.0.2.10")));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("nonsense".parse::<IpRange>().is_err());
    }
}
