//! Packet mbuf pools.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;

use spike_dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::DpdkError;
use crate::mbuf::Mbuf;

/// Socket id that lets DPDK place memory on any NUMA node.
pub const SOCKET_ID_ANY: i32 = sys::SOCKET_ID_ANY;

/// Default mbuf data room: 2048 bytes of packet data plus the headroom.
pub const DEFAULT_DATA_ROOM: u16 = sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;

/// Bytes reserved in front of the packet data of a fresh mbuf, which is the
/// room [`Mbuf::prepend`] can use without copying.
pub const PKTMBUF_HEADROOM: u16 = sys::RTE_PKTMBUF_HEADROOM as u16;

/// A pool of packet mbufs (`rte_pktmbuf_pool_create`), freed on drop.
///
/// Mbufs and ports that use the pool borrow it, so it outlives them.
#[derive(Debug)]
pub struct Mempool<'eal> {
    raw: NonNull<sys::rte_mempool>,
    name: String,
    _eal: PhantomData<&'eal Eal>,
}

// SAFETY: pools from rte_pktmbuf_pool_create use the default multi-producer,
// multi-consumer ring, and the per-lcore caches are indexed by the calling
// thread's lcore id (non-EAL threads bypass them), so any thread may get
// and put mbufs concurrently.
unsafe impl Send for Mempool<'_> {}
// SAFETY: see Send; every method takes &self and is thread-safe in DPDK.
unsafe impl Sync for Mempool<'_> {}

impl<'eal> Mempool<'eal> {
    /// Creates a pool of `n_mbufs` mbufs with `data_room` bytes each
    /// (headroom included, see [`DEFAULT_DATA_ROOM`]) on `socket_id`.
    /// Each lcore caches up to `cache_size` mbufs, which DPDK limits to 512
    /// and to `n_mbufs / 1.5`.
    ///
    /// DPDK suggests `n_mbufs` of the form 2^q - 1, which uses the ring
    /// memory best.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] with the `rte_errno` text, for example ENOMEM
    /// when the EAL memory (`-m`) is too small, EEXIST for a name in use,
    /// or ENAMETOOLONG.
    pub fn new(
        eal: &'eal Eal,
        name: &str,
        n_mbufs: u32,
        cache_size: u32,
        data_room: u16,
        socket_id: i32,
    ) -> Result<Self, DpdkError> {
        let _ = eal;
        let c_name = CString::new(name).map_err(|_| DpdkError::NulInArgument {
            what: "mempool name",
            value: name.to_owned(),
        })?;

        // SAFETY: the EAL is running (the Eal borrow proves it), c_name is a
        // valid C string that DPDK copies, and every other argument is
        // checked by DPDK, which reports bad values through rte_errno.
        let raw = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_name.as_ptr(),
                n_mbufs,
                cache_size,
                0,
                data_room,
                socket_id,
            )
        };

        let Some(raw) = NonNull::new(raw) else {
            return Err(DpdkError::from_rte_errno(
                "rte_pktmbuf_pool_create",
                format!(
                    "mempool {name:?} ({n_mbufs} mbufs of {data_room} bytes, cache {cache_size}, \
                     socket {socket_id})"
                ),
            ));
        };

        Ok(Self {
            raw,
            name: name.to_owned(),
            _eal: PhantomData,
        })
    }

    /// Allocates one mbuf with its data length reset to zero, or `None`
    /// when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        // SAFETY: raw is a live pktmbuf pool.
        let raw = unsafe { sys::spike_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: a non-NULL mbuf from rte_pktmbuf_alloc is owned by the
        // caller, and the returned Mbuf borrows this pool.
        NonNull::new(raw).map(|raw| unsafe { Mbuf::from_raw(raw) })
    }

    /// Returns the number of free mbufs, per-lcore caches included.
    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live mempool; the count is a racy snapshot.
        unsafe { sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Returns the number of mbufs in use: allocated, or held by a port.
    pub fn in_use(&self) -> u32 {
        // SAFETY: raw is a live mempool; the count is a racy snapshot.
        unsafe { sys::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// Returns the name given to [`Mempool::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the raw pool pointer, for DPDK calls outside this crate.
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: every Mbuf and Port that uses this pool borrows it, so
        // none is alive now, and raw is freed exactly once.
        unsafe { sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}
