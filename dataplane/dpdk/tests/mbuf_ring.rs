//! Mbuf rings: ownership moves through the ring, a full ring leaves the rest
//! with the producer, and dropping the ring frees what it still holds.

mod common;

use spike_dpdk::{
    DpdkError, Eal, MbufBurst, MbufRing, Mempool, BURST_SIZE, DEFAULT_DATA_ROOM, SOCKET_ID_ANY,
};

const POOL_SIZE: u32 = 127;
const RING_CAPACITY: u32 = 40;

#[test]
fn mbuf_ring_moves_ownership() {
    let dir = common::TempDir::new("mbuf-ring");
    let args = common::eal_args("mbuf-ring", &dir, &["-l", "0"]);
    let eal = Eal::init(&args).expect("EAL init");
    // No per-lcore cache, so in_use() is exact.
    let pool = Mempool::new(
        &eal,
        "ring_pool",
        POOL_SIZE,
        0,
        DEFAULT_DATA_ROOM,
        SOCKET_ID_ANY,
    )
    .expect("small mempool");

    let error = MbufRing::new(&eal, "bad\0name", RING_CAPACITY, SOCKET_ID_ANY)
        .expect_err("a NUL byte in the name");
    assert!(matches!(error, DpdkError::NulInArgument { .. }), "{error}");

    let mut ring =
        MbufRing::new(&eal, "frag_ring", RING_CAPACITY, SOCKET_ID_ANY).expect("ring of 40");
    assert_eq!(ring.capacity(), RING_CAPACITY);
    let duplicate = MbufRing::new(&eal, "frag_ring", RING_CAPACITY, SOCKET_ID_ANY)
        .expect_err("a second ring with the same name");
    assert!(
        matches!(duplicate, DpdkError::Call { errno: 17, .. }),
        "EEXIST (17) expected: {duplicate}"
    );

    {
        let (mut consumer, producer) = ring.split();
        let mut burst = filled_burst(&pool, 0);
        assert_eq!(producer.enqueue_burst(&mut burst), BURST_SIZE);
        assert!(burst.is_empty());

        // Only 8 of the second burst fit; the other 24 stay with the producer.
        let mut second = filled_burst(&pool, BURST_SIZE as u8);
        assert_eq!(producer.enqueue_burst(&mut second), 8);
        assert_eq!(second.len(), BURST_SIZE - 8);
        assert_eq!(second.iter().next().expect("first left").data()[0], 40);
        second.clear();
        assert_eq!(pool.in_use(), RING_CAPACITY);

        let mut received = MbufBurst::new();
        assert_eq!(consumer.dequeue_burst(&mut received), BURST_SIZE);
        let marks: Vec<u8> = received.iter().map(|mbuf| mbuf.data()[0]).collect();
        let expected: Vec<u8> = (0..BURST_SIZE as u8).collect();
        assert_eq!(marks, expected, "mbufs leave in the order they entered");
        received.clear();
        assert_eq!(pool.in_use(), 8, "8 mbufs still in the ring");
    }

    drop(ring);
    assert_eq!(pool.in_use(), 0, "dropping the ring frees the mbufs in it");

    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}

/// Allocates a full burst whose mbufs carry one byte each: `first`, `first + 1`, ...
fn filled_burst<'pool>(pool: &'pool Mempool<'_>, first: u8) -> MbufBurst<'pool> {
    let mut burst = MbufBurst::new();
    for index in 0..BURST_SIZE as u8 {
        let mut mbuf = pool.alloc().expect("pool has room");
        mbuf.append(1).expect("tailroom")[0] = first + index;
        burst.push(mbuf).expect("burst has room");
    }
    burst
}
