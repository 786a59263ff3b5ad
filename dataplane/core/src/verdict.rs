//! What the core decides for a frame, and why.

use std::fmt;

/// The decision for one input frame. The details a caller needs to act on it (the
/// encapsulation header, the reply frame) are in [`crate::Output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the encapsulation header followed by the frame's IP packet to a backend node.
    Forward,
    /// Send the reply frame back out of the receiving port; the input frame is consumed.
    Reply,
    /// Hand the frame to the host's kernel unchanged.
    Kernel(KernelReason),
    /// Discard the frame.
    Drop(DropReason),
    /// Free the frame: the core copied its packet, a non-first fragment that reached the
    /// designated Spike node before its first fragment, and hands it back through
    /// [`crate::Worker::next_released`] once the first fragment is recorded.
    Held,
}

macro_rules! reason_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$variant_meta:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every reason, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            pub const COUNT: usize = Self::ALL.len();

            /// Snake-case name used in counters and tracer output.
            pub fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            #[inline]
            pub(crate) fn index(self) -> usize {
                self as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.label())
            }
        }
    };
}

reason_enum! {
    /// Reason a frame goes to the kernel.
    KernelReason {
        Arp => "arp",
        /// ICMPv6 router or neighbor solicitation, advertisement or redirect.
        NeighborDiscovery => "neighbor_discovery",
        /// An EtherType other than IPv4, IPv6, ARP and one 802.1Q tag, or an IEEE 802.3
        /// length field in its place.
        OtherEthertype => "other_ethertype",
        /// An 802.1ad service tag (0x88a8), even a single one, or a second tag inside an
        /// 802.1Q tag. The core reads only one 802.1Q tag, so it never forwards these.
        DoubleVlanTag => "double_vlan_tag",
        /// The destination is not a VIP:port:protocol of any service.
        NotService => "not_service",
        /// ICMP to a VIP that is not an error about a service flow (an echo request, say).
        IcmpNotError => "icmp_not_error",
        /// An ICMP error whose quoted packet does not belong to a service flow.
        IcmpErrorNotService => "icmp_error_not_service",
        /// An IPv6 routing header with segments left: the VIP is not the final destination.
        Ipv6RoutingHeader => "ipv6_routing_header",
    }
}

reason_enum! {
    /// Reason a frame is dropped.
    DropReason {
        EthernetTruncated => "ethernet_truncated",
        /// Unicast to another MAC address: seen only because the port is promiscuous.
        OtherHostMac => "other_host_mac",
        /// A broadcast or multicast Ethernet frame whose IP packet is for a service: a
        /// VIP is reached by unicast, so such a frame is flooded and other hosts got it too.
        MulticastToService => "l2_multicast_to_service",
        VlanTruncated => "vlan_truncated",
        Ipv4Truncated => "ipv4_truncated",
        Ipv4BadVersion => "ipv4_bad_version",
        /// IHL below 5 or beyond the frame.
        Ipv4BadHeaderLength => "ipv4_bad_header_length",
        /// Total length below the header length or beyond the frame.
        Ipv4BadTotalLength => "ipv4_bad_total_length",
        Ipv6Truncated => "ipv6_truncated",
        Ipv6BadVersion => "ipv6_bad_version",
        Ipv6BadPayloadLength => "ipv6_bad_payload_length",
        Ipv6ExtensionChainTooLong => "ipv6_extension_chain_too_long",
        Ipv6BadExtensionHeader => "ipv6_bad_extension_header",
        /// The TCP, UDP or ICMP header is cut short or has an invalid length.
        TransportMalformed => "transport_malformed",
        /// A non-first fragment whose first fragment was not seen and whose service needs
        /// ports to hash.
        FragmentWithoutRecord => "fragment_without_record",
        /// An ICMP error to a VIP whose quoted packet cannot be parsed.
        IcmpQuoteMalformed => "icmp_quote_malformed",
        /// The service has no backend with a weight above zero.
        NoBackend => "no_backend",
        /// Too big for the underlay MTU with DF set (or IPv6), and the ICMP reply was
        /// suppressed by the rate limit.
        TooBigRateLimited => "too_big_rate_limited",
        /// A fragment redirected by another Spike node whose inner frame is cut short or
        /// is not an IPv4 or IPv6 packet.
        RedirectMalformed => "redirect_malformed",
        /// A redirected frame that came from this node itself or carries another redirect
        /// inside: fragments are redirected at most once.
        RedirectLoop => "redirect_loop",
        /// A redirected fragment that is not for a service of this node, because the
        /// nodes' service lists differ for a moment or the sender is misconfigured.
        RedirectNotService => "redirect_not_service",
        /// Service traffic from a source address no host sends from: unspecified
        /// (0.0.0.0/8, ::), loopback (127.0.0.0/8, ::1), multicast (224.0.0.0/4,
        /// ff00::/8) or the IPv4 limited broadcast. Such a packet is spoofed or
        /// misrouted.
        MartianSource => "martian_source",
    }
}

reason_enum! {
    /// Rule by which the backend of a forwarded packet was chosen.
    Selection {
        /// A conntrack entry of this flow.
        Tracked => "tracked",
        /// A new flow: Maglev lookup, now tracked.
        NewFlow => "new_flow",
        /// A new flow while conntrack was full: Maglev lookup, not tracked.
        Untracked => "untracked_conntrack_full",
        /// The tracked backend was removed, so Maglev chose again.
        Reselected => "reselected_backend_removed",
        /// A TCP SYN hit an entry whose backend is draining: a new connection, rebalanced.
        SynRebalanced => "syn_rebalanced_from_draining",
        /// A non-first fragment following the first fragment's backend.
        FragmentRecord => "fragment_follows_first",
        /// A non-first fragment without a record, hashed without ports.
        FragmentPortless => "fragment_hashed_without_ports",
        /// An ICMP error, sent to the backend of the flow its quoted packet reverses to.
        IcmpError => "icmp_error_for_flow",
        /// A fragment sent on to the Spike node designated for its datagram; no backend
        /// was chosen here.
        Redirected => "redirected_to_designated_node",
    }
}
