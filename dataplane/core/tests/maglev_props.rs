//! Properties of the Maglev table: full coverage, independence from input order, weight shares,
//! minimal churn and input validation.

use std::collections::HashSet;

use proptest::prelude::*;
use spike_core::maglev::{
    MaglevBackend, MaglevError, MaglevTable, DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE,
};

/// Small primes keep the debug-build cases fast while still exercising wrap-around.
const SMALL_PRIMES: [u32; 8] = [2, 3, 7, 13, 101, 251, 1009, 4099];

/// Backends with distinct ids and weights in `0..=max_weight`, at least one of them positive.
fn backend_set(max_len: usize, max_weight: u32) -> impl Strategy<Value = Vec<MaglevBackend>> {
    (
        prop::collection::hash_set(any::<u64>(), 1..=max_len),
        prop::collection::vec(0..=max_weight, max_len),
    )
        .prop_map(|(ids, weights)| {
            let mut backends: Vec<MaglevBackend> = ids
                .into_iter()
                .zip(weights)
                .map(|(id, weight)| MaglevBackend { id, weight })
                .collect();
            if backends.iter().all(|backend| backend.weight == 0) {
                backends[0].weight = 1;
            }
            backends
        })
}

fn slot_ids(table: &MaglevTable) -> Vec<u64> {
    (0..table.size())
        .map(|slot| table.backend_id(slot).expect("slot below size"))
        .collect()
}

fn distinct_ids(count: usize, seed: u64) -> Vec<u64> {
    // Weyl sequence: distinct for any count below 2^64, spread over the whole id space.
    (0..count as u64)
        .map(|n| seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect()
}

proptest! {
    #[test]
    fn every_slot_holds_a_weighted_backend(
        backends in backend_set(12, 5),
        size_index in 0..SMALL_PRIMES.len(),
    ) {
        let size = SMALL_PRIMES[size_index];
        prop_assume!(backends.len() <= size as usize);
        let table = MaglevTable::build(&backends, size).unwrap();
        prop_assert_eq!(table.size(), size);
        for slot in 0..size {
            let index = table.backend_index(slot).unwrap() as usize;
            prop_assert!(index < backends.len(), "slot {} holds index {}", slot, index);
            prop_assert!(backends[index].weight > 0, "slot {} holds a weight-0 backend", slot);
        }
        let counts = table.slot_counts();
        prop_assert_eq!(counts.len(), backends.len());
        prop_assert_eq!(counts.iter().map(|&count| u64::from(count)).sum::<u64>(), u64::from(size));
    }

    #[test]
    fn input_order_does_not_change_slots(
        (backends, shuffled) in backend_set(20, 4)
            .prop_flat_map(|backends| (Just(backends.clone()), Just(backends).prop_shuffle())),
        size_index in 4..SMALL_PRIMES.len(),
    ) {
        let size = SMALL_PRIMES[size_index];
        let table = MaglevTable::build(&backends, size).unwrap();
        let shuffled_table = MaglevTable::build(&shuffled, size).unwrap();
        prop_assert_eq!(slot_ids(&table), slot_ids(&shuffled_table));
        prop_assert!(table.changed_slots(&shuffled_table).is_empty());
    }

    #[test]
    fn build_never_panics_on_small_input(
        raw in prop::collection::vec((0u64..8, any::<u32>()), 0..10),
        size in 0u32..300,
        hash in any::<u64>(),
    ) {
        let backends: Vec<MaglevBackend> = raw
            .into_iter()
            .map(|(id, weight)| MaglevBackend { id, weight })
            .collect();
        if let Ok(table) = MaglevTable::build(&backends, size) {
            prop_assert!((table.lookup(hash) as usize) < backends.len());
            prop_assert_eq!(table.slot_counts().len(), backends.len());
        }
    }
}

proptest! {
    // Full-size tables take tens of milliseconds in a debug build, so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn slot_shares_follow_weights(
        weights in prop::collection::vec(1u32..=10, 2..12),
        seed in any::<u64>(),
    ) {
        let backends: Vec<MaglevBackend> = distinct_ids(weights.len(), seed)
            .into_iter()
            .zip(weights.iter().copied())
            .map(|(id, weight)| MaglevBackend { id, weight })
            .collect();
        let table = MaglevTable::build(&backends, DEFAULT_TABLE_SIZE).unwrap();
        let total_weight: u32 = weights.iter().sum();
        let size = f64::from(DEFAULT_TABLE_SIZE);
        for (index, &count) in table.slot_counts().iter().enumerate() {
            let expected = size * f64::from(weights[index]) / f64::from(total_weight);
            // Each backend's count is within about one slot per backend of its exact share.
            let tolerance = weights.len() as f64 + 1.0;
            prop_assert!(
                (f64::from(count) - expected).abs() <= tolerance,
                "backend {} with weight {} has {} slots, expected {:.1}",
                index, weights[index], count, expected
            );
        }
    }
}

/// Returns the share of slots that move between the other backends when backend `removed`
/// of 100 equal backends leaves a table of the default size.
fn churn_after_removing(seed: u64, removed: usize) -> f64 {
    let backends: Vec<MaglevBackend> = distinct_ids(100, seed)
        .into_iter()
        .map(|id| MaglevBackend { id, weight: 1 })
        .collect();
    let before = MaglevTable::build(&backends, DEFAULT_TABLE_SIZE).unwrap();
    let mut remaining = backends.clone();
    let gone = remaining.remove(removed);
    let after = MaglevTable::build(&remaining, DEFAULT_TABLE_SIZE).unwrap();
    for slot in 0..DEFAULT_TABLE_SIZE {
        assert_ne!(
            after.backend_id(slot),
            Some(gone.id),
            "slot {slot} kept the removed backend"
        );
    }
    let others_moved = after
        .changed_slots(&before)
        .into_iter()
        .filter(|&slot| before.backend_id(slot) != Some(gone.id))
        .count();
    others_moved as f64 / f64::from(DEFAULT_TABLE_SIZE)
}

/// Removing one of 100 backends at M = 65537 moved 0.56% of the other slots on average
/// over 300 random backend sets (99th percentile 0.64%), but rare sets move up to 1.6%.
/// A fixed sweep keeps the test deterministic, and its bounds leave room above those figures.
#[test]
fn removing_a_backend_moves_few_other_slots() {
    const CASES: u64 = 24;
    let mut total = 0.0;
    for case in 0..CASES {
        let seed = case.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ 0x5bd1_e995;
        let removed = (case * 37 % 100) as usize;
        let churn = churn_after_removing(seed, removed);
        assert!(
            churn < 0.02,
            "seed {seed:#x}, backend {removed} removed: {:.3}% of slots moved between the others",
            churn * 100.0
        );
        total += churn;
    }
    let mean = total / CASES as f64;
    assert!(
        mean < 0.008,
        "mean churn {:.3}% over {CASES} sets",
        mean * 100.0
    );
}

/// Checks the set with the highest churn found in random testing (1.6%).
#[test]
fn worst_known_set_stays_bounded() {
    let churn = churn_after_removing(17_807_267_002_258_408_432, 16);
    assert!(churn < 0.02, "{:.3}% of slots moved", churn * 100.0);
}

#[test]
fn weights_one_two_three_share_slots() {
    let backends: Vec<MaglevBackend> = distinct_ids(3, 42)
        .into_iter()
        .zip([1, 2, 3])
        .map(|(id, weight)| MaglevBackend { id, weight })
        .collect();
    let table = MaglevTable::build(&backends, DEFAULT_TABLE_SIZE).unwrap();
    let counts = table.slot_counts();
    for (index, weight) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        let share = f64::from(counts[index]) / f64::from(DEFAULT_TABLE_SIZE);
        let expected = weight / 6.0;
        assert!(
            (share - expected).abs() < 0.001,
            "weight {weight} got share {share:.4}, expected {expected:.4}"
        );
    }
}

#[test]
fn churn_at_one_hundred_backends() {
    // Removing one of 100 equal backends must move its ~1% of slots and, by Maglev's design,
    // only a small share of the slots of the others.
    let backends: Vec<MaglevBackend> = distinct_ids(100, 7)
        .into_iter()
        .map(|id| MaglevBackend { id, weight: 1 })
        .collect();
    let before = MaglevTable::build(&backends, DEFAULT_TABLE_SIZE).unwrap();
    let gone = backends[37];
    let remaining: Vec<MaglevBackend> = backends
        .iter()
        .copied()
        .filter(|backend| backend.id != gone.id)
        .collect();
    let after = MaglevTable::build(&remaining, DEFAULT_TABLE_SIZE).unwrap();

    let changed = after.changed_slots(&before);
    let owned_before: HashSet<u32> = (0..DEFAULT_TABLE_SIZE)
        .filter(|&slot| before.backend_id(slot) == Some(gone.id))
        .collect();
    let changed_set: HashSet<u32> = changed.iter().copied().collect();
    assert!(owned_before.is_subset(&changed_set));
    let others_moved = changed.len() - owned_before.len();
    let churn = others_moved as f64 / f64::from(DEFAULT_TABLE_SIZE);
    assert!(churn < 0.015, "churn {:.3}%", churn * 100.0);
}

fn one_backend() -> Vec<MaglevBackend> {
    vec![MaglevBackend { id: 1, weight: 1 }]
}

#[test]
fn build_rejects_empty_set() {
    assert_eq!(
        MaglevTable::build(&[], DEFAULT_TABLE_SIZE).unwrap_err(),
        MaglevError::EmptyBackendSet
    );
}

#[test]
fn build_rejects_all_zero_weights() {
    let backends = [
        MaglevBackend { id: 1, weight: 0 },
        MaglevBackend { id: 2, weight: 0 },
    ];
    assert_eq!(
        MaglevTable::build(&backends, DEFAULT_TABLE_SIZE).unwrap_err(),
        MaglevError::NoWeightedBackend
    );
}

#[test]
fn build_rejects_non_prime_size() {
    for size in [4, 65536, 65535, 1_000_000] {
        assert_eq!(
            MaglevTable::build(&one_backend(), size).unwrap_err(),
            MaglevError::TableSizeNotPrime(size)
        );
    }
}

#[test]
fn build_rejects_size_above_max() {
    for size in [MAX_TABLE_SIZE + 1, 16_777_259, u32::MAX] {
        assert_eq!(
            MaglevTable::build(&one_backend(), size).unwrap_err(),
            MaglevError::TableSizeTooLarge {
                size,
                max: MAX_TABLE_SIZE
            }
        );
    }
}

#[test]
fn build_rejects_size_below_min() {
    for size in [0, 1] {
        assert_eq!(
            MaglevTable::build(&one_backend(), size).unwrap_err(),
            MaglevError::TableSizeTooSmall
        );
    }
}

#[test]
fn build_rejects_more_backends_than_slots() {
    let backends: Vec<MaglevBackend> = (0..8).map(|id| MaglevBackend { id, weight: 1 }).collect();
    assert_eq!(
        MaglevTable::build(&backends, 7).unwrap_err(),
        MaglevError::TooManyBackends {
            backends: 8,
            table_size: 7
        }
    );
    assert!(MaglevTable::build(&backends[..7], 7).is_ok());
}

#[test]
fn build_rejects_duplicate_id() {
    let backends = [
        MaglevBackend { id: 5, weight: 1 },
        MaglevBackend { id: 9, weight: 1 },
        MaglevBackend { id: 5, weight: 0 },
    ];
    assert_eq!(
        MaglevTable::build(&backends, DEFAULT_TABLE_SIZE).unwrap_err(),
        MaglevError::DuplicateBackend(5)
    );
}

#[test]
fn build_accepts_max_size() {
    let backends: Vec<MaglevBackend> = distinct_ids(3, 1)
        .into_iter()
        .map(|id| MaglevBackend { id, weight: 1 })
        .collect();
    let table = MaglevTable::build(&backends, MAX_TABLE_SIZE).unwrap();
    assert_eq!(table.size(), MAX_TABLE_SIZE);
    assert_eq!(table.slot_counts().iter().sum::<u32>(), MAX_TABLE_SIZE);
}
