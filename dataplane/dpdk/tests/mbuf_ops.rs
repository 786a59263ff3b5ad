//! Mbuf editing, bursts and mempool accounting, without ports.

mod common;

use spike_dpdk::{
    DpdkError, Eal, Mbuf, MbufBurst, Mempool, SegmentTooShort, BURST_SIZE, DEFAULT_DATA_ROOM,
    PKTMBUF_HEADROOM, SOCKET_ID_ANY,
};

const POOL_SIZE: u32 = 63;

#[test]
fn mbuf_edit_burst_and_pool() {
    let dir = common::TempDir::new("mbuf-ops");
    let args = common::eal_args("mbuf-ops", &dir, &["-l", "0"]);
    let eal = Eal::init(&args).expect("EAL init");

    check_pool_too_large(&eal);

    // No per-lcore cache, so available() and in_use() are exact.
    let pool = Mempool::new(
        &eal,
        "ops_pool",
        POOL_SIZE,
        0,
        DEFAULT_DATA_ROOM,
        SOCKET_ID_ANY,
    )
    .expect("small mempool");
    assert_eq!(pool.name(), "ops_pool");
    assert!(
        matches!(
            Mempool::new(&eal, "ops_pool", POOL_SIZE, 0, DEFAULT_DATA_ROOM, SOCKET_ID_ANY),
            Err(DpdkError::Call { errno, .. }) if errno == 17
        ),
        "a second pool with the same name fails with EEXIST (17)"
    );

    let mut mbuf = pool.alloc().expect("allocate one mbuf");
    check_edits(&mut mbuf);
    drop(mbuf);
    assert_eq!(pool.in_use(), 0);

    check_burst(&pool);
    check_exhaustion(&pool);

    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}

fn check_pool_too_large(eal: &Eal) {
    // 1M mbufs of 2 KiB need about 2.3 GiB, far more than `-m 256`.
    let error = Mempool::new(
        eal,
        "huge_pool",
        1 << 20,
        0,
        DEFAULT_DATA_ROOM,
        SOCKET_ID_ANY,
    )
    .expect_err("pool larger than the EAL memory");
    let DpdkError::Call { call, errno, .. } = &error else {
        panic!("unexpected error {error:?}");
    };
    assert_eq!(*call, "rte_pktmbuf_pool_create");
    assert_eq!(*errno, 12, "ENOMEM");
    let message = error.to_string();
    assert!(message.contains("huge_pool"), "{message}");
    assert!(message.contains("Cannot allocate memory"), "{message}");
}

fn check_edits(mbuf: &mut Mbuf<'_>) {
    assert_eq!(mbuf.data_len(), 0);
    assert_eq!(mbuf.pkt_len(), 0);
    assert_eq!(mbuf.nb_segs(), 1);
    assert_eq!(mbuf.headroom(), PKTMBUF_HEADROOM);
    assert_eq!(mbuf.tailroom(), DEFAULT_DATA_ROOM - PKTMBUF_HEADROOM);

    let payload = mbuf.append(4).expect("tailroom for 4 bytes");
    payload.copy_from_slice(&[1, 2, 3, 4]);
    let header = mbuf.prepend(2).expect("headroom for 2 bytes");
    header.copy_from_slice(&[9, 9]);
    assert_eq!(mbuf.data(), &[9, 9, 1, 2, 3, 4]);
    assert_eq!(mbuf.pkt_len(), 6);
    assert_eq!(mbuf.headroom(), PKTMBUF_HEADROOM - 2);

    mbuf.data_mut()[2] = 7;
    mbuf.adj(2).expect("strip the 2-byte header");
    assert_eq!(mbuf.data(), &[7, 2, 3, 4]);
    mbuf.trim(1).expect("trim 1 byte");
    assert_eq!(mbuf.data(), &[7, 2, 3]);
    // prepend, adj and trim update the fields in Rust, and DPDK's own functions
    // must read the same packet back from them.
    let mut copy = [0u8; 8];
    assert_eq!(mbuf.copy_all(&mut copy), Some(3));
    assert_eq!(&copy[..3], &[7, 2, 3]);
    assert_eq!(mbuf.headroom(), PKTMBUF_HEADROOM);
    assert_eq!(mbuf.tailroom(), DEFAULT_DATA_ROOM - PKTMBUF_HEADROOM - 3);

    assert_eq!(
        mbuf.adj(4),
        Err(SegmentTooShort {
            requested: 4,
            data_len: 3
        })
    );
    assert_eq!(
        mbuf.trim(4),
        Err(SegmentTooShort {
            requested: 4,
            data_len: 3
        })
    );
    assert!(mbuf.prepend(PKTMBUF_HEADROOM + 1).is_none());
    assert!(mbuf.append(mbuf.tailroom() + 1).is_none());
    assert_eq!(mbuf.data(), &[7, 2, 3], "failed edits change nothing");
}

fn check_burst(pool: &Mempool<'_>) {
    let mut burst = MbufBurst::new();
    for index in 0..BURST_SIZE {
        let mut mbuf = pool.alloc().expect("pool has room for a burst");
        mbuf.append(1).unwrap()[0] = index as u8;
        burst.push(mbuf).expect("burst has a free slot");
    }
    assert_eq!(burst.len(), BURST_SIZE);
    assert_eq!(burst.free_slots(), 0);
    let extra = pool.alloc().unwrap();
    assert!(
        burst.push(extra).is_err(),
        "a full burst hands the mbuf back"
    );
    assert_eq!(pool.in_use(), BURST_SIZE as u32);

    let order: Vec<u8> = burst.iter().map(|mbuf| mbuf.data()[0]).collect();
    assert_eq!(order, (0..BURST_SIZE as u8).collect::<Vec<_>>());

    let last = burst.pop().unwrap();
    assert_eq!(last.data(), &[BURST_SIZE as u8 - 1]);
    drop(last);

    // Taking two mbufs and dropping the drain frees the rest.
    let first_two: Vec<_> = burst.drain().take(2).collect();
    assert!(burst.is_empty());
    assert_eq!(pool.in_use(), 2);
    drop(first_two);

    for _ in 0..BURST_SIZE {
        burst.push(pool.alloc().unwrap()).unwrap();
    }
    burst.clear();
    assert!(burst.is_empty());
    assert_eq!(pool.in_use(), 0, "clear frees with one bulk call");
}

fn check_exhaustion(pool: &Mempool<'_>) {
    let mut allocated = Vec::new();
    for _ in 0..POOL_SIZE {
        allocated.push(pool.alloc().expect("pool still has mbufs"));
    }
    assert_eq!(pool.available(), 0);
    assert!(pool.alloc().is_none(), "an empty pool returns None");

    drop(allocated);
    assert_eq!(pool.available(), POOL_SIZE);
}
