//! The dataplane's TOML configuration: parsing and validation.
//!
//! Parsing happens in two steps. Serde reads the file into plain structs that reject
//! unknown keys, then validation checks every value that serde cannot (MAC
//! syntax, address families, port ranges, prime table sizes) and names the key, the
//! bad value and what is expected. A `Config` that exists is valid.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use thiserror::Error;

use crate::flow::HashFields;
use crate::maglev;
use crate::wire::MacAddr;

pub mod locate;
mod parsed;

use parsed::Parsed;

/// IANA protocol numbers of the transport protocols a service can balance.
const PROTOCOL_TCP: u8 = 6;
const PROTOCOL_UDP: u8 = 17;

/// Smallest egress MTU accepted: IPv6's minimum link MTU, which also leaves room for the
/// VXLAN overhead above IPv4's 576-byte minimum datagram.
const MIN_MTU: u16 = 1280;
const MAX_MTU: u16 = 9216;

/// Maximum size of a config file, in bytes. A config with thousands of services stays
/// far below it. The limit keeps a wrong `--config`, such as /dev/zero or a log file,
/// from filling the memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The flow hash key that `configs/` and `debian/config/` ship as an example. Those
/// files are public, so a node that keeps this key has a guessable flow placement.
pub const EXAMPLE_HASH_KEY: HashKey = HashKey([
    0x8f, 0x2d, 0x6c, 0x1e, 0x4b, 0x7a, 0x90, 0x35, 0x5c, 0xe1, 0xd2, 0xf3, 0xa4, 0xb5, 0xc6, 0xd7,
]);

/// A configuration error, naming the key, the value and what is expected.
///
/// Errors from [`Config::load`] start with the file, line and column, as in
/// `spike.toml:12:7: node.mtu: invalid value 600: expected an MTU from 1280 to 9216
/// bytes`, and are one line long.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: the file is larger than {limit} bytes, more than any Spike config needs: \
         check that --config names the config file"
    )]
    TooLarge { path: String, limit: u64 },
    #[error(
        "the file is empty (blank lines and comments only): start from a commented example \
         in configs/ of the source tree"
    )]
    Empty,
    /// A TOML syntax or type error, with the key it concerns when there is one.
    #[error("{0}")]
    Syntax(String),
    /// The value is printed with its control characters escaped, so that the message
    /// stays one line whatever the file holds.
    #[error("{key}: invalid value {}: expected {expected}", escape_controls(.value))]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    /// One of the other errors with the file and the place in it.
    #[error("{place}: {error}")]
    At {
        place: Place,
        error: Box<ConfigError>,
    },
}

/// Returns `text` with each control character (C0, DEL and C1) written as a Rust escape
/// such as `\r` or `\u{0}`. A value from the file then cannot split a log line or an
/// error message in two, or pass for a line of its own.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// The place of an error in a config file: `PATH:LINE:COLUMN`, or fewer parts when
/// some are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub path: Option<String>,
    /// 1-based line and column; the column counts characters.
    pub position: Option<(usize, usize)>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.position) {
            (Some(path), Some((line, column))) => write!(f, "{path}:{line}:{column}"),
            (Some(path), None) => f.write_str(path),
            (None, Some((line, column))) => write!(f, "line {line}, column {column}"),
            (None, None) => f.write_str("config"),
        }
    }
}

/// Rewrites serde's Rust type names in a TOML error into the ranges an operator
/// needs, for example `expected u16` into `expected an integer from 0 to 65535`. A key
/// whose valid range is narrower than its type gets that range instead, found from the
/// key on the line that `span` points at in `text`.
///
/// toml's own message for an integer literal beyond 64 bits, such as `number too large
/// to fit in target type`, names neither the value nor a range: it becomes serde's form
/// for a value beyond the key's type, as in ``invalid value: integer `99999999999999999999`,
/// expected a prime integer ...``.
fn explain_types(message: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    const RANGES: &[(&str, &str)] = &[
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected usize", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
    ];
    let narrower = span
        .clone()
        .and_then(|span| key_at(text, span.start))
        .and_then(|key| key_range(&key));
    if let Some(explained) = span.and_then(|span| explain_beyond_64_bits(message, text, span)) {
        return explained;
    }
    let mut explained = message.to_owned();
    for (rust, plain) in RANGES {
        match &narrower {
            Some(range) if explained.contains(rust) => {
                explained = explained.replace(rust, &format!("expected {range}"));
            }
            _ => explained = explained.replace(rust, plain),
        }
    }
    explained
}

/// Rewrites toml's message about an integer literal beyond 64 bits into serde's form for
/// a value beyond its type, with the valid range of the dataplane key assigned on the
/// line, as in ``invalid value: integer `99999999999999999999`, expected a prime integer
/// ...``. Returns `None` for other messages.
pub fn explain_beyond_64_bits(
    message: &str,
    text: &str,
    span: std::ops::Range<usize>,
) -> Option<String> {
    let literal = beyond_64_bits(message, text, span.clone())?;
    let range = key_at(text, span.start)
        .and_then(|key| key_range(&key))
        .unwrap_or_else(|| "an integer that fits in 64 bits".to_owned());
    Some(format!(
        "invalid value: integer `{literal}`, expected {range}"
    ))
}

/// Returns the integer literal at `span` in `text` when `message` is toml's report of an
/// integer too large or too small for 64 bits. toml reports it while it parses, before
/// serde reads the value, so the message names neither the value nor the key's type.
pub fn beyond_64_bits<'a>(
    message: &str,
    text: &'a str,
    span: std::ops::Range<usize>,
) -> Option<&'a str> {
    if !message.starts_with("number too large to fit in target type")
        && !message.starts_with("number too small to fit in target type")
    {
        return None;
    }
    // The span may cover only the literal's first character.
    let literal = text.get(span.start..)?.trim_start();
    let end = literal
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_')))
        .unwrap_or(literal.len());
    Some(&literal[..end]).filter(|literal| !literal.is_empty())
}

/// An example line for each key the dataplane's file requires, by key path without
/// indexes, for the message about a missing one.
const REQUIRED_KEYS: &[(&str, &str)] = &[
    ("node.mac", "mac = \"02:00:00:00:00:01\""),
    ("node.gateway_mac", "gateway_mac = \"02:00:00:00:00:fe\""),
    ("node.vtep_mac", "vtep_mac = \"02:00:00:00:00:02\""),
    (
        "hash.key",
        "key = \"<32 hexadecimal digits, the output of openssl rand -hex 16>\"",
    ),
    ("service.name", "name = \"web\""),
    ("service.vip", "vip = \"198.51.100.10\""),
    ("service.protocol", "protocol = \"tcp\""),
    ("service.port", "port = 80"),
    ("service.backend.address", "address = \"192.0.2.11\""),
    (
        "service.backend.vtep_mac",
        "vtep_mac = \"0a:58:0a:f4:00:0a\"",
    ),
    ("dpdk.port", "port = \"net_af_packet0\""),
    ("cluster.redirect_vni", "redirect_vni = 4097"),
    ("cluster.node.address", "address = \"192.0.2.2\""),
    ("cluster.node.mac", "mac = \"02:00:00:00:01:02\""),
];

/// Adds to serde's `missing field` message a line to add and the table it goes in, as in
/// ``missing field `key`: add a line such as key = "..." to the [hash] table``. `table`
/// is the key path of the table that lacks the field, `None` or empty at the top level,
/// and `examples` maps key paths without indexes to example lines. Other messages, and
/// fields without an example, are returned as they are.
pub fn explain_missing(message: &str, table: Option<&str>, examples: &[(&str, &str)]) -> String {
    let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    else {
        return message.to_owned();
    };
    let (table, in_array) = locate::plain_path(table.unwrap_or(""));
    let path = if table.is_empty() {
        field.to_owned()
    } else {
        format!("{table}.{field}")
    };
    let example = |path: &str| {
        examples
            .iter()
            .find(|(key, _)| *key == path)
            .map(|(_, line)| *line)
    };
    if let Some(line) = example(&path) {
        let header = if in_array {
            format!("this [[{table}]] table")
        } else if table.is_empty() {
            "the top of the file".to_owned()
        } else {
            format!("the [{table}] table")
        };
        return format!("{message}: add a line such as {line} to {header}");
    }
    // A missing table: show its first required key.
    let prefix = format!("{path}.");
    let first = examples.iter().find(|(key, _)| key.starts_with(&prefix));
    match first {
        Some((_, line)) => {
            format!("{message}: add a [{path}] table with a line such as {line}")
        }
        None => message.to_owned(),
    }
}

/// Returns the value assigned on the line containing byte `offset` when it looks like an
/// address or MAC without quotes, such as `198.51.100.10` or `02:00:00:00:00:01`, which
/// TOML cannot parse.
fn unquoted_address(text: &str, offset: usize) -> Option<&str> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (_, value) = line.split_once('=')?;
    let value = value.split('#').next()?.trim();
    let looks_like_address = (value.contains(':') || value.matches('.').count() == 3)
        && value
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/'));
    looks_like_address.then_some(value)
}

/// Returns the last dotted part of the key assigned on the line containing byte `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().rsplit('.').next()?.trim().trim_matches('"');
    Some(key.to_owned())
}

/// Returns the valid range of a numeric key of the dataplane's file, by the last part of
/// its path, as the validation below enforces it.
fn key_range(key: &str) -> Option<String> {
    const MAX_FLOWS: usize = crate::conntrack::MAX_CAPACITY;
    let range = match key {
        "mtu" => format!("an MTU from {MIN_MTU} to {MAX_MTU} bytes"),
        "port" => "a port from 1 to 65535".to_owned(),
        "source_port_range" => "[low, high] with 1 <= low <= high <= 65535".to_owned(),
        "workers" => "from 1 to 128 worker lcores".to_owned(),
        "ttl" => "a TTL from 1 to 255".to_owned(),
        "vni" | "redirect_vni" => VNI_RANGE.to_owned(),
        "table_size" => format!(
            "a prime integer number of Maglev slots up to {}, such as 65537",
            maglev::MAX_TABLE_SIZE
        ),
        "weight" => format!("a weight from 0 to {}", u32::MAX),
        "capacity" => format!("a number of flows per core from 1 to {MAX_FLOWS}"),
        "fragment_capacity" => format!("a number of datagrams per core from 1 to {MAX_FLOWS}"),
        "tcp_syn" | "tcp_established" | "tcp_closing" | "udp" | "other" | "fragment" => {
            TIMEOUT_RANGE.to_owned()
        }
        "too_big_per_second" => format!("a rate from 0 to {} replies per second", u32::MAX),
        "too_big_burst" => format!("a burst from 0 to {} replies", u32::MAX),
        "mbufs" => format!("a number of mbufs up to {}", u32::MAX),
        "rx_descriptors" | "tx_descriptors" => DESCRIPTOR_RANGE.to_owned(),
        "tx_retries" => format!("a number of retries from 0 to {}", u32::MAX),
        _ => return None,
    };
    Some(range)
}

const VNI_RANGE: &str = "a 24-bit VNI from 0 to 16777215";
const TIMEOUT_RANGE: &str =
    "a timeout in seconds from 0.001 (1 ms) to 86400; fractions such as 0.5 are allowed";
const DESCRIPTOR_RANGE: &str = "a power of two from 32 to 16384";

impl ConfigError {
    /// Names the file in the error, as in `PATH:LINE:COLUMN: key: message`.
    pub fn in_file(self, path: &Path) -> Self {
        let path = Some(path.display().to_string());
        match self {
            ConfigError::At { place, error } => ConfigError::At {
                place: Place { path, ..place },
                error,
            },
            ConfigError::Read { .. } | ConfigError::TooLarge { .. } => self,
            error => ConfigError::At {
                place: Place {
                    path,
                    position: None,
                },
                error: Box::new(error),
            },
        }
    }

    /// Adds the line and column of the key that an `Invalid` error names in `text`.
    pub fn locate(self, text: &str) -> Self {
        let position = match &self {
            ConfigError::Invalid { key, .. } => locate::position_of_key(text, key),
            _ => None,
        };
        match position {
            Some(position) => ConfigError::At {
                place: Place {
                    path: None,
                    position: Some(position),
                },
                error: Box::new(self),
            },
            None => self,
        }
    }

    /// Turns a TOML error into one line that names the line, column and key.
    fn from_toml(error: &toml::de::Error, text: &str) -> Self {
        let message = explain_types(&locate::one_line(error.message()), text, error.span());
        let Some(span) = error.span() else {
            return ConfigError::Syntax(explain_missing(&message, None, REQUIRED_KEYS));
        };
        let message = match unquoted_address(text, span.start) {
            Some(value) => {
                format!("{message}: write the address or MAC as a string in quotes, \"{value}\"")
            }
            None => message,
        };
        let key = locate::key_at(text, span.start);
        let message = explain_missing(&message, key.as_deref(), REQUIRED_KEYS);
        let syntax = match key {
            Some(key) => ConfigError::Syntax(format!("{key}: {message}")),
            None => ConfigError::Syntax(message),
        };
        ConfigError::At {
            place: Place {
                path: None,
                position: Some(locate::line_column(text, span.start)),
            },
            error: Box::new(syntax),
        }
    }

    fn invalid(key: impl Into<String>, value: impl fmt::Display, expected: &str) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.to_string(),
            expected: expected.to_owned(),
        }
    }
}

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTOCOL_TCP,
            Protocol::Udp => PROTOCOL_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub node: NodeConfig,
    pub vxlan: VxlanConfig,
    pub hash_key: HashKey,
    pub conntrack: ConntrackConfig,
    pub icmp: IcmpConfig,
    pub services: Vec<ServiceConfig>,
    /// Settings of the DPDK dataplane; tools that only run the core ignore them.
    pub dpdk: Option<DpdkConfig>,
    /// The Spike nodes that share fragments; `None` for a node that works alone.
    pub cluster: Option<ClusterConfig>,
}

/// The Spike nodes behind one ECMP route, so that every fragment of a datagram can be
/// sent to one designated node, which also receives the first fragment and its ports.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// VNI that marks a fragment one Spike node redirects to another. It travels on
    /// `vxlan.port` and differs from `vxlan.vni`, so flannel's nodes never take it.
    pub redirect_vni: u32,
    /// Every Spike node, this one included, in configured order. The designated node
    /// does not depend on the order.
    pub nodes: Vec<ClusterNode>,
    /// Position of this node in `nodes`: the entry whose address is `node.ipv4` or
    /// `node.ipv6`.
    pub self_index: usize,
}

/// One Spike node of a cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterNode {
    /// Its underlay address: the outer destination of redirected fragments.
    pub address: IpAddr,
    /// Outer Ethernet destination towards it: its port's MAC on a shared segment, or
    /// the next hop's.
    pub mac: MacAddr,
}

/// The flow hash key, shared by every Spike node. `Debug` does not print it, so that a
/// logged config cannot reveal how flows map to backends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKey(pub [u8; 16]);

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

/// DPDK dataplane settings: EAL arguments, ports and worker cores.
#[derive(Clone, Debug, PartialEq)]
pub struct DpdkConfig {
    /// Arguments for `rte_eal_init`, without the program name. spike-dataplane checks
    /// their lcore option against `workers` before EAL starts, but this crate does not.
    pub eal_args: Vec<String>,
    /// DPDK name of the port that receives VIP traffic and sends encapsulated frames.
    pub port: String,
    /// DPDK name of a kernel interface port (net_tap) for the exception path: frames the
    /// core hands to the kernel go there, and frames the kernel sends go out of `port`.
    /// Without it those frames are dropped after counting, which suits ports such as
    /// net_af_packet where the kernel already receives every frame.
    pub kernel_port: Option<String>,
    /// Worker lcores; each gets one receive and one transmit queue on each port.
    pub workers: u16,
    /// Mbufs in the packet pool.
    pub mbufs: u32,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Transmit attempts for a burst before the unsent frames are freed and counted.
    pub tx_retries: u32,
    /// Drop frames unicast to other MACs, and never forward broadcast or multicast
    /// frames. Turn it off only to replay captured traffic through a port (net_pcap).
    pub mac_filter: bool,
    /// Shared-memory snapshot ring to take services from instead of this file's
    /// `[[service]]` tables; `None` runs standalone.
    pub snapshot_ring: Option<std::path::PathBuf>,
}

/// This Spike node's underlay identity.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// MAC address of the underlay port: the outer Ethernet source.
    pub mac: MacAddr,
    /// Outer IPv4 source, required when any backend has an IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Outer IPv6 source, required when any backend has an IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Outer Ethernet destination unless a backend names its own next hop.
    pub gateway_mac: MacAddr,
    /// Inner Ethernet source: the MAC of Spike's VXLAN endpoint.
    pub vtep_mac: MacAddr,
    /// Largest outer IP packet the underlay carries, in bytes.
    pub mtu: u16,
}

/// VXLAN encapsulation settings; the defaults match flannel's VXLAN backend.
#[derive(Clone, Debug, PartialEq)]
pub struct VxlanConfig {
    pub vni: u32,
    pub port: u16,
    pub source_port_min: u16,
    pub source_port_max: u16,
    pub ttl: u8,
    /// Compute the outer UDP checksum over IPv4 (it is always computed over IPv6).
    pub ipv4_udp_checksum: bool,
}

/// Per-core table sizes and timeouts.
#[derive(Clone, Debug, PartialEq)]
pub struct ConntrackConfig {
    pub capacity: usize,
    pub fragment_capacity: usize,
    pub tcp_syn_timeout_ns: u64,
    pub tcp_established_timeout_ns: u64,
    pub tcp_closing_timeout_ns: u64,
    pub udp_timeout_ns: u64,
    pub other_timeout_ns: u64,
    pub fragment_timeout_ns: u64,
}

/// Limits on the ICMP errors the dataplane generates itself.
#[derive(Clone, Debug, PartialEq)]
pub struct IcmpConfig {
    pub too_big_per_second: u32,
    pub too_big_burst: u32,
}

/// A VIP, protocol and port, with its backends.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    pub vip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    pub hash: HashFields,
    pub table_size: u32,
    pub backends: Vec<BackendConfig>,
}

/// A backend node: flannel's public address and VtepMAC of a Kubernetes node.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendConfig {
    pub name: String,
    pub address: IpAddr,
    pub vtep_mac: MacAddr,
    pub weight: u32,
    pub next_hop_mac: Option<MacAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    vxlan: RawVxlan,
    hash: RawHash,
    #[serde(default)]
    conntrack: RawConntrack,
    #[serde(default)]
    icmp: RawIcmp,
    #[serde(default, rename = "service")]
    services: Vec<RawService>,
    dpdk: Option<RawDpdk>,
    cluster: Option<RawCluster>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    redirect_vni: u32,
    #[serde(default, rename = "node")]
    nodes: Vec<RawClusterNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterNode {
    address: Parsed<IpAddr>,
    mac: Parsed<MacAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDpdk {
    #[serde(default)]
    eal_args: Vec<String>,
    port: String,
    kernel_port: Option<String>,
    #[serde(default = "default_workers")]
    workers: u16,
    #[serde(default = "default_mbufs")]
    mbufs: u32,
    #[serde(default = "default_descriptors")]
    rx_descriptors: u16,
    #[serde(default = "default_descriptors")]
    tx_descriptors: u16,
    #[serde(default = "default_tx_retries")]
    tx_retries: u32,
    #[serde(default = "default_mac_filter")]
    mac_filter: bool,
    snapshot_ring: Option<std::path::PathBuf>,
}

fn default_mac_filter() -> bool {
    true
}

fn default_workers() -> u16 {
    1
}

fn default_mbufs() -> u32 {
    8191
}

fn default_descriptors() -> u16 {
    1024
}

fn default_tx_retries() -> u32 {
    4
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    mac: Parsed<MacAddr>,
    ipv4: Option<Parsed<Ipv4Addr>>,
    ipv6: Option<Parsed<Ipv6Addr>>,
    gateway_mac: Parsed<MacAddr>,
    vtep_mac: Parsed<MacAddr>,
    #[serde(default = "default_mtu")]
    mtu: u16,
}

fn default_mtu() -> u16 {
    1500
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawVxlan {
    vni: u32,
    port: u16,
    source_port_range: Vec<u16>,
    ttl: u8,
    ipv4_udp_checksum: bool,
}

impl Default for RawVxlan {
    fn default() -> Self {
        RawVxlan {
            vni: 1,
            port: 8472,
            source_port_range: vec![49152, 65535],
            ttl: 64,
            ipv4_udp_checksum: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHash {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConntrack {
    capacity: usize,
    fragment_capacity: usize,
    timeouts: RawTimeouts,
}

impl Default for RawConntrack {
    fn default() -> Self {
        RawConntrack {
            capacity: 1 << 20,
            fragment_capacity: 8192,
            timeouts: RawTimeouts::default(),
        }
    }
}

/// Timeouts in seconds, with defaults close to Linux IPVS's. A short SYN timeout limits
/// SYN floods. Established TCP lasts long because the balancer receives only the
/// client's half of a connection, which may be quiet for minutes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    tcp_syn: f64,
    tcp_established: f64,
    tcp_closing: f64,
    udp: f64,
    other: f64,
    fragment: f64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            tcp_syn: 30.0,
            tcp_established: 900.0,
            tcp_closing: 10.0,
            udp: 300.0,
            other: 60.0,
            fragment: 30.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIcmp {
    too_big_per_second: u32,
    too_big_burst: u32,
}

impl Default for RawIcmp {
    fn default() -> Self {
        RawIcmp {
            too_big_per_second: 100,
            too_big_burst: 50,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    vip: Parsed<IpAddr>,
    protocol: Protocol,
    port: u16,
    #[serde(default)]
    hash: HashFields,
    #[serde(default = "default_table_size")]
    table_size: u32,
    #[serde(default, rename = "backend")]
    backends: Vec<RawBackend>,
}

fn default_table_size() -> u32 {
    maglev::DEFAULT_TABLE_SIZE
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Option<String>,
    address: Parsed<IpAddr>,
    vtep_mac: Parsed<MacAddr>,
    #[serde(default = "default_weight")]
    weight: u32,
    next_hop_mac: Option<Parsed<MacAddr>>,
}

fn default_weight() -> u32 {
    1
}

impl FromStr for Config {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        if is_empty(text) {
            return Err(ConfigError::Empty);
        }
        if let Some(error) = single_bracket_array(text, &TABLE_ARRAYS) {
            return Err(error);
        }
        let raw: RawConfig = toml::from_str(text).map_err(|error| {
            unknown_section(text, &error).unwrap_or_else(|| ConfigError::from_toml(&error, text))
        })?;
        validate(raw).map_err(|error| error.locate(text))
    }
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] that starts with the file, line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_file(path)?;
        text.parse()
            .map_err(|error: ConfigError| error.in_file(path))
    }

    /// Returns what is valid but likely a mistake, one sentence each, for the log at
    /// start and for `--check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.hash_key == EXAMPLE_HASH_KEY {
            warnings.push(
                "hash.key is the example key shipped with Spike, which anybody can read: \
                 replace it on every Spike node with the output of `openssl rand -hex 16`"
                    .to_owned(),
            );
        }
        let ring = self
            .dpdk
            .as_ref()
            .and_then(|dpdk| dpdk.snapshot_ring.as_ref());
        if let (Some(ring), false) = (ring, self.services.is_empty()) {
            let tables = if self.services.len() == 1 {
                "table"
            } else {
                "tables"
            };
            warnings.push(format!(
                "the {} [[service]] {tables} of this file serve only until the first snapshot \
                 arrives through dpdk.snapshot_ring ({}): the control plane's snapshots then \
                 replace them and SIGHUP does not reload them, so keep the services in the \
                 control plane's file",
                self.services.len(),
                ring.display()
            ));
        }
        for (index, service) in self.services.iter().enumerate() {
            if service.backends.is_empty() {
                warnings.push(format!(
                    "{} has no [[service.backend]]: its VIP traffic is dropped until a \
                     backend is added",
                    service_key(index, &service.name)
                ));
            } else if service.backends.iter().all(|backend| backend.weight == 0) {
                warnings.push(format!(
                    "{} has only backends of weight 0: new flows to its VIP are dropped until \
                     a backend gets a weight above 0",
                    service_key(index, &service.name)
                ));
            }
        }
        warnings
    }

    /// Converts the conntrack timeouts to the form the table takes.
    pub fn timeouts(&self) -> crate::conntrack::Timeouts {
        crate::conntrack::Timeouts {
            tcp_syn_ns: self.conntrack.tcp_syn_timeout_ns,
            tcp_established_ns: self.conntrack.tcp_established_timeout_ns,
            tcp_closing_ns: self.conntrack.tcp_closing_timeout_ns,
            udp_ns: self.conntrack.udp_timeout_ns,
            other_ns: self.conntrack.other_timeout_ns,
        }
    }
}

/// Reads a config file of at most [`MAX_FILE_BYTES`]. The limit applies while reading,
/// so a FIFO or a device such as /dev/zero is bounded too.
///
/// # Errors
///
/// [`ConfigError::Read`] when the file cannot be read or is not UTF-8, and
/// [`ConfigError::TooLarge`] when it has more than [`MAX_FILE_BYTES`] bytes.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // Reading one byte past the limit distinguishes a file of exactly the limit from a
    // larger one. The size is checked before the UTF-8, because the cut may split a
    // character.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.display().to_string(),
            limit: MAX_FILE_BYTES,
        });
    }
    String::from_utf8(bytes)
        .map_err(|error| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, error)))
}

/// The top-level tables of the dataplane's file.
const SECTIONS: [&str; 8] = [
    "node",
    "vxlan",
    "hash",
    "conntrack",
    "icmp",
    "service",
    "dpdk",
    "cluster",
];

/// The arrays of tables of the dataplane's file: each entry gets its own `[[NAME]]`
/// header.
pub const TABLE_ARRAYS: [&str; 3] = ["service", "service.backend", "cluster.node"];

/// Reports the first header that writes one of `arrays` with single brackets, such as
/// `[service]`. TOML reads that as one table, so serde then reports a map where it
/// expects a list, or TOML stops at a second such header as a duplicate key. Neither
/// message names the fix.
pub fn single_bracket_array(text: &str, arrays: &[&str]) -> Option<ConfigError> {
    let (name, position) = locate::single_bracket_header(text, arrays)?;
    let entry = name.rsplit('.').next().unwrap_or(&name).to_owned();
    Some(ConfigError::At {
        place: Place {
            path: None,
            position: Some(position),
        },
        error: Box::new(ConfigError::Syntax(format!(
            "{name}: [{name}] is a single table, but each {entry} is an entry of a list: \
             write [[{name}]] (two brackets) before each {entry}"
        ))),
    })
}

/// Reports a table header with an unknown first name, such as `[[services]]`, in text
/// that TOML rejected. Such a typo often makes the parser stop later, at a header that
/// then looks like a duplicate (`[[service]]` after `[[services]]` and
/// `[[service.backend]]`), so the header itself is the better place to report.
fn unknown_section(text: &str, error: &toml::de::Error) -> Option<ConfigError> {
    // Valid TOML gets serde's own unknown-field error, which already names the key.
    if toml_edit::ImDocument::parse(text).is_ok() {
        return None;
    }
    let (name, position) = locate::unknown_table(text, &SECTIONS)?;
    let expected: Vec<String> = SECTIONS.iter().map(|name| format!("`{name}`")).collect();
    let (line, column) = error
        .span()
        .map_or((0, 0), |span| locate::line_column(text, span.start));
    Some(ConfigError::At {
        place: Place {
            path: None,
            position: Some(position),
        },
        error: Box::new(ConfigError::Syntax(format!(
            "{name}: unknown section `{name}`, expected one of {} (TOML then stopped at line \
             {line}, column {column}: {})",
            expected.join(", "),
            locate::one_line(error.message())
        ))),
    })
}

/// Returns whether `text` has nothing but blank lines and comments.
fn is_empty(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#'))
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let node = validate_node(raw.node)?;
    let vxlan = validate_vxlan(raw.vxlan)?;
    let hash_key = parse_hash_key(&raw.hash.key)?;
    let conntrack = validate_conntrack(raw.conntrack)?;
    let icmp = validate_icmp(raw.icmp)?;

    let mut services = Vec::with_capacity(raw.services.len());
    let mut seen = HashSet::new();
    for (index, raw_service) in raw.services.into_iter().enumerate() {
        let service = validate_service(index, raw_service, &node)?;
        if services
            .iter()
            .any(|other: &ServiceConfig| other.name == service.name)
        {
            return Err(ConfigError::invalid(
                format!("{}.name", service_key(index, &service.name)),
                &service.name,
                "a name no other service has",
            ));
        }
        let key = (service.vip, service.protocol, service.port);
        if !seen.insert(key) {
            return Err(ConfigError::invalid(
                service_key(index, &service.name),
                format!("{} {}:{}", service.protocol, service.vip, service.port),
                "each VIP, protocol and port to appear in one service only",
            ));
        }
        services.push(service);
    }

    check_vips_against_backends(&services)?;

    let dpdk = raw.dpdk.map(validate_dpdk).transpose()?;
    let cluster = raw
        .cluster
        .map(|cluster| validate_cluster(cluster, &node, &vxlan))
        .transpose()?;

    Ok(Config {
        node,
        vxlan,
        hash_key,
        conntrack,
        icmp,
        services,
        dpdk,
        cluster,
    })
}

fn validate_cluster(
    raw: RawCluster,
    node: &NodeConfig,
    vxlan: &VxlanConfig,
) -> Result<ClusterConfig, ConfigError> {
    if raw.redirect_vni >= 1 << 24 {
        return Err(ConfigError::invalid(
            "cluster.redirect_vni",
            raw.redirect_vni,
            VNI_RANGE,
        ));
    }
    if raw.redirect_vni == vxlan.vni {
        return Err(ConfigError::invalid(
            "cluster.redirect_vni",
            raw.redirect_vni,
            &format!(
                "a VNI other than vxlan.vni = {}, so that redirected fragments are told \
                 apart from flannel's traffic",
                vxlan.vni
            ),
        ));
    }
    if raw.nodes.is_empty() {
        return Err(ConfigError::invalid(
            "cluster.node",
            "none",
            "one [[cluster.node]] per Spike node, this one included",
        ));
    }

    let own = |address: IpAddr| match address {
        IpAddr::V4(v4) => node.ipv4 == Some(v4),
        IpAddr::V6(v6) => node.ipv6 == Some(v6),
    };
    let mut nodes: Vec<ClusterNode> = Vec::with_capacity(raw.nodes.len());
    let mut self_index = None;
    for (index, raw_node) in raw.nodes.into_iter().enumerate() {
        let key = format!("cluster.node[{index}]");
        let Parsed(address) = raw_node.address;
        let family_ok = match address {
            IpAddr::V4(_) => node.ipv4.is_some(),
            IpAddr::V6(_) => node.ipv6.is_some(),
        };
        if !family_ok {
            return Err(ConfigError::invalid(
                format!("{key}.address"),
                address,
                "an address of a family this node has an underlay address for (set \
                 node.ipv4 or node.ipv6)",
            ));
        }
        if let Some(kind) = not_unicast(address) {
            return Err(ConfigError::invalid(
                format!("{key}.address"),
                address,
                &format!("the Spike node's unicast underlay address, not {kind}"),
            ));
        }
        if nodes.iter().any(|other| other.address == address) {
            return Err(ConfigError::invalid(
                format!("{key}.address"),
                address,
                "each Spike node's address to appear once in the cluster",
            ));
        }
        if own(address) {
            if self_index.is_some() {
                return Err(ConfigError::invalid(
                    format!("{key}.address"),
                    address,
                    "one entry for this node: node.ipv4 and node.ipv6 name the same node",
                ));
            }
            self_index = Some(index);
        }
        let mac = unicast_mac(&format!("{key}.mac"), raw_node.mac)?;
        // This node's own entry is never a destination, so its MAC may be node.mac.
        if self_index != Some(index) {
            not_own_mac(&format!("{key}.mac"), mac, node.mac)?;
        }
        nodes.push(ClusterNode { address, mac });
    }
    let Some(self_index) = self_index else {
        let addresses: Vec<String> = [node.ipv4.map(IpAddr::V4), node.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .map(|address| address.to_string())
            .collect();
        return Err(ConfigError::invalid(
            "cluster.node",
            format!("no entry for this node ({})", addresses.join(" or ")),
            "an entry whose address is node.ipv4 or node.ipv6: every node lists itself",
        ));
    };
    Ok(ClusterConfig {
        redirect_vni: raw.redirect_vni,
        nodes,
        self_index,
    })
}

fn validate_dpdk(raw: RawDpdk) -> Result<DpdkConfig, ConfigError> {
    if raw.port.is_empty() {
        return Err(ConfigError::invalid(
            "dpdk.port",
            "\"\"",
            "the DPDK name of a port, such as net_af_packet0 or 0000:01:00.0",
        ));
    }
    if raw.kernel_port.as_deref() == Some(raw.port.as_str()) {
        return Err(ConfigError::invalid(
            "dpdk.kernel_port",
            format!("{:?}", raw.port),
            "a port other than dpdk.port",
        ));
    }
    if !(1..=128).contains(&raw.workers) {
        return Err(ConfigError::invalid(
            "dpdk.workers",
            raw.workers,
            "from 1 to 128 worker lcores",
        ));
    }
    // Every queue's descriptors plus one burst per worker must fit in the pool.
    let ports = if raw.kernel_port.is_some() { 2 } else { 1 };
    let needed = u32::from(raw.workers)
        * ports
        * (u32::from(raw.rx_descriptors) + u32::from(raw.tx_descriptors) + 64);
    if raw.mbufs < needed {
        return Err(ConfigError::invalid(
            "dpdk.mbufs",
            raw.mbufs,
            &format!(
                "at least {needed} mbufs for {} workers with {} rx and {} tx descriptors",
                raw.workers, raw.rx_descriptors, raw.tx_descriptors
            ),
        ));
    }
    for (key, value) in [
        ("dpdk.rx_descriptors", raw.rx_descriptors),
        ("dpdk.tx_descriptors", raw.tx_descriptors),
    ] {
        if !(32..=16384).contains(&value) || !value.is_power_of_two() {
            return Err(ConfigError::invalid(key, value, DESCRIPTOR_RANGE));
        }
    }
    if let Some(path) = &raw.snapshot_ring {
        // Leaving the key out already means no ring, so an empty string is more likely
        // an unset template variable.
        if path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "dpdk.snapshot_ring",
                "\"\"",
                "the absolute path of the control plane's controlplane.ring, such as \
                 /dev/shm/spike-ring; to run without a control plane, remove the key",
            ));
        }
        if !path.is_absolute() {
            return Err(ConfigError::invalid(
                "dpdk.snapshot_ring",
                path.display(),
                "an absolute path, the same as controlplane.ring in the control plane's \
                 file, such as /dev/shm/spike-ring",
            ));
        }
    }
    Ok(DpdkConfig {
        eal_args: raw.eal_args,
        port: raw.port,
        kernel_port: raw.kernel_port,
        workers: raw.workers,
        mbufs: raw.mbufs,
        rx_descriptors: raw.rx_descriptors,
        tx_descriptors: raw.tx_descriptors,
        tx_retries: raw.tx_retries,
        mac_filter: raw.mac_filter,
        snapshot_ring: raw.snapshot_ring,
    })
}

fn unicast_mac(key: &str, mac: Parsed<MacAddr>) -> Result<MacAddr, ConfigError> {
    let Parsed(mac) = mac;
    if mac.is_multicast() || mac.0 == [0; 6] {
        return Err(ConfigError::invalid(
            key,
            mac,
            "a unicast MAC address (the low bit of the first byte clear, not all zero)",
        ));
    }
    Ok(mac)
}

fn validate_node(raw: RawNode) -> Result<NodeConfig, ConfigError> {
    if !(MIN_MTU..=MAX_MTU).contains(&raw.mtu) {
        return Err(ConfigError::invalid(
            "node.mtu",
            raw.mtu,
            &format!("an MTU from {MIN_MTU} to {MAX_MTU} bytes"),
        ));
    }
    if raw.ipv4.is_none() && raw.ipv6.is_none() {
        return Err(ConfigError::invalid(
            "node",
            "no underlay address",
            "node.ipv4 or node.ipv6 (or both) as the outer source address",
        ));
    }
    let ipv4 = raw.ipv4.map(|Parsed(ipv4)| ipv4);
    let ipv6 = raw.ipv6.map(|Parsed(ipv6)| ipv6);
    let addresses = [
        ("node.ipv4", ipv4.map(IpAddr::V4)),
        ("node.ipv6", ipv6.map(IpAddr::V6)),
    ];
    for (key, address) in addresses {
        let Some(address) = address else { continue };
        if let Some(kind) = not_unicast(address) {
            return Err(ConfigError::invalid(
                key,
                address,
                &format!(
                    "this node's unicast underlay address, the source of its VXLAN packets, \
                     not {kind}"
                ),
            ));
        }
    }
    let mac = unicast_mac("node.mac", raw.mac)?;
    let gateway_mac = unicast_mac("node.gateway_mac", raw.gateway_mac)?;
    not_own_mac("node.gateway_mac", gateway_mac, mac)?;
    Ok(NodeConfig {
        mac,
        ipv4,
        ipv6,
        gateway_mac,
        vtep_mac: unicast_mac("node.vtep_mac", raw.vtep_mac)?,
        mtu: raw.mtu,
    })
}

/// Rejects an outer Ethernet destination equal to `node.mac`: the port would send the
/// frames to itself, so they would never reach the next hop.
fn not_own_mac(key: &str, destination: MacAddr, own: MacAddr) -> Result<(), ConfigError> {
    if destination != own {
        return Ok(());
    }
    Err(ConfigError::invalid(
        key,
        destination,
        "the MAC of the next hop, not node.mac: frames this node addresses to its own MAC \
         never reach another host",
    ))
}

fn validate_vxlan(raw: RawVxlan) -> Result<VxlanConfig, ConfigError> {
    if raw.vni >= 1 << 24 {
        return Err(ConfigError::invalid("vxlan.vni", raw.vni, VNI_RANGE));
    }
    if raw.port == 0 {
        return Err(ConfigError::invalid(
            "vxlan.port",
            0,
            "a UDP port from 1 to 65535",
        ));
    }
    let (min, max) = match raw.source_port_range[..] {
        [min, max] => (min, max),
        _ => {
            return Err(ConfigError::invalid(
                "vxlan.source_port_range",
                format!("{:?}", raw.source_port_range),
                "exactly two ports, [low, high]",
            ))
        }
    };
    if min == 0 || min > max {
        return Err(ConfigError::invalid(
            "vxlan.source_port_range",
            format!("[{min}, {max}]"),
            "[low, high] with 1 <= low <= high <= 65535",
        ));
    }
    if raw.ttl == 0 {
        return Err(ConfigError::invalid("vxlan.ttl", 0, "a TTL from 1 to 255"));
    }
    Ok(VxlanConfig {
        vni: raw.vni,
        port: raw.port,
        source_port_min: min,
        source_port_max: max,
        ttl: raw.ttl,
        ipv4_udp_checksum: raw.ipv4_udp_checksum,
    })
}

fn parse_hash_key(text: &str) -> Result<HashKey, ConfigError> {
    const EXPECTED: &str = "32 hexadecimal digits (128 bits), the same on every Spike node";
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(ConfigError::invalid("hash.key", "<redacted>", EXPECTED));
    }
    let mut key = [0u8; 16];
    for (index, byte) in key.iter_mut().enumerate() {
        let digits = &text[index * 2..index * 2 + 2];
        *byte = u8::from_str_radix(digits, 16)
            .map_err(|_| ConfigError::invalid("hash.key", "<redacted>", EXPECTED))?;
    }
    if key == [0; 16] {
        return Err(ConfigError::invalid(
            "hash.key",
            "0 (all zero)",
            "a random key, such as the output of `openssl rand -hex 16`: an all-zero key \
             is the first one anybody guesses",
        ));
    }
    Ok(HashKey(key))
}

fn seconds_to_ns(key: &str, seconds: f64) -> Result<u64, ConfigError> {
    // Below one millisecond nearly every flow would expire before its next packet, so
    // such a value is a typo, such as 1e-3 for 1e3, rather than a setting.
    const MIN_SECONDS: f64 = 0.001;
    // One day bounds every timeout: longer ones only keep dead flows in a full table.
    const MAX_SECONDS: f64 = 86_400.0;
    if !seconds.is_finite() || !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        // Debug writes 1e-300 as such, where Display writes 300 zeros.
        return Err(ConfigError::invalid(
            key,
            format!("{seconds:?}"),
            TIMEOUT_RANGE,
        ));
    }
    Ok((seconds * 1e9) as u64)
}

fn validate_conntrack(raw: RawConntrack) -> Result<ConntrackConfig, ConfigError> {
    // The conntrack table's own limit: 2^24 flows, about 2.7 GiB per core.
    const MAX_FLOWS: usize = crate::conntrack::MAX_CAPACITY;
    if raw.capacity == 0 || raw.capacity > MAX_FLOWS {
        return Err(ConfigError::invalid(
            "conntrack.capacity",
            raw.capacity,
            &format!("a number of flows per core from 1 to {MAX_FLOWS}"),
        ));
    }
    if raw.fragment_capacity == 0 || raw.fragment_capacity > MAX_FLOWS {
        return Err(ConfigError::invalid(
            "conntrack.fragment_capacity",
            raw.fragment_capacity,
            &format!("a number of datagrams per core from 1 to {MAX_FLOWS}"),
        ));
    }
    let t = &raw.timeouts;
    Ok(ConntrackConfig {
        capacity: raw.capacity,
        fragment_capacity: raw.fragment_capacity,
        tcp_syn_timeout_ns: seconds_to_ns("conntrack.timeouts.tcp_syn", t.tcp_syn)?,
        tcp_established_timeout_ns: seconds_to_ns(
            "conntrack.timeouts.tcp_established",
            t.tcp_established,
        )?,
        tcp_closing_timeout_ns: seconds_to_ns("conntrack.timeouts.tcp_closing", t.tcp_closing)?,
        udp_timeout_ns: seconds_to_ns("conntrack.timeouts.udp", t.udp)?,
        other_timeout_ns: seconds_to_ns("conntrack.timeouts.other", t.other)?,
        fragment_timeout_ns: seconds_to_ns("conntrack.timeouts.fragment", t.fragment)?,
    })
}

fn validate_icmp(raw: RawIcmp) -> Result<IcmpConfig, ConfigError> {
    if raw.too_big_per_second > 0 && raw.too_big_burst == 0 {
        return Err(ConfigError::invalid(
            "icmp.too_big_burst",
            0,
            "at least 1 when icmp.too_big_per_second is above 0",
        ));
    }
    Ok(IcmpConfig {
        too_big_per_second: raw.too_big_per_second,
        too_big_burst: raw.too_big_burst,
    })
}

/// Returns whether `name` is a valid service or backend name. Names label counters and
/// metrics, so each must be a single word.
fn is_valid_name(name: &str) -> bool {
    const MAX_LEN: usize = 63;
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// Returns the key path of a service in errors, `service[INDEX] (NAME)`. An invalid name
/// is left out, because the error about it quotes it and a name with parentheses or
/// spaces would make the path ambiguous.
pub fn service_key(index: usize, name: &str) -> String {
    if is_valid_name(name) {
        format!("service[{index}] ({name})")
    } else {
        format!("service[{index}]")
    }
}

fn validate_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if is_valid_name(name) {
        return Ok(());
    }
    Err(ConfigError::invalid(
        key,
        format!("{name:?}"),
        "1 to 63 letters, digits, '-', '_', '.' or ':'",
    ))
}

fn validate_service(
    index: usize,
    raw: RawService,
    node: &NodeConfig,
) -> Result<ServiceConfig, ConfigError> {
    let key = service_key(index, &raw.name);
    validate_name(&format!("{key}.name"), &raw.name)?;
    if raw.port == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.port"),
            0,
            "a port from 1 to 65535",
        ));
    }
    let Parsed(vip) = raw.vip;
    if let Some(expected) = vip_problem(vip, node) {
        return Err(ConfigError::invalid(format!("{key}.vip"), vip, expected));
    }
    if !maglev::is_prime(raw.table_size) || raw.table_size > maglev::MAX_TABLE_SIZE {
        return Err(ConfigError::invalid(
            format!("{key}.table_size"),
            raw.table_size,
            &format!(
                "a prime number of Maglev slots up to {} (65537 is the default, 655373 suits \
                 more than 650 backends)",
                maglev::MAX_TABLE_SIZE
            ),
        ));
    }
    if raw.backends.len() > raw.table_size as usize {
        return Err(ConfigError::invalid(
            format!("{key}.backend"),
            raw.backends.len(),
            &format!("at most table_size = {} backends", raw.table_size),
        ));
    }

    let mut backends = Vec::with_capacity(raw.backends.len());
    let mut addresses = HashSet::new();
    for (backend_index, raw_backend) in raw.backends.into_iter().enumerate() {
        let backend_key = format!("{key}.backend[{backend_index}]");
        let backend = validate_backend(&backend_key, raw_backend, node)?;
        if backend.vtep_mac == node.vtep_mac {
            return Err(ConfigError::invalid(
                format!("{backend_key}.vtep_mac"),
                backend.vtep_mac,
                "a VtepMAC other than node.vtep_mac, or the node drops Spike's frames as \
                 its own",
            ));
        }
        // The address is checked first: a backend without a name is named after its
        // address, so a repeated address would otherwise be reported as a repeated name.
        if !addresses.insert(backend.address) {
            return Err(ConfigError::invalid(
                format!("{backend_key}.address"),
                backend.address,
                "each backend address to appear once per service",
            ));
        }
        if backends
            .iter()
            .any(|other: &BackendConfig| other.name == backend.name)
        {
            return Err(ConfigError::invalid(
                format!("{backend_key}.name"),
                &backend.name,
                "a name no other backend of this service has",
            ));
        }
        backends.push(backend);
    }

    Ok(ServiceConfig {
        name: raw.name,
        vip,
        protocol: raw.protocol,
        port: raw.port,
        hash: raw.hash,
        table_size: raw.table_size,
        backends,
    })
}

/// Returns what a VIP must be instead of `vip`, or `None` when `vip` can be one.
fn vip_problem(vip: IpAddr, node: &NodeConfig) -> Option<&'static str> {
    let problem = match vip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_multicast() => {
            "a unicast address: 0.0.0.0 and multicast addresses never carry a client's flow"
        }
        IpAddr::V4(v4) if v4.is_broadcast() => {
            "a unicast address: routers never forward 255.255.255.255, the limited broadcast \
             address"
        }
        IpAddr::V4(v4) if v4.is_loopback() => {
            "an address routed to this node: packets to 127.0.0.0/8 never arrive from the \
             network"
        }
        IpAddr::V4(v4) if v4.is_link_local() => {
            "a routed address: routers never forward link-local 169.254.0.0/16"
        }
        IpAddr::V4(v4) if node.ipv4 == Some(v4) => {
            "an address other than node.ipv4: that is this node's own underlay \
             address, the source of the VXLAN packets Spike sends"
        }
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => {
            "a unicast address: :: and multicast addresses never carry a client's flow"
        }
        IpAddr::V6(v6) if v6.is_loopback() => {
            "an address routed to this node: packets to ::1 never arrive from the network"
        }
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
            "a routed address: routers never forward link-local fe80::/10"
        }
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            "a plain IPv4 or IPv6 address: an IPv4-mapped address (::ffff:0:0/96) stands for \
             an IPv4 address inside a host and is not a destination on the network, so write \
             the IPv4 address itself"
        }
        IpAddr::V6(v6) if node.ipv6 == Some(v6) => {
            "an address other than node.ipv6: that is this node's own underlay \
             address, the source of the VXLAN packets Spike sends"
        }
        _ => return None,
    };
    Some(problem)
}

/// Names the kind of address `address` is when it cannot be an underlay address, the
/// outer source or destination of VXLAN packets, or returns `None` for a unicast one.
/// Loopback is among them: the kernel of any receiver drops packets from or to
/// 127.0.0.0/8 or ::1 that arrive from the network.
fn not_unicast(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) if v4.is_broadcast() => {
            Some("255.255.255.255, the limited broadcast address, which routers never forward")
        }
        _ if address.is_unspecified() => Some("the unspecified address, which no host has"),
        _ if address.is_multicast() => Some("a multicast address"),
        _ if address.is_loopback() => Some("a loopback address, which never leaves a host"),
        _ => None,
    }
}

/// Rejects a VIP that is also a backend's underlay address: the backend's VXLAN
/// packets would then come back to Spike as VIP traffic.
fn check_vips_against_backends(services: &[ServiceConfig]) -> Result<(), ConfigError> {
    for (index, service) in services.iter().enumerate() {
        let backends = services.iter().flat_map(|other| {
            other
                .backends
                .iter()
                .map(move |backend| (&other.name, backend))
        });
        for (owner, backend) in backends {
            if backend.address == service.vip {
                return Err(ConfigError::Invalid {
                    key: format!("{}.vip", service_key(index, &service.name)),
                    value: service.vip.to_string(),
                    expected: format!(
                        "an address no backend has: it is backend {}'s address in service \
                         {owner}, whose encapsulated packets would come back as VIP traffic",
                        backend.name
                    ),
                });
            }
        }
    }
    Ok(())
}

fn validate_backend(
    key: &str,
    raw: RawBackend,
    node: &NodeConfig,
) -> Result<BackendConfig, ConfigError> {
    let Parsed(address) = raw.address;
    let family_ok = match address {
        IpAddr::V4(_) => node.ipv4.is_some(),
        IpAddr::V6(_) => node.ipv6.is_some(),
    };
    if !family_ok {
        return Err(ConfigError::invalid(
            format!("{key}.address"),
            address,
            "an address of a family the node has an underlay address for (set node.ipv4 or \
             node.ipv6)",
        ));
    }
    if let Some(kind) = not_unicast(address) {
        return Err(ConfigError::invalid(
            format!("{key}.address"),
            address,
            &format!("the backend node's unicast underlay address, not {kind}"),
        ));
    }
    if let Some(name) = &raw.name {
        validate_name(&format!("{key}.name"), name)?;
    }
    let own = match address {
        IpAddr::V4(v4) => (node.ipv4 == Some(v4)).then_some("node.ipv4"),
        IpAddr::V6(v6) => (node.ipv6 == Some(v6)).then_some("node.ipv6"),
    };
    if let Some(own) = own {
        let name = raw.name.as_deref().unwrap_or("without a name");
        return Err(ConfigError::invalid(
            format!("{key}.address"),
            address,
            &format!(
                "another node's underlay address: backend {name} has {own}, this node's own \
                 address, so its VXLAN packets would come back to this node and be lost"
            ),
        ));
    }
    let next_hop_mac = match raw.next_hop_mac {
        Some(mac) => {
            let mac_key = format!("{key}.next_hop_mac");
            let mac = unicast_mac(&mac_key, mac)?;
            not_own_mac(&mac_key, mac, node.mac)?;
            Some(mac)
        }
        None => None,
    };
    Ok(BackendConfig {
        name: raw.name.unwrap_or_else(|| address.to_string()),
        address,
        vtep_mac: unicast_mac(&format!("{key}.vtep_mac"), raw.vtep_mac)?,
        weight: raw.weight,
        next_hop_mac,
    })
}
