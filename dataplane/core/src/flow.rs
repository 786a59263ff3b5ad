//! Flow identity and the keyed flow hash.
//!
//! Every Spike node must pick the same backend for the same packet, so [`FlowHasher`] hashes a
//! fixed byte encoding of the chosen header fields with SipHash-1-3 under a key that the whole
//! cluster shares. The encoding is big-endian for ports and raw octets for addresses, and
//! SipHash reads its input as bytes, so the result does not depend on the host's endianness.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::Deserialize;

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
/// The same three lengths when the addresses are IPv4, written as 4 bytes each.
const FIVE_TUPLE_V4_LEN: usize = 4 + 4 + 2 + 2 + 1;
const THREE_TUPLE_V4_LEN: usize = 4 + 4 + 1;
const SOURCE_ADDRESS_V4_LEN: usize = 4;
/// The first 12 bytes of an IPv4-mapped address, `::ffff:0:0/96`, read as the two
/// little-endian words the hash reads: all zero, then zero with `ff ff` in its top half.
const MAPPED_PREFIX_LOW: u64 = 0;
const MAPPED_PREFIX_HIGH_MASK: u64 = 0xffff_ffff;
const MAPPED_PREFIX_HIGH: u64 = 0xffff_0000;

/// SipHash-1-3 keyed with the cluster-wide flow-hash key.
///
/// Changing the key, the algorithm or the byte encoding changes which backend every flow maps
/// to, so all nodes of a cluster must run the same version with the same key.
///
/// The hash is written out for the three fixed input lengths, so it keeps no streaming state.
/// It follows the SipHash definition with one compression round per 8-byte block and three
/// finalization rounds.
#[derive(Clone)]
pub struct FlowHasher {
    /// The state after keying, before any input: `v0`, `v1`, `v2`, `v3` of the definition.
    initial: [u64; 4],
}

impl FlowHasher {
    /// Creates a hasher; the key's bytes are read as two little-endian `u64` halves.
    pub fn new(key: [u8; 16]) -> Self {
        let k0 = u64::from_le_bytes(array_at(&key, 0));
        let k1 = u64::from_le_bytes(array_at(&key, 8));
        Self {
            // The ASCII of "somepseudorandomlygeneratedbytes", as the definition fixes it.
            initial: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
        }
    }

    /// Hashes the fields of `key` that `fields` selects.
    ///
    /// The encoding is `src ‖ dst ‖ src_port ‖ dst_port ‖ protocol` with ports big-endian, and
    /// the three-tuple and source-address encodings are prefixes of it with the protocol
    /// appended for the three-tuple. Addresses are 16 bytes, or 4 when every address the
    /// encoding holds is IPv4-mapped: that halves the SipHash blocks of IPv4 traffic. The
    /// six encodings differ in length, so they never collide by construction.
    #[inline]
    pub fn hash(&self, key: &FlowKey, fields: HashFields) -> u64 {
        let src_first = u64::from_le_bytes(array_at(&key.src, 0));
        let src_second = u64::from_le_bytes(array_at(&key.src, 8));
        let dst_first = u64::from_le_bytes(array_at(&key.dst, 0));
        let dst_second = u64::from_le_bytes(array_at(&key.dst, 8));
        let src_v4 = is_mapped(src_first, src_second);
        let both_v4 = src_v4 && is_mapped(dst_first, dst_second);
        // The two IPv4 addresses as one word: the source's 4 bytes, then the destination's.
        let v4_pair = (src_second >> 32) | (dst_second & !MAPPED_PREFIX_HIGH_MASK);
        match fields {
            HashFields::FiveTuple => {
                // The ports as they appear on the wire, then the protocol, in little-endian
                // order.
                let [src_port_high, src_port_low] = key.src_port.to_be_bytes();
                let [dst_port_high, dst_port_low] = key.dst_port.to_be_bytes();
                let tail = u64::from_le_bytes([
                    src_port_high,
                    src_port_low,
                    dst_port_high,
                    dst_port_low,
                    key.protocol,
                    0,
                    0,
                    0,
                ]);
                if both_v4 {
                    self.hash_words(&[v4_pair], tail, FIVE_TUPLE_V4_LEN)
                } else {
                    self.hash_words(
                        &[src_first, src_second, dst_first, dst_second],
                        tail,
                        FIVE_TUPLE_LEN,
                    )
                }
            }
            HashFields::ThreeTuple => {
                let protocol = u64::from(key.protocol);
                if both_v4 {
                    self.hash_words(&[v4_pair], protocol, THREE_TUPLE_V4_LEN)
                } else {
                    self.hash_words(
                        &[src_first, src_second, dst_first, dst_second],
                        protocol,
                        THREE_TUPLE_LEN,
                    )
                }
            }
            HashFields::SourceAddress => {
                if src_v4 {
                    self.hash_words(&[], src_second >> 32, SOURCE_ADDRESS_V4_LEN)
                } else {
                    self.hash_words(&[src_first, src_second], 0, SOURCE_ADDRESS_LEN)
                }
            }
        }
    }

    /// Hashes the five-tuple of an IPv4 flow from its header bytes, as [`FlowHasher::hash`]
    /// with [`HashFields::FiveTuple`] does for the same flow. `addresses` is the 8 bytes of
    /// source and destination address in IPv4 header order, and `ports` the 4 bytes of
    /// source and destination port in transport header order, both read
    /// little-endian.
    #[inline]
    pub fn hash_ipv4_five_tuple(&self, addresses: u64, ports: u32, protocol: u8) -> u64 {
        let tail = u64::from(ports) | (u64::from(protocol) << 32);
        self.hash_words(&[addresses], tail, FIVE_TUPLE_V4_LEN)
    }

    /// Hashes an input of `len` bytes given as its whole little-endian words and the
    /// remaining `len % 8` bytes in the low end of `tail`.
    #[inline(always)]
    fn hash_words(&self, words: &[u64], tail: u64, len: usize) -> u64 {
        let mut state = self.initial;
        for &word in words {
            compress(&mut state, word);
        }
        // The last block carries the input length modulo 256 in its top byte.
        compress(&mut state, tail | ((len as u64) << 56));
        state[2] ^= 0xff;
        sip_round(&mut state);
        sip_round(&mut state);
        sip_round(&mut state);
        state[0] ^ state[1] ^ state[2] ^ state[3]
    }
}

/// Absorbs one 8-byte block with SipHash-1-3's single compression round.
#[inline(always)]
fn compress(state: &mut [u64; 4], block: u64) {
    state[3] ^= block;
    sip_round(state);
    state[0] ^= block;
}

#[inline(always)]
fn sip_round(state: &mut [u64; 4]) {
    let [mut v0, mut v1, mut v2, mut v3] = *state;
    v0 = v0.wrapping_add(v1);
    v1 = v1.rotate_left(13) ^ v0;
    v0 = v0.rotate_left(32);
    v2 = v2.wrapping_add(v3);
    v3 = v3.rotate_left(16) ^ v2;
    v0 = v0.wrapping_add(v3);
    v3 = v3.rotate_left(21) ^ v0;
    v2 = v2.wrapping_add(v1);
    v1 = v1.rotate_left(17) ^ v2;
    v2 = v2.rotate_left(32);
    *state = [v0, v1, v2, v3];
}

/// Returns whether the address whose little-endian words are `first` and `second` is
/// IPv4-mapped.
#[inline(always)]
fn is_mapped(first: u64, second: u64) -> bool {
    first == MAPPED_PREFIX_LOW && second & MAPPED_PREFIX_HIGH_MASK == MAPPED_PREFIX_HIGH
}

/// Returns the 8 bytes of `bytes` from `start` on; `start + 8` must not exceed 16.
#[inline(always)]
fn array_at(bytes: &[u8; 16], start: usize) -> [u8; 8] {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[start..start + 8]);
    array
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
            0xdab0_1c42_14ad_dc2d
        );
        assert_eq!(
            hasher.hash(&v4_key(), HashFields::ThreeTuple),
            0x7c6a_a15d_4b78_c08d
        );
        assert_eq!(
            hasher.hash(&v4_key(), HashFields::SourceAddress),
            0xe097_e89d_714c_19e5
        );
        assert_eq!(
            hasher.hash(&v6_key(), HashFields::FiveTuple),
            0x4129_1287_441b_86b9
        );
    }

    /// Writes out the byte encoding that [`FlowHasher::hash`] documents.
    fn encode(flow: &FlowKey, fields: HashFields) -> Vec<u8> {
        let v4 = |octets: &[u8; 16]| Ipv6Addr::from(*octets).to_ipv4_mapped();
        let (src, dst): (Vec<u8>, Vec<u8>) = match (v4(&flow.src), v4(&flow.dst)) {
            (Some(src), Some(dst)) => (src.octets().to_vec(), dst.octets().to_vec()),
            _ => (flow.src.to_vec(), flow.dst.to_vec()),
        };
        let mut bytes = Vec::new();
        match fields {
            HashFields::FiveTuple => {
                bytes.extend_from_slice(&src);
                bytes.extend_from_slice(&dst);
                bytes.extend_from_slice(&flow.src_port.to_be_bytes());
                bytes.extend_from_slice(&flow.dst_port.to_be_bytes());
                bytes.push(flow.protocol);
            }
            HashFields::ThreeTuple => {
                bytes.extend_from_slice(&src);
                bytes.extend_from_slice(&dst);
                bytes.push(flow.protocol);
            }
            HashFields::SourceAddress => match v4(&flow.src) {
                Some(src) => bytes.extend_from_slice(&src.octets()),
                None => bytes.extend_from_slice(&flow.src),
            },
        }
        bytes
    }

    #[test]
    fn hash_matches_streaming_siphash13() {
        // Compares the in-crate rounds with the siphasher crate over the documented byte
        // encoding, on keys and flows that vary every field: IPv6 flows, IPv4 flows and
        // flows with one IPv4-mapped address, which keep 16-byte addresses.
        for n in 0u8..64 {
            let hash_key = [n.wrapping_mul(37); 16];
            let v6 = FlowKey {
                src: [n; 16],
                dst: [n.wrapping_add(101); 16],
                src_port: u16::from(n) * 1009,
                dst_port: u16::from(n) * 7,
                protocol: n,
            };
            let v4 = FlowKey::new(
                IpAddr::V4(Ipv4Addr::new(n, 1, n.wrapping_mul(3), 7)),
                IpAddr::V4(Ipv4Addr::new(203, n, 113, n.wrapping_add(9))),
                n,
                u16::from(n) * 1013,
                u16::from(n) * 11,
            );
            let mixed = FlowKey { src: v6.src, ..v4 };
            let reference = siphasher::sip::SipHasher13::new_with_key(&hash_key);
            let hasher = FlowHasher::new(hash_key);
            for flow in [v6, v4, mixed] {
                for fields in [
                    HashFields::FiveTuple,
                    HashFields::ThreeTuple,
                    HashFields::SourceAddress,
                ] {
                    assert_eq!(
                        hasher.hash(&flow, fields),
                        reference.hash(&encode(&flow, fields)),
                        "{fields:?} {flow:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn ipv4_header_bytes_hash_like_the_key() {
        let hasher = FlowHasher::new(TEST_KEY);
        for n in 0u8..64 {
            let src = Ipv4Addr::new(n, 1, n.wrapping_mul(3), 7);
            let dst = Ipv4Addr::new(203, n, 113, n.wrapping_add(9));
            let (src_port, dst_port) = (u16::from(n) * 1013, u16::from(n) * 11 + 1);
            let flow = FlowKey::new(IpAddr::V4(src), IpAddr::V4(dst), n, src_port, dst_port);
            let mut addresses = [0u8; 8];
            addresses[..4].copy_from_slice(&src.octets());
            addresses[4..].copy_from_slice(&dst.octets());
            let mut ports = [0u8; 4];
            ports[..2].copy_from_slice(&src_port.to_be_bytes());
            ports[2..].copy_from_slice(&dst_port.to_be_bytes());
            assert_eq!(
                hasher.hash_ipv4_five_tuple(
                    u64::from_le_bytes(addresses),
                    u32::from_le_bytes(ports),
                    n
                ),
                hasher.hash(&flow, HashFields::FiveTuple),
                "{flow:?}"
            );
        }
    }

    #[test]
    fn ipv4_encodings_are_short() {
        assert_eq!(
            encode(&v4_key(), HashFields::FiveTuple).len(),
            FIVE_TUPLE_V4_LEN
        );
        assert_eq!(
            encode(&v4_key(), HashFields::ThreeTuple).len(),
            THREE_TUPLE_V4_LEN
        );
        assert_eq!(
            encode(&v4_key(), HashFields::SourceAddress).len(),
            SOURCE_ADDRESS_V4_LEN
        );
        assert_eq!(
            encode(&v6_key(), HashFields::FiveTuple).len(),
            FIVE_TUPLE_LEN
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
