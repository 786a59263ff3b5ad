//! Per-core table of IP datagrams whose first fragment was seen.
//!
//! Only the first fragment carries the transport ports, so the balancer records the backend it
//! chose for the first fragment and sends the later fragments of the same datagram there. A
//! record stays until its timeout, because fragments can arrive out of order and the balancer
//! cannot tell which one arrives last. The caller may remove it earlier.
//!
//! The table shares the fixed-capacity layout of the connection table and allocates only in
//! [`FragmentTable::new`]. Keys are hashed with a per-table random SipHash key, because fragment
//! keys come straight from packets and a predictable hash would let a sender fill chosen buckets.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

use thiserror::Error;

use crate::fixed_table::{self, CapacityError, FixedTable};

/// Identity of one IP datagram, the fields that IP reassembly groups fragments by. Addresses are
/// IPv4-mapped for IPv4, as in [`FlowKey`](crate::flow::FlowKey).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FragmentKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub protocol: u8,
    /// The 16-bit IPv4 identification or the 32-bit IPv6 fragment identification.
    pub ident: u32,
}

/// Largest capacity [`FragmentTable::new`] accepts.
pub const MAX_CAPACITY: usize = fixed_table::MAX_CAPACITY;

/// Invalid fragment table configuration.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FragmentTableError {
    #[error("fragment table capacity is 0: set it to at least 1 datagram")]
    ZeroCapacity,
    #[error("fragment table capacity {capacity} exceeds the maximum of {max} datagrams per core: lower it")]
    CapacityTooLarge { capacity: usize, max: usize },
    #[error("fragment timeout is 0 ns: set it to how long fragments of one datagram may straggle, e.g. 30 s")]
    ZeroTimeout,
}

/// The fragment table has no room for another datagram near its hash.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("fragment table is full: raise its capacity or shorten the fragment timeout")]
pub struct FragmentTableFull;

/// Fixed-capacity map from [`FragmentKey`] to a caller-defined value, for one core.
pub struct FragmentTable<V: Copy> {
    // `Option` gives the preallocated slots a value without asking `V` for a default.
    table: FixedTable<FragmentKey, Option<V>>,
    timeout_ns: u64,
    hash_builder: RandomState,
}

impl<V: Copy> FragmentTable<V> {
    /// Allocates a table for `capacity` datagrams whose records expire `timeout_ns` after their
    /// last insert.
    ///
    /// # Errors
    ///
    /// [`FragmentTableError`] when `capacity` is 0 or above [`MAX_CAPACITY`], or `timeout_ns`
    /// is 0.
    pub fn new(capacity: usize, timeout_ns: u64) -> Result<Self, FragmentTableError> {
        if timeout_ns == 0 {
            return Err(FragmentTableError::ZeroTimeout);
        }
        let table = FixedTable::new(capacity).map_err(|error| match error {
            CapacityError::Zero => FragmentTableError::ZeroCapacity,
            CapacityError::TooLarge(capacity) => FragmentTableError::CapacityTooLarge {
                capacity,
                max: MAX_CAPACITY,
            },
        })?;
        Ok(Self {
            table,
            timeout_ns,
            hash_builder: RandomState::new(),
        })
    }

    /// Records `value` for `key` until `now_ns + timeout_ns`, replacing any earlier record.
    ///
    /// # Errors
    ///
    /// [`FragmentTableFull`] when the table already stores `capacity` records and none near the
    /// key's hash has expired, or, rarely, when both candidate buckets are full.
    pub fn insert(
        &mut self,
        key: &FragmentKey,
        value: V,
        now_ns: u64,
    ) -> Result<(), FragmentTableFull> {
        let hash = self.hash_builder.hash_one(key);
        let expires_ns = now_ns.saturating_add(self.timeout_ns);
        self.table
            .insert(key, hash, Some(value), expires_ns, now_ns)
            .map(|_| ())
            .map_err(|fixed_table::Full| FragmentTableFull)
    }

    /// Returns the value recorded for `key` if the record has not expired.
    pub fn get(&self, key: &FragmentKey, now_ns: u64) -> Option<V> {
        let hash = self.hash_builder.hash_one(key);
        let slot = self.table.find(key, hash, now_ns)?;
        self.table.entry(slot).value
    }

    /// Removes the record for `key`, if any.
    pub fn remove(&mut self, key: &FragmentKey) {
        let hash = self.hash_builder.hash_one(key);
        self.table.remove_key(key, hash);
    }

    /// Scans the next `max_slots` slots and removes the expired records among them; see
    /// [`Conntrack::reap`](crate::conntrack::Conntrack::reap). Returns how many it removed.
    pub fn reap(&mut self, now_ns: u64, max_slots: usize) -> usize {
        self.table.reap(now_ns, max_slots)
    }

    /// Returns the number of stored records, counting expired records not yet reclaimed.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn timeout_ns(&self) -> u64 {
        self.timeout_ns
    }
}

impl<V: Copy> fmt::Debug for FragmentTable<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FragmentTable")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("timeout_ns", &self.timeout_ns)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT_NS: u64 = 1_000;

    fn datagram(ident: u32) -> FragmentKey {
        FragmentKey {
            src: [1; 16],
            dst: [2; 16],
            protocol: 17,
            ident,
        }
    }

    #[test]
    fn new_rejects_bad_configuration() {
        assert_eq!(
            FragmentTable::<u32>::new(0, TIMEOUT_NS).unwrap_err(),
            FragmentTableError::ZeroCapacity
        );
        assert_eq!(
            FragmentTable::<u32>::new(MAX_CAPACITY + 1, TIMEOUT_NS).unwrap_err(),
            FragmentTableError::CapacityTooLarge {
                capacity: MAX_CAPACITY + 1,
                max: MAX_CAPACITY
            }
        );
        assert_eq!(
            FragmentTable::<u32>::new(8, 0).unwrap_err(),
            FragmentTableError::ZeroTimeout
        );
    }

    #[test]
    fn insert_then_get() {
        let mut table = FragmentTable::new(8, TIMEOUT_NS).unwrap();
        table.insert(&datagram(1), 7u32, 0).unwrap();
        assert_eq!(table.get(&datagram(1), 0), Some(7));
        assert_eq!(table.get(&datagram(2), 0), None);
        assert_eq!(table.len(), 1);
        assert_eq!(table.capacity(), 8);
    }

    #[test]
    fn key_fields_all_count() {
        let mut table = FragmentTable::new(8, TIMEOUT_NS).unwrap();
        let key = datagram(1);
        table.insert(&key, 1u32, 0).unwrap();
        let others = [
            FragmentKey {
                src: [3; 16],
                ..key
            },
            FragmentKey {
                dst: [3; 16],
                ..key
            },
            FragmentKey { protocol: 6, ..key },
            FragmentKey { ident: 2, ..key },
        ];
        for other in others {
            assert_eq!(table.get(&other, 0), None, "{other:?}");
        }
    }

    #[test]
    fn record_expires_after_timeout() {
        let mut table = FragmentTable::new(8, TIMEOUT_NS).unwrap();
        table.insert(&datagram(1), 7u32, 100).unwrap();
        assert_eq!(table.get(&datagram(1), 100 + TIMEOUT_NS - 1), Some(7));
        assert_eq!(table.get(&datagram(1), 100 + TIMEOUT_NS), None);
    }

    #[test]
    fn insert_replaces_record() {
        let mut table = FragmentTable::new(8, TIMEOUT_NS).unwrap();
        table.insert(&datagram(1), 7u32, 0).unwrap();
        table.insert(&datagram(1), 8u32, 500).unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&datagram(1), 1_400), Some(8));
    }

    #[test]
    fn full_table_rejects_until_expiry() {
        let mut table = FragmentTable::new(3, TIMEOUT_NS).unwrap();
        for ident in 0..3 {
            table.insert(&datagram(ident), ident, 0).unwrap();
        }
        assert_eq!(table.insert(&datagram(3), 3, 10), Err(FragmentTableFull));
        // With a capacity of 3 all records share one bucket, so an expired one is reusable.
        table.insert(&datagram(3), 3, TIMEOUT_NS).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(table.get(&datagram(3), TIMEOUT_NS), Some(3));
    }

    #[test]
    fn remove_and_reap() {
        let mut table = FragmentTable::new(8, TIMEOUT_NS).unwrap();
        table.insert(&datagram(1), 1u32, 0).unwrap();
        table.insert(&datagram(2), 2u32, 0).unwrap();
        table.remove(&datagram(1));
        assert_eq!(table.get(&datagram(1), 0), None);
        assert_eq!(table.len(), 1);

        table.remove(&datagram(1));
        assert_eq!(table.len(), 1);

        assert_eq!(table.reap(TIMEOUT_NS, usize::MAX), 1);
        assert!(table.is_empty());
    }
}
