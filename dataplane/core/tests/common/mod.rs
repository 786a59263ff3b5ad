//! Frame builders and a base config shared by the core's integration tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use spike_core::wire::checksum;
use spike_core::wire::IpProtocol;
use spike_core::{Config, Output, Snapshot, Verdict, Worker};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0x1e, 0x00, 0x00, 0x01];
pub const SPIKE_MAC: [u8; 6] = [0x02, 0x53, 0x50, 0x00, 0x00, 0x01];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0x53, 0x50, 0x00, 0x00, 0xfe];
pub const SPIKE_VTEP_MAC: [u8; 6] = [0x02, 0x53, 0x50, 0x00, 0x00, 0x02];

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
pub const VIP_3TUPLE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
pub const VIP_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 7);

pub const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
pub const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
pub const NODE_C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 13);

pub const SECOND_NS: u64 = 1_000_000_000;

/// Services: `web` (VIP tcp 80, 5-tuple, nodes a b c), `dns` (VIP_3TUPLE udp 53,
/// 3-tuple, nodes a b c), `sticky` (VIP_SOURCE tcp 443, source address, nodes a b c),
/// `web6` (VIP6 tcp 80 over the IPv6 underlay, nodes d e) and `web6-over-v4`
/// (VIP6 udp 53 over the IPv4 underlay, nodes a b).
pub const BASE_CONFIG: &str = r#"
[node]
mac = "02:53:50:00:00:01"
ipv4 = "192.0.2.1"
ipv6 = "2001:db8::1"
gateway_mac = "02:53:50:00:00:fe"
vtep_mac = "02:53:50:00:00:02"
mtu = 1500

[vxlan]
vni = 1
port = 8472
source_port_range = [49152, 65535]
ttl = 64

[hash]
key = "00112233445566778899aabbccddeeff"

[conntrack]
capacity = 4096
fragment_capacity = 64

[conntrack.timeouts]
tcp_syn = 30
tcp_established = 900
tcp_closing = 10
udp = 300
other = 60
fragment = 30

[icmp]
too_big_per_second = 1
too_big_burst = 2

[[service]]
name = "web"
vip = "198.51.100.10"
protocol = "tcp"
port = 80

[[service.backend]]
name = "node-a"
address = "192.0.2.11"
vtep_mac = "0a:58:0a:f4:00:0a"

[[service.backend]]
name = "node-b"
address = "192.0.2.12"
vtep_mac = "0a:58:0a:f4:00:0b"

[[service.backend]]
name = "node-c"
address = "192.0.2.13"
vtep_mac = "0a:58:0a:f4:00:0c"
next_hop_mac = "02:53:50:00:00:fd"

[[service]]
name = "dns"
vip = "198.51.100.11"
protocol = "udp"
port = 53
hash = "3-tuple"

[[service.backend]]
name = "node-a"
address = "192.0.2.11"
vtep_mac = "0a:58:0a:f4:00:0a"

[[service.backend]]
name = "node-b"
address = "192.0.2.12"
vtep_mac = "0a:58:0a:f4:00:0b"

[[service.backend]]
name = "node-c"
address = "192.0.2.13"
vtep_mac = "0a:58:0a:f4:00:0c"

[[service]]
name = "sticky"
vip = "198.51.100.12"
protocol = "tcp"
port = 443
hash = "source-address"

[[service.backend]]
name = "node-a"
address = "192.0.2.11"
vtep_mac = "0a:58:0a:f4:00:0a"

[[service.backend]]
name = "node-b"
address = "192.0.2.12"
vtep_mac = "0a:58:0a:f4:00:0b"

[[service.backend]]
name = "node-c"
address = "192.0.2.13"
vtep_mac = "0a:58:0a:f4:00:0c"

[[service]]
name = "web6"
vip = "2001:db8:100::10"
protocol = "tcp"
port = 80

[[service.backend]]
name = "node-d"
address = "2001:db8::14"
vtep_mac = "0a:58:0a:f4:00:0d"

[[service.backend]]
name = "node-e"
address = "2001:db8::15"
vtep_mac = "0a:58:0a:f4:00:0e"

[[service]]
name = "web6-over-v4"
vip = "2001:db8:100::10"
protocol = "udp"
port = 53

[[service.backend]]
name = "node-a"
address = "192.0.2.11"
vtep_mac = "0a:58:0a:f4:00:0a"

[[service.backend]]
name = "node-b"
address = "192.0.2.12"
vtep_mac = "0a:58:0a:f4:00:0b"
"#;

pub fn config(text: &str) -> Config {
    text.parse().expect("test config is valid")
}

/// A worker, its snapshot and a reusable output, as one core would hold them.
pub struct Harness {
    pub config: Config,
    pub snapshot: Snapshot,
    pub worker: Worker,
    pub out: Output,
}

impl Harness {
    pub fn new(text: &str) -> Harness {
        let config = config(text);
        let snapshot = Snapshot::build(&config, 1).expect("snapshot builds");
        let worker = Worker::new(&config).expect("worker tables");
        Harness {
            config,
            snapshot,
            worker,
            out: Output::default(),
        }
    }

    pub fn base() -> Harness {
        Harness::new(BASE_CONFIG)
    }

    pub fn process(&mut self, frame: &[u8], now_ns: u64) -> Verdict {
        self.worker
            .process(&self.snapshot, frame, now_ns, &mut self.out)
    }

    /// Replaces the snapshot as the control plane would, keeping conntrack.
    pub fn swap(&mut self, text: &str) {
        let generation = self.snapshot.generation + 1;
        self.config = config(text);
        self.snapshot = Snapshot::build(&self.config, generation).expect("snapshot builds");
    }

    /// Name of the backend the last forward went to.
    pub fn backend_name(&self) -> String {
        let service = self.out.service.expect("forward has a service");
        let backend = self.out.backend.expect("forward has a backend");
        self.snapshot.services[service as usize].backends[backend as usize]
            .name
            .clone()
    }

    /// Builds the frame a forward sends: header followed by the original IP packet.
    pub fn forwarded_frame(&self, input: &[u8]) -> Vec<u8> {
        let mut frame = self.out.header().to_vec();
        frame.extend_from_slice(&input[self.out.inner.clone()]);
        frame
    }
}

pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&SPIKE_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

pub fn vlan_ethernet(vlan_id: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(4 + payload.len());
    inner.extend_from_slice(&vlan_id.to_be_bytes());
    inner.extend_from_slice(&ethertype.to_be_bytes());
    inner.extend_from_slice(payload);
    ethernet(0x8100, &inner)
}

/// IPv4 header fields the tests vary.
#[derive(Clone, Copy)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ident: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    pub offset_bytes: u16,
    pub ttl: u8,
}

impl V4 {
    pub fn to_vip(protocol: u8) -> V4 {
        V4 {
            src: CLIENT,
            dst: VIP,
            protocol,
            ident: 0x1234,
            dont_fragment: true,
            more_fragments: false,
            offset_bytes: 0,
            ttl: 57,
        }
    }
}

pub fn ipv4(fields: V4, payload: &[u8]) -> Vec<u8> {
    let total_len = (20 + payload.len()) as u16;
    let mut header = [0u8; 20];
    header[0] = 0x45;
    header[2..4].copy_from_slice(&total_len.to_be_bytes());
    header[4..6].copy_from_slice(&fields.ident.to_be_bytes());
    let mut flags_offset = fields.offset_bytes / 8;
    if fields.dont_fragment {
        flags_offset |= 0x4000;
    }
    if fields.more_fragments {
        flags_offset |= 0x2000;
    }
    header[6..8].copy_from_slice(&flags_offset.to_be_bytes());
    header[8] = fields.ttl;
    header[9] = fields.protocol;
    header[12..16].copy_from_slice(&fields.src.octets());
    header[16..20].copy_from_slice(&fields.dst.octets());
    let sum = checksum::finish(checksum::sum(&header));
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut packet = header.to_vec();
    packet.extend_from_slice(payload);
    packet
}

pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; 40];
    packet[0] = 0x60;
    packet[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    packet[6] = next_header;
    packet[7] = 61;
    packet[8..24].copy_from_slice(&src.octets());
    packet[24..40].copy_from_slice(&dst.octets());
    packet.extend_from_slice(payload);
    packet
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

pub fn tcp(src_port: u16, dst_port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut segment = vec![0u8; 20];
    segment[0..2].copy_from_slice(&src_port.to_be_bytes());
    segment[2..4].copy_from_slice(&dst_port.to_be_bytes());
    segment[4..8].copy_from_slice(&1000u32.to_be_bytes());
    segment[12] = 5 << 4;
    segment[13] = flags;
    segment[14..16].copy_from_slice(&64240u16.to_be_bytes());
    segment.extend_from_slice(payload);
    segment
}

pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0u8; 8];
    datagram[0..2].copy_from_slice(&src_port.to_be_bytes());
    datagram[2..4].copy_from_slice(&dst_port.to_be_bytes());
    datagram[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    datagram.extend_from_slice(payload);
    datagram
}

/// Builds a TCP segment from `CLIENT:src_port` to `VIP:80` in an Ethernet frame.
pub fn tcp_to_vip(src_port: u16, flags: u8) -> Vec<u8> {
    ethernet(
        0x0800,
        &ipv4(
            V4::to_vip(IpProtocol::Tcp.into()),
            &tcp(src_port, 80, flags, b""),
        ),
    )
}

/// Builds an ICMPv4 message with a valid checksum.
pub fn icmpv4(msg_type: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut message = vec![msg_type, code, 0, 0];
    message.extend_from_slice(&rest);
    message.extend_from_slice(data);
    let sum = checksum::finish(checksum::sum(&message));
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    message
}

/// Builds an ICMPv6 message with a valid checksum.
pub fn icmpv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    data: &[u8],
) -> Vec<u8> {
    let mut message = vec![msg_type, code, 0, 0];
    message.extend_from_slice(&rest);
    message.extend_from_slice(data);
    let sum = checksum::pseudo_header_v6(&src, &dst, IpProtocol::Icmpv6, message.len() as u32)
        + checksum::sum(&message);
    let sum = checksum::finish(sum);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    message
}

/// Sum-checks a buffer that contains its own ones-complement checksum.
pub fn checksum_ok(bytes: &[u8]) -> bool {
    checksum::finish(checksum::sum(bytes)) == 0
}
