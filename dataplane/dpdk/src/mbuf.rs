//! Owned packet buffers and a fixed-size burst of them.
//!
//! [`Mbuf`] owns one `rte_mbuf` and frees it on drop. Its byte slices cover
//! the first segment only, which is the whole packet unless a driver chains
//! segments (jumbo frames, scattered rx). [`MbufBurst`] contains up to
//! [`BURST_SIZE`] mbufs in a fixed array that is reused across polls.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::slice;

use spike_dpdk_sys as sys;

use crate::mempool::Mempool;

/// Capacity of an [`MbufBurst`], the default burst size of testpmd and
/// DPDK's sample applications.
pub const BURST_SIZE: usize = 32;

/// Checksum offload request flags for [`Mbuf::set_tx_offload`]
/// (`RTE_MBUF_F_TX_*`). The port must have the matching
/// `RTE_ETH_TX_OFFLOAD_*` capability enabled.
pub mod tx_offload {
    use spike_dpdk_sys as sys;

    pub const IPV4: u64 = sys::RTE_MBUF_F_TX_IPV4;
    pub const IPV6: u64 = sys::RTE_MBUF_F_TX_IPV6;
    pub const IP_CKSUM: u64 = sys::RTE_MBUF_F_TX_IP_CKSUM;
    pub const TCP_CKSUM: u64 = sys::RTE_MBUF_F_TX_TCP_CKSUM;
    pub const UDP_CKSUM: u64 = sys::RTE_MBUF_F_TX_UDP_CKSUM;
}

/// Error of [`Mbuf::adj`] and [`Mbuf::trim`]: the first or last segment is
/// shorter than the requested length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot remove {requested} bytes from an mbuf segment of {data_len} bytes")]
pub struct SegmentTooShort {
    pub requested: u16,
    pub data_len: u16,
}

/// An owned packet mbuf, freed with `rte_pktmbuf_free` on drop.
///
/// `'pool` is the borrow of the [`Mempool`] the mbuf comes from, so the
/// pool cannot be freed first. Mutable access assumes the mbuf is not
/// shared (reference count 1), which is true for mbufs from
/// [`Mempool::alloc`] and from rx bursts because this crate never clones.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf<'pool> {
    raw: NonNull<sys::rte_mbuf>,
    _pool: PhantomData<&'pool Mempool<'pool>>,
}

// SAFETY: an Mbuf is the sole owner of its rte_mbuf, and freeing returns it
// to a thread-safe mempool from any thread.
unsafe impl Send for Mbuf<'_> {}
// SAFETY: &Mbuf only reads the mbuf; writes need &mut Mbuf.
unsafe impl Sync for Mbuf<'_> {}

impl<'pool> Mbuf<'pool> {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    ///
    /// `raw` must be a valid, unshared mbuf that nothing else frees, from a
    /// pool that lives for `'pool`.
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<sys::rte_mbuf>) -> Self {
        Self {
            raw,
            _pool: PhantomData,
        }
    }

    /// Gives up ownership without freeing, for example after handing the
    /// mbuf to a DPDK call that frees it.
    #[inline]
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }

    /// Returns the raw pointer while keeping ownership.
    #[inline]
    pub fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.raw.as_ptr()
    }

    /// Returns the mbuf's header for reading its fields. The fast path reads them
    /// here, inline, instead of calling DPDK's static inline accessors through the
    /// C shim.
    #[inline]
    fn fields(&self) -> &sys::rte_mbuf {
        // SAFETY: raw points at a valid, initialized rte_mbuf that self owns. Nothing
        // else writes to it while self exists, because the mbuf is not shared.
        unsafe { self.raw.as_ref() }
    }

    /// Returns the mbuf's header for changing its fields.
    #[inline]
    fn fields_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as in fields(), and &mut self makes this the only access to the header.
        unsafe { self.raw.as_mut() }
    }

    /// Returns where the data of the first segment starts (`rte_pktmbuf_mtod`).
    #[inline]
    fn data_start(&self) -> *mut u8 {
        let fields = self.fields();
        // SAFETY: DPDK keeps data_off + data_len within the buf_len bytes of the buffer
        // at buf_addr, so the offset stays inside that allocation.
        unsafe {
            fields
                .buf_addr
                .cast::<u8>()
                .add(usize::from(fields.data_off))
        }
    }

    /// Returns the bytes of the first segment (`data_len` bytes).
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the data_len bytes from data_start() are initialized bytes inside
        // the buffer that this Mbuf owns. The slice borrows self, so no call that
        // changes the length can run while it exists.
        unsafe { slice::from_raw_parts(self.data_start(), usize::from(self.data_len())) }
    }

    /// Returns the bytes of the first segment for writing.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(); &mut self makes the slice the only access to these
        // bytes, since the mbuf is not shared.
        unsafe { slice::from_raw_parts_mut(self.data_start(), usize::from(self.data_len())) }
    }

    /// Returns the length of the first segment in bytes.
    #[inline]
    pub fn data_len(&self) -> u16 {
        self.fields().data_len
    }

    /// Returns the packet length in bytes, all segments included.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.fields().pkt_len
    }

    /// Copies the whole packet, every segment, into the front of `buffer` and returns
    /// its length, or `None` if `buffer` is too short. This is the slow path for frames
    /// the driver chained over several mbufs.
    pub fn copy_all(&self, buffer: &mut [u8]) -> Option<usize> {
        let len = self.pkt_len();
        let target = buffer.get_mut(..usize::try_from(len).ok()?)?;
        // SAFETY: raw is a valid mbuf owned by self, and target is a writable slice of
        // exactly pkt_len bytes that the shim fills and does not keep.
        let copied =
            unsafe { sys::spike_pktmbuf_copy_all(self.raw.as_ptr(), target.as_mut_ptr(), len) };
        (copied == 1).then_some(target.len())
    }

    /// Returns the number of chained segments.
    #[inline]
    pub fn nb_segs(&self) -> u16 {
        self.fields().nb_segs
    }

    /// Returns the free bytes in front of the data.
    #[inline]
    pub fn headroom(&self) -> u16 {
        self.fields().data_off
    }

    /// Returns the free bytes after the data of the last segment.
    #[inline]
    pub fn tailroom(&self) -> u16 {
        // SAFETY: raw is a valid mbuf owned by self.
        unsafe { sys::spike_pktmbuf_tailroom(self.raw.as_ptr()) }
    }

    /// Grows the packet by `len` bytes at the front, into the headroom
    /// without copying, and returns the new bytes (uninitialized contents
    /// are whatever the buffer held). Returns `None` if the headroom is
    /// smaller than `len`.
    #[inline]
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        // The same checks and updates as DPDK's inline rte_pktmbuf_prepend.
        let fields = self.fields_mut();
        if len > fields.data_off {
            return None;
        }
        fields.data_off -= len;
        // The new bytes were headroom of this buffer, so data_len stays below buf_len.
        fields.data_len += len;
        fields.pkt_len += u32::from(len);
        // SAFETY: the len bytes from the new data start were headroom inside the mbuf's
        // buffer and are now the front of the first segment. The slice borrows self
        // mutably.
        Some(unsafe { slice::from_raw_parts_mut(self.data_start(), usize::from(len)) })
    }

    /// Grows the packet by `len` bytes at the end of the last segment and
    /// returns the new bytes, or `None` if the tailroom is smaller.
    #[inline]
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: as in prepend, with DPDK checking the tailroom.
        let start = unsafe { sys::spike_pktmbuf_append(self.raw.as_ptr(), len) };
        if start.is_null() {
            return None;
        }
        // SAFETY: the len bytes from start lie in the last segment's buffer
        // and are now packet data; the slice borrows self mutably.
        Some(unsafe { slice::from_raw_parts_mut(start, usize::from(len)) })
    }

    /// Removes `len` bytes from the front of the packet (for example a
    /// decapsulated outer header); the bytes become headroom.
    ///
    /// # Errors
    ///
    /// [`SegmentTooShort`] if the first segment has fewer than `len` bytes.
    #[inline]
    pub fn adj(&mut self, len: u16) -> Result<(), SegmentTooShort> {
        // The same checks and updates as DPDK's inline rte_pktmbuf_adj.
        let fields = self.fields_mut();
        if len > fields.data_len {
            return Err(SegmentTooShort {
                requested: len,
                data_len: fields.data_len,
            });
        }
        fields.data_len -= len;
        fields.data_off += len;
        fields.pkt_len -= u32::from(len);
        Ok(())
    }

    /// Removes `len` bytes from the end of the last segment.
    ///
    /// # Errors
    ///
    /// [`SegmentTooShort`] if the last segment has fewer than `len` bytes.
    #[inline]
    pub fn trim(&mut self, len: u16) -> Result<(), SegmentTooShort> {
        if self.nb_segs() != 1 {
            return self.trim_last_segment(len);
        }
        // One segment is its own last segment: the checks and updates of DPDK's
        // inline rte_pktmbuf_trim without the walk along `next`.
        let fields = self.fields_mut();
        if len > fields.data_len {
            return Err(SegmentTooShort {
                requested: len,
                data_len: fields.data_len,
            });
        }
        fields.data_len -= len;
        fields.pkt_len -= u32::from(len);
        Ok(())
    }

    /// Trims a chained packet through DPDK, which finds the last segment.
    #[cold]
    fn trim_last_segment(&mut self, len: u16) -> Result<(), SegmentTooShort> {
        // SAFETY: raw is a valid, unshared mbuf owned by self. DPDK returns -1 without
        // changing anything when the last segment is too short.
        let ret = unsafe { sys::spike_pktmbuf_trim(self.raw.as_ptr(), len) };
        if ret != 0 {
            return Err(SegmentTooShort {
                requested: len,
                data_len: self.data_len(),
            });
        }
        Ok(())
    }

    /// Returns the offload flags (`ol_flags`), including what the driver
    /// reported on receive.
    #[inline]
    pub fn ol_flags(&self) -> u64 {
        self.fields().ol_flags
    }

    /// Requests transmit offloads: adds `flags` (see [`tx_offload`]) to
    /// `ol_flags` and sets the header lengths in bytes that the NIC needs
    /// to find the checksums. DPDK stores l2_len in 7 bits, l3_len in 9
    /// bits and l4_len in 8 bits, so larger values are truncated.
    #[inline]
    pub fn set_tx_offload(&mut self, flags: u64, l2_len: u8, l3_len: u16, l4_len: u8) {
        // SAFETY: raw is a valid, unshared mbuf owned by self; the shim only
        // writes the flag word and the length bit-fields.
        unsafe {
            sys::spike_pktmbuf_set_tx_offload(
                self.raw.as_ptr(),
                flags,
                u64::from(l2_len),
                u64::from(l3_len),
                u64::from(l4_len),
            );
        }
    }
}

impl Drop for Mbuf<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: self owns raw, which is freed once, here.
        unsafe { sys::spike_pktmbuf_free(self.raw.as_ptr()) }
    }
}

// MbufBurst passes its slots to C as `struct rte_mbuf **`, which relies on
// Option<Mbuf> being one nullable pointer.
const _: () = assert!(
    std::mem::size_of::<Option<Mbuf<'static>>>() == std::mem::size_of::<*mut sys::rte_mbuf>()
);

/// Up to [`BURST_SIZE`] owned mbufs in a fixed array, so no burst
/// allocates. Dropping or clearing the burst frees the mbufs with one
/// `rte_pktmbuf_free_bulk` call.
#[derive(Debug)]
pub struct MbufBurst<'pool> {
    // Slots 0..len are Some and the rest None. Option<Mbuf> has the layout
    // of a plain `struct rte_mbuf *` (NULL for None), so the filled prefix
    // is passed to rx and tx burst calls as a C pointer array.
    slots: [Option<Mbuf<'pool>>; BURST_SIZE],
    len: usize,
}

impl Default for MbufBurst<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'pool> MbufBurst<'pool> {
    /// Creates an empty burst.
    pub fn new() -> Self {
        Self {
            slots: [const { None }; BURST_SIZE],
            len: 0,
        }
    }

    /// Returns the number of mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Returns true if the burst contains no mbufs.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the number of free slots.
    #[inline]
    pub fn free_slots(&self) -> usize {
        BURST_SIZE - self.len
    }

    /// Adds an mbuf at the end, or hands it back if the burst is full.
    #[inline]
    pub fn push(&mut self, mbuf: Mbuf<'pool>) -> Result<(), Mbuf<'pool>> {
        if self.len == BURST_SIZE {
            return Err(mbuf);
        }
        self.slots[self.len] = Some(mbuf);
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf<'pool>> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.slots[self.len].take()
    }

    /// Iterates over the mbufs in order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = &Mbuf<'pool>> {
        self.slots[..self.len].iter().flatten()
    }

    /// Iterates over the mbufs in order, for in-place edits.
    #[inline]
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Mbuf<'pool>> {
        self.slots[..self.len].iter_mut().flatten()
    }

    /// Removes all mbufs in order. The burst is empty afterwards even if
    /// the iterator is dropped early, which frees the mbufs not taken.
    pub fn drain(&mut self) -> Drain<'_, 'pool> {
        let len = std::mem::take(&mut self.len);
        Drain {
            slots: self.slots[..len].iter_mut(),
        }
    }

    /// Frees all mbufs with one bulk call.
    pub fn clear(&mut self) {
        if self.len == 0 {
            return;
        }
        let len = std::mem::take(&mut self.len);

        // SAFETY: slots 0..len are Some, and Option<Mbuf> is a non-null
        // `struct rte_mbuf *`, so the prefix is a valid array of owned
        // mbufs. Each slot is overwritten with None, without running Drop,
        // right after DPDK has freed it.
        unsafe {
            sys::rte_pktmbuf_free_bulk(self.raw_slots(), len as u32);
        }
        for slot in &mut self.slots[..len] {
            std::mem::forget(slot.take());
        }
    }

    /// Returns the slot array as a C `struct rte_mbuf **`.
    #[inline]
    fn raw_slots(&mut self) -> *mut *mut sys::rte_mbuf {
        self.slots.as_mut_ptr().cast()
    }

    /// Lets a driver fill the free slots, as an rx burst does. `fill`
    /// receives a pointer to the first free slot and the number of free
    /// slots, and returns how many mbufs it wrote.
    ///
    /// # Safety
    ///
    /// `fill` must write that many valid, owned mbuf pointers from pools
    /// that live for `'pool`, and no more than the free slots.
    #[inline]
    pub(crate) unsafe fn fill_with(
        &mut self,
        fill: impl FnOnce(*mut *mut sys::rte_mbuf, u16) -> u16,
    ) -> usize {
        let free = self.free_slots() as u16;
        // SAFETY: len <= BURST_SIZE, so the offset stays inside the array.
        let first_free = unsafe { self.raw_slots().add(self.len) };
        let written = usize::from(fill(first_free, free));
        debug_assert!(written <= usize::from(free));
        self.len += written;
        written
    }

    /// Hands the mbufs to a driver, as a tx burst does. `send` receives the
    /// pointer array and its length and returns how many mbufs the driver
    /// took. Those leave the burst, and the rest move to the front.
    ///
    /// # Safety
    ///
    /// `send` must take ownership of exactly the first `n` mbufs it
    /// reports, with `n` at most the length it was given.
    #[inline]
    pub(crate) unsafe fn send_with(
        &mut self,
        send: impl FnOnce(*mut *mut sys::rte_mbuf, u16) -> u16,
    ) -> usize {
        let len = self.len;
        let sent = usize::from(send(self.raw_slots(), len as u16));
        debug_assert!(sent <= len);

        for slot in &mut self.slots[..sent] {
            std::mem::forget(slot.take());
        }
        self.slots[..len].rotate_left(sent);
        self.len = len - sent;
        sent
    }
}

impl Drop for MbufBurst<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Iterator from [`MbufBurst::drain`].
#[derive(Debug)]
pub struct Drain<'burst, 'pool> {
    slots: slice::IterMut<'burst, Option<Mbuf<'pool>>>,
}

impl<'pool> Iterator for Drain<'_, 'pool> {
    type Item = Mbuf<'pool>;

    #[inline]
    fn next(&mut self) -> Option<Mbuf<'pool>> {
        self.slots.next().and_then(Option::take)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

impl Drop for Drain<'_, '_> {
    fn drop(&mut self) {
        // Empties the remaining slots, because the burst already counts
        // them as free.
        for slot in &mut self.slots {
            drop(slot.take());
        }
    }
}
