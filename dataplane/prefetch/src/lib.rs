//! A cache prefetch hint.
//!
//! It is a crate of its own so that the packet-processing core keeps `unsafe_code`
//! denied.
//!
//! Bursts of packets touch conntrack lines scattered over hundreds of megabytes. Issuing
//! the loads for a whole burst before processing it lets their memory latency overlap.
//! BENCHMARKS.md compares the decision with and without it.
#![allow(unsafe_code)] // The one intrinsic call below, with its SAFETY comment.

/// Asks the CPU to bring the cache line holding `value` into all cache levels.
#[inline(always)]
pub fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint that never faults and has no architectural effect, so
    // any address is sound; `value` is a live reference besides. SSE, which provides the
    // instruction, is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
