//! Input frame -> verdict and output frame, for every forwarding rule of the core.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;
use spike_core::encap::write_outer_fragments;
use spike_core::wire::{IpProtocol, UdpPacket};
use spike_core::{DropReason, KernelReason, Selection, Verdict};

struct Case {
    description: &'static str,
    frame: Vec<u8>,
    expected: Verdict,
}

fn tcp_v4(fields: V4, src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    ethernet(0x0800, &ipv4(fields, &tcp(src_port, dst_port, flags, b"")))
}

fn stateless_cases() -> Vec<Case> {
    let tcp_protocol = u8::from(IpProtocol::Tcp);
    let udp_protocol = u8::from(IpProtocol::Udp);
    let syn_packet = ipv4(V4::to_vip(tcp_protocol), &tcp(40000, 80, SYN, b""));

    let mut bad_ihl = syn_packet.clone();
    bad_ihl[0] = 0x44;
    let mut bad_version = syn_packet.clone();
    bad_version[0] = 0x65;
    let mut long_total = syn_packet.clone();
    long_total[2..4].copy_from_slice(&200u16.to_be_bytes());
    let mut short_total = syn_packet.clone();
    short_total[2..4].copy_from_slice(&16u16.to_be_bytes());
    let mut ihl_beyond = syn_packet.clone();
    ihl_beyond[0] = 0x4f;
    ihl_beyond.truncate(40);

    let mut bad_data_offset = tcp(40000, 80, SYN, b"");
    bad_data_offset[12] = 4 << 4;
    let mut bad_udp_length = udp(40000, 53, b"query");
    bad_udp_length[4..6].copy_from_slice(&4u16.to_be_bytes());

    let arp = {
        let mut body = vec![0, 1, 8, 0, 6, 4, 0, 1];
        body.extend_from_slice(&CLIENT_MAC);
        body.extend_from_slice(&CLIENT.octets());
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&VIP.octets());
        ethernet(0x0806, &body)
    };

    let neighbor_solicitation = ethernet(
        0x86dd,
        &ipv6(
            CLIENT6,
            VIP6,
            58,
            &icmpv6(CLIENT6, VIP6, 135, 0, [0; 4], &VIP6.octets()),
        ),
    );
    let echo_v6 = ethernet(
        0x86dd,
        &ipv6(
            CLIENT6,
            VIP6,
            58,
            &icmpv6(CLIENT6, VIP6, 128, 0, [0, 1, 0, 1], b"ping"),
        ),
    );

    // Routing header type 4 with one segment left, in front of TCP.
    let mut routing = vec![6, 2, 4, 1, 0, 0, 0, 0];
    routing.extend_from_slice(&CLIENT6.octets());
    routing.extend_from_slice(&tcp(40000, 80, SYN, b""));
    let routed = ethernet(0x86dd, &ipv6(CLIENT6, VIP6, 43, &routing));

    // Nine destination-options headers: one more than the walker follows.
    let mut chain = Vec::new();
    for index in 0..9 {
        let next = if index == 8 { 6 } else { 60 };
        chain.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    chain.extend_from_slice(&tcp(40000, 80, SYN, b""));
    let long_chain = ethernet(0x86dd, &ipv6(CLIENT6, VIP6, 60, &chain));

    // Hop-by-hop after a destination-options header.
    let mut late_hop_by_hop = vec![0, 0, 1, 4, 0, 0, 0, 0];
    late_hop_by_hop.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    late_hop_by_hop.extend_from_slice(&tcp(40000, 80, SYN, b""));
    let late_hop_by_hop = ethernet(0x86dd, &ipv6(CLIENT6, VIP6, 60, &late_hop_by_hop));

    let mut v6_long_payload = ipv6(CLIENT6, VIP6, 6, &tcp(40000, 80, SYN, b""));
    v6_long_payload[4..6].copy_from_slice(&500u16.to_be_bytes());

    // An IPv6 packet to the IPv4-mapped form of an IPv4 VIP has the flow key of an IPv4
    // packet to that VIP, but the IPv4 service's backends cannot take it.
    let mapped_vip = VIP.to_ipv6_mapped();
    let to_mapped_vip = ipv6(CLIENT6, mapped_vip, 6, &tcp(40000, 80, SYN, b""));

    let mut qinq_tagged = vec![0x00, 0x05, 0x81, 0x00, 0x00, 0x06, 0x08, 0x00];
    qinq_tagged.extend_from_slice(&syn_packet);

    vec![
        Case {
            description: "IPv6 to an IPv4 VIP's mapped address goes to the kernel",
            frame: ethernet(0x86dd, &to_mapped_vip),
            expected: Verdict::Kernel(KernelReason::NotService),
        },
        Case {
            description: "IPv6 to an IPv4 VIP's mapped address, VLAN-tagged, goes to the kernel",
            frame: vlan_ethernet(6, 0x86dd, &to_mapped_vip),
            expected: Verdict::Kernel(KernelReason::NotService),
        },
        Case {
            description: "TCP SYN to a configured VIP:port is forwarded",
            frame: ethernet(0x0800, &syn_packet),
            expected: Verdict::Forward,
        },
        Case {
            description: "one 802.1Q tag is stripped and the packet forwarded",
            frame: vlan_ethernet(6, 0x0800, &syn_packet),
            expected: Verdict::Forward,
        },
        Case {
            description: "a second 802.1Q tag goes to the kernel",
            frame: ethernet(0x8100, &qinq_tagged),
            expected: Verdict::Kernel(KernelReason::DoubleVlanTag),
        },
        Case {
            description: "an 802.1ad (QinQ) outer tag goes to the kernel",
            frame: ethernet(0x88a8, &qinq_tagged),
            expected: Verdict::Kernel(KernelReason::DoubleVlanTag),
        },
        Case {
            description: "ARP goes to the kernel",
            frame: arp,
            expected: Verdict::Kernel(KernelReason::Arp),
        },
        Case {
            description: "IPv6 neighbor solicitation goes to the kernel",
            frame: neighbor_solicitation,
            expected: Verdict::Kernel(KernelReason::NeighborDiscovery),
        },
        Case {
            description: "an unknown EtherType goes to the kernel",
            frame: ethernet(0x88cc, &[0; 46]),
            expected: Verdict::Kernel(KernelReason::OtherEthertype),
        },
        Case {
            description: "TCP to an address that is no VIP goes to the kernel",
            frame: tcp_v4(
                V4 {
                    dst: NODE_A,
                    ..V4::to_vip(tcp_protocol)
                },
                40000,
                80,
                SYN,
            ),
            expected: Verdict::Kernel(KernelReason::NotService),
        },
        Case {
            description: "TCP to a VIP on a port without a service goes to the kernel",
            frame: tcp_v4(V4::to_vip(tcp_protocol), 40000, 22, SYN),
            expected: Verdict::Kernel(KernelReason::NotService),
        },
        Case {
            description: "UDP to a TCP-only VIP:port goes to the kernel",
            frame: ethernet(
                0x0800,
                &ipv4(V4::to_vip(udp_protocol), &udp(40000, 80, b"x")),
            ),
            expected: Verdict::Kernel(KernelReason::NotService),
        },
        Case {
            description: "ICMP echo to a VIP goes to the kernel",
            frame: ethernet(
                0x0800,
                &ipv4(V4::to_vip(1), &icmpv4(8, 0, [0, 1, 0, 1], b"ping")),
            ),
            expected: Verdict::Kernel(KernelReason::IcmpNotError),
        },
        Case {
            description: "ICMPv6 echo to a VIP goes to the kernel",
            frame: echo_v6,
            expected: Verdict::Kernel(KernelReason::IcmpNotError),
        },
        Case {
            description: "an IPv6 routing header with segments left goes to the kernel",
            frame: routed,
            expected: Verdict::Kernel(KernelReason::Ipv6RoutingHeader),
        },
        Case {
            description: "a frame shorter than an Ethernet header is dropped",
            frame: vec![0; 10],
            expected: Verdict::Drop(DropReason::EthernetTruncated),
        },
        Case {
            description: "an 802.1Q tag cut short is dropped",
            frame: ethernet(0x8100, &[0, 6]),
            expected: Verdict::Drop(DropReason::VlanTruncated),
        },
        Case {
            description: "an IPv4 header cut short is dropped",
            frame: ethernet(0x0800, &syn_packet[..12]),
            expected: Verdict::Drop(DropReason::Ipv4Truncated),
        },
        Case {
            description: "IPv4 with IHL 4 is dropped",
            frame: ethernet(0x0800, &bad_ihl),
            expected: Verdict::Drop(DropReason::Ipv4BadHeaderLength),
        },
        Case {
            description: "IPv4 with IHL 15 beyond the frame is dropped",
            frame: ethernet(0x0800, &ihl_beyond),
            expected: Verdict::Drop(DropReason::Ipv4Truncated),
        },
        Case {
            description: "version 6 under the IPv4 EtherType is dropped",
            frame: ethernet(0x0800, &bad_version),
            expected: Verdict::Drop(DropReason::Ipv4BadVersion),
        },
        Case {
            description: "IPv4 total length beyond the frame is dropped",
            frame: ethernet(0x0800, &long_total),
            expected: Verdict::Drop(DropReason::Ipv4BadTotalLength),
        },
        Case {
            description: "IPv4 total length below the header length is dropped",
            frame: ethernet(0x0800, &short_total),
            expected: Verdict::Drop(DropReason::Ipv4BadTotalLength),
        },
        Case {
            description: "TCP data offset below 5 is dropped",
            frame: ethernet(0x0800, &ipv4(V4::to_vip(tcp_protocol), &bad_data_offset)),
            expected: Verdict::Drop(DropReason::TransportMalformed),
        },
        Case {
            description: "TCP cut after the ports is dropped",
            frame: ethernet(
                0x0800,
                &ipv4(V4::to_vip(tcp_protocol), &tcp(40000, 80, SYN, b"")[..10]),
            ),
            expected: Verdict::Drop(DropReason::TransportMalformed),
        },
        Case {
            description: "UDP length below 8 is dropped",
            frame: ethernet(
                0x0800,
                &ipv4(
                    V4 {
                        dst: VIP_3TUPLE,
                        ..V4::to_vip(udp_protocol)
                    },
                    &bad_udp_length,
                ),
            ),
            expected: Verdict::Drop(DropReason::TransportMalformed),
        },
        Case {
            description: "IPv6 payload length beyond the frame is dropped",
            frame: ethernet(0x86dd, &v6_long_payload),
            expected: Verdict::Drop(DropReason::Ipv6BadPayloadLength),
        },
        Case {
            description: "an IPv6 header cut short is dropped",
            frame: ethernet(0x86dd, &v6_long_payload[..30]),
            expected: Verdict::Drop(DropReason::Ipv6Truncated),
        },
        Case {
            description: "nine IPv6 extension headers are dropped",
            frame: long_chain,
            expected: Verdict::Drop(DropReason::Ipv6ExtensionChainTooLong),
        },
        Case {
            description: "a hop-by-hop header after another extension header is dropped",
            frame: late_hop_by_hop,
            expected: Verdict::Drop(DropReason::Ipv6BadExtensionHeader),
        },
    ]
}

#[test]
fn stateless_verdict_table() {
    for case in stateless_cases() {
        let mut harness = Harness::base();
        let verdict = harness.process(&case.frame, 0);
        assert_eq!(verdict, case.expected, "{}", case.description);

        let counters = harness.worker.counters();
        assert_eq!(counters.rx_packets, 1, "{}: counted once", case.description);
        match case.expected {
            Verdict::Kernel(reason) => {
                assert_eq!(
                    counters.kernel_count(reason),
                    1,
                    "{}: reason counted",
                    case.description
                )
            }
            Verdict::Drop(reason) => {
                assert_eq!(
                    counters.drop_count(reason),
                    1,
                    "{}: reason counted",
                    case.description
                )
            }
            Verdict::Forward => assert_eq!(counters.forwarded, 1, "{}", case.description),
            Verdict::Reply => assert_eq!(counters.replies, 1, "{}", case.description),
            Verdict::Held => assert_eq!(counters.held, 1, "{}", case.description),
        }
    }
}

#[test]
fn forward_ipv4_encapsulation_bytes() {
    let mut harness = Harness::base();
    let frame = tcp_to_vip(40000, SYN);
    assert_eq!(harness.process(&frame, 0), Verdict::Forward);
    let output = harness.forwarded_frame(&frame);
    let backend = harness.backend_name();
    let vtep: HashMap<&str, [u8; 6]> = [
        ("node-a", [0x0a, 0x58, 0x0a, 0xf4, 0, 0x0a]),
        ("node-b", [0x0a, 0x58, 0x0a, 0xf4, 0, 0x0b]),
        ("node-c", [0x0a, 0x58, 0x0a, 0xf4, 0, 0x0c]),
    ]
    .into_iter()
    .collect();
    let node_address = match backend.as_str() {
        "node-a" => NODE_A,
        "node-b" => NODE_B,
        _ => NODE_C,
    };

    assert_eq!(
        harness.out.header().len(),
        64,
        "IPv4 underlay header length"
    );
    let next_hop: [u8; 6] = if backend == "node-c" {
        [0x02, 0x53, 0x50, 0, 0, 0xfd]
    } else {
        GATEWAY_MAC
    };
    assert_eq!(output[0..6], next_hop, "outer destination is the next hop");
    assert_eq!(output[6..12], SPIKE_MAC, "outer source is the node MAC");
    assert_eq!(output[12..14], [0x08, 0x00], "outer EtherType IPv4");

    let ip = &output[14..34];
    assert_eq!(ip[0], 0x45, "outer IPv4 version and IHL");
    assert_eq!(
        u16::from_be_bytes([ip[2], ip[3]]) as usize,
        output.len() - 14,
        "outer total length"
    );
    assert_eq!(
        ip[6] & 0x40,
        0,
        "outer DF clear so the underlay may fragment"
    );
    assert_eq!(ip[8], 64, "outer TTL from config");
    assert_eq!(ip[9], 17, "outer protocol UDP");
    assert_eq!(
        ip[12..16],
        [192, 0, 2, 1],
        "outer source is the underlay address"
    );
    assert_eq!(
        ip[16..20],
        node_address.octets(),
        "outer destination is the node"
    );
    assert!(checksum_ok(ip), "outer IPv4 header checksum");

    let udp_header = &output[34..42];
    let source_port = u16::from_be_bytes([udp_header[0], udp_header[1]]);
    assert!(
        source_port >= 49152,
        "UDP source port {source_port} in the default range"
    );
    assert_eq!(
        u16::from_be_bytes([udp_header[2], udp_header[3]]),
        8472,
        "UDP 8472"
    );
    assert_eq!(
        u16::from_be_bytes([udp_header[4], udp_header[5]]) as usize,
        output.len() - 34,
        "UDP length"
    );
    assert_eq!(
        udp_header[6..8],
        [0, 0],
        "outer UDP checksum zero over IPv4 by default"
    );

    assert_eq!(
        output[42..50],
        [0x08, 0, 0, 0, 0, 0, 1, 0],
        "VXLAN flags 0x08, VNI 1"
    );
    assert_eq!(
        output[50..56],
        vtep[backend.as_str()],
        "inner destination is the VtepMAC"
    );
    assert_eq!(
        output[56..62],
        SPIKE_VTEP_MAC,
        "inner source is Spike's VTEP MAC"
    );
    assert_eq!(
        output[62..64],
        [0x08, 0x00],
        "inner EtherType IPv4, no VLAN tag"
    );
    assert_eq!(
        output[64..],
        frame[14..],
        "original IP packet byte-identical, TTL untouched"
    );
}

#[test]
fn forward_strips_vlan_and_padding() {
    let mut harness = Harness::base();
    let packet = ipv4(V4::to_vip(6), &tcp(40000, 80, SYN, b""));
    let mut frame = vlan_ethernet(6, 0x0800, &packet);
    frame.extend_from_slice(&[0xee; 6]);
    assert_eq!(harness.process(&frame, 0), Verdict::Forward);
    assert_eq!(
        harness.out.inner,
        18..18 + packet.len(),
        "inner range skips tag and padding"
    );
    let output = harness.forwarded_frame(&frame);
    assert_eq!(
        output[62..64],
        [0x08, 0x00],
        "inner Ethernet carries no VLAN tag"
    );
    assert_eq!(output[64..], packet[..], "padding is not forwarded");
}

#[test]
fn forward_ipv6_underlay_checksum() {
    let mut harness = Harness::base();
    let frame = ethernet(
        0x86dd,
        &ipv6(CLIENT6, VIP6, 6, &tcp(40000, 80, SYN, b"hello")),
    );
    assert_eq!(harness.process(&frame, 0), Verdict::Forward);
    let output = harness.forwarded_frame(&frame);
    assert_eq!(
        harness.out.header().len(),
        84,
        "IPv6 underlay header length"
    );
    assert_eq!(output[12..14], [0x86, 0xdd], "outer EtherType IPv6");
    assert_eq!(output[14 + 6], 17, "outer next header UDP");
    assert_eq!(output[14 + 7], 64, "outer hop limit from config");
    assert_eq!(output[54 + 2..54 + 4], 8472u16.to_be_bytes(), "UDP 8472");
    let outer = spike_core::wire::Ipv6Packet::new_checked(&output[14..]).expect("outer IPv6");
    let udp = UdpPacket::new_checked(outer.payload()).expect("outer UDP");
    assert_ne!(udp.checksum(), 0, "UDP checksum over IPv6 is never zero");
    assert!(
        udp.verify_checksum_v6(&outer.src_addr(), &outer.dst_addr()),
        "UDP checksum over IPv6 is valid"
    );
    assert_eq!(output[82..84], [0x86, 0xdd], "inner EtherType IPv6");
    assert_eq!(
        output[84..],
        frame[14..],
        "inner IPv6 packet byte-identical"
    );
}

#[test]
fn ipv4_udp_checksum_when_configured() {
    let text = BASE_CONFIG.replace("ttl = 64\n", "ttl = 64\nipv4_udp_checksum = true\n");
    let mut harness = Harness::new(&text);
    let frame = tcp_to_vip(40000, SYN);
    assert_eq!(harness.process(&frame, 0), Verdict::Forward);
    let output = harness.forwarded_frame(&frame);
    let outer = spike_core::wire::Ipv4Packet::new_checked(&output[14..]).expect("outer IPv4");
    let udp = UdpPacket::new_checked(outer.payload()).expect("outer UDP");
    assert_ne!(udp.checksum(), 0);
    assert!(udp.verify_checksum_v4(outer.src_addr(), outer.dst_addr()));
}

#[test]
fn ipv6_vip_over_ipv4_underlay() {
    let mut harness = Harness::base();
    let frame = ethernet(0x86dd, &ipv6(CLIENT6, VIP6, 17, &udp(40000, 53, b"q")));
    assert_eq!(harness.process(&frame, 0), Verdict::Forward);
    let output = harness.forwarded_frame(&frame);
    assert_eq!(output[12..14], [0x08, 0x00], "outer IPv4");
    assert_eq!(output[62..64], [0x86, 0xdd], "inner EtherType IPv6");
    assert_eq!(output[64..], frame[14..]);
}

#[test]
fn source_port_within_configured_range() {
    let text = BASE_CONFIG.replace(
        "source_port_range = [49152, 65535]",
        "source_port_range = [50000, 50003]",
    );
    let mut harness = Harness::new(&text);
    let mut seen = HashSet::new();
    for port in 1000..1200 {
        let frame = tcp_to_vip(port, SYN);
        assert_eq!(harness.process(&frame, 0), Verdict::Forward);
        let output = harness.forwarded_frame(&frame);
        let source_port = u16::from_be_bytes([output[34], output[35]]);
        assert!((50000..=50003).contains(&source_port), "port {source_port}");
        seen.insert(source_port);
    }
    assert_eq!(seen.len(), 4, "flows spread over the whole range");
}

#[test]
fn same_key_same_backend_on_every_node() {
    let mut node_one = Harness::base();
    let mut node_two = Harness::base();
    let other_key = BASE_CONFIG.replace(
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
    );
    let mut other = Harness::new(&other_key);
    let mut differences = 0;
    for port in 1000..1500 {
        let frame = tcp_to_vip(port, SYN);
        node_one.process(&frame, 0);
        node_two.process(&frame, 0);
        other.process(&frame, 0);
        assert_eq!(
            node_one.backend_name(),
            node_two.backend_name(),
            "port {port}"
        );
        assert_eq!(
            node_one.out.header(),
            node_two.out.header(),
            "identical encapsulation"
        );
        if node_one.backend_name() != other.backend_name() {
            differences += 1;
        }
    }
    assert!(
        differences > 100,
        "a different key spreads flows differently ({differences})"
    );
}

#[test]
fn hash_fields_per_service() {
    let mut harness = Harness::base();
    let mut backends_by_fields: HashMap<&str, HashSet<String>> = HashMap::new();
    for port in 1000..1100 {
        let five = tcp_to_vip(port, SYN);
        assert_eq!(harness.process(&five, 0), Verdict::Forward);
        backends_by_fields
            .entry("5-tuple")
            .or_default()
            .insert(harness.backend_name());

        let three = ethernet(
            0x0800,
            &ipv4(
                V4 {
                    dst: VIP_3TUPLE,
                    ..V4::to_vip(17)
                },
                &udp(port, 53, b"q"),
            ),
        );
        assert_eq!(harness.process(&three, 0), Verdict::Forward);
        backends_by_fields
            .entry("3-tuple")
            .or_default()
            .insert(harness.backend_name());

        let source = tcp_v4(
            V4 {
                dst: VIP_SOURCE,
                ..V4::to_vip(6)
            },
            port,
            443,
            SYN,
        );
        assert_eq!(harness.process(&source, 0), Verdict::Forward);
        backends_by_fields
            .entry("source")
            .or_default()
            .insert(harness.backend_name());
    }
    assert_eq!(
        backends_by_fields["5-tuple"].len(),
        3,
        "5-tuple spreads one client's ports"
    );
    assert_eq!(
        backends_by_fields["3-tuple"].len(),
        1,
        "3-tuple ignores ports"
    );
    assert_eq!(
        backends_by_fields["source"].len(),
        1,
        "source address ignores ports"
    );

    let mut sources = HashSet::new();
    for last in 1..=60u8 {
        let frame = tcp_v4(
            V4 {
                src: std::net::Ipv4Addr::new(203, 0, 113, last),
                dst: VIP_SOURCE,
                ..V4::to_vip(6)
            },
            1234,
            443,
            SYN,
        );
        harness.process(&frame, 0);
        sources.insert(harness.backend_name());
    }
    assert_eq!(sources.len(), 3, "source hashing spreads different clients");
}

#[test]
fn zero_weight_backend_gets_no_new_flows() {
    let text = BASE_CONFIG.replacen(
        "vtep_mac = \"0a:58:0a:f4:00:0b\"\n",
        "vtep_mac = \"0a:58:0a:f4:00:0b\"\nweight = 0\n",
        1,
    );
    let mut harness = Harness::new(&text);
    for port in 1000..1600 {
        assert_eq!(harness.process(&tcp_to_vip(port, SYN), 0), Verdict::Forward);
        assert_ne!(harness.backend_name(), "node-b", "port {port}");
    }
}

#[test]
fn all_backends_draining_drops_new_flows() {
    let text = BASE_CONFIG
        .replacen(
            "vtep_mac = \"0a:58:0a:f4:00:0a\"\n",
            "vtep_mac = \"0a:58:0a:f4:00:0a\"\nweight = 0\n",
            1,
        )
        .replacen(
            "vtep_mac = \"0a:58:0a:f4:00:0b\"\n",
            "vtep_mac = \"0a:58:0a:f4:00:0b\"\nweight = 0\n",
            1,
        )
        .replacen(
            "vtep_mac = \"0a:58:0a:f4:00:0c\"\n",
            "vtep_mac = \"0a:58:0a:f4:00:0c\"\nweight = 0\n",
            1,
        );
    let mut harness = Harness::new(&text);
    assert_eq!(
        harness.process(&tcp_to_vip(1000, SYN), 0),
        Verdict::Drop(DropReason::NoBackend)
    );
}

#[test]
fn conntrack_keeps_flow_on_backend() {
    let mut harness = Harness::base();
    assert_eq!(
        harness.process(&tcp_to_vip(40000, SYN), 0),
        Verdict::Forward
    );
    assert_eq!(harness.out.selection, Some(Selection::NewFlow));
    let first = harness.backend_name();
    for step in 1..5 {
        assert_eq!(
            harness.process(&tcp_to_vip(40000, ACK), step * SECOND_NS),
            Verdict::Forward
        );
        assert_eq!(harness.out.selection, Some(Selection::Tracked));
        assert_eq!(harness.backend_name(), first);
    }
}

/// Sends a SYN from each port and returns a port whose flow landed on `backend`.
fn port_on(harness: &mut Harness, backend: &str) -> u16 {
    for port in 2000..3000 {
        harness.process(&tcp_to_vip(port, SYN), 0);
        if harness.backend_name() == backend {
            return port;
        }
    }
    panic!("no flow landed on {backend}");
}

fn without_node_b(text: &str) -> String {
    text.replacen(
        "[[service.backend]]\nname = \"node-b\"\naddress = \"192.0.2.12\"\nvtep_mac = \"0a:58:0a:f4:00:0b\"\n",
        "",
        1,
    )
}

fn draining_node_b(text: &str) -> String {
    text.replacen(
        "vtep_mac = \"0a:58:0a:f4:00:0b\"\n",
        "vtep_mac = \"0a:58:0a:f4:00:0b\"\nweight = 0\n",
        1,
    )
}

#[test]
fn removed_backend_flow_is_reselected() {
    let mut harness = Harness::base();
    let port = port_on(&mut harness, "node-b");
    let stays = port_on(&mut harness, "node-a");
    harness.swap(&without_node_b(BASE_CONFIG));

    assert_eq!(
        harness.process(&tcp_to_vip(port, ACK), SECOND_NS),
        Verdict::Forward
    );
    assert_eq!(harness.out.selection, Some(Selection::Reselected));
    assert_ne!(harness.backend_name(), "node-b");
    let new_backend = harness.backend_name();
    assert_eq!(
        harness.process(&tcp_to_vip(port, ACK), 2 * SECOND_NS),
        Verdict::Forward
    );
    assert_eq!(
        harness.out.selection,
        Some(Selection::Tracked),
        "reselection is tracked"
    );
    assert_eq!(harness.backend_name(), new_backend);

    assert_eq!(
        harness.process(&tcp_to_vip(stays, ACK), SECOND_NS),
        Verdict::Forward
    );
    assert_eq!(
        harness.out.selection,
        Some(Selection::Tracked),
        "other flows stay"
    );
    assert_eq!(harness.backend_name(), "node-a");
}

#[test]
fn draining_backend_keeps_flows() {
    let mut harness = Harness::base();
    let port = port_on(&mut harness, "node-b");
    harness.swap(&draining_node_b(BASE_CONFIG));
    assert_eq!(
        harness.process(&tcp_to_vip(port, ACK), SECOND_NS),
        Verdict::Forward
    );
    assert_eq!(harness.out.selection, Some(Selection::Tracked));
    assert_eq!(
        harness.backend_name(),
        "node-b",
        "established flow stays on the draining node"
    );
}

#[test]
fn syn_on_draining_backend_is_new_flow() {
    let mut harness = Harness::base();
    let port = port_on(&mut harness, "node-b");
    harness.swap(&draining_node_b(BASE_CONFIG));
    assert_eq!(
        harness.process(&tcp_to_vip(port, SYN), SECOND_NS),
        Verdict::Forward
    );
    assert_eq!(harness.out.selection, Some(Selection::SynRebalanced));
    assert_ne!(harness.backend_name(), "node-b");
}

#[test]
fn syn_on_removed_backend_is_reselected() {
    let mut harness = Harness::base();
    let port = port_on(&mut harness, "node-b");
    harness.swap(&without_node_b(BASE_CONFIG));
    assert_eq!(
        harness.process(&tcp_to_vip(port, SYN), SECOND_NS),
        Verdict::Forward
    );
    assert_eq!(harness.out.selection, Some(Selection::Reselected));
    assert_ne!(harness.backend_name(), "node-b");
}

#[test]
fn added_backend_leaves_tracked_flows() {
    let two_nodes = without_node_b(BASE_CONFIG);
    let mut harness = Harness::new(&two_nodes);
    let mut flows = Vec::new();
    for port in 5000..5300 {
        harness.process(&tcp_to_vip(port, SYN), 0);
        flows.push((port, harness.backend_name()));
    }
    harness.swap(BASE_CONFIG);
    for (port, backend) in flows {
        assert_eq!(
            harness.process(&tcp_to_vip(port, ACK), SECOND_NS),
            Verdict::Forward
        );
        assert_eq!(harness.out.selection, Some(Selection::Tracked));
        assert_eq!(harness.backend_name(), backend, "port {port} stays");
    }
}

#[test]
fn conntrack_full_falls_back_to_maglev() {
    let text = BASE_CONFIG.replace("capacity = 4096", "capacity = 16");
    let mut harness = Harness::new(&text);
    // Every port is a new flow to this roomy harness, so it shows the pure Maglev choice.
    let mut check = Harness::base();
    let mut untracked = 0;
    for port in 1000..1400 {
        let frame = tcp_to_vip(port, SYN);
        assert_eq!(
            harness.process(&frame, 0),
            Verdict::Forward,
            "never dropped when full"
        );
        if harness.out.selection == Some(Selection::Untracked) {
            untracked += 1;
        }
        check.process(&frame, 0);
        assert_eq!(
            harness.backend_name(),
            check.backend_name(),
            "fallback is pure Maglev"
        );
    }
    assert!(untracked > 300, "most flows ran untracked ({untracked})");
    assert_eq!(
        harness
            .worker
            .counters()
            .selection_count(Selection::Untracked),
        untracked,
        "fallbacks are counted"
    );
    let counters = harness.worker.counters();
    assert_eq!(
        counters.conntrack_insert_failed, untracked,
        "failed inserts are counted"
    );
    assert_eq!(
        counters.conntrack_entries, 16,
        "the table stays at capacity"
    );
    assert_eq!(counters.conntrack_expired_replaced, 0);
    assert_eq!(harness.worker.counters().dropped(), 0);
}

#[test]
fn conntrack_counters_follow_expiry() {
    let text = BASE_CONFIG.replace("capacity = 4096", "capacity = 16");
    let mut harness = Harness::new(&text);
    for port in 1000..1016 {
        harness.process(&tcp_to_vip(port, SYN), 0);
    }
    assert_eq!(harness.worker.counters().conntrack_entries, 16);

    // The SYN timeout is 30 s: at 31 s every entry has expired, so a new flow takes the
    // slot of an expired one instead of failing.
    let later = 31 * SECOND_NS;
    harness.process(&tcp_to_vip(2000, SYN), later);
    assert_eq!(harness.out.selection, Some(Selection::NewFlow));
    let counters = harness.worker.counters();
    assert_eq!(counters.conntrack_expired_replaced, 1);
    assert_eq!(counters.conntrack_insert_failed, 0);
    assert_eq!(
        counters.conntrack_entries, 16,
        "a replacement keeps the count"
    );

    let removed = harness.worker.reap(later, usize::MAX);
    assert_eq!(removed, 15, "all but the new flow had expired");
    assert_eq!(harness.worker.counters().conntrack_entries, 1);
}

/// Checks that an entry of `class` survives just inside `timeout_s` and expires after it.
fn check_timeout(first: &[u8], later: &[u8], timeout_s: u64, label: &str) {
    let mut harness = Harness::base();
    assert_eq!(harness.process(first, 0), Verdict::Forward, "{label}");
    let inside = timeout_s * SECOND_NS - 1;
    assert_eq!(harness.process(later, inside), Verdict::Forward, "{label}");
    assert_eq!(
        harness.out.selection,
        Some(Selection::Tracked),
        "{label}: alive before timeout"
    );

    let mut harness = Harness::base();
    harness.process(first, 0);
    let after = timeout_s * SECOND_NS + 1;
    harness.process(later, after);
    assert_eq!(
        harness.out.selection,
        Some(Selection::NewFlow),
        "{label}: expired after timeout"
    );
}

#[test]
fn conntrack_timeouts_per_state() {
    let syn = tcp_to_vip(40000, SYN);
    let ack = tcp_to_vip(40000, ACK);
    let fin = tcp_to_vip(40000, FIN | ACK);
    let udp_frame = ethernet(
        0x0800,
        &ipv4(
            V4 {
                dst: VIP_3TUPLE,
                ..V4::to_vip(17)
            },
            &udp(40000, 53, b"q"),
        ),
    );

    check_timeout(&syn, &syn, 30, "SYN seen");
    check_timeout(&ack, &ack, 900, "established");
    check_timeout(&fin, &ack, 10, "FIN seen");
    check_timeout(&tcp_to_vip(40000, RST), &ack, 10, "RST seen");
    check_timeout(&udp_frame, &udp_frame, 300, "UDP");

    // An established flow moves to the closing timeout once it sends FIN.
    let mut harness = Harness::base();
    harness.process(&ack, 0);
    harness.process(&fin, SECOND_NS);
    harness.process(&ack, 12 * SECOND_NS);
    assert_eq!(
        harness.out.selection,
        Some(Selection::NewFlow),
        "closing entry expired at 10 s"
    );

    // The client's last plain ACK after its FIN keeps the entry on the closing timeout.
    let mut harness = Harness::base();
    harness.process(&ack, 0);
    harness.process(&fin, SECOND_NS);
    harness.process(&ack, 2 * SECOND_NS);
    assert_eq!(harness.out.selection, Some(Selection::Tracked));
    harness.process(&ack, 13 * SECOND_NS);
    assert_eq!(
        harness.out.selection,
        Some(Selection::NewFlow),
        "an ACK after FIN does not restore the established timeout"
    );
}

#[test]
fn fragments_follow_first_fragment() {
    let mut harness = Harness::base();
    let segment = tcp(40000, 80, ACK, &[0xab; 40]);
    let first = V4 {
        dont_fragment: false,
        more_fragments: true,
        ident: 777,
        ..V4::to_vip(6)
    };
    let frame_one = ethernet(0x0800, &ipv4(first, &segment[..24]));
    let middle = V4 {
        offset_bytes: 24,
        ..first
    };
    let frame_two = ethernet(0x0800, &ipv4(middle, &segment[24..48]));
    let last = V4 {
        offset_bytes: 48,
        more_fragments: false,
        ..first
    };
    let frame_three = ethernet(0x0800, &ipv4(last, &segment[48..]));

    // The last fragment arrives before the middle one.
    assert_eq!(harness.process(&frame_one, 0), Verdict::Forward);
    let backend = harness.backend_name();
    for frame in [&frame_three, &frame_two] {
        assert_eq!(harness.process(frame, SECOND_NS), Verdict::Forward);
        assert_eq!(harness.out.selection, Some(Selection::FragmentRecord));
        assert_eq!(harness.backend_name(), backend);
        assert_eq!(
            harness.forwarded_frame(frame)[64..],
            frame[14..],
            "fragment unchanged"
        );
    }

    // The record expires with the fragment timeout.
    assert_eq!(
        harness.process(&frame_two, 31 * SECOND_NS),
        Verdict::Drop(DropReason::FragmentWithoutRecord)
    );
}

#[test]
fn fragment_without_record() {
    let mut harness = Harness::base();
    let later = V4 {
        offset_bytes: 16,
        dont_fragment: false,
        ..V4::to_vip(6)
    };
    let five_tuple = ethernet(0x0800, &ipv4(later, &[0u8; 16]));
    assert_eq!(
        harness.process(&five_tuple, 0),
        Verdict::Drop(DropReason::FragmentWithoutRecord),
        "5-tuple service cannot place a fragment without ports"
    );
    assert_eq!(
        harness
            .worker
            .counters()
            .drop_count(DropReason::FragmentWithoutRecord),
        1
    );

    let three_tuple = ethernet(
        0x0800,
        &ipv4(
            V4 {
                dst: VIP_3TUPLE,
                protocol: 17,
                ..later
            },
            &[0u8; 16],
        ),
    );
    assert_eq!(harness.process(&three_tuple, 0), Verdict::Forward);
    assert_eq!(harness.out.selection, Some(Selection::FragmentPortless));
    let portless_backend = harness.backend_name();
    let whole = ethernet(
        0x0800,
        &ipv4(
            V4 {
                dst: VIP_3TUPLE,
                ..V4::to_vip(17)
            },
            &udp(40000, 53, b"q"),
        ),
    );
    harness.process(&whole, 0);
    assert_eq!(
        harness.backend_name(),
        portless_backend,
        "3-tuple places fragments like whole datagrams"
    );

    let no_service = ethernet(
        0x0800,
        &ipv4(
            V4 {
                protocol: 17,
                ..later
            },
            &[0u8; 16],
        ),
    );
    assert_eq!(
        harness.process(&no_service, 0),
        Verdict::Kernel(KernelReason::NotService),
        "no UDP service on the VIP: the kernel gets it"
    );
}

#[test]
fn ipv6_fragments_follow_first() {
    let mut harness = Harness::base();
    let segment = tcp(40000, 80, ACK, &[0xcd; 40]);
    let fragment = |offset: u16, more: bool, data: &[u8]| {
        let mut payload = vec![6, 0];
        payload.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        payload.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        payload.extend_from_slice(data);
        ethernet(0x86dd, &ipv6(CLIENT6, VIP6, 44, &payload))
    };
    let first = fragment(0, true, &segment[..32]);
    let second = fragment(32, false, &segment[32..]);
    assert_eq!(harness.process(&first, 0), Verdict::Forward);
    let backend = harness.backend_name();
    assert_eq!(harness.process(&second, 0), Verdict::Forward);
    assert_eq!(harness.out.selection, Some(Selection::FragmentRecord));
    assert_eq!(harness.backend_name(), backend);
}

/// Builds the quote a router sends back: the backend's reply from VIP:80 to the client.
fn quoted_reply_v4(client_port: u16) -> Vec<u8> {
    let reply = V4 {
        src: VIP,
        dst: CLIENT,
        ..V4::to_vip(6)
    };
    let packet = ipv4(reply, &tcp(80, client_port, ACK, &[0u8; 100]));
    packet[..28].to_vec()
}

#[test]
fn icmp_error_goes_to_flow_backend() {
    let router = std::net::Ipv4Addr::new(192, 0, 2, 254);
    for (msg_type, code, label) in [
        (3u8, 4u8, "fragmentation needed"),
        (11, 0, "time exceeded"),
        (3, 1, "host unreachable"),
    ] {
        let mut harness = Harness::base();
        let port = 41000;
        let icmp = icmpv4(msg_type, code, [0, 0, 0x05, 0x78], &quoted_reply_v4(port));
        let error = ethernet(
            0x0800,
            &ipv4(
                V4 {
                    src: router,
                    ..V4::to_vip(1)
                },
                &icmp,
            ),
        );

        // Empty conntrack: the reversed tuple hashes to the flow's backend.
        assert_eq!(harness.process(&error, 0), Verdict::Forward, "{label}");
        assert_eq!(harness.out.selection, Some(Selection::IcmpError), "{label}");
        assert_eq!(
            harness.forwarded_frame(&error)[64..],
            error[14..],
            "{label}: unchanged"
        );
        let from_error = harness.backend_name();
        assert_eq!(
            harness.worker.tracked_flows(),
            0,
            "{label}: errors create no entry"
        );
        harness.process(&tcp_to_vip(port, SYN), 0);
        assert_eq!(
            harness.backend_name(),
            from_error,
            "{label}: same backend as the flow"
        );
    }
}

#[test]
fn icmp_error_follows_tracked_backend() {
    let mut harness = Harness::base();
    let port = port_on(&mut harness, "node-b");
    harness.swap(&draining_node_b(BASE_CONFIG));
    let icmp = icmpv4(3, 4, [0, 0, 0x05, 0x78], &quoted_reply_v4(port));
    let error = ethernet(
        0x0800,
        &ipv4(
            V4 {
                src: CLIENT,
                ..V4::to_vip(1)
            },
            &icmp,
        ),
    );
    assert_eq!(harness.process(&error, SECOND_NS), Verdict::Forward);
    assert_eq!(
        harness.backend_name(),
        "node-b",
        "conntrack wins over Maglev"
    );
}

#[test]
fn icmpv6_packet_too_big_to_flow_backend() {
    let mut harness = Harness::base();
    let reply = ipv6(VIP6, CLIENT6, 6, &tcp(80, 42000, ACK, &[0u8; 20]));
    let router = "2001:db8:ffff::1".parse().expect("address");
    let icmp = icmpv6(router, VIP6, 2, 0, 1400u32.to_be_bytes(), &reply);
    let error = ethernet(0x86dd, &ipv6(router, VIP6, 58, &icmp));
    assert_eq!(harness.process(&error, 0), Verdict::Forward);
    assert_eq!(harness.out.selection, Some(Selection::IcmpError));
    let from_error = harness.backend_name();
    let flow = ethernet(0x86dd, &ipv6(CLIENT6, VIP6, 6, &tcp(42000, 80, SYN, b"")));
    harness.process(&flow, 0);
    assert_eq!(harness.backend_name(), from_error);
}

#[test]
fn icmpv6_quoting_mapped_vip_goes_to_kernel() {
    // The quoted reply comes from the IPv4-mapped form of an IPv4 VIP. Its flow key
    // matches that IPv4 service, whose backends cannot take an IPv6 packet.
    let mut harness = Harness::base();
    let mapped_vip = VIP.to_ipv6_mapped();
    let reply = ipv6(mapped_vip, CLIENT6, 6, &tcp(80, 42000, ACK, &[0u8; 20]));
    let router = "2001:db8:ffff::1".parse().expect("address");
    let icmp = icmpv6(router, VIP6, 2, 0, 1400u32.to_be_bytes(), &reply);
    let error = ethernet(0x86dd, &ipv6(router, VIP6, 58, &icmp));
    assert_eq!(
        harness.process(&error, 0),
        Verdict::Kernel(KernelReason::IcmpErrorNotService)
    );
}

#[test]
fn icmp_error_for_other_traffic() {
    let mut harness = Harness::base();
    let mut quote = quoted_reply_v4(41000);
    quote[20..22].copy_from_slice(&22u16.to_be_bytes());
    let icmp = icmpv4(3, 3, [0; 4], &quote);
    let error = ethernet(0x0800, &ipv4(V4::to_vip(1), &icmp));
    assert_eq!(
        harness.process(&error, 0),
        Verdict::Kernel(KernelReason::IcmpErrorNotService)
    );

    let malformed = icmpv4(3, 4, [0; 4], &[0x45, 0, 0]);
    let error = ethernet(0x0800, &ipv4(V4::to_vip(1), &malformed));
    assert_eq!(
        harness.process(&error, 0),
        Verdict::Drop(DropReason::IcmpQuoteMalformed)
    );
}

fn big_packet(dont_fragment: bool, len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len - 40];
    ethernet(
        0x0800,
        &ipv4(
            V4 {
                dont_fragment,
                ..V4::to_vip(6)
            },
            &tcp(40000, 80, ACK, &payload),
        ),
    )
}

#[test]
fn fits_mtu_exactly() {
    let mut harness = Harness::base();
    let frame = big_packet(true, 1450);
    assert_eq!(harness.process(&frame, 0), Verdict::Forward);
    assert!(!harness.out.fragment);
    assert_eq!(
        harness.forwarded_frame(&frame).len(),
        14 + 1500,
        "exactly the MTU"
    );
}

#[test]
fn too_big_with_df_gets_frag_needed() {
    let mut harness = Harness::base();
    let frame = big_packet(true, 1451);
    assert_eq!(harness.process(&frame, 0), Verdict::Reply);
    let reply = harness.out.reply().to_vec();
    assert_eq!(reply[0..6], CLIENT_MAC, "back to the sender's MAC");
    assert_eq!(reply[6..12], SPIKE_MAC);
    let ip = &reply[14..34];
    assert!(checksum_ok(ip), "IPv4 header checksum");
    assert_eq!(ip[6..8], [0, 0], "offset 0, no flags");
    assert_eq!(ip[9], 1, "ICMP");
    assert_eq!(ip[12..16], VIP.octets(), "from the VIP");
    assert_eq!(ip[16..20], CLIENT.octets(), "to the client");
    assert_eq!(
        u16::from_be_bytes([ip[2], ip[3]]) as usize,
        reply.len() - 14
    );
    let icmp = &reply[34..];
    assert!(checksum_ok(icmp), "ICMP checksum");
    assert_eq!(
        icmp[0..2],
        [3, 4],
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        1450,
        "MTU minus VXLAN overhead"
    );
    assert_eq!(
        icmp[8..36],
        frame[14..42],
        "quotes the IP header and 8 bytes"
    );
    assert!(reply.len() - 14 <= 576, "within 576 bytes");
    assert_eq!(harness.worker.counters().too_big_sent, 1);
}

#[test]
fn too_big_replies_rate_limited() {
    let mut harness = Harness::base();
    let frame = big_packet(true, 1460);
    assert_eq!(harness.process(&frame, 0), Verdict::Reply);
    assert_eq!(harness.process(&frame, 0), Verdict::Reply);
    assert_eq!(
        harness.process(&frame, 0),
        Verdict::Drop(DropReason::TooBigRateLimited),
        "burst of 2 used up"
    );
    assert_eq!(
        harness.process(&frame, SECOND_NS),
        Verdict::Reply,
        "1 per second refills"
    );
    assert_eq!(
        harness
            .worker
            .counters()
            .drop_count(DropReason::TooBigRateLimited),
        1
    );
    assert_eq!(harness.worker.counters().too_big_sent, 3);
}

#[test]
fn ipv6_too_big_gets_packet_too_big() {
    let mut harness = Harness::base();
    let payload = vec![0x11; 1431 - 40 - 20];
    let packet = ipv6(CLIENT6, VIP6, 6, &tcp(40000, 80, ACK, &payload));
    assert_eq!(packet.len(), 1431);
    let frame = vlan_ethernet(9, 0x86dd, &packet);
    assert_eq!(harness.process(&frame, 0), Verdict::Reply);
    let reply = harness.out.reply().to_vec();
    assert_eq!(
        reply[12..16],
        [0x81, 0x00, 0x00, 0x09],
        "same VLAN tag as the request"
    );
    let ip = &reply[18..58];
    assert_eq!(ip[6], 58, "ICMPv6");
    assert_eq!(ip[8..24], VIP6.octets());
    assert_eq!(ip[24..40], CLIENT6.octets());
    let icmp = &reply[58..];
    assert!(reply.len() - 18 <= 1280, "fits the IPv6 minimum MTU");
    assert_eq!(icmp[0], 2, "packet too big");
    assert_eq!(
        u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        1430,
        "1500 - 70"
    );
    let view = spike_core::wire::Icmpv6Packet::new_checked(icmp).expect("ICMPv6");
    assert!(view.verify_checksum(&VIP6, &CLIENT6), "ICMPv6 checksum");
    assert_eq!(icmp[8..48], packet[..40], "quotes the packet");
}

#[test]
fn too_big_without_df_is_outer_fragmented() {
    let mut harness = Harness::base();
    let frame = big_packet(false, 1480);
    assert_eq!(harness.process(&frame, 0), Verdict::Forward);
    assert!(harness.out.fragment);
    let inner = &frame[harness.out.inner.clone()];
    let mut fragments = Vec::new();
    let mut scratch = vec![0u8; 1600];
    let count = write_outer_fragments(
        harness.out.header(),
        inner,
        harness.out.outer_ipv6,
        harness.out.mtu,
        harness.out.fragment_ident,
        &mut scratch,
        |fragment| fragments.push(fragment.to_vec()),
    );
    assert_eq!(count, 2);
    assert_eq!(fragments.len(), 2);

    let mut reassembled = Vec::new();
    for (index, fragment) in fragments.iter().enumerate() {
        assert!(
            fragment.len() <= 14 + 1500,
            "fragment {index} within the MTU"
        );
        let ip = &fragment[14..34];
        assert!(checksum_ok(ip), "fragment {index} header checksum");
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]) as usize,
            fragment.len() - 14
        );
        let flags_offset = u16::from_be_bytes([ip[6], ip[7]]);
        assert_eq!(
            usize::from(flags_offset & 0x1fff) * 8,
            reassembled.len(),
            "offset"
        );
        assert_eq!(
            flags_offset & 0x2000 != 0,
            index == 0,
            "more-fragments only on the first"
        );
        reassembled.extend_from_slice(&fragment[34..]);
    }
    let mut expected = harness.out.header()[34..].to_vec();
    expected.extend_from_slice(inner);
    assert_eq!(
        reassembled, expected,
        "fragments carry UDP, VXLAN, inner frame"
    );
    assert_eq!(harness.worker.counters().outer_fragmented, 1);
}

#[test]
fn service_and_backend_counters() {
    let mut harness = Harness::base();
    let mut bytes_by_backend: HashMap<String, u64> = HashMap::new();
    for port in 1000..1100 {
        let frame = tcp_to_vip(port, SYN);
        harness.process(&frame, 0);
        *bytes_by_backend.entry(harness.backend_name()).or_default() += (frame.len() - 14) as u64;
    }
    harness.process(&tcp_to_vip(1, SYN)[..20], 0);
    harness.process(&tcp_v4(V4::to_vip(6), 1, 22, SYN), 0);

    let counters = harness.worker.counters();
    assert_eq!(counters.rx_packets, 102);
    assert_eq!(counters.forwarded, 100);
    assert_eq!(counters.dropped(), 1);
    assert_eq!(counters.to_kernel(), 1);
    let web = &counters.services[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.traffic.packets, 100);
    assert_eq!(web.traffic.bytes, bytes_by_backend.values().sum::<u64>());
    let service = &harness.snapshot.services[0];
    for (index, backend) in service.backends.iter().enumerate() {
        let (id, traffic) = web.backends[index];
        assert_eq!(id, backend.id);
        assert_eq!(
            traffic.bytes,
            bytes_by_backend.get(&backend.name).copied().unwrap_or(0),
            "{}",
            backend.name
        );
    }
}

#[test]
fn removed_backend_counts_stay_in_the_service() {
    let mut harness = Harness::base();
    for port in 1000..1100 {
        harness.process(&tcp_to_vip(port, SYN), 0);
    }
    let before = harness.worker.counters().services[0].clone();
    let node_b = harness.snapshot.services[0]
        .backends
        .iter()
        .find(|backend| backend.name == "node-b")
        .expect("the base config has node-b")
        .id;
    let (_, node_b_traffic) = *before
        .backends
        .iter()
        .find(|(id, _)| *id == node_b)
        .expect("node-b has counters");
    assert!(node_b_traffic.packets > 0, "node-b got no flows");

    harness.swap(&without_node_b(BASE_CONFIG));
    harness.process(&tcp_to_vip(2000, SYN), 0);
    let web = &harness.worker.counters().services[0];
    assert_eq!(web.removed, node_b_traffic);
    let backends: u64 = web
        .backends
        .iter()
        .map(|(_, traffic)| traffic.packets)
        .sum();
    assert_eq!(backends + web.removed.packets, web.traffic.packets);
    assert_eq!(web.traffic.packets, 101);
}

#[test]
fn prefetched_burst_decides_identically() {
    let mut frames = Vec::new();
    for port in 3000..3010 {
        frames.push(tcp_to_vip(port, SYN));
    }
    let syn = ipv4(V4::to_vip(6), &tcp(41000, 80, SYN, b""));
    frames.push(vlan_ethernet(6, 0x0800, &syn));
    frames.push(ethernet(
        0x0800,
        &ipv4(
            V4 {
                dst: VIP_3TUPLE,
                ..V4::to_vip(17)
            },
            &udp(41001, 53, b"query"),
        ),
    ));
    frames.push(ethernet(
        0x86dd,
        &ipv6(CLIENT6, VIP6, 17, &udp(41002, 53, b"q")),
    ));
    let mut bad_offset = tcp(41003, 80, SYN, b"");
    bad_offset[12] = 4 << 4;
    frames.push(ethernet(0x0800, &ipv4(V4::to_vip(6), &bad_offset)));
    frames.push(with_destination(
        tcp_to_vip(41004, SYN),
        [0x02, 0, 0, 0, 0, 0x99],
    ));
    frames.push(with_destination(tcp_to_vip(41005, SYN), [0xff; 6]));
    let first_fragment = V4 {
        dont_fragment: false,
        more_fragments: true,
        ident: 99,
        ..V4::to_vip(6)
    };
    frames.push(ethernet(
        0x0800,
        &ipv4(first_fragment, &tcp(41006, 80, ACK, &[1; 20])[..24]),
    ));
    frames.push(ethernet(
        0x0800,
        &ipv4(
            V4 {
                offset_bytes: 24,
                more_fragments: false,
                ..first_fragment
            },
            &[2; 16],
        ),
    ));
    frames.push(ethernet(
        0x86dd,
        &ipv6(CLIENT6, VIP6, 6, &tcp(40000, 80, SYN, b"")),
    ));
    frames.push(ethernet(0x0806, &[0; 28]));
    frames.push(vec![0; 9]);
    frames.push(big_packet(true, 1460));
    frames.push(tcp_v4(V4::to_vip(6), 1, 22, SYN));

    assert!(frames.len() <= 32, "one burst");

    // Without and with the MAC filter, which the fast path must apply too.
    for filter in [None, Some(spike_core::wire::MacAddr(SPIKE_MAC))] {
        let mut plain = Harness::base();
        let mut prefetched = Harness::base();
        plain.worker.set_mac_filter(filter);
        prefetched.worker.set_mac_filter(filter);
        prefetched
            .worker
            .prefetch_burst(&prefetched.snapshot, frames.iter().map(Vec::as_slice));
        for (index, frame) in frames.iter().enumerate() {
            let expected = plain.process(frame, 0);
            let verdict = prefetched.process(frame, 0);
            assert_eq!(verdict, expected, "frame {index}, filter {filter:?}");
            assert_eq!(
                prefetched.out.header(),
                plain.out.header(),
                "frame {index} header, filter {filter:?}"
            );
            assert_eq!(
                prefetched.out.reply(),
                plain.out.reply(),
                "frame {index} reply, filter {filter:?}"
            );
            assert_eq!(
                prefetched.out.selection, plain.out.selection,
                "frame {index} selection, filter {filter:?}"
            );
        }
        assert_eq!(
            prefetched.worker.counters(),
            plain.worker.counters(),
            "filter {filter:?}"
        );
    }

    // Hints for other frames than the ones processed are ignored, not misapplied.
    let mut mismatched = Harness::base();
    mismatched
        .worker
        .prefetch_burst(&mismatched.snapshot, frames.iter().rev().map(Vec::as_slice));
    let mut reference = Harness::base();
    for (index, frame) in frames.iter().enumerate() {
        assert_eq!(
            mismatched.process(frame, 0),
            reference.process(frame, 0),
            "frame {index}"
        );
        assert_eq!(
            mismatched.out.header(),
            reference.out.header(),
            "frame {index} header"
        );
    }
}

#[test]
fn udp_checksum_offload_leaves_pseudo_header() {
    let mut harness = Harness::base();
    harness.worker.set_udp_checksum_offload(true);
    let frame = ethernet(
        0x86dd,
        &ipv6(CLIENT6, VIP6, 6, &tcp(40000, 80, SYN, b"data")),
    );
    assert_eq!(harness.process(&frame, 0), Verdict::Forward);
    assert!(harness.out.udp_checksum_offloaded);
    let mut output = harness.forwarded_frame(&frame);

    // Complete the checksum as a NIC does: sum the datagram, starting from the
    // pseudo-header sum left in the checksum field, and store the complement.
    let datagram_start = 14 + 40;
    let partial = u16::from_be_bytes([output[datagram_start + 6], output[datagram_start + 7]]);
    assert_ne!(partial, 0, "the pseudo-header sum is in place");
    let sum = spike_core::wire::checksum::sum(&output[datagram_start..]);
    let complete = !spike_core::wire::checksum::fold(sum);
    output[datagram_start + 6..datagram_start + 8].copy_from_slice(&complete.to_be_bytes());
    let outer = spike_core::wire::Ipv6Packet::new_checked(&output[14..]).expect("outer IPv6");
    let udp = UdpPacket::new_checked(outer.payload()).expect("outer UDP");
    assert!(
        udp.verify_checksum_v6(&outer.src_addr(), &outer.dst_addr()),
        "the completed checksum is valid"
    );

    // Over IPv4 with the default zero checksum there is nothing to offload.
    assert_eq!(
        harness.process(&tcp_to_vip(40000, SYN), 0),
        Verdict::Forward
    );
    assert!(!harness.out.udp_checksum_offloaded);
}

fn with_destination(mut frame: Vec<u8>, mac: [u8; 6]) -> Vec<u8> {
    frame[0..6].copy_from_slice(&mac);
    frame
}

#[test]
fn mac_filter_drops_other_hosts_frames() {
    let mut harness = Harness::base();
    harness
        .worker
        .set_mac_filter(Some(spike_core::wire::MacAddr(SPIKE_MAC)));
    let other_host = [0x02, 0, 0, 0, 0, 0x99];
    let broadcast = [0xff; 6];

    assert_eq!(harness.process(&tcp_to_vip(1000, SYN), 0), Verdict::Forward);
    assert_eq!(
        harness.process(&with_destination(tcp_to_vip(1001, SYN), other_host), 0),
        Verdict::Drop(DropReason::OtherHostMac),
        "unicast to another MAC"
    );
    assert_eq!(
        harness.process(&with_destination(tcp_to_vip(1002, SYN), broadcast), 0),
        Verdict::Drop(DropReason::MulticastToService),
        "a flooded frame to a service"
    );
    assert_eq!(
        harness.worker.tracked_flows(),
        1,
        "filtered frames create no flow"
    );

    let mut arp_body = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp_body.extend_from_slice(&CLIENT_MAC);
    arp_body.extend_from_slice(&CLIENT.octets());
    arp_body.extend_from_slice(&[0; 6]);
    arp_body.extend_from_slice(&VIP.octets());
    let arp = with_destination(ethernet(0x0806, &arp_body), broadcast);
    assert_eq!(harness.process(&arp, 0), Verdict::Kernel(KernelReason::Arp));

    let solicited_node = "ff02::1:ff00:10".parse().expect("address");
    let solicitation = ethernet(
        0x86dd,
        &ipv6(
            CLIENT6,
            solicited_node,
            58,
            &icmpv6(CLIENT6, solicited_node, 135, 0, [0; 4], &VIP6.octets()),
        ),
    );
    let solicitation = with_destination(solicitation, [0x33, 0x33, 0xff, 0, 0, 0x10]);
    assert_eq!(
        harness.process(&solicitation, 0),
        Verdict::Kernel(KernelReason::NeighborDiscovery)
    );

    let mut unfiltered = Harness::base();
    assert_eq!(
        unfiltered.process(&with_destination(tcp_to_vip(1001, SYN), other_host), 0),
        Verdict::Forward,
        "without the filter any destination MAC is accepted, as for traced captures"
    );
}

// Fragments across Spike nodes: three nodes, 192.0.2.1 to .3, share fragments; each
// harness below is one of them. A redirected frame is produced by the sending node's
// own harness, so the receiving side decides exactly what the wire would carry.

const SPIKE_NODES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 2),
    Ipv4Addr::new(192, 0, 2, 3),
    Ipv4Addr::new(192, 0, 2, 4),
];
const REDIRECT_VNI: u32 = 4242;

fn spike_node_mac(index: usize) -> [u8; 6] {
    [0x02, 0x53, 0x50, 0x00, 0x01, index as u8 + 1]
}

/// Returns the base config of Spike node `own`, with the cluster of `members` (indexes into
/// `SPIKE_NODES`) listed in that order.
fn cluster_config(own: usize, members: &[usize]) -> String {
    let mut text = BASE_CONFIG.replacen(
        "ipv4 = \"192.0.2.1\"",
        &format!("ipv4 = \"{}\"", SPIKE_NODES[own]),
        1,
    );
    text.push_str(&format!("\n[cluster]\nredirect_vni = {REDIRECT_VNI}\n"));
    for &member in members {
        let mac = spike_node_mac(member)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        text.push_str(&format!(
            "\n[[cluster.node]]\naddress = \"{}\"\nmac = \"{mac}\"\n",
            SPIKE_NODES[member]
        ));
    }
    text
}

fn node_harness(own: usize) -> Harness {
    Harness::new(&cluster_config(own, &[0, 1, 2]))
}

/// Returns a client address whose datagrams to `dst` with `protocol` satisfy `wanted`, given
/// the designated node's address.
fn client_where(
    dst: Ipv4Addr,
    protocol: u8,
    wanted: impl Fn(&Harness, Ipv4Addr) -> bool,
) -> Ipv4Addr {
    let view = node_harness(0);
    (1..=250)
        .map(|host| Ipv4Addr::new(203, 0, 113, host))
        .find(|&client| wanted(&view, client))
        .unwrap_or_else(|| panic!("no client address fits for {dst} protocol {protocol}"))
}

fn designated(harness: &Harness, client: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> IpAddr {
    harness
        .snapshot
        .designated_node(IpAddr::V4(client), IpAddr::V4(dst), protocol)
        .expect("cluster configured")
}

/// Returns a client whose TCP datagrams to the VIP belong to Spike node `index`.
fn client_of(index: usize) -> Ipv4Addr {
    client_where(VIP, 6, |harness, client| {
        designated(harness, client, VIP, 6) == IpAddr::V4(SPIKE_NODES[index])
    })
}

/// Builds the first and the last fragment of a TCP segment from `client` to VIP:80.
fn fragment_pair(client: Ipv4Addr, ident: u16) -> (Vec<u8>, Vec<u8>) {
    let segment = tcp(40000, 80, ACK, &[0x5a; 40]);
    let first = V4 {
        src: client,
        dont_fragment: false,
        more_fragments: true,
        ident,
        ..V4::to_vip(6)
    };
    let later = V4 {
        offset_bytes: 24,
        more_fragments: false,
        ..first
    };
    (
        ethernet(0x0800, &ipv4(first, &segment[..24])),
        ethernet(0x0800, &ipv4(later, &segment[24..])),
    )
}

/// What Spike node `from` sends for `frame`, which it must redirect.
fn redirected_by(from: usize, frame: &[u8]) -> Vec<u8> {
    let mut sender = node_harness(from);
    assert_eq!(sender.process(frame, 0), Verdict::Forward);
    assert_eq!(sender.out.selection, Some(Selection::Redirected));
    sender.forwarded_frame(frame)
}

/// Builds a VXLAN frame from `src` to Spike node 1 (192.0.2.2) with `vni` around `inner`.
fn vxlan_to_node_1(src: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    let outer = V4 {
        src,
        dst: SPIKE_NODES[1],
        dont_fragment: false,
        ..V4::to_vip(17)
    };
    ethernet(0x0800, &ipv4(outer, &udp(50000, 8472, &payload)))
}

/// Builds an inner Ethernet frame around an IP packet, as a redirect carries it.
fn inner_frame(ethertype: u16, packet: &[u8]) -> Vec<u8> {
    let mut frame = spike_node_mac(1).to_vec();
    frame.extend_from_slice(&SPIKE_VTEP_MAC);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(packet);
    frame
}

struct ClusterCase {
    description: &'static str,
    /// The Spike node (index into `SPIKE_NODES`) that receives the frames.
    node: usize,
    /// Frames in arrival order: every one but the last must be forwarded.
    frames: Vec<Vec<u8>>,
    expected: Verdict,
    selection: Option<Selection>,
    /// The Spike node the last frame is redirected to, if any.
    redirect_to: Option<usize>,
}

fn cluster_cases() -> Vec<ClusterCase> {
    let own = client_of(0);
    let (own_first, _) = fragment_pair(own, 11);
    let peer = client_of(1);
    let (peer_first, peer_later) = fragment_pair(peer, 12);
    let syn_for_peer = ethernet(
        0x0800,
        &ipv4(
            V4 {
                src: peer,
                ..V4::to_vip(6)
            },
            &tcp(40001, 80, SYN, b""),
        ),
    );
    let udp_fragment = ethernet(
        0x0800,
        &ipv4(
            V4 {
                src: peer,
                offset_bytes: 24,
                dont_fragment: false,
                ..V4::to_vip(17)
            },
            &[0u8; 16],
        ),
    );
    // Node 0 lists three nodes; node 1 also lists node 3, which it thinks designated.
    let wider = Harness::new(&cluster_config(1, &[0, 1, 2, 3]));
    let disagreeing = client_where(VIP, 6, |harness, client| {
        designated(harness, client, VIP, 6) == IpAddr::V4(SPIKE_NODES[1])
            && designated(&wider, client, VIP, 6) == IpAddr::V4(SPIKE_NODES[3])
    });
    let (disagreeing_first, _) = fragment_pair(disagreeing, 13);
    let first_to_port_22 = {
        let segment = tcp(40000, 22, ACK, &[0; 8]);
        let fields = V4 {
            src: peer,
            dont_fragment: false,
            more_fragments: true,
            ..V4::to_vip(6)
        };
        ipv4(fields, &segment[..24])
    };
    let peer_first_packet = peer_first[14..].to_vec();
    let nested = vxlan_to_node_1(
        SPIKE_NODES[0],
        REDIRECT_VNI,
        &inner_frame(0x0800, &peer_first_packet),
    );

    vec![
        ClusterCase {
            description: "a first fragment this node is designated for goes to a backend",
            node: 0,
            frames: vec![own_first],
            expected: Verdict::Forward,
            selection: Some(Selection::NewFlow),
            redirect_to: None,
        },
        ClusterCase {
            description: "a first fragment for another node is redirected to it",
            node: 0,
            frames: vec![peer_first.clone()],
            expected: Verdict::Forward,
            selection: Some(Selection::Redirected),
            redirect_to: Some(1),
        },
        ClusterCase {
            description: "a non-first fragment for another node is redirected to it",
            node: 2,
            frames: vec![peer_later.clone()],
            expected: Verdict::Forward,
            selection: Some(Selection::Redirected),
            redirect_to: Some(1),
        },
        ClusterCase {
            description: "a redirected first fragment goes to a backend, not redirected again",
            node: 1,
            frames: vec![redirected_by(0, &peer_first)],
            expected: Verdict::Forward,
            selection: Some(Selection::NewFlow),
            redirect_to: None,
        },
        ClusterCase {
            description: "a redirected non-first fragment follows the redirected first",
            node: 1,
            frames: vec![redirected_by(0, &peer_first), redirected_by(2, &peer_later)],
            expected: Verdict::Forward,
            selection: Some(Selection::FragmentRecord),
            redirect_to: None,
        },
        ClusterCase {
            description: "a non-first fragment received directly follows the redirected first",
            node: 1,
            frames: vec![redirected_by(0, &peer_first), peer_later.clone()],
            expected: Verdict::Forward,
            selection: Some(Selection::FragmentRecord),
            redirect_to: None,
        },
        ClusterCase {
            description: "a non-first fragment before its first fragment is held",
            node: 1,
            frames: vec![peer_later.clone()],
            expected: Verdict::Held,
            selection: None,
            redirect_to: None,
        },
        ClusterCase {
            description: "a redirected non-first fragment before its first fragment is held",
            node: 1,
            frames: vec![redirected_by(2, &peer_later)],
            expected: Verdict::Held,
            selection: None,
            redirect_to: None,
        },
        ClusterCase {
            description: "a redirected fragment is decided here even if this node's list \
                          designates another",
            node: 1,
            frames: vec![redirected_by(0, &disagreeing_first)],
            expected: Verdict::Forward,
            selection: Some(Selection::NewFlow),
            redirect_to: None,
        },
        ClusterCase {
            description: "an unfragmented packet for another node's datagrams stays here",
            node: 0,
            frames: vec![syn_for_peer],
            expected: Verdict::Forward,
            selection: Some(Selection::NewFlow),
            redirect_to: None,
        },
        ClusterCase {
            description: "a fragment to a VIP without a service of its protocol goes to the \
                          kernel, not redirected",
            node: 0,
            frames: vec![udp_fragment],
            expected: Verdict::Kernel(KernelReason::NotService),
            selection: None,
            redirect_to: None,
        },
        ClusterCase {
            description: "VXLAN with flannel's VNI to the node's address goes to the kernel",
            node: 1,
            frames: vec![vxlan_to_node_1(
                SPIKE_NODES[0],
                1,
                &inner_frame(0x0800, &peer_first_packet),
            )],
            expected: Verdict::Kernel(KernelReason::NotService),
            selection: None,
            redirect_to: None,
        },
        ClusterCase {
            description: "a redirect whose inner frame is cut short is dropped",
            node: 1,
            frames: vec![vxlan_to_node_1(SPIKE_NODES[0], REDIRECT_VNI, &[0x02; 10])],
            expected: Verdict::Drop(DropReason::RedirectMalformed),
            selection: None,
            redirect_to: None,
        },
        ClusterCase {
            description: "a redirect carrying ARP is dropped",
            node: 1,
            frames: vec![vxlan_to_node_1(
                SPIKE_NODES[0],
                REDIRECT_VNI,
                &inner_frame(0x0806, &[0; 28]),
            )],
            expected: Verdict::Drop(DropReason::RedirectMalformed),
            selection: None,
            redirect_to: None,
        },
        ClusterCase {
            description: "a redirect from this node's own address is dropped as a loop",
            node: 1,
            frames: vec![vxlan_to_node_1(
                SPIKE_NODES[1],
                REDIRECT_VNI,
                &inner_frame(0x0800, &peer_first_packet),
            )],
            expected: Verdict::Drop(DropReason::RedirectLoop),
            selection: None,
            redirect_to: None,
        },
        ClusterCase {
            description: "a redirect inside a redirect is dropped as a loop",
            node: 1,
            frames: vec![vxlan_to_node_1(
                SPIKE_NODES[0],
                REDIRECT_VNI,
                &inner_frame(0x0800, &nested[14..]),
            )],
            expected: Verdict::Drop(DropReason::RedirectLoop),
            selection: None,
            redirect_to: None,
        },
        ClusterCase {
            description: "a redirected fragment for no service here is dropped",
            node: 1,
            frames: vec![vxlan_to_node_1(
                SPIKE_NODES[0],
                REDIRECT_VNI,
                &inner_frame(0x0800, &first_to_port_22),
            )],
            expected: Verdict::Drop(DropReason::RedirectNotService),
            selection: None,
            redirect_to: None,
        },
    ]
}

#[test]
fn cluster_verdict_table() {
    for case in cluster_cases() {
        let mut harness = node_harness(case.node);
        let (last, earlier) = case.frames.split_last().expect("a frame");
        for frame in earlier {
            assert_eq!(
                harness.process(frame, 0),
                Verdict::Forward,
                "{}",
                case.description
            );
        }
        let verdict = harness.process(last, SECOND_NS);
        assert_eq!(verdict, case.expected, "{}", case.description);
        if verdict == Verdict::Forward {
            assert_eq!(
                harness.out.selection, case.selection,
                "{}",
                case.description
            );
        }
        let redirect_to = harness
            .out
            .redirect
            .map(|index| harness.snapshot.cluster.as_ref().unwrap().peers[index as usize].address);
        assert_eq!(
            redirect_to,
            case.redirect_to.map(|index| IpAddr::V4(SPIKE_NODES[index])),
            "{}",
            case.description
        );
        if let Some(index) = case.redirect_to {
            // Outer IPv4 destination, UDP port, VNI and inner MAC name the designated node.
            let header = harness.out.header();
            assert_eq!(header[0..6], spike_node_mac(index), "{}", case.description);
            assert_eq!(
                header[30..34],
                SPIKE_NODES[index].octets(),
                "{}",
                case.description
            );
            assert_eq!(
                header[36..38],
                8472u16.to_be_bytes(),
                "{}",
                case.description
            );
            assert_eq!(
                header[46..50],
                (REDIRECT_VNI << 8).to_be_bytes(),
                "{}",
                case.description
            );
            assert_eq!(
                header[50..56],
                spike_node_mac(index),
                "{}",
                case.description
            );
            assert_eq!(
                harness.forwarded_frame(last)[64..],
                last[14..],
                "{}: the original packet travels unchanged",
                case.description
            );
        }
        let counters = harness.worker.counters();
        let redirected_frames = case
            .frames
            .iter()
            .filter(|frame| {
                frame.len() > 50
                    && frame[36..38] == 8472u16.to_be_bytes()
                    && frame[46..50] == (REDIRECT_VNI << 8).to_be_bytes()
            })
            .count() as u64;
        assert_eq!(
            counters.redirected_in, redirected_frames,
            "{}: redirected frames counted",
            case.description
        );
    }
}

#[test]
fn every_node_agrees_on_the_designated_node() {
    let orders: [&[usize]; 3] = [&[0, 1, 2], &[2, 0, 1], &[1, 2, 0]];
    for host in 1..=40 {
        let client = Ipv4Addr::new(203, 0, 113, host);
        let (first, _) = fragment_pair(client, u16::from(host));
        let mut targets = HashSet::new();
        let mut local = Vec::new();
        for (own, order) in orders.iter().enumerate() {
            let mut harness = Harness::new(&cluster_config(own, order));
            assert_eq!(harness.process(&first, 0), Verdict::Forward);
            match harness.out.redirect {
                Some(index) => {
                    let cluster = harness.snapshot.cluster.as_ref().unwrap();
                    targets.insert(cluster.peers[index as usize].address);
                }
                None => local.push(IpAddr::V4(SPIKE_NODES[own])),
            }
        }
        assert_eq!(
            local.len(),
            1,
            "client {client}: exactly one node keeps the datagram"
        );
        assert!(
            targets.iter().all(|target| *target == local[0]),
            "client {client}: redirects {targets:?} go to the node that keeps it, {:?}",
            local[0]
        );
    }
}

#[test]
fn oversized_redirect_is_split_into_inner_fragments() {
    let client = client_where(VIP_3TUPLE, 17, |harness, client| {
        designated(harness, client, VIP_3TUPLE, 17) == IpAddr::V4(SPIKE_NODES[1])
    });
    let payload: Vec<u8> = (0..1472u32).map(|index| index as u8).collect();
    let whole_segment = udp(40000, 53, &payload);
    // A 1500-byte first fragment, as a client with a 1500-byte MTU sends it: with the
    // redirect's 50 bytes it exceeds the 1500-byte underlay MTU.
    let client_mtu_payload = 1480;
    let first = ethernet(
        0x0800,
        &ipv4(
            V4 {
                src: client,
                dst: VIP_3TUPLE,
                dont_fragment: false,
                more_fragments: true,
                ident: 99,
                ..V4::to_vip(17)
            },
            &whole_segment[..client_mtu_payload],
        ),
    );

    let mut sender = node_harness(0);
    assert_eq!(sender.process(&first, 0), Verdict::Forward);
    assert_eq!(sender.out.selection, Some(Selection::Redirected));
    assert!(sender.out.fragment && sender.out.split_inner);
    let mut pieces = Vec::new();
    let mut scratch = vec![0u8; 1514];
    let count = sender
        .out
        .write_fragments(&first, &mut scratch, |frame| pieces.push(frame.to_vec()));
    assert_eq!(count, 2);

    let mut receiver = node_harness(1);
    let mut reassembled = Vec::new();
    let mut backends = HashSet::new();
    for (index, piece) in pieces.iter().enumerate() {
        assert!(piece.len() <= 1514, "piece {index} fits the 1500-byte MTU");
        assert!(
            checksum_ok(&piece[14..34]),
            "piece {index} outer header checksum"
        );
        assert!(
            checksum_ok(&piece[64..84]),
            "piece {index} inner header checksum"
        );
        let flags_offset = u16::from_be_bytes([piece[70], piece[71]]);
        assert_eq!(usize::from(flags_offset & 0x1fff) * 8, reassembled.len());
        assert_ne!(
            flags_offset & 0x2000,
            0,
            "every piece of a first fragment has MF"
        );
        assert_eq!(piece[68..70], 99u16.to_be_bytes(), "identification kept");
        reassembled.extend_from_slice(&piece[84..]);
        assert_eq!(receiver.process(piece, 0), Verdict::Forward);
        backends.insert(receiver.backend_name());
    }
    assert_eq!(reassembled, whole_segment[..client_mtu_payload]);
    assert_eq!(backends.len(), 1, "both pieces reach one backend");
    assert_eq!(receiver.worker.counters().redirected_in, 2);
}

#[test]
fn oversized_ipv6_redirect_gets_packet_too_big() {
    let mut text = cluster_config(0, &[0, 1, 2]);
    // IPv6 fragments go to the IPv4-underlay VIP6 UDP service; find one for node 1.
    text = text.replace("too_big_burst = 2", "too_big_burst = 5");
    let mut harness = Harness::new(&text);
    let client = (1..=250u16)
        .map(|host| Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, host))
        .find(|client| {
            harness
                .snapshot
                .designated_node(IpAddr::V6(*client), IpAddr::V6(VIP6), 17)
                != Some(IpAddr::V4(SPIKE_NODES[0]))
        })
        .expect("a client designated elsewhere");
    let mut payload = vec![17, 0];
    payload.extend_from_slice(&(1232u16 | 1).to_be_bytes());
    payload.extend_from_slice(&7u32.to_be_bytes());
    payload.extend_from_slice(&[0u8; 1448]);
    let frame = ethernet(0x86dd, &ipv6(client, VIP6, 44, &payload));
    assert_eq!(harness.process(&frame, 0), Verdict::Reply);
    let reply = harness.out.reply();
    assert_eq!(reply[54], 2, "ICMPv6 packet too big");
    assert_eq!(
        reply[58..62],
        1450u32.to_be_bytes(),
        "MTU left after the redirect's 50 bytes"
    );
}

#[test]
fn held_fragment_follows_its_first_fragment() {
    let client = client_of(1);
    let (first, later) = fragment_pair(client, 21);
    let mut designated_node = node_harness(1);

    // The non-first fragment arrives directly, before the redirected first one.
    assert_eq!(designated_node.process(&later, 0), Verdict::Held);
    assert!(designated_node
        .worker
        .next_released(&designated_node.snapshot, 0, &mut designated_node.out)
        .is_none());

    let redirected_first = redirected_by(0, &first);
    assert_eq!(
        designated_node.process(&redirected_first, 1_000),
        Verdict::Forward
    );
    assert_eq!(designated_node.out.selection, Some(Selection::NewFlow));
    let backend = designated_node.backend_name();

    let Harness {
        snapshot,
        worker,
        out,
        ..
    } = &mut designated_node;
    let (verdict, frame) = worker
        .next_released(snapshot, 2_000, out)
        .expect("the held fragment is released");
    assert_eq!(verdict, Verdict::Forward);
    assert_eq!(
        frame[out.inner.clone()],
        later[14..],
        "released packet unchanged"
    );
    let frame = frame.to_vec();
    assert!(
        worker.next_released(snapshot, 2_000, out).is_none(),
        "released once"
    );
    assert_eq!(
        designated_node.out.selection,
        Some(Selection::FragmentRecord)
    );
    assert_eq!(
        designated_node.backend_name(),
        backend,
        "held fragment follows the first"
    );
    assert_eq!(designated_node.forwarded_frame(&frame)[64..], later[14..]);

    let counters = designated_node.worker.counters();
    assert_eq!(counters.held, 1);
    assert_eq!(counters.held_released, 1);
    assert_eq!(counters.held_dropped, 0);
    assert_eq!(counters.rx_packets, 2);
    assert_eq!(
        counters.forwarded + counters.held,
        2,
        "every received frame has one verdict"
    );
}

#[test]
fn lone_node_drops_fragment_without_record() {
    let (_, later) = fragment_pair(CLIENT, 22);
    let mut harness = Harness::base();
    assert_eq!(
        harness.process(&later, 0),
        Verdict::Drop(DropReason::FragmentWithoutRecord),
        "without a cluster nothing is held"
    );
}

/// Returns whether the outer UDP checksum of an encapsulated frame is present and valid.
fn outer_udp_checksum_valid(frame: &[u8]) -> bool {
    use spike_core::wire::checksum;
    let (pseudo, udp) = if frame[12..14] == [0x86, 0xdd] {
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
        let udp = &frame[54..];
        let length = udp.len() as u32;
        (
            checksum::pseudo_header_v6(&src, &dst, IpProtocol::Udp, length),
            udp,
        )
    } else {
        let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
        let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
        let udp = &frame[34..];
        let length = udp.len() as u32;
        (
            checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, length),
            udp,
        )
    };
    udp[6..8] != [0, 0] && checksum::finish(pseudo + checksum::sum(udp)) == 0
}

#[test]
fn inner_pieces_carry_valid_udp_checksums() {
    let peer6: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let cases = [
        ("IPv6 underlay", IpAddr::V6(peer6), false),
        (
            "IPv4 underlay with ipv4_udp_checksum",
            IpAddr::V4(SPIKE_NODES[1]),
            true,
        ),
    ];
    for (description, peer, ipv4_checksum) in cases {
        let mut text = BASE_CONFIG.to_owned();
        if ipv4_checksum {
            text = text.replacen("ttl = 64", "ttl = 64\nipv4_udp_checksum = true", 1);
        }
        text.push_str(&format!(
            "\n[cluster]\nredirect_vni = {REDIRECT_VNI}\n\n[[cluster.node]]\n\
             address = \"192.0.2.1\"\nmac = \"02:53:50:00:01:01\"\n\n[[cluster.node]]\n\
             address = \"{peer}\"\nmac = \"02:53:50:00:01:02\"\n"
        ));
        let mut harness = Harness::new(&text);
        let client = (1..=250)
            .map(|host| Ipv4Addr::new(203, 0, 113, host))
            .find(|client| designated(&harness, *client, VIP_3TUPLE, 17) == peer)
            .expect("a client designated to the peer");
        let datagram = udp(40000, 53, &[0x77; 1600]);
        let first = ethernet(
            0x0800,
            &ipv4(
                V4 {
                    src: client,
                    dst: VIP_3TUPLE,
                    dont_fragment: false,
                    more_fragments: true,
                    ..V4::to_vip(17)
                },
                &datagram[..1480],
            ),
        );
        assert_eq!(
            harness.process(&first, 0),
            Verdict::Forward,
            "{description}"
        );
        assert!(harness.out.split_inner, "{description}");
        let mut pieces = Vec::new();
        let mut scratch = vec![0u8; 1514];
        harness
            .out
            .write_fragments(&first, &mut scratch, |frame| pieces.push(frame.to_vec()));
        assert_eq!(pieces.len(), 2, "{description}");
        for (index, piece) in pieces.iter().enumerate() {
            assert!(
                piece.len() <= 1514,
                "{description}: piece {index} fits the MTU"
            );
            assert!(
                outer_udp_checksum_valid(piece),
                "{description}: piece {index} outer UDP checksum"
            );
        }
    }
}

/// Returns the verdicts of a fresh worker for `frame` alone and prepared in a burst, as
/// the DPDK workers do.
fn alone_and_prefetched(frame: &[u8]) -> [Verdict; 2] {
    [false, true].map(|prefetched| {
        let mut harness = Harness::base();
        if prefetched {
            harness.worker.prefetch_burst(&harness.snapshot, [frame]);
        }
        harness.process(frame, 0)
    })
}

#[test]
fn martian_sources_to_services_are_dropped() {
    let martian: [Ipv4Addr; 6] = [
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(239, 255, 255, 255),
        Ipv4Addr::BROADCAST,
    ];
    let ordinary: [Ipv4Addr; 3] = [
        Ipv4Addr::new(1, 0, 0, 1),
        Ipv4Addr::new(223, 255, 255, 255),
        Ipv4Addr::new(240, 0, 0, 1),
    ];
    let cases = martian
        .iter()
        .map(|&src| (src, Verdict::Drop(DropReason::MartianSource)))
        .chain(ordinary.iter().map(|&src| (src, Verdict::Forward)));
    for (src, expected) in cases {
        let frame = tcp_v4(
            V4 {
                src,
                ..V4::to_vip(6)
            },
            40000,
            80,
            SYN,
        );
        assert_eq!(
            alone_and_prefetched(&frame),
            [expected; 2],
            "from {src}, alone and prefetched"
        );
    }

    // Not service traffic: the kernel decides about its own packets.
    let mut harness = Harness::base();
    let to_host = V4 {
        src: Ipv4Addr::new(127, 0, 0, 1),
        dst: Ipv4Addr::new(192, 0, 2, 1),
        ..V4::to_vip(6)
    };
    assert_eq!(
        harness.process(&tcp_v4(to_host, 40000, 22, SYN), 0),
        Verdict::Kernel(KernelReason::NotService)
    );

    // A non-first fragment to a service.
    let fragment = V4 {
        src: Ipv4Addr::new(224, 0, 0, 1),
        dont_fragment: false,
        offset_bytes: 24,
        ..V4::to_vip(6)
    };
    let frame = ethernet(0x0800, &ipv4(fragment, &[0xab; 24]));
    assert_eq!(
        harness.process(&frame, 0),
        Verdict::Drop(DropReason::MartianSource)
    );
    assert_eq!(
        harness
            .worker
            .counters()
            .drop_count(DropReason::MartianSource),
        1
    );
}

#[test]
fn martian_ipv6_sources_to_services_are_dropped() {
    let cases = [
        (
            Ipv6Addr::UNSPECIFIED,
            Verdict::Drop(DropReason::MartianSource),
        ),
        (
            Ipv6Addr::LOCALHOST,
            Verdict::Drop(DropReason::MartianSource),
        ),
        (
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            Verdict::Drop(DropReason::MartianSource),
        ),
        (CLIENT6, Verdict::Forward),
    ];
    for (src, expected) in cases {
        let frame = ethernet(0x86dd, &ipv6(src, VIP6, 6, &tcp(42000, 80, SYN, b"")));
        assert_eq!(
            alone_and_prefetched(&frame),
            [expected; 2],
            "from {src}, alone and prefetched"
        );
    }
}
