//! Listing port names, and reading a port's counters through a
//! `StatsReader` while a worker lcore polls its split-off queues.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spike_dpdk::{pause, Eal, MbufBurst, Mempool, Port, DEFAULT_DATA_ROOM, SOCKET_ID_ANY};

const WORKER: u32 = 1;

#[test]
fn port_names_and_stats_reader() {
    let dir = common::TempDir::new("port-names-stats");
    let args = common::eal_args(
        "port-names-stats",
        &dir,
        &["-l", "0-1", "--vdev", "net_null0", "--vdev", "net_null1"],
    );
    let eal = Eal::init(&args).expect("EAL init with two net_null vdevs");
    assert_eq!(
        Port::available_names(&eal),
        vec!["net_null0".to_owned(), "net_null1".to_owned()]
    );

    let pool = Mempool::new(
        &eal,
        "stats_pool",
        2047,
        64,
        DEFAULT_DATA_ROOM,
        SOCKET_ID_ANY,
    )
    .expect("mempool");
    let mut port = Port::by_name(&eal, "net_null0").unwrap();
    assert!(
        port.split_queues_with_stats().is_err(),
        "a port that is not started has no queues to split"
    );
    port.configure(1, 1, false).unwrap();
    port.setup_rx_queue(0, 256, &pool).unwrap();
    port.setup_tx_queue(0, 256).unwrap();
    port.start().unwrap();
    assert_eq!(
        Port::available_names(&eal).len(),
        2,
        "an open port is still listed"
    );

    let received = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut seen_while_polling = 0;
    {
        let (mut rx_queues, mut tx_queues, stats) = port.split_queues_with_stats().unwrap();
        let mut rx_queue = rx_queues.pop().unwrap();
        let mut tx_queue = tx_queues.pop().unwrap();

        eal.scope(|scope| {
            scope
                .launch_on_lcore(WORKER, || {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let mut burst = MbufBurst::new();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let count = rx_queue.rx_burst(&mut burst);
                        received.fetch_add(count as u64, Ordering::Relaxed);
                        tx_queue.tx_burst(&mut burst);
                        burst.clear();
                    }
                    0
                })
                .unwrap();

            let deadline = Instant::now() + Duration::from_secs(5);
            while seen_while_polling == 0 && Instant::now() < deadline {
                seen_while_polling = stats.stats().expect("stats while polling").ipackets;
                pause();
            }
            stop.store(true, Ordering::Relaxed);
        })
        .unwrap();
    }

    assert!(
        seen_while_polling > 0,
        "the reader sees packets while the worker polls"
    );
    let final_stats = port.stats().unwrap();
    assert_eq!(final_stats.ipackets, received.load(Ordering::Relaxed));
    assert!(final_stats.ipackets >= seen_while_polling);

    port.close().unwrap();
    assert_eq!(
        Port::available_names(&eal),
        vec!["net_null1".to_owned()],
        "a closed virtual port releases its id"
    );
    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}
