//! Endpoint change to new table in the dataplane, with 1000 endpoints.
//!
//! Each round changes the endpoint set of one service of 1000 backends (one backend
//! leaves or returns) and times the work between the change and a snapshot the
//! dataplane can swap in: the control plane's encode (Maglev population of a 65537-slot
//! table included) and publish, then the dataplane's copy, checksum, decode, config
//! validation and snapshot build. The dataplane's main lcore polls the ring every
//! 20 ms, which adds 0 to 20 ms on top; the output states both.
//!
//! Run with `cargo bench -p spike-snapring --bench endpoint_change`.

use std::fmt::Write;
use std::time::{Duration, Instant};

use spike_core::Config;
use spike_snapring::payload;
use spike_snapring::{Geometry, Publisher, Received, Subscriber};

const ENDPOINTS: usize = 1000;
const ROUNDS: usize = 300;
/// The dataplane's control tick (`CONTROL_TICK` in spike-dataplane's run.rs).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

fn config() -> Config {
    let mut text = String::from(
        "[node]\nmac = \"02:00:00:00:00:01\"\nipv4 = \"10.0.0.1\"\n\
         gateway_mac = \"02:00:00:00:00:fe\"\nvtep_mac = \"02:00:00:00:00:02\"\n\
         [hash]\nkey = \"000102030405060708090a0b0c0d0e0f\"\n\
         [[service]]\nname = \"web\"\nvip = \"198.51.100.1\"\nprotocol = \"tcp\"\nport = 80\n",
    );
    for index in 0..ENDPOINTS {
        let (high, low) = (index / 250, index % 250 + 1);
        let _ = write!(
            text,
            "[[service.backend]]\naddress = \"10.1.{high}.{low}\"\n\
             vtep_mac = \"0a:58:0a:f4:{high:02x}:{low:02x}\"\n"
        );
    }
    text.parse().expect("the generated config is valid")
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let path = dir.path().join("ring");
    let mut publisher = Publisher::attach(&path, Geometry::default()).expect("create the ring");
    let mut subscriber = Subscriber::attach(&path, Geometry::default()).expect("open the ring");
    let full = config();
    let running = full.clone();

    let mut samples = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let mut changed = full.clone();
        if round % 2 == 0 {
            changed.services[0].backends.remove(round % ENDPOINTS);
        }

        let start = Instant::now();
        let encoded = payload::encode(&changed).expect("encode");
        publisher
            .publish(round as u64 + 1, &encoded.bytes)
            .expect("publish");
        let Received::Snapshot(delivery) = subscriber.poll() else {
            panic!("round {round}: no snapshot delivered");
        };
        let decoded = payload::decode(&delivery.payload).expect("decode");
        let (_, snapshot) = decoded
            .into_snapshot(&running, round as u32 + 2)
            .expect("build the snapshot");
        samples.push(start.elapsed());
        assert_eq!(
            snapshot.services[0].backends.len(),
            changed.services[0].backends.len()
        );
    }

    samples.sort();
    let p50 = percentile(&samples, 0.50);
    let p99 = percentile(&samples, 0.99);
    let max = samples[samples.len() - 1];
    println!("endpoint change to new table, {ENDPOINTS} endpoints, {ROUNDS} rounds");
    println!("processing: p50 {p50:.2?}, p99 {p99:.2?}, max {max:.2?}");
    println!(
        "with the dataplane's {POLL_INTERVAL:?} poll interval: p99 at most {:.2?}",
        p99 + POLL_INTERVAL
    );
}
