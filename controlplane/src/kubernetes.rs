//! Kubernetes discovery as a [`Discovery`] source.
//!
//! spike-kube's watcher sends a model of the served VIPs whenever the cluster changes.
//! This source turns each of the model's virtual services into a snapshot service and
//! sends the complete set:
//!
//! - name `NAMESPACE.SERVICE:VIP:PROTOCOL:PORT`, shortened with a hash suffix when it
//!   exceeds spike-core's 63 characters, so that each VIP, protocol and port has its own
//!   name and the name is the same on every Spike node;
//! - hash fields and table size from the first `[[kubernetes.service_settings]]` entry
//!   that selects the service, else from `kubernetes.hash` and `kubernetes.table_size`;
//! - one backend per node: flannel's underlay address and VtepMAC, weight = ready
//!   endpoints (0 = draining), next-hop MAC from `kubernetes.next_hop_macs`; for nodes
//!   not listed there, the kernel's neighbour table with
//!   `controlplane.resolve_next_hops`, else the node's `gateway_mac`.
//!
//! A node that cannot be a backend is left out of every service and logged once, and
//! again only when its reason changes. spike-kube skips nodes with missing or malformed
//! flannel annotations and names without a Node object. This source also skips the
//! nodes that spike-core's config validation would reject, so that one bad node cannot
//! block the whole snapshot. Those are nodes whose underlay address has a family without
//! `node.ipv4` or `node.ipv6`, is not unicast, or belongs to a node earlier in name
//! order, and nodes with the VtepMAC of Spike's own node.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use spike_core::config::{BackendConfig, NodeConfig, ServiceConfig};
use spike_kube::{DiscoveryWatcher, VirtualService};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{ControlConfig, KubernetesSettings};
use crate::discovery::{Discovery, SourceUpdate};
use crate::metrics::WatchTotals;

/// Maximum length of a service or backend name that spike-core accepts.
const MAX_NAME_LEN: usize = 63;
/// First and longest wait between attempts to create the Kubernetes client.
const CONNECT_RETRY_FIRST: Duration = Duration::from_secs(1);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);

/// Labels of the skipped-nodes gauge.
pub type ReasonLabels = [(&'static str, String); 1];

/// Metrics that the Kubernetes source updates.
#[derive(Clone, Debug)]
pub struct KubernetesMetrics {
    /// Nodes skipped in the latest model, by reason.
    pub skipped_nodes: Family<ReasonLabels, Gauge>,
    /// Watch counters of every watcher this process started.
    pub watch: Arc<WatchTotals>,
}

/// Services that Kubernetes discovery finds.
pub struct KubernetesSource {
    config: Arc<ControlConfig>,
    metrics: KubernetesMetrics,
}

impl KubernetesSource {
    /// Creates the source, or returns `None` when the config has no `[kubernetes]`.
    pub fn new(config: Arc<ControlConfig>, metrics: KubernetesMetrics) -> Option<Self> {
        config.kubernetes.as_ref()?;
        Some(KubernetesSource { config, metrics })
    }

    fn settings(&self) -> &KubernetesSettings {
        self.config
            .kubernetes
            .as_ref()
            .expect("KubernetesSource::new checks for [kubernetes]")
    }
}

impl Discovery for KubernetesSource {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn run(
        self: Box<Self>,
        updates: mpsc::Sender<SourceUpdate>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { self.watch(updates).await })
    }
}

/// Reason a node is skipped: the metric label and the message for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Skip {
    label: &'static str,
    message: String,
}

impl KubernetesSource {
    async fn watch(self, updates: mpsc::Sender<SourceUpdate>) {
        // Only the in-cluster and kubeconfig modes can fail here, on files they read;
        // nothing is sent to the API server yet.
        let mut delay = CONNECT_RETRY_FIRST;
        let (client, url) = loop {
            match spike_kube::connect_with_url(&self.settings().discovery.api_server).await {
                Ok(connected) => break connected,
                Err(error) => {
                    error!(
                        %error,
                        retry_in_s = delay.as_secs(),
                        "cannot create the Kubernetes client; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(CONNECT_RETRY_MAX);
                }
            }
        };
        let watcher =
            DiscoveryWatcher::new(client, self.settings().selection.clone()).with_server_url(url);
        self.metrics.watch.attach(watcher.counters());
        let (models_tx, mut models) = watch::channel(None);
        // The watcher runs inside this future, so that stopping the source stops it too.
        let watching = watcher.run(models_tx);
        tokio::pin!(watching);
        let mut reported = BTreeMap::new();

        loop {
            tokio::select! {
                () = &mut watching => {
                    error!("the Kubernetes watcher stopped; the last Kubernetes services stay");
                    std::future::pending::<()>().await;
                }
                changed = models.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let model = models.borrow_and_update().clone();
                    let Some(model) = model else { continue };
                    let skipped = self.skipped_nodes(&model);
                    self.report_skipped(&skipped, &mut reported);
                    let update = SourceUpdate {
                        source: self.name(),
                        services: self.services(&model, &skipped),
                    };
                    if updates.send(update).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Collects the nodes that spike-kube skipped and those that spike-core's config
    /// validation would reject, by node name.
    fn skipped_nodes(&self, model: &spike_kube::Discovery) -> BTreeMap<String, Skip> {
        let mut skipped: BTreeMap<String, Skip> = model
            .skipped_nodes
            .iter()
            .map(|node| {
                let skip = Skip {
                    label: node.reason.metric_label(),
                    message: node.reason.to_string(),
                };
                (node.node.clone(), skip)
            })
            .collect();

        let backends: BTreeMap<&str, &spike_kube::Backend> = model
            .services
            .iter()
            .flat_map(|service| &service.backends)
            .map(|backend| (backend.node.as_str(), backend))
            .collect();
        let mut owners: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for (node, backend) in backends {
            let owner = *owners.entry(backend.underlay_ip).or_insert(node);
            let checked = if owner == node {
                check_backend(&self.config.base.node, backend)
            } else {
                Err(Skip {
                    label: "duplicate_underlay_address",
                    message: format!(
                        "node {owner} has the same underlay address {}: check the \
                         flannel.alpha.coreos.com/public-ip annotations",
                        backend.underlay_ip
                    ),
                })
            };
            if let Err(skip) = checked {
                skipped.insert(node.to_owned(), skip);
            }
        }
        skipped
    }

    /// Logs each newly skipped node, a changed reason and a node that is usable again,
    /// and sets the skipped-nodes gauge.
    fn report_skipped(
        &self,
        skipped: &BTreeMap<String, Skip>,
        reported: &mut BTreeMap<String, Skip>,
    ) {
        for (node, skip) in skipped {
            if reported.get(node) != Some(skip) {
                warn!(node = %node, reason = skip.label, "node skipped: {}", skip.message);
            }
        }
        for node in reported.keys().filter(|node| !skipped.contains_key(*node)) {
            info!(node = %node, "node is no longer skipped");
        }

        let mut counts: BTreeMap<&'static str, i64> =
            reported.values().map(|skip| (skip.label, 0)).collect();
        for skip in skipped.values() {
            *counts.entry(skip.label).or_default() += 1;
        }
        for (label, count) in counts {
            let labels = [("reason", label.to_owned())];
            self.metrics.skipped_nodes.get_or_create(&labels).set(count);
        }
        reported.clone_from(skipped);
    }

    /// Turns the model's virtual services into snapshot services without the skipped
    /// nodes.
    fn services(
        &self,
        model: &spike_kube::Discovery,
        skipped: &BTreeMap<String, Skip>,
    ) -> Vec<ServiceConfig> {
        let settings = self.settings();
        let mut services = Vec::with_capacity(model.services.len());
        for service in &model.services {
            let backends: Vec<BackendConfig> = service
                .backends
                .iter()
                .filter(|backend| !skipped.contains_key(&backend.node))
                .map(|backend| BackendConfig {
                    name: bounded_name(&backend.node),
                    address: backend.underlay_ip,
                    vtep_mac: backend.vtep_mac,
                    weight: backend.weight,
                    // `None` is resolved from the kernel or becomes node.gateway_mac.
                    next_hop_mac: settings.next_hop_macs.get(&backend.node).copied(),
                })
                .collect();
            let name = service_name(service);
            let (hash, table_size) = settings.settings_for(
                &service.service.namespace,
                &service.service.name,
                service.protocol,
                service.port,
            );
            if backends.len() > table_size as usize {
                warn!(
                    service = %name,
                    backends = backends.len(),
                    table_size,
                    "service left out: more backends than its table_size slots"
                );
                continue;
            }
            if service.vip.is_unspecified() || service.vip.is_multicast() {
                warn!(service = %name, vip = %service.vip, "service left out: VIP is not unicast");
                continue;
            }
            services.push(ServiceConfig {
                name,
                vip: service.vip,
                protocol: service.protocol,
                port: service.port,
                hash,
                table_size,
                backends,
            });
        }
        services
    }
}

/// Checks a backend against the rules of spike-core's config validation that a node's
/// annotations can break.
fn check_backend(node: &NodeConfig, backend: &spike_kube::Backend) -> Result<(), Skip> {
    let address = backend.underlay_ip;
    let family_configured = match address {
        IpAddr::V4(_) => node.ipv4.is_some(),
        IpAddr::V6(_) => node.ipv6.is_some(),
    };
    if !family_configured {
        return Err(Skip {
            label: "address_family_not_configured",
            message: format!(
                "underlay address {address} has no matching node.ipv4 or node.ipv6 in \
                 Spike's config: set the one of its family"
            ),
        });
    }
    if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
        return Err(Skip {
            label: "invalid_underlay_address",
            message: format!("underlay address {address} is not a unicast host address"),
        });
    }
    if backend.vtep_mac == node.vtep_mac {
        return Err(Skip {
            label: "own_vtep_mac",
            message: format!(
                "VtepMAC {} is node.vtep_mac of Spike's own node, whose frames the node \
                 would drop as its own",
                backend.vtep_mac
            ),
        });
    }
    Ok(())
}

/// Names a virtual service `NAMESPACE.SERVICE:VIP:PROTOCOL:PORT`.
fn service_name(service: &VirtualService) -> String {
    bounded_name(&format!(
        "{}.{}:{}:{}:{}",
        service.service.namespace,
        service.service.name,
        service.vip,
        service.protocol,
        service.port
    ))
}

/// Returns `name` when spike-core accepts it as a service or backend name. Otherwise it
/// replaces characters that spike-core rejects with '-' and, when too long, keeps the
/// start and appends a hash of the whole name, so that distinct names stay distinct.
fn bounded_name(name: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    let cleaned: String = name
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .collect();
    if cleaned == name && name.len() <= MAX_NAME_LEN {
        return cleaned;
    }
    let suffix = format!("-{:016x}", fnv1a(name.as_bytes()));
    let keep = MAX_NAME_LEN - suffix.len();
    let start: String = cleaned.chars().take(keep).collect();
    start + &suffix
}

/// FNV-1a, 64 bits: stable across Rust versions and machines, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use spike_core::flow::HashFields;

    use super::*;

    #[test]
    fn short_names_stay() {
        assert_eq!(bounded_name("node-1"), "node-1");
        assert_eq!(
            bounded_name("web.a:203.0.113.1:tcp:80"),
            "web.a:203.0.113.1:tcp:80"
        );
    }

    #[test]
    fn long_names_get_hash_suffix() {
        let long = format!("{}.b:203.0.113.1:tcp:80", "a".repeat(70));
        let other = format!("{}.c:203.0.113.1:tcp:80", "a".repeat(70));
        let bounded = bounded_name(&long);
        assert_eq!(bounded.len(), MAX_NAME_LEN);
        assert!(bounded.starts_with("aaaa"), "{bounded}");
        assert_ne!(bounded, bounded_name(&other));
        assert_eq!(bounded, bounded_name(&long));
    }

    fn backend(node: &str, address: &str, vtep_mac: &str) -> spike_kube::Backend {
        spike_kube::Backend {
            node: node.to_owned(),
            underlay_ip: address.parse().unwrap(),
            vtep_mac: vtep_mac.parse().unwrap(),
            weight: 1,
            ready_endpoints: 1,
            terminating_endpoints: 0,
        }
    }

    #[test]
    fn invalid_nodes_keep_snapshot_valid() {
        let text = r#"
            [controlplane]
            ring = "/dev/shm/spike-unit-test"
            metrics_listen = "127.0.0.1:9300"
            [node]
            mac = "02:00:00:00:00:01"
            ipv4 = "192.0.2.100"
            gateway_mac = "02:00:00:00:00:fe"
            vtep_mac = "02:00:00:00:00:02"
            [hash]
            key = "000102030405060708090a0b0c0d0e0f"
            [kubernetes.api_server]
            mode = "url"
            url = "http://127.0.0.1:1"
            [kubernetes.services]
            match_labels = { spike = "yes" }
        "#;
        let config = Arc::new(ControlConfig::parse(text).unwrap());
        let metrics = KubernetesMetrics {
            skipped_nodes: Family::default(),
            watch: Arc::default(),
        };
        let source = KubernetesSource::new(Arc::clone(&config), metrics).unwrap();
        let model = spike_kube::Discovery {
            services: vec![VirtualService {
                service: spike_kube::ServiceName {
                    namespace: "web".to_owned(),
                    name: "a".to_owned(),
                },
                port_name: None,
                vip: "203.0.113.1".parse().unwrap(),
                protocol: spike_core::config::Protocol::Tcp,
                port: 80,
                backends: vec![
                    backend("node-1", "192.0.2.1", "0a:00:00:00:00:01"),
                    backend("node-2", "2001:db8::2", "0a:00:00:00:00:02"),
                    backend("node-3", "192.0.2.3", "02:00:00:00:00:02"),
                    backend("node-4", "192.0.2.1", "0a:00:00:00:00:04"),
                    backend("node-5", "127.0.0.1", "0a:00:00:00:00:05"),
                ],
                serving_terminating_only: false,
            }],
            ..spike_kube::Discovery::default()
        };

        let skipped = source.skipped_nodes(&model);
        let labels: Vec<(&str, &str)> = skipped
            .iter()
            .map(|(node, skip)| (node.as_str(), skip.label))
            .collect();
        assert_eq!(
            labels,
            [
                ("node-2", "address_family_not_configured"),
                ("node-3", "own_vtep_mac"),
                ("node-4", "duplicate_underlay_address"),
                ("node-5", "invalid_underlay_address"),
            ]
        );

        let mut snapshot = config.base.clone();
        snapshot.services = source.services(&model, &skipped);
        let names: Vec<&str> = snapshot.services[0]
            .backends
            .iter()
            .map(|backend| backend.name.as_str())
            .collect();
        assert_eq!(names, ["node-1"]);
        let text = spike_snapring::payload::config_to_toml(&snapshot).unwrap();
        text.parse::<spike_core::Config>().unwrap();
    }

    #[test]
    fn service_settings_apply_per_service() {
        let text = r#"
            [controlplane]
            ring = "/dev/shm/spike-unit-test"
            metrics_listen = "127.0.0.1:9300"
            [node]
            mac = "02:00:00:00:00:01"
            ipv4 = "192.0.2.100"
            gateway_mac = "02:00:00:00:00:fe"
            vtep_mac = "02:00:00:00:00:02"
            [hash]
            key = "000102030405060708090a0b0c0d0e0f"
            [kubernetes.api_server]
            mode = "url"
            url = "http://127.0.0.1:1"
            [kubernetes.services]
            match_labels = { spike = "yes" }
            [[kubernetes.service_settings]]
            namespace = "dns"
            hash = "source-address"
            table_size = 251
        "#;
        let config = Arc::new(ControlConfig::parse(text).unwrap());
        let metrics = KubernetesMetrics {
            skipped_nodes: Family::default(),
            watch: Arc::default(),
        };
        let source = KubernetesSource::new(Arc::clone(&config), metrics).unwrap();
        let service = |namespace: &str, port: u16| VirtualService {
            service: spike_kube::ServiceName {
                namespace: namespace.to_owned(),
                name: "a".to_owned(),
            },
            port_name: None,
            vip: "203.0.113.1".parse().unwrap(),
            protocol: spike_core::config::Protocol::Udp,
            port,
            backends: vec![backend("node-1", "192.0.2.1", "0a:00:00:00:00:01")],
            serving_terminating_only: false,
        };
        let model = spike_kube::Discovery {
            services: vec![service("dns", 53), service("web", 80)],
            ..spike_kube::Discovery::default()
        };

        let services = source.services(&model, &BTreeMap::new());
        let settings: Vec<(HashFields, u32)> = services
            .iter()
            .map(|service| (service.hash, service.table_size))
            .collect();
        assert_eq!(
            settings,
            [
                (HashFields::SourceAddress, 251),
                (
                    HashFields::FiveTuple,
                    spike_core::maglev::DEFAULT_TABLE_SIZE
                ),
            ]
        );
    }

    #[test]
    fn invalid_characters_are_replaced() {
        let bounded = bounded_name("node/1");
        assert!(bounded.starts_with("node-1-"), "{bounded}");
        assert_eq!(bounded.len(), "node-1".len() + 1 + 16);
    }
}
