//! The common case of [`Worker::process`] in one flat function: a frame that
//! `prefetch_burst` parsed, of a flow conntrack tracks, going out whole to the backend it
//! is tracked to.
//!
//! Most packets of a busy load balancer are of this kind. The general path decides them
//! too, through steps shared with new flows, fragments, replies and redirects. There each
//! step writes its part of [`Output`] and the counters read it back. Here each output
//! field and counter is written once, and a frame that needs another rule goes to the
//! general path before anything changes.

use super::{cached_service, transport_class, Output, TrackedBackend, Worker};
use crate::hint::{Hint, PROTOCOL_UDP};
use crate::snapshot::{ServiceKey, Snapshot};
use crate::verdict::Selection;
use crate::wire::EthernetFrame;

impl Worker {
    /// Forwards the frame of hint `index` and returns `true` when the fast path applies:
    ///
    /// - the frame passes the MAC filter as unicast to this node, and is no redirect from
    ///   another Spike node;
    /// - it goes to a service, and its transport header is valid;
    /// - conntrack contains a live entry for its flow whose backend is still at the
    ///   stored position in the service, and it is not a SYN to a draining backend;
    /// - the encapsulated packet fits the MTU.
    ///
    /// Otherwise it returns `false` and has changed nothing but the service cache, so
    /// that the general path decides the frame from the start, with the same result it
    /// would have had alone.
    #[inline(always)]
    pub(super) fn forward_tracked(
        &mut self,
        snapshot: &Snapshot,
        bytes: &[u8],
        index: usize,
        now_ns: u64,
        out: &mut Output,
    ) -> bool {
        let Some(Some(hint)) = self.hints.get(index) else {
            return false;
        };
        let hint: &Hint = hint;
        if let Some(own) = self.mac_filter {
            if EthernetFrame::new_unchecked(bytes).dst_addr() != own {
                return false;
            }
        }
        let key = &hint.key;
        if let Some(cluster) = &snapshot.cluster {
            if key.protocol == PROTOCOL_UDP
                && key.dst_port == cluster.port
                && cluster.is_own(&key.dst)
            {
                return false;
            }
        }
        let service_key = ServiceKey {
            vip: key.dst,
            protocol: key.protocol,
            port: key.dst_port,
        };
        let Some(service_index) = cached_service(&mut self.service_cache, snapshot, &service_key)
        else {
            return false;
        };
        let (l3_start, transport_start, ip_end) = (
            hint.l3_start as usize,
            hint.transport_start as usize,
            hint.ip_end as usize,
        );
        let (Some(transport), Some(inner)) = (
            bytes.get(transport_start..ip_end),
            bytes.get(l3_start..ip_end),
        ) else {
            return false;
        };
        let Ok((class, syn)) = transport_class(key.protocol, transport, false) else {
            return false;
        };
        let Some(service) = snapshot.services.get(service_index as usize) else {
            return false;
        };
        let Some(entry) = self.conntrack.find_mut(hint.hash, now_ns) else {
            return false;
        };
        let tracked = entry.value();
        let backend_index = tracked.backend_index;
        let Some(backend) = service
            .backends
            .get(backend_index as usize)
            .filter(|backend| backend.id == tracked.backend_id())
        else {
            return false;
        };
        if (syn && backend.weight == 0) || inner.len() > backend.template.max_inner_len() {
            return false;
        }

        // From here on, the same writes as the general path makes for a tracked forward.
        let class = entry.class().after(class);
        entry.refresh(
            TrackedBackend::new(backend_index, tracked.backend_id()),
            class,
            now_ns,
        );

        let ident = self.next_ident;
        self.next_ident = ident.wrapping_add(1);
        let template = &backend.template;
        (out.header_len, out.udp_checksum_offloaded) = template.write(
            &snapshot.encap,
            inner,
            hint.hash,
            ident as u16,
            self.udp_checksum_offload,
            &mut out.header,
        );
        out.inner = l3_start..ip_end;
        out.fragment = false;
        out.split_inner = false;
        out.outer_ipv6 = template.outer_ipv6();
        out.fragment_ident = ident;
        out.mtu = usize::from(snapshot.encap.mtu);
        out.reply_len = 0;
        out.service = Some(service_index);
        out.backend = Some(backend_index);
        out.selection = Some(Selection::Tracked);
        out.flow = Some(*key);
        out.redirect = None;

        let counters = &mut self.counters;
        counters.rx_packets += 1;
        counters.rx_bytes += bytes.len() as u64;
        counters.forwarded += 1;
        counters.selections[Selection::Tracked.index()] += 1;
        counters.count_forward(service_index, backend_index, inner.len());
        true
    }
}
