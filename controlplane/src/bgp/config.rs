//! The `[bgp]` section: this node's BGP speaker (BIRD 2) and what the control plane
//! writes for it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// Validated `[bgp]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpConfig {
    /// This node's autonomous system number.
    pub asn: u32,
    pub router_id: Ipv4Addr,
    /// Peers in the order of the file, each address once.
    pub neighbors: Vec<Neighbor>,
    /// BGP hold time offered to every neighbour; the keepalive interval is a third of it.
    pub hold_time_s: u16,
    /// Whether every session also runs BFD, which notices a dead peer faster than the
    /// hold time.
    pub bfd: bool,
    /// BIRD's control socket, the path of `bird -s`.
    pub bird_socket: PathBuf,
    /// The file that BIRD's config includes and the control plane rewrites.
    pub routes_file: PathBuf,
    /// Time between the withdrawal of every VIP and the exit on a planned stop.
    pub drain: Duration,
    /// A dataplane whose heartbeat in the ring is older than this counts as stopped.
    pub dataplane_timeout: Duration,
}

/// One BGP peer, usually a top-of-rack router.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbor {
    pub address: IpAddr,
    pub asn: u32,
}

/// The `[bgp]` table as written. The control plane's file reader deserializes it with the
/// other sections, so that type errors and unknown keys name their line and full key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBgp {
    asn: u32,
    router_id: Ipv4Addr,
    #[serde(default, rename = "neighbor")]
    neighbors: Vec<Neighbor>,
    #[serde(default = "default_hold_time_s")]
    hold_time_s: u16,
    #[serde(default)]
    bfd: bool,
    #[serde(default = "default_bird_socket")]
    bird_socket: PathBuf,
    routes_file: PathBuf,
    #[serde(default = "default_drain_s")]
    drain_s: u64,
    #[serde(default = "default_dataplane_timeout_ms")]
    dataplane_timeout_ms: u64,
}

fn default_hold_time_s() -> u16 {
    9
}

/// Debian's bird2 package starts BIRD with this socket.
fn default_bird_socket() -> PathBuf {
    PathBuf::from("/run/bird/bird.ctl")
}

fn default_drain_s() -> u64 {
    10
}

fn default_dataplane_timeout_ms() -> u64 {
    1000
}

/// AS_TRANS (RFC 6793): a placeholder for 4-byte numbers in 2-byte sessions, never a
/// real AS.
const AS_TRANS: u32 = 23456;

/// Validates a deserialized `[bgp]` table.
///
/// # Errors
///
/// [`ConfigError`] naming the first invalid key.
pub(crate) fn validate(raw: RawBgp) -> Result<BgpConfig, ConfigError> {
    check_asn("bgp.asn", raw.asn)?;
    if raw.router_id.is_unspecified() {
        return Err(invalid(
            "bgp.router_id",
            raw.router_id,
            "a nonzero IPv4 address, usually the node's own address",
        ));
    }
    if raw.neighbors.is_empty() {
        return Err(invalid(
            "bgp.neighbor",
            "(none)",
            "at least one [[bgp.neighbor]] with address and asn",
        ));
    }
    let mut addresses = BTreeSet::new();
    for (index, neighbor) in raw.neighbors.iter().enumerate() {
        check_asn(&format!("bgp.neighbor[{index}].asn"), neighbor.asn)?;
        if neighbor.address.is_unspecified() || neighbor.address.is_multicast() {
            return Err(invalid(
                format!("bgp.neighbor[{index}].address"),
                neighbor.address,
                "the peer's unicast address",
            ));
        }
        if !addresses.insert(neighbor.address) {
            return Err(invalid(
                format!("bgp.neighbor[{index}].address"),
                neighbor.address,
                "each neighbour once",
            ));
        }
    }
    // BGP allows a hold time of 0 (no keepalives) or at least 3 s (RFC 4271, 4.2). A
    // hold time of 0 would never notice a dead peer, so it is rejected too.
    if raw.hold_time_s < 3 {
        return Err(invalid(
            "bgp.hold_time_s",
            raw.hold_time_s,
            "3 to 65535 seconds",
        ));
    }
    for (key, path) in [
        ("bgp.bird_socket", &raw.bird_socket),
        ("bgp.routes_file", &raw.routes_file),
    ] {
        if !path.is_absolute() {
            return Err(invalid(key, path.display(), "an absolute path"));
        }
    }
    if raw.drain_s > 3600 {
        return Err(invalid("bgp.drain_s", raw.drain_s, "0 to 3600 seconds"));
    }
    // The dataplane writes its heartbeat every 20 ms; 100 ms leaves room for a busy
    // main lcore.
    if !(100..=60_000).contains(&raw.dataplane_timeout_ms) {
        return Err(invalid(
            "bgp.dataplane_timeout_ms",
            raw.dataplane_timeout_ms,
            "100 to 60000 ms",
        ));
    }
    Ok(BgpConfig {
        asn: raw.asn,
        router_id: raw.router_id,
        neighbors: raw.neighbors,
        hold_time_s: raw.hold_time_s,
        bfd: raw.bfd,
        bird_socket: raw.bird_socket,
        routes_file: raw.routes_file,
        drain: Duration::from_secs(raw.drain_s),
        dataplane_timeout: Duration::from_millis(raw.dataplane_timeout_ms),
    })
}

fn check_asn(key: &str, asn: u32) -> Result<(), ConfigError> {
    if asn == 0 || asn == AS_TRANS || asn == u32::MAX {
        return Err(invalid(
            key,
            asn,
            "an AS number from 1 to 4294967294 other than 23456 (AS_TRANS)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTION: &str = r#"
        asn = 65001
        router_id = "192.0.2.1"
        hold_time_s = 3
        bfd = true
        bird_socket = "/run/bird/spike.ctl"
        routes_file = "/run/spike-controlplane/bird-routes.conf"
        drain_s = 5

        [[neighbor]]
        address = "192.0.2.254"
        asn = 65000

        [[neighbor]]
        address = "2001:db8::1"
        asn = 65000
    "#;

    fn parse_text(text: &str) -> Result<BgpConfig, ConfigError> {
        validate(toml::from_str(text)?)
    }

    #[test]
    fn section_parses() {
        let config = parse_text(SECTION).unwrap();
        assert_eq!(config.asn, 65001);
        assert_eq!(config.router_id, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(config.neighbors.len(), 2);
        assert_eq!(
            config.neighbors[1].address,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(config.hold_time_s, 3);
        assert!(config.bfd);
        assert_eq!(config.drain, Duration::from_secs(5));
        assert_eq!(config.dataplane_timeout, Duration::from_millis(1000));
    }

    #[test]
    fn defaults_apply() {
        let text = SECTION
            .replace("hold_time_s = 3", "")
            .replace("bfd = true", "")
            .replace("bird_socket = \"/run/bird/spike.ctl\"", "")
            .replace("drain_s = 5", "");
        let config = parse_text(&text).unwrap();
        assert_eq!(config.hold_time_s, 9);
        assert!(!config.bfd);
        assert_eq!(config.bird_socket, PathBuf::from("/run/bird/bird.ctl"));
        assert_eq!(config.drain, Duration::from_secs(10));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            (("asn = 65001", "asn = 0"), "bgp.asn"),
            (("asn = 65001", "asn = 23456"), "bgp.asn"),
            (
                ("router_id = \"192.0.2.1\"", "router_id = \"0.0.0.0\""),
                "bgp.router_id",
            ),
            (("hold_time_s = 3", "hold_time_s = 2"), "bgp.hold_time_s"),
            (("drain_s = 5", "drain_s = 3601"), "bgp.drain_s"),
            (
                ("drain_s = 5", "dataplane_timeout_ms = 50"),
                "bgp.dataplane_timeout_ms",
            ),
            (
                (
                    "\"/run/spike-controlplane/bird-routes.conf\"",
                    "\"spike-routes.conf\"",
                ),
                "bgp.routes_file",
            ),
            (
                ("\"2001:db8::1\"", "\"192.0.2.254\""),
                "bgp.neighbor[1].address",
            ),
            (
                ("\"2001:db8::1\"", "\"ff02::1\""),
                "bgp.neighbor[1].address",
            ),
            (("asn = 65000\n\n", "asn = 0\n\n"), "bgp.neighbor[0].asn"),
        ];
        for ((from, to), key) in cases {
            let text = SECTION.replacen(from, to, 1);
            assert_ne!(text, SECTION, "case {key} changed nothing");
            let error = parse_text(&text).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn commented_example_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/controlplane.toml");
        let example = std::fs::read_to_string(path).unwrap();
        let block = example
            .split("# [bgp]\n")
            .nth(1)
            .expect("the example has # [bgp]");
        // Uncomment the keys; lines that start with "# #" stay comments.
        let text: String = block
            .lines()
            .filter_map(|line| line.strip_prefix("# ").or(line.strip_prefix('#')))
            .map(|line| format!("{line}\n"))
            .collect();
        let text = text.replace("[[bgp.neighbor]]", "[[neighbor]]");
        let config = parse_text(&text).unwrap();
        assert_eq!(config.asn, 65001);
        assert_eq!(config.neighbors.len(), 1);
        assert!(config.bfd);
    }

    #[test]
    fn neighbors_are_required() {
        let text = SECTION.split("[[neighbor]]").next().unwrap();
        let error = parse_text(text).unwrap_err().to_string();
        assert!(error.contains("bgp.neighbor"), "{error}");
    }
}
