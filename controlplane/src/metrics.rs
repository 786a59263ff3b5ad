//! Prometheus metrics.
//!
//! The control plane's own metrics (publication, health, table shares, fingerprints and
//! Kubernetes discovery) live in a prometheus-client registry. The dataplane's counters are read from the
//! ring on every scrape by [`DataplaneCollector`] and exposed as they are, so they
//! restart from 0 only when the dataplane does.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;
use spike_kube::{ResourceKind, WatchCounters};
use spike_snapring::Publisher;

use crate::discovery::BackendLabels;
use crate::kubernetes::KubernetesMetrics;

/// Metrics the control plane updates itself.
#[derive(Debug)]
pub struct Metrics {
    pub generation: Gauge,
    pub publications: Counter,
    /// Starts whose first publication went ahead without some source's initial set.
    pub initial_sync_timeouts: Counter,
    pub publish_seconds: Histogram,
    pub backend_health: Family<BackendLabels, Gauge>,
    /// Share of each backend in its service's table, in parts per million.
    pub table_share_ppm: Family<BackendLabels, Gauge>,
    /// Backends with a weight above 0 that their service's table gives no slot.
    pub unslotted_backends: Gauge,
    pub fingerprint: Family<[(&'static str, String); 2], Gauge>,
    /// Services left out because a service of an earlier source (static first) has their
    /// VIP, protocol and port, or their name.
    pub conflicting_services: Gauge,
    pub invalid_services: Gauge,
    pub kubernetes: KubernetesMetrics,
    /// 1 when the backend's next-hop MAC is configured or resolved, else 0 because the
    /// backend is left out of the table. Set only with `resolve_next_hops`.
    pub next_hop_resolved: Family<BackendLabels, Gauge>,
    /// Backend addresses whose next hop has no MAC in the latest round.
    pub unresolved_next_hops: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them, with the dataplane collector, in a new
    /// registry.
    pub fn register(ring: Arc<Mutex<Publisher>>) -> (Arc<Metrics>, Registry) {
        let metrics = Metrics {
            generation: Gauge::default(),
            publications: Counter::default(),
            initial_sync_timeouts: Counter::default(),
            // 100 µs to about 3.3 s in factors of 2.
            publish_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
            backend_health: Family::default(),
            table_share_ppm: Family::default(),
            unslotted_backends: Gauge::default(),
            fingerprint: Family::default(),
            conflicting_services: Gauge::default(),
            invalid_services: Gauge::default(),
            kubernetes: KubernetesMetrics {
                skipped_nodes: Family::default(),
                watch: Arc::default(),
            },
            next_hop_resolved: Family::default(),
            unresolved_next_hops: Gauge::default(),
        };

        let mut registry = Registry::with_prefix("spike");
        registry.register(
            "snapshot_generation",
            "Generation of the latest published snapshot",
            metrics.generation.clone(),
        );
        registry.register(
            "snapshot_publications",
            "Snapshots published to the ring",
            metrics.publications.clone(),
        );
        registry.register(
            "initial_sync_timeouts",
            "Starts whose first publication went ahead after controlplane.\
             initial_sync_timeout_s without the initial services of every source",
            metrics.initial_sync_timeouts.clone(),
        );
        registry.register_with_unit(
            "snapshot_publish",
            "Time to encode a snapshot and write it to the ring",
            Unit::Seconds,
            metrics.publish_seconds.clone(),
        );

        registry.register(
            "backend_health",
            "1 when the backend passes its health checks (or has none), else 0",
            metrics.backend_health.clone(),
        );
        registry.register(
            "backend_table_share_ppm",
            "Slots of the service's Maglev table that go to the backend, in parts per million",
            metrics.table_share_ppm.clone(),
        );
        registry.register(
            "unslotted_backends",
            "Backends with a weight above 0 that their service's Maglev table gives no slot, \
             so that they receive no new flows; the log names each",
            metrics.unslotted_backends.clone(),
        );
        registry.register(
            "service_table_fingerprint",
            "Always 1; the fingerprint label is a hash of the service's Maglev table, equal \
             on every Spike node that agrees on it",
            metrics.fingerprint.clone(),
        );

        registry.register(
            "backend_next_hop_resolved",
            "1 when the backend's next-hop MAC is configured or resolved from the kernel, 0 \
             when the backend is left out of the table because it has none",
            metrics.next_hop_resolved.clone(),
        );
        registry.register(
            "unresolved_next_hops",
            "Backend addresses without a next-hop MAC in the kernel's neighbour table",
            metrics.unresolved_next_hops.clone(),
        );

        metrics.register_discovery(&mut registry);
        registry.register_collector(Box::new(DataplaneCollector { ring }));
        (Arc::new(metrics), registry)
    }

    /// Registers the metrics of source merging and Kubernetes discovery.
    fn register_discovery(&self, registry: &mut Registry) {
        registry.register(
            "conflicting_services",
            "Services left out because a service of an earlier source (static first) has \
             their VIP, protocol and port, or their name",
            self.conflicting_services.clone(),
        );
        registry.register(
            "invalid_services",
            "Services left out of the snapshot because the dataplane would reject them, for \
             example a VIP equal to a node's address; the log names each and the reason",
            self.invalid_services.clone(),
        );
        registry.register(
            "kubernetes_skipped_nodes",
            "Nodes with endpoints of a served Service that cannot be backends, by reason",
            self.kubernetes.skipped_nodes.clone(),
        );
        registry.register_collector(Box::new(WatchCollector {
            totals: Arc::clone(&self.kubernetes.watch),
        }));
    }
}

/// Encodes the registry in the Prometheus text format 0.0.4, which `promtool check
/// metrics` and every Prometheus server parse.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut text, registry).is_err() {
        text.clear();
    }
    text
}

/// Reads the dataplane's status and counters from the ring at scrape time.
#[derive(Debug)]
pub struct DataplaneCollector {
    ring: Arc<Mutex<Publisher>>,
}

impl Collector for DataplaneCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (status, published, counters) = {
            let ring = self
                .ring
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            (ring.dataplane(), ring.published(), ring.read_counters())
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);

        gauge(
            &mut encoder,
            "dataplane_applied_generation",
            "Generation of the snapshot the dataplane runs",
            status.applied_generation as i64,
        )?;
        counter(
            &mut encoder,
            "dataplane_rejected_snapshots",
            "Snapshots the dataplane rejected after validation",
            status.rejected,
        )?;
        if let Some(published) = published {
            let age = now_ms.saturating_sub(published.published_unix_ms) as f64 / 1000.0;
            let metric = ConstGauge::new(age);
            let family = encoder.encode_descriptor(
                "snapshot_age",
                "Time since the latest snapshot was published",
                Some(&Unit::Seconds),
                metric.metric_type(),
            )?;
            metric.encode(family)?;
        }
        if status.heartbeat_unix_ms > 0 {
            let age = now_ms.saturating_sub(status.heartbeat_unix_ms) as f64 / 1000.0;
            let metric = ConstGauge::new(age);
            let family = encoder.encode_descriptor(
                "dataplane_heartbeat_age",
                "Time since the dataplane last polled the ring",
                Some(&Unit::Seconds),
                metric.metric_type(),
            )?;
            metric.encode(family)?;
        }

        let Some(counters) = counters.and_then(|bytes| serde_json::from_slice(&bytes).ok()) else {
            return Ok(());
        };
        encode_counters(&mut encoder, &counters)
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Encodes one labelled counter family; `rows` are label sets with values.
fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// Encodes the counters file's JSON object that the dataplane writes to the ring.
fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: &Value,
) -> Result<(), std::fmt::Error> {
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    for (key, help) in [
        ("rx_packets", "Frames the dataplane received"),
        ("rx_bytes", "Bytes of the frames the dataplane received"),
        ("forwarded", "Packets the dataplane forwarded to a backend"),
        ("replies", "ICMP too-big replies the dataplane sent"),
        ("outer_fragmented", "Forwards sent as outer IP fragments"),
        (
            "fragment_table_full",
            "First fragments not recorded because the table was full",
        ),
        ("tx_dropped", "Frames the dataplane's tx queues rejected"),
        (
            "mbuf_alloc_failed",
            "Fragments and replies lost to an empty mbuf pool",
        ),
        (
            "encap_failed",
            "Forwards freed because the mbuf could not take the header",
        ),
        (
            "rx_multi_segment",
            "Frames longer than one mbuf, decided from a copy",
        ),
        (
            "from_kernel",
            "Frames from the kernel port sent out of the main port",
        ),
        (
            "fragments_steered",
            "IP fragments a worker moved to worker 0, which keeps every fragment record",
        ),
        (
            "fragment_ring_full",
            "IP fragments dropped because the ring to worker 0 was full",
        ),
        (
            "hash_key_mismatches",
            "Snapshots whose hash key differed from the dataplane file's key, which the \
             dataplane then ignored",
        ),
        (
            "too_big_sent",
            "ICMP fragmentation-needed or packet-too-big replies sent",
        ),
        (
            "redirected_in",
            "Fragments another Spike node redirected to this one",
        ),
        ("held", "Fragments held until their first fragment arrived"),
        (
            "held_released",
            "Held fragments sent once their first fragment was recorded",
        ),
        (
            "held_dropped",
            "Held fragments dropped: expired unreleased, or dropped on their second decision",
        ),
        (
            "conntrack_expired_replaced",
            "New flows stored in the slot of another flow's expired conntrack entry",
        ),
        (
            "conntrack_insert_failed",
            "New flows left untracked because the conntrack table was full",
        ),
    ] {
        counter(
            encoder,
            &format!("dataplane_{key}"),
            help,
            number(&counters[key]),
        )?;
    }
    // A gauge, unlike the rest of the file, because it falls as entries are reaped.
    gauge(
        encoder,
        "dataplane_conntrack_entries",
        "Entries in the conntrack tables of all workers, expired ones not yet reaped \
         or reused included",
        i64::try_from(number(&counters["conntrack_entries"])).unwrap_or(i64::MAX),
    )?;
    encode_ports(encoder, counters)?;

    let drops: Vec<_> = counters["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(reason, value)| (vec![("reason", reason.clone())], number(value)))
        .collect();
    counter_family(
        encoder,
        "dataplane_drops",
        "Frames dropped, by reason",
        &drops,
    )?;

    let to_kernel: Vec<_> = counters["kernel"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(reason, value)| (vec![("reason", reason.clone())], number(value)))
        .collect();
    counter_family(
        encoder,
        "dataplane_kernel",
        "Frames handed to the kernel, by reason",
        &to_kernel,
    )?;

    let selections: Vec<_> = counters["selections"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(how, value)| (vec![("selection", how.clone())], number(value)))
        .collect();
    counter_family(
        encoder,
        "dataplane_selections",
        "Forwarded packets, by how the backend was chosen",
        &selections,
    )?;

    let mut service_packets = Vec::new();
    let mut service_bytes = Vec::new();
    let mut backend_packets = Vec::new();
    let mut backend_bytes = Vec::new();
    let mut removed_packets = Vec::new();
    let mut removed_bytes = Vec::new();
    for service in counters["services"].as_array().into_iter().flatten() {
        let name = service["name"].as_str().unwrap_or_default().to_owned();
        let labels = vec![("service", name.clone())];
        service_packets.push((labels.clone(), number(&service["packets"])));
        service_bytes.push((labels, number(&service["bytes"])));
        for backend in service["backends"].as_array().into_iter().flatten() {
            let labels = vec![
                ("service", name.clone()),
                (
                    "backend",
                    backend["name"].as_str().unwrap_or_default().to_owned(),
                ),
            ];
            backend_packets.push((labels.clone(), number(&backend["packets"])));
            backend_bytes.push((labels, number(&backend["bytes"])));
        }
        let removed = &service["removed_backends"];
        let labels = vec![("service", name.clone())];
        removed_packets.push((labels.clone(), number(&removed["packets"])));
        removed_bytes.push((labels, number(&removed["bytes"])));
    }
    counter_family(
        encoder,
        "dataplane_service_packets",
        "Packets forwarded for the service",
        &service_packets,
    )?;
    counter_family(
        encoder,
        "dataplane_service_bytes",
        "Bytes of inner IP packets forwarded for the service",
        &service_bytes,
    )?;
    counter_family(
        encoder,
        "dataplane_backend_packets",
        "Packets forwarded to the backend",
        &backend_packets,
    )?;
    counter_family(
        encoder,
        "dataplane_backend_bytes",
        "Bytes of inner IP packets forwarded to the backend",
        &backend_bytes,
    )?;
    counter_family(
        encoder,
        "dataplane_removed_backends_packets",
        "Packets forwarded for the service to backends since removed from it",
        &removed_packets,
    )?;
    counter_family(
        encoder,
        "dataplane_removed_backends_bytes",
        "Bytes of inner IP packets forwarded for the service to backends since removed \
         from it",
        &removed_bytes,
    )
}

/// Encodes the DPDK port statistics of the main port and, when set, the kernel port,
/// labelled `port="main"` and `port="kernel"`.
fn encode_ports(encoder: &mut DescriptorEncoder, counters: &Value) -> Result<(), std::fmt::Error> {
    for (key, help) in [
        (
            "ipackets",
            "Packets the port received, from DPDK's port statistics",
        ),
        (
            "opackets",
            "Packets the port sent, from DPDK's port statistics",
        ),
        (
            "ibytes",
            "Bytes the port received, from DPDK's port statistics",
        ),
        ("obytes", "Bytes the port sent, from DPDK's port statistics"),
        (
            "imissed",
            "Packets the port dropped because the rx queues were full",
        ),
        ("ierrors", "Erroneous packets the port received"),
        ("oerrors", "Packets the port failed to send"),
        ("rx_nombuf", "Receive failures for want of an mbuf"),
    ] {
        let rows: Vec<_> = [("main", "port"), ("kernel", "kernel_port")]
            .into_iter()
            .filter_map(|(label, field)| {
                let value = counters[field].get(key)?.as_u64()?;
                Some((vec![("port", label.to_owned())], value))
            })
            .collect();
        counter_family(encoder, &format!("dataplane_port_{key}"), help, &rows)?;
    }
    Ok(())
}

/// Totals of the Kubernetes watchers' counters. A config reload starts a new watcher with
/// new counters; the old watcher's final values are kept, so the totals never decrease.
#[derive(Debug, Default)]
pub struct WatchTotals {
    state: Mutex<WatchTotalsState>,
}

#[derive(Debug, Default)]
struct WatchTotalsState {
    current: Option<Arc<WatchCounters>>,
    /// Events, errors and lists per kind, in [`ResourceKind::ALL`] order, of the
    /// watchers replaced so far.
    retired: [[u64; 3]; 3],
    retired_models: u64,
}

/// Counter values read from the watchers.
struct WatchValues {
    /// Events, errors and lists per kind, in [`ResourceKind::ALL`] order.
    per_kind: [[u64; 3]; 3],
    models_published: u64,
}

fn read_counters(counters: &WatchCounters) -> WatchValues {
    let per_kind = ResourceKind::ALL.map(|kind| {
        let kind = counters.kind(kind);
        [&kind.events, &kind.errors, &kind.lists].map(|counter| counter.load(Ordering::Relaxed))
    });
    WatchValues {
        per_kind,
        models_published: counters.models_published.load(Ordering::Relaxed),
    }
}

impl WatchTotals {
    /// Makes `counters` the current watcher's and keeps the previous watcher's values.
    pub fn attach(&self, counters: Arc<WatchCounters>) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(previous) = state.current.take() {
            let values = read_counters(&previous);
            for (retired, values) in state.retired.iter_mut().zip(values.per_kind) {
                for (total, value) in retired.iter_mut().zip(values) {
                    *total += value;
                }
            }
            state.retired_models += values.models_published;
        }
        state.current = Some(counters);
    }

    /// Returns the totals, or `None` before the first watcher started.
    fn read(&self) -> Option<WatchValues> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut values = read_counters(state.current.as_ref()?);
        for (values, retired) in values.per_kind.iter_mut().zip(state.retired) {
            for (value, total) in values.iter_mut().zip(retired) {
                *value += total;
            }
        }
        values.models_published += state.retired_models;
        Some(values)
    }
}

/// Exposes the Kubernetes watch counters at scrape time, once a watcher has started.
#[derive(Debug)]
struct WatchCollector {
    totals: Arc<WatchTotals>,
}

impl Collector for WatchCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(values) = self.totals.read() else {
            return Ok(());
        };
        let families = [
            (
                "kubernetes_watch_events",
                "Objects received from Kubernetes lists and watch events, by resource kind",
            ),
            (
                "kubernetes_watch_errors",
                "Errors of the Kubernetes watches (410 Gone included), by resource kind",
            ),
            (
                "kubernetes_watch_lists",
                "Kubernetes lists started (the first and every re-list), by resource kind",
            ),
        ];
        for (column, (name, help)) in families.into_iter().enumerate() {
            let rows: Vec<_> = ResourceKind::ALL
                .iter()
                .zip(&values.per_kind)
                .map(|(kind, row)| (vec![("kind", kind.as_str().to_owned())], row[column]))
                .collect();
            counter_family(&mut encoder, name, help, &rows)?;
        }
        counter(
            &mut encoder,
            "kubernetes_models_published",
            "Discovery models the Kubernetes watcher published",
            values.models_published,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a fixed counters object, as the dataplane writes it, with the collector's
    /// function.
    #[derive(Debug)]
    struct FixedCounters(Value);

    impl Collector for FixedCounters {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_counters(&mut encoder, &self.0)
        }
    }

    #[test]
    fn conntrack_counters_have_their_types() {
        let counters = serde_json::json!({
            "conntrack_entries": 24,
            "conntrack_expired_replaced": 5,
            "conntrack_insert_failed": 3,
            "held": 2,
            "port": {"ipackets": 10, "imissed": 1},
            "kernel_port": null,
        });
        let mut registry = Registry::with_prefix("spike");
        registry.register_collector(Box::new(FixedCounters(counters)));
        let text = encode(&registry);

        for line in [
            "# TYPE spike_dataplane_conntrack_entries gauge",
            "spike_dataplane_conntrack_entries 24",
            "# TYPE spike_dataplane_conntrack_expired_replaced_total counter",
            "spike_dataplane_conntrack_expired_replaced_total 5",
            "# TYPE spike_dataplane_conntrack_insert_failed_total counter",
            "spike_dataplane_conntrack_insert_failed_total 3",
            "spike_dataplane_held_total 2",
            "spike_dataplane_port_ipackets_total{port=\"main\"} 10",
            "spike_dataplane_port_imissed_total{port=\"main\"} 1",
        ] {
            assert!(text.lines().any(|row| row == line), "no {line} in:\n{text}");
        }
        assert!(!text.contains("port=\"kernel\""), "{text}");
    }

    #[test]
    fn removed_backends_keep_their_service_counts() {
        let counters = serde_json::json!({
            "services": [{
                "name": "web", "packets": 10, "bytes": 1000,
                "backends": [{"name": "node-a", "packets": 7, "bytes": 700}],
                "removed_backends": {"packets": 3, "bytes": 300},
            }],
        });
        let mut registry = Registry::with_prefix("spike");
        registry.register_collector(Box::new(FixedCounters(counters)));
        let text = encode(&registry);

        for line in [
            "spike_dataplane_service_packets_total{service=\"web\"} 10",
            "spike_dataplane_backend_packets_total{service=\"web\",backend=\"node-a\"} 7",
            "spike_dataplane_removed_backends_packets_total{service=\"web\"} 3",
            "spike_dataplane_removed_backends_bytes_total{service=\"web\"} 300",
        ] {
            assert!(text.lines().any(|row| row == line), "no {line} in:\n{text}");
        }
    }
}
