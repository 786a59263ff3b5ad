//! The control plane process with Kubernetes discovery, read back through the ring.
//!
//! No real API server can run here: none can be installed from the reachable package
//! registries, and the options that exist download binaries at run time or need Docker.
//! So this test starts spike-kube's simulated API server, a loopback HTTP server that
//! speaks list and watch with resourceVersion, chunked watch events and BOOKMARK. The
//! control plane's `[kubernetes]` section points at it with `mode = "url"`. The test
//! reads each published snapshot from the ring with spike-snapring's `Subscriber`, as
//! the dataplane does, so no DPDK is needed.

#[path = "../kube/tests/support/mod.rs"]
mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use spike_core::config::ServiceConfig;
use spike_core::Config;
use spike_snapring::payload;
use spike_snapring::{Geometry, Received, Subscriber};
use tokio::time::Instant;

use support::api_server::{FakeApiServer, Kind};
use support::objects::{node, ready, service, slice, NAMESPACE};

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");
/// Maximum wait for one expected snapshot or metric. A watch error delays the next poll
/// by up to kube-runtime's first backoff step (0.8 s), so this leaves ample margin.
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// The Kubernetes service `web/a` on its LoadBalancer IP, as the control plane names it.
const SERVICE_A: &str = "web.a:203.0.113.1:tcp:80";
/// The Kubernetes service `web/b`, whose VIP and port the static service also claims.
const SERVICE_B: &str = "web.b:203.0.113.2:tcp:80";
const NODE_2_NEXT_HOP: &str = "02:00:00:00:02:fe";

/// The control plane process, killed and reaped when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the control plane's config. `controlplane` adds keys to `[controlplane]`, and
/// `services` adds static services after `static-b`.
fn write_config(
    path: &Path,
    ring: &Path,
    metrics_port: u16,
    api_server: &str,
    (controlplane, services): (&str, &str),
) {
    let config = format!(
        r#"
[controlplane]
ring = {ring:?}
metrics_listen = "127.0.0.1:{metrics_port}"
ring_slot_size_mib = 1
{controlplane}

[node]
mac = "02:53:50:00:00:01"
ipv4 = "192.0.2.100"
gateway_mac = "02:53:50:00:00:fe"
vtep_mac = "02:53:50:00:00:02"

[hash]
key = "8f2d6c1e4b7a90355ce1d2f3a4b5c6d7"

[[service]]
name = "static-b"
vip = "203.0.113.2"
protocol = "tcp"
port = 80

[[service.backend]]
name = "static-node"
address = "192.0.2.50"
vtep_mac = "0a:58:0a:f4:00:32"
{services}
[kubernetes]
namespace = "{NAMESPACE}"

[kubernetes.api_server]
mode = "url"
url = "{api_server}"

[kubernetes.services]
match_labels = {{ spike = "yes" }}

[kubernetes.next_hop_macs]
"node-2" = "{NODE_2_NEXT_HOP}"
"#,
        ring = ring.display().to_string()
    );
    fs::write(path, config).unwrap();
}

/// Starts spike-controlplane with `config`, logging to `log`.
fn start_controlplane(config: &Path, log: PathBuf) -> Process {
    let child = Command::new(CONTROLPLANE)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Process { child, log }
}

/// Sends `GET /metrics` and returns the body.
fn metrics(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

/// Waits until the metrics contain every line of `expected`, then returns them.
async fn wait_for_metrics(process: &Process, port: u16, expected: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = tokio::task::spawn_blocking(move || metrics(port))
            .await
            .unwrap()
            .unwrap_or_default();
        if expected.iter().all(|line| text.contains(line)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics lack one of {expected:?} after {WAIT:?}:\n{text}\nlog:\n{}",
            process.log()
        );
        tokio::time::sleep(POLL).await;
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
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A snapshot read from the ring.
struct Snapshot {
    generation: u64,
    config: Config,
}

impl Snapshot {
    fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.config
            .services
            .iter()
            .find(|service| service.name == name)
    }

    /// Node name and weight of each backend of `name`, or `None` without that service.
    fn weights(&self, name: &str) -> Option<Vec<(String, u32)>> {
        let service = self.service(name)?;
        Some(
            service
                .backends
                .iter()
                .map(|backend| (backend.name.clone(), backend.weight))
                .collect(),
        )
    }
}

/// Polls the ring like the dataplane until a snapshot satisfies `accept`, and returns it.
async fn wait_for_snapshot(
    ring: &mut Subscriber,
    process: &Process,
    accept: impl Fn(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = Instant::now() + WAIT;
    let mut last_services = None;
    loop {
        match ring.poll() {
            Received::Snapshot(delivery) => {
                let decoded = payload::decode(&delivery.payload).unwrap();
                let snapshot = Snapshot {
                    generation: delivery.generation,
                    config: decoded.config_text.parse().unwrap(),
                };
                ring.report_applied(delivery.generation);
                if accept(&snapshot) {
                    return snapshot;
                }
                last_services = Some(format!("{:#?}", snapshot.config.services));
            }
            Received::Invalid { error, .. } => panic!("invalid snapshot in the ring: {error}"),
            Received::Nothing => {}
        }
        assert!(
            Instant::now() < deadline,
            "no matching snapshot within {WAIT:?}; last services: {}\nlog:\n{}",
            last_services.as_deref().unwrap_or("(none)"),
            process.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

fn pairs(expected: &[(&str, u32)]) -> Option<Vec<(String, u32)>> {
    Some(
        expected
            .iter()
            .map(|(node, weight)| (node.to_string(), *weight))
            .collect(),
    )
}

/// Attaches to the ring as the dataplane does.
fn attach_ring(path: &Path) -> Subscriber {
    let geometry = Geometry {
        slot_size: 1 << 20,
        ..Geometry::default()
    };
    Subscriber::attach(path, geometry).unwrap()
}

/// Sends `signal` (a name such as `HUP`) to the process with kill(1).
fn send_signal(process: &Process, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(process.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

/// Number of Service list requests (not watches) the API server received.
fn service_lists(server: &FakeApiServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|request| request.kind == Some(Kind::Service) && !request.watch)
        .count()
}

/// A static service added to the config on reload.
const STATIC_C: &str = r#"
[[service]]
name = "static-c"
vip = "203.0.113.3"
protocol = "tcp"
port = 80

[[service.backend]]
name = "static-node"
address = "192.0.2.50"
vtep_mac = "0a:58:0a:f4:00:32"
"#;

/// Builds an endpoint of pod `pod` on `node` that is terminating but still serving.
fn terminating(pod: &str, node: &str) -> serde_json::Value {
    let mut endpoint = ready(pod, node);
    endpoint["conditions"] = json!({ "ready": false, "serving": true, "terminating": true });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_services_reach_the_ring() {
    let server = FakeApiServer::start().await;
    server.apply(service("a", "203.0.113.1"));
    server.apply(service("b", "203.0.113.2"));
    server.apply(slice(
        "a-1",
        "a",
        vec![
            ready("p1", "node-1"),
            ready("p2", "node-1"),
            ready("p3", "node-2"),
        ],
    ));
    server.apply(slice("b-1", "b", vec![ready("p9", "node-1")]));
    server.apply(node(1));
    server.apply(node(2));

    let dir = tempfile::Builder::new()
        .prefix("spike-kubernetes-discovery-")
        .tempdir()
        .unwrap();
    let ring_path = dir.path().join("ring");
    let config = dir.path().join("controlplane.toml");
    let metrics_port = free_port();
    write_config(&config, &ring_path, metrics_port, &server.url(), ("", ""));
    let process = start_controlplane(&config, dir.path().join("controlplane.log"));
    wait_for_metrics(&process, metrics_port, &["spike_snapshot_generation"]).await;
    let geometry = Geometry {
        slot_size: 1 << 20,
        ..Geometry::default()
    };
    let mut ring = Subscriber::attach(&ring_path, geometry).unwrap();

    // The first snapshot with Kubernetes services: node-1 runs two ready endpoints of
    // web/a and node-2 one. The static service keeps 203.0.113.2:80 from web/b.
    let first = wait_for_snapshot(&mut ring, &process, |snapshot| {
        snapshot.service(SERVICE_A).is_some()
    })
    .await;
    assert_eq!(
        first.weights(SERVICE_A),
        pairs(&[("node-1", 2), ("node-2", 1)])
    );
    let service_a = first.service(SERVICE_A).unwrap();
    assert_eq!(service_a.vip, "203.0.113.1".parse::<IpAddr>().unwrap());
    assert_eq!(service_a.port, 80);
    assert_eq!(service_a.table_size, 65537);
    let node_1 = &service_a.backends[0];
    assert_eq!(node_1.address, "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(node_1.vtep_mac.to_string(), "02:00:00:00:00:01");
    assert_eq!(node_1.next_hop_mac, None);
    let node_2 = &service_a.backends[1];
    assert_eq!(node_2.address, "192.0.2.2".parse::<IpAddr>().unwrap());
    assert_eq!(
        node_2.next_hop_mac.map(|mac| mac.to_string()).as_deref(),
        Some(NODE_2_NEXT_HOP)
    );
    assert_eq!(first.weights("static-b"), pairs(&[("static-node", 1)]));
    assert!(first.service(SERVICE_B).is_none());

    let text = wait_for_metrics(
        &process,
        metrics_port,
        &[
            "spike_kubernetes_watch_lists_total{kind=\"services\"} 1",
            "spike_kubernetes_watch_lists_total{kind=\"endpointslices\"} 1",
            "spike_kubernetes_watch_errors_total{kind=\"nodes\"} 0",
            "spike_kubernetes_models_published_total 1",
            "spike_conflicting_services 1",
        ],
    )
    .await;
    assert!(
        text.contains("spike_kubernetes_watch_events_total{kind=\"endpointslices\"}"),
        "{text}"
    );
    promtool_check(&text);
    assert_eq!(
        process
            .log()
            .matches("conflicts with static service")
            .count(),
        1
    );

    // An EndpointSlice change: node-1 gets a third ready endpoint and node-2's only one
    // terminates, so node-2 drains with weight 0.
    server.apply(slice(
        "a-1",
        "a",
        vec![
            ready("p1", "node-1"),
            ready("p2", "node-1"),
            ready("p4", "node-1"),
            terminating("p3", "node-2"),
        ],
    ));
    let drained = wait_for_snapshot(&mut ring, &process, |snapshot| {
        snapshot.weights(SERVICE_A) == pairs(&[("node-1", 3), ("node-2", 0)])
    })
    .await;
    assert!(drained.generation > first.generation);

    // node-2 loses its VtepMAC annotation: it is skipped, logged once and counted.
    let mut bare = node(2);
    bare["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("flannel.alpha.coreos.com/backend-data");
    server.apply(bare);
    let skipped = wait_for_snapshot(&mut ring, &process, |snapshot| {
        snapshot.weights(SERVICE_A) == pairs(&[("node-1", 3)])
    })
    .await;
    assert!(skipped.generation > drained.generation);
    wait_for_metrics(
        &process,
        metrics_port,
        &["spike_kubernetes_skipped_nodes{reason=\"missing_backend_data\"} 1"],
    )
    .await;
    // Another model (a new Service) must not repeat the node's log line.
    server.apply(service("c", "203.0.113.3"));
    wait_for_snapshot(&mut ring, &process, |snapshot| {
        snapshot.service("web.c:203.0.113.3:tcp:80").is_some()
    })
    .await;
    let log = process.log();
    assert_eq!(
        log.matches("node skipped").count(),
        1,
        "node-2 should be logged once:\n{log}"
    );
    assert!(log.contains("node=node-2"), "{log}");

    // The annotation returns: node-2 is a backend again and the gauge drops to 0.
    server.apply(node(2));
    wait_for_snapshot(&mut ring, &process, |snapshot| {
        snapshot.weights(SERVICE_A) == pairs(&[("node-1", 3), ("node-2", 0)])
    })
    .await;
    wait_for_metrics(
        &process,
        metrics_port,
        &["spike_kubernetes_skipped_nodes{reason=\"missing_backend_data\"} 0"],
    )
    .await;
    assert!(process.log().contains("node is no longer skipped"));
}

/// A restarted control plane publishes nothing until Kubernetes discovery has listed
/// the cluster, so its first snapshot keeps the Kubernetes services. The API server
/// fails the restarted watcher's first two Service lists. kube-runtime waits at least
/// 0.8 s after each, which holds discovery back by 1.6 s or more while the static source
/// reports at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_publishes_kubernetes_services_first() {
    let server = FakeApiServer::start().await;
    server.apply(service("a", "203.0.113.1"));
    server.apply(slice(
        "a-1",
        "a",
        vec![ready("p1", "node-1"), ready("p3", "node-2")],
    ));
    server.apply(node(1));
    server.apply(node(2));
    let dir = tempfile::Builder::new()
        .prefix("spike-kubernetes-restart-")
        .tempdir()
        .unwrap();
    let ring_path = dir.path().join("ring");
    let config = dir.path().join("controlplane.toml");
    let metrics_port = free_port();
    write_config(&config, &ring_path, metrics_port, &server.url(), ("", ""));

    let first = start_controlplane(&config, dir.path().join("first.log"));
    wait_for_metrics(&first, metrics_port, &["spike_snapshot_generation"]).await;
    let mut ring = attach_ring(&ring_path);
    let before = wait_for_snapshot(&mut ring, &first, |snapshot| {
        snapshot.weights(SERVICE_A) == pairs(&[("node-1", 1), ("node-2", 1)])
    })
    .await;
    // SIGKILL, as after a crash: nothing is withdrawn or cleaned up.
    drop(first);

    // node-1 gets a second endpoint while the control plane is down, so the restarted
    // one has a new snapshot to publish.
    server.apply(slice(
        "a-1",
        "a",
        vec![
            ready("p1", "node-1"),
            ready("p2", "node-1"),
            ready("p3", "node-2"),
        ],
    ));
    server.fail_lists(Kind::Service, 2);
    let lists_before_restart = service_lists(&server);
    let second = start_controlplane(&config, dir.path().join("second.log"));

    // The ring shows only the newest snapshot, so the generation shows that nothing was
    // published before it.
    let after = wait_for_snapshot(&mut ring, &second, |_| true).await;
    assert_eq!(
        after.generation,
        before.generation + 1,
        "log:\n{}",
        second.log()
    );
    assert_eq!(
        after.weights(SERVICE_A),
        pairs(&[("node-1", 2), ("node-2", 1)])
    );
    assert_eq!(after.weights("static-b"), pairs(&[("static-node", 1)]));
    assert!(
        service_lists(&server) >= lists_before_restart + 3,
        "the restarted watcher should list Services three times (two failures)"
    );
    let log = second.log();
    assert_eq!(log.matches("snapshot published").count(), 1, "{log}");
    assert!(!log.contains("initial sync timed out"), "{log}");

    // A reload restarts every source. The snapshot that adds a static service keeps the
    // Kubernetes services, although the restarted watcher's first lists fail again.
    server.fail_lists(Kind::Service, 2);
    write_config(
        &config,
        &ring_path,
        metrics_port,
        &server.url(),
        ("", STATIC_C),
    );
    send_signal(&second, "HUP");
    let reloaded = wait_for_snapshot(&mut ring, &second, |_| true).await;
    assert_eq!(reloaded.generation, after.generation + 1);
    assert_eq!(reloaded.weights("static-c"), pairs(&[("static-node", 1)]));
    assert_eq!(
        reloaded.weights(SERVICE_A),
        pairs(&[("node-1", 2), ("node-2", 1)])
    );
}

/// When a source does not report within `initial_sync_timeout_s`, the control plane
/// publishes the others' services, logs and counts the timeout, and adds the late
/// source's services when they come. Here the API server fails the first four Service
/// lists, which holds discovery back by at least 3.2 s (kube-runtime waits at least 0.8 s
/// after each failure) against a timeout of 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_timeout_publishes_static_services() {
    let server = FakeApiServer::start().await;
    server.apply(service("a", "203.0.113.1"));
    server.apply(slice("a-1", "a", vec![ready("p1", "node-1")]));
    server.apply(node(1));
    server.fail_lists(Kind::Service, 4);
    let dir = tempfile::Builder::new()
        .prefix("spike-kubernetes-sync-timeout-")
        .tempdir()
        .unwrap();
    let ring_path = dir.path().join("ring");
    let config = dir.path().join("controlplane.toml");
    let metrics_port = free_port();
    let controlplane = "initial_sync_timeout_s = 1";
    write_config(
        &config,
        &ring_path,
        metrics_port,
        &server.url(),
        (controlplane, ""),
    );

    let process = start_controlplane(&config, dir.path().join("controlplane.log"));
    wait_for_metrics(&process, metrics_port, &["spike_snapshot_generation"]).await;
    let mut ring = attach_ring(&ring_path);
    let first = wait_for_snapshot(&mut ring, &process, |_| true).await;
    assert_eq!(first.generation, 1);
    assert_eq!(first.weights("static-b"), pairs(&[("static-node", 1)]));
    assert!(first.service(SERVICE_A).is_none());
    wait_for_metrics(
        &process,
        metrics_port,
        &["spike_initial_sync_timeouts_total 1"],
    )
    .await;
    let log = process.log();
    let line = log
        .lines()
        .find(|line| line.contains("initial sync timed out"))
        .unwrap_or_else(|| panic!("no timeout in the log:\n{log}"));
    assert!(line.contains("kubernetes"), "{line}");

    let complete = wait_for_snapshot(&mut ring, &process, |snapshot| {
        snapshot.service(SERVICE_A).is_some()
    })
    .await;
    assert_eq!(complete.generation, 2);
    assert_eq!(complete.weights(SERVICE_A), pairs(&[("node-1", 1)]));
}
