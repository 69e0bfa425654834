//! The control plane: REST API, access tokens, WebSocket signaling, WHIP/WHEP, room
//! placement on media-plane nodes, and the web app. It never handles a media packet: the
//! media plane does, and the two talk over the control link ([`nodes`], crate `link`).

pub mod accept;
pub mod admit;
pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod launch;
pub mod metrics;
pub mod nodes;
pub mod observe;
pub mod placement;
pub mod revoke;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod signal;
pub mod state;
pub mod subscribe;
pub mod supervise;
pub mod throttle;
pub mod token;
pub mod web;
pub mod webhook;
pub mod whip;
