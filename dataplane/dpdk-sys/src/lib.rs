//! Raw bindings to DPDK 22.11 (EAL, mempool, mbuf, ring, ethdev, lcore launch)
//! and to a C shim that turns DPDK's static inline fast path into real
//! functions (`spike_*`).
//!
//! Only the items that the `spike-dpdk` crate uses are generated. To use
//! another DPDK function, add it to the allowlist in `build.rs`. The mempool
//! and ring structs are opaque. `rte_mbuf` keeps its layout, which bindgen
//! checks against the headers at compile time, so the fast path reads and
//! updates its fields in Rust. Its bit-fields are written through the shim.
//!
//! Every function here is unsafe and follows DPDK's own contract. The safe
//! wrapper is `spike-dpdk`.

// This crate is the FFI boundary itself: every item is an `extern` function
// or a C layout type, so the workspace-wide ban on unsafe code cannot apply.
#![allow(unsafe_code)]

// bindgen's output uses C names and generates unsafe bit-field accessors
// without SAFETY comments. The allow covers only the generated module;
// unknown_lints keeps compilers older than unnecessary_transmutes quiet.
#[allow(
    unknown_lints,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_debug_implementations,
    unnecessary_transmutes,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use bindings::*;
