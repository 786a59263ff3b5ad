//! Config reload on SIGHUP.
//!
//! A reload builds a new [`Snapshot`] off the packet path and publishes it, so services,
//! backends, weights, the node's underlay identity, VXLAN settings and the hash key
//! change without a restart. Settings fixed at start-up cannot change this way: the EAL,
//! ports, queues and mbuf pool (`[dpdk]`), and each worker's table capacities, timeouts
//! and ICMP rate limit (`[conntrack]`, `[icmp]`). A reload that changes one of those is
//! rejected with the key's name, and the running snapshot stays.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use spike_core::{Config, Snapshot};
use thiserror::Error;

use crate::poll::Shared;

/// Reason a reload was rejected. The running snapshot stays in use.
#[derive(Debug, Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] spike_core::config::ConfigError),

    #[error("the [dpdk] section is missing; the running dataplane keeps its own")]
    MissingDpdk,

    #[error("the [dpdk] section changed; restart spike-dataplane to apply it")]
    DpdkChanged,

    #[error("{key} changed from {running} to {requested}; restart spike-dataplane to apply it")]
    NeedsRestart {
        key: &'static str,
        running: String,
        requested: String,
    },

    #[error(
        "node.mtu {requested} needs mbufs of {needed} data bytes, but the pool was created \
         with {available}; restart spike-dataplane to apply it"
    )]
    MtuExceedsMbuf {
        requested: u16,
        needed: usize,
        available: usize,
    },

    #[error(transparent)]
    Snapshot(#[from] spike_core::snapshot::SnapshotError),
}

/// Loads `path`, checks it against the running config and publishes a snapshot with
/// the next generation. Returns the replaced snapshot, which the caller keeps for a
/// while so that its memory is not freed on a worker, and the new generation.
///
/// # Errors
///
/// Any [`ReloadError`]. The running snapshot stays in use then.
pub fn reload(
    path: &Path,
    running: &Config,
    max_frame_data: usize,
    shared: &Shared,
) -> Result<(Arc<Snapshot>, u32), ReloadError> {
    let config = crate::config::load(path)?.config;
    check_restart_keys(running, &config)?;
    check_mtu(config.node.mtu, max_frame_data)?;

    let generation = shared.snapshot.load().generation.wrapping_add(1);
    let snapshot = Snapshot::build(&config, generation)?;
    crate::check::log_unslotted(&snapshot, path);
    let previous = shared.snapshot.swap(Arc::new(snapshot));
    Ok((previous, generation))
}

/// Checks that frames of `mtu` plus Ethernet and VLAN headers fit the `max_frame_data`
/// bytes of an mbuf.
///
/// # Errors
///
/// [`ReloadError::MtuExceedsMbuf`] when they do not.
pub fn check_mtu(mtu: u16, max_frame_data: usize) -> Result<(), ReloadError> {
    let needed = usize::from(mtu) + ETHERNET_AND_VLAN_LEN;
    if needed > max_frame_data {
        return Err(ReloadError::MtuExceedsMbuf {
            requested: mtu,
            needed,
            available: max_frame_data,
        });
    }
    Ok(())
}

/// Ethernet header plus one VLAN tag: what a frame adds to an IP packet of MTU size.
pub const ETHERNET_AND_VLAN_LEN: usize = 18;

/// Returns an error naming the first setting that differs between `running` and
/// `requested` and cannot change without a restart.
fn check_restart_keys(running: &Config, requested: &Config) -> Result<(), ReloadError> {
    let (Some(old), Some(new)) = (&running.dpdk, &requested.dpdk) else {
        return Err(ReloadError::MissingDpdk);
    };
    same("dpdk.eal_args", &old.eal_args, &new.eal_args)?;
    same("dpdk.port", &old.port, &new.port)?;
    same("dpdk.kernel_port", &old.kernel_port, &new.kernel_port)?;
    same("dpdk.workers", &old.workers, &new.workers)?;
    same("dpdk.mbufs", &old.mbufs, &new.mbufs)?;
    same(
        "dpdk.rx_descriptors",
        &old.rx_descriptors,
        &new.rx_descriptors,
    )?;
    same(
        "dpdk.tx_descriptors",
        &old.tx_descriptors,
        &new.tx_descriptors,
    )?;
    same("dpdk.tx_retries", &old.tx_retries, &new.tx_retries)?;
    same("dpdk.mac_filter", &old.mac_filter, &new.mac_filter)?;
    same("dpdk.snapshot_ring", &old.snapshot_ring, &new.snapshot_ring)?;
    // A key added to [dpdk] later must not be accepted silently and then ignored.
    if old != new {
        return Err(ReloadError::DpdkChanged);
    }

    let (old, new) = (&running.conntrack, &requested.conntrack);
    same("conntrack.capacity", &old.capacity, &new.capacity)?;
    same(
        "conntrack.fragment_capacity",
        &old.fragment_capacity,
        &new.fragment_capacity,
    )?;
    let timeouts = [
        (
            "conntrack.timeouts.tcp_syn",
            old.tcp_syn_timeout_ns,
            new.tcp_syn_timeout_ns,
        ),
        (
            "conntrack.timeouts.tcp_established",
            old.tcp_established_timeout_ns,
            new.tcp_established_timeout_ns,
        ),
        (
            "conntrack.timeouts.tcp_closing",
            old.tcp_closing_timeout_ns,
            new.tcp_closing_timeout_ns,
        ),
        (
            "conntrack.timeouts.udp",
            old.udp_timeout_ns,
            new.udp_timeout_ns,
        ),
        (
            "conntrack.timeouts.other",
            old.other_timeout_ns,
            new.other_timeout_ns,
        ),
        (
            "conntrack.timeouts.fragment",
            old.fragment_timeout_ns,
            new.fragment_timeout_ns,
        ),
    ];
    for (key, old_ns, new_ns) in timeouts {
        same(key, &Seconds(old_ns), &Seconds(new_ns))?;
    }

    let (old, new) = (&running.icmp, &requested.icmp);
    same(
        "icmp.too_big_per_second",
        &old.too_big_per_second,
        &new.too_big_per_second,
    )?;
    same("icmp.too_big_burst", &old.too_big_burst, &new.too_big_burst)
}

/// A timeout shown in the seconds the config file uses.
#[derive(PartialEq)]
struct Seconds(u64);

impl Debug for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}s", self.0 as f64 / 1e9)
    }
}

fn same<T: PartialEq + Debug>(
    key: &'static str,
    running: &T,
    requested: &T,
) -> Result<(), ReloadError> {
    if running == requested {
        return Ok(());
    }
    differ(key, running, requested)
}

fn differ<T: Debug>(key: &'static str, running: &T, requested: &T) -> Result<(), ReloadError> {
    Err(ReloadError::NeedsRestart {
        key,
        running: format!("{running:?}"),
        requested: format!("{requested:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [node]
        mac = "02:00:00:00:00:01"
        ipv4 = "192.0.2.1"
        gateway_mac = "02:00:00:00:00:fe"
        vtep_mac = "02:00:00:00:00:02"

        [hash]
        key = "000102030405060708090a0b0c0d0e0f"

        [conntrack]
        capacity = 1024
        fragment_capacity = 64

        [dpdk]
        eal_args = ["-l", "0-2"]
        port = "net_null0"
        mbufs = 8191
    "#;

    fn with(replace: (&str, &str)) -> Config {
        let text = BASE.replace(replace.0, replace.1);
        assert_ne!(text, BASE, "the replacement must change the config");
        text.parse().unwrap()
    }

    fn rejected_key(requested: &Config) -> Option<&'static str> {
        let running: Config = BASE.parse().unwrap();
        match check_restart_keys(&running, requested) {
            Ok(()) => None,
            Err(ReloadError::NeedsRestart { key, .. }) => Some(key),
            Err(ReloadError::MissingDpdk | ReloadError::DpdkChanged) => Some("dpdk"),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn restart_keys_are_rejected() {
        let cases = [
            (("\"0-2\"", "\"0-3\""), "dpdk.eal_args"),
            (("net_null0", "net_null1"), "dpdk.port"),
            (("mbufs = 8191", "mbufs = 16383"), "dpdk.mbufs"),
            (
                ("mbufs = 8191", "mbufs = 8191\nmac_filter = false"),
                "dpdk.mac_filter",
            ),
            (
                ("mbufs = 8191", "mbufs = 8191\nworkers = 2"),
                "dpdk.workers",
            ),
            (("capacity = 1024", "capacity = 2048"), "conntrack.capacity"),
            (
                ("fragment_capacity = 64", "fragment_capacity = 65"),
                "conntrack.fragment_capacity",
            ),
        ];
        for (replace, key) in cases {
            assert_eq!(rejected_key(&with(replace)), Some(key), "{replace:?}");
        }
    }

    #[test]
    fn missing_dpdk_section_is_rejected() {
        let text = BASE.split("[dpdk]").next().unwrap();
        assert_eq!(rejected_key(&text.parse().unwrap()), Some("dpdk"));
    }

    #[test]
    fn snapshot_settings_are_accepted() {
        let changed = with((
            "gateway_mac = \"02:00:00:00:00:fe\"",
            "gateway_mac = \"02:00:00:00:00:fd\"",
        ));
        assert_eq!(rejected_key(&changed), None);
    }

    #[test]
    fn timeout_change_names_the_key() {
        let changed = with((
            "fragment_capacity = 64",
            "fragment_capacity = 64\n[conntrack.timeouts]\nudp = 5",
        ));
        let running: Config = BASE.parse().unwrap();
        let error = check_restart_keys(&running, &changed).unwrap_err();
        assert_eq!(
            error.to_string(),
            "conntrack.timeouts.udp changed from 300s to 5s; restart spike-dataplane to apply it"
        );
    }
}
