//! The control plane and the DPDK dataplane exchanging snapshots through the ring.
//!
//! spike-dataplane runs on a net_pcap port that replays a generated capture forever
//! (`infinite_rx=1`) and writes its output to /dev/null, with DPDK in no-hugepage mode.
//! The test kills the control plane with SIGKILL during traffic, checks that the
//! dataplane keeps forwarding with the same snapshot and conntrack entries, writes
//! corrupted snapshots into the ring, and restarts the control plane. Needs root (DPDK)
//! and builds spike-dataplane if it is not next to spike-controlplane.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;
use spike_snapring::{Geometry, Publisher, SlotHeader};

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// Flows in the generated capture.
const FLOWS: u8 = 16;

const NODE: &str = r#"
[node]
mac = "02:53:50:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:53:50:00:00:fe"
vtep_mac = "02:53:50:00:00:02"

[hash]
key = "8f2d6c1e4b7a90355ce1d2f3a4b5c6d7"
"#;

/// A child process that is killed and reaped when dropped.
struct Process {
    child: Child,
    stderr: PathBuf,
}

impl Process {
    fn start(command: &mut Command, stderr: PathBuf) -> Process {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Process { child, stderr }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{what} exited with {status}; log:\n{}", self.log());
        }
    }

    /// Sends SIGKILL and reaps the process.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dataplane_binary() -> PathBuf {
    let path = Path::new(CONTROLPLANE).with_file_name("spike-dataplane");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "spike-dataplane"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p spike-dataplane failed");
    }
    path
}

/// Writes a capture of one TCP ACK per flow from 203.0.113.x to 198.51.100.10:80.
fn write_capture(path: &Path) {
    // pcap global header: magic, version 2.4, zone and accuracy, snap length, Ethernet.
    let mut file = Vec::new();
    file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&4u16.to_le_bytes());
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&65535u32.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes());
    for flow in 1..=FLOWS {
        let frame = frame(flow);
        file.extend_from_slice(&[0; 8]);
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&frame);
    }
    fs::write(path, file).unwrap();
}

fn frame(flow: u8) -> Vec<u8> {
    let mut frame = vec![
        0x02, 0x53, 0x50, 0, 0, 1, 0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00,
    ];
    let mut ip = vec![
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 203, 0, 113, flow, 198, 51, 100, 10,
    ];
    let sum = ip
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    let source_port = 40000u16 + u16::from(flow);
    frame.extend_from_slice(&source_port.to_be_bytes());
    frame.extend_from_slice(&80u16.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    frame.resize(60, 0);
    frame
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `GET path` to the control plane and returns the status code and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(value) = check() {
            return value;
        }
        sleep(POLL);
    }
    panic!("timed out after {WAIT:?} waiting for {what}");
}

fn counters(path: &Path) -> Option<Value> {
    serde_json::from_str(&fs::read_to_string(path).ok()?).ok()
}

fn dropped(counters: &Value) -> u64 {
    counters["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|value| value.as_u64().unwrap())
        .sum()
}

struct Setup {
    dir: tempfile::TempDir,
    ring: PathBuf,
    metrics_port: u16,
    controlplane_config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("spike-ring-processes-")
            .tempdir()
            .unwrap();
        let ring = dir.path().join("ring");
        let metrics_port = free_port();
        let controlplane_config = dir.path().join("controlplane.toml");
        Setup {
            dir,
            ring,
            metrics_port,
            controlplane_config,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_dataplane(&self) -> Process {
        self.start_dataplane_with_node(NODE)
    }

    /// Starts the dataplane with `node` as its `[node]` and `[hash]` sections.
    fn start_dataplane_with_node(&self, node: &str) -> Process {
        let capture = self.file("flows.pcap");
        write_capture(&capture);
        // The directory name is unique, so tests running at once get their own EAL files.
        let prefix = format!(
            "spike-ring-processes-{}-{}",
            std::process::id(),
            self.dir.path().file_name().unwrap().to_string_lossy()
        );
        let vdev = format!(
            "net_pcap0,rx_pcap={},infinite_rx=1,tx_pcap=/dev/null",
            capture.display()
        );
        let eal_args = [
            "-l",
            "0,1",
            "--no-huge",
            "--no-pci",
            "--no-shconf",
            "-m",
            "256",
            "--no-telemetry",
            "--file-prefix",
            &prefix,
            "--vdev",
            &vdev,
        ];
        let quoted: Vec<String> = eal_args.iter().map(|arg| format!("{arg:?}")).collect();
        let config = format!(
            "{node}\n[conntrack]\ncapacity = 1024\nfragment_capacity = 64\n\n[dpdk]\n\
             eal_args = [{}]\nport = \"net_pcap0\"\nmac_filter = false\nsnapshot_ring = {:?}\n",
            quoted.join(", "),
            self.ring.display().to_string()
        );
        let path = self.file("dataplane.toml");
        fs::write(&path, config).unwrap();
        Process::start(
            Command::new(dataplane_binary())
                .arg("--config")
                .arg(&path)
                .arg("--counters-file")
                .arg(self.file("counters.json"))
                .args(["--counters-interval-ms", "100"])
                .env("RUNTIME_DIRECTORY", self.dir.path()),
            self.file("dataplane.log"),
        )
    }

    /// Writes the control plane's config with TCP checks against `health_port`.
    fn write_controlplane_config(&self, health_port: u16) {
        let backends: String = [11, 12]
            .iter()
            .map(|host| {
                format!(
                    "\n[[service.backend]]\nname = \"node-{host}\"\naddress = \"192.0.2.{host}\"\n\
                     vtep_mac = \"0a:58:0a:f4:00:{host}\"\nhealth_address = \"127.0.0.1\"\n"
                )
            })
            .collect();
        let config = format!(
            "[controlplane]\nring = {:?}\nmetrics_listen = \"127.0.0.1:{}\"\n{NODE}\n\
             [[service]]\nname = \"web\"\nvip = \"198.51.100.10\"\nprotocol = \"tcp\"\n\
             port = 80\n\n[service.health_check]\nkind = \"tcp\"\nport = {health_port}\n\
             interval_ms = 200\ntimeout_ms = 100\nrise = 1\nfall = 1\n{backends}",
            self.ring.display().to_string(),
            self.metrics_port
        );
        fs::write(&self.controlplane_config, config).unwrap();
    }

    fn start_controlplane(&self, log: &str) -> Process {
        Process::start(
            Command::new(CONTROLPLANE)
                .arg("--config")
                .arg(&self.controlplane_config),
            self.file(log),
        )
    }
}

/// Runs `promtool check metrics` on `text` when promtool is installed.
fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not found; skipping the exposition format check");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A loopback TCP server for the health checks that accepts and closes connections
/// until it is dropped, for at most five minutes.
struct HealthServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthServer {
    fn start() -> HealthServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => sleep(Duration::from_millis(10)),
                }
            }
        });
        HealthServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn dataplane_survives_controlplane_kill() {
    let setup = Setup::new();
    let health = HealthServer::start();
    setup.write_controlplane_config(health.port);
    let mut dataplane = setup.start_dataplane();
    let mut controlplane = setup.start_controlplane("controlplane-1.log");
    let counters_path = setup.file("counters.json");

    // The control plane publishes after one round of checks; the dataplane applies it.
    wait_until("readiness", || {
        controlplane.assert_running("spike-controlplane");
        dataplane.assert_running("spike-dataplane");
        get(setup.metrics_port, "/readyz").filter(|(status, _)| *status == 200)
    });
    assert_eq!(get(setup.metrics_port, "/healthz").unwrap().0, 200);
    let forwarding = |counters: &Value| {
        counters["services"][0]["name"] == "web"
            && counters["selections"]["new_flow"] == u64::from(FLOWS)
            && counters["forwarded"].as_u64().unwrap() > 1000
    };
    let deadline = Instant::now() + WAIT;
    while !counters(&counters_path).is_some_and(|counters| forwarding(&counters)) {
        assert!(
            Instant::now() < deadline,
            "no forwarding on the ring's snapshot within {WAIT:?}; counters: {:?}; log:\n{}",
            counters(&counters_path),
            dataplane.log()
        );
        sleep(POLL);
    }
    let before = counters(&counters_path).unwrap();
    assert_eq!(before["hash_key_mismatches"], 0, "{before}");

    let (_, metrics) = get(setup.metrics_port, "/metrics").unwrap();
    for name in [
        "spike_snapshot_generation 1",
        "spike_dataplane_applied_generation 1",
        "spike_dataplane_service_packets_total{service=\"web\"}",
        "spike_backend_health{service=\"web\",backend=\"node-11\"} 1",
        "spike_service_table_fingerprint{service=\"web\",fingerprint=",
        "spike_backend_table_share_ppm{service=\"web\",backend=\"node-12\"}",
        "spike_snapshot_publish_seconds_bucket",
        "spike_snapshot_age_seconds",
        "spike_dataplane_drops_total{reason=\"no_backend\"} 0",
        // One worker tracks the capture's flows and nothing else.
        "spike_dataplane_conntrack_entries 16",
        "spike_dataplane_conntrack_insert_failed_total 0",
        "spike_dataplane_conntrack_expired_replaced_total 0",
        "spike_dataplane_hash_key_mismatches_total 0",
        "spike_dataplane_port_ipackets_total{port=\"main\"}",
    ] {
        assert!(metrics.contains(name), "no {name} in:\n{metrics}");
    }
    promtool_check(&metrics);

    // SIGKILL during traffic: the dataplane keeps its snapshot and conntrack entries.
    controlplane.kill();
    let forwarded_at_kill = counters(&counters_path).unwrap()["forwarded"]
        .as_u64()
        .unwrap();
    sleep(Duration::from_millis(1500));
    let after = counters(&counters_path).unwrap();
    dataplane.assert_running("spike-dataplane");
    assert!(after["forwarded"].as_u64().unwrap() > forwarded_at_kill);
    assert_eq!(dropped(&after), dropped(&before), "drops rose: {after}");
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(after["selections"]["new_flow"], u64::from(FLOWS));
    assert_eq!(after["selections"]["reselected_backend_removed"], 0);

    // Corrupted snapshots written into the ring are rejected, counted and logged.
    {
        let mut ring = Publisher::attach(&setup.ring, Geometry::default()).unwrap();
        let generation = ring.published().unwrap().generation + 1;
        let bad_checksum = SlotHeader {
            magic: u64::from_le_bytes(*b"SPIKSNAP"),
            version: 1,
            generation,
            payload_len: 4,
            checksum: 1,
            ..SlotHeader::default()
        };
        ring.publish_unchecked(bad_checksum, b"junk").unwrap();
        wait_until("the corrupted snapshot's rejection", || {
            (ring.dataplane().rejected == 1).then_some(())
        });
        ring.publish(generation, b"a payload that does not decode")
            .unwrap();
        wait_until("the undecodable snapshot's rejection", || {
            (ring.dataplane().rejected == 2).then_some(())
        });
        assert_eq!(ring.dataplane().applied_generation, 1);
    }
    let log = dataplane.log();
    assert!(log.contains("checksum"), "{log}");
    assert!(log.contains("snapshot from the ring rejected"), "{log}");
    let rejected = counters(&counters_path).unwrap();
    assert_eq!(rejected["generation"], before["generation"]);
    assert_eq!(dropped(&rejected), dropped(&before));

    // A restarted control plane attaches and publishes the next generation, which the
    // dataplane applies without disturbing the tracked flows.
    let mut controlplane = setup.start_controlplane("controlplane-2.log");
    wait_until("readiness after the restart", || {
        controlplane.assert_running("spike-controlplane");
        get(setup.metrics_port, "/readyz").filter(|(status, _)| *status == 200)
    });
    let (_, metrics) = get(setup.metrics_port, "/metrics").unwrap();
    assert!(
        metrics.contains("spike_dataplane_applied_generation 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spike_dataplane_rejected_snapshots_total 2"),
        "{metrics}"
    );
    let resumed = wait_until("counters after the restart", || {
        counters(&counters_path).filter(|counters| counters["generation"] != after["generation"])
    });
    sleep(Duration::from_millis(500));
    let resumed_later = counters(&counters_path).unwrap();
    assert_eq!(dropped(&resumed_later), dropped(&before));
    assert_eq!(resumed_later["selections"]["new_flow"], u64::from(FLOWS));
    assert_eq!(resumed_later["selections"]["reselected_backend_removed"], 0);
    assert!(resumed_later["forwarded"].as_u64() > resumed["forwarded"].as_u64());
    drop(health);
}

#[test]
fn differing_hash_key_warned_and_counted() {
    let setup = Setup::new();
    let health = HealthServer::start();
    setup.write_controlplane_config(health.port);
    let own_key = NODE.replace(
        "8f2d6c1e4b7a90355ce1d2f3a4b5c6d7",
        "00112233445566778899aabbccddeeff",
    );
    let mut dataplane = setup.start_dataplane_with_node(&own_key);
    let mut controlplane = setup.start_controlplane("controlplane.log");
    let counters_path = setup.file("counters.json");

    // The snapshot is applied with the control plane's key, and each applied snapshot
    // with that key is counted.
    let applied = wait_until("a counted snapshot with a differing key", || {
        controlplane.assert_running("spike-controlplane");
        dataplane.assert_running("spike-dataplane");
        counters(&counters_path).filter(|counters| {
            counters["services"][0]["name"] == "web"
                && counters["hash_key_mismatches"].as_u64() >= Some(1)
        })
    });
    let snapshots = applied["hash_key_mismatches"].as_u64().unwrap();
    // The same differing key in later snapshots does not warn again.
    let log = dataplane.log();
    let warnings = log
        .matches("hash.key of the snapshot differs from this dataplane's config file")
        .count();
    assert_eq!(warnings, 1, "{snapshots} snapshots; log:\n{log}");
    // A count above 0 reaches the control plane's metrics.
    wait_until("the mismatch count in the metrics", || {
        controlplane.assert_running("spike-controlplane");
        get(setup.metrics_port, "/metrics").filter(|(_, metrics)| {
            !metrics.contains("spike_dataplane_hash_key_mismatches_total 0\n")
                && metrics.contains("spike_dataplane_hash_key_mismatches_total ")
        })
    });
    drop(health);
}
