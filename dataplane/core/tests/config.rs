//! Config loading: the shipped example parses, and each invalid value is rejected with
//! a message naming the key, the value and what is expected.

mod common;

use std::path::Path;

use spike_core::config::Protocol;
use spike_core::flow::HashFields;
use spike_core::{Config, Snapshot};

fn example_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/spike.toml")
}

#[test]
fn example_config_loads() {
    let config = Config::load(&example_path()).expect("configs/spike.toml is valid");
    assert_eq!(config.vxlan.vni, 1);
    assert_eq!(config.vxlan.port, 8472);
    assert_eq!(config.vxlan.source_port_min, 49152);
    assert_eq!(config.vxlan.source_port_max, 65535);
    assert!(!config.vxlan.ipv4_udp_checksum);
    assert_eq!(config.node.mtu, 1500);
    assert_eq!(config.services.len(), 4);
    let web = &config.services[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(web.port, 8080);
    assert_eq!(web.hash, HashFields::FiveTuple);
    assert_eq!(web.table_size, 65537);
    assert_eq!(web.backends.len(), 3);
    assert_eq!(web.backends[2].weight, 2);
    assert_eq!(config.services[2].hash, HashFields::ThreeTuple);
    assert_eq!(config.conntrack.tcp_syn_timeout_ns, 30_000_000_000);
    Snapshot::build(&config, 1).expect("example snapshot builds");
}

#[test]
fn defaults_apply() {
    let minimal = r#"
[node]
mac = "02:00:00:00:00:01"
ipv4 = "192.0.2.1"
gateway_mac = "02:00:00:00:00:02"
vtep_mac = "02:00:00:00:00:03"
[hash]
key = "000102030405060708090a0b0c0d0e0f"
"#;
    let config: Config = minimal.parse().expect("minimal config");
    assert_eq!(config.vxlan.vni, 1);
    assert_eq!(config.vxlan.port, 8472);
    assert_eq!(config.vxlan.ttl, 64);
    assert_eq!(config.node.mtu, 1500);
    assert_eq!(config.conntrack.capacity, 1 << 20);
    assert!(config.services.is_empty());
    assert!(config.dpdk.is_none());
}

struct BadCase {
    description: &'static str,
    from: &'static str,
    to: &'static str,
    expected: &'static [&'static str],
}

const BAD_CASES: &[BadCase] = &[
    BadCase {
        description: "non-prime table size",
        from: "port = 80\n",
        to: "port = 80\ntable_size = 65536\n",
        expected: &["table_size", "65536", "prime"],
    },
    BadCase {
        description: "table size above the maximum",
        from: "port = 80\n",
        to: "port = 80\ntable_size = 16777259\n",
        expected: &["table_size", "16777259"],
    },
    BadCase {
        description: "malformed MAC",
        from: "mac = \"02:53:50:00:00:01\"",
        to: "mac = \"02:53:50:00:00\"",
        expected: &[
            "node.mac",
            "\"02:53:50:00:00\"",
            "six pairs of hexadecimal digits",
        ],
    },
    BadCase {
        description: "MAC given as a number",
        from: "gateway_mac = \"02:53:50:00:00:fe\"",
        to: "gateway_mac = 5",
        expected: &["node.gateway_mac", "`5`", "MAC address in quotes"],
    },
    BadCase {
        description: "malformed next-hop MAC",
        from: "name = \"node-b\"\n",
        to: "name = \"node-b\"\nnext_hop_mac = \"02-53-50-00-00-fe\"\n",
        expected: &[
            "backend[1].next_hop_mac",
            "\"02-53-50-00-00-fe\"",
            "\"02:00:00:00:00:01\"",
        ],
    },
    BadCase {
        description: "VIP that is not an address",
        from: "vip = \"198.51.100.10\"",
        to: "vip = \"x/32\"",
        expected: &[
            "service[0] (web).vip: invalid value \"x/32\"",
            "expected an IPv4 or IPv6 address such as \"198.51.100.10\" or \"2001:db8::10\"",
        ],
    },
    BadCase {
        description: "VIP with a prefix length",
        from: "vip = \"198.51.100.10\"",
        to: "vip = \"198.51.100.10/32\"",
        expected: &["\"198.51.100.10/32\"", "without a prefix length"],
    },
    BadCase {
        description: "VIP given as a number",
        from: "vip = \"198.51.100.10\"",
        to: "vip = 3325256714",
        expected: &["vip", "3325256714", "IPv4 or IPv6 address in quotes"],
    },
    BadCase {
        description: "backend address that is not an address",
        from: "address = \"192.0.2.12\"",
        to: "address = \"192.0.2.x\"",
        expected: &[
            "service[0] (web).backend[1].address",
            "\"192.0.2.x\"",
            "IPv4 or IPv6 address",
        ],
    },
    BadCase {
        description: "IPv6 address as node.ipv4",
        from: "ipv4 = \"192.0.2.1\"",
        to: "ipv4 = \"2001:db8::5\"",
        expected: &[
            "node.ipv4",
            "\"2001:db8::5\"",
            "an IPv4 address such as",
            "belongs in node.ipv6",
        ],
    },
    BadCase {
        description: "node.ipv6 with a prefix length",
        from: "ipv6 = \"2001:db8::1\"",
        to: "ipv6 = \"2001:db8::1/64\"",
        expected: &[
            "node.ipv6",
            "\"2001:db8::1/64\"",
            "an IPv6 address such as",
            "without a prefix length",
        ],
    },
    BadCase {
        description: "multicast VtepMAC",
        from: "vtep_mac = \"0a:58:0a:f4:00:0a\"",
        to: "vtep_mac = \"01:00:5e:00:00:01\"",
        expected: &["vtep_mac", "01:00:5e:00:00:01", "unicast"],
    },
    BadCase {
        description: "VNI beyond 24 bits",
        from: "vni = 1",
        to: "vni = 16777216",
        expected: &["vxlan.vni", "16777216", "24-bit"],
    },
    BadCase {
        description: "source port range with zero",
        from: "[49152, 65535]",
        to: "[0, 100]",
        expected: &["vxlan.source_port_range", "[0, 100]"],
    },
    BadCase {
        description: "inverted source port range",
        from: "[49152, 65535]",
        to: "[60000, 50000]",
        expected: &["vxlan.source_port_range", "[60000, 50000]"],
    },
    BadCase {
        description: "short hash key",
        from: "key = \"00112233445566778899aabbccddeeff\"",
        to: "key = \"0011\"",
        expected: &["hash.key", "32 hexadecimal digits"],
    },
    BadCase {
        description: "zero conntrack capacity",
        from: "capacity = 4096",
        to: "capacity = 0",
        expected: &["conntrack.capacity", "0"],
    },
    BadCase {
        description: "negative timeout",
        from: "tcp_syn = 30",
        to: "tcp_syn = -1",
        expected: &["conntrack.timeouts.tcp_syn", "-1"],
    },
    BadCase {
        description: "MTU too small",
        from: "mtu = 1500",
        to: "mtu = 600",
        expected: &["node.mtu", "600", "1280"],
    },
    BadCase {
        description: "MTU beyond its integer type",
        from: "mtu = 1500",
        to: "mtu = 100000",
        expected: &[
            "node.mtu",
            "100000",
            "expected an MTU from 1280 to 9216 bytes",
        ],
    },
    BadCase {
        description: "unknown key",
        from: "mtu = 1500",
        to: "mtu = 1500\nmtuu = 9000",
        expected: &["mtuu"],
    },
    BadCase {
        description: "unknown key of a service",
        from: "port = 80\n",
        to: "port = 80\nprot = \"tcp\"\n",
        expected: &["service[0] (web).prot: unknown field `prot`"],
    },
    BadCase {
        description: "unknown protocol",
        from: "protocol = \"tcp\"",
        to: "protocol = \"sctp\"",
        expected: &["sctp"],
    },
    BadCase {
        description: "unknown hash fields",
        from: "hash = \"3-tuple\"",
        to: "hash = \"4-tuple\"",
        expected: &["4-tuple"],
    },
    BadCase {
        description: "duplicate backend address",
        from: "address = \"192.0.2.12\"",
        to: "address = \"192.0.2.11\"",
        expected: &["address", "192.0.2.11", "once"],
    },
    BadCase {
        description: "duplicate address of unnamed backends",
        from: "name = \"node-a\"\naddress = \"192.0.2.11\"\nvtep_mac = \"0a:58:0a:f4:00:0a\"\n\n\
               [[service.backend]]\nname = \"node-b\"\n",
        to: "address = \"192.0.2.12\"\nvtep_mac = \"0a:58:0a:f4:00:0a\"\n\n[[service.backend]]\n",
        expected: &[
            "service[0] (web).backend[1].address: invalid value 192.0.2.12",
            "once per service",
        ],
    },
    BadCase {
        description: "negative MTU",
        from: "mtu = 1500",
        to: "mtu = -1",
        expected: &["node.mtu", "-1", "expected an MTU from 1280 to 9216 bytes"],
    },
    BadCase {
        description: "service port above 65535",
        from: "port = 443",
        to: "port = 70000",
        expected: &[
            "service[2] (sticky).port",
            "70000",
            "expected a port from 1 to 65535",
        ],
    },
    BadCase {
        description: "VXLAN port above 65535",
        from: "port = 8472",
        to: "port = 65536",
        expected: &["vxlan.port", "65536", "expected a port from 1 to 65535"],
    },
    BadCase {
        description: "IPv6 backend without an IPv6 underlay address",
        from: "ipv6 = \"2001:db8::1\"\n",
        to: "",
        expected: &["address", "2001:db8::14", "node.ipv6"],
    },
    BadCase {
        description: "three source ports",
        from: "[49152, 65535]",
        to: "[1, 2, 3]",
        expected: &["vxlan.source_port_range", "[1, 2, 3]", "exactly two"],
    },
    BadCase {
        description: "backend VtepMAC equal to Spike's",
        from: "vtep_mac = \"0a:58:0a:f4:00:0a\"",
        to: "vtep_mac = \"02:53:50:00:00:02\"",
        expected: &["vtep_mac", "02:53:50:00:00:02", "node.vtep_mac"],
    },
    BadCase {
        description: "duplicate service name",
        from: "name = \"dns\"",
        to: "name = \"web\"",
        expected: &["service[1] (web).name", "web", "no other service"],
    },
    BadCase {
        description: "duplicate backend name",
        from: "name = \"node-b\"",
        to: "name = \"node-a\"",
        expected: &["backend[1].name", "node-a", "no other backend"],
    },
    BadCase {
        description: "service name with a space",
        from: "name = \"sticky\"",
        to: "name = \"my web\"",
        expected: &[
            "service[2].name: invalid value \"my web\"",
            "letters, digits",
        ],
    },
    BadCase {
        description: "port 0",
        from: "port = 443",
        to: "port = 0",
        expected: &["port", "0"],
    },
    BadCase {
        description: "duplicate service",
        from: "vip = \"198.51.100.12\"\nprotocol = \"tcp\"\nport = 443",
        to: "vip = \"198.51.100.10\"\nprotocol = \"tcp\"\nport = 80",
        expected: &[
            "service[2] (sticky): invalid value tcp 198.51.100.10:80",
            "one service",
        ],
    },
    BadCase {
        description: "loopback IPv4 VIP",
        from: "vip = \"198.51.100.10\"",
        to: "vip = \"127.0.0.1\"",
        expected: &["service[0] (web).vip", "127.0.0.1", "127.0.0.0/8"],
    },
    BadCase {
        description: "loopback IPv6 VIP",
        from: "vip = \"2001:db8:100::10\"",
        to: "vip = \"::1\"",
        expected: &[
            "service[3] (web6).vip",
            "::1",
            "never arrive from the network",
        ],
    },
    BadCase {
        description: "limited broadcast VIP",
        from: "vip = \"198.51.100.10\"",
        to: "vip = \"255.255.255.255\"",
        expected: &["255.255.255.255", "broadcast"],
    },
    BadCase {
        description: "IPv4 link-local VIP",
        from: "vip = \"198.51.100.10\"",
        to: "vip = \"169.254.10.1\"",
        expected: &["169.254.10.1", "link-local"],
    },
    BadCase {
        description: "IPv6 link-local VIP",
        from: "vip = \"2001:db8:100::10\"",
        to: "vip = \"fe80::10\"",
        expected: &["fe80::10", "link-local"],
    },
    BadCase {
        description: "IPv4-mapped IPv6 VIP",
        from: "vip = \"198.51.100.10\"",
        to: "vip = \"::ffff:198.51.100.10\"",
        expected: &["::ffff:198.51.100.10", "IPv4-mapped", "IPv4 address itself"],
    },
    BadCase {
        description: "VIP equal to node.ipv4",
        from: "vip = \"198.51.100.10\"",
        to: "vip = \"192.0.2.1\"",
        expected: &["service[0] (web).vip", "192.0.2.1", "node.ipv4"],
    },
    BadCase {
        description: "VIP equal to node.ipv6",
        from: "vip = \"2001:db8:100::10\"",
        to: "vip = \"2001:db8::1\"",
        expected: &["service[3] (web6).vip", "node.ipv6"],
    },
    BadCase {
        description: "VIP equal to a backend's address",
        from: "vip = \"198.51.100.10\"",
        to: "vip = \"192.0.2.13\"",
        expected: &["service[0] (web).vip", "192.0.2.13", "node-c", "no backend"],
    },
    BadCase {
        description: "backend address equal to node.ipv4",
        from: "address = \"192.0.2.12\"",
        to: "address = \"192.0.2.1\"",
        expected: &[
            "service[0] (web).backend[1].address: invalid value 192.0.2.1",
            "backend node-b",
            "node.ipv4",
        ],
    },
    BadCase {
        description: "backend address equal to node.ipv6",
        from: "address = \"2001:db8::15\"",
        to: "address = \"2001:db8::1\"",
        expected: &[
            "service[3] (web6).backend[1].address: invalid value 2001:db8::1",
            "backend node-e",
            "node.ipv6",
        ],
    },
    BadCase {
        description: "timeout below a millisecond",
        from: "tcp_syn = 30",
        to: "tcp_syn = 1e-300",
        expected: &[
            "conntrack.timeouts.tcp_syn: invalid value 1e-300",
            "from 0.001 (1 ms) to 86400",
        ],
    },
    BadCase {
        description: "all-zero hash key",
        from: "key = \"00112233445566778899aabbccddeeff\"",
        to: "key = \"00000000000000000000000000000000\"",
        expected: &["hash.key", "all zero", "openssl rand -hex 16"],
    },
    BadCase {
        description: "TTL beyond its integer type",
        from: "ttl = 64",
        to: "ttl = 300",
        expected: &["vxlan.ttl", "300", "expected a TTL from 1 to 255"],
    },
    BadCase {
        description: "TTL 0",
        from: "ttl = 64",
        to: "ttl = 0",
        expected: &["vxlan.ttl", "expected a TTL from 1 to 255"],
    },
    BadCase {
        description: "multicast node.ipv4",
        from: "ipv4 = \"192.0.2.1\"",
        to: "ipv4 = \"224.0.0.1\"",
        expected: &[
            "node.ipv4: invalid value 224.0.0.1",
            "unicast underlay address",
            "multicast",
        ],
    },
    BadCase {
        description: "unspecified node.ipv4",
        from: "ipv4 = \"192.0.2.1\"",
        to: "ipv4 = \"0.0.0.0\"",
        expected: &["node.ipv4: invalid value 0.0.0.0", "unspecified"],
    },
    BadCase {
        description: "limited broadcast node.ipv4",
        from: "ipv4 = \"192.0.2.1\"",
        to: "ipv4 = \"255.255.255.255\"",
        expected: &["node.ipv4: invalid value 255.255.255.255", "broadcast"],
    },
    BadCase {
        description: "loopback node.ipv4",
        from: "ipv4 = \"192.0.2.1\"",
        to: "ipv4 = \"127.0.0.1\"",
        expected: &["node.ipv4: invalid value 127.0.0.1", "loopback"],
    },
    BadCase {
        description: "multicast node.ipv6",
        from: "ipv6 = \"2001:db8::1\"",
        to: "ipv6 = \"ff02::1\"",
        expected: &["node.ipv6: invalid value ff02::1", "multicast"],
    },
    BadCase {
        description: "unspecified node.ipv6",
        from: "ipv6 = \"2001:db8::1\"",
        to: "ipv6 = \"::\"",
        expected: &["node.ipv6: invalid value ::", "unspecified"],
    },
    BadCase {
        description: "limited broadcast backend address",
        from: "address = \"192.0.2.12\"",
        to: "address = \"255.255.255.255\"",
        expected: &[
            "service[0] (web).backend[1].address: invalid value 255.255.255.255",
            "unicast underlay address",
            "broadcast",
        ],
    },
    BadCase {
        description: "loopback backend address",
        from: "address = \"192.0.2.12\"",
        to: "address = \"127.0.0.2\"",
        expected: &["backend[1].address: invalid value 127.0.0.2", "loopback"],
    },
    BadCase {
        description: "gateway MAC equal to node.mac",
        from: "gateway_mac = \"02:53:50:00:00:fe\"",
        to: "gateway_mac = \"02:53:50:00:00:01\"",
        expected: &[
            "node.gateway_mac: invalid value 02:53:50:00:00:01",
            "not node.mac",
        ],
    },
    BadCase {
        description: "broadcast gateway MAC",
        from: "gateway_mac = \"02:53:50:00:00:fe\"",
        to: "gateway_mac = \"ff:ff:ff:ff:ff:ff\"",
        expected: &[
            "node.gateway_mac: invalid value ff:ff:ff:ff:ff:ff",
            "unicast",
        ],
    },
    BadCase {
        description: "multicast node MAC",
        from: "mac = \"02:53:50:00:00:01\"",
        to: "mac = \"33:33:00:00:00:01\"",
        expected: &["node.mac: invalid value 33:33:00:00:00:01", "unicast"],
    },
    BadCase {
        description: "next-hop MAC equal to node.mac",
        from: "next_hop_mac = \"02:53:50:00:00:fd\"",
        to: "next_hop_mac = \"02:53:50:00:00:01\"",
        expected: &[
            "service[0] (web).backend[2].next_hop_mac: invalid value 02:53:50:00:00:01",
            "not node.mac",
        ],
    },
    BadCase {
        description: "table size beyond 64 bits",
        from: "port = 80\n",
        to: "port = 80\ntable_size = 99999999999999999999\n",
        expected: &[
            "service[0] (web).table_size: invalid value: integer `99999999999999999999`",
            "expected a prime integer number of Maglev slots up to 16777213",
        ],
    },
    BadCase {
        description: "table size below -2^63",
        from: "port = 80\n",
        to: "port = 80\ntable_size = -99999999999999999999 # comment\n",
        expected: &[
            "service[0] (web).table_size: invalid value: integer `-99999999999999999999`,",
            "expected a prime integer",
        ],
    },
    BadCase {
        description: "conntrack capacity beyond 64 bits",
        from: "capacity = 4096",
        to: "capacity = 18446744073709551616",
        expected: &[
            "conntrack.capacity: invalid value: integer `18446744073709551616`",
            "expected a number of flows per core from 1 to 16777216",
        ],
    },
    BadCase {
        description: "weight beyond 64 bits",
        from: "name = \"node-b\"\n",
        to: "name = \"node-b\"\nweight = 1_000_000_000_000_000_000_000\n",
        expected: &[
            "service[0] (web).backend[1].weight: invalid value: integer \
             `1_000_000_000_000_000_000_000`",
            "expected a weight from 0 to 4294967295",
        ],
    },
    BadCase {
        description: "weight beyond 32 bits",
        from: "name = \"node-b\"\n",
        to: "name = \"node-b\"\nweight = 4294967296\n",
        expected: &["expected a weight from 0 to 4294967295"],
    },
    BadCase {
        description: "VNI beyond 64 bits",
        from: "vni = 1",
        to: "vni = 0x1_0000_0000_0000_0000",
        expected: &[
            "vxlan.vni: invalid value: integer `0x1_0000_0000_0000_0000`",
            "expected a 24-bit VNI from 0 to 16777215",
        ],
    },
    BadCase {
        description: "table size as a string",
        from: "port = 80\n",
        to: "port = 80\ntable_size = \"65537\"\n",
        expected: &[
            "service[0] (web).table_size",
            "\"65537\"",
            "a prime integer",
        ],
    },
];

#[test]
fn invalid_values_are_named() {
    for case in BAD_CASES {
        assert!(
            common::BASE_CONFIG.contains(case.from),
            "{}: base config contains {:?}",
            case.description,
            case.from
        );
        let text = common::BASE_CONFIG.replacen(case.from, case.to, 1);
        let error = match text.parse::<Config>() {
            Ok(_) => panic!("{}: config was accepted", case.description),
            Err(error) => error.to_string(),
        };
        for fragment in case.expected {
            assert!(
                error.contains(fragment),
                "{}: message {error:?} should mention {fragment:?}",
                case.description
            );
        }
    }
}

#[test]
fn hash_key_is_not_echoed() {
    let text = common::BASE_CONFIG.replace(
        "key = \"00112233445566778899aabbccddeeff\"",
        "key = \"secretsecretsecretsecretsecret!!\"",
    );
    let error = text.parse::<Config>().expect_err("non-hex key").to_string();
    assert!(
        !error.contains("secret"),
        "the key never appears in messages: {error}"
    );
}

#[test]
fn dpdk_section_validated() {
    let with_dpdk = format!(
        "{}\n[dpdk]\neal_args = [\"--no-huge\"]\nport = \"net_null0\"\nworkers = 2\n",
        common::BASE_CONFIG
    );
    let config: Config = with_dpdk.parse().expect("dpdk section");
    let dpdk = config.dpdk.expect("dpdk parsed");
    assert_eq!(dpdk.port, "net_null0");
    assert_eq!(dpdk.workers, 2);
    assert_eq!(dpdk.rx_descriptors, 1024);

    let zero_workers = with_dpdk.replace("workers = 2", "workers = 0");
    let error = zero_workers
        .parse::<Config>()
        .expect_err("0 workers")
        .to_string();
    assert!(error.contains("dpdk.workers"), "{error}");

    let odd_ring = with_dpdk.replace("workers = 2", "workers = 1\nrx_descriptors = 1000");
    let error = odd_ring
        .parse::<Config>()
        .expect_err("ring size")
        .to_string();
    assert!(
        error.contains("dpdk.rx_descriptors") && error.contains("power of two"),
        "{error}"
    );
}

const CLUSTER: &str = r#"
[cluster]
redirect_vni = 4242

[[cluster.node]]
address = "192.0.2.2"
mac = "02:53:50:00:01:02"

[[cluster.node]]
address = "192.0.2.1"
mac = "02:53:50:00:01:01"
"#;

#[test]
fn cluster_section_validated() {
    let config: Config = format!("{}{CLUSTER}", common::BASE_CONFIG)
        .parse()
        .expect("cluster section");
    let cluster = config.cluster.expect("cluster parsed");
    assert_eq!(cluster.redirect_vni, 4242);
    assert_eq!(cluster.nodes.len(), 2);
    assert_eq!(cluster.self_index, 1, "this node is found by node.ipv4");
    let without: Config = common::BASE_CONFIG.parse().unwrap();
    assert!(without.cluster.is_none(), "no section, no cluster");

    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "redirect VNI equal to flannel's",
            "redirect_vni = 4242",
            "redirect_vni = 1",
            &["cluster.redirect_vni", "1", "vxlan.vni"],
        ),
        (
            "redirect VNI beyond 24 bits",
            "redirect_vni = 4242",
            "redirect_vni = 16777216",
            &["cluster.redirect_vni", "16777216", "24-bit"],
        ),
        (
            "this node missing",
            "address = \"192.0.2.1\"",
            "address = \"192.0.2.3\"",
            &["cluster.node", "192.0.2.1", "node.ipv4"],
        ),
        (
            "duplicate node",
            "address = \"192.0.2.1\"",
            "address = \"192.0.2.2\"",
            &["cluster.node[1].address", "192.0.2.2", "once"],
        ),
        (
            "node without a MAC address",
            "mac = \"02:53:50:00:01:02\"",
            "mac = \"02:53\"",
            &["cluster.node[0].mac", "\"02:53\"", "MAC address"],
        ),
        (
            "node address that is not an address",
            "address = \"192.0.2.2\"",
            "address = \"spike-2\"",
            &[
                "cluster.node[0].address",
                "\"spike-2\"",
                "IPv4 or IPv6 address",
            ],
        ),
        (
            "loopback node",
            "address = \"192.0.2.2\"",
            "address = \"127.0.0.2\"",
            &["cluster.node[0].address", "127.0.0.2", "unicast underlay"],
        ),
        (
            "limited broadcast node",
            "address = \"192.0.2.2\"",
            "address = \"255.255.255.255\"",
            &["cluster.node[0].address", "255.255.255.255", "broadcast"],
        ),
        (
            "another node's MAC equal to node.mac",
            "mac = \"02:53:50:00:01:02\"",
            "mac = \"02:53:50:00:00:01\"",
            &["cluster.node[0].mac", "02:53:50:00:00:01", "not node.mac"],
        ),
        (
            "unknown key",
            "redirect_vni = 4242",
            "redirect_vni = 4242\nvni = 3",
            &["vni"],
        ),
    ];
    for (description, from, to, expected) in cases {
        let text = format!("{}{}", common::BASE_CONFIG, CLUSTER.replacen(from, to, 1));
        let error = match text.parse::<Config>() {
            Ok(_) => panic!("{description}: config was accepted"),
            Err(error) => error.to_string(),
        };
        for fragment in *expected {
            assert!(
                error.contains(fragment),
                "{description}: message {error:?} should mention {fragment:?}"
            );
        }
    }

    // This node's own entry is never a destination, so it may carry node.mac.
    let own_mac = CLUSTER.replacen("02:53:50:00:01:01", "02:53:50:00:00:01", 1);
    format!("{}{own_mac}", common::BASE_CONFIG)
        .parse::<Config>()
        .expect("this node's entry with node.mac");

    let no_nodes = format!("{}\n[cluster]\nredirect_vni = 4242\n", common::BASE_CONFIG);
    let error = no_nodes
        .parse::<Config>()
        .expect_err("no nodes")
        .to_string();
    assert!(
        error.contains("cluster.node") && error.contains("Spike node"),
        "{error}"
    );
}

#[test]
fn messages_state_one_range() {
    let text = common::BASE_CONFIG.replace("ttl = 64", "ttl = 300");
    let error = text.parse::<Config>().expect_err("TTL 300").to_string();
    assert!(!error.contains("from 0 to 255"), "{error}");
}

#[test]
fn empty_file_is_called_empty() {
    for text in ["", "\n  \n", "# only a comment\n"] {
        let error = text.parse::<Config>().expect_err("empty").to_string();
        assert!(error.contains("the file is empty"), "{text:?}: {error}");
    }
}

#[test]
fn misspelled_section_is_named_at_its_line() {
    let text = common::BASE_CONFIG.replacen("[[service]]", "[[services]]", 1);
    let line = text[..text.find("[[services]]").unwrap()].lines().count() + 1;
    let error = text
        .parse::<Config>()
        .expect_err("unknown section")
        .to_string();
    assert!(
        error.starts_with(&format!(
            "line {line}, column 3: services: unknown section `services`, expected one of"
        )),
        "{error}"
    );
}

#[test]
fn single_bracket_arrays_are_named() {
    let base = common::BASE_CONFIG;
    let first = base.find("[[service]]").unwrap();
    let first_line = base[..first].lines().count() + 1;
    let backend = base.find("[[service.backend]]").unwrap();
    let backend_line = base[..backend].lines().count() + 1;
    // (description, text, line of the header to report, its name)
    let cases = [
        (
            "every service",
            base.replace("[[service]]", "[service]"),
            first_line,
            "service",
        ),
        (
            "the first of several services",
            base.replacen("[[service]]", "[service]", 1),
            first_line,
            "service",
        ),
        (
            "the second service",
            format!(
                "{}{}",
                &base[..first + 1],
                base[first + 1..].replacen("[[service]]", "[service]", 1)
            ),
            base[..first + 1 + base[first + 1..].find("[[service]]").unwrap()]
                .lines()
                .count()
                + 1,
            "service",
        ),
        (
            "a backend",
            base.replacen("[[service.backend]]", "[service.backend]", 1),
            backend_line,
            "service.backend",
        ),
    ];
    for (description, text, line, name) in cases {
        let error = text.parse::<Config>().expect_err(description).to_string();
        let place = format!("line {line}, column 2: {name}: ");
        assert!(error.starts_with(&place), "{description}: {place}: {error}");
        assert!(
            error.contains(&format!("write [[{name}]] (two brackets)")),
            "{description}: {error}"
        );
    }
}

#[test]
fn missing_keys_get_an_example_line() {
    // (removed line, error after the place)
    let cases = [
        (
            "key = \"00112233445566778899aabbccddeeff\"\n",
            "hash: missing field `key`: add a line such as key = \"",
        ),
        (
            "vtep_mac = \"0a:58:0a:f4:00:0a\"\n",
            "service[0] (web).backend[0]: missing field `vtep_mac`: add a line such as \
             vtep_mac = \"0a:58:0a:f4:00:0a\" to this [[service.backend]] table",
        ),
        (
            "protocol = \"tcp\"\n",
            "service[0] (web): missing field `protocol`: add a line such as protocol = \"tcp\" \
             to this [[service]] table",
        ),
    ];
    for (line, expected) in cases {
        let text = common::BASE_CONFIG.replacen(line, "", 1);
        let error = text.parse::<Config>().expect_err(line).to_string();
        assert!(
            error.contains(&format!(": {expected}")),
            "{expected}: {error}"
        );
    }
    let without_hash = common::BASE_CONFIG.replacen(
        "[hash]\nkey = \"00112233445566778899aabbccddeeff\"\n",
        "",
        1,
    );
    let error = without_hash
        .parse::<Config>()
        .expect_err("no [hash]")
        .to_string();
    assert!(
        error.contains("missing field `hash`: add a [hash] table with a line such as key = \""),
        "{error}"
    );
}

#[test]
fn syntax_errors_name_key_path() {
    // (from, to, lines from the start of `to` to the error, message after the place)
    let cases = [
        (
            "vip = \"198.51.100.10\"",
            "vip = 198.51.100.10",
            0,
            "service[0] (web).vip: expected newline",
        ),
        (
            "address = \"192.0.2.12\"",
            "address = 192.0.2.12",
            0,
            "service[0] (web).backend[1].address: expected newline",
        ),
        (
            "mtu = 1500",
            "mtu = 1500 x",
            0,
            "node.mtu: expected newline",
        ),
        (
            "name = \"node-b\"\n",
            "name = \"node-b\"\nweight = [\n",
            2,
            "service[0] (web).backend[1].weight: invalid array",
        ),
        (
            "[[service]]\nname = \"dns\"",
            "[[service]\nname = \"dns\"",
            0,
            "service[1] (dns): invalid table header",
        ),
    ];
    for (from, to, lines_after, message) in cases {
        let text = common::BASE_CONFIG.replacen(from, to, 1);
        let error = text.parse::<Config>().expect_err(to).to_string();
        let line = text[..text.find(to).unwrap()].lines().count() + 1 + lines_after;
        let place = format!("line {line}, column ");
        assert!(error.starts_with(&place), "{to}: {place}: {error}");
        assert!(error.contains(&format!(": {message}")), "{to}: {error}");
    }
}

#[test]
fn unquoted_address_gets_quotes_hint() {
    let text =
        common::BASE_CONFIG.replacen("mac = \"02:53:50:00:00:01\"", "mac = 02:53:50:00:00:01", 1);
    let error = text
        .parse::<Config>()
        .expect_err("unquoted MAC")
        .to_string();
    assert!(error.contains("node.mac: "), "{error}");
    assert!(
        error.ends_with("write the address or MAC as a string in quotes, \"02:53:50:00:00:01\""),
        "{error}"
    );
}

/// Writes `text` to a file of its own in the temporary directory.
fn write_temporary(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("spike-config-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write a temporary config");
    path
}

#[test]
fn load_errors_name_file_position() {
    let cases = [
        ("mtu = 1500", "mtu = 600", "node.mtu: invalid value 600"),
        ("mtu = 1500", "mtu = \"big\"", "node.mtu: invalid type"),
        ("mtu = 1500", "mtu = 1500 x", "expected newline"),
    ];
    for (index, (from, to, message)) in cases.into_iter().enumerate() {
        let text = common::BASE_CONFIG.replacen(from, to, 1);
        let offset = text.find(to).unwrap();
        let line = text[..offset].lines().count() + 1;
        let path = write_temporary(&format!("load-{index}.toml"), &text);
        let error = Config::load(&path).expect_err(to).to_string();
        std::fs::remove_file(&path).ok();
        let place = format!("{}:{line}:", path.display());
        assert!(error.starts_with(&place), "{place}: {error}");
        assert!(error.contains(message), "{message}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[test]
fn oversized_files_are_rejected() {
    let limit = spike_core::config::MAX_FILE_BYTES as usize;
    let padding = "#".repeat(limit);
    let path = write_temporary("large.toml", &format!("{}{padding}\n", common::BASE_CONFIG));
    let error = Config::load(&path)
        .expect_err("a file above the limit")
        .to_string();
    std::fs::remove_file(&path).ok();
    let expected = format!("{}: the file is larger than {limit} bytes", path.display());
    assert!(error.starts_with(&expected), "{error}");

    // A file of exactly the limit is read.
    let fill = limit - common::BASE_CONFIG.len() - 1;
    let text = format!("{}{}\n", common::BASE_CONFIG, "#".repeat(fill));
    let path = write_temporary("limit.toml", &text);
    let loaded = Config::load(&path);
    std::fs::remove_file(&path).ok();
    loaded.expect("a file of exactly the limit");
}

/// A FIFO has no size to check beforehand: the read itself must stop. The writer
/// offers twice the limit, so that a reader without the limit still ends.
#[test]
fn oversized_fifo_is_rejected() {
    let path = std::env::temp_dir().join(format!("spike-config-{}-fifo", std::process::id()));
    std::fs::remove_file(&path).ok();
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(writer_path)
            .expect("open the FIFO");
        let chunk = vec![b'#'; 64 * 1024];
        for _ in 0..(2 * spike_core::config::MAX_FILE_BYTES as usize / chunk.len()) {
            // The reader closes its end at the limit.
            if fifo.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let error = Config::load(&path)
        .expect_err("an endless FIFO")
        .to_string();
    writer.join().expect("the writer ends");
    std::fs::remove_file(&path).ok();
    assert!(error.contains("the file is larger than"), "{error}");
}

#[test]
fn example_key_and_empty_services_warn() {
    let config: Config = common::BASE_CONFIG.parse().unwrap();
    assert_eq!(config.warnings(), Vec::<String>::new());

    let text = common::BASE_CONFIG.replace(
        "00112233445566778899aabbccddeeff",
        "8f2d6c1e4b7a90355ce1d2f3a4b5c6d7",
    );
    let warnings = text.parse::<Config>().unwrap().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("example key"), "{warnings:?}");

    let text = format!(
        "{}\n[[service]]\nname = \"empty\"\nvip = \"198.51.100.99\"\nprotocol = \"tcp\"\n\
         port = 80\n",
        common::BASE_CONFIG
    );
    let warnings = text.parse::<Config>().unwrap().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("(empty) has no [[service.backend]]"),
        "{warnings:?}"
    );
}

#[test]
fn zero_weight_services_warn() {
    // Every backend of the first service, web, gets weight 0.
    let text = common::BASE_CONFIG;
    let (head, services) = text.split_at(text.find("[[service]]").unwrap());
    let (web, rest) = services.split_at(services.find("name = \"dns\"").unwrap());
    let web = web.replace("vtep_mac = ", "weight = 0\nvtep_mac = ");
    let drained = format!("{head}{web}{rest}");
    let warnings = drained.parse::<Config>().unwrap().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("service[0] (web) has only backends of weight 0"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("dropped"), "{warnings:?}");

    // One backend with a weight keeps the service's traffic flowing.
    let one_left = drained.replacen("weight = 0\n", "", 1);
    assert_eq!(
        one_left.parse::<Config>().unwrap().warnings(),
        Vec::<String>::new()
    );
}

#[test]
fn services_beside_snapshot_ring_warn() {
    let ring = "\n[dpdk]\nport = \"net_null0\"\nsnapshot_ring = \"/dev/shm/spike-ring\"\n";
    let text = format!("{}{ring}", common::BASE_CONFIG);
    let warnings = text.parse::<Config>().unwrap().warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("the 5 [[service]] tables of this file serve only until"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("dpdk.snapshot_ring"), "{warnings:?}");

    let (head, _) = common::BASE_CONFIG.split_at(common::BASE_CONFIG.find("[[service]]").unwrap());
    let warnings = format!("{head}{ring}")
        .parse::<Config>()
        .unwrap()
        .warnings();
    assert_eq!(warnings, Vec::<String>::new());
}

#[test]
fn dpdk_lcores_and_ring_path() {
    let dpdk = |settings: &str| {
        format!(
            "{}\n[dpdk]\nport = \"net_null0\"\n{settings}\n",
            common::BASE_CONFIG
        )
        .parse::<Config>()
        .map_err(|error| error.to_string())
    };
    let accepted = [
        "eal_args = [\"-l\", \"0,1\"]\nworkers = 1",
        "eal_args = [\"-l\", \"0-2\"]\nworkers = 2",
        "eal_args = [\"-l0-2\"]\nworkers = 2",
        "eal_args = [\"--lcores=0,3,4\"]\nworkers = 2",
        "eal_args = [\"-c\", \"0x7\"]\nworkers = 2",
        // Without a list, EAL takes every CPU: only the running EAL can count them.
        "eal_args = [\"--no-huge\"]\nworkers = 4\nmbufs = 32768",
        "snapshot_ring = \"/dev/shm/spike-ring\"",
    ];
    for settings in accepted {
        dpdk(settings).unwrap_or_else(|error| panic!("{settings}: {error}"));
    }
    // spike-dataplane, not this crate, checks the lcore count against dpdk.workers.
    let error = dpdk("snapshot_ring = \"spike-ring\"").expect_err("relative ring path");
    assert!(
        error.contains("dpdk.snapshot_ring: invalid value spike-ring"),
        "{error}"
    );
    // Leaving the key out means no ring, so an empty string is an unset template variable.
    let error = dpdk("snapshot_ring = \"\"").expect_err("empty ring path");
    assert!(
        error.contains("dpdk.snapshot_ring: invalid value \"\": expected the absolute path"),
        "{error}"
    );
}

#[test]
fn control_characters_are_escaped() {
    // (description, from, to, the value as the message must show it)
    let cases = [
        (
            "service name with CR LF",
            "name = \"sticky\"",
            "name = \"a\\r\\nb\"",
            "invalid value \"a\\r\\nb\"",
        ),
        (
            "backend name with NUL and DEL",
            "name = \"node-b\"",
            "name = \"b\\u0000\\u007f\"",
            "invalid value \"b\\0\\u{7f}\"",
        ),
        (
            "kernel port equal to the port, with a line feed",
            "[icmp]",
            "[dpdk]\nport = \"net\\n0\"\nkernel_port = \"net\\n0\"\n\n[icmp]",
            "dpdk.kernel_port: invalid value \"net\\n0\"",
        ),
        (
            "relative ring path with a line feed",
            "[icmp]",
            "[dpdk]\nport = \"net_null0\"\nsnapshot_ring = \"ring\\nx\"\n\n[icmp]",
            "dpdk.snapshot_ring: invalid value ring\\nx: expected",
        ),
    ];
    for (description, from, to, shown) in cases {
        assert!(common::BASE_CONFIG.contains(from), "{description}");
        let text = common::BASE_CONFIG.replacen(from, to, 1);
        let error = text.parse::<Config>().expect_err(description).to_string();
        assert!(
            !error.contains(['\r', '\n', '\0']),
            "{description}: {error:?}"
        );
        assert!(error.contains(shown), "{description}: {error}");
    }
    assert_eq!(
        spike_core::config::escape_controls("tab\there\u{85}"),
        "tab\\there\\u{85}"
    );
}

#[test]
fn unslotted_backends_are_named() {
    // web's first backend outweighs the two others so far that their shares of the
    // 65537 slots are 0.07 each.
    let text = common::BASE_CONFIG.replacen(
        "name = \"node-a\"\n",
        "name = \"node-a\"\nweight = 1000000\n",
        1,
    );
    let config: Config = text.parse().expect("the weights are valid");
    let snapshot = Snapshot::build(&config, 1).expect("the snapshot builds");
    let unslotted = snapshot.unslotted_backends();
    let names: Vec<(&str, &str)> = unslotted
        .iter()
        .map(|found| (found.service.as_str(), found.backend.as_str()))
        .collect();
    assert_eq!(names, [("web", "node-b"), ("web", "node-c")]);
    let message = unslotted[0].to_string();
    for fragment in [
        "service web: backend node-b has weight 1 but none of the 65537 Maglev slots",
        "sum to 1000002",
        "0.07 slots",
        "table_size to a prime of at least 1000002",
        "lower the ratio of the largest weight to the smallest",
    ] {
        assert!(message.contains(fragment), "{fragment}: {message}");
    }

    // Beyond the largest table, only a narrower weight ratio helps.
    let text = common::BASE_CONFIG.replacen(
        "name = \"node-a\"\n",
        "name = \"node-a\"\nweight = 4000000000\n",
        1,
    );
    let snapshot = Snapshot::build(&text.parse().unwrap(), 1).unwrap();
    let message = snapshot.unslotted_backends()[0].to_string();
    assert!(
        message.contains("above the largest table_size, 16777213"),
        "{message}"
    );

    let snapshot = Snapshot::build(&common::BASE_CONFIG.parse().unwrap(), 1).unwrap();
    assert_eq!(snapshot.unslotted_backends(), []);
}
