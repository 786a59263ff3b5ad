//! Non-first fragments that reached the designated Spike node before their first fragment.
//!
//! In a cluster the fragments of one datagram take different paths to the designated
//! node: some directly from the router, some redirected by another Spike node. A
//! non-first fragment of a 5-tuple service can therefore arrive before the first
//! fragment that carries the ports its backend depends on. Instead of dropping it, the worker copies its IP
//! packet here, and the first fragment's record releases it. A held fragment whose first
//! fragment does not come within [`HOLD_TIMEOUT_NS`] is dropped when its slot is reused.
//!
//! The store has a fixed number of slots of fixed size, allocated once, so holding a
//! fragment copies it but never allocates.

use crate::fragments::FragmentKey;

/// Maximum number of fragments one worker keeps.
pub const HELD_SLOTS: usize = 64;
/// Largest IP packet held: the largest MTU a config accepts.
pub const MAX_HELD_PACKET_LEN: usize = 9216;
/// How long a fragment waits for its first fragment. A first fragment on another path
/// arrives within milliseconds; a second keeps a slot from staying taken for long.
pub const HOLD_TIMEOUT_NS: u64 = 1_000_000_000;

/// Ethernet header kept in front of each held packet: the addresses a reply swaps, then
/// the EtherType, so that a held packet is decided like a received frame.
pub(crate) const HELD_HEADER_LEN: usize = 14;
const SLOT_LEN: usize = HELD_HEADER_LEN + MAX_HELD_PACKET_LEN;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    key: FragmentKey,
    /// Bytes of the held frame, 0 for a free slot.
    len: usize,
    held_at_ns: u64,
    /// The fragment was redirected here, so it is never redirected again.
    redirected: bool,
    /// Its first fragment has been recorded: send it at the next release.
    release: bool,
}

/// The fixed store of held fragments.
#[derive(Debug)]
pub(crate) struct HeldFragments {
    slots: Vec<Slot>,
    bytes: Vec<u8>,
    /// Slots in use, so the common case (nothing held) costs one comparison.
    used: usize,
    /// Slots marked for release.
    pending: usize,
}

/// A fragment to decide again, now that its first fragment was recorded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Released {
    pub slot: usize,
    pub len: usize,
    pub redirected: bool,
}

impl HeldFragments {
    pub fn new() -> Self {
        HeldFragments {
            slots: vec![Slot::default(); HELD_SLOTS],
            bytes: vec![0; HELD_SLOTS * SLOT_LEN],
            used: 0,
            pending: 0,
        }
    }

    /// Copies `packet` behind `ethernet` (destination, source and EtherType of the frame
    /// it came in) into a free or expired slot. Returns whether it was held, and how many
    /// unreleased fragments an expired slot dropped (0 or 1).
    pub fn hold(
        &mut self,
        key: &FragmentKey,
        ethernet: &[u8; HELD_HEADER_LEN],
        packet: &[u8],
        redirected: bool,
        now_ns: u64,
    ) -> (bool, u64) {
        if packet.len() > MAX_HELD_PACKET_LEN {
            return (false, 0);
        }
        let expired = |slot: &Slot| {
            slot.len != 0
                && !slot.release
                && now_ns.saturating_sub(slot.held_at_ns) >= HOLD_TIMEOUT_NS
        };
        let Some(index) = self
            .slots
            .iter()
            .position(|slot| slot.len == 0)
            .or_else(|| self.slots.iter().position(expired))
        else {
            return (false, 0);
        };
        let dropped = u64::from(self.slots[index].len != 0);
        if dropped == 0 {
            self.used += 1;
        }
        let start = index * SLOT_LEN;
        self.bytes[start..start + HELD_HEADER_LEN].copy_from_slice(ethernet);
        let end = start + HELD_HEADER_LEN + packet.len();
        self.bytes[start + HELD_HEADER_LEN..end].copy_from_slice(packet);
        self.slots[index] = Slot {
            key: *key,
            len: HELD_HEADER_LEN + packet.len(),
            held_at_ns: now_ns,
            redirected,
            release: false,
        };
        (true, dropped)
    }

    /// Marks the fragments of the datagram `key` for release.
    #[inline]
    pub fn release(&mut self, key: &FragmentKey) {
        if self.used == 0 {
            return;
        }
        for slot in &mut self.slots {
            if slot.len != 0 && !slot.release && slot.key == *key {
                slot.release = true;
                self.pending += 1;
            }
        }
    }

    /// Takes the next fragment marked for release and frees its slot. Its bytes stay
    /// readable through [`HeldFragments::frame`] until the next `hold`.
    #[inline]
    pub fn next_released(&mut self) -> Option<Released> {
        if self.pending == 0 {
            return None;
        }
        let slot = self.slots.iter().position(|slot| slot.release)?;
        let Slot {
            len, redirected, ..
        } = self.slots[slot];
        self.slots[slot] = Slot::default();
        self.pending -= 1;
        self.used -= 1;
        Some(Released {
            slot,
            len,
            redirected,
        })
    }

    /// Returns the frame of a released slot.
    pub fn frame(&self, released: &Released) -> &[u8] {
        let start = released.slot * SLOT_LEN;
        &self.bytes[start..start + released.len]
    }

    /// Moves the byte store out, so that a worker can decide a held frame while it
    /// changes its own state; [`HeldFragments::put_bytes`] returns it without allocating.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }

    pub fn put_bytes(&mut self, bytes: Vec<u8>) {
        self.bytes = bytes;
    }

    /// Returns the byte range of a released slot's frame in the store.
    pub fn range(released: &Released) -> std::ops::Range<usize> {
        let start = released.slot * SLOT_LEN;
        start..start + released.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u32) -> FragmentKey {
        FragmentKey {
            src: [1; 16],
            dst: [2; 16],
            protocol: 17,
            ident,
        }
    }

    #[test]
    fn release_returns_held_bytes() {
        let mut held = HeldFragments::new();
        let header = [7u8; HELD_HEADER_LEN];
        assert_eq!(held.hold(&key(1), &header, &[1, 2, 3], false, 0), (true, 0));
        assert_eq!(held.hold(&key(2), &header, &[4], true, 0), (true, 0));
        assert!(held.next_released().is_none(), "nothing released yet");

        held.release(&key(2));
        let released = held.next_released().expect("released");
        assert!(released.redirected);
        assert_eq!(held.frame(&released)[HELD_HEADER_LEN..], [4]);
        assert!(held.next_released().is_none());
        assert_eq!(held.used, 1);
    }

    #[test]
    fn full_store_reuses_only_expired_slots() {
        let mut held = HeldFragments::new();
        let header = [0u8; HELD_HEADER_LEN];
        for ident in 0..HELD_SLOTS as u32 {
            assert!(held.hold(&key(ident), &header, &[0], false, 0).0);
        }
        assert_eq!(held.hold(&key(999), &header, &[0], false, 1), (false, 0));
        assert_eq!(
            held.hold(&key(999), &header, &[0], false, HOLD_TIMEOUT_NS),
            (true, 1),
            "an expired fragment is dropped for the new one"
        );
        assert_eq!(held.used, HELD_SLOTS);
    }

    #[test]
    fn oversized_packet_is_not_held() {
        let mut held = HeldFragments::new();
        let packet = vec![0u8; MAX_HELD_PACKET_LEN + 1];
        assert_eq!(
            held.hold(&key(1), &[0; HELD_HEADER_LEN], &packet, false, 0),
            (false, 0)
        );
    }
}
