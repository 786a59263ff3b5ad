//! Ethernet ports (ethdev): configuration, queues, bursts and counters.
//!
//! A [`Port`] owns one DPDK port id from [`Port::open`] until it is closed or
//! dropped, which stops and closes the device. The port borrows the
//! mempools its rx queues use, so mbufs still in the driver's rings never
//! outlive their pool.

use std::cell::Cell;
use std::ffi::{c_char, CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use spike_dpdk_sys as sys;

use crate::eal::Eal;
use crate::error::DpdkError;
use crate::mbuf::MbufBurst;
use crate::mempool::Mempool;
use crate::queue::{self, RxQueue, TxQueue};

/// Transmit offload bit: the device computes UDP checksums from the pseudo-header
/// checksum left in the UDP header.
pub const TX_OFFLOAD_UDP_CKSUM: u64 = sys::RTE_ETH_TX_OFFLOAD_UDP_CKSUM as u64;

/// RSS hash types that [`Port::configure`] requests: IPv4 and IPv6
/// addresses, plus TCP and UDP ports.
pub const RSS_IP_TCP_UDP: u64 =
    (sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_TCP | sys::RTE_ETH_RSS_UDP) as u64;

// The claimed-port bitmap below has one bit per possible port id.
const _: () = assert!(sys::RTE_MAX_ETHPORTS <= u64::BITS);

/// Port ids that a live `Port` owns, one bit each.
static CLAIMED_PORTS: AtomicU64 = AtomicU64::new(0);

/// Static properties of a port, from `rte_eth_dev_info_get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    pub driver_name: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub min_mtu: u16,
    pub max_mtu: u16,
    /// `RTE_ETH_RX_OFFLOAD_*` bits the device supports.
    pub rx_offload_capa: u64,
    /// `RTE_ETH_TX_OFFLOAD_*` bits the device supports.
    pub tx_offload_capa: u64,
    /// `RTE_ETH_RSS_*` hash types the device supports; zero means no RSS.
    pub flow_type_rss_offloads: u64,
    pub reta_size: u16,
    pub hash_key_size: u8,
}

/// Port counters since start, from `rte_eth_stats_get`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Packets the hardware dropped because rx queues were full.
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// Rx failures because the mempool had no free mbuf.
    pub rx_nombuf: u64,
}

/// Link state, from `rte_eth_link_get_nowait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Speed in Mbit/s; 0 when unknown or down.
    pub speed_mbps: u32,
    pub up: bool,
    pub full_duplex: bool,
    pub autoneg: bool,
}

/// An owned, open ethdev port.
///
/// Control calls take `&self` or `&mut self` but the type is not `Sync`,
/// because DPDK's ethdev control functions are not thread-safe. For
/// polling from several lcores, [`Port::split_queues`] gives one `Send`
/// handle per queue.
#[derive(Debug)]
pub struct Port<'a> {
    id: u16,
    /// One flag per configured rx queue: true once set up.
    rx_queues: Vec<bool>,
    /// One flag per configured tx queue: true once set up.
    tx_queues: Vec<bool>,
    started: bool,
    closed: bool,
    _pools: PhantomData<&'a Mempool<'a>>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<'a> Port<'a> {
    /// Returns the number of ports that the EAL probed and that are not closed.
    pub fn count_avail(eal: &Eal) -> u16 {
        let _ = eal;
        // SAFETY: the EAL is running, as the Eal borrow proves.
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// Returns the names of the ports that the EAL probed and that are not
    /// closed, in port id order, for messages that list the choices.
    pub fn available_names(eal: &Eal) -> Vec<String> {
        let _ = eal;
        let mut names = Vec::new();
        for port_id in 0..sys::RTE_MAX_ETHPORTS as u16 {
            // SAFETY: the EAL is running, as the Eal borrow proves; any id
            // is accepted.
            if unsafe { sys::rte_eth_dev_is_valid_port(port_id) } == 0 {
                continue;
            }
            if let Some(name) = port_name(port_id) {
                names.push(name);
            }
        }
        names
    }

    /// Opens the port named `name`, for example `net_null0` for a
    /// `--vdev net_null0` argument or a PCI address.
    ///
    /// # Errors
    ///
    /// [`DpdkError::PortNotFound`] for an unknown name and
    /// [`DpdkError::PortInUse`] if a `Port` for it already exists.
    pub fn by_name(eal: &'a Eal, name: &str) -> Result<Self, DpdkError> {
        let c_name = CString::new(name).map_err(|_| DpdkError::NulInArgument {
            what: "port name",
            value: name.to_owned(),
        })?;
        let mut port_id = 0u16;

        // SAFETY: the EAL is running, c_name is a valid C string and
        // port_id is a valid place for the result.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port_id) };
        if ret != 0 {
            return Err(DpdkError::PortNotFound {
                name: name.to_owned(),
            });
        }
        Self::open(eal, port_id)
    }

    /// Opens port `port_id`.
    ///
    /// # Errors
    ///
    /// [`DpdkError::InvalidPort`] for an id that is not a valid port, and [`DpdkError::PortInUse`] if a `Port` for it exists.
    pub fn open(eal: &'a Eal, port_id: u16) -> Result<Self, DpdkError> {
        let _ = eal;
        // SAFETY: the EAL is running; any id is accepted.
        let valid = unsafe { sys::rte_eth_dev_is_valid_port(port_id) } != 0;
        if !valid {
            return Err(DpdkError::InvalidPort { port_id });
        }

        let bit = 1u64 << port_id;
        if CLAIMED_PORTS.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            return Err(DpdkError::PortInUse { port_id });
        }

        Ok(Self {
            id: port_id,
            rx_queues: Vec::new(),
            tx_queues: Vec::new(),
            started: false,
            closed: false,
            _pools: PhantomData,
            _not_sync: PhantomData,
        })
    }

    /// Returns the DPDK port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Returns the device name, such as `net_null0`.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] with the code from `rte_eth_dev_get_name_by_port`.
    pub fn name(&self) -> Result<String, DpdkError> {
        let mut buffer: [c_char; sys::RTE_ETH_NAME_MAX_LEN as usize] =
            [0; sys::RTE_ETH_NAME_MAX_LEN as usize];

        // SAFETY: the port is open and buffer has the RTE_ETH_NAME_MAX_LEN
        // bytes that DPDK writes at most, NUL included.
        let ret = unsafe { sys::rte_eth_dev_get_name_by_port(self.id, buffer.as_mut_ptr()) };
        if ret != 0 {
            return Err(self.error("rte_eth_dev_get_name_by_port", ret));
        }

        // SAFETY: on success DPDK wrote a NUL-terminated name into buffer.
        let name = unsafe { CStr::from_ptr(buffer.as_ptr()) };
        Ok(name.to_string_lossy().into_owned())
    }

    /// Returns the NUMA socket of the device, or [`crate::SOCKET_ID_ANY`]
    /// when unknown (virtual devices).
    pub fn socket_id(&self) -> i32 {
        // SAFETY: the port is open.
        unsafe { sys::rte_eth_dev_socket_id(self.id) }
    }

    /// Returns the driver name, queue limits and offload capabilities.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] with the code from `rte_eth_dev_info_get`.
    pub fn dev_info(&self) -> Result<DevInfo, DpdkError> {
        let mut info = sys::rte_eth_dev_info::default();

        // SAFETY: the port is open and info is a valid, writable struct of
        // the layout that DPDK fills.
        let ret = unsafe { sys::rte_eth_dev_info_get(self.id, &mut info) };
        if ret != 0 {
            return Err(self.error("rte_eth_dev_info_get", ret));
        }

        let driver_name = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-NULL driver_name is the driver's static,
            // NUL-terminated name.
            unsafe { CStr::from_ptr(info.driver_name) }
                .to_string_lossy()
                .into_owned()
        };

        Ok(DevInfo {
            driver_name,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            min_mtu: info.min_mtu,
            max_mtu: info.max_mtu,
            rx_offload_capa: info.rx_offload_capa,
            tx_offload_capa: info.tx_offload_capa,
            flow_type_rss_offloads: info.flow_type_rss_offloads,
            reta_size: info.reta_size,
            hash_key_size: info.hash_key_size,
        })
    }

    /// Configures the queue counts. With `rss`, packets are spread over the
    /// rx queues by the hash types of [`RSS_IP_TCP_UDP`] that the device
    /// supports, with the driver's default key. Returns the `RTE_ETH_RSS_*`
    /// bits in use, zero when `rss` is false or the device reports no RSS
    /// hash types (net_pcap in DPDK 22.11; net_null reports them).
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_dev_configure`, for example EINVAL
    /// for more queues than [`DevInfo`] allows or EBUSY on a started port.
    pub fn configure(
        &mut self,
        rx_queues: u16,
        tx_queues: u16,
        rss: bool,
    ) -> Result<u64, DpdkError> {
        self.configure_with_tx_offloads(rx_queues, tx_queues, rss, 0)
            .map(|(rss_hf, _)| rss_hf)
    }

    /// Like [`Port::configure`], and also enables the transmit offloads of
    /// `tx_offloads` (`TX_OFFLOAD_*` bits) that the device supports. Returns
    /// the RSS hash types and the transmit offloads in use.
    ///
    /// # Errors
    ///
    /// As [`Port::configure`].
    pub fn configure_with_tx_offloads(
        &mut self,
        rx_queues: u16,
        tx_queues: u16,
        rss: bool,
        tx_offloads: u64,
    ) -> Result<(u64, u64), DpdkError> {
        let mut conf = sys::rte_eth_conf::default();
        let tx_enabled = tx_offloads & self.dev_info()?.tx_offload_capa;
        conf.txmode.offloads = tx_enabled;
        let mut rss_hf = 0;
        if rss {
            rss_hf = RSS_IP_TCP_UDP & self.dev_info()?.flow_type_rss_offloads;
        }
        if rss_hf != 0 {
            conf.rxmode.mq_mode = sys::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }

        // SAFETY: the port is open and conf is a fully initialized
        // configuration that DPDK copies; a NULL rss_key selects the
        // driver's default key.
        let ret = unsafe { sys::rte_eth_dev_configure(self.id, rx_queues, tx_queues, &conf) };
        if ret != 0 {
            return Err(self.error("rte_eth_dev_configure", ret));
        }

        self.rx_queues = vec![false; usize::from(rx_queues)];
        self.tx_queues = vec![false; usize::from(tx_queues)];
        Ok((rss_hf, tx_enabled))
    }

    /// Sets up rx queue `queue` with `n_desc` descriptors, filled from
    /// `pool`, with the driver's default rx configuration.
    ///
    /// # Errors
    ///
    /// [`DpdkError::QueueOutOfRange`] for a queue beyond [`Port::configure`]
    /// and [`DpdkError::Call`] from `rte_eth_rx_queue_setup`.
    pub fn setup_rx_queue(
        &mut self,
        queue: u16,
        n_desc: u16,
        pool: &'a Mempool<'_>,
    ) -> Result<(), DpdkError> {
        self.check_queue("rx", queue, self.rx_queues.len())?;

        // SAFETY: the port is configured with this queue, a NULL rx_conf
        // selects the driver defaults, and pool is a live pktmbuf pool that
        // the 'a borrow keeps alive for as long as the port.
        let ret = unsafe {
            sys::rte_eth_rx_queue_setup(
                self.id,
                queue,
                n_desc,
                self.queue_socket_id(),
                std::ptr::null(),
                pool.as_ptr(),
            )
        };
        if ret != 0 {
            return Err(self.error("rte_eth_rx_queue_setup", ret));
        }

        self.rx_queues[usize::from(queue)] = true;
        Ok(())
    }

    /// Sets up tx queue `queue` with `n_desc` descriptors and the driver's
    /// default tx configuration.
    ///
    /// # Errors
    ///
    /// [`DpdkError::QueueOutOfRange`] for a queue beyond [`Port::configure`]
    /// and [`DpdkError::Call`] from `rte_eth_tx_queue_setup`.
    pub fn setup_tx_queue(&mut self, queue: u16, n_desc: u16) -> Result<(), DpdkError> {
        self.check_queue("tx", queue, self.tx_queues.len())?;

        // SAFETY: the port is configured with this queue, and a NULL
        // tx_conf selects the driver defaults.
        let ret = unsafe {
            sys::rte_eth_tx_queue_setup(
                self.id,
                queue,
                n_desc,
                self.queue_socket_id(),
                std::ptr::null(),
            )
        };
        if ret != 0 {
            return Err(self.error("rte_eth_tx_queue_setup", ret));
        }

        self.tx_queues[usize::from(queue)] = true;
        Ok(())
    }

    /// Starts the device.
    ///
    /// # Errors
    ///
    /// [`DpdkError::QueueNotSetUp`] if a configured queue was not set up
    /// (DPDK would poll a missing queue), and [`DpdkError::Call`] from
    /// `rte_eth_dev_start`.
    pub fn start(&mut self) -> Result<(), DpdkError> {
        for (direction, queues) in [("rx", &self.rx_queues), ("tx", &self.tx_queues)] {
            if let Some(queue) = queues.iter().position(|ready| !ready) {
                return Err(DpdkError::QueueNotSetUp {
                    port_id: self.id,
                    direction,
                    queue: queue as u16,
                });
            }
        }

        // SAFETY: the port is open and every configured queue is set up.
        let ret = unsafe { sys::rte_eth_dev_start(self.id) };
        if ret != 0 {
            return Err(self.error("rte_eth_dev_start", ret));
        }

        self.started = true;
        Ok(())
    }

    /// Stops the device; queues keep their setup for a later start.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_dev_stop`.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if !self.started {
            return Ok(());
        }

        // SAFETY: the port is open, and &mut self rules out a burst call
        // running at the same time (queue handles borrow the port).
        let ret = unsafe { sys::rte_eth_dev_stop(self.id) };
        if ret != 0 {
            return Err(self.error("rte_eth_dev_stop", ret));
        }

        self.started = false;
        Ok(())
    }

    /// Stops and closes the device, which frees its queues and the mbufs
    /// in them and, for virtual devices, releases the port id.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_dev_stop` or `rte_eth_dev_close`.
    pub fn close(mut self) -> Result<(), DpdkError> {
        self.close_once()
    }

    fn close_once(&mut self) -> Result<(), DpdkError> {
        if self.closed {
            return Ok(());
        }
        self.stop()?;
        self.closed = true;

        // SAFETY: the port is open and stopped, and this is its only close.
        let ret = unsafe { sys::rte_eth_dev_close(self.id) };
        CLAIMED_PORTS.fetch_and(!(1u64 << self.id), Ordering::AcqRel);
        if ret != 0 {
            return Err(self.error("rte_eth_dev_close", ret));
        }
        Ok(())
    }

    /// Enables promiscuous mode.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_promiscuous_enable`, for example
    /// ENOTSUP.
    pub fn enable_promiscuous(&mut self) -> Result<(), DpdkError> {
        // SAFETY: the port is open.
        let ret = unsafe { sys::rte_eth_promiscuous_enable(self.id) };
        if ret != 0 {
            return Err(self.error("rte_eth_promiscuous_enable", ret));
        }
        Ok(())
    }

    /// Returns the port's MAC address.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_macaddr_get`.
    pub fn mac_address(&self) -> Result<[u8; 6], DpdkError> {
        let mut address = sys::rte_ether_addr::default();

        // SAFETY: the port is open and address is a valid place for the
        // six bytes.
        let ret = unsafe { sys::rte_eth_macaddr_get(self.id, &mut address) };
        if ret != 0 {
            return Err(self.error("rte_eth_macaddr_get", ret));
        }
        Ok(address.addr_bytes)
    }

    /// Returns the MTU in bytes (IP packet size, without the Ethernet
    /// header).
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_dev_get_mtu`.
    pub fn mtu(&self) -> Result<u16, DpdkError> {
        let mut mtu = 0u16;

        // SAFETY: the port is open and mtu is a valid place for the result.
        let ret = unsafe { sys::rte_eth_dev_get_mtu(self.id, &mut mtu) };
        if ret != 0 {
            return Err(self.error("rte_eth_dev_get_mtu", ret));
        }
        Ok(mtu)
    }

    /// Returns the link state without waiting for autonegotiation.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_link_get_nowait`.
    pub fn link(&self) -> Result<LinkStatus, DpdkError> {
        let mut link = sys::rte_eth_link::default();

        // SAFETY: the port is open and link is a valid, writable struct.
        let ret = unsafe { sys::rte_eth_link_get_nowait(self.id, &mut link) };
        if ret != 0 {
            return Err(self.error("rte_eth_link_get_nowait", ret));
        }

        Ok(LinkStatus {
            speed_mbps: link.link_speed,
            up: u32::from(link.link_status()) == sys::RTE_ETH_LINK_UP,
            full_duplex: u32::from(link.link_duplex()) == sys::RTE_ETH_LINK_FULL_DUPLEX,
            autoneg: link.link_autoneg() != 0,
        })
    }

    /// Returns the port counters.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_stats_get`.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        read_stats(self.id)
    }

    /// Receives into the free slots of `burst` and returns how many mbufs
    /// arrived. Returns 0 while the port is stopped.
    ///
    /// # Panics
    ///
    /// If `queue` is not a configured rx queue.
    #[inline]
    pub fn rx_burst(&mut self, queue: u16, burst: &mut MbufBurst<'a>) -> usize {
        assert!(
            usize::from(queue) < self.rx_queues.len(),
            "port {} has no rx queue {queue}",
            self.id
        );
        if !self.started {
            return 0;
        }
        queue::rx_burst(self.id, queue, burst)
    }

    /// Transmits the mbufs of `burst` and returns how many the driver
    /// took. Those leave the burst; the rest stay at its front for a retry
    /// or to be dropped. Sends nothing while the port is stopped.
    ///
    /// # Panics
    ///
    /// If `queue` is not a configured tx queue.
    #[inline]
    pub fn tx_burst(&mut self, queue: u16, burst: &mut MbufBurst<'a>) -> usize {
        assert!(
            usize::from(queue) < self.tx_queues.len(),
            "port {} has no tx queue {queue}",
            self.id
        );
        if !self.started {
            return 0;
        }
        queue::tx_burst(self.id, queue, burst)
    }

    /// Splits a started port into one handle per rx and tx queue, for
    /// polling from different lcores. The port cannot be reconfigured or
    /// stopped while the handles exist.
    ///
    /// # Errors
    ///
    /// [`DpdkError::PortNotStarted`] before [`Port::start`].
    #[allow(clippy::type_complexity)]
    pub fn split_queues(
        &mut self,
    ) -> Result<(Vec<RxQueue<'_, 'a>>, Vec<TxQueue<'_, 'a>>), DpdkError> {
        if !self.started {
            return Err(DpdkError::PortNotStarted { port_id: self.id });
        }

        let rx = (0..self.rx_queues.len() as u16)
            .map(|queue| RxQueue::new(self.id, queue))
            .collect();
        let tx = (0..self.tx_queues.len() as u16)
            .map(|queue| TxQueue::new(self.id, queue))
            .collect();
        Ok((rx, tx))
    }

    /// Like [`Port::split_queues`], and also returns a [`StatsReader`] so
    /// the thread that keeps the port can read its counters while other
    /// lcores poll the queues.
    ///
    /// # Errors
    ///
    /// [`DpdkError::PortNotStarted`] before [`Port::start`].
    #[allow(clippy::type_complexity)]
    pub fn split_queues_with_stats(
        &mut self,
    ) -> Result<(Vec<RxQueue<'_, 'a>>, Vec<TxQueue<'_, 'a>>, StatsReader<'_>), DpdkError> {
        let stats = StatsReader {
            port_id: self.id,
            _port: PhantomData,
        };
        let (rx, tx) = self.split_queues()?;
        Ok((rx, tx, stats))
    }

    fn check_queue(
        &self,
        direction: &'static str,
        queue: u16,
        configured: usize,
    ) -> Result<(), DpdkError> {
        if usize::from(queue) < configured {
            return Ok(());
        }
        Err(DpdkError::QueueOutOfRange {
            port_id: self.id,
            direction,
            queue,
            configured: configured as u16,
        })
    }

    /// Socket for queue memory, as the C `unsigned int` that the setup
    /// calls take. DPDK compares it with SOCKET_ID_ANY (-1), so the
    /// wrapped value of an unknown socket keeps its meaning.
    fn queue_socket_id(&self) -> u32 {
        self.socket_id() as u32
    }

    fn error(&self, call: &'static str, ret: i32) -> DpdkError {
        DpdkError::call(call, format!("port {}", self.id), ret)
    }
}

/// Reads the counters of a port whose queues were split off, from
/// [`Port::split_queues_with_stats`]. It borrows the port like the queue
/// handles do, so the port cannot be stopped or closed while it exists. It
/// is `Send` but not `Sync`, so one thread at a time reads through it.
#[derive(Debug)]
pub struct StatsReader<'port> {
    port_id: u16,
    _port: PhantomData<(&'port (), Cell<()>)>,
}

impl StatsReader<'_> {
    /// Returns the port counters, as [`Port::stats`] does.
    ///
    /// # Errors
    ///
    /// [`DpdkError::Call`] from `rte_eth_stats_get`.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        read_stats(self.port_id)
    }
}

/// Reads `port_id`'s counters. Callers guarantee the port is open and that
/// no other thread runs a control call on it at the same time.
fn read_stats(port_id: u16) -> Result<PortStats, DpdkError> {
    let mut stats = sys::rte_eth_stats::default();

    // SAFETY: the port is open (guaranteed by the callers) and stats is a
    // valid, writable struct. rte_eth_stats_get only reads the driver's
    // counters, so it may run while other lcores call the rx and tx burst
    // functions, as testpmd does when it shows statistics mid-run; a
    // counter read during a burst may miss that burst's packets.
    let ret = unsafe { sys::rte_eth_stats_get(port_id, &mut stats) };
    if ret != 0 {
        return Err(DpdkError::call(
            "rte_eth_stats_get",
            format!("port {port_id}"),
            ret,
        ));
    }

    Ok(PortStats {
        ipackets: stats.ipackets,
        opackets: stats.opackets,
        ibytes: stats.ibytes,
        obytes: stats.obytes,
        imissed: stats.imissed,
        ierrors: stats.ierrors,
        oerrors: stats.oerrors,
        rx_nombuf: stats.rx_nombuf,
    })
}

/// Returns the device name of a valid port id, or `None` if DPDK reports
/// no name for it.
fn port_name(port_id: u16) -> Option<String> {
    let mut buffer: [c_char; sys::RTE_ETH_NAME_MAX_LEN as usize] =
        [0; sys::RTE_ETH_NAME_MAX_LEN as usize];

    // SAFETY: the EAL is running (callers hold an Eal or a Port), buffer has
    // the RTE_ETH_NAME_MAX_LEN bytes that DPDK writes at most, NUL
    // included, and DPDK checks the port id.
    let ret = unsafe { sys::rte_eth_dev_get_name_by_port(port_id, buffer.as_mut_ptr()) };
    if ret != 0 {
        return None;
    }

    // SAFETY: on success DPDK wrote a NUL-terminated name into buffer.
    let name = unsafe { CStr::from_ptr(buffer.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

impl Drop for Port<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.close_once() {
            tracing::warn!(port_id = self.id, %error, "closing DPDK port failed");
        }
    }
}
