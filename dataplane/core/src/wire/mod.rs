//! Zero-copy views of the packet headers Spike reads and writes.
//!
//! Each header type is a view `Foo<T: AsRef<[u8]>>` over a byte buffer. `Foo::new_checked`
//! validates every length the accessors depend on, so that afterwards no getter and no
//! `payload()` can panic. `Foo::new_unchecked` skips that check for buffers the caller has
//! already validated or is about to fill in. Setters exist when the buffer is also
//! `AsMut<[u8]>`. A setter that changes a length field can break the no-panic guarantee, so
//! call `check_len()` again before trusting the view after one.
//!
//! Next to most views sits an owned `FooRepr`, a plain value that `parse` reads from a view
//! and `emit` writes into one. The dataplane reads through the views, while the
//! encapsulation and ICMP paths build headers from scratch through the representations.
//!
//! All multi-byte fields are big endian and read from byte slices, never through casts to
//! packed structs, because packet buffers carry no alignment guarantee.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::str::FromStr;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ipv6_ext;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EthernetFrame, EthernetRepr};
pub use icmpv4::{Icmpv4Packet, Icmpv4Repr};
pub use icmpv6::{Icmpv6Packet, Icmpv6Repr};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use ipv6_ext::{
    walk_extension_headers, Ipv6Fragment, Ipv6FragmentHeader, Ipv6Routing, Ipv6RoutingHeader,
    Ipv6Upper, MAX_EXTENSION_HEADERS,
};
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::{VlanRepr, VlanTag};
pub use vxlan::{VxlanHeader, VxlanRepr};

/// Byte range of a header field, relative to the start of its header.
type Field = Range<usize>;

/// Reason a buffer was rejected as a header of some type.
///
/// Small and `Copy` so the dataplane can count drops by reason without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the fixed header, the header length the packet declares,
    /// or an extension header.
    #[error("packet truncated: buffer shorter than the header it must contain")]
    Truncated,
    /// The IP version field does not match the header type.
    #[error("wrong IP version in header")]
    BadVersion,
    /// The header length field is below its minimum (IPv4 IHL < 5, TCP data offset < 5).
    #[error("header length field below its minimum")]
    BadHeaderLength,
    /// A total or payload length field is below the header length or beyond the buffer.
    #[error("length field below the header length or beyond the end of the buffer")]
    BadTotalLength,
    /// More than `MAX_EXTENSION_HEADERS` IPv6 extension headers precede the upper layer.
    #[error("IPv6 extension header chain longer than {MAX_EXTENSION_HEADERS} headers")]
    ExtensionChainTooLong,
    /// An IPv6 extension header appears where RFC 8200 forbids it: hop-by-hop options after
    /// the first position, or a second fragment or routing header.
    #[error("IPv6 extension header out of place or repeated")]
    BadExtensionHeader,
    /// A field contains a value its format forbids, such as a VXLAN header without the I flag.
    #[error("header field contains a value its format forbids")]
    Malformed,
    /// The header is well formed but of a kind this module does not handle, such as ARP
    /// for a protocol other than IPv4 over Ethernet.
    #[error("header type or variant not supported")]
    Unsupported,
}

/// Protocol number of the next header, as carried by the IPv4 protocol field and the IPv6
/// next-header field (IANA "Assigned Internet Protocol Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    HopByHop,
    Icmp,
    Tcp,
    Udp,
    Ipv6Route,
    Ipv6Frag,
    Esp,
    Ah,
    Icmpv6,
    Ipv6NoNxt,
    Ipv6Opts,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> Self {
        match value {
            0 => IpProtocol::HopByHop,
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            43 => IpProtocol::Ipv6Route,
            44 => IpProtocol::Ipv6Frag,
            50 => IpProtocol::Esp,
            51 => IpProtocol::Ah,
            58 => IpProtocol::Icmpv6,
            59 => IpProtocol::Ipv6NoNxt,
            60 => IpProtocol::Ipv6Opts,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(protocol: IpProtocol) -> Self {
        match protocol {
            IpProtocol::HopByHop => 0,
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6Route => 43,
            IpProtocol::Ipv6Frag => 44,
            IpProtocol::Esp => 50,
            IpProtocol::Ah => 51,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Ipv6NoNxt => 59,
            IpProtocol::Ipv6Opts => 60,
            IpProtocol::Unknown(other) => other,
        }
    }
}

/// Ethernet type field, which also names the payload of a VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    /// IEEE 802.1Q customer VLAN tag.
    Vlan,
    /// IEEE 802.1ad service VLAN tag, the outer tag of a double-tagged frame.
    QinQ,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        match value {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(ethertype: EtherType) -> Self {
        match ethertype {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

/// IEEE 802 MAC address, formatted and parsed as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Checks the group bit, the least significant bit of the first octet. Broadcast is a
    /// multicast address too.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    pub fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Error returned when a string is not a MAC address in `aa:bb:cc:dd:ee:ff` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address {input:?}: expected six pairs of hex digits separated by colons, \
     like 02:00:5e:10:00:01"
)]
pub struct ParseMacAddrError {
    input: String,
}

impl FromStr for MacAddr {
    type Err = ParseMacAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseMacAddrError {
            input: s.to_owned(),
        };
        let mut octets = [0u8; 6];
        let mut groups = s.split(':');

        for octet in &mut octets {
            let group = groups.next().ok_or_else(invalid)?;
            // from_str_radix alone would accept a sign such as "+f", so check the digits first.
            if group.len() != 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            *octet = u8::from_str_radix(group, 16).map_err(|_| invalid())?;
        }

        if groups.next().is_some() {
            return Err(invalid());
        }
        Ok(MacAddr(octets))
    }
}

/// Reads the source and destination ports from the start of a TCP, UDP or SCTP header,
/// which all keep them in their first 4 bytes. Returns `None` if `header` is shorter.
///
/// This suits the transport header quoted by an ICMP error, of which only the first 8
/// bytes may be present, too few for `TcpPacket::new_checked`.
pub fn transport_ports(header: &[u8]) -> Option<(u16, u16)> {
    let ports = header.get(..4)?;
    Some((read_u16(&ports[..2]), read_u16(&ports[2..])))
}

/// Reads a big-endian `u16` from the first two bytes of `bytes`.
fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// Reads a big-endian `u32` from the first four bytes of `bytes`.
fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn read_mac(bytes: &[u8]) -> MacAddr {
    let mut octets = [0u8; 6];
    octets.copy_from_slice(&bytes[..6]);
    MacAddr(octets)
}

fn read_ipv4(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

fn read_ipv6(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[..16]);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_protocol_round_trips_every_value() {
        for value in 0..=u8::MAX {
            assert_eq!(u8::from(IpProtocol::from(value)), value);
        }
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::from(58), IpProtocol::Icmpv6);
        assert_eq!(IpProtocol::from(200), IpProtocol::Unknown(200));
    }

    #[test]
    fn ethertype_round_trips() {
        for value in [0x0800, 0x0806, 0x8100, 0x88a8, 0x86dd, 0x1234] {
            assert_eq!(u16::from(EtherType::from(value)), value);
        }
        assert_eq!(EtherType::from(0x86dd), EtherType::Ipv6);
        assert_eq!(EtherType::from(0x88a8), EtherType::QinQ);
        assert_eq!(EtherType::from(0x1234), EtherType::Unknown(0x1234));
    }

    #[test]
    fn transport_ports_read_first_four_bytes() {
        let header = [0x04, 0xd2, 0x00, 0x35, 0x05, 0xc8, 0x00, 0x00];
        assert_eq!(transport_ports(&header), Some((1234, 53)));
        assert_eq!(transport_ports(&header[..4]), Some((1234, 53)));
        assert_eq!(transport_ports(&header[..3]), None);
    }

    #[test]
    fn mac_display_is_lowercase_colon_form() {
        let mac = MacAddr([0x02, 0x00, 0x5e, 0xab, 0xcd, 0x0f]);
        assert_eq!(mac.to_string(), "02:00:5e:ab:cd:0f");
    }

    #[test]
    fn mac_parses_any_case() {
        let expected = MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        assert_eq!("aa:bb:cc:dd:ee:ff".parse::<MacAddr>(), Ok(expected));
        assert_eq!("AA:Bb:cC:DD:EE:FF".parse::<MacAddr>(), Ok(expected));
    }

    #[test]
    fn mac_rejects_other_forms() {
        let rejected = [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa-bb-cc-dd-ee-ff",
            "aabb.ccdd.eeff",
            "a:bb:cc:dd:ee:ff",
            "aaa:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
            "gg:bb:cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:ff:",
            " aa:bb:cc:dd:ee:ff",
        ];
        for input in rejected {
            assert!(input.parse::<MacAddr>().is_err(), "accepted {input:?}");
        }
    }

    #[test]
    fn mac_parse_error_names_input() {
        let message = "aa-bb".parse::<MacAddr>().unwrap_err().to_string();
        assert!(message.contains("\"aa-bb\""), "{message}");
        assert!(message.contains("02:00:5e:10:00:01"), "{message}");
    }

    #[test]
    fn mac_multicast_and_broadcast() {
        let unicast = MacAddr([0x02, 0, 0, 0, 0, 1]);
        let multicast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(!unicast.is_multicast());
        assert!(!unicast.is_broadcast());
        assert!(multicast.is_multicast());
        assert!(!multicast.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr::BROADCAST.is_broadcast());
    }
}
