//! The control plane's TOML configuration.
//!
//! The file is the dataplane's config format for `[node]`, `[vxlan]`, `[hash]` and
//! `[[service]]` (validated by spike-core's own parser), plus:
//!
//! - `[controlplane]`: the ring path, the metrics address, the ring's slot size, whether
//!   next-hop MACs come from the kernel (`resolve_next_hops`), the longest wait for the
//!   sources' initial sets after a start (`initial_sync_timeout_s`), and an optional
//!   `[controlplane.metrics_tls]` table that serves the metrics endpoint over TLS with
//!   the node identity that spike-bootstrap writes;
//! - `[service.health_check]` per service, and `health_address` per backend, the
//!   address the checks connect to when it differs from the backend's underlay address;
//! - an optional `[kubernetes]` section: spike-kube's `KubernetesConfig` (API server,
//!   namespace, service selector) plus `hash`, `table_size` and `next_hop_macs`, which
//!   apply to every service that Kubernetes discovery finds, and
//!   `[[kubernetes.service_settings]]`, which set `hash` and `table_size` for the
//!   services they select;
//! - an optional `[bgp]` section: the node's BGP speaker, see `bgp::config`.
//!
//! `[conntrack]`, `[icmp]`, `[dpdk]` and `[cluster]` belong in the dataplane's file and
//! are rejected. The dataplane takes `[cluster]` from its own file, because that table
//! names the node itself among the Spike nodes.
//!
//! Errors name the line of the operator's file and the full key path, such as
//! `service[0] (web).backend[1].health_address`. The control plane's own keys are read with
//! their locations. spike-core reads the file with those keys blanked out line by line,
//! so its line numbers match the file too.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;
use spike_core::config::{escape_controls, locate, Place};
use spike_core::flow::HashFields;
use spike_core::maglev;
use spike_core::wire::MacAddr;
use spike_core::Config;
use spike_kube::{
    ApiServerConfig, CheckKubeconfigError, KubeconfigError, KubernetesConfig, Selection,
    ServiceSelector,
};
use thiserror::Error;
use toml_edit::{ImDocument, Item};

use crate::bgp::{self, BgpConfig};

/// A config error, naming the key and what to do.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid config: {}", locate::one_line(.0.message()))]
    Syntax(#[from] toml::de::Error),
    /// A type error, unknown or missing key in the control plane's keys.
    #[error("line {line}, column {column}: {key}: {message}")]
    Located {
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// The core's message already starts with what failed.
    #[error("{0}")]
    Core(#[from] spike_core::config::ConfigError),
    #[error(
        "[{0}] belongs in the dataplane's config file: move it there and remove it from this one"
    )]
    DataplaneSection(String),
    /// The file has a dataplane-only section and no `[controlplane]`: the operator gave the
    /// control plane the dataplane's file.
    #[error(
        "this looks like a spike-dataplane config (it has [{0}] and no [controlplane]); \
         spike-controlplane reads its own file with a [controlplane] section, such as \
         configs/controlplane.toml of the source tree: pass that file with --config"
    )]
    DataplaneFile(String),
    #[error("invalid config: {0}")]
    Kubernetes(#[from] spike_kube::ConfigError),
    /// The value is printed with its control characters escaped, so that the message
    /// stays one line whatever the file holds.
    #[error("{key}: invalid value {}: expected {expected}", escape_controls(.value))]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    /// One of the other errors, in one line, with the file and the place in it.
    #[error("{place}: {message}")]
    At { place: Place, message: String },
}

impl ConfigError {
    /// Adds the file (when given) and the line and column in `text` to the error, as in
    /// `PATH:LINE:COLUMN: key: message`.
    fn place(self, text: &str, path: Option<&Path>) -> ConfigError {
        let file = path.map(|path| path.display().to_string());
        let at = |position: Option<(usize, usize)>, message: String| ConfigError::At {
            place: Place {
                path: file.clone(),
                position,
            },
            message,
        };
        match self {
            ConfigError::At { .. } => self,
            ConfigError::Core(error) => match path {
                Some(path) => ConfigError::Core(error.in_file(path)),
                None => ConfigError::Core(error),
            },
            ConfigError::Located {
                line,
                column,
                key,
                message,
            } => at(Some((line, column)), format!("{key}: {message}")),
            ConfigError::Invalid { ref key, .. } => {
                let position = locate::position_of_key(text, key);
                at(position, self.to_string())
            }
            ConfigError::DataplaneSection(ref section) => {
                let position = locate::position_of_key(text, section);
                at(position, format!("{section}: {self}"))
            }
            ConfigError::DataplaneFile(ref section) => {
                at(locate::position_of_key(text, section), self.to_string())
            }
            ConfigError::Kubernetes(ref error) => {
                let position = locate::position_of_key(text, "kubernetes");
                at(position, format!("kubernetes: {error}"))
            }
            ConfigError::Syntax(ref error) => {
                let offset = error.span().map(|span| span.start);
                let position = offset.map(|offset| locate::line_column(text, offset));
                let message = locate::one_line(error.message());
                if let Some((name, header)) = locate::unknown_table(text, &SECTIONS) {
                    return at(
                        Some(header),
                        format!(
                            "{name}: unknown section `{name}`, expected one of {} (TOML then \
                             stopped at {}: {message})",
                            expected_sections(),
                            Place {
                                path: None,
                                position
                            }
                        ),
                    );
                }
                let span = error.span();
                match offset.and_then(|offset| locate::key_at(text, offset)) {
                    Some(key) => {
                        let message = match span {
                            Some(span) => explain_number(&message, text, span, &key),
                            None => message,
                        };
                        at(position, format!("{key}: {message}"))
                    }
                    None => at(position, message),
                }
            }
        }
    }
}

pub(crate) fn invalid(
    key: impl Into<String>,
    value: impl std::fmt::Display,
    expected: &str,
) -> ConfigError {
    let value = value.to_string();
    ConfigError::Invalid {
        key: key.into(),
        // An empty value would leave `invalid value : expected` in the message.
        value: if value.is_empty() {
            "\"\"".to_owned()
        } else {
            value
        },
        expected: expected.to_owned(),
    }
}

/// The validated config.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlConfig {
    pub ring: PathBuf,
    pub metrics_listen: SocketAddr,
    pub slot_size_bytes: u64,
    /// TLS of the metrics endpoint, or `None` for plain HTTP.
    pub metrics_tls: Option<MetricsTls>,
    /// Whether backends without a configured next-hop MAC get theirs from the kernel's
    /// route and neighbour tables (see `nexthop`) instead of `node.gateway_mac`.
    pub resolve_next_hops: bool,
    /// Maximum wait after a start for every source's initial service set before the
    /// first publication; the sources still missing then are left out until they report.
    pub initial_sync_timeout: Duration,
    /// Node, VXLAN, hash and statically configured services, as the dataplane reads them.
    pub base: Config,
    /// Health check per service of `base`, in the same order.
    pub health_checks: Vec<Option<HealthCheck>>,
    /// Address each backend's checks connect to, per service and backend of `base`.
    pub health_addresses: Vec<Vec<IpAddr>>,
    /// Kubernetes discovery, when the file has a `[kubernetes]` section.
    pub kubernetes: Option<KubernetesSettings>,
    /// VIP announcement through BIRD, when the file has a `[bgp]` section.
    pub bgp: Option<BgpConfig>,
}

/// TLS settings of the metrics endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsTls {
    /// Identity directory that spike-bootstrap writes: `key.pem`, `cert.pem` and `ca.pem`.
    pub identity_dir: PathBuf,
    /// Whether clients must present a certificate signed by the identity's `ca.pem`.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// Kubernetes discovery settings: what to watch, and how each discovered VIP, protocol
/// and port becomes a service of the snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesSettings {
    /// spike-kube's part of the section: API server, namespace and service selector.
    pub discovery: KubernetesConfig,
    /// `discovery`'s validated selector.
    pub selection: Selection,
    /// Flow hash fields of every Kubernetes service; `5-tuple` unless set.
    pub hash: HashFields,
    /// Maglev table size of every Kubernetes service; spike-core's default unless set.
    pub table_size: u32,
    /// Next-hop MAC per node name. Nodes not listed use `node.gateway_mac`.
    pub next_hop_macs: BTreeMap<String, MacAddr>,
    /// Hash fields and table sizes of selected services, first match first.
    pub service_settings: Vec<ServiceSettings>,
}

/// Hash fields and table size of the Kubernetes services that one
/// `[[kubernetes.service_settings]]` entry selects: every criterion that is set must
/// match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSettings {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub protocol: Option<spike_core::config::Protocol>,
    pub port: Option<u16>,
    pub hash: HashFields,
    pub table_size: u32,
}

impl KubernetesSettings {
    /// Returns the hash fields and table size of a service in `namespace` named `name`
    /// with this protocol and port: those of the first matching
    /// `[[kubernetes.service_settings]]` entry, else `kubernetes.hash` and
    /// `kubernetes.table_size`.
    pub fn settings_for(
        &self,
        namespace: &str,
        name: &str,
        protocol: spike_core::config::Protocol,
        port: u16,
    ) -> (HashFields, u32) {
        self.service_settings
            .iter()
            .find(|entry| {
                entry
                    .namespace
                    .as_deref()
                    .is_none_or(|wanted| wanted == namespace)
                    && entry.name.as_deref().is_none_or(|wanted| wanted == name)
                    && entry.protocol.is_none_or(|wanted| wanted == protocol)
                    && entry.port.is_none_or(|wanted| wanted == port)
            })
            .map_or((self.hash, self.table_size), |entry| {
                (entry.hash, entry.table_size)
            })
    }
}

/// Health check settings of a service's backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Succeeds when a TCP connection is established.
    Tcp,
    /// Succeeds when `GET path` returns `expected_status`.
    Http { path: String, expected_status: u16 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    ring: PathBuf,
    /// Parsed by `parse_metrics_listen`, whose error quotes the text.
    metrics_listen: String,
    #[serde(default = "default_slot_size_mib")]
    ring_slot_size_mib: u64,
    metrics_tls: Option<MetricsTls>,
    #[serde(default)]
    resolve_next_hops: bool,
    #[serde(default = "default_initial_sync_timeout_s")]
    initial_sync_timeout_s: u64,
}

fn default_slot_size_mib() -> u64 {
    16
}

/// Leaves time for the first list of Services, EndpointSlices and Nodes and for a round
/// of health checks with the default 1 s timeout, and bounds how long a dead API server
/// holds back the first publication.
fn default_initial_sync_timeout_s() -> u64 {
    30
}

/// The control plane's keys of the file. Its fields are the top-level sections the file
/// accepts, so that an unknown one gets a message that lists them all. Keys inside the
/// dataplane's sections are left to spike-core, which rejects unknown ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    controlplane: Option<RawControl>,
    #[serde(rename = "node")]
    _node: Option<IgnoredAny>,
    #[serde(rename = "vxlan")]
    _vxlan: Option<IgnoredAny>,
    #[serde(rename = "hash")]
    _hash: Option<IgnoredAny>,
    #[serde(default)]
    service: Vec<RawService>,
    kubernetes: Option<RawKubernetes>,
    bgp: Option<bgp::RawBgp>,
}

#[derive(Deserialize)]
struct RawService {
    health_check: Option<RawHealthCheck>,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Deserialize)]
struct RawBackend {
    health_address: Option<IpAddr>,
}

/// `[kubernetes]`: spike-kube's `KubernetesConfig` plus the control plane's keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    api_server: ApiServerConfig,
    #[serde(default)]
    namespace: Option<String>,
    services: ServiceSelector,
    #[serde(default)]
    hash: HashFields,
    table_size: Option<i64>,
    #[serde(default)]
    next_hop_macs: BTreeMap<String, String>,
    #[serde(default)]
    service_settings: Vec<RawServiceSettings>,
}

/// One `[[kubernetes.service_settings]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceSettings {
    namespace: Option<String>,
    name: Option<String>,
    protocol: Option<String>,
    port: Option<u16>,
    hash: Option<HashFields>,
    table_size: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    kind: String,
    port: Option<u16>,
    path: Option<String>,
    expected_status: Option<u16>,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_rise")]
    rise: u32,
    #[serde(default = "default_fall")]
    fall: u32,
}

fn default_interval_ms() -> u64 {
    2000
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

/// The top-level tables of the control plane's file, and those it reports as the
/// dataplane's.
const SECTIONS: [&str; 11] = [
    "controlplane",
    "node",
    "vxlan",
    "hash",
    "service",
    "kubernetes",
    "bgp",
    "conntrack",
    "icmp",
    "dpdk",
    "cluster",
];

/// Lists the sections this file accepts, for a message about an unknown one.
fn expected_sections() -> String {
    let accepted = &SECTIONS[..SECTIONS.len() - DATAPLANE_SECTIONS.len()];
    let quoted: Vec<String> = accepted.iter().map(|name| format!("`{name}`")).collect();
    quoted.join(", ")
}

/// An example line for each key that the control plane's own sections require, by key
/// path without indexes, for the message about a missing one. spike-core has those of
/// the dataplane's sections.
const REQUIRED_KEYS: &[(&str, &str)] = &[
    ("controlplane.ring", "ring = \"/dev/shm/spike-ring\""),
    (
        "controlplane.metrics_listen",
        "metrics_listen = \"127.0.0.1:9300\"",
    ),
    (
        "controlplane.metrics_tls.identity_dir",
        "identity_dir = \"/var/lib/spike/identity\"",
    ),
    ("service.health_check.kind", "kind = \"tcp\""),
    ("bgp.asn", "asn = 65001"),
    ("bgp.router_id", "router_id = \"192.0.2.1\""),
    (
        "bgp.routes_file",
        "routes_file = \"/run/spike-controlplane/bird-routes.conf\"",
    ),
    ("bgp.neighbor.address", "address = \"192.0.2.254\""),
    ("bgp.neighbor.asn", "asn = 65000"),
];

/// The arrays of tables of the control plane's file: each entry gets its own
/// `[[NAME]]` header.
const TABLE_ARRAYS: [&str; 4] = [
    "service",
    "service.backend",
    "bgp.neighbor",
    "kubernetes.service_settings",
];

/// Sections of the dataplane's file that the dataplane never takes from a snapshot.
const DATAPLANE_SECTIONS: [&str; 4] = ["conntrack", "icmp", "dpdk", "cluster"];

impl ControlConfig {
    /// Reads and validates a config file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first invalid key.
    pub fn load(path: &Path) -> Result<ControlConfig, ConfigError> {
        let text = spike_core::config::read_file(path)?;
        ControlConfig::parse_text(&text).map_err(|error| error.place(&text, Some(path)))
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the line, column and key of the first invalid key.
    #[cfg(test)]
    pub fn parse(text: &str) -> Result<ControlConfig, ConfigError> {
        ControlConfig::parse_text(text).map_err(|error| error.place(text, None))
    }

    fn parse_text(text: &str) -> Result<ControlConfig, ConfigError> {
        if text
            .lines()
            .all(|line| line.trim().is_empty() || line.trim().starts_with('#'))
        {
            return Err(spike_core::config::ConfigError::Empty.into());
        }
        if let Some(error) = spike_core::config::single_bracket_array(text, &TABLE_ARRAYS) {
            return Err(error.into());
        }
        let mut root: toml::Table = toml::from_str(text)?;
        if !root.contains_key("controlplane") {
            let dataplane = DATAPLANE_SECTIONS
                .iter()
                .find(|section| root.contains_key(**section));
            if let Some(section) = dataplane {
                return Err(ConfigError::DataplaneFile((*section).to_owned()));
            }
        }
        for section in DATAPLANE_SECTIONS {
            if root.contains_key(section) {
                return Err(ConfigError::DataplaneSection(section.to_owned()));
            }
        }
        let document = ImDocument::parse(text)
            .map_err(|error| invalid("(config)", error, "a valid TOML document"))?;
        let raw: RawFile = toml::from_str(text).map_err(|error| locate(text, &document, &error))?;
        root.remove("controlplane");
        let control = raw
            .controlplane
            .ok_or_else(|| invalid("controlplane", "(missing)", "a [controlplane] section"))?;
        let (raw_checks, raw_addresses): HealthKeys = raw
            .service
            .into_iter()
            .map(|service| {
                let addresses = service
                    .backend
                    .into_iter()
                    .map(|backend| backend.health_address)
                    .collect();
                (service.health_check, addresses)
            })
            .unzip();
        let kubernetes = root
            .remove("kubernetes")
            .and(raw.kubernetes)
            .map(parse_kubernetes)
            .transpose()?;
        root.remove("bgp");
        let bgp = raw.bgp.map(bgp::validate).transpose()?;

        let base: Config = dataplane_text(text, &document, &root)?.parse()?;
        let health_checks = raw_checks
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.map(|raw| validate_check(index, raw, &base)).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        check_health_addresses(&raw_addresses, &base)?;
        let health_addresses = raw_addresses
            .into_iter()
            .zip(&base.services)
            .map(|(addresses, service)| {
                addresses
                    .into_iter()
                    .zip(&service.backends)
                    .map(|(address, backend)| address.unwrap_or(backend.address))
                    .collect()
            })
            .collect();
        let metrics_listen = parse_metrics_listen(&control.metrics_listen)?;

        if control.ring.as_os_str().is_empty() {
            return Err(invalid(
                "controlplane.ring",
                "\"\"",
                "an absolute path, such as /dev/shm/spike-ring: the path is empty, perhaps an \
                 unset template variable",
            ));
        }
        if !control.ring.is_absolute() {
            return Err(invalid(
                "controlplane.ring",
                control.ring.display(),
                "an absolute path, such as /dev/shm/spike-ring: the control plane creates \
                 the ring there, and the dataplane's dpdk.snapshot_ring names the same path",
            ));
        }
        check_ring_path(&control.ring)?;
        if !(1..=1024).contains(&control.ring_slot_size_mib) {
            return Err(invalid(
                "controlplane.ring_slot_size_mib",
                control.ring_slot_size_mib,
                "1 to 1024 MiB",
            ));
        }
        if !(1..=3600).contains(&control.initial_sync_timeout_s) {
            return Err(invalid(
                "controlplane.initial_sync_timeout_s",
                control.initial_sync_timeout_s,
                "1 to 3600 seconds",
            ));
        }
        if let Some(tls) = &control.metrics_tls {
            if tls.identity_dir.as_os_str().is_empty() {
                return Err(invalid(
                    "controlplane.metrics_tls.identity_dir",
                    "\"\"",
                    "the directory where spike-bootstrap writes key.pem, cert.pem and ca.pem",
                ));
            }
        }
        Ok(ControlConfig {
            ring: control.ring,
            metrics_listen,
            slot_size_bytes: control.ring_slot_size_mib << 20,
            metrics_tls: control.metrics_tls,
            resolve_next_hops: control.resolve_next_hops,
            initial_sync_timeout: Duration::from_secs(control.initial_sync_timeout_s),
            base,
            health_checks,
            health_addresses,
            kubernetes,
            bgp,
        })
    }
}

/// Parses `controlplane.metrics_listen`, an IP address and a port, with a note on the
/// usual mistakes: a host name, an IPv6 address without brackets, a missing port or one
/// out of range.
fn parse_metrics_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    const KEY: &str = "controlplane.metrics_listen";
    const FORM: &str = "IP:port with a port from 1 to 65535, such as \"127.0.0.1:9300\" or \
                        \"[::1]:9300\" (IPv6 in brackets, no host names)";
    let note = match text.parse::<SocketAddr>() {
        Ok(address) if address.port() == 0 => {
            "port 0 would make the kernel pick a port that no scraper knows".to_owned()
        }
        Ok(address) if address.ip().is_multicast() || is_broadcast(address.ip()) => {
            "a TCP socket cannot listen on a multicast or broadcast address: use an address \
             of this host, or 0.0.0.0 or [::] for every interface"
                .to_owned()
        }
        Ok(address) => return Ok(address),
        Err(_) => metrics_listen_note(text),
    };
    Err(invalid(
        KEY,
        format!("{text:?}"),
        &format!("{FORM}: {note}"),
    ))
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// Returns a note on what makes `text` invalid as a socket address.
fn metrics_listen_note(text: &str) -> String {
    if let Ok(IpAddr::V6(address)) = text.parse::<IpAddr>() {
        return format!(
            "this reads as the IPv6 address {address} with no port; write an IPv6 address \
             in brackets before the port"
        );
    }
    if text.parse::<IpAddr>().is_ok() {
        return "the address has no port".to_owned();
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return "no port: add one after a colon".to_owned();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<IpAddr>().is_err() {
        return format!("{host:?} is not an IP address, and host names are not resolved");
    }
    match port.parse::<u64>() {
        Ok(port) if port > 65535 => format!("port {port} is above 65535"),
        _ => format!("{port:?} is not a port number"),
    }
}

/// Rejects a ring path that the control plane cannot create its ring file at: a
/// directory, or a file in a directory that does not exist. The control plane creates
/// the file but not its directory.
fn check_ring_path(ring: &Path) -> Result<(), ConfigError> {
    const KEY: &str = "controlplane.ring";
    if ring.is_dir() {
        return Err(invalid(
            KEY,
            ring.display(),
            "the path of the ring file, not a directory: the control plane creates the file, \
             such as /dev/shm/spike-ring",
        ));
    }
    let parent = ring
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|parent| !parent.is_dir()) {
        return Err(invalid(
            KEY,
            ring.display(),
            &format!(
                "a path in an existing directory: {} is not one, so create the directory or \
                 choose another, such as /dev/shm",
                parent.display()
            ),
        ));
    }
    Ok(())
}

/// Validates the `[kubernetes]` section and splits it into spike-kube's
/// `KubernetesConfig` and the control plane's keys.
fn parse_kubernetes(raw: RawKubernetes) -> Result<KubernetesSettings, ConfigError> {
    // spike-kube rejects an empty namespace with its own message.
    if let Some(namespace) = raw.namespace.as_deref().filter(|name| !name.is_empty()) {
        check_object_name("kubernetes.namespace", namespace, NameKind::Namespace)?;
    }
    let table_size = match raw.table_size {
        Some(size) => table_size("kubernetes.table_size", size)?,
        None => maglev::DEFAULT_TABLE_SIZE,
    };
    let next_hop_macs = parse_next_hop_macs(raw.next_hop_macs)?;
    let service_settings = raw
        .service_settings
        .into_iter()
        .enumerate()
        .map(|(index, entry)| parse_service_settings(index, entry, raw.hash, table_size))
        .collect::<Result<Vec<_>, _>>()?;
    if let ApiServerConfig::Kubeconfig { path, context } = &raw.api_server {
        check_kubeconfig(path, context.as_deref())?;
    }
    for (index, &ip) in raw.services.load_balancer_ips.iter().enumerate() {
        if let Some(kind) = special_address(ip) {
            return Err(invalid(
                format!("kubernetes.services.load_balancer_ips[{index}]"),
                ip,
                &format!("a LoadBalancer IP that clients reach over the network, not {kind}"),
            ));
        }
    }
    let discovery = KubernetesConfig {
        api_server: raw.api_server,
        namespace: raw.namespace,
        services: raw.services,
    };
    let selection = discovery.selection()?;
    Ok(KubernetesSettings {
        discovery,
        selection,
        hash: raw.hash,
        table_size,
        next_hop_macs,
        service_settings,
    })
}

/// Checks that `kubernetes.api_server.path` names a kubeconfig file that parses and has
/// the context to use, with its cluster and server URL. A relative path is rejected
/// rather than resolved, as `controlplane.ring` is, so that the file read never depends
/// on the directory the control plane starts in.
fn check_kubeconfig(path: &Path, context: Option<&str>) -> Result<(), ConfigError> {
    const KEY: &str = "kubernetes.api_server.path";
    if !path.is_absolute() {
        return Err(invalid(
            KEY,
            path.display(),
            "an absolute path to the kubeconfig file, such as /etc/spike/kubeconfig",
        ));
    }
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) => {
            return Err(invalid(
                KEY,
                path.display(),
                "a kubeconfig file, not a directory",
            ))
        }
        Err(error) => {
            return Err(invalid(
                KEY,
                path.display(),
                &format!("an existing kubeconfig file ({error}): copy it there or fix the path"),
            ))
        }
    }
    spike_kube::check_kubeconfig(path, context).map_err(|error| {
        let error = match error {
            CheckKubeconfigError::Kubeconfig(error) => error,
            server @ CheckKubeconfigError::Server { .. } => {
                return invalid(
                    KEY,
                    path.display(),
                    &format!("a kubeconfig file that spike-controlplane can use: {server}"),
                )
            }
        };
        // A YAML parse error goes on to quote the offending line under its first line,
        // which already names the line and column.
        let failure = spike_kube::read_failure(&error);
        let reason = failure.lines().next().unwrap_or_default();
        match context {
            Some(context) if matches!(error, KubeconfigError::LoadContext(_)) => invalid(
                "kubernetes.api_server.context",
                format!("{context:?}"),
                &format!(
                    "a context that the kubeconfig file {} defines",
                    path.display()
                ),
            ),
            _ => invalid(
                KEY,
                path.display(),
                &format!("a kubeconfig file that spike-controlplane can use: {reason}"),
            ),
        }
    })
}

/// Names the kind of special-purpose address `ip` is, or returns `None` for an ordinary
/// unicast address.
fn special_address(ip: IpAddr) -> Option<&'static str> {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    if is_broadcast(ip) {
        Some("the limited broadcast address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if link_local {
        Some("a link-local address")
    } else {
        None
    }
}

/// Rejects a `health_address` that a check cannot reach a backend at. Loopback stays
/// valid: it checks a backend that runs on this host, as in tests.
fn check_health_addresses(
    addresses: &[Vec<Option<IpAddr>>],
    base: &Config,
) -> Result<(), ConfigError> {
    for ((index, service), addresses) in base.services.iter().enumerate().zip(addresses) {
        for (backend, address) in addresses.iter().enumerate() {
            let Some(address) = *address else {
                continue;
            };
            let kind = special_address(address).filter(|_| !address.is_loopback());
            if let Some(kind) = kind {
                return Err(invalid(
                    format!(
                        "service[{index}] ({}).backend[{backend}].health_address",
                        service.name
                    ),
                    address,
                    &format!("the unicast address the backend's checks connect to, not {kind}"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a Maglev table size given at `key`.
fn table_size(key: &str, size: i64) -> Result<u32, ConfigError> {
    u32::try_from(size)
        .ok()
        .filter(|&size| maglev::is_prime(size) && size <= maglev::MAX_TABLE_SIZE)
        .ok_or_else(|| {
            invalid(
                key,
                size,
                &format!(
                    "a prime number of Maglev slots up to {} (65537 is the default)",
                    maglev::MAX_TABLE_SIZE
                ),
            )
        })
}

/// Validates one `[[kubernetes.service_settings]]` entry; what it leaves out comes from
/// `kubernetes.hash` and `kubernetes.table_size`.
fn parse_service_settings(
    index: usize,
    raw: RawServiceSettings,
    default_hash: HashFields,
    default_table_size: u32,
) -> Result<ServiceSettings, ConfigError> {
    let key = format!("kubernetes.service_settings[{index}]");
    if raw.namespace.is_none() && raw.name.is_none() && raw.protocol.is_none() && raw.port.is_none()
    {
        return Err(invalid(
            &key,
            "an entry without namespace, name, protocol or port",
            "at least one of them: use kubernetes.hash and kubernetes.table_size for every \
             service",
        ));
    }
    let protocol = match raw.protocol.as_deref() {
        None => None,
        Some("tcp") => Some(spike_core::config::Protocol::Tcp),
        Some("udp") => Some(spike_core::config::Protocol::Udp),
        Some(other) => {
            return Err(invalid(
                format!("{key}.protocol"),
                format!("{other:?}"),
                "\"tcp\" or \"udp\"",
            ))
        }
    };
    if raw.port == Some(0) {
        return Err(invalid(
            format!("{key}.port"),
            0,
            "a Service port from 1 to 65535",
        ));
    }
    let table_size = match raw.table_size {
        Some(size) => table_size(&format!("{key}.table_size"), size)?,
        None => default_table_size,
    };
    if let Some(namespace) = &raw.namespace {
        check_object_name(&format!("{key}.namespace"), namespace, NameKind::Namespace)?;
    }
    if let Some(name) = &raw.name {
        check_object_name(&format!("{key}.name"), name, NameKind::Service)?;
    }
    Ok(ServiceSettings {
        namespace: raw.namespace,
        name: raw.name,
        protocol,
        port: raw.port,
        hash: raw.hash.unwrap_or(default_hash),
        table_size,
    })
}

/// The kinds of Kubernetes object names the file can hold.
#[derive(Clone, Copy, Debug)]
enum NameKind {
    /// A namespace name: an RFC 1123 label. It goes into the URLs of the API requests.
    Namespace,
    /// A Service name: an RFC 1035 label, which starts with a letter.
    Service,
}

/// Rejects a name that Kubernetes cannot give an object of `kind`, which would never
/// match, or would make every request to the API server fail.
fn check_object_name(key: &str, name: &str, kind: NameKind) -> Result<(), ConfigError> {
    let first_ok = |c: char| match kind {
        NameKind::Namespace => c.is_ascii_lowercase() || c.is_ascii_digit(),
        NameKind::Service => c.is_ascii_lowercase(),
    };
    let valid = name.len() <= 63
        && name.starts_with(first_ok)
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        return Ok(());
    }
    let expected = match kind {
        NameKind::Namespace => {
            "a Kubernetes namespace name: 1 to 63 lowercase letters, digits and '-', starting \
             and ending with a letter or digit"
        }
        NameKind::Service => {
            "a Kubernetes Service name: 1 to 63 lowercase letters, digits and '-', starting \
             with a letter and ending with a letter or digit"
        }
    };
    Err(invalid(key, format!("{name:?}"), expected))
}

/// Parses `kubernetes.next_hop_macs`, a table of node name to unicast MAC address.
fn parse_next_hop_macs(
    table: BTreeMap<String, String>,
) -> Result<BTreeMap<String, MacAddr>, ConfigError> {
    let mut macs = BTreeMap::new();
    for (node, text) in table {
        let key = format!("kubernetes.next_hop_macs.{node:?}");
        let mac = text
            .parse::<MacAddr>()
            .ok()
            .filter(|mac| *mac != MacAddr::default() && !mac.is_multicast())
            .ok_or_else(|| {
                invalid(
                    &key,
                    format!("{text:?}"),
                    "a unicast MAC address such as \"02:00:00:00:00:01\"",
                )
            })?;
        macs.insert(node, mac);
    }
    Ok(macs)
}

type HealthKeys = (Vec<Option<RawHealthCheck>>, Vec<Vec<Option<IpAddr>>>);

/// Turns a TOML error in the control plane's keys into one that names the line and key
/// path in the operator's file.
fn locate(text: &str, document: &ImDocument<&str>, error: &toml::de::Error) -> ConfigError {
    let Some(span) = error.span() else {
        return ConfigError::Syntax(error.clone());
    };
    let message = error.message().trim().replace('\n', " ");
    let mut found = None;
    let headers = header_starts(document);
    find_key(document.as_table(), "", span.start, &headers, &mut found);
    let Some(Found { path, table }) = found else {
        let (line, column) = locate::line_column(text, span.start);
        return ConfigError::Located {
            line,
            column,
            key: "(top level)".to_owned(),
            message,
        };
    };
    // serde reports an unknown key of an internally tagged table, such as
    // kubernetes.api_server, at the table: find the key itself.
    let unknown = error
        .message()
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    let unknown_key = table
        .zip(unknown)
        .and_then(|(table, name)| Some((name, table.key(name)?.span()?)));
    let (key, offset) = match unknown_key {
        Some((name, key_span)) => (format!("{path}.{name}"), key_span.start),
        None => (path, span.start),
    };
    let message = spike_core::config::explain_missing(&message, Some(&key), REQUIRED_KEYS);
    let message = explain_number(&message, text, span, &key);
    let (line, column) = locate::line_column(text, offset);
    ConfigError::Located {
        line,
        column,
        key,
        message,
    }
}

/// The valid ranges of the control plane's own numeric keys, by key path without indexes,
/// as their validation enforces them.
const NUMBER_RANGES: &[(&str, &str)] = &[
    ("controlplane.ring_slot_size_mib", "1 to 1024 MiB"),
    ("controlplane.initial_sync_timeout_s", "1 to 3600 seconds"),
    ("service.health_check.port", "a port from 1 to 65535"),
    (
        "service.health_check.expected_status",
        "an HTTP status code from 100 to 599",
    ),
    ("service.health_check.interval_ms", "10 to 3600000 ms"),
    ("service.health_check.timeout_ms", "1 ms up to interval_ms"),
    ("service.health_check.rise", "1 to 100 checks"),
    ("service.health_check.fall", "1 to 100 checks"),
    ("kubernetes.table_size", TABLE_SIZE_RANGE),
    ("kubernetes.service_settings.table_size", TABLE_SIZE_RANGE),
    (
        "kubernetes.service_settings.port",
        "a Service port from 1 to 65535",
    ),
    ("bgp.asn", ASN_RANGE),
    ("bgp.neighbor.asn", ASN_RANGE),
    ("bgp.hold_time_s", "3 to 65535 seconds"),
    ("bgp.drain_s", "0 to 3600 seconds"),
    ("bgp.dataplane_timeout_ms", "100 to 60000 ms"),
];

const TABLE_SIZE_RANGE: &str =
    "a prime number of Maglev slots up to 16777213 (65537 is the default)";
const ASN_RANGE: &str = "an AS number from 1 to 4294967294 other than 23456 (AS_TRANS)";

/// Rewrites a message about an integer beyond the range of the Rust type of `key` so that
/// it names the key's valid range. Such messages are serde's ``invalid value: integer
/// `-1`, expected u64``, and toml's `number too large to fit in target type` for a
/// literal beyond 64 bits, which names neither value nor range. Keys other than the
/// control plane's own get spike-core's range for the dataplane key of that name, if any.
fn explain_number(message: &str, text: &str, span: Range<usize>, key: &str) -> String {
    let (plain, _) = locate::plain_path(key);
    let Some(&(_, range)) = NUMBER_RANGES.iter().find(|(path, _)| *path == plain) else {
        return spike_core::config::explain_beyond_64_bits(message, text, span)
            .unwrap_or_else(|| message.to_owned());
    };
    if let Some(literal) = spike_core::config::beyond_64_bits(message, text, span) {
        return format!("invalid value: integer `{literal}`, expected {range}");
    }
    let types = ["u8", "u16", "u32", "u64", "i64"];
    match types
        .iter()
        .map(|name| format!("expected {name}"))
        .find(|rust| message.contains(rust.as_str()))
    {
        Some(rust) => message.replace(&rust, &format!("expected {range}")),
        None => message.to_owned(),
    }
}

/// The deepest key found at an offset, with its table when it is one.
struct Found<'a> {
    path: String,
    table: Option<&'a toml_edit::Table>,
}

/// Start offsets of every `[table]` and `[[array]]` header, in order.
fn header_starts(document: &ImDocument<&str>) -> Vec<usize> {
    fn walk(table: &toml_edit::Table, starts: &mut Vec<usize>) {
        for (_, item) in table.iter() {
            match item {
                Item::Table(table) => {
                    starts.extend(header_span(table).map(|span| span.start));
                    walk(table, starts);
                }
                Item::ArrayOfTables(array) => {
                    for table in array.iter() {
                        starts.extend(header_span(table).map(|span| span.start));
                        walk(table, starts);
                    }
                }
                _ => {}
            }
        }
    }
    let mut starts = Vec::new();
    walk(document.as_table(), &mut starts);
    starts.sort_unstable();
    starts
}

/// The header's span of a table written with a header of its own.
fn header_span(table: &toml_edit::Table) -> Option<Range<usize>> {
    if table.is_implicit() || table.is_dotted() {
        return None;
    }
    table.span()
}

/// Bytes from a table's header up to the next header: the table's own keys.
fn header_body(table: &toml_edit::Table, headers: &[usize], end: usize) -> Option<Range<usize>> {
    let start = header_span(table)?.start;
    let next = headers
        .iter()
        .copied()
        .find(|&header| header > start)
        .unwrap_or(end);
    Some(start..next)
}

/// Bytes of `key = value`.
fn key_value_span(key: &toml_edit::Key, item: &Item) -> Option<Range<usize>> {
    let value = item.span()?;
    Some(key.span().map_or(value.start, |key| key.start)..value.end)
}

/// Sets `found` to the deepest key whose table body or `key = value` contains
/// `offset`.
fn find_key<'a>(
    table: &'a toml_edit::Table,
    prefix: &str,
    offset: usize,
    headers: &[usize],
    found: &mut Option<Found<'a>>,
) {
    let contains = |range: Option<Range<usize>>| range.is_some_and(|r| r.contains(&offset));
    for (name, item) in table.iter() {
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        match item {
            Item::Table(child) => {
                if contains(header_body(child, headers, usize::MAX)) {
                    *found = Some(Found {
                        path: path.clone(),
                        table: Some(child),
                    });
                }
                find_key(child, &path, offset, headers, found);
            }
            Item::ArrayOfTables(array) => {
                for (index, child) in array.iter().enumerate() {
                    let path = match child.get("name").and_then(Item::as_str) {
                        Some(name) if path == "service" => {
                            spike_core::config::service_key(index, name)
                        }
                        _ => format!("{path}[{index}]"),
                    };
                    if contains(header_body(child, headers, usize::MAX)) {
                        *found = Some(Found {
                            path: path.clone(),
                            table: Some(child),
                        });
                    }
                    find_key(child, &path, offset, headers, found);
                }
            }
            Item::Value(value) => {
                let key = table.key(name).expect("iterated keys exist");
                if contains(key_value_span(key, item)) {
                    *found = Some(Found {
                        path: path.clone(),
                        table: None,
                    });
                    if let toml_edit::Value::InlineTable(inline) = value {
                        // The copy keeps the spans; only its path outlives this call.
                        let copy = inline.clone().into_table();
                        let mut inner = None;
                        find_key(&copy, &path, offset, headers, &mut inner);
                        if let Some(inner) = inner {
                            *found = Some(Found {
                                path: inner.path,
                                table: None,
                            });
                        }
                    }
                }
            }
            Item::None => {}
        }
    }
}

/// Returns `text` with the control plane's keys blanked out: the top-level sections
/// that are no longer in `kept`, and each service's `health_check` and each backend's
/// `health_address`. Whole lines become blank, so spike-core's line numbers are the
/// file's.
fn dataplane_text(
    text: &str,
    document: &ImDocument<&str>,
    kept: &toml::Table,
) -> Result<String, ConfigError> {
    let headers = header_starts(document);
    let mut ranges = Vec::new();
    for (name, item) in document.as_table().iter() {
        if !kept.contains_key(name) {
            let key = document.as_table().key(name).expect("iterated keys exist");
            item_ranges(key, item, &headers, text.len(), &mut ranges);
            continue;
        }
        if name != "service" {
            continue;
        }
        let Item::ArrayOfTables(services) = item else {
            return Err(invalid(
                "service",
                "an inline array",
                "[[service]] tables, one per service",
            ));
        };
        for service in services.iter() {
            if let Some((key, item)) = service.get_key_value("health_check") {
                item_ranges(key, item, &headers, text.len(), &mut ranges);
            }
            let Some(Item::ArrayOfTables(backends)) = service.get("backend") else {
                continue;
            };
            for backend in backends.iter() {
                if let Some((key, item)) = backend.get_key_value("health_address") {
                    item_ranges(key, item, &headers, text.len(), &mut ranges);
                }
            }
        }
    }

    let mut blanked = text.to_owned().into_bytes();
    for range in ranges {
        let start = text[..range.start]
            .rfind('\n')
            .map_or(0, |newline| newline + 1);
        // The line of the range's last byte ends the blanked lines; indentation before
        // the next header does not count.
        let mut last = range.end.saturating_sub(1).max(range.start);
        while last > range.start && matches!(text.as_bytes()[last], b' ' | b'\t') {
            last -= 1;
        }
        let end = text[last..]
            .find('\n')
            .map_or(text.len(), |newline| last + newline);
        for byte in &mut blanked[start..end] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    }
    // Only whole lines were replaced, and with ASCII spaces, so the text stays UTF-8.
    Ok(String::from_utf8(blanked).expect("blanked whole lines"))
}

/// Collects the byte ranges that `key` and its item span: each table header's body
/// and each `key = value`.
fn item_ranges(
    key: &toml_edit::Key,
    item: &Item,
    headers: &[usize],
    end: usize,
    ranges: &mut Vec<Range<usize>>,
) {
    let table_ranges = |table: &toml_edit::Table, ranges: &mut Vec<Range<usize>>| {
        ranges.extend(header_body(table, headers, end));
        for (name, item) in table.iter() {
            let key = table.key(name).expect("iterated keys exist");
            item_ranges(key, item, headers, end, ranges);
        }
    };
    match item {
        Item::Table(table) => table_ranges(table, ranges),
        Item::ArrayOfTables(array) => {
            for table in array.iter() {
                table_ranges(table, ranges);
            }
        }
        Item::Value(_) => ranges.extend(key_value_span(key, item)),
        Item::None => {}
    }
}

fn validate_check(
    index: usize,
    raw: RawHealthCheck,
    base: &Config,
) -> Result<HealthCheck, ConfigError> {
    let service = &base.services[index];
    let key = format!("service[{index}] ({}).health_check", service.name);
    let kind = match raw.kind.as_str() {
        "tcp" => {
            let http_keys = [
                ("path", raw.path.as_ref().map(|path| format!("{path:?}"))),
                (
                    "expected_status",
                    raw.expected_status.map(|s| s.to_string()),
                ),
            ];
            for (name, value) in http_keys {
                if let Some(value) = value {
                    return Err(invalid(
                        format!("{key}.{name}"),
                        value,
                        &format!(
                            "no {name} with kind = \"tcp\", which only connects: remove it, \
                             or set kind = \"http\" to send GET requests"
                        ),
                    ));
                }
            }
            CheckKind::Tcp
        }
        "http" => CheckKind::Http {
            path: raw.path.unwrap_or_else(|| "/".to_owned()),
            expected_status: raw.expected_status.unwrap_or(200),
        },
        other => {
            return Err(invalid(
                format!("{key}.kind"),
                format!("{other:?}"),
                "\"tcp\" or \"http\"",
            ))
        }
    };
    if let CheckKind::Http { path, .. } = &kind {
        if let Some(problem) = crate::health::request_target_problem(path) {
            return Err(invalid(
                format!("{key}.path"),
                format!("{path:?}"),
                &format!(
                    "an HTTP request-target in origin form, such as /healthz or \
                     /status?full=1, with any other byte percent-encoded: {problem}"
                ),
            ));
        }
    }
    if let CheckKind::Http {
        expected_status, ..
    } = &kind
    {
        if !(100..=599).contains(expected_status) {
            return Err(invalid(
                format!("{key}.expected_status"),
                expected_status,
                "an HTTP status code from 100 to 599",
            ));
        }
    }
    if raw.port == Some(0) {
        return Err(invalid(format!("{key}.port"), 0, "a port from 1 to 65535"));
    }
    // An hour bounds the interval: a longer one means a dead backend keeps its flows for
    // longer than any operator would wait for a health check.
    const MAX_INTERVAL_MS: u64 = 3_600_000;
    if !(10..=MAX_INTERVAL_MS).contains(&raw.interval_ms) {
        return Err(invalid(
            format!("{key}.interval_ms"),
            raw.interval_ms,
            "10 to 3600000 ms",
        ));
    }
    if raw.timeout_ms == 0 || raw.interval_ms < raw.timeout_ms {
        return Err(invalid(
            format!("{key}.timeout_ms"),
            raw.timeout_ms,
            &format!("1 ms up to interval_ms = {}", raw.interval_ms),
        ));
    }
    for (name, value) in [("rise", raw.rise), ("fall", raw.fall)] {
        if !(1..=100).contains(&value) {
            return Err(invalid(format!("{key}.{name}"), value, "1 to 100 checks"));
        }
    }
    Ok(HealthCheck {
        kind,
        port: raw.port.unwrap_or(service.port),
        interval: Duration::from_millis(raw.interval_ms),
        timeout: Duration::from_millis(raw.timeout_ms),
        rise: raw.rise,
        fall: raw.fall,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [controlplane]
        ring = "/dev/shm/spike-test"
        metrics_listen = "127.0.0.1:9300"

        [node]
        mac = "02:00:00:00:00:01"
        ipv4 = "192.0.2.1"
        gateway_mac = "02:00:00:00:00:fe"
        vtep_mac = "02:00:00:00:00:02"

        [hash]
        key = "000102030405060708090a0b0c0d0e0f"

        [[service]]
        name = "web"
        vip = "198.51.100.1"
        protocol = "tcp"
        port = 80

        [service.health_check]
        kind = "http"
        path = "/healthz"
        interval_ms = 500
        timeout_ms = 200

        [[service.backend]]
        address = "192.0.2.11"
        vtep_mac = "0a:58:0a:f4:00:0a"
        health_address = "127.0.0.1"

        [[service.backend]]
        address = "192.0.2.12"
        vtep_mac = "0a:58:0a:f4:00:0b"
    "#;

    #[test]
    fn example_parses() {
        let config = ControlConfig::parse(BASE).unwrap();
        assert_eq!(config.base.services.len(), 1);
        assert_eq!(config.initial_sync_timeout, Duration::from_secs(30));
        let check = config.health_checks[0].as_ref().unwrap();
        assert_eq!(check.port, 80);
        assert_eq!(check.rise, 2);
        assert_eq!(
            check.kind,
            CheckKind::Http {
                path: "/healthz".into(),
                expected_status: 200
            }
        );
        assert_eq!(
            config.health_addresses[0],
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "192.0.2.12".parse().unwrap()
            ]
        );
    }

    #[test]
    fn committed_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/controlplane.toml");
        ControlConfig::load(&path).unwrap();
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            (("kind = \"http\"", "kind = \"icmp\""), "health_check.kind"),
            (("timeout_ms = 200", "timeout_ms = 900"), "timeout_ms"),
            (("interval_ms = 500", "interval_ms = 500\nrise = 0"), "rise"),
            (("path = \"/healthz\"", "path = \"healthz\""), "path"),
            (("port = 80", "port = 0"), "port"),
            (
                (
                    "path = \"/healthz\"",
                    "path = \"/healthz\"\nexpected_status = 0",
                ),
                "health_check.expected_status",
            ),
            (
                ("interval_ms = 500", "interval_ms = 9223372036854775807"),
                "health_check.interval_ms",
            ),
            (
                (
                    "metrics_listen = \"127.0.0.1:9300\"",
                    "metrics_listen = \"127.0.0.1:9300\"\ninitial_sync_timeout_s = 0",
                ),
                "controlplane.initial_sync_timeout_s",
            ),
        ];
        for ((from, to), key) in cases {
            let text = BASE.replace(from, to);
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    const KUBERNETES: &str = r#"
        [kubernetes]
        namespace = "web"
        hash = "source-address"
        table_size = 251

        [kubernetes.api_server]
        mode = "url"
        url = "http://127.0.0.1:8001"

        [kubernetes.services]
        match_labels = { spike = "yes" }

        [kubernetes.next_hop_macs]
        "node-1" = "02:00:00:00:01:01"
    "#;

    #[test]
    fn kubernetes_section_parses() {
        let config = ControlConfig::parse(&format!("{BASE}{KUBERNETES}")).unwrap();
        let kubernetes = config.kubernetes.unwrap();
        assert_eq!(kubernetes.hash, HashFields::SourceAddress);
        assert_eq!(kubernetes.table_size, 251);
        assert_eq!(kubernetes.selection.namespace.as_deref(), Some("web"));
        assert_eq!(
            kubernetes.selection.label_selector().as_deref(),
            Some("spike=yes")
        );
        let mac: MacAddr = "02:00:00:00:01:01".parse().unwrap();
        assert_eq!(kubernetes.next_hop_macs.get("node-1"), Some(&mac));
    }

    #[test]
    fn kubernetes_defaults_apply() {
        let text = format!("{BASE}{KUBERNETES}")
            .replace("hash = \"source-address\"", "")
            .replace("table_size = 251", "");
        let kubernetes = ControlConfig::parse(&text).unwrap().kubernetes.unwrap();
        assert_eq!(kubernetes.hash, HashFields::FiveTuple);
        assert_eq!(kubernetes.table_size, maglev::DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn invalid_kubernetes_values_name_the_key() {
        let cases = [
            (
                ("table_size = 251", "table_size = 250"),
                "kubernetes.table_size",
            ),
            (
                ("hash = \"source-address\"", "hash = \"ports\""),
                "kubernetes.hash",
            ),
            (
                ("02:00:00:00:01:01", "01:00:5e:00:00:01"),
                "kubernetes.next_hop_macs",
            ),
            (
                ("match_labels = { spike = \"yes\" }", ""),
                "kubernetes.services",
            ),
            (
                ("namespace = \"web\"", "namespace = \"web\"\ncolour = 1"),
                "colour",
            ),
            (
                ("url = \"http://127.0.0.1:8001\"", "url = \"not a url\""),
                "invalid API server URL \"not a url\" in kubernetes.api_server.url",
            ),
        ];
        for ((from, to), key) in cases {
            let text = format!("{BASE}{KUBERNETES}").replace(from, to);
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    /// The 1-based line of `needle`'s first occurrence in `text`.
    fn line_of_text(text: &str, needle: &str) -> usize {
        let offset = text.find(needle).unwrap_or_else(|| panic!("no {needle:?}"));
        text[..offset].lines().count() + usize::from(text[..offset].ends_with('\n'))
    }

    #[test]
    fn errors_name_the_file_line_and_key_path() {
        let text = format!("{BASE}{KUBERNETES}");
        let cases = [
            (
                (
                    "health_address = \"127.0.0.1\"",
                    "health_address = \"localhost\"",
                ),
                "service[0] (web).backend[0].health_address",
            ),
            (
                (
                    "timeout_ms = 200",
                    "timeout_ms = 200\n        colour = \"red\"",
                ),
                "service[0] (web).health_check.colour",
            ),
            (
                (
                    "metrics_listen = \"127.0.0.1:9300\"",
                    "metrics_listen = \"localhost\"",
                ),
                "controlplane.metrics_listen",
            ),
            (
                (
                    "namespace = \"web\"",
                    "namespace = \"web\"\n        colour = 1",
                ),
                "kubernetes.colour",
            ),
            (
                ("mode = \"url\"", "mode = \"url\"\n        colour = 1"),
                "kubernetes.api_server.colour",
            ),
            (
                (
                    "match_labels = { spike = \"yes\" }",
                    "match_labels = { spike = 1 }",
                ),
                "kubernetes.services.match_labels",
            ),
            (
                ("table_size = 251", "table_size = \"big\""),
                "kubernetes.table_size",
            ),
        ];
        for ((from, to), path) in cases {
            let changed = text.replace(from, to);
            let last_line = to.lines().last().unwrap().trim();
            let line = line_of_text(&changed, last_line);
            let error = ControlConfig::parse(&changed).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("line {line}, column ")),
                "line {line}: {error}"
            );
            assert!(error.contains(&format!(": {path}")), "{path}: {error}");
        }
    }

    const BGP: &str = r#"
        [bgp]
        asn = 65001
        router_id = "192.0.2.1"
        routes_file = "/run/spike-controlplane/bird-routes.conf"

        [[bgp.neighbor]]
        address = "192.0.2.254"
        asn = 65000
    "#;

    #[test]
    fn bgp_errors_name_the_line_and_key_path() {
        let text = format!("{BASE}{BGP}");
        ControlConfig::parse(&text).expect("the [bgp] section is valid");
        let cases = [
            (
                ("address = \"192.0.2.254\"", "address = \"192.0.2.x\""),
                "bgp.neighbor[0].address",
            ),
            (
                ("router_id = \"192.0.2.1\"", "router_id = \"2001:db8::1\""),
                "bgp.router_id",
            ),
            (
                (
                    "asn = 65001",
                    "asn = 65001\n        graceful_restart = true",
                ),
                "bgp.graceful_restart",
            ),
            (("asn = 65000", "asn = -1"), "bgp.neighbor[0].asn"),
        ];
        for ((from, to), path) in cases {
            let changed = text.replace(from, to);
            assert_ne!(changed, text, "{path}: the case changed nothing");
            let last_line = to.lines().last().unwrap().trim();
            let line = line_of_text(&changed, last_line);
            let error = ControlConfig::parse(&changed).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("line {line}, column ")),
                "line {line}: {error}"
            );
            assert!(error.contains(&format!(": {path}")), "{path}: {error}");
        }
    }

    #[test]
    fn dataplane_errors_name_the_line_of_the_file() {
        // Both errors follow keys that only the control plane reads, so a line count of
        // a copy without them would differ.
        let cases = [
            ("port = 80", "port = \"eighty\""),
            (
                "vtep_mac = \"0a:58:0a:f4:00:0b\"",
                "vtep_mac = \"0a:58:0a:f4:00:0b\"\n        weight = \"heavy\"",
            ),
        ];
        for (from, to) in cases {
            let text = format!("{BASE}{KUBERNETES}").replace(from, to);
            let line = line_of_text(&text, to.lines().last().unwrap().trim());
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(
                error.contains(&format!("line {line},")),
                "line {line}: {error}"
            );
        }
    }

    #[test]
    fn service_settings_select_services() {
        let entries =
            "\n        [[kubernetes.service_settings]]\n        namespace = \"dns\"\n        \
                       protocol = \"udp\"\n        hash = \"source-address\"\n\n        \
                       [[kubernetes.service_settings]]\n        name = \"big\"\n        \
                       table_size = 65537\n";
        let text = format!("{BASE}{KUBERNETES}{entries}");
        let kubernetes = ControlConfig::parse(&text).unwrap().kubernetes.unwrap();
        let udp = spike_core::config::Protocol::Udp;
        let tcp = spike_core::config::Protocol::Tcp;

        // The first entry: its hash, and the section's table size it leaves out.
        assert_eq!(
            kubernetes.settings_for("dns", "resolver", udp, 53),
            (HashFields::SourceAddress, 251)
        );
        // The same namespace with TCP does not match the first entry, nor the second.
        assert_eq!(
            kubernetes.settings_for("dns", "resolver", tcp, 53),
            (HashFields::SourceAddress, 251)
        );
        assert_eq!(
            kubernetes.settings_for("web", "big", tcp, 80),
            (HashFields::SourceAddress, 65537)
        );
        let text = text.replace("hash = \"source-address\"\n        table_size = 251", "");
        let kubernetes = ControlConfig::parse(&text).unwrap().kubernetes.unwrap();
        assert_eq!(
            kubernetes.settings_for("dns", "resolver", tcp, 53),
            (HashFields::FiveTuple, maglev::DEFAULT_TABLE_SIZE)
        );
        assert_eq!(
            kubernetes.settings_for("dns", "resolver", udp, 53),
            (HashFields::SourceAddress, maglev::DEFAULT_TABLE_SIZE)
        );
        assert_eq!(
            kubernetes.settings_for("web", "big", tcp, 80),
            (HashFields::FiveTuple, 65537)
        );
    }

    #[test]
    fn invalid_service_settings_name_the_key() {
        let cases = [
            (
                "[[kubernetes.service_settings]]\nhash = \"3-tuple\"\n",
                "kubernetes.service_settings[0]",
            ),
            (
                "[[kubernetes.service_settings]]\nport = 53\nprotocol = \"sctp\"\n",
                "kubernetes.service_settings[0].protocol",
            ),
            (
                "[[kubernetes.service_settings]]\nport = 53\ntable_size = 100\n",
                "kubernetes.service_settings[0].table_size",
            ),
            (
                "[[kubernetes.service_settings]]\nport = 53\ncolour = 1\n",
                "kubernetes.service_settings[0].colour",
            ),
        ];
        for (entry, key) in cases {
            let text = format!("{BASE}{KUBERNETES}\n{entry}");
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn metrics_tls_is_off_by_default() {
        let config = ControlConfig::parse(BASE).unwrap();
        assert_eq!(config.metrics_tls, None);
    }

    #[test]
    fn metrics_tls_section_parses() {
        let section = "ring_slot_size_mib = 16\n\
                       [controlplane.metrics_tls]\n\
                       identity_dir = \"/var/lib/spike/identity\"\n\
                       require_client_cert = true\n";
        let text = BASE.replace("[node]", &format!("{section}\n[node]"));
        let tls = ControlConfig::parse(&text).unwrap().metrics_tls.unwrap();
        assert_eq!(tls.identity_dir, Path::new("/var/lib/spike/identity"));
        assert!(tls.require_client_cert);

        let text = text.replace("require_client_cert = true\n", "");
        let tls = ControlConfig::parse(&text).unwrap().metrics_tls.unwrap();
        assert!(!tls.require_client_cert);
    }

    #[test]
    fn invalid_metrics_tls_names_the_key() {
        let cases = [
            (
                "identity_dir = \"\"",
                "controlplane.metrics_tls.identity_dir",
            ),
            ("identity_dir = \"/x\"\nclient_ca = \"/y\"", "client_ca"),
            ("require_client_cert = true", "identity_dir"),
        ];
        for (section, key) in cases {
            let text = BASE.replace(
                "[node]",
                &format!("[controlplane.metrics_tls]\n{section}\n\n[node]"),
            );
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn dataplane_sections_are_rejected() {
        let cases = [
            ("dpdk", "[dpdk]\nport = \"net_null0\"\n"),
            (
                "cluster",
                "[cluster]\nredirect_vni = 4097\n\n[[cluster.node]]\n\
                 address = \"192.0.2.1\"\nmac = \"02:00:00:00:00:01\"\n",
            ),
        ];
        for (section, text) in cases {
            let error = ControlConfig::parse(&format!("{BASE}\n{text}"))
                .unwrap_err()
                .to_string();
            let expected = format!("[{section}] belongs in the dataplane's config file");
            assert!(error.contains(&expected), "{section}: {error}");
            assert!(error.contains("move it there"), "{section}: {error}");
        }
    }

    #[test]
    fn unusable_addresses_and_ports_are_rejected() {
        let kubernetes = format!("{BASE}{KUBERNETES}");
        let labels = "match_labels = { spike = \"yes\" }";
        let cases = [
            (
                kubernetes.replace(
                    labels,
                    &format!("{labels}\nload_balancer_ips = [\"198.51.100.7\", \"127.0.0.1\"]"),
                ),
                "kubernetes.services.load_balancer_ips[1]: invalid value 127.0.0.1: expected a \
                 LoadBalancer IP that clients reach over the network, not a loopback address",
            ),
            (
                BASE.replace(
                    "health_address = \"127.0.0.1\"",
                    "health_address = \"169.254.0.10\"",
                ),
                "service[0] (web).backend[0].health_address: invalid value 169.254.0.10: expected \
                 the unicast address the backend's checks connect to, not a link-local address",
            ),
            (
                BASE.replace("kind = \"http\"", "kind = \"tcp\""),
                "service[0] (web).health_check.path: invalid value \"/healthz\": expected no \
                 path with kind = \"tcp\"",
            ),
            (
                BASE.replace(
                    "health_address = \"127.0.0.1\"",
                    "health_address = \"255.255.255.255\"",
                ),
                "service[0] (web).backend[0].health_address: invalid value 255.255.255.255: \
                 expected the unicast address the backend's checks connect to, not the limited \
                 broadcast address",
            ),
            (
                kubernetes.replace(
                    labels,
                    &format!("{labels}\nload_balancer_ips = [\"255.255.255.255\"]"),
                ),
                "kubernetes.services.load_balancer_ips[0]: invalid value 255.255.255.255",
            ),
            (
                BASE.replace("127.0.0.1:9300", "224.0.0.1:9300"),
                "controlplane.metrics_listen: invalid value \"224.0.0.1:9300\": expected IP:port \
                 with a port from 1 to 65535",
            ),
            (
                BASE.replace("127.0.0.1:9300", "255.255.255.255:9300"),
                "a TCP socket cannot listen on a multicast or broadcast address",
            ),
            (
                BASE.replace("127.0.0.1:9300", "[ff02::1]:9300"),
                "controlplane.metrics_listen: invalid value \"[ff02::1]:9300\"",
            ),
            (
                BASE.replace("127.0.0.1:9300", "127.0.0.1:0"),
                "controlplane.metrics_listen: invalid value \"127.0.0.1:0\": expected IP:port \
                 with a port from 1 to 65535",
            ),
            (
                format!("{kubernetes}\n[[kubernetes.service_settings]]\nport = 0\n"),
                "kubernetes.service_settings[0].port: invalid value 0: expected a Service port",
            ),
        ];
        for (text, expected) in cases {
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        // 0.0.0.0 and :: listen on every interface.
        for every in ["0.0.0.0:9300", "[::]:9300"] {
            let text = BASE.replace("127.0.0.1:9300", every);
            let config = ControlConfig::parse(&text).unwrap_or_else(|error| panic!("{error}"));
            assert!(config.metrics_listen.ip().is_unspecified(), "{every}");
        }
    }

    #[test]
    fn numbers_beyond_their_type_name_the_range() {
        let cases = [
            (
                ("interval_ms = 500", "interval_ms = 99999999999999999999"),
                "service[0] (web).health_check.interval_ms: invalid value: integer \
                 `99999999999999999999`, expected 10 to 3600000 ms",
            ),
            (
                ("interval_ms = 500", "interval_ms = -1"),
                "service[0] (web).health_check.interval_ms: invalid value: integer `-1`, \
                 expected 10 to 3600000 ms",
            ),
            (
                ("timeout_ms = 200", "timeout_ms = 200\nrise = 4294967296"),
                "service[0] (web).health_check.rise: invalid value: integer `4294967296`, \
                 expected 1 to 100 checks",
            ),
            (
                (
                    "metrics_listen = \"127.0.0.1:9300\"",
                    "metrics_listen = \"127.0.0.1:9300\"\nring_slot_size_mib = -99999999999999999999",
                ),
                "controlplane.ring_slot_size_mib: invalid value: integer \
                 `-99999999999999999999`, expected 1 to 1024 MiB",
            ),
            (
                ("port = 80", "port = 80\ntable_size = 99999999999999999999"),
                "service[0] (web).table_size: invalid value: integer `99999999999999999999`, \
                 expected a prime integer number of Maglev slots",
            ),
        ];
        for ((from, to), expected) in cases {
            let text = BASE.replacen(from, to, 1);
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let kubernetes = format!("{BASE}{KUBERNETES}")
            .replace("table_size = 251", "table_size = 99999999999999999999");
        let error = ControlConfig::parse(&kubernetes).unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "kubernetes.table_size: invalid value: integer `99999999999999999999`, expected \
                 {TABLE_SIZE_RANGE}"
            )),
            "{error}"
        );
        assert!(
            TABLE_SIZE_RANGE.contains(&format!("up to {} ", maglev::MAX_TABLE_SIZE)),
            "{TABLE_SIZE_RANGE}"
        );
    }

    #[test]
    fn health_check_path_is_a_request_target() {
        // `path` is written into the TOML string as it is, escapes included.
        let with_path =
            |path: &str| BASE.replace("path = \"/healthz\"", &format!("path = \"{path}\""));
        for valid in [
            "/",
            "/healthz",
            "/status?full=1&x=%2F",
            "/a/b;c=d/~e@f:g",
            "/%C3%A9",
        ] {
            let config = ControlConfig::parse(&with_path(valid))
                .unwrap_or_else(|error| panic!("{valid}: {error}"));
            let check = config.health_checks[0].as_ref().unwrap();
            assert!(
                matches!(&check.kind, CheckKind::Http { path, .. } if path == valid),
                "{valid}"
            );
        }
        let cases = [
            (
                "/a\\r\\nHost: evil",
                "invalid value \"/a\\r\\nHost: evil\"",
                "the control character '\\r' at byte 2 must be percent-encoded, as %0D",
            ),
            (
                "/\u{e9}\\u0000",
                "invalid value \"/\u{e9}\\0\"",
                "the character '\u{e9}' at byte 1 must be percent-encoded, as %C3%A9",
            ),
            ("/a\\u007f", "\"/a\\u{7f}\"", "'\\u{7f}' at byte 2"),
            ("/a b", "\"/a b\"", "the character ' ' at byte 2"),
            ("/a#top", "\"/a#top\"", "the character '#' at byte 2"),
            (
                "/100%",
                "\"/100%\"",
                "'%' at byte 4 is not followed by two hexadecimal",
            ),
            ("healthz", "\"healthz\"", "it does not start with '/'"),
        ];
        for (path, value, problem) in cases {
            let error = ControlConfig::parse(&with_path(path))
                .unwrap_err()
                .to_string();
            assert!(!error.contains(['\r', '\n', '\0']), "one line: {error:?}");
            assert!(
                error.contains("service[0] (web).health_check.path: "),
                "{path:?}: {error}"
            );
            assert!(error.contains(value), "{value}: {error}");
            assert!(
                error.contains("expected an HTTP request-target in origin form"),
                "{error}"
            );
            assert!(error.contains(problem), "{problem}: {error}");
        }
    }

    #[test]
    fn free_text_values_are_escaped_or_checked() {
        let kubernetes = format!("{BASE}{KUBERNETES}");
        let cases = [
            (
                BASE.replace("kind = \"http\"", "kind = \"tc\\np\""),
                "service[0] (web).health_check.kind: invalid value \"tc\\np\"",
            ),
            (
                kubernetes.replace("namespace = \"web\"", "namespace = \"Web\\r\\n\""),
                "kubernetes.namespace: invalid value \"Web\\r\\n\": expected a Kubernetes \
                 namespace name",
            ),
            (
                format!("{kubernetes}\n[[kubernetes.service_settings]]\nnamespace = \"a_b\"\n"),
                "kubernetes.service_settings[0].namespace: invalid value \"a_b\"",
            ),
            (
                format!("{kubernetes}\n[[kubernetes.service_settings]]\nname = \"1web\"\n"),
                "kubernetes.service_settings[0].name: invalid value \"1web\": expected a \
                 Kubernetes Service name",
            ),
            (
                BASE.replace("/dev/shm/spike-test", "spike\\ntest"),
                "controlplane.ring: invalid value spike\\ntest: expected an absolute path",
            ),
        ];
        for (text, expected) in cases {
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(!error.contains(['\r', '\n']), "one line: {error:?}");
            assert!(error.contains(expected), "{expected}: {error}");
        }
        let names = format!(
            "{kubernetes}\n[[kubernetes.service_settings]]\nnamespace = \"kube-system\"\n\
             name = \"web-2\"\n"
        );
        ControlConfig::parse(&names).expect("valid Kubernetes names");
    }

    #[test]
    fn kubeconfig_path_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("kubeconfig");
        std::fs::write(
            &existing,
            "clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n\
             contexts:\n- name: c\n  context:\n    cluster: c\ncurrent-context: c\n",
        )
        .unwrap();
        let with_path = |path: &str| {
            let url = "mode = \"url\"\n        url = \"http://127.0.0.1:8001\"";
            let kubeconfig = format!("mode = \"kubeconfig\"\npath = {path:?}");
            format!("{BASE}{}", KUBERNETES.replace(url, &kubeconfig))
        };

        let error = ControlConfig::parse(&with_path("kubeconfig"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "kubernetes.api_server.path: invalid value kubeconfig: expected an absolute path"
            ),
            "{error}"
        );
        let missing = dir.path().join("missing");
        let error = ControlConfig::parse(&with_path(&missing.display().to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("expected an existing kubeconfig file"),
            "{error}"
        );
        let error = ControlConfig::parse(&with_path(&dir.path().display().to_string()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a directory"), "{error}");
        ControlConfig::parse(&with_path(&existing.display().to_string())).unwrap();

        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "garbage: [\n").unwrap();
        let error = ControlConfig::parse(&with_path(&garbage.display().to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!(
                "kubernetes.api_server.path: invalid value {}: expected a kubeconfig file that \
                 spike-controlplane can use: failed to parse kubeconfig YAML",
                garbage.display()
            )),
            "{error}"
        );
    }

    #[test]
    fn dataplane_file_is_recognised() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/spike.toml");
        let error = ControlConfig::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("this looks like a spike-dataplane config (it has [conntrack]"),
            "{error}"
        );
        assert!(error.contains("pass that file with --config"), "{error}");
        assert!(error.contains("spike.toml:"), "{error}");
    }

    #[test]
    fn unknown_section_lists_accepted_sections() {
        let text = format!("{BASE}\n[colour]\nred = 1\n");
        let error = ControlConfig::parse(&text).unwrap_err().to_string();
        assert!(error.contains("colour"), "{error}");
        let accepted = [
            "controlplane",
            "node",
            "vxlan",
            "hash",
            "service",
            "kubernetes",
            "bgp",
        ];
        for section in accepted {
            assert!(
                error.contains(&format!("`{section}`")),
                "{section}: {error}"
            );
        }
        for section in DATAPLANE_SECTIONS {
            assert!(
                !error.contains(&format!("`{section}`")),
                "{section}: {error}"
            );
        }
    }

    #[test]
    fn empty_ring_is_called_empty() {
        let text = BASE.replace("\"/dev/shm/spike-test\"", "\"\"");
        let error = ControlConfig::parse(&text).unwrap_err().to_string();
        let expected = "line 3, column 16: controlplane.ring: invalid value \"\": expected";
        assert!(error.starts_with(expected), "{error}");
        assert!(error.contains("the path is empty"), "{error}");
    }

    #[test]
    fn relative_ring_is_rejected() {
        let text = BASE.replace("/dev/shm/spike-test", "spike-ring");
        let error = ControlConfig::parse(&text).unwrap_err().to_string();
        assert!(
            error.contains("controlplane.ring: invalid value spike-ring"),
            "{error}"
        );
        assert!(error.contains("an absolute path"), "{error}");
    }

    #[test]
    fn single_bracket_arrays_are_named() {
        let bgp = format!("{BASE}{BGP}");
        let cases = [
            (BASE.replace("[[service]]", "[service]"), "service"),
            (
                BASE.replacen("[[service.backend]]", "[service.backend]", 1),
                "service.backend",
            ),
            (
                bgp.replace("[[bgp.neighbor]]", "[bgp.neighbor]"),
                "bgp.neighbor",
            ),
        ];
        for (text, name) in cases {
            let header = format!("[{name}]");
            let line = line_of_text(&text, &header);
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            let place = format!("line {line}, column 10: {name}: ");
            assert!(error.starts_with(&place), "{place}: {error}");
            let fix = format!("write [[{name}]] (two brackets)");
            assert!(error.contains(&fix), "{fix}: {error}");
        }
    }

    #[test]
    fn missing_keys_get_the_service_and_an_example_line() {
        let cases = [
            (
                "metrics_listen = \"127.0.0.1:9300\"",
                "[controlplane]",
                "controlplane: missing field `metrics_listen`: add a line such as \
                 metrics_listen = \"127.0.0.1:9300\" to the [controlplane] table",
            ),
            (
                "kind = \"http\"",
                "[service.health_check]",
                "service[0] (web).health_check: missing field `kind`: add a line such as \
                 kind = \"tcp\" to the [service.health_check] table",
            ),
        ];
        for (line, header, expected) in cases {
            let text = BASE.replacen(line, "", 1);
            let header_line = line_of_text(&text, header);
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            let place = format!("line {header_line}, column 9: ");
            assert!(error.starts_with(&place), "{place}: {error}");
            assert!(error.ends_with(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn unusable_ring_path_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let directory = dir.path().display().to_string();
        let orphan = dir.path().join("missing/spike-ring").display().to_string();
        let cases = [
            (
                directory.clone(),
                format!("controlplane.ring: invalid value {directory}: expected the path of"),
                "not a directory",
            ),
            (
                orphan.clone(),
                format!("controlplane.ring: invalid value {orphan}: expected a path in an"),
                "create the directory",
            ),
        ];
        for (ring, expected, fix) in cases {
            let text = BASE.replace("/dev/shm/spike-test", &ring);
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            assert!(error.contains(&expected), "{expected}: {error}");
            assert!(error.contains(fix), "{fix}: {error}");
            assert!(error.starts_with("line 3, column 16: "), "{error}");
        }
        let ring = dir.path().join("spike-ring").display().to_string();
        ControlConfig::parse(&BASE.replace("/dev/shm/spike-test", &ring)).unwrap();
    }

    #[test]
    fn bad_metrics_listen_is_quoted() {
        let cases = [
            ("127.0.0.1:99999", "port 99999 is above 65535"),
            ("localhost:9300", "host names are not resolved"),
            ("::1:9300", "write an IPv6 address in brackets"),
            ("127.0.0.1", "no port"),
        ];
        for (value, note) in cases {
            let text = BASE.replace("127.0.0.1:9300", value);
            let error = ControlConfig::parse(&text).unwrap_err().to_string();
            let expected = format!(
                "line 4, column 26: controlplane.metrics_listen: invalid value \"{value}\": \
                 expected IP:port"
            );
            assert!(error.starts_with(&expected), "{expected}: {error}");
            assert!(error.contains("\"[::1]:9300\""), "{value}: {error}");
            assert!(error.contains(note), "{note}: {error}");
        }
    }

    #[test]
    fn metrics_listen_host_name_rejected() {
        let text = BASE.replace("127.0.0.1:9300", "localhost:9300");
        let error = ControlConfig::parse(&text).unwrap_err().to_string();
        assert!(error.contains("controlplane.metrics_listen"), "{error}");
        assert!(error.contains("host names are not resolved"), "{error}");
    }

    #[test]
    fn empty_file_is_called_empty() {
        let error = ControlConfig::parse("\n# nothing\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("the file is empty"), "{error}");
    }

    #[test]
    fn oversized_file_is_rejected_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controlplane.toml");
        let padding = "#".repeat(spike_core::config::MAX_FILE_BYTES as usize);
        std::fs::write(&path, format!("{BASE}{padding}\n")).unwrap();
        let error = ControlConfig::load(&path).unwrap_err().to_string();
        let expected = format!("{}: the file is larger than 1048576 bytes", path.display());
        assert!(error.starts_with(&expected), "{error}");
    }

    #[test]
    fn load_errors_name_file_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controlplane.toml");
        let cases = [
            (
                "port = 80",
                "port = 0",
                "service[0] (web).port: invalid value 0",
            ),
            (
                "port = 80",
                "port = \"eighty\"",
                "service[0] (web).port: invalid type",
            ),
            (
                "timeout_ms = 200",
                "timeout_ms = 900",
                "timeout_ms: invalid value 900",
            ),
            (
                "ipv4 = \"192.0.2.1\"",
                "ipv4 = 192.0.2.1",
                "expected newline",
            ),
            (
                "kind = \"http\"",
                "kind = \"http\"\ncolour = 1",
                "unknown field `colour`",
            ),
        ];
        for (from, to, message) in cases {
            let text = BASE.replacen(from, to, 1);
            let line = line_of_text(&text, to.lines().last().unwrap().trim());
            std::fs::write(&path, &text).unwrap();
            let error = ControlConfig::load(&path).unwrap_err().to_string();
            let place = format!("{}:{line}:", path.display());
            assert!(error.starts_with(&place), "{place}: {error}");
            assert!(error.contains(message), "{message}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }
}
