//! Properties of the designated-node choice for fragments: every Spike node computes the
//! same node for a datagram whatever order its config lists the cluster in, the node is
//! a member, and removing another member does not move the datagram.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use proptest::sample::subsequence;
use spike_core::{Config, Snapshot};

/// Builds the config of the Spike node at `own`, in a cluster listing `members` in that
/// order.
fn node_config(own: Ipv4Addr, members: &[Ipv4Addr], key: &str) -> Config {
    let mut text = format!(
        "[node]\nmac = \"02:53:50:00:00:01\"\nipv4 = \"{own}\"\n\
         gateway_mac = \"02:53:50:00:00:fe\"\nvtep_mac = \"02:53:50:00:00:02\"\n\
         [hash]\nkey = \"{key}\"\n[cluster]\nredirect_vni = 77\n"
    );
    for member in members {
        text.push_str(&format!(
            "[[cluster.node]]\naddress = \"{member}\"\nmac = \"02:53:50:00:01:01\"\n"
        ));
    }
    text.parse().expect("generated config is valid")
}

fn designated(
    own: Ipv4Addr,
    members: &[Ipv4Addr],
    key: &str,
    datagram: (Ipv4Addr, Ipv4Addr, u8),
) -> IpAddr {
    let snapshot = Snapshot::build(&node_config(own, members, key), 1).expect("snapshot");
    let (src, dst, protocol) = datagram;
    snapshot
        .designated_node(IpAddr::V4(src), IpAddr::V4(dst), protocol)
        .expect("cluster configured")
}

fn members() -> impl Strategy<Value = Vec<Ipv4Addr>> {
    subsequence((1..=60u8).collect::<Vec<_>>(), 1..=8)
        .prop_map(|hosts| {
            hosts
                .into_iter()
                .map(|host| Ipv4Addr::new(192, 0, 2, host))
                .collect()
        })
        .prop_shuffle()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_node_computes_the_same_designated_node(
        members in members(),
        key in "[0-9a-f]{32}",
        src in any::<u32>(),
        dst in any::<u32>(),
        protocol in prop_oneof![Just(6u8), Just(17u8)],
        rotation in 0usize..8,
    ) {
        let datagram = (Ipv4Addr::from(src), Ipv4Addr::from(dst), protocol);
        let mut answers = Vec::new();
        for (position, own) in members.iter().enumerate() {
            // Each node lists the cluster in its own order: rotated, and reversed for odd
            // positions.
            let mut order = members.clone();
            order.rotate_left((rotation + position) % members.len());
            if position % 2 == 1 {
                order.reverse();
            }
            answers.push(designated(*own, &order, &key, datagram));
        }
        let first = answers[0];
        prop_assert!(answers.iter().all(|answer| *answer == first), "{answers:?}");
        prop_assert!(members.iter().any(|member| IpAddr::V4(*member) == first));

        // Rendezvous hashing: a member other than the designated one leaves, and the
        // datagram stays where it was.
        if let Some(leaving) = members.iter().position(|member| IpAddr::V4(*member) != first) {
            let mut fewer = members.clone();
            fewer.remove(leaving);
            let own = fewer[0];
            prop_assert_eq!(designated(own, &fewer, &key, datagram), first);
        }
    }
}
