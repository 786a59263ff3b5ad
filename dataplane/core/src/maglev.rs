//! Maglev consistent hashing with weights.
//!
//! The lookup table follows the population algorithm of Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer" (NSDI 2016). Each backend walks its own permutation of
//! the table's slots. Taking turns, each claims the next slot of its permutation that is still
//! empty, until every slot is filled. A backend's permutation starts at `offset` and steps by
//! `skip`, both derived from hashes of its id. `skip` lies in `1..M`, and the table size `M` is
//! prime, so every permutation visits every slot.
//!
//! Two extensions:
//! - Backends take turns in order of their id, not in input order, so every node that knows the
//!   same backend set builds the same table, whatever order its configuration lists them in.
//! - Weights: every round, each backend adds its weight to a credit and claims one slot for each
//!   `max_weight` of credit, so slot shares follow the weight ratios. The heaviest backend claims
//!   a slot every round. A backend of weight 0 claims nothing but keeps its index.

use std::fmt;
use std::num::NonZeroU64;

use siphasher::sip::SipHasher13;
use thiserror::Error;

/// Default table size: a prime that gives each of up to 655 backends at least 100 slots.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Largest accepted table size, the largest prime below 2^24. A table this size takes 64 MiB and
/// gives 100 slots each to about 167,000 backends. Below 100 slots per backend, the rounding of
/// each share to whole slots exceeds 1%. Larger tables would cost memory and build time (about
/// 1 s at this size) without improving the balance of any realistic backend set.
pub const MAX_TABLE_SIZE: u32 = 16_777_213;

/// Smallest accepted table size, the smallest prime.
pub const MIN_TABLE_SIZE: u32 = 2;

/// Hash keys for a backend's permutation. They are part of the cross-node contract: changing
/// either one reshuffles every table.
const OFFSET_KEY: [u8; 16] = *b"spike-maglev-off";
const SKIP_KEY: [u8; 16] = *b"spike-maglev-skp";

/// Returns whether `n` is prime, by trial division (fast enough for table sizes, which are
/// checked once per build).
// `u32::is_multiple_of` needs Rust 1.87, newer than the workspace's rust-version of 1.80.
#[allow(clippy::manual_is_multiple_of)]
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 || n % 3 == 0 {
        return false;
    }
    // Every prime above 3 is 6k - 1 or 6k + 1.
    let n = u64::from(n);
    let mut divisor = 5u64;
    while divisor * divisor <= n {
        if n % divisor == 0 || n % (divisor + 2) == 0 {
            return false;
        }
        divisor += 6;
    }
    true
}

/// One backend as input to [`MaglevTable::build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Stable identity, the same on every Spike node (for example a hash of the backend's
    /// address). It alone decides the backend's permutation.
    pub id: u64,
    /// Relative share of slots; 0 keeps the backend out of the table.
    pub weight: u32,
}

/// Invalid input to [`MaglevTable::build`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("maglev backend set is empty: add at least one backend")]
    EmptyBackendSet,
    #[error("every maglev backend has weight 0: give at least one backend a positive weight")]
    NoWeightedBackend,
    #[error("maglev table size {0} is not prime: use a prime such as 65537")]
    TableSizeNotPrime(u32),
    #[error(
        "maglev table size {size} exceeds the maximum of {max}: use a smaller prime such as 65537"
    )]
    TableSizeTooLarge { size: u32, max: u32 },
    #[error(
        "maglev table size is below the minimum of {} slots: use a prime such as 65537",
        MIN_TABLE_SIZE
    )]
    TableSizeTooSmall,
    #[error(
        "{backends} maglev backends do not fit a table of {table_size} slots: \
         use a prime table size of at least 100 slots per backend"
    )]
    TooManyBackends { backends: usize, table_size: u32 },
    #[error("maglev backend id {0:#x} appears more than once: give each backend a unique id")]
    DuplicateBackend(u64),
}

/// A populated Maglev lookup table. Build it off the packet path and publish it to the cores.
#[derive(Clone)]
pub struct MaglevTable {
    /// Backend index per slot.
    entries: Box<[u32]>,
    /// Backend id per backend index.
    ids: Box<[u64]>,
    size: NonZeroU64,
}

impl MaglevTable {
    /// Populates a table of `table_size` slots.
    ///
    /// Entries are indices into `backends` as given; which backend id fills each slot does not
    /// depend on the order of `backends`.
    ///
    /// # Errors
    ///
    /// [`MaglevError`] when `table_size` is not a prime in
    /// [`MIN_TABLE_SIZE`]`..=`[`MAX_TABLE_SIZE`], when `backends` is empty, longer than
    /// `table_size` or repeats an id, or when every weight is 0.
    pub fn build(backends: &[MaglevBackend], table_size: u32) -> Result<Self, MaglevError> {
        let size = check_table_size(table_size)?;
        if backends.is_empty() {
            return Err(MaglevError::EmptyBackendSet);
        }
        if backends.len() > table_size as usize {
            return Err(MaglevError::TooManyBackends {
                backends: backends.len(),
                table_size,
            });
        }

        let order = order_by_id(backends)?;
        let entries = populate(backends, &order, table_size)?;
        Ok(Self {
            entries: entries.into_boxed_slice(),
            ids: backends.iter().map(|backend| backend.id).collect(),
            size,
        })
    }

    /// Returns the number of slots.
    pub fn size(&self) -> u32 {
        // `build` caps the size at `MAX_TABLE_SIZE`, so it fits in u32.
        self.size.get() as u32
    }

    /// Returns the number of backends the table was built from, weight 0 included.
    pub fn backend_count(&self) -> usize {
        self.ids.len()
    }

    /// Returns the backend index for the slot `hash % size`.
    #[inline]
    pub fn lookup(&self, hash: u64) -> u32 {
        let slot = hash % self.size;
        // `build` makes one entry per slot, so the fallback is never taken.
        self.entries.get(slot as usize).copied().unwrap_or(0)
    }

    /// Returns the backend index stored in `slot`, or `None` when `slot >= size`.
    pub fn backend_index(&self, slot: u32) -> Option<u32> {
        self.entries.get(slot as usize).copied()
    }

    /// Returns the backend id stored in `slot`, or `None` when `slot >= size`.
    pub fn backend_id(&self, slot: u32) -> Option<u64> {
        let index = self.backend_index(slot)?;
        self.ids.get(index as usize).copied()
    }

    /// Returns the number of slots per backend, indexed like the `backends` given to `build`.
    pub fn slot_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.ids.len()];
        for &index in self.entries.iter() {
            if let Some(count) = counts.get_mut(index as usize) {
                *count += 1;
            }
        }
        counts
    }

    /// Returns the slots whose backend id differs from `previous`, in ascending order.
    ///
    /// Tables of different sizes share no slot numbering, so then every slot of `self` counts as
    /// changed.
    pub fn changed_slots(&self, previous: &MaglevTable) -> Vec<u32> {
        let size = self.size();
        if previous.size != self.size {
            return (0..size).collect();
        }
        (0..size)
            .filter(|&slot| self.backend_id(slot) != previous.backend_id(slot))
            .collect()
    }
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("backends", &self.ids.len())
            .finish_non_exhaustive()
    }
}

fn check_table_size(table_size: u32) -> Result<NonZeroU64, MaglevError> {
    if table_size < MIN_TABLE_SIZE {
        return Err(MaglevError::TableSizeTooSmall);
    }
    if table_size > MAX_TABLE_SIZE {
        return Err(MaglevError::TableSizeTooLarge {
            size: table_size,
            max: MAX_TABLE_SIZE,
        });
    }
    if !is_prime(table_size) {
        return Err(MaglevError::TableSizeNotPrime(table_size));
    }
    NonZeroU64::new(u64::from(table_size)).ok_or(MaglevError::TableSizeTooSmall)
}

/// Returns the backend indices sorted by id.
fn order_by_id(backends: &[MaglevBackend]) -> Result<Vec<u32>, MaglevError> {
    // `build` has checked that the backend count is at most the table size, which fits in u32.
    let mut order: Vec<u32> = (0..backends.len() as u32).collect();
    order.sort_unstable_by_key(|&index| backends[index as usize].id);
    for pair in order.windows(2) {
        let first = backends[pair[0] as usize].id;
        if first == backends[pair[1] as usize].id {
            return Err(MaglevError::DuplicateBackend(first));
        }
    }
    Ok(order)
}

/// Population state of one weighted backend.
struct Turn {
    index: u32,
    weight: u64,
    credit: u64,
    /// Next slot of this backend's permutation to try.
    position: u32,
    skip: u32,
}

impl Turn {
    fn new(index: u32, backend: MaglevBackend, table_size: u32) -> Self {
        let id = backend.id.to_le_bytes();
        let offset = SipHasher13::new_with_key(&OFFSET_KEY).hash(&id) % u64::from(table_size);
        let skip = SipHasher13::new_with_key(&SKIP_KEY).hash(&id) % u64::from(table_size - 1) + 1;
        Self {
            index,
            weight: u64::from(backend.weight),
            credit: 0,
            // Both are below `table_size`, which is a u32.
            position: offset as u32,
            skip: skip as u32,
        }
    }

    /// Claims the next empty slot of this backend's permutation. The table must have an empty
    /// slot, or this never returns.
    fn claim(&mut self, slots: &mut Slots, table_size: u32) {
        let mut position = self.position;
        while slots.is_claimed(position) {
            position = advance(position, self.skip, table_size);
        }
        slots.claim(position, self.index);
        self.position = advance(position, self.skip, table_size);
    }
}

/// Slots under population. Most probes hit claimed slots, so occupancy lives in a bitmap that
/// fits the L1 cache (8 KiB at the default size) instead of in the much larger entry array.
struct Slots {
    claimed: Vec<u64>,
    entries: Vec<u32>,
}

impl Slots {
    fn new(table_size: u32) -> Self {
        Self {
            claimed: vec![0; (table_size as usize).div_ceil(64)],
            entries: vec![0; table_size as usize],
        }
    }

    #[inline]
    fn is_claimed(&self, slot: u32) -> bool {
        self.claimed[slot as usize / 64] & (1 << (slot % 64)) != 0
    }

    #[inline]
    fn claim(&mut self, slot: u32, index: u32) {
        self.claimed[slot as usize / 64] |= 1 << (slot % 64);
        self.entries[slot as usize] = index;
    }
}

/// Steps a permutation; `position + skip < 2 * table_size <= 2^25`, so u32 does not overflow.
#[inline]
fn advance(position: u32, skip: u32, table_size: u32) -> u32 {
    let next = position + skip;
    if next >= table_size {
        next - table_size
    } else {
        next
    }
}

fn populate(
    backends: &[MaglevBackend],
    order: &[u32],
    table_size: u32,
) -> Result<Vec<u32>, MaglevError> {
    let mut turns: Vec<Turn> = order
        .iter()
        .map(|&index| (index, backends[index as usize]))
        .filter(|(_, backend)| backend.weight > 0)
        .map(|(index, backend)| Turn::new(index, backend, table_size))
        .collect();
    let max_weight = turns
        .iter()
        .map(|turn| turn.weight)
        .max()
        .ok_or(MaglevError::NoWeightedBackend)?;

    let mut slots = Slots::new(table_size);
    let mut filled = 0u32;
    // Each round the heaviest backend claims a slot, so the loop ends after at most
    // `table_size` rounds.
    loop {
        for turn in turns.iter_mut() {
            // The credit is below `max_weight` before this addition and `weight <= max_weight`,
            // so one round earns at most one slot.
            turn.credit += turn.weight;
            if turn.credit < max_weight {
                continue;
            }
            turn.credit -= max_weight;
            turn.claim(&mut slots, table_size);
            filled += 1;
            if filled == table_size {
                return Ok(slots.entries);
            }
        }
    }
}

/// Invalid input to [`MaglevTable::from_slots`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum SlotsError {
    #[error(transparent)]
    Table(#[from] MaglevError),
    #[error(
        "maglev slot {slot} names backend index {index}, but the table has {backends} backends"
    )]
    IndexOutOfRange {
        slot: u32,
        index: u32,
        backends: usize,
    },
}

impl MaglevTable {
    /// Rebuilds a table from its slots, for a table populated elsewhere (by another process).
    /// `ids` gives the backend id per backend index and `entries` the backend index per slot.
    ///
    /// # Errors
    ///
    /// [`SlotsError`] when the number of entries is not a prime in
    /// [`MIN_TABLE_SIZE`]`..=`[`MAX_TABLE_SIZE`], when `ids` is empty, longer than the table
    /// or repeats an id, or when an entry is not an index into `ids`.
    pub fn from_slots(ids: Vec<u64>, entries: Vec<u32>) -> Result<Self, SlotsError> {
        let table_size = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let size = check_table_size(table_size)?;
        if ids.is_empty() {
            return Err(MaglevError::EmptyBackendSet.into());
        }
        if ids.len() > entries.len() {
            return Err(MaglevError::TooManyBackends {
                backends: ids.len(),
                table_size,
            }
            .into());
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(MaglevError::DuplicateBackend(pair[0]).into());
        }
        if let Some((slot, &index)) = entries
            .iter()
            .enumerate()
            .find(|(_, &index)| index as usize >= ids.len())
        {
            return Err(SlotsError::IndexOutOfRange {
                slot: slot as u32,
                index,
                backends: ids.len(),
            });
        }
        Ok(Self {
            entries: entries.into_boxed_slice(),
            ids: ids.into_boxed_slice(),
            size,
        })
    }

    /// Returns the backend index of every slot, in slot order.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// Returns the backend id of every backend index.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(count: u64) -> Vec<MaglevBackend> {
        (0..count)
            .map(|n| MaglevBackend {
                id: 1000 + n,
                weight: 1,
            })
            .collect()
    }

    #[test]
    fn is_prime_matches_known_values() {
        let primes = [2, 3, 5, 7, 11, 13, 65537, 16_777_213, 4_294_967_291];
        let composites = [
            0,
            1,
            4,
            9,
            25,
            49,
            65535,
            16_777_215,
            16_777_214,
            4_294_967_295,
        ];
        for n in primes {
            assert!(is_prime(n), "{n} is prime");
        }
        for n in composites {
            assert!(!is_prime(n), "{n} is composite");
        }
    }

    #[test]
    fn max_size_is_largest_prime() {
        assert!(is_prime(MAX_TABLE_SIZE));
        assert!(((MAX_TABLE_SIZE + 1)..(1 << 24)).all(|n| !is_prime(n)));
        assert!(is_prime(DEFAULT_TABLE_SIZE));
    }

    #[test]
    fn lookup_reduces_every_hash_class() {
        let table = MaglevTable::build(&backends(5), 13).unwrap();
        let size = u64::from(table.size());
        let hashes = [
            0,
            1,
            size - 1,
            size,
            size + 1,
            size * 1000 + 7,
            u64::from(u32::MAX),
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        for hash in hashes {
            let slot = (hash % size) as u32;
            assert_eq!(
                Some(table.lookup(hash)),
                table.backend_index(slot),
                "hash {hash:#x}"
            );
        }
    }

    #[test]
    fn backend_accessors_reject_out_of_range_slot() {
        let table = MaglevTable::build(&backends(3), 7).unwrap();
        assert_eq!(table.backend_index(7), None);
        assert_eq!(table.backend_id(7), None);
        assert_eq!(table.backend_id(u32::MAX), None);
        assert!(table.backend_id(6).is_some());
    }

    #[test]
    fn changed_slots_lists_moved_slots() {
        let before = MaglevTable::build(&backends(4), 101).unwrap();
        assert!(before.changed_slots(&before).is_empty());

        let mut fewer = backends(4);
        let removed = fewer.remove(2);
        let after = MaglevTable::build(&fewer, 101).unwrap();
        let changed = after.changed_slots(&before);
        let expected: Vec<u32> = (0..101)
            .filter(|&slot| before.backend_id(slot) != after.backend_id(slot))
            .collect();
        assert_eq!(changed, expected);
        for slot in 0..101 {
            if before.backend_id(slot) == Some(removed.id) {
                assert!(
                    changed.contains(&slot),
                    "slot {slot} kept a removed backend"
                );
            }
        }
    }

    #[test]
    fn changed_slots_of_different_sizes_is_every_slot() {
        let small = MaglevTable::build(&backends(2), 7).unwrap();
        let large = MaglevTable::build(&backends(2), 11).unwrap();
        assert_eq!(large.changed_slots(&small), (0..11).collect::<Vec<_>>());
        assert_eq!(small.changed_slots(&large), (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn zero_weight_backend_keeps_index_without_slots() {
        let mut list = backends(3);
        list[1].weight = 0;
        let table = MaglevTable::build(&list, 13).unwrap();
        assert_eq!(table.backend_count(), 3);
        let counts = table.slot_counts();
        assert_eq!(counts.len(), 3);
        assert_eq!(counts[1], 0);
        assert_eq!(counts[0] + counts[2], 13);
    }

    #[test]
    fn table_is_pinned_across_releases() {
        // Nodes running different versions must build the same table. The expected slots were
        // computed by a separate implementation of the population algorithm.
        let table = MaglevTable::build(&backends(3), 13).unwrap();
        let ids: Vec<u64> = (0..13)
            .map(|slot| table.backend_id(slot).unwrap())
            .collect();
        let expected = [
            1000, 1002, 1000, 1001, 1001, 1000, 1000, 1000, 1001, 1002, 1002, 1002, 1001,
        ];
        assert_eq!(ids, expected);
    }

    #[test]
    fn debug_omits_slots() {
        let table = MaglevTable::build(&backends(2), 7).unwrap();
        assert_eq!(
            format!("{table:?}"),
            "MaglevTable { size: 7, backends: 2, .. }"
        );
    }

    #[test]
    fn error_messages_name_the_value() {
        let message = MaglevError::TableSizeNotPrime(65536).to_string();
        assert!(message.contains("65536"), "{message}");
        let message = MaglevError::DuplicateBackend(0xab).to_string();
        assert!(message.contains("0xab"), "{message}");
        let message = MaglevError::TableSizeTooSmall.to_string();
        assert!(message.contains("minimum of 2"), "{message}");
    }
}
