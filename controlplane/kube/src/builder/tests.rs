use std::collections::BTreeMap;

use serde_json::{json, Value};
use spike_core::wire::MacAddr;

use super::*;
use crate::flannel::{BACKEND_DATA_ANNOTATION, PUBLIC_IP_ANNOTATION};

fn service(name: &str, labels: Value, lb_ips: &[&str], ports: Value) -> Service {
    let ingress: Vec<Value> = lb_ips.iter().map(|ip| json!({ "ip": ip })).collect();
    serde_json::from_value(json!({
        "metadata": { "namespace": "web", "name": name, "labels": labels },
        "spec": { "type": "LoadBalancer", "ports": ports },
        "status": { "loadBalancer": { "ingress": ingress } },
    }))
    .unwrap()
}

/// Builds a Service `web/<name>` with one unnamed TCP port 80 on `lb_ip`.
fn http_service(name: &str, lb_ip: &str) -> Service {
    service(
        name,
        json!({}),
        &[lb_ip],
        json!([{ "port": 80, "targetPort": 8080 }]),
    )
}

fn slice(name: &str, service: &str, ports: Value, endpoints: Vec<Value>) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "namespace": "web",
            "name": name,
            "labels": { SERVICE_NAME_LABEL: service },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// Builds a slice of `service` whose endpoints serve the unnamed port.
fn unnamed_slice(name: &str, service: &str, endpoints: Vec<Value>) -> EndpointSlice {
    slice(
        name,
        service,
        json!([{ "port": 8080, "protocol": "TCP" }]),
        endpoints,
    )
}

/// Builds a pod endpoint with the given conditions. `None` leaves a condition out.
fn endpoint(
    pod: &str,
    node: &str,
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> Value {
    let mut conditions = serde_json::Map::new();
    for (key, value) in [
        ("ready", ready),
        ("serving", serving),
        ("terminating", terminating),
    ] {
        if let Some(value) = value {
            conditions.insert(key.to_owned(), json!(value));
        }
    }
    json!({
        "addresses": [format!("10.244.0.{}", pod.len())],
        "conditions": conditions,
        "nodeName": node,
        "targetRef": { "kind": "Pod", "namespace": "web", "name": pod, "uid": format!("uid-{pod}") },
    })
}

fn ready(pod: &str, node: &str) -> Value {
    endpoint(pod, node, Some(true), Some(true), Some(false))
}

fn terminating(pod: &str, node: &str) -> Value {
    endpoint(pod, node, Some(false), Some(true), Some(true))
}

fn node_with(name: &str, annotations: Value) -> Node {
    serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
    }))
    .unwrap()
}

/// Builds a node named `node-<n>` at 192.0.2.<n> with VtepMAC 02:00:00:00:00:<n>.
fn node(n: u8) -> Node {
    node_with(
        &format!("node-{n}"),
        json!({
            PUBLIC_IP_ANNOTATION: format!("192.0.2.{n}"),
            BACKEND_DATA_ANNOTATION: format!(r#"{{"VNI":1,"VtepMAC":"02:00:00:00:00:{n:02x}"}}"#),
        }),
    )
}

fn by_ip(ips: &[&str]) -> Selection {
    Selection {
        load_balancer_ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ..Selection::default()
    }
}

fn by_label(key: &str, value: &str) -> Selection {
    Selection {
        match_labels: BTreeMap::from([(key.to_owned(), value.to_owned())]),
        ..Selection::default()
    }
}

fn build(
    selection: &Selection,
    services: &[Service],
    slices: &[EndpointSlice],
    nodes: &[Node],
) -> Discovery {
    build_discovery(selection, services, slices, nodes)
}

/// Node name and weight of each backend of the only virtual service.
fn weights(discovery: &Discovery) -> Vec<(String, u32)> {
    assert_eq!(discovery.services.len(), 1, "{discovery:#?}");
    discovery.services[0]
        .backends
        .iter()
        .map(|backend| (backend.node.clone(), backend.weight))
        .collect()
}

fn pairs(expected: &[(&str, u32)]) -> Vec<(String, u32)> {
    expected
        .iter()
        .map(|(node, weight)| (node.to_string(), *weight))
        .collect()
}

#[test]
fn ready_endpoints_become_weighted_nodes() {
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![
            ready("p1", "node-1"),
            ready("p2", "node-1"),
            ready("p3", "node-2"),
        ],
    )];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1), node(2)],
    );

    let virtual_service = &discovery.services[0];
    assert_eq!(
        virtual_service.vip,
        "203.0.113.1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(virtual_service.protocol, Protocol::Tcp);
    assert_eq!(virtual_service.port, 80);
    assert_eq!(virtual_service.port_name, None);
    assert!(!virtual_service.serving_terminating_only);
    assert_eq!(weights(&discovery), pairs(&[("node-1", 2), ("node-2", 1)]));

    let first = &virtual_service.backends[0];
    assert_eq!(first.underlay_ip, "192.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(first.vtep_mac, MacAddr([2, 0, 0, 0, 0, 1]));
    assert!(discovery.skipped_nodes.is_empty());
    assert_eq!(discovery.endpoints_without_node, 0);
}

#[test]
fn split_slices_are_merged() {
    let slices = [
        unnamed_slice(
            "a-1",
            "a",
            vec![ready("p1", "node-1"), ready("p2", "node-2")],
        ),
        unnamed_slice("a-2", "a", vec![ready("p3", "node-1")]),
        unnamed_slice("other-1", "other", vec![ready("q1", "node-2")]),
    ];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1), node(2)],
    );

    assert_eq!(weights(&discovery), pairs(&[("node-1", 2), ("node-2", 1)]));
}

#[test]
fn duplicated_endpoint_counts_once() {
    // The same pod in two slices, as during a slice update, and once more in an IPv6
    // slice with another address, as for a dual-stack Service.
    let mut ipv6 = ready("p1", "node-1");
    ipv6["addresses"] = json!(["fd00::1"]);
    let slices = [
        unnamed_slice(
            "a-1",
            "a",
            vec![ready("p1", "node-1"), ready("p2", "node-1")],
        ),
        unnamed_slice("a-2", "a", vec![ready("p1", "node-1")]),
        unnamed_slice("a-3", "a", vec![ipv6]),
    ];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1)],
    );

    assert_eq!(weights(&discovery), pairs(&[("node-1", 2)]));
}

#[test]
fn duplicate_keeps_best_condition() {
    // One slice still shows the pod not ready while the other already shows it ready.
    let slices = [
        unnamed_slice(
            "a-1",
            "a",
            vec![endpoint("p1", "node-1", Some(false), None, None)],
        ),
        unnamed_slice("a-2", "a", vec![ready("p1", "node-1")]),
    ];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1)],
    );

    assert_eq!(weights(&discovery), pairs(&[("node-1", 1)]));
}

#[test]
fn absent_conditions_count_as_ready() {
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![endpoint("p1", "node-1", None, None, None)],
    )];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1)],
    );

    assert_eq!(weights(&discovery), pairs(&[("node-1", 1)]));
}

#[test]
fn endpoint_without_target_is_keyed_by_addresses() {
    let mut anonymous = ready("p1", "node-1");
    anonymous.as_object_mut().unwrap().remove("targetRef");
    let slices = [
        unnamed_slice("a-1", "a", vec![anonymous.clone()]),
        unnamed_slice("a-2", "a", vec![anonymous]),
    ];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1)],
    );

    assert_eq!(weights(&discovery), pairs(&[("node-1", 1)]));
}

#[test]
fn terminating_nodes_drain_with_weight_zero() {
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![
            ready("p1", "node-1"),
            terminating("p2", "node-1"),
            terminating("p3", "node-2"),
        ],
    )];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1), node(2)],
    );

    assert_eq!(weights(&discovery), pairs(&[("node-1", 1), ("node-2", 0)]));
    let backends = &discovery.services[0].backends;
    assert!(!backends[0].is_draining());
    assert_eq!(backends[0].terminating_endpoints, 1);
    assert!(backends[1].is_draining());
    assert_eq!(backends[1].terminating_endpoints, 1);
    assert!(!discovery.services[0].serving_terminating_only);
}

#[test]
fn terminating_serve_when_nothing_else_does() {
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![
            terminating("p1", "node-1"),
            terminating("p2", "node-1"),
            terminating("p3", "node-2"),
            endpoint("p4", "node-3", Some(false), Some(false), Some(false)),
        ],
    )];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1), node(2), node(3)],
    );

    assert_eq!(weights(&discovery), pairs(&[("node-1", 2), ("node-2", 1)]));
    assert!(discovery.services[0].serving_terminating_only);
}

#[test]
fn terminating_not_serving_is_ignored() {
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![endpoint(
            "p1",
            "node-1",
            Some(false),
            Some(false),
            Some(true),
        )],
    )];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1)],
    );

    assert_eq!(weights(&discovery), pairs(&[]));
    assert!(!discovery.services[0].serving_terminating_only);
}

#[test]
fn empty_service_has_no_backends() {
    let services = [http_service("a", "203.0.113.1")];
    let nodes = [node(1)];

    let no_slices = build(&by_ip(&["203.0.113.1"]), &services, &[], &nodes);
    assert_eq!(weights(&no_slices), pairs(&[]));

    let empty_slice = [unnamed_slice("a-1", "a", vec![])];
    let empty = build(&by_ip(&["203.0.113.1"]), &services, &empty_slice, &nodes);
    assert_eq!(weights(&empty), pairs(&[]));

    let returned = [unnamed_slice("a-1", "a", vec![ready("p1", "node-1")])];
    let recovered = build(&by_ip(&["203.0.113.1"]), &services, &returned, &nodes);
    assert_eq!(weights(&recovered), pairs(&[("node-1", 1)]));
}

#[test]
fn node_without_vtep_mac_is_skipped_once() {
    let broken = node_with(
        "node-2",
        json!({
            PUBLIC_IP_ANNOTATION: "192.0.2.2",
            BACKEND_DATA_ANNOTATION: r#"{"VNI":1}"#,
        }),
    );
    let services = [
        http_service("a", "203.0.113.1"),
        http_service("b", "203.0.113.2"),
    ];
    let slices = [
        unnamed_slice(
            "a-1",
            "a",
            vec![ready("p1", "node-1"), ready("p2", "node-2")],
        ),
        unnamed_slice("b-1", "b", vec![ready("q1", "node-2")]),
    ];
    let discovery = build(
        &by_ip(&["203.0.113.1", "203.0.113.2"]),
        &services,
        &slices,
        &[node(1), broken],
    );

    assert_eq!(discovery.services.len(), 2);
    let a: Vec<&str> = discovery.services[0]
        .backends
        .iter()
        .map(|b| b.node.as_str())
        .collect();
    assert_eq!(a, ["node-1"]);
    assert!(discovery.services[1].backends.is_empty());
    assert_eq!(discovery.skipped_nodes.len(), 1);
    assert_eq!(discovery.skipped_nodes[0].node, "node-2");
    let reason = &discovery.skipped_nodes[0].reason;
    assert!(
        matches!(reason, SkipReason::InvalidBackendData { .. }),
        "{reason:?}"
    );
}

#[test]
fn node_with_malformed_annotations_is_skipped() {
    let cases = [
        (
            json!({ BACKEND_DATA_ANNOTATION: r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}"# }),
            "missing_public_ip",
        ),
        (
            json!({ PUBLIC_IP_ANNOTATION: "192.0.2.2" }),
            "missing_backend_data",
        ),
        (
            json!({ PUBLIC_IP_ANNOTATION: "192.0.2.2", BACKEND_DATA_ANNOTATION: r#"{"VtepMAC":"zz"}"# }),
            "invalid_backend_data",
        ),
        (json!(null), "missing_public_ip"),
    ];
    let services = [http_service("a", "203.0.113.1")];
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![ready("p1", "node-1"), ready("p2", "node-2")],
    )];

    for (annotations, label) in cases {
        let nodes = [node(1), node_with("node-2", annotations)];
        let discovery = build(&by_ip(&["203.0.113.1"]), &services, &slices, &nodes);

        assert_eq!(weights(&discovery), pairs(&[("node-1", 1)]), "{label}");
        assert_eq!(discovery.skipped_nodes.len(), 1, "{label}");
        assert_eq!(discovery.skipped_nodes[0].reason.metric_label(), label);
    }
}

#[test]
fn removed_node_is_skipped() {
    let services = [http_service("a", "203.0.113.1")];
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![ready("p1", "node-1"), ready("p2", "node-2")],
    )];

    let before = build(
        &by_ip(&["203.0.113.1"]),
        &services,
        &slices,
        &[node(1), node(2)],
    );
    assert_eq!(weights(&before), pairs(&[("node-1", 1), ("node-2", 1)]));

    let after = build(&by_ip(&["203.0.113.1"]), &services, &slices, &[node(1)]);
    assert_eq!(weights(&after), pairs(&[("node-1", 1)]));
    let expected = vec![SkippedNode {
        node: "node-2".into(),
        reason: SkipReason::NodeNotFound,
    }];
    assert_eq!(after.skipped_nodes, expected);
}

#[test]
fn skipped_node_does_not_block_terminating_fallback() {
    // The only ready endpoint is on a node without annotations, so the terminating
    // endpoints on a usable node keep serving.
    let services = [http_service("a", "203.0.113.1")];
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![ready("p1", "node-9"), terminating("p2", "node-1")],
    )];
    let discovery = build(&by_ip(&["203.0.113.1"]), &services, &slices, &[node(1)]);

    assert_eq!(weights(&discovery), pairs(&[("node-1", 1)]));
    assert!(discovery.services[0].serving_terminating_only);
}

#[test]
fn endpoints_without_node_are_counted() {
    let mut unplaced = ready("p2", "x");
    unplaced.as_object_mut().unwrap().remove("nodeName");
    let services = [http_service("a", "203.0.113.1")];
    let slices = [unnamed_slice(
        "a-1",
        "a",
        vec![ready("p1", "node-1"), unplaced],
    )];
    let discovery = build(&by_ip(&["203.0.113.1"]), &services, &slices, &[node(1)]);

    assert_eq!(weights(&discovery), pairs(&[("node-1", 1)]));
    assert_eq!(discovery.endpoints_without_node, 1);
}

#[test]
fn selection_by_label_takes_every_ip() {
    let labelled = service(
        "a",
        json!({ "spike": "yes" }),
        &["203.0.113.1", "203.0.113.9"],
        json!([{ "port": 80 }]),
    );
    let unlabelled = http_service("b", "203.0.113.2");
    let discovery = build(&by_label("spike", "yes"), &[labelled, unlabelled], &[], &[]);

    let vips: Vec<String> = discovery
        .services
        .iter()
        .map(|s| s.vip.to_string())
        .collect();
    assert_eq!(vips, ["203.0.113.1", "203.0.113.9"]);
    assert!(discovery.services.iter().all(|s| s.service.name == "a"));
}

#[test]
fn selection_by_ip_takes_listed_ips() {
    let two_ips = service(
        "a",
        json!({}),
        &["203.0.113.1", "203.0.113.9"],
        json!([{ "port": 80 }]),
    );
    let other = http_service("b", "203.0.113.2");
    let pending = service("c", json!({}), &[], json!([{ "port": 80 }]));
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[two_ips, other, pending],
        &[],
        &[],
    );

    let vips: Vec<String> = discovery
        .services
        .iter()
        .map(|s| s.vip.to_string())
        .collect();
    assert_eq!(vips, ["203.0.113.1"]);
    assert_eq!(discovery.services[0].service.name, "a");
}

#[test]
fn selection_by_label_and_ip_needs_both() {
    let labelled = service(
        "a",
        json!({ "spike": "yes" }),
        &["203.0.113.1"],
        json!([{ "port": 80 }]),
    );
    let labelled_elsewhere = service(
        "b",
        json!({ "spike": "yes" }),
        &["203.0.113.2"],
        json!([{ "port": 80 }]),
    );
    let unlabelled = http_service("c", "203.0.113.1");
    let mut selection = by_label("spike", "yes");
    selection.load_balancer_ips = by_ip(&["203.0.113.1"]).load_balancer_ips;

    let discovery = build(
        &selection,
        &[labelled, labelled_elsewhere, unlabelled],
        &[],
        &[],
    );

    let names: Vec<&str> = discovery
        .services
        .iter()
        .map(|s| s.service.name.as_str())
        .collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn selection_respects_namespace() {
    let selection = Selection {
        namespace: Some("other".into()),
        ..by_ip(&["203.0.113.1"])
    };
    let discovery = build(&selection, &[http_service("a", "203.0.113.1")], &[], &[]);

    assert!(discovery.services.is_empty());
}

#[test]
fn named_ports_use_their_own_slices() {
    let two_ports = service(
        "a",
        json!({}),
        &["203.0.113.1"],
        json!([
            { "name": "http", "port": 80 },
            { "name": "dns", "port": 53, "protocol": "UDP" },
        ]),
    );
    // Pods on node-2 lack the container port behind "dns", so they sit in a slice with
    // only "http".
    let slices = [
        slice(
            "a-1",
            "a",
            json!([{ "name": "http", "port": 8080 }, { "name": "dns", "port": 5353 }]),
            vec![ready("p1", "node-1")],
        ),
        slice(
            "a-2",
            "a",
            json!([{ "name": "http", "port": 8080 }]),
            vec![ready("p2", "node-2")],
        ),
    ];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[two_ports],
        &slices,
        &[node(1), node(2)],
    );

    // Sorted by protocol number: TCP (6) before UDP (17).
    assert_eq!(discovery.services.len(), 2);
    let dns = &discovery.services[1];
    assert_eq!((dns.protocol, dns.port), (Protocol::Udp, 53));
    assert_eq!(dns.port_name.as_deref(), Some("dns"));
    let dns_nodes: Vec<&str> = dns.backends.iter().map(|b| b.node.as_str()).collect();
    assert_eq!(dns_nodes, ["node-1"]);

    let http = &discovery.services[0];
    assert_eq!((http.protocol, http.port), (Protocol::Tcp, 80));
    let http_nodes: Vec<&str> = http.backends.iter().map(|b| b.node.as_str()).collect();
    assert_eq!(http_nodes, ["node-1", "node-2"]);
}

#[test]
fn slice_without_ports_serves_nothing() {
    let slices = [slice("a-1", "a", json!(null), vec![ready("p1", "node-1")])];
    let discovery = build(
        &by_ip(&["203.0.113.1"]),
        &[http_service("a", "203.0.113.1")],
        &slices,
        &[node(1)],
    );

    assert_eq!(weights(&discovery), pairs(&[]));
}

#[test]
fn sctp_port_is_skipped() {
    let sctp = service(
        "a",
        json!({}),
        &["203.0.113.1"],
        json!([{ "name": "sig", "port": 3868, "protocol": "SCTP" }, { "name": "web", "port": 80 }]),
    );
    let discovery = build(&by_ip(&["203.0.113.1"]), &[sctp], &[], &[]);

    assert_eq!(discovery.services.len(), 1);
    assert_eq!(discovery.services[0].port, 80);
    assert_eq!(discovery.skipped_ports.len(), 1);
    let skipped = &discovery.skipped_ports[0];
    assert_eq!(skipped.port, 3868);
    let reason = &skipped.reason;
    assert!(
        matches!(reason, PortSkipReason::UnsupportedProtocol { .. }),
        "{reason:?}"
    );
}

#[test]
fn shared_vip_port_goes_to_first_service() {
    let services = [
        http_service("b", "203.0.113.1"),
        http_service("a", "203.0.113.1"),
    ];
    let discovery = build(&by_ip(&["203.0.113.1"]), &services, &[], &[]);

    assert_eq!(discovery.services.len(), 1);
    assert_eq!(discovery.services[0].service.name, "a");
    assert_eq!(discovery.skipped_ports.len(), 1);
    assert_eq!(discovery.skipped_ports[0].service.name, "b");
    let reason = &discovery.skipped_ports[0].reason;
    assert!(
        matches!(reason, PortSkipReason::VipConflict { .. }),
        "{reason:?}"
    );
}

#[test]
fn input_order_does_not_matter() {
    let services = [
        http_service("a", "203.0.113.1"),
        http_service("b", "203.0.113.2"),
    ];
    let slices = [
        unnamed_slice(
            "a-1",
            "a",
            vec![ready("p1", "node-1"), terminating("p2", "node-2")],
        ),
        unnamed_slice(
            "b-1",
            "b",
            vec![ready("q1", "node-2"), ready("q2", "node-3")],
        ),
    ];
    let nodes = [node(1), node(2), node(3)];
    let selection = by_ip(&["203.0.113.1", "203.0.113.2"]);

    let forward = build(&selection, &services, &slices, &nodes);
    let reverse = build_discovery(
        &selection,
        services.iter().rev(),
        slices.iter().rev(),
        nodes.iter().rev(),
    );

    assert_eq!(forward, reverse);
}
