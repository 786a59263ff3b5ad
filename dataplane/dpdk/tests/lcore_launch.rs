//! Launching closures on a worker lcore: ids, exit codes, busy lcores,
//! panics, and a worker polling queue handles split from two ports.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use spike_dpdk::{
    lcore_id, pause, DpdkError, Eal, MbufBurst, Mempool, Port, DEFAULT_DATA_ROOM, LCORE_PANICKED,
    SOCKET_ID_ANY,
};

const WORKER: u32 = 1;
const WORKER_BURSTS: usize = 100;

#[test]
fn lcore_launch_and_wait() {
    let dir = common::TempDir::new("lcore-launch");
    let args = common::eal_args(
        "lcore-launch",
        &dir,
        &["-l", "0-1", "--vdev", "net_null0", "--vdev", "net_null1"],
    );
    let eal = Eal::init(&args).expect("EAL init on lcores 0-1");

    assert_eq!(eal.main_lcore(), 0);
    assert_eq!(
        lcore_id(),
        Some(0),
        "the thread that ran rte_eal_init is lcore 0"
    );
    assert_eq!(eal.lcore_count(), 2);
    assert_eq!(eal.worker_lcores().collect::<Vec<_>>(), vec![WORKER]);
    assert!(eal.tsc_hz() > 0);

    let from_other_thread = std::thread::scope(|threads| {
        threads
            .spawn(|| eal.scope(|_| ()).map(|_| ()))
            .join()
            .unwrap()
    });
    assert_eq!(
        from_other_thread,
        Err(DpdkError::NotMainLcore {
            main: 0,
            current: None
        })
    );

    check_launch_rules(&eal);
    check_worker_forwarding(&eal);

    eal.cleanup().expect("EAL cleanup");
}

fn check_launch_rules(eal: &Eal) {
    let seen_lcore = AtomicU32::new(u32::MAX);
    let release = AtomicBool::new(false);

    let codes = eal
        .scope(|scope| {
            assert_eq!(
                scope.launch_on_lcore(0, || 0),
                Err(DpdkError::NotWorkerLcore { lcore_id: 0 })
            );

            scope
                .launch_on_lcore(WORKER, || {
                    seen_lcore.store(lcore_id().unwrap_or(u32::MAX), Ordering::SeqCst);
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                        pause();
                    }
                    7
                })
                .expect("launch on the worker lcore");

            let busy = scope.launch_on_lcore(WORKER, || 0);
            assert!(
                matches!(busy, Err(DpdkError::Call { errno: 16, .. })),
                "a running lcore rejects a launch with EBUSY (16): {busy:?}"
            );

            release.store(true, Ordering::SeqCst);
            scope.wait_all_lcores()
        })
        .expect("scope on the main lcore");
    assert_eq!(codes, vec![(WORKER, 7)]);
    assert_eq!(seen_lcore.load(Ordering::SeqCst), WORKER);

    let codes = eal
        .scope(|scope| {
            scope
                .launch_on_lcore(WORKER, || panic!("worker panic on purpose"))
                .unwrap();
            scope.wait_all_lcores()
        })
        .unwrap();
    assert_eq!(codes, vec![(WORKER, LCORE_PANICKED)]);
}

/// Runs a forwarding loop on the worker lcore with queue handles split from
/// two started net_null ports, while the main lcore only waits.
fn check_worker_forwarding(eal: &Eal) {
    let pool = Mempool::new(
        eal,
        "lcore_pool",
        2047,
        64,
        DEFAULT_DATA_ROOM,
        SOCKET_ID_ANY,
    )
    .expect("mempool");
    let mut rx_port = Port::by_name(eal, "net_null0").unwrap();
    let mut tx_port = Port::by_name(eal, "net_null1").unwrap();
    for port in [&mut rx_port, &mut tx_port] {
        port.configure(1, 1, false).unwrap();
        port.setup_rx_queue(0, 256, &pool).unwrap();
        port.setup_tx_queue(0, 256).unwrap();
        port.start().unwrap();
    }

    let sent = AtomicU32::new(0);
    {
        let (mut rx_queues, _) = rx_port.split_queues().unwrap();
        let (_, mut tx_queues) = tx_port.split_queues().unwrap();
        let mut rx_queue = rx_queues.pop().unwrap();
        let mut tx_queue = tx_queues.pop().unwrap();

        eal.scope(|scope| {
            scope
                .launch_on_lcore(WORKER, || {
                    let mut burst = MbufBurst::new();
                    for _ in 0..WORKER_BURSTS {
                        rx_queue.rx_burst(&mut burst);
                        let count = tx_queue.tx_burst(&mut burst);
                        sent.fetch_add(count as u32, Ordering::Relaxed);
                    }
                    0
                })
                .unwrap();
        })
        .unwrap();
    }

    let sent = u64::from(sent.load(Ordering::Relaxed));
    assert!(sent > 0);
    assert_eq!(rx_port.stats().unwrap().ipackets, sent);
    assert_eq!(tx_port.stats().unwrap().opackets, sent);

    rx_port.close().unwrap();
    tx_port.close().unwrap();
    assert_eq!(pool.in_use(), 0);
}
