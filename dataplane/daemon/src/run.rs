//! Start-up, the main lcore's control loop, and shutdown.
//!
//! The main lcore never polls queues. It launches one poll loop per worker lcore, then
//! sleeps in short ticks, handling signals and writing the counters file, until SIGINT
//! or SIGTERM arrives or a worker fails. After the workers stop it prints the final
//! counters, closes the ports and cleans up the EAL.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use spike_core::config::DpdkConfig;
use spike_core::{Config, Snapshot, Worker};
use spike_dpdk::{
    DpdkError, Eal, MbufRing, Mempool, Port, PortStats, RxQueue, StatsReader, TxQueue,
    DEFAULT_DATA_ROOM, LCORE_PANICKED, PKTMBUF_HEADROOM, SOCKET_ID_ANY, TX_OFFLOAD_UDP_CKSUM,
};
use tracing::{error, info, warn};

use crate::error::{one_line, DaemonError};
use crate::poll::{self, Lane, PollSettings, Shared, Steering, WorkerReport};
use crate::reload::{self, ETHERNET_AND_VLAN_LEN};
use crate::report::{write_atomically, PortCounters, Totals};
use crate::ring::RingLink;
use crate::Args;

/// How long the main lcore sleeps between checks for signals and stopped workers.
const CONTROL_TICK: Duration = Duration::from_millis(20);

/// How long a replaced snapshot is kept alive by the main lcore. Workers hold a
/// snapshot for one poll at most, so after this the main lcore drops the last
/// reference and the free happens here instead of on a worker's packet path.
const RETIRE_AFTER: Duration = Duration::from_secs(1);

/// Fragments the other workers can queue for worker 0 before it takes them. At one
/// burst per poll, worker 0 empties a full ring in 32 polls.
const FRAGMENT_RING_SIZE: u32 = 1024;

/// Largest per-lcore mbuf cache; DPDK allows up to 512.
const MAX_MBUF_CACHE: u32 = 256;

/// Flags set by the signal handlers.
struct Signals {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers. Repeated stop signals are harmless: wrappers such as
    /// timeout(1) and a terminal's Ctrl-C can deliver the same SIGINT twice, and the
    /// stop must still print the final counters.
    fn install() -> Result<Signals, DaemonError> {
        let stop = Arc::new(AtomicBool::new(false));
        let reload = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(DaemonError::Signals)?;
        }
        signal_hook::flag::register(SIGHUP, Arc::clone(&reload)).map_err(DaemonError::Signals)?;
        Ok(Signals { stop, reload })
    }
}

/// Runs the dataplane until SIGINT or SIGTERM.
///
/// # Errors
///
/// A [`DaemonError`] for an invalid config, a DPDK failure or a failed worker.
pub fn run(args: &Args) -> Result<(), DaemonError> {
    let config = crate::config::load(&args.config)?.config;
    let dpdk = config
        .dpdk
        .clone()
        .ok_or_else(|| DaemonError::MissingDpdk {
            path: args.config.display().to_string(),
        })?;
    let snapshot = Snapshot::build(&config, 1)?;
    crate::check::log_unslotted(&snapshot, &args.config);
    let signals = Signals::install()?;

    // Held until exit: a second dataplane on the same port would forward every packet
    // twice.
    let _port_lock = lock_port(&dpdk.port)?;
    // Before EAL starts, so that a second reader of the ring stops without touching a port.
    let ring = dpdk
        .snapshot_ring
        .as_deref()
        .map(RingLink::new)
        .transpose()
        .map_err(DaemonError::RingInUse)?;
    let eal = init_eal(&dpdk)?;
    let lcores = worker_lcores(&eal, dpdk.workers)?;
    let data_room = data_room_for(config.node.mtu);
    let pool = create_pool(&eal, &dpdk, data_room)?;
    let (mut port, udp_checksum_offload) = open_port(&eal, &pool, &dpdk.port, &dpdk, true)?;
    let mut kernel_port = match &dpdk.kernel_port {
        Some(name) => Some(open_port(&eal, &pool, name, &dpdk, false)?.0),
        None => None,
    };
    // The port is promiscuous, so frames for other hosts arrive too: workers drop them
    // by the port's real MAC.
    let port_mac = port.mac_address().ok().map(spike_core::wire::MacAddr);
    match port_mac {
        Some(mac) if mac != config.node.mac => warn!(
            port = dpdk.port,
            %mac,
            configured = %config.node.mac,
            "node.mac differs from the port's MAC; frames go out with node.mac as source"
        ),
        Some(_) => {}
        None => warn!(
            port = dpdk.port,
            "cannot read the port's MAC; frames for other hosts are not filtered"
        ),
    }
    let workers = (0..usize::from(dpdk.workers))
        .map(|index| {
            let mut worker =
                Worker::new(&config).map_err(|source| DaemonError::Worker { index, source })?;
            worker.set_udp_checksum_offload(udp_checksum_offload);
            worker.set_mac_filter(port_mac.filter(|_| dpdk.mac_filter));
            Ok(worker)
        })
        .collect::<Result<Vec<_>, DaemonError>>()?;

    let shared = Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        stop: AtomicBool::new(false),
        reports: (0..workers.len())
            .map(|_| ArcSwap::from_pointee(WorkerReport::default()))
            .collect(),
    };
    let mut control = Control {
        args,
        config: &config,
        max_frame_data: usize::from(data_room - PKTMBUF_HEADROOM),
        signals: &signals,
        shared: &shared,
        retired: None,
        counters_file_failing: false,
        ring,
    };
    let run_result = forward(
        &eal,
        &pool,
        &mut port,
        kernel_port.as_mut(),
        workers,
        &lcores,
        &mut control,
    );

    let ports = PortCounters {
        port: read_stats(&port),
        kernel_port: kernel_port.as_ref().and_then(read_stats),
    };
    let totals = control.totals(ports);
    control.write_counters_file(&totals);
    print_final(&totals);

    let close_result = close_ports(port, kernel_port);
    drop(pool);
    if let Err(error) = eal.cleanup() {
        warn!(%error, "EAL cleanup failed");
    }
    run_result?;
    close_result
}

/// The main lcore's state while the workers run.
struct Control<'a> {
    args: &'a Args,
    /// The config the dataplane started with; reloads are checked against it.
    config: &'a Config,
    /// Packet bytes one mbuf holds, which bounds `node.mtu` on reload.
    max_frame_data: usize,
    signals: &'a Signals,
    shared: &'a Shared,
    /// The snapshot replaced by the last reload, and when.
    retired: Option<(Arc<Snapshot>, Instant)>,
    /// Whether the last counters file write failed, so repeated failures log once.
    counters_file_failing: bool,
    /// The snapshot ring, when `dpdk.snapshot_ring` is set.
    ring: Option<RingLink>,
}

impl Control<'_> {
    /// Handles signals and writes the counters file until a stop signal arrives or a
    /// worker stops on its own.
    fn run(&mut self, stats: &PortReaders<'_>) {
        let interval = Duration::from_millis(self.args.counters_interval_ms);
        let mut next_write = Instant::now();
        while !self.signals.stop.load(Ordering::Relaxed)
            && !self.shared.stop.load(Ordering::Relaxed)
        {
            if self.signals.reload.swap(false, Ordering::Relaxed) {
                match &self.ring {
                    Some(ring) => ring.log_reload_ignored(),
                    None => self.reload(),
                }
            }
            self.poll_ring();
            if self
                .retired
                .as_ref()
                .is_some_and(|(_, since)| since.elapsed() >= RETIRE_AFTER)
            {
                self.retired = None;
            }
            if Instant::now() >= next_write {
                let totals = self.totals(stats.read());
                self.write_counters_file(&totals);
                if let Some(ring) = &self.ring {
                    ring.publish_counters(&totals);
                }
                next_write = Instant::now() + interval;
            }
            std::thread::sleep(CONTROL_TICK);
        }
        if self.signals.stop.load(Ordering::Relaxed) {
            info!("stop signal received; stopping the workers");
        }
    }

    fn reload(&mut self) {
        let path = &self.args.config;
        match reload::reload(path, self.config, self.max_frame_data, self.shared) {
            Ok((previous, generation)) => {
                self.retired = Some((previous, Instant::now()));
                let services = self.shared.snapshot.load().services.len();
                info!(config = %path.display(), generation, services, "config reloaded");
            }
            Err(error) => {
                let generation = self.shared.snapshot.load().generation;
                error!(
                    config = %path.display(),
                    error = %one_line(&error.to_string()),
                    generation,
                    "config reload rejected; the running snapshot stays"
                );
            }
        }
    }

    fn poll_ring(&mut self) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        if let Some(previous) = ring.poll(self.config, self.max_frame_data, self.shared) {
            // A snapshot replaced within RETIRE_AFTER of the last one is retired only
            // after it, so its predecessor is dropped here on the main lcore: workers
            // hold a snapshot for one poll, far less than a control tick.
            self.retired = Some((previous, Instant::now()));
        }
    }

    fn totals(&self, ports: PortCounters) -> Totals {
        let reports: Vec<Arc<WorkerReport>> =
            self.shared.reports.iter().map(ArcSwap::load_full).collect();
        let mut totals = Totals::collect(&self.shared.snapshot.load(), &reports, ports);
        totals.hash_key_mismatches = self.ring.as_ref().map_or(0, RingLink::hash_key_mismatches);
        totals
    }

    fn write_counters_file(&mut self, totals: &Totals) {
        let Some(path) = &self.args.counters_file else {
            return;
        };
        let mut text = totals.to_json().to_string();
        text.push('\n');
        match write_atomically(path, text.as_bytes()) {
            Ok(()) if self.counters_file_failing => {
                self.counters_file_failing = false;
                info!(path = %path.display(), "counters file written again");
            }
            Ok(()) => {}
            Err(error) if !self.counters_file_failing => {
                self.counters_file_failing = true;
                error!(path = %path.display(), %error, "cannot write the counters file");
            }
            Err(_) => {}
        }
    }
}

/// Counter readers of the ports whose queues the workers own.
struct PortReaders<'a> {
    port: StatsReader<'a>,
    kernel_port: Option<StatsReader<'a>>,
}

impl PortReaders<'_> {
    fn read(&self) -> PortCounters {
        PortCounters {
            port: self.port.stats().ok(),
            kernel_port: self
                .kernel_port
                .as_ref()
                .and_then(|reader| reader.stats().ok()),
        }
    }
}

/// Splits the ports into per-worker lanes, runs the workers and the control loop, and
/// returns once every worker has stopped.
fn forward<'pool>(
    eal: &Eal,
    pool: &'pool Mempool<'_>,
    port: &mut Port<'pool>,
    kernel_port: Option<&mut Port<'pool>>,
    workers: Vec<Worker>,
    lcores: &[u32],
    control: &mut Control<'_>,
) -> Result<(), DaemonError> {
    let (rx, tx, port_stats) = port
        .split_queues_with_stats()
        .map_err(DaemonError::dpdk("cannot split the port's queues"))?;
    let (kernel_queues, kernel_stats) = match kernel_port {
        Some(kernel_port) => {
            let (rx, tx, stats) = kernel_port
                .split_queues_with_stats()
                .map_err(DaemonError::dpdk("cannot split the kernel port's queues"))?;
            (Some((rx, tx)), Some(stats))
        }
        None => (None, None),
    };
    let readers = PortReaders {
        port: port_stats,
        kernel_port: kernel_stats,
    };
    let lanes = build_lanes(rx, tx, kernel_queues);
    // Every fragment goes to worker 0, which owns the only fragment table in use.
    let mut fragment_ring = if lanes.len() > 1 {
        let ring = MbufRing::new(eal, "spike_fragments", FRAGMENT_RING_SIZE, SOCKET_ID_ANY)
            .map_err(DaemonError::dpdk(format!(
                "cannot create the ring of {FRAGMENT_RING_SIZE} fragments for worker 0; on ENOMEM \
                 raise -m in dpdk.eal_args"
            )))?;
        Some(ring)
    } else {
        None
    };
    let (mut collector, sender) = match fragment_ring.as_mut().map(MbufRing::split) {
        Some((consumer, producer)) => (Some(consumer), Some(producer)),
        None => (None, None),
    };
    let shared = control.shared;
    let tx_retries = control
        .config
        .dpdk
        .as_ref()
        .map_or(1, |dpdk| dpdk.tx_retries);
    let tsc_hz = eal.tsc_hz();

    let codes = eal
        .scope(|scope| {
            // Sets the stop flag on every way out of this closure, error returns included,
            // because the scope waits for the launched workers before it returns.
            let _stop = StopGuard(&shared.stop);
            let workers_started = lanes.len();
            let jobs = lanes.into_iter().zip(workers).zip(lcores).enumerate();
            for (index, ((lane, worker), &lcore_id)) in jobs {
                let settings = PollSettings {
                    index,
                    pool,
                    shared,
                    tx_retries,
                    tsc_hz,
                    conntrack_capacity: control.config.conntrack.capacity,
                };
                let steering = match (collector.take(), sender) {
                    (Some(consumer), _) => Steering::Collect(consumer),
                    (None, Some(producer)) => Steering::Send(producer),
                    (None, None) => Steering::Off,
                };
                scope
                    .launch_on_lcore(lcore_id, move || {
                        poll::run(lane, worker, steering, settings)
                    })
                    .map_err(DaemonError::dpdk(format!(
                        "cannot launch a worker on lcore {lcore_id}"
                    )))?;
            }
            info!(workers = workers_started, lcores = ?lcores, "forwarding started");
            control.run(&readers);
            shared.stop.store(true, Ordering::Relaxed);
            Ok::<_, DaemonError>(scope.wait_all_lcores())
        })
        .map_err(DaemonError::dpdk("cannot launch the workers"))??;

    for (lcore_id, code) in codes {
        if code != 0 {
            if code == LCORE_PANICKED {
                error!(lcore_id, "worker panicked");
            }
            return Err(DaemonError::WorkerFailed { lcore_id, code });
        }
    }
    info!("workers stopped");
    Ok(())
}

/// Pairs queue `i` of each port into worker `i`'s lane.
#[allow(clippy::type_complexity)]
fn build_lanes<'port, 'pool>(
    rx: Vec<RxQueue<'port, 'pool>>,
    tx: Vec<TxQueue<'port, 'pool>>,
    kernel: Option<(Vec<RxQueue<'port, 'pool>>, Vec<TxQueue<'port, 'pool>>)>,
) -> Vec<Lane<'port, 'pool>> {
    let mut kernel_queues: Vec<Option<(RxQueue<'port, 'pool>, TxQueue<'port, 'pool>)>> =
        match kernel {
            Some((kernel_rx, kernel_tx)) => {
                kernel_rx.into_iter().zip(kernel_tx).map(Some).collect()
            }
            None => Vec::new(),
        };
    kernel_queues.resize_with(rx.len(), || None);
    rx.into_iter()
        .zip(tx)
        .zip(kernel_queues)
        .map(|((rx, tx), kernel)| Lane { rx, tx, kernel })
        .collect()
}

/// Sets the flag when dropped.
struct StopGuard<'a>(&'a AtomicBool);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Takes an exclusive lock named after `port` in `$RUNTIME_DIRECTORY` (or /run/spike),
/// released by the kernel when this process exits, however it exits.
fn lock_port(port: &str) -> Result<std::fs::File, DaemonError> {
    let directory = std::env::var_os("RUNTIME_DIRECTORY")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/run/spike"));
    let name: String = port
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = directory.join(format!("spike-dataplane-{name}.lock"));
    let lock_error = |source: std::io::Error| DaemonError::PortLock {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&directory).map_err(lock_error)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::PortInUse {
            port: port.to_owned(),
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(lock_error(source)),
    }
}

fn init_eal(dpdk: &DpdkConfig) -> Result<Eal, DaemonError> {
    // DPDK and getopt use argv[0] as the prefix of their own messages.
    let program = std::env::args()
        .next()
        .unwrap_or_else(|| "spike-dataplane".to_owned());
    let mut eal_args = Vec::with_capacity(dpdk.eal_args.len() + 1);
    eal_args.push(program);
    eal_args.extend(dpdk.eal_args.iter().cloned());
    Eal::init(&eal_args).map_err(DaemonError::dpdk(
        "cannot initialize DPDK with dpdk.eal_args",
    ))
}

/// Returns the first `workers` worker lcores of the EAL.
fn worker_lcores(eal: &Eal, workers: u16) -> Result<Vec<u32>, DaemonError> {
    let available: Vec<u32> = eal.worker_lcores().collect();
    if available.len() < usize::from(workers) {
        return Err(DaemonError::NotEnoughLcores {
            workers,
            available: available.len(),
        });
    }
    if available.len() > usize::from(workers) {
        warn!(
            idle = ?&available[usize::from(workers)..],
            "more worker lcores than dpdk.workers; the extra ones stay idle"
        );
    }
    Ok(available[..usize::from(workers)].to_vec())
}

/// Mbuf data room (headroom included) for frames of `mtu` plus Ethernet and VLAN
/// headers, so that outer fragments and replies fit one mbuf; DPDK's default 2048
/// data bytes when that is enough.
fn data_room_for(mtu: u16) -> u16 {
    let frame = usize::from(mtu) + ETHERNET_AND_VLAN_LEN;
    let room = (frame + usize::from(PKTMBUF_HEADROOM)).max(usize::from(DEFAULT_DATA_ROOM));
    u16::try_from(room).unwrap_or(u16::MAX)
}

fn create_pool<'eal>(
    eal: &'eal Eal,
    dpdk: &DpdkConfig,
    data_room: u16,
) -> Result<Mempool<'eal>, DaemonError> {
    // NOTE: each lcore's cache can keep up to `cache` mbufs out of use. The dpdk.mbufs
    // minimum in the config does not count them, so a pool of that minimum size may
    // run short under load, which shows as the port counter rx_nombuf.
    let cache = (dpdk.mbufs / 8).min(MAX_MBUF_CACHE);
    let pool = Mempool::new(
        eal,
        "spike_packets",
        dpdk.mbufs,
        cache,
        data_room,
        SOCKET_ID_ANY,
    );
    pool.map_err(|error| {
        let hint = if matches!(&error, DpdkError::Call { errno, .. } if *errno == libc_enomem()) {
            "; raise -m in dpdk.eal_args or lower dpdk.mbufs"
        } else {
            ""
        };
        DaemonError::Dpdk {
            context: format!(
                "cannot create the pool of dpdk.mbufs = {} mbufs{hint}",
                dpdk.mbufs
            ),
            source: error,
        }
    })
}

/// ENOMEM, which `rte_pktmbuf_pool_create` reports when the EAL memory is too small.
const fn libc_enomem() -> i32 {
    12
}

/// Opens, configures and starts a port with one queue pair per worker. Returns the port
/// and whether it computes outer UDP checksums (requested with `udp_checksum_offload`
/// and supported by the device).
fn open_port<'pool>(
    eal: &'pool Eal,
    pool: &'pool Mempool<'_>,
    name: &str,
    dpdk: &DpdkConfig,
    udp_checksum_offload: bool,
) -> Result<(Port<'pool>, bool), DaemonError> {
    let mut port = Port::by_name(eal, name).map_err(|error| match error {
        DpdkError::PortNotFound { .. } => {
            let names = Port::available_names(eal);
            DaemonError::PortNotFound {
                name: name.to_owned(),
                available: if names.is_empty() {
                    "none (add --vdev or PCI allow-list arguments to dpdk.eal_args)".to_owned()
                } else {
                    names.join(", ")
                },
            }
        }
        other => DaemonError::Dpdk {
            context: format!("cannot open port {name}"),
            source: other,
        },
    })?;
    let context = |what: &str| format!("cannot {what} port {name}");

    let info = port
        .dev_info()
        .map_err(DaemonError::dpdk(context("read the device info of")))?;
    let queues = dpdk.workers;
    let max_queues = info.max_rx_queues.min(info.max_tx_queues);
    if max_queues < queues {
        return Err(DaemonError::TooFewQueues {
            name: name.to_owned(),
            driver: info.driver_name,
            max_queues,
            workers: queues,
        });
    }

    let requested_offloads = if udp_checksum_offload {
        TX_OFFLOAD_UDP_CKSUM
    } else {
        0
    };
    let (rss, tx_offloads) = port
        .configure_with_tx_offloads(queues, queues, queues > 1, requested_offloads)
        .map_err(DaemonError::dpdk(context("configure")))?;
    let udp_checksum_offload = tx_offloads & TX_OFFLOAD_UDP_CKSUM != 0;
    for queue in 0..queues {
        port.setup_rx_queue(queue, dpdk.rx_descriptors, pool)
            .map_err(DaemonError::dpdk(context("set up an rx queue of")))?;
        port.setup_tx_queue(queue, dpdk.tx_descriptors)
            .map_err(DaemonError::dpdk(context("set up a tx queue of")))?;
    }
    port.start().map_err(DaemonError::dpdk(context("start")))?;
    if let Err(error) = port.enable_promiscuous() {
        // Some virtual drivers have no promiscuous mode; they receive every frame anyway.
        warn!(port = name, %error, "promiscuous mode not enabled");
    }

    let mac = port
        .mac_address()
        .map(|mac| spike_core::wire::MacAddr(mac).to_string())
        .unwrap_or_else(|error| format!("unknown ({error})"));
    info!(
        port = name,
        driver = info.driver_name,
        rx_queues = queues,
        tx_queues = queues,
        rss = %describe_rss(rss, queues),
        udp_checksum_offload,
        %mac,
        "port started"
    );
    Ok((port, udp_checksum_offload))
}

fn describe_rss(rss_hf: u64, queues: u16) -> String {
    if rss_hf != 0 {
        format!("on (hash types {rss_hf:#x})")
    } else if queues > 1 {
        "off: the driver has no RSS for IP/TCP/UDP, so queue 0 may get all traffic".to_owned()
    } else {
        "off (one queue)".to_owned()
    }
}

fn read_stats(port: &Port<'_>) -> Option<PortStats> {
    port.stats()
        .map_err(|error| warn!(%error, "cannot read port counters"))
        .ok()
}

fn print_final(totals: &Totals) {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = totals.write_text(&mut out).and_then(|()| out.flush());
    if let Err(error) = result {
        warn!(%error, "cannot print the final counters");
    }
}

fn close_ports(port: Port<'_>, kernel_port: Option<Port<'_>>) -> Result<(), DaemonError> {
    let mut result = Ok(());
    for (role, port) in [("port", Some(port)), ("kernel port", kernel_port)] {
        let Some(port) = port else { continue };
        if let Err(source) = port.close() {
            error!(%source, "cannot close the {role}");
            result = Err(DaemonError::Dpdk {
                context: format!("cannot close the {role}"),
                source,
            });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_room_fits_mtu() {
        assert_eq!(data_room_for(1500), DEFAULT_DATA_ROOM);
        let jumbo = data_room_for(9000);
        assert_eq!(
            usize::from(jumbo - PKTMBUF_HEADROOM),
            9000 + ETHERNET_AND_VLAN_LEN
        );
    }
}
