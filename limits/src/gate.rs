//! Limits on concurrent connections, per source address and in total.
//!
//! A [`Gate`] hands out a [`Permit`] per connection; dropping the permit gives its place back.
//! IPv6 sources are counted per /64, the block one subscriber usually holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How many connections may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In total.
    pub total: u32,
    /// From one source (an IPv4 address or an IPv6 /64).
    pub per_source: u32,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The total limit is reached.
    #[error("too many connections in total")]
    Total,
    /// The limit for this source is reached.
    #[error("too many connections from this address")]
    Source,
}

/// The key a source is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The counting key of `ip`: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Source(IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0]))
                }
            },
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    by_source: HashMap<Source, u32>,
}

/// Counts open connections against [`Limits`]; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Gate {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; its place is given back on drop.
#[derive(Debug)]
pub struct Permit {
    source: Source,
    counts: Arc<Mutex<Counts>>,
}

impl Gate {
    /// A gate with nothing open.
    pub fn new(limits: Limits) -> Self {
        Gate {
            limits,
            counts: Arc::default(),
        }
    }

    /// Admits one more connection from `ip`, or says which limit stops it.
    pub fn admit(&self, ip: IpAddr) -> Result<Permit, Refused> {
        let source = Source::of(ip);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.limits.total {
            return Err(Refused::Total);
        }
        let n = c.by_source.entry(source).or_insert(0);
        if *n >= self.limits.per_source {
            return Err(Refused::Source);
        }
        *n += 1;
        c.total += 1;
        Ok(Permit {
            source,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now, in total and from `ip`'s source.
    pub fn open(&self, ip: IpAddr) -> (u32, u32) {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        (
            c.total,
            c.by_source.get(&Source::of(ip)).copied().unwrap_or(0),
        )
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_then_total_and_places_come_back() {
        let g = Gate::new(Limits {
            total: 3,
            per_source: 2,
        });
        let a1 = g.admit(ip("10.0.0.1")).unwrap();
        let _a2 = g.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.1")).unwrap_err(), Refused::Source);
        let _b = g.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.3")).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(g.open(ip("10.0.0.1")), (2, 1));
        assert!(g.admit(ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let g = Gate::new(Limits {
            total: 10,
            per_source: 1,
        });
        let _a = g.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            g.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refused::Source
        );
        assert!(g.admit(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = g.admit(ip("192.0.2.7")).unwrap();
        assert_eq!(
            g.admit(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refused::Source
        );
    }

    #[test]
    fn the_table_forgets_closed_sources() {
        let g = Gate::new(Limits {
            total: 10_000,
            per_source: 1,
        });
        for i in 0..1000u32 {
            let p = g.admit(IpAddr::from(i.to_be_bytes())).unwrap();
            drop(p);
        }
        assert_eq!(g.counts.lock().unwrap().by_source.len(), 0);
    }
}
