//! Which peer addresses a relay may talk to (the CVE-2020-26262 class): private, loopback,
//! link-local, unspecified, multicast, benchmarking and IPv4-embedding IPv6 ranges are refused
//! unless explicitly allowed; the relay's own sockets are refused always.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    v4(198, 18, 0, 0, 15),
    v4(224, 0, 0, 0, 4),
    v4(240, 0, 0, 0, 4),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
    // NAT64 (RFC 6052, RFC 8215), 6to4 and Teredo: IPv4 behind an IPv6 address.
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// An inclusive range of ports: `PORT` or `LOW-HIGH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub low: u16,
    /// Highest port.
    pub high: u16,
}

/// A port range that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid port range {0:?}: expected PORT or LOW-HIGH")]
pub struct PortRangeError(String);

impl PortRange {
    /// Whether `port` is inside.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PortRangeError(s.to_string());
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (low, high): (u16, u16) = (a.trim().parse().map_err(|_| err())?, b.trim().parse().map_err(|_| err())?);
        if low > high {
            return Err(err());
        }
        Ok(PortRange { low, high })
    }
}

/// The relay's own listening sockets: its addresses (listening, relayed, advertised) on its
/// listening ports. A peer there would be the relay answering itself.
#[derive(Debug, Clone, Default)]
pub struct OwnSockets {
    /// The relay's addresses.
    pub ips: Vec<IpAddr>,
    /// The relay's ports.
    pub ports: Vec<PortRange>,
}

impl OwnSockets {
    /// Whether `peer` is one of the relay's own sockets.
    pub fn contains(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        self.ips.iter().any(|o| canonical(*o) == ip) && self.ports.iter().any(|r| r.contains(peer.port()))
    }
}

/// The peer policy of a relay.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// `--allow-loopback-peers`.
    pub allow_loopback: bool,
    /// `--allowed-peer-ip`: allowed even when inside a denied range.
    pub allowed: Vec<IpRange>,
    /// `--denied-peer-ip`: refused in addition to the defaults.
    pub denied: Vec<IpRange>,
    /// `--allowed-peer-ports`: when set, an address let through only by `allowed` or
    /// `allow_loopback` is reachable on these ports alone (the media plane's, in `local` mode).
    pub exception_ports: Vec<PortRange>,
    /// Never a peer.
    pub own: OwnSockets,
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
    /// Whether the relay may hold a permission for `ip` (permissions are per address).
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.excepted(ip) || !self.refused(ip)
    }

    /// Whether the relay may send to `peer`: its address is permitted, it is not one of the
    /// relay's own sockets, and an address reached only by exception is on an allowed port.
    pub fn permits_peer(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        if self.own.contains(peer) {
            return false;
        }
        if !self.refused(ip) {
            return true;
        }
        self.excepted(ip) && (self.exception_ports.is_empty() || self.exception_ports.iter().any(|r| r.contains(peer.port())))
    }

    fn excepted(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|r| r.contains(ip)) || (self.allow_loopback && ip.is_loopback())
    }

    fn refused(&self, ip: IpAddr) -> bool {
        DEFAULT_DENIED.iter().any(|r| r.contains(ip)) || self.denied.iter().any(|r| r.contains(ip))
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
        for bad in [
            "127.0.0.1", "10.1.2.3", "172.16.5.4", "192.168.1.1", "169.254.1.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "198.18.0.1", "198.19.255.255",
            "::1", "::", "fd00::1", "fe80::1", "fec0::1", "ff02::1", "ff0e::1", "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "2002:7f00:1::1", "2001:0:4136:e378::1",
            "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} must be refused");
        }
        for good in ["192.0.2.10", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(p.permits(ip(good)), "{good} must be allowed");
        }
    }

    #[test]
    fn explicit_allow_and_deny() {
        let p = PeerPolicy { allow_loopback: true, allowed: vec!["10.0.0.0/8".parse().unwrap()], denied: vec!["192.0.2.0/24".parse().unwrap()], ..Default::default() };
        assert!(p.permits(ip("127.0.0.1")) && p.permits(ip("::ffff:127.0.0.1")) && p.permits(ip("10.9.9.9")));
        assert!(!p.permits(ip("192.0.2.10")));
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("nonsense".parse::<IpRange>().is_err());
    }

    #[test]
    fn own_sockets_are_never_peers_and_exceptions_keep_to_their_ports() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let p = PeerPolicy {
            allow_loopback: true,
            allowed: vec!["192.168.1.5".parse().unwrap()],
            exception_ports: vec!["50000-50001".parse().unwrap()],
            own: OwnSockets { ips: vec![ip("203.0.113.1"), ip("127.0.0.1"), ip("192.168.1.5")], ports: vec!["3478".parse().unwrap(), "5349".parse().unwrap()] },
            ..Default::default()
        };
        assert!(!p.permits_peer(sa("203.0.113.1:3478")) && !p.permits_peer(sa("203.0.113.1:5349")), "the relay's listening sockets");
        assert!(p.permits_peer(sa("203.0.113.1:50000")) && p.permits_peer(sa("203.0.113.1:8443")), "a public address is not an exception");
        assert!(p.permits_peer(sa("127.0.0.1:50000")) && p.permits_peer(sa("192.168.1.5:50001")), "the media plane's ports");
        for shut in ["127.0.0.1:53", "127.0.0.1:8443", "127.0.0.1:3478", "192.168.1.5:22", "[::ffff:127.0.0.1]:8443"] {
            assert!(!p.permits_peer(sa(shut)), "{shut}");
        }
        assert!(p.permits(ip("127.0.0.1")), "the permission itself is per address");
        assert!("70000".parse::<PortRange>().is_err() && "9-8".parse::<PortRange>().is_err());
    }
}
