//! Replays the public sample captures through `spike-trace` with the example config,
//! checks every frame's verdict, and decodes the forwarded output with tshark, an
//! independent VXLAN decoder, to check the encapsulation flannel expects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const VTEP_MACS: &[(&str, &str)] = &[
    ("node-a", "0a:58:0a:f4:00:0a"),
    ("node-b", "0a:58:0a:f4:00:0b"),
    ("node-c", "0a:58:0a:f4:00:0c"),
    ("node-d", "0a:58:0a:f4:00:0d"),
    ("node-e", "0a:58:0a:f4:00:0e"),
];

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn captures_dir() -> PathBuf {
    match std::env::var_os("SPIKE_PCAPS") {
        Some(dir) => PathBuf::from(dir),
        None => repository_root().join("../shared/pcaps"),
    }
}

fn config_path() -> PathBuf {
    repository_root().join("configs/spike.toml")
}

struct Trace {
    lines: Vec<String>,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

fn trace(capture: &str) -> Trace {
    trace_with_config(capture, &config_path())
}

fn trace_with_config(capture: &str, config: &Path) -> Trace {
    trace_input(&captures_dir().join(capture), config)
}

fn trace_input(input: &Path, config: &Path) -> Trace {
    let capture = input.display();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let output = dir.path().join("out.pcap");
    assert!(
        input.exists(),
        "sample capture {} is missing",
        input.display()
    );
    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&output)
        .output()
        .expect("run spike-trace");
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(
        result.status.success(),
        "spike-trace failed on {capture}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    Trace {
        lines: stdout.lines().map(str::to_owned).collect(),
        output,
        _dir: dir,
    }
}

/// The verdict column of each line.
fn verdicts(trace: &Trace) -> Vec<String> {
    trace
        .lines
        .iter()
        .map(|line| {
            line.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// Raw bytes of every frame in a pcap file, parsed by hand so the test does not share
/// the tracer's capture code.
fn pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("read pcap");
    assert!(bytes.len() >= 24, "{} has no pcap header", path.display());
    let little_endian =
        bytes[0..4] == [0xd4, 0xc3, 0xb2, 0xa1] || bytes[0..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let read_u32 = |at: usize| {
        let word = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if little_endian {
            u32::from_le_bytes(word)
        } else {
            u32::from_be_bytes(word)
        }
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let captured = read_u32(at + 8) as usize;
        let start = at + 16;
        frames.push(bytes[start..start + captured].to_vec());
        at = start + captured;
    }
    frames
}

fn tshark_fields(path: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut command = Command::new("tshark");
    command
        .arg("-r")
        .arg(path)
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
        ])
        .args([
            "-d",
            "udp.port==8472,vxlan",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ]);
    for name in fields {
        command.args(["-e", name]);
    }
    let result = command
        .output()
        .expect("run tshark (install the tshark package)");
    assert!(
        result.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8_lossy(&result.stdout)
        .lines()
        .map(|line| line.split('|').map(str::to_owned).collect())
        .collect()
}

/// Offset of the IP packet in an input frame: after Ethernet and any 802.1Q tag.
fn ip_start(frame: &[u8]) -> usize {
    if frame[12..14] == [0x81, 0x00] {
        18
    } else {
        14
    }
}

fn ip_len(packet: &[u8]) -> usize {
    match packet[0] >> 4 {
        4 => usize::from(u16::from_be_bytes([packet[2], packet[3]])),
        _ => 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]])),
    }
}

/// Checks every forwarded frame with tshark: VXLAN on UDP 8472 with VNI 1, the chosen
/// backend's VtepMAC as inner destination, and the input IP packet unchanged inside.
fn check_encapsulation(trace: &Trace, capture: &str) {
    check_encapsulation_of(trace, &captures_dir().join(capture));
}

fn check_encapsulation_of(trace: &Trace, input: &Path) {
    let capture = input.display();
    let inputs = pcap_frames(input);
    let outputs = pcap_frames(&trace.output);
    let forwarded: Vec<(usize, &String)> = trace
        .lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.split_whitespace().nth(1) == Some("forward"))
        .collect();
    assert_eq!(
        outputs.len(),
        forwarded.len(),
        "one output frame per forward in {capture}"
    );

    let decoded = tshark_fields(
        &trace.output,
        &[
            "udp.dstport",
            "vxlan.vni",
            "vxlan.flags",
            "eth.dst",
            "eth.src",
            "udp.srcport",
            "ip.checksum.status",
            "udp.checksum.status",
            "ipv6.dst",
        ],
    );
    assert_eq!(
        decoded.len(),
        outputs.len(),
        "tshark decoded every output frame"
    );
    let vtep: HashMap<&str, &str> = VTEP_MACS.iter().copied().collect();

    for ((index, line), (fields, output)) in forwarded.iter().zip(decoded.iter().zip(&outputs)) {
        let udp_ports: Vec<&str> = fields[0].split(',').collect();
        assert_eq!(
            udp_ports.first(),
            Some(&"8472"),
            "outer UDP destination port, frame {}",
            index + 1
        );
        assert_eq!(fields[1], "1", "VNI of frame {}", index + 1);
        let ethernet_destinations: Vec<&str> = fields[3].split(',').collect();
        assert_eq!(
            ethernet_destinations.len(),
            2,
            "outer and inner Ethernet in frame {}",
            index + 1
        );
        let backend = field(line, "backend").expect("forward line names its backend");
        assert_eq!(
            ethernet_destinations[1],
            vtep[backend],
            "inner destination MAC is {backend}'s VtepMAC, frame {}",
            index + 1
        );
        let ethernet_sources: Vec<&str> = fields[4].split(',').collect();
        assert_eq!(
            ethernet_sources[1], "02:53:50:00:00:02",
            "inner source is Spike's VTEP MAC"
        );
        let source_port: u16 = fields[5]
            .split(',')
            .next()
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        assert!(
            source_port >= 49152,
            "outer UDP source port {source_port} within 49152-65535"
        );

        // tshark's checksum status: 1 is good, 3 is not present (a zero UDP checksum).
        let outer_ip_checksum = fields[6].split(',').next().unwrap_or_default();
        let outer_udp_checksum = fields[7].split(',').next().unwrap_or_default();
        if output[12..14] == [0x86, 0xdd] {
            assert_eq!(
                outer_udp_checksum,
                "1",
                "outer UDP checksum over IPv6 is valid, frame {}",
                index + 1
            );
        } else {
            assert_eq!(
                outer_ip_checksum,
                "1",
                "outer IPv4 header checksum, frame {}",
                index + 1
            );
            assert!(
                outer_udp_checksum == "1" || outer_udp_checksum == "3",
                "outer UDP checksum over IPv4 is valid or zero, frame {}: {outer_udp_checksum}",
                index + 1
            );
        }

        let input = &inputs[*index];
        let start = ip_start(input);
        let inner_ip = &input[start..start + ip_len(&input[start..])];
        assert!(
            output.ends_with(inner_ip),
            "inner IP packet of frame {} is byte-identical",
            index + 1
        );
        let header_len = output.len() - inner_ip.len();
        assert!(
            header_len == 64 || header_len == 84,
            "encapsulation header is {header_len} bytes"
        );
    }
}

#[test]
fn tcp_handshake_capture() {
    let capture = "suricata-tcp-handshake-data-rst.pcap";
    let trace = trace(capture);
    let verdicts = verdicts(&trace);
    assert_eq!(verdicts.len(), 34, "one line per frame");

    let client_frames = [
        1, 3, 4, 6, 7, 11, 12, 15, 16, 17, 19, 20, 24, 25, 30, 31, 32, 33, 34,
    ];
    for (index, verdict) in verdicts.iter().enumerate() {
        let expected = if client_frames.contains(&(index + 1)) {
            "forward"
        } else {
            "kernel:not_service"
        };
        assert_eq!(
            verdict,
            expected,
            "frame {}: {}",
            index + 1,
            trace.lines[index]
        );
    }

    let first = &trace.lines[0];
    assert_eq!(
        field(first, "why"),
        Some("new_flow"),
        "SYN starts a flow: {first}"
    );
    let backend = field(first, "backend").expect("backend named");
    for line in trace
        .lines
        .iter()
        .filter(|line| line.contains(" forward "))
        .skip(1)
    {
        assert_eq!(
            field(line, "why"),
            Some("tracked"),
            "later packets hit conntrack: {line}"
        );
        assert_eq!(
            field(line, "backend"),
            Some(backend),
            "whole flow on one backend: {line}"
        );
    }
    check_encapsulation(&trace, capture);
}

#[test]
fn fragmented_syn_capture() {
    let capture = "suricata-frag-eth-vlan-ip-tcp-syn.pcap";
    let trace = trace(capture);
    assert_eq!(verdicts(&trace), ["forward", "forward", "forward"]);
    assert_eq!(field(&trace.lines[0], "why"), Some("new_flow"));
    assert_eq!(
        field(&trace.lines[1], "why"),
        Some("fragment_follows_first")
    );
    assert_eq!(
        field(&trace.lines[2], "why"),
        Some("fragment_follows_first")
    );
    let backend = field(&trace.lines[0], "backend");
    assert!(backend.is_some());
    assert_eq!(field(&trace.lines[1], "backend"), backend);
    assert_eq!(field(&trace.lines[2], "backend"), backend);
    check_encapsulation(&trace, capture);
}

/// Five Spike nodes, this one (192.0.2.1) first. Node `n` has MAC 02:53:50:00:01:0n.
fn cluster_section() -> String {
    let mut text = String::from("\n[cluster]\nredirect_vni = 4097\n");
    for node in 1..=5 {
        text.push_str(&format!(
            "\n[[cluster.node]]\naddress = \"192.0.2.{node}\"\nmac = \"02:53:50:00:01:0{node}\"\n"
        ));
    }
    text
}

#[test]
fn redirected_fragments_decode_as_vxlan() {
    let capture = "suricata-frag-eth-vlan-ip-tcp-syn.pcap";
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let config = dir.path().join("cluster.toml");
    let example = std::fs::read_to_string(config_path()).expect("read the example config");
    std::fs::write(&config, example + &cluster_section()).expect("write the cluster config");
    let trace = trace_with_config(capture, &config);

    assert_eq!(verdicts(&trace), ["forward", "forward", "forward"]);
    let node = field(&trace.lines[0], "node").expect("a redirect names its node");
    assert_ne!(
        node, "192.0.2.1",
        "the capture's datagram belongs to another node"
    );
    for line in &trace.lines {
        assert_eq!(
            field(line, "why"),
            Some("redirected_to_designated_node"),
            "{line}"
        );
        assert_eq!(
            field(line, "node"),
            Some(node),
            "all fragments go to one node: {line}"
        );
    }
    let node_mac = format!("02:53:50:00:01:0{}", node.rsplit('.').next().unwrap());

    let inputs = pcap_frames(&captures_dir().join(capture));
    let outputs = pcap_frames(&trace.output);
    assert_eq!(outputs.len(), 3, "one redirect per fragment");
    let decoded = tshark_fields(
        &trace.output,
        &[
            "udp.dstport",
            "vxlan.vni",
            "ip.dst",
            "eth.dst",
            "ip.src",
            "ip.checksum.status",
        ],
    );
    assert_eq!(decoded.len(), 3, "tshark decoded every redirect");
    for (index, (fields, output)) in decoded.iter().zip(&outputs).enumerate() {
        let frame = index + 1;
        assert_eq!(
            fields[0].split(',').next(),
            Some("8472"),
            "UDP port, frame {frame}"
        );
        assert_eq!(fields[1], "4097", "redirect VNI, frame {frame}");
        let destinations: Vec<&str> = fields[2].split(',').collect();
        assert_eq!(destinations[0], node, "outer destination, frame {frame}");
        let macs: Vec<&str> = fields[3].split(',').collect();
        assert_eq!(
            macs,
            [node_mac.as_str(), node_mac.as_str()],
            "MACs, frame {frame}"
        );
        let sources: Vec<&str> = fields[4].split(',').collect();
        assert_eq!(sources[0], "192.0.2.1", "outer source, frame {frame}");
        assert_eq!(
            fields[5].split(',').next(),
            Some("1"),
            "outer IPv4 header checksum, frame {frame}"
        );

        let input = &inputs[index];
        let start = ip_start(input);
        let inner_ip = &input[start..start + ip_len(&input[start..])];
        assert!(
            output.ends_with(inner_ip),
            "fragment {frame} travels unchanged"
        );
        assert_eq!(
            output.len() - inner_ip.len(),
            64,
            "redirect header, frame {frame}"
        );
    }
}

/// Writes `frames` as a little-endian pcap file with Ethernet link type.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut bytes = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&65535u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for (index, frame) in frames.iter().enumerate() {
        bytes.extend_from_slice(&(index as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        bytes.extend_from_slice(frame);
    }
    std::fs::write(path, bytes).expect("write the capture");
}

#[test]
fn early_fragments_are_held_then_released() {
    let capture = "suricata-frag-eth-vlan-ip-tcp-syn.pcap";
    let mut frames = pcap_frames(&captures_dir().join(capture));
    frames.reverse();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let reversed = dir.path().join("reversed.pcap");
    write_pcap(&reversed, &frames);
    // A cluster of this node alone: it is designated for every datagram.
    let config = dir.path().join("cluster.toml");
    let example = std::fs::read_to_string(config_path()).expect("read the example config");
    let cluster = "\n[cluster]\nredirect_vni = 4097\n\n[[cluster.node]]\n\
                   address = \"192.0.2.1\"\nmac = \"02:53:50:00:01:01\"\n";
    std::fs::write(&config, example + cluster).expect("write the cluster config");

    let output = dir.path().join("out.pcap");
    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(&reversed)
        .arg("--output")
        .arg(&output)
        .arg("--counters")
        .output()
        .expect("run spike-trace");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();

    let verdict = |line: &str| {
        line.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(verdict(lines[0]), "held", "{stdout}");
    assert_eq!(verdict(lines[1]), "held", "{stdout}");
    assert_eq!(verdict(lines[2]), "forward", "{stdout}");
    assert_eq!(field(lines[2], "why"), Some("new_flow"));
    let backend = field(lines[2], "backend");
    for released in &lines[3..5] {
        assert!(released.ends_with(" released"), "{released}");
        assert_eq!(verdict(released), "forward", "{released}");
        assert_eq!(field(released, "why"), Some("fragment_follows_first"));
        assert_eq!(field(released, "backend"), backend, "{released}");
    }
    assert!(stdout.contains("  held 2\n"), "{stdout}");
    assert!(stdout.contains("  held_released 2\n"), "{stdout}");
    assert_eq!(pcap_frames(&output).len(), 3, "every fragment was sent");
}

#[test]
fn icmp_fragments_capture() {
    let trace = trace("suricata-ipv4frags-icmp-echo.pcap");
    assert_eq!(
        verdicts(&trace),
        [
            "kernel:icmp_not_error",
            "kernel:not_service",
            "kernel:not_service"
        ]
    );
}

#[test]
fn ipv6_extension_headers_capture() {
    // The capture's packet goes from ::1 to ::1, which no VIP can be, and a loopback
    // source is no client either. A copy goes from a documentation address to v6-udp's VIP
    // instead. Spike does not check the inner UDP checksum that this breaks.
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("ipv6-to-vip.pcap");
    let mut bytes =
        std::fs::read(captures_dir().join("suricata-vlan-ipv6-hbh-dstopt-rthdr-udp.pcap"))
            .expect("read the IPv6 capture");
    let loopback = std::net::Ipv6Addr::LOCALHOST.octets();
    let both: Vec<u8> = [loopback, loopback].concat();
    let at = bytes
        .windows(both.len())
        .position(|window| window == both.as_slice())
        .expect("source and destination ::1 in the capture");
    let client: std::net::Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let vip: std::net::Ipv6Addr = "2001:db8:100::1".parse().unwrap();
    bytes[at..at + 16].copy_from_slice(&client.octets());
    bytes[at + 16..at + 32].copy_from_slice(&vip.octets());
    std::fs::write(&input, bytes).expect("write the rewritten capture");

    let trace = trace_input(&input, &config_path());
    assert_eq!(verdicts(&trace), ["forward"]);
    assert_eq!(field(&trace.lines[0], "service"), Some("v6-udp"));
    check_encapsulation_of(&trace, &input);
}

#[test]
fn invalid_header_length_capture() {
    let trace = trace("tcpdump-ipv4_invalid_hdr_length.pcap");
    assert_eq!(verdicts(&trace), ["drop:ipv4_bad_header_length"]);
}

#[test]
fn vxlan_capture_goes_to_kernel() {
    let trace = trace("tcpdump-vxlan_port_8472.pcap");
    let verdicts = verdicts(&trace);
    assert_eq!(verdicts.len(), 10);
    assert!(
        verdicts
            .iter()
            .all(|verdict| verdict == "kernel:not_service"),
        "{verdicts:?}"
    );
}

#[test]
fn bad_config_exits_with_error() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let config = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(config_path())
        .expect("read example config")
        .replace("table_size = 65537", "table_size = 65536");
    std::fs::write(&config, text).expect("write config");
    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(captures_dir().join("tcpdump-vxlan_port_8472.pcap"))
        .output()
        .expect("run spike-trace");
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("table_size"),
        "error names the key: {stderr}"
    );
    assert!(stderr.contains("65536"), "error names the value: {stderr}");
    assert!(
        stderr.contains("prime"),
        "error says what is expected: {stderr}"
    );
}

#[test]
fn backend_without_a_slot_is_warned_about() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let config = dir.path().join("heavy.toml");
    let example = std::fs::read_to_string(config_path()).expect("read example config");
    let text = example.replacen("weight = 2", "weight = 1000000", 1);
    assert_ne!(
        text, example,
        "the example config has a backend of weight 2"
    );
    std::fs::write(&config, text).expect("write config");
    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(captures_dir().join("tcpdump-vxlan_port_8472.pcap"))
        .output()
        .expect("run spike-trace");
    assert_eq!(result.status.code(), Some(0), "a warning is no error");
    let stderr = String::from_utf8_lossy(&result.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("warning"))
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "both weight-1 backends of the example are left without a slot: {stderr}"
    );
    assert!(
        warnings
            .iter()
            .all(|line| line.contains("heavy.toml") && line.contains("table_size")),
        "each warning names the file and the fix: {stderr}"
    );

    let example_result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config_path())
        .arg("--input")
        .arg(captures_dir().join("tcpdump-vxlan_port_8472.pcap"))
        .output()
        .expect("run spike-trace");
    let example_stderr = String::from_utf8_lossy(&example_result.stderr);
    assert!(
        !example_stderr.contains("warning"),
        "the example config gives every backend a slot: {example_stderr}"
    );
}

#[test]
fn snapshot_length_cut_is_reported() {
    let source = pcap_frames(&captures_dir().join("suricata-tcp-handshake-data-rst.pcap"));
    let frame = &source[0];
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("cut.pcap");
    // A little-endian pcap header (Ethernet), then one record cut to 40 bytes.
    let mut bytes = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&40u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&40u32.to_le_bytes());
    bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&frame[..40]);
    std::fs::write(&input, bytes).expect("write the capture");

    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config_path())
        .arg("--input")
        .arg(&input)
        .output()
        .expect("run spike-trace");
    assert!(result.status.success());
    let stdout = String::from_utf8_lossy(&result.stdout);
    let expected = format!("capture-truncated(40 of {} bytes)", frame.len());
    assert!(stdout.contains(&expected), "{stdout}");
}

fn run_trace(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config_path())
        .args(args)
        .output()
        .expect("run spike-trace")
}

#[test]
fn paths_naming_one_file_are_refused() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("in.pcap");
    std::fs::copy(
        captures_dir().join("suricata-tcp-handshake-data-rst.pcap"),
        &input,
    )
    .expect("copy the capture");
    let original = std::fs::read(&input).expect("read the capture");
    let linked = dir.path().join("linked.pcap");
    std::fs::hard_link(&input, &linked).expect("hard link the capture");
    let output = dir.path().join("out.pcap");
    let respelled = dir.path().join(".").join("out.pcap");

    let cases: [(&[&Path], &str, &str, &Path); 3] = [
        (&[&input, &input], "--input", "--output", &input),
        (&[&input, &linked], "--input", "--output", &linked),
        (
            &[&input, &output, &respelled],
            "--output",
            "--kernel-output",
            &respelled,
        ),
    ];
    for (paths, first, second, named) in cases {
        let mut args = vec![
            std::ffi::OsStr::new("--input"),
            paths[0].as_os_str(),
            std::ffi::OsStr::new("--output"),
            paths[1].as_os_str(),
        ];
        if let Some(kernel) = paths.get(2) {
            args.push(std::ffi::OsStr::new("--kernel-output"));
            args.push(kernel.as_os_str());
        }
        let result = run_trace(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{stderr}");
        let expected = format!("{first} and {second} both name {}", named.display());
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(result.stdout.is_empty(), "nothing was traced");
        assert_eq!(
            std::fs::read(&input).expect("read the capture"),
            original,
            "the input is untouched"
        );
        assert!(!output.exists(), "no output file was created");
    }
}

#[test]
fn outputs_naming_the_config_are_rejected() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("in.pcap");
    std::fs::copy(
        captures_dir().join("suricata-tcp-handshake-data-rst.pcap"),
        &input,
    )
    .expect("copy the capture");
    let config = dir.path().join("spike.toml");
    std::fs::copy(config_path(), &config).expect("copy the example config");
    let original = std::fs::read(&config).expect("read the config");
    let linked = dir.path().join("linked.toml");
    std::fs::hard_link(&config, &linked).expect("hard link the config");
    let symlinked = dir.path().join("symlinked.toml");
    std::os::unix::fs::symlink(&config, &symlinked).expect("symlink the config");

    // Each case: the output option, its path.
    let cases: [(&str, &Path); 4] = [
        ("--output", &config),
        ("--output", &linked),
        ("--kernel-output", &symlinked),
        ("--kernel-output", &config),
    ];
    for (option, path) in cases {
        let args = [
            std::ffi::OsStr::new("--input"),
            input.as_os_str(),
            std::ffi::OsStr::new(option),
            path.as_os_str(),
        ];
        let result = run_trace_with(&config, &args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{option}: {stderr}");
        let expected = format!("--config and {option} both name {}", path.display());
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(result.stdout.is_empty(), "{option}: nothing was traced");
        assert_eq!(
            std::fs::read(&config).expect("read the config"),
            original,
            "{option} {}: the config is untouched",
            path.display()
        );
    }
}

#[test]
fn dash_as_output_is_rejected() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    for option in ["--output", "--kernel-output"] {
        let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
            .current_dir(dir.path())
            .arg("--config")
            .arg(config_path())
            .arg("--input")
            .arg(&input)
            .args([option, "-"])
            .output()
            .expect("run spike-trace");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{option}: {stderr}");
        let expected = format!("{option} -: standard output carries the per-frame lines");
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(result.stdout.is_empty(), "{option}: nothing was traced");
        assert!(
            !dir.path().join("-").exists(),
            "{option}: no file named - was created"
        );
    }
}

#[test]
fn output_to_where_stdout_goes_is_rejected() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    let same = dir.path().join("same.out");

    // As `spike-trace ... --output same.out > same.out`: the shell has created the file.
    let stdout_file = std::fs::File::create(&same).expect("create the stdout file");
    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config_path())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&same)
        .stdout(stdout_file)
        .output()
        .expect("run spike-trace");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is where standard output goes"), "{stderr}");
    let written = std::fs::read(&same).expect("read the stdout file");
    assert!(written.is_empty(), "nothing was traced into the file");

    // Standard output is a pipe here, and /dev/stdout names that pipe.
    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config_path())
        .arg("--input")
        .arg(&input)
        .args(["--kernel-output", "/dev/stdout"])
        .output()
        .expect("run spike-trace");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--kernel-output /dev/stdout is where standard output goes"),
        "{stderr}"
    );
    assert!(result.stdout.is_empty(), "nothing was traced");
}

/// Builds an Ethernet + IPv4 + TCP frame from 10.0.0.1:1234 to `destination`:80 with
/// `payload` bytes of data and a correct IPv4 header checksum.
fn tcp_frame(destination: [u8; 4], payload: usize) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00];
    let total = u16::try_from(20 + 20 + payload).expect("fits an IPv4 total length");
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1]);
    ip.extend_from_slice(&destination);
    let sum = ip
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    // Ports 1234 -> 80, an ACK with a 20-byte header.
    frame.extend_from_slice(&[
        0x04, 0xd2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff,
    ]);
    frame.extend_from_slice(&[0; 4]);
    frame.resize(frame.len() + payload, 0xab);
    frame
}

/// Writes a little-endian Ethernet pcap: `(captured bytes, original length)` per record.
fn write_pcap_records(path: &Path, snaplen: u32, records: &[(Vec<u8>, usize)]) {
    let mut bytes = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&snaplen.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for (index, (data, original)) in records.iter().enumerate() {
        bytes.extend_from_slice(&(index as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(*original as u32).to_le_bytes());
        bytes.extend_from_slice(data);
    }
    std::fs::write(path, bytes).expect("write the capture");
}

#[test]
fn frames_longer_than_65535_bytes_are_written_whole() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("gro.pcap");
    // A GRO-merged segment of 65549 bytes, an ordinary frame, then a 300000-byte frame
    // (local experimental EtherType) longer than the snapshot length of the pcaps the
    // tracer writes. The input's own snapshot length admits it.
    let big = tcp_frame([10, 9, 9, 9], 65535 - 40);
    let small = tcp_frame([10, 9, 9, 9], 100);
    assert_eq!(big.len(), 65549);
    let mut huge = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5];
    huge.resize(300_000, 0xab);
    write_pcap_records(
        &input,
        524_288,
        &[
            (big.clone(), big.len()),
            (small.clone(), small.len()),
            (huge.clone(), huge.len()),
        ],
    );
    let kernel = dir.path().join("kernel.pcap");
    let result = run_trace(&[
        "--input".as_ref(),
        input.as_os_str(),
        "--kernel-output".as_ref(),
        kernel.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let verdicts: Vec<&str> = lines[..3]
        .iter()
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        verdicts,
        [
            "kernel:not_service",
            "kernel:not_service",
            "kernel:other_ethertype"
        ]
    );
    assert_eq!(
        lines[3..],
        ["summary: frames cut to 262144 bytes in --kernel-output: 1"]
    );

    let written = pcap_frames(&kernel);
    assert_eq!(written.len(), 3);
    assert_eq!(written[0], big, "the GRO frame is kept whole");
    assert_eq!(written[1], small);
    assert_eq!(written[2], huge[..262_144], "the longest frame is cut");
    let decoded = tshark_fields(&kernel, &["frame.len", "frame.cap_len", "ip.len"]);
    assert_eq!(
        decoded,
        [
            ["65549", "65549", "65535"],
            ["154", "154", "140"],
            ["300000", "262144", ""]
        ],
        "tshark reads the kernel pcap"
    );
}

#[test]
fn capture_cut_short_gives_truncated_verdict() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("snap96.pcap");
    let whole = tcp_frame([10, 9, 9, 9], 1500 - 54);
    let cut = whole[..96].to_vec();
    let next = tcp_frame([10, 9, 9, 9], 10);
    // A frame of the local experimental EtherType goes to the kernel whatever its length.
    let mut other = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x88, 0xb5];
    other.resize(1000, 0xab);
    write_pcap_records(
        &input,
        96,
        &[
            (cut, whole.len()),
            (next.clone(), next.len()),
            (other[..96].to_vec(), other.len()),
        ],
    );
    let kernel = dir.path().join("kernel.pcap");
    let result = run_trace(&[
        "--input".as_ref(),
        input.as_os_str(),
        "--kernel-output".as_ref(),
        kernel.as_os_str(),
        "--counters".as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");

    let lines: Vec<&str> = stdout.lines().collect();
    let words: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(words[1], "truncated", "{stdout}");
    assert!(
        !stdout.contains("drop:"),
        "a cut frame is no drop: {stdout}"
    );
    assert_eq!(words[2..6], ["tcp", "10.0.0.1:1234", "->", "10.9.9.9:80"]);
    assert!(lines[0].ends_with("capture-truncated(96 of 1500 bytes)"));
    assert_eq!(
        lines[1].split_whitespace().nth(1),
        Some("kernel:not_service")
    );
    assert_eq!(
        lines[2],
        "     3 kernel:other_ethertype           ethertype 0x88b5 \
         capture-truncated(96 of 1000 bytes)"
    );
    assert!(
        stdout.contains("summary: frames truncated by the capture tool, verdict unknown: 1 ("),
        "{stdout}"
    );
    assert!(stdout.contains("\n  truncated 1\n"), "{stdout}");
    assert!(!stdout.contains("  drop."), "no drop counted: {stdout}");

    let decoded = tshark_fields(&kernel, &["frame.len", "frame.cap_len", "eth.type"]);
    assert_eq!(
        decoded,
        [["64", "64", "0x0800"], ["1000", "96", "0x88b5"]],
        "the kernel pcap keeps the cut frame's length on the wire"
    );
}

/// Encodes a little-endian pcapng block: type, length, body (padded to 4 bytes), length.
fn pcapng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let mut padded = body.to_vec();
    padded.resize(body.len().div_ceil(4) * 4, 0);
    let length = (padded.len() + 12) as u32;
    let mut block = kind.to_le_bytes().to_vec();
    block.extend_from_slice(&length.to_le_bytes());
    block.extend_from_slice(&padded);
    block.extend_from_slice(&length.to_le_bytes());
    block
}

/// Encodes a section header and one Ethernet interface without a snapshot length.
fn pcapng_start() -> Vec<u8> {
    pcapng_start_with_snaplen(0)
}

/// Encodes a section header and one Ethernet interface with snapshot length `snaplen`.
fn pcapng_start_with_snaplen(snaplen: u32) -> Vec<u8> {
    let mut section = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    section.extend_from_slice(&[1, 0, 0, 0]);
    section.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut bytes = pcapng_block(0x0a0d_0d0a, &section);
    let mut interface = 1u16.to_le_bytes().to_vec();
    interface.extend_from_slice(&[0, 0]);
    interface.extend_from_slice(&snaplen.to_le_bytes());
    bytes.extend(pcapng_block(1, &interface));
    bytes
}

/// Encodes an Enhanced Packet Block on interface `interface`.
fn pcapng_enhanced(interface: u32, frame: &[u8]) -> Vec<u8> {
    let mut body = interface.to_le_bytes().to_vec();
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    body.extend_from_slice(frame);
    pcapng_block(6, &body)
}

/// Encodes a Simple Packet Block: original length, then `data` padded to 4 bytes.
fn pcapng_simple(original_len: u32, data: &[u8]) -> Vec<u8> {
    let mut body = original_len.to_le_bytes().to_vec();
    body.extend_from_slice(data);
    pcapng_block(3, &body)
}

#[test]
fn pcapng_simple_packet_padding_is_not_data() {
    // 54 bytes: Ethernet, IPv4 and TCP headers, so the block carries 2 bytes of padding.
    let frame = tcp_frame([10, 9, 9, 9], 0);
    assert_eq!(frame.len(), 54);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("simple.pcapng");
    let mut bytes = pcapng_start();
    bytes.extend(pcapng_simple(54, &frame));
    std::fs::write(&input, bytes).expect("write the capture");
    let shark = tshark_fields(&input, &["frame.len", "frame.cap_len"]);
    assert_eq!(shark, [["54", "54"]], "tshark reads 54 of 54 bytes");

    let kernel = dir.path().join("kernel.pcap");
    let result = run_trace(&[
        "--input".as_ref(),
        input.as_os_str(),
        "--kernel-output".as_ref(),
        kernel.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    let line = stdout.lines().next().unwrap_or_default();
    assert_eq!(line.split_whitespace().nth(1), Some("kernel:not_service"));
    assert!(!line.contains("damaged"), "{line}");
    assert!(!line.contains("capture-truncated"), "{line}");
    assert_eq!(pcap_frames(&kernel), [frame], "the frame without padding");
}

#[test]
fn pcapng_simple_packet_cut_by_snaplen() {
    // Interface 0 keeps 54 bytes of a 100-byte frame, padded to 56 in the block.
    let frame = tcp_frame([10, 9, 9, 9], 0);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("simple-cut.pcapng");
    let mut bytes = pcapng_start_with_snaplen(54);
    bytes.extend(pcapng_simple(100, &frame));
    std::fs::write(&input, bytes).expect("write the capture");
    let shark = tshark_fields(&input, &["frame.len", "frame.cap_len"]);
    assert_eq!(shark, [["100", "54"]], "tshark reads 54 of 100 bytes");

    let result = run_trace(&["--input".as_ref(), input.as_os_str()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    let line = stdout.lines().next().unwrap_or_default();
    assert!(
        line.ends_with(" capture-truncated(54 of 100 bytes)"),
        "{line}"
    );
}

#[test]
fn pcapng_simple_packet_shorter_than_original() {
    // No snapshot length, so the block must carry all 100 bytes, but it has 56.
    let frame = tcp_frame([10, 9, 9, 9], 0);
    let mut bytes = pcapng_start();
    bytes.extend(pcapng_enhanced(0, &frame));
    bytes.extend(pcapng_simple(100, &frame));
    let (code, stdout, stderr) = trace_bytes("simple-short.pcapng", &bytes);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "frame 2 has original length 100, expected at most 56 bytes, the packet data in \
             the simple packet block, because interface 0 sets no snapshot length; the file \
             is damaged there"
        ),
        "{stderr}"
    );
    assert!(stdout.contains("counters:\n  rx_packets 1\n"), "{stdout}");
}

#[test]
fn pcapng_obsolete_packet_blocks_keep_tshark_numbering() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("obsolete.pcapng");
    let to_service = pcap_frames(&captures_dir().join("suricata-tcp-handshake-data-rst.pcap"));
    let other = tcp_frame([10, 9, 9, 9], 10);
    let mut bytes = pcapng_start();
    bytes.extend(pcapng_enhanced(0, &other));
    // An obsolete Packet Block: interface 0, 3 packets lost before it.
    let mut body = 0u16.to_le_bytes().to_vec();
    body.extend_from_slice(&3u16.to_le_bytes());
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&(to_service[0].len() as u32).to_le_bytes());
    body.extend_from_slice(&(to_service[0].len() as u32).to_le_bytes());
    body.extend_from_slice(&to_service[0]);
    bytes.extend(pcapng_block(2, &body));
    bytes.extend(pcapng_enhanced(0, &other));
    std::fs::write(&input, bytes).expect("write the capture");

    let result = run_trace(&["--input".as_ref(), input.as_os_str()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let shark = tshark_fields(&input, &["frame.number", "ip.dst"]);
    assert_eq!(shark.len(), 3, "tshark reads three frames");
    for (line, fields) in lines.iter().zip(&shark) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], fields[0], "frame number: {line}");
        assert!(words[5].starts_with(&fields[1]), "destination: {line}");
    }
    assert_eq!(
        lines[1].split_whitespace().nth(1),
        Some("forward"),
        "{stdout}"
    );
    assert_eq!(
        lines[3],
        "summary: packets dropped by the capturing interface: 3 (not in the capture)"
    );
}

#[test]
fn pcapng_packet_on_missing_interface_names_it() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("bad-interface.pcapng");
    let mut bytes = pcapng_start();
    bytes.extend(pcapng_enhanced(0, &tcp_frame([10, 9, 9, 9], 10)));
    bytes.extend(pcapng_enhanced(7, &tcp_frame([10, 9, 9, 9], 10)));
    bytes.extend(pcapng_enhanced(0, &tcp_frame([10, 9, 9, 9], 10)));
    std::fs::write(&input, bytes).expect("write the capture");
    let result = run_trace(&["--input".as_ref(), input.as_os_str(), "--counters".as_ref()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("frame 2 names interface 7, but interface 7 is not defined"),
        "{stderr}"
    );
    assert!(stderr.starts_with("spike-trace: warning: "), "{stderr}");
    assert!(!stderr.contains("NULL"), "{stderr}");
    // Frame 1, on the defined interface, was traced before the damage.
    assert!(stdout.trim_start().starts_with("1 "), "{stdout}");
    assert!(stdout.contains("counters:\n  rx_packets 1\n"), "{stdout}");
}

#[test]
fn fragments_never_released_are_reported() {
    let capture = "suricata-frag-eth-vlan-ip-tcp-syn.pcap";
    let frames = pcap_frames(&captures_dir().join(capture));
    let dir = tempfile::tempdir().expect("create a temporary directory");
    // The two later fragments without the first one.
    let input = dir.path().join("no-first.pcap");
    write_pcap(&input, &frames[1..]);
    let config = dir.path().join("cluster.toml");
    let example = std::fs::read_to_string(config_path()).expect("read the example config");
    let cluster = "\n[cluster]\nredirect_vni = 4097\n\n[[cluster.node]]\n\
                   address = \"192.0.2.1\"\nmac = \"02:53:50:00:01:01\"\n";
    std::fs::write(&config, example + cluster).expect("write the cluster config");

    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .output()
        .expect("run spike-trace");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines[..2] {
        assert_eq!(line.split_whitespace().nth(1), Some("held"), "{line}");
    }
    assert_eq!(
        lines[2],
        "summary: fragments held and never released: 2 (their first fragment is not in the \
         capture)"
    );
}

/// Writes a single-node cluster config, in which this node is designated for every
/// datagram, and returns its path.
fn single_node_cluster_config(dir: &Path) -> PathBuf {
    let config = dir.join("cluster.toml");
    let example = std::fs::read_to_string(config_path()).expect("read the example config");
    let cluster = "\n[cluster]\nredirect_vni = 4097\n\n[[cluster.node]]\n\
                   address = \"192.0.2.1\"\nmac = \"02:53:50:00:01:01\"\n";
    std::fs::write(&config, example + cluster).expect("write the cluster config");
    config
}

fn run_trace_with(config: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run spike-trace")
}

#[test]
fn evicted_held_fragment_is_shown() {
    let capture = "suricata-frag-eth-vlan-ip-tcp-syn.pcap";
    let later = pcap_frames(&captures_dir().join(capture))[1].clone();
    // 66 non-first fragments of different datagrams, one second apart: the first 64 fill
    // the store, and each later one takes the slot of a fragment held over a second.
    let frames: Vec<Vec<u8>> = (1..=66u16)
        .map(|ident| {
            let mut frame = later.clone();
            let ip = ip_start(&frame);
            frame[ip + 4..ip + 6].copy_from_slice(&ident.to_be_bytes());
            frame[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
            let sum = frame[ip..ip + 20]
                .chunks(2)
                .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
                .sum::<u32>();
            let folded = (sum & 0xffff) + (sum >> 16);
            let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
            frame[ip + 10..ip + 12].copy_from_slice(&checksum.to_be_bytes());
            frame
        })
        .collect();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("many-fragments.pcap");
    write_pcap(&input, &frames);
    let config = single_node_cluster_config(dir.path());

    let result = run_trace_with(
        &config,
        &["--input".as_ref(), input.as_os_str(), "--counters".as_ref()],
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    for line in &lines[..64] {
        assert_eq!(line.split_whitespace().nth(1), Some("held"), "{line}");
        assert!(!line.contains("store-full"), "{line}");
    }
    for line in &lines[64..66] {
        assert_eq!(line.split_whitespace().nth(1), Some("held"), "{line}");
        assert!(
            line.ends_with(" store-full(took the slot of 1 earlier held fragment, now dropped)"),
            "{line}"
        );
    }
    assert!(stdout.contains("  held 66\n"), "{stdout}");
    assert!(stdout.contains("  held_dropped 2\n"), "{stdout}");
    assert!(
        stdout.contains(
            "summary: held fragments dropped to free a slot for a later one: 2 (the store was \
             full and their first fragment did not come in time)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("summary: fragments held and never released: 64 ("),
        "{stdout}"
    );
}

/// Returns the bytes of a little-endian Ethernet pcap with the handshake capture's frames.
fn handshake_pcap() -> (Vec<u8>, Vec<Vec<u8>>) {
    let path = captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    let frames = pcap_frames(&path);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let copy = dir.path().join("copy.pcap");
    write_pcap(&copy, &frames);
    (std::fs::read(&copy).expect("read the capture"), frames)
}

/// Runs the tracer with `--counters` on `bytes` written to a file.
fn trace_bytes(name: &str, bytes: &[u8]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join(name);
    std::fs::write(&input, bytes).expect("write the capture");
    let result = run_trace(&["--input".as_ref(), input.as_os_str(), "--counters".as_ref()]);
    (
        result.status.code(),
        String::from_utf8_lossy(&result.stdout).into_owned(),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

#[test]
fn cut_last_frame_keeps_summary() {
    let (bytes, frames) = handshake_pcap();
    // The end of frame 7's record header, then 20 bytes of its data.
    let end: usize = 24
        + frames[..6]
            .iter()
            .map(|frame| 16 + frame.len())
            .sum::<usize>();
    let (code, stdout, stderr) = trace_bytes("cut.pcap", &bytes[..end + 16 + 20]);
    assert_eq!(code, Some(3), "{stderr}");
    let expected = format!(
        "capture ends inside frame 7 (20 of {} bytes present)",
        frames[6].len()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.starts_with("spike-trace: warning: "), "{stderr}");
    assert!(!stderr.contains("Error reading bytes"), "{stderr}");
    let traced: Vec<&str> = stdout
        .lines()
        .take_while(|line| !line.starts_with("counters:"))
        .collect();
    assert_eq!(traced.len(), 6, "every whole frame is decided: {stdout}");
    assert!(stdout.contains("counters:\n  rx_packets 6\n"), "{stdout}");

    let (code, stdout, stderr) = trace_bytes("cut-header.pcap", &bytes[..end + 5]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("capture ends inside the record header of frame 7 (5 of 16 bytes present)"),
        "{stderr}"
    );
    assert!(stdout.contains("  rx_packets 6\n"), "{stdout}");
}

#[test]
fn damaged_pcap_headers_are_named() {
    let (bytes, frames) = handshake_pcap();
    let (code, stdout, stderr) = trace_bytes("short-header.pcap", &bytes[..10]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("is not a capture: its file header ends after 10 of 24 bytes"),
        "{stderr}"
    );

    let mut damaged = bytes.clone();
    let second = 24 + 16 + frames[0].len();
    damaged[second + 8..second + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (code, stdout, stderr) = trace_bytes("damaged.pcap", &damaged);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(
            "the record header of frame 2 has captured length 4294967295, expected at most \
             65535 bytes, the file header's snapshot length"
        ),
        "{stderr}"
    );
    assert!(stdout.contains("  rx_packets 1\n"), "{stdout}");

    // A snapshot length of 0 sets no limit, so the reader's own bound applies.
    damaged[16..20].copy_from_slice(&0u32.to_le_bytes());
    let (code, _, stderr) = trace_bytes("damaged-no-snaplen.pcap", &damaged);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("captured length 4294967295, expected at most 16777216 bytes;"),
        "{stderr}"
    );
}

#[test]
fn record_over_snaplen_is_damage() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("oversized.pcap");
    let frame = tcp_frame([10, 9, 9, 9], 10);
    let oversized = tcp_frame([10, 9, 9, 9], 1000);
    write_pcap_records(
        &input,
        96,
        &[
            (frame.clone(), frame.len()),
            (oversized.clone(), oversized.len()),
        ],
    );
    // Cut inside the oversized record, which a cut capture would also do.
    let bytes = std::fs::read(&input).expect("read the capture");
    let (code, stdout, stderr) = trace_bytes("oversized.pcap", &bytes[..bytes.len() - 500]);
    assert_eq!(code, Some(3), "{stderr}");
    let expected = format!(
        "the record header of frame 2 has captured length {}, expected at most 96 bytes, the \
         file header's snapshot length; the file is damaged there",
        oversized.len()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("capture ends inside"), "{stderr}");
    assert!(stdout.contains("  rx_packets 1\n"), "{stdout}");
}

#[test]
fn pcapng_cut_block_names_frame() {
    let frame = tcp_frame([10, 9, 9, 9], 10);
    let mut bytes = pcapng_start();
    bytes.extend(pcapng_enhanced(0, &frame));
    let second = pcapng_enhanced(0, &frame);
    bytes.extend_from_slice(&second[..30]);
    let (code, stdout, stderr) = trace_bytes("cut.pcapng", &bytes);
    assert_eq!(code, Some(3), "{stderr}");
    let expected = format!(
        "capture ends inside frame 2 (30 of {} bytes present)",
        second.len()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stdout.contains("  rx_packets 1\n"), "{stdout}");

    let mut damaged = pcapng_start();
    let mut block = pcapng_enhanced(0, &frame);
    let length = block.len();
    block[length - 4..].copy_from_slice(&7u32.to_le_bytes());
    damaged.extend(block);
    let (code, _, stderr) = trace_bytes("damaged.pcapng", &damaged);
    assert_eq!(code, Some(3), "{stderr}");
    let expected = format!(
        "frame 1 has trailing block length 7, expected {length}, the length at the block's start"
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn pcapng_cut_header_is_unusable() {
    let start = pcapng_start();
    let (code, stdout, stderr) = trace_bytes("cut-header.pcapng", &start[..20]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("is not a capture: its file header ends after 20 of 28 bytes"),
        "{stderr}"
    );
    assert!(!stderr.contains("were traced"), "{stderr}");

    let mut damaged = start.clone();
    damaged[4..8].copy_from_slice(&30u32.to_le_bytes());
    let (code, stdout, stderr) = trace_bytes("damaged-header.pcapng", &damaged);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("is not a readable capture: its file header has block length 30"),
        "{stderr}"
    );
    assert!(!stderr.contains("were traced"), "{stderr}");
}

/// Encodes pcapng options, each `(code, value)`, and the end-of-options marker.
fn pcapng_options(options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (code, value) in options {
        bytes.extend_from_slice(&code.to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u16).to_le_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    }
    bytes.extend_from_slice(&[0; 4]);
    bytes
}

#[test]
fn pcapng_drop_counts_in_summary() {
    let frame = tcp_frame([10, 9, 9, 9], 10);
    let mut bytes = pcapng_start();
    for drops in [2u64, 3] {
        let mut block = pcapng_enhanced(0, &frame);
        // Insert epb_dropcount before the trailing length and fix both lengths.
        let trailer = block.len() - 4;
        block.truncate(trailer);
        block.extend(pcapng_options(&[(4, &drops.to_le_bytes())]));
        let length = (block.len() + 4) as u32;
        block[4..8].copy_from_slice(&length.to_le_bytes());
        block.extend_from_slice(&length.to_le_bytes());
        bytes.extend(block);
    }
    // Two statistics blocks for interface 0: totals, so the later one counts.
    for (interface_drops, os_drops) in [(1u64, 1u64), (4, 6)] {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        body.extend(pcapng_options(&[
            (5, &interface_drops.to_le_bytes()),
            (7, &os_drops.to_le_bytes()),
        ]));
        bytes.extend(pcapng_block(5, &body));
    }
    let (code, stdout, stderr) = trace_bytes("drops.pcapng", &bytes);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "summary: packets dropped by the capturing interface: 5 (not in the capture)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "summary: packets dropped according to the interface statistics: 4 by the \
             interface, 6 by the operating system (not in the capture)\n"
        ),
        "{stdout}"
    );
}

#[test]
fn pcapng_drop_counts_saturate() {
    let frame = tcp_frame([10, 9, 9, 9], 10);
    let mut bytes = pcapng_start();
    let mut interface = 1u16.to_le_bytes().to_vec();
    interface.extend_from_slice(&[0; 6]);
    bytes.extend(pcapng_block(1, &interface));

    for _ in 0..2 {
        let mut block = pcapng_enhanced(0, &frame);
        let trailer = block.len() - 4;
        block.truncate(trailer);
        block.extend(pcapng_options(&[(4, &u64::MAX.to_le_bytes())]));
        let length = (block.len() + 4) as u32;
        block[4..8].copy_from_slice(&length.to_le_bytes());
        block.extend_from_slice(&length.to_le_bytes());
        bytes.extend(block);
    }
    // One statistics block per interface, so their totals add up.
    for interface in [0u32, 1] {
        let mut body = interface.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        body.extend(pcapng_options(&[
            (5, &u64::MAX.to_le_bytes()),
            (7, &u64::MAX.to_le_bytes()),
        ]));
        bytes.extend(pcapng_block(5, &body));
    }

    let (code, stdout, stderr) = trace_bytes("many-drops.pcapng", &bytes);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "summary: packets dropped by the capturing interface: at least \
             18446744073709551615 (not in the capture)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "summary: packets dropped according to the interface statistics: at least \
             18446744073709551615 by the interface, at least 18446744073709551615 by the \
             operating system (not in the capture)\n"
        ),
        "{stdout}"
    );
}

#[test]
fn capture_without_frames_is_summarised() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let empty_pcap = dir.path().join("empty.pcap");
    write_pcap(&empty_pcap, &[]);
    let pcap_header = std::fs::read(&empty_pcap).expect("read the capture");
    let mut section = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    section.extend_from_slice(&[1, 0, 0, 0]);
    section.extend_from_slice(&u64::MAX.to_le_bytes());
    let section_only = pcapng_block(0x0a0d_0d0a, &section);
    let expected = "summary: frames read: 0 (the capture contains no whole frame)\n";

    // Each case: file name, bytes, exit status.
    let cases: [(&str, Vec<u8>, i32); 4] = [
        ("empty.pcap", pcap_header.clone(), 0),
        ("section-only.pcapng", section_only, 0),
        ("interface-only.pcapng", pcapng_start(), 0),
        // The first record header ends after 8 of 16 bytes.
        ("cut-first.pcap", [pcap_header, vec![0; 8]].concat(), 3),
    ];
    for (name, bytes, status) in cases {
        let (code, stdout, stderr) = trace_bytes(name, &bytes);
        assert_eq!(code, Some(status), "{name}: {stderr}");
        assert!(stdout.starts_with(expected), "{name}: {stdout}");
        assert!(
            stdout.contains("counters:\n  rx_packets 0\n"),
            "{name}: {stdout}"
        );
    }
}

/// Reads the first record's seconds and fraction from a pcap file of either byte order.
fn first_timestamp(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("read pcap");
    let little_endian = bytes[0] == 0xd4 || bytes[0] == 0x4d;
    let word = |at: usize| {
        let word: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
        if little_endian {
            u32::from_le_bytes(word)
        } else {
            u32::from_be_bytes(word)
        }
    };
    (word(24), word(28))
}

#[test]
fn pcapng_timestamps_follow_if_tsresol() {
    let frame = tcp_frame([10, 9, 9, 9], 10);
    // Each case: if_tsresol option value (none for the default microseconds), raw units.
    let cases: [(Option<u8>, u64); 3] = [
        (None, 1_500_000),
        (Some(9), 1_500_000_000),
        (Some(0x80 | 10), 1536),
    ];
    for (resolution, units) in cases {
        let mut section = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        section.extend_from_slice(&[1, 0, 0, 0]);
        section.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut bytes = pcapng_block(0x0a0d_0d0a, &section);
        let mut interface = 1u16.to_le_bytes().to_vec();
        interface.extend_from_slice(&[0, 0]);
        interface.extend_from_slice(&0u32.to_le_bytes());
        if let Some(resolution) = resolution {
            interface.extend(pcapng_options(&[(9, &[resolution])]));
        }
        bytes.extend(pcapng_block(1, &interface));
        let mut block = pcapng_enhanced(0, &frame);
        block[12..16].copy_from_slice(&((units >> 32) as u32).to_le_bytes());
        block[16..20].copy_from_slice(&(units as u32).to_le_bytes());
        bytes.extend(block);

        let dir = tempfile::tempdir().expect("create a temporary directory");
        let input = dir.path().join("resolution.pcapng");
        std::fs::write(&input, bytes).expect("write the capture");
        let kernel = dir.path().join("kernel.pcap");
        let result = run_trace(&[
            "--input".as_ref(),
            input.as_os_str(),
            "--kernel-output".as_ref(),
            kernel.as_os_str(),
        ]);
        assert!(result.status.success(), "{resolution:?}: {result:?}");
        assert_eq!(
            first_timestamp(&kernel),
            (1, 500_000),
            "if_tsresol {resolution:?}"
        );
    }
}

#[test]
fn write_error_names_the_os_reason() {
    let input = captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    let result = run_trace(&[
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        "/dev/full".as_ref(),
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot write /dev/full: write error: No space left on device"),
        "{stderr}"
    );
}

#[test]
fn closed_pipes_exit_without_panic() {
    use std::process::Stdio;
    let input = captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    // Standard error is closed before the write error is printed, and the status reports it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config_path())
        .arg("--input")
        .arg(&input)
        .args(["--output", "/dev/full"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run spike-trace");
    drop(child.stderr.take());
    assert_eq!(child.wait().expect("wait").code(), Some(2));

    // Standard output closed before the first line: the trace ends quietly.
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config_path())
        .arg("--input")
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run spike-trace");
    drop(child.stdout.take());
    let result = child.wait_with_output().expect("wait");
    assert_eq!(result.status.code(), Some(0), "{result:?}");
    assert!(result.stderr.is_empty(), "{result:?}");
}

/// Returns the verdict column of a trace of `input` with `config` and `extra` arguments.
fn traced_verdicts(config: &Path, input: &Path, extra: &[&str]) -> Vec<String> {
    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config)
        .arg("--input")
        .arg(input)
        .args(extra)
        .output()
        .expect("run spike-trace");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&result.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            line.split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn mac_filter_applies_with_a_dpdk_section() {
    let first =
        pcap_frames(&captures_dir().join("suricata-tcp-handshake-data-rst.pcap"))[0].clone();
    // The example config's node.mac, broadcast, and another host's MAC.
    let destinations: [[u8; 6]; 3] = [
        [0x02, 0x53, 0x50, 0, 0, 0x01],
        [0xff; 6],
        [0x02, 0, 0, 0, 0, 0x99],
    ];
    let frames: Vec<Vec<u8>> = destinations
        .iter()
        .map(|mac| {
            let mut frame = first.clone();
            frame[..6].copy_from_slice(mac);
            frame
        })
        .collect();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("macs.pcap");
    write_pcap(&input, &frames);
    let example = std::fs::read_to_string(config_path()).expect("read the example config");
    let dpdk = dir.path().join("dpdk.toml");
    std::fs::write(&dpdk, example.clone() + "\n[dpdk]\nport = \"net_null0\"\n")
        .expect("write the config");
    let unfiltered = dir.path().join("unfiltered.toml");
    std::fs::write(
        &unfiltered,
        example + "\n[dpdk]\nport = \"net_null0\"\nmac_filter = false\n",
    )
    .expect("write the config");

    assert_eq!(
        traced_verdicts(&dpdk, &input, &[]),
        [
            "forward",
            "drop:l2_multicast_to_service",
            "drop:other_host_mac"
        ]
    );
    let all_forwarded = ["forward", "forward", "forward"];
    assert_eq!(
        traced_verdicts(&dpdk, &input, &["--no-mac-filter"]),
        all_forwarded
    );
    assert_eq!(traced_verdicts(&unfiltered, &input, &[]), all_forwarded);
    assert_eq!(traced_verdicts(&config_path(), &input, &[]), all_forwarded);
}

#[test]
fn controlplane_config_is_named() {
    let config = repository_root().join("configs/controlplane.toml");
    let input = captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    let result = run_trace_with(&config, &["--input".as_ref(), input.as_os_str()]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("controlplane.toml:"),
        "the message names the file: {stderr}"
    );
    assert!(
        stderr.contains("this looks like a spike-controlplane config (it has [controlplane])"),
        "{stderr}"
    );
    assert!(stderr.contains("configs/spike.toml"), "{stderr}");
    assert!(!stderr.contains("unknown field"), "{stderr}");
    assert!(result.stdout.is_empty(), "nothing was traced");
}

#[test]
fn endless_config_is_cut_off() {
    // /dev/zero never ends: the config read must stop at its size limit.
    let input = captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    let result = run_trace_with(
        Path::new("/dev/zero"),
        &["--input".as_ref(), input.as_os_str()],
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/dev/zero"), "names the file: {stderr}");
    assert!(stderr.contains("larger than"), "says why: {stderr}");
    assert!(result.stdout.is_empty(), "nothing was traced");
}

#[test]
fn input_from_pipe_and_stdin() {
    use std::io::Write;
    use std::process::Stdio;
    let capture = captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    let bytes = std::fs::read(&capture).expect("read the capture");
    let expected = trace_input(&capture, &config_path()).lines;

    for input in ["-", "/dev/stdin"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
            .arg("--config")
            .arg(config_path())
            .args(["--input", input])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run spike-trace");
        let mut stdin = child.stdin.take().expect("standard input is piped");
        // A pipe cannot seek, which a regular file would hide.
        let bytes = bytes.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let result = child.wait_with_output().expect("wait");
        writer
            .join()
            .expect("writer thread")
            .expect("write the capture");
        let stdout = String::from_utf8_lossy(&result.stdout);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(0), "--input {input}: {stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines, expected, "--input {input}");
    }
}

#[test]
fn empty_pipe_is_named_empty() {
    use std::process::Stdio;
    let result = Command::new(env!("CARGO_BIN_EXE_spike-trace"))
        .arg("--config")
        .arg(config_path())
        .args(["--input", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run spike-trace");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot open -: the file is empty"),
        "{stderr}"
    );
}

#[test]
fn pcapng_other_link_frames_are_skipped() {
    let frame = tcp_frame([10, 9, 9, 9], 10);
    let mut bytes = pcapng_start();
    // Interface 1: Linux cooked capture (LINKTYPE_LINUX_SLL, 113), as `tcpdump -i any`.
    let mut interface = 113u16.to_le_bytes().to_vec();
    interface.extend_from_slice(&[0, 0]);
    interface.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend(pcapng_block(1, &interface));
    bytes.extend(pcapng_enhanced(0, &frame));
    bytes.extend(pcapng_enhanced(1, &frame[..frame.len() - 2]));
    bytes.extend(pcapng_enhanced(0, &frame));
    bytes.extend(pcapng_enhanced(1, &frame[..frame.len() - 2]));

    let (code, stdout, stderr) = trace_bytes("other-link.pcapng", &bytes);
    assert_eq!(code, Some(3), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let verdicts: Vec<&str> = lines[..4]
        .iter()
        .map(|line| line.split_whitespace().nth(1).unwrap_or_default())
        .collect();
    assert_eq!(
        verdicts,
        [
            "kernel:not_service",
            "skipped",
            "kernel:not_service",
            "skipped"
        ],
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        "     2 skipped                          interface 1 has link type LINUX_SLL (113), \
         not Ethernet"
    );
    assert!(
        stdout.contains(
            "summary: frames skipped on interfaces that are not Ethernet: 2 (interface 1, link \
             type LINUX_SLL (113): 2)\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("counters:\n  rx_packets 2\n"), "{stdout}");
    assert!(stdout.contains("\n  skipped 2\n"), "{stdout}");
    assert!(stderr.starts_with("spike-trace: warning: "), "{stderr}");
    assert!(
        stderr.contains(
            "2 frames on interfaces that are not Ethernet were skipped (interface 1, link type \
             LINUX_SLL (113): 2); every Ethernet frame was traced"
        ),
        "{stderr}"
    );
}

#[test]
fn cut_frame_shows_known_parts() {
    let whole = tcp_frame([10, 9, 9, 9], 100);
    // Each case: bytes captured, the flow the line shows.
    let cases: [(usize, &str); 4] = [
        (14 + 14, "tcp -:- -> -:-"),
        (14 + 18, "tcp 10.0.0.1:- -> -:-"),
        (14 + 20 + 3, "tcp 10.0.0.1:1234 -> 10.9.9.9:-"),
        (14 + 20 + 4, "tcp 10.0.0.1:1234 -> 10.9.9.9:80"),
    ];
    for (captured, expected) in cases {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let input = dir.path().join("cut.pcap");
        write_pcap_records(
            &input,
            captured as u32,
            &[(whole[..captured].to_vec(), whole.len())],
        );
        let result = run_trace(&["--input".as_ref(), input.as_os_str()]);
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(result.status.success(), "{captured} bytes: {stdout}");
        let line = stdout.lines().next().unwrap_or_default();
        let flow = line
            .split_once("truncated")
            .map(|(_, rest)| rest.trim_start())
            .and_then(|rest| rest.split_once(" capture-truncated"))
            .map(|(flow, _)| flow);
        assert_eq!(flow, Some(expected), "{captured} bytes: {line}");
        assert!(!line.contains("0.0.0.0"), "{line}");
        assert!(!line.contains("proto-0"), "{line}");
    }
}

#[test]
fn captured_over_original_is_damage() {
    let frame = tcp_frame([10, 9, 9, 9], 10);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("overlong.pcap");
    write_pcap_records(
        &input,
        65535,
        &[
            (frame.clone(), frame.len()),
            (frame.clone(), 20),
            (frame.clone(), frame.len()),
        ],
    );
    let result = run_trace(&["--input".as_ref(), input.as_os_str(), "--counters".as_ref()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(3), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = format!(
        " damaged(captured length {} above original length 20)",
        frame.len()
    );
    assert!(lines[1].ends_with(&expected), "{stdout}");
    assert!(!lines[0].contains("damaged"), "{stdout}");
    assert!(!lines[2].contains("damaged"), "{stdout}");
    assert!(stdout.contains("counters:\n  rx_packets 3\n"), "{stdout}");
    assert!(
        stderr.contains(
            "1 records have a captured length above their original length, first frame 2; \
             the file is damaged there"
        ),
        "{stderr}"
    );
}

/// Returns `frame` with `tags` (type and TCI, 4 bytes each) inserted after the MACs.
fn with_tags(frame: &[u8], tags: &[[u8; 4]]) -> Vec<u8> {
    let mut tagged = frame[..12].to_vec();
    for tag in tags {
        tagged.extend_from_slice(tag);
    }
    tagged.extend_from_slice(&frame[12..]);
    tagged
}

/// Returns an Ethernet frame whose type field is `type_field`, followed by 46 bytes of
/// LLC data (a spanning tree BPDU's DSAP, SSAP and control, then zeros).
fn llc_frame(type_field: u16) -> Vec<u8> {
    let mut frame = vec![0x01, 0x80, 0xc2, 0, 0, 0, 0x02, 0, 0, 0, 0, 0x01];
    frame.extend_from_slice(&type_field.to_be_bytes());
    frame.extend_from_slice(&[0x42, 0x42, 0x03]);
    frame.resize(14 + 46, 0);
    frame
}

#[test]
fn vlan_and_length_fields_are_described() {
    let ipv4 = tcp_frame([10, 9, 9, 9], 10);
    let service_tag = [0x88, 0xa8, 0x00, 0x64];
    let customer_tag = [0x81, 0x00, 0x00, 0x65];
    // Each case: frame, verdict, description after the verdict column.
    let cases: [(Vec<u8>, &str, &str); 7] = [
        (
            with_tags(&ipv4, &[service_tag]),
            "kernel:double_vlan_tag",
            "802.1ad service tag, inner ethertype 0x0800",
        ),
        (
            with_tags(&ipv4, &[service_tag, customer_tag]),
            "kernel:double_vlan_tag",
            "802.1ad service tag, inner 802.1Q tag",
        ),
        (
            with_tags(&ipv4, &[customer_tag, customer_tag]),
            "kernel:double_vlan_tag",
            "802.1Q tag, inner 802.1Q tag",
        ),
        (
            with_tags(&ipv4, &[customer_tag, service_tag]),
            "kernel:double_vlan_tag",
            "802.1Q tag, inner 802.1ad service tag",
        ),
        (
            llc_frame(46),
            "kernel:other_ethertype",
            "802.3 length field 46, not an EtherType",
        ),
        (
            with_tags(&llc_frame(46), &[customer_tag]),
            "kernel:other_ethertype",
            "802.3 length field 46, not an EtherType",
        ),
        (
            llc_frame(0x05ff),
            "kernel:other_ethertype",
            "type field 0x05ff, neither an 802.3 length nor an EtherType",
        ),
    ];
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("tags.pcap");
    let frames: Vec<Vec<u8>> = cases.iter().map(|(frame, _, _)| frame.clone()).collect();
    write_pcap(&input, &frames);

    let result = run_trace(&["--input".as_ref(), input.as_os_str()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    for (index, (_, verdict, description)) in cases.iter().enumerate() {
        let line = lines[index];
        assert_eq!(line.split_whitespace().nth(1), Some(*verdict), "{line}");
        assert_eq!(line.get(40..), Some(*description), "{line}");
    }
}

#[test]
fn reply_line_names_service() {
    // A TCP segment with DF to the web service, too big for node.mtu once encapsulated.
    let mut frame = tcp_frame([3, 235, 60, 34], 1500 - 40);
    frame[36..38].copy_from_slice(&8080u16.to_be_bytes());
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let input = dir.path().join("too-big.pcap");
    write_pcap(&input, &[frame]);
    let result = run_trace(&["--input".as_ref(), input.as_os_str()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    let line = stdout.lines().next().unwrap_or_default();
    assert_eq!(line.split_whitespace().nth(1), Some("reply"), "{line}");
    assert_eq!(field(line, "service"), Some("web"), "{line}");
    assert_eq!(field(line, "backend"), None, "{line}");
}
