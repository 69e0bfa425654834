//! Limits shared by the control plane, the relay and the load tester: [`bucket`] (token
//! buckets, one per source address) and [`gate`] (concurrent connections per source and in
//! total), plain state fed with time; [`open_files`], the process's descriptor limit; and
//! [`stop`], the signals that ask a process to stop.

pub mod bucket;
pub mod gate;
pub mod open_files;
pub mod stop;

pub use bucket::{Bucket, PerSource};
pub use gate::{Gate, Limits, Permit, Refused, Source};
