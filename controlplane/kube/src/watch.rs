//! The watcher task: keeps Services, EndpointSlices and Nodes mirrored with kube-runtime
//! reflectors and publishes a new [`Discovery`] whenever the model changes.
//!
//! Nothing is published until all three kinds have completed their first list, so the
//! dataplane never receives a half-known cluster (for example Services whose slices have not
//! arrived, which would look empty). A re-list, after the API server ends a watch with
//! 410 Gone, fills a fresh buffer that replaces the old store only when the list is
//! complete, so models built meanwhile use the last complete state.
//!
//! Watch errors never stop the task: kube-runtime's watcher yields each error as a stream
//! item and carries on (re-listing after a 410), and the task logs it, counts it and
//! polls again after kube-runtime's default backoff (0.8 s doubling to 30 s, reset after
//! 120 s without errors).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::builder::{build_discovery, SERVICE_NAME_LABEL};
use crate::config::Selection;
use crate::model::Discovery;

/// Receiving end of the watcher's channel: `None` until the first complete model.
pub type DiscoveryReceiver = watch::Receiver<Option<Arc<Discovery>>>;

/// Sending end of the watcher's channel.
pub type DiscoverySender = watch::Sender<Option<Arc<Discovery>>>;

/// Maximum number of already-received watch items folded into one rebuild, so that a burst
/// of events (a re-list, a rollout) gives one model instead of one per object, while a
/// steady stream still publishes at least every this many items.
const MAX_ITEMS_PER_REBUILD: usize = 1024;

/// The three kinds of object that discovery watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    Services,
    EndpointSlices,
    Nodes,
}

impl ResourceKind {
    /// Every kind, in the order used by [`WatchCounters`].
    pub const ALL: [ResourceKind; 3] = [
        ResourceKind::Services,
        ResourceKind::EndpointSlices,
        ResourceKind::Nodes,
    ];

    /// Lower-case plural name, as in the API path and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Services => "services",
            ResourceKind::EndpointSlices => "endpointslices",
            ResourceKind::Nodes => "nodes",
        }
    }

    fn index(self) -> usize {
        match self {
            ResourceKind::Services => 0,
            ResourceKind::EndpointSlices => 1,
            ResourceKind::Nodes => 2,
        }
    }
}

/// Counters of one watched kind. They only grow.
#[derive(Debug, Default)]
pub struct KindCounters {
    /// Objects received: from initial lists and re-lists, and added, modified or deleted
    /// in watch events.
    pub events: AtomicU64,
    /// Errors the watcher reported, 410 Gone included.
    pub errors: AtomicU64,
    /// Lists started: the first one and every re-list.
    pub lists: AtomicU64,
}

/// Counters of the watcher task for metrics, shared with the task through an `Arc`.
#[derive(Debug, Default)]
pub struct WatchCounters {
    kinds: [KindCounters; 3],
    /// Models sent on the channel.
    pub models_published: AtomicU64,
}

impl WatchCounters {
    /// Returns the counters of one kind.
    pub fn kind(&self, kind: ResourceKind) -> &KindCounters {
        &self.kinds[kind.index()]
    }
}

/// Meaning of a watch stream item for the task.
enum Notice {
    ListStarted,
    /// An object of a list in progress, which goes to a buffer, not yet to the store.
    ListedObject,
    Listed,
    Changed,
    Failed(watcher::Error),
}

/// Watches the cluster and publishes discovery models; see the module documentation.
pub struct DiscoveryWatcher {
    client: Client,
    /// The API server's URL, named in log messages; empty when unknown.
    server: String,
    selection: Selection,
    counters: Arc<WatchCounters>,
}

impl std::fmt::Debug for DiscoveryWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryWatcher")
            .field("server", &self.server)
            .field("selection", &self.selection)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The reflector stores the models are built from.
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
}

impl DiscoveryWatcher {
    pub fn new(client: Client, selection: Selection) -> Self {
        DiscoveryWatcher {
            client,
            server: String::new(),
            selection,
            counters: Arc::default(),
        }
    }

    /// Names the API server's URL (as [`crate::connect_with_url`] returns it) in the
    /// watcher's log messages, so that a connection error names where it tried to connect.
    pub fn with_server_url(mut self, url: impl Into<String>) -> Self {
        self.server = url.into();
        self
    }

    /// Returns the counters that [`DiscoveryWatcher::run`] updates.
    pub fn counters(&self) -> Arc<WatchCounters> {
        Arc::clone(&self.counters)
    }

    /// Watches until every receiver of `updates` is dropped, sending each new model.
    ///
    /// A model is sent when it differs from the last one sent, after all three kinds have
    /// been listed once. The task keeps running through watch errors, so in practice it
    /// ends only when the receivers go away.
    pub async fn run(self, updates: DiscoverySender) {
        let (stores, mut items) = self.start_streams();
        let mut listed = [false; 3];
        let mut last: Option<Discovery> = None;
        info!(
            server = %self.server,
            selection = ?self.selection,
            "watching services, endpointslices and nodes"
        );

        loop {
            let first = tokio::select! {
                () = updates.closed() => break,
                item = items.next() => item,
            };
            let Some((kind, notice)) = first else {
                warn!("kubernetes watch streams ended; discovery stops");
                break;
            };

            let mut changed = self.handle(kind, notice, &mut listed);
            for _ in 0..MAX_ITEMS_PER_REBUILD {
                let Some(Some((kind, notice))) = items.next().now_or_never() else {
                    break;
                };
                changed |= self.handle(kind, notice, &mut listed);
            }

            if changed && listed.iter().all(|done| *done) {
                self.publish(&stores, &updates, &mut last);
            }
        }
        info!("discovery watcher stopped");
    }

    fn start_streams(&self) -> (Stores, BoxStream<'static, (ResourceKind, Notice)>) {
        let (namespace, client) = (self.selection.namespace.as_deref(), &self.client);
        let services_api: Api<Service> = match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        let slices_api: Api<EndpointSlice> = match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        let nodes_api: Api<Node> = Api::all(client.clone());

        let mut services_config = watcher::Config::default();
        if let Some(labels) = self.selection.label_selector() {
            services_config = services_config.labels(&labels);
        }
        // Only slices that belong to a Service matter, and they all carry this label.
        let slices_config = watcher::Config::default().labels(SERVICE_NAME_LABEL);

        let (services, services_stream) =
            reflect(ResourceKind::Services, services_api, services_config);
        let (slices, slices_stream) =
            reflect(ResourceKind::EndpointSlices, slices_api, slices_config);
        let (nodes, nodes_stream) =
            reflect(ResourceKind::Nodes, nodes_api, watcher::Config::default());

        let stores = Stores {
            services,
            slices,
            nodes,
        };
        let items = stream::select_all([services_stream, slices_stream, nodes_stream]).boxed();
        (stores, items)
    }

    /// Counts and logs one item, and returns whether the stores changed.
    fn handle(&self, kind: ResourceKind, notice: Notice, listed: &mut [bool; 3]) -> bool {
        let counters = self.counters.kind(kind);

        match notice {
            Notice::ListStarted => {
                counters.lists.fetch_add(1, Ordering::Relaxed);
                debug!(kind = kind.as_str(), "listing");
                false
            }
            Notice::ListedObject => {
                counters.events.fetch_add(1, Ordering::Relaxed);
                false
            }
            Notice::Listed => {
                listed[kind.index()] = true;
                debug!(kind = kind.as_str(), "list complete");
                true
            }
            Notice::Changed => {
                counters.events.fetch_add(1, Ordering::Relaxed);
                listed[kind.index()]
            }
            Notice::Failed(error) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                log_watch_error(&self.server, kind, &error);
                false
            }
        }
    }

    fn publish(&self, stores: &Stores, updates: &DiscoverySender, last: &mut Option<Discovery>) {
        let services = stores.services.state();
        let slices = stores.slices.state();
        let nodes = stores.nodes.state();
        let discovery = build_discovery(
            &self.selection,
            services.iter().map(Arc::as_ref),
            slices.iter().map(Arc::as_ref),
            nodes.iter().map(Arc::as_ref),
        );
        if last.as_ref() == Some(&discovery) {
            return;
        }

        let backends: usize = discovery.services.iter().map(|s| s.backends.len()).sum();
        info!(
            virtual_services = discovery.services.len(),
            backends,
            skipped_nodes = discovery.skipped_nodes.len(),
            skipped_ports = discovery.skipped_ports.len(),
            "publishing discovery model"
        );
        updates.send_replace(Some(Arc::new(discovery.clone())));
        self.counters
            .models_published
            .fetch_add(1, Ordering::Relaxed);
        *last = Some(discovery);
    }
}

/// Starts a backed-off watcher on `api` that feeds a reflector store, and returns the store
/// with the stream of notices that drives it.
fn reflect<K>(
    kind: ResourceKind,
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, BoxStream<'static, (ResourceKind, Notice)>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned + Send + Sync,
    K: 'static,
{
    // The RBAC manifests and metric labels take their names from `kind`, so the API
    // watched here must be the one `kind` names.
    debug_assert_eq!(
        (K::group(&()).as_ref(), K::plural(&()).as_ref()),
        (kind.api_group(), kind.as_str()),
        "reflect() called with the API of another kind"
    );
    let (store, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher(api, config).default_backoff());
    let notices = events.map(move |item| {
        let notice = match item {
            Ok(watcher::Event::Init) => Notice::ListStarted,
            Ok(watcher::Event::InitApply(_)) => Notice::ListedObject,
            Ok(watcher::Event::InitDone) => Notice::Listed,
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Notice::Changed,
            Err(error) => Notice::Failed(error),
        };
        (kind, notice)
    });
    (store, notices.boxed())
}

fn log_watch_error(server: &str, kind: ResourceKind, error: &watcher::Error) {
    match error {
        watcher::Error::WatchError(status) if status.code == 410 => {
            info!(
                server,
                kind = kind.as_str(),
                message = %status.message,
                "watch expired (410 Gone); listing again"
            );
        }
        _ => warn!(
            server,
            kind = kind.as_str(),
            %error,
            "kubernetes watch failed; retrying after backoff"
        ),
    }
}
