//! Measurements of spike-core that criterion does not fit, for `scripts/bench/`.
//!
//! - `ipp FLOWS PACKETS`: tracks FLOWS flows, then runs PACKETS packets through
//!   `Worker::prefetch_burst` and `Worker::process` in bursts of 32, the way the DPDK
//!   workers do. Run it under callgrind with two packet counts: the difference in
//!   instructions divided by the difference in packets is the cost of one decision,
//!   without the setup.
//! - `scaling SECONDS FLOWS...`: for each flow count, the decision rate on one core
//!   over SECONDS seconds and the conntrack memory per tracked flow (growth of the
//!   resident set while the worker is created and filled).
//! - `publish COUNT`: one thread decides bursts and loads the current snapshot once
//!   per burst, as `poll.rs` does. Another builds a new snapshot and publishes it
//!   COUNT times. Prints the build time and the time from publish to the first burst
//!   decided with the new snapshot.
//!
//! Output is one JSON object per line.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use spike_benches::{build_frames, config, FRAME_LEN, NOW_NS};
use spike_core::{Output, Snapshot, Verdict, Worker};

const BURST: usize = 32;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers = |from: usize| -> Vec<u64> {
        args[from..]
            .iter()
            .map(|arg| {
                arg.parse()
                    .unwrap_or_else(|_| panic!("invalid number {arg:?}"))
            })
            .collect()
    };
    match args.first().map(String::as_str) {
        Some("ipp") if args.len() == 3 => {
            let values = numbers(1);
            instructions_run(values[0] as usize, values[1]);
        }
        Some("scaling") if args.len() >= 3 => {
            let values = numbers(1);
            for &flows in &values[1..] {
                scaling(flows as usize, Duration::from_secs(values[0]));
            }
        }
        Some("publish") if args.len() == 2 => publish(numbers(1)[0]),
        _ => {
            eprintln!(
                "usage: core-bench ipp FLOWS PACKETS | scaling SECONDS FLOWS... | publish COUNT"
            );
            std::process::exit(2);
        }
    }
}

/// A worker that tracks `flows` flows, with the frames of those flows.
struct Setup {
    worker: Worker,
    frames: Vec<u8>,
    flows: usize,
    next: usize,
    out: Output,
}

impl Setup {
    fn new(flows: usize, snapshot: &Snapshot) -> Setup {
        let config = config(capacity_for(flows));
        let worker = Worker::new(&config).expect("benchmark worker builds");
        let frames = build_frames(flows);
        let mut setup = Setup {
            worker,
            frames,
            flows,
            next: 0,
            out: Output::default(),
        };
        let bursts = flows.div_ceil(BURST);
        for _ in 0..bursts {
            setup.burst(snapshot);
        }
        assert_eq!(
            setup.worker.tracked_flows(),
            flows,
            "warm-up left flows untracked"
        );
        setup
    }

    /// Decides the next burst of frames, walking the flows in order.
    fn burst(&mut self, snapshot: &Snapshot) {
        let mut burst: [&[u8]; BURST] = [&[]; BURST];
        for slot in burst.iter_mut() {
            *slot = &self.frames[self.next * FRAME_LEN..(self.next + 1) * FRAME_LEN];
            self.next = if self.next + 1 == self.flows {
                0
            } else {
                self.next + 1
            };
        }
        self.worker.prefetch_burst(snapshot, burst.iter().copied());
        for frame in burst {
            let verdict = self
                .worker
                .process(snapshot, black_box(frame), NOW_NS, &mut self.out);
            debug_assert_eq!(verdict, Verdict::Forward);
            black_box(verdict);
        }
    }
}

fn test_snapshot(flows: usize) -> Snapshot {
    Snapshot::build(&config(capacity_for(flows)), 1).expect("benchmark snapshot builds")
}

/// Conntrack capacity for `flows` tracked flows: twice as many, as in the criterion
/// bench, within the per-core limit of 2^24.
fn capacity_for(flows: usize) -> usize {
    (2 * flows).clamp(1024, spike_core::conntrack::MAX_CAPACITY)
}

fn instructions_run(flows: usize, packets: u64) {
    let snapshot = test_snapshot(flows);
    let mut setup = Setup::new(flows, &snapshot);
    for _ in 0..packets.div_ceil(BURST as u64) {
        setup.burst(&snapshot);
    }
    println!(
        "{{\"flows\": {flows}, \"packets\": {}}}",
        packets.div_ceil(BURST as u64) * BURST as u64
    );
}

/// Resident set size of this process, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn scaling(flows: usize, duration: Duration) {
    let frames_bytes = (flows * FRAME_LEN) as u64;
    let snapshot = test_snapshot(flows);
    let before = resident_bytes();
    let mut setup = Setup::new(flows, &snapshot);
    let conntrack_bytes = resident_bytes().saturating_sub(before + frames_bytes);

    let start = Instant::now();
    let mut packets = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            setup.burst(&snapshot);
        }
        packets += 64 * BURST as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{{\"flows\": {flows}, \"ns_per_packet\": {:.1}, \"mpps\": {:.3}, \
         \"conntrack_bytes\": {conntrack_bytes}, \"bytes_per_flow\": {:.1}}}",
        seconds * 1e9 / packets as f64,
        packets as f64 / seconds / 1e6,
        conntrack_bytes as f64 / flows as f64,
    );
}

fn publish(count: u64) {
    let flows = 10_000;
    let config = config(2 * flows);
    let shared = Arc::new(ArcSwap::from_pointee(
        Snapshot::build(&config, 1).expect("benchmark snapshot builds"),
    ));
    let epoch = Instant::now();
    let seen_generation = Arc::new(AtomicU64::new(1));
    let seen_at_ns = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let worker_thread = {
        let (shared, seen_generation, seen_at_ns, stop) = (
            Arc::clone(&shared),
            Arc::clone(&seen_generation),
            Arc::clone(&seen_at_ns),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            let mut setup = Setup::new(flows, &shared.load());
            while !stop.load(Ordering::Relaxed) {
                let snapshot = shared.load();
                let generation = u64::from(snapshot.generation);
                if generation != seen_generation.load(Ordering::Relaxed) {
                    seen_at_ns.store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    seen_generation.store(generation, Ordering::Release);
                }
                setup.burst(&snapshot);
            }
        })
    };

    let mut build_ns = Vec::new();
    let mut latency_ns = Vec::new();
    for generation in 2..2 + count {
        std::thread::sleep(Duration::from_millis(2));
        let start = Instant::now();
        let snapshot = Snapshot::build(&config, generation as u32).expect("snapshot builds");
        build_ns.push(start.elapsed().as_nanos() as u64);
        let published_ns = epoch.elapsed().as_nanos() as u64;
        shared.store(Arc::new(snapshot));
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen_generation.load(Ordering::Acquire) != generation {
            assert!(
                Instant::now() < deadline,
                "the worker never saw generation {generation}"
            );
            std::hint::spin_loop();
        }
        latency_ns.push(
            seen_at_ns
                .load(Ordering::Relaxed)
                .saturating_sub(published_ns),
        );
    }
    stop.store(true, Ordering::Relaxed);
    worker_thread.join().expect("worker thread ends");

    build_ns.sort_unstable();
    latency_ns.sort_unstable();
    let quantile = |values: &[u64], q: f64| values[((values.len() - 1) as f64 * q) as usize];
    println!(
        "{{\"publishes\": {count}, \"build_ns_median\": {}, \"publish_to_worker_ns_median\": {}, \
         \"publish_to_worker_ns_p99\": {}, \"publish_to_worker_ns_max\": {}}}",
        quantile(&build_ns, 0.5),
        quantile(&latency_ns, 0.5),
        quantile(&latency_ns, 0.99),
        quantile(&latency_ns, 1.0),
    );
}
