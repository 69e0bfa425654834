//! Limits shared by the control plane, the relay and the load tester: [`bucket`] (token
//! buckets, one per source address) and [`gate`] (concurrent connections per source and in
//! total), plain state fed with time; and [`open_files`], the process's descriptor limit.

pub mod bucket;
pub mod gate;
pub mod open_files;

pub use bucket::{Bucket, PerSource};
pub use gate::{Gate, Limits, Permit, Refused, Source};
