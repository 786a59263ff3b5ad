//! The Grafana dashboard in `deploy/grafana/spike.json` queries only metrics that the
//! control plane exports.
//!
//! The exported names come from a running spike-controlplane. It serves a static service
//! and watches spike-kube's simulated API server, a loopback HTTP server that speaks list
//! and watch, because no real API server can be installed here. That server contains a
//! Service with endpoints on a known node and on a node that does not exist. The `[bgp]`
//! section names a BIRD socket where nothing listens, so the BGP metrics report failed
//! reloads and nothing is announced. The test plays the dataplane's side of the ring,
//! writing the counters document with every drop, kernel and selection reason of
//! spike-core. Each
//! PromQL expression of the dashboard is then taken apart: every metric name must be
//! exported, every label matcher must name a label of that metric, and every `by`/`on`
//! label must exist on a metric of the expression. When promtool is installed (Debian's
//! prometheus package), `promtool check rules` also parses each expression.

#[path = "../kube/tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spike_core::{DropReason, KernelReason, Selection};
use spike_snapring::{Geometry, Subscriber};

use support::api_server::FakeApiServer;
use support::objects::{node, ready, service, slice, NAMESPACE};

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");
const WAIT: Duration = Duration::from_secs(30);

/// Labels that Prometheus adds to every scraped series, and the histogram bucket label.
const SCRAPE_LABELS: [&str; 3] = ["instance", "job", "le"];

/// PromQL aggregation operators, which may be followed by `by (...)` instead of `(`.
const AGGREGATORS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// PromQL keywords that take a parenthesised list of label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other PromQL keywords, which are neither metrics nor functions.
const KEYWORDS: [&str; 7] = ["bool", "and", "or", "unless", "offset", "inf", "nan"];

/// A child process that is killed and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Returns a loopback port that nothing listens on once this returns.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, metrics_port: u16, api_server: &str) -> PathBuf {
    let config = format!(
        r#"
[controlplane]
ring = {ring:?}
metrics_listen = "127.0.0.1:{metrics_port}"

[node]
mac = "02:53:50:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:53:50:00:00:fe"
vtep_mac = "02:53:50:00:00:02"

[hash]
key = "8f2d6c1e4b7a90355ce1d2f3a4b5c6d7"

[[service]]
name = "web"
vip = "198.51.100.10"
protocol = "tcp"
port = 80

[[service.backend]]
name = "node-a"
address = "192.0.2.11"
vtep_mac = "0a:58:0a:f4:00:0a"

[[service.backend]]
name = "node-b"
address = "192.0.2.12"
vtep_mac = "0a:58:0a:f4:00:0b"

[kubernetes]
namespace = "{NAMESPACE}"

[kubernetes.api_server]
mode = "url"
url = "{api_server}"

[kubernetes.services]
match_labels = {{ spike = "yes" }}

[bgp]
asn = 65001
router_id = "192.0.2.1"
bird_socket = {bird_socket:?}
routes_file = {routes_file:?}

[[bgp.neighbor]]
address = "192.0.2.254"
asn = 65000
"#,
        ring = dir.join("ring").display().to_string(),
        bird_socket = dir.join("bird.ctl").display().to_string(),
        routes_file = dir.join("spike-routes.conf").display().to_string(),
    );
    let path = dir.join("controlplane.toml");
    fs::write(&path, config).unwrap();
    path
}

/// Builds the counters document in the dataplane's format, with every reason spike-core
/// counts.
fn dataplane_counters() -> Value {
    let reasons = |labels: Vec<&'static str>| -> Value {
        labels.into_iter().map(|label| (label, json!(1))).collect()
    };
    let backend =
        |name: &str| json!({"name": name, "address": "192.0.2.11", "packets": 1, "bytes": 60});
    json!({
        "generation": 1,
        "rx_packets": 1, "rx_bytes": 60, "forwarded": 1, "replies": 0,
        "outer_fragmented": 0, "too_big_sent": 0, "fragment_table_full": 0,
        "tx_dropped": 0, "mbuf_alloc_failed": 0, "encap_failed": 0,
        "rx_multi_segment": 0, "from_kernel": 0, "fragments_steered": 0, "fragment_ring_full": 0,
        "hash_key_mismatches": 0,
        "kernel": reasons(KernelReason::ALL.iter().map(|reason| reason.label()).collect()),
        "drops": reasons(DropReason::ALL.iter().map(|reason| reason.label()).collect()),
        "selections": reasons(Selection::ALL.iter().map(|how| how.label()).collect()),
        "services": [{"name": "web", "packets": 2, "bytes": 120,
                      "backends": [backend("node-a"), backend("node-b")],
                      "removed_backends": {"packets": 0, "bytes": 0}}],
        "port": null,
        "kernel_port": null,
    })
}

fn get_metrics(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

/// Starts the control plane, acts as the dataplane on its ring and returns the first
/// scrape that exports every metric in `needed`, with the dataplane's counters and the
/// Kubernetes discovery metrics. Metrics that the first publication sets, such as the
/// table fingerprints, can appear after the discovery metrics, so the scrapes go on
/// until all are there.
async fn scrape(needed: &BTreeSet<String>) -> String {
    let server = FakeApiServer::start().await;
    server.apply(service("a", "203.0.113.1"));
    server.apply(slice(
        "a-1",
        "a",
        vec![ready("p1", "node-1"), ready("p2", "node-9")],
    ));
    server.apply(node(1));

    let dir = tempfile::Builder::new()
        .prefix("spike-dashboard-")
        .tempdir()
        .unwrap();
    let metrics_port = free_port();
    let config = write_config(dir.path(), metrics_port, &server.url());
    let log = fs::File::create(dir.path().join("controlplane.log")).unwrap();
    let mut process = Process(
        Command::new(CONTROLPLANE)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let counters = serde_json::to_vec(&dataplane_counters()).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut dataplane: Option<Subscriber> = None;
    let mut missing = needed.clone();
    while Instant::now() < deadline {
        if let Some(status) = process.0.try_wait().unwrap() {
            let log = fs::read_to_string(dir.path().join("controlplane.log")).unwrap();
            panic!("spike-controlplane exited with {status}; log:\n{log}");
        }
        let ring = dir.path().join("ring");
        if dataplane.is_none() && ring.exists() {
            dataplane = Subscriber::attach(&ring, Geometry::default()).ok();
        }
        if let Some(dataplane) = &dataplane {
            dataplane.heartbeat();
            dataplane.report_applied(1);
            dataplane.write_counters(&counters).unwrap();
            let text = get_metrics(metrics_port).unwrap_or_default();
            let expected = [
                "spike_dataplane_drops_total{",
                "spike_kubernetes_skipped_nodes{",
                "spike_bgp_reloads_total{",
            ];
            let names = exported(&text);
            missing = needed
                .iter()
                .filter(|name| !names.contains_key(*name))
                .cloned()
                .collect();
            if missing.is_empty() && expected.iter().all(|name| text.contains(name)) {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "timed out after {WAIT:?} waiting for the dataplane and discovery metrics; \
         not exported yet: {missing:?}"
    );
}

/// Maps each sample name the exposition can contain to the label names seen on it.
///
/// `# TYPE` lines add the names of families without samples, with the suffixes that
/// their samples get: `_total` for a counter, `_bucket`, `_sum` and `_count` for a
/// histogram.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut fields = rest.split_whitespace();
            let (Some(name), Some(kind)) = (fields.next(), fields.next()) else {
                panic!("malformed TYPE line: {line}");
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.entry(format!("{name}{suffix}")).or_default();
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = names.entry(line[..end].to_owned()).or_default();
        if let Some(inner) = line[end..].strip_prefix('{') {
            let inner = &inner[..inner.rfind('}').unwrap()];
            labels.extend(label_names(inner));
        }
    }
    names
}

/// Returns the label names of a `name="value",...` list.
fn label_names(mut text: &str) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        let Some(end) = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) else {
            break;
        };
        names.push(text[..end].to_owned());
        let Some(open) = text.find('"') else { break };
        text = skip_string(&text[open..]);
    }
    names
}

/// Skips a double-quoted string at the start of `text`, honouring backslash escapes.
fn skip_string(text: &str) -> &str {
    let mut escaped = false;
    for (index, c) in text.char_indices().skip(1) {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return &text[index + 1..],
            _ => escaped = false,
        }
    }
    panic!("unterminated string in {text}");
}

/// What one PromQL expression refers to.
#[derive(Debug, Default, PartialEq)]
struct References {
    /// Metric names, each with the label names of its matchers.
    metrics: Vec<(String, Vec<String>)>,
    /// Label names of `by`, `without`, `on`, `ignoring` and `group_*` lists.
    grouping: Vec<String>,
}

/// Splits a PromQL expression into the metrics and labels it names. Grafana variables
/// (`$instance`, `$__rate_interval`) are skipped.
fn references(expr: &str) -> References {
    let mut found = References::default();
    let mut rest = expr;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            rest = skip_string(rest);
        } else if c == '[' {
            rest = &rest[rest.find(']').expect("unclosed range") + 1..];
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            let end = rest[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .map_or(rest.len(), |end| end + 1);
            rest = &rest[end..];
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            rest = rest[end..].trim_start();
            if GROUPING.contains(&word) && rest.starts_with('(') {
                let close = rest.find(')').expect("unclosed label list");
                let list = rest[1..close].split(',').map(str::trim);
                found
                    .grouping
                    .extend(list.filter(|l| !l.is_empty()).map(str::to_owned));
                rest = &rest[close + 1..];
            } else if rest.starts_with('(')
                || AGGREGATORS.contains(&word)
                || KEYWORDS.contains(&word)
                || GROUPING.contains(&word)
            {
                continue;
            } else {
                let mut labels = Vec::new();
                if let Some(inner) = rest.strip_prefix('{') {
                    let close = matcher_end(inner);
                    labels = label_names(&inner[..close]);
                    rest = &inner[close + 1..];
                }
                found.metrics.push((word.to_owned(), labels));
            }
        } else {
            rest = &rest[c.len_utf8()..];
        }
    }
    found
}

/// Returns the index of the `}` that closes a matcher list, skipping quoted values.
fn matcher_end(inner: &str) -> usize {
    let mut rest = inner;
    loop {
        let next = rest.find(['"', '}']).expect("unclosed matcher list");
        if rest.as_bytes()[next] == b'}' {
            return inner.len() - rest.len() + next;
        }
        rest = skip_string(&rest[next..]);
    }
}

/// Collects every PromQL expression of the dashboard: panel targets (also inside
/// collapsed rows) and query variables.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/spike.json");
    let dashboard: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();

    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            queries.push((title, target["expr"].as_str().unwrap().to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().unwrap();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map(|(metric, _)| metric.to_owned())
                .expect("query variables use label_values(METRIC, LABEL)");
            let name = format!("variable {}", variable["name"]);
            queries.push((name, inner));
        }
    }
    queries
}

#[test]
fn references_splits_promql() {
    let found = references(
        r#"sum by (service, backend) (rate(spike_a_total{instance=~"$instance",x="}"}[$__rate_interval])) / on (service) group_left () max(spike_b) > 0.5e3"#,
    );

    assert_eq!(
        found.metrics,
        vec![
            (
                "spike_a_total".to_owned(),
                vec!["instance".to_owned(), "x".to_owned()]
            ),
            ("spike_b".to_owned(), vec![]),
        ]
    );
    assert_eq!(found.grouping, vec!["service", "backend", "service"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_exported_metrics() {
    let queries = dashboard_queries();
    assert!(queries.len() > 10, "too few queries found: {queries:?}");
    let needed: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, expr)| references(expr).metrics)
        .map(|(metric, _)| metric)
        .collect();
    let exported = exported(&scrape(&needed).await);

    for (panel, expr) in &queries {
        let found = references(expr);
        assert!(!found.metrics.is_empty(), "{panel}: no metric in {expr}");
        let mut labels: BTreeSet<&str> = SCRAPE_LABELS.into_iter().collect();
        for (metric, matchers) in &found.metrics {
            let Some(known) = exported.get(metric) else {
                panic!("{panel}: {metric} is not exported by spike-controlplane ({expr})");
            };
            for label in matchers {
                assert!(
                    known.contains(label) || SCRAPE_LABELS.contains(&label.as_str()),
                    "{panel}: {metric} has no label {label} ({expr})"
                );
            }
            labels.extend(known.iter().map(String::as_str));
        }
        for label in &found.grouping {
            assert!(
                labels.contains(label.as_str()),
                "{panel}: no metric of the expression has label {label} ({expr})"
            );
        }
    }
}

/// Parses every expression with promtool, as recording rules, when it is installed.
#[test]
fn dashboard_queries_parse_in_promtool() {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: spike_dashboard_query_{index}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yml");
    fs::write(&path, &rules).unwrap();

    let output = match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            eprintln!("promtool not runnable ({error}); skipping the PromQL syntax check");
            return;
        }
    };

    assert!(
        output.status.success(),
        "promtool check rules failed:\n{}{}\n{rules}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
