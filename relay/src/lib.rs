//! The TURN/STUN relay: a sans-IO [`server::Server`] per core, its codec ([`stun`]),
//! authentication ([`auth`]) and peer policy ([`policy`]); [`runtime`] runs it on every core.

pub mod allocation;
pub mod auth;
pub mod conf;
pub mod counters;
pub mod metrics;
pub mod policy;
pub mod runtime;
pub mod server;
pub mod stun;
