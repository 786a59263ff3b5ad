//! The discovery watcher against a simulated Kubernetes API server.
//!
//! No real API server can run here: none can be installed from the reachable package
//! registries, and the options that exist download binaries at run time or need Docker.
//! So these tests run the real kube client and kube-runtime watcher over HTTP against
//! `support::api_server`, a loopback server of this crate that speaks list and watch. It
//! covers resourceVersion, chunked `watch=true` JSON events, BOOKMARK, and an ERROR 410
//! Gone inside the watch stream that forces a re-list.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use spike_kube::{
    connect, ApiServerConfig, Discovery, DiscoveryReceiver, DiscoveryWatcher, ResourceKind,
    Selection, SkipReason, WatchCounters,
};
use tokio::task::JoinHandle;

use support::api_server::{FakeApiServer, Kind};
use support::objects::{node, ready, service, slice, NAMESPACE};
use support::wait_for_model;

/// Maximum wait for one expected model. A watch error delays the next poll by up to
/// kube-runtime's first backoff step (0.8 s), so this leaves ample margin.
const MODEL_TIMEOUT: Duration = Duration::from_secs(10);

struct Harness {
    server: FakeApiServer,
    models: DiscoveryReceiver,
    counters: Arc<WatchCounters>,
    task: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Services labelled `spike=yes` in namespace `web`.
fn selection() -> Selection {
    Selection {
        namespace: Some(NAMESPACE.to_owned()),
        match_labels: [("spike".to_owned(), "yes".to_owned())].into(),
        ..Selection::default()
    }
}

/// Starts the watcher on `server` for [`selection`].
async fn start(server: FakeApiServer) -> Harness {
    let api_server = ApiServerConfig::Url { url: server.url() };
    let client = connect(&api_server).await.unwrap();
    let watcher = DiscoveryWatcher::new(client, selection());
    let counters = watcher.counters();
    let (updates, models) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(watcher.run(updates));

    Harness {
        server,
        models,
        counters,
        task,
    }
}

/// Starts a server with Service `web/a` on 203.0.113.1, two ready pods on node-1 and nodes 1
/// and 2.
async fn two_node_cluster() -> FakeApiServer {
    let server = FakeApiServer::start().await;
    server.apply(service("a", "203.0.113.1"));
    server.apply(slice(
        "a-1",
        "a",
        vec![ready("p1", "node-1"), ready("p2", "node-1")],
    ));
    server.apply(node(1));
    server.apply(node(2));
    server
}

/// Node name and weight of each backend of the only virtual service.
fn weights(model: &Discovery) -> Vec<(String, u32)> {
    assert_eq!(model.services.len(), 1, "{model:#?}");
    model.services[0]
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

fn has_weights(expected: &[(&str, u32)]) -> impl Fn(&Discovery) -> bool {
    let expected = pairs(expected);
    move |model| model.services.len() == 1 && weights(model) == expected
}

#[tokio::test]
async fn initial_list_gives_model() {
    let mut harness = start(two_node_cluster().await).await;

    let model = wait_for_model(&mut harness.models, MODEL_TIMEOUT, |_| true).await;

    assert_eq!(weights(&model), pairs(&[("node-1", 2)]));
    let virtual_service = &model.services[0];
    assert_eq!(virtual_service.vip.to_string(), "203.0.113.1");
    assert_eq!(virtual_service.port, 80);
    assert_eq!(
        virtual_service.backends[0].underlay_ip.to_string(),
        "192.0.2.1"
    );
    assert_eq!(
        virtual_service.backends[0].vtep_mac.to_string(),
        "02:00:00:00:00:01"
    );
    assert!(model.skipped_nodes.is_empty());

    let requests = harness.server.requests();
    let service_list = requests
        .iter()
        .find(|request| request.kind == Some(Kind::Service) && !request.watch)
        .expect("no Service list request");
    assert_eq!(
        service_list.query.get("labelSelector").map(String::as_str),
        Some("spike=yes")
    );
    let slice_list = requests
        .iter()
        .find(|request| request.kind == Some(Kind::EndpointSlice) && !request.watch)
        .expect("no EndpointSlice list request");
    assert_eq!(
        slice_list.query.get("labelSelector").map(String::as_str),
        Some("kubernetes.io/service-name")
    );
}

#[tokio::test]
async fn added_endpoint_updates_model() {
    let mut harness = start(two_node_cluster().await).await;
    wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-1", 2)]),
    )
    .await;

    harness.server.apply(slice(
        "a-1",
        "a",
        vec![
            ready("p1", "node-1"),
            ready("p2", "node-1"),
            ready("p3", "node-2"),
        ],
    ));

    let expected = [("node-1", 2), ("node-2", 1)];
    wait_for_model(&mut harness.models, MODEL_TIMEOUT, has_weights(&expected)).await;
    let slice_events = harness.counters.kind(ResourceKind::EndpointSlices);
    assert!(slice_events.events.load(Ordering::Relaxed) >= 2);
    assert_eq!(slice_events.errors.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn removed_annotation_skips_node() {
    let server = two_node_cluster().await;
    server.apply(slice("a-2", "a", vec![ready("p3", "node-2")]));
    let mut harness = start(server).await;
    let both = [("node-1", 2), ("node-2", 1)];
    wait_for_model(&mut harness.models, MODEL_TIMEOUT, has_weights(&both)).await;

    let mut bare = node(2);
    bare["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("flannel.alpha.coreos.com/backend-data");
    harness.server.apply(bare);

    let model = wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-1", 2)]),
    )
    .await;
    assert_eq!(model.skipped_nodes.len(), 1);
    assert_eq!(model.skipped_nodes[0].node, "node-2");
    assert_eq!(
        model.skipped_nodes[0].reason,
        SkipReason::MissingBackendData
    );
}

#[tokio::test]
async fn deleted_node_is_skipped() {
    let server = two_node_cluster().await;
    server.apply(slice("a-2", "a", vec![ready("p3", "node-2")]));
    let mut harness = start(server).await;
    let both = [("node-1", 2), ("node-2", 1)];
    wait_for_model(&mut harness.models, MODEL_TIMEOUT, has_weights(&both)).await;

    harness.server.delete(Kind::Node, None, "node-2");

    let model = wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-1", 2)]),
    )
    .await;
    assert_eq!(model.skipped_nodes.len(), 1);
    assert_eq!(model.skipped_nodes[0].reason, SkipReason::NodeNotFound);
}

#[tokio::test]
async fn in_stream_gone_relists() {
    let mut harness = start(two_node_cluster().await).await;
    wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-1", 2)]),
    )
    .await;

    // The change reaches no watch, as if its event had been compacted away; only the
    // re-list that the 410 forces can show it.
    harness.server.apply_silently(slice(
        "a-1",
        "a",
        vec![ready("p1", "node-1"), ready("p3", "node-2")],
    ));
    harness.server.expire_watches(Kind::EndpointSlice);

    let expected = [("node-1", 1), ("node-2", 1)];
    wait_for_model(&mut harness.models, MODEL_TIMEOUT, has_weights(&expected)).await;
    let slice_counters = harness.counters.kind(ResourceKind::EndpointSlices);
    assert_eq!(slice_counters.errors.load(Ordering::Relaxed), 1);
    assert_eq!(slice_counters.lists.load(Ordering::Relaxed), 2);

    // The watch that follows the re-list delivers live events again.
    harness
        .server
        .apply(slice("a-1", "a", vec![ready("p3", "node-2")]));
    wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-2", 1)]),
    )
    .await;
    let service_counters = harness.counters.kind(ResourceKind::Services);
    assert_eq!(service_counters.lists.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn watch_resumes_from_bookmark() {
    let mut harness = start(two_node_cluster().await).await;
    wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-1", 2)]),
    )
    .await;

    // Changes to other kinds move the resourceVersion past what the Service watch saw,
    // and the bookmark reports the new version.
    harness.server.apply(node(3));
    harness.server.apply(node(4));
    let bookmarked = harness.server.resource_version();
    harness.server.send_bookmarks();
    tokio::time::sleep(Duration::from_millis(200)).await;
    harness.server.end_watches(Kind::Service);

    let deadline = tokio::time::Instant::now() + MODEL_TIMEOUT;
    while harness.server.open_watches(Kind::Service) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Service watch did not restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let service_watches: Vec<_> = harness
        .server
        .requests()
        .into_iter()
        .filter(|request| request.kind == Some(Kind::Service) && request.watch)
        .collect();
    assert_eq!(service_watches.len(), 2);
    let resumed_from = service_watches[1].query.get("resourceVersion").cloned();
    assert_eq!(resumed_from, Some(bookmarked.to_string()));
    assert_eq!(
        harness
            .counters
            .kind(ResourceKind::Services)
            .lists
            .load(Ordering::Relaxed),
        1
    );

    // The resumed watch still delivers events.
    harness.server.apply(service("b", "203.0.113.2"));
    let model = wait_for_model(&mut harness.models, MODEL_TIMEOUT, |model| {
        model.services.len() == 2
    })
    .await;
    assert!(model.services[1].backends.is_empty());
}

#[tokio::test]
async fn empty_service_recovers() {
    let mut harness = start(two_node_cluster().await).await;
    wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-1", 2)]),
    )
    .await;

    harness
        .server
        .delete(Kind::EndpointSlice, Some(NAMESPACE), "a-1");
    wait_for_model(&mut harness.models, MODEL_TIMEOUT, has_weights(&[])).await;

    harness
        .server
        .apply(slice("a-1", "a", vec![ready("p9", "node-2")]));
    wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-2", 1)]),
    )
    .await;
}

#[tokio::test]
async fn failed_lists_are_retried() {
    let server = two_node_cluster().await;
    server.fail_lists(Kind::Node, 2);
    let mut harness = start(server).await;

    wait_for_model(
        &mut harness.models,
        MODEL_TIMEOUT,
        has_weights(&[("node-1", 2)]),
    )
    .await;

    let node_counters = harness.counters.kind(ResourceKind::Nodes);
    assert_eq!(node_counters.errors.load(Ordering::Relaxed), 2);
    assert_eq!(harness.counters.models_published.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn watcher_stops_without_receivers() {
    let server = two_node_cluster().await;
    let client = connect(&ApiServerConfig::Url { url: server.url() })
        .await
        .unwrap();
    let watcher = DiscoveryWatcher::new(client, selection());
    let (updates, mut models) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(watcher.run(updates));
    wait_for_model(&mut models, MODEL_TIMEOUT, |_| true).await;

    drop(models);

    let finished = tokio::time::timeout(MODEL_TIMEOUT, task).await;
    finished.expect("the watcher kept running").unwrap();
}
