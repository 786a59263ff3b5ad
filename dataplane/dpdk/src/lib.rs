//! Safe layer over DPDK 22.11 for Spike's dataplane: EAL setup, mbuf pools,
//! owned mbufs and fixed-size bursts, mbuf rings between lcores, ethdev ports
//! and lcore launch.
//!
//! Ownership follows DPDK's rules through lifetimes: an [`Eal`] outlives
//! every [`Mempool`] and [`Port`], a pool outlives its [`Mbuf`]s and the
//! ports that receive into it, and [`Eal::scope`] waits for launched lcores
//! before the data they borrow goes away. The packet path (bursts, mbuf
//! edits) neither allocates nor returns [`DpdkError`].
//!
//! DPDK allows one `rte_eal_init` per process, so tests that use the EAL
//! each run in their own process.

// This crate and spike-dpdk-sys are where Spike's FFI lives: every unsafe
// block here wraps a DPDK call and states why it is sound. The rest of the
// workspace keeps unsafe_code denied.
#![allow(unsafe_code)]

mod eal;
mod error;
mod lcore;
mod mbuf;
mod mempool;
mod port;
mod queue;
mod ring;

pub use eal::Eal;
pub use error::{rte_errno, strerror, DpdkError};
pub use lcore::{lcore_id, pause, rdtsc, LcoreScope, WorkerLcores, LCORE_PANICKED};
pub use mbuf::{tx_offload, Drain, Mbuf, MbufBurst, SegmentTooShort, BURST_SIZE};
pub use mempool::{Mempool, DEFAULT_DATA_ROOM, PKTMBUF_HEADROOM, SOCKET_ID_ANY};
pub use port::{
    DevInfo, LinkStatus, Port, PortStats, StatsReader, RSS_IP_TCP_UDP, TX_OFFLOAD_UDP_CKSUM,
};
pub use queue::{RxQueue, TxQueue};
pub use ring::{MbufRing, RingConsumer, RingProducer};

/// The raw bindings, for DPDK calls that this crate does not wrap.
pub use spike_dpdk_sys as sys;
