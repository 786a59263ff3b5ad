//! Shared setup of the benchmarks in `benches/` and the measurement tool in `src/bin/`:
//! a config with one TCP service and four backends, and 64-byte TCP frames to its VIP.

use spike_core::Config;

/// 14-byte Ethernet + 20-byte IPv4 + 20-byte TCP, padded to a 64-byte frame the way a
/// minimum-size frame arrives from a NIC that strips the FCS.
pub const FRAME_LEN: usize = 64;
const IP_TOTAL_LEN: u16 = 40;

pub const VIP: [u8; 4] = [3, 235, 60, 34];
pub const VIP_PORT: u16 = 8080;

/// Fixed clock reading in nanoseconds: every flow stays well inside its timeout.
pub const NOW_NS: u64 = 1_000_000_000;

/// Returns a config with one TCP service and four backends, its conntrack sized for
/// `capacity` flows.
pub fn config(capacity: usize) -> Config {
    let text = format!(
        r#"
[node]
mac = "02:53:50:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:53:50:00:00:fe"
vtep_mac = "02:53:50:00:00:02"

[hash]
key = "8f2d6c1e4b7a90355ce1d2f3a4b5c6d7"

[conntrack]
capacity = {capacity}

[[service]]
name = "web"
vip = "3.235.60.34"
protocol = "tcp"
port = {VIP_PORT}

[[service.backend]]
address = "192.0.2.11"
vtep_mac = "0a:58:0a:f4:00:0a"

[[service.backend]]
address = "192.0.2.12"
vtep_mac = "0a:58:0a:f4:00:0b"

[[service.backend]]
address = "192.0.2.13"
vtep_mac = "0a:58:0a:f4:00:0c"

[[service.backend]]
address = "192.0.2.14"
vtep_mac = "0a:58:0a:f4:00:0d"
"#
    );
    text.parse()
        .unwrap_or_else(|error| panic!("benchmark config is invalid: {error}"))
}

/// Ones' complement sum of big-endian 16-bit words, folded to 16 bits.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes an ACK of flow `flow` into `frame`. Flows differ in client address
/// (10.0.0.0/8) and source port, so every index up to 2^24 is a distinct five-tuple.
pub fn write_frame(frame: &mut [u8], flow: u32) {
    frame.fill(0);
    frame[0..6].copy_from_slice(&[0x02, 0x53, 0x50, 0x00, 0x00, 0x01]);
    frame[6..12].copy_from_slice(&[0x02, 0x53, 0x50, 0x00, 0x00, 0xfe]);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());

    let ip = &mut frame[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&IP_TOTAL_LEN.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    let [_, high, middle, low] = flow.to_be_bytes();
    ip[12..16].copy_from_slice(&[10, high, middle, low]);
    ip[16..20].copy_from_slice(&VIP);
    let checksum = internet_checksum(ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());

    let tcp = &mut frame[34..54];
    let src_port = 1024 + (flow % 60_000) as u16;
    tcp[0..2].copy_from_slice(&src_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&VIP_PORT.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
}

/// Builds all frames into one contiguous buffer, because a million separate `Vec`s would
/// cost a million allocations and scatter the frames across the heap.
pub fn build_frames(flows: usize) -> Vec<u8> {
    let mut frames = vec![0u8; flows * FRAME_LEN];
    for (flow, frame) in frames.chunks_exact_mut(FRAME_LEN).enumerate() {
        write_frame(frame, flow as u32);
    }
    frames
}
