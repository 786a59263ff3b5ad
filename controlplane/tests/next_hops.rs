//! Next-hop MACs from the kernel's route and neighbour tables, with the real kernel in
//! network namespaces this test creates: spike-controlplane runs in one with a veth to
//! a second, which replies to ARP for one address and routes a prefix. The snapshots are
//! read from the ring as the dataplane reads them. Needs root (`ip netns`); without it
//! the test says so and passes.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use spike_snapring::{payload, Geometry, Received, Subscriber};

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");
const WAIT: Duration = Duration::from_secs(20);
const PEER_MAC: &str = "02:00:00:00:99:02";
const KNOWN_MAC: &str = "02:00:00:00:99:03";
const OVERRIDE_MAC: &str = "02:00:00:00:99:44";

/// Runs `ip ARGS` and panics with its output when it fails.
fn ip(args: &str) {
    let output = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("run ip");
    assert!(
        output.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two namespaces, removed when dropped.
struct Namespaces {
    spike: String,
    peer: String,
}

impl Namespaces {
    /// Creates them, or returns `None` when this process may not (not root).
    fn create() -> Option<Namespaces> {
        let prefix = format!("spknh{}", std::process::id());
        let spike = format!("{prefix}a");
        let status = Command::new("ip")
            .args(["netns", "add", &spike])
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        let namespaces = Namespaces {
            spike,
            peer: format!("{prefix}b"),
        };
        ip(&format!("netns add {}", namespaces.peer));
        Some(namespaces)
    }

    /// The Spike node's side: 10.99.0.1/24 on v0; the peer 10.99.0.2 on v1 replies to ARP
    /// and is the gateway of 10.98.0.0/24; 10.99.0.3 has a permanent entry.
    fn wire(&self) {
        let (spike, peer) = (&self.spike, &self.peer);
        ip(&format!(
            "-n {spike} link add v0 type veth peer name v1 netns {peer}"
        ));
        ip(&format!("-n {spike} link set lo up"));
        ip(&format!("-n {spike} addr add 10.99.0.1/24 dev v0"));
        ip(&format!("-n {spike} link set v0 up"));
        ip(&format!("-n {peer} link set v1 address {PEER_MAC}"));
        ip(&format!("-n {peer} addr add 10.99.0.2/24 dev v1"));
        ip(&format!("-n {peer} link set v1 up"));
        ip(&format!("-n {spike} route add 10.98.0.0/24 via 10.99.0.2"));
        ip(&format!(
            "-n {spike} neigh add 10.99.0.3 lladdr {KNOWN_MAC} dev v0 nud permanent"
        ));
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.spike, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(path: &Path, ring: &Path, metrics_port: u16) {
    let backend = |name: &str, address: &str, extra: &str| {
        format!(
            "\n[[service.backend]]\nname = \"{name}\"\naddress = \"{address}\"\n\
             vtep_mac = \"0a:58:0a:f4:00:{:02x}\"\n{extra}",
            address.rsplit('.').next().unwrap().parse::<u8>().unwrap()
        )
    };
    let backends = [
        backend("on-link", "10.99.0.2", ""),
        backend("routed", "10.98.0.5", ""),
        backend("known", "10.99.0.3", ""),
        backend(
            "override",
            "10.99.0.4",
            &format!("next_hop_mac = \"{OVERRIDE_MAC}\"\n"),
        ),
        backend("unreachable", "10.97.0.1", ""),
        backend("silent", "10.99.0.9", ""),
    ]
    .concat();
    let config = format!(
        "[controlplane]\nring = {:?}\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
         resolve_next_hops = true\n\n[node]\nmac = \"02:53:50:00:00:01\"\n\
         ipv4 = \"10.99.0.1\"\ngateway_mac = \"02:53:50:00:00:fe\"\n\
         vtep_mac = \"02:53:50:00:00:02\"\n\n[hash]\nkey = \"8f2d6c1e4b7a90355ce1d2f3a4b5c6d7\"\n\n\
         [[service]]\nname = \"web\"\nvip = \"198.51.100.10\"\nprotocol = \"tcp\"\nport = 80\n\
         {backends}",
        ring.display().to_string()
    );
    fs::write(path, config).unwrap();
}

/// Waits for the next snapshot in the ring and returns its backends' next-hop MACs.
fn next_snapshot(subscriber: &mut Subscriber, process: &mut Process) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            panic!("spike-controlplane exited with {status}");
        }
        if let Received::Snapshot(delivery) = subscriber.poll() {
            let decoded = payload::decode(&delivery.payload).unwrap();
            let config: spike_core::Config = decoded.config_text.parse().unwrap();
            return config.services[0]
                .backends
                .iter()
                .map(|backend| {
                    let mac = backend.next_hop_mac.map(|mac| mac.to_string());
                    (backend.name.clone(), mac.unwrap_or_default())
                })
                .collect();
        }
        assert!(Instant::now() < deadline, "no snapshot within {WAIT:?}");
        sleep(Duration::from_millis(50));
    }
}

/// Fetches the metrics from inside the namespace.
fn metrics(namespace: &str, port: u16) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, "python3", "-c"])
        .arg(format!(
            "import urllib.request; print(urllib.request.urlopen(\
             'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())"
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn next_hop_macs_come_from_the_kernel() {
    let Some(namespaces) = Namespaces::create() else {
        eprintln!("skipped: creating a network namespace needs root");
        return;
    };
    namespaces.wire();
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring");
    let config = dir.path().join("controlplane.toml");
    let metrics_port = free_port();
    write_config(&config, &ring, metrics_port);
    let log = dir.path().join("controlplane.log");
    let mut process = Process(
        Command::new("ip")
            .args(["netns", "exec", &namespaces.spike, CONTROLPLANE, "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + WAIT;
    while !ring.exists() {
        assert!(Instant::now() < deadline, "no ring file");
        sleep(Duration::from_millis(20));
    }
    let mut subscriber = Subscriber::attach(&ring, Geometry::default()).unwrap();

    // The first snapshot already has every MAC the kernel could resolve: the control
    // plane waits for the first round of lookups, which waits for ARP.
    let macs = next_snapshot(&mut subscriber, &mut process);
    let expected: BTreeMap<String, String> = [
        ("known", KNOWN_MAC),
        ("on-link", PEER_MAC),
        ("override", OVERRIDE_MAC),
        ("routed", PEER_MAC),
    ]
    .into_iter()
    .map(|(name, mac)| (name.to_owned(), mac.to_owned()))
    .collect();
    assert_eq!(
        macs,
        expected,
        "log:\n{}",
        fs::read_to_string(&log).unwrap()
    );

    let text = metrics(&namespaces.spike, metrics_port);
    for line in [
        "spike_unresolved_next_hops 2",
        "spike_backend_next_hop_resolved{service=\"web\",backend=\"unreachable\"} 0",
        "spike_backend_next_hop_resolved{service=\"web\",backend=\"silent\"} 0",
        "spike_backend_next_hop_resolved{service=\"web\",backend=\"routed\"} 1",
    ] {
        assert!(text.contains(line), "no {line} in:\n{text}");
    }
    let log_text = fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("no route to 10.97.0.1"), "{log_text}");

    // A neighbour whose MAC changes is republished with the new MAC.
    let moved = "02:00:00:00:99:33";
    ip(&format!(
        "-n {} neigh replace 10.99.0.3 lladdr {moved} dev v0 nud permanent",
        namespaces.spike
    ));
    let macs = next_snapshot(&mut subscriber, &mut process);
    assert_eq!(macs.get("known").map(String::as_str), Some(moved));
    assert_eq!(macs.get("routed").map(String::as_str), Some(PEER_MAC));
}
