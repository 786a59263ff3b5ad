//! The pure step of discovery: from observed Services, EndpointSlices and Nodes to a
//! [`Discovery`]. It reads no clock and does no I/O, so the same input always gives the
//! same output, and the watcher can rebuild the whole model after any change.
//!
//! Endpoint conditions follow the EndpointSlice API (discovery.k8s.io/v1): an absent
//! `ready` or `serving` counts as true and an absent `terminating` as false. An endpoint is
//! identified by its `targetRef` (the pod), else by its addresses, so an endpoint that
//! several slices list, for example the IPv4 and IPv6 slices of a dual-stack Service,
//! counts once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use spike_core::config::Protocol;

use crate::config::Selection;
use crate::flannel::{node_underlay, NodeUnderlay};
use crate::model::{
    Backend, Discovery, PortSkipReason, ServiceName, SkipReason, SkippedNode, SkippedPort,
    VirtualService,
};

/// Label that the EndpointSlice controller sets to the name of the slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Builds the model of the Services that `selection` serves from the observed objects.
///
/// Objects are taken in any order. Services that do not match the selection, slices of
/// other Services and nodes without their endpoints are ignored. See the module
/// documentation for how endpoints are counted, and [`Discovery`] for what is reported.
pub fn build_discovery<'a>(
    selection: &Selection,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Discovery {
    let slices_by_service = index_slices(slices);
    let mut resolver = NodeResolver::new(nodes);
    let mut served = BTreeMap::new();
    let mut skipped_ports = Vec::new();
    let mut without_node = BTreeSet::new();

    for (name, service, vips) in selected_services(selection, services) {
        let slices = slices_by_service.get(&name).map_or(&[][..], Vec::as_slice);
        let ports = service.spec.as_ref().and_then(|spec| spec.ports.as_deref());

        for port in ports.unwrap_or_default() {
            let (protocol, number) = match port_key(port) {
                Ok(key) => key,
                Err(reason) => {
                    skipped_ports.push(skipped_port(&name, port, reason));
                    continue;
                }
            };

            let tally = tally_endpoints(slices, port.name.as_deref());
            without_node.extend(
                tally
                    .without_node
                    .iter()
                    .map(|key| (name.clone(), key.clone())),
            );
            let (backends, serving_terminating_only) = choose_backends(&tally, &mut resolver);

            for &vip in &vips {
                let key = (vip, protocol.number(), number);
                if let Some(owner) = served.get(&key).map(|v: &VirtualService| &v.service) {
                    let reason = PortSkipReason::VipConflict {
                        vip,
                        protocol,
                        owner: owner.clone(),
                    };
                    skipped_ports.push(skipped_port(&name, port, reason));
                    continue;
                }

                let virtual_service = VirtualService {
                    service: name.clone(),
                    port_name: port_name(port.name.as_deref()).map(str::to_owned),
                    vip,
                    protocol,
                    port: number,
                    backends: backends.clone(),
                    serving_terminating_only,
                };
                served.insert(key, virtual_service);
            }
        }
    }

    skipped_ports.sort_by(|a, b| (&a.service, a.port).cmp(&(&b.service, b.port)));
    Discovery {
        services: served.into_values().collect(),
        skipped_nodes: resolver.into_skipped(),
        skipped_ports,
        endpoints_without_node: without_node.len(),
    }
}

/// Groups EndpointSlices by the Service named in their `kubernetes.io/service-name` label.
fn index_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<ServiceName, Vec<&'a EndpointSlice>> {
    let mut index: BTreeMap<ServiceName, Vec<&EndpointSlice>> = BTreeMap::new();

    for slice in slices {
        let meta = &slice.metadata;
        let service = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
        let (Some(service), Some(namespace)) = (service, &meta.namespace) else {
            continue;
        };
        let name = ServiceName {
            namespace: namespace.clone(),
            name: service.clone(),
        };
        index.entry(name).or_default().push(slice);
    }
    index
}

/// Returns the selected Services, sorted by name so that the first one keeps a VIP that
/// two Services claim, with the LoadBalancer IPs that become their VIPs. Services with no
/// such IP are left out.
fn selected_services<'a>(
    selection: &Selection,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<(ServiceName, &'a Service, Vec<IpAddr>)> {
    let no_labels = BTreeMap::new();
    let mut selected = Vec::new();

    for service in services {
        let meta = &service.metadata;
        let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) else {
            continue;
        };
        let labels = meta.labels.as_ref().unwrap_or(&no_labels);
        if !selection.matches_labels(namespace, labels) {
            continue;
        }

        let vips: Vec<IpAddr> = load_balancer_ips(service)
            .into_iter()
            .filter(|ip| selection.serves_ip(*ip))
            .collect();
        if vips.is_empty() {
            continue;
        }

        let name = ServiceName {
            namespace: namespace.clone(),
            name: name.clone(),
        };
        selected.push((name, service, vips));
    }

    selected.sort_by(|a, b| a.0.cmp(&b.0));
    selected
}

/// Reads the IPs of `status.loadBalancer.ingress`, without duplicates. Hostname-only
/// entries have no IP and are ignored.
fn load_balancer_ips(service: &Service) -> BTreeSet<IpAddr> {
    let ingress = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default();

    ingress
        .iter()
        .filter_map(|entry| entry.ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Maps a Service port to Spike's protocol and port number. An absent protocol is TCP,
/// the Kubernetes default.
fn port_key(port: &ServicePort) -> Result<(Protocol, u16), PortSkipReason> {
    let protocol = match port.protocol.as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some(other) => {
            return Err(PortSkipReason::UnsupportedProtocol {
                protocol: other.to_owned(),
            })
        }
    };

    match u16::try_from(port.port) {
        Ok(number) if number != 0 => Ok((protocol, number)),
        _ => Err(PortSkipReason::InvalidPort),
    }
}

fn skipped_port(name: &ServiceName, port: &ServicePort, reason: PortSkipReason) -> SkippedPort {
    SkippedPort {
        service: name.clone(),
        port_name: port_name(port.name.as_deref()).map(str::to_owned),
        port: port.port,
        reason,
    }
}

/// Treats an empty port name as no name, as Kubernetes does for a single-port Service.
fn port_name(name: Option<&str>) -> Option<&str> {
    name.filter(|name| !name.is_empty())
}

/// Usefulness of an endpoint, ordered from least to most useful, so that the best state
/// wins when slices list one endpoint with different conditions during an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EndpointState {
    NotServing,
    Terminating,
    Ready,
}

fn endpoint_state(endpoint: &Endpoint) -> EndpointState {
    let conditions = endpoint.conditions.as_ref();
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);

    // The API keeps `ready` false while terminating; a terminating endpoint that still
    // claims ready gets no new flows either, because its pod is going away.
    if terminating {
        if serving {
            EndpointState::Terminating
        } else {
            EndpointState::NotServing
        }
    } else if ready {
        EndpointState::Ready
    } else {
        EndpointState::NotServing
    }
}

/// Identity of an endpoint across slices.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EndpointKey {
    PodUid(String),
    Target {
        kind: String,
        namespace: String,
        name: String,
    },
    Addresses(Vec<String>),
}

fn endpoint_key(endpoint: &Endpoint) -> EndpointKey {
    if let Some(target) = &endpoint.target_ref {
        if let Some(uid) = target.uid.as_ref().filter(|uid| !uid.is_empty()) {
            return EndpointKey::PodUid(uid.clone());
        }
        if let Some(name) = &target.name {
            return EndpointKey::Target {
                kind: target.kind.clone().unwrap_or_default(),
                namespace: target.namespace.clone().unwrap_or_default(),
                name: name.clone(),
            };
        }
    }

    let mut addresses = endpoint.addresses.clone();
    addresses.sort();
    EndpointKey::Addresses(addresses)
}

/// Endpoint counts of one Service port.
#[derive(Debug, Default)]
struct Tally {
    /// Ready and terminating-but-serving endpoints per node name.
    per_node: BTreeMap<String, NodeTally>,
    /// Usable endpoints without `nodeName`.
    without_node: BTreeSet<EndpointKey>,
}

#[derive(Clone, Copy, Debug, Default)]
struct NodeTally {
    ready: u32,
    terminating: u32,
}

/// Counts the endpoints of the slices that carry `port_name`, each endpoint once in its
/// best state.
fn tally_endpoints(slices: &[&EndpointSlice], port_name: Option<&str>) -> Tally {
    let mut best: BTreeMap<EndpointKey, (EndpointState, Option<&str>)> = BTreeMap::new();

    for slice in slices
        .iter()
        .filter(|slice| slice_has_port(slice, port_name))
    {
        for endpoint in &slice.endpoints {
            let state = endpoint_state(endpoint);
            let node = endpoint.node_name.as_deref();
            let entry = best.entry(endpoint_key(endpoint)).or_insert((state, node));
            if state > entry.0 {
                *entry = (state, node);
            }
        }
    }

    let mut tally = Tally::default();
    for (key, (state, node)) in best {
        if state == EndpointState::NotServing {
            continue;
        }
        let Some(node) = node else {
            tally.without_node.insert(key);
            continue;
        };

        let counts = tally.per_node.entry(node.to_owned()).or_default();
        match state {
            EndpointState::Ready => counts.ready += 1,
            EndpointState::Terminating => counts.terminating += 1,
            EndpointState::NotServing => {}
        }
    }
    tally
}

/// Tells whether a slice's endpoints serve the Service port named `port_name`. The API
/// defines a slice without ports as having no defined ports, and a port entry without a
/// number as all ports.
fn slice_has_port(slice: &EndpointSlice, wanted: Option<&str>) -> bool {
    let wanted = port_name(wanted);
    let ports = slice.ports.as_deref().unwrap_or_default();

    ports
        .iter()
        .any(|port| port.port.is_none() || port_name(port.name.as_deref()) == wanted)
}

/// Turns a port's tally into backends, weighted by ready endpoints. Nodes with only
/// terminating endpoints stay with weight 0 so that their flows drain. When no usable node
/// has a ready endpoint, the terminating ones carry new flows instead, and the second
/// value is true.
fn choose_backends(tally: &Tally, resolver: &mut NodeResolver) -> (Vec<Backend>, bool) {
    let usable: Vec<(&str, NodeTally, NodeUnderlay)> = tally
        .per_node
        .iter()
        .filter_map(|(node, counts)| Some((node.as_str(), *counts, resolver.resolve(node)?)))
        .collect();
    let any_ready = usable.iter().any(|(_, counts, _)| counts.ready > 0);

    let backends: Vec<Backend> = usable
        .into_iter()
        .map(|(node, counts, underlay)| Backend {
            node: node.to_owned(),
            underlay_ip: underlay.underlay_ip,
            vtep_mac: underlay.vtep_mac,
            weight: if any_ready {
                counts.ready
            } else {
                counts.terminating
            },
            ready_endpoints: counts.ready,
            terminating_endpoints: counts.terminating,
        })
        .collect();

    let fallback = !any_ready && !backends.is_empty();
    (backends, fallback)
}

/// Looks nodes up by name and reads their flannel annotations once each.
struct NodeResolver<'a> {
    nodes: BTreeMap<&'a str, &'a Node>,
    resolved: BTreeMap<String, Result<NodeUnderlay, SkipReason>>,
}

impl<'a> NodeResolver<'a> {
    fn new(nodes: impl IntoIterator<Item = &'a Node>) -> Self {
        let nodes = nodes
            .into_iter()
            .filter_map(|node| Some((node.metadata.name.as_deref()?, node)))
            .collect();
        NodeResolver {
            nodes,
            resolved: BTreeMap::new(),
        }
    }

    /// Returns the node's underlay identity, or `None` if the node is skipped.
    fn resolve(&mut self, name: &str) -> Option<NodeUnderlay> {
        if let Some(result) = self.resolved.get(name) {
            return result.as_ref().ok().copied();
        }

        let empty = BTreeMap::new();
        let result = match self.nodes.get(name) {
            Some(node) => node_underlay(node.metadata.annotations.as_ref().unwrap_or(&empty)),
            None => Err(SkipReason::NodeNotFound),
        };
        let underlay = result.as_ref().ok().copied();
        self.resolved.insert(name.to_owned(), result);
        underlay
    }

    fn into_skipped(self) -> Vec<SkippedNode> {
        self.resolved
            .into_iter()
            .filter_map(|(node, result)| {
                Some(SkippedNode {
                    node,
                    reason: result.err()?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
