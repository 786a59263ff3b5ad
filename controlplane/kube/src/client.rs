//! Creating a kube [`Client`] from [`ApiServerConfig`].

use std::path::{Path, PathBuf};

use kube::config::{Config, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::Client;

use crate::config::ApiServerConfig;

/// Error while setting up the connection to the API server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The `url` mode's value does not parse as a URL.
    #[error(
        "invalid API server URL {url:?} in kubernetes.api_server.url: {source}; \
         write it like http://127.0.0.1:8001"
    )]
    InvalidUrl {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The kubeconfig file cannot be read or parsed.
    #[error(
        "failed to read kubeconfig {path}: {}; check kubernetes.api_server.path",
        read_failure(source)
    )]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    /// The kubeconfig file lacks the context, cluster or credentials it needs.
    #[error(
        "kubeconfig {path} is unusable: {source}; check its current context or set \
         kubernetes.api_server.context"
    )]
    LoadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    /// The process does not run in a pod, or the service account is not mounted.
    #[error(
        "in-cluster configuration is unavailable: {0}; run Spike in a pod with a service \
         account, or use mode = \"kubeconfig\""
    )]
    InCluster(#[source] kube::config::InClusterError),
    /// kube could not build its HTTP client, for example from invalid TLS material.
    #[error("failed to create the Kubernetes client: {0}; check the CA and client certificate")]
    Client(#[source] kube::Error),
}

/// The reason [`check_kubeconfig`] rejects a kubeconfig file.
#[derive(Debug, thiserror::Error)]
pub enum CheckKubeconfigError {
    /// The file cannot be read or parsed, or lacks the context, the cluster or its server.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// The cluster's server is not a URL that a connection can use.
    #[error(
        "kubeconfig {path}: cluster {cluster:?} of context {context:?} has server {server:?}, \
         which is {reason}; expected an absolute http or https URL with a host, such as \
         https://192.0.2.1:6443"
    )]
    Server {
        path: PathBuf,
        context: String,
        cluster: String,
        server: String,
        reason: String,
    },
}

/// Returns why `server` is not an absolute http or https URL with a host, or `None`
/// when it is one.
fn server_url_problem(server: &str) -> Option<String> {
    if server.trim().is_empty() {
        return Some("empty".to_owned());
    }
    let uri = match server.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(error) => return Some(format!("not a URL ({error})")),
    };
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(scheme) => return Some(format!("a URL with the scheme {scheme:?}")),
        None => return Some("a URL without a scheme".to_owned()),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => None,
        _ => Some("a URL without a host".to_owned()),
    }
}

/// Returns why a kubeconfig could not be read or used, without kube's own "failed to
/// read kubeconfig from PATH" prefix, which would repeat the path already in the message.
pub fn read_failure(error: &KubeconfigError) -> String {
    match error {
        KubeconfigError::ReadConfig(io, _) => io.to_string(),
        other => other.to_string(),
    }
}

/// Reads and parses the kubeconfig file at `path` and checks the first things a
/// connection takes from it: the context (`context`, else the file's current context),
/// that context's cluster and the cluster's server URL. It connects to nothing and reads
/// none of the files that the kubeconfig names, so a config check can run it.
///
/// # Errors
///
/// [`CheckKubeconfigError::Kubeconfig`] with the [`KubeconfigError`] that [`connect`]
/// would fail with for these reasons, or [`CheckKubeconfigError::Server`] when the
/// server is not an absolute http or https URL with a host.
pub fn check_kubeconfig(path: &Path, context: Option<&str>) -> Result<(), CheckKubeconfigError> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let name = context
        .or(kubeconfig.current_context.as_deref())
        .ok_or(KubeconfigError::CurrentContextNotSet)?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|named| named.name == name)
        .and_then(|named| named.context.as_ref())
        .ok_or_else(|| KubeconfigError::LoadContext(name.to_owned()))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|named| named.name == context.cluster)
        .and_then(|named| named.cluster.as_ref())
        .ok_or_else(|| KubeconfigError::LoadClusterOfContext(context.cluster.clone()))?;
    let Some(server) = &cluster.server else {
        return Err(KubeconfigError::MissingClusterUrl.into());
    };
    if let Some(reason) = server_url_problem(server) {
        return Err(CheckKubeconfigError::Server {
            path: path.to_owned(),
            context: name.to_owned(),
            cluster: context.cluster.clone(),
            server: server.clone(),
            reason,
        });
    }
    Ok(())
}

/// Creates a client for the configured API server. Nothing is sent until the client is
/// used. The kubeconfig mode reads the file, and the in-cluster mode reads the pod's
/// service account files and environment.
///
/// TLS goes through rustls with the ring provider, the workspace's only one. If no process
/// default provider is installed yet, this installs ring. A binary that also links
/// aws-lc-rs through another crate then still gets ring here, instead of a panic.
///
/// # Errors
///
/// [`ConnectError`] naming the setting to fix.
pub async fn connect(api_server: &ApiServerConfig) -> Result<Client, ConnectError> {
    connect_with_url(api_server).await.map(|(client, _)| client)
}

/// Like [`connect`], and also returns the API server's URL as the client will use it
/// (from the kubeconfig or the pod's environment in those modes), for log messages.
///
/// # Errors
///
/// [`ConnectError`] naming the setting to fix.
pub async fn connect_with_url(
    api_server: &ApiServerConfig,
) -> Result<(Client, String), ConnectError> {
    let config = match api_server {
        ApiServerConfig::InCluster {} => Config::incluster().map_err(ConnectError::InCluster)?,
        ApiServerConfig::Kubeconfig { path, context } => {
            kubeconfig_config(path, context.clone()).await?
        }
        ApiServerConfig::Url { url } => {
            let uri = url.parse().map_err(|source| ConnectError::InvalidUrl {
                url: url.clone(),
                source,
            })?;
            Config::new(uri)
        }
    };

    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed a provider in between, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(ConnectError::Client)?;
    Ok((client, url))
}

async fn kubeconfig_config(
    path: &PathBuf,
    context: Option<String>,
) -> Result<Config, ConnectError> {
    let kubeconfig =
        Kubeconfig::read_from(path).map_err(|source| ConnectError::ReadKubeconfig {
            path: path.clone(),
            source,
        })?;
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };

    Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|source| ConnectError::LoadKubeconfig {
            path: path.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_kubeconfig_named_once() {
        let dir = std::env::temp_dir().join(format!("spike-kube-missing-{}", std::process::id()));
        let path = dir.join("kubeconfig");
        let api_server = ApiServerConfig::Kubeconfig {
            path: path.clone(),
            context: None,
        };
        let Err(error) = connect(&api_server).await else {
            panic!(
                "a client was created from the missing kubeconfig {}",
                path.display()
            );
        };
        let message = error.to_string();
        assert_eq!(
            message,
            format!(
                "failed to read kubeconfig {}: No such file or directory (os error 2); check \
                 kubernetes.api_server.path",
                path.display()
            )
        );
    }

    #[test]
    fn server_must_be_http_url() {
        let dir = std::env::temp_dir().join(format!("spike-kube-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        let write = |server: &str| {
            let text = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    \
                 server: {server:?}\ncontexts:\n- name: ctx\n  context:\n    cluster: lab\n\
                 current-context: ctx\n"
            );
            std::fs::write(&path, text).unwrap();
        };
        for good in ["https://127.0.0.1:6443", "http://localhost:8001"] {
            write(good);
            let result = check_kubeconfig(&path, None);
            assert!(result.is_ok(), "{good}: {result:?}");
        }
        let cases = [
            ("", "which is empty"),
            ("not a url", "which is not a URL"),
            ("127.0.0.1:6443", "which is a URL without a scheme"),
            ("ftp://127.0.0.1", "which is a URL with the scheme \"ftp\""),
            ("/api", "which is a URL without a scheme"),
        ];
        for (server, reason) in cases {
            write(server);
            let Err(error) = check_kubeconfig(&path, None) else {
                panic!("server {server:?} was accepted");
            };
            let message = error.to_string();
            let start = format!(
                "kubeconfig {}: cluster \"lab\" of context \"ctx\" has server {server:?}, ",
                path.display()
            );
            assert!(message.starts_with(&start), "{message}");
            assert!(message.contains(reason), "{reason}: {message}");
            assert!(
                message.contains("expected an absolute http or https URL"),
                "{message}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
