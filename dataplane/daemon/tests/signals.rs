//! Signals: SIGHUP reloads the config (or keeps the running snapshot when the new
//! file is invalid or needs a restart), SIGINT and SIGTERM stop cleanly with exit 0 and
//! the final counters on stdout.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::{Daemon, TestDir};

const CAPTURE: &str = "suricata-tcp-handshake-data-rst.pcap";
const CAPTURE_FRAMES: u64 = 34;
const WAIT: Duration = Duration::from_secs(20);

/// A backend added to the last service of the example config (v6-udp).
const EXTRA_BACKEND: &str = r#"
[[service.backend]]
name = "node-f"
address = "2001:db8::16"
vtep_mac = "0a:58:0a:f4:00:0f"
"#;

/// Builds the example config on a net_pcap port that replays one capture. `extra` is
/// appended before the `[dpdk]` section and `dpdk_lines` inside it.
fn config(test_name: &str, dir: &TestDir, extra: &str, dpdk_lines: &str) -> String {
    let capture = common::captures_dir().join(CAPTURE);
    let vdev = common::pcap_vdev(&capture, &dir.file("out.pcap"));
    let eal_args = common::eal_args(test_name, "0,1", &["--vdev", &vdev]);
    common::example_config()
        + extra
        + &common::dpdk_section(
            &eal_args,
            "net_pcap0",
            &format!("mac_filter = false\n{dpdk_lines}"),
        )
}

fn backend_names(counters: &Value, service: &str) -> Vec<String> {
    counters["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|reported| reported["name"] == service)
        .unwrap_or_else(|| panic!("service {service} missing from {counters}"))["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|backend| backend["name"].as_str().unwrap().to_owned())
        .collect()
}

fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).expect("rewrite the config");
}

#[test]
fn sighup_reloads_or_keeps_snapshot() {
    let dir = TestDir::new("reload");
    let path = dir.write_config(&config("reload", &dir, "", ""));
    let mut daemon = Daemon::start(&dir, &path);
    daemon.wait_log(WAIT, "forwarding started");
    let counters = daemon.wait_counters(WAIT, |counters| {
        counters["rx_packets"].as_u64() == Some(CAPTURE_FRAMES)
    });
    assert_eq!(counters["generation"], 1);
    assert_eq!(
        backend_names(&counters, "v6-udp"),
        ["node-d", "node-e"],
        "backends before the reload"
    );

    rewrite(&path, &config("reload", &dir, EXTRA_BACKEND, ""));
    daemon.signal("HUP");
    let counters = daemon.wait_counters(WAIT, |counters| counters["generation"] == 2);
    assert_eq!(
        backend_names(&counters, "v6-udp"),
        ["node-d", "node-e", "node-f"],
        "backends after the reload"
    );
    assert_eq!(
        counters["services"][0]["packets"].as_u64(),
        Some(19),
        "web's count survives the reload"
    );
    daemon.wait_log(WAIT, "config reloaded");

    let invalid = config("reload", &dir, EXTRA_BACKEND, "")
        .replace("table_size = 65537", "table_size = 65536");
    rewrite(&path, &invalid);
    daemon.signal("HUP");
    daemon.wait_log(WAIT, "table_size");
    assert!(
        daemon.try_exit().is_none(),
        "an invalid reload keeps the process running"
    );

    let needs_restart = config("reload", &dir, EXTRA_BACKEND, "tx_retries = 9");
    rewrite(&path, &needs_restart);
    daemon.signal("HUP");
    daemon.wait_log(WAIT, "dpdk.tx_retries changed from 4 to 9");
    let log = daemon.stderr_text();
    assert_eq!(
        log.matches("config reload rejected").count(),
        2,
        "both rejections are logged:\n{log}"
    );

    // The counters file is rewritten every 100 ms, so a later file shows any change.
    let counters_path = daemon.counters.clone();
    let modified = move || std::fs::metadata(&counters_path).and_then(|meta| meta.modified());
    let previous_write = modified().unwrap();
    let counters =
        daemon.wait_counters(WAIT, |_| modified().is_ok_and(|time| time > previous_write));
    assert_eq!(
        counters["generation"], 2,
        "rejected reloads keep generation 2"
    );

    let stdout = daemon.stop_with("INT");
    assert!(common::has_line(&stdout, "generation 2"), "{stdout}");
    assert!(
        common::has_line(&stdout, "service.v6-udp.backend.node-f.packets 0"),
        "{stdout}"
    );
    assert!(common::has_line(&stdout, "port.ipackets 34"), "{stdout}");
}

#[test]
fn sigterm_twice_stops_cleanly() {
    let dir = TestDir::new("sigterm");
    let path = dir.write_config(&config("sigterm", &dir, "", ""));
    let mut daemon = Daemon::start(&dir, &path);
    daemon.wait_counters(WAIT, |counters| {
        counters["rx_packets"].as_u64() == Some(CAPTURE_FRAMES)
    });

    // A second signal during the stop, as a wrapper that forwards signals sends,
    // must not cut the clean stop short.
    daemon.signal("TERM");
    let stdout = daemon.stop_with("TERM");
    let log = daemon.stderr_text();
    assert!(common::has_line(&stdout, "rx_packets 34"), "{stdout}");
    assert!(common::has_line(&stdout, "forwarded 19"), "{stdout}");
    assert!(common::has_line(&stdout, "tx_dropped 0"), "{stdout}");
    assert!(log.contains("workers stopped"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");

    let counters = common::read_json(&daemon.counters).expect("final counters file");
    assert_eq!(counters["port"]["opackets"].as_u64(), Some(19));
}
