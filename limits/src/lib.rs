//! Limits as plain state fed with time, shared by the control plane and the relay:
//! [`bucket`] (token buckets, one per source address) and [`gate`] (concurrent connections
//! per source and in total).

pub mod bucket;
pub mod gate;

pub use bucket::{Bucket, PerSource};
pub use gate::{Gate, Limits, Permit, Refused, Source};
