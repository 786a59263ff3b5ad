//! Counter totals across workers: the JSON counters file and the final text report.
//!
//! Totals are sums over the reports the workers last published (at most
//! [`crate::poll::PUBLISH_INTERVAL_NS`] old while they run, final after they stop).
//! Services and backends are labelled from the current snapshot and matched by service
//! name and backend address, because a worker that has received nothing since a reload
//! still counts in the previous snapshot's layout.
//!
//! # Counters file
//!
//! `--counters-file` is replaced atomically (written to `<path>.tmp`, then renamed)
//! every `--counters-interval-ms` and once more after the workers stop. It holds one
//! JSON object:
//!
//! ```text
//! {
//!   "generation": 1,              snapshot generation, +1 per accepted reload
//!   "rx_packets": 0, "rx_bytes": 0,
//!   "forwarded": 0,               forward verdicts (a fragmented one counts once)
//!   "replies": 0,                 ICMP too-big replies
//!   "outer_fragmented": 0, "too_big_sent": 0, "fragment_table_full": 0,
//!   "redirected_in": 0,           fragments another Spike node redirected here
//!   "held": 0,                    fragments held until their first fragment arrives,
//!   "held_released": 0, "held_dropped": 0,   and how each held fragment ended
//!   "conntrack_entries": 0,       gauge: conntrack entries held, expired ones not yet reused
//!   "conntrack_expired_replaced": 0,  new flows stored over an expired entry
//!   "conntrack_insert_failed": 0, new flows left untracked because the table was full
//!   "tx_dropped": 0,              frames the tx queues rejected after dpdk.tx_retries
//!   "mbuf_alloc_failed": 0,       fragments and replies lost to an empty mbuf pool
//!   "encap_failed": 0,            forwards whose mbuf could not take the header
//!   "rx_multi_segment": 0,        frames chained over several mbufs, decided from a copy
//!   "from_kernel": 0,             frames from the kernel port sent out of the port
//!   "fragments_steered": 0,       IP fragments a worker moved to worker 0's ring
//!   "fragment_ring_full": 0,      IP fragments dropped because that ring was full
//!   "kernel": {"arp": 0, ...},    every kernel reason, by label
//!   "drops": {"ethernet_truncated": 0, ...},
//!   "selections": {"tracked": 0, ...},
//!   "services": [{"name": "web", "packets": 0, "bytes": 0,
//!                 "backends": [{"name": "node-a", "address": "192.0.2.11",
//!                               "packets": 0, "bytes": 0}],
//!                 "removed_backends": {"packets": 0, "bytes": 0}}],
//!                                 traffic of backends a reload removed, so that the
//!                                 backends and this add up to the service's counts
//!   "port": {"ipackets": 0, "opackets": 0, "ibytes": 0, "obytes": 0, "imissed": 0,
//!            "ierrors": 0, "oerrors": 0, "rx_nombuf": 0},
//!   "kernel_port": null           the same fields as "port" when a kernel port is set
//! }
//! ```
//!
//! Service and backend bytes count inner IP packets, without encapsulation or Ethernet
//! headers. `port` is `null` when DPDK could not read the port counters.
//!
//! The final text report on stdout has one `name value` line per counter, with dotted
//! names: `kernel.arp`, `drop.<reason>`, `selection.<how>`,
//! `service.<name>.packets`, `service.<name>.backend.<name>.bytes`, `port.ipackets`.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use spike_core::counters::Traffic;
use spike_core::{Counters, DropReason, KernelReason, Selection, Snapshot};
use spike_dpdk::PortStats;

use crate::poll::{TxCounters, WorkerReport};

/// Counters summed over all workers.
#[derive(Debug, Default)]
pub struct Totals {
    pub generation: u32,
    /// The scalar and per-reason counters; per-service counts are in `services`.
    pub counters: Counters,
    pub tx: TxCounters,
    pub services: Vec<ServiceTotals>,
    pub port: Option<PortStats>,
    pub kernel_port: Option<PortStats>,
    /// Snapshots from the ring whose hash key differed from the dataplane file's.
    pub hash_key_mismatches: u64,
}

/// Traffic of one service of the current snapshot.
#[derive(Debug, Default)]
pub struct ServiceTotals {
    pub name: String,
    pub traffic: Traffic,
    pub backends: Vec<BackendTotals>,
    /// Traffic of backends that a reload removed from the service.
    pub removed: Traffic,
}

/// Traffic of one backend of a service.
#[derive(Debug)]
pub struct BackendTotals {
    pub name: String,
    pub address: IpAddr,
    pub traffic: Traffic,
}

/// Port counters of the main and the kernel port, when they could be read.
#[derive(Clone, Copy, Debug, Default)]
pub struct PortCounters {
    pub port: Option<PortStats>,
    pub kernel_port: Option<PortStats>,
}

impl Totals {
    /// Sums the workers' reports, labelling services from `snapshot`.
    pub fn collect(
        snapshot: &Snapshot,
        reports: &[Arc<WorkerReport>],
        ports: PortCounters,
    ) -> Totals {
        let mut counters = Counters::default();
        let mut tx = TxCounters::default();
        for report in reports {
            counters.merge(&report.counters);
            tx.add(&report.tx);
        }
        // merge() pairs services by position, which is wrong across snapshot layouts;
        // they are summed by name below instead.
        counters.services.clear();

        let services = snapshot
            .services
            .iter()
            .map(|service| {
                let per_worker: Vec<_> = reports
                    .iter()
                    .filter_map(|report| {
                        report
                            .counters
                            .services
                            .iter()
                            .find(|counters| counters.name == service.name)
                    })
                    .collect();
                let backends = service
                    .backends
                    .iter()
                    .map(|backend| BackendTotals {
                        name: backend.name.clone(),
                        address: backend.address,
                        traffic: sum_traffic(per_worker.iter().filter_map(|counters| {
                            counters
                                .backends
                                .iter()
                                .find(|(id, _)| *id == backend.id)
                                .map(|(_, traffic)| *traffic)
                        })),
                    })
                    .collect();
                ServiceTotals {
                    name: service.name.clone(),
                    traffic: sum_traffic(per_worker.iter().map(|counters| counters.traffic)),
                    backends,
                    removed: sum_traffic(per_worker.iter().map(|counters| counters.removed)),
                }
            })
            .collect();

        Totals {
            generation: snapshot.generation,
            counters,
            tx,
            services,
            port: ports.port,
            kernel_port: ports.kernel_port,
            // Only the snapshot ring tracks this count, so the caller fills it in.
            hash_key_mismatches: 0,
        }
    }

    /// Builds the counters file's JSON object, as the module docs describe it.
    pub fn to_json(&self) -> Value {
        let counters = &self.counters;
        let services: Vec<Value> = self
            .services
            .iter()
            .map(|service| {
                let backends: Vec<Value> = service
                    .backends
                    .iter()
                    .map(|backend| {
                        json!({
                            "name": backend.name,
                            "address": backend.address.to_string(),
                            "packets": backend.traffic.packets,
                            "bytes": backend.traffic.bytes,
                        })
                    })
                    .collect();
                json!({
                    "name": service.name,
                    "packets": service.traffic.packets,
                    "bytes": service.traffic.bytes,
                    "backends": backends,
                    "removed_backends": {
                        "packets": service.removed.packets,
                        "bytes": service.removed.bytes,
                    },
                })
            })
            .collect();

        json!({
            "generation": self.generation,
            "rx_packets": counters.rx_packets,
            "rx_bytes": counters.rx_bytes,
            "forwarded": counters.forwarded,
            "replies": counters.replies,
            "outer_fragmented": counters.outer_fragmented,
            "too_big_sent": counters.too_big_sent,
            "fragment_table_full": counters.fragment_table_full,
            "redirected_in": counters.redirected_in,
            "held": counters.held,
            "held_released": counters.held_released,
            "held_dropped": counters.held_dropped,
            "conntrack_entries": counters.conntrack_entries,
            "conntrack_expired_replaced": counters.conntrack_expired_replaced,
            "conntrack_insert_failed": counters.conntrack_insert_failed,
            "tx_dropped": self.tx.tx_dropped,
            "mbuf_alloc_failed": self.tx.mbuf_alloc_failed,
            "encap_failed": self.tx.encap_failed,
            "rx_multi_segment": self.tx.rx_multi_segment,
            "from_kernel": self.tx.from_kernel,
            "fragments_steered": self.tx.fragments_steered,
            "fragment_ring_full": self.tx.fragment_ring_full,
            "hash_key_mismatches": self.hash_key_mismatches,
            "kernel": reason_map(KernelReason::ALL, |reason| counters.kernel_count(*reason)),
            "drops": reason_map(DropReason::ALL, |reason| counters.drop_count(*reason)),
            "selections": reason_map(Selection::ALL, |how| counters.selection_count(*how)),
            "services": services,
            "port": self.port.map(port_json),
            "kernel_port": self.kernel_port.map(port_json),
        })
    }

    /// Writes one `name value` line per counter.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        let counters = &self.counters;
        let scalars = [
            ("generation", u64::from(self.generation)),
            ("rx_packets", counters.rx_packets),
            ("rx_bytes", counters.rx_bytes),
            ("forwarded", counters.forwarded),
            ("replies", counters.replies),
            ("outer_fragmented", counters.outer_fragmented),
            ("too_big_sent", counters.too_big_sent),
            ("fragment_table_full", counters.fragment_table_full),
            ("redirected_in", counters.redirected_in),
            ("held", counters.held),
            ("held_released", counters.held_released),
            ("held_dropped", counters.held_dropped),
            ("conntrack_entries", counters.conntrack_entries),
            (
                "conntrack_expired_replaced",
                counters.conntrack_expired_replaced,
            ),
            ("conntrack_insert_failed", counters.conntrack_insert_failed),
            ("tx_dropped", self.tx.tx_dropped),
            ("mbuf_alloc_failed", self.tx.mbuf_alloc_failed),
            ("encap_failed", self.tx.encap_failed),
            ("rx_multi_segment", self.tx.rx_multi_segment),
            ("from_kernel", self.tx.from_kernel),
            ("fragments_steered", self.tx.fragments_steered),
            ("fragment_ring_full", self.tx.fragment_ring_full),
            ("hash_key_mismatches", self.hash_key_mismatches),
        ];
        for (name, value) in scalars {
            writeln!(out, "{name} {value}")?;
        }
        for reason in KernelReason::ALL {
            writeln!(out, "kernel.{reason} {}", counters.kernel_count(*reason))?;
        }
        for reason in DropReason::ALL {
            writeln!(out, "drop.{reason} {}", counters.drop_count(*reason))?;
        }
        for how in Selection::ALL {
            writeln!(out, "selection.{how} {}", counters.selection_count(*how))?;
        }
        for service in &self.services {
            let prefix = format!("service.{}", service.name);
            writeln!(out, "{prefix}.packets {}", service.traffic.packets)?;
            writeln!(out, "{prefix}.bytes {}", service.traffic.bytes)?;
            for backend in &service.backends {
                let prefix = format!("{prefix}.backend.{}", backend.name);
                writeln!(out, "{prefix}.packets {}", backend.traffic.packets)?;
                writeln!(out, "{prefix}.bytes {}", backend.traffic.bytes)?;
            }
            writeln!(
                out,
                "{prefix}.removed_backends.packets {}",
                service.removed.packets
            )?;
            writeln!(
                out,
                "{prefix}.removed_backends.bytes {}",
                service.removed.bytes
            )?;
        }
        for (name, stats) in [("port", self.port), ("kernel_port", self.kernel_port)] {
            if let Some(stats) = stats {
                for (field, value) in port_fields(&stats) {
                    writeln!(out, "{name}.{field} {value}")?;
                }
            }
        }
        Ok(())
    }
}

fn sum_traffic(traffic: impl Iterator<Item = Traffic>) -> Traffic {
    traffic.fold(Traffic::default(), |total, next| Traffic {
        packets: total.packets + next.packets,
        bytes: total.bytes + next.bytes,
    })
}

fn reason_map<T: std::fmt::Display>(all: &[T], count: impl Fn(&T) -> u64) -> Value {
    let map: Map<String, Value> = all
        .iter()
        .map(|reason| (reason.to_string(), Value::from(count(reason))))
        .collect();
    Value::Object(map)
}

fn port_fields(stats: &PortStats) -> [(&'static str, u64); 8] {
    [
        ("ipackets", stats.ipackets),
        ("opackets", stats.opackets),
        ("ibytes", stats.ibytes),
        ("obytes", stats.obytes),
        ("imissed", stats.imissed),
        ("ierrors", stats.ierrors),
        ("oerrors", stats.oerrors),
        ("rx_nombuf", stats.rx_nombuf),
    ]
}

fn port_json(stats: PortStats) -> Value {
    let map: Map<String, Value> = port_fields(&stats)
        .into_iter()
        .map(|(field, value)| (field.to_owned(), Value::from(value)))
        .collect();
    Value::Object(map)
}

/// Replaces `path` with `contents` so that readers see the old or the new file, never
/// a partial one: the bytes go to `<path>.tmp` in the same directory, which is then
/// renamed over `path`.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    fs::write(&temporary, contents)?;
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
        [node]
        mac = "02:00:00:00:00:01"
        ipv4 = "192.0.2.1"
        gateway_mac = "02:00:00:00:00:fe"
        vtep_mac = "02:00:00:00:00:02"

        [hash]
        key = "000102030405060708090a0b0c0d0e0f"

        [conntrack]
        capacity = 1024
        fragment_capacity = 64

        [[service]]
        name = "web"
        vip = "198.51.100.1"
        protocol = "tcp"
        port = 80
        table_size = 251

        [[service.backend]]
        name = "node-a"
        address = "192.0.2.11"
        vtep_mac = "0a:58:0a:f4:00:0a"
    "#;

    fn report(rx_packets: u64, tx_dropped: u64) -> Arc<WorkerReport> {
        let mut counters = Counters {
            rx_packets,
            conntrack_entries: rx_packets * 2,
            conntrack_insert_failed: tx_dropped,
            ..Counters::default()
        };
        counters.kernel[0] = 1;
        Arc::new(WorkerReport {
            counters,
            tx: TxCounters {
                tx_dropped,
                ..TxCounters::default()
            },
        })
    }

    #[test]
    fn totals_sum_workers() {
        let config: spike_core::Config = CONFIG.parse().unwrap();
        let snapshot = Snapshot::build(&config, 3).unwrap();
        let totals = Totals::collect(
            &snapshot,
            &[report(5, 1), report(7, 2)],
            PortCounters::default(),
        );
        let json = totals.to_json();

        assert_eq!(json["generation"], 3);
        assert_eq!(json["rx_packets"], 12);
        assert_eq!(json["tx_dropped"], 3);
        assert_eq!(json["conntrack_entries"], 24, "entries summed over workers");
        assert_eq!(json["conntrack_insert_failed"], 3);
        assert_eq!(json["conntrack_expired_replaced"], 0);
        assert_eq!(json["kernel"]["arp"], 2);
        assert_eq!(json["drops"]["no_backend"], 0);
        assert_eq!(json["services"][0]["name"], "web");
        assert_eq!(json["services"][0]["backends"][0]["name"], "node-a");
        assert_eq!(json["services"][0]["backends"][0]["address"], "192.0.2.11");
        assert_eq!(json["services"][0]["backends"][0]["packets"], 0);
        assert!(json["port"].is_null());
    }

    #[test]
    fn text_report_has_name_value_lines() {
        let config: spike_core::Config = CONFIG.parse().unwrap();
        let snapshot = Snapshot::build(&config, 1).unwrap();
        let ports = PortCounters {
            port: Some(PortStats {
                ipackets: 9,
                ..PortStats::default()
            }),
            kernel_port: None,
        };
        let totals = Totals::collect(&snapshot, &[report(9, 0)], ports);
        let mut text = Vec::new();
        totals.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();

        assert!(text.lines().all(|line| line.split(' ').count() == 2));
        assert!(text.contains("\nrx_packets 9\n"));
        assert!(text.contains("\nkernel.arp 1\n"));
        assert!(text.contains("\nservice.web.backend.node-a.packets 0\n"));
        assert!(text.contains("\nport.ipackets 9\n"));
        assert!(!text.contains("kernel_port."));
    }

    #[test]
    fn write_atomically_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();

        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert!(!dir.path().join("counters.json.tmp").exists());
    }
}
