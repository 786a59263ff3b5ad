//! Shared pieces of the integration tests: a simulated API server, object builders and a
//! bounded wait for the next model.

#![allow(dead_code)]

pub mod api_server;
pub mod objects;

use std::sync::Arc;
use std::time::Duration;

use spike_kube::{Discovery, DiscoveryReceiver};
use tokio::time::Instant;

/// Waits until the published model satisfies `accept` and returns it. Panics with the
/// last model seen after `timeout`.
pub async fn wait_for_model(
    models: &mut DiscoveryReceiver,
    timeout: Duration,
    accept: impl Fn(&Discovery) -> bool,
) -> Arc<Discovery> {
    let deadline = Instant::now() + timeout;

    loop {
        let current = models.borrow_and_update().clone();
        if let Some(model) = current.as_ref().filter(|model| accept(model)) {
            return Arc::clone(model);
        }

        let changed = tokio::time::timeout_at(deadline, models.changed()).await;
        match changed {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the watcher stopped; last model: {current:#?}"),
            Err(_) => panic!("no matching model within {timeout:?}; last model: {current:#?}"),
        }
    }
}
