//! Per-core connection table: remembers which backend each flow went to, so that established
//! connections keep their backend when the Maglev table changes.
//!
//! The table allocates only in [`Conntrack::new`]; a lookup reads one or two buckets of one cache
//! line each, which [`Conntrack::prefetch`] and [`Conntrack::prefetch_overflow`] can bring in ahead
//! of time (see the `flow_table` module for the layout and the load factor). Expiry is lazy: [`Conntrack::find`] ignores expired entries,
//! [`Conntrack::insert`] reuses them, and [`Conntrack::reap`] clears a bounded number of slots per
//! call.
//!
//! A flow is identified by its 64-bit five-tuple hash alone; the
//! [`FlowKey`](crate::flow::FlowKey) is not stored. Two
//! flows share an entry only if their hashes are equal, which for a lookup happens with a
//! probability of at most 4 × 2^-64.
//!
//! Memory: each slot is an entry of hash (8 bytes), expiry (8 bytes), value and class (1 byte),
//! padded to 8 bytes, in 64-byte buckets of two ([`Conntrack::slot_bytes`]). The worker's
//! 12-byte value makes a 32-byte slot. The table has `ceil(capacity × 4/3)` slots rounded up to
//! a whole bucket, so a capacity of 2^20 flows takes 1,398,102 slots, about 43 MiB for the worker
//! (43 bytes per flow of capacity).

use std::fmt;

use thiserror::Error;

use crate::flow_table::{self, CapacityError, FlowTable, Placement};

/// Connection-tracking state of a flow, as far as client-to-server packets show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlowClass {
    /// A SYN was seen but no later packet of the handshake.
    TcpSyn,
    TcpEstablished,
    /// The client sent FIN or RST.
    TcpClosing,
    Udp,
    /// Any other protocol.
    #[default]
    Other,
}

impl FlowClass {
    /// Returns the class an entry moves to when a packet of class `packet` arrives.
    ///
    /// A closing TCP entry stays closing on a plain ACK, because the client's last ACK after the
    /// server's FIN carries no flag of its own. A new SYN on the same five-tuple starts over.
    pub fn after(self, packet: FlowClass) -> FlowClass {
        match (self, packet) {
            (FlowClass::TcpClosing, FlowClass::TcpEstablished) => FlowClass::TcpClosing,
            _ => packet,
        }
    }
}

/// Classifies a client-to-server TCP packet by its flags.
///
/// Replies bypass the balancer (direct server return), so the handshake's SYN-ACK is never seen:
/// a SYN without ACK opens a flow, FIN or RST closes it, and anything else is established.
pub fn classify_tcp(syn: bool, ack: bool, fin: bool, rst: bool) -> FlowClass {
    if fin || rst {
        FlowClass::TcpClosing
    } else if syn && !ack {
        FlowClass::TcpSyn
    } else {
        FlowClass::TcpEstablished
    }
}

const SECOND_NS: u64 = 1_000_000_000;

/// Idle time after which an entry expires, per [`FlowClass`], in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_ns: u64,
    pub tcp_established_ns: u64,
    pub tcp_closing_ns: u64,
    pub udp_ns: u64,
    pub other_ns: u64,
}

impl Timeouts {
    /// Returns the timeout for `class`.
    pub fn for_class(&self, class: FlowClass) -> u64 {
        match class {
            FlowClass::TcpSyn => self.tcp_syn_ns,
            FlowClass::TcpEstablished => self.tcp_established_ns,
            FlowClass::TcpClosing => self.tcp_closing_ns,
            FlowClass::Udp => self.udp_ns,
            FlowClass::Other => self.other_ns,
        }
    }
}

impl Default for Timeouts {
    /// Production defaults, compared with the Linux IPVS TCP defaults in
    /// `net/netfilter/ipvs/ip_vs_proto_tcp.c` (established 15 min, SYN_RECV 60 s, FIN_WAIT 2 min,
    /// CLOSE 10 s):
    /// - SYN 30 s: every retransmitted SYN refreshes the entry, and a short timeout limits what a
    ///   SYN flood can occupy.
    /// - Established 1 h, longer than IPVS: an idle entry only costs one slot, while losing it
    ///   breaks the connection if the backend set changed in the meantime.
    /// - Closing 60 s: covers retransmitted FINs and the client's last ACK.
    /// - UDP 2 min and other protocols 60 s: these have no close signal, so the timeout alone
    ///   bounds how long one-shot flows such as DNS queries occupy the table.
    fn default() -> Self {
        Self {
            tcp_syn_ns: 30 * SECOND_NS,
            tcp_established_ns: 3600 * SECOND_NS,
            tcp_closing_ns: 60 * SECOND_NS,
            udp_ns: 120 * SECOND_NS,
            other_ns: 60 * SECOND_NS,
        }
    }
}

/// Largest capacity [`Conntrack::new`] accepts.
pub const MAX_CAPACITY: usize = flow_table::MAX_CAPACITY;

/// Invalid connection table configuration.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ConntrackError {
    #[error("connection table capacity is 0: set it to at least 1 flow")]
    ZeroCapacity,
    #[error("connection table capacity {capacity} exceeds the maximum of {max} flows per core: lower it")]
    CapacityTooLarge { capacity: usize, max: usize },
}

impl From<CapacityError> for ConntrackError {
    fn from(error: CapacityError) -> Self {
        match error {
            CapacityError::Zero => ConntrackError::ZeroCapacity,
            CapacityError::TooLarge(capacity) => ConntrackError::CapacityTooLarge {
                capacity,
                max: MAX_CAPACITY,
            },
        }
    }
}

/// The connection table has no room for a new flow in its two buckets.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("connection table is full: raise its capacity or shorten the timeouts")]
pub struct ConntrackFull;

/// Position of an entry in a [`Conntrack`]. It stays valid until the next insert, which may move
/// entries, or until the entry is removed, reaped or replaced. A stale slot reads whatever the
/// slot contains now and never panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

#[derive(Clone, Copy, Default)]
struct FlowState<V> {
    value: V,
    class: FlowClass,
}

/// Fixed-capacity table from a flow's five-tuple hash to a caller-defined value, for one core.
///
/// `V: Default` fills the slots allocated up front, so that reading a stale [`Slot`] returns a
/// value instead of panicking.
pub struct Conntrack<V: Copy> {
    table: FlowTable<FlowState<V>>,
    timeouts: Timeouts,
    stats: ConntrackStats,
}

/// Insert outcomes counted since the table was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    /// New flows stored in the slot of another flow's expired entry.
    pub expired_replaced: u64,
    /// New flows not stored because the table was full.
    pub insert_failed: u64,
}

impl<V: Copy + Default> Conntrack<V> {
    /// Allocates a table for `capacity` flows.
    ///
    /// # Errors
    ///
    /// [`ConntrackError`] when `capacity` is 0 or above [`MAX_CAPACITY`].
    pub fn new(capacity: usize, timeouts: Timeouts) -> Result<Self, ConntrackError> {
        Ok(Self {
            table: FlowTable::new(capacity)?,
            timeouts,
            stats: ConntrackStats::default(),
        })
    }
}

impl<V: Copy> Conntrack<V> {
    /// Returns the maximum number of entries, as requested in [`Conntrack::new`].
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Returns the number of stored entries, counting expired entries that no `insert` or `reap`
    /// has reclaimed yet.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Returns the insert counts.
    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// Returns the slot of the live entry (`expires_ns > now_ns`) for the flow whose
    /// five-tuple [`FlowHasher`](crate::flow::FlowHasher) hash is `hash`.
    #[inline]
    pub fn find(&self, hash: u64, now_ns: u64) -> Option<Slot> {
        self.table.find(hash, now_ns).map(to_slot)
    }

    /// Prefetches the cache line of the bucket that contains most flows' entries. Call
    /// [`Conntrack::prefetch_overflow`] for the same hash once that line has arrived.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.table.prefetch(hash);
    }

    /// Prefetches the flow's second bucket when the first, which [`Conntrack::prefetch`]
    /// brought in, does not hold it: then `find` and `insert` read both lines.
    #[inline]
    pub fn prefetch_overflow(&self, hash: u64) {
        self.table.prefetch_overflow(hash);
    }

    /// Returns the live entry (`expires_ns > now_ns`) for the flow whose five-tuple hash
    /// is `hash`, to read and refresh without a second lookup.
    #[inline]
    pub fn find_mut(&mut self, hash: u64, now_ns: u64) -> Option<LiveEntry<'_, V>> {
        let timeouts = &self.timeouts;
        self.table
            .find_mut(hash, now_ns)
            .map(|entry| LiveEntry { entry, timeouts })
    }

    /// Returns the value stored in `slot`.
    #[inline]
    pub fn value(&self, slot: Slot) -> V {
        self.table.entry(slot.0 as usize).value.value
    }

    /// Returns the class stored in `slot`.
    #[inline]
    pub fn class(&self, slot: Slot) -> FlowClass {
        self.table.entry(slot.0 as usize).value.class
    }

    /// Returns the expiry time of `slot`, in nanoseconds.
    pub fn expires_ns(&self, slot: Slot) -> u64 {
        self.table.entry(slot.0 as usize).expires_ns
    }

    /// Stores `value` and `class` in `slot` and pushes its expiry to `now_ns` plus the timeout of
    /// `class`.
    #[inline]
    pub fn refresh(&mut self, slot: Slot, value: V, class: FlowClass, now_ns: u64) {
        let expires_ns = self.expiry(class, now_ns);
        let entry = self.table.entry_mut(slot.0 as usize);
        entry.value = FlowState { value, class };
        entry.expires_ns = expires_ns;
    }

    /// Stores a new entry for the flow with five-tuple hash `hash` that expires at `now_ns`
    /// plus the timeout of `class`.
    ///
    /// An existing entry for the flow, live or expired, is overwritten in place, so a flow never
    /// has two entries. A new flow takes an empty slot of one of its two candidate buckets. If
    /// both are full, or the table already stores `capacity` entries, it replaces an expired
    /// entry there, and failing that, below `capacity`, it moves other entries to their other
    /// bucket to make room. Other slots may therefore change.
    ///
    /// # Errors
    ///
    /// [`ConntrackFull`] when no slot is available. This happens before `len` reaches `capacity`
    /// only when the bounded search finds no chain of entries to move, which is rare at the
    /// table's load factor.
    // Out of line: a new flow is the rare case, and the move search's stack and
    // registers would otherwise weigh on every lookup that inlines this.
    #[inline(never)]
    pub fn insert(
        &mut self,
        hash: u64,
        value: V,
        class: FlowClass,
        now_ns: u64,
    ) -> Result<Slot, ConntrackFull> {
        let expires_ns = self.expiry(class, now_ns);
        let state = FlowState { value, class };
        match self.table.insert(hash, state, expires_ns, now_ns) {
            Ok((slot, placement)) => {
                if placement == Placement::ReplacedExpired {
                    self.stats.expired_replaced += 1;
                }
                Ok(to_slot(slot))
            }
            Err(flow_table::Full) => {
                self.stats.insert_failed += 1;
                Err(ConntrackFull)
            }
        }
    }

    /// Removes the entry in `slot`; an empty slot is left as it is.
    pub fn remove(&mut self, slot: Slot) {
        self.table.remove(slot.0 as usize);
    }

    /// Scans the next `max_slots` slots, resuming where the previous call stopped, and removes
    /// the expired entries among them. Returns how many it removed.
    ///
    /// Calling it once per burst with a small `max_slots` sweeps the whole table every
    /// `slot_count / max_slots` bursts without a long pause.
    pub fn reap(&mut self, now_ns: u64, max_slots: usize) -> usize {
        self.table.reap(now_ns, max_slots)
    }

    /// Returns the number of slots allocated, a multiple of the bucket size.
    pub fn slot_count(&self) -> usize {
        self.table.slot_count()
    }

    /// Returns the memory one slot takes, its share of a bucket, in bytes.
    pub fn slot_bytes() -> usize {
        FlowTable::<FlowState<V>>::slot_bytes()
    }

    fn expiry(&self, class: FlowClass, now_ns: u64) -> u64 {
        now_ns.saturating_add(self.timeouts.for_class(class))
    }
}

/// A live entry that [`Conntrack::find_mut`] found.
pub struct LiveEntry<'a, V> {
    entry: &'a mut flow_table::Entry<FlowState<V>>,
    timeouts: &'a Timeouts,
}

impl<V: Copy> LiveEntry<'_, V> {
    #[inline]
    pub fn value(&self) -> V {
        self.entry.value.value
    }

    #[inline]
    pub fn class(&self) -> FlowClass {
        self.entry.value.class
    }

    /// Stores `value` and `class` and pushes the expiry to `now_ns` plus the timeout of
    /// `class`, as [`Conntrack::refresh`] does.
    #[inline]
    pub fn refresh(self, value: V, class: FlowClass, now_ns: u64) {
        self.entry.value = FlowState { value, class };
        self.entry.expires_ns = now_ns.saturating_add(self.timeouts.for_class(class));
    }
}

impl<V> fmt::Debug for LiveEntry<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveEntry")
            .field("expires_ns", &self.entry.expires_ns)
            .finish_non_exhaustive()
    }
}

fn to_slot(index: usize) -> Slot {
    // Slot indices stay below 2^25 because the capacity is capped at `MAX_CAPACITY`.
    Slot(index as u32)
}

impl<V: Copy> fmt::Debug for Conntrack<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conntrack")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::flow::{FlowHasher, FlowKey, HashFields};

    const TIMEOUTS: Timeouts = Timeouts {
        tcp_syn_ns: 10,
        tcp_established_ns: 1000,
        tcp_closing_ns: 20,
        udp_ns: 300,
        other_ns: 40,
    };

    fn flow(n: u32) -> FlowKey {
        FlowKey::new(
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n >> 16))),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            6,
            n as u16,
            80,
        )
    }

    fn hasher() -> FlowHasher {
        FlowHasher::new([7; 16])
    }

    fn hash(key: &FlowKey) -> u64 {
        hasher().hash(key, HashFields::FiveTuple)
    }

    fn table(capacity: usize) -> Conntrack<u32> {
        Conntrack::new(capacity, TIMEOUTS).unwrap()
    }

    #[test]
    fn slot_size_matches_module_docs() {
        // Hash, expiry, and a `u32` value with the class: 24 bytes, but two of them pad to
        // a 64-byte bucket.
        assert_eq!(Conntrack::<u32>::slot_bytes(), 32);
    }

    #[test]
    fn classify_tcp_flags() {
        let cases = [
            ((true, false, false, false), FlowClass::TcpSyn),
            ((true, true, false, false), FlowClass::TcpEstablished),
            ((false, true, false, false), FlowClass::TcpEstablished),
            ((false, false, false, false), FlowClass::TcpEstablished),
            ((false, true, true, false), FlowClass::TcpClosing),
            ((false, false, false, true), FlowClass::TcpClosing),
            ((true, false, true, false), FlowClass::TcpClosing),
            ((true, false, false, true), FlowClass::TcpClosing),
        ];
        for ((syn, ack, fin, rst), expected) in cases {
            assert_eq!(
                classify_tcp(syn, ack, fin, rst),
                expected,
                "syn={syn} ack={ack} fin={fin} rst={rst}"
            );
        }
    }

    #[test]
    fn closing_stays_closing_on_ack() {
        assert_eq!(
            FlowClass::TcpClosing.after(FlowClass::TcpEstablished),
            FlowClass::TcpClosing
        );
        assert_eq!(
            FlowClass::TcpClosing.after(FlowClass::TcpSyn),
            FlowClass::TcpSyn
        );
        assert_eq!(
            FlowClass::TcpSyn.after(FlowClass::TcpEstablished),
            FlowClass::TcpEstablished
        );
        assert_eq!(
            FlowClass::TcpEstablished.after(FlowClass::TcpClosing),
            FlowClass::TcpClosing
        );
    }

    #[test]
    fn default_timeouts_are_ordered() {
        let timeouts = Timeouts::default();
        assert_eq!(timeouts.tcp_syn_ns, 30 * SECOND_NS);
        assert!(timeouts.tcp_syn_ns < timeouts.tcp_established_ns);
        assert!(timeouts.tcp_closing_ns < timeouts.tcp_established_ns);
        assert!(timeouts.udp_ns < timeouts.tcp_established_ns);
    }

    #[test]
    fn new_rejects_bad_capacity() {
        assert_eq!(
            Conntrack::<u32>::new(0, TIMEOUTS).unwrap_err(),
            ConntrackError::ZeroCapacity
        );
        assert_eq!(
            Conntrack::<u32>::new(MAX_CAPACITY + 1, TIMEOUTS).unwrap_err(),
            ConntrackError::CapacityTooLarge {
                capacity: MAX_CAPACITY + 1,
                max: MAX_CAPACITY
            }
        );
        let message = ConntrackError::ZeroCapacity.to_string();
        assert!(message.contains("capacity is 0"), "{message}");
    }

    #[test]
    fn insert_then_find() {
        let mut conntrack = table(16);
        let key = flow(1);
        assert!(conntrack.is_empty());
        let slot = conntrack
            .insert(hash(&key), 5, FlowClass::TcpSyn, 100)
            .unwrap();
        assert_eq!(conntrack.find(hash(&key), 100), Some(slot));
        assert_eq!(conntrack.value(slot), 5);
        assert_eq!(conntrack.class(slot), FlowClass::TcpSyn);
        assert_eq!(conntrack.expires_ns(slot), 110);
        assert_eq!(conntrack.len(), 1);
        assert_eq!(conntrack.find(hash(&flow(2)), 100), None);
    }

    #[test]
    fn each_class_expires_after_its_timeout() {
        let classes = [
            FlowClass::TcpSyn,
            FlowClass::TcpEstablished,
            FlowClass::TcpClosing,
            FlowClass::Udp,
            FlowClass::Other,
        ];
        let mut conntrack = table(64);
        let start = 1_000;
        for (n, class) in (0u32..).zip(classes) {
            let key = flow(n);
            conntrack.insert(hash(&key), n, class, start).unwrap();
            let timeout = TIMEOUTS.for_class(class);
            let last_live = start + timeout - 1;
            assert!(
                conntrack.find(hash(&key), last_live).is_some(),
                "{class:?} expired early"
            );
            assert_eq!(
                conntrack.find(hash(&key), start + timeout),
                None,
                "{class:?} outlived its timeout"
            );
        }
    }

    #[test]
    fn refresh_extends_and_reclassifies() {
        let mut conntrack = table(16);
        let key = flow(3);
        let slot = conntrack
            .insert(hash(&key), 1, FlowClass::TcpSyn, 0)
            .unwrap();
        conntrack.refresh(slot, 2, FlowClass::TcpEstablished, 5);
        assert_eq!(conntrack.value(slot), 2);
        assert_eq!(conntrack.class(slot), FlowClass::TcpEstablished);
        assert_eq!(conntrack.find(hash(&key), 1004), Some(slot));
        assert_eq!(conntrack.find(hash(&key), 1005), None);

        conntrack.refresh(slot, 2, FlowClass::TcpClosing, 100);
        assert_eq!(conntrack.find(hash(&key), 119), Some(slot));
        assert_eq!(conntrack.find(hash(&key), 120), None);
    }

    #[test]
    fn insert_overwrites_existing_key() {
        let mut conntrack = table(16);
        let key = flow(4);
        let first = conntrack.insert(hash(&key), 1, FlowClass::Udp, 0).unwrap();
        let second = conntrack.insert(hash(&key), 2, FlowClass::Udp, 10).unwrap();
        assert_eq!(first, second);
        assert_eq!(conntrack.len(), 1);
        assert_eq!(conntrack.value(second), 2);
    }

    #[test]
    fn full_table_rejects_new_flow() {
        let mut conntrack = table(4);
        for n in 0..4 {
            let key = flow(n);
            conntrack
                .insert(hash(&key), n, FlowClass::TcpEstablished, 0)
                .unwrap();
        }
        let extra = flow(99);
        assert_eq!(
            conntrack.insert(hash(&extra), 99, FlowClass::TcpSyn, 1),
            Err(ConntrackFull)
        );
        assert_eq!(conntrack.len(), 4);
    }

    #[test]
    fn expired_entry_is_reused_when_full() {
        let mut conntrack = table(1);
        let old = flow(1);
        let old_slot = conntrack
            .insert(hash(&old), 1, FlowClass::TcpSyn, 0)
            .unwrap();
        let new = flow(2);
        assert_eq!(
            conntrack.insert(hash(&new), 2, FlowClass::TcpSyn, 9),
            Err(ConntrackFull)
        );

        // A capacity of 1 gives a single bucket, so the new key's buckets include the old entry.
        let new_slot = conntrack
            .insert(hash(&new), 2, FlowClass::TcpSyn, 10)
            .unwrap();
        assert_eq!(new_slot, old_slot);
        assert_eq!(conntrack.len(), 1);
        assert_eq!(conntrack.find(hash(&old), 10), None);
        assert_eq!(conntrack.find(hash(&new), 10), Some(new_slot));
    }

    #[test]
    fn stats_count_replacements_and_failures() {
        let mut conntrack = table(1);
        let old = flow(1);
        conntrack
            .insert(hash(&old), 1, FlowClass::TcpSyn, 0)
            .unwrap();
        let new = flow(2);
        assert_eq!(
            conntrack.insert(hash(&new), 2, FlowClass::TcpSyn, 9),
            Err(ConntrackFull)
        );
        assert_eq!(conntrack.stats().insert_failed, 1);

        conntrack
            .insert(hash(&new), 2, FlowClass::TcpSyn, 10)
            .unwrap();
        assert_eq!(conntrack.stats().expired_replaced, 1);

        // Overwriting the flow's own entry is neither a replacement nor a failure.
        conntrack
            .insert(hash(&new), 3, FlowClass::TcpEstablished, 11)
            .unwrap();
        assert_eq!(
            conntrack.stats(),
            ConntrackStats {
                expired_replaced: 1,
                insert_failed: 1
            }
        );
    }

    #[test]
    fn remove_frees_the_entry() {
        let mut conntrack = table(4);
        let key = flow(5);
        let slot = conntrack.insert(hash(&key), 1, FlowClass::Udp, 0).unwrap();
        conntrack.remove(slot);
        assert_eq!(conntrack.find(hash(&key), 0), None);
        assert!(conntrack.is_empty());

        // A second removal of the same slot must not change the count.
        conntrack.remove(slot);
        assert!(conntrack.is_empty());
    }

    #[test]
    fn stale_slot_never_panics() {
        let mut conntrack = table(4);
        let foreign = Slot(u32::MAX);
        let _ = conntrack.value(foreign);
        let _ = conntrack.class(foreign);
        conntrack.refresh(foreign, 1, FlowClass::Udp, 0);
        conntrack.remove(foreign);
        assert!(conntrack.is_empty());
    }

    #[test]
    fn reap_removes_only_expired() {
        let mut conntrack = table(100);
        for n in 0..100 {
            let key = flow(n);
            let class = if n % 2 == 0 {
                FlowClass::TcpSyn
            } else {
                FlowClass::TcpEstablished
            };
            conntrack.insert(hash(&key), n, class, 0).unwrap();
        }
        let step = 7;
        let mut removed = 0;
        for _ in 0..conntrack.slot_count().div_ceil(step) {
            removed += conntrack.reap(500, step);
        }
        assert_eq!(removed, 50);
        assert_eq!(conntrack.len(), 50);
        for n in 0..100 {
            let key = flow(n);
            let found = conntrack.find(hash(&key), 500).is_some();
            assert_eq!(found, n % 2 == 1, "flow {n}");
        }
        assert_eq!(conntrack.reap(500, usize::MAX), 0);
    }

    #[test]
    fn many_flows_all_found() {
        // A release build fills the whole 2^20 capacity. A debug build inserts fewer flows so
        // that the test stays within a few seconds.
        let capacity = 1 << 20;
        let count: u32 = if cfg!(debug_assertions) {
            200_000
        } else {
            1 << 20
        };
        let hasher = hasher();
        let mut conntrack = Conntrack::<u32>::new(capacity, TIMEOUTS).unwrap();
        for n in 0..count {
            let key = flow(n);
            let hash = hasher.hash(&key, HashFields::FiveTuple);
            conntrack
                .insert(hash, n, FlowClass::TcpEstablished, 0)
                .unwrap_or_else(|_| panic!("insert {n} of {count} failed"));
        }
        assert_eq!(conntrack.len(), count as usize);
        for n in 0..count {
            let key = flow(n);
            let hash = hasher.hash(&key, HashFields::FiveTuple);
            let slot = conntrack.find(hash, 1);
            assert!(slot.is_some(), "flow {n} not found");
            assert_eq!(conntrack.value(slot.unwrap()), n);
        }
    }
}
