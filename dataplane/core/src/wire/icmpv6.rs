//! ICMPv6 messages (RFC 4443).
//!
//! ```text
//!  0               8              16                              32
//! +---------------+---------------+-------------------------------+
//! |     Type      |     Code      |           Checksum            |
//! +---------------+---------------+-------------------------------+
//! | type-specific: MTU, pointer, echo identifier and sequence     |
//! +---------------------------------------------------------------+
//! | data: echo payload, or as much of the offending packet as fits |
//! +---------------------------------------------------------------+
//! ```
//!
//! The checksum covers the IPv6 pseudo header and the whole buffer, so the view expects a
//! buffer that ends where the IPv6 payload ends. The packet quoted by an error is often cut
//! short, so parse it with `Ipv6Packet::new_checked_truncated`.

use std::net::Ipv6Addr;

use super::{checksum, read_u16, read_u32, Error, IpProtocol};

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST_OF_HEADER: Field = 4..8;
    pub const MTU: Field = 4..8;
    pub const POINTER: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ_NO: Field = 6..8;
    pub const DATA: usize = 8;
}

pub const DEST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAM_PROBLEM: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;

/// First and last neighbor discovery types (RFC 4861): router solicitation, router
/// advertisement, neighbor solicitation, neighbor advertisement and redirect.
const NEIGHBOR_DISCOVERY: std::ops::RangeInclusive<u8> = 133..=137;

/// View of an ICMPv6 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub const HEADER_LEN: usize = field::DATA;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than 8 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps `buffer` after checking that it contains the 8-byte header.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 8 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that no accessor can panic.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 8 bytes.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Returns the MTU in bytes of the next link, from a packet too big message.
    pub fn mtu(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MTU])
    }

    /// Returns the offset of the offending byte of a parameter problem message.
    pub fn pointer(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::POINTER])
    }

    /// Returns the identifier of an echo request or reply.
    pub fn echo_ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// Returns the sequence number of an echo request or reply.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_SEQ_NO])
    }

    /// Returns the bytes after the 8-byte header: the echo payload, or for an error as much
    /// of the offending packet as fits in the minimum MTU.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Checks whether the message is one of the four error types RFC 4443 defines, which
    /// quote the offending packet.
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DEST_UNREACHABLE | PACKET_TOO_BIG | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }

    /// Checks whether the message is a neighbor discovery message (types 133 to 137).
    pub fn is_neighbor_discovery(&self) -> bool {
        NEIGHBOR_DISCOVERY.contains(&self.msg_type())
    }

    /// Checks the checksum over the IPv6 pseudo header and the whole buffer.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Icmpv6, data.len() as u32);
        checksum::fold(pseudo + checksum::sum(data)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::TYPE] = msg_type;
    }

    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    pub fn set_mtu(&mut self, mtu: u32) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    pub fn set_pointer(&mut self, pointer: u32) {
        self.buffer.as_mut()[field::POINTER].copy_from_slice(&pointer.to_be_bytes());
    }

    pub fn set_echo_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    pub fn set_echo_seq_no(&mut self, seq_no: u16) {
        self.buffer.as_mut()[field::ECHO_SEQ_NO].copy_from_slice(&seq_no.to_be_bytes());
    }

    /// Zeroes bytes 4 to 8, which destination unreachable and time exceeded leave unused.
    pub fn clear_rest_of_header(&mut self) {
        self.buffer.as_mut()[field::REST_OF_HEADER].fill(0);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes the checksum over the IPv6 pseudo header and the whole buffer and writes it.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Icmpv6, data.len() as u32);
        let value = checksum::finish(pseudo + checksum::sum(data));
        self.set_checksum(value);
    }
}

/// Owned form of the ICMPv6 messages Spike reads and sends, borrowing the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv6Repr<'a> {
    DestUnreachable {
        code: u8,
        data: &'a [u8],
    },
    PacketTooBig {
        /// MTU of the next link in bytes.
        mtu: u32,
        data: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        data: &'a [u8],
    },
    ParamProblem {
        code: u8,
        pointer: u32,
        data: &'a [u8],
    },
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// Reads the message in `packet`, borrowing its data. The checksum is not verified,
    /// because that needs the IPv6 addresses.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 8 bytes, and `Error::Unsupported`
    /// for a message type with no variant here, such as neighbor discovery.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Icmpv6Packet<&'a T>) -> Result<Self, Error> {
        packet.check_len()?;
        let data = &T::as_ref(packet.buffer)[field::DATA..];
        let repr = match packet.msg_type() {
            DEST_UNREACHABLE => Icmpv6Repr::DestUnreachable {
                code: packet.code(),
                data,
            },
            PACKET_TOO_BIG => Icmpv6Repr::PacketTooBig {
                mtu: packet.mtu(),
                data,
            },
            TIME_EXCEEDED => Icmpv6Repr::TimeExceeded {
                code: packet.code(),
                data,
            },
            PARAM_PROBLEM => Icmpv6Repr::ParamProblem {
                code: packet.code(),
                pointer: packet.pointer(),
                data,
            },
            ECHO_REQUEST => Icmpv6Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            ECHO_REPLY => Icmpv6Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            _ => return Err(Error::Unsupported),
        };
        Ok(repr)
    }

    fn data(&self) -> &'a [u8] {
        match *self {
            Icmpv6Repr::DestUnreachable { data, .. }
            | Icmpv6Repr::PacketTooBig { data, .. }
            | Icmpv6Repr::TimeExceeded { data, .. }
            | Icmpv6Repr::ParamProblem { data, .. }
            | Icmpv6Repr::EchoRequest { data, .. }
            | Icmpv6Repr::EchoReply { data, .. } => data,
        }
    }

    pub fn header_len(&self) -> usize {
        field::DATA
    }

    /// Returns the length of the message, header and data.
    pub fn buffer_len(&self) -> usize {
        field::DATA + self.data().len()
    }

    /// Writes the message into the first `buffer_len()` bytes of `packet` with a zero
    /// checksum. The checksum needs the IPv6 addresses, so call `fill_checksum` on a view
    /// of exactly `buffer_len()` bytes afterwards.
    ///
    /// # Panics
    ///
    /// Panics if the buffer is shorter than `buffer_len()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv6Packet<T>) {
        packet.clear_rest_of_header();
        packet.set_checksum(0);
        let (msg_type, code) = match *self {
            Icmpv6Repr::DestUnreachable { code, .. } => (DEST_UNREACHABLE, code),
            Icmpv6Repr::PacketTooBig { mtu, .. } => {
                packet.set_mtu(mtu);
                (PACKET_TOO_BIG, 0)
            }
            Icmpv6Repr::TimeExceeded { code, .. } => (TIME_EXCEEDED, code),
            Icmpv6Repr::ParamProblem { code, pointer, .. } => {
                packet.set_pointer(pointer);
                (PARAM_PROBLEM, code)
            }
            Icmpv6Repr::EchoRequest { ident, seq_no, .. } => {
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                (ECHO_REQUEST, 0)
            }
            Icmpv6Repr::EchoReply { ident, seq_no, .. } => {
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                (ECHO_REPLY, 0)
            }
        };
        packet.set_msg_type(msg_type);
        packet.set_code(code);

        let data = self.data();
        packet.data_mut()[..data.len()].copy_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn src() -> Ipv6Addr {
        "2001:db8::1".parse().unwrap()
    }

    fn dst() -> Ipv6Addr {
        "2001:db8::2".parse().unwrap()
    }

    // Packet too big, MTU 1280, quoting the first 8 bytes of an IPv6 header.
    const TOO_BIG: [u8; 16] = [
        0x02, 0x00, 0x00, 0x00, // type 2, code 0, checksum (filled in below)
        0x00, 0x00, 0x05, 0x00, // MTU 1280
        0x60, 0x00, 0x00, 0x00, 0x05, 0xc8, 0x11, 0x40, // quoted IPv6 header start
    ];

    // Echo request, ident 0xbeef, sequence 2, payload "hi".
    const ECHO: [u8; 10] = [0x80, 0x00, 0x00, 0x00, 0xbe, 0xef, 0x00, 0x02, 0x68, 0x69];

    fn with_checksum<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
        Icmpv6Packet::new_unchecked(&mut bytes[..]).fill_checksum(&src(), &dst());
        bytes
    }

    #[test]
    fn icmpv6_packet_too_big_parses_every_field() {
        let bytes = with_checksum(TOO_BIG);
        let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.msg_type(), PACKET_TOO_BIG);
        assert_eq!(packet.code(), 0);
        assert_eq!(packet.checksum(), 0x2638);
        assert_eq!(packet.mtu(), 1280);
        assert_eq!(packet.data(), &TOO_BIG[8..]);
        assert!(packet.is_error());
        assert!(!packet.is_neighbor_discovery());
        assert!(packet.verify_checksum(&src(), &dst()));
        assert!(!packet.verify_checksum(&src(), &Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn icmpv6_echo_parses_every_field() {
        let bytes = with_checksum(ECHO);
        let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.msg_type(), ECHO_REQUEST);
        assert_eq!(packet.echo_ident(), 0xbeef);
        assert_eq!(packet.echo_seq_no(), 2);
        assert_eq!(packet.data(), b"hi");
        assert!(!packet.is_error());
        let expected = Icmpv6Repr::EchoRequest {
            ident: 0xbeef,
            seq_no: 2,
            data: b"hi",
        };
        assert_eq!(Icmpv6Repr::parse(&packet), Ok(expected));
    }

    #[test]
    fn icmpv6_type_classes() {
        for msg_type in 0..=u8::MAX {
            let mut bytes = ECHO;
            bytes[0] = msg_type;
            let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
            let error = (1..=4).contains(&msg_type);
            let neighbor_discovery = (133..=137).contains(&msg_type);
            assert_eq!(packet.is_error(), error, "type {msg_type}");
            let actual = packet.is_neighbor_discovery();
            assert_eq!(actual, neighbor_discovery, "type {msg_type}");
        }
    }

    #[test]
    fn icmpv6_emit_packet_too_big() {
        let repr = Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            data: &TOO_BIG[8..],
        };
        let mut bytes = [0xffu8; 16];
        let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut packet);
        packet.fill_checksum(&src(), &dst());
        assert_eq!(bytes, with_checksum(TOO_BIG));
        assert_eq!(repr.buffer_len(), 16);
        assert_eq!(repr.header_len(), 8);
    }

    #[test]
    fn icmpv6_emit_leaves_zero_checksum() {
        let repr = Icmpv6Repr::EchoReply {
            ident: 0xbeef,
            seq_no: 2,
            data: b"hi",
        };
        let mut bytes = [0xffu8; 10];
        repr.emit(&mut Icmpv6Packet::new_unchecked(&mut bytes[..]));
        let mut expected = ECHO;
        expected[0] = ECHO_REPLY;
        assert_eq!(bytes, expected);
    }

    #[test]
    fn icmpv6_emit_then_parse_round_trips() {
        let quote = &TOO_BIG[8..];
        let reprs = [
            Icmpv6Repr::DestUnreachable {
                code: 4,
                data: quote,
            },
            Icmpv6Repr::TimeExceeded {
                code: 0,
                data: quote,
            },
            Icmpv6Repr::ParamProblem {
                code: 1,
                pointer: 40,
                data: quote,
            },
            Icmpv6Repr::EchoRequest {
                ident: 1,
                seq_no: 2,
                data: &[],
            },
        ];
        for repr in reprs {
            let mut bytes = vec![0u8; repr.buffer_len()];
            let mut packet = Icmpv6Packet::new_unchecked(&mut bytes[..]);
            repr.emit(&mut packet);
            packet.fill_checksum(&src(), &dst());
            let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
            assert!(packet.verify_checksum(&src(), &dst()), "{repr:?}");
            assert_eq!(Icmpv6Repr::parse(&packet), Ok(repr));
        }
    }

    #[test]
    fn icmpv6_truncated() {
        let result = Icmpv6Packet::new_checked(&ECHO[..7]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn icmpv6_parse_unsupported_type() {
        let mut bytes = ECHO;
        bytes[0] = 135; // neighbor solicitation
        let packet = Icmpv6Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&packet), Err(Error::Unsupported));
    }

    proptest! {
        #[test]
        fn icmpv6_checked_accessors_never_panic(bytes in vec(any::<u8>(), 0..40)) {
            if let Ok(packet) = Icmpv6Packet::new_checked(&bytes[..]) {
                let _ = (packet.msg_type(), packet.code(), packet.checksum(), packet.mtu());
                let _ = (packet.pointer(), packet.echo_ident(), packet.echo_seq_no());
                let _ = (packet.data(), packet.is_error(), packet.is_neighbor_discovery());
                let _ = packet.verify_checksum(&src(), &dst());
                let _ = Icmpv6Repr::parse(&packet);
            }
        }
    }
}
