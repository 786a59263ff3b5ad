//! `docs/configuration.md` documents every key of the control plane's config file, and
//! no key that it rejects. The keys come from the spike-controlplane binary itself: each
//! probe is a run with an invalid config, which exits at once with the parser's message.
//! See `reference/mod.rs` for how the keys are found.

#[path = "../../dataplane/core/tests/reference/mod.rs"]
mod reference;

use std::fs;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const CONTROLPLANE: &str = env!("CARGO_BIN_EXE_spike-controlplane");

/// A valid config with every table that contains tables or arrays of tables, so that the
/// probes can reach into them. `RING` is replaced by a path in a temporary directory and
/// `PORT` by a free port, because the control plane rejects port 0.
const BASE: &str = r#"
[controlplane]
ring = "RING"
metrics_listen = "127.0.0.1:PORT"

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

[service.health_check]
kind = "tcp"

[[service.backend]]
name = "node-a"
address = "192.0.2.11"
vtep_mac = "0a:58:0a:f4:00:0a"

[kubernetes]
hash = "5-tuple"

[kubernetes.api_server]
mode = "url"
url = "http://127.0.0.1:1"

[kubernetes.services]
match_labels = { spike = "yes" }
"#;

/// Runs spike-controlplane on `text` in `dir`. A config error ends it with exit status 2
/// within milliseconds. A config it accepts starts the service, which is stopped after
/// half a second and counts as accepted. A relative ring path then lands in `dir`.
fn parse(dir: &std::path::Path, text: &str) -> Result<(), String> {
    let path = dir.join("probe.toml");
    fs::write(&path, text).unwrap();
    let mut child = Command::new(CONTROLPLANE)
        .arg("--config")
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            let message = String::from_utf8_lossy(&output.stderr).into_owned();
            return if output.status.code() == Some(2) {
                Err(message)
            } else {
                Ok(())
            };
        }
        sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    Ok(())
}

#[test]
fn reference_lists_every_controlplane_key() {
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("ring").display().to_string();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = BASE
        .replace("RING", &ring)
        .replace("PORT", &port.to_string());
    let base: toml::Table = toml::from_str(&text).unwrap();
    let parse = |text: &str| parse(dir.path(), text);
    let base_error = toml::to_string(&base).map(|text| parse(&text));
    assert_eq!(base_error, Ok(Ok(())), "the base config is valid");

    // The dataplane's own sections are rejected with a message that names the
    // dataplane's file, so they are not keys of this file even where an example sets them.
    let dataplane_only = |key: &str| {
        let mut config = base.clone();
        config.insert(key.to_owned(), toml::Value::Table(toml::Table::new()));
        let text = toml::to_string(&config).unwrap();
        parse(&text).is_err_and(|message| message.contains("belongs in the dataplane"))
    };

    reference::assert_reference_matches(
        "The control plane's file",
        (&parse, &base),
        "configs/controlplane.toml",
        &dataplane_only,
    );
}

#[test]
fn reference_lists_keys_of_markdown_examples() {
    reference::assert_markdown_keys_documented(&[
        "The dataplane's file",
        "The control plane's file",
    ]);
}
