//! UDP headers (RFC 768).
//!
//! ```text
//!  0                              16                              32
//! +-------------------------------+-------------------------------+
//! |          Source Port          |       Destination Port        |
//! +-------------------------------+-------------------------------+
//! |            Length             |           Checksum            |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! The length field covers header and payload, so the payload ends there even when the
//! buffer runs longer. A checksum field of zero means "no checksum", which IPv4 allows and
//! IPv6 forbids except for tunnel protocols that opt out under RFC 6935.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{checksum, read_u16, Error, IpProtocol};

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD: usize = 8;
}

/// View of a UDP datagram: header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than the
    /// length field.
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` after checking the length field against it.
    ///
    /// # Errors
    ///
    /// As for `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length field, so that no accessor can panic.
    ///
    /// # Errors
    ///
    /// - `Error::Truncated` if the buffer is shorter than 8 bytes.
    /// - `Error::BadTotalLength` if the length field is below 8 or beyond the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let declared = usize::from(self.len());
        if declared < Self::HEADER_LEN || declared > len {
            return Err(Error::BadTotalLength);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// Returns the length field: header plus payload, in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Returns the payload, which ends at the length field rather than at the end of the
    /// buffer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.len())]
    }

    /// Returns the header and payload, the bytes the checksum covers.
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// Checks the checksum with the IPv4 pseudo header. A zero checksum field means the
    /// sender computed none, and passes.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, u32::from(self.len()));
        checksum::fold(pseudo + checksum::sum(self.datagram())) == 0xffff
    }

    /// Checks the checksum with the IPv6 pseudo header. A zero checksum field fails,
    /// because RFC 8200 makes the checksum mandatory over IPv6. A tunnel endpoint that
    /// accepts zero checksums (RFC 6935) tests `checksum() == 0` first.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Udp, u32::from(self.len()));
        checksum::fold(pseudo + checksum::sum(self.datagram())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Returns the payload, which ends at the length field rather than at the end of the
    /// buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }

    /// Computes the checksum with the IPv4 pseudo header and writes it. A computed zero is
    /// written as `0xffff`, because zero on the wire means "no checksum".
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, u32::from(self.len()));
        let value = checksum::finish(pseudo + checksum::sum(self.datagram()));
        self.set_checksum(nonzero_checksum(value));
    }

    /// Computes the checksum with the IPv6 pseudo header and writes it. A computed zero is
    /// written as `0xffff`, because zero on the wire means "no checksum".
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Udp, u32::from(self.len()));
        let value = checksum::finish(pseudo + checksum::sum(self.datagram()));
        self.set_checksum(nonzero_checksum(value));
    }
}

fn nonzero_checksum(value: u16) -> u16 {
    if value == 0 {
        0xffff
    } else {
        value
    }
}

/// Owned form of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Length of the payload in bytes, header excluded.
    pub payload_len: usize,
}

impl UdpRepr {
    /// Reads the header of `packet`. The checksum is not verified, because that needs the
    /// IP addresses.
    ///
    /// # Errors
    ///
    /// As for `UdpPacket::check_len`.
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        })
    }

    pub fn header_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Returns the length of the datagram, header and payload.
    pub fn buffer_len(&self) -> usize {
        field::PAYLOAD + self.payload_len
    }

    /// Writes the header with a zero checksum into `packet`. Once the payload is in place,
    /// call `fill_checksum_v4` or `fill_checksum_v6`, or leave zero for "no checksum".
    ///
    /// # Panics
    ///
    /// Panics if the buffer is shorter than 8 bytes or if `buffer_len()` exceeds 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut UdpPacket<T>) {
        let len = u16::try_from(self.buffer_len())
            .expect("UDP length (header plus payload_len) exceeds 65535");

        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    // DNS-sized example: 10.0.0.1:1234 -> 10.0.0.2:53, 4 payload bytes, 2 bytes of padding.
    const DATAGRAM: [u8; 14] = [
        0x04, 0xd2, 0x00, 0x35, // ports 1234 -> 53
        0x00, 0x0c, 0x00, 0x00, // length 12, no checksum
        0xaa, 0xbb, 0xcc, 0xdd, // payload
        0x00, 0x00, // padding
    ];

    const SRC_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn udp_parses_every_field() {
        let packet = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(packet.src_port(), 1234);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 12);
        assert_eq!(packet.checksum(), 0);
        assert_eq!(packet.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        let expected = UdpRepr {
            src_port: 1234,
            dst_port: 53,
            payload_len: 4,
        };
        assert_eq!(UdpRepr::parse(&packet), Ok(expected));
    }

    #[test]
    fn udp_emit_writes_expected_bytes() {
        let repr = UdpRepr {
            src_port: 1234,
            dst_port: 53,
            payload_len: 4,
        };
        let mut bytes = [0xffu8; 12];
        bytes[8..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        repr.emit(&mut UdpPacket::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, DATAGRAM[..12]);
        assert_eq!(repr.header_len(), 8);
        assert_eq!(repr.buffer_len(), 12);
    }

    #[test]
    fn udp_checksum_v4_known_value() {
        let mut bytes = DATAGRAM;
        let mut packet = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum_v4(SRC_V4, DST_V4);
        // 0a00+0001+0a00+0002+0011+000c, then 04d2+0035+000c+aabb+ccdd, complemented.
        assert_eq!(packet.checksum(), 0x6f33);
        assert!(packet.verify_checksum_v4(SRC_V4, DST_V4));
        assert!(!packet.verify_checksum_v4(DST_V4, Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn udp_checksum_ignores_padding() {
        let mut padded = DATAGRAM;
        padded[12] = 0x55;
        let mut packet = UdpPacket::new_checked(&mut padded[..]).unwrap();
        packet.fill_checksum_v4(SRC_V4, DST_V4);
        assert_eq!(packet.checksum(), 0x6f33);
    }

    #[test]
    fn udp_zero_checksum_semantics() {
        let packet = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert!(packet.verify_checksum_v4(SRC_V4, DST_V4));
        let v6 = Ipv6Addr::LOCALHOST;
        assert!(!packet.verify_checksum_v6(&v6, &v6));
    }

    #[test]
    fn udp_computed_zero_becomes_ffff() {
        // Pick the payload so that the datagram sums to 0xffff with the pseudo header,
        // which makes the computed checksum zero.
        let mut bytes = [0x04, 0xd2, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00];
        let pseudo = checksum::pseudo_header_v4(SRC_V4, DST_V4, IpProtocol::Udp, 10);
        let partial = checksum::fold(pseudo + checksum::sum(&bytes));
        bytes[8..10].copy_from_slice(&(!partial).to_be_bytes());

        let mut packet = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum_v4(SRC_V4, DST_V4);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum_v4(SRC_V4, DST_V4));
    }

    #[test]
    fn udp_checksum_v6_round_trips() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut bytes = DATAGRAM;
        let mut packet = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum_v6(&src, &dst);
        assert_ne!(packet.checksum(), 0);
        assert!(packet.verify_checksum_v6(&src, &dst));
        packet.payload_mut()[3] ^= 0x80;
        assert!(!packet.verify_checksum_v6(&src, &dst));
    }

    #[test]
    fn udp_truncated() {
        let result = UdpPacket::new_checked(&DATAGRAM[..7]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn udp_length_below_header() {
        for declared in 0..8u16 {
            let mut bytes = DATAGRAM;
            bytes[4..6].copy_from_slice(&declared.to_be_bytes());
            let result = UdpPacket::new_checked(&bytes[..]);
            assert_eq!(
                result.unwrap_err(),
                Error::BadTotalLength,
                "length {declared}"
            );
        }
    }

    #[test]
    fn udp_length_beyond_buffer() {
        let result = UdpPacket::new_checked(&DATAGRAM[..11]);
        assert_eq!(result.unwrap_err(), Error::BadTotalLength);
        let unchecked = UdpPacket::new_unchecked(&DATAGRAM[..11]);
        assert_eq!(UdpRepr::parse(&unchecked), Err(Error::BadTotalLength));
    }

    proptest! {
        #[test]
        fn udp_checked_accessors_never_panic(mut bytes in vec(any::<u8>(), 0..48)) {
            // Steer half the inputs to a length inside the buffer so the accessors run.
            if bytes.len() >= 8 && bytes[0] & 1 == 0 {
                bytes[4] = 0;
                bytes[5] %= bytes.len() as u8 + 1;
            }
            if let Ok(packet) = UdpPacket::new_checked(&bytes[..]) {
                let _ = (packet.src_port(), packet.dst_port(), packet.len());
                let _ = (packet.checksum(), packet.payload());
                let _ = packet.verify_checksum_v4(SRC_V4, DST_V4);
                let _ = packet.verify_checksum_v6(&Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST);
                let _ = UdpRepr::parse(&packet).unwrap();
            }
        }
    }
}
