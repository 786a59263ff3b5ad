//! Snapshots from the control plane through the shared-memory ring, and counters back.
//!
//! With `dpdk.snapshot_ring` set, the main lcore polls the ring every control tick. A
//! new snapshot is copied out, validated (slot magic, version, checksum and length in
//! the ring; then every payload length, the config and each table's fit to its
//! service) and swapped in through the same `ArcSwap` a reload uses, so workers pick it
//! up at their next burst. A rejected snapshot is counted in the ring, logged, and the
//! running one stays. When the control plane dies nothing is published, so the
//! dataplane keeps its last snapshot and its conntrack tables.
//!
//! `[conntrack]`, `[icmp]` and `[dpdk]` always come from the dataplane's own file.
//! `hash.key` comes from the snapshot: when it differs from the file's, the snapshot's
//! key is used, a warning is logged once per distinct key and `hash_key_mismatches`
//! counts each such snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spike_core::config::HashKey;
use spike_core::{Config, Snapshot};
use spike_snapring::payload::{self, DecodeError};
use spike_snapring::{Geometry, Received, RingError, Subscriber};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::error::one_line;
use crate::poll::Shared;
use crate::reload::{self, ReloadError};
use crate::report::Totals;

/// How long the main lcore waits between attempts to open a ring it could not open.
const ATTACH_RETRY: Duration = Duration::from_secs(1);
/// How long after attaching a ring with neither a snapshot nor a control plane heartbeat
/// the dataplane warns that no control plane writes it.
const UNWRITTEN_WARNING: Duration = Duration::from_secs(5);

/// Reason a snapshot from the ring was rejected.
#[derive(Debug, Error)]
enum Rejection {
    #[error(transparent)]
    Slot(#[from] spike_snapring::SlotError),
    #[error(transparent)]
    Payload(#[from] DecodeError),
    #[error(transparent)]
    Frame(#[from] ReloadError),
}

/// The dataplane's link to the ring, opened when `dpdk.snapshot_ring` is set.
#[derive(Debug)]
pub struct RingLink {
    path: PathBuf,
    subscriber: Option<Subscriber>,
    next_attach: Instant,
    /// Whether the last attempt to open the ring failed, so repeated failures log once.
    attach_failing: bool,
    key_check: KeyCheck,
    /// When the ring was attached, until it delivers a snapshot or the unwritten-ring
    /// warning was logged.
    unwritten_since: Option<Instant>,
}

/// Comparison of each applied snapshot's hash key with the dataplane file's.
#[derive(Debug, Default)]
struct KeyCheck {
    /// The differing key last warned about, so that each distinct key warns once.
    warned: Option<HashKey>,
    /// Applied snapshots whose key differed from the file's.
    mismatches: u64,
}

impl KeyCheck {
    /// Records a snapshot's key and returns whether this mismatch needs a warning: the
    /// first snapshot with a key other than the file's, or with another differing key
    /// than the last warned one.
    fn observe(&mut self, file: &HashKey, snapshot: &HashKey) -> bool {
        if file == snapshot {
            self.warned = None;
            return false;
        }
        self.mismatches += 1;
        if self.warned.as_ref() == Some(snapshot) {
            return false;
        }
        self.warned = Some(*snapshot);
        true
    }
}

impl RingLink {
    /// Opens the ring at `path`, creating it when the control plane has not yet. A ring
    /// that cannot be opened is logged and retried every second from [`RingLink::poll`]
    /// while the dataplane forwards with the snapshot from its file.
    ///
    /// # Errors
    ///
    /// [`RingError::ReaderLocked`] when another dataplane reads the ring: two readers
    /// would mix their heartbeats and counters, so this one must not start.
    pub fn new(path: &Path) -> Result<RingLink, RingError> {
        let mut link = RingLink {
            path: path.to_owned(),
            subscriber: None,
            next_attach: Instant::now(),
            attach_failing: false,
            key_check: KeyCheck::default(),
            unwritten_since: None,
        };
        if let Some(error @ RingError::ReaderLocked { .. }) = link.try_attach() {
            return Err(error);
        }
        Ok(link)
    }

    /// Attaches to the ring. On failure it logs the error (once until an attach
    /// succeeds) and returns it.
    fn try_attach(&mut self) -> Option<RingError> {
        self.next_attach = Instant::now() + ATTACH_RETRY;
        match Subscriber::attach(&self.path, Geometry::default()) {
            Ok(subscriber) => {
                info!(ring = %self.path.display(), "snapshot ring attached");
                self.subscriber = Some(subscriber);
                self.attach_failing = false;
                self.unwritten_since = Some(Instant::now());
                None
            }
            Err(error) => {
                if !self.attach_failing {
                    error!(
                        ring = %self.path.display(),
                        error = %error,
                        "cannot open the snapshot ring; forwarding with the snapshot from \
                         the config file and retrying every second"
                    );
                }
                self.attach_failing = true;
                Some(error)
            }
        }
    }

    /// Takes a new snapshot from the ring if one was published and swaps it in.
    /// Returns the replaced snapshot, which the caller keeps alive for a while so that
    /// its memory is not freed on a worker.
    pub fn poll(
        &mut self,
        running: &Config,
        max_frame_data: usize,
        shared: &Shared,
    ) -> Option<Arc<Snapshot>> {
        if self.subscriber.is_none() && Instant::now() >= self.next_attach {
            let _ = self.try_attach();
        }
        let subscriber = self.subscriber.as_mut()?;
        subscriber.heartbeat();
        let received = subscriber.poll();
        if !matches!(received, Received::Nothing) {
            self.unwritten_since = None;
        }
        let unwritten_for = self.unwritten_since.map(|since| since.elapsed());
        if unwritten_for.is_some_and(|elapsed| elapsed >= UNWRITTEN_WARNING) {
            self.unwritten_since = None;
            if subscriber.controlplane_heartbeat_unix_ms() == 0 {
                warn!(
                    ring = %self.path.display(),
                    "the snapshot ring has no snapshot (generation 0) and no control plane \
                     heartbeat {} s after it was attached: forwarding with the services of \
                     the config file; check that spike-controlplane runs with \
                     controlplane.ring set to this path",
                    UNWRITTEN_WARNING.as_secs()
                );
            }
        }
        let (delivery, result) = match received {
            Received::Nothing => return None,
            Received::Snapshot(delivery) => {
                let result = build(&delivery.payload, running, max_frame_data, shared).map(
                    |(key, snapshot)| {
                        if self.key_check.observe(&running.hash_key, &key) {
                            warn!(
                                generation = delivery.generation,
                                "hash.key of the snapshot differs from this dataplane's \
                                 config file; the snapshot's key is used, so set the same \
                                 key in both files"
                            );
                        }
                        snapshot
                    },
                );
                ((delivery.sequence, delivery.generation), result)
            }
            Received::Invalid {
                sequence,
                generation,
                error,
            } => ((sequence, generation), Err(Rejection::Slot(error))),
        };
        let (sequence, generation) = delivery;
        match result {
            Ok(snapshot) => {
                let services = snapshot.services.len();
                let local = snapshot.generation;
                let previous = shared.snapshot.swap(Arc::new(snapshot));
                subscriber.report_applied(generation);
                info!(
                    generation,
                    sequence, local, services, "snapshot from the ring applied"
                );
                Some(previous)
            }
            Err(rejection) => {
                subscriber.report_rejected(generation);
                error!(
                    generation,
                    sequence,
                    error = %one_line(&rejection.to_string()),
                    "snapshot from the ring rejected; the running snapshot stays"
                );
                None
            }
        }
    }

    /// Returns the number of applied snapshots whose hash key differed from the file's.
    pub fn hash_key_mismatches(&self) -> u64 {
        self.key_check.mismatches
    }

    /// Publishes `totals` (the counters file's JSON object) for the control plane.
    pub fn publish_counters(&self, totals: &Totals) {
        let Some(subscriber) = &self.subscriber else {
            return;
        };
        let text = totals.to_json().to_string();
        if let Err(error) = subscriber.write_counters(text.as_bytes()) {
            warn!(%error, "cannot publish the counters through the snapshot ring");
        }
    }

    /// Logs that a SIGHUP reload does not apply while the ring provides the services.
    pub fn log_reload_ignored(&self) {
        warn!(
            ring = %self.path.display(),
            "SIGHUP ignored: services come from the snapshot ring while dpdk.snapshot_ring \
             is set"
        );
    }
}

/// Decodes a payload and builds its snapshot with the next local generation, which
/// differs from the running one so that workers revalidate tracked flows. Returns the
/// snapshot's hash key with it.
fn build(
    bytes: &[u8],
    running: &Config,
    max_frame_data: usize,
    shared: &Shared,
) -> Result<(HashKey, Snapshot), Rejection> {
    let decoded = payload::decode(bytes)?;
    let generation = shared.snapshot.load().generation.wrapping_add(1);
    let (config, snapshot) = decoded.into_snapshot(running, generation)?;
    reload::check_mtu(config.node.mtu, max_frame_data)?;
    Ok((config.hash_key, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_mismatch_warns_once_per_key() {
        let file = HashKey([1; 16]);
        let other = HashKey([2; 16]);
        let third = HashKey([3; 16]);
        let mut check = KeyCheck::default();

        assert!(!check.observe(&file, &file), "matching key warned");
        assert_eq!(check.mismatches, 0);

        assert!(check.observe(&file, &other), "first mismatch not warned");
        assert!(!check.observe(&file, &other), "same mismatch warned again");
        assert_eq!(check.mismatches, 2);

        assert!(
            check.observe(&file, &third),
            "a new differing key not warned"
        );
        assert_eq!(check.mismatches, 3);

        // Back to the file's key, then the old differing key again: a new change.
        assert!(!check.observe(&file, &file));
        assert!(
            check.observe(&file, &other),
            "mismatch after a match not warned"
        );
        assert_eq!(check.mismatches, 4);
    }
}
