//! Best-effort descriptions of frames the core did not classify as a flow, for the
//! trace output only: the core's verdict stays the authority on what a frame is.

use std::net::IpAddr;

use spike_core::flow::FlowKey;
use spike_core::wire::{
    self, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, Ipv6Packet, VlanTag,
};

/// Returns the EtherType and the payload of a frame, after at most one VLAN tag.
fn network_layer(frame: &[u8]) -> Option<(EtherType, &[u8])> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    match ethernet.ethertype() {
        EtherType::Vlan => {
            let tag = VlanTag::new_checked(frame.get(14..)?).ok()?;
            Some((tag.ethertype(), frame.get(18..)?))
        }
        other => Some((other, frame.get(14..)?)),
    }
}

/// Returns the addresses, protocol and (when present) ports of an IP frame.
pub fn frame_flow(frame: &[u8]) -> Option<FlowKey> {
    let (ethertype, bytes) = network_layer(frame)?;
    let (src, dst, protocol, transport) = match ethertype {
        EtherType::Ipv4 => {
            let packet = Ipv4Packet::new_checked(bytes).ok()?;
            let transport = if packet.frag_offset() == 0 {
                wire::transport_ports(packet.payload())
            } else {
                None
            };
            (
                IpAddr::V4(packet.src_addr()),
                IpAddr::V4(packet.dst_addr()),
                packet.protocol(),
                transport,
            )
        }
        EtherType::Ipv6 => {
            let packet = Ipv6Packet::new_checked(bytes).ok()?;
            let upper = wire::walk_extension_headers(packet.next_header(), packet.payload()).ok();
            let protocol = upper.map_or(packet.next_header(), |upper| upper.protocol);
            let transport = upper
                .filter(|upper| upper.fragment.is_none_or(|fragment| fragment.offset == 0))
                .and_then(|upper| packet.payload().get(upper.offset..))
                .and_then(wire::transport_ports);
            (
                IpAddr::V6(packet.src_addr()),
                IpAddr::V6(packet.dst_addr()),
                protocol,
                transport,
            )
        }
        _ => return None,
    };
    let ports = match protocol {
        IpProtocol::Tcp | IpProtocol::Udp => transport.unwrap_or((0, 0)),
        _ => (0, 0),
    };
    Some(FlowKey::new(src, dst, u8::from(protocol), ports.0, ports.1))
}

/// Largest value of the Ethernet type field that IEEE 802.3 reads as a payload length.
const MAX_LENGTH_FIELD: u16 = 1500;
/// Smallest value of the Ethernet type field that IEEE 802.3 reads as an EtherType.
const MIN_ETHERTYPE: u16 = 0x0600;

/// Returns a short name for a frame that is not IP, such as `arp`, `ethertype 0x88cc` or
/// `802.1ad service tag, inner ethertype 0x0800`.
pub fn frame_kind(frame: &[u8]) -> Option<String> {
    let outer = EthernetFrame::new_checked(frame).ok()?.ethertype();
    let inner = match outer {
        EtherType::Vlan | EtherType::QinQ => frame
            .get(14..)
            .and_then(|bytes| VlanTag::new_checked(bytes).ok())
            .map(|tag| tag.ethertype()),
        _ => None,
    };
    let is_tag = |ethertype| matches!(ethertype, EtherType::Vlan | EtherType::QinQ);
    Some(match (outer, inner) {
        // The core reads through one 802.1Q tag, so the type inside it names the frame.
        (EtherType::Vlan, Some(inner)) if !is_tag(inner) => type_field_name(inner),
        (outer, Some(inner)) => {
            format!(
                "{}, inner {}",
                type_field_name(outer),
                type_field_name(inner)
            )
        }
        (outer, None) => type_field_name(outer),
    })
}

/// Names the value of an Ethernet or VLAN tag's type field. Values up to 1500 are an
/// IEEE 802.3 payload length, and values from 1501 to 0x05ff are undefined.
fn type_field_name(ethertype: EtherType) -> String {
    match ethertype {
        EtherType::Arp => "arp".to_owned(),
        EtherType::Vlan => "802.1Q tag".to_owned(),
        EtherType::QinQ => "802.1ad service tag".to_owned(),
        other => match u16::from(other) {
            length @ ..=MAX_LENGTH_FIELD => {
                format!("802.3 length field {length}, not an EtherType")
            }
            value @ ..MIN_ETHERTYPE => {
                format!("type field 0x{value:04x}, neither an 802.3 length nor an EtherType")
            }
            value => format!("ethertype 0x{value:04x}"),
        },
    }
}

/// The parts of a flow that the captured bytes of a cut frame contain. Each part that the
/// capture tool removed is `None`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PartialFlow {
    pub protocol: Option<u8>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

impl From<&FlowKey> for PartialFlow {
    fn from(flow: &FlowKey) -> Self {
        PartialFlow {
            protocol: Some(flow.protocol),
            src: Some(flow.src_addr()),
            dst: Some(flow.dst_addr()),
            src_port: Some(flow.src_port),
            dst_port: Some(flow.dst_port),
        }
    }
}

/// Reads the protocol, addresses and ports of an IP frame that the capture tool cut short.
/// Each part comes from its own bytes, so a part beyond the cut is `None` instead of
/// zeros.
pub fn cut_frame_flow(frame: &[u8]) -> Option<PartialFlow> {
    let (ethertype, bytes) = network_layer(frame)?;
    let version = bytes.first()? >> 4;
    match (ethertype, version) {
        (EtherType::Ipv4, 4) => Some(cut_ipv4_flow(bytes)),
        (EtherType::Ipv6, 6) => Some(cut_ipv6_flow(bytes)),
        _ => None,
    }
}

fn cut_ipv4_flow(bytes: &[u8]) -> PartialFlow {
    let address = |range: std::ops::Range<usize>| {
        let octets: [u8; 4] = bytes.get(range)?.try_into().ok()?;
        Some(IpAddr::from(octets))
    };
    let header_len = usize::from(bytes[0] & 0x0f) * 4;
    let first_fragment = bytes
        .get(6..8)
        .is_some_and(|field| u16::from_be_bytes([field[0], field[1]]) & 0x1fff == 0);
    let transport = if header_len >= 20 && first_fragment {
        bytes.get(header_len..)
    } else {
        None
    };
    with_ports(
        PartialFlow {
            protocol: bytes.get(9).copied(),
            src: address(12..16),
            dst: address(16..20),
            ..PartialFlow::default()
        },
        transport,
    )
}

fn cut_ipv6_flow(bytes: &[u8]) -> PartialFlow {
    let address = |range: std::ops::Range<usize>| {
        let octets: [u8; 16] = bytes.get(range)?.try_into().ok()?;
        Some(IpAddr::from(octets))
    };
    let payload = bytes.get(40..).unwrap_or_default();
    // A chain of extension headers cut short hides the upper-layer protocol.
    let upper = bytes
        .get(6)
        .and_then(|next| wire::walk_extension_headers(IpProtocol::from(*next), payload).ok());
    let transport = upper
        .filter(|upper| upper.fragment.is_none_or(|fragment| fragment.offset == 0))
        .and_then(|upper| payload.get(upper.offset..));
    with_ports(
        PartialFlow {
            protocol: upper.map(|upper| u8::from(upper.protocol)),
            src: address(8..24),
            dst: address(24..40),
            ..PartialFlow::default()
        },
        transport,
    )
}

/// Adds the ports of a TCP or UDP header to `flow`, each when its two bytes are present.
fn with_ports(mut flow: PartialFlow, transport: Option<&[u8]>) -> PartialFlow {
    if matches!(flow.protocol, Some(6 | 17)) {
        let port = |at: usize| {
            let field = transport?.get(at..at + 2)?;
            Some(u16::from_be_bytes([field[0], field[1]]))
        };
        flow.src_port = port(0);
        flow.dst_port = port(2);
    }
    flow
}
