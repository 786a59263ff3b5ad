//! Per-core counters. A worker owns its counters and nothing else writes them, so they
//! are plain integers; readers copy them between bursts.

use crate::snapshot::Snapshot;
use crate::verdict::{DropReason, KernelReason, Selection, Verdict};

/// Packets and bytes (of the inner IP packet) sent to one service or backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    #[inline]
    fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// Counters of one service, with one entry per backend in snapshot order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    pub name: String,
    pub traffic: Traffic,
    pub backends: Vec<(u64, Traffic)>,
    /// Traffic sent to backends that a later snapshot removed from the service, so that
    /// `backends` and this add up to `traffic`.
    pub removed: Traffic,
}

/// Everything one worker counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub forwarded: u64,
    pub replies: u64,
    /// Fragments held until their first fragment arrives; each ends in `held_released`
    /// or `held_dropped`.
    pub held: u64,
    pub kernel: [u64; KernelReason::COUNT],
    pub drops: [u64; DropReason::COUNT],
    pub selections: [u64; Selection::COUNT],
    /// Forwarded packets split into outer fragments because they exceeded the MTU.
    pub outer_fragmented: u64,
    /// ICMP fragmentation-needed or packet-too-big replies sent.
    pub too_big_sent: u64,
    /// First fragments whose record could not be stored because the table was full.
    pub fragment_table_full: u64,
    /// Fragments another Spike node redirected here, decided whatever their verdict.
    pub redirected_in: u64,
    /// Held fragments sent after their first fragment was recorded (forwarded, or a
    /// too-big reply).
    pub held_released: u64,
    /// Held fragments given up: their slot expired unreleased, or their second decision
    /// was a drop.
    pub held_dropped: u64,
    /// Gauge: entries in the conntrack table, expired ones not yet reaped or reused
    /// included. Updated after each insert and reap.
    pub conntrack_entries: u64,
    /// New flows that took the slot of another flow's expired conntrack entry.
    pub conntrack_expired_replaced: u64,
    /// New flows left untracked because the conntrack table was full.
    pub conntrack_insert_failed: u64,
    pub services: Vec<ServiceCounters>,
}

impl Counters {
    #[inline]
    pub(crate) fn count_verdict(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Forward => self.forwarded += 1,
            Verdict::Reply => self.replies += 1,
            Verdict::Held => self.held += 1,
            Verdict::Kernel(reason) => self.kernel[reason.index()] += 1,
            Verdict::Drop(reason) => self.drops[reason.index()] += 1,
        }
    }

    #[inline(always)]
    pub(crate) fn count_forward(&mut self, service: u32, backend: u32, bytes: usize) {
        if let Some(counters) = self.services.get_mut(service as usize) {
            counters.traffic.add(bytes);
            if let Some((_, traffic)) = counters.backends.get_mut(backend as usize) {
                traffic.add(bytes);
            }
        }
    }

    pub fn kernel_count(&self, reason: KernelReason) -> u64 {
        self.kernel[reason.index()]
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    pub fn selection_count(&self, selection: Selection) -> u64 {
        self.selections[selection.index()]
    }

    /// Total frames dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Total frames sent to the kernel for any reason.
    pub fn to_kernel(&self) -> u64 {
        self.kernel.iter().sum()
    }

    /// Reshapes the per-service counters for a new snapshot, keeping the counts of
    /// services (by name) and backends (by id) that are still present. Runs once per
    /// snapshot swap, not per packet.
    pub(crate) fn adopt(&mut self, snapshot: &Snapshot) {
        let old = std::mem::take(&mut self.services);
        self.services = snapshot
            .services
            .iter()
            .map(|service| {
                let previous = old.iter().find(|counters| counters.name == service.name);
                let mut removed = previous
                    .map(|counters| counters.removed)
                    .unwrap_or_default();
                for (id, traffic) in previous.iter().flat_map(|counters| &counters.backends) {
                    if service.backend_index(*id).is_none() {
                        removed.packets += traffic.packets;
                        removed.bytes += traffic.bytes;
                    }
                }
                ServiceCounters {
                    name: service.name.clone(),
                    traffic: previous
                        .map(|counters| counters.traffic)
                        .unwrap_or_default(),
                    backends: service
                        .backends
                        .iter()
                        .map(|backend| {
                            let traffic = previous
                                .and_then(|counters| {
                                    counters.backends.iter().find(|(id, _)| *id == backend.id)
                                })
                                .map(|(_, traffic)| *traffic)
                                .unwrap_or_default();
                            (backend.id, traffic)
                        })
                        .collect(),
                    removed,
                }
            })
            .collect();
    }

    /// Adds another worker's counters into these, for totals across cores. Services are
    /// matched by name and backends by id, because workers adopt a new snapshot at their
    /// next packet and may briefly hold different layouts; entries only `other` has are
    /// appended.
    pub fn merge(&mut self, other: &Counters) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.forwarded += other.forwarded;
        self.replies += other.replies;
        add_arrays(&mut self.kernel, &other.kernel);
        add_arrays(&mut self.drops, &other.drops);
        add_arrays(&mut self.selections, &other.selections);
        self.outer_fragmented += other.outer_fragmented;
        self.too_big_sent += other.too_big_sent;
        self.fragment_table_full += other.fragment_table_full;
        self.redirected_in += other.redirected_in;
        self.held += other.held;
        self.held_released += other.held_released;
        self.held_dropped += other.held_dropped;
        self.conntrack_entries += other.conntrack_entries;
        self.conntrack_expired_replaced += other.conntrack_expired_replaced;
        self.conntrack_insert_failed += other.conntrack_insert_failed;
        for theirs in &other.services {
            let Some(mine) = self
                .services
                .iter_mut()
                .find(|mine| mine.name == theirs.name)
            else {
                self.services.push(theirs.clone());
                continue;
            };
            mine.traffic.packets += theirs.traffic.packets;
            mine.traffic.bytes += theirs.traffic.bytes;
            mine.removed.packets += theirs.removed.packets;
            mine.removed.bytes += theirs.removed.bytes;
            for (id, traffic) in &theirs.backends {
                match mine.backends.iter_mut().find(|(mine_id, _)| mine_id == id) {
                    Some((_, total)) => {
                        total.packets += traffic.packets;
                        total.bytes += traffic.bytes;
                    }
                    None => mine.backends.push((*id, *traffic)),
                }
            }
        }
    }
}

fn add_arrays(into: &mut [u64], from: &[u64]) {
    for (total, value) in into.iter_mut().zip(from) {
        *total += value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, backends: &[(u64, u64)]) -> ServiceCounters {
        ServiceCounters {
            name: name.to_owned(),
            traffic: Traffic {
                packets: backends.iter().map(|(_, packets)| packets).sum(),
                bytes: 0,
            },
            backends: backends
                .iter()
                .map(|&(id, packets)| {
                    (
                        id,
                        Traffic {
                            packets,
                            bytes: packets * 100,
                        },
                    )
                })
                .collect(),
            removed: Traffic::default(),
        }
    }

    #[test]
    fn merge_matches_by_name_and_id() {
        let mut total = Counters {
            rx_packets: 5,
            services: vec![service("web", &[(1, 3), (2, 2)]), service("dns", &[(1, 0)])],
            ..Counters::default()
        };
        let other = Counters {
            rx_packets: 7,
            services: vec![service("dns", &[(1, 4)]), service("web", &[(2, 1), (3, 2)])],
            ..Counters::default()
        };
        total.merge(&other);

        assert_eq!(total.rx_packets, 12);
        let web = &total.services[0];
        assert_eq!(web.name, "web");
        assert_eq!(web.traffic.packets, 8);
        assert_eq!(
            web.backends,
            vec![
                (
                    1,
                    Traffic {
                        packets: 3,
                        bytes: 300
                    }
                ),
                (
                    2,
                    Traffic {
                        packets: 3,
                        bytes: 300
                    }
                ),
                (
                    3,
                    Traffic {
                        packets: 2,
                        bytes: 200
                    }
                ),
            ]
        );
        assert_eq!(total.services[1].name, "dns");
        assert_eq!(total.services[1].traffic.packets, 4);
    }
}
