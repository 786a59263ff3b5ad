//! The poll loop of one worker lcore.
//!
//! Each worker owns one rx and one tx queue of the main port (and of the kernel port,
//! when there is one), a [`Worker`] with its conntrack and fragment tables, and fixed
//! bursts. Per poll it receives up to one burst, loads the current snapshot once,
//! decides every frame with [`Worker::process`] and acts on the verdict:
//!
//! - a forward gets its encapsulation header prepended in the mbuf's headroom after the
//!   Ethernet header and padding are cut off, so the packet itself is not copied;
//! - a forward that exceeds the underlay MTU is copied into new mbufs as outer
//!   fragments (or, for a fragment redirected to another Spike node, as smaller inner
//!   fragments each encapsulated whole), and a reply is copied into a new mbuf (both
//!   are rare, slow paths);
//! - a kernel frame goes to the kernel port if there is one, and is freed otherwise;
//! - a dropped frame is freed.
//!
//! Frames the kernel port receives go out of the main port unchanged, so the host's
//! ARP, neighbor discovery and control traffic keep working on a port DPDK owns.
//!
//! With several workers, every IP fragment goes to worker 0, because fragment records
//! and held fragments belong to one [`Worker`] and the NIC's hash can spread the
//! fragments of one datagram over several queues. The other workers test each received
//! frame with [`spike_core::steer::is_fragment`] and move fragments to a shared ring,
//! counting each one, and each one dropped because the ring was full. Worker 0 empties
//! up to one burst of the ring per poll and decides those frames like its own.
//!
//! The loop does not allocate (beyond mbufs), lock or log. Every
//! [`PUBLISH_INTERVAL_NS`] it publishes a copy of its counters for the main lcore;
//! that copy allocates, once per interval and not per packet.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use spike_core::encap::{
    self, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, IPV6_HEADER_LEN, MAX_HEADER_LEN, UDP_HEADER_LEN,
};
use spike_core::steer::{self, RedirectMatch};
use spike_core::{Counters, Output, Snapshot, Verdict, Worker};
use spike_dpdk::{
    pause, rdtsc, tx_offload, Mbuf, MbufBurst, Mempool, RingConsumer, RingProducer, RxQueue,
    TxQueue,
};

use crate::reap::{self, ReapPacer};

/// How often a worker publishes its counters, in nanoseconds.
pub const PUBLISH_INTERVAL_NS: u64 = 100_000_000;

/// Encapsulation header over an IPv4 underlay: outer Ethernet, IPv4, UDP and VXLAN
/// headers and the inner Ethernet header, 50 bytes.
const IPV4_ENCAP_HEADER_LEN: usize = ETHERNET_HEADER_LEN + encap::ip_overhead(false);
/// Encapsulation header over an IPv6 underlay, 70 bytes.
const IPV6_ENCAP_HEADER_LEN: usize = ETHERNET_HEADER_LEN + encap::ip_overhead(true);

/// Scratch room for one outer fragment: the largest MTU the config accepts plus the
/// Ethernet header.
const MAX_FRAME_LEN: usize = 9216 + 14;
/// The largest IP datagram plus an Ethernet header and two VLAN tags.
const MAX_CHAINED_FRAME_LEN: usize = 65535 + 22;

/// Counters a worker keeps itself, beyond the core's [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxCounters {
    /// Frames freed because the tx queue kept rejecting them after `dpdk.tx_retries`
    /// attempts, on either port.
    pub tx_dropped: u64,
    /// Outer fragments and replies lost because the mbuf pool was empty.
    pub mbuf_alloc_failed: u64,
    /// Forwards freed because the mbuf had no headroom for the encapsulation header.
    pub encap_failed: u64,
    /// Frames the driver chained over several mbufs, decided from a linear copy. They
    /// are longer than one mbuf, which is sized for the MTU, so they can get a reply
    /// (too big), fragmented, handed to the kernel or dropped, never encapsulated in
    /// place.
    pub rx_multi_segment: u64,
    /// Frames from the kernel port sent out of the main port.
    pub from_kernel: u64,
    /// IP fragments this worker received and moved to worker 0.
    pub fragments_steered: u64,
    /// IP fragments freed because the ring to worker 0 was full.
    pub fragment_ring_full: u64,
}

impl TxCounters {
    /// Adds another worker's counters into these.
    pub fn add(&mut self, other: &TxCounters) {
        self.tx_dropped += other.tx_dropped;
        self.mbuf_alloc_failed += other.mbuf_alloc_failed;
        self.encap_failed += other.encap_failed;
        self.rx_multi_segment += other.rx_multi_segment;
        self.from_kernel += other.from_kernel;
        self.fragments_steered += other.fragments_steered;
        self.fragment_ring_full += other.fragment_ring_full;
    }
}

/// One worker's counters as last published.
#[derive(Clone, Debug, Default)]
pub struct WorkerReport {
    pub counters: Counters,
    pub tx: TxCounters,
}

/// State shared by the main lcore and the workers.
#[derive(Debug)]
pub struct Shared {
    /// The snapshot workers decide with. The main lcore swaps it on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// Set to end every poll loop.
    pub stop: AtomicBool,
    /// One slot per worker, in worker order.
    pub reports: Vec<ArcSwap<WorkerReport>>,
}

/// The queues one worker polls and transmits on.
#[derive(Debug)]
pub struct Lane<'port, 'pool> {
    pub rx: RxQueue<'port, 'pool>,
    pub tx: TxQueue<'port, 'pool>,
    pub kernel: Option<(RxQueue<'port, 'pool>, TxQueue<'port, 'pool>)>,
}

/// A worker's part in moving every IP fragment to worker 0.
#[derive(Debug)]
pub enum Steering<'ring, 'pool> {
    /// The only worker: it decides every frame itself.
    Off,
    /// Worker 0: it also decides the fragments the other workers send.
    Collect(RingConsumer<'ring, 'pool>),
    /// Any other worker: it sends fragments to worker 0.
    Send(RingProducer<'ring, 'pool>),
}

/// Settings of a poll loop that do not change while it runs.
#[derive(Debug)]
pub struct PollSettings<'a, 'pool> {
    pub index: usize,
    pub pool: &'pool Mempool<'pool>,
    pub shared: &'a Shared,
    pub tx_retries: u32,
    pub tsc_hz: u64,
    /// Capacity of the worker's conntrack table in flows, which sizes its reaping.
    pub conntrack_capacity: usize,
}

/// A tx queue with its pending burst.
struct Sender<'port, 'pool> {
    queue: TxQueue<'port, 'pool>,
    burst: MbufBurst<'pool>,
    attempts: u32,
}

impl<'pool> Sender<'_, 'pool> {
    /// Queues `mbuf`, transmitting first when the burst is full.
    #[inline]
    fn push(&mut self, mbuf: Mbuf<'pool>, tx: &mut TxCounters) {
        if self.burst.free_slots() == 0 {
            self.flush(tx);
        }
        // flush() always leaves the burst empty (sent or freed), so this push succeeds.
        // Should that change, a rejected mbuf is still freed and counted.
        if self.burst.push(mbuf).is_err() {
            tx.tx_dropped += 1;
        }
    }

    /// Transmits the pending burst with up to `attempts` calls, then frees and counts
    /// what the driver did not take.
    #[inline]
    fn flush(&mut self, tx: &mut TxCounters) {
        let mut attempts = 0;
        while !self.burst.is_empty() && attempts < self.attempts {
            self.queue.tx_burst(&mut self.burst);
            attempts += 1;
        }
        if !self.burst.is_empty() {
            tx.tx_dropped += self.burst.len() as u64;
            self.burst.clear();
        }
    }
}

/// Destinations of one worker's frames, plus the buffers the slow paths use.
struct Dispatch<'port, 'pool> {
    pool: &'pool Mempool<'pool>,
    to_port: Sender<'port, 'pool>,
    to_kernel: Option<Sender<'port, 'pool>>,
    out: Output,
    scratch: Vec<u8>,
    /// A chained frame copied into one buffer: room for the largest IP datagram.
    linear: Vec<u8>,
    tx: TxCounters,
}

impl<'pool> Dispatch<'_, 'pool> {
    /// Acts on the verdict for `mbuf`, whose decision details are in `self.out`.
    #[inline]
    fn dispatch(&mut self, verdict: Verdict, mut mbuf: Mbuf<'pool>) {
        match verdict {
            Verdict::Forward if self.out.fragment => {
                let Dispatch {
                    pool,
                    to_port,
                    out,
                    scratch,
                    tx,
                    ..
                } = self;
                send_fragments(pool, to_port, out, scratch, tx, mbuf.data());
            }
            Verdict::Forward => {
                if encapsulate(&mut mbuf, &self.out) {
                    self.to_port.push(mbuf, &mut self.tx);
                } else {
                    self.tx.encap_failed += 1;
                }
            }
            Verdict::Reply => self.send_reply(),
            Verdict::Kernel(_) => {
                if let Some(to_kernel) = self.to_kernel.as_mut() {
                    to_kernel.push(mbuf, &mut self.tx);
                }
            }
            // A held fragment's packet was copied by the core: the mbuf is freed.
            Verdict::Drop(_) | Verdict::Held => {}
        }
    }

    /// Sends the held fragments the last decision released, copied into new mbufs.
    #[inline]
    fn send_released(&mut self, worker: &mut Worker, snapshot: &Snapshot, now_ns: u64) {
        let Dispatch {
            pool,
            to_port,
            out,
            scratch,
            tx,
            ..
        } = self;
        while let Some((verdict, frame)) = worker.next_released(snapshot, now_ns, out) {
            match verdict {
                Verdict::Forward if out.fragment => {
                    send_fragments(pool, to_port, out, scratch, tx, frame);
                }
                Verdict::Forward => match copy_forward_to_mbuf(pool, out, frame) {
                    Some(mbuf) => to_port.push(mbuf, tx),
                    None => tx.mbuf_alloc_failed += 1,
                },
                Verdict::Reply => match copy_to_mbuf(pool, out.reply()) {
                    Some(reply) => to_port.push(reply, tx),
                    None => tx.mbuf_alloc_failed += 1,
                },
                Verdict::Kernel(_) | Verdict::Drop(_) | Verdict::Held => {}
            }
        }
    }

    /// Decides a frame the driver chained over several mbufs, from a linear copy.
    fn decide_chained(
        &mut self,
        worker: &mut Worker,
        snapshot: &Snapshot,
        now_ns: u64,
        mbuf: Mbuf<'pool>,
    ) {
        self.tx.rx_multi_segment += 1;
        let Some(len) = mbuf.copy_all(&mut self.linear) else {
            self.tx.encap_failed += 1;
            return;
        };
        let Dispatch {
            pool,
            to_port,
            to_kernel,
            out,
            scratch,
            linear,
            tx,
        } = self;
        let frame = &linear[..len];
        match worker.process(snapshot, frame, now_ns, out) {
            Verdict::Forward if out.fragment => {
                send_fragments(pool, to_port, out, scratch, tx, frame);
            }
            // One mbuf fits any frame within the MTU, so an unfragmented forward of
            // a chained frame means the pool's data room and the MTU disagree.
            Verdict::Forward => tx.encap_failed += 1,
            Verdict::Reply => match copy_to_mbuf(pool, out.reply()) {
                Some(reply) => to_port.push(reply, tx),
                None => tx.mbuf_alloc_failed += 1,
            },
            Verdict::Kernel(_) => {
                if let Some(to_kernel) = to_kernel.as_mut() {
                    to_kernel.push(mbuf, tx);
                }
            }
            Verdict::Drop(_) | Verdict::Held => {}
        }
        self.send_released(worker, snapshot, now_ns);
    }

    fn send_reply(&mut self) {
        match copy_to_mbuf(self.pool, self.out.reply()) {
            Some(reply) => self.to_port.push(reply, &mut self.tx),
            None => self.tx.mbuf_alloc_failed += 1,
        }
    }

    fn flush(&mut self) {
        self.to_port.flush(&mut self.tx);
        if let Some(to_kernel) = self.to_kernel.as_mut() {
            to_kernel.flush(&mut self.tx);
        }
    }
}

/// Copies the encapsulated packet of `frame` into fragments and queues them; the
/// original is freed by the caller.
fn send_fragments<'pool>(
    pool: &'pool Mempool<'_>,
    to_port: &mut Sender<'_, 'pool>,
    out: &Output,
    scratch: &mut [u8],
    tx: &mut TxCounters,
    frame: &[u8],
) {
    let emitted = out.write_fragments(frame, scratch, |fragment| {
        match copy_to_mbuf(pool, fragment) {
            Some(fragment) => to_port.push(fragment, tx),
            None => tx.mbuf_alloc_failed += 1,
        }
    });
    if emitted == 0 {
        tx.encap_failed += 1;
    }
}

/// Cuts the frame down to the inner IP packet (no Ethernet header, VLAN tag or
/// padding) and prepends the encapsulation header in the headroom. Returns false if
/// the mbuf cannot be edited that way; the caller then frees it.
#[inline]
fn encapsulate(mbuf: &mut Mbuf<'_>, out: &Output) -> bool {
    let data_len = usize::from(mbuf.data_len());
    let (Some(padding), Ok(start)) = (
        data_len.checked_sub(out.inner.end),
        u16::try_from(out.inner.start),
    ) else {
        return false;
    };
    if padding > 0 && mbuf.trim(padding as u16).is_err() {
        return false;
    }
    if mbuf.adj(start).is_err() {
        return false;
    }
    // A copy of a length known at compile time compiles to a few moves instead of a
    // call to memcpy.
    let prepended = match out.header_len {
        IPV4_ENCAP_HEADER_LEN => prepend_header::<IPV4_ENCAP_HEADER_LEN>(mbuf, &out.header),
        IPV6_ENCAP_HEADER_LEN => prepend_header::<IPV6_ENCAP_HEADER_LEN>(mbuf, &out.header),
        _ => match mbuf.prepend(out.header_len as u16) {
            Some(header) => {
                header.copy_from_slice(out.header());
                true
            }
            None => false,
        },
    };
    if !prepended {
        return false;
    }
    set_checksum_offload(mbuf, out);
    true
}

/// Prepends the first `N` bytes of `header` to the packet in `mbuf`. Returns false if the
/// headroom is too small.
#[inline(always)]
fn prepend_header<const N: usize>(mbuf: &mut Mbuf<'_>, header: &[u8; MAX_HEADER_LEN]) -> bool {
    let Some(source) = header.first_chunk::<N>() else {
        return false;
    };
    let Some(target) = mbuf
        .prepend(N as u16)
        .and_then(|target| target.first_chunk_mut::<N>())
    else {
        return false;
    };
    *target = *source;
    true
}

/// Asks the NIC to complete the outer UDP checksum when the core left it to the port.
#[inline]
fn set_checksum_offload(mbuf: &mut Mbuf<'_>, out: &Output) {
    if out.udp_checksum_offloaded {
        let (family, l3_len) = if out.outer_ipv6 {
            (tx_offload::IPV6, IPV6_HEADER_LEN)
        } else {
            (tx_offload::IPV4, IPV4_HEADER_LEN)
        };
        mbuf.set_tx_offload(
            family | tx_offload::UDP_CKSUM,
            ETHERNET_HEADER_LEN as u8,
            l3_len as u16,
            UDP_HEADER_LEN as u8,
        );
    }
}

/// Allocates an mbuf and writes the forward of `frame` into it: the header, then the
/// packet. `None` if the pool is empty or the result does not fit one mbuf.
fn copy_forward_to_mbuf<'pool>(
    pool: &'pool Mempool<'_>,
    out: &Output,
    frame: &[u8],
) -> Option<Mbuf<'pool>> {
    let inner = frame.get(out.inner.clone())?;
    let header = out.header();
    let mut mbuf = pool.alloc()?;
    let length = u16::try_from(header.len() + inner.len()).ok()?;
    let data = mbuf.append(length)?;
    data[..header.len()].copy_from_slice(header);
    data[header.len()..].copy_from_slice(inner);
    set_checksum_offload(&mut mbuf, out);
    Some(mbuf)
}

/// Allocates an mbuf and copies `frame` into it; `None` if the pool is empty or the
/// frame does not fit one mbuf.
#[inline]
fn copy_to_mbuf<'pool>(pool: &'pool Mempool<'_>, frame: &[u8]) -> Option<Mbuf<'pool>> {
    let mut mbuf = pool.alloc()?;
    let length = u16::try_from(frame.len()).ok()?;
    mbuf.append(length)?.copy_from_slice(frame);
    Some(mbuf)
}

/// Converts TSC cycles to nanoseconds without overflow for any realistic uptime.
#[inline]
fn cycles_to_ns(cycles: u64, tsc_hz: u64) -> u64 {
    (u128::from(cycles) * 1_000_000_000 / u128::from(tsc_hz.max(1))) as u64
}

/// Runs the poll loop until [`Shared::stop`] is set, then publishes the final counters.
/// Returns the lcore exit code, 0.
pub fn run<'pool>(
    lane: Lane<'_, 'pool>,
    mut worker: Worker,
    mut steering: Steering<'_, 'pool>,
    settings: PollSettings<'_, 'pool>,
) -> i32 {
    // If this loop ever panics, the guard stops the other workers and the main lcore,
    // which then reports the failed lcore instead of waiting forever.
    let _stop_on_exit = StopOnDrop(&settings.shared.stop);
    let shared = settings.shared;
    let report = &shared.reports[settings.index];
    let attempts = settings.tx_retries.max(1);

    let Lane { mut rx, tx, kernel } = lane;
    let (mut kernel_rx, kernel_tx) = match kernel {
        Some((kernel_rx, kernel_tx)) => (Some(kernel_rx), Some(kernel_tx)),
        None => (None, None),
    };
    let mut dispatch = Dispatch {
        pool: settings.pool,
        to_port: Sender {
            queue: tx,
            burst: MbufBurst::new(),
            attempts,
        },
        to_kernel: kernel_tx.map(|queue| Sender {
            queue,
            burst: MbufBurst::new(),
            attempts,
        }),
        out: Output::default(),
        scratch: vec![0; MAX_FRAME_LEN],
        linear: vec![0; MAX_CHAINED_FRAME_LEN],
        tx: TxCounters::default(),
    };
    let mut received = MbufBurst::new();
    // Frames of a burst that stay on this worker, while its fragments leave.
    let mut kept = MbufBurst::new();
    let mut collected = MbufBurst::new();
    let mut from_kernel = MbufBurst::new();
    let mut next_publish_ns = 0;
    let mut reap_pacer = ReapPacer::new(
        reap::table_slots(settings.conntrack_capacity),
        reap::SWEEP_NS,
        cycles_to_ns(rdtsc(), settings.tsc_hz),
    );

    while !shared.stop.load(Ordering::Relaxed) {
        let now_ns = cycles_to_ns(rdtsc(), settings.tsc_hz);
        // Frames this poll took from the port, the fragment ring and the kernel port.
        let mut frames = rx.rx_burst(&mut received);
        if frames > 0 {
            let snapshot = shared.snapshot.load();
            if let Steering::Send(producer) = &steering {
                send_fragments_to_collector(
                    producer,
                    redirect_match(&snapshot),
                    &mut received,
                    &mut kept,
                    &mut dispatch.tx,
                );
            }
            decide_burst(&mut worker, &mut dispatch, &snapshot, now_ns, &mut received);
        }
        if let Steering::Collect(consumer) = &mut steering {
            let dequeued = consumer.dequeue_burst(&mut collected);
            if dequeued > 0 {
                frames += dequeued;
                let snapshot = shared.snapshot.load();
                decide_burst(
                    &mut worker,
                    &mut dispatch,
                    &snapshot,
                    now_ns,
                    &mut collected,
                );
            }
        }

        if let Some(kernel_rx) = kernel_rx.as_mut() {
            let kernel_frames = kernel_rx.rx_burst(&mut from_kernel);
            if kernel_frames > 0 {
                frames += kernel_frames;
                for mbuf in from_kernel.drain() {
                    dispatch.tx.from_kernel += 1;
                    dispatch.to_port.push(mbuf, &mut dispatch.tx);
                }
            }
        }

        dispatch.flush();
        let reap_slots = reap_pacer.slots_for_poll(now_ns, frames);
        if reap_slots > 0 {
            worker.reap(now_ns, reap_slots);
        }
        if now_ns >= next_publish_ns {
            publish(report, &worker, &dispatch.tx);
            next_publish_ns = now_ns + PUBLISH_INTERVAL_NS;
        }
        if frames == 0 {
            pause();
        }
    }

    publish(report, &worker, &dispatch.tx);
    0
}

/// Decides every frame of `burst` with `worker` and acts on the verdicts, leaving the
/// burst empty.
#[inline]
fn decide_burst<'pool>(
    worker: &mut Worker,
    dispatch: &mut Dispatch<'_, 'pool>,
    snapshot: &Snapshot,
    now_ns: u64,
    burst: &mut MbufBurst<'pool>,
) {
    // Hash and prefetch the whole burst first so conntrack misses overlap. Every frame
    // gets a hint, because the loop below calls `process` once per frame and the worker
    // consumes the hints in that order. A chained frame's hint, computed from its first
    // segment, does not match the linear copy that `process` decides, so it goes unused.
    worker.prefetch_burst(snapshot, burst.iter().map(|mbuf| mbuf.data()));
    for mbuf in burst.drain() {
        if mbuf.nb_segs() != 1 {
            dispatch.decide_chained(worker, snapshot, now_ns, mbuf);
            continue;
        }
        let verdict = worker.process(snapshot, mbuf.data(), now_ns, &mut dispatch.out);
        dispatch.dispatch(verdict, mbuf);
        if worker.has_held_fragments() {
            dispatch.send_released(worker, snapshot, now_ns);
        }
    }
}

/// Returns the redirect VXLAN packets whose inner fragments count as fragments: those of
/// the snapshot's cluster, if it has one.
#[inline]
fn redirect_match(snapshot: &Snapshot) -> Option<RedirectMatch> {
    snapshot.cluster.as_ref().map(|cluster| RedirectMatch {
        port: cluster.port,
        vni: cluster.redirect_vni,
    })
}

/// Moves the IP fragments of `received` to worker 0's ring and leaves the other frames
/// in `received`, in their order. Fragments the full ring rejects are freed and counted.
#[inline]
fn send_fragments_to_collector<'pool>(
    producer: &RingProducer<'_, 'pool>,
    redirect: Option<RedirectMatch>,
    received: &mut MbufBurst<'pool>,
    kept: &mut MbufBurst<'pool>,
    tx: &mut TxCounters,
) {
    if !received
        .iter()
        .any(|mbuf| steer::is_fragment(mbuf.data(), redirect))
    {
        return;
    }
    // Both bursts have BURST_SIZE slots and `received` contains at most that many frames,
    // so every push below has room.
    let mut fragments = MbufBurst::new();
    for mbuf in received.drain() {
        let target = if steer::is_fragment(mbuf.data(), redirect) {
            &mut fragments
        } else {
            &mut *kept
        };
        if target.push(mbuf).is_err() {
            tx.fragment_ring_full += 1;
        }
    }
    std::mem::swap(received, kept);
    let moved = producer.enqueue_burst(&mut fragments);
    tx.fragments_steered += moved as u64;
    tx.fragment_ring_full += fragments.len() as u64;
    fragments.clear();
}

fn publish(report: &ArcSwap<WorkerReport>, worker: &Worker, tx: &TxCounters) {
    report.store(Arc::new(WorkerReport {
        counters: worker.counters().clone(),
        tx: *tx,
    }));
}

/// Sets the flag when dropped, also while unwinding from a panic.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_to_ns_converts_at_tsc_rate() {
        assert_eq!(cycles_to_ns(3_000_000_000, 3_000_000_000), 1_000_000_000);
        assert_eq!(cycles_to_ns(1, 1_000_000_000), 1);
        assert_eq!(cycles_to_ns(u64::MAX, 1_000_000_000), u64::MAX);
    }

    #[test]
    fn cycles_to_ns_survives_zero_rate() {
        assert_eq!(cycles_to_ns(5, 0), 5_000_000_000);
    }
}
