//! Feeds each input to `Worker::process` as a received frame, and to every checked wire
//! view constructor, calling the getters of each view that accepts it. Any panic is a
//! finding: the core's contract is that no frame content can make it panic.
//!
//! One snapshot and one worker serve the whole run, so conntrack and fragment state
//! carries over from input to input. NOTE: a crash that depends on that state may not
//! reproduce from its artifact alone. Rerun the corpus entries the run executed before
//! it to reproduce such a crash.

#![no_main]

use std::cell::RefCell;
use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use spike_core::steer::{self, RedirectMatch};
use spike_core::wire::{
    self, ArpPacket, EthernetFrame, Icmpv4Packet, Icmpv6Packet, IpProtocol, Ipv4Packet,
    Ipv6FragmentHeader, Ipv6Packet, Ipv6RoutingHeader, TcpPacket, UdpPacket, VlanTag, VxlanHeader,
};
use spike_core::{icmp, Config, Output, Snapshot, Worker};

/// The example configuration: its services match the seed captures, so seeds reach
/// Maglev selection and encapsulation instead of stopping at "not a service".
const CONFIG: &str = include_str!("../../../../configs/spike.toml");

/// A cluster around the example node (192.0.2.1 and 2001:db8::1), so that fragments are
/// redirected to the other nodes and VXLAN frames with the redirect VNI are decapsulated.
const CLUSTER: &str = r#"
[cluster]
redirect_vni = 4097

[[cluster.node]]
address = "192.0.2.1"
mac = "02:53:50:00:01:01"

[[cluster.node]]
address = "192.0.2.2"
mac = "02:53:50:00:01:02"

[[cluster.node]]
address = "2001:db8::2"
mac = "02:53:50:00:01:03"
"#;

/// Room for one outer fragment or inner piece: the example's 1500-byte MTU plus Ethernet.
const SCRATCH_LEN: usize = 1514;

/// Tables this small fill up within a few inputs, so the full-table paths run too.
const CONNTRACK_CAPACITY: usize = 64;
const FRAGMENT_CAPACITY: usize = 16;

/// Clock advance per input, in nanoseconds. At 100 ms, a SYN entry (30 s timeout in
/// the example configuration) expires after 300 inputs, so expiry and slot reuse run.
const CLOCK_STEP_NS: u64 = 100_000_000;

struct State {
    snapshot: Snapshot,
    worker: Worker,
    out: Output,
    scratch: Vec<u8>,
    now_ns: u64,
}

impl State {
    fn new() -> State {
        let mut config: Config = format!("{CONFIG}{CLUSTER}")
            .parse()
            .unwrap_or_else(|error| panic!("configs/spike.toml is invalid: {error}"));
        config.conntrack.capacity = CONNTRACK_CAPACITY;
        config.conntrack.fragment_capacity = FRAGMENT_CAPACITY;
        let snapshot = Snapshot::build(&config, 1).unwrap_or_else(|error| {
            panic!("failed to build the snapshot of configs/spike.toml: {error}")
        });
        let worker = Worker::new(&config)
            .unwrap_or_else(|error| panic!("failed to create the worker: {error}"));
        State {
            snapshot,
            worker,
            out: Output::default(),
            scratch: vec![0; SCRATCH_LEN],
            now_ns: 0,
        }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new());
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|state| {
        let state = &mut *state.borrow_mut();
        state.now_ns += CLOCK_STEP_NS;
        let verdict = state
            .worker
            .process(&state.snapshot, data, state.now_ns, &mut state.out);
        black_box(verdict);
        black_box(state.out.header());
        black_box(state.out.reply());
        // The dataplane classifies every frame before a worker decides it.
        let redirect = state
            .snapshot
            .cluster
            .as_ref()
            .map(|cluster| RedirectMatch {
                port: cluster.port,
                vni: cluster.redirect_vni,
            });
        black_box(steer::is_fragment(data, redirect));
        black_box(steer::is_fragment(data, None));
        if state.out.fragment {
            // Outer fragments and inner pieces are cut from the frame: a panic here is a
            // finding too.
            state
                .out
                .write_fragments(data, &mut state.scratch, |frame| {
                    black_box(frame);
                });
        }
    });
    parse_views(data);
});

/// Runs every checked constructor on `data` and reads every field of the views that
/// accept it.
fn parse_views(data: &[u8]) {
    if let Ok(frame) = EthernetFrame::new_checked(data) {
        black_box((frame.dst_addr(), frame.src_addr(), frame.ethertype()));
        black_box(frame.payload());
    }
    if let Ok(tag) = VlanTag::new_checked(data) {
        black_box((tag.pcp(), tag.dei(), tag.vlan_id(), tag.ethertype()));
        black_box(tag.payload());
    }
    if let Ok(arp) = ArpPacket::new_checked(data) {
        black_box((arp.hardware_type(), arp.protocol_type(), arp.operation()));
        black_box((arp.hardware_len(), arp.protocol_len()));
        black_box((arp.sender_hardware_addr(), arp.sender_protocol_addr()));
        black_box((arp.target_hardware_addr(), arp.target_protocol_addr()));
    }
    parse_ip_views(data);
    parse_transport_views(data);
    parse_ipv6_extension_views(data);
    if let Ok(vxlan) = VxlanHeader::new_checked(data) {
        black_box((vxlan.flags(), vxlan.has_vni(), vxlan.vni()));
        black_box(vxlan.payload());
    }
    black_box(icmp::parse_quoted_ipv4(data));
    black_box(icmp::parse_quoted_ipv6(data));
}

fn parse_ip_views(data: &[u8]) {
    let ipv4_views = [
        Ipv4Packet::new_checked(data),
        Ipv4Packet::new_checked_truncated(data),
    ];
    for ipv4 in ipv4_views.into_iter().flatten() {
        black_box((ipv4.version(), ipv4.header_len(), ipv4.dscp_ecn()));
        black_box((ipv4.total_len(), ipv4.ident(), ipv4.ttl(), ipv4.protocol()));
        black_box((ipv4.dont_frag(), ipv4.more_frags(), ipv4.frag_offset()));
        black_box((ipv4.is_fragment(), ipv4.is_first_fragment()));
        black_box((ipv4.checksum(), ipv4.verify_checksum()));
        black_box((ipv4.src_addr(), ipv4.dst_addr()));
        black_box((ipv4.options(), ipv4.header(), ipv4.payload()));
    }

    let ipv6_views = [
        Ipv6Packet::new_checked(data),
        Ipv6Packet::new_checked_truncated(data),
    ];
    for ipv6 in ipv6_views.into_iter().flatten() {
        black_box((ipv6.version(), ipv6.traffic_class(), ipv6.flow_label()));
        black_box((ipv6.payload_len(), ipv6.next_header(), ipv6.hop_limit()));
        black_box((ipv6.src_addr(), ipv6.dst_addr()));
        black_box(ipv6.payload());
        if let Ok(upper) = wire::walk_extension_headers(ipv6.next_header(), ipv6.payload()) {
            black_box(upper);
        }
    }
}

fn parse_transport_views(data: &[u8]) {
    let src = std::net::Ipv4Addr::new(198, 51, 100, 7);
    let dst = std::net::Ipv4Addr::new(3, 235, 60, 34);
    let src6 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
    let dst6 = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);

    if let Ok(tcp) = TcpPacket::new_checked(data) {
        black_box((tcp.src_port(), tcp.dst_port(), tcp.header_len()));
        black_box((tcp.seq_number(), tcp.ack_number(), tcp.flags()));
        black_box((tcp.syn(), tcp.ack(), tcp.fin(), tcp.rst()));
        black_box((tcp.window(), tcp.checksum(), tcp.urgent_pointer()));
        black_box((tcp.options(), tcp.payload()));
        black_box(tcp.verify_checksum_v4(src, dst));
        black_box(tcp.verify_checksum_v6(&src6, &dst6));
    }
    if let Ok(udp) = UdpPacket::new_checked(data) {
        black_box((udp.src_port(), udp.dst_port(), udp.len(), udp.checksum()));
        black_box(udp.payload());
        black_box(udp.verify_checksum_v4(src, dst));
        black_box(udp.verify_checksum_v6(&src6, &dst6));
    }
    if let Ok(icmp) = Icmpv4Packet::new_checked(data) {
        black_box((icmp.msg_type(), icmp.code(), icmp.checksum()));
        black_box((icmp.echo_ident(), icmp.echo_seq_no()));
        black_box((icmp.next_hop_mtu(), icmp.pointer()));
        black_box((icmp.is_error(), icmp.verify_checksum()));
        black_box(icmp.data());
    }
    if let Ok(icmp) = Icmpv6Packet::new_checked(data) {
        black_box((icmp.msg_type(), icmp.code(), icmp.checksum()));
        black_box((icmp.mtu(), icmp.pointer()));
        black_box((icmp.echo_ident(), icmp.echo_seq_no()));
        black_box((icmp.is_error(), icmp.is_neighbor_discovery()));
        black_box(icmp.verify_checksum(&src6, &dst6));
        black_box(icmp.data());
    }
}

fn parse_ipv6_extension_views(data: &[u8]) {
    if let Ok(fragment) = Ipv6FragmentHeader::new_checked(data) {
        black_box((fragment.next_header(), fragment.frag_offset()));
        black_box((fragment.more_frags(), fragment.ident()));
        black_box(fragment.payload());
    }
    if let Ok(routing) = Ipv6RoutingHeader::new_checked(data) {
        black_box((routing.next_header(), routing.header_len()));
        black_box((routing.routing_type(), routing.segments_left()));
        black_box((routing.data(), routing.payload()));
    }
    // The first byte picks the chain's first header, so every protocol number is tried.
    if let Some((&first, rest)) = data.split_first() {
        if let Ok(upper) = wire::walk_extension_headers(IpProtocol::from(first), rest) {
            black_box(upper);
        }
    }
}
