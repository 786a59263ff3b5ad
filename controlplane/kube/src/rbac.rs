//! The Kubernetes API access that discovery needs, in the terms of an RBAC rule.
//!
//! The ClusterRole in `deploy/kubernetes/rbac.yaml` grants exactly these verbs on exactly
//! these resources, and `tests/manifests.rs` compares the two, so the manifest follows
//! the code when a kind is watched or dropped.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::Resource;

use crate::watch::ResourceKind;

impl ResourceKind {
    /// Verbs the watcher uses on every kind: a reflector lists, then watches, and never
    /// reads a single object by name.
    pub const VERBS: [&'static str; 2] = ["list", "watch"];

    /// API group of the kind as an RBAC rule names it: empty for the core group.
    pub fn api_group(self) -> &'static str {
        match self {
            ResourceKind::Services => Service::GROUP,
            ResourceKind::EndpointSlices => EndpointSlice::GROUP,
            ResourceKind::Nodes => Node::GROUP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` is also the RBAC resource name, so it must be the API's plural.
    #[test]
    fn names_match_api_types() {
        assert_eq!(ResourceKind::Services.as_str(), Service::URL_PATH_SEGMENT);
        assert_eq!(
            ResourceKind::EndpointSlices.as_str(),
            EndpointSlice::URL_PATH_SEGMENT
        );
        assert_eq!(ResourceKind::Nodes.as_str(), Node::URL_PATH_SEGMENT);
        assert_eq!(ResourceKind::EndpointSlices.api_group(), "discovery.k8s.io");
        assert_eq!(ResourceKind::Services.api_group(), "");
    }
}
