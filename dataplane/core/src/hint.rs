//! The parse that [`Worker::prefetch_burst`](crate::Worker::prefetch_burst) does ahead of
//! the decision: just enough of a TCP or UDP frame to hash its flow, kept as a [`Hint`] so
//! that [`Worker::process`](crate::Worker::process) does not parse the frame again.

use std::net::IpAddr;

use crate::flow::{FlowHasher, FlowKey, HashFields};
use crate::snapshot::mapped;
use crate::wire::{self, EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, VlanTag};

pub(crate) const ETHERNET_HEADER_LEN: usize = 14;
pub(crate) const VLAN_TAG_LEN: usize = 4;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
pub(crate) const PROTOCOL_TCP: u8 = 6;
pub(crate) const PROTOCOL_UDP: u8 = 17;

/// An untagged IPv4 header without options, as its first bytes read: EtherType 0x0800,
/// then version 4 with a header length of 5 words.
const PLAIN_IPV4_MARK: [u8; 3] = [0x08, 0x00, 0x45];
/// Bytes of an untagged IPv4 frame without options up to the end of the ports.
const PLAIN_IPV4_PREFIX_LEN: usize = ETHERNET_HEADER_LEN + 20 + 4;
/// The fragment offset and more-fragments bits of the IPv4 flags and offset field.
const IPV4_FRAGMENT_BITS: u16 = 0x3fff;
const IPV4_DONT_FRAGMENT: u16 = 0x4000;

/// The parse result and flow hash of an unfragmented TCP or UDP frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hint {
    pub key: FlowKey,
    pub hash: u64,
    /// Address and length of the frame the hint was computed from. `process` uses the hint
    /// only for the very same slice.
    pub frame_addr: usize,
    pub frame_len: usize,
    /// Offsets in the frame of the IP header, the transport header and the end of the IP
    /// packet. Frames are at most 64 KiB plus headers, far below `u32::MAX`.
    pub l3_start: u32,
    pub transport_start: u32,
    pub ip_end: u32,
    /// The IPv4 don't-fragment flag, always true for IPv6 because routers never fragment
    /// IPv6 packets.
    pub dont_frag: bool,
}

impl Hint {
    #[inline]
    pub fn matches(&self, frame: &[u8]) -> bool {
        self.frame_addr == frame.as_ptr() as usize && self.frame_len == frame.len()
    }
}

/// Parses an unfragmented TCP or UDP packet just far enough to hash its flow, with the
/// same validity checks as the full decision up to the transport header, and hashes its
/// five-tuple with `hasher`. Anything else returns `None` and is parsed, and hashed if at
/// all, during `process`.
#[inline]
pub(crate) fn parse_flow(frame: &[u8], hasher: &FlowHasher) -> Option<Hint> {
    match parse_plain_ipv4(frame, hasher) {
        Some(parsed) => parsed,
        None => parse_any(frame).map(|mut hint| {
            hint.hash = hasher.hash(&hint.key, HashFields::FiveTuple);
            hint
        }),
    }
}

/// Reads an untagged IPv4 frame without options, nearly all IPv4 traffic, at fixed
/// offsets. Returns `None` for a frame of another shape, which [`parse_any`] reads, and
/// `Some` with the result for one of this shape.
#[inline]
fn parse_plain_ipv4(frame: &[u8], hasher: &FlowHasher) -> Option<Option<Hint>> {
    let prefix: &[u8; PLAIN_IPV4_PREFIX_LEN] =
        frame.get(..PLAIN_IPV4_PREFIX_LEN)?.try_into().ok()?;
    if prefix[12..15] != PLAIN_IPV4_MARK {
        return None;
    }
    let ip = ETHERNET_HEADER_LEN;
    let total_len = usize::from(u16::from_be_bytes([prefix[ip + 2], prefix[ip + 3]]));
    let flags = u16::from_be_bytes([prefix[ip + 6], prefix[ip + 7]]);
    let protocol = prefix[ip + 9];
    let ip_end = ip + total_len;
    // A total length below the header and ports, or beyond the frame, is malformed, and
    // the full decision reports it.
    if total_len < 24
        || ip_end > frame.len()
        || flags & IPV4_FRAGMENT_BITS != 0
        || (protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP)
    {
        return Some(None);
    }
    let mut src = mapped_prefix();
    src[12..].copy_from_slice(&prefix[ip + 12..ip + 16]);
    let mut dst = mapped_prefix();
    dst[12..].copy_from_slice(&prefix[ip + 16..ip + 20]);
    let ports = ip + 20;
    let address_bytes: [u8; 8] = prefix[ip + 12..ip + 20].try_into().ok()?;
    let port_bytes: [u8; 4] = prefix[ports..ports + 4].try_into().ok()?;
    let hash = hasher.hash_ipv4_five_tuple(
        u64::from_le_bytes(address_bytes),
        u32::from_le_bytes(port_bytes),
        protocol,
    );
    Some(Some(Hint {
        key: FlowKey {
            src,
            dst,
            src_port: u16::from_be_bytes([prefix[ports], prefix[ports + 1]]),
            dst_port: u16::from_be_bytes([prefix[ports + 2], prefix[ports + 3]]),
            protocol,
        },
        hash,
        frame_addr: frame.as_ptr() as usize,
        frame_len: frame.len(),
        l3_start: ip as u32,
        transport_start: ports as u32,
        ip_end: ip_end as u32,
        dont_frag: flags & IPV4_DONT_FRAGMENT != 0,
    }))
}

/// `::ffff:0.0.0.0`, the IPv4-mapped form with the address still to fill in.
#[inline]
fn mapped_prefix() -> [u8; 16] {
    let mut address = [0; 16];
    address[10] = 0xff;
    address[11] = 0xff;
    address
}

/// Reads any frame through the checked views: a VLAN tag, IPv4 options, IPv6.
fn parse_any(frame: &[u8]) -> Option<Hint> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    let (ethertype, l3_start) = match ethernet.ethertype() {
        EtherType::Vlan => {
            let tag = VlanTag::new_checked(frame.get(ETHERNET_HEADER_LEN..)?).ok()?;
            (tag.ethertype(), ETHERNET_HEADER_LEN + VLAN_TAG_LEN)
        }
        other => (other, ETHERNET_HEADER_LEN),
    };
    let l3 = frame.get(l3_start..)?;
    let (src, dst, protocol, transport_start, ip_end, dont_frag) = match ethertype {
        EtherType::Ipv4 => {
            let packet = Ipv4Packet::new_checked(l3).ok()?;
            if packet.frag_offset() != 0 || packet.more_frags() {
                return None;
            }
            (
                mapped(IpAddr::V4(packet.src_addr())),
                mapped(IpAddr::V4(packet.dst_addr())),
                u8::from(packet.protocol()),
                l3_start + packet.header_len(),
                l3_start + usize::from(packet.total_len()),
                packet.dont_frag(),
            )
        }
        EtherType::Ipv6 => {
            let packet = Ipv6Packet::new_checked(l3).ok()?;
            (
                packet.src_addr().octets(),
                packet.dst_addr().octets(),
                u8::from(packet.next_header()),
                l3_start + IPV6_HEADER_LEN,
                l3_start + IPV6_HEADER_LEN + usize::from(packet.payload_len()),
                true,
            )
        }
        _ => return None,
    };
    if protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP {
        return None;
    }
    let (src_port, dst_port) = wire::transport_ports(frame.get(transport_start..ip_end)?)?;
    Some(Hint {
        key: FlowKey {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
        },
        hash: 0,
        frame_addr: frame.as_ptr() as usize,
        frame_len: frame.len(),
        l3_start: l3_start as u32,
        transport_start: transport_start as u32,
        ip_end: ip_end as u32,
        dont_frag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an untagged IPv4 TCP frame from 192.0.2.10:40000 to 198.51.100.1:443 with DF.
    fn plain_frame() -> Vec<u8> {
        let mut frame = vec![0u8; ETHERNET_HEADER_LEN];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, PROTOCOL_TCP, 0, 0];
        ip.extend_from_slice(&[192, 0, 2, 10, 198, 51, 100, 1]);
        frame.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[..4].copy_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        tcp[12] = 0x50;
        frame.extend_from_slice(&tcp);
        frame
    }

    const HASHER_KEY: [u8; 16] = *b"spike-hint-test!";

    fn same(fast: &Hint, general: &Hint) -> bool {
        let hasher = FlowHasher::new(HASHER_KEY);
        fast.key == general.key
            && fast.hash == hasher.hash(&general.key, HashFields::FiveTuple)
            && (fast.l3_start, fast.transport_start, fast.ip_end)
                == (general.l3_start, general.transport_start, general.ip_end)
            && fast.dont_frag == general.dont_frag
            && (fast.frame_addr, fast.frame_len) == (general.frame_addr, general.frame_len)
    }

    #[test]
    fn plain_ipv4_reads_like_the_checked_views() {
        let frame = plain_frame();
        let fast = parse_plain_ipv4(&frame, &FlowHasher::new(HASHER_KEY))
            .expect("plain shape")
            .expect("a flow");
        let general = parse_any(&frame).expect("a flow");
        assert!(same(&fast, &general), "{fast:?} {general:?}");
        assert_eq!(
            fast.key,
            FlowKey::new(
                "192.0.2.10".parse().unwrap(),
                "198.51.100.1".parse().unwrap(),
                PROTOCOL_TCP,
                40000,
                443
            )
        );
        assert!(fast.dont_frag);
        assert_eq!(fast.ip_end, 54);
    }

    #[test]
    fn plain_ipv4_single_byte_changes() {
        // Every value of every header byte, one byte at a time: the fast reader either
        // leaves the frame to the general one or gives the same result.
        let frame = plain_frame();
        let hasher = FlowHasher::new(HASHER_KEY);
        for position in 0..PLAIN_IPV4_PREFIX_LEN {
            for value in 0..=255u8 {
                let mut changed = frame.clone();
                changed[position] = value;
                let general = parse_any(&changed);
                if let Some(fast) = parse_plain_ipv4(&changed, &hasher) {
                    match (fast, general) {
                        (Some(fast), Some(general)) => {
                            assert!(same(&fast, &general), "byte {position} = {value}")
                        }
                        (None, None) => {}
                        (fast, general) => {
                            panic!("byte {position} = {value}: {fast:?} against {general:?}")
                        }
                    }
                }
                assert_eq!(
                    parse_flow(&changed, &hasher).is_some(),
                    general.is_some(),
                    "byte {position} = {value}"
                );
            }
        }
    }

    #[test]
    fn short_and_cut_frames_give_no_hint() {
        let frame = plain_frame();
        let hasher = FlowHasher::new(HASHER_KEY);
        for len in 0..frame.len() {
            let cut = &frame[..len];
            assert_eq!(
                parse_flow(cut, &hasher).is_some(),
                parse_any(cut).is_some(),
                "len {len}"
            );
        }
        assert!(parse_flow(&frame[..PLAIN_IPV4_PREFIX_LEN - 1], &hasher).is_none());
    }
}
