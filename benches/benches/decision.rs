//! Per-packet cost of the whole forwarding decision, `Worker::process`, on bursts of 32
//! TCP frames to one VIP with 1, 10,000 and 1,000,000 tracked flows, and the fragment
//! test every frame passes on a dataplane with several workers.
//!
//! Every frame is built before timing starts and every flow is inserted into the
//! conntrack table before its first measured packet, so every timed packet takes the
//! tracked-flow path: a service lookup, a conntrack hit, and the encapsulation header write.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spike_benches::{build_frames, config, FRAME_LEN, NOW_NS};
use spike_core::steer::{self, RedirectMatch};
use spike_core::{Output, Snapshot, Verdict, Worker};

const BURST: usize = 32;

fn bench_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(BURST as u64));

    for flows in [1usize, 10_000, 1_000_000] {
        let config = config((2 * flows).max(1024));
        let snapshot = Snapshot::build(&config, 1).expect("benchmark snapshot builds");
        let mut worker = Worker::new(&config).expect("benchmark worker builds");
        let mut out = Output::default();
        let frames = build_frames(flows);

        for frame in frames.chunks_exact(FRAME_LEN) {
            let verdict = worker.process(&snapshot, frame, NOW_NS, &mut out);
            assert_eq!(verdict, Verdict::Forward, "warm-up frame was not forwarded");
        }
        assert_eq!(
            worker.tracked_flows(),
            flows,
            "warm-up left flows untracked"
        );

        // Bursts walk the flows in order and wrap around, so with one flow a burst is
        // that flow's frame 32 times.
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("flows", flows), |b| {
            b.iter(|| {
                for _ in 0..BURST {
                    let frame = &frames[next * FRAME_LEN..(next + 1) * FRAME_LEN];
                    let verdict = worker.process(&snapshot, black_box(frame), NOW_NS, &mut out);
                    black_box(verdict);
                    next = if next + 1 == flows { 0 } else { next + 1 };
                }
            })
        });

        // The same bursts, prepared with `prefetch_burst` as the DPDK workers do.
        group.bench_function(BenchmarkId::new("flows_prefetched", flows), |b| {
            b.iter(|| {
                let mut burst: [&[u8]; BURST] = [&[]; BURST];
                for slot in burst.iter_mut() {
                    *slot = &frames[next * FRAME_LEN..(next + 1) * FRAME_LEN];
                    next = if next + 1 == flows { 0 } else { next + 1 };
                }
                worker.prefetch_burst(&snapshot, burst.iter().copied());
                for frame in burst {
                    let verdict = worker.process(&snapshot, black_box(frame), NOW_NS, &mut out);
                    black_box(verdict);
                }
            })
        });
        assert_eq!(
            worker.tracked_flows(),
            flows,
            "measured packets created new flows"
        );
    }
    group.finish();
}

/// `steer::is_fragment` on a burst of the same whole TCP frames, with a cluster's
/// redirect match: the cost a non-fragment pays on a worker other than worker 0.
fn bench_fragment_test(c: &mut Criterion) {
    let mut group = c.benchmark_group("steer");
    group.throughput(Throughput::Elements(BURST as u64));
    let frames = build_frames(BURST);
    let redirect = Some(RedirectMatch {
        port: 8472,
        vni: 4097,
    });
    group.bench_function("is_fragment_whole_tcp", |b| {
        b.iter(|| {
            for frame in frames.chunks_exact(FRAME_LEN) {
                black_box(steer::is_fragment(black_box(frame), redirect));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decision, bench_fragment_test);
criterion_main!(benches);
