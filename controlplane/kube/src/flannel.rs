//! Reading a node's VXLAN identity from the annotations that flannel's VXLAN backend
//! publishes on each Node: `flannel.alpha.coreos.com/public-ip` (the underlay address) and
//! `flannel.alpha.coreos.com/backend-data` (JSON `{"VNI":1,"VtepMAC":"..."}`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use spike_core::wire::MacAddr;

use crate::model::SkipReason;

/// Annotation with the node's underlay address.
pub const PUBLIC_IP_ANNOTATION: &str = "flannel.alpha.coreos.com/public-ip";
/// Annotation with the JSON backend data, which contains the VTEP MAC for VXLAN.
pub const BACKEND_DATA_ANNOTATION: &str = "flannel.alpha.coreos.com/backend-data";
/// Annotation with flannel's backend name; Spike needs `vxlan`.
pub const BACKEND_TYPE_ANNOTATION: &str = "flannel.alpha.coreos.com/backend-type";

/// Destination of a node's traffic: the outer IP destination and the inner Ethernet
/// destination that its `flannel.1` device accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeUnderlay {
    pub underlay_ip: IpAddr,
    pub vtep_mac: MacAddr,
}

/// flannel's VXLAN backend data. Other keys (`VNI`) are ignored.
#[derive(Deserialize)]
struct BackendData {
    #[serde(rename = "VtepMAC")]
    vtep_mac: Option<String>,
}

/// Reads the underlay address and VTEP MAC from a node's annotations.
///
/// # Errors
///
/// The [`SkipReason`] to report when an annotation is missing or malformed, when the
/// backend type is set to something other than `vxlan`, or when the VTEP MAC is all zeros
/// or a group address, which no `flannel.1` device uses.
pub fn node_underlay(annotations: &BTreeMap<String, String>) -> Result<NodeUnderlay, SkipReason> {
    if let Some(backend) = annotations.get(BACKEND_TYPE_ANNOTATION) {
        if backend != "vxlan" {
            return Err(SkipReason::NotVxlan {
                backend: backend.clone(),
            });
        }
    }

    let public_ip = annotations
        .get(PUBLIC_IP_ANNOTATION)
        .ok_or(SkipReason::MissingPublicIp)?;
    let underlay_ip =
        public_ip
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| SkipReason::InvalidPublicIp {
                value: public_ip.clone(),
            })?;

    let backend_data = annotations
        .get(BACKEND_DATA_ANNOTATION)
        .ok_or(SkipReason::MissingBackendData)?;
    let vtep_mac = parse_vtep_mac(backend_data)?;

    Ok(NodeUnderlay {
        underlay_ip,
        vtep_mac,
    })
}

fn parse_vtep_mac(backend_data: &str) -> Result<MacAddr, SkipReason> {
    let invalid = |problem: String| SkipReason::InvalidBackendData {
        value: backend_data.to_owned(),
        problem,
    };

    let data: BackendData =
        serde_json::from_str(backend_data).map_err(|error| invalid(error.to_string()))?;
    let text = data
        .vtep_mac
        .ok_or_else(|| invalid("no VtepMAC key".to_owned()))?;
    let mac: MacAddr = text.parse().map_err(|error| invalid(format!("{error}")))?;

    if mac == MacAddr::default() || mac.is_multicast() {
        return Err(invalid(format!("VtepMAC {mac} is not a unicast address")));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    const DATA: &str = r#"{"VNI":1,"VtepMAC":"aa:bb:cc:00:11:22"}"#;

    #[test]
    fn complete_annotations_parse() {
        let found = node_underlay(&annotations(&[
            (PUBLIC_IP_ANNOTATION, "192.0.2.7"),
            (BACKEND_DATA_ANNOTATION, DATA),
            (BACKEND_TYPE_ANNOTATION, "vxlan"),
        ]))
        .unwrap();

        assert_eq!(found.underlay_ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            found.vtep_mac,
            MacAddr([0xaa, 0xbb, 0xcc, 0x00, 0x11, 0x22])
        );
    }

    #[test]
    fn each_defect_has_its_reason() {
        let ip = (PUBLIC_IP_ANNOTATION, "192.0.2.7");
        let data = (BACKEND_DATA_ANNOTATION, DATA);
        let cases: [(&[(&str, &str)], &str); 8] = [
            (&[data], "missing public-ip"),
            (
                &[(PUBLIC_IP_ANNOTATION, "node-a"), data],
                "invalid public-ip",
            ),
            (&[ip], "missing backend-data"),
            (
                &[ip, (BACKEND_DATA_ANNOTATION, "{")],
                "backend-data not JSON",
            ),
            (
                &[ip, (BACKEND_DATA_ANNOTATION, r#"{"VNI":1}"#)],
                "no VtepMAC",
            ),
            (
                &[ip, (BACKEND_DATA_ANNOTATION, r#"{"VtepMAC":"aa:bb"}"#)],
                "short MAC",
            ),
            (
                &[
                    ip,
                    (
                        BACKEND_DATA_ANNOTATION,
                        r#"{"VtepMAC":"01:00:5e:00:00:01"}"#,
                    ),
                ],
                "multicast MAC",
            ),
            (
                &[ip, data, (BACKEND_TYPE_ANNOTATION, "host-gw")],
                "host-gw backend",
            ),
        ];

        for (pairs, case) in cases {
            let result = node_underlay(&annotations(pairs));
            let reason = result.expect_err(case);
            let expected = match case {
                "missing public-ip" => matches!(reason, SkipReason::MissingPublicIp),
                "invalid public-ip" => matches!(reason, SkipReason::InvalidPublicIp { .. }),
                "missing backend-data" => matches!(reason, SkipReason::MissingBackendData),
                "host-gw backend" => matches!(reason, SkipReason::NotVxlan { .. }),
                _ => matches!(reason, SkipReason::InvalidBackendData { .. }),
            };
            assert!(expected, "{case}: {reason:?}");
        }
    }
}
