//! Webhooks: room and participant events POSTed to the operator's URLs, signed with the API
//! secret (Standard Webhooks), delivered in order per URL, retried with backoff, and never
//! in the way of signaling (events are queued without waiting, and dropped when the queue
//! is full).

pub mod deliver;
pub mod event;
pub mod retry;
pub mod sign;

pub use deliver::Notifier;
pub use event::{Event, Kind, RoomInfo};
