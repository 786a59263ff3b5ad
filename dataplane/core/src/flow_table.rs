//! Fixed-capacity table of flows keyed by their 64-bit flow hash, for the connection table.
//!
//! Design:
//! - An entry is the flow hash, the expiry and the value: 32 bytes for the worker's value.
//!   A bucket of [`BUCKET_ENTRIES`] entries is one 64-byte cache line. Each flow has two
//!   candidate buckets, and an insert uses the first unless it is full. In a table filled to
//!   half its capacity, 93% of entries sit in their first bucket (74% when full). A lookup is
//!   therefore prefetched in two steps. [`FlowTable::prefetch`] brings in the first bucket.
//!   Once that line has arrived, [`FlowTable::prefetch_overflow`] brings in the second only
//!   if the first lacks the flow. Most lookups read one line from memory instead of two.
//!   Prefetching both lines for every lookup was measured slower at 1M flows, and so were
//!   buckets of four entries in two lines (BENCHMARKS.md).
//! - The table stores no key, only the hash. Two distinct flows are mistaken for one another
//!   only when their 64-bit SipHash values are equal. A lookup compares with the 4 entries of
//!   its two buckets, so this happens with a probability of at most 4 × 2^-64 (about
//!   2 × 10^-19). SipHash under the cluster's secret key gives a sender no way to aim for
//!   it. The stored hash 0 marks an empty slot, so a flow whose hash is 0 is stored as 1,
//!   which keeps both of its buckets.
//! - The bucket count is `ceil(capacity / (BUCKET_ENTRIES × 3/4))`, not a power of two, and a
//!   hash half is mapped to a bucket by multiplication and shift, so memory follows the
//!   capacity: at most 4/3 slots per flow of capacity plus one bucket, about 43 bytes per
//!   flow with 32-byte entries.
//! - An insert takes an empty slot of the first candidate bucket, or of the second. When both
//!   are full it reuses an expired entry of either bucket, and failing that it moves entries to
//!   their other candidate bucket (cuckoo hashing) along the shortest chain that ends in an
//!   empty slot, found by a bounded breadth-first search. Cuckoo hashing with two choices and
//!   two-entry buckets can fill to almost 90% (the known threshold is about 89.7%), so the
//!   3/4 load leaves a margin, and the tests fill tables to capacity. An entry can therefore move
//!   when another flow is inserted, and a slot index is valid only until the next insert.
//! - [`FlowTable::insert`] never stores more than `capacity` entries.

use std::fmt;

/// Entries per bucket: two 32-byte entries fill one cache line.
pub(crate) const BUCKET_ENTRIES: usize = 2;

/// Maximum share of slots in use when the table stores `capacity` entries.
const MAX_LOAD_NUMERATOR: usize = 3;
const MAX_LOAD_DENOMINATOR: usize = 4;

/// Largest accepted capacity. It bounds the memory one table may take (about 680 MiB) and
/// keeps every slot index within `u32` and every bucket count below 2^32, as the range
/// reduction needs.
pub(crate) const MAX_CAPACITY: usize = 1 << 24;

/// The stored hash of an empty slot.
const EMPTY: u64 = 0;

/// Maximum number of entries one insert examines for a chain of cuckoo moves, which bounds
/// the work of an insert.
const MAX_SEARCH_SLOTS: usize = 64;

/// Parent of a search node that is one of the new flow's own slots.
const NO_PARENT: usize = usize::MAX;

#[derive(Clone, Copy)]
pub(crate) struct Entry<V> {
    /// The flow hash, or [`EMPTY`].
    hash: u64,
    pub(crate) expires_ns: u64,
    pub(crate) value: V,
}

/// Entries of one bucket, aligned so that a bucket is exactly one cache line.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Bucket<V>([Entry<V>; BUCKET_ENTRIES]);

/// Capacity rejected by [`FlowTable::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CapacityError {
    Zero,
    TooLarge(usize),
}

/// No empty or expired slot was left for a new flow, and no entry could move to make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// Placement of an entry by [`FlowTable::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// The flow had an entry, live or expired, which was overwritten.
    Existing,
    /// An empty slot, found directly or made by moving other entries.
    Empty,
    /// The slot of another flow's expired entry.
    ReplacedExpired,
}

pub(crate) struct FlowTable<V> {
    buckets: Box<[Bucket<V>]>,
    bucket_count: u64,
    capacity: usize,
    len: usize,
    reap_cursor: usize,
}

impl<V: Copy + Default> FlowTable<V> {
    pub(crate) fn new(capacity: usize) -> Result<Self, CapacityError> {
        if capacity == 0 {
            return Err(CapacityError::Zero);
        }
        if capacity > MAX_CAPACITY {
            return Err(CapacityError::TooLarge(capacity));
        }
        let min_slots = (capacity * MAX_LOAD_DENOMINATOR).div_ceil(MAX_LOAD_NUMERATOR);
        let bucket_count = min_slots.div_ceil(BUCKET_ENTRIES);
        let empty = Entry {
            hash: EMPTY,
            expires_ns: 0,
            value: V::default(),
        };
        let mut buckets = Vec::with_capacity(bucket_count);
        // Lookups read two random lines of the whole table per packet. On 4 KiB pages most of
        // them also need a page-table walk, and on 2 MiB pages few do.
        spike_prefetch::advise_huge_pages(&mut buckets);
        buckets.resize(bucket_count, Bucket([empty; BUCKET_ENTRIES]));
        Ok(Self {
            buckets: buckets.into_boxed_slice(),
            bucket_count: bucket_count as u64,
            capacity,
            len: 0,
            reap_cursor: 0,
        })
    }
}

impl<V: Copy> FlowTable<V> {
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Returns the number of stored entries, including expired ones not yet reclaimed.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.buckets.len() * BUCKET_ENTRIES
    }

    /// Returns the bytes one slot takes, its share of a bucket.
    pub(crate) fn slot_bytes() -> usize {
        std::mem::size_of::<Bucket<V>>() / BUCKET_ENTRIES
    }

    /// Returns the two candidate buckets of `hash`, one from each 32-bit half. Multiplying a
    /// half by the bucket count and keeping the high 32 bits maps it evenly onto any count.
    #[inline]
    fn buckets_of(&self, hash: u64) -> [usize; 2] {
        let first = ((hash >> 32) * self.bucket_count) >> 32;
        let second = ((hash & 0xffff_ffff) * self.bucket_count) >> 32;
        [first as usize, second as usize]
    }

    /// Returns the entry in `slot`. Any slot index is accepted: one past the end reads the
    /// last slot, and a slot that was removed keeps its last contents.
    #[inline]
    pub(crate) fn entry(&self, slot: usize) -> &Entry<V> {
        let slot = slot.min(self.slot_count() - 1);
        &self.buckets[slot / BUCKET_ENTRIES].0[slot % BUCKET_ENTRIES]
    }

    #[inline]
    pub(crate) fn entry_mut(&mut self, slot: usize) -> &mut Entry<V> {
        let slot = slot.min(self.slot_count() - 1);
        &mut self.buckets[slot / BUCKET_ENTRIES].0[slot % BUCKET_ENTRIES]
    }

    /// Prefetches the cache line of the first candidate bucket of `hash`, which contains the
    /// flow's entry unless that bucket was full when the flow was inserted.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        let [first, _] = self.buckets_of(hash);
        spike_prefetch::prefetch_read(&self.buckets[first].0);
    }

    /// Prefetches the cache line of the second candidate bucket of `hash` when the first
    /// does not hold the flow. Call it once the first line has arrived, or it waits for it.
    #[inline]
    pub(crate) fn prefetch_overflow(&self, hash: u64) {
        if !self.in_first_bucket(hash) {
            let [_, second] = self.buckets_of(hash);
            spike_prefetch::prefetch_read(&self.buckets[second].0);
        }
    }

    /// Returns whether the first candidate bucket of `hash` contains an entry for it.
    #[inline]
    fn in_first_bucket(&self, hash: u64) -> bool {
        let stored = stored_hash(hash);
        let [first, _] = self.buckets_of(hash);
        self.buckets[first]
            .0
            .iter()
            .any(|entry| entry.hash == stored)
    }

    /// Returns the slot of the entry for `hash`, live or expired. At most one slot stores a
    /// hash because `insert` overwrites an existing entry instead of adding a second one.
    #[inline]
    fn find_any(&self, hash: u64) -> Option<usize> {
        let stored = stored_hash(hash);
        for bucket in self.buckets_of(hash) {
            let entries = &self.buckets[bucket].0;
            if let Some(offset) = entries.iter().position(|entry| entry.hash == stored) {
                return Some(bucket * BUCKET_ENTRIES + offset);
            }
        }
        None
    }

    /// Returns the slot of the live entry (`expires_ns > now_ns`) for `hash`.
    #[inline]
    pub(crate) fn find(&self, hash: u64, now_ns: u64) -> Option<usize> {
        let slot = self.find_any(hash)?;
        (self.entry(slot).expires_ns > now_ns).then_some(slot)
    }

    /// Returns the live entry (`expires_ns > now_ns`) for `hash`, for reading and
    /// changing in place with one lookup.
    #[inline(always)]
    pub(crate) fn find_mut(&mut self, hash: u64, now_ns: u64) -> Option<&mut Entry<V>> {
        let stored = stored_hash(hash);
        for bucket in self.buckets_of(hash) {
            let offset = self.buckets[bucket]
                .0
                .iter()
                .position(|entry| entry.hash == stored);
            if let Some(offset) = offset {
                let entry = &mut self.buckets[bucket].0[offset];
                return (entry.expires_ns > now_ns).then_some(entry);
            }
        }
        None
    }

    /// Stores an entry for `hash` and returns its slot and placement. The module docs list
    /// the order in which slots are tried.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        value: V,
        expires_ns: u64,
        now_ns: u64,
    ) -> Result<(usize, Placement), Full> {
        let (slot, placement) = self.place(hash, now_ns).ok_or(Full)?;
        if placement == Placement::Empty {
            self.len += 1;
        }
        *self.entry_mut(slot) = Entry {
            hash: stored_hash(hash),
            expires_ns,
            value,
        };
        Ok((slot, placement))
    }

    fn place(&mut self, hash: u64, now_ns: u64) -> Option<(usize, Placement)> {
        if let Some(slot) = self.find_any(hash) {
            return Some((slot, Placement::Existing));
        }
        let buckets = self.buckets_of(hash);
        let room = self.len < self.capacity;
        if room {
            if let Some(slot) = self.first_empty_slot(buckets) {
                return Some((slot, Placement::Empty));
            }
        }
        if let Some(slot) = self.expired_slot(buckets, now_ns) {
            return Some((slot, Placement::ReplacedExpired));
        }
        if room {
            if let Some(slot) = self.make_room(buckets) {
                return Some((slot, Placement::Empty));
            }
        }
        None
    }

    /// Returns an empty slot of the first candidate bucket, or failing that of the second.
    /// Lookups prefetch the first bucket alone, so every entry kept out of its second
    /// bucket spares a lookup its second line.
    fn first_empty_slot(&self, [first, second]: [usize; 2]) -> Option<usize> {
        self.empty_slot(first).or_else(|| self.empty_slot(second))
    }

    fn empty_slot(&self, bucket: usize) -> Option<usize> {
        let entries = &self.buckets[bucket].0;
        let offset = entries.iter().position(|entry| entry.hash == EMPTY)?;
        Some(bucket * BUCKET_ENTRIES + offset)
    }

    fn expired_slot(&self, buckets: [usize; 2], now_ns: u64) -> Option<usize> {
        buckets.into_iter().find_map(|bucket| {
            let entries = &self.buckets[bucket].0;
            let offset = entries
                .iter()
                .position(|entry| entry.hash != EMPTY && entry.expires_ns <= now_ns)?;
            Some(bucket * BUCKET_ENTRIES + offset)
        })
    }

    /// Frees a slot in one of `buckets`, both full, by moving entries to their other
    /// candidate bucket (cuckoo moves). A breadth-first search visits at most
    /// [`MAX_SEARCH_SLOTS`] entries for the shortest chain of moves that ends in an empty slot,
    /// then makes those moves from the far end. Returns the freed slot.
    fn make_room(&mut self, buckets: [usize; 2]) -> Option<usize> {
        // Each node is a slot and the node whose entry would move into it.
        let mut nodes = [(0usize, NO_PARENT); MAX_SEARCH_SLOTS];
        let mut len = 0;
        let roots = if buckets[0] == buckets[1] {
            &buckets[..1]
        } else {
            &buckets[..]
        };
        for &bucket in roots {
            for offset in 0..BUCKET_ENTRIES {
                nodes[len] = (bucket * BUCKET_ENTRIES + offset, NO_PARENT);
                len += 1;
            }
        }
        let mut next = 0;
        while next < len {
            let other = self.other_bucket(nodes[next].0);
            if let Some(empty) = self.empty_slot(other) {
                return Some(self.move_chain(&nodes, next, empty));
            }
            for offset in 0..BUCKET_ENTRIES {
                let slot = other * BUCKET_ENTRIES + offset;
                if len < MAX_SEARCH_SLOTS && !on_chain(&nodes, next, slot) {
                    nodes[len] = (slot, next);
                    len += 1;
                }
            }
            next += 1;
        }
        None
    }

    /// Moves the entry of node `last` to `empty`, then each earlier entry of its chain into
    /// the slot just vacated, and returns the slot of the chain's first node, now empty.
    fn move_chain(&mut self, nodes: &[(usize, usize)], last: usize, empty: usize) -> usize {
        let mut to = empty;
        let mut node = last;
        loop {
            let (from, parent) = nodes[node];
            self.move_entry(from, to);
            if parent == NO_PARENT {
                return from;
            }
            to = from;
            node = parent;
        }
    }

    /// Returns the candidate bucket of the entry in `slot` that does not hold it, or its own
    /// bucket when both candidates are the same.
    fn other_bucket(&self, slot: usize) -> usize {
        let bucket = slot / BUCKET_ENTRIES;
        let [first, second] = self.buckets_of(self.entry(slot).hash);
        if first == bucket {
            second
        } else {
            first
        }
    }

    fn move_entry(&mut self, from: usize, to: usize) {
        *self.entry_mut(to) = *self.entry(from);
        self.entry_mut(from).hash = EMPTY;
    }

    /// Empties `slot`. An already empty slot stays as it is.
    pub(crate) fn remove(&mut self, slot: usize) {
        let entry = self.entry_mut(slot);
        if entry.hash != EMPTY {
            entry.hash = EMPTY;
            self.len -= 1;
        }
    }

    /// Scans the next `max_slots` slots, wrapping around, and removes the expired entries among
    /// them. Returns how many it removed.
    pub(crate) fn reap(&mut self, now_ns: u64, max_slots: usize) -> usize {
        let slots = self.slot_count();
        let mut removed = 0;
        for _ in 0..max_slots.min(slots) {
            let slot = self.reap_cursor;
            self.reap_cursor = if slot + 1 == slots { 0 } else { slot + 1 };
            let entry = self.entry(slot);
            if entry.hash != EMPTY && entry.expires_ns <= now_ns {
                self.remove(slot);
                removed += 1;
            }
        }
        removed
    }
}

impl<V> fmt::Debug for FlowTable<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.capacity)
            .field("len", &self.len)
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

/// Returns whether `slot` is a node of the chain that ends at node `last`, where moving it
/// again would break the chain.
fn on_chain(nodes: &[(usize, usize)], last: usize, slot: usize) -> bool {
    let mut node = last;
    while node != NO_PARENT {
        let (chain_slot, parent) = nodes[node];
        if chain_slot == slot {
            return true;
        }
        node = parent;
    }
    false
}

/// Returns the value stored for `hash`: the hash itself, except that 0 (empty) becomes 1.
/// Both have 0 in their high half and map the low half 0 or 1 to bucket 0, so the
/// candidate buckets stay the same.
#[inline]
fn stored_hash(hash: u64) -> u64 {
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spreads consecutive integers over all 64 bits, as a flow hash does.
    fn spread(n: u64) -> u64 {
        let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    #[test]
    fn slot_count_keeps_load_at_most_three_quarters() {
        let cases = [
            (1, 2),
            (3, 4),
            (4, 6),
            (768, 1024),
            (769, 1026),
            (1 << 20, 1_398_102),
        ];
        for (capacity, slots) in cases {
            let table = FlowTable::<u32>::new(capacity).unwrap();
            assert_eq!(table.slot_count(), slots, "capacity {capacity}");
            assert!(capacity * 4 <= slots * 3, "capacity {capacity}");
        }
    }

    #[test]
    fn new_rejects_zero_and_huge_capacity() {
        assert_eq!(FlowTable::<u32>::new(0).unwrap_err(), CapacityError::Zero);
        assert_eq!(
            FlowTable::<u32>::new(MAX_CAPACITY + 1).unwrap_err(),
            CapacityError::TooLarge(MAX_CAPACITY + 1)
        );
    }

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket<[u32; 4]>>(), 64);
        assert_eq!(std::mem::align_of::<Bucket<[u32; 4]>>(), 64);
        assert_eq!(FlowTable::<[u32; 4]>::slot_bytes(), 32);
    }

    #[test]
    fn hash_zero_is_stored_and_found() {
        let mut table = FlowTable::<u32>::new(64).unwrap();
        assert_eq!(table.find(0, 0), None);
        let (slot, placement) = table.insert(0, 7, 100, 0).unwrap();
        assert_eq!(placement, Placement::Empty);
        assert_eq!(table.find(0, 0), Some(slot));
        assert_eq!(table.entry(slot).value, 7);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn full_buckets_move_entries_to_their_other_bucket() {
        let mut table = FlowTable::<u64>::new(1500).unwrap();
        assert_eq!(table.slot_count(), 2000);
        // The smallest hash half, plus `k`, that maps to `bucket` of the 1000.
        let half = |bucket: u64, k: u64| (bucket << 32).div_ceil(1000) + k;
        let both_in = |bucket: u64, k: u64| (half(bucket, k) << 32) | half(bucket, k);
        // One entry in each of buckets 500 and 501, so that the next two entries go to
        // bucket 0, the emptier of their two candidates.
        for bucket in 500..502 {
            table.insert(both_in(bucket, 0), 0, 100, 0).unwrap();
        }
        let movable = |n: u64| (half(0, n) << 32) | half(500 + n, 0);
        for n in 0..2 {
            table.insert(movable(n), n, 100, 0).unwrap();
        }
        // Flows whose candidates are buckets 0 and 999: two fill bucket 999, and the third
        // and fourth fit only after the entries of bucket 0 move to their other buckets.
        let crowded = |n: u64| (half(0, 100 + n) << 32) | half(999, 0);
        for n in 0..4 {
            let (_, placement) = table.insert(crowded(n), 10 + n, 100, 0).unwrap();
            assert_eq!(placement, Placement::Empty, "crowded flow {n}");
        }
        for n in 0..2 {
            let slot = table.find(movable(n), 0).expect("moved entry still found");
            assert_eq!(table.entry(slot).value, n);
        }
        for n in 0..4 {
            let slot = table.find(crowded(n), 0).expect("crowded entry found");
            assert_eq!(table.entry(slot).value, 10 + n);
        }
        assert_eq!(table.len(), 2 + 2 + 4);
        // Buckets 0 and 999 now hold only flows that have no other bucket to move to.
        assert_eq!(table.insert(crowded(4), 14, 100, 0), Err(Full));
    }

    /// Single cuckoo moves alone leave many two-entry buckets full well below 3/4 load, so
    /// filling to capacity also checks the longer chains of the search.
    #[test]
    fn fills_to_capacity_with_random_hashes() {
        let capacity = 300_000;
        let mut table = FlowTable::<u64>::new(capacity).unwrap();
        for n in 0..capacity as u64 {
            table
                .insert(spread(n), n, 100, 0)
                .unwrap_or_else(|_| panic!("insert {n} of {capacity} failed"));
        }
        assert_eq!(table.len(), capacity);
        for n in 0..capacity as u64 {
            let slot = table.find(spread(n), 0).expect("every flow found");
            assert_eq!(table.entry(slot).value, n);
        }
        assert_eq!(table.insert(spread(u64::MAX), 0, 100, 0), Err(Full));
    }

    #[test]
    fn reap_wraps_around() {
        let mut table = FlowTable::<u32>::new(8).unwrap();
        for n in 0..8u64 {
            table.insert(spread(n), 0, 10, 0).unwrap();
        }
        let mut removed = 0;
        for _ in 0..4 {
            removed += table.reap(10, 5);
        }
        assert_eq!(removed, 8);
        assert_eq!(table.len(), 0);
    }

    /// Share of `count` flows, of hashes `spread(0..count)`, whose entry sits in its first
    /// candidate bucket.
    fn first_bucket_share(table: &FlowTable<u64>, count: u64) -> f64 {
        let first = (0..count)
            .filter(|&n| table.in_first_bucket(spread(n)))
            .count();
        first as f64 / count as f64
    }

    #[test]
    fn most_entries_sit_in_their_first_bucket() {
        let capacity = 1 << 18;
        let mut table = FlowTable::<u64>::new(capacity).unwrap();
        let half = capacity as u64 / 2;
        for n in 0..half {
            table.insert(spread(n), n, 100, 0).unwrap();
        }
        let at_half = first_bucket_share(&table, half);
        for n in half..capacity as u64 {
            table.insert(spread(n), n, 100, 0).unwrap();
        }
        let at_full = first_bucket_share(&table, capacity as u64);
        // Measured: 93.0% and 73.7%. Inserting into whichever candidate bucket has more room
        // leaves 79.2% and 68.2%.
        assert!(
            at_half > 0.92,
            "{at_half} of entries in their first bucket at half capacity"
        );
        assert!(
            at_full > 0.72,
            "{at_full} of entries in their first bucket at capacity"
        );
    }
}
