//! spike-controlplane as a real process without a dataplane: its HTTP endpoints (plain
//! and TLS), its startup errors and what its metrics show for down backends. The
//! control plane publishes to its ring whether or not a dataplane reads it, so these
//! tests need neither DPDK nor root.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::ServerName;
use spike_keyproto::files;
use spike_keyproto::tls;

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

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
    fn start(config: &Path, stderr: PathBuf) -> Process {
        let child = Command::new(CONTROLPLANE)
            .arg("--config")
            .arg(config)
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

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "spike-controlplane exited with {status}; log:\n{}",
                self.log()
            );
        }
    }

    /// Waits for the process to exit and returns its exit code.
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited by a signal");
            }
            assert!(
                Instant::now() < deadline,
                "still running; log:\n{}",
                self.log()
            );
            sleep(POLL);
        }
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

/// Sends one request over plain TCP and returns the whole response.
fn request(port: u16, method: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    Some(String::from_utf8_lossy(&response).into_owned())
}

/// Splits a response into its status code and body.
fn status_and_body(response: &str) -> (u16, &str) {
    let status = response[9..12].parse().unwrap();
    (status, response.split_once("\r\n\r\n").unwrap().1)
}

/// Returns a control plane config with one service whose two backends are checked over
/// TCP: node-a at 127.0.0.1, where `health_port` listens, and node-b at 127.0.0.2,
/// where nothing does.
fn config(ring: &Path, metrics_port: u16, health_port: u16, extra: &str) -> String {
    format!(
        "[controlplane]\nring = {:?}\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n{extra}\n\
         {NODE}\n[[service]]\nname = \"web\"\nvip = \"198.51.100.10\"\nprotocol = \"tcp\"\n\
         port = 80\n\n[service.health_check]\nkind = \"tcp\"\nport = {health_port}\n\
         interval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 1\n\n\
         [[service.backend]]\nname = \"node-a\"\naddress = \"192.0.2.11\"\n\
         vtep_mac = \"0a:58:0a:f4:00:0a\"\nhealth_address = \"127.0.0.1\"\n\n\
         [[service.backend]]\nname = \"node-b\"\naddress = \"192.0.2.12\"\n\
         vtep_mac = \"0a:58:0a:f4:00:0b\"\nhealth_address = \"127.0.0.2\"\n",
        ring.display().to_string()
    )
}

/// Opens a loopback listener. The kernel completes the TCP handshakes of the health
/// checks, which only connect.
fn health_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[test]
fn head_requests_get_status_without_body() {
    let dir = tempfile::tempdir().unwrap();
    let (_health, health_port) = health_listener();
    let metrics_port = free_port();
    let path = dir.path().join("controlplane.toml");
    fs::write(
        &path,
        config(&dir.path().join("ring"), metrics_port, health_port, ""),
    )
    .unwrap();
    let mut process = Process::start(&path, dir.path().join("controlplane.log"));
    wait_until("the metrics endpoint", || {
        process.assert_running();
        request(metrics_port, "GET", "/healthz")
    });

    for path in ["/healthz", "/metrics", "/readyz"] {
        let get = request(metrics_port, "GET", path).unwrap();
        let head = request(metrics_port, "HEAD", path).unwrap();
        let (get_status, get_body) = status_and_body(&get);
        let (head_status, head_body) = status_and_body(&head);
        assert_eq!(head_status, get_status, "{path}: {head}");
        assert_eq!(head_body, "", "{path}: HEAD sent a body");
        assert!(!get_body.is_empty(), "{path}: GET sent no body");
    }
    // Without a dataplane the control plane is alive but not ready.
    assert_eq!(
        status_and_body(&request(metrics_port, "HEAD", "/healthz").unwrap()).0,
        200
    );
    assert_eq!(
        status_and_body(&request(metrics_port, "HEAD", "/readyz").unwrap()).0,
        503
    );
    let post = request(metrics_port, "POST", "/metrics").unwrap();
    assert_eq!(status_and_body(&post).0, 405, "{post}");
}

#[test]
fn down_backend_shows_zero_table_share() {
    let dir = tempfile::tempdir().unwrap();
    let (_health, health_port) = health_listener();
    let metrics_port = free_port();
    let path = dir.path().join("controlplane.toml");
    fs::write(
        &path,
        config(&dir.path().join("ring"), metrics_port, health_port, ""),
    )
    .unwrap();
    let mut process = Process::start(&path, dir.path().join("controlplane.log"));

    let metrics = wait_until("the first snapshot", || {
        process.assert_running();
        request(metrics_port, "GET", "/metrics")
            .filter(|text| text.contains("spike_snapshot_generation 1"))
    });
    for line in [
        "spike_backend_health{service=\"web\",backend=\"node-a\"} 1",
        "spike_backend_health{service=\"web\",backend=\"node-b\"} 0",
        "spike_backend_table_share_ppm{service=\"web\",backend=\"node-a\"} 1000000",
        "spike_backend_table_share_ppm{service=\"web\",backend=\"node-b\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
}

#[test]
fn unslotted_backend_is_logged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_health, health_port) = health_listener();
    let metrics_port = free_port();
    let path = dir.path().join("controlplane.toml");
    // Both backends pass their checks, and node-a outweighs node-b so far that node-b's
    // share of the 65537 slots is below one.
    let text = config(&dir.path().join("ring"), metrics_port, health_port, "")
        .replace("127.0.0.2", "127.0.0.1")
        .replacen(
            "name = \"node-a\"\n",
            "name = \"node-a\"\nweight = 1000000\n",
            1,
        );
    fs::write(&path, text).unwrap();
    let mut process = Process::start(&path, dir.path().join("controlplane.log"));

    let metrics = wait_until("the first snapshot", || {
        process.assert_running();
        request(metrics_port, "GET", "/metrics")
            .filter(|text| text.contains("spike_snapshot_generation 1"))
    });
    for line in [
        "spike_unslotted_backends 1",
        "spike_backend_table_share_ppm{service=\"web\",backend=\"node-b\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line} in:\n{metrics}");
    }
    let log = process.log();
    let warning = "service web: backend node-b has weight 1 but none of the 65537 Maglev slots";
    assert_eq!(log.matches(warning).count(), 1, "logged once:\n{log}");
}

#[test]
fn taken_metrics_port_leaves_no_ring_file() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let ring = dir.path().join("ring");
    let path = dir.path().join("controlplane.toml");
    fs::write(&path, config(&ring, port, 1, "")).unwrap();

    let mut process = Process::start(&path, dir.path().join("controlplane.log"));
    assert_eq!(process.exit_code(), 1);
    let log = process.log();
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");
    assert!(log.contains("controlplane.metrics_listen"), "{log}");
    assert!(!ring.exists(), "the ring file was left behind");
}

#[test]
fn kubernetes_connection_error_names_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let (_health, health_port) = health_listener();
    // Nothing listens on this port, so every request to the API server is refused.
    let api_port = free_port();
    let kubernetes = format!(
        "[kubernetes.api_server]\nmode = \"url\"\nurl = \"http://127.0.0.1:{api_port}\"\n\
         [kubernetes.services]\nmatch_labels = {{ spike = \"yes\" }}\n"
    );
    let text = config(&dir.path().join("ring"), free_port(), health_port, "") + &kubernetes;
    let path = dir.path().join("controlplane.toml");
    fs::write(&path, text).unwrap();
    let mut process = Process::start(&path, dir.path().join("controlplane.log"));

    let line = wait_until("a watch error in the log", || {
        process.assert_running();
        process
            .log()
            .lines()
            .find(|line| line.contains("kubernetes watch failed"))
            .map(str::to_owned)
    });
    assert!(
        line.contains(&format!("http://127.0.0.1:{api_port}/")),
        "{line}"
    );
}

/// A CA that issues the control plane's certificate, written as spike-bootstrap writes
/// an identity directory.
struct Identity {
    ca_der: rustls::pki_types::CertificateDer<'static>,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Identity {
    fn new() -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "spike test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = params.self_signed(&key).unwrap();
        Identity {
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn write(&self, dir: &Path) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        fs::create_dir_all(dir).unwrap();
        files::write_atomic(&dir.join("key.pem"), key.serialize_pem().as_bytes(), 0o600).unwrap();
        files::write_atomic(&dir.join("cert.pem"), cert.pem().as_bytes(), 0o644).unwrap();
        files::write_atomic(&dir.join("ca.pem"), self.ca_pem.as_bytes(), 0o644).unwrap();
    }
}

/// Sends `GET path` over TLS, trusting only `ca`, and returns the response.
fn tls_get(
    port: u16,
    ca: rustls::pki_types::CertificateDer<'static>,
    path: &str,
) -> std::io::Result<String> {
    let config = tls::client_config(ca, None).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn metrics_over_tls_from_a_real_process() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::new();
    let identity_dir = dir.path().join("identity");
    identity.write(&identity_dir);
    let (_health, health_port) = health_listener();
    let metrics_port = free_port();
    let tls_section = format!(
        "[controlplane.metrics_tls]\nidentity_dir = {:?}\n",
        identity_dir.display().to_string()
    );
    let path = dir.path().join("controlplane.toml");
    let text = config(
        &dir.path().join("ring"),
        metrics_port,
        health_port,
        &tls_section,
    );
    fs::write(&path, text).unwrap();
    let mut process = Process::start(&path, dir.path().join("controlplane.log"));

    let metrics = wait_until("metrics over TLS", || {
        process.assert_running();
        tls_get(metrics_port, identity.ca_der.clone(), "/metrics")
            .ok()
            .filter(|text| text.contains("spike_snapshot_generation 1"))
    });
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert!(
        metrics.contains("spike_backend_health{service=\"web\",backend=\"node-a\"} 1"),
        "{metrics}"
    );

    // Plain HTTP on the TLS port gets no HTTP response: the handshake fails.
    let plain = request(metrics_port, "GET", "/metrics").unwrap_or_default();
    assert!(
        !plain.starts_with("HTTP/"),
        "plain HTTP was answered: {plain}"
    );

    // A client that trusts another CA refuses the server's certificate.
    let other = Identity::new();
    let refused = tls_get(metrics_port, other.ca_der.clone(), "/healthz");
    assert!(refused.is_err(), "{refused:?}");
    process.assert_running();
}

#[test]
fn rejected_reload_logs_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_health, health_port) = health_listener();
    let metrics_port = free_port();
    let path = dir.path().join("controlplane.toml");
    let text = config(&dir.path().join("ring"), metrics_port, health_port, "");
    fs::write(&path, &text).unwrap();
    let mut process = Process::start(&path, dir.path().join("controlplane.log"));
    wait_until("the metrics endpoint", || {
        process.assert_running();
        request(metrics_port, "GET", "/healthz")
    });

    // A repeated key is a TOML syntax error, whose message from the parser quotes the
    // line over several lines.
    fs::write(
        &path,
        text.replace("kind = \"tcp\"", "kind = \"tcp\"\nkind = \"tcp\""),
    )
    .unwrap();
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(process.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -HUP");
    let line = wait_until("the rejected reload", || {
        process.assert_running();
        let log = process.log();
        let line = log
            .lines()
            .find(|line| line.contains("config reload rejected"))?;
        Some(line.to_owned())
    });

    let place = format!("{}:", path.display());
    assert!(line.contains(&format!("error={place}")), "{line}");
    assert!(line.contains("duplicate key"), "{line}");
    assert!(!process.log().contains("\n   |"), "{}", process.log());
}
