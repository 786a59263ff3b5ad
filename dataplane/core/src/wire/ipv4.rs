//! IPv4 headers (RFC 791).
//!
//! ```text
//!  0       4       8              16    19                        32
//! +-------+-------+---------------+-------------------------------+
//! |Version|  IHL  |   DSCP/ECN    |         Total Length          |
//! +-------+-------+---------------+-----+-------------------------+
//! |        Identification         |Flags|     Fragment Offset     |
//! +---------------+---------------+-----+-------------------------+
//! |      TTL      |   Protocol    |        Header Checksum        |
//! +---------------+---------------+-------------------------------+
//! |                        Source Address                         |
//! |                      Destination Address                      |
//! |                    Options (IHL > 5) ...                      |
//! +---------------------------------------------------------------+
//! ```
//!
//! The buffer may run past the total length, as when Ethernet pads a short frame. The
//! payload ends at the total length, not at the end of the buffer.

use std::net::Ipv4Addr;

use super::{checksum, read_ipv4, read_u16, Error, IpProtocol};

mod field {
    use crate::wire::Field;

    pub const VERSION_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLAGS_FRAG_OFFSET: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
    pub const OPTIONS: usize = 20;
}

const FLAG_DONT_FRAG: u16 = 0x4000;
const FLAG_MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// View of an IPv4 header and the datagram payload it delimits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = field::OPTIONS;

    /// Wraps `buffer` without checking it, so accessors panic if it does not contain the header
    /// and the total length it declares.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after checking the version and every length field.
    ///
    /// # Errors
    ///
    /// As for `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the version and every length field, so that no accessor can panic.
    ///
    /// # Errors
    ///
    /// - `Error::Truncated` if the buffer is shorter than 20 bytes or than the header
    ///   length in the IHL field.
    /// - `Error::BadVersion` if the version is not 4.
    /// - `Error::BadHeaderLength` if the IHL is below 5.
    /// - `Error::BadTotalLength` if the total length is below the header length or beyond
    ///   the end of the buffer.
    pub fn check_len(&self) -> Result<(), Error> {
        self.check_header_len()?;
        if usize::from(self.total_len()) > self.buffer.as_ref().len() {
            return Err(Error::BadTotalLength);
        }
        Ok(())
    }

    /// Wraps `buffer`, which may contain only a prefix of the datagram, after checking
    /// everything but the end of the datagram. This suits the datagram quoted by an ICMP
    /// error, which keeps its original total length but only the first bytes of its
    /// payload. `payload()` then returns the bytes that are present.
    ///
    /// # Errors
    ///
    /// As for `check_len`, except that a total length beyond the buffer is accepted.
    pub fn new_checked_truncated(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header_len()?;
        Ok(packet)
    }

    fn check_header_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }

        let header_len = self.header_len();
        if header_len < Self::MIN_HEADER_LEN {
            return Err(Error::BadHeaderLength);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        if usize::from(self.total_len()) < header_len {
            return Err(Error::BadTotalLength);
        }
        Ok(())
    }

    /// Returns the end of the payload: the total length, or the end of the buffer for a
    /// view made by `new_checked_truncated`.
    fn payload_end(&self) -> usize {
        usize::from(self.total_len()).min(self.buffer.as_ref().len())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_IHL] >> 4
    }

    /// Returns the header length in bytes, options included (the IHL field times 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VERSION_IHL] & 0x0f) * 4
    }

    /// Returns the DSCP (high 6 bits) and ECN (low 2 bits) byte.
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Returns the datagram length in bytes, header included.
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::TOTAL_LEN])
    }

    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    fn flags_frag_offset(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::FLAGS_FRAG_OFFSET])
    }

    pub fn dont_frag(&self) -> bool {
        self.flags_frag_offset() & FLAG_DONT_FRAG != 0
    }

    pub fn more_frags(&self) -> bool {
        self.flags_frag_offset() & FLAG_MORE_FRAGS != 0
    }

    /// Returns the fragment offset in bytes (the field counts 8-byte units).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag_offset() & FRAG_OFFSET_MASK) * 8
    }

    /// Checks whether the datagram is a fragment: more fragments follow or the offset is
    /// not zero.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Checks whether the datagram is the first fragment of a fragmented datagram, the only
    /// one that carries the transport header. An unfragmented datagram is not a first
    /// fragment.
    pub fn is_first_fragment(&self) -> bool {
        self.more_frags() && self.frag_offset() == 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// Returns the option bytes between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Returns the header, options included.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Returns the payload, which ends at the total length rather than at the end of the
    /// buffer. After `new_checked_truncated` it ends where the buffer does if that is
    /// earlier.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.payload_end()]
    }

    /// Checks the header checksum.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_version(&mut self, version: u8) {
        let byte = &mut self.buffer.as_mut()[field::VERSION_IHL];
        *byte = (*byte & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes, rounded down to a multiple of 4 because the IHL
    /// field counts 32-bit words.
    pub fn set_header_len(&mut self, header_len: usize) {
        let ihl = ((header_len / 4) & 0x0f) as u8;
        let byte = &mut self.buffer.as_mut()[field::VERSION_IHL];
        *byte = (*byte & 0xf0) | ihl;
    }

    pub fn set_dscp_ecn(&mut self, dscp_ecn: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = dscp_ecn;
    }

    pub fn set_total_len(&mut self, total_len: u16) {
        self.buffer.as_mut()[field::TOTAL_LEN].copy_from_slice(&total_len.to_be_bytes());
    }

    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    fn set_flags_frag_offset(&mut self, value: u16) {
        self.buffer.as_mut()[field::FLAGS_FRAG_OFFSET].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_dont_frag(&mut self, dont_frag: bool) {
        let value = self.flags_frag_offset() & !FLAG_DONT_FRAG;
        self.set_flags_frag_offset(value | if dont_frag { FLAG_DONT_FRAG } else { 0 });
    }

    pub fn set_more_frags(&mut self, more_frags: bool) {
        let value = self.flags_frag_offset() & !FLAG_MORE_FRAGS;
        self.set_flags_frag_offset(value | if more_frags { FLAG_MORE_FRAGS } else { 0 });
    }

    /// Sets the fragment offset in bytes, rounded down to a multiple of 8 because the field
    /// counts 8-byte units.
    pub fn set_frag_offset(&mut self, offset: u16) {
        let value = self.flags_frag_offset() & !FRAG_OFFSET_MASK;
        self.set_flags_frag_offset(value | (offset / 8));
    }

    /// Clears the reserved bit, both flags and the fragment offset.
    pub fn clear_flags_and_offset(&mut self) {
        self.set_flags_frag_offset(0);
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = u8::from(protocol);
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes the header checksum over the header and options and writes it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::finish(checksum::sum(self.header()));
        self.set_checksum(value);
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..header_len]
    }

    /// Returns the payload, which ends at the total length rather than at the end of the
    /// buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..self.payload_end();
        &mut self.buffer.as_mut()[range]
    }
}

/// Owned form of an IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: IpProtocol,
    /// Length of the payload in bytes, header excluded.
    pub payload_len: usize,
    pub ttl: u8,
    pub dscp_ecn: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// Fragment offset in bytes, a multiple of 8.
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Reads the header fields of `packet`. Options are not kept, so `emit` writes the
    /// header back without them.
    ///
    /// # Errors
    ///
    /// As for `Ipv4Packet::check_len`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Returns 20, the length of the header `emit` writes.
    pub fn header_len(&self) -> usize {
        field::OPTIONS
    }

    /// Returns the length of the datagram, header and payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes a 20-byte header with a valid checksum into `packet`, leaving the payload
    /// untouched.
    ///
    /// # Panics
    ///
    /// Panics if the buffer is shorter than 20 bytes or if `buffer_len()` exceeds 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        let total_len = u16::try_from(self.buffer_len())
            .expect("IPv4 total length (header plus payload_len) exceeds 65535");

        packet.set_version(4);
        packet.set_header_len(field::OPTIONS);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.clear_flags_and_offset();
        packet.set_dont_frag(self.dont_frag);
        packet.set_more_frags(self.more_frags);
        packet.set_frag_offset(self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    // UDP datagram 10.0.0.1 -> 10.0.0.2, DF, TTL 64, 4 payload bytes, then 2 bytes of padding.
    const PACKET: [u8; 26] = [
        0x45, 0xb8, 0x00, 0x18, // version 4, IHL 5, DSCP EF, total length 24
        0x12, 0x34, 0x40, 0x00, // ident, DF
        0x40, 0x11, 0x13, 0xe7, // TTL 64, UDP, checksum
        0x0a, 0x00, 0x00, 0x01, // source
        0x0a, 0x00, 0x00, 0x02, // destination
        0xaa, 0xbb, 0xcc, 0xdd, // payload
        0x00, 0x00, // Ethernet padding
    ];

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::Udp,
            payload_len: 4,
            ttl: 64,
            dscp_ecn: 0xb8,
            ident: 0x1234,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
    }

    fn with_checksum(mut bytes: Vec<u8>) -> Vec<u8> {
        Ipv4Packet::new_unchecked(&mut bytes[..]).fill_checksum();
        bytes
    }

    #[test]
    fn ipv4_parses_every_field() {
        let packet = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0xb8);
        assert_eq!(packet.total_len(), 24);
        assert_eq!(packet.ident(), 0x1234);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert!(!packet.is_first_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), IpProtocol::Udp);
        assert_eq!(packet.checksum(), 0x13e7);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn ipv4_payload_excludes_padding() {
        let packet = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(packet.payload().len(), 4);
        assert_eq!(packet.into_inner().len(), 26);
    }

    #[test]
    fn ipv4_emit_writes_expected_bytes() {
        let mut bytes = [0xffu8; 24];
        bytes[20..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        repr().emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET[..24]);
        assert_eq!(repr().header_len(), 20);
        assert_eq!(repr().buffer_len(), 24);
    }

    #[test]
    fn ipv4_repr_parse_matches() {
        let packet = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet), Ok(repr()));
    }

    #[test]
    fn ipv4_emit_fragment_fields() {
        let fragment = Ipv4Repr {
            dont_frag: false,
            more_frags: true,
            frag_offset: 1480,
            ..repr()
        };
        let mut bytes = [0u8; 24];
        fragment.emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]));
        // MF plus 1480 / 8 = 185 = 0x0b9.
        assert_eq!(bytes[6..8], [0x20, 0xb9]);

        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&packet), Ok(fragment));
    }

    #[test]
    fn ipv4_fragment_predicates() {
        let cases = [
            // (flags and offset field, is_fragment, is_first_fragment, offset in bytes)
            (0x0000, false, false, 0),
            (0x4000, false, false, 0),
            (0x2000, true, true, 0),
            (0x20b9, true, false, 1480),
            (0x00b9, true, false, 1480),
        ];
        for (value, fragment, first, offset) in cases {
            let mut bytes = PACKET;
            bytes[6..8].copy_from_slice(&u16::to_be_bytes(value));
            let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(packet.is_fragment(), fragment, "field {value:#06x}");
            assert_eq!(packet.is_first_fragment(), first, "field {value:#06x}");
            assert_eq!(packet.frag_offset(), offset, "field {value:#06x}");
        }
    }

    #[test]
    fn ipv4_setters_write_fields() {
        let mut bytes = PACKET;
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_ttl(63);
        packet.set_ident(7);
        packet.set_dont_frag(false);
        packet.set_more_frags(true);
        packet.set_frag_offset(16);
        packet.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        packet.set_dst_addr(Ipv4Addr::new(192, 0, 2, 2));
        packet.set_protocol(IpProtocol::Tcp);
        packet.set_dscp_ecn(0);
        assert!(!packet.verify_checksum());
        packet.fill_checksum();
        assert!(packet.verify_checksum());

        assert_eq!(packet.ttl(), 63);
        assert_eq!(packet.ident(), 7);
        assert!(!packet.dont_frag());
        assert!(packet.more_frags());
        assert_eq!(packet.frag_offset(), 16);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(packet.protocol(), IpProtocol::Tcp);
        assert_eq!(packet.dscp_ecn(), 0);

        packet.set_total_len(22);
        packet.payload_mut()[0] = 0x11;
        assert_eq!(packet.payload(), &[0x11, 0xbb]);
    }

    #[test]
    fn ipv4_options_are_separate_from_payload() {
        let mut bytes = vec![0x46, 0, 0x00, 0x1a];
        bytes.extend_from_slice(&PACKET[4..20]);
        bytes.extend_from_slice(&[0x01, 0x01, 0x01, 0x00]); // NOP NOP NOP EOL
        bytes.extend_from_slice(&[0xaa, 0xbb]);
        let bytes = with_checksum(bytes);

        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[0x01, 0x01, 0x01, 0x00]);
        assert_eq!(packet.payload(), &[0xaa, 0xbb]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn ipv4_truncated_below_fixed_header() {
        let result = Ipv4Packet::new_checked(&PACKET[..19]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn ipv4_bad_version() {
        let mut bytes = PACKET;
        bytes[0] = 0x65;
        let result = Ipv4Packet::new_checked(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadVersion);
    }

    #[test]
    fn ipv4_ihl_below_five() {
        for ihl in 0..5 {
            let mut bytes = PACKET;
            bytes[0] = 0x40 | ihl;
            let result = Ipv4Packet::new_checked(&bytes[..]);
            assert_eq!(result.unwrap_err(), Error::BadHeaderLength, "IHL {ihl}");
        }
    }

    #[test]
    fn ipv4_header_beyond_buffer() {
        let mut bytes = PACKET;
        bytes[0] = 0x47; // 28-byte header in a 26-byte buffer
        let result = Ipv4Packet::new_checked(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn ipv4_total_len_below_header_len() {
        let mut bytes = PACKET;
        bytes[2..4].copy_from_slice(&19u16.to_be_bytes());
        let result = Ipv4Packet::new_checked(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadTotalLength);
    }

    #[test]
    fn ipv4_total_len_beyond_buffer() {
        let mut bytes = PACKET;
        bytes[2..4].copy_from_slice(&27u16.to_be_bytes());
        let result = Ipv4Packet::new_checked(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadTotalLength);

        let result = Ipv4Packet::new_checked(&PACKET[..23]);
        assert_eq!(result.unwrap_err(), Error::BadTotalLength);
    }

    #[test]
    fn ipv4_truncated_quote_accepted() {
        // An ICMP error quotes the header and 8 payload bytes of a 1500-byte datagram.
        let mut bytes = PACKET[..20].to_vec();
        bytes[2..4].copy_from_slice(&1500u16.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);

        let result = Ipv4Packet::new_checked(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadTotalLength);

        let packet = Ipv4Packet::new_checked_truncated(&bytes[..]).unwrap();
        assert_eq!(packet.total_len(), 1500);
        assert_eq!(packet.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn ipv4_truncated_quote_still_checks_header() {
        let mut bytes = PACKET;
        bytes[0] = 0x44;
        let result = Ipv4Packet::new_checked_truncated(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadHeaderLength);

        let mut bytes = PACKET;
        bytes[2..4].copy_from_slice(&19u16.to_be_bytes());
        let result = Ipv4Packet::new_checked_truncated(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::BadTotalLength);

        let result = Ipv4Packet::new_checked_truncated(&PACKET[..19]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn ipv4_repr_parse_checks_unchecked_view() {
        let packet = Ipv4Packet::new_unchecked(&PACKET[..23]);
        assert_eq!(Ipv4Repr::parse(&packet), Err(Error::BadTotalLength));
    }

    #[test]
    fn ipv4_bad_checksum_detected() {
        let mut bytes = PACKET;
        bytes[11] ^= 0x01;
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
    }

    #[test]
    #[should_panic(expected = "exceeds 65535")]
    fn ipv4_emit_rejects_oversized_payload() {
        let oversized = Ipv4Repr {
            payload_len: 65516,
            ..repr()
        };
        let mut bytes = [0u8; 20];
        oversized.emit(&mut Ipv4Packet::new_unchecked(&mut bytes[..]));
    }

    proptest! {
        #[test]
        fn ipv4_checked_accessors_never_panic(mut bytes in vec(any::<u8>(), 0..80)) {
            // Steer half the inputs to version 4 and a total length within the buffer, so
            // that the checks after the version run and some inputs pass them.
            if bytes.len() >= 4 && bytes[0] & 0x80 != 0 {
                bytes[0] = 0x40 | (bytes[0] & 0x0f);
                bytes[2] = 0;
                bytes[3] %= bytes.len() as u8 + 1;
            }
            if let Ok(packet) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = (packet.version(), packet.header_len(), packet.dscp_ecn());
                let _ = (packet.total_len(), packet.ident(), packet.dont_frag());
                let _ = (packet.more_frags(), packet.frag_offset(), packet.is_fragment());
                let _ = (packet.is_first_fragment(), packet.ttl(), packet.protocol());
                let _ = (packet.checksum(), packet.src_addr(), packet.dst_addr());
                let _ = (packet.options(), packet.header(), packet.payload());
                let _ = packet.verify_checksum();
                let _ = Ipv4Repr::parse(&packet).unwrap();
            }
            if let Ok(packet) = Ipv4Packet::new_checked_truncated(&bytes[..]) {
                let _ = (packet.options(), packet.header(), packet.payload());
                let _ = (packet.src_addr(), packet.dst_addr(), packet.verify_checksum());
            }
        }
    }
}
