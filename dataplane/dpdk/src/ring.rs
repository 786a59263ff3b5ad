//! A fixed-size ring of mbufs from many lcores to one (`rte_ring`), for handing
//! frames from one worker to another.
//!
//! [`MbufRing::split`] gives one [`RingConsumer`] and a copyable [`RingProducer`]:
//! any number of lcores enqueue (multi-producer) and exactly one dequeues (single
//! consumer), which the types enforce because the consumer is not `Clone` and
//! borrows the ring mutably. Mbufs move through the ring by ownership: an enqueued
//! mbuf leaves the producer's burst, a dequeued one joins the consumer's, and the
//! ring frees whatever is still in it when it is dropped.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

use spike_dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::DpdkError;
use crate::mbuf::MbufBurst;
use crate::mempool::Mempool;

/// An `rte_ring` of mbufs from pools that live for `'pool`, freed on drop.
#[derive(Debug)]
pub struct MbufRing<'pool> {
    raw: NonNull<sys::rte_ring>,
    capacity: u32,
    _pool: PhantomData<&'pool Mempool<'pool>>,
}

// SAFETY: the ring is created multi-producer, and RingConsumer borrows the
// ring mutably, so there is one consumer. The mbufs in the ring may be freed
// from any thread.
unsafe impl Send for MbufRing<'_> {}
// SAFETY: &MbufRing only reads the capacity; enqueue and dequeue go through
// the handles from split().
unsafe impl Sync for MbufRing<'_> {}

impl<'pool> MbufRing<'pool> {
    /// Creates a ring named `name` for up to `capacity` mbufs, on
    /// `socket_id`. The capacity is exact, not rounded to a power of two.
    ///
    /// # Errors
    ///
    /// [`DpdkError::NulInArgument`] for a name with a NUL byte, and
    /// [`DpdkError::Call`] with the `rte_errno` text: EINVAL for a capacity of 0
    /// or above 2^31 - 1, EEXIST for a name in use, ENOMEM when the EAL memory
    /// (`-m`) is too small.
    pub fn new(eal: &Eal, name: &str, capacity: u32, socket_id: i32) -> Result<Self, DpdkError> {
        let _ = eal;
        let c_name = CString::new(name).map_err(|_| DpdkError::NulInArgument {
            what: "ring name",
            value: name.to_owned(),
        })?;
        let flags = sys::RING_F_SC_DEQ | sys::RING_F_EXACT_SZ;

        // SAFETY: the EAL is running (the Eal borrow proves it), c_name is a
        // valid C string that DPDK copies, and DPDK checks the count and flags,
        // reporting bad values through rte_errno.
        let raw = unsafe { sys::rte_ring_create(c_name.as_ptr(), capacity, socket_id, flags) };
        let Some(raw) = NonNull::new(raw) else {
            return Err(DpdkError::from_rte_errno(
                "rte_ring_create",
                format!("ring {name:?} ({capacity} mbufs, socket {socket_id})"),
            ));
        };
        Ok(Self {
            raw,
            capacity,
            _pool: PhantomData,
        })
    }

    /// Returns the ring's capacity in mbufs.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Returns the one consumer and a producer to copy to every other lcore.
    pub fn split(&mut self) -> (RingConsumer<'_, 'pool>, RingProducer<'_, 'pool>) {
        (
            RingConsumer {
                raw: self.raw,
                _ring: PhantomData,
            },
            RingProducer {
                raw: self.raw,
                _ring: PhantomData,
            },
        )
    }
}

impl Drop for MbufRing<'_> {
    fn drop(&mut self) {
        // No handle from split() is alive now, so this thread is the only consumer.
        let mut left = MbufBurst::new();
        loop {
            let receive = |slots, free: u16| {
                // SAFETY: raw is a live ring, this thread is its only consumer,
                // and slots points at `free` writable mbuf pointers.
                let moved = unsafe {
                    sys::spike_ring_sc_dequeue_burst(self.raw.as_ptr(), slots, free.into())
                };
                // The ring moves at most the u16 count it was given.
                moved as u16
            };
            // SAFETY: the ring returns at most `free` mbufs, each enqueued by
            // a producer that gave up its ownership.
            if unsafe { left.fill_with(receive) } == 0 {
                break;
            }
            left.clear();
        }
        // SAFETY: raw came from rte_ring_create, no handle uses it any more,
        // and it is freed exactly once.
        unsafe { sys::rte_ring_free(self.raw.as_ptr()) }
    }
}

/// The enqueue side of an [`MbufRing`]; copy it to every producing lcore.
#[derive(Clone, Copy, Debug)]
pub struct RingProducer<'ring, 'pool> {
    raw: NonNull<sys::rte_ring>,
    _ring: PhantomData<&'ring MbufRing<'pool>>,
}

// SAFETY: the ring is multi-producer, so several threads may enqueue at once.
unsafe impl Send for RingProducer<'_, '_> {}
// SAFETY: see Send.
unsafe impl Sync for RingProducer<'_, '_> {}

impl<'pool> RingProducer<'_, 'pool> {
    /// Moves as many mbufs of `burst` as fit into the ring, from the front, and
    /// returns how many moved. The rest stay in `burst` for the caller to free
    /// or retry.
    #[inline]
    pub fn enqueue_burst(&self, burst: &mut MbufBurst<'pool>) -> usize {
        let send = |slots, len: u16| {
            // SAFETY: raw is a live multi-producer ring (the borrow of the ring
            // proves it), and slots points at `len` owned mbufs.
            let moved =
                unsafe { sys::spike_ring_mp_enqueue_burst(self.raw.as_ptr(), slots, len.into()) };
            // The ring moves at most the u16 count it was given.
            moved as u16
        };
        // SAFETY: the ring takes exactly the first `sent` pointers it reports,
        // never more than `len`.
        unsafe { burst.send_with(send) }
    }
}

/// The dequeue side of an [`MbufRing`]; only one exists at a time.
#[derive(Debug)]
pub struct RingConsumer<'ring, 'pool> {
    raw: NonNull<sys::rte_ring>,
    _ring: PhantomData<&'ring mut MbufRing<'pool>>,
}

// SAFETY: the consumer may move to the lcore that polls it, and being neither
// Clone nor Sync, it dequeues from one thread at a time.
unsafe impl Send for RingConsumer<'_, '_> {}

impl<'pool> RingConsumer<'_, 'pool> {
    /// Moves up to the free slots of `burst` from the ring into it and returns
    /// how many moved.
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut MbufBurst<'pool>) -> usize {
        let receive = |slots, free: u16| {
            // SAFETY: raw is a live ring and this consumer is its only one,
            // and slots points at `free` writable mbuf pointers.
            let moved =
                unsafe { sys::spike_ring_sc_dequeue_burst(self.raw.as_ptr(), slots, free.into()) };
            // The ring moves at most the u16 count it was given.
            moved as u16
        };
        // SAFETY: the ring returns at most `free` mbufs, each enqueued by a
        // producer that gave up its ownership, from pools that live for 'pool.
        unsafe { burst.fill_with(receive) }
    }
}
