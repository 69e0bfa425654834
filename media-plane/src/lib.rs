//! The media plane: a thread-per-core SFU built on str0m.
//!
//! Data path on one core: [`worker`] receives datagrams in batches on the core's own UDP
//! socket (io_uring, or recvmmsg/sendmmsg as a fallback; `percore::batch`), feeds them to the
//! sans-IO [`sfu::Core`], and sends what the core produces in one submission per turn. [`link_client`] connects the node to
//! the control plane.

pub mod allocate;
pub mod codec;
pub mod crypto;
pub mod demux;
pub mod keepalive;
pub mod layers;
pub mod link_client;
pub mod losscap;
pub mod metrics;
pub mod probe;
pub mod rewrite;
pub mod sfu;
pub mod sim;
pub mod vp8munge;
pub mod worker;
