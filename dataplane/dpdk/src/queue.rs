//! Per-queue burst calls, and queue handles that let different lcores poll
//! the queues of one port.

use std::cell::Cell;
use std::marker::PhantomData;

use spike_dpdk_sys as sys;

use crate::mbuf::MbufBurst;
use crate::port::Port;

/// The rx side of one queue of a started port, from [`Port::split_queues`].
/// It is `Send` but not `Sync`: one lcore polls a queue at a time.
#[derive(Debug)]
pub struct RxQueue<'port, 'pool> {
    port_id: u16,
    queue: u16,
    _port: PhantomData<(&'port mut Port<'pool>, Cell<()>)>,
}

impl<'pool> RxQueue<'_, 'pool> {
    pub(crate) fn new(port_id: u16, queue: u16) -> Self {
        Self {
            port_id,
            queue,
            _port: PhantomData,
        }
    }

    /// Returns the queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives into the free slots of `burst`; see [`Port::rx_burst`].
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst<'pool>) -> usize {
        rx_burst(self.port_id, self.queue, burst)
    }
}

/// The tx side of one queue of a started port, from [`Port::split_queues`].
/// It is `Send` but not `Sync`: one lcore transmits on a queue at a time.
#[derive(Debug)]
pub struct TxQueue<'port, 'pool> {
    port_id: u16,
    queue: u16,
    _port: PhantomData<(&'port mut Port<'pool>, Cell<()>)>,
}

impl<'pool> TxQueue<'_, 'pool> {
    pub(crate) fn new(port_id: u16, queue: u16) -> Self {
        Self {
            port_id,
            queue,
            _port: PhantomData,
        }
    }

    /// Returns the queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Transmits the mbufs of `burst`; see [`Port::tx_burst`].
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut MbufBurst<'pool>) -> usize {
        tx_burst(self.port_id, self.queue, burst)
    }
}

/// Callers guarantee that the port is started, `queue` is a set-up rx
/// queue, and no other thread polls it.
#[inline]
pub(crate) fn rx_burst(port_id: u16, queue: u16, burst: &mut MbufBurst<'_>) -> usize {
    let receive = |slots, free| {
        // SAFETY: the port is started with this rx queue set up and polled
        // by this thread alone (guaranteed by the callers), and slots
        // points at `free` writable mbuf pointers.
        unsafe { sys::spike_eth_rx_burst(port_id, queue, slots, free) }
    };

    // SAFETY: DPDK writes at most `free` owned mbufs into the free slots,
    // from pools that the port borrows for the burst's 'pool lifetime.
    unsafe { burst.fill_with(receive) }
}

/// Callers guarantee that the port is started, `queue` is a set-up tx
/// queue, and no other thread transmits on it.
#[inline]
pub(crate) fn tx_burst(port_id: u16, queue: u16, burst: &mut MbufBurst<'_>) -> usize {
    let transmit = |slots, len| {
        // SAFETY: the port is started with this tx queue set up and used by
        // this thread alone (guaranteed by the callers), and slots points
        // at `len` owned mbufs.
        unsafe { sys::spike_eth_tx_burst(port_id, queue, slots, len) }
    };

    // SAFETY: rte_eth_tx_burst takes ownership of exactly the first `sent`
    // mbufs it reports and never more than `len`.
    unsafe { burst.send_with(transmit) }
}
