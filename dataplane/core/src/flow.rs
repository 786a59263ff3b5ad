//! Flow identity and the keyed flow hash.
//!
//! Every Spike node must pick the same backend for the same packet, so [`FlowHasher`] hashes a
//! fixed byte encoding of the chosen header fields with SipHash-1-3 under a key that the whole
//! cluster shares. The encoding is big-endian for ports and raw octets for addresses, and
//! SipHash reads its input as bytes, so the result does not depend on the host's endianness.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::Deserialize;
use siphasher::sip::SipHasher13;

/// The fields that identify a flow, as seen on a client-to-server packet.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so that one key type covers both
/// families. An IPv6 packet that itself carries an IPv4-mapped address therefore gets the same key
/// as the matching IPv4 packet, and [`FlowKey::src_addr`] reports it as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

impl FlowKey {
    /// Builds a key, mapping IPv4 addresses into the IPv6 space.
    pub fn new(src: IpAddr, dst: IpAddr, protocol: u8, src_port: u16, dst_port: u16) -> Self {
        Self {
            src: mapped_octets(src),
            dst: mapped_octets(dst),
            src_port,
            dst_port,
            protocol,
        }
    }

    /// Returns the source address, as IPv4 when it is IPv4-mapped.
    pub fn src_addr(&self) -> IpAddr {
        unmapped_addr(self.src)
    }

    /// Returns the destination address, as IPv4 when it is IPv4-mapped.
    pub fn dst_addr(&self) -> IpAddr {
        unmapped_addr(self.dst)
    }

    /// Returns the key of the opposite direction: addresses and ports swapped.
    pub fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }
}

fn mapped_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn unmapped_addr(octets: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(octets);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// The header fields that feed the flow hash, and so the backend choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
pub enum HashFields {
    /// Addresses, ports and protocol: each connection is balanced on its own.
    #[default]
    #[serde(rename = "5-tuple")]
    FiveTuple,
    /// Addresses and protocol: all connections between two hosts reach the same backend, which
    /// also keeps non-first IP fragments (they carry no ports) with their flow.
    #[serde(rename = "3-tuple")]
    ThreeTuple,
    /// Source address only: every connection from one client reaches the same backend.
    #[serde(rename = "source-address")]
    SourceAddress,
}

/// Byte length of the five-tuple encoding: two addresses, two ports and the protocol.
const FIVE_TUPLE_LEN: usize = 16 + 16 + 2 + 2 + 1;
/// Byte length of the three-tuple encoding: two addresses and the protocol.
const THREE_TUPLE_LEN: usize = 16 + 16 + 1;
/// Byte length of the source-address encoding.
const SOURCE_ADDRESS_LEN: usize = 16;

/// SipHash-1-3 keyed with the cluster-wide flow-hash key.
///
/// Changing the key, the algorithm or the byte encoding changes which backend every flow maps
/// to, so all nodes of a cluster must run the same version with the same key.
#[derive(Clone)]
pub struct FlowHasher {
    sip: SipHasher13,
}

impl FlowHasher {
    /// Creates a hasher; the key's bytes are read as two little-endian `u64` halves.
    pub fn new(key: [u8; 16]) -> Self {
        Self {
            sip: SipHasher13::new_with_key(&key),
        }
    }

    /// Hashes the fields of `key` that `fields` selects.
    ///
    /// The encoding is `src ‖ dst ‖ src_port ‖ dst_port ‖ protocol` with ports big-endian, and
    /// the three-tuple and source-address encodings are prefixes of it with the protocol
    /// appended for the three-tuple. The encodings differ in length, so they never collide by
    /// construction.
    #[inline]
    pub fn hash(&self, key: &FlowKey, fields: HashFields) -> u64 {
        let mut bytes = [0u8; FIVE_TUPLE_LEN];
        bytes[..16].copy_from_slice(&key.src);
        bytes[16..32].copy_from_slice(&key.dst);
        match fields {
            HashFields::FiveTuple => {
                bytes[32..34].copy_from_slice(&key.src_port.to_be_bytes());
                bytes[34..36].copy_from_slice(&key.dst_port.to_be_bytes());
                bytes[36] = key.protocol;
                self.sip.hash(&bytes)
            }
            HashFields::ThreeTuple => {
                bytes[32] = key.protocol;
                self.sip.hash(&bytes[..THREE_TUPLE_LEN])
            }
            HashFields::SourceAddress => self.sip.hash(&bytes[..SOURCE_ADDRESS_LEN]),
        }
    }
}

impl fmt::Debug for FlowHasher {
    // The key is a shared secret: printing it would let anyone who reads logs steer flows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowHasher").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const TEST_KEY: [u8; 16] = *b"spike-test-key-0";

    fn v4_key() -> FlowKey {
        FlowKey::new(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            6,
            40000,
            443,
        )
    }

    fn v6_key() -> FlowKey {
        FlowKey::new(
            IpAddr::V6("2001:db8::10".parse().unwrap()),
            IpAddr::V6("2001:db8:1::1".parse().unwrap()),
            17,
            5353,
            53,
        )
    }

    #[test]
    fn hash_is_pinned_across_releases() {
        // These values are part of the cross-node contract: if this test fails, nodes running
        // different versions would send the same flow to different backends. They were computed
        // by a separate SipHash-1-3 implementation that matches the SipHash paper's test vector.
        let hasher = FlowHasher::new(TEST_KEY);
        assert_eq!(
            hasher.hash(&v4_key(), HashFields::FiveTuple),
            0x03c1_73f6_b8c3_8e2a
        );
        assert_eq!(
            hasher.hash(&v4_key(), HashFields::ThreeTuple),
            0x982e_f77c_70af_4ff8
        );
        assert_eq!(
            hasher.hash(&v4_key(), HashFields::SourceAddress),
            0x2fca_b492_09bd_c27c
        );
        assert_eq!(
            hasher.hash(&v6_key(), HashFields::FiveTuple),
            0x4129_1287_441b_86b9
        );
    }

    #[test]
    fn hash_depends_on_key() {
        let first = FlowHasher::new(TEST_KEY);
        let second = FlowHasher::new(*b"spike-test-key-1");
        assert_ne!(
            first.hash(&v4_key(), HashFields::FiveTuple),
            second.hash(&v4_key(), HashFields::FiveTuple)
        );
    }

    #[test]
    fn five_tuple_uses_every_field() {
        let hasher = FlowHasher::new(TEST_KEY);
        let base = v6_key();
        let base_hash = hasher.hash(&base, HashFields::FiveTuple);
        let variants = [
            FlowKey {
                src_port: base.src_port + 1,
                ..base
            },
            FlowKey {
                dst_port: base.dst_port + 1,
                ..base
            },
            FlowKey {
                protocol: 6,
                ..base
            },
            base.reversed(),
        ];
        for variant in variants {
            assert_ne!(
                hasher.hash(&variant, HashFields::FiveTuple),
                base_hash,
                "{variant:?}"
            );
        }
    }

    #[test]
    fn three_tuple_ignores_ports() {
        let hasher = FlowHasher::new(TEST_KEY);
        let base = v4_key();
        let other_ports = FlowKey {
            src_port: 1,
            dst_port: 2,
            ..base
        };
        let other_protocol = FlowKey {
            protocol: 17,
            ..base
        };
        let base_hash = hasher.hash(&base, HashFields::ThreeTuple);
        assert_eq!(hasher.hash(&other_ports, HashFields::ThreeTuple), base_hash);
        assert_ne!(
            hasher.hash(&other_protocol, HashFields::ThreeTuple),
            base_hash
        );
        assert_ne!(
            hasher.hash(&base.reversed(), HashFields::ThreeTuple),
            base_hash
        );
    }

    #[test]
    fn source_address_ignores_the_rest() {
        let hasher = FlowHasher::new(TEST_KEY);
        let base = v4_key();
        let other = FlowKey {
            dst: v6_key().dst,
            src_port: 1,
            dst_port: 2,
            protocol: 17,
            ..base
        };
        let other_source = FlowKey {
            src: v6_key().src,
            ..base
        };
        let base_hash = hasher.hash(&base, HashFields::SourceAddress);
        assert_eq!(hasher.hash(&other, HashFields::SourceAddress), base_hash);
        assert_ne!(
            hasher.hash(&other_source, HashFields::SourceAddress),
            base_hash
        );
    }

    #[test]
    fn ipv4_round_trips_through_mapping() {
        let key = v4_key();
        assert_eq!(key.src_addr(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)));
        assert_eq!(key.dst_addr(), IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(
            Ipv6Addr::from(key.src),
            "::ffff:192.0.2.10".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn ipv6_round_trips_unchanged() {
        let key = v6_key();
        assert_eq!(key.src_addr(), "2001:db8::10".parse::<IpAddr>().unwrap());
        assert_eq!(key.dst_addr(), "2001:db8:1::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn reversed_swaps_addresses_and_ports() {
        let key = v4_key();
        let reversed = key.reversed();
        assert_eq!(reversed.src, key.dst);
        assert_eq!(reversed.dst, key.src);
        assert_eq!(reversed.src_port, key.dst_port);
        assert_eq!(reversed.dst_port, key.src_port);
        assert_eq!(reversed.protocol, key.protocol);
        assert_eq!(reversed.reversed(), key);
    }

    #[test]
    fn debug_hides_the_key() {
        let printed = format!("{:?}", FlowHasher::new(TEST_KEY));
        assert_eq!(printed, "FlowHasher { .. }");
    }

    #[derive(Debug, Deserialize)]
    struct HashFieldsConfig {
        fields: HashFields,
    }

    #[test]
    fn hash_fields_parse_from_config_names() {
        let cases = [
            ("5-tuple", HashFields::FiveTuple),
            ("3-tuple", HashFields::ThreeTuple),
            ("source-address", HashFields::SourceAddress),
        ];
        for (name, expected) in cases {
            let config: HashFieldsConfig = toml::from_str(&format!("fields = \"{name}\"")).unwrap();
            assert_eq!(config.fields, expected, "{name}");
        }
        assert!(toml::from_str::<HashFieldsConfig>("fields = \"five-tuple\"").is_err());
    }
}
