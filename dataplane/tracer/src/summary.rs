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

/// Returns a short name for a frame that is not IP, such as `arp` or `ethertype 0x88cc`.
pub fn frame_kind(frame: &[u8]) -> Option<String> {
    let (ethertype, _) = network_layer(frame)?;
    Some(match ethertype {
        EtherType::Arp => "arp".to_owned(),
        EtherType::Vlan | EtherType::QinQ => "vlan-in-vlan".to_owned(),
        other => format!("ethertype 0x{:04x}", u16::from(other)),
    })
}
