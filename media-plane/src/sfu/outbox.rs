//! What one core produces for the world outside it: datagrams, control-link events, and
//! messages for the other cores. Kept apart from the session table so that code holding a
//! session can queue output without a second borrow of the table.

use std::net::SocketAddr;

use link::Event as LinkEvent;

use super::cross::CrossMsg;

/// A datagram to send from this core's socket.
#[derive(Debug)]
pub struct Transmit {
    /// Destination address.
    pub destination: SocketAddr,
    /// Encrypted datagram.
    pub contents: Vec<u8>,
}

/// Output of a core since the loop last drained it.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Datagrams for the socket.
    pub transmits: Vec<Transmit>,
    /// Events for the control plane.
    pub events: Vec<LinkEvent>,
    /// Messages for other cores, as (core, message).
    pub cross: Vec<(u32, CrossMsg)>,
}
