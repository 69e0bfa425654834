//! Keeping the candidate pair of a session alive while its peer's traffic flows, for peers
//! that send no consent checks (`crate::keepalive`).

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::ids::SessionKey;
use super::Core;
use crate::demux;

impl Core {
    /// After `data` from `source` reached session `key`: learns the peer's ufrag and the time
    /// of its check from a Binding request that proves the session's password, or, for any
    /// other datagram of a connected session, hands its `Rtc` a keepalive request when one is
    /// due (the peer's own checks stopped).
    pub(super) fn keep_alive(&mut self, now: Instant, key: SessionKey, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(key) else { return };
        if demux::is_binding_request(data) {
            // Only a check that proves the session's password counts (one HMAC per consent
            // check, every few seconds): a forged one could otherwise silence the requests.
            if let Some((local, remote)) = demux::stun_ufrags(data) {
                if local == s.ufrag && demux::binding_integrity_ok(data, s.ice_pass.as_bytes()) {
                    if !s.liveness.knows(remote) {
                        s.liveness.learn(remote);
                    }
                    s.liveness.heard(now);
                }
            }
            return;
        }
        if !s.connected {
            return;
        }
        let Some(request) = s.liveness.due(now, &s.ufrag, &s.ice_pass) else { return };
        let Ok(contents) = request.as_slice().try_into() else { return };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %s.id, error = %e, "keepalive request rejected");
        }
    }
}
