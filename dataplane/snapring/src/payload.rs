//! The snapshot payload: the services and settings a snapshot is built from, plus one
//! populated Maglev table per distinct backend set.
//!
//! Format (version [`crate::region::PAYLOAD_VERSION`]), integers little-endian:
//!
//! ```text
//! u32 config_len, config_len bytes   spike-core TOML: [node], [vxlan], [hash] and
//!                                    [[service]] with backends sorted by backend id
//! u32 table_count
//!   per table: u32 size, u32 backend_count,
//!              backend_count x u64 backend id, size x u32 backend index
//! u32 service_count
//!   per service: u32 table index, or u32::MAX for a service without a table
//! ```
//!
//! The settings travel as the dataplane's own config format, so the dataplane
//! validates them with the same code as its config file. Sorting each service's
//! backends by id gives services with the same backends and weights the same table,
//! which the payload carries once.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Arc;

use siphasher::sip::SipHasher13;
use spike_core::config::{Config, ConfigError, ServiceConfig};
use spike_core::flow::HashFields;
use spike_core::maglev::{MaglevBackend, MaglevError, MaglevTable, SlotsError};
use spike_core::snapshot::backend_id;
use spike_core::snapshot_parts::PartsError;
use spike_core::Snapshot;
use thiserror::Error;

const NO_TABLE: u32 = u32::MAX;

/// A failure to encode a payload.
#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("cannot build the Maglev table of service {service:?}: {source}")]
    Maglev {
        service: String,
        source: MaglevError,
    },
    #[error("cannot write the config as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
}

/// Reason a payload is rejected.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("payload ends at byte {at}, but {field} needs {needed} bytes there")]
    Truncated {
        field: &'static str,
        at: usize,
        needed: usize,
    },
    #[error("payload has {extra} bytes after the last service")]
    TrailingBytes { extra: usize },
    #[error("payload config is not UTF-8")]
    NotUtf8,
    #[error("payload config is invalid: {0}")]
    Config(#[from] ConfigError),
    #[error("payload table {table} is invalid: {source}")]
    Table { table: usize, source: SlotsError },
    #[error("payload maps {mapped} services, but its config has {configured}")]
    ServiceCount { mapped: usize, configured: usize },
    #[error("payload service {service} names table {table}, but there are {tables}")]
    TableIndex {
        service: usize,
        table: u32,
        tables: usize,
    },
    #[error("payload does not fit the running dataplane: {0}")]
    Parts(#[from] PartsError),
}

/// An encoded payload and what the control plane reports about it.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// The config as encoded: backends sorted by id, so `tables` index into them.
    pub config: Config,
    /// The distinct tables.
    pub tables: Vec<MaglevTable>,
    /// Index into `tables` per service of `config`, `None` for a service without one.
    pub service_tables: Vec<Option<usize>>,
}

impl Encoded {
    /// Returns a fingerprint of service `index`'s table: equal on every node that built
    /// the same slots for it, 0 for a service without a table.
    pub fn fingerprint(&self, index: usize) -> u64 {
        match self.service_tables.get(index).copied().flatten() {
            Some(table) => table_fingerprint(&self.tables[table]),
            None => 0,
        }
    }
}

/// Computes a SipHash-1-3 digest of a table's size and the backend id of every slot.
pub fn table_fingerprint(table: &MaglevTable) -> u64 {
    let mut hasher = SipHasher13::new_with_keys(0, 0);
    hasher.write_u32(table.size());
    for &index in table.entries() {
        hasher.write_u64(table.ids()[index as usize]);
    }
    hasher.finish()
}

/// Encodes the node, VXLAN, hash and service settings of `config`, populating one
/// table per distinct backend set. `[conntrack]`, `[icmp]` and `[dpdk]` are not sent:
/// they come from the dataplane's own file.
///
/// # Errors
///
/// [`EncodeError`] when a table cannot be built (a table size the config validation
/// would also reject) or the TOML cannot be written.
pub fn encode(config: &Config) -> Result<Encoded, EncodeError> {
    let mut config = config.clone();
    for service in &mut config.services {
        service
            .backends
            .sort_by_key(|backend| backend_id(backend.address));
    }

    let mut tables = Vec::new();
    let mut table_by_set: HashMap<(u32, Vec<(u64, u32)>), usize> = HashMap::new();
    let mut service_tables = Vec::with_capacity(config.services.len());
    for service in &config.services {
        if service.backends.iter().all(|backend| backend.weight == 0) {
            service_tables.push(None);
            continue;
        }
        let set: Vec<(u64, u32)> = service
            .backends
            .iter()
            .map(|backend| (backend_id(backend.address), backend.weight))
            .collect();
        let key = (service.table_size, set);
        let index = match table_by_set.get(&key) {
            Some(&index) => index,
            None => {
                let table = build_table(service, &key.1)?;
                tables.push(table);
                table_by_set.insert(key, tables.len() - 1);
                tables.len() - 1
            }
        };
        service_tables.push(Some(index));
    }

    let text = config_to_toml(&config)?;
    let mut bytes = Vec::with_capacity(text.len() + 16);
    put_u32(&mut bytes, text.len() as u32);
    bytes.extend_from_slice(text.as_bytes());
    put_u32(&mut bytes, tables.len() as u32);
    for table in &tables {
        put_u32(&mut bytes, table.size());
        put_u32(&mut bytes, table.ids().len() as u32);
        for &id in table.ids() {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        for &index in table.entries() {
            put_u32(&mut bytes, index);
        }
    }
    put_u32(&mut bytes, service_tables.len() as u32);
    for table in &service_tables {
        put_u32(&mut bytes, table.map_or(NO_TABLE, |index| index as u32));
    }

    Ok(Encoded {
        bytes,
        config,
        tables,
        service_tables,
    })
}

fn build_table(service: &ServiceConfig, set: &[(u64, u32)]) -> Result<MaglevTable, EncodeError> {
    let backends: Vec<MaglevBackend> = set
        .iter()
        .map(|&(id, weight)| MaglevBackend { id, weight })
        .collect();
    MaglevTable::build(&backends, service.table_size).map_err(|source| EncodeError::Maglev {
        service: service.name.clone(),
        source,
    })
}

fn put_u32(bytes: &mut Vec<u8>, value: u32) {
    bytes.extend_from_slice(&value.to_le_bytes());
}

/// Writes the parts of `config` that a snapshot is built from in the config file
/// format.
pub fn config_to_toml(config: &Config) -> Result<String, toml::ser::Error> {
    use toml::{Table, Value};

    let text = |value: &dyn std::fmt::Display| Value::String(value.to_string());
    let mut node = Table::new();
    node.insert("mac".into(), text(&config.node.mac));
    if let Some(ipv4) = config.node.ipv4 {
        node.insert("ipv4".into(), text(&ipv4));
    }
    if let Some(ipv6) = config.node.ipv6 {
        node.insert("ipv6".into(), text(&ipv6));
    }
    node.insert("gateway_mac".into(), text(&config.node.gateway_mac));
    node.insert("vtep_mac".into(), text(&config.node.vtep_mac));
    node.insert("mtu".into(), Value::Integer(config.node.mtu.into()));

    let vxlan = &config.vxlan;
    let mut vxlan_table = Table::new();
    vxlan_table.insert("vni".into(), Value::Integer(vxlan.vni.into()));
    vxlan_table.insert("port".into(), Value::Integer(vxlan.port.into()));
    vxlan_table.insert(
        "source_port_range".into(),
        Value::Array(vec![
            Value::Integer(vxlan.source_port_min.into()),
            Value::Integer(vxlan.source_port_max.into()),
        ]),
    );
    vxlan_table.insert("ttl".into(), Value::Integer(vxlan.ttl.into()));
    vxlan_table.insert(
        "ipv4_udp_checksum".into(),
        Value::Boolean(vxlan.ipv4_udp_checksum),
    );

    let key: String = config
        .hash_key
        .0
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut hash = Table::new();
    hash.insert("key".into(), Value::String(key));

    let services = config.services.iter().map(service_to_toml).collect();

    let mut root = Table::new();
    root.insert("node".into(), Value::Table(node));
    root.insert("vxlan".into(), Value::Table(vxlan_table));
    root.insert("hash".into(), Value::Table(hash));
    root.insert("service".into(), Value::Array(services));
    toml::to_string(&root)
}

fn service_to_toml(service: &ServiceConfig) -> toml::Value {
    use toml::{Table, Value};

    let hash = match service.hash {
        HashFields::FiveTuple => "5-tuple",
        HashFields::ThreeTuple => "3-tuple",
        HashFields::SourceAddress => "source-address",
    };
    let backends = service
        .backends
        .iter()
        .map(|backend| {
            let mut table = Table::new();
            table.insert("name".into(), Value::String(backend.name.clone()));
            table.insert("address".into(), Value::String(backend.address.to_string()));
            table.insert(
                "vtep_mac".into(),
                Value::String(backend.vtep_mac.to_string()),
            );
            table.insert("weight".into(), Value::Integer(backend.weight.into()));
            if let Some(mac) = backend.next_hop_mac {
                table.insert("next_hop_mac".into(), Value::String(mac.to_string()));
            }
            Value::Table(table)
        })
        .collect();

    let mut table = Table::new();
    table.insert("name".into(), Value::String(service.name.clone()));
    table.insert("vip".into(), Value::String(service.vip.to_string()));
    table.insert(
        "protocol".into(),
        Value::String(service.protocol.to_string()),
    );
    table.insert("port".into(), Value::Integer(service.port.into()));
    table.insert("hash".into(), Value::String(hash.into()));
    table.insert(
        "table_size".into(),
        Value::Integer(service.table_size.into()),
    );
    table.insert("backend".into(), Value::Array(backends));
    Value::Table(table)
}

/// A payload split into its parts, every length checked.
#[derive(Debug)]
pub struct Decoded {
    pub config_text: String,
    pub tables: Vec<MaglevTable>,
    pub service_tables: Vec<u32>,
}

/// A bounds-checked reader over the payload bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, field: &'static str, needed: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(needed)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(DecodeError::Truncated {
                field,
                at: self.at,
                needed,
            })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(field, 4)?);
        Ok(u32::from_le_bytes(word))
    }

    /// Reads a count of items of `item_len` bytes each, rejecting counts whose items
    /// could not fit the rest of the payload, so a corrupt count allocates nothing.
    fn count(&mut self, field: &'static str, item_len: usize) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        let needed = count.saturating_mul(item_len);
        if needed > self.bytes.len() - self.at {
            return Err(DecodeError::Truncated {
                field,
                at: self.at,
                needed,
            });
        }
        Ok(count)
    }
}

/// Splits a payload into its config text and tables, checking every length and every
/// table's slots against its backend count.
///
/// # Errors
///
/// [`DecodeError`] for a truncated or over-long payload, a config that is not UTF-8,
/// or an invalid table.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut cursor = Cursor { bytes, at: 0 };
    let config_len = cursor.count("config length", 1)?;
    let config_text = std::str::from_utf8(cursor.take("config", config_len)?)
        .map_err(|_| DecodeError::NotUtf8)?
        .to_owned();

    // The smallest table (2 slots, 1 backend) takes 24 bytes.
    let table_count = cursor.count("table count", 24)?;
    let mut tables = Vec::with_capacity(table_count);
    for table in 0..table_count {
        let size = cursor.u32("table size")? as usize;
        let backends = cursor.count("backend count", 8)?;
        let ids = cursor
            .take("backend ids", backends * 8)?
            .chunks_exact(8)
            .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap_or_default()))
            .collect();
        let entries = cursor
            .take("table entries", size.saturating_mul(4))?
            .chunks_exact(4)
            .map(|chunk| u32::from_le_bytes(chunk.try_into().unwrap_or_default()))
            .collect();
        let table_value = MaglevTable::from_slots(ids, entries)
            .map_err(|source| DecodeError::Table { table, source })?;
        tables.push(table_value);
    }

    let service_count = cursor.count("service count", 4)?;
    let mut service_tables = Vec::with_capacity(service_count);
    for service in 0..service_count {
        let table = cursor.u32("service table")?;
        if table != NO_TABLE && table as usize >= tables.len() {
            return Err(DecodeError::TableIndex {
                service,
                table,
                tables: tables.len(),
            });
        }
        service_tables.push(table);
    }
    let extra = bytes.len() - cursor.at;
    if extra > 0 {
        return Err(DecodeError::TrailingBytes { extra });
    }
    Ok(Decoded {
        config_text,
        tables,
        service_tables,
    })
}

impl Decoded {
    /// Builds the snapshot. `[conntrack]`, `[icmp]`, `[dpdk]` and `[cluster]` come from
    /// `running`, the dataplane's own config, and everything else from the payload.
    /// Returns the combined config with the snapshot.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the config is invalid or a table does not fit its service.
    pub fn into_snapshot(
        self,
        running: &Config,
        generation: u32,
    ) -> Result<(Config, Snapshot), DecodeError> {
        let mut config: Config = self.config_text.parse()?;
        config.conntrack = running.conntrack.clone();
        config.icmp = running.icmp.clone();
        config.dpdk = running.dpdk.clone();
        // The cluster names this node among the Spike nodes, so it is the node's own.
        config.cluster = running.cluster.clone();
        if self.service_tables.len() != config.services.len() {
            return Err(DecodeError::ServiceCount {
                mapped: self.service_tables.len(),
                configured: config.services.len(),
            });
        }
        // One `Arc` per table in the payload: services that share a table in the payload
        // share it in the snapshot too, instead of each holding a copy.
        let shared: Vec<Arc<MaglevTable>> = self.tables.into_iter().map(Arc::new).collect();
        let tables = self
            .service_tables
            .iter()
            .map(|&index| (index != NO_TABLE).then(|| Arc::clone(&shared[index as usize])))
            .collect();
        let snapshot = Snapshot::from_parts(&config, generation, tables)?;
        Ok((config, snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const CONFIG: &str = r#"
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
        table_size = 251

        [[service.backend]]
        name = "b"
        address = "192.0.2.12"
        vtep_mac = "0a:58:0a:f4:00:0b"

        [[service.backend]]
        name = "a"
        address = "192.0.2.11"
        vtep_mac = "0a:58:0a:f4:00:0a"
        weight = 3

        [[service]]
        name = "web-tls"
        vip = "198.51.100.1"
        protocol = "tcp"
        port = 443
        table_size = 251

        [[service.backend]]
        name = "a"
        address = "192.0.2.11"
        vtep_mac = "0a:58:0a:f4:00:0a"
        weight = 3

        [[service.backend]]
        name = "b"
        address = "192.0.2.12"
        vtep_mac = "0a:58:0a:f4:00:0b"

        [[service]]
        name = "dns"
        vip = "198.51.100.2"
        protocol = "udp"
        port = 53
        hash = "source-address"
    "#;

    fn config() -> Config {
        CONFIG.parse().unwrap()
    }

    #[test]
    fn equal_backend_sets_share_a_table() {
        let encoded = encode(&config()).unwrap();
        assert_eq!(encoded.tables.len(), 1);
        assert_eq!(encoded.service_tables, vec![Some(0), Some(0), None]);
        assert_eq!(encoded.fingerprint(0), encoded.fingerprint(1));
        assert_eq!(encoded.fingerprint(2), 0);
    }

    #[test]
    fn round_trip_builds_the_same_tables() {
        let running = config();
        let encoded = encode(&running).unwrap();
        let decoded = decode(&encoded.bytes).unwrap();
        let (config, snapshot) = decoded.into_snapshot(&running, 7).unwrap();

        assert_eq!(config.services.len(), 3);
        let ids: Vec<u64> = config.services[0]
            .backends
            .iter()
            .map(|backend| backend_id(backend.address))
            .collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
        assert_eq!(snapshot.generation, 7);
        let expected = Snapshot::build(&encoded.config, 7).unwrap();
        for (left, right) in expected.services.iter().zip(&snapshot.services) {
            let entries = |service: &spike_core::snapshot::Service| {
                service.table.as_ref().map(|table| table.entries().to_vec())
            };
            assert_eq!(entries(left), entries(right), "service {}", left.name);
        }
    }

    #[test]
    fn cluster_comes_from_the_running_config() {
        let running: Config = format!(
            "{CONFIG}\n[cluster]\nredirect_vni = 4097\n\n[[cluster.node]]\n\
             address = \"192.0.2.1\"\nmac = \"02:00:00:00:01:01\"\n"
        )
        .parse()
        .unwrap();
        // The control plane's payload carries no cluster: it is this node's own.
        let encoded = encode(&config()).unwrap();
        let (config, snapshot) = decode(&encoded.bytes)
            .unwrap()
            .into_snapshot(&running, 2)
            .unwrap();

        assert_eq!(config.cluster, running.cluster);
        let cluster = snapshot.cluster.as_ref().expect("snapshot has the cluster");
        assert_eq!(cluster.redirect_vni, 4097);
        assert_eq!(cluster.peers.len(), 1);
    }

    #[test]
    fn decoded_services_share_one_table() {
        let running = config();
        let encoded = encode(&running).unwrap();
        let (_, snapshot) = decode(&encoded.bytes)
            .unwrap()
            .into_snapshot(&running, 3)
            .unwrap();

        let web = snapshot.services[0].table.as_ref().unwrap();
        let web_tls = snapshot.services[1].table.as_ref().unwrap();
        assert!(
            Arc::ptr_eq(web, web_tls),
            "equal backend sets got two tables"
        );
        assert_eq!(Arc::strong_count(web), 2);
        assert!(snapshot.services[2].table.is_none());
    }

    #[test]
    fn encoding_is_deterministic() {
        let mut reordered = config();
        reordered.services[0].backends.reverse();
        assert_eq!(
            encode(&config()).unwrap().bytes,
            encode(&reordered).unwrap().bytes
        );
    }

    #[test]
    fn decode_rejects_every_truncation() {
        let bytes = encode(&config()).unwrap().bytes;
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode(&longer),
            Err(DecodeError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn decode_rejects_out_of_range_slot() {
        let encoded = encode(&config()).unwrap();
        let mut bytes = encoded.bytes.clone();
        // The first entry of the first table follows its size, count and two ids.
        let config_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
        let first_entry = 4 + config_len + 4 + 4 + 4 + 2 * 8;
        bytes[first_entry..first_entry + 4].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::Table {
                table: 0,
                source: SlotsError::IndexOutOfRange { .. }
            })
        ));
    }

    #[test]
    fn decode_rejects_huge_counts_without_allocating() {
        let mut bytes = Vec::new();
        put_u32(&mut bytes, u32::MAX);
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::Truncated {
                field: "config length",
                ..
            })
        ));
    }

    #[test]
    fn into_snapshot_rejects_table_of_other_backends() {
        let running = config();
        let mut other = config();
        other.services[0].backends.pop();
        other.services[1].backends.pop();
        let mut decoded = decode(&encode(&running).unwrap().bytes).unwrap();
        decoded.config_text = config_to_toml(&other).unwrap();
        assert!(matches!(
            decoded.into_snapshot(&running, 2),
            Err(DecodeError::Parts(PartsError::BackendMismatch { .. }))
        ));
    }
}
