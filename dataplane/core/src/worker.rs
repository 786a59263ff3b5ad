//! The per-core forwarding decision.
//!
//! A [`Worker`] owns one core's conntrack table, fragment table, ICMP rate limit and
//! counters. [`Worker::process`] classifies one frame against a [`Snapshot`] and returns
//! a [`Verdict`]; for a forward it writes the encapsulation header into [`Output`] and
//! leaves the packet where it is, so a DPDK caller can prepend the header into the mbuf
//! headroom without copying the packet. Nothing here allocates after
//! [`Worker::new`], except when a new snapshot generation reshapes the per-service
//! counters.

mod fast;

use std::net::IpAddr;
use std::ops::Range;

use thiserror::Error;

use crate::config::Config;
use crate::conntrack::{classify_tcp, Conntrack, ConntrackError, FlowClass};
use crate::counters::Counters;
use crate::encap::{self, EncapTemplate, MAX_HEADER_LEN};
use crate::flow::{FlowKey, HashFields};
use crate::fragments::{FragmentKey, FragmentTable, FragmentTableError};
use crate::held::{HeldFragments, HELD_HEADER_LEN};
use crate::hint::{
    parse_flow_into, Hint, ETHERNET_HEADER_LEN, IPV6_HEADER_LEN, PROTOCOL_TCP, PROTOCOL_UDP,
    VLAN_TAG_LEN,
};
use crate::icmp::{self, MAX_REPLY_LEN};
use crate::ratelimit::TokenBucket;
use crate::snapshot::{is_ipv4_mapped, is_martian_source, mapped, Service, ServiceKey, Snapshot};
use crate::verdict::{DropReason, KernelReason, Selection, Verdict};
use crate::wire::{
    self, EtherType, EthernetFrame, Icmpv4Packet, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet,
    MacAddr, TcpPacket, UdpPacket, VlanTag, VxlanHeader,
};

/// Frames per burst that [`Worker::prefetch_burst`] prepares, DPDK's usual burst size.
pub const BURST_SIZE: usize = 32;

/// How many frames ahead of the one being decided [`Worker::process`] looks for flows whose
/// conntrack entry sits in their second bucket, to prefetch that line. Of 2, 4 and 8 frames,
/// 2 measured fastest at 1M flows (BENCHMARKS.md).
const OVERFLOW_AHEAD: usize = 2;

/// A conntrack entry's value: the backend by stable id, plus its index in the service's
/// backends when it was stored. [`resolve_tracked`] uses the index only while the
/// backend there still has that id, so a stale index costs a map lookup, never a wrong
/// backend.
///
/// The 64-bit backend id is stored as two 32-bit halves (low first) so that the type has
/// 4-byte alignment: 12 bytes, which with the flow class, hash and expiry make a 32-byte
/// conntrack entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TrackedBackend {
    backend_id_halves: [u32; 2],
    backend_index: u32,
}

impl TrackedBackend {
    #[inline]
    fn new(backend_index: u32, backend_id: u64) -> TrackedBackend {
        TrackedBackend {
            backend_id_halves: [backend_id as u32, (backend_id >> 32) as u32],
            backend_index,
        }
    }

    #[inline]
    fn backend_id(&self) -> u64 {
        let [low, high] = self.backend_id_halves;
        u64::from(low) | (u64::from(high) << 32)
    }
}

/// A fragment record's value: the backend by stable id, plus the service and backend
/// indices in the snapshot that stored it, which stay valid while the generation matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tracked {
    backend_id_halves: [u32; 2],
    service: u32,
    backend_index: u32,
    generation: u32,
}

impl Tracked {
    #[inline]
    fn backend_id(&self) -> u64 {
        let [low, high] = self.backend_id_halves;
        u64::from(low) | (u64::from(high) << 32)
    }
}

/// Error creating a worker's tables.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("cannot create the conntrack table: {0}")]
    Conntrack(#[from] ConntrackError),
    #[error("cannot create the fragment table: {0}")]
    Fragments(#[from] FragmentTableError),
}

/// Details of a verdict. Reuse one per worker: it contains the header and reply
/// buffers, so nothing is allocated per packet.
#[derive(Clone, Debug)]
pub struct Output {
    /// The encapsulation header of a `Forward`, in `header[..header_len]`.
    pub header: [u8; MAX_HEADER_LEN],
    pub header_len: usize,
    /// Byte range of the original IP packet in the input frame, Ethernet padding excluded.
    pub inner: Range<usize>,
    /// The encapsulated packet exceeds the MTU and goes out as outer IP fragments: use
    /// [`crate::encap::write_outer_fragments`] instead of sending header and packet as one frame.
    pub fragment: bool,
    /// With `fragment`: cut the inner IPv4 packet into smaller IPv4 fragments, each
    /// encapsulated whole, instead of fragmenting the outer packet. Set for a redirect,
    /// because the receiving Spike node must see a whole VXLAN packet to read it.
    pub split_inner: bool,
    pub outer_ipv6: bool,
    /// Identification for the outer fragments.
    pub fragment_ident: u32,
    /// The outer UDP checksum field holds only the pseudo-header sum: the NIC must
    /// complete it (DPDK's `RTE_MBUF_F_TX_UDP_CKSUM`). Set only when the worker was configured with
    /// the port offers that offload.
    pub udp_checksum_offloaded: bool,
    pub mtu: usize,
    /// The frame of a `Reply`, in `reply[..reply_len]`.
    pub reply: [u8; MAX_REPLY_LEN],
    pub reply_len: usize,
    /// Service and backend positions in the snapshot, for a forward.
    pub service: Option<u32>,
    pub backend: Option<u32>,
    pub selection: Option<Selection>,
    /// The flow the packet was classified as, when it got that far.
    pub flow: Option<FlowKey>,
    /// For a forward that redirects a fragment: the designated node's position in the
    /// snapshot's cluster.
    pub redirect: Option<u32>,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            inner: 0..0,
            fragment: false,
            split_inner: false,
            outer_ipv6: false,
            fragment_ident: 0,
            udp_checksum_offloaded: false,
            mtu: 0,
            reply: [0; MAX_REPLY_LEN],
            reply_len: 0,
            service: None,
            backend: None,
            selection: None,
            flow: None,
            redirect: None,
        }
    }
}

impl Output {
    fn reset(&mut self) {
        self.header_len = 0;
        self.inner = 0..0;
        self.fragment = false;
        self.split_inner = false;
        self.udp_checksum_offloaded = false;
        self.reply_len = 0;
        self.service = None;
        self.backend = None;
        self.selection = None;
        self.flow = None;
        self.redirect = None;
    }

    /// Returns the header of a forward.
    pub fn header(&self) -> &[u8] {
        &self.header[..self.header_len]
    }

    /// Returns the frame of a reply.
    pub fn reply(&self) -> &[u8] {
        &self.reply[..self.reply_len]
    }

    /// Writes the frames of a forward with [`Output::fragment`] set, for the received
    /// `frame`, and passes each to `emit`: outer fragments, or with
    /// [`Output::split_inner`] one encapsulated frame per piece of the inner packet.
    /// `scratch` must hold `mtu` bytes plus an Ethernet header. Returns how many frames
    /// it emitted, 0 when the frame does not match this output.
    pub fn write_fragments(
        &self,
        frame: &[u8],
        scratch: &mut [u8],
        emit: impl FnMut(&[u8]),
    ) -> usize {
        let Some(inner) = frame.get(self.inner.clone()) else {
            return 0;
        };
        if self.split_inner {
            encap::write_inner_fragments(
                self.header(),
                inner,
                self.outer_ipv6,
                self.mtu,
                self.fragment_ident,
                scratch,
                emit,
            )
        } else {
            encap::write_outer_fragments(
                self.header(),
                inner,
                self.outer_ipv6,
                self.mtu,
                self.fragment_ident,
                scratch,
                emit,
            )
        }
    }
}

/// The parts of a received frame every later step needs.
struct Frame<'a> {
    bytes: &'a [u8],
    l3_start: usize,
    vlan: Option<[u8; 2]>,
    /// Sent to a broadcast or multicast MAC while the worker filters by MAC.
    flooded: bool,
    /// Starts with the Ethernet destination and source that a reply swaps: the frame's
    /// own, or this node's for a redirected packet.
    reply_macs: &'a [u8],
}

/// The last service lookup of [`classify_transport`]. It is valid only for the snapshot
/// at the same address with the same generation. A snapshot is immutable, and a new one at
/// a freed one's address has another generation as long as callers keep the contract of
/// [`Snapshot::build`] that each generation differs from the previous one.
#[derive(Clone, Copy, Debug)]
struct ServiceCache {
    snapshot_addr: usize,
    generation: u32,
    key: ServiceKey,
    service: Option<u32>,
}

/// The service and conntrack class of a flow: the input of backend selection besides the
/// flow's key and hash.
#[derive(Clone, Copy, Debug)]
struct FlowKind {
    service: u32,
    class: FlowClass,
    /// A TCP SYN without ACK: a new connection, even if conntrack has an entry for the tuple.
    syn: bool,
}

/// A transport flow whose service is known, ready for backend selection.
struct Classified {
    kind: FlowKind,
    key: FlowKey,
}

/// One core's forwarding state.
#[derive(Debug)]
pub struct Worker {
    conntrack: Conntrack<TrackedBackend>,
    fragments: FragmentTable<Tracked>,
    too_big_limit: TokenBucket,
    counters: Counters,
    generation: Option<u32>,
    next_ident: u32,
    udp_checksum_offload: bool,
    mac_filter: Option<MacAddr>,
    /// Parsed flows and hashes computed by `prefetch_burst`, consumed in order by `process`.
    hints: [Option<Hint>; BURST_SIZE],
    hint_cursor: usize,
    hint_len: usize,
    service_cache: Option<ServiceCache>,
    /// Deciding the inner packet of a fragment another Spike node redirected here, which
    /// is never redirected again.
    redirected: bool,
    held: HeldFragments,
    /// Deciding a held fragment again, which is never held twice.
    releasing: bool,
}

impl Worker {
    /// Creates the tables with the capacities from `config`; they never grow.
    pub fn new(config: &Config) -> Result<Worker, WorkerError> {
        Ok(Worker {
            conntrack: Conntrack::new(config.conntrack.capacity, config.timeouts())?,
            fragments: FragmentTable::new(
                config.conntrack.fragment_capacity,
                config.conntrack.fragment_timeout_ns,
            )?,
            too_big_limit: TokenBucket::new(
                config.icmp.too_big_per_second,
                config.icmp.too_big_burst,
            ),
            counters: Counters::default(),
            generation: None,
            next_ident: 0,
            udp_checksum_offload: false,
            mac_filter: None,
            hints: [None; BURST_SIZE],
            hint_cursor: 0,
            hint_len: 0,
            service_cache: None,
            redirected: false,
            held: HeldFragments::new(),
            releasing: false,
        })
    }

    /// Leaves outer UDP checksums to the NIC from now on, for a port that offers UDP
    /// checksum offload; see [`Output::udp_checksum_offloaded`].
    pub fn set_udp_checksum_offload(&mut self, enabled: bool) {
        self.udp_checksum_offload = enabled;
    }

    /// Drops unicast frames to any MAC but `own` from now on, and never forwards or
    /// replies to a broadcast or multicast frame. A promiscuous port receives frames for
    /// other hosts, which must not reach a backend twice. Off by default, so a capture
    /// from anywhere can be traced.
    pub fn set_mac_filter(&mut self, own: Option<MacAddr>) {
        self.mac_filter = own;
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Number of flows in the conntrack table, expired ones not yet reaped included.
    pub fn tracked_flows(&self) -> usize {
        self.conntrack.len()
    }

    /// Removes expired conntrack entries, visiting at most `max_slots` slots. Call once
    /// per burst so expiry work is spread out.
    pub fn reap(&mut self, now_ns: u64, max_slots: usize) -> usize {
        let removed = self.conntrack.reap(now_ns, max_slots);
        self.count_conntrack();
        removed
    }

    /// Copies the conntrack table's entry count and insert counts into the counters. Runs
    /// after each insert and reap, the only calls that change them.
    #[inline]
    fn count_conntrack(&mut self) {
        let stats = self.conntrack.stats();
        self.counters.conntrack_entries = self.conntrack.len() as u64;
        self.counters.conntrack_expired_replaced = stats.expired_replaced;
        self.counters.conntrack_insert_failed = stats.insert_failed;
    }

    /// Prepares a burst. It prefetches each frame's first cache line, computes each TCP or
    /// UDP frame's flow hash and prefetches the first conntrack bucket of that flow. The
    /// memory latency then overlaps across the burst instead of stalling each packet in
    /// turn. For the few flows whose entry sits in their second bucket, `process` prefetches
    /// that line a few frames ahead, once the first line has arrived.
    ///
    /// Then call [`Worker::process`] on the same frames in the same order. It reuses the
    /// hashes and, for a TCP or UDP frame passed as the same slice, the parsed headers, so
    /// the frames must not change in between. Frames beyond [`BURST_SIZE`] are ignored.
    pub fn prefetch_burst<'a>(
        &mut self,
        snapshot: &Snapshot,
        frames: impl IntoIterator<Item = &'a [u8]>,
    ) {
        // A frame the NIC has just written is usually not in this core's cache. Asking for
        // every frame's first line before parsing any lets those reads overlap instead of
        // each parse waiting in turn.
        let mut burst: [&[u8]; BURST_SIZE] = [&[]; BURST_SIZE];
        let mut len = 0;
        for (slot, frame) in burst.iter_mut().zip(frames) {
            if let Some(first) = frame.first() {
                spike_prefetch::prefetch_read(first);
            }
            *slot = frame;
            len += 1;
        }
        for (hint, frame) in self.hints.iter_mut().zip(&burst[..len]) {
            parse_flow_into(frame, &snapshot.hasher, hint);
            if let Some(parsed) = hint {
                self.conntrack.prefetch(parsed.hash);
            }
        }
        self.hint_cursor = 0;
        self.hint_len = len;
        for hint in self.hints[..len.min(OVERFLOW_AHEAD)].iter().flatten() {
            self.conntrack.prefetch_overflow(hint.hash);
        }
    }

    /// Decides what to do with `frame`, received at `now_ns`.
    pub fn process(
        &mut self,
        snapshot: &Snapshot,
        frame: &[u8],
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        if self.generation != Some(snapshot.generation) {
            self.adopt(snapshot);
        }
        let hint = self.next_hint(frame);
        if let Some(index) = hint {
            if self.forward_tracked(snapshot, frame, index, now_ns, out) {
                return Verdict::Forward;
            }
        }
        out.reset();
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += frame.len() as u64;

        let verdict = match hint.and_then(|index| self.hints[index]) {
            Some(hint) => self.decide_hinted(snapshot, frame, &hint, now_ns, out),
            None => self.decide(snapshot, frame, now_ns, out),
        };
        self.counters.count_verdict(verdict);
        self.count_forward(verdict, out);
        verdict
    }

    /// Reshapes the counters for a new snapshot, once per snapshot swap.
    #[cold]
    #[inline(never)]
    fn adopt(&mut self, snapshot: &Snapshot) {
        self.counters.adopt(snapshot);
        self.generation = Some(snapshot.generation);
    }

    /// Takes the next hint of the prepared burst and returns its position in `hints`, if
    /// it was computed from `frame`.
    #[inline]
    fn next_hint(&mut self, frame: &[u8]) -> Option<usize> {
        let index = self.hint_cursor;
        let hint = self.hints.get(index)?;
        if index >= self.hint_len {
            return None;
        }
        self.hint_cursor += 1;
        let ahead = index + OVERFLOW_AHEAD;
        if ahead < self.hint_len {
            if let Some(Some(later)) = self.hints.get(ahead) {
                self.conntrack.prefetch_overflow(later.hash);
            }
        }
        hint.as_ref()
            .is_some_and(|hint| hint.matches(frame))
            .then_some(index)
    }

    fn count_forward(&mut self, verdict: Verdict, out: &Output) {
        if verdict != Verdict::Forward {
            return;
        }
        if let (Some(service), Some(backend)) = (out.service, out.backend) {
            self.counters
                .count_forward(service, backend, out.inner.len());
        }
        if let Some(selection) = out.selection {
            self.counters.selections[selection as usize] += 1;
        }
        if out.fragment {
            self.counters.outer_fragmented += 1;
        }
    }

    /// Returns whether any fragment is held, because only then can
    /// [`Worker::next_released`] return one. The check compares three counters inline, so
    /// a caller can skip that call for every frame while nothing is held. Each held
    /// fragment counts once in `held` and ends once in `held_released` or `held_dropped`.
    #[inline]
    pub fn has_held_fragments(&self) -> bool {
        let counters = &self.counters;
        counters.held > counters.held_released + counters.held_dropped
    }

    /// Decides the next held fragment whose first fragment the last [`Worker::process`]
    /// recorded, into `out`. Returns its verdict and the frame `out.inner` indexes into,
    /// or `None` when no fragment is released. Call it after each `process` until it
    /// returns `None`; it costs one comparison when nothing is held.
    pub fn next_released(
        &mut self,
        snapshot: &Snapshot,
        now_ns: u64,
        out: &mut Output,
    ) -> Option<(Verdict, &[u8])> {
        let released = self.held.next_released()?;
        let range = HeldFragments::range(&released);
        // The store moves out while the frame is decided, because deciding changes the
        // worker; moving a Vec does not allocate.
        let bytes = self.held.take_bytes();
        out.reset();
        let held = &bytes[range.clone()];
        let frame = Frame {
            bytes: held,
            l3_start: HELD_HEADER_LEN,
            vlan: None,
            flooded: false,
            reply_macs: held,
        };
        self.redirected = released.redirected;
        self.releasing = true;
        let verdict = match held.get(HELD_HEADER_LEN).map(|byte| byte >> 4) {
            Some(4) => self.decide_ipv4(snapshot, &frame, now_ns, out),
            Some(6) => self.decide_ipv6(snapshot, &frame, now_ns, out),
            _ => Verdict::Drop(DropReason::FragmentWithoutRecord),
        };
        self.releasing = false;
        self.redirected = false;
        self.held.put_bytes(bytes);

        match verdict {
            Verdict::Forward | Verdict::Reply => self.counters.held_released += 1,
            _ => self.counters.held_dropped += 1,
        }
        self.count_forward(verdict, out);
        Some((verdict, self.held.frame(&released)))
    }

    // Out of line: the hinted path is the common one, and inlining this one into
    // `process` would make every packet pay for its registers and stack.
    #[inline(never)]
    fn decide(
        &mut self,
        snapshot: &Snapshot,
        bytes: &[u8],
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let ethernet = match EthernetFrame::new_checked(bytes) {
            Ok(ethernet) => ethernet,
            Err(_) => return Verdict::Drop(DropReason::EthernetTruncated),
        };
        let mut ethertype = ethernet.ethertype();
        let destination = ethernet.dst_addr();
        let mut frame = Frame {
            bytes,
            l3_start: ETHERNET_HEADER_LEN,
            vlan: None,
            flooded: false,
            reply_macs: bytes,
        };
        if let Some(own) = self.mac_filter {
            if destination.is_multicast() {
                frame.flooded = true;
            } else if destination != own {
                return Verdict::Drop(DropReason::OtherHostMac);
            }
        }
        if ethertype == EtherType::Vlan {
            let tag = match VlanTag::new_checked(&bytes[ETHERNET_HEADER_LEN..]) {
                Ok(tag) => tag,
                Err(_) => return Verdict::Drop(DropReason::VlanTruncated),
            };
            ethertype = tag.ethertype();
            frame.vlan = Some([bytes[ETHERNET_HEADER_LEN], bytes[ETHERNET_HEADER_LEN + 1]]);
            frame.l3_start += VLAN_TAG_LEN;
        }
        match ethertype {
            EtherType::Ipv4 => self.decide_ipv4(snapshot, &frame, now_ns, out),
            EtherType::Ipv6 => self.decide_ipv6(snapshot, &frame, now_ns, out),
            EtherType::Arp => Verdict::Kernel(KernelReason::Arp),
            EtherType::Vlan | EtherType::QinQ => Verdict::Kernel(KernelReason::DoubleVlanTag),
            _ => Verdict::Kernel(KernelReason::OtherEthertype),
        }
    }

    /// Decides a frame that `prefetch_burst` parsed as an unfragmented TCP or UDP packet,
    /// with the same checks and results as [`Worker::decide`] minus those the parse passed.
    #[inline(never)]
    fn decide_hinted(
        &mut self,
        snapshot: &Snapshot,
        bytes: &[u8],
        hint: &Hint,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let mut frame = Frame {
            bytes,
            l3_start: hint.l3_start as usize,
            vlan: None,
            flooded: false,
            reply_macs: bytes,
        };
        if let Some(own) = self.mac_filter {
            let destination = EthernetFrame::new_unchecked(bytes).dst_addr();
            if destination.is_multicast() {
                frame.flooded = true;
            } else if destination != own {
                return Verdict::Drop(DropReason::OtherHostMac);
            }
        }
        if frame.l3_start != ETHERNET_HEADER_LEN {
            frame.vlan = Some([bytes[ETHERNET_HEADER_LEN], bytes[ETHERNET_HEADER_LEN + 1]]);
        }
        let ip_end = hint.ip_end as usize;
        let transport_start = hint.transport_start as usize;
        out.inner = frame.l3_start..ip_end;
        let key = &hint.key;
        if let Some(cluster) = &snapshot.cluster {
            if key.protocol == PROTOCOL_UDP
                && key.dst_port == cluster.port
                && cluster.is_own(&key.dst)
            {
                out.inner = 0..0;
                let udp = transport_start..ip_end;
                return self.receive_redirect(snapshot, &frame, &key.src, udp, now_ns, out);
            }
        }

        // The same steps as `classify_transport` and `select_and_forward`, on the parsed
        // key. The IPv6 path checks the VIP before the service, but a packet to another
        // address has no service either, so both give `NotService`.
        let service_key = ServiceKey {
            vip: key.dst,
            protocol: key.protocol,
            port: key.dst_port,
        };
        let Some(service) = cached_service(&mut self.service_cache, snapshot, &service_key) else {
            return Verdict::Kernel(KernelReason::NotService);
        };
        let transport = &bytes[transport_start..ip_end];
        let (class, syn) = match transport_class(key.protocol, transport, false) {
            Ok(class) => class,
            Err(verdict) => return verdict,
        };
        if frame.flooded {
            return Verdict::Drop(DropReason::MulticastToService);
        }
        out.flow = Some(*key);
        let kind = FlowKind {
            service,
            class,
            syn,
        };
        let selected = self.select(snapshot, kind, key, hint.hash, now_ns);
        self.finish_forward(
            snapshot,
            &frame,
            service,
            selected,
            hint.hash,
            hint.dont_frag,
            now_ns,
            out,
        )
    }

    fn decide_ipv4(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let packet = match Ipv4Packet::new_checked(&frame.bytes[frame.l3_start..]) {
            Ok(packet) => packet,
            Err(error) => return Verdict::Drop(ipv4_drop_reason(error)),
        };
        let dst = mapped(IpAddr::V4(packet.dst_addr()));
        let protocol = u8::from(packet.protocol());
        let payload = packet.payload();
        // A whole TCP or UDP packet finds its service by port directly, and a miss means
        // it is not for a VIP:port: that skips the VIP lookup on the common path.
        let is_transport = protocol == PROTOCOL_TCP || protocol == PROTOCOL_UDP;
        let has_ports = is_transport && packet.frag_offset() == 0 && payload.len() >= 4;
        if has_ports && protocol == PROTOCOL_UDP && !packet.more_frags() {
            if let Some(udp) = redirect_port(snapshot, &dst, payload) {
                let start = frame.l3_start + packet.header_len();
                let src = mapped(IpAddr::V4(packet.src_addr()));
                let udp = start..start + udp;
                return self.receive_redirect(snapshot, frame, &src, udp, now_ns, out);
            }
        }
        if !has_ports && !snapshot.is_vip(&dst) {
            return Verdict::Kernel(KernelReason::NotService);
        }
        let src = mapped(IpAddr::V4(packet.src_addr()));
        out.inner = frame.l3_start..frame.l3_start + usize::from(packet.total_len());

        let fragment = FragmentKey {
            src,
            dst,
            protocol,
            ident: u32::from(packet.ident()),
        };
        if packet.frag_offset() != 0 {
            return self.forward_fragment(
                snapshot,
                frame,
                &fragment,
                packet.dont_frag(),
                now_ns,
                out,
            );
        }
        let first_fragment = packet.more_frags();

        let classified = if protocol == u8::from(IpProtocol::Icmp) {
            match classify_icmpv4(snapshot, payload) {
                Ok(classified) => classified,
                Err(verdict) => return verdict,
            }
        } else {
            match classify_transport(
                &mut self.service_cache,
                snapshot,
                src,
                dst,
                protocol,
                payload,
                first_fragment,
            ) {
                Ok(classified) => classified,
                Err(verdict) => return verdict,
            }
        };
        let is_icmp_error = protocol == u8::from(IpProtocol::Icmp);
        if first_fragment && !is_icmp_error {
            let dont_fragment = packet.dont_frag();
            let key = (src, dst, protocol);
            if let Some(verdict) =
                self.redirect_fragment(snapshot, frame, key, false, dont_fragment, now_ns, out)
            {
                return verdict;
            }
        }
        let verdict = self.select_and_forward(
            snapshot,
            frame,
            classified,
            is_icmp_error,
            packet.dont_frag(),
            now_ns,
            out,
        );
        if first_fragment && verdict == Verdict::Forward {
            self.record_fragment(snapshot, &fragment, out, now_ns);
        }
        verdict
    }

    fn decide_ipv6(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let packet = match Ipv6Packet::new_checked(&frame.bytes[frame.l3_start..]) {
            Ok(packet) => packet,
            Err(error) => return Verdict::Drop(ipv6_drop_reason(error)),
        };
        let dst = packet.dst_addr().octets();
        if is_ipv4_mapped(&dst) {
            return Verdict::Kernel(KernelReason::NotService);
        }
        let first_header = packet.next_header();
        let is_vip = snapshot.is_vip(&dst);
        if !is_vip && first_header == IpProtocol::Udp {
            let payload = packet.payload();
            if let Some(udp) = redirect_port(snapshot, &dst, payload) {
                let start = frame.l3_start + IPV6_HEADER_LEN;
                let src = packet.src_addr().octets();
                let udp = start..start + udp;
                return self.receive_redirect(snapshot, frame, &src, udp, now_ns, out);
            }
        }
        if !is_vip && first_header != IpProtocol::Icmpv6 && first_header != IpProtocol::HopByHop {
            return Verdict::Kernel(KernelReason::NotService);
        }

        let payload = packet.payload();
        let upper = match wire::walk_extension_headers(first_header, payload) {
            Ok(upper) => upper,
            Err(_) if !is_vip => return Verdict::Kernel(KernelReason::NotService),
            Err(error) => return Verdict::Drop(ipv6_drop_reason(error)),
        };
        if upper.protocol == IpProtocol::Icmpv6 && upper.fragment.is_none() {
            let is_neighbor_discovery = payload
                .get(upper.offset..)
                .and_then(|icmp| Icmpv6Packet::new_checked(icmp).ok())
                .is_some_and(|icmp| icmp.is_neighbor_discovery());
            if is_neighbor_discovery {
                return Verdict::Kernel(KernelReason::NeighborDiscovery);
            }
        }
        if !is_vip {
            return Verdict::Kernel(KernelReason::NotService);
        }
        if upper
            .routing
            .is_some_and(|routing| routing.segments_left != 0)
        {
            return Verdict::Kernel(KernelReason::Ipv6RoutingHeader);
        }

        let src = packet.src_addr().octets();
        let protocol = u8::from(upper.protocol);
        out.inner = frame.l3_start..frame.l3_start + 40 + usize::from(packet.payload_len());

        let mut first_fragment = false;
        let mut fragment_key = None;
        if let Some(fragment) = upper.fragment {
            let key = FragmentKey {
                src,
                dst,
                protocol,
                ident: fragment.ident,
            };
            if fragment.offset != 0 {
                return self.forward_fragment(snapshot, frame, &key, true, now_ns, out);
            }
            first_fragment = fragment.more;
            fragment_key = Some(key);
        }

        let transport = payload.get(upper.offset..).unwrap_or(&[]);
        let classified = if upper.protocol == IpProtocol::Icmpv6 {
            classify_icmpv6(snapshot, transport)
        } else {
            classify_transport(
                &mut self.service_cache,
                snapshot,
                src,
                dst,
                protocol,
                transport,
                first_fragment,
            )
        };
        let classified = match classified {
            Ok(classified) => classified,
            Err(verdict) => return verdict,
        };
        let is_icmp_error = upper.protocol == IpProtocol::Icmpv6;
        if first_fragment && !is_icmp_error {
            let key = (src, dst, protocol);
            if let Some(verdict) =
                self.redirect_fragment(snapshot, frame, key, true, true, now_ns, out)
            {
                return verdict;
            }
        }
        let verdict = self.select_and_forward(
            snapshot,
            frame,
            classified,
            is_icmp_error,
            true,
            now_ns,
            out,
        );
        if let (true, Some(key), Verdict::Forward) = (first_fragment, fragment_key, verdict) {
            self.record_fragment(snapshot, &key, out, now_ns);
        }
        verdict
    }

    /// Chooses the backend for a classified flow and writes the forward.
    #[allow(clippy::too_many_arguments)]
    fn select_and_forward(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        classified: Classified,
        is_icmp_error: bool,
        dont_fragment: bool,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        if frame.flooded {
            return Verdict::Drop(DropReason::MulticastToService);
        }
        let Classified { kind, key } = classified;
        out.flow = Some(key);
        // `select` checks the source of new flows itself, so only an ICMP error's flow is
        // checked here.
        if is_icmp_error && is_martian_source(&key.src) {
            return Verdict::Drop(DropReason::MartianSource);
        }
        let flow_hash = snapshot.hasher.hash(&key, HashFields::FiveTuple);
        let selected = if is_icmp_error {
            self.select_for_icmp_error(snapshot, kind, &key, flow_hash, now_ns)
        } else {
            self.select(snapshot, kind, &key, flow_hash, now_ns)
        };
        self.finish_forward(
            snapshot,
            frame,
            kind.service,
            selected,
            flow_hash,
            dont_fragment,
            now_ns,
            out,
        )
    }

    /// Writes the forward to the selected backend, or the drop when there is none.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn finish_forward(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        service: u32,
        selected: Result<(u32, Selection), DropReason>,
        flow_hash: u64,
        dont_fragment: bool,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let (backend, selection) = match selected {
            Ok(selected) => selected,
            Err(reason) => return Verdict::Drop(reason),
        };
        out.selection = Some(selection);
        self.write_forward(
            snapshot,
            frame,
            service,
            backend,
            flow_hash,
            dont_fragment,
            now_ns,
            out,
        )
    }

    /// Conntrack first, Maglev for new flows; records the result in conntrack.
    #[inline]
    fn select(
        &mut self,
        snapshot: &Snapshot,
        kind: FlowKind,
        key: &FlowKey,
        flow_hash: u64,
        now_ns: u64,
    ) -> Result<(u32, Selection), DropReason> {
        let service_index = kind.service;
        let Some(service) = snapshot.services.get(service_index as usize) else {
            return Err(DropReason::NoBackend);
        };

        let Some(entry) = self.conntrack.find_mut(flow_hash, now_ns) else {
            // Only new flows are checked. A martian flow never gets a conntrack entry, so
            // every packet of it comes this way, and tracked flows skip the check.
            if is_martian_source(&key.src) {
                return Err(DropReason::MartianSource);
            }
            let index = maglev_lookup(snapshot, service_index, key, flow_hash)?;
            let value = TrackedBackend::new(index, backend_id(service, index));
            let inserted = self.conntrack.insert(flow_hash, value, kind.class, now_ns);
            self.count_conntrack();
            let selection = match inserted {
                Ok(_) => Selection::NewFlow,
                Err(_) => Selection::Untracked,
            };
            return Ok((index, selection));
        };
        let tracked = entry.value();
        // A closing flow stays closing on the client's last plain ACK.
        let class = entry.class().after(kind.class);
        let selection = match resolve_tracked(service, &tracked) {
            Some(index) => {
                let draining = service
                    .backends
                    .get(index as usize)
                    .is_none_or(|backend| backend.weight == 0);
                if !(kind.syn && draining) {
                    let value = TrackedBackend::new(index, tracked.backend_id());
                    entry.refresh(value, class, now_ns);
                    return Ok((index, Selection::Tracked));
                }
                Selection::SynRebalanced
            }
            None => Selection::Reselected,
        };
        let index = maglev_lookup(snapshot, service_index, key, flow_hash)?;
        let value = TrackedBackend::new(index, backend_id(service, index));
        entry.refresh(value, class, now_ns);
        Ok((index, selection))
    }

    /// The backend of the flow an ICMP error belongs to, without creating or refreshing
    /// a conntrack entry, because an error does not show that the flow is alive.
    fn select_for_icmp_error(
        &mut self,
        snapshot: &Snapshot,
        kind: FlowKind,
        key: &FlowKey,
        flow_hash: u64,
        now_ns: u64,
    ) -> Result<(u32, Selection), DropReason> {
        let service = snapshot.services.get(kind.service as usize);
        if let (Some(slot), Some(service)) = (self.conntrack.find(flow_hash, now_ns), service) {
            if let Some(index) = resolve_tracked(service, &self.conntrack.value(slot)) {
                return Ok((index, Selection::IcmpError));
            }
        }
        let index = maglev_lookup(snapshot, kind.service, key, flow_hash)?;
        Ok((index, Selection::IcmpError))
    }

    /// Sends a non-first fragment where its first fragment went, or hashes it without
    /// ports when the VIP has a service that hashes that way.
    fn forward_fragment(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        key: &FragmentKey,
        dont_fragment: bool,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        if frame.flooded {
            return Verdict::Drop(DropReason::MulticastToService);
        }
        if is_martian_source(&key.src) && snapshot.has_protocol(&key.dst, key.protocol) {
            return Verdict::Drop(DropReason::MartianSource);
        }
        if snapshot.cluster.is_some() && snapshot.has_protocol(&key.dst, key.protocol) {
            let inner_ipv6 = frame
                .bytes
                .get(frame.l3_start)
                .is_some_and(|byte| byte >> 4 == 6);
            let tuple = (key.src, key.dst, key.protocol);
            if let Some(verdict) = self.redirect_fragment(
                snapshot,
                frame,
                tuple,
                inner_ipv6,
                dont_fragment,
                now_ns,
                out,
            ) {
                return verdict;
            }
        }
        let flow = FlowKey {
            src: key.src,
            dst: key.dst,
            src_port: 0,
            dst_port: 0,
            protocol: key.protocol,
        };
        out.flow = Some(flow);
        let flow_hash = snapshot.hasher.hash(&flow, HashFields::FiveTuple);

        if let Some(tracked) = self.fragments.get(key, now_ns) {
            if let Some(index) = resolve(snapshot, tracked.service, &tracked) {
                out.selection = Some(Selection::FragmentRecord);
                return self.write_forward(
                    snapshot,
                    frame,
                    tracked.service,
                    index,
                    flow_hash,
                    dont_fragment,
                    now_ns,
                    out,
                );
            }
        }
        if !snapshot.has_protocol(&key.dst, key.protocol) {
            return Verdict::Kernel(KernelReason::NotService);
        }
        let Some(service) = snapshot.portless_service(&key.dst, key.protocol) else {
            return self.hold_fragment(snapshot, frame, key, now_ns, out);
        };
        let index = match maglev_lookup(snapshot, service, &flow, flow_hash) {
            Ok(index) => index,
            Err(reason) => return Verdict::Drop(reason),
        };
        out.selection = Some(Selection::FragmentPortless);
        self.write_forward(
            snapshot,
            frame,
            service,
            index,
            flow_hash,
            dont_fragment,
            now_ns,
            out,
        )
    }

    fn record_fragment(
        &mut self,
        snapshot: &Snapshot,
        key: &FragmentKey,
        out: &Output,
        now_ns: u64,
    ) {
        let (Some(service), Some(backend)) = (out.service, out.backend) else {
            return;
        };
        let backend_id = snapshot
            .services
            .get(service as usize)
            .and_then(|service| service.backends.get(backend as usize))
            .map_or(0, |backend| backend.id);
        let value = tracked_value(snapshot, service, backend, backend_id);
        if self.fragments.insert(key, value, now_ns).is_err() {
            self.counters.fragment_table_full += 1;
            return;
        }
        self.held.release(key);
    }

    /// Holds a non-first fragment without a record until its first fragment arrives, on
    /// a node of a cluster, where fragments of one datagram take different paths.
    /// Alone, or when the store is full, the fragment is dropped as before.
    fn hold_fragment(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        key: &FragmentKey,
        now_ns: u64,
        out: &Output,
    ) -> Verdict {
        if snapshot.cluster.is_none() || self.releasing {
            return Verdict::Drop(DropReason::FragmentWithoutRecord);
        }
        let packet = &frame.bytes[out.inner.clone()];
        let mut ethernet = [0u8; HELD_HEADER_LEN];
        ethernet[..12].copy_from_slice(&frame.reply_macs[..12]);
        let ethertype: u16 = if packet.first().is_some_and(|byte| byte >> 4 == 6) {
            0x86dd
        } else {
            0x0800
        };
        ethernet[12..].copy_from_slice(&ethertype.to_be_bytes());
        let (held, expired) = self
            .held
            .hold(key, &ethernet, packet, self.redirected, now_ns);
        self.counters.held_dropped += expired;
        if held {
            Verdict::Held
        } else {
            Verdict::Drop(DropReason::FragmentWithoutRecord)
        }
    }

    /// Writes the encapsulation for a packet whose backend is chosen, or the ICMP
    /// too-big reply when it cannot go out whole and must not be fragmented.
    #[allow(clippy::too_many_arguments)]
    fn write_forward(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        service_index: u32,
        backend_index: u32,
        flow_hash: u64,
        dont_fragment: bool,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let Some(backend) = snapshot
            .services
            .get(service_index as usize)
            .and_then(|service| service.backends.get(backend_index as usize))
        else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        out.service = Some(service_index);
        out.backend = Some(backend_index);
        let encap = Encap {
            template: &backend.template,
            flow_hash,
            dont_fragment,
            split_inner: false,
        };
        self.write_encap(snapshot, frame, &encap, now_ns, out)
    }

    /// Writes the header of `encap` for the frame's packet, `out.inner`, or the ICMP
    /// too-big reply when it cannot go out whole and must not be fragmented.
    fn write_encap(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        encap: &Encap<'_>,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let Encap {
            template,
            flow_hash,
            dont_fragment,
            split_inner,
        } = *encap;
        let inner = &frame.bytes[out.inner.clone()];
        if inner.len() > template.max_inner_len() {
            if dont_fragment {
                return self.reply_too_big(frame, inner, template, now_ns, out);
            }
            out.fragment = true;
            out.split_inner = split_inner;
        }

        let ident = self.next_ident;
        self.next_ident = self.next_ident.wrapping_add(1);
        // Outer fragments are cut from the finished datagram, so their checksum must be
        // complete before they leave.
        let offload = self.udp_checksum_offload && !out.fragment;
        (out.header_len, out.udp_checksum_offloaded) = template.write(
            &snapshot.encap,
            inner,
            flow_hash,
            ident as u16,
            offload,
            &mut out.header,
        );
        out.outer_ipv6 = template.outer_ipv6();
        out.fragment_ident = ident;
        out.mtu = usize::from(snapshot.encap.mtu);
        Verdict::Forward
    }

    /// Sends a fragment of a service's traffic to the Spike node designated for its
    /// datagram, unless that is this node or the fragment was redirected here already.
    /// `tuple` is the source, destination and protocol; the caller has set `out.inner`.
    #[allow(clippy::too_many_arguments)]
    fn redirect_fragment(
        &mut self,
        snapshot: &Snapshot,
        frame: &Frame<'_>,
        tuple: ([u8; 16], [u8; 16], u8),
        inner_ipv6: bool,
        dont_fragment: bool,
        now_ns: u64,
        out: &mut Output,
    ) -> Option<Verdict> {
        let cluster = snapshot.cluster.as_ref()?;
        if self.redirected {
            return None;
        }

        let (src, dst, protocol) = tuple;
        let flow = FlowKey {
            src,
            dst,
            src_port: 0,
            dst_port: 0,
            protocol,
        };
        let hash = snapshot.hasher.hash(&flow, HashFields::ThreeTuple);
        let target = cluster.designated(hash);
        if target == cluster.self_index {
            return None;
        }
        if frame.flooded {
            return Some(Verdict::Drop(DropReason::MulticastToService));
        }

        let peer = cluster.peers.get(target)?;
        out.flow = Some(flow);
        out.selection = Some(Selection::Redirected);
        out.redirect = Some(target as u32);
        // The 3-tuple hash picks the outer source port, so every fragment of a datagram
        // takes one underlay path and keeps its order.
        let encap = Encap {
            template: peer.template(inner_ipv6),
            flow_hash: hash,
            dont_fragment,
            split_inner: !inner_ipv6,
        };
        Some(self.write_encap(snapshot, frame, &encap, now_ns, out))
    }

    /// Decides a frame to this node's underlay address and VXLAN port. A VXLAN packet
    /// with the cluster's redirect VNI carries a fragment another Spike node redirected
    /// here: its inner packet is decided as if received directly, but never redirected
    /// again. Anything else keeps the handling it had without a cluster: the kernel.
    fn receive_redirect(
        &mut self,
        snapshot: &Snapshot,
        outer: &Frame<'_>,
        outer_src: &[u8; 16],
        udp: Range<usize>,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let Some(cluster) = snapshot.cluster.as_ref() else {
            return Verdict::Kernel(KernelReason::NotService);
        };
        let Ok(datagram) = UdpPacket::new_checked(&outer.bytes[udp.clone()]) else {
            return Verdict::Kernel(KernelReason::NotService);
        };
        let end = udp.start + usize::from(datagram.len());
        let vxlan_start = udp.start + encap::UDP_HEADER_LEN;
        let is_redirect = VxlanHeader::new_checked(&outer.bytes[vxlan_start..end])
            .is_ok_and(|vxlan| vxlan.has_vni() && vxlan.vni() == cluster.redirect_vni);
        if !is_redirect {
            return Verdict::Kernel(KernelReason::NotService);
        }
        if self.redirected {
            return Verdict::Drop(DropReason::RedirectLoop);
        }
        self.counters.redirected_in += 1;
        if cluster.is_own(outer_src) {
            return Verdict::Drop(DropReason::RedirectLoop);
        }

        let inner_start = vxlan_start + encap::VXLAN_HEADER_LEN;
        let bytes = &outer.bytes[..end];
        let Ok(ethernet) = EthernetFrame::new_checked(&bytes[inner_start..]) else {
            return Verdict::Drop(DropReason::RedirectMalformed);
        };
        let inner = Frame {
            bytes,
            l3_start: inner_start + ETHERNET_HEADER_LEN,
            vlan: None,
            flooded: outer.flooded,
            reply_macs: &cluster.reply_macs,
        };
        self.redirected = true;
        let verdict = match ethernet.ethertype() {
            EtherType::Ipv4 => self.decide_ipv4(snapshot, &inner, now_ns, out),
            EtherType::Ipv6 => self.decide_ipv6(snapshot, &inner, now_ns, out),
            _ => Verdict::Drop(DropReason::RedirectMalformed),
        };
        self.redirected = false;
        match verdict {
            Verdict::Kernel(_) => Verdict::Drop(DropReason::RedirectNotService),
            other => other,
        }
    }

    // Out of line, so that the forward path it branches from needs fewer registers.
    #[cold]
    #[inline(never)]
    fn reply_too_big(
        &mut self,
        frame: &Frame<'_>,
        inner: &[u8],
        template: &EncapTemplate,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        if !self.too_big_limit.try_take(now_ns) {
            return Verdict::Drop(DropReason::TooBigRateLimited);
        }
        let mtu = template.max_inner_len();
        let ident = self.next_ident as u16;
        self.next_ident = self.next_ident.wrapping_add(1);
        let Some(flow) = out.flow else {
            return Verdict::Drop(DropReason::TooBigRateLimited);
        };
        out.reply_len = match (flow.src_addr(), flow.dst_addr()) {
            (IpAddr::V4(client), IpAddr::V4(vip)) => icmp::write_frag_needed(
                frame.reply_macs,
                frame.vlan,
                inner,
                vip,
                client,
                mtu as u16,
                ident,
                &mut out.reply,
            ),
            (IpAddr::V6(client), IpAddr::V6(vip)) => icmp::write_packet_too_big(
                frame.reply_macs,
                frame.vlan,
                inner,
                &vip,
                &client,
                mtu as u32,
                &mut out.reply,
            ),
            _ => return Verdict::Drop(DropReason::TooBigRateLimited),
        };
        out.service = None;
        out.backend = None;
        out.redirect = None;
        self.counters.too_big_sent += 1;
        Verdict::Reply
    }
}

/// An encapsulation to write: to a backend, or a redirect to another Spike node.
struct Encap<'a> {
    template: &'a EncapTemplate,
    flow_hash: u64,
    dont_fragment: bool,
    split_inner: bool,
}

/// Returns the UDP datagram's length in `payload` when it goes to this node's underlay
/// address and VXLAN port in a cluster: a candidate redirect.
#[inline]
fn redirect_port(snapshot: &Snapshot, dst: &[u8; 16], payload: &[u8]) -> Option<usize> {
    let cluster = snapshot.cluster.as_ref()?;
    let ports = payload.get(..4)?;
    let dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    (dst_port == cluster.port && cluster.is_own(dst)).then_some(payload.len())
}

/// Returns the stable id of the backend at `index` in `service`, 0 when there is none.
#[inline]
fn backend_id(service: &Service, index: u32) -> u64 {
    service
        .backends
        .get(index as usize)
        .map_or(0, |backend| backend.id)
}

fn tracked_value(
    snapshot: &Snapshot,
    service: u32,
    backend_index: u32,
    backend_id: u64,
) -> Tracked {
    Tracked {
        backend_id_halves: [backend_id as u32, (backend_id >> 32) as u32],
        service,
        backend_index,
        generation: snapshot.generation,
    }
}

/// Returns the backend index a conntrack value points to in `service`, or `None` if the
/// backend is no longer configured for it. The stored index is used when the backend there
/// has the stored id, which is true until the service's backends change.
#[inline]
fn resolve_tracked(service: &Service, tracked: &TrackedBackend) -> Option<u32> {
    let id = tracked.backend_id();
    let index = tracked.backend_index;
    if service
        .backends
        .get(index as usize)
        .is_some_and(|backend| backend.id == id)
    {
        return Some(index);
    }
    service.backend_index(id)
}

/// Returns the backend index a fragment record points to in `snapshot`, or `None` if the
/// backend is no longer configured for the service.
#[inline]
fn resolve(snapshot: &Snapshot, service_index: u32, tracked: &Tracked) -> Option<u32> {
    if tracked.generation == snapshot.generation && tracked.service == service_index {
        return Some(tracked.backend_index);
    }
    snapshot
        .services
        .get(service_index as usize)?
        .backend_index(tracked.backend_id())
}

#[inline]
fn maglev_lookup(
    snapshot: &Snapshot,
    service_index: u32,
    key: &FlowKey,
    five_tuple_hash: u64,
) -> Result<u32, DropReason> {
    let service = snapshot
        .services
        .get(service_index as usize)
        .ok_or(DropReason::NoBackend)?;
    let table = service.table.as_ref().ok_or(DropReason::NoBackend)?;
    let hash = match service.hash {
        HashFields::FiveTuple => five_tuple_hash,
        fields => snapshot.hasher.hash(key, fields),
    };
    Ok(table.lookup(hash))
}

/// Finds the service of a TCP or UDP packet and its conntrack class. A first fragment
/// may carry only the ports, so it is not required to hold a whole transport header.
fn classify_transport(
    cache: &mut Option<ServiceCache>,
    snapshot: &Snapshot,
    src: [u8; 16],
    dst: [u8; 16],
    protocol: u8,
    transport: &[u8],
    first_fragment: bool,
) -> Result<Classified, Verdict> {
    if protocol != PROTOCOL_TCP && protocol != PROTOCOL_UDP {
        return Err(Verdict::Kernel(KernelReason::NotService));
    }
    if transport.len() < 4 {
        return Err(Verdict::Drop(DropReason::TransportMalformed));
    }
    let src_port = u16::from_be_bytes([transport[0], transport[1]]);
    let dst_port = u16::from_be_bytes([transport[2], transport[3]]);
    let service_key = ServiceKey {
        vip: dst,
        protocol,
        port: dst_port,
    };
    let Some(service) = cached_service(cache, snapshot, &service_key) else {
        return Err(Verdict::Kernel(KernelReason::NotService));
    };
    let (class, syn) = transport_class(protocol, transport, first_fragment)?;
    Ok(Classified {
        kind: FlowKind {
            service,
            class,
            syn,
        },
        key: FlowKey {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
        },
    })
}

/// Returns the conntrack class of a TCP or UDP header and whether it opens a connection
/// (a SYN without ACK). A first fragment may carry only the ports, so it is not required
/// to hold a whole transport header.
#[inline(always)]
fn transport_class(
    protocol: u8,
    transport: &[u8],
    first_fragment: bool,
) -> Result<(FlowClass, bool), Verdict> {
    if protocol == PROTOCOL_TCP {
        match TcpPacket::new_checked(transport) {
            Ok(tcp) => Ok((
                classify_tcp(tcp.syn(), tcp.ack(), tcp.fin(), tcp.rst()),
                tcp.syn() && !tcp.ack(),
            )),
            Err(_) if first_fragment => Ok((FlowClass::TcpEstablished, false)),
            Err(_) => Err(Verdict::Drop(DropReason::TransportMalformed)),
        }
    } else {
        if !first_fragment && UdpPacket::new_checked(transport).is_err() {
            return Err(Verdict::Drop(DropReason::TransportMalformed));
        }
        Ok((FlowClass::Udp, false))
    }
}

/// Returns `snapshot.service(key)`, from `cache` when the previous lookup was for the same
/// key in the same snapshot. Most bursts go to few services, so this skips most map lookups.
#[inline(always)]
fn cached_service(
    cache: &mut Option<ServiceCache>,
    snapshot: &Snapshot,
    key: &ServiceKey,
) -> Option<u32> {
    if let Some(cached) = cache {
        if cached.snapshot_addr == snapshot as *const Snapshot as usize
            && cached.generation == snapshot.generation
            && cached.key == *key
        {
            return cached.service;
        }
    }
    lookup_service(cache, snapshot, key)
}

/// Looks the service up in the map for [`cached_service`], out of line because most
/// packets hit the cache.
#[inline(never)]
fn lookup_service(
    cache: &mut Option<ServiceCache>,
    snapshot: &Snapshot,
    key: &ServiceKey,
) -> Option<u32> {
    let snapshot_addr = snapshot as *const Snapshot as usize;
    let service = snapshot.service(key);
    *cache = Some(ServiceCache {
        snapshot_addr,
        generation: snapshot.generation,
        key: *key,
        service,
    });
    service
}

/// Maps an ICMP error's quoted packet (sent from a VIP by a backend, directly to the
/// client) back to the client's flow.
fn classify_quoted(
    snapshot: &Snapshot,
    quoted: Option<icmp::QuotedFlow>,
) -> Result<Classified, Verdict> {
    let Some(quoted) = quoted else {
        return Err(Verdict::Drop(DropReason::IcmpQuoteMalformed));
    };
    let Some(service) = snapshot.service(&ServiceKey {
        vip: quoted.src,
        protocol: quoted.protocol,
        port: quoted.src_port,
    }) else {
        return Err(Verdict::Kernel(KernelReason::IcmpErrorNotService));
    };
    Ok(Classified {
        kind: FlowKind {
            service,
            class: FlowClass::Other,
            syn: false,
        },
        key: FlowKey {
            src: quoted.dst,
            dst: quoted.src,
            src_port: quoted.dst_port,
            dst_port: quoted.src_port,
            protocol: quoted.protocol,
        },
    })
}

fn classify_icmpv4(snapshot: &Snapshot, payload: &[u8]) -> Result<Classified, Verdict> {
    let icmp = match Icmpv4Packet::new_checked(payload) {
        Ok(icmp) => icmp,
        Err(_) => return Err(Verdict::Drop(DropReason::TransportMalformed)),
    };
    if !icmp.is_error() {
        return Err(Verdict::Kernel(KernelReason::IcmpNotError));
    }
    classify_quoted(snapshot, icmp::parse_quoted_ipv4(icmp.data()))
}

fn classify_icmpv6(snapshot: &Snapshot, transport: &[u8]) -> Result<Classified, Verdict> {
    let icmp = match Icmpv6Packet::new_checked(transport) {
        Ok(icmp) => icmp,
        Err(_) => return Err(Verdict::Drop(DropReason::TransportMalformed)),
    };
    if !icmp.is_error() {
        return Err(Verdict::Kernel(KernelReason::IcmpNotError));
    }
    let quoted = icmp::parse_quoted_ipv6(icmp.data());
    // The quoted packet came from the VIP, so its source is the VIP's address.
    if quoted.is_some_and(|quoted| is_ipv4_mapped(&quoted.src)) {
        return Err(Verdict::Kernel(KernelReason::IcmpErrorNotService));
    }
    classify_quoted(snapshot, quoted)
}

fn ipv4_drop_reason(error: wire::Error) -> DropReason {
    match error {
        wire::Error::BadVersion => DropReason::Ipv4BadVersion,
        wire::Error::BadHeaderLength => DropReason::Ipv4BadHeaderLength,
        wire::Error::BadTotalLength => DropReason::Ipv4BadTotalLength,
        _ => DropReason::Ipv4Truncated,
    }
}

fn ipv6_drop_reason(error: wire::Error) -> DropReason {
    match error {
        wire::Error::BadVersion => DropReason::Ipv6BadVersion,
        wire::Error::BadTotalLength => DropReason::Ipv6BadPayloadLength,
        wire::Error::ExtensionChainTooLong => DropReason::Ipv6ExtensionChainTooLong,
        wire::Error::BadExtensionHeader => DropReason::Ipv6BadExtensionHeader,
        _ => DropReason::Ipv6Truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_slot_is_32_bytes() {
        assert_eq!(std::mem::size_of::<TrackedBackend>(), 12);
        assert_eq!(Conntrack::<TrackedBackend>::slot_bytes(), 32);
    }

    #[test]
    fn tracked_keeps_whole_backend_id() {
        let tracked = Tracked {
            backend_id_halves: [0x89ab_cdef, 0x0123_4567],
            ..Tracked::default()
        };
        assert_eq!(tracked.backend_id(), 0x0123_4567_89ab_cdef);
        let conntrack_value = TrackedBackend::new(7, 0x0123_4567_89ab_cdef);
        assert_eq!(conntrack_value.backend_id(), 0x0123_4567_89ab_cdef);
        assert_eq!(conntrack_value.backend_index, 7);
    }
}
