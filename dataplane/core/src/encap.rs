//! VXLAN encapsulation as flannel's VXLAN backend expects it.
//!
//! The frame Spike sends to a backend node is
//! `outer Ethernet | outer IPv4 or IPv6 | UDP | VXLAN | inner Ethernet | original IP packet`.
//! The inner Ethernet header goes from Spike's VTEP MAC to the node's VtepMAC with no
//! VLAN tag, because the node's kernel VXLAN device delivers a frame only when its
//! destination is the device's own MAC. The original IP packet follows byte for byte,
//! TTL included.
//!
//! Each backend gets a template with every constant byte filled in when the snapshot is
//! built. Per packet, [`EncapTemplate::write`] copies the template and fills in lengths,
//! the IP identification, the outer UDP source port (from the flow hash, so that the
//! receiver's RSS spreads flows) and the checksums.

use std::net::IpAddr;

use crate::config::Config;
use crate::wire::checksum;
use crate::wire::{IpProtocol, MacAddr};

pub const ETHERNET_HEADER_LEN: usize = 14;
pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
pub const UDP_HEADER_LEN: usize = 8;
pub const VXLAN_HEADER_LEN: usize = 8;
const IPV6_FRAGMENT_HEADER_LEN: usize = 8;

/// Bytes between the outer IP header and the inner IP packet.
const UDP_VXLAN_ETHERNET_LEN: usize = UDP_HEADER_LEN + VXLAN_HEADER_LEN + ETHERNET_HEADER_LEN;

/// Outer headers plus inner Ethernet over an IPv6 underlay: the largest header written.
pub const MAX_HEADER_LEN: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + UDP_VXLAN_ETHERNET_LEN;

/// Bytes VXLAN adds to an inner IP packet, counted against the underlay MTU.
pub const fn ip_overhead(outer_ipv6: bool) -> usize {
    if outer_ipv6 {
        IPV6_HEADER_LEN + UDP_VXLAN_ETHERNET_LEN
    } else {
        IPV4_HEADER_LEN + UDP_VXLAN_ETHERNET_LEN
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const VXLAN_FLAG_VNI_VALID: u8 = 0x08;
const IPV4_MORE_FRAGMENTS: u16 = 0x2000;

/// Node-wide encapsulation settings, copied from the config.
#[derive(Clone, Debug)]
pub struct EncapSettings {
    pub node_mac: MacAddr,
    pub node_ipv4: Option<std::net::Ipv4Addr>,
    pub node_ipv6: Option<std::net::Ipv6Addr>,
    pub vtep_mac: MacAddr,
    pub vni: u32,
    pub port: u16,
    pub source_port_min: u16,
    pub source_port_max: u16,
    pub ttl: u8,
    pub ipv4_udp_checksum: bool,
    pub mtu: u16,
}

impl EncapSettings {
    pub fn from_config(config: &Config) -> Self {
        EncapSettings {
            node_mac: config.node.mac,
            node_ipv4: config.node.ipv4,
            node_ipv6: config.node.ipv6,
            vtep_mac: config.node.vtep_mac,
            vni: config.vxlan.vni,
            port: config.vxlan.port,
            source_port_min: config.vxlan.source_port_min,
            source_port_max: config.vxlan.source_port_max,
            ttl: config.vxlan.ttl,
            ipv4_udp_checksum: config.vxlan.ipv4_udp_checksum,
            mtu: config.node.mtu,
        }
    }

    /// Returns the outer UDP source port for a flow: within the configured range, never 0.
    #[inline]
    pub fn source_port(&self, flow_hash: u64) -> u16 {
        let span = u64::from(self.source_port_max - self.source_port_min) + 1;
        // The top bits feed the port because Maglev and conntrack consume the low ones.
        // Multiplying by the span and keeping the high 32 bits maps them evenly onto the
        // range without a division.
        self.source_port_min + (((flow_hash >> 32) * span) >> 32) as u16
    }
}

/// The constant bytes of one backend's encapsulation for one inner address family.
#[derive(Clone, Debug)]
pub struct EncapTemplate {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
    outer_ipv6: bool,
    udp_checksum: bool,
    /// Ones-complement sum of the outer IPv4 header with length, ident and checksum zero.
    ipv4_header_sum: u32,
    /// Pseudo-header sum without the length, for the outer UDP checksum.
    pseudo_header_sum: u32,
    /// The largest inner IP packet that fits the underlay MTU, computed once here because
    /// every forward compares against it.
    max_inner_len: u16,
}

impl EncapTemplate {
    /// Builds the template for packets to `vip` sent to the backend node at `backend`.
    /// Returns `None` if the node has no underlay address of the backend's family.
    pub fn new(
        settings: &EncapSettings,
        vip: IpAddr,
        backend: IpAddr,
        next_hop_mac: MacAddr,
        backend_vtep_mac: MacAddr,
    ) -> Option<Self> {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        bytes[0..6].copy_from_slice(&next_hop_mac.0);
        bytes[6..12].copy_from_slice(&settings.node_mac.0);

        let (ip_len, outer_ipv6, udp_checksum, ipv4_header_sum, pseudo_header_sum) = match backend {
            IpAddr::V4(destination) => {
                let source = settings.node_ipv4?;
                bytes[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
                let ip = &mut bytes[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV4_HEADER_LEN];
                ip[0] = 0x45;
                ip[8] = settings.ttl;
                ip[9] = u8::from(IpProtocol::Udp);
                ip[12..16].copy_from_slice(&source.octets());
                ip[16..20].copy_from_slice(&destination.octets());
                let header_sum = checksum::sum(ip);
                let pseudo = checksum::pseudo_header_v4(source, destination, IpProtocol::Udp, 0);
                (
                    IPV4_HEADER_LEN,
                    false,
                    settings.ipv4_udp_checksum,
                    header_sum,
                    pseudo,
                )
            }
            IpAddr::V6(destination) => {
                let source = settings.node_ipv6?;
                bytes[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
                let ip = &mut bytes[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV6_HEADER_LEN];
                ip[0] = 0x60;
                ip[6] = u8::from(IpProtocol::Udp);
                ip[7] = settings.ttl;
                ip[8..24].copy_from_slice(&source.octets());
                ip[24..40].copy_from_slice(&destination.octets());
                let pseudo = checksum::pseudo_header_v6(&source, &destination, IpProtocol::Udp, 0);
                // A zero UDP checksum over IPv6 makes the receiver drop the packet.
                (IPV6_HEADER_LEN, true, true, 0, pseudo)
            }
        };

        let udp_start = ETHERNET_HEADER_LEN + ip_len;
        bytes[udp_start + 2..udp_start + 4].copy_from_slice(&settings.port.to_be_bytes());

        let vxlan_start = udp_start + UDP_HEADER_LEN;
        bytes[vxlan_start] = VXLAN_FLAG_VNI_VALID;
        bytes[vxlan_start + 4..vxlan_start + 8].copy_from_slice(&(settings.vni << 8).to_be_bytes());

        let inner_start = vxlan_start + VXLAN_HEADER_LEN;
        bytes[inner_start..inner_start + 6].copy_from_slice(&backend_vtep_mac.0);
        bytes[inner_start + 6..inner_start + 12].copy_from_slice(&settings.vtep_mac.0);
        let inner_ethertype = match vip {
            IpAddr::V4(_) => ETHERTYPE_IPV4,
            IpAddr::V6(_) => ETHERTYPE_IPV6,
        };
        bytes[inner_start + 12..inner_start + 14].copy_from_slice(&inner_ethertype.to_be_bytes());

        Some(EncapTemplate {
            bytes,
            len: (inner_start + ETHERNET_HEADER_LEN) as u8,
            outer_ipv6,
            udp_checksum,
            ipv4_header_sum,
            pseudo_header_sum,
            max_inner_len: settings.mtu.saturating_sub(ip_overhead(outer_ipv6) as u16),
        })
    }

    /// Length of the header this template writes.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.len)
    }

    /// Returns whether the underlay packet is IPv6.
    #[inline]
    pub fn outer_ipv6(&self) -> bool {
        self.outer_ipv6
    }

    /// Returns the largest inner IP packet that fits the underlay MTU unfragmented.
    #[inline]
    pub fn max_inner_len(&self) -> usize {
        usize::from(self.max_inner_len)
    }

    /// Writes the full encapsulation header for `inner` (the original IP packet) into
    /// `out` and returns its length, and whether the outer UDP checksum is left to the
    /// NIC.
    ///
    /// With `udp_checksum_offload`, a UDP checksum that is due holds only the folded
    /// pseudo-header sum, the form NICs with UDP checksum offload (DPDK's
    /// `RTE_MBUF_F_TX_UDP_CKSUM`) complete; the packet is then not read.
    ///
    /// `ident` becomes the outer IPv4 identification or, over IPv6, seeds nothing: IPv6
    /// carries an identification only in a fragment header.
    #[inline(always)]
    pub fn write(
        &self,
        settings: &EncapSettings,
        inner: &[u8],
        flow_hash: u64,
        ident: u16,
        udp_checksum_offload: bool,
        out: &mut [u8; MAX_HEADER_LEN],
    ) -> (usize, bool) {
        let len = self.header_len();
        // The whole array, whatever the header's length: a copy of fixed size needs no
        // call to memcpy. Bytes past `len` are zero in the template and never sent.
        *out = self.bytes;

        let udp_len = UDP_VXLAN_ETHERNET_LEN + inner.len();
        let ip_start = ETHERNET_HEADER_LEN;
        let udp_start;
        if self.outer_ipv6 {
            udp_start = ip_start + IPV6_HEADER_LEN;
            out[ip_start + 4..ip_start + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            // The flow label lets underlay routers spread flows the way the source port
            // does for IPv4.
            let label = (flow_hash as u32) & 0x000f_ffff;
            out[ip_start + 1] = (label >> 16) as u8;
            out[ip_start + 2..ip_start + 4].copy_from_slice(&(label as u16).to_be_bytes());
        } else {
            udp_start = ip_start + IPV4_HEADER_LEN;
            let total_len = (IPV4_HEADER_LEN + udp_len) as u16;
            out[ip_start + 2..ip_start + 4].copy_from_slice(&total_len.to_be_bytes());
            out[ip_start + 4..ip_start + 6].copy_from_slice(&ident.to_be_bytes());
            let sum = self.ipv4_header_sum + u32::from(total_len) + u32::from(ident);
            let header_checksum = !checksum::fold(sum);
            out[ip_start + 10..ip_start + 12].copy_from_slice(&header_checksum.to_be_bytes());
        }

        let source_port = settings.source_port(flow_hash);
        out[udp_start..udp_start + 2].copy_from_slice(&source_port.to_be_bytes());
        out[udp_start + 4..udp_start + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        if !self.udp_checksum {
            return (len, false);
        }
        let pseudo_header = self.pseudo_header_sum + udp_len as u32;
        if udp_checksum_offload {
            let partial = checksum::fold(pseudo_header);
            out[udp_start + 6..udp_start + 8].copy_from_slice(&partial.to_be_bytes());
            return (len, true);
        }
        let mut sum = pseudo_header + checksum::sum(&out[udp_start..len]);
        // The inner packet starts 30 bytes into the UDP datagram: an even offset, so its
        // 16-bit words line up with the datagram's.
        sum += checksum::sum(inner);
        let mut udp_checksum = !checksum::fold(sum);
        if udp_checksum == 0 {
            udp_checksum = 0xffff;
        }
        out[udp_start + 6..udp_start + 8].copy_from_slice(&udp_checksum.to_be_bytes());
        (len, false)
    }
}

/// Splits an encapsulated packet that exceeds the underlay MTU into outer IP fragments
/// and passes each finished frame to `emit`.
///
/// `header` is what [`EncapTemplate::write`] produced for `inner`. Over IPv4 the outer
/// header's offset and more-fragments fields are rewritten; over IPv6 a fragment header
/// with identification `ident` is inserted. `scratch` must hold one full frame of `mtu`
/// bytes plus the Ethernet header. Returns the number of fragments emitted.
pub fn write_outer_fragments(
    header: &[u8],
    inner: &[u8],
    outer_ipv6: bool,
    mtu: usize,
    ident: u32,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> usize {
    let ip_header_len = if outer_ipv6 {
        IPV6_HEADER_LEN + IPV6_FRAGMENT_HEADER_LEN
    } else {
        IPV4_HEADER_LEN
    };
    let plain_ip_len = if outer_ipv6 {
        IPV6_HEADER_LEN
    } else {
        IPV4_HEADER_LEN
    };
    // Every fragment but the last carries a multiple of 8 payload bytes.
    let max_chunk = (mtu.saturating_sub(ip_header_len)) & !7;
    if max_chunk == 0 || scratch.len() < ETHERNET_HEADER_LEN + mtu {
        return 0;
    }

    let payload_head = &header[ETHERNET_HEADER_LEN + plain_ip_len..];
    let payload_len = payload_head.len() + inner.len();
    let mut offset = 0;
    let mut count = 0;
    while offset < payload_len {
        let chunk = (payload_len - offset).min(max_chunk);
        let more = offset + chunk < payload_len;
        let frame_len = ETHERNET_HEADER_LEN + ip_header_len + chunk;
        let frame = &mut scratch[..frame_len];

        frame[..ETHERNET_HEADER_LEN + plain_ip_len]
            .copy_from_slice(&header[..ETHERNET_HEADER_LEN + plain_ip_len]);
        let ip = &mut frame[ETHERNET_HEADER_LEN..];
        if outer_ipv6 {
            let next_header = ip[6];
            ip[4..6].copy_from_slice(&((IPV6_FRAGMENT_HEADER_LEN + chunk) as u16).to_be_bytes());
            ip[6] = u8::from(IpProtocol::Ipv6Frag);
            let fragment = &mut ip[IPV6_HEADER_LEN..IPV6_HEADER_LEN + IPV6_FRAGMENT_HEADER_LEN];
            fragment[0] = next_header;
            fragment[1] = 0;
            let offset_field = (offset as u16) | u16::from(more);
            fragment[2..4].copy_from_slice(&offset_field.to_be_bytes());
            fragment[4..8].copy_from_slice(&ident.to_be_bytes());
        } else {
            ip[2..4].copy_from_slice(&((IPV4_HEADER_LEN + chunk) as u16).to_be_bytes());
            let mut flags_offset = (offset / 8) as u16;
            if more {
                flags_offset |= IPV4_MORE_FRAGMENTS;
            }
            ip[6..8].copy_from_slice(&flags_offset.to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let header_checksum = checksum::finish(checksum::sum(&ip[..IPV4_HEADER_LEN]));
            ip[10..12].copy_from_slice(&header_checksum.to_be_bytes());
        }

        let body = &mut frame[ETHERNET_HEADER_LEN + ip_header_len..];
        copy_range(payload_head, inner, offset, body);
        emit(frame);

        offset += chunk;
        count += 1;
    }
    count
}

/// Cuts an inner IPv4 packet that is too big for one encapsulated frame into smaller
/// IPv4 fragments, the way a router on its path would. Each piece goes to `emit` behind
/// its own copy of `header`, with lengths and checksums fixed.
///
/// This is how a redirected fragment crosses to another Spike node: that node reads the
/// VNI and the inner packet of each frame it receives, so it must never see an outer
/// fragment. Each piece keeps the inner header (options included, which receivers ignore
/// in non-first fragments), the identification and the more-fragments flag of the
/// original, with offsets counted from the original's offset, so the backend's kernel
/// reassembles the datagram unchanged. Outer piece `i` takes identification
/// `ident + i`. `header` is what [`EncapTemplate::write`] produced without checksum
/// offload. `scratch` must hold `mtu` bytes plus the Ethernet header. Returns the number
/// of frames emitted, 0 when `inner` is not an IPv4 packet or `header` or `scratch` does
/// not fit.
pub fn write_inner_fragments(
    header: &[u8],
    inner: &[u8],
    outer_ipv6: bool,
    mtu: usize,
    ident: u32,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> usize {
    let Ok(packet) = crate::wire::Ipv4Packet::new_checked(inner) else {
        return 0;
    };
    let inner_header_len = packet.header_len();
    let payload = packet.payload();
    let base_units = packet.frag_offset() / 8;
    let flags = u16::from_be_bytes([inner[6], inner[7]]) & !0x1fff;
    let max_inner = mtu.saturating_sub(ip_overhead(outer_ipv6));
    // Every piece but the last carries a multiple of 8 payload bytes.
    let max_chunk = max_inner.saturating_sub(inner_header_len) & !7;
    let header_len = header.len();
    // The header of `EncapTemplate::write`: outer Ethernet, IP, UDP, VXLAN, inner Ethernet.
    let expected_header_len = ETHERNET_HEADER_LEN + ip_overhead(outer_ipv6);
    if max_chunk == 0 || header_len != expected_header_len || scratch.len() < header_len + max_inner
    {
        return 0;
    }

    let mut offset = 0;
    let mut count = 0;
    while offset < payload.len() {
        let chunk = (payload.len() - offset).min(max_chunk);
        let more = offset + chunk < payload.len();
        let inner_len = inner_header_len + chunk;
        let frame = &mut scratch[..header_len + inner_len];
        frame[..header_len].copy_from_slice(header);

        let piece = &mut frame[header_len..];
        piece[..inner_header_len].copy_from_slice(&inner[..inner_header_len]);
        piece[2..4].copy_from_slice(&(inner_len as u16).to_be_bytes());
        let mut flags_offset = flags | (base_units + (offset / 8) as u16);
        if more {
            flags_offset |= IPV4_MORE_FRAGMENTS;
        }
        piece[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        piece[10..12].copy_from_slice(&[0, 0]);
        let piece_checksum = checksum::finish(checksum::sum(&piece[..inner_header_len]));
        piece[10..12].copy_from_slice(&piece_checksum.to_be_bytes());
        piece[inner_header_len..].copy_from_slice(&payload[offset..offset + chunk]);

        finish_outer(frame, outer_ipv6, ident.wrapping_add(count as u32) as u16);
        emit(frame);
        offset += chunk;
        count += 1;
    }
    count
}

/// Sets the outer lengths, the IPv4 identification and the checksums of an encapsulated
/// frame whose inner packet was replaced. A zero outer UDP checksum over IPv4 stays zero.
fn finish_outer(frame: &mut [u8], outer_ipv6: bool, ident: u16) {
    let ip_len = if outer_ipv6 {
        IPV6_HEADER_LEN
    } else {
        IPV4_HEADER_LEN
    };
    let udp_start = ETHERNET_HEADER_LEN + ip_len;
    let udp_len = frame.len() - udp_start;

    let pseudo_header = {
        let ip = &mut frame[ETHERNET_HEADER_LEN..udp_start];
        if outer_ipv6 {
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            checksum::sum(&ip[8..40])
        } else {
            ip[2..4].copy_from_slice(&((ip_len + udp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&ident.to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let header_checksum = checksum::finish(checksum::sum(ip));
            ip[10..12].copy_from_slice(&header_checksum.to_be_bytes());
            checksum::sum(&ip[12..20])
        }
    };

    let udp = &mut frame[udp_start..];
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    if !outer_ipv6 && udp[6..8] == [0, 0] {
        return;
    }
    udp[6..8].copy_from_slice(&[0, 0]);
    let sum =
        pseudo_header + u32::from(u8::from(IpProtocol::Udp)) + udp_len as u32 + checksum::sum(udp);
    let mut udp_checksum = checksum::finish(sum);
    if udp_checksum == 0 {
        udp_checksum = 0xffff;
    }
    udp[6..8].copy_from_slice(&udp_checksum.to_be_bytes());
}

/// Copies `out.len()` bytes starting at `offset` of the concatenation `first ++ second`.
fn copy_range(first: &[u8], second: &[u8], offset: usize, out: &mut [u8]) {
    let mut written = 0;
    if offset < first.len() {
        let take = (first.len() - offset).min(out.len());
        out[..take].copy_from_slice(&first[offset..offset + take]);
        written = take;
    }
    if written < out.len() {
        let start = offset + written - first.len();
        let take = out.len() - written;
        out[written..].copy_from_slice(&second[start..start + take]);
    }
}
