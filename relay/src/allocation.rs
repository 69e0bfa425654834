//! One allocation's state: its permissions, channels and bandwidth bucket, with their
//! lifetimes, as plain data fed with time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use limits::Bucket;

use crate::server::FiveTuple;

/// Why a permission or channel was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// The allocation holds its maximum of permissions.
    #[error("too many permissions on one allocation")]
    Permissions,
    /// The allocation holds its maximum of channels.
    #[error("too many channels on one allocation")]
    Channels,
    /// The channel is bound to another peer, or the peer to another channel.
    #[error("channel or peer bound elsewhere")]
    Conflict,
}

/// One allocation.
#[derive(Debug)]
pub struct Allocation {
    /// The client's 5-tuple.
    pub tuple: FiveTuple,
    /// The relayed transport address.
    pub relay: SocketAddr,
    /// Who owns it.
    pub username: String,
    /// When it expires unless refreshed.
    pub expires: Instant,
    /// Permissions by peer IP, with their expiry.
    pub permissions: HashMap<IpAddr, Instant>,
    /// Channels by number: peer and expiry.
    pub channels: HashMap<u16, (SocketAddr, Instant)>,
    /// Channel number by peer.
    pub peer_channel: HashMap<SocketAddr, u16>,
    /// Transaction id of the Allocate, for retransmissions.
    pub allocate_tid: [u8; 12],
    /// The Allocate's response, for retransmissions.
    pub allocate_response: Vec<u8>,
    /// Bandwidth cap: one second of `max-bps` in bits (None: no cap).
    pub bucket: Option<Bucket>,
    /// The deadline of this allocation's live entry in the server's timer heap, if any.
    pub scheduled: Option<Instant>,
}

impl Allocation {
    /// Takes `bytes` from the bandwidth cap at `now`; false when over it.
    pub fn within_rate(&mut self, now: Instant, bytes: usize) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.take_n(now, (bytes * 8) as f64))
    }

    /// Whether `ip` has a live permission at `now`.
    pub fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    /// Installs or refreshes the permission for `ip` until `until`; at most `max` peers.
    pub fn permit(&mut self, ip: IpAddr, until: Instant, max: usize) -> Result<(), Full> {
        if !self.permissions.contains_key(&ip) && self.permissions.len() >= max {
            return Err(Full::Permissions);
        }
        self.permissions.insert(ip, until);
        Ok(())
    }

    /// Whether `permit` would accept all of `ips` (so a request is applied whole or not at all).
    pub fn can_permit<'a>(&self, ips: impl IntoIterator<Item = &'a IpAddr>, max: usize) -> bool {
        let new: std::collections::HashSet<&IpAddr> = ips.into_iter().filter(|ip| !self.permissions.contains_key(ip)).collect();
        self.permissions.len() + new.len() <= max
    }

    /// Binds or refreshes channel `ch` to `peer` until `until`; at most `max` channels.
    pub fn bind_channel(&mut self, ch: u16, peer: SocketAddr, until: Instant, max: usize) -> Result<(), Full> {
        let conflict = self.channels.get(&ch).is_some_and(|(p, _)| *p != peer) || self.peer_channel.get(&peer).is_some_and(|c| *c != ch);
        if conflict {
            return Err(Full::Conflict);
        }
        if !self.channels.contains_key(&ch) && self.channels.len() >= max {
            return Err(Full::Channels);
        }
        self.channels.insert(ch, (peer, until));
        self.peer_channel.insert(peer, ch);
        Ok(())
    }

    /// Drops the permissions and channels that expired by `now`.
    pub fn expire(&mut self, now: Instant) {
        self.permissions.retain(|_, e| *e > now);
        let peer_channel = &mut self.peer_channel;
        self.channels.retain(|_, (peer, e)| {
            let live = *e > now;
            if !live {
                peer_channel.remove(peer);
            }
            live
        });
    }

    /// The earliest moment something of this allocation expires.
    pub fn next_deadline(&self) -> Instant {
        self.permissions.values().chain(self.channels.values().map(|(_, e)| e)).copied().fold(self.expires, Instant::min)
    }
}
