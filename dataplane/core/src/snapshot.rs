//! Immutable forwarding tables built from a [`Config`], off the packet path.
//!
//! A worker reads one `Snapshot` per burst. Building one runs Maglev population for every
//! service and precomputes each backend's encapsulation template, so the per-packet work
//! is a service lookup, a table read and a header copy.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use siphasher::sip::SipHasher13;
use thiserror::Error;

use crate::cluster::Cluster;
use crate::config::{Config, Protocol};
use crate::encap::{EncapSettings, EncapTemplate};
use crate::flow::{FlowHasher, HashFields};
use crate::maglev::{self, MaglevBackend, MaglevError, MaglevTable};
use crate::wire::MacAddr;

/// The key a packet is classified by: destination address, protocol and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub vip: [u8; 16],
    pub protocol: u8,
    pub port: u16,
}

impl ServiceKey {
    pub fn new(vip: IpAddr, protocol: u8, port: u16) -> Self {
        ServiceKey {
            vip: mapped(vip),
            protocol,
            port,
        }
    }
}

/// IPv4 addresses as IPv4-mapped IPv6, the form flow keys use.
pub(crate) fn mapped(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Returns whether `address`, in flow-key form (IPv4-mapped for IPv4), is a source no
/// host sends from, as [`DropReason::MartianSource`](crate::DropReason::MartianSource)
/// lists. The reserved 240.0.0.0/4 is allowed because some networks use it internally.
#[inline]
pub(crate) fn is_martian_source(address: &[u8; 16]) -> bool {
    if is_ipv4_mapped(address) {
        let first = address[12];
        return first == 0
            || first == 127
            || (224..240).contains(&first)
            || address[12..] == [255, 255, 255, 255];
    }
    let unspecified_or_loopback = address[..15] == [0; 15] && address[15] <= 1;
    unspecified_or_loopback || address[0] == 0xff
}

/// Returns whether an address read from an IPv6 header is IPv4-mapped (`::ffff:0:0/96`).
/// Flow keys write IPv4 addresses in that form, so an IPv6 packet to such an address
/// would look like IPv4 traffic to an IPv4 VIP. It is not Spike's traffic, so it goes to
/// the kernel.
#[inline]
pub(crate) fn is_ipv4_mapped(address: &[u8; 16]) -> bool {
    address[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]
}

/// A multiply-rotate hash over 8-byte words for the service maps. They hold only
/// configured keys, so crafted packets can make a lookup miss but cannot lengthen a
/// collision chain, and a fast unkeyed hash is enough. Byte-at-a-time hashes such as
/// FNV-1a cost about as much as the rest of the decision here.
#[derive(Default)]
pub(crate) struct WordHasher(u64);

impl WordHasher {
    /// An odd constant with well-mixed bits (the 64-bit golden ratio, 2^64 / phi).
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::MULTIPLIER);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u16(&mut self, value: u16) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

/// A backend node, with what the packet path needs to reach it.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Stable identity, the same on every Spike node: a hash of the underlay address.
    pub id: u64,
    pub name: String,
    pub address: IpAddr,
    pub vtep_mac: MacAddr,
    pub next_hop_mac: MacAddr,
    /// Weight 0 means draining: tracked flows stay, new flows go elsewhere.
    pub weight: u32,
    pub(crate) template: EncapTemplate,
}

/// A VIP, protocol and port with its backends and Maglev table.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    pub hash: HashFields,
    pub backends: Vec<Backend>,
    /// `None` when no backend has a weight above zero: new flows are dropped. Services
    /// with the same backends, weights and table size share one table.
    pub table: Option<Arc<MaglevTable>>,
    backend_by_id: FastMap<u64, u32>,
}

impl Service {
    /// Index of the backend with this stable id, if it is still configured.
    #[inline]
    pub fn backend_index(&self, id: u64) -> Option<u32> {
        self.backend_by_id.get(&id).copied()
    }
}

/// Failure to build a snapshot from a config that parsed.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("cannot build the Maglev table of service {service:?}: {source}")]
    Maglev {
        service: String,
        source: MaglevError,
    },
    #[error(
        "backend {backend} needs an underlay address of its family: set node.ipv4 or node.ipv6"
    )]
    NoUnderlayAddress { backend: IpAddr },
    #[error(
        "cluster node {node} needs an underlay address of its family: set node.ipv4 or node.ipv6"
    )]
    NoClusterUnderlayAddress { node: IpAddr },
}

/// Everything a worker needs to decide, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    /// Distinguishes snapshots so conntrack can tell when a stored backend index is stale.
    pub generation: u32,
    pub services: Vec<Service>,
    pub(crate) hasher: FlowHasher,
    pub(crate) encap: EncapSettings,
    service_by_key: FastMap<ServiceKey, u32>,
    /// For each VIP and protocol, the service that hashes without ports, if any: the only
    /// kind a non-first fragment without a record can be balanced to.
    portless_service: FastMap<([u8; 16], u8), u32>,
    vips: FastMap<[u8; 16], ()>,
    /// VIP and protocol pairs that have at least one service.
    vip_protocols: FastMap<([u8; 16], u8), ()>,
    /// The Spike nodes fragments are redirected among; `None` for a node alone.
    pub cluster: Option<Cluster>,
}

impl Snapshot {
    /// Builds the tables for `config`. `generation` must differ from the previous
    /// snapshot's so that workers revalidate tracked flows.
    pub fn build(config: &Config, generation: u32) -> Result<Snapshot, SnapshotError> {
        let encap = EncapSettings::from_config(config);
        let cluster = Cluster::build(config, &encap)
            .map_err(|node| SnapshotError::NoClusterUnderlayAddress { node })?;
        let mut services = Vec::with_capacity(config.services.len());
        let mut service_by_key = FastMap::default();
        let mut portless_service = FastMap::default();
        let mut vips = FastMap::default();
        let mut vip_protocols = FastMap::default();
        let mut tables = SharedTables::default();

        for (index, service_config) in config.services.iter().enumerate() {
            let index = index as u32;
            let vip = mapped(service_config.vip);
            let protocol = service_config.protocol.number();

            let mut backends = Vec::with_capacity(service_config.backends.len());
            for backend in &service_config.backends {
                let next_hop_mac = backend.next_hop_mac.unwrap_or(config.node.gateway_mac);
                let template = EncapTemplate::new(
                    &encap,
                    service_config.vip,
                    backend.address,
                    next_hop_mac,
                    backend.vtep_mac,
                )
                .ok_or(SnapshotError::NoUnderlayAddress {
                    backend: backend.address,
                })?;
                backends.push(Backend {
                    id: backend_id(backend.address),
                    name: backend.name.clone(),
                    address: backend.address,
                    vtep_mac: backend.vtep_mac,
                    next_hop_mac,
                    weight: backend.weight,
                    template,
                });
            }

            let table = tables.get(&service_config.name, &backends, service_config.table_size)?;
            let backend_by_id = backends
                .iter()
                .enumerate()
                .map(|(position, backend)| (backend.id, position as u32))
                .collect();

            service_by_key.insert(
                ServiceKey::new(service_config.vip, protocol, service_config.port),
                index,
            );
            if service_config.hash != HashFields::FiveTuple {
                portless_service.entry((vip, protocol)).or_insert(index);
            }
            vips.insert(vip, ());
            vip_protocols.insert((vip, protocol), ());

            services.push(Service {
                name: service_config.name.clone(),
                vip: service_config.vip,
                protocol: service_config.protocol,
                port: service_config.port,
                hash: service_config.hash,
                backends,
                table,
                backend_by_id,
            });
        }

        Ok(Snapshot {
            generation,
            services,
            hasher: FlowHasher::new(config.hash_key.0),
            encap,
            service_by_key,
            portless_service,
            vips,
            vip_protocols,
            cluster,
        })
    }

    /// Returns the service for a destination address, protocol and port.
    #[inline]
    pub fn service(&self, key: &ServiceKey) -> Option<u32> {
        self.service_by_key.get(key).copied()
    }

    /// Returns the service on `vip` and `protocol` that hashes without ports.
    #[inline]
    pub fn portless_service(&self, vip: &[u8; 16], protocol: u8) -> Option<u32> {
        self.portless_service.get(&(*vip, protocol)).copied()
    }

    /// Returns whether `address` is the VIP of any service.
    #[inline]
    pub fn is_vip(&self, address: &[u8; 16]) -> bool {
        self.vips.contains_key(address)
    }

    /// Returns whether any service listens on `vip` with `protocol`, on any port.
    #[inline]
    pub fn has_protocol(&self, vip: &[u8; 16], protocol: u8) -> bool {
        self.vip_protocols.contains_key(&(*vip, protocol))
    }

    /// Returns the underlay address of the Spike node designated for the fragments of
    /// datagrams from `src` to `dst` with `protocol`, or `None` without a cluster.
    pub fn designated_node(&self, src: IpAddr, dst: IpAddr, protocol: u8) -> Option<IpAddr> {
        let cluster = self.cluster.as_ref()?;
        let key = crate::flow::FlowKey::new(src, dst, protocol, 0, 0);
        let index = cluster.designated(self.hasher.hash(&key, HashFields::ThreeTuple));
        cluster.peers.get(index).map(|peer| peer.address)
    }

    /// Returns the flow hasher keyed from the config.
    pub fn hasher(&self) -> &FlowHasher {
        &self.hasher
    }
}

/// A backend whose weight is above 0 but whose service's Maglev table gives it no slot, so
/// that it receives no new flows, as if it had weight 0.
///
/// Slot shares follow the weights: a backend gets about `table_size * weight / weight_sum`
/// slots, so a weight far below the others' leaves it less than one slot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnslottedBackend {
    pub service: String,
    pub backend: String,
    pub weight: u32,
    /// Sum of the weights of the service's backends.
    pub weight_sum: u64,
    pub table_size: u32,
}

impl UnslottedBackend {
    /// Returns the backends of `service` with a weight above 0 that `table` gives no slot.
    /// `backends` are the backends' names and weights in the order `table` was built from.
    pub fn find<'a>(
        service: &str,
        backends: impl IntoIterator<Item = (&'a str, u32)> + Clone,
        table: &MaglevTable,
    ) -> Vec<UnslottedBackend> {
        Self::from_slot_counts(service, backends, &table.slot_counts(), table.size())
    }

    /// Like [`UnslottedBackend::find`], from the table's slot counts per backend, as
    /// [`MaglevTable::slot_counts`] returns them.
    pub fn from_slot_counts<'a>(
        service: &str,
        backends: impl IntoIterator<Item = (&'a str, u32)> + Clone,
        slot_counts: &[u32],
        table_size: u32,
    ) -> Vec<UnslottedBackend> {
        let weight_sum = backends
            .clone()
            .into_iter()
            .map(|(_, weight)| u64::from(weight))
            .sum();
        backends
            .into_iter()
            .zip(slot_counts)
            .filter(|&((_, weight), &slots)| weight > 0 && slots == 0)
            .map(|((backend, weight), _)| UnslottedBackend {
                service: service.to_owned(),
                backend: backend.to_owned(),
                weight,
                weight_sum,
                table_size,
            })
            .collect()
    }

    /// Returns the smallest table size that gives this backend a share of one slot.
    fn table_size_needed(&self) -> u64 {
        self.weight_sum.div_ceil(u64::from(self.weight))
    }
}

impl fmt::Display for UnslottedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = self.table_size as f64 * f64::from(self.weight) / self.weight_sum.max(1) as f64;
        write!(
            f,
            "service {}: backend {} has weight {} but none of the {} Maglev slots, so it \
             receives no new flows: the weights of the service sum to {}, which leaves it \
             {share:.2} slots; ",
            self.service, self.backend, self.weight, self.table_size, self.weight_sum
        )?;
        let needed = self.table_size_needed();
        if needed <= u64::from(maglev::MAX_TABLE_SIZE) {
            write!(
                f,
                "set table_size to a prime of at least {needed}, or lower the ratio of the \
                 largest weight to the smallest"
            )
        } else {
            write!(
                f,
                "lower the ratio of the largest weight to the smallest (it would need a table \
                 of {needed} slots, above the largest table_size, {})",
                maglev::MAX_TABLE_SIZE
            )
        }
    }
}

impl Snapshot {
    /// Returns the backends with a weight above 0 that their service's table gives no
    /// slot, in service order. The slots of a table that several services share are
    /// counted once.
    pub fn unslotted_backends(&self) -> Vec<UnslottedBackend> {
        let mut counts: HashMap<*const MaglevTable, Vec<u32>> = HashMap::new();
        let mut found = Vec::new();
        for service in &self.services {
            let Some(table) = &service.table else {
                continue;
            };
            let slot_counts = counts
                .entry(Arc::as_ptr(table))
                .or_insert_with(|| table.slot_counts());
            let backends = service
                .backends
                .iter()
                .map(|backend| (backend.name.as_str(), backend.weight));
            found.extend(UnslottedBackend::from_slot_counts(
                &service.name,
                backends,
                slot_counts,
                table.size(),
            ));
        }
        found
    }
}

/// The tables built so far, keyed by table size and backend ids and weights in order,
/// so that services with equal backend sets share one table instead of each
/// populating and holding its own.
#[derive(Default)]
struct SharedTables(HashMap<TableKey, Arc<MaglevTable>>);

/// A table's size and its backends' ids and weights, in order.
type TableKey = (u32, Vec<(u64, u32)>);

impl SharedTables {
    fn get(
        &mut self,
        service: &str,
        backends: &[Backend],
        table_size: u32,
    ) -> Result<Option<Arc<MaglevTable>>, SnapshotError> {
        if backends.iter().all(|backend| backend.weight == 0) {
            return Ok(None);
        }
        let key: Vec<(u64, u32)> = backends
            .iter()
            .map(|backend| (backend.id, backend.weight))
            .collect();
        if let Some(table) = self.0.get(&(table_size, key.clone())) {
            return Ok(Some(Arc::clone(table)));
        }
        let maglev_backends: Vec<MaglevBackend> = key
            .iter()
            .map(|&(id, weight)| MaglevBackend { id, weight })
            .collect();
        let table = MaglevTable::build(&maglev_backends, table_size)
            .map(Arc::new)
            .map_err(|source| SnapshotError::Maglev {
                service: service.to_owned(),
                source,
            })?;
        self.0.insert((table_size, key), Arc::clone(&table));
        Ok(Some(table))
    }
}

/// Computes a backend's stable identity: SipHash-1-3 with a fixed key over its underlay address,
/// so every Spike node derives the same id and thus the same Maglev permutation.
pub fn backend_id(address: IpAddr) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(0x5370_696b_6542_6b64, 0x4964_6e6f_6465_0001);
    hasher.write(&mapped(address));
    hasher.finish()
}
