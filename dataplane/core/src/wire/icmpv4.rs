//! ICMPv4 messages (RFC 792, RFC 1191 for the next-hop MTU).
//!
//! ```text
//!  0               8              16                              32
//! +---------------+---------------+-------------------------------+
//! |     Type      |     Code      |           Checksum            |
//! +---------------+---------------+-------------------------------+
//! |  type-specific: echo identifier and sequence, next-hop MTU    |
//! +---------------------------------------------------------------+
//! |  data: echo payload, or the quoted IP header + 8 bytes        |
//! +---------------------------------------------------------------+
//! ```
//!
//! ICMPv4 has no length field, so the view expects a buffer that ends where the IP payload
//! ends, and the checksum covers the whole buffer. The datagram quoted by an error is often
//! cut short, so parse it with `Ipv4Packet::new_checked_truncated`.

use super::{checksum, read_u16, Error};

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST_OF_HEADER: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQ_NO: Field = 6..8;
    pub const NEXT_HOP_MTU: Field = 6..8;
    pub const POINTER: usize = 4;
    pub const DATA: usize = 8;
}

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAM_PROBLEM: u8 = 12;

/// Destination unreachable code: the host is unreachable.
pub const HOST_UNREACHABLE: u8 = 1;
/// Destination unreachable code: no listener on the destination port.
pub const PORT_UNREACHABLE: u8 = 3;
/// Destination unreachable code: fragmentation needed but DF set. Carries the next-hop MTU.
pub const FRAG_NEEDED: u8 = 4;
/// Time exceeded code: the TTL reached zero in transit.
pub const TTL_EXCEEDED: u8 = 0;

/// View of an ICMPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    pub const HEADER_LEN: usize = field::DATA;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than 8 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
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

    /// Returns the identifier of an echo request or reply.
    pub fn echo_ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// Returns the sequence number of an echo request or reply.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_SEQ_NO])
    }

    /// Returns the next-hop MTU in bytes of a "fragmentation needed" message (type 3, code
    /// 4). Routers older than RFC 1191 leave it zero.
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::NEXT_HOP_MTU])
    }

    /// Returns the offset of the offending byte of a parameter problem message.
    pub fn pointer(&self) -> u8 {
        self.buffer.as_ref()[field::POINTER]
    }

    /// Returns the bytes after the 8-byte header: the echo payload, or for an error the
    /// quoted IP header and at least the first 8 bytes of its payload.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// Checks whether the message is an error that quotes an offending datagram:
    /// destination unreachable, time exceeded or parameter problem. Source quench and
    /// redirect quote one too but are not counted, because hosts ignore both today
    /// (RFC 6633 deprecates source quench).
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DEST_UNREACHABLE | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }

    /// Checks the checksum over the whole buffer.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::TYPE] = msg_type;
    }

    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    pub fn set_echo_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::ECHO_IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    pub fn set_echo_seq_no(&mut self, seq_no: u16) {
        self.buffer.as_mut()[field::ECHO_SEQ_NO].copy_from_slice(&seq_no.to_be_bytes());
    }

    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        self.buffer.as_mut()[field::NEXT_HOP_MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    pub fn set_pointer(&mut self, pointer: u8) {
        self.buffer.as_mut()[field::POINTER] = pointer;
    }

    /// Zeroes bytes 4 to 8, which are unused in most error messages.
    pub fn clear_rest_of_header(&mut self) {
        self.buffer.as_mut()[field::REST_OF_HEADER].fill(0);
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes the checksum over the whole buffer and writes it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::finish(checksum::sum(self.buffer.as_ref()));
        self.set_checksum(value);
    }
}

/// Owned form of the ICMPv4 messages Spike reads and sends, borrowing the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Repr<'a> {
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
    /// Destination unreachable. `next_hop_mtu` is meaningful for `FRAG_NEEDED` only and
    /// is zero otherwise. `data` is the quoted datagram.
    DestUnreachable {
        code: u8,
        next_hop_mtu: u16,
        data: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        data: &'a [u8],
    },
    ParamProblem {
        code: u8,
        pointer: u8,
        data: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Reads the message in `packet`, borrowing its data.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 8 bytes, and `Error::Unsupported`
    /// for a message type with no variant here.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Icmpv4Packet<&'a T>) -> Result<Self, Error> {
        packet.check_len()?;
        let data = &T::as_ref(packet.buffer)[field::DATA..];
        let repr = match packet.msg_type() {
            ECHO_REQUEST => Icmpv4Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            ECHO_REPLY => Icmpv4Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            DEST_UNREACHABLE => Icmpv4Repr::DestUnreachable {
                code: packet.code(),
                next_hop_mtu: packet.next_hop_mtu(),
                data,
            },
            TIME_EXCEEDED => Icmpv4Repr::TimeExceeded {
                code: packet.code(),
                data,
            },
            PARAM_PROBLEM => Icmpv4Repr::ParamProblem {
                code: packet.code(),
                pointer: packet.pointer(),
                data,
            },
            _ => return Err(Error::Unsupported),
        };
        Ok(repr)
    }

    fn data(&self) -> &'a [u8] {
        match *self {
            Icmpv4Repr::EchoRequest { data, .. }
            | Icmpv4Repr::EchoReply { data, .. }
            | Icmpv4Repr::DestUnreachable { data, .. }
            | Icmpv4Repr::TimeExceeded { data, .. }
            | Icmpv4Repr::ParamProblem { data, .. } => data,
        }
    }

    pub fn header_len(&self) -> usize {
        field::DATA
    }

    /// Returns the length of the message, header and data.
    pub fn buffer_len(&self) -> usize {
        field::DATA + self.data().len()
    }

    /// Writes the whole message into the first `buffer_len()` bytes of `packet`, checksum
    /// included.
    ///
    /// # Panics
    ///
    /// Panics if the buffer is shorter than `buffer_len()`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        packet.clear_rest_of_header();
        match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, .. } => {
                packet.set_msg_type(ECHO_REQUEST);
                packet.set_code(0);
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
            }
            Icmpv4Repr::EchoReply { ident, seq_no, .. } => {
                packet.set_msg_type(ECHO_REPLY);
                packet.set_code(0);
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
            }
            Icmpv4Repr::DestUnreachable {
                code, next_hop_mtu, ..
            } => {
                packet.set_msg_type(DEST_UNREACHABLE);
                packet.set_code(code);
                packet.set_next_hop_mtu(next_hop_mtu);
            }
            Icmpv4Repr::TimeExceeded { code, .. } => {
                packet.set_msg_type(TIME_EXCEEDED);
                packet.set_code(code);
            }
            Icmpv4Repr::ParamProblem { code, pointer, .. } => {
                packet.set_msg_type(PARAM_PROBLEM);
                packet.set_code(code);
                packet.set_pointer(pointer);
            }
        }

        let data = self.data();
        packet.data_mut()[..data.len()].copy_from_slice(data);

        // The checksum covers this message only, even if the buffer runs longer.
        packet.set_checksum(0);
        let message = &packet.buffer.as_ref()[..self.buffer_len()];
        let value = checksum::finish(checksum::sum(message));
        packet.set_checksum(value);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    // Echo request, ident 0x1234, sequence 1, payload "abcd".
    const ECHO: [u8; 12] = [
        0x08, 0x00, 0x00, 0x00, // type, code, checksum (filled in below)
        0x12, 0x34, 0x00, 0x01, // ident, sequence
        0x61, 0x62, 0x63, 0x64, // "abcd"
    ];

    // Fragmentation needed, next-hop MTU 1400, quoting an IPv4 header and 8 UDP bytes.
    const FRAG_NEEDED_MSG: [u8; 36] = [
        0x03, 0x04, 0x00, 0x00, // type 3, code 4, checksum (filled in below)
        0x00, 0x00, 0x05, 0x78, // unused, MTU 1400
        0x45, 0x00, 0x05, 0xdc, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, // IPv4 quote
        0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, //
        0x04, 0xd2, 0x00, 0x35, 0x05, 0xc8, 0x00, 0x00, // UDP header quote
    ];

    fn with_checksum<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
        Icmpv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        bytes
    }

    #[test]
    fn icmpv4_echo_parses_every_field() {
        let bytes = with_checksum(ECHO);
        let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.msg_type(), ECHO_REQUEST);
        assert_eq!(packet.code(), 0);
        // 0x0800 + 0x1234 + 0x0001 + 0x6162 + 0x6364 = 0xdefb, complemented.
        assert_eq!(packet.checksum(), 0x2104);
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.data(), b"abcd");
        assert!(!packet.is_error());
        assert!(packet.verify_checksum());
    }

    #[test]
    fn icmpv4_frag_needed_parses_every_field() {
        let bytes = with_checksum(FRAG_NEEDED_MSG);
        let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.msg_type(), DEST_UNREACHABLE);
        assert_eq!(packet.code(), FRAG_NEEDED);
        assert_eq!(packet.next_hop_mtu(), 1400);
        assert!(packet.is_error());
        assert_eq!(packet.data(), &FRAG_NEEDED_MSG[8..]);
        assert!(packet.verify_checksum());

        let repr = Icmpv4Repr::parse(&packet).unwrap();
        let expected = Icmpv4Repr::DestUnreachable {
            code: FRAG_NEEDED,
            next_hop_mtu: 1400,
            data: &FRAG_NEEDED_MSG[8..],
        };
        assert_eq!(repr, expected);
    }

    #[test]
    fn icmpv4_is_error_by_type() {
        for msg_type in 0..=u8::MAX {
            let mut bytes = ECHO;
            bytes[0] = msg_type;
            let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
            let expected = matches!(msg_type, 3 | 11 | 12);
            assert_eq!(packet.is_error(), expected, "type {msg_type}");
        }
    }

    #[test]
    fn icmpv4_emit_echo_reply() {
        let repr = Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq_no: 1,
            data: b"abcd",
        };
        let mut bytes = [0xffu8; 12];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        let mut expected = ECHO;
        expected[0] = ECHO_REPLY;
        assert_eq!(bytes, with_checksum(expected));
        assert_eq!(repr.buffer_len(), 12);
        assert_eq!(repr.header_len(), 8);
    }

    #[test]
    fn icmpv4_emit_frag_needed() {
        let repr = Icmpv4Repr::DestUnreachable {
            code: FRAG_NEEDED,
            next_hop_mtu: 1400,
            data: &FRAG_NEEDED_MSG[8..],
        };
        // A longer buffer than the message: the checksum covers only the message.
        let mut bytes = [0xffu8; 40];
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes[..36], with_checksum(FRAG_NEEDED_MSG));
    }

    #[test]
    fn icmpv4_emit_then_parse_round_trips() {
        let reprs = [
            Icmpv4Repr::EchoRequest {
                ident: 7,
                seq_no: 9,
                data: b"ping",
            },
            Icmpv4Repr::TimeExceeded {
                code: TTL_EXCEEDED,
                data: &FRAG_NEEDED_MSG[8..],
            },
            Icmpv4Repr::ParamProblem {
                code: 0,
                pointer: 9,
                data: &FRAG_NEEDED_MSG[8..],
            },
            Icmpv4Repr::DestUnreachable {
                code: PORT_UNREACHABLE,
                next_hop_mtu: 0,
                data: &[],
            },
        ];
        for repr in reprs {
            let mut bytes = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
            let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
            assert!(packet.verify_checksum(), "{repr:?}");
            assert_eq!(Icmpv4Repr::parse(&packet), Ok(repr));
        }
    }

    #[test]
    fn icmpv4_setters_write_fields() {
        let mut bytes = [0u8; 8];
        let mut packet = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(PARAM_PROBLEM);
        packet.set_code(1);
        packet.set_pointer(20);
        assert_eq!(packet.pointer(), 20);
        packet.fill_checksum();
        assert!(packet.verify_checksum());
        assert_eq!(bytes[..2], [12, 1]);
    }

    #[test]
    fn icmpv4_bad_checksum_detected() {
        let mut bytes = with_checksum(ECHO);
        bytes[9] ^= 0x01;
        assert!(!Icmpv4Packet::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn icmpv4_truncated() {
        let result = Icmpv4Packet::new_checked(&ECHO[..7]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn icmpv4_parse_unsupported_type() {
        let mut bytes = ECHO;
        bytes[0] = 5; // redirect
        let packet = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&packet), Err(Error::Unsupported));
    }

    proptest! {
        #[test]
        fn icmpv4_checked_accessors_never_panic(bytes in vec(any::<u8>(), 0..40)) {
            if let Ok(packet) = Icmpv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.msg_type(), packet.code(), packet.checksum());
                let _ = (packet.echo_ident(), packet.echo_seq_no(), packet.next_hop_mtu());
                let _ = (packet.pointer(), packet.data(), packet.is_error());
                let _ = packet.verify_checksum();
                let _ = Icmpv4Repr::parse(&packet);
            }
        }
    }
}
