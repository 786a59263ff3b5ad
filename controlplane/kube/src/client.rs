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
/// The [`KubeconfigError`] that [`connect`] would fail with for these reasons.
pub fn check_kubeconfig(path: &Path, context: Option<&str>) -> Result<(), KubeconfigError> {
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
    if cluster.server.is_none() {
        return Err(KubeconfigError::MissingClusterUrl);
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
}
