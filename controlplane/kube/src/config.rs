//! Configuration of Kubernetes discovery: which API server to talk to and which Services
//! Spike serves.
//!
//! The raw types deserialize with `deny_unknown_fields`, so a misspelt key is an error
//! instead of a silently ignored setting. [`ServiceSelector::validate`] turns the selector
//! into a [`Selection`], the form the model builder and the watcher use.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The `[kubernetes]` table of the control plane's configuration.
///
/// ```toml
/// [kubernetes]
/// namespace = "web"               # optional: all namespaces when absent
///
/// [kubernetes.api_server]
/// mode = "kubeconfig"             # or "in_cluster", or "url"
/// path = "/etc/spike/kubeconfig"
///
/// [kubernetes.services]
/// match_labels = { "spike.example/serve" = "true" }
/// load_balancer_ips = ["203.0.113.10"]
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    pub api_server: ApiServerConfig,
    /// Namespace whose Services are served; `None` serves matching Services of every
    /// namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    pub services: ServiceSelector,
}

/// How to reach the Kubernetes API server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiServerConfig {
    /// The service account token and CA that Kubernetes mounts into a pod, with the
    /// address from `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`. It has no
    /// fields; the braces let serde reject stray keys, which it ignores for unit variants.
    InCluster {},
    /// A kubeconfig file, with its current context unless `context` names another.
    Kubeconfig {
        path: PathBuf,
        #[serde(default)]
        context: Option<String>,
    },
    /// A plain URL with no credentials, such as `http://127.0.0.1:8001` from `kubectl proxy`
    /// or a test server.
    Url { url: String },
}

/// The Services that Spike serves.
///
/// Each criterion that is set must match: with both set, a Service is served only if it
/// carries every label in `match_labels` and has a LoadBalancer IP in `load_balancer_ips`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSelector {
    /// Labels that a served Service must carry, with these exact values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// LoadBalancer IPs (from the Service's `status.loadBalancer.ingress`) that Spike serves.
    /// When set, only these IPs become VIPs, even if a Service has more.
    #[serde(default)]
    pub load_balancer_ips: Vec<IpAddr>,
}

/// Error in the `[kubernetes]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Neither criterion is set, which would serve nothing.
    #[error("kubernetes.services selects no Service: set match_labels, load_balancer_ips or both")]
    EmptySelector,
    /// A label key or value that cannot appear in a Kubernetes label selector.
    #[error(
        "invalid label {key:?}={value:?} in kubernetes.services.match_labels: {reason}; \
         use a Kubernetes label key and value (letters, digits, '-', '_', '.', and one '/' \
         in the key)"
    )]
    InvalidLabel {
        key: String,
        value: String,
        reason: &'static str,
    },
    /// An empty namespace name, which would otherwise mean "all namespaces" by accident.
    #[error("kubernetes.namespace is empty: remove the key to serve every namespace")]
    EmptyNamespace,
    /// A `url` mode value that is not an absolute http or https URL with a host.
    #[error(
        "invalid API server URL {url:?} in kubernetes.api_server.url: {reason}; write it \
         like http://127.0.0.1:8001"
    )]
    InvalidUrl { url: String, reason: String },
}

/// A validated [`ServiceSelector`] with the namespace it applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub namespace: Option<String>,
    pub match_labels: BTreeMap<String, String>,
    /// Empty when Services are not selected by LoadBalancer IP.
    pub load_balancer_ips: BTreeSet<IpAddr>,
}

impl KubernetesConfig {
    /// Checks the selector and namespace and returns the [`Selection`] they describe.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the selector is empty, a label cannot be used in a label
    /// selector, the namespace is an empty string or the `url` mode's URL is invalid.
    pub fn selection(&self) -> Result<Selection, ConfigError> {
        if self.namespace.as_deref() == Some("") {
            return Err(ConfigError::EmptyNamespace);
        }
        if let ApiServerConfig::Url { url } = &self.api_server {
            check_url(url)?;
        }

        let mut selection = self.services.validate()?;
        selection.namespace.clone_from(&self.namespace);
        Ok(selection)
    }
}

/// Checks that `url` is an absolute http or https URL with a host. The client would
/// otherwise fail on every connection attempt, long after the config was accepted.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(invalid(format!("scheme {other:?} is not http or https"))),
        None => return Err(invalid("it has no http:// or https:// scheme".to_owned())),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    Ok(())
}

impl ServiceSelector {
    /// Checks the criteria and returns them as a [`Selection`] for every namespace.
    ///
    /// # Errors
    ///
    /// [`ConfigError::EmptySelector`] when no criterion is set and
    /// [`ConfigError::InvalidLabel`] for a label that a selector cannot express.
    pub fn validate(&self) -> Result<Selection, ConfigError> {
        if self.match_labels.is_empty() && self.load_balancer_ips.is_empty() {
            return Err(ConfigError::EmptySelector);
        }

        for (key, value) in &self.match_labels {
            check_label(key, value)?;
        }

        Ok(Selection {
            namespace: None,
            match_labels: self.match_labels.clone(),
            load_balancer_ips: self.load_balancer_ips.iter().copied().collect(),
        })
    }
}

impl Selection {
    /// Formats `match_labels` as a label selector for list and watch requests
    /// (`key1=value1,key2=value2`), or `None` when no label is required.
    pub fn label_selector(&self) -> Option<String> {
        if self.match_labels.is_empty() {
            return None;
        }

        let terms: Vec<String> = self
            .match_labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        Some(terms.join(","))
    }

    /// Checks the namespace and labels of a Service against this selection. The
    /// LoadBalancer IP criterion applies per IP, in [`Selection::serves_ip`].
    pub fn matches_labels(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        if let Some(wanted) = &self.namespace {
            if wanted != namespace {
                return false;
            }
        }

        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
    }

    /// Checks whether `ip` may become a VIP under this selection.
    pub fn serves_ip(&self, ip: IpAddr) -> bool {
        self.load_balancer_ips.is_empty() || self.load_balancer_ips.contains(&ip)
    }
}

/// Checks that a label can be written into a selector string unchanged. This is a subset
/// of the API server's own validation: it rejects what would change the selector's meaning
/// (separators, operators, spaces) and leaves length limits to the server.
fn check_label(key: &str, value: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidLabel {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    };

    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.is_empty() {
        return Err(invalid("the key has no name"));
    }
    if prefix == Some("") {
        return Err(invalid("the key's prefix before '/' is empty"));
    }

    let key_chars_ok = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !key_chars_ok || name.contains('/') {
        return Err(invalid(
            "the key contains a character that labels do not allow",
        ));
    }

    let value_chars_ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !value_chars_ok {
        return Err(invalid(
            "the value contains a character that labels do not allow",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KubernetesConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn kubeconfig_mode_parses() {
        let config = parse(
            r#"
            namespace = "web"
            [api_server]
            mode = "kubeconfig"
            path = "/etc/spike/kubeconfig"
            context = "prod"
            [services]
            match_labels = { "spike.example/serve" = "true" }
            "#,
        )
        .unwrap();

        let expected = ApiServerConfig::Kubeconfig {
            path: "/etc/spike/kubeconfig".into(),
            context: Some("prod".into()),
        };
        assert_eq!(config.api_server, expected);
        let selection = config.selection().unwrap();
        assert_eq!(selection.namespace.as_deref(), Some("web"));
        assert_eq!(
            selection.label_selector().as_deref(),
            Some("spike.example/serve=true")
        );
        assert!(selection.load_balancer_ips.is_empty());
    }

    #[test]
    fn in_cluster_and_url_modes_parse() {
        let in_cluster = parse(
            "[api_server]\nmode = \"in_cluster\"\n[services]\nload_balancer_ips = [\"10.0.0.1\"]",
        )
        .unwrap();
        assert_eq!(in_cluster.api_server, ApiServerConfig::InCluster {});

        let url = parse(
            "[api_server]\nmode = \"url\"\nurl = \"http://127.0.0.1:8001\"\n\
             [services]\nload_balancer_ips = [\"10.0.0.1\"]",
        )
        .unwrap();
        let expected = ApiServerConfig::Url {
            url: "http://127.0.0.1:8001".into(),
        };
        assert_eq!(url.api_server, expected);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let top = parse(
            "colour = 1\n[api_server]\nmode = \"in_cluster\"\n\
             [services]\nload_balancer_ips = [\"10.0.0.1\"]",
        );
        assert!(top.is_err());

        let in_mode = parse(
            "[api_server]\nmode = \"in_cluster\"\npath = \"/x\"\n\
             [services]\nload_balancer_ips = [\"10.0.0.1\"]",
        );
        assert!(in_mode.is_err());

        let in_services =
            parse("[api_server]\nmode = \"in_cluster\"\n[services]\nlabels = { a = \"b\" }");
        assert!(in_services.is_err());
    }

    #[test]
    fn empty_selector_is_rejected() {
        let config = parse("[api_server]\nmode = \"in_cluster\"\n[services]\n").unwrap();
        assert_eq!(config.selection(), Err(ConfigError::EmptySelector));
    }

    #[test]
    fn empty_namespace_is_rejected() {
        let config = parse(
            "namespace = \"\"\n[api_server]\nmode = \"in_cluster\"\n\
             [services]\nload_balancer_ips = [\"10.0.0.1\"]",
        )
        .unwrap();
        assert_eq!(config.selection(), Err(ConfigError::EmptyNamespace));
    }

    #[test]
    fn invalid_url_is_rejected() {
        let cases = [
            ("not a url", "invalid uri character"),
            ("127.0.0.1:8001", "no http:// or https:// scheme"),
            (
                "ftp://127.0.0.1:8001",
                "scheme \"ftp\" is not http or https",
            ),
            ("/api", "no http:// or https:// scheme"),
        ];
        for (url, reason) in cases {
            let config = parse(&format!(
                "[api_server]\nmode = \"url\"\nurl = {url:?}\n\
                 [services]\nload_balancer_ips = [\"10.0.0.1\"]"
            ))
            .unwrap();
            let error = config.selection().unwrap_err();
            assert!(
                matches!(&error, ConfigError::InvalidUrl { url: got, .. } if got == url),
                "{url}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("kubernetes.api_server.url"), "{message}");
            assert!(message.contains(reason), "{url}: {message}");
        }
        let https = parse(
            "[api_server]\nmode = \"url\"\nurl = \"https://k8s.example:6443/\"\n\
             [services]\nload_balancer_ips = [\"10.0.0.1\"]",
        )
        .unwrap();
        assert!(https.selection().is_ok());
    }

    #[test]
    fn labels_that_break_selectors_are_rejected() {
        let cases = [
            ("app", "a,b", "comma in value"),
            ("app", "a b", "space in value"),
            ("app!", "x", "operator in key"),
            ("/app", "x", "empty prefix"),
            ("a/b/c", "x", "two slashes"),
            ("example.com/", "x", "empty name"),
        ];
        for (key, value, case) in cases {
            let selector = ServiceSelector {
                match_labels: BTreeMap::from([(key.to_owned(), value.to_owned())]),
                load_balancer_ips: Vec::new(),
            };
            let result = selector.validate();
            assert!(
                matches!(result, Err(ConfigError::InvalidLabel { .. })),
                "{case}: {result:?}"
            );
        }
    }

    #[test]
    fn label_selector_joins_terms() {
        let selector = ServiceSelector {
            match_labels: BTreeMap::from([
                ("tier".to_owned(), "edge".to_owned()),
                ("app".to_owned(), "web".to_owned()),
            ]),
            load_balancer_ips: Vec::new(),
        };
        let selection = selector.validate().unwrap();
        assert_eq!(
            selection.label_selector().as_deref(),
            Some("app=web,tier=edge")
        );
    }

    #[test]
    fn namespace_restricts_matches() {
        let selection = Selection {
            namespace: Some("web".into()),
            ..Selection::default()
        };
        assert!(selection.matches_labels("web", &BTreeMap::new()));
        assert!(!selection.matches_labels("other", &BTreeMap::new()));
    }
}
