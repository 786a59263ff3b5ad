//! The shared-memory ring between Spike's control plane and its dataplane.
//!
//! One file under `/dev/shm` (any file on a tmpfs works) is mapped by both processes.
//! The control plane is the only writer of snapshots and the dataplane's main lcore the
//! only reader. In the other direction, the dataplane writes its counter totals and the
//! control plane reads them. Neither side ever waits for the other:
//!
//! - Snapshots go to one of several slots. The header's `published` word names the
//!   sequence number and slot of the latest complete snapshot. Before reading a slot the
//!   reader stores its index in the `hazard` word and checks that `published` did not
//!   move; the writer picks a slot that is neither the published one nor the hazard, so
//!   it never overwrites a slot the reader is copying and never waits for it.
//! - Counters use a sequence lock: the writer makes the sequence odd, writes, makes it
//!   even; the reader retries a bounded number of times when it saw a write in progress.
//!
//! Every access to the shared bytes goes through `AtomicU64` words, so a misbehaving
//! peer can corrupt content (which the checksum and the payload checks catch) but cannot
//! cause undefined behaviour in this process.
//!
//! Which [`payload`] a slot carries is independent of the ring mechanics.

// Mapping a file that another process writes at the same time takes `unsafe` (creating
// the mapping and viewing its bytes as atomic words). It lives in `region` only, each
// block with a SAFETY comment; the payload codec denies it.
#![allow(unsafe_code)]

pub mod payload;
mod region;

pub use region::{
    checksum, DataplaneStatus, Delivery, Geometry, Published, Publisher, Received, RingError,
    SlotError, SlotHeader, Subscriber, SLOT_HEADER_LEN,
};
