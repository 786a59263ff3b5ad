//! ICMP errors: reading the flow an incoming error quotes, and building the
//! fragmentation-needed and packet-too-big replies the dataplane sends itself.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::checksum;
use crate::wire::IpProtocol;

const ETHERNET_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ICMP_HEADER_LEN: usize = 8;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

/// RFC 1812 section 4.3.2.3: an ICMPv4 error is at most 576 bytes.
const ICMPV4_MAX_LEN: usize = 576;
/// RFC 4443 section 2.4 (c): an ICMPv6 error fits the IPv6 minimum MTU of 1280 bytes.
const ICMPV6_MAX_LEN: usize = 1280;

/// Room for the largest reply: Ethernet, one VLAN tag and a 1280-byte ICMPv6 error.
pub const MAX_REPLY_LEN: usize = ETHERNET_HEADER_LEN + VLAN_TAG_LEN + ICMPV6_MAX_LEN;

const ICMPV4_DEST_UNREACHABLE: u8 = 3;
const ICMPV4_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;

/// The transport tuple of a packet quoted inside an ICMP error, as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedFlow {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Reads the quoted IPv4 header and the first 4 transport bytes (the ports).
///
/// The quote is usually cut short, so its total length is not checked against the bytes
/// present. Returns `None` for a malformed quote or a non-first fragment, which carries
/// no ports.
pub fn parse_quoted_ipv4(quote: &[u8]) -> Option<QuotedFlow> {
    let first = *quote.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN || quote.len() < header_len + 4 {
        return None;
    }
    let fragment_offset = u16::from_be_bytes([quote[6], quote[7]]) & 0x1fff;
    if fragment_offset != 0 {
        return None;
    }
    let src = Ipv4Addr::new(quote[12], quote[13], quote[14], quote[15]);
    let dst = Ipv4Addr::new(quote[16], quote[17], quote[18], quote[19]);
    let ports = &quote[header_len..header_len + 4];
    Some(QuotedFlow {
        src: src.to_ipv6_mapped().octets(),
        dst: dst.to_ipv6_mapped().octets(),
        protocol: quote[9],
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

/// Reads the quoted IPv6 header, walks its extension headers and reads the ports.
pub fn parse_quoted_ipv6(quote: &[u8]) -> Option<QuotedFlow> {
    if quote.len() < IPV6_HEADER_LEN || quote[0] >> 4 != 6 {
        return None;
    }
    let next_header = IpProtocol::from(quote[6]);
    let rest = &quote[IPV6_HEADER_LEN..];
    let upper = crate::wire::walk_extension_headers(next_header, rest).ok()?;
    if upper.fragment.is_some_and(|fragment| fragment.offset != 0) {
        return None;
    }
    let ports = rest.get(upper.offset..upper.offset + 4)?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&quote[8..24]);
    dst.copy_from_slice(&quote[24..40]);
    Some(QuotedFlow {
        src,
        dst,
        protocol: u8::from(upper.protocol),
        src_port: u16::from_be_bytes([ports[0], ports[1]]),
        dst_port: u16::from_be_bytes([ports[2], ports[3]]),
    })
}

/// Writes the Ethernet header of a reply to `frame`: back to the sender's MAC from the
/// MAC it was sent to, with the same VLAN tag. Returns the header length.
fn write_reply_ethernet(
    frame: &[u8],
    vlan: Option<[u8; 2]>,
    ethertype: u16,
    out: &mut [u8],
) -> usize {
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    match vlan {
        Some(tci) => {
            out[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
            out[14..16].copy_from_slice(&tci);
            out[16..18].copy_from_slice(&ethertype.to_be_bytes());
            ETHERNET_HEADER_LEN + VLAN_TAG_LEN
        }
        None => {
            out[12..14].copy_from_slice(&ethertype.to_be_bytes());
            ETHERNET_HEADER_LEN
        }
    }
}

/// Builds an ICMPv4 fragmentation-needed error from `vip` to the sender of `packet`
/// (the original IPv4 packet, which it quotes up to the 576-byte limit). `frame` is the
/// received frame, for the Ethernet addresses. Returns the reply's length.
#[allow(clippy::too_many_arguments)] // Each value is a distinct header field of the reply.
pub fn write_frag_needed(
    frame: &[u8],
    vlan: Option<[u8; 2]>,
    packet: &[u8],
    vip: Ipv4Addr,
    client: Ipv4Addr,
    mtu: u16,
    ident: u16,
    out: &mut [u8; MAX_REPLY_LEN],
) -> usize {
    let ip_start = write_reply_ethernet(frame, vlan, 0x0800, out);
    let quote_len = packet
        .len()
        .min(ICMPV4_MAX_LEN - IPV4_HEADER_LEN - ICMP_HEADER_LEN);
    let total_len = IPV4_HEADER_LEN + ICMP_HEADER_LEN + quote_len;

    let ip = &mut out[ip_start..ip_start + IPV4_HEADER_LEN];
    ip.fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[8] = 64;
    ip[9] = u8::from(IpProtocol::Icmp);
    ip[12..16].copy_from_slice(&vip.octets());
    ip[16..20].copy_from_slice(&client.octets());
    let header_checksum = checksum::finish(checksum::sum(ip));
    ip[10..12].copy_from_slice(&header_checksum.to_be_bytes());

    let icmp_start = ip_start + IPV4_HEADER_LEN;
    let icmp = &mut out[icmp_start..icmp_start + ICMP_HEADER_LEN + quote_len];
    icmp.fill(0);
    icmp[0] = ICMPV4_DEST_UNREACHABLE;
    icmp[1] = ICMPV4_FRAG_NEEDED;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quote_len]);
    let icmp_checksum = checksum::finish(checksum::sum(icmp));
    icmp[2..4].copy_from_slice(&icmp_checksum.to_be_bytes());

    ip_start + total_len
}

/// Builds an ICMPv6 packet-too-big error from `vip` to the sender of `packet`, quoting
/// as much of it as fits in 1280 bytes. Returns the reply's length.
pub fn write_packet_too_big(
    frame: &[u8],
    vlan: Option<[u8; 2]>,
    packet: &[u8],
    vip: &Ipv6Addr,
    client: &Ipv6Addr,
    mtu: u32,
    out: &mut [u8; MAX_REPLY_LEN],
) -> usize {
    let ip_start = write_reply_ethernet(frame, vlan, 0x86dd, out);
    let quote_len = packet
        .len()
        .min(ICMPV6_MAX_LEN - IPV6_HEADER_LEN - ICMP_HEADER_LEN);
    let icmp_len = ICMP_HEADER_LEN + quote_len;

    let ip = &mut out[ip_start..ip_start + IPV6_HEADER_LEN];
    ip.fill(0);
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    ip[6] = u8::from(IpProtocol::Icmpv6);
    ip[7] = 64;
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&client.octets());

    let icmp_start = ip_start + IPV6_HEADER_LEN;
    let icmp = &mut out[icmp_start..icmp_start + icmp_len];
    icmp.fill(0);
    icmp[0] = ICMPV6_PACKET_TOO_BIG;
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quote_len]);
    let sum = checksum::pseudo_header_v6(vip, client, IpProtocol::Icmpv6, icmp_len as u32)
        + checksum::sum(icmp);
    let icmp_checksum = checksum::finish(sum);
    icmp[2..4].copy_from_slice(&icmp_checksum.to_be_bytes());

    icmp_start + icmp_len
}
