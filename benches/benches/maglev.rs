//! Time to populate a Maglev lookup table, `MaglevTable::build`, for 10, 100, 1000 and 5000
//! backends of weight 1 at table sizes 65537 and 655373.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spike_core::maglev::{MaglevBackend, MaglevTable};
use spike_core::snapshot::backend_id;

/// Backends with the ids a snapshot derives from underlay addresses 10.0.0.1 onwards.
fn backends(count: u32) -> Vec<MaglevBackend> {
    (1..=count)
        .map(|host| MaglevBackend {
            id: backend_id(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + host))),
            weight: 1,
        })
        .collect()
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    for table_size in [65_537u32, 655_373] {
        for count in [10u32, 100, 1000, 5000] {
            let backends = backends(count);
            let id = BenchmarkId::new(format!("m{table_size}"), count);
            group.bench_with_input(id, &backends, |b, backends| {
                b.iter(|| {
                    MaglevTable::build(black_box(backends), table_size).expect("table builds")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_build);
criterion_main!(benches);
