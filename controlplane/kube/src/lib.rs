//! Kubernetes discovery for Spike: which VIPs to serve and which nodes to send their flows
//! to, read from the Services Spike serves, their EndpointSlices and the Nodes' flannel
//! annotations.
//!
//! The crate has a pure part and a watching part:
//!
//! - [`build_discovery`] turns observed objects into a [`Discovery`]: one
//!   [`VirtualService`] per served VIP, protocol and port, whose backends are nodes
//!   weighted by their ready endpoints, plus the nodes and ports it had to skip and why.
//! - [`DiscoveryWatcher`] mirrors the three kinds with kube-runtime reflectors and sends a
//!   new [`Discovery`] on a `tokio::sync::watch` channel whenever it changes. Watch errors
//!   and re-lists after 410 Gone are logged and counted, never fatal.
//!
//! A binary that links this crate chooses the Kubernetes API version by enabling one
//! `k8s-openapi` version feature, such as `v1_33`. This library enables none, because
//! k8s-openapi requires that of libraries.
//!
//! ```no_run
//! # async fn run(config: spike_kube::KubernetesConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let selection = config.selection()?;
//! let client = spike_kube::connect(&config.api_server).await?;
//! let watcher = spike_kube::DiscoveryWatcher::new(client, selection);
//! let counters = watcher.counters();
//! let (updates, mut models) = tokio::sync::watch::channel(None);
//! tokio::spawn(watcher.run(updates));
//!
//! while models.changed().await.is_ok() {
//!     let model = models.borrow_and_update().clone();
//!     if let Some(model) = model {
//!         for skipped in &model.skipped_nodes {
//!             eprintln!("node {} skipped: {}", skipped.node, skipped.reason);
//!         }
//!     }
//! }
//! # drop(counters);
//! # Ok(())
//! # }
//! ```

mod builder;
mod client;
mod config;
pub mod flannel;
mod model;
mod rbac;
mod watch;

pub use builder::{build_discovery, SERVICE_NAME_LABEL};
pub use client::{
    check_kubeconfig, connect, connect_with_url, read_failure, CheckKubeconfigError, ConnectError,
};
pub use config::{ApiServerConfig, ConfigError, KubernetesConfig, Selection, ServiceSelector};
/// The error of reading a kubeconfig in [`connect`] and [`check_kubeconfig`].
pub use kube::config::KubeconfigError;
pub use model::{
    Backend, Discovery, PortSkipReason, ServiceName, SkipReason, SkippedNode, SkippedPort,
    VirtualService,
};
pub use watch::{
    DiscoveryReceiver, DiscoverySender, DiscoveryWatcher, KindCounters, ResourceKind, WatchCounters,
};
