//! What each core's TURN server counts, in plain integers on its own thread; `metrics`
//! turns the differences into Prometheus counters.

/// Counters of one core.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Packets relayed client to peer.
    pub to_peer: u64,
    /// Packets relayed peer to client.
    pub to_client: u64,
    /// Payload bytes relayed client to peer.
    pub bytes_to_peer: u64,
    /// Payload bytes relayed peer to client.
    pub bytes_to_client: u64,
    /// Datagrams dropped (malformed, no permission, over the bandwidth cap).
    pub dropped: u64,
    /// Allocations made.
    pub allocations: u64,
    /// Requests refused, by the error code's place in [`REFUSAL_CODES`] (last: any other).
    pub refused: [u64; REFUSAL_CODES.len() + 1],
}

/// The error codes counted one by one; 401 includes the challenge every client gets first.
pub const REFUSAL_CODES: [u16; 11] = [400, 401, 403, 420, 437, 438, 441, 442, 443, 486, 508];

/// Where `code` is counted in [`Counters::refused`].
pub fn refusal_slot(code: u16) -> usize {
    REFUSAL_CODES.iter().position(|c| *c == code).unwrap_or(REFUSAL_CODES.len())
}
