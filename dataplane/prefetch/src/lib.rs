//! A cache prefetch hint and a huge-page hint for large tables.
//!
//! It is a crate of its own so that the packet-processing core keeps `unsafe_code`
//! denied.
//!
//! Bursts of packets touch conntrack lines scattered over tens of megabytes. Issuing the
//! loads for a whole burst before processing it lets their memory latency overlap, and
//! backing the table with 2 MiB pages spares most of those loads a page-table walk.
//! BENCHMARKS.md compares the decision with and without each.
#![allow(unsafe_code)] // Two calls below, each with its SAFETY comment.

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

/// Asks the kernel to back the unused capacity of `buffer` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`), so that the pages faulted in when it is filled are 2 MiB
/// where the kernel can provide them. Call it before writing the elements. Only whole
/// 4 KiB pages inside the spare capacity are advised. The hint takes effect when
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`; a failure is
/// ignored because the table works the same on small pages.
pub fn advise_huge_pages<T>(buffer: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE_BYTES: usize = 4096;
        let spare = buffer.spare_capacity_mut();
        let start = spare.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(spare);
        let first_page = start.next_multiple_of(PAGE_BYTES);
        let last_page = end / PAGE_BYTES * PAGE_BYTES;
        if last_page > first_page {
            // SAFETY: [first_page, last_page) lies inside the spare capacity of `buffer`,
            // which this function borrows mutably, so no other code uses that memory now.
            // MADV_HUGEPAGE changes only how the kernel backs the pages, never their
            // contents, and the range is page-aligned as madvise requires.
            unsafe {
                libc::madvise(
                    first_page as *mut libc::c_void,
                    last_page - first_page,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buffer;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_advice_keeps_vector_intact() {
        let mut empty: Vec<u64> = Vec::new();
        advise_huge_pages(&mut empty);
        assert!(empty.is_empty());

        let count = 3 << 20;
        let mut table: Vec<u64> = Vec::with_capacity(count);
        table.push(7);
        let capacity = table.capacity();
        advise_huge_pages(&mut table);
        assert_eq!(table.capacity(), capacity);
        assert_eq!(table, [7]);
        table.resize(count, 9);
        assert_eq!(table[0], 7);
        assert!(table[1..].iter().all(|&value| value == 9));
    }
}
