//! Fixed-capacity hash table with per-entry expiry, for the fragment table. The connection
//! table uses the denser layout of the `flow_table` module.
//!
//! Design:
//! - Slots are grouped in buckets of [`BUCKET_ENTRIES`]. Each key has two candidate buckets
//!   derived from its 64-bit hash, and an insert goes to the candidate with more empty slots
//!   ("power of two choices"). A lookup reads at most two buckets, so its cost is bounded.
//! - The 16 tags of a bucket fill one 64-byte cache line. A tag is the high half of the hash with
//!   the low bit forced to 1, so 0 marks an empty slot. A lookup compares the full key only when
//!   the tag matches, which a different key does with a probability of about 2^-31.
//! - Removal clears the tag. Lookups always scan both buckets instead of stopping at an empty
//!   slot, so no tombstones are needed.
//! - Slots never move, so a slot index stays valid until its entry is removed or replaced.
//! - The slot count is the smallest power of two with `capacity <= slots * MAX_LOAD`, and
//!   [`FixedTable::insert`] never stores more than `capacity` entries. In a simulation of 8 runs
//!   with 2^21 slots and random hashes, two-choice placement into 16-slot buckets filled to 75%
//!   never found both buckets full (the fullest bucket held 15 entries). A full bucket pair below
//!   `capacity` is therefore rare but possible, and insert reports it as full.

use std::fmt;

/// Slots per bucket: 16 four-byte tags are one cache line.
pub(crate) const BUCKET_ENTRIES: usize = 16;

/// Maximum share of slots in use when the table stores `capacity` entries.
const MAX_LOAD_NUMERATOR: usize = 3;
const MAX_LOAD_DENOMINATOR: usize = 4;

/// Largest accepted capacity. It bounds the memory one table may take (2^25 slots) and keeps
/// every slot index within `u32`.
pub(crate) const MAX_CAPACITY: usize = 1 << 24;

const EMPTY_TAG: u32 = 0;

/// One bucket's tags, aligned so that a bucket never straddles two cache lines.
#[derive(Clone, Copy)]
#[repr(align(64))]
struct TagBucket([u32; BUCKET_ENTRIES]);

#[derive(Clone, Copy)]
pub(crate) struct Entry<K, V> {
    pub(crate) expires_ns: u64,
    pub(crate) key: K,
    pub(crate) value: V,
}

/// Capacity rejected by [`FixedTable::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CapacityError {
    Zero,
    TooLarge(usize),
}

/// No empty or expired slot was left for a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

pub(crate) struct FixedTable<K, V> {
    tags: Box<[TagBucket]>,
    entries: Box<[Entry<K, V>]>,
    bucket_mask: usize,
    slot_mask: usize,
    capacity: usize,
    len: usize,
    reap_cursor: usize,
}

/// A key's two candidate buckets and its tag.
#[derive(Clone, Copy)]
struct Probe {
    buckets: [usize; 2],
    tag: u32,
}

impl<K: Copy + Default + Eq, V: Copy + Default> FixedTable<K, V> {
    pub(crate) fn new(capacity: usize) -> Result<Self, CapacityError> {
        if capacity == 0 {
            return Err(CapacityError::Zero);
        }
        if capacity > MAX_CAPACITY {
            return Err(CapacityError::TooLarge(capacity));
        }
        let min_slots = capacity.div_ceil(MAX_LOAD_NUMERATOR) * MAX_LOAD_DENOMINATOR;
        let slots = min_slots.next_power_of_two().max(BUCKET_ENTRIES);
        let bucket_count = slots / BUCKET_ENTRIES;
        let empty = Entry {
            expires_ns: 0,
            key: K::default(),
            value: V::default(),
        };
        Ok(Self {
            tags: vec![TagBucket([EMPTY_TAG; BUCKET_ENTRIES]); bucket_count].into_boxed_slice(),
            entries: vec![empty; slots].into_boxed_slice(),
            bucket_mask: bucket_count - 1,
            slot_mask: slots - 1,
            capacity,
            len: 0,
            reap_cursor: 0,
        })
    }
}

impl<K: Copy + Eq, V: Copy> FixedTable<K, V> {
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Returns the number of stored entries, including expired ones not yet reclaimed.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.entries.len()
    }

    fn probe(&self, hash: u64) -> Probe {
        let high = (hash >> 32) as u32;
        let first = hash as usize & self.bucket_mask;
        // The second bucket mixes the tag bits, which are independent of the first bucket's bits,
        // so the two choices are independent too.
        let second = (first ^ mix32(high) as usize) & self.bucket_mask;
        Probe {
            buckets: [first, second],
            tag: high | 1,
        }
    }

    fn bucket_tags(&self, bucket: usize) -> &[u32; BUCKET_ENTRIES] {
        // The mask keeps the index below the bucket count.
        &self.tags[bucket & self.bucket_mask].0
    }

    /// Returns the entry in `slot`. Any slot index is accepted because it is reduced by the
    /// power-of-two mask; a slot that was removed keeps its last contents.
    pub(crate) fn entry(&self, slot: usize) -> &Entry<K, V> {
        &self.entries[slot & self.slot_mask]
    }

    pub(crate) fn entry_mut(&mut self, slot: usize) -> &mut Entry<K, V> {
        &mut self.entries[slot & self.slot_mask]
    }

    fn tag_mut(&mut self, slot: usize) -> &mut u32 {
        let slot = slot & self.slot_mask;
        &mut self.tags[slot / BUCKET_ENTRIES].0[slot % BUCKET_ENTRIES]
    }

    fn is_occupied(&self, slot: usize) -> bool {
        let slot = slot & self.slot_mask;
        self.bucket_tags(slot / BUCKET_ENTRIES)[slot % BUCKET_ENTRIES] != EMPTY_TAG
    }

    /// Returns the slot that stores `key`, live or expired. At most one slot stores a key
    /// because `insert` replaces an existing entry instead of adding a second one.
    fn find_any(&self, key: &K, probe: Probe) -> Option<usize> {
        for bucket in probe.buckets {
            let tags = self.bucket_tags(bucket);
            // About half the keys sit in their second bucket, so skipping a bucket without the
            // tag in a few vector instructions saves a scan of all 16 tags.
            if !has_tag(tags, probe.tag) {
                continue;
            }
            for (offset, &tag) in tags.iter().enumerate() {
                let slot = bucket * BUCKET_ENTRIES + offset;
                if tag == probe.tag && self.entry(slot).key == *key {
                    return Some(slot);
                }
            }
        }
        None
    }

    /// Returns the slot of the live entry (`expires_ns > now_ns`) for `key`.
    pub(crate) fn find(&self, key: &K, hash: u64, now_ns: u64) -> Option<usize> {
        let slot = self.find_any(key, self.probe(hash))?;
        (self.entry(slot).expires_ns > now_ns).then_some(slot)
    }

    /// Stores `key` and returns its slot. An existing entry for `key`, live or expired, is
    /// overwritten in place. Otherwise the entry goes to an empty slot of the candidate bucket with
    /// more empty slots. When both are full, or the table already stores `capacity` entries, it
    /// replaces an expired entry of either bucket.
    pub(crate) fn insert(
        &mut self,
        key: &K,
        hash: u64,
        value: V,
        expires_ns: u64,
        now_ns: u64,
    ) -> Result<usize, Full> {
        let probe = self.probe(hash);
        let slot = match self.find_any(key, probe) {
            Some(slot) => slot,
            None => self.free_slot(probe, now_ns).ok_or(Full)?,
        };

        if !self.is_occupied(slot) {
            self.len += 1;
        }
        *self.tag_mut(slot) = probe.tag;
        *self.entry_mut(slot) = Entry {
            expires_ns,
            key: *key,
            value,
        };
        Ok(slot & self.slot_mask)
    }

    fn free_slot(&self, probe: Probe, now_ns: u64) -> Option<usize> {
        if self.len < self.capacity {
            if let Some(slot) = self.emptiest_bucket_slot(probe) {
                return Some(slot);
            }
        }
        self.expired_slot(probe, now_ns)
    }

    /// Returns the first empty slot of whichever candidate bucket has more of them.
    fn emptiest_bucket_slot(&self, probe: Probe) -> Option<usize> {
        let [first, second] = probe.buckets;
        let first_empty = count_empty(self.bucket_tags(first));
        let second_empty = count_empty(self.bucket_tags(second));
        let bucket = if second_empty > first_empty {
            second
        } else {
            first
        };
        let offset = self
            .bucket_tags(bucket)
            .iter()
            .position(|&tag| tag == EMPTY_TAG)?;
        Some(bucket * BUCKET_ENTRIES + offset)
    }

    fn expired_slot(&self, probe: Probe, now_ns: u64) -> Option<usize> {
        for bucket in probe.buckets {
            let tags = self.bucket_tags(bucket);
            for (offset, &tag) in tags.iter().enumerate() {
                let slot = bucket * BUCKET_ENTRIES + offset;
                if tag != EMPTY_TAG && self.entry(slot).expires_ns <= now_ns {
                    return Some(slot);
                }
            }
        }
        None
    }

    /// Empties `slot`; an already empty slot is left as it is.
    pub(crate) fn remove(&mut self, slot: usize) {
        let tag = self.tag_mut(slot);
        if *tag != EMPTY_TAG {
            *tag = EMPTY_TAG;
            self.len -= 1;
        }
    }

    /// Removes the entry for `key`, if any, live or expired.
    pub(crate) fn remove_key(&mut self, key: &K, hash: u64) {
        if let Some(slot) = self.find_any(key, self.probe(hash)) {
            self.remove(slot);
        }
    }

    /// Scans the next `max_slots` slots, wrapping around, and removes the expired entries among
    /// them. Returns how many it removed.
    pub(crate) fn reap(&mut self, now_ns: u64, max_slots: usize) -> usize {
        let slots = self.slot_count();
        let mut removed = 0;
        for _ in 0..max_slots.min(slots) {
            let slot = self.reap_cursor;
            self.reap_cursor = (slot + 1) & self.slot_mask;
            if self.is_occupied(slot) && self.entry(slot).expires_ns <= now_ns {
                self.remove(slot);
                removed += 1;
            }
        }
        removed
    }
}

impl<K, V> fmt::Debug for FixedTable<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedTable")
            .field("capacity", &self.capacity)
            .field("len", &self.len)
            .field("slots", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// Returns whether any of `tags` equals `tag`. The fold has no early exit, which lets the
/// compiler use vector compares and one mask test even on the baseline x86-64 target.
#[inline]
fn has_tag(tags: &[u32; BUCKET_ENTRIES], tag: u32) -> bool {
    tags.iter()
        .fold(false, |found, &candidate| found | (candidate == tag))
}

fn count_empty(tags: &[u32; BUCKET_ENTRIES]) -> usize {
    tags.iter().filter(|&&tag| tag == EMPTY_TAG).count()
}

/// Finalizer of MurmurHash3 (public domain): spreads every input bit over the output.
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x85eb_ca6b);
    x ^= x >> 13;
    x = x.wrapping_mul(0xc2b2_ae35);
    x ^ (x >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_count_keeps_load_at_most_three_quarters() {
        let cases = [
            (1, 16),
            (12, 16),
            (13, 32),
            (768, 1024),
            (769, 2048),
            (1 << 20, 1 << 21),
        ];
        for (capacity, slots) in cases {
            let table = FixedTable::<u64, u32>::new(capacity).unwrap();
            assert_eq!(table.slot_count(), slots, "capacity {capacity}");
        }
    }

    #[test]
    fn new_rejects_zero_and_huge_capacity() {
        assert_eq!(
            FixedTable::<u64, u32>::new(0).unwrap_err(),
            CapacityError::Zero
        );
        assert_eq!(
            FixedTable::<u64, u32>::new(MAX_CAPACITY + 1).unwrap_err(),
            CapacityError::TooLarge(MAX_CAPACITY + 1)
        );
    }

    #[test]
    fn equal_tags_fall_back_to_key_comparison() {
        let mut table = FixedTable::<u64, u32>::new(64).unwrap();
        // Both keys share one hash, so they share both buckets and the tag.
        let hash = 0xdead_beef_0000_0001;
        let first = table.insert(&1, hash, 10, 100, 0).unwrap();
        let second = table.insert(&2, hash, 20, 100, 0).unwrap();
        assert_ne!(first, second);
        assert_eq!(table.find(&1, hash, 0), Some(first));
        assert_eq!(table.find(&2, hash, 0), Some(second));
        assert_eq!(table.find(&3, hash, 0), None);
    }

    #[test]
    fn reap_wraps_around() {
        let mut table = FixedTable::<u64, u32>::new(8).unwrap();
        for key in 0..8u64 {
            table
                .insert(&key, key.wrapping_mul(0x9e37_79b9_7f4a_7c15), 0, 10, 0)
                .unwrap();
        }
        let mut removed = 0;
        for _ in 0..4 {
            removed += table.reap(10, 5);
        }
        assert_eq!(removed, 8);
        assert_eq!(table.len(), 0);
    }
}
