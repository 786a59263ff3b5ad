//! JSON objects as the API server returns them, with apiVersion and kind.

use serde_json::{json, Value};

pub const NAMESPACE: &str = "web";

/// Builds a LoadBalancer Service `web/<name>` with one unnamed TCP port 80 on `lb_ip`.
pub fn service(name: &str, lb_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "namespace": NAMESPACE, "name": name, "labels": { "spike": "yes" } },
        "spec": { "type": "LoadBalancer", "ports": [{ "port": 80, "targetPort": 8080 }] },
        "status": { "loadBalancer": { "ingress": [{ "ip": lb_ip }] } },
    })
}

/// Builds an EndpointSlice of `service` for the unnamed port.
pub fn slice(name: &str, service: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": NAMESPACE,
            "name": name,
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "ports": [{ "port": 8080, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

/// Builds a ready endpoint of pod `pod` on `node`. Every such endpoint has the same address,
/// because discovery distinguishes endpoints by their targetRef.
pub fn ready(pod: &str, node: &str) -> Value {
    json!({
        "addresses": ["10.244.0.10"],
        "conditions": { "ready": true, "serving": true, "terminating": false },
        "nodeName": node,
        "targetRef": { "kind": "Pod", "namespace": NAMESPACE, "name": pod, "uid": format!("uid-{pod}") },
    })
}

/// Builds node `node-<n>` at 192.0.2.<n> with VtepMAC 02:00:00:00:00:<n>, annotated as flannel's
/// VXLAN backend does.
pub fn node(n: u8) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": format!("node-{n}"),
            "annotations": {
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/public-ip": format!("192.0.2.{n}"),
                "flannel.alpha.coreos.com/backend-data":
                    format!(r#"{{"VNI":1,"VtepMAC":"02:00:00:00:00:{n:02x}"}}"#),
            },
        },
        "spec": { "podCIDR": format!("10.244.{n}.0/24") },
    })
}
