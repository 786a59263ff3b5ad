//! `docs/configuration.md` documents every key of the dataplane's config file, and no
//! key that the parser rejects. See `reference/mod.rs` for how the keys are found.

mod reference;

use spike_core::Config;

/// A valid config with every array of tables that has keys of its own, so that the
/// probes can reach into them.
const BASE: &str = r#"
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
hash = "5-tuple"

[[service.backend]]
name = "node-a"
address = "192.0.2.11"
vtep_mac = "0a:58:0a:f4:00:0a"
"#;

fn parse(text: &str) -> Result<(), String> {
    text.parse::<Config>()
        .map(drop)
        .map_err(|error| error.to_string())
}

#[test]
fn reference_lists_every_dataplane_key() {
    let base: toml::Table = toml::from_str(BASE).unwrap();
    parse(BASE).expect("the base config is valid");

    reference::assert_reference_matches(
        "The dataplane's file",
        (&parse, &base),
        "configs/spike.toml",
        &|_| false,
    );
}

#[test]
fn probe_finds_nested_and_variant_keys() {
    let base: toml::Table = toml::from_str(BASE).unwrap();
    let documented = reference::documented_keys("The dataplane's file");

    let found = reference::discovered_keys(&parse, &base, &documented);

    assert!(found.contains("conntrack.timeouts.tcp_syn"), "{found:?}");
    assert!(found.contains("service.backend.weight"), "{found:?}");
    assert!(found.contains("dpdk.snapshot_ring"), "{found:?}");
    assert!(found.contains("service.hash"), "{found:?}");
}
