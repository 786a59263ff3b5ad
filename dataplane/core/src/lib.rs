//! Spike's packet-processing core.
//!
//! Plain Rust with no DPDK dependency: the DPDK dataplane, the packet tracer and the
//! tests all run frames through this same code. Nothing here reads a clock; callers pass
//! the current time in nanoseconds so that timeouts are testable.
//!
//! The entry point is [`Worker::process`]: one frame in, one [`Verdict`] out, against an
//! immutable [`Snapshot`] built from a [`Config`].

#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod encap;
mod fixed_table;
pub mod flow;
mod flow_table;
pub mod fragments;
mod held;
mod hint;
pub mod icmp;
pub mod maglev;
pub mod ratelimit;
pub mod snapshot;
pub mod snapshot_parts;
pub mod steer;
pub mod verdict;
pub mod wire;
pub mod worker;

pub use config::Config;
pub use counters::Counters;
pub use snapshot::Snapshot;
pub use verdict::{DropReason, KernelReason, Selection, Verdict};
pub use worker::{Output, Worker};
