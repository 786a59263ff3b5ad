//! Port set-ups beyond one worker on one port: two workers sharing a port's queues, and
//! the kernel exception path through a net_tap interface.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, TestDir};

const WAIT: Duration = Duration::from_secs(20);

/// Reads a `name value` line of the final counters.
fn counter(stdout: &str, name: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in:\n{stdout}"))
}

/// EAL arguments with an explicit lcore-to-CPU map, so three lcores fit on two CPUs.
fn eal_args_mapped(test_name: &str, lcores: &str, extra: &[&str]) -> Vec<String> {
    let mut args = common::eal_args(test_name, "0", extra);
    args[0] = "--lcores".to_owned();
    args[1] = lcores.to_owned();
    args
}

#[test]
fn two_workers_share_one_port() {
    let dir = TestDir::new("two-workers");
    let eal_args = eal_args_mapped("two-workers", "0@0,1@1,2@1", &["--vdev", "net_null0"]);
    let config = common::example_config()
        + &common::dpdk_section(&eal_args, "net_null0", "workers = 2\nmbufs = 16383");
    let path = dir.write_config(&config);
    let mut daemon = Daemon::start(&dir, &path);
    daemon.wait_log(WAIT, "forwarding started");
    daemon.wait_counters(WAIT, |counters| {
        counters["rx_packets"]
            .as_u64()
            .is_some_and(|packets| packets > 10_000)
    });
    let log = daemon.stderr_text();
    assert!(log.contains("rx_queues=2"), "two queues configured:\n{log}");
    assert!(log.contains("workers=2"), "two workers started:\n{log}");

    let stdout = daemon.stop_with("INT");
    let received = counter(&stdout, "rx_packets");
    assert!(received > 10_000, "workers received frames: {received}");
    assert_eq!(
        received,
        counter(&stdout, "port.ipackets"),
        "every frame the port delivered was decided by a worker"
    );
    // net_null delivers zero-filled frames, addressed to MAC 00:00:00:00:00:00, which
    // is not the port's: the MAC filter drops them.
    assert_eq!(counter(&stdout, "drop.other_host_mac"), received);
}

/// A network namespace removed on drop, so the tap interface never reaches the host's.
struct Namespace(String);

impl Namespace {
    fn new(name: String) -> Namespace {
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {name}");
        Namespace(name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let output = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args)
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
fn kernel_port_carries_exception_frames() {
    let dir = TestDir::new("kernel-port");
    let namespace = Namespace::new(format!("spkdp{}", std::process::id()));
    let capture = common::captures_dir().join("suricata-tcp-handshake-data-rst.pcap");
    let out = dir.file("out.pcap");
    let eal_args = common::eal_args(
        "kernel-port",
        "0,1",
        &[
            "--vdev",
            &common::pcap_vdev(&capture, &out),
            "--vdev",
            "net_tap0,iface=spktap0",
        ],
    );
    let config = common::example_config()
        + &common::dpdk_section(
            &eal_args,
            "net_pcap0",
            "kernel_port = \"net_tap0\"\nmac_filter = false",
        );
    let path = dir.write_config(&config);
    let mut daemon = Daemon::start_in(&dir, &path, Some(&namespace.0));
    daemon.wait_log(WAIT, "forwarding started");
    namespace.ip(&["link", "set", "spktap0", "up"]);

    // The capture's 15 server-to-client frames are not for a service: they reach the
    // kernel through the tap. The kernel's own IPv6 multicast (router solicitation, MLD)
    // leaves through the main port.
    daemon.wait_counters(WAIT, |counters| {
        counters["rx_packets"].as_u64() == Some(34)
            && counters["from_kernel"]
                .as_u64()
                .is_some_and(|frames| frames > 0)
    });
    let link = namespace.ip(&["-s", "link", "show", "spktap0"]);
    let stdout = daemon.stop_with("INT");
    assert_eq!(counter(&stdout, "kernel.not_service"), 15);
    assert_eq!(counter(&stdout, "forwarded"), 19);

    let rx_packets: u64 = link
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("RX:"))
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|packets| packets.parse().ok())
        .unwrap_or_else(|| panic!("no RX packet count in:\n{link}"));
    assert!(
        rx_packets >= 15,
        "the kernel received the exception frames:\n{link}"
    );

    let frames = std::fs::read(&out).expect("read the tx capture");
    let from_kernel = counter(&stdout, "from_kernel");
    assert!(
        from_kernel > 0,
        "the kernel sent frames out of the main port"
    );
    // Every frame in the tx capture is either one of the 19 forwards or one from the
    // kernel: count IPv6 frames, which only the kernel sends here.
    let mut at = 24;
    let mut ipv6_frames = 0;
    while at + 16 <= frames.len() {
        let length = u32::from_le_bytes(frames[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &frames[at + 16..at + 16 + length];
        if frame.len() >= 14 && frame[12..14] == [0x86, 0xdd] {
            ipv6_frames += 1;
        }
        at += 16 + length;
    }
    assert!(
        ipv6_frames > 0,
        "the kernel's IPv6 frames went out of the main port"
    );
}

/// A UDP service whose only backend is on the IPv6 underlay, where the outer UDP
/// checksum is mandatory.
const IPV6_UNDERLAY_SERVICE: &str = r#"
[[service]]
name = "offload"
vip = "203.0.113.99"
protocol = "udp"
port = 5000

[[service.backend]]
name = "node-v6"
address = "2001:db8::20"
vtep_mac = "0a:58:0a:f4:00:20"
"#;

#[test]
fn tap_port_offloads_udp_checksum() {
    let dir = TestDir::new("offload");
    let namespace = Namespace::new(format!("spkof{}", std::process::id()));
    let eal_args = common::eal_args("offload", "0,1", &["--vdev", "net_tap0,iface=spk0"]);
    let config = common::example_config()
        + IPV6_UNDERLAY_SERVICE
        + &common::dpdk_section(&eal_args, "net_tap0", "");
    let path = dir.write_config(&config);
    let mut daemon = Daemon::start_in(&dir, &path, Some(&namespace.0));
    daemon.wait_log(WAIT, "forwarding started");
    let log = daemon.stderr_text();
    assert!(
        log.contains("udp_checksum_offload=true"),
        "net_tap offers UDP checksum offload:\n{log}"
    );

    // The namespace's kernel sends UDP to the VIP out of the tap, where Spike receives
    // it; Spike's VXLAN frames come back into the kernel through the same tap.
    namespace.ip(&["link", "set", "spk0", "up"]);
    namespace.ip(&["addr", "add", "10.77.0.1/24", "dev", "spk0"]);
    namespace.ip(&["route", "add", "203.0.113.99/32", "dev", "spk0"]);
    // The dataplane accepts only frames addressed to its port's MAC, which net_tap
    // chooses and the start-up log reports.
    let port_mac = log
        .split_whitespace()
        .find_map(|word| word.strip_prefix("mac="))
        .unwrap_or_else(|| panic!("no port MAC in the log:\n{log}"))
        .to_owned();
    namespace.ip(&[
        "neigh",
        "add",
        "203.0.113.99",
        "lladdr",
        &port_mac,
        "dev",
        "spk0",
    ]);
    let capture = dir.file("vxlan.pcap");
    let mut tshark = Command::new("ip")
        .args(["netns", "exec", &namespace.0, "tshark", "-q", "-i", "spk0"])
        .args(["-f", "udp port 8472", "-c", "5", "-a", "duration:15", "-w"])
        .arg(&capture)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tshark");
    std::thread::sleep(Duration::from_secs(2));
    let sender = "import socket, time\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  for i in range(20):\n    s.sendto(b'spike offload test %d' % i, ('203.0.113.99', 5000)); time.sleep(0.05)\n";
    let status = Command::new("ip")
        .args(["netns", "exec", &namespace.0, "python3", "-c", sender])
        .status()
        .expect("run the UDP sender");
    assert!(status.success(), "UDP sender failed");
    let tshark_status = tshark.wait().expect("wait for tshark");
    assert!(
        tshark_status.success(),
        "tshark capture failed: {tshark_status}"
    );
    let stdout = daemon.stop_with("INT");
    assert!(counter(&stdout, "service.offload.packets") >= 5, "{stdout}");

    let decoded = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args([
            "-o",
            "udp.check_checksum:TRUE",
            "-d",
            "udp.port==8472,vxlan",
        ])
        .args(["-T", "fields", "-E", "occurrence=f", "-e", "ipv6.dst", "-e"])
        .args(["udp.checksum.status", "-e", "vxlan.vni"])
        .output()
        .expect("run tshark");
    let text = String::from_utf8_lossy(&decoded.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split('\t').collect())
        .collect();
    assert!(rows.len() >= 5, "captured VXLAN frames:\n{text}");
    for row in rows {
        assert_eq!(row[0], "2001:db8::20", "outer IPv6 to the backend: {row:?}");
        // tshark's checksum status 1 is "good".
        assert_eq!(
            row[1], "1",
            "the tap completed the outer UDP checksum: {row:?}"
        );
        assert_eq!(row[2], "1", "VNI 1: {row:?}");
    }
}
