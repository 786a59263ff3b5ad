//! Announcement of the VIPs over BGP through the node's BIRD 2.
//!
//! With a `[bgp]` section the control plane writes `bgp.routes_file`, which BIRD's
//! config includes (see `configs/bird-spike.conf`), and asks BIRD to reload it
//! through its control socket. The file contains the router id, the BGP sessions of the
//! section and one blackhole route per announced VIP, which the sessions export.
//!
//! A VIP is announced while the dataplane runs (its heartbeat in the ring is younger
//! than `bgp.dataplane_timeout_ms`) and the snapshot it runs has a backend with weight
//! above 0 for that VIP. Announcing the VIPs of the snapshot the dataplane runs, rather
//! than of the latest one, keeps the routes steady while a new snapshot is on its way.
//! When the dataplane stops, every VIP is withdrawn. When the control plane starts and
//! the dataplane runs a generation whose services it has not built yet, the file stays
//! as it is, so a control plane restart never withdraws a route.
//!
//! Stops: SIGTERM and SIGINT leave BIRD's routes alone, so the dataplane keeps getting
//! traffic while the control plane restarts. SIGUSR1 is the planned stop: withdraw
//! every VIP, wait `bgp.drain_s` while routers move the flows to other Spike nodes,
//! then exit.
//!
//! After every stop of the dataplane (a stop, a crash, kill -9), its unit runs
//! `spike-controlplane --withdraw` ([`withdraw`]), which writes the file without VIPs
//! and reloads BIRD. This also withdraws the routes while the control plane is stopped
//! and cannot follow the heartbeat. A running control plane notices within a
//! tick that another process replaced the file. It then keeps every VIP withdrawn until
//! the dataplane writes a heartbeat newer than that moment, and writes the file again.
//! So a dataplane that restarts within `bgp.dataplane_timeout_ms` gets its VIPs back,
//! and the stopped one's last heartbeats announce nothing.

mod bird;
mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use spike_core::config::ServiceConfig;
use spike_snapring::{DataplaneStatus, Publisher};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use self::bird::BirdError;
use self::bird::{BirdClient, FileStamp};
pub use self::config::BgpConfig;
pub(crate) use self::config::{validate, RawBgp};

/// Interval between two comparisons of the dataplane's state with the announced VIPs.
const RECONCILE_INTERVAL: Duration = Duration::from_millis(100);
/// Interval between status requests that keep `spike_bgp_bird_reachable` current.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Wait before a failed write or reload is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Time limit of one exchange on BIRD's control socket.
const BIRD_TIMEOUT: Duration = Duration::from_secs(5);
/// Generations whose VIPs are kept: the one the dataplane runs and those published
/// after it. A dataplane that falls this far behind counts as running an unknown one.
const KEPT_GENERATIONS: usize = 16;

/// The announceable VIPs of recently published snapshots, by generation. Cloning
/// shares the same set.
#[derive(Clone, Debug, Default)]
pub struct Generations(Arc<Mutex<BTreeMap<u64, BTreeSet<IpAddr>>>>);

impl Generations {
    /// Records the services of a published (or already published) generation.
    pub fn record(&self, generation: u64, services: &[ServiceConfig]) {
        let mut sets = lock(&self.0);
        sets.insert(generation, announceable(services));
        while sets.len() > KEPT_GENERATIONS {
            sets.pop_first();
        }
    }

    fn vips(&self, generation: u64) -> Option<BTreeSet<IpAddr>> {
        lock(&self.0).get(&generation).cloned()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Returns the VIPs of `services` that have at least one backend with weight above 0.
pub fn announceable(services: &[ServiceConfig]) -> BTreeSet<IpAddr> {
    services
        .iter()
        .filter(|service| service.backends.iter().any(|backend| backend.weight > 0))
        .map(|service| service.vip)
        .collect()
}

/// The announcement that the dataplane's state calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The dataplane runs `generation`, whose announceable VIPs are `vips`.
    Announce {
        generation: u64,
        vips: BTreeSet<IpAddr>,
    },
    /// The dataplane's last heartbeat is `heartbeat_age_ms` old, or it never wrote one
    /// (`None`): withdraw everything.
    DataplaneStopped { heartbeat_age_ms: Option<u64> },
    /// Another process replaced the routes file, as `spike-controlplane --withdraw`
    /// does after a stop of the dataplane, and the dataplane has written no heartbeat
    /// since this process noticed it at `noticed_unix_ms`. Keep every VIP withdrawn
    /// until the dataplane writes a newer heartbeat.
    Replaced { noticed_unix_ms: u64 },
    /// The dataplane runs a generation this process has no services of: leave the
    /// announcement as it is.
    Unknown { applied_generation: u64 },
}

/// Decides what to announce from the dataplane's status in the ring at `now_unix_ms`.
/// `replaced_unix_ms` is when this process noticed that another process replaced the
/// routes file, if that happened since the dataplane's heartbeat last passed it.
pub fn decide(
    status: &DataplaneStatus,
    now_unix_ms: u64,
    timeout: Duration,
    generations: &Generations,
    replaced_unix_ms: Option<u64>,
) -> Decision {
    if status.heartbeat_unix_ms == 0 {
        return Decision::DataplaneStopped {
            heartbeat_age_ms: None,
        };
    }
    let age_ms = now_unix_ms.saturating_sub(status.heartbeat_unix_ms);
    if u128::from(age_ms) > timeout.as_millis() {
        return Decision::DataplaneStopped {
            heartbeat_age_ms: Some(age_ms),
        };
    }
    if let Some(noticed_unix_ms) =
        replaced_unix_ms.filter(|&noticed| status.heartbeat_unix_ms <= noticed)
    {
        return Decision::Replaced { noticed_unix_ms };
    }
    match generations.vips(status.applied_generation) {
        Some(vips) => Decision::Announce {
            generation: status.applied_generation,
            vips,
        },
        None => Decision::Unknown {
            applied_generation: status.applied_generation,
        },
    }
}

/// The `spike_bgp_*` metrics.
#[derive(Clone, Debug, Default)]
pub struct BgpMetrics {
    announced_vips: Gauge,
    bird_reachable: Gauge,
    last_reload_success: Gauge,
    reloads: Family<[(&'static str, &'static str); 1], Counter>,
    dataplane_running: Gauge,
}

impl BgpMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> BgpMetrics {
        let metrics = BgpMetrics::default();
        registry.register(
            "bgp_announced_vips",
            "VIPs in the routes file that BIRD last loaded successfully",
            metrics.announced_vips.clone(),
        );
        registry.register(
            "bgp_bird_reachable",
            "1 when BIRD answered on its control socket at the last attempt, else 0",
            metrics.bird_reachable.clone(),
        );
        registry.register(
            "bgp_last_reload_success",
            "1 when BIRD accepted the last reload of the routes file, else 0",
            metrics.last_reload_success.clone(),
        );
        registry.register(
            "bgp_reloads",
            "Reloads of the routes file requested from BIRD, by result (ok or failed)",
            metrics.reloads.clone(),
        );
        registry.register(
            "bgp_dataplane_running",
            "1 while the dataplane's heartbeat in the ring is recent enough to announce",
            metrics.dataplane_running.clone(),
        );
        metrics
    }
}

/// Writes the routes file with the sessions of `config` and no VIPs, then requests a
/// reload from BIRD: `spike-controlplane --withdraw`. Needs no running control plane
/// and changes nothing of one. The file is written even when it already has no VIPs,
/// so that a running control plane notices the replacement ([`Decision::Replaced`]).
///
/// # Errors
///
/// [`BirdError`] when the file cannot be written, or BIRD is not reachable, times out
/// or rejects the reload.
pub async fn withdraw(config: &BgpConfig) -> Result<(), BirdError> {
    let text = bird::render(config, &BTreeSet::new());
    let path = config.routes_file.clone();
    match tokio::task::spawn_blocking(move || bird::write_atomically(&path, &text)).await {
        Ok(written) => written?,
        Err(join_error) => {
            return Err(BirdError::Write {
                path: config.routes_file.clone(),
                source: std::io::Error::other(join_error),
            })
        }
    };
    BirdClient::new(config.bird_socket.clone(), BIRD_TIMEOUT)
        .configure()
        .await
        .map(drop)
}

/// A request to the running announcer to withdraw every VIP. The reply reports whether
/// BIRD applied the withdrawal.
type WithdrawRequest = oneshot::Sender<Result<(), BirdError>>;

/// The running announcer task.
#[derive(Debug)]
pub struct Announcer {
    withdraw: mpsc::Sender<WithdrawRequest>,
    config: watch::Sender<Arc<BgpConfig>>,
    task: JoinHandle<()>,
}

impl Announcer {
    /// Starts the task. When the routes file does not exist yet it is written first,
    /// without VIPs, so that BIRD, whose config includes it, can start.
    pub fn start(
        config: BgpConfig,
        ring: Arc<Mutex<Publisher>>,
        generations: Generations,
        metrics: BgpMetrics,
    ) -> Announcer {
        if !config.routes_file.exists() {
            let text = bird::render(&config, &BTreeSet::new());
            match bird::write_atomically(&config.routes_file, &text) {
                Ok(_) => info!(
                    routes_file = %config.routes_file.display(),
                    "routes file written without VIPs for BIRD's first start"
                ),
                Err(error) => error!(%error, "cannot write the routes file"),
            }
        }
        let (withdraw, withdraw_requests) = mpsc::channel(1);
        let (config_sender, config_receiver) = watch::channel(Arc::new(config));
        let state = State {
            config: config_receiver,
            ring,
            generations,
            metrics,
            applied: None,
            retry_at: None,
            last_decision: None,
            last_failure: None,
            draining: false,
            written: None,
            replaced_unix_ms: None,
        };
        let task = tokio::spawn(state.run(withdraw_requests));
        Announcer {
            withdraw,
            config: config_sender,
            task,
        }
    }

    /// Applies a reloaded `[bgp]` section at the next reconciliation.
    pub fn update(&self, config: BgpConfig) {
        self.config.send_replace(Arc::new(config));
    }

    /// Withdraws every VIP for the planned stop, keeps them withdrawn, and waits
    /// `bgp.drain_s` so that routers move the flows to other Spike nodes.
    ///
    /// # Errors
    ///
    /// The [`BirdError`] of the withdrawal, after the drain time has passed anyway.
    pub async fn drain(&self) -> Result<(), BirdError> {
        let drain = self.config.borrow().drain;
        let (reply, result) = oneshot::channel();
        let withdrawn = match self.withdraw.send(reply).await {
            Ok(()) => result.await.unwrap_or(Ok(())),
            Err(_) => Ok(()),
        };
        match &withdrawn {
            Ok(()) => info!(
                drain_s = drain.as_secs(),
                "every VIP withdrawn; waiting the drain time before the exit"
            ),
            Err(error) => error!(
                %error,
                drain_s = drain.as_secs(),
                "withdrawing the VIPs failed; waiting the drain time before the exit anyway"
            ),
        }
        tokio::time::sleep(drain).await;
        withdrawn
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// The announcer task's state.
struct State {
    config: watch::Receiver<Arc<BgpConfig>>,
    ring: Arc<Mutex<Publisher>>,
    generations: Generations,
    metrics: BgpMetrics,
    /// The VIPs BIRD last loaded from this process's file, with the config they were
    /// rendered with; `None` before the first success and after a failure.
    applied: Option<(Arc<BgpConfig>, BTreeSet<IpAddr>)>,
    retry_at: Option<Instant>,
    /// The last decision, so that a change is logged once.
    last_decision: Option<Decision>,
    /// The message of the last failed update while failures repeat, so that a retry
    /// that fails the same way is not logged again.
    last_failure: Option<String>,
    /// Set by the planned stop: nothing is announced any more.
    draining: bool,
    /// Path and stamp of the routes file that this process last wrote or found with the
    /// expected text.
    written: Option<(PathBuf, FileStamp)>,
    /// Time at which this process noticed another process's replacement of the routes
    /// file, kept until the dataplane's heartbeat is newer. It is the time of noticing
    /// rather than the file's modification time, because the kernel stamps files with a
    /// coarse clock that may lag the heartbeat's clock by a timer tick.
    replaced_unix_ms: Option<u64>,
}

impl State {
    async fn run(mut self, mut withdraw_requests: mpsc::Receiver<WithdrawRequest>) {
        let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = reconcile.tick() => self.reconcile().await,
                _ = probe.tick() => self.probe().await,
                Some(reply) = withdraw_requests.recv() => {
                    self.draining = true;
                    let result = self.apply(BTreeSet::new()).await;
                    let _ = reply.send(result);
                }
            }
        }
    }

    async fn reconcile(&mut self) {
        let status = lock(&self.ring).dataplane();
        let config = Arc::clone(&self.config.borrow());
        self.notice_replacement(&config.routes_file);
        let decision = decide(
            &status,
            unix_ms(),
            config.dataplane_timeout,
            &self.generations,
            self.replaced_unix_ms,
        );
        let running = matches!(
            decision,
            Decision::Announce { .. } | Decision::Unknown { .. }
        );
        self.metrics.dataplane_running.set(i64::from(running));
        self.log_decision(&decision);
        if running {
            self.replaced_unix_ms = None;
        }

        let vips = match decision {
            _ if self.draining => BTreeSet::new(),
            Decision::Announce { vips, .. } => vips,
            Decision::DataplaneStopped { .. } | Decision::Replaced { .. } => BTreeSet::new(),
            Decision::Unknown { .. } => return,
        };
        let current = self
            .applied
            .as_ref()
            .is_some_and(|(applied_config, applied)| {
                Arc::ptr_eq(applied_config, &config) && *applied == vips
            });
        if current || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let _ = self.apply(vips).await;
    }

    /// Checks whether another process replaced or removed the routes file since this one
    /// wrote it. What BIRD loaded is then unknown, so the next withdrawal or
    /// announcement writes the file again. The check costs one `stat` per tick.
    fn notice_replacement(&mut self, routes_file: &Path) {
        let Some((path, written)) = &self.written else {
            return;
        };
        if path != routes_file {
            return;
        }
        if FileStamp::read(routes_file).as_ref() == Some(written) {
            return;
        }
        let replaced_unix_ms = unix_ms();
        warn!(
            routes_file = %routes_file.display(),
            "another process replaced or removed the routes file; announcing again only \
             after a dataplane heartbeat newer than that"
        );
        self.written = None;
        self.applied = None;
        self.retry_at = None;
        self.replaced_unix_ms = Some(replaced_unix_ms);
    }

    /// Logs a change of the decision, not its repetition every tick. A stopped
    /// dataplane's growing heartbeat age is no change.
    fn log_decision(&mut self, decision: &Decision) {
        let unchanged = match (&self.last_decision, decision) {
            (Some(Decision::DataplaneStopped { .. }), Decision::DataplaneStopped { .. }) => true,
            (last, decision) => last.as_ref() == Some(decision),
        };
        if unchanged {
            return;
        }
        match decision {
            Decision::Announce { generation, vips } => info!(
                generation,
                vips = ?vips,
                "the dataplane runs a snapshot; announcing its VIPs with weighted backends"
            ),
            Decision::DataplaneStopped { heartbeat_age_ms } => warn!(
                heartbeat_age_ms,
                "the dataplane's heartbeat in the ring is missing or too old; withdrawing \
                 every VIP"
            ),
            Decision::Replaced { noticed_unix_ms } => info!(
                noticed = %spike_keyproto::utc::rfc3339((noticed_unix_ms / 1000) as i64),
                "the routes file was replaced after the dataplane's last heartbeat; every \
                 VIP stays withdrawn until the dataplane writes a newer one"
            ),
            Decision::Unknown { applied_generation } => info!(
                applied_generation,
                "the dataplane runs a snapshot this process has not built yet; the \
                 announced routes stay as they are"
            ),
        }
        self.last_decision = Some(decision.clone());
    }

    /// Writes the routes file for `vips` when it differs and asks BIRD to reload it.
    async fn apply(&mut self, vips: BTreeSet<IpAddr>) -> Result<(), BirdError> {
        let config = Arc::clone(&self.config.borrow());
        let result = self.write_and_reload(&config, &vips).await;
        match &result {
            Ok(()) => {
                self.metrics.announced_vips.set(vips.len() as i64);
                self.metrics.last_reload_success.set(1);
                self.metrics
                    .reloads
                    .get_or_create(&[("result", "ok")])
                    .inc();
                info!(
                    vips = ?vips,
                    routes_file = %config.routes_file.display(),
                    "BIRD reloaded the routes file"
                );
                self.applied = Some((config, vips));
                self.retry_at = None;
                self.last_failure = None;
            }
            Err(error) => {
                self.metrics.last_reload_success.set(0);
                self.metrics
                    .reloads
                    .get_or_create(&[("result", "failed")])
                    .inc();
                let message = error.to_string();
                if self.last_failure.as_ref() != Some(&message) {
                    error!(
                        %error,
                        retry_ms = RETRY_INTERVAL.as_millis() as u64,
                        "cannot update BIRD's routes; retrying, and logging again only \
                         when the error changes"
                    );
                    self.last_failure = Some(message);
                }
                self.applied = None;
                self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
            }
        }
        result
    }

    async fn write_and_reload(
        &mut self,
        config: &BgpConfig,
        vips: &BTreeSet<IpAddr>,
    ) -> Result<(), BirdError> {
        let text = bird::render(config, vips);
        let path = config.routes_file.clone();
        let written =
            tokio::task::spawn_blocking(move || match bird::stamp_if_equal(&path, &text) {
                Some(stamp) => Ok(stamp),
                None => bird::write_atomically(&path, &text),
            })
            .await;
        let stamp = match written {
            Ok(result) => result?,
            Err(join_error) => {
                return Err(BirdError::Write {
                    path: config.routes_file.clone(),
                    source: std::io::Error::other(join_error),
                })
            }
        };
        self.written = Some((config.routes_file.clone(), stamp));
        // BIRD reloads even an unchanged file: a previous process may have written it
        // and stopped before BIRD read it.
        let reply = self.client(config).configure().await;
        self.metrics.bird_reachable.set(i64::from(!matches!(
            reply,
            Err(BirdError::Connect { .. }
                | BirdError::SocketDenied { .. }
                | BirdError::Timeout { .. })
        )));
        reply.map(drop)
    }

    async fn probe(&self) {
        let config = Arc::clone(&self.config.borrow());
        let reachable = self.client(&config).status().await.is_ok();
        self.metrics.bird_reachable.set(i64::from(reachable));
    }

    fn client(&self, config: &BgpConfig) -> BirdClient {
        BirdClient::new(config.bird_socket.clone(), BIRD_TIMEOUT)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use spike_core::config::{BackendConfig, Protocol};
    use spike_core::flow::HashFields;

    use super::*;

    fn service(vip: &str, weights: &[u32]) -> ServiceConfig {
        ServiceConfig {
            name: format!("svc-{vip}"),
            vip: vip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
            hash: HashFields::default(),
            table_size: 251,
            backends: weights
                .iter()
                .enumerate()
                .map(|(index, &weight)| BackendConfig {
                    name: format!("node-{index}"),
                    address: format!("192.0.2.{}", 11 + index).parse().unwrap(),
                    vtep_mac: "0a:58:0a:f4:00:0a".parse().unwrap(),
                    weight,
                    next_hop_mac: None,
                })
                .collect(),
        }
    }

    fn status(applied_generation: u64, heartbeat_unix_ms: u64) -> DataplaneStatus {
        DataplaneStatus {
            applied_generation,
            heartbeat_unix_ms,
            ..DataplaneStatus::default()
        }
    }

    fn set(vips: &[&str]) -> BTreeSet<IpAddr> {
        vips.iter().map(|vip| vip.parse().unwrap()).collect()
    }

    const TIMEOUT: Duration = Duration::from_millis(1000);

    #[test]
    fn announceable_needs_a_weighted_backend() {
        let services = [
            service("203.0.113.1", &[1, 0]),
            service("203.0.113.2", &[0, 0]),
            service("203.0.113.3", &[]),
            service("2001:db8::1", &[2]),
        ];
        assert_eq!(
            announceable(&services),
            set(&["203.0.113.1", "2001:db8::1"])
        );
    }

    #[test]
    fn vip_with_one_weighted_service_is_announced() {
        let mut udp = service("203.0.113.1", &[0]);
        udp.protocol = Protocol::Udp;
        let services = [udp, service("203.0.113.1", &[1])];
        assert_eq!(announceable(&services), set(&["203.0.113.1"]));
    }

    #[test]
    fn decide_announces_the_applied_generation() {
        let generations = Generations::default();
        generations.record(4, &[service("203.0.113.1", &[1])]);
        generations.record(5, &[service("203.0.113.2", &[1])]);
        // The dataplane still runs 4 while 5 is on its way: 4's VIPs stay announced.
        let decision = decide(&status(4, 10_000), 10_500, TIMEOUT, &generations, None);
        assert_eq!(
            decision,
            Decision::Announce {
                generation: 4,
                vips: set(&["203.0.113.1"])
            }
        );
    }

    #[test]
    fn decide_withdraws_after_a_stale_heartbeat() {
        let generations = Generations::default();
        generations.record(4, &[service("203.0.113.1", &[1])]);
        let decision = decide(&status(4, 10_000), 11_001, TIMEOUT, &generations, None);
        assert_eq!(
            decision,
            Decision::DataplaneStopped {
                heartbeat_age_ms: Some(1001)
            }
        );
        let decision = decide(&status(0, 0), 11_001, TIMEOUT, &generations, None);
        assert_eq!(
            decision,
            Decision::DataplaneStopped {
                heartbeat_age_ms: None
            }
        );
    }

    #[test]
    fn decide_holds_after_a_replaced_file() {
        let generations = Generations::default();
        generations.record(4, &[service("203.0.113.1", &[1])]);
        // The dataplane's last heartbeat came before the routes file was replaced.
        let decision = decide(
            &status(4, 10_000),
            10_200,
            TIMEOUT,
            &generations,
            Some(10_100),
        );
        assert_eq!(
            decision,
            Decision::Replaced {
                noticed_unix_ms: 10_100
            }
        );
        // A heartbeat after the replacement comes from a dataplane that runs again.
        let decision = decide(
            &status(4, 10_120),
            10_200,
            TIMEOUT,
            &generations,
            Some(10_100),
        );
        assert_eq!(
            decision,
            Decision::Announce {
                generation: 4,
                vips: set(&["203.0.113.1"])
            }
        );
        // A stale heartbeat is a stopped dataplane, replaced file or not.
        let decision = decide(
            &status(4, 10_000),
            12_000,
            TIMEOUT,
            &generations,
            Some(10_100),
        );
        assert_eq!(
            decision,
            Decision::DataplaneStopped {
                heartbeat_age_ms: Some(2000)
            }
        );
    }

    #[test]
    fn decide_leaves_an_unknown_generation_alone() {
        let generations = Generations::default();
        generations.record(4, &[service("203.0.113.1", &[1])]);
        let decision = decide(&status(3, 10_000), 10_000, TIMEOUT, &generations, None);
        assert_eq!(
            decision,
            Decision::Unknown {
                applied_generation: 3
            }
        );
    }

    #[test]
    fn generations_keep_the_newest() {
        let generations = Generations::default();
        for generation in 1..=(KEPT_GENERATIONS as u64 + 4) {
            generations.record(generation, &[service("203.0.113.1", &[1])]);
        }
        assert_eq!(generations.vips(4), None);
        assert_eq!(generations.vips(5), Some(set(&["203.0.113.1"])));
        assert_eq!(
            generations.vips(KEPT_GENERATIONS as u64 + 4),
            Some(set(&["203.0.113.1"]))
        );
    }

    /// BIRD 2 in the foreground inside a new network namespace (`unshare -n`), so that
    /// its BGP session to 127.0.0.1 reaches nothing and it binds no port on the host.
    /// Its control socket is a file, reachable from the test. Needs root.
    struct IsolatedBird(std::process::Child);

    impl IsolatedBird {
        fn start(directory: &std::path::Path, routes_file: &std::path::Path) -> IsolatedBird {
            let config = directory.join("bird.conf");
            std::fs::write(&config, format!("include \"{}\";\n", routes_file.display())).unwrap();
            let child = std::process::Command::new("unshare")
                .arg("-n")
                .arg("bird")
                .arg("-f")
                .arg("-c")
                .arg(&config)
                .arg("-s")
                .arg(directory.join("bird.ctl"))
                .arg("-P")
                .arg(directory.join("bird.pid"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("unshare and bird must be installed (scripts/install-deps.sh)");
            IsolatedBird(child)
        }
    }

    impl Drop for IsolatedBird {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Polls BIRD's IPv4 VIP routes until `announced(routes)` holds, writing the
    /// dataplane's heartbeat on each poll when `beating`. Panics after 10 s.
    async fn wait_for_routes(
        client: &BirdClient,
        subscriber: &spike_snapring::Subscriber,
        beating: bool,
        announced: impl Fn(&str) -> bool,
        what: &str,
    ) {
        let mut routes = String::new();
        for _ in 0..200 {
            if beating {
                subscriber.heartbeat();
            }
            if let Ok(reply) = client.command("show route protocol spike_vips4").await {
                routes = reply.iter().map(|line| line.text.clone() + "\n").collect();
                if announced(&routes) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: BIRD's routes stayed {routes:?}");
    }

    #[test]
    fn announcer_follows_the_dataplane() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let directory = tempfile::tempdir().unwrap();
            let ring = directory.path().join("ring");
            let geometry = spike_snapring::Geometry::default();
            let publisher = Arc::new(Mutex::new(Publisher::attach(&ring, geometry).unwrap()));
            let subscriber = spike_snapring::Subscriber::attach(&ring, geometry).unwrap();
            let generations = Generations::default();
            generations.record(1, &[service("203.0.113.80", &[1, 1])]);
            generations.record(2, &[service("203.0.113.80", &[0, 0])]);
            subscriber.report_applied(1);
            subscriber.heartbeat();

            let routes_file = directory.path().join("routes.conf");
            let config = BgpConfig {
                asn: 65001,
                router_id: "192.0.2.1".parse().unwrap(),
                neighbors: vec![config::Neighbor {
                    address: "127.0.0.1".parse().unwrap(),
                    asn: 65000,
                }],
                hold_time_s: 3,
                bfd: false,
                bird_socket: directory.path().join("bird.ctl"),
                routes_file: routes_file.clone(),
                drain: Duration::ZERO,
                dataplane_timeout: Duration::from_millis(300),
            };
            let announcer = Announcer::start(
                config.clone(),
                publisher,
                generations,
                BgpMetrics::default(),
            );
            assert!(
                routes_file.exists(),
                "the routes file is written for BIRD's start"
            );
            let _bird = IsolatedBird::start(directory.path(), &routes_file);
            let client = BirdClient::new(directory.path().join("bird.ctl"), BIRD_TIMEOUT);
            let vip = |routes: &str| routes.contains("203.0.113.80/32");

            wait_for_routes(&client, &subscriber, true, vip, "announce while running").await;
            wait_for_routes(
                &client,
                &subscriber,
                false,
                |r| !vip(r),
                "withdraw when silent",
            )
            .await;
            wait_for_routes(&client, &subscriber, true, vip, "announce when back").await;
            subscriber.report_applied(2);
            wait_for_routes(
                &client,
                &subscriber,
                true,
                |r| !vip(r),
                "withdraw at weight 0",
            )
            .await;
            subscriber.report_applied(1);
            wait_for_routes(&client, &subscriber, true, vip, "announce at weight 1").await;

            // A reloaded [bgp] section is rendered and loaded without a restart.
            announcer.update(BgpConfig {
                hold_time_s: 6,
                ..config
            });
            let mut rendered = String::new();
            for _ in 0..100 {
                subscriber.heartbeat();
                rendered = std::fs::read_to_string(&routes_file).unwrap();
                if rendered.contains("hold time 6;") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(rendered.contains("hold time 6;"), "{rendered}");
            assert!(
                rendered.contains("route 203.0.113.80/32 blackhole;"),
                "{rendered}"
            );
            wait_for_routes(&client, &subscriber, true, vip, "announce after the update").await;

            announcer.drain().await.unwrap();
            let reply = client
                .command("show route protocol spike_vips4")
                .await
                .unwrap();
            let routes: String = reply.iter().map(|line| line.text.clone()).collect();
            assert!(
                !vip(&routes),
                "drain withdraws while the dataplane runs: {routes}"
            );
            // The drained announcer keeps the VIP withdrawn although the dataplane runs.
            wait_for_routes(&client, &subscriber, true, |r| !vip(r), "stay withdrawn").await;
            announcer.stop();
        });
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Polls BIRD's IPv4 VIP routes for `duration`, writing no heartbeat, and panics if
    /// `announced(routes)` ever returns true.
    async fn assert_routes_stay(
        client: &BirdClient,
        duration: Duration,
        announced: impl Fn(&str) -> bool,
        what: &str,
    ) {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            let reply = client
                .command("show route protocol spike_vips4")
                .await
                .unwrap();
            let routes: String = reply.iter().map(|line| line.text.clone() + "\n").collect();
            assert!(
                !announced(&routes),
                "{what}: BIRD's routes became {routes:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[test]
    fn announcer_external_withdrawal() {
        runtime().block_on(async {
            let directory = tempfile::tempdir().unwrap();
            let ring = directory.path().join("ring");
            let geometry = spike_snapring::Geometry::default();
            let publisher = Arc::new(Mutex::new(Publisher::attach(&ring, geometry).unwrap()));
            let subscriber = spike_snapring::Subscriber::attach(&ring, geometry).unwrap();
            let generations = Generations::default();
            generations.record(1, &[service("203.0.113.80", &[1])]);
            subscriber.report_applied(1);
            subscriber.heartbeat();

            let routes_file = directory.path().join("routes.conf");
            // Far longer than the test, so the control plane never detects a stale
            // heartbeat, as when the dataplane restarts within the timeout.
            let config = BgpConfig {
                asn: 65001,
                router_id: "192.0.2.1".parse().unwrap(),
                neighbors: vec![config::Neighbor {
                    address: "127.0.0.1".parse().unwrap(),
                    asn: 65000,
                }],
                hold_time_s: 3,
                bfd: false,
                bird_socket: directory.path().join("bird.ctl"),
                routes_file: routes_file.clone(),
                drain: Duration::ZERO,
                dataplane_timeout: Duration::from_secs(60),
            };
            let metrics = BgpMetrics::default();
            let announcer =
                Announcer::start(config.clone(), publisher, generations, metrics.clone());
            let _bird = IsolatedBird::start(directory.path(), &routes_file);
            let client = BirdClient::new(directory.path().join("bird.ctl"), BIRD_TIMEOUT);
            let vip = |routes: &str| routes.contains("203.0.113.80/32");
            wait_for_routes(&client, &subscriber, true, vip, "announce while running").await;
            // BIRD may read the VIP from the file before it replies to the announcer's
            // reload, and the announcer's retry would then announce it again later.
            for _ in 0..100 {
                if metrics.announced_vips.get() == 1 {
                    break;
                }
                subscriber.heartbeat();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                metrics.announced_vips.get(),
                1,
                "BIRD took the announcer's reload"
            );

            // The dataplane stops, and its unit runs `spike-controlplane --withdraw`.
            withdraw(&config).await.unwrap();
            let rendered = std::fs::read_to_string(&routes_file).unwrap();
            assert!(!rendered.contains("203.0.113.80"), "{rendered}");
            assert!(
                rendered.contains("protocol bgp spike_peer_127_0_0_1 {"),
                "the sessions stay: {rendered}"
            );
            assert_routes_stay(
                &client,
                Duration::from_secs(1),
                vip,
                "the stopped dataplane's recent heartbeat announced again",
            )
            .await;

            wait_for_routes(&client, &subscriber, true, vip, "announce when back").await;
            let rendered = std::fs::read_to_string(&routes_file).unwrap();
            assert!(
                rendered.contains("route 203.0.113.80/32 blackhole;"),
                "{rendered}"
            );
            announcer.stop();
        });
    }
}
