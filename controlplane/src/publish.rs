//! The control loop: sources in, snapshots out.
//!
//! Each source update replaces that source's service set. The sets are merged with the
//! static source first, so a static service wins over a Kubernetes one. A service whose
//! VIP, protocol and port (or name) an earlier service already has is left out. Such
//! conflicts are logged when their set changes and counted in
//! `spike_conflicting_services`. The merged set is validated as the dataplane will parse
//! it, encoded off the packet path (Maglev population included) and published to the
//! ring when it differs from what the ring already publishes, compared by payload
//! checksum.
//!
//! After a start, nothing is published until every source has sent its initial set, so
//! that a restart never publishes a snapshot with fewer services than the one the
//! dataplane runs. `controlplane.initial_sync_timeout_s` bounds that wait. The sources
//! still missing then are logged and counted, and their services follow when they
//! report. Meanwhile the dataplane keeps the snapshot it runs. A reload keeps each
//! source's last set until its restarted source reports, for the same reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spike_core::config::ServiceConfig;
use spike_core::snapshot::UnslottedBackend;
use spike_core::Config;
use spike_snapring::payload::{self, EncodeError};
use spike_snapring::{checksum, Geometry, Publisher, RingError};
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::bgp::{self, Announcer, BgpMetrics};
use crate::config::{ConfigError, ControlConfig};
use crate::discovery::{Discovery, HealthMemory, SourceUpdate, StaticSource};
use crate::http;
use crate::kubernetes::KubernetesSource;
use crate::metrics::Metrics;
use crate::metrics_tls::{self, MetricsTlsError};
use crate::nexthop::{self, NetlinkError, Resolver};

/// Interval between the control plane's heartbeats in the ring.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A dataplane whose heartbeat is older than this counts as not running.
const DATAPLANE_STALE_MS: u64 = 3000;

/// A failure that stops the control plane.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("cannot listen for metrics on {address}: {source}; set controlplane.metrics_listen")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    MetricsTls(#[from] MetricsTlsError),
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    NextHops(#[from] NetlinkError),
    #[error("planned stop: {0}; the VIPs may still be announced, check BIRD")]
    Withdraw(#[from] bgp::BirdError),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// The state shared with the readiness endpoint.
#[derive(Debug, Default)]
struct Current {
    /// Generation of the latest snapshot in the ring, 0 before the first.
    generation: u64,
    /// The VIPs of the recent generations that BGP may announce.
    vip_sets: bgp::Generations,
    /// Services left out of the last publication because the core rejects them, with
    /// the reason, so that each is logged once while it stays invalid.
    invalid: BTreeSet<String>,
    /// Backends with a weight above 0 that the last encoded tables give no slot, so that
    /// each is logged once while it stays without one.
    unslotted: BTreeSet<UnslottedBackend>,
}

/// Runs until SIGINT or SIGTERM, or with `[bgp]` until SIGUSR1, the planned stop that
/// withdraws the VIPs first.
pub async fn run(path: &Path) -> Result<(), RunError> {
    let mut config = Arc::new(ControlConfig::load(path)?);
    for warning in config.base.warnings() {
        warn!(config = %path.display(), "{warning}");
    }
    let geometry = Geometry {
        slot_size: config.slot_size_bytes,
        ..Geometry::default()
    };
    // The port and the TLS identity are checked before the ring is opened, so that a
    // taken port or a missing certificate leaves no new ring file behind.
    let tls = config
        .metrics_tls
        .as_ref()
        .map(metrics_tls::acceptor)
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| RunError::Listen {
            address: config.metrics_listen,
            source,
        })?;
    let ring = Arc::new(Mutex::new(Publisher::attach(&config.ring, geometry)?));
    let (metrics, mut registry) = Metrics::register(Arc::clone(&ring));
    let current = Arc::new(Mutex::new(Current::default()));
    if let Some(published) = lock(&ring).published() {
        lock(&current).generation = published.generation;
        metrics.generation.set(published.generation as i64);
        info!(
            ring = %config.ring.display(),
            generation = published.generation,
            "attached to a ring with a published snapshot"
        );
    }

    let announcer = start_bgp(&config, &ring, &current, &mut registry);
    let server = tokio::spawn(http::serve(
        listener,
        Arc::new(registry),
        readiness(Arc::clone(&ring), Arc::clone(&current)),
        tls,
    ));

    let mut hangup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut planned_stop = signal(SignalKind::user_defined1()).map_err(RunError::Signals)?;
    let mut draining = false;
    let (updates_tx, mut updates) = mpsc::channel::<SourceUpdate>(16);
    let memory = HealthMemory::default();
    // `waiting` names the sources whose initial set the first publication waits for. It
    // is empty from the first publication on.
    let (mut sources, mut waiting) = start_sources(&config, &memory, &metrics, &updates_tx);
    let sync_deadline = tokio::time::Instant::now() + config.initial_sync_timeout;
    let mut services: BTreeMap<&'static str, Vec<ServiceConfig>> = BTreeMap::new();
    let mut conflicts = BTreeSet::new();
    let mut resolver = config.resolve_next_hops.then(Resolver::start).transpose()?;
    let mut merged: Option<Vec<ServiceConfig>> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    info!(config = %path.display(), ring = %config.ring.display(), "control plane started");

    loop {
        tokio::select! {
            Some(update) = updates.recv() => {
                let source = update.source;
                services.insert(source, update.services);
                merged = Some(merge_sources(&services, &mut conflicts, &metrics));
                if waiting.remove(source) && waiting.is_empty() {
                    info!(last = source, "every source has sent its initial services");
                }
                if waiting.is_empty() {
                    let resolver = resolver.as_ref();
                    publish_resolved(&config, &merged, resolver, &ring, &metrics, &current);
                }
            }
            () = tokio::time::sleep_until(sync_deadline), if !waiting.is_empty() => {
                warn!(
                    missing = ?waiting,
                    timeout_s = config.initial_sync_timeout.as_secs(),
                    "initial sync timed out: publishing without the services of the sources \
                     that have not reported; they follow once those sources report"
                );
                metrics.initial_sync_timeouts.inc();
                waiting.clear();
                publish_resolved(&config, &merged, resolver.as_ref(), &ring, &metrics, &current);
            }
            () = nexthop::changed(resolver.as_mut()) => {
                if waiting.is_empty() {
                    let resolver = resolver.as_ref();
                    publish_resolved(&config, &merged, resolver, &ring, &metrics, &current);
                }
            }
            _ = heartbeat.tick() => lock(&ring).heartbeat(),
            _ = hangup.recv() => match ControlConfig::load(path) {
                Ok(reloaded) if reloaded.ring != config.ring
                    || reloaded.metrics_listen != config.metrics_listen
                    || reloaded.metrics_tls != config.metrics_tls
                    || reloaded.slot_size_bytes != config.slot_size_bytes
                    || reloaded.resolve_next_hops != config.resolve_next_hops => {
                    error!(
                        config = %path.display(),
                        "config reload rejected: the [controlplane] section changed; \
                         restart spike-controlplane to apply it"
                    );
                }
                Ok(reloaded) if reloaded.bgp.is_some() != config.bgp.is_some() => error!(
                    config = %path.display(),
                    "config reload rejected: the [bgp] section was added or removed; \
                     restart spike-controlplane to apply it"
                ),
                Ok(reloaded) => {
                    for warning in reloaded.base.warnings() {
                        warn!(config = %path.display(), "{warning}");
                    }
                    if let (Some(announcer), Some(bgp)) = (&announcer, &reloaded.bgp) {
                        announcer.update(bgp.clone());
                    }
                    config = Arc::new(reloaded);
                    stop_sources(&mut sources);
                    let (started, names) = start_sources(&config, &memory, &metrics, &updates_tx);
                    sources = started;
                    // The services of a removed source leave with the next publication.
                    // Those of the others stay until their restarted source replaces them.
                    services.retain(|source, _| names.contains(source));
                    if !waiting.is_empty() {
                        waiting = names;
                    }
                    info!(config = %path.display(), "config reloaded");
                }
                Err(error) => error!(
                    config = %path.display(),
                    %error,
                    "config reload rejected; the running config stays"
                ),
            },
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = planned_stop.recv() => match &announcer {
                Some(_) => {
                    draining = true;
                    break;
                }
                None => warn!("SIGUSR1 ignored: without a [bgp] section there is nothing to \
                               withdraw; use SIGTERM to stop"),
            },
        }
    }
    stop_sources(&mut sources);
    let mut result = Ok(());
    if let Some(announcer) = announcer {
        if draining {
            info!("planned stop: withdrawing every VIP from BGP");
            result = announcer.drain().await.map_err(RunError::from);
        } else {
            info!("stop signal received; BIRD keeps announcing the VIPs");
        }
        announcer.stop();
    }
    info!("control plane stopped; the dataplane keeps its last snapshot");
    server.abort();
    result
}

/// Starts the BGP announcer when the config has a `[bgp]` section.
fn start_bgp(
    config: &ControlConfig,
    ring: &Arc<Mutex<Publisher>>,
    current: &Mutex<Current>,
    registry: &mut prometheus_client::registry::Registry,
) -> Option<Announcer> {
    let bgp = config.bgp.clone()?;
    let metrics = BgpMetrics::register(registry);
    let generations = lock(current).vip_sets.clone();
    Some(Announcer::start(
        bgp,
        Arc::clone(ring),
        generations,
        metrics,
    ))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Starts every discovery source: the static one, and Kubernetes discovery when the
/// config has a `[kubernetes]` section. Returns their tasks and names.
fn start_sources(
    config: &Arc<ControlConfig>,
    memory: &HealthMemory,
    metrics: &Metrics,
    updates: &mpsc::Sender<SourceUpdate>,
) -> (Vec<JoinHandle<()>>, BTreeSet<&'static str>) {
    let mut sources: Vec<Box<dyn Discovery>> = vec![Box::new(StaticSource::new(
        Arc::clone(config),
        Arc::clone(memory),
        metrics.backend_health.clone(),
    ))];
    if let Some(source) = KubernetesSource::new(Arc::clone(config), metrics.kubernetes.clone()) {
        sources.push(Box::new(source));
    }
    let names = sources.iter().map(|source| source.name()).collect();
    let tasks = sources
        .into_iter()
        .map(|source| tokio::spawn(source.run(updates.clone())))
        .collect();
    (tasks, names)
}

fn stop_sources(sources: &mut Vec<JoinHandle<()>>) {
    for source in sources.drain(..) {
        source.abort();
    }
}

fn readiness(ring: Arc<Mutex<Publisher>>, current: Arc<Mutex<Current>>) -> http::Readiness {
    Arc::new(move || {
        let generation = lock(&current).generation;
        let status = lock(&ring).dataplane();
        let now_ms = unix_ms();
        if generation == 0 {
            return Err("no snapshot published yet".to_owned());
        }
        if now_ms.saturating_sub(status.heartbeat_unix_ms) > DATAPLANE_STALE_MS {
            return Err("the dataplane has not polled the ring in the last 3 s".to_owned());
        }
        if status.applied_generation != generation {
            return Err(format!(
                "the dataplane runs generation {}, the latest is {generation}",
                status.applied_generation
            ));
        }
        Ok(())
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The source whose services win a conflict.
const PREFERRED_SOURCE: &str = "static";

/// Merges the sources' service sets, the static source first and then the others in
/// name order. A service whose VIP, protocol and port, or name, an earlier service has
/// is left out. Conflicts are logged when their set changes.
fn merge_sources(
    sources: &BTreeMap<&'static str, Vec<ServiceConfig>>,
    reported: &mut BTreeSet<String>,
    metrics: &Metrics,
) -> Vec<ServiceConfig> {
    let ordered = sources
        .iter()
        .filter(|(name, _)| **name == PREFERRED_SOURCE)
        .chain(
            sources
                .iter()
                .filter(|(name, _)| **name != PREFERRED_SOURCE),
        );
    let mut merged: Vec<ServiceConfig> = Vec::new();
    let mut owners: HashMap<(std::net::IpAddr, u8, u16), (&str, &str)> = HashMap::new();
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut conflicts = BTreeSet::new();

    for (&source, services) in ordered {
        for service in services {
            let key = (service.vip, service.protocol.number(), service.port);
            let owner = owners.get(&key).copied().or_else(|| {
                let owner_source = names.get(service.name.as_str())?;
                Some((*owner_source, service.name.as_str()))
            });
            if let Some((owner_source, owner_name)) = owner {
                conflicts.insert(format!(
                    "{source} service {} ({} {} port {}) conflicts with {owner_source} \
                     service {owner_name}",
                    service.name, service.vip, service.protocol, service.port
                ));
                continue;
            }
            owners.insert(key, (source, service.name.as_str()));
            names.insert(service.name.as_str(), source);
            merged.push(service.clone());
        }
    }

    metrics.conflicting_services.set(conflicts.len() as i64);
    if conflicts != *reported {
        for conflict in conflicts.difference(reported) {
            warn!(
                conflict = %conflict,
                "service left out: an earlier source (static first) has its VIP, protocol \
                 and port, or its name"
            );
        }
        *reported = conflicts;
    }
    merged
}

/// Publishes the merged service set with the next-hop MACs resolved, when
/// `resolve_next_hops` is on. Until every backend address has been looked up once, it
/// publishes nothing, so that a restarted control plane does not publish a table
/// without backends whose MACs it has not looked up yet.
fn publish_resolved(
    config: &ControlConfig,
    merged: &Option<Vec<ServiceConfig>>,
    resolver: Option<&Resolver>,
    ring: &Mutex<Publisher>,
    metrics: &Metrics,
    current: &Mutex<Current>,
) {
    let Some(services) = merged else { return };
    let services = match resolver {
        None => services.clone(),
        Some(resolver) => match resolver.apply(services, metrics) {
            Some(services) => services,
            None => return,
        },
    };
    publish(config, services, ring, metrics, current);
}

/// Checks the snapshot's config as the dataplane will parse it, so that a service the
/// dataplane would reject stops here with the reason instead of in the dataplane.
fn validate(config: &Config) -> Result<(), String> {
    let text = payload::config_to_toml(config).map_err(|error| error.to_string())?;
    text.parse::<Config>()
        .map(drop)
        .map_err(|error| error.to_string())
}

/// Splits `services` into those the core accepts each on its own with `base`'s node
/// and settings, and the rejected ones with their reasons. One discovered service with,
/// say, a LoadBalancer IP equal to a node's address then costs only itself, not every
/// later snapshot.
fn leave_out_invalid(
    base: &Config,
    services: Vec<ServiceConfig>,
) -> (Vec<ServiceConfig>, BTreeSet<String>) {
    let mut kept = Vec::with_capacity(services.len());
    let mut invalid = BTreeSet::new();
    for service in services {
        let mut alone = base.clone();
        alone.services = vec![service.clone()];
        match validate(&alone) {
            Ok(()) => kept.push(service),
            Err(error) => {
                invalid.insert(format!("service {}: {error}", service.name));
            }
        }
    }
    (kept, invalid)
}

/// Encodes the merged service set and publishes it unless the ring already has it.
fn publish(
    config: &ControlConfig,
    services: Vec<ServiceConfig>,
    ring: &Mutex<Publisher>,
    metrics: &Metrics,
    current: &Mutex<Current>,
) {
    let started = Instant::now();
    let mut merged = config.base.clone();
    merged.services = services;
    let mut invalid = BTreeSet::new();
    if validate(&merged).is_err() {
        let (kept, rejected) = leave_out_invalid(&config.base, merged.services);
        merged.services = kept;
        invalid = rejected;
        if let Err(error) = validate(&merged) {
            error!(%error, "snapshot not built: the merged config is invalid; the published one stays");
            return;
        }
    }
    metrics.invalid_services.set(invalid.len() as i64);
    {
        let mut current = lock(current);
        for reason in invalid.difference(&current.invalid) {
            warn!(%reason, "service left out of the snapshot: the dataplane would reject it");
        }
        current.invalid = invalid;
    }
    let encoded = match payload::encode(&merged) {
        Ok(encoded) => encoded,
        Err(error) => {
            log_encode_error(&error);
            return;
        }
    };
    let unslotted = record_tables(&encoded, &config.base, metrics);
    {
        let mut current = lock(current);
        for backend in unslotted.difference(&current.unslotted) {
            warn!(
                service = %backend.service,
                backend = %backend.backend,
                "{backend}"
            );
        }
        current.unslotted = unslotted;
    }

    let mut ring = lock(ring);
    let sum = checksum(&encoded.bytes);
    if ring
        .published()
        .is_some_and(|published| published.checksum == sum)
    {
        let current = lock(current);
        current
            .vip_sets
            .record(current.generation, &merged.services);
        return;
    }
    let generation = lock(current).generation + 1;
    match ring.publish(generation, &encoded.bytes) {
        Ok(published) => {
            let mut current = lock(current);
            current.generation = generation;
            current.vip_sets.record(generation, &merged.services);
            drop(current);
            let seconds = started.elapsed().as_secs_f64();
            metrics.generation.set(generation as i64);
            metrics.publications.inc();
            metrics.publish_seconds.observe(seconds);
            info!(
                generation,
                sequence = published.sequence,
                services = merged.services.len(),
                tables = encoded.tables.len(),
                bytes = encoded.bytes.len(),
                // Rounded to 10 µs, because the raw product prints noise such as 3.5426450000000003.
                publish_ms = (seconds * 100_000.0).round() / 100.0,
                "snapshot published"
            );
        }
        Err(RingError::TooLarge { len, .. }) => {
            // The ring's own slot size, which differs from the config's when the file
            // was created with another one.
            let reason = slot_too_small(len, ring.geometry().slot_size).unwrap_or_default();
            error!(
                generation,
                "cannot publish the snapshot: {reason}; the ring file {} keeps the slot size \
                 it was created with, so a new value applies only to a ring file created anew",
                config.ring.display()
            );
        }
        Err(error) => error!(%error, generation, "cannot publish the snapshot"),
    }
}

/// The largest `controlplane.ring_slot_size_mib` that the config accepts.
const MAX_SLOT_SIZE_MIB: u64 = 1024;

/// Returns why a snapshot payload of `len` bytes does not fit a ring slot of
/// `slot_size` bytes (its header included), naming the setting and the smallest value
/// that fits, or `None` when it fits.
pub fn slot_too_small(len: usize, slot_size: u64) -> Option<String> {
    let capacity = slot_size.saturating_sub(spike_snapring::SLOT_HEADER_LEN);
    let len = len as u64;
    if len <= capacity {
        return None;
    }
    let needed = (len + spike_snapring::SLOT_HEADER_LEN).div_ceil(1 << 20);
    let fix = if needed <= MAX_SLOT_SIZE_MIB {
        format!("set controlplane.ring_slot_size_mib to {needed} or more")
    } else {
        format!(
            "that is more than the largest controlplane.ring_slot_size_mib, \
             {MAX_SLOT_SIZE_MIB}; lower service.table_size or split the services"
        )
    };
    Some(format!(
        "the snapshot payload of {len} bytes does not fit a ring slot of {capacity} payload \
         bytes (controlplane.ring_slot_size_mib = {}): {fix}",
        slot_size >> 20
    ))
}

fn log_encode_error(error: &EncodeError) {
    warn!(%error, "snapshot not built; the published one stays");
}

/// Updates the table share and fingerprint metrics for the encoded services, and returns
/// the backends with a weight above 0 that their table gives no slot. A backend of a
/// static service that its health checks took out of the table shows a share of 0, so
/// that the series stays and a dashboard shows the drop.
fn record_tables(
    encoded: &payload::Encoded,
    configured: &Config,
    metrics: &Metrics,
) -> BTreeSet<UnslottedBackend> {
    let mut unslotted = BTreeSet::new();
    metrics.table_share_ppm.clear();
    metrics.fingerprint.clear();
    for (index, service) in encoded.config.services.iter().enumerate() {
        let fingerprint = format!("{:016x}", encoded.fingerprint(index));
        metrics
            .fingerprint
            .get_or_create(&[
                ("service", service.name.clone()),
                ("fingerprint", fingerprint),
            ])
            .set(1);
        let share = |backend: &str| {
            metrics.table_share_ppm.get_or_create(&[
                ("service", service.name.clone()),
                ("backend", backend.to_owned()),
            ])
        };
        if let Some(static_service) = configured
            .services
            .iter()
            .find(|configured| configured.name == service.name)
        {
            for backend in &static_service.backends {
                share(&backend.name).set(0);
            }
        }
        let Some(table) = encoded.service_tables[index].map(|table| &encoded.tables[table]) else {
            continue;
        };
        let size = u64::from(table.size());
        let slot_counts = table.slot_counts();
        for (backend, &slots) in service.backends.iter().zip(&slot_counts) {
            share(&backend.name).set((u64::from(slots) * 1_000_000 / size) as i64);
        }
        let backends = service
            .backends
            .iter()
            .map(|backend| (backend.name.as_str(), backend.weight));
        unslotted.extend(UnslottedBackend::from_slot_counts(
            &service.name,
            backends,
            &slot_counts,
            table.size(),
        ));
    }
    metrics.unslotted_backends.set(unslotted.len() as i64);
    unslotted
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../configs/spike.toml");

    #[test]
    fn invalid_service_left_out() {
        let base: Config = EXAMPLE.parse().expect("configs/spike.toml is valid");
        let good = base.services[0].clone();
        let mut on_node = good.clone();
        on_node.name = "on-node".to_owned();
        let node_address = base
            .node
            .ipv4
            .expect("the example node has an IPv4 address");
        on_node.vip = std::net::IpAddr::V4(node_address);
        on_node.port = good.port.wrapping_add(1);
        let mut merged = base.clone();
        merged.services = vec![good.clone(), on_node.clone()];
        assert!(
            validate(&merged).is_err(),
            "a VIP on the node's address must fail"
        );

        let (kept, invalid) = leave_out_invalid(&base, vec![good.clone(), on_node]);
        assert_eq!(kept, vec![good]);
        assert_eq!(invalid.len(), 1);
        let reason = invalid.first().unwrap();
        assert!(reason.starts_with("service on-node: "), "{reason}");
        merged.services = kept;
        assert_eq!(validate(&merged), Ok(()));
    }

    #[test]
    fn slot_too_small_names_the_fix() {
        assert_eq!(slot_too_small((1 << 20) - 64, 1 << 20), None);
        let reason = slot_too_small(52_476_809, 16 << 20).expect("too large");
        assert_eq!(
            reason,
            "the snapshot payload of 52476809 bytes does not fit a ring slot of 16777152 \
             payload bytes (controlplane.ring_slot_size_mib = 16): set \
             controlplane.ring_slot_size_mib to 51 or more"
        );
        // The slot header counts: a payload of exactly 1 MiB needs 2 MiB slots.
        let reason = slot_too_small(1 << 20, 1 << 20).expect("too large");
        assert!(reason.ends_with("to 2 or more"), "{reason}");
        let reason = slot_too_small(2 << 30, 1024 << 20).expect("too large");
        assert!(reason.contains("more than the largest"), "{reason}");
    }
}
