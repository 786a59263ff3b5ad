//! Runs captures through `spike-dataplane` on a net_pcap port and checks that it
//! counts and sends exactly what the core decides when the same frames are replayed
//! through `Worker::process` in this test, the way `spike-trace` replays them.
//!
//! With one worker that receives the frames in capture order, even the values that
//! depend on the worker's state (outer IPv4 identification, conntrack selections)
//! must match, so the transmitted pcap is compared byte for byte.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use spike_core::encap::write_outer_fragments;
use spike_core::{
    Config, Counters, DropReason, KernelReason, Output, Selection, Snapshot, Verdict, Worker,
};

use common::{Daemon, TestDir};

/// How long the dataplane may take to receive a whole capture.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Nanoseconds between replayed frames. The dataplane reads the TSC, so all that
/// matters is that no conntrack or fragment timeout expires during a replay.
const REPLAY_STEP_NS: u64 = 1_000;

const WEB_VIP: [u8; 4] = [3, 235, 60, 34];
const DNS_VIP: [u8; 4] = [2, 1, 1, 1];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const NODE_MAC: [u8; 6] = [0x02, 0x53, 0x50, 0x00, 0x00, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xaa];

#[test]
fn sample_captures_match_core() {
    let mut captures: Vec<PathBuf> = fs::read_dir(common::captures_dir())
        .expect("the sample capture directory exists (set SPIKE_PCAPS to move it)")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pcap"))
        .collect();
    captures.sort();
    assert!(
        captures.len() >= 6,
        "expected the six sample captures, found {captures:?}"
    );

    for capture in &captures {
        check_capture("samples", capture);
    }
}

/// Frames that take every path of the poll loop: a padded frame (the padding is cut
/// before the header is prepended), a VLAN tag, outer fragmentation, an ICMP too-big
/// reply, the kernel and a UDP service, and frames longer than one mbuf, which the
/// driver chains and the worker decides from a copy.
#[test]
fn synthetic_capture_covers_slow_paths() {
    let dir = TestDir::new("synthetic");
    let capture = dir.file("synthetic.pcap");
    let frames = vec![
        tcp_frame(WEB_VIP, 40_001, 8080, 0, false, None),
        tcp_frame(WEB_VIP, 40_002, 8080, 1440, false, None),
        tcp_frame(WEB_VIP, 40_003, 8080, 1440, true, None),
        arp_request(),
        tcp_frame(WEB_VIP, 40_004, 8080, 100, true, Some(7)),
        udp_frame(DNS_VIP, 53_001, 53, 60),
        tcp_frame(WEB_VIP, 40_005, 8080, 3000, true, None),
        tcp_frame(WEB_VIP, 40_006, 8080, 3000, false, None),
    ];
    common::write_capture(&capture, &frames);

    let expected = check_capture("synthetic", &capture);
    assert_eq!(expected.counters.forwarded, 5);
    assert_eq!(expected.counters.outer_fragmented, 2);
    assert_eq!(expected.counters.replies, 2);
    assert_eq!(expected.counters.kernel_count(KernelReason::Arp), 1);
    assert_eq!(
        expected.frames.len(),
        10,
        "3 whole forwards, 2 + 3 fragments, 2 replies"
    );
}

/// What the core decides for a capture.
struct Expected {
    counters: Counters,
    frames: Vec<Vec<u8>>,
}

/// Runs `capture` through the dataplane and through the core, compares both and
/// returns the core's result.
fn check_capture(test_name: &str, capture: &Path) -> Expected {
    let name = capture.file_name().unwrap().to_string_lossy().into_owned();
    let input = common::read_capture(capture);
    let base_config = common::example_config();
    let config: Config = base_config.parse().expect("the example config is valid");
    let expected = replay(&config, &input);

    let dir = TestDir::new(test_name);
    let output = dir.file("out.pcap");
    let vdev = common::pcap_vdev(capture, &output);
    let eal_args = common::eal_args(test_name, "0,1", &["--vdev", &vdev]);
    let text = base_config
        + &common::dpdk_section(
            &eal_args,
            "net_pcap0",
            // Captured frames carry other hosts' MACs.
            "workers = 1\nmac_filter = false",
        );
    let mut daemon = Daemon::start(&dir, &dir.write_config(&text));

    let frame_count = input.len() as u64;
    let counters = daemon.wait_counters(RECEIVE_TIMEOUT, |counters| {
        counters["rx_packets"].as_u64() == Some(frame_count)
    });
    let stdout = daemon.stop_with("INT");

    compare_counters(&name, &counters, &expected.counters);
    assert!(
        common::has_line(&stdout, &format!("rx_packets {frame_count}")),
        "{name}: final counters on stdout:\n{stdout}"
    );
    assert!(
        common::has_line(
            &stdout,
            &format!("forwarded {}", expected.counters.forwarded)
        ),
        "{name}: final counters on stdout:\n{stdout}"
    );

    let sent = common::read_capture(&output);
    assert_eq!(
        sent.len(),
        expected.frames.len(),
        "{name}: number of frames sent"
    );
    for (index, (sent, expected)) in sent.iter().zip(&expected.frames).enumerate() {
        assert_eq!(sent, expected, "{name}: sent frame {index}");
    }
    expected
}

/// Replays frames through the core in order, building the frames the dataplane must
/// send the way spike-trace writes them.
fn replay(config: &Config, frames: &[Vec<u8>]) -> Expected {
    let snapshot = Snapshot::build(config, 1).unwrap();
    let mut worker = Worker::new(config).unwrap();
    let mut out = Output::default();
    let mut scratch = vec![0u8; usize::from(config.node.mtu) + 64];
    let mut sent = Vec::new();

    for (index, frame) in frames.iter().enumerate() {
        let now_ns = (index as u64 + 1) * REPLAY_STEP_NS;
        match worker.process(&snapshot, frame, now_ns, &mut out) {
            Verdict::Forward if out.fragment => {
                write_outer_fragments(
                    out.header(),
                    &frame[out.inner.clone()],
                    out.outer_ipv6,
                    out.mtu,
                    out.fragment_ident,
                    &mut scratch,
                    |fragment| sent.push(fragment.to_vec()),
                );
            }
            Verdict::Forward => {
                let mut whole = out.header().to_vec();
                whole.extend_from_slice(&frame[out.inner.clone()]);
                sent.push(whole);
            }
            Verdict::Reply => sent.push(out.reply().to_vec()),
            Verdict::Kernel(_) | Verdict::Drop(_) | Verdict::Held => {}
        }
    }
    Expected {
        counters: worker.counters().clone(),
        frames: sent,
    }
}

fn compare_counters(name: &str, counters: &Value, expected: &Counters) {
    let scalars = [
        ("rx_packets", expected.rx_packets),
        ("rx_bytes", expected.rx_bytes),
        ("forwarded", expected.forwarded),
        ("replies", expected.replies),
        ("outer_fragmented", expected.outer_fragmented),
        ("too_big_sent", expected.too_big_sent),
        ("fragment_table_full", expected.fragment_table_full),
        (
            "conntrack_expired_replaced",
            expected.conntrack_expired_replaced,
        ),
        ("conntrack_insert_failed", expected.conntrack_insert_failed),
    ];
    for (key, value) in scalars {
        assert_eq!(counters[key].as_u64(), Some(value), "{name}: {key}");
    }
    for reason in KernelReason::ALL {
        let count = counters["kernel"][reason.label()].as_u64();
        assert_eq!(
            count,
            Some(expected.kernel_count(*reason)),
            "{name}: kernel.{reason}"
        );
    }
    for reason in DropReason::ALL {
        let count = counters["drops"][reason.label()].as_u64();
        assert_eq!(
            count,
            Some(expected.drop_count(*reason)),
            "{name}: drops.{reason}"
        );
    }
    for how in Selection::ALL {
        let count = counters["selections"][how.label()].as_u64();
        assert_eq!(
            count,
            Some(expected.selection_count(*how)),
            "{name}: selections.{how}"
        );
    }
    for (key, value) in [
        ("tx_dropped", 0),
        ("mbuf_alloc_failed", 0),
        ("encap_failed", 0),
    ] {
        assert_eq!(counters[key].as_u64(), Some(value), "{name}: {key}");
    }
    let port_ipackets = counters["port"]["ipackets"].as_u64();
    assert_eq!(
        port_ipackets,
        Some(expected.rx_packets),
        "{name}: port.ipackets"
    );

    for service in &expected.services {
        let reported = counters["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|reported| reported["name"] == service.name.as_str())
            .unwrap_or_else(|| panic!("{name}: service {} missing", service.name));
        assert_eq!(
            reported["packets"].as_u64(),
            Some(service.traffic.packets),
            "{name}: service {} packets",
            service.name
        );
        assert_eq!(
            reported["bytes"].as_u64(),
            Some(service.traffic.bytes),
            "{name}: service {} bytes",
            service.name
        );
        for (position, (_, traffic)) in service.backends.iter().enumerate() {
            assert_eq!(
                reported["backends"][position]["packets"].as_u64(),
                Some(traffic.packets),
                "{name}: service {} backend {position} packets",
                service.name
            );
        }
    }
}

/// Builds an Ethernet header from the client to the node, with an optional 802.1Q tag.
fn ethernet(ethertype: u16, vlan: Option<u16>) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&NODE_MAC);
    frame.extend_from_slice(&CLIENT_MAC);
    if let Some(vlan) = vlan {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&vlan.to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// Builds an IPv4 header from CLIENT with a valid header checksum.
fn ipv4_header(dst: [u8; 4], protocol: u8, payload_len: usize, dont_fragment: bool) -> Vec<u8> {
    let total_len = (20 + payload_len) as u16;
    let flags: u16 = if dont_fragment { 0x4000 } else { 0 };
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&total_len.to_be_bytes());
    header.extend_from_slice(&0x1234u16.to_be_bytes());
    header.extend_from_slice(&flags.to_be_bytes());
    header.extend_from_slice(&[64, protocol, 0, 0]);
    header.extend_from_slice(&CLIENT);
    header.extend_from_slice(&dst);
    let checksum = common::internet_checksum(&header);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    header
}

/// Builds a TCP ACK frame with `payload_len` bytes, padded to Ethernet's 60-byte
/// minimum.
fn tcp_frame(
    dst: [u8; 4],
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
    dont_fragment: bool,
    vlan: Option<u16>,
) -> Vec<u8> {
    let mut frame = ethernet(0x0800, vlan);
    frame.extend(ipv4_header(dst, 6, 20 + payload_len, dont_fragment));
    frame.extend_from_slice(&src_port.to_be_bytes());
    frame.extend_from_slice(&dst_port.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    frame.extend((0..payload_len).map(|index| index as u8));
    frame.resize(frame.len().max(60), 0);
    frame
}

fn udp_frame(dst: [u8; 4], src_port: u16, dst_port: u16, payload_len: usize) -> Vec<u8> {
    let mut frame = ethernet(0x0800, None);
    frame.extend(ipv4_header(dst, 17, 8 + payload_len, false));
    frame.extend_from_slice(&src_port.to_be_bytes());
    frame.extend_from_slice(&dst_port.to_be_bytes());
    frame.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend((0..payload_len).map(|index| index as u8));
    frame
}

fn arp_request() -> Vec<u8> {
    let mut frame = ethernet(0x0806, None);
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&CLIENT);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&[192, 0, 2, 1]);
    frame.resize(60, 0);
    frame
}
