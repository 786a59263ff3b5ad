//! Properties of `Worker::process` on hostile input: it never panics, it counts every
//! verdict exactly once, and a forward's header and inner packet range are consistent
//! with the frame they came from.
//!
//! The services are those of `configs/spike.toml`, with the tables shrunk so that a
//! few frames fill them and the full-table paths run too.

use std::net::IpAddr;
use std::sync::LazyLock;

use proptest::prelude::*;
use spike_core::config::Protocol;
use spike_core::{Config, Counters, Output, Snapshot, Verdict, Worker};

const CONFIG: &str = include_str!("../../../configs/spike.toml");

/// The example config limits the outer IP packet to 1500 bytes, so payloads up to 1600
/// bytes reach both the too-big reply (DF set, IPv6) and outer fragmentation.
const MAX_PAYLOAD_LEN: usize = 1600;

/// Header lengths of a VXLAN encapsulation over an IPv4 and over an IPv6 underlay:
/// outer Ethernet, IP, UDP and VXLAN headers plus the inner Ethernet header.
const OUTER_IPV4_HEADER_LEN: usize = 14 + 20 + 8 + 8 + 14;
const OUTER_IPV6_HEADER_LEN: usize = 14 + 40 + 8 + 8 + 14;

static CONFIG_SMALL_TABLES: LazyLock<Config> = LazyLock::new(|| {
    let mut config: Config = CONFIG.parse().expect("configs/spike.toml is valid");
    config.conntrack.capacity = 8;
    config.conntrack.fragment_capacity = 4;
    config
});

static SNAPSHOT: LazyLock<Snapshot> =
    LazyLock::new(|| Snapshot::build(&CONFIG_SMALL_TABLES, 1).expect("snapshot builds"));

/// The same services with the first backend of each draining (weight 0), as a later
/// generation, so that flows tracked to it stay there while SYNs move.
static DRAINING_SNAPSHOT: LazyLock<Snapshot> = LazyLock::new(|| {
    let mut config = CONFIG_SMALL_TABLES.clone();
    for service in &mut config.services {
        service.backends[0].weight = 0;
    }
    Snapshot::build(&config, 2).expect("snapshot with draining backends builds")
});

/// The destination MAC of the frames `build_frame` writes.
const FRAME_DST_MAC: [u8; 6] = [0x02, 0x53, 0x50, 0, 0, 0x01];

fn new_worker() -> Worker {
    Worker::new(&CONFIG_SMALL_TABLES).expect("worker builds")
}

/// Returns the counter that `verdict` increments.
fn verdict_count(counters: &Counters, verdict: Verdict) -> u64 {
    match verdict {
        Verdict::Forward => counters.forwarded,
        Verdict::Reply => counters.replies,
        Verdict::Held => counters.held,
        Verdict::Kernel(reason) => counters.kernel_count(reason),
        Verdict::Drop(reason) => counters.drop_count(reason),
    }
}

fn verdict_total(counters: &Counters) -> u64 {
    counters.forwarded
        + counters.replies
        + counters.held
        + counters.to_kernel()
        + counters.dropped()
}

/// Runs one frame through `worker` and checks that exactly one verdict was counted.
fn process_counted(worker: &mut Worker, frame: &[u8], now_ns: u64, out: &mut Output) -> Verdict {
    let before = worker.counters().clone();
    let verdict = worker.process(&SNAPSHOT, frame, now_ns, out);
    let after = worker.counters();

    assert_eq!(
        after.rx_packets,
        before.rx_packets + 1,
        "rx_packets for {verdict:?}"
    );
    assert_eq!(
        verdict_count(after, verdict),
        verdict_count(&before, verdict) + 1,
        "counter of {verdict:?}"
    );
    assert_eq!(
        verdict_total(after),
        verdict_total(&before) + 1,
        "verdict total after {verdict:?}"
    );
    assert_eq!(
        verdict_total(after),
        after.rx_packets,
        "verdict total vs rx_packets"
    );
    verdict
}

/// A client-to-VIP frame before truncation and corruption.
#[derive(Clone, Debug)]
struct FrameSpec {
    vip: IpAddr,
    tcp: bool,
    vlan_id: Option<u16>,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    dont_fragment: bool,
    payload_len: usize,
}

/// Returns the VIP, protocol and port of each configured service.
fn service_endpoints() -> Vec<(IpAddr, Protocol, u16)> {
    CONFIG_SMALL_TABLES
        .services
        .iter()
        .map(|service| (service.vip, service.protocol, service.port))
        .collect()
}

/// Generates frames to a configured VIP. The protocol and destination port usually match the
/// service, so most frames reach backend selection, and otherwise are random.
fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    let endpoints = service_endpoints();
    (
        0..endpoints.len(),
        prop::option::of(0u16..4096),
        any::<u16>(),
        prop_oneof![3 => Just(None), 1 => any::<u16>().prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => any::<bool>().prop_map(Some)],
        any::<u8>(),
        any::<bool>(),
        0..=MAX_PAYLOAD_LEN,
    )
        .prop_map(
            move |(service, vlan_id, src_port, dst_port, tcp, tcp_flags, df, payload_len)| {
                let (vip, protocol, port) = endpoints[service];
                FrameSpec {
                    vip,
                    tcp: tcp.unwrap_or(protocol == Protocol::Tcp),
                    vlan_id,
                    src_port,
                    dst_port: dst_port.unwrap_or(port),
                    tcp_flags,
                    dont_fragment: df,
                    payload_len,
                }
            },
        )
}

fn ones_complement_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn transport_header(spec: &FrameSpec) -> Vec<u8> {
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(&spec.src_port.to_be_bytes());
    header.extend_from_slice(&spec.dst_port.to_be_bytes());
    if spec.tcp {
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&[5 << 4, spec.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        let udp_len = (8 + spec.payload_len) as u16;
        header.extend_from_slice(&udp_len.to_be_bytes());
        header.extend_from_slice(&[0, 0]);
    }
    header
}

fn ip_header(spec: &FrameSpec, client: IpAddr, upper_len: usize) -> Vec<u8> {
    let protocol = if spec.tcp { 6 } else { 17 };
    match (client, spec.vip) {
        (IpAddr::V4(client), IpAddr::V4(vip)) => {
            let mut header = vec![0x45, 0];
            header.extend_from_slice(&((20 + upper_len) as u16).to_be_bytes());
            let flags = if spec.dont_fragment { 0x40 } else { 0 };
            header.extend_from_slice(&[0x12, 0x34, flags, 0, 64, protocol, 0, 0]);
            header.extend_from_slice(&client.octets());
            header.extend_from_slice(&vip.octets());
            let checksum = ones_complement_checksum(&header);
            header[10..12].copy_from_slice(&checksum.to_be_bytes());
            header
        }
        (IpAddr::V6(client), IpAddr::V6(vip)) => {
            let mut header = vec![0x60, 0, 0, 0];
            header.extend_from_slice(&(upper_len as u16).to_be_bytes());
            header.extend_from_slice(&[protocol, 64]);
            header.extend_from_slice(&client.octets());
            header.extend_from_slice(&vip.octets());
            header
        }
        _ => unreachable!("client address family follows the VIP's"),
    }
}

/// Builds the Ethernet frame `spec` describes, its payload bytes all `0xa5`.
fn build_frame(spec: &FrameSpec) -> Vec<u8> {
    let client: IpAddr = match spec.vip {
        IpAddr::V4(_) => "198.51.100.7".parse().expect("valid address"),
        IpAddr::V6(_) => "2001:db8:100::7".parse().expect("valid address"),
    };
    let transport = transport_header(spec);
    let ip = ip_header(spec, client, transport.len() + spec.payload_len);
    let ethertype: u16 = if spec.vip.is_ipv4() { 0x0800 } else { 0x86dd };

    let mut frame = FRAME_DST_MAC.to_vec();
    frame.extend_from_slice(&[0x02, 0x53, 0x50, 0, 0, 0xfe]);
    if let Some(vlan_id) = spec.vlan_id {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&vlan_id.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&transport);
    frame.resize(frame.len() + spec.payload_len, 0xa5);
    frame
}

/// A truncation point (as a fraction of the frame in 1/1000) and byte flips (position
/// modulo the frame length, and an XOR mask), applied after building.
#[derive(Clone, Debug)]
struct Damage {
    keep_per_mille: Option<u16>,
    flips: Vec<(usize, u8)>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        prop_oneof![2 => Just(None), 1 => (0u16..=1000).prop_map(Some)],
        prop::collection::vec((any::<usize>(), 1u8..=255), 0..4),
    )
        .prop_map(|(keep_per_mille, flips)| Damage {
            keep_per_mille,
            flips,
        })
}

fn apply_damage(mut frame: Vec<u8>, damage: &Damage) -> Vec<u8> {
    if let Some(keep) = damage.keep_per_mille {
        frame.truncate(frame.len() * usize::from(keep) / 1000);
    }
    if !frame.is_empty() {
        let len = frame.len();
        for &(position, mask) in &damage.flips {
            frame[position % len] ^= mask;
        }
    }
    frame
}

fn check_forward(frame: &[u8], out: &Output, ip_version: u8) {
    let header_len = out.header().len();
    assert!(
        header_len == OUTER_IPV4_HEADER_LEN || header_len == OUTER_IPV6_HEADER_LEN,
        "forward header is {header_len} bytes, expected {OUTER_IPV4_HEADER_LEN} or \
         {OUTER_IPV6_HEADER_LEN}"
    );
    assert!(
        out.inner.start < out.inner.end,
        "empty inner range {:?}",
        out.inner
    );
    assert!(
        out.inner.end <= frame.len(),
        "inner range {:?} beyond the {}-byte frame",
        out.inner,
        frame.len()
    );
    let version = frame[out.inner.start] >> 4;
    assert_eq!(
        version, ip_version,
        "IP version at inner start {}",
        out.inner.start
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_counted_once(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2000), 1..8),
    ) {
        let mut worker = new_worker();
        let mut out = Output::default();
        for (index, frame) in frames.iter().enumerate() {
            let now_ns = 1_000_000_000 * (index as u64 + 1);
            process_counted(&mut worker, frame, now_ns, &mut out);
        }
        prop_assert_eq!(worker.counters().rx_packets, frames.len() as u64);
    }

    #[test]
    fn damaged_frames_forward_consistently(
        cases in prop::collection::vec((frame_spec(), damage()), 1..12),
    ) {
        let mut worker = new_worker();
        let mut out = Output::default();
        for (index, (spec, damage)) in cases.iter().enumerate() {
            let frame = apply_damage(build_frame(spec), damage);
            // Ten seconds apart, so SYN and closing entries expire within one case.
            let now_ns = 10_000_000_000 * (index as u64 + 1);
            let verdict = process_counted(&mut worker, &frame, now_ns, &mut out);
            if verdict == Verdict::Forward {
                let ip_version = if spec.vip.is_ipv4() { 4 } else { 6 };
                check_forward(&frame, &out, ip_version);
            }
        }
    }

    #[test]
    fn prefetched_bursts_decide_like_single_frames(
        cases in prop::collection::vec((frame_spec(), damage()), 1..32),
    ) {
        // The burst preparation parses and hashes frames ahead with its own reader for
        // plain IPv4. The decision must come out the same as without it.
        let frames: Vec<Vec<u8>> = cases
            .iter()
            .map(|(spec, damage)| apply_damage(build_frame(spec), damage))
            .collect();
        let mut single = new_worker();
        let mut prefetched = new_worker();
        let (mut single_out, mut prefetched_out) = (Output::default(), Output::default());
        prefetched.prefetch_burst(&SNAPSHOT, frames.iter().map(Vec::as_slice));
        for (index, frame) in frames.iter().enumerate() {
            let now_ns = 1_000_000_000 * (index as u64 + 1);
            let expected = single.process(&SNAPSHOT, frame, now_ns, &mut single_out);
            let verdict = prefetched.process(&SNAPSHOT, frame, now_ns, &mut prefetched_out);
            prop_assert_eq!(verdict, expected, "frame {}", index);
            prop_assert_eq!(prefetched_out.header(), single_out.header(), "frame {}", index);
            prop_assert_eq!(prefetched_out.reply(), single_out.reply(), "frame {}", index);
            if verdict == Verdict::Forward {
                prop_assert_eq!(prefetched_out.inner.clone(), single_out.inner.clone());
            }
            prop_assert_eq!(prefetched_out.selection, single_out.selection);
            prop_assert_eq!(prefetched_out.flow, single_out.flow);
        }
        prop_assert_eq!(prefetched.counters(), single.counters());
    }

    #[test]
    fn tracked_flows_decide_like_single_frames(
        flows in prop::collection::vec(frame_spec(), 1..4),
        bursts in prop::collection::vec(
            (
                any::<bool>(),
                prop::collection::vec(
                    (
                        0..4usize,
                        prop::option::of(any::<u8>()),
                        prop::option::of(damage()),
                        prop_oneof![4 => Just(1u64), 1 => Just(20_000u64)],
                    ),
                    1..12,
                ),
            ),
            1..6,
        ),
        mac_filter in any::<bool>(),
    ) {
        // A few flows are sent again and again, so most prefetched frames find a
        // conntrack entry and take the tracked fast path. TCP flags change, frames are
        // damaged, a snapshot drains a backend, and the MAC filter is on or off.
        // Some frames come 20 s after the one before: past the closing timeout and
        // within the others, so an entry's expiry shows in the next selection.
        // Every output field and counter must match a worker that decides each frame alone.
        let mut single = new_worker();
        let mut prefetched = new_worker();
        if mac_filter {
            let own = spike_core::wire::MacAddr(FRAME_DST_MAC);
            single.set_mac_filter(Some(own));
            prefetched.set_mac_filter(Some(own));
        }
        let (mut single_out, mut prefetched_out) = (Output::default(), Output::default());
        let mut now_ns = 1_000_000_000;

        for (draining, sends) in &bursts {
            let snapshot: &Snapshot = if *draining { &DRAINING_SNAPSHOT } else { &SNAPSHOT };
            let frames: Vec<Vec<u8>> = sends
                .iter()
                .map(|(flow, tcp_flags, damage, _)| {
                    let mut spec = flows[flow % flows.len()].clone();
                    spec.tcp_flags = tcp_flags.unwrap_or(spec.tcp_flags);
                    let frame = build_frame(&spec);
                    match damage {
                        Some(damage) => apply_damage(frame, damage),
                        None => frame,
                    }
                })
                .collect();
            prefetched.prefetch_burst(snapshot, frames.iter().map(Vec::as_slice));

            for (index, (frame, send)) in frames.iter().zip(sends).enumerate() {
                now_ns += send.3 * 1_000_000;
                let expected = single.process(snapshot, frame, now_ns, &mut single_out);
                let verdict = prefetched.process(snapshot, frame, now_ns, &mut prefetched_out);

                prop_assert_eq!(verdict, expected, "frame {}", index);
                prop_assert_eq!(prefetched_out.header(), single_out.header(), "frame {}", index);
                prop_assert_eq!(prefetched_out.reply(), single_out.reply(), "frame {}", index);
                prop_assert_eq!(prefetched_out.selection, single_out.selection);
                prop_assert_eq!(prefetched_out.flow, single_out.flow);
                prop_assert_eq!(prefetched_out.service, single_out.service);
                prop_assert_eq!(prefetched_out.backend, single_out.backend);
                prop_assert_eq!(prefetched_out.redirect, single_out.redirect);
                prop_assert_eq!(prefetched_out.fragment, single_out.fragment);
                prop_assert_eq!(prefetched_out.split_inner, single_out.split_inner);
                prop_assert_eq!(
                    prefetched_out.udp_checksum_offloaded,
                    single_out.udp_checksum_offloaded
                );
                if verdict == Verdict::Forward {
                    prop_assert_eq!(prefetched_out.inner.clone(), single_out.inner.clone());
                    prop_assert_eq!(prefetched_out.outer_ipv6, single_out.outer_ipv6);
                    prop_assert_eq!(prefetched_out.fragment_ident, single_out.fragment_ident);
                    prop_assert_eq!(prefetched_out.mtu, single_out.mtu);
                }
                prop_assert_eq!(prefetched.counters(), single.counters(), "frame {}", index);
            }
        }
        prop_assert_eq!(prefetched.tracked_flows(), single.tracked_flows());
    }
}

/// The tracked-flow property above is only useful if most of its frames find their
/// flow in conntrack.
#[test]
fn repeated_flows_are_tracked() {
    let mut worker = new_worker();
    let mut out = Output::default();
    let spec = FrameSpec {
        vip: service_endpoints()[0].0,
        tcp: service_endpoints()[0].1 == Protocol::Tcp,
        vlan_id: None,
        src_port: 40000,
        dst_port: service_endpoints()[0].2,
        tcp_flags: 0x10,
        dont_fragment: true,
        payload_len: 100,
    };
    let frame = build_frame(&spec);
    for round in 0..4u64 {
        worker.prefetch_burst(&SNAPSHOT, [frame.as_slice()]);
        let verdict = worker.process(&SNAPSHOT, &frame, 1_000_000_000 + round, &mut out);
        assert_eq!(verdict, Verdict::Forward, "round {round}");
    }
    assert_eq!(
        worker
            .counters()
            .selection_count(spike_core::Selection::Tracked),
        3,
        "every send after the first is tracked"
    );
}

/// The generator is only useful if undamaged frames to a service get forwarded.
#[test]
fn undamaged_frames_forward() {
    let mut worker = new_worker();
    let mut out = Output::default();
    for (vip, protocol, port) in service_endpoints() {
        let spec = FrameSpec {
            vip,
            tcp: protocol == Protocol::Tcp,
            vlan_id: Some(6),
            src_port: 40000,
            dst_port: port,
            tcp_flags: 0x02,
            dont_fragment: true,
            payload_len: 100,
        };
        let frame = build_frame(&spec);
        let verdict = process_counted(&mut worker, &frame, 1_000_000_000, &mut out);
        assert_eq!(verdict, Verdict::Forward, "{protocol} {vip}:{port}");
        check_forward(&frame, &out, if vip.is_ipv4() { 4 } else { 6 });
    }
}
