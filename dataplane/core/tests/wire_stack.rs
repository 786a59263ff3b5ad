//! Builds and parses whole header stacks through the public `wire` API: VXLAN
//! encapsulation over IPv4 and IPv6, and ICMP errors that quote a datagram.

// The module name puts these tests under the `wire` filter of `cargo test`.
mod wire {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use spike_core::wire::{
        self, icmpv4, icmpv6, EtherType, EthernetFrame, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
        Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, MacAddr,
        UdpPacket, UdpRepr, VxlanHeader, VxlanRepr,
    };

    const ROUTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xfe]);
    const LB_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    /// Returns an inner Ethernet/IPv4/UDP frame from a client to a VIP.
    fn inner_frame() -> Vec<u8> {
        let payload = b"hello";
        let udp = UdpRepr {
            src_port: 40000,
            dst_port: 53,
            payload_len: payload.len(),
        };
        let ip = Ipv4Repr {
            src_addr: Ipv4Addr::new(198, 51, 100, 7),
            dst_addr: Ipv4Addr::new(203, 0, 113, 10),
            protocol: IpProtocol::Udp,
            payload_len: udp.buffer_len(),
            ttl: 60,
            dscp_ecn: 0,
            ident: 1,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let ethernet = EthernetRepr {
            src_addr: ROUTER_MAC,
            dst_addr: LB_MAC,
            ethertype: EtherType::Ipv4,
        };

        let mut frame = vec![0u8; ethernet.header_len() + ip.buffer_len()];
        let mut eth_view = EthernetFrame::new_unchecked(&mut frame[..]);
        ethernet.emit(&mut eth_view);
        let mut ip_view = Ipv4Packet::new_unchecked(eth_view.payload_mut());
        ip.emit(&mut ip_view);
        let mut udp_view = UdpPacket::new_unchecked(ip_view.payload_mut());
        udp.emit(&mut udp_view);
        udp_view.payload_mut().copy_from_slice(payload);
        udp_view.fill_checksum_v4(ip.src_addr, ip.dst_addr);
        frame
    }

    #[test]
    fn vxlan_over_ipv4_round_trips() {
        let inner = inner_frame();
        let vxlan = VxlanRepr { vni: 0x00ab_cdef };
        let udp = UdpRepr {
            src_port: 49321,
            dst_port: wire::vxlan::UDP_PORT,
            payload_len: vxlan.header_len() + inner.len(),
        };
        let ip = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 1, 20),
            protocol: IpProtocol::Udp,
            payload_len: udp.buffer_len(),
            ttl: 64,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let ethernet = EthernetRepr {
            src_addr: LB_MAC,
            dst_addr: ROUTER_MAC,
            ethertype: EtherType::Ipv4,
        };

        let mut frame = vec![0u8; ethernet.header_len() + ip.buffer_len()];
        let mut eth_view = EthernetFrame::new_unchecked(&mut frame[..]);
        ethernet.emit(&mut eth_view);
        let mut ip_view = Ipv4Packet::new_unchecked(eth_view.payload_mut());
        ip.emit(&mut ip_view);
        let mut udp_view = UdpPacket::new_unchecked(ip_view.payload_mut());
        udp.emit(&mut udp_view);
        let mut vxlan_view = VxlanHeader::new_unchecked(udp_view.payload_mut());
        vxlan.emit(&mut vxlan_view);
        vxlan_view.payload_mut().copy_from_slice(&inner);

        let eth_view = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&eth_view), Ok(ethernet));
        let ip_view = Ipv4Packet::new_checked(eth_view.payload()).unwrap();
        assert!(ip_view.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&ip_view), Ok(ip));
        let udp_view = UdpPacket::new_checked(ip_view.payload()).unwrap();
        assert_eq!(UdpRepr::parse(&udp_view), Ok(udp));
        assert_eq!(udp_view.checksum(), 0);
        let vxlan_view = VxlanHeader::new_checked(udp_view.payload()).unwrap();
        assert_eq!(VxlanRepr::parse(&vxlan_view), Ok(vxlan));
        assert_eq!(vxlan_view.payload(), &inner[..]);
    }

    #[test]
    fn vxlan_over_ipv6_checksum_verifies() {
        let inner = inner_frame();
        let vxlan = VxlanRepr { vni: 7 };
        let udp = UdpRepr {
            src_port: 50000,
            dst_port: wire::vxlan::UDP_PORT,
            payload_len: vxlan.header_len() + inner.len(),
        };
        let ip = Ipv6Repr {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8:1::20".parse().unwrap(),
            next_header: IpProtocol::Udp,
            payload_len: udp.buffer_len(),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0x1_2345,
        };

        let mut packet = vec![0u8; ip.buffer_len()];
        let mut ip_view = Ipv6Packet::new_unchecked(&mut packet[..]);
        ip.emit(&mut ip_view);
        let mut udp_view = UdpPacket::new_unchecked(ip_view.payload_mut());
        udp.emit(&mut udp_view);
        let mut vxlan_view = VxlanHeader::new_unchecked(udp_view.payload_mut());
        vxlan.emit(&mut vxlan_view);
        vxlan_view.payload_mut().copy_from_slice(&inner);
        udp_view.fill_checksum_v6(&ip.src_addr, &ip.dst_addr);

        let ip_view = Ipv6Packet::new_checked(&packet[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&ip_view), Ok(ip));
        let upper = wire::walk_extension_headers(ip_view.next_header(), ip_view.payload()).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Udp);
        assert_eq!(upper.offset, 0);
        let udp_view = UdpPacket::new_checked(ip_view.payload()).unwrap();
        assert!(udp_view.verify_checksum_v6(&ip.src_addr, &ip.dst_addr));
    }

    #[test]
    fn icmpv4_frag_needed_quotes_flow() {
        let inner = inner_frame();
        let original = &inner[EthernetFrame::<&[u8]>::HEADER_LEN..];
        // RFC 792 requires the IP header and the first 8 bytes of its payload.
        let quote = &original[..Ipv4Packet::<&[u8]>::MIN_HEADER_LEN + 8];

        let icmp = Icmpv4Repr::DestUnreachable {
            code: icmpv4::FRAG_NEEDED,
            next_hop_mtu: 1450,
            data: quote,
        };
        let mut message = vec![0u8; icmp.buffer_len()];
        icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut message[..]));

        let icmp_view = Icmpv4Packet::new_checked(&message[..]).unwrap();
        assert!(icmp_view.verify_checksum());
        assert!(icmp_view.is_error());
        assert_eq!(icmp_view.next_hop_mtu(), 1450);

        let quoted = Ipv4Packet::new_checked_truncated(icmp_view.data()).unwrap();
        assert_eq!(quoted.src_addr(), Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(quoted.dst_addr(), Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(quoted.protocol(), IpProtocol::Udp);
        assert_eq!(wire::transport_ports(quoted.payload()), Some((40000, 53)));
    }

    #[test]
    fn icmpv6_packet_too_big_quotes_flow() {
        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let original_ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Tcp,
            payload_len: 1440,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        let mut quote = vec![0u8; 40 + 8];
        original_ip.emit(&mut Ipv6Packet::new_unchecked(&mut quote[..]));
        quote[40..44].copy_from_slice(&[0x9c, 0x40, 0x01, 0xbb]); // ports 40000 -> 443

        let icmp = Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            data: &quote,
        };
        let mut message = vec![0u8; icmp.buffer_len()];
        let mut icmp_view = Icmpv6Packet::new_unchecked(&mut message[..]);
        icmp.emit(&mut icmp_view);
        icmp_view.fill_checksum(&dst, &src);

        let icmp_view = Icmpv6Packet::new_checked(&message[..]).unwrap();
        assert!(icmp_view.verify_checksum(&dst, &src));
        assert_eq!(icmp_view.msg_type(), icmpv6::PACKET_TOO_BIG);
        assert_eq!(icmp_view.mtu(), 1280);

        let quoted = Ipv6Packet::new_checked_truncated(icmp_view.data()).unwrap();
        assert_eq!(quoted.src_addr(), src);
        let upper = wire::walk_extension_headers(quoted.next_header(), quoted.payload()).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Tcp);
        let ports = wire::transport_ports(&quoted.payload()[upper.offset..]);
        assert_eq!(ports, Some((40000, 443)));
    }

    #[test]
    fn ttl_rewrite_updates_checksum_incrementally() {
        let mut inner = inner_frame();
        let mut ip_view = Ipv4Packet::new_checked(&mut inner[14..]).unwrap();
        let old_word = u16::from_be_bytes([ip_view.ttl(), u8::from(ip_view.protocol())]);
        let ttl = ip_view.ttl() - 1;
        ip_view.set_ttl(ttl);
        let new_word = u16::from_be_bytes([ttl, u8::from(ip_view.protocol())]);

        let updated = wire::checksum::update_u16(ip_view.checksum(), old_word, new_word);
        ip_view.set_checksum(updated);
        assert!(ip_view.verify_checksum());
    }
}
