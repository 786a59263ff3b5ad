//! Mbuf rings: ownership moves through the ring, a full ring leaves the rest
//! with the producer, dropping the ring frees the mbufs left in it, and two
//! lcores can enqueue at once while the main lcore dequeues.

mod common;

use std::time::{Duration, Instant};

use spike_dpdk::{
    pause, DpdkError, Eal, MbufBurst, MbufRing, Mempool, RingProducer, BURST_SIZE,
    DEFAULT_DATA_ROOM, SOCKET_ID_ANY,
};

const POOL_SIZE: u32 = 127;
const RING_CAPACITY: u32 = 40;
/// Mbufs each of the two producing lcores sends through the shared ring.
const PER_PRODUCER: u16 = 2_000;
/// Bound on the concurrent part, so a lost mbuf fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn mbuf_ring_moves_ownership() {
    let dir = common::TempDir::new("mbuf-ring");
    // Three lcores on two CPUs: both producers share CPU 1.
    let args = common::eal_args("mbuf-ring", &dir, &["--lcores", "0@0,1@1,2@1"]);
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

    check_two_producers(&eal, &pool);
    assert_eq!(
        pool.in_use(),
        0,
        "every mbuf sent by the producers came back"
    );

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

/// Runs two producer lcores that each send PER_PRODUCER numbered mbufs while the main
/// lcore dequeues, and checks that every mbuf arrives once, in its producer's order.
fn check_two_producers(eal: &Eal, pool: &Mempool<'_>) {
    let mut ring = MbufRing::new(eal, "mp_ring", 64, SOCKET_ID_ANY).expect("ring of 64");
    let (mut consumer, producer) = ring.split();
    let start = Instant::now();
    let (next, codes) = eal
        .scope(|scope| {
            for (id, lcore_id) in eal.worker_lcores().take(2).enumerate() {
                scope
                    .launch_on_lcore(lcore_id, move || produce(producer, pool, id as u8, start))
                    .expect("launch a producer");
            }
            // The next sequence number expected from each producer.
            let mut next = [0u16; 2];
            let mut received = MbufBurst::new();
            while next != [PER_PRODUCER; 2] && start.elapsed() < DEADLINE {
                consumer.dequeue_burst(&mut received);
                for mbuf in received.drain() {
                    let data = mbuf.data();
                    let id = usize::from(data[0]);
                    let sequence = u16::from_be_bytes([data[1], data[2]]);
                    assert_eq!(sequence, next[id], "producer {id}: order kept");
                    next[id] += 1;
                }
            }
            (next, scope.wait_all_lcores())
        })
        .expect("scope on the main lcore");
    assert_eq!(next, [PER_PRODUCER; 2], "every mbuf arrived");
    assert!(
        codes.iter().all(|(_, code)| *code == 0),
        "producers ended without error: {codes:?}"
    );
}

/// Sends PER_PRODUCER mbufs numbered from 0 through `producer`, each marked with
/// `id`. Returns 0 when all were enqueued, 1 past the deadline.
fn produce(producer: RingProducer<'_, '_>, pool: &Mempool<'_>, id: u8, start: Instant) -> i32 {
    let mut burst = MbufBurst::new();
    let mut sequence = 0u16;
    while sequence < PER_PRODUCER || !burst.is_empty() {
        if start.elapsed() > DEADLINE {
            return 1;
        }
        while sequence < PER_PRODUCER && burst.free_slots() > 0 {
            let Some(mut mbuf) = pool.alloc() else {
                break;
            };
            let mark = mbuf.append(3).expect("tailroom");
            mark[0] = id;
            mark[1..].copy_from_slice(&sequence.to_be_bytes());
            burst.push(mbuf).expect("burst has room");
            sequence += 1;
        }
        if producer.enqueue_burst(&mut burst) == 0 {
            pause();
        }
    }
    0
}
