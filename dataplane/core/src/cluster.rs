//! The Spike nodes behind one ECMP route, and which of them handles a fragmented datagram.
//!
//! A router hashes a non-first IP fragment (it has no ports) differently from the first,
//! so the fragments of one datagram can reach different Spike nodes, and only the node
//! that saw the first fragment has its backend. Every node therefore sends each fragment
//! of a service's traffic to one designated node, chosen from the datagram's source,
//! destination and protocol, which all its fragments share. The designated node keeps the
//! fragment table and forwards every fragment to the backend of the first one.
//!
//! The choice is rendezvous (highest random weight) hashing: each node scores
//! `mix(hash ^ node_id)` and the highest score wins. `hash` is the keyed 3-tuple flow hash
//! (`hash.key`, the same on every node) and `node_id` a fixed hash of the node's address,
//! so every node computes the same answer from the same membership, in any list order and
//! with no coordination. A node that leaves moves only the datagrams it was designated for,
//! and a node that joins takes about 1/n of them. Maglev's table would give the same
//! properties but costs a table per membership for a path that carries few packets, and
//! a modulo hash over a sorted list would move most datagrams on every change. Clusters
//! have a handful of nodes, so scoring each of them per fragment is cheap.
//!
//! A redirected fragment travels as VXLAN on `vxlan.port` with `cluster.redirect_vni`:
//! `outer Ethernet | outer IP | UDP | VXLAN | inner Ethernet | original IP packet`, where
//! the inner Ethernet header goes from this node's VTEP MAC to the designated node's MAC.
//! A node that receives one never redirects it again.
//!
//! Fragments of one datagram take different paths to the designated node, so a non-first
//! fragment can reach it before the first one: the worker then holds a copy until the
//! first fragment is recorded (see `held.rs`).
//!
//! Fragment records and held fragments belong to one worker core. With several workers,
//! a redirected fragment (spread by its outer UDP header) and a fragment received
//! directly (spread by the NIC's hash of fragments) can reach different queues, so the
//! dataplane moves every fragment, redirect VXLAN included, to worker 0 (see
//! `steer.rs`).

use std::net::IpAddr;

use crate::config::Config;
use crate::encap::{EncapSettings, EncapTemplate};
use crate::snapshot::{backend_id, mapped};
use crate::wire::MacAddr;

/// One Spike node of the cluster, with the headers to redirect fragments to it.
#[derive(Clone, Debug)]
pub struct ClusterPeer {
    pub address: IpAddr,
    pub mac: MacAddr,
    /// Fixed hash of the address, the node's identity in the rendezvous choice.
    pub id: u64,
    /// Redirect headers for an inner IPv4 and an inner IPv6 packet.
    templates: [EncapTemplate; 2],
}

impl ClusterPeer {
    #[inline]
    pub(crate) fn template(&self, inner_ipv6: bool) -> &EncapTemplate {
        &self.templates[usize::from(inner_ipv6)]
    }
}

/// The cluster as a snapshot contains it.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub redirect_vni: u32,
    /// UDP port redirected fragments arrive on: `vxlan.port`.
    pub port: u16,
    pub peers: Vec<ClusterPeer>,
    /// Position of this node in `peers`.
    pub self_index: usize,
    own_ipv4: Option<[u8; 16]>,
    own_ipv6: Option<[u8; 16]>,
    /// Ethernet addresses for a reply to a redirected packet, in the order of a received
    /// frame (destination, source): the reply then goes from this node's MAC to its
    /// gateway, not back to the node that redirected the packet.
    pub(crate) reply_macs: [u8; 12],
}

impl Cluster {
    /// Builds the cluster of `config`, `None` without a `[cluster]` section. Returns
    /// `Err(address)` for a node whose family this node has no underlay address for,
    /// which validation rules out.
    pub(crate) fn build(config: &Config, encap: &EncapSettings) -> Result<Option<Self>, IpAddr> {
        let Some(cluster) = &config.cluster else {
            return Ok(None);
        };
        let mut settings = encap.clone();
        settings.vni = cluster.redirect_vni;
        let inner_v4 = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        let inner_v6 = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        let mut peers = Vec::with_capacity(cluster.nodes.len());
        for node in &cluster.nodes {
            let template = |inner| {
                EncapTemplate::new(&settings, inner, node.address, node.mac, node.mac)
                    .ok_or(node.address)
            };
            peers.push(ClusterPeer {
                address: node.address,
                mac: node.mac,
                id: backend_id(node.address),
                templates: [template(inner_v4)?, template(inner_v6)?],
            });
        }
        let mut reply_macs = [0u8; 12];
        reply_macs[..6].copy_from_slice(&config.node.mac.0);
        reply_macs[6..].copy_from_slice(&config.node.gateway_mac.0);
        Ok(Some(Cluster {
            redirect_vni: cluster.redirect_vni,
            port: config.vxlan.port,
            peers,
            self_index: cluster.self_index,
            own_ipv4: config.node.ipv4.map(|v4| mapped(IpAddr::V4(v4))),
            own_ipv6: config.node.ipv6.map(|v6| mapped(IpAddr::V6(v6))),
            reply_macs,
        }))
    }

    /// Returns the position in `peers` of the node designated for a datagram whose keyed
    /// 3-tuple hash is `three_tuple_hash`.
    #[inline]
    pub fn designated(&self, three_tuple_hash: u64) -> usize {
        let mut best = 0;
        let mut best_score = 0;
        for (index, peer) in self.peers.iter().enumerate() {
            let score = mix(three_tuple_hash ^ peer.id);
            // Scores of distinct ids never tie, because `mix` is a bijection; the address
            // decides should two addresses ever hash to one id.
            let wins = index == 0
                || score > best_score
                || (score == best_score && peer.address < self.peers[best].address);
            if wins {
                best = index;
                best_score = score;
            }
        }
        best
    }

    /// Returns whether `address` (IPv4-mapped for IPv4) is this node's underlay address.
    #[inline]
    pub fn is_own(&self, address: &[u8; 16]) -> bool {
        self.own_ipv4.as_ref() == Some(address) || self.own_ipv6.as_ref() == Some(address)
    }
}

/// MurmurHash3's 64-bit finalizer: a bijection that spreads every input bit over the
/// output, so nearby ids get unrelated scores.
#[inline]
fn mix(mut value: u64) -> u64 {
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_spreads_neighbours() {
        let a = mix(1);
        let b = mix(2);
        assert_ne!(a, b);
        assert!((a ^ b).count_ones() > 16, "{a:x} {b:x}");
        assert_eq!(mix(0), 0);
    }
}
