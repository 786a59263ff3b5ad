//! net_null ports: configure, receive zero-filled frames on one port,
//! transmit them on the other and check the counters.

mod common;

use std::time::{Duration, Instant};

use spike_dpdk::{
    DpdkError, Eal, MbufBurst, Mempool, Port, BURST_SIZE, DEFAULT_DATA_ROOM, RSS_IP_TCP_UDP,
    SOCKET_ID_ANY,
};

/// Frame size net_null delivers when its `size` argument is not given.
const NULL_FRAME_LEN: usize = 64;
const BURSTS: usize = 20;

#[test]
fn null_ports_forward_and_count() {
    let dir = common::TempDir::new("null-ports");
    let args = common::eal_args(
        "null-ports",
        &dir,
        &["-l", "0", "--vdev", "net_null0", "--vdev", "net_null1"],
    );
    let eal = Eal::init(&args).expect("EAL init with net_null vdevs");
    assert_eq!(
        Eal::init(&args).unwrap_err(),
        DpdkError::EalAlreadyInitialized
    );

    assert_eq!(Port::count_avail(&eal), 2);
    let pool = Mempool::new(
        &eal,
        "null_pool",
        4095,
        128,
        DEFAULT_DATA_ROOM,
        SOCKET_ID_ANY,
    )
    .expect("mempool of 4095 mbufs fits in 256 MiB");

    let mut rx_port = Port::by_name(&eal, "net_null0").expect("net_null0 exists");
    let mut tx_port = Port::by_name(&eal, "net_null1").expect("net_null1 exists");
    assert!(matches!(
        Port::by_name(&eal, "net_null7"),
        Err(DpdkError::PortNotFound { .. })
    ));
    assert_eq!(
        Port::open(&eal, rx_port.id()).unwrap_err(),
        DpdkError::PortInUse {
            port_id: rx_port.id()
        }
    );
    assert_eq!(rx_port.name().unwrap(), "net_null0");

    let info = rx_port.dev_info().expect("dev_info on net_null0");
    assert_eq!(info.driver_name, "net_null");
    assert!(info.max_rx_queues >= 1);
    let rss_hf = rx_port.configure(1, 1, true).expect("configure net_null0");
    assert_eq!(rss_hf, RSS_IP_TCP_UDP & info.flow_type_rss_offloads);
    tx_port.configure(1, 1, false).expect("configure net_null1");

    for port in [&mut rx_port, &mut tx_port] {
        assert!(matches!(port.start(), Err(DpdkError::QueueNotSetUp { .. })));
        port.setup_rx_queue(0, 512, &pool).expect("rx queue setup");
        assert!(matches!(
            port.setup_rx_queue(1, 512, &pool),
            Err(DpdkError::QueueOutOfRange { .. })
        ));
        port.setup_tx_queue(0, 512).expect("tx queue setup");
        port.start().expect("port start");
        port.enable_promiscuous().expect("promiscuous mode");
    }

    assert_eq!(rx_port.mac_address().unwrap().len(), 6);
    assert!(rx_port.mtu().unwrap() >= 1500);
    assert!(rx_port.link().unwrap().up);

    let (received, sent) = forward(&mut rx_port, &mut tx_port);
    assert_eq!(received, BURSTS * BURST_SIZE);
    assert_eq!(sent, received);

    let rx_stats = rx_port.stats().unwrap();
    let tx_stats = tx_port.stats().unwrap();
    assert_eq!(rx_stats.ipackets, received as u64);
    assert_eq!(tx_stats.opackets, sent as u64);
    // net_null in DPDK 22.11 counts packets but not bytes, so ibytes and
    // obytes stay 0 here; the net_pcap test checks byte counters.
    assert_eq!(tx_stats.oerrors, 0);
    assert_eq!(rx_stats.rx_nombuf, 0);

    rx_port.stop().expect("stop net_null0");
    let mut burst = MbufBurst::new();
    assert_eq!(
        rx_port.rx_burst(0, &mut burst),
        0,
        "a stopped port receives nothing"
    );
    drop(burst);

    rx_port.close().expect("close net_null0");
    tx_port.close().expect("close net_null1");
    assert_eq!(pool.in_use(), 0, "every mbuf went back to the pool");

    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}

/// Receives BURSTS full bursts of zero-filled frames and transmits them.
fn forward<'a>(rx_port: &mut Port<'a>, tx_port: &mut Port<'a>) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut burst = MbufBurst::new();
    let (mut received, mut sent) = (0, 0);

    for _ in 0..BURSTS {
        assert!(Instant::now() < deadline, "forwarding timed out");
        let count = rx_port.rx_burst(0, &mut burst);
        assert_eq!(count, BURST_SIZE, "net_null fills every burst");
        received += count;

        for mbuf in burst.iter() {
            assert_eq!(mbuf.data().len(), NULL_FRAME_LEN);
            assert!(mbuf.data().iter().all(|&byte| byte == 0));
        }

        sent += tx_port.tx_burst(0, &mut burst);
        assert!(burst.is_empty(), "net_null accepts every mbuf");
    }
    (received, sent)
}
