//! IPv6 fixed headers (RFC 8200).
//!
//! ```text
//!  0       4               12                                     32
//! +-------+---------------+---------------------------------------+
//! |Version| Traffic Class |              Flow Label               |
//! +-------+---------------+---------------+-----------------------+
//! |        Payload Length         |  Next Header  |   Hop Limit   |
//! +-------------------------------+---------------+---------------+
//! |                     Source Address (16)                       |
//! |                   Destination Address (16)                    |
//! +---------------------------------------------------------------+
//! ```
//!
//! The payload starts with any extension headers, and `ipv6_ext::walk_extension_headers`
//! finds the upper-layer header behind them. The buffer may run past the payload length, as
//! when Ethernet pads a short frame. The payload ends at the payload length.

use std::net::Ipv6Addr;

use super::{read_ipv6, read_u16, read_u32, Error, IpProtocol};

mod field {
    use crate::wire::Field;

    pub const VERSION_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    pub const PAYLOAD: usize = 40;
}

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// View of an IPv6 fixed header and the payload it delimits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps `buffer` without checking it, so accessors panic if it does not contain the header
    /// and the payload length it declares.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` after checking the version and the payload length.
    ///
    /// # Errors
    ///
    /// As for `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version and the payload length, so that no accessor can panic.
    ///
    /// # Errors
    ///
    /// - `Error::Truncated` if the buffer is shorter than 40 bytes.
    /// - `Error::BadVersion` if the version is not 6.
    /// - `Error::BadTotalLength` if the payload runs past the end of the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        self.check_header_len()?;
        // NOTE: a jumbogram (RFC 2675) declares payload length 0 and reads as empty here.
        if Self::HEADER_LEN + usize::from(self.payload_len()) > self.buffer.as_ref().len() {
            return Err(Error::BadTotalLength);
        }
        Ok(())
    }

    /// Wraps `buffer`, which may contain only a prefix of the packet, after checking the fixed
    /// header. This suits the packet quoted by an ICMPv6 error, which keeps its original
    /// payload length but may be cut short. `payload()` then returns the bytes that are
    /// present.
    ///
    /// # Errors
    ///
    /// As for `check_len`, except that a payload length beyond the buffer is accepted.
    pub fn new_checked_truncated(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header_len()?;
        Ok(packet)
    }

    fn check_header_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::BadVersion);
        }
        Ok(())
    }

    /// Returns the end of the payload: 40 plus the payload length, or the end of the buffer
    /// for a view made by `new_checked_truncated`.
    fn payload_end(&self) -> usize {
        let declared_end = field::PAYLOAD + usize::from(self.payload_len());
        declared_end.min(self.buffer.as_ref().len())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn version_tc_flow(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::VERSION_TC_FLOW])
    }

    pub fn version(&self) -> u8 {
        (self.version_tc_flow() >> 28) as u8
    }

    /// Returns the traffic class: DSCP in the high 6 bits, ECN in the low 2.
    pub fn traffic_class(&self) -> u8 {
        (self.version_tc_flow() >> 20) as u8
    }

    /// Returns the 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.version_tc_flow() & FLOW_LABEL_MASK
    }

    /// Returns the length in bytes of everything after the fixed header, extension headers
    /// included.
    pub fn payload_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PAYLOAD_LEN])
    }

    /// Returns the type of the first header after the fixed header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// Returns the `payload_len()` bytes after the fixed header, extension headers
    /// included. After `new_checked_truncated` it ends where the buffer does if that is
    /// earlier.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..self.payload_end()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn set_version_tc_flow(&mut self, value: u32) {
        self.buffer.as_mut()[field::VERSION_TC_FLOW].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_version(&mut self, version: u8) {
        let value = (self.version_tc_flow() & 0x0fff_ffff) | (u32::from(version & 0x0f) << 28);
        self.set_version_tc_flow(value);
    }

    pub fn set_traffic_class(&mut self, traffic_class: u8) {
        let value = (self.version_tc_flow() & 0xf00f_ffff) | (u32::from(traffic_class) << 20);
        self.set_version_tc_flow(value);
    }

    /// Sets the flow label. Only the low 20 bits of `flow_label` are written.
    pub fn set_flow_label(&mut self, flow_label: u32) {
        let value = (self.version_tc_flow() & !FLOW_LABEL_MASK) | (flow_label & FLOW_LABEL_MASK);
        self.set_version_tc_flow(value);
    }

    pub fn set_payload_len(&mut self, payload_len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
    }

    pub fn set_next_header(&mut self, next_header: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = u8::from(next_header);
    }

    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.payload_end();
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// Owned form of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    pub src_addr: Ipv6Addr,
    pub dst_addr: Ipv6Addr,
    /// Type of the first header after the fixed header.
    pub next_header: IpProtocol,
    /// Length in bytes of everything after the fixed header.
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// Flow label. Only the low 20 bits are written.
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Reads the fixed header of `packet`.
    ///
    /// # Errors
    ///
    /// As for `Ipv6Packet::check_len`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(Ipv6Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    pub fn header_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Returns the length of the packet, fixed header and payload.
    pub fn buffer_len(&self) -> usize {
        field::PAYLOAD + self.payload_len
    }

    /// Writes the fixed header into `packet`, leaving the payload untouched.
    ///
    /// # Panics
    ///
    /// Panics if the buffer is shorter than 40 bytes or `payload_len` exceeds 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv6Packet<T>) {
        let payload_len = u16::try_from(self.payload_len)
            .expect("IPv6 payload_len exceeds 65535 and jumbograms are not supported");

        packet.set_version_tc_flow(0x6000_0000);
        packet.set_traffic_class(self.traffic_class);
        packet.set_flow_label(self.flow_label);
        packet.set_payload_len(payload_len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    // Traffic class 0xb8, flow label 0x12345, 4 bytes of UDP payload, 2 bytes of padding.
    const PACKET: [u8; 46] = [
        0x6b, 0x81, 0x23, 0x45, // version, traffic class, flow label
        0x00, 0x04, 0x11, 0x40, // payload length 4, UDP, hop limit 64
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // 2001:db8::1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // 2001:db8::2
        0xaa, 0xbb, 0xcc, 0xdd, // payload
        0x00, 0x00, // padding
    ];

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8::2".parse().unwrap(),
            next_header: IpProtocol::Udp,
            payload_len: 4,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn ipv6_parses_every_field() {
        let packet = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 6);
        assert_eq!(packet.traffic_class(), 0xb8);
        assert_eq!(packet.flow_label(), 0x12345);
        assert_eq!(packet.payload_len(), 4);
        assert_eq!(packet.next_header(), IpProtocol::Udp);
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(
            packet.src_addr(),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            packet.dst_addr(),
            "2001:db8::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(packet.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(Ipv6Repr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn ipv6_emit_writes_expected_bytes() {
        let mut bytes = [0xffu8; 44];
        bytes[40..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        repr().emit(&mut Ipv6Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET[..44]);
        assert_eq!(repr().header_len(), 40);
        assert_eq!(repr().buffer_len(), 44);
    }

    #[test]
    fn ipv6_setters_keep_neighbouring_bits() {
        let mut bytes = PACKET;
        let mut packet = Ipv6Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_flow_label(0xfffff);
        assert_eq!(packet.traffic_class(), 0xb8);
        packet.set_traffic_class(0x01);
        assert_eq!(packet.flow_label(), 0xfffff);
        assert_eq!(packet.version(), 6);
        packet.set_hop_limit(1);
        packet.set_next_header(IpProtocol::Tcp);
        packet.set_payload_len(2);
        packet.payload_mut()[1] = 0;
        assert_eq!(packet.hop_limit(), 1);
        assert_eq!(packet.next_header(), IpProtocol::Tcp);
        assert_eq!(packet.payload(), &[0xaa, 0x00]);
    }

    #[test]
    fn ipv6_truncated() {
        let result = Ipv6Packet::new_checked(&PACKET[..39]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn ipv6_bad_version() {
        let mut bytes = PACKET;
        bytes[0] = 0x4b;
        let result = Ipv6Packet::new_checked(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadVersion);
    }

    #[test]
    fn ipv6_payload_len_beyond_buffer() {
        let result = Ipv6Packet::new_checked(&PACKET[..43]);
        assert_eq!(result.unwrap_err(), Error::BadTotalLength);
        let unchecked = Ipv6Packet::new_unchecked(&PACKET[..43]);
        assert_eq!(Ipv6Repr::parse(&unchecked), Err(Error::BadTotalLength));
    }

    #[test]
    fn ipv6_truncated_quote_accepted() {
        let mut bytes = PACKET[..44].to_vec();
        bytes[4..6].copy_from_slice(&1460u16.to_be_bytes());

        let result = Ipv6Packet::new_checked(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadTotalLength);

        let packet = Ipv6Packet::new_checked_truncated(&bytes[..]).unwrap();
        assert_eq!(packet.payload_len(), 1460);
        assert_eq!(packet.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);

        let result = Ipv6Packet::new_checked_truncated(&bytes[..39]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
        bytes[0] = 0x4b;
        let result = Ipv6Packet::new_checked_truncated(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadVersion);
    }

    proptest! {
        #[test]
        fn ipv6_checked_accessors_never_panic(mut bytes in vec(any::<u8>(), 0..96)) {
            // Steer most inputs to version 6 and a small payload length so checks pass.
            if bytes.len() >= 6 && bytes[0] & 0x80 != 0 {
                bytes[0] = 0x60 | (bytes[0] & 0x0f);
                bytes[4] = 0;
                bytes[5] %= 64;
            }
            if let Ok(packet) = Ipv6Packet::new_checked(&bytes[..]) {
                let _ = (packet.version(), packet.traffic_class(), packet.flow_label());
                let _ = (packet.payload_len(), packet.next_header(), packet.hop_limit());
                let _ = (packet.src_addr(), packet.dst_addr(), packet.payload());
                let _ = Ipv6Repr::parse(&packet).unwrap();
            }
            if let Ok(packet) = Ipv6Packet::new_checked_truncated(&bytes[..]) {
                let _ = (packet.payload_len(), packet.payload());
            }
        }
    }
}
