//! The model that discovery produces: the VIPs Spike serves and, for each, the nodes to
//! send its flows to.
//!
//! A backend is a node, not a pod. Spike encapsulates a client's packet to the node's
//! `flannel.1` device with the VIP still as destination, and the node's kube-proxy
//! translates it to a local pod. A node's weight is the number of the Service's ready
//! endpoints it runs.

use std::fmt;
use std::net::IpAddr;

use spike_core::config::Protocol;
use spike_core::wire::MacAddr;

/// Everything discovery found at one moment: served VIPs and what it had to leave out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Sorted by VIP, protocol number and port; each triple appears once.
    pub services: Vec<VirtualService>,
    /// Nodes with endpoints of a served Service that cannot be backends, sorted by name.
    /// A node appears once however many Services it serves.
    pub skipped_nodes: Vec<SkippedNode>,
    /// Service ports that are not served, sorted by Service and port.
    pub skipped_ports: Vec<SkippedPort>,
    /// Endpoints of served Services without `nodeName`, which no backend can carry.
    pub endpoints_without_node: usize,
}

/// Namespace and name of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a served Service on one of its LoadBalancer IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualService {
    pub service: ServiceName,
    /// The Service port's name; `None` for the single unnamed port a Service may have.
    pub port_name: Option<String>,
    pub vip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// Sorted by node name. Empty when the Service has no usable endpoint: the dataplane
    /// then drops the VIP's packets and counts them until endpoints return.
    pub backends: Vec<Backend>,
    /// True when no node has a ready endpoint and the backends are nodes whose endpoints
    /// are all terminating but still serving, which carry new flows as a last resort.
    pub serving_terminating_only: bool,
}

/// A node that receives a VIP's flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub node: String,
    /// Outer IP destination, from flannel's `public-ip` annotation.
    pub underlay_ip: IpAddr,
    /// Inner Ethernet destination, from the `VtepMAC` of flannel's `backend-data`.
    pub vtep_mac: MacAddr,
    /// Share of new flows. Zero means draining: the node keeps the flows it has and gets
    /// no new ones.
    pub weight: u32,
    /// Ready endpoints of the Service on this node.
    pub ready_endpoints: u32,
    /// Endpoints that are terminating but still serving.
    pub terminating_endpoints: u32,
}

impl Backend {
    /// Tells whether the node only keeps existing flows.
    pub fn is_draining(&self) -> bool {
        self.weight == 0
    }
}

/// A node left out of every backend set, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedNode {
    pub node: String,
    pub reason: SkipReason,
}

/// Reason a node cannot be a backend. The messages are lower case and name the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// An EndpointSlice names the node, but no Node object has that name (the node was
    /// removed and the slice not yet updated).
    #[error("no Node object has this name; its endpoints are ignored until the slice changes")]
    NodeNotFound,
    /// The public-ip annotation is missing.
    #[error(
        "annotation flannel.alpha.coreos.com/public-ip is missing: check that flannel runs \
         on the node"
    )]
    MissingPublicIp,
    /// The public-ip annotation is not an IP address.
    #[error(
        "annotation flannel.alpha.coreos.com/public-ip is {value:?}, not an IP address: \
         check flannel's --public-ip or --iface setting"
    )]
    InvalidPublicIp { value: String },
    /// The backend-data annotation is missing.
    #[error(
        "annotation flannel.alpha.coreos.com/backend-data is missing: check that flannel \
         runs on the node with the vxlan backend"
    )]
    MissingBackendData,
    /// The backend-data annotation has no usable VtepMAC.
    #[error(
        "annotation flannel.alpha.coreos.com/backend-data is {value:?}, which has no valid \
         VtepMAC ({problem}): check the flannel version and backend on the node"
    )]
    InvalidBackendData { value: String, problem: String },
    /// flannel runs another backend, which has no VXLAN device to deliver to.
    #[error(
        "flannel backend is {backend:?}, not vxlan: Spike needs flannel's vxlan backend on \
         every node"
    )]
    NotVxlan { backend: String },
}

impl SkipReason {
    /// Short stable label for a metric, one per variant.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SkipReason::NodeNotFound => "node_not_found",
            SkipReason::MissingPublicIp => "missing_public_ip",
            SkipReason::InvalidPublicIp { .. } => "invalid_public_ip",
            SkipReason::MissingBackendData => "missing_backend_data",
            SkipReason::InvalidBackendData { .. } => "invalid_backend_data",
            SkipReason::NotVxlan { .. } => "not_vxlan",
        }
    }
}

/// A Service port that is not served on one of its VIPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedPort {
    pub service: ServiceName,
    pub port_name: Option<String>,
    pub port: i32,
    pub reason: PortSkipReason,
}

/// Reason a Service port is not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortSkipReason {
    /// Spike balances TCP and UDP only.
    #[error("protocol {protocol} is not supported: Spike serves TCP and UDP")]
    UnsupportedProtocol { protocol: String },
    /// The port number is outside 1..=65535.
    #[error("port number is outside 1..=65535")]
    InvalidPort,
    /// Another Service already uses this VIP, protocol and port.
    #[error(
        "{vip} {protocol} port is already served for Service {owner}: give one of the \
         Services another LoadBalancer IP or port"
    )]
    VipConflict {
        vip: IpAddr,
        protocol: Protocol,
        owner: ServiceName,
    },
}
