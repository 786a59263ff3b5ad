//! The parse that [`Worker::prefetch_burst`](crate::Worker::prefetch_burst) does ahead of
//! the decision: just enough of a TCP or UDP frame to hash its flow, kept as a [`Hint`] so
//! that [`Worker::process`](crate::Worker::process) does not parse the frame again.

use std::net::IpAddr;

use crate::flow::{FlowHasher, FlowKey, HashFields};
use crate::snapshot::{is_ipv4_mapped, mapped};
use crate::wire::{self, EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, VlanTag};

pub(crate) const ETHERNET_HEADER_LEN: usize = 14;
pub(crate) const VLAN_TAG_LEN: usize = 4;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
pub(crate) const PROTOCOL_TCP: u8 = 6;
pub(crate) const PROTOCOL_UDP: u8 = 17;

const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
const ETHERTYPE_VLAN: [u8; 2] = [0x81, 0x00];
/// The first byte of an IPv4 header without options: version 4, header length 5 words.
const IPV4_PLAIN_FIRST_BYTE: u8 = 0x45;
/// An untagged frame's EtherType and first IP byte when it carries such a header.
const UNTAGGED_PLAIN_IPV4: [u8; 3] = [0x08, 0x00, IPV4_PLAIN_FIRST_BYTE];
/// Bytes of an IPv4 header without options plus the transport ports.
const PLAIN_IPV4_PREFIX_LEN: usize = 20 + 4;
/// Bytes of an IPv6 header plus the transport ports.
const PLAIN_IPV6_PREFIX_LEN: usize = IPV6_HEADER_LEN + 4;
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
#[cfg(test)]
pub(crate) fn parse_flow(frame: &[u8], hasher: &FlowHasher) -> Option<Hint> {
    let mut hint = None;
    parse_flow_into(frame, hasher, &mut hint);
    hint
}

/// Stores what [`parse_flow`] returns in `slot`. Each shape of frame writes `slot` in its
/// own branch, so that the common plain IPv4 case stores its fields straight from
/// registers instead of through a result shared with the other shapes.
#[inline]
pub(crate) fn parse_flow_into(frame: &[u8], hasher: &FlowHasher, slot: &mut Option<Hint>) {
    match parse_plain_ipv4(frame, hasher) {
        Some(parsed) => *slot = parsed,
        None => parse_other_into(frame, hasher, slot),
    }
}

/// Stores the hint of a frame that is not plain IPv4 in `slot`: IPv6 without extension
/// headers at fixed offsets, anything else through [`parse_any`]. Out of line because
/// plain IPv4 is the common shape.
#[inline(never)]
fn parse_other_into(frame: &[u8], hasher: &FlowHasher, slot: &mut Option<Hint>) {
    match parse_plain_ipv6(frame, hasher) {
        Some(parsed) => *slot = parsed,
        None => parse_any_into(frame, hasher, slot),
    }
}

/// Stores the result of [`parse_any`], hashed, in `slot`.
fn parse_any_into(frame: &[u8], hasher: &FlowHasher, slot: &mut Option<Hint>) {
    *slot = parse_any(frame).map(|mut hint| {
        hint.hash = hasher.hash(&hint.key, HashFields::FiveTuple);
        hint
    });
}

/// Reads an IPv4 frame without options, untagged or with one VLAN tag, the common shape
/// of IPv4 traffic, at fixed offsets. Returns `None` for a frame of another shape, which
/// [`parse_any`] reads, and `Some` with the result for one of this shape.
#[inline]
fn parse_plain_ipv4(frame: &[u8], hasher: &FlowHasher) -> Option<Option<Hint>> {
    // The EtherType and the first IP byte in one comparison for the untagged case, and
    // a constant offset for each call, so that the reads compile to fixed offsets.
    let head: &[u8; ETHERNET_HEADER_LEN + 1] =
        frame.get(..ETHERNET_HEADER_LEN + 1)?.try_into().ok()?;
    if head[12..] == UNTAGGED_PLAIN_IPV4 {
        return parse_plain_ipv4_at(frame, ETHERNET_HEADER_LEN, hasher);
    }
    if head[12..14] == ETHERTYPE_VLAN && frame.get(16..18)? == ETHERTYPE_IPV4 {
        return parse_plain_ipv4_at(frame, ETHERNET_HEADER_LEN + VLAN_TAG_LEN, hasher);
    }
    None
}

/// Reads the IPv4 header without options that starts at `ip` in `frame`, as
/// [`parse_plain_ipv4`] describes.
#[inline(always)]
fn parse_plain_ipv4_at(frame: &[u8], ip: usize, hasher: &FlowHasher) -> Option<Option<Hint>> {
    let header: &[u8; PLAIN_IPV4_PREFIX_LEN] =
        frame.get(ip..ip + PLAIN_IPV4_PREFIX_LEN)?.try_into().ok()?;
    if header[0] != IPV4_PLAIN_FIRST_BYTE {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let flags = u16::from_be_bytes([header[6], header[7]]);
    let protocol = header[9];
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
    src[12..].copy_from_slice(&header[12..16]);
    let mut dst = mapped_prefix();
    dst[12..].copy_from_slice(&header[16..20]);
    let address_bytes: [u8; 8] = header[12..20].try_into().ok()?;
    let port_bytes: [u8; 4] = header[20..24].try_into().ok()?;
    let hash = hasher.hash_ipv4_five_tuple(
        u64::from_le_bytes(address_bytes),
        u32::from_le_bytes(port_bytes),
        protocol,
    );

    Some(Some(Hint {
        key: FlowKey {
            src,
            dst,
            src_port: u16::from_be_bytes([header[20], header[21]]),
            dst_port: u16::from_be_bytes([header[22], header[23]]),
            protocol,
        },
        hash,
        frame_addr: frame.as_ptr() as usize,
        frame_len: frame.len(),
        l3_start: ip as u32,
        transport_start: (ip + 20) as u32,
        ip_end: ip_end as u32,
        dont_frag: flags & IPV4_DONT_FRAGMENT != 0,
    }))
}

/// Reads an IPv6 frame whose next header is the transport header, untagged or with one
/// VLAN tag, at fixed offsets. Returns `None` for a frame of another shape, which
/// [`parse_any`] reads, and `Some` with the result for one of this shape.
#[inline]
fn parse_plain_ipv6(frame: &[u8], hasher: &FlowHasher) -> Option<Option<Hint>> {
    let head: &[u8; ETHERNET_HEADER_LEN + VLAN_TAG_LEN] = frame
        .get(..ETHERNET_HEADER_LEN + VLAN_TAG_LEN)?
        .try_into()
        .ok()?;
    if head[12..14] == ETHERTYPE_IPV6 {
        return parse_plain_ipv6_at(frame, ETHERNET_HEADER_LEN, hasher);
    }
    if head[12..14] == ETHERTYPE_VLAN && head[16..18] == ETHERTYPE_IPV6 {
        return parse_plain_ipv6_at(frame, ETHERNET_HEADER_LEN + VLAN_TAG_LEN, hasher);
    }
    None
}

/// Reads the IPv6 header that starts at `ip` in `frame`, as [`parse_plain_ipv6`]
/// describes.
#[inline(always)]
fn parse_plain_ipv6_at(frame: &[u8], ip: usize, hasher: &FlowHasher) -> Option<Option<Hint>> {
    let header: &[u8; PLAIN_IPV6_PREFIX_LEN] =
        frame.get(ip..ip + PLAIN_IPV6_PREFIX_LEN)?.try_into().ok()?;
    let protocol = header[6];
    if header[0] >> 4 != 6 || (protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP) {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let ip_end = ip + IPV6_HEADER_LEN + payload_len;
    let src: [u8; 16] = header[8..24].try_into().ok()?;
    let dst: [u8; 16] = header[24..40].try_into().ok()?;
    // A payload too short for the ports or beyond the frame is malformed, and the full
    // decision reports it. An IPv4-mapped destination belongs to no service, and the full
    // decision leaves it to the kernel.
    if payload_len < 4 || ip_end > frame.len() || is_ipv4_mapped(&dst) {
        return Some(None);
    }

    let key = FlowKey {
        src,
        dst,
        src_port: u16::from_be_bytes([header[40], header[41]]),
        dst_port: u16::from_be_bytes([header[42], header[43]]),
        protocol,
    };
    Some(Some(Hint {
        hash: hasher.hash(&key, HashFields::FiveTuple),
        key,
        frame_addr: frame.as_ptr() as usize,
        frame_len: frame.len(),
        l3_start: ip as u32,
        transport_start: (ip + IPV6_HEADER_LEN) as u32,
        ip_end: ip_end as u32,
        dont_frag: true,
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
            if is_ipv4_mapped(&packet.dst_addr().octets()) {
                return None;
            }
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

    /// Builds an IPv4 TCP frame from 192.0.2.10:40000 to 198.51.100.1:443 with DF,
    /// untagged or with VLAN tag 6.
    fn plain_frame(tagged: bool) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        if tagged {
            frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x06]);
        }
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, PROTOCOL_TCP, 0, 0];
        ip.extend_from_slice(&[192, 0, 2, 10, 198, 51, 100, 1]);
        frame.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[..4].copy_from_slice(&[0x9c, 0x40, 0x01, 0xbb]);
        tcp[12] = 0x50;
        frame.extend_from_slice(&tcp);
        frame
    }

    /// Builds an IPv6 UDP frame from [2001:db8::10]:40000 to [2001:db8:100::1]:53,
    /// untagged or with VLAN tag 6.
    fn plain_frame_v6(tagged: bool) -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        if tagged {
            frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x06]);
        }
        frame.extend_from_slice(&ETHERTYPE_IPV6);
        frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 12, PROTOCOL_UDP, 64]);
        let src: std::net::Ipv6Addr = "2001:db8::10".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8:100::1".parse().unwrap();
        frame.extend_from_slice(&src.octets());
        frame.extend_from_slice(&dst.octets());
        frame.extend_from_slice(&[0x9c, 0x40, 0x00, 0x35, 0, 12, 0, 0]);
        frame.extend_from_slice(b"test");
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

    /// A fixed-offset reader, the frame it reads, and the flow, transport offset and IP
    /// packet length it must find.
    type ReaderCase = (
        fn(&[u8], &FlowHasher) -> Option<Option<Hint>>,
        fn(bool) -> Vec<u8>,
        FlowKey,
        u32,
        u32,
    );

    #[test]
    fn plain_readers_match_checked_views() {
        let cases: [ReaderCase; 2] = [
            (
                parse_plain_ipv4,
                plain_frame,
                FlowKey::new(
                    "192.0.2.10".parse().unwrap(),
                    "198.51.100.1".parse().unwrap(),
                    PROTOCOL_TCP,
                    40000,
                    443,
                ),
                20,
                40,
            ),
            (
                parse_plain_ipv6,
                plain_frame_v6,
                FlowKey::new(
                    "2001:db8::10".parse().unwrap(),
                    "2001:db8:100::1".parse().unwrap(),
                    PROTOCOL_UDP,
                    40000,
                    53,
                ),
                40,
                52,
            ),
        ];
        for (reader, build, key, transport_offset, ip_len) in cases {
            for (tagged, l3_start) in [(false, 14), (true, 18)] {
                let frame = build(tagged);
                let fast = reader(&frame, &FlowHasher::new(HASHER_KEY))
                    .expect("plain shape")
                    .expect("a flow");
                let general = parse_any(&frame).expect("a flow");
                assert!(same(&fast, &general), "{fast:?} {general:?}");
                assert_eq!(fast.key, key);
                assert!(fast.dont_frag);
                assert_eq!(fast.l3_start, l3_start);
                assert_eq!(fast.transport_start, l3_start + transport_offset);
                assert_eq!(fast.ip_end, l3_start + ip_len);
            }
        }
    }

    #[test]
    fn ipv4_mapped_destination_gives_no_hint() {
        let hasher = FlowHasher::new(HASHER_KEY);
        for tagged in [false, true] {
            let mut frame = plain_frame_v6(tagged);
            let dst = frame.len() - 12 - 16;
            frame[dst..dst + 16].copy_from_slice(&mapped("198.51.100.1".parse().unwrap()));
            assert_eq!(
                parse_plain_ipv6(&frame, &hasher).map(|hint| hint.is_some()),
                Some(false)
            );
            assert!(parse_any(&frame).is_none(), "tagged {tagged}");
        }
    }

    #[test]
    fn plain_ipv4_single_byte_changes() {
        // Every value of every header byte up to the ports, one byte at a time: the fast
        // reader either leaves the frame to the general one or gives the same result.
        for tagged in [false, true] {
            single_byte_changes(&plain_frame(tagged), 20 + 4, parse_plain_ipv4);
        }
    }

    #[test]
    fn plain_ipv6_single_byte_changes() {
        for tagged in [false, true] {
            single_byte_changes(&plain_frame_v6(tagged), 8 + 4, parse_plain_ipv6);
        }
    }

    /// Changes each byte of `frame` up to the transport ports to every value and compares
    /// `fast` with [`parse_any`]. `tail` is the length of the transport header and payload.
    fn single_byte_changes(
        frame: &[u8],
        tail: usize,
        fast: fn(&[u8], &FlowHasher) -> Option<Option<Hint>>,
    ) {
        let hasher = FlowHasher::new(HASHER_KEY);
        for position in 0..frame.len() - tail + 4 {
            for value in 0..=255u8 {
                let mut changed = frame.to_vec();
                changed[position] = value;
                let general = parse_any(&changed);
                if let Some(fast) = fast(&changed, &hasher) {
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
        let hasher = FlowHasher::new(HASHER_KEY);
        for tagged in [false, true] {
            let frame = plain_frame_v6(tagged);
            for len in 0..frame.len() {
                let cut = &frame[..len];
                assert_eq!(
                    parse_flow(cut, &hasher).is_some(),
                    parse_any(cut).is_some(),
                    "IPv6, len {len}"
                );
            }
            let frame = plain_frame(tagged);
            for len in 0..frame.len() {
                let cut = &frame[..len];
                assert_eq!(
                    parse_flow(cut, &hasher).is_some(),
                    parse_any(cut).is_some(),
                    "len {len}"
                );
            }
            // Cut inside the ports.
            assert!(parse_flow(&frame[..frame.len() - 17], &hasher).is_none());
        }
    }
}
