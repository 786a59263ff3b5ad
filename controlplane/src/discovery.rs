//! Discovery sources: the origins of services and backends.
//!
//! A [`Discovery`] source runs as a task and sends its complete, current service set
//! whenever it changes. The control plane merges the sets of all sources (the static
//! source first, then the others in name order), builds a snapshot and publishes it.
//! Sources must not send a set before it is complete (the static source waits for one
//! round of health checks, Kubernetes discovery for the first list of Services,
//! EndpointSlices and Nodes). The control plane publishes its first snapshot only once
//! every source has sent one, so that a restarted control plane rebuilds the snapshot
//! the dataplane already runs instead of publishing a part of it.
//!
//! [`StaticSource`] reads services from the config file and drops backends whose health
//! checks fail. `KubernetesSource`, in the `kubernetes` module, is the other
//! implementation: it turns spike-kube's model of EndpointSlices and Nodes into services.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use spike_core::config::ServiceConfig;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::ControlConfig;
use crate::health::{self, Health};

/// A complete service set from one source.
#[derive(Debug)]
pub struct SourceUpdate {
    pub source: &'static str,
    pub services: Vec<ServiceConfig>,
}

/// A source of services. `run` returns a future that runs until it is dropped,
/// sending a [`SourceUpdate`] after each change.
pub trait Discovery: Send {
    fn name(&self) -> &'static str;

    fn run(
        self: Box<Self>,
        updates: mpsc::Sender<SourceUpdate>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Labels of per-backend metrics.
pub type BackendLabels = [(&'static str, String); 2];

/// Backend states kept across reloads, keyed by service name and backend address, so a
/// reload with unchanged checks does not reset a backend to unknown.
pub type HealthMemory = Arc<Mutex<HashMap<(String, IpAddr), bool>>>;

/// Services from the config file, filtered by health checks.
pub struct StaticSource {
    config: Arc<ControlConfig>,
    memory: HealthMemory,
    health_gauge: Family<BackendLabels, Gauge>,
}

impl StaticSource {
    pub fn new(
        config: Arc<ControlConfig>,
        memory: HealthMemory,
        health_gauge: Family<BackendLabels, Gauge>,
    ) -> StaticSource {
        StaticSource {
            config,
            memory,
            health_gauge,
        }
    }
}

/// One check result: service index, backend index and the result.
type CheckResult = (usize, usize, Result<(), String>);

impl Discovery for StaticSource {
    fn name(&self) -> &'static str {
        "static"
    }

    fn run(
        self: Box<Self>,
        updates: mpsc::Sender<SourceUpdate>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { self.run_checks(updates).await })
    }
}

impl StaticSource {
    async fn run_checks(self, updates: mpsc::Sender<SourceUpdate>) {
        let mut states = self.initial_states();
        let (results_tx, mut results) = mpsc::channel::<CheckResult>(256);
        // Dropping the set (when this future is dropped) aborts every check task.
        let mut checks = JoinSet::new();
        for (service_index, check) in self.config.health_checks.iter().enumerate() {
            let Some(check) = check else { continue };
            for (backend_index, &address) in self.config.health_addresses[service_index]
                .iter()
                .enumerate()
            {
                let check = check.clone();
                let results_tx = results_tx.clone();
                checks.spawn(async move {
                    let mut ticker = tokio::time::interval(check.interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticker.tick().await;
                        let result = health::check(&check, address).await;
                        if results_tx
                            .send((service_index, backend_index, result))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        }
        drop(results_tx);

        let mut sent = false;
        if states.iter().flatten().all(|health| health.up.is_some()) {
            sent = self.send(&states, &updates).await;
        }
        while let Some((service_index, backend_index, result)) = results.recv().await {
            let Some(check) = &self.config.health_checks[service_index] else {
                continue;
            };
            let health = &mut states[service_index][backend_index];
            let changed = health.record(result.is_ok(), check);
            if changed {
                self.log_change(service_index, backend_index, health.up, &result);
            }
            let all_known = states.iter().flatten().all(|health| health.up.is_some());
            if all_known && (changed || !sent) {
                sent = self.send(&states, &updates).await;
            }
        }
        // Without checks there is nothing more to report; stay pending so that the
        // caller's select loop treats this source as running until it is replaced.
        std::future::pending::<()>().await;
    }

    fn initial_states(&self) -> Vec<Vec<Health>> {
        let memory = self
            .memory
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.config
            .base
            .services
            .iter()
            .zip(&self.config.health_checks)
            .map(|(service, check)| {
                service
                    .backends
                    .iter()
                    .map(|backend| match check {
                        None => Health::known(true),
                        Some(_) => memory
                            .get(&(service.name.clone(), backend.address))
                            .map_or_else(Health::default, |&up| Health::known(up)),
                    })
                    .collect()
            })
            .collect()
    }

    fn log_change(
        &self,
        service_index: usize,
        backend_index: usize,
        up: Option<bool>,
        result: &Result<(), String>,
    ) {
        let service = &self.config.base.services[service_index];
        let backend = &service.backends[backend_index];
        match (up, result) {
            (Some(true), _) => info!(
                service = %service.name,
                backend = %backend.name,
                "backend is up"
            ),
            (_, Err(reason)) => warn!(
                service = %service.name,
                backend = %backend.name,
                reason = %reason,
                "backend is down"
            ),
            (_, Ok(())) => {}
        }
    }

    /// Records the states and sends the healthy service set. Returns false when the
    /// receiver is gone.
    async fn send(&self, states: &[Vec<Health>], updates: &mpsc::Sender<SourceUpdate>) -> bool {
        let mut services = Vec::with_capacity(states.len());
        {
            let mut memory = self
                .memory
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            for (service, health) in self.config.base.services.iter().zip(states) {
                let mut healthy = service.clone();
                healthy.backends.clear();
                for (backend, health) in service.backends.iter().zip(health) {
                    let up = health.up == Some(true);
                    memory.insert((service.name.clone(), backend.address), up);
                    let labels = [
                        ("service", service.name.clone()),
                        ("backend", backend.name.clone()),
                    ];
                    self.health_gauge.get_or_create(&labels).set(i64::from(up));
                    if up {
                        healthy.backends.push(backend.clone());
                    }
                }
                services.push(healthy);
            }
        }
        updates
            .send(SourceUpdate {
                source: self.name(),
                services,
            })
            .await
            .is_ok()
    }
}
