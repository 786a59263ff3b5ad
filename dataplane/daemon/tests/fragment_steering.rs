//! Two workers on a net_pcap port with one input file per rx queue: the first fragment
//! of each datagram arrives on queue 0 and the rest on queue 1. Worker 1 moves its
//! fragments to worker 0, which recorded the first fragments, so every fragment goes to
//! the backend of its first. Whole packets on queue 1 stay on worker 1.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use common::{Daemon, TestDir};

const WAIT: Duration = Duration::from_secs(20);

const WEB_VIP: [u8; 4] = [3, 235, 60, 34];
const WEB_PORT: u16 = 8080;
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const NODE_MAC: [u8; 6] = [0x02, 0x53, 0x50, 0x00, 0x00, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xaa];
/// Datagrams split in two fragments, each from its own client port.
const DATAGRAMS: u16 = 12;
/// Whole TCP packets on queue 1.
const WHOLE_PACKETS: u16 = 5;
/// The first fragment's IP payload: the TCP header and 20 bytes, a multiple of 8.
const FIRST_PAYLOAD: usize = 40;
/// Outer Ethernet, IPv4, UDP and VXLAN headers, then the inner Ethernet header.
const ENCAP_LEN: usize = 14 + 20 + 8 + 8 + 14;
/// The redirect VNI of the cluster in the redirect test.
const REDIRECT_VNI: u32 = 4242;
/// `vxlan.port` of the example config.
const VXLAN_PORT: u16 = 8472;
/// `node.ipv4` of the example config.
const NODE_IPV4: [u8; 4] = [192, 0, 2, 1];
/// The other Spike node of the cluster.
const PEER: [u8; 4] = [192, 0, 2, 2];
const PEER_MAC: [u8; 6] = [0x02, 0x53, 0x50, 0x00, 0x00, 0x99];

#[test]
fn fragments_follow_first_to_one_worker() {
    let firsts: Vec<Vec<u8>> = (0..DATAGRAMS).map(first_fragment).collect();
    let later: Vec<Vec<u8>> = (0..DATAGRAMS).map(last_fragment).collect();
    let run = run_two_queues("fragment-steering", "", &firsts, &later);
    assert_eq!(run.counters["redirected_in"].as_u64(), Some(0));
}

#[test]
fn redirected_fragments_follow_first_to_one_worker() {
    // Another Spike node redirects every fragment here as VXLAN, and the NIC spreads
    // those by their outer UDP header, not by the datagram.
    let firsts: Vec<Vec<u8>> = (0..DATAGRAMS)
        .map(|index| redirected(&first_fragment(index)))
        .collect();
    let later: Vec<Vec<u8>> = (0..DATAGRAMS)
        .map(|index| redirected(&last_fragment(index)))
        .collect();
    let cluster = format!(
        "\n[cluster]\nredirect_vni = {REDIRECT_VNI}\n\
         [[cluster.node]]\naddress = \"192.0.2.1\"\nmac = \"02:53:50:00:00:01\"\n\
         [[cluster.node]]\naddress = \"{}\"\nmac = \"02:53:50:00:00:99\"\n",
        PEER.map(|byte| byte.to_string()).join(".")
    );
    let run = run_two_queues("redirect-steering", &cluster, &firsts, &later);
    assert_eq!(
        run.counters["redirected_in"].as_u64(),
        Some(u64::from(2 * DATAGRAMS)),
        "every fragment was decided as a redirect: {}",
        run.counters
    );
}

/// Counters of a finished run.
struct Run {
    counters: Value,
}

/// Runs two workers on a net_pcap port with `firsts` on queue 0 and `later`, then
/// WHOLE_PACKETS whole packets, on queue 1. Checks that worker 0 sent both fragments of
/// every datagram to one backend, and that worker 1 sent the whole packets.
fn run_two_queues(name: &str, extra_config: &str, firsts: &[Vec<u8>], later: &[Vec<u8>]) -> Run {
    let dir = TestDir::new(name);
    let queue0 = dir.file("queue0.pcap");
    let queue1 = dir.file("queue1.pcap");
    let out0 = dir.file("out0.pcap");
    let out1 = dir.file("out1.pcap");

    let mut later = later.to_vec();
    later.extend((0..WHOLE_PACKETS).map(whole_packet));
    common::write_capture(&queue0, firsts);
    common::write_capture(&queue1, &later);

    let vdev = format!(
        "net_pcap0,rx_pcap={},rx_pcap={},tx_pcap={},tx_pcap={}",
        queue0.display(),
        queue1.display(),
        out0.display(),
        out1.display()
    );
    // Three lcores on two CPUs: both workers share CPU 1.
    let mut eal_args = common::eal_args(name, "0", &["--vdev", &vdev]);
    eal_args[0] = "--lcores".to_owned();
    eal_args[1] = "0@0,1@1,2@1".to_owned();
    let config = common::example_config()
        + extra_config
        + &common::dpdk_section(&eal_args, "net_pcap0", "workers = 2\nmac_filter = false");
    let mut daemon = Daemon::start(&dir, &dir.write_config(&config));
    daemon.wait_log(WAIT, "forwarding started");

    let total = u64::from(2 * DATAGRAMS + WHOLE_PACKETS);
    let counters = daemon.wait_counters(WAIT, |counters| {
        counters["rx_packets"].as_u64() == Some(total)
    });
    let stdout = daemon.stop_with("INT");

    assert_eq!(
        counters["fragments_steered"].as_u64(),
        Some(u64::from(DATAGRAMS)),
        "worker 1 moved exactly its fragments to worker 0: {counters}"
    );
    assert_eq!(counters["fragment_ring_full"].as_u64(), Some(0));
    assert_eq!(
        counters["drops"]["fragment_without_record"].as_u64(),
        Some(0),
        "no fragment reached a worker without its first fragment's record: {counters}"
    );
    assert!(
        common::has_line(&stdout, &format!("fragments_steered {DATAGRAMS}")),
        "final counters on stdout:\n{stdout}"
    );
    assert!(
        common::has_line(&stdout, &format!("forwarded {total}")),
        "every frame was forwarded:\n{stdout}"
    );

    // Worker 0 sends on tx queue 0: both fragments of every datagram.
    let sent0 = common::read_capture(&out0);
    assert_eq!(
        sent0.len(),
        usize::from(2 * DATAGRAMS),
        "frames worker 0 sent"
    );
    let mut backends: BTreeMap<(u16, u16), Vec<[u8; 4]>> = BTreeMap::new();
    for frame in &sent0 {
        let (backend, ident, offset) = forwarded_fragment(frame);
        backends.entry((ident, offset)).or_default().push(backend);
    }
    let mut seen = Vec::new();
    for datagram in 0..DATAGRAMS {
        let ident = ident_of(datagram);
        let first = backends.get(&(ident, 0)).expect("first fragment forwarded");
        let last = backends
            .get(&(ident, (FIRST_PAYLOAD / 8) as u16))
            .expect("last fragment forwarded");
        assert_eq!(first.len(), 1, "datagram {datagram}: one first fragment");
        assert_eq!(
            last, first,
            "datagram {datagram}: both fragments to one backend"
        );
        seen.push(first[0]);
    }
    seen.sort_unstable();
    seen.dedup();
    assert!(
        seen.len() > 1,
        "datagrams spread over several backends, so the match is not by chance: {seen:?}"
    );

    // Worker 1 keeps the whole packets and sends them on tx queue 1.
    let sent1 = common::read_capture(&out1);
    assert_eq!(
        sent1.len(),
        usize::from(WHOLE_PACKETS),
        "frames worker 1 sent"
    );
    for frame in &sent1 {
        let inner = &frame[ENCAP_LEN..];
        assert_eq!(&inner[16..20], &WEB_VIP, "a whole packet to the web VIP");
        assert_eq!(u16::from_be_bytes([inner[6], inner[7]]) & 0x3fff, 0);
    }
    Run { counters }
}

/// Wraps `frame` the way another Spike node redirects a fragment: VXLAN with the
/// cluster's redirect VNI, from PEER to this node's underlay address and VXLAN port.
fn redirected(frame: &[u8]) -> Vec<u8> {
    let mut inner = frame.to_vec();
    // The inner frame is cut to its IP packet's length: Ethernet padding is not sent.
    let ip_len = usize::from(u16::from_be_bytes([inner[16], inner[17]]));
    inner.truncate(14 + ip_len);
    let udp_len = 8 + 8 + inner.len();
    let mut datagram = 49_200u16.to_be_bytes().to_vec();
    datagram.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    datagram.extend_from_slice(&(udp_len as u16).to_be_bytes());
    datagram.extend_from_slice(&[0, 0, 0x08, 0, 0, 0]);
    datagram.extend_from_slice(&(REDIRECT_VNI << 8).to_be_bytes());
    datagram.extend(inner);

    let mut outer = ipv4_header(0x0101, 0x4000, datagram.len());
    outer[9] = 17;
    outer[12..16].copy_from_slice(&PEER);
    outer[16..20].copy_from_slice(&NODE_IPV4);
    outer[10..12].copy_from_slice(&[0, 0]);
    let checksum = common::internet_checksum(&outer);
    outer[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = NODE_MAC.to_vec();
    frame.extend_from_slice(&PEER_MAC);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend(outer);
    frame.extend(datagram);
    frame
}

/// Returns the outer destination (the backend), the inner IP ident and the inner
/// fragment offset of a forwarded fragment.
fn forwarded_fragment(frame: &[u8]) -> ([u8; 4], u16, u16) {
    assert!(frame.len() > ENCAP_LEN + 20, "{} bytes", frame.len());
    let backend: [u8; 4] = frame[30..34].try_into().unwrap();
    let inner = &frame[ENCAP_LEN..];
    let ident = u16::from_be_bytes([inner[4], inner[5]]);
    let offset = u16::from_be_bytes([inner[6], inner[7]]) & 0x1fff;
    (backend, ident, offset)
}

fn ident_of(datagram: u16) -> u16 {
    0x4000 + datagram
}

fn client_port(index: u16) -> u16 {
    40_000 + index * 7
}

/// Builds the first fragment of datagram `index`: the TCP header and 20 bytes.
fn first_fragment(index: u16) -> Vec<u8> {
    let mut payload = tcp_header(client_port(index));
    payload.extend((0..FIRST_PAYLOAD - 20).map(|byte| byte as u8));
    frame(
        ipv4_header(ident_of(index), 0x2000, payload.len()),
        &payload,
    )
}

/// Builds the last fragment of datagram `index`: 16 more bytes at the first's end.
fn last_fragment(index: u16) -> Vec<u8> {
    let payload = [0x5a; 16];
    let offset = (FIRST_PAYLOAD / 8) as u16;
    frame(
        ipv4_header(ident_of(index), offset, payload.len()),
        &payload,
    )
}

/// Builds a whole TCP packet from a client port no datagram uses.
fn whole_packet(index: u16) -> Vec<u8> {
    let payload = tcp_header(50_000 + index);
    frame(ipv4_header(0x7000 + index, 0, payload.len()), &payload)
}

fn tcp_header(src_port: u16) -> Vec<u8> {
    let mut header = src_port.to_be_bytes().to_vec();
    header.extend_from_slice(&WEB_PORT.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    header
}

/// Builds an IPv4 header from CLIENT to the web VIP with a valid checksum.
fn ipv4_header(ident: u16, flags_offset: u16, payload_len: usize) -> Vec<u8> {
    let total_len = (20 + payload_len) as u16;
    let mut header = vec![0x45, 0];
    header.extend_from_slice(&total_len.to_be_bytes());
    header.extend_from_slice(&ident.to_be_bytes());
    header.extend_from_slice(&flags_offset.to_be_bytes());
    header.extend_from_slice(&[64, 6, 0, 0]);
    header.extend_from_slice(&CLIENT);
    header.extend_from_slice(&WEB_VIP);
    let checksum = common::internet_checksum(&header);
    header[10..12].copy_from_slice(&checksum.to_be_bytes());
    header
}

fn frame(ip_header: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    let mut frame = NODE_MAC.to_vec();
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    frame.extend(ip_header);
    frame.extend_from_slice(payload);
    frame.resize(frame.len().max(60), 0);
    frame
}
