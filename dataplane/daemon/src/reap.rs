//! How many conntrack slots a worker reaps per poll.
//!
//! [`spike_core::Worker::reap`] visits slots in table order from where the previous call
//! stopped, wrapping around, and removes the expired entries among them. [`ReapPacer`]
//! sizes each call by elapsed time instead of by poll. Slots fall due at a rate of one
//! table per [`SWEEP_NS`] and every poll visits what has fallen due, so the cursor passes
//! every slot at least once per [`SWEEP_NS`], however fast or slow the polls come.
//!
//! A busy poll therefore visits few slots. The default capacity of 2^20 flows is about
//! 1.4 million slots, which at 6 Mpps is about 7 slots per poll of 32 frames. A poll that
//! received less than a full burst visits [`SLACK_SLOTS_PER_FREE_FRAME`] more for each
//! frame short of [`BURST_SIZE`], because the idle loop has the time.
//!
//! This keeps up with expiry across the whole table, because an entry is removed at most
//! [`SWEEP_NS`] plus one poll after it expires. Entries expire no faster than they were
//! inserted, and each lives at least the shortest conntrack timeout (10 s by default). So
//! in a steady state the expired entries that wait for the reaper are at most
//! [`SWEEP_NS`] / 10 s, a tenth, of the live ones. A shorter timeout raises that share.
//! Waiting entries delay only the table's entry gauge and its full check, because an
//! insert also reuses an expired slot in its own buckets.
//!
//! The guarantee holds while each poll's due share stays below [`MAX_SLOTS_PER_POLL`].
//! At the largest table (2^24 flows, about 22 million slots) that needs a poll at least
//! every 180 µs. Slower polls carry the rest over, up to one whole sweep, and the sweep
//! then takes longer.

use spike_dpdk::BURST_SIZE;

/// Time in which reaping visits every slot of the conntrack table at least once.
pub const SWEEP_NS: u64 = 1_000_000_000;

/// Slots a poll visits beyond its due share for each frame it received short of a full
/// burst. An idle poll visits 128 more.
pub const SLACK_SLOTS_PER_FREE_FRAME: usize = 4;

/// Upper bound of one poll's visits, so that a poll after a long stall (a debugger, a
/// descheduled lcore) does not stop forwarding while it sweeps a large table.
pub const MAX_SLOTS_PER_POLL: usize = 4096;

/// Returns an upper bound of the slot count of a conntrack table for `capacity` flows.
/// spike-core allocates ceil(capacity × 4/3) slots, rounded up to whole buckets of 2.
pub fn table_slots(capacity: usize) -> usize {
    capacity + capacity.div_ceil(3) + 1
}

/// Fraction bits of [`ReapPacer`]'s fixed-point slot counts. With 32 of them a small
/// table still falls due at its exact rate over many polls.
const FRACTION_BITS: u32 = 32;

/// Pacer of conntrack reaping that accrues due slots over time, as the module
/// documentation describes.
#[derive(Debug)]
pub struct ReapPacer {
    /// Slots that fall due per nanosecond, in fixed point, rounded up.
    rate: u64,
    /// Slots due and not yet visited, in fixed point, at most one table.
    owed: u64,
    /// One table of slots in fixed point, the most that can be owed.
    max_owed: u64,
    sweep_ns: u64,
    last_ns: u64,
}

impl ReapPacer {
    /// Creates a pacer for a table of at most `slots` slots that sweeps it every
    /// `sweep_ns`, starting at `now_ns`. Overstating `slots` only sweeps sooner.
    pub fn new(slots: usize, sweep_ns: u64, now_ns: u64) -> ReapPacer {
        // Tables have fewer than 2^26 slots, so every product below fits 64 bits.
        let max_owed = (slots as u64) << FRACTION_BITS;
        let sweep_ns = sweep_ns.max(1);
        ReapPacer {
            rate: max_owed.div_ceil(sweep_ns),
            owed: 0,
            max_owed,
            sweep_ns,
            last_ns: now_ns,
        }
    }

    /// Returns how many slots to visit in a poll at `now_ns` that received `received`
    /// frames.
    #[inline]
    pub fn slots_for_poll(&mut self, now_ns: u64, received: usize) -> usize {
        // A longer gap owes no more than one sweep, and a clock that steps back owes
        // nothing.
        let elapsed_ns = now_ns.saturating_sub(self.last_ns).min(self.sweep_ns);
        self.last_ns = now_ns;
        self.owed = (self.owed + elapsed_ns * self.rate).min(self.max_owed);

        let due = (self.owed >> FRACTION_BITS) as usize;
        let slack = SLACK_SLOTS_PER_FREE_FRAME * BURST_SIZE.saturating_sub(received);
        let slots = (due + slack).min(MAX_SLOTS_PER_POLL);
        // Slack visits are not credited against later polls, so the due share is never
        // skipped.
        self.owed -= (slots.min(due) as u64) << FRACTION_BITS;
        slots
    }
}

#[cfg(test)]
mod tests {
    use spike_core::conntrack::{Conntrack, Timeouts};

    use super::*;

    const MS: u64 = 1_000_000;

    /// Runs polls spaced by `gaps_ns` in turn, each receiving `received` frames, and a
    /// last poll at `total_ns` from the start. Returns the slots visited.
    fn visit(pacer: &mut ReapPacer, gaps_ns: &[u64], received: usize, total_ns: u64) -> usize {
        let mut now_ns = pacer.last_ns;
        let end_ns = now_ns + total_ns;
        let mut visited = 0;
        for gap_ns in gaps_ns.iter().cycle() {
            if now_ns + gap_ns > end_ns {
                break;
            }
            now_ns += gap_ns;
            visited += pacer.slots_for_poll(now_ns, received);
        }
        if now_ns < end_ns {
            visited += pacer.slots_for_poll(end_ns, received);
        }
        visited
    }

    #[test]
    fn full_bursts_visit_only_due_slots() {
        // 1.4 million slots and a full burst every 5 µs, 6.4 Mpps.
        let mut pacer = ReapPacer::new(1_400_000, SWEEP_NS, 0);
        let per_poll = pacer.slots_for_poll(5_000, BURST_SIZE);
        assert!(per_poll <= 8, "{per_poll} slots in one busy poll");
    }

    #[test]
    fn full_bursts_sweep_whole_table() {
        for slots in [2, 1000, 26_670, 1_400_000, 22_369_622] {
            for gaps_ns in [&[5_000][..], &[1_000, 90_000, 3_000], &[170_000]] {
                let mut pacer = ReapPacer::new(slots, SWEEP_NS, 1_000);
                let visited = visit(&mut pacer, gaps_ns, BURST_SIZE, SWEEP_NS);
                assert!(
                    visited + 1 >= slots,
                    "{visited} of {slots} slots visited in one sweep time, gaps {gaps_ns:?}"
                );
            }
        }
    }

    #[test]
    fn full_bursts_do_not_overshoot() {
        let slots = 1_400_000;
        let mut pacer = ReapPacer::new(slots, SWEEP_NS, 0);
        let visited = visit(&mut pacer, &[5_000], BURST_SIZE, 10 * SWEEP_NS);
        // The rate is rounded up by less than one slot per 2^32 ns.
        assert!(
            visited <= 10 * slots + 3,
            "{visited} slots in ten sweep times"
        );
    }

    #[test]
    fn idle_polls_visit_more_than_busy_ones() {
        let mut busy = ReapPacer::new(1_400_000, SWEEP_NS, 0);
        let mut idle = ReapPacer::new(1_400_000, SWEEP_NS, 0);
        let busy_slots = busy.slots_for_poll(1_000, BURST_SIZE);
        let idle_slots = idle.slots_for_poll(1_000, 0);
        assert_eq!(
            idle_slots,
            busy_slots + SLACK_SLOTS_PER_FREE_FRAME * BURST_SIZE
        );
        let partial_slots = ReapPacer::new(1_400_000, SWEEP_NS, 0).slots_for_poll(1_000, 16);
        assert_eq!(partial_slots, busy_slots + SLACK_SLOTS_PER_FREE_FRAME * 16);
    }

    #[test]
    fn slack_does_not_cancel_due_slots() {
        let slots = 1_000_000;
        let mut pacer = ReapPacer::new(slots, SWEEP_NS, 0);
        // After half a sweep of idle polls, the busy half still gets its due share.
        visit(&mut pacer, &[1_000], 0, SWEEP_NS / 2);
        let busy = visit(&mut pacer, &[5_000], BURST_SIZE, SWEEP_NS / 2);
        assert!(busy + 1 >= slots / 2, "{busy} slots in the busy half");
    }

    #[test]
    fn stall_is_spread_over_polls() {
        let slots = 22_369_622;
        let mut pacer = ReapPacer::new(slots, SWEEP_NS, 0);
        assert_eq!(
            pacer.slots_for_poll(50 * MS, BURST_SIZE),
            MAX_SLOTS_PER_POLL
        );
        // The 50 ms owed is visited by later polls, which add their own due share.
        let visited = MAX_SLOTS_PER_POLL + visit(&mut pacer, &[5_000], BURST_SIZE, 950 * MS);
        assert!(
            visited + 1 >= slots,
            "{visited} of {slots} slots in one sweep time"
        );
    }

    #[test]
    fn table_slots_bounds_core_tables() {
        let timeouts = Timeouts {
            tcp_syn_ns: 1,
            tcp_established_ns: 1,
            tcp_closing_ns: 1,
            udp_ns: 1,
            other_ns: 1,
        };
        for capacity in [1, 2, 3, 4, 5, 6, 7, 1000, 20_000, 1 << 20] {
            let table = Conntrack::<u32>::new(capacity, timeouts).unwrap();
            let bound = table_slots(capacity);
            assert!(bound >= table.slot_count(), "capacity {capacity}");
            assert!(bound <= table.slot_count() + 1, "capacity {capacity}");
        }
    }

    #[test]
    fn clock_step_back_owes_nothing() {
        let mut pacer = ReapPacer::new(1_000_000, SWEEP_NS, 10 * MS);
        assert_eq!(pacer.slots_for_poll(5 * MS, BURST_SIZE), 0);
    }

    #[test]
    fn long_gap_owes_at_most_one_sweep() {
        let slots = 3_000;
        let mut pacer = ReapPacer::new(slots, SWEEP_NS, 0);
        assert_eq!(pacer.slots_for_poll(10 * SWEEP_NS, BURST_SIZE), slots);
        assert_eq!(pacer.slots_for_poll(10 * SWEEP_NS + 1, BURST_SIZE), 0);
    }
}
