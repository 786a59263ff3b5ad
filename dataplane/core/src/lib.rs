//! Spike's packet-processing core.
//!
//! Plain Rust with no DPDK dependency: the DPDK dataplane, the packet tracer and the
//! tests all run frames through this same code. Nothing here reads a clock; callers pass
//! the current time in nanoseconds so that timeouts are testable.

pub mod conntrack;
pub mod flow;
pub mod fragments;
pub mod maglev;
pub mod wire;
