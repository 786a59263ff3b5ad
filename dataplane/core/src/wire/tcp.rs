//! TCP headers (RFC 9293).
//!
//! ```text
//!  0                              16                              32
//! +-------------------------------+-------------------------------+
//! |          Source Port          |       Destination Port        |
//! +-------------------------------+-------------------------------+
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! +-------+-------+---------------+-------------------------------+
//! | Offset| Rsrvd |     Flags     |            Window             |
//! +-------+-------+---------------+-------------------------------+
//! |           Checksum            |        Urgent Pointer         |
//! |                    Options (offset > 5) ...                   |
//! +---------------------------------------------------------------+
//! ```
//!
//! TCP carries no length of its own, so the view expects a buffer that ends where the IP
//! payload ends. The payload runs to the end of the buffer.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::{BitOr, BitOrAssign};

use super::{checksum, read_u16, read_u32, Error, IpProtocol};

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUMBER: Field = 4..8;
    pub const ACK_NUMBER: Field = 8..12;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT_POINTER: Field = 18..20;
    pub const OPTIONS: usize = 20;
}

/// The eight TCP control bits, as in byte 13 of the header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const PSH: TcpFlags = TcpFlags(0x08);
    pub const ACK: TcpFlags = TcpFlags(0x10);
    pub const URG: TcpFlags = TcpFlags(0x20);
    pub const ECE: TcpFlags = TcpFlags(0x40);
    pub const CWR: TcpFlags = TcpFlags(0x80);

    pub const fn empty() -> Self {
        TcpFlags(0)
    }

    pub const fn from_bits(bits: u8) -> Self {
        TcpFlags(bits)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Checks whether every flag set in `other` is also set in `self`.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }

    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }

    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }

    pub const fn psh(self) -> bool {
        self.contains(Self::PSH)
    }

    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }

    pub const fn urg(self) -> bool {
        self.contains(Self::URG)
    }

    pub const fn ece(self) -> bool {
        self.contains(Self::ECE)
    }

    pub const fn cwr(self) -> bool {
        self.contains(Self::CWR)
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;

    fn bitor(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }
}

impl BitOrAssign for TcpFlags {
    fn bitor_assign(&mut self, other: TcpFlags) {
        self.0 |= other.0;
    }
}

/// Lists the set flags by name, such as `TcpFlags(SYN|ACK)`, so test failures are readable.
impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        f.write_str("TcpFlags(")?;
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// View of a TCP segment: header, options and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Length of a header without options.
    pub const MIN_HEADER_LEN: usize = field::OPTIONS;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than the header
    /// length the header declares.
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after checking the data offset against the buffer.
    ///
    /// # Errors
    ///
    /// As for `check_len`.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the data offset, so that no accessor can panic.
    ///
    /// # Errors
    ///
    /// - `Error::Truncated` if the buffer is shorter than 20 bytes or than the header
    ///   length in the data offset field.
    /// - `Error::BadHeaderLength` if the data offset is below 5.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < Self::MIN_HEADER_LEN {
            return Err(Error::BadHeaderLength);
        }
        if header_len > len {
            return Err(Error::Truncated);
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

    pub fn seq_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ_NUMBER])
    }

    pub fn ack_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK_NUMBER])
    }

    /// Returns the header length in bytes, options included (the data offset times 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    pub fn syn(&self) -> bool {
        self.flags().syn()
    }

    pub fn ack(&self) -> bool {
        self.flags().ack()
    }

    pub fn fin(&self) -> bool {
        self.flags().fin()
    }

    pub fn rst(&self) -> bool {
        self.flags().rst()
    }

    pub fn window(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::WINDOW])
    }

    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    pub fn urgent_pointer(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::URGENT_POINTER])
    }

    /// Returns the option bytes between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Returns the bytes after the header, up to the end of the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Checks the checksum over the whole buffer with the IPv4 pseudo header.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, data.len() as u32);
        checksum::fold(pseudo + checksum::sum(data)) == 0xffff
    }

    /// Checks the checksum over the whole buffer with the IPv6 pseudo header.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Tcp, data.len() as u32);
        checksum::fold(pseudo + checksum::sum(data)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    pub fn set_seq_number(&mut self, seq_number: u32) {
        self.buffer.as_mut()[field::SEQ_NUMBER].copy_from_slice(&seq_number.to_be_bytes());
    }

    pub fn set_ack_number(&mut self, ack_number: u32) {
        self.buffer.as_mut()[field::ACK_NUMBER].copy_from_slice(&ack_number.to_be_bytes());
    }

    /// Sets the header length in bytes, rounded down to a multiple of 4 because the field
    /// counts 32-bit words, and clears the reserved bits.
    pub fn set_header_len(&mut self, header_len: usize) {
        let words = ((header_len / 4) & 0x0f) as u8;
        self.buffer.as_mut()[field::DATA_OFFSET] = words << 4;
    }

    pub fn set_flags(&mut self, flags: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    pub fn set_window(&mut self, window: u16) {
        self.buffer.as_mut()[field::WINDOW].copy_from_slice(&window.to_be_bytes());
    }

    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    pub fn set_urgent_pointer(&mut self, urgent_pointer: u16) {
        self.buffer.as_mut()[field::URGENT_POINTER].copy_from_slice(&urgent_pointer.to_be_bytes());
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..header_len]
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }

    /// Computes the checksum over the whole buffer with the IPv4 pseudo header and writes it.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, data.len() as u32);
        let value = checksum::finish(pseudo + checksum::sum(data));
        self.set_checksum(value);
    }

    /// Computes the checksum over the whole buffer with the IPv6 pseudo header and writes it.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Tcp, data.len() as u32);
        let value = checksum::finish(pseudo + checksum::sum(data));
        self.set_checksum(value);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    // SYN from 10.0.0.1:49152 to 10.0.0.2:80 with an MSS option of 1460, then 2 data bytes.
    const SEGMENT: [u8; 26] = [
        0xc0, 0x00, 0x00, 0x50, // ports 49152 -> 80
        0x01, 0x02, 0x03, 0x04, // sequence number
        0x00, 0x00, 0x00, 0x00, // acknowledgment number
        0x60, 0x02, 0xfa, 0xf0, // data offset 6, SYN, window 64240
        0x00, 0x00, 0x00, 0x00, // checksum (filled in by the tests), urgent pointer
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
        0x68, 0x69, // payload
    ];

    const SRC_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn tcp_parses_every_field() {
        let packet = TcpPacket::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!(packet.src_port(), 49152);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), 0x0102_0304);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.flags(), TcpFlags::SYN);
        assert!(packet.syn());
        assert!(!packet.ack());
        assert!(!packet.fin());
        assert!(!packet.rst());
        assert_eq!(packet.window(), 64240);
        assert_eq!(packet.checksum(), 0);
        assert_eq!(packet.urgent_pointer(), 0);
        assert_eq!(packet.options(), &[0x02, 0x04, 0x05, 0xb4]);
        assert_eq!(packet.payload(), b"hi");
    }

    #[test]
    fn tcp_checksum_v4_known_value() {
        let mut bytes = SEGMENT;
        let mut packet = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum_v4(SRC_V4, DST_V4);
        // Pseudo header 0a00 0001 0a00 0002 0006 001a plus the segment words, complemented.
        assert_eq!(packet.checksum(), 0x5c71);
        assert!(packet.verify_checksum_v4(SRC_V4, DST_V4));
        assert!(!packet.verify_checksum_v4(SRC_V4, Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn tcp_checksum_v6_round_trips() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut bytes = SEGMENT;
        let mut packet = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        packet.fill_checksum_v6(&src, &dst);
        assert!(packet.verify_checksum_v6(&src, &dst));
        packet.payload_mut()[0] ^= 0x01;
        assert!(!packet.verify_checksum_v6(&src, &dst));
    }

    #[test]
    fn tcp_setters_write_fields() {
        let mut bytes = [0u8; 20];
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(1);
        packet.set_dst_port(2);
        packet.set_seq_number(3);
        packet.set_ack_number(4);
        packet.set_header_len(20);
        packet.set_flags(TcpFlags::SYN | TcpFlags::ACK);
        packet.set_window(5);
        packet.set_checksum(6);
        packet.set_urgent_pointer(7);
        let expected = [
            0, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0x50, 0x12, 0, 5, 0, 6, 0, 7,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn tcp_flags_helpers() {
        let mut flags = TcpFlags::empty();
        flags |= TcpFlags::FIN;
        flags |= TcpFlags::ACK;
        assert!(flags.fin());
        assert!(flags.ack());
        assert!(!flags.syn());
        assert!(flags.contains(TcpFlags::FIN | TcpFlags::ACK));
        assert!(!flags.contains(TcpFlags::FIN | TcpFlags::RST));
        assert_eq!(flags.bits(), 0x11);
        assert_eq!(format!("{flags:?}"), "TcpFlags(FIN|ACK)");

        let all = TcpFlags::from_bits(0xff);
        let checks = [
            all.psh(),
            all.urg(),
            all.ece(),
            all.cwr(),
            all.rst(),
            all.syn(),
        ];
        assert!(checks.iter().all(|&set| set));
    }

    #[test]
    fn tcp_truncated_below_fixed_header() {
        let result = TcpPacket::new_checked(&SEGMENT[..19]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn tcp_data_offset_below_five() {
        for offset in 0..5u8 {
            let mut bytes = SEGMENT;
            bytes[12] = offset << 4;
            let result = TcpPacket::new_checked(&bytes[..]);
            assert_eq!(
                result.unwrap_err(),
                Error::BadHeaderLength,
                "data offset {offset}"
            );
        }
    }

    #[test]
    fn tcp_header_beyond_buffer() {
        let result = TcpPacket::new_checked(&SEGMENT[..23]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
        let mut bytes = SEGMENT;
        bytes[12] = 0xf0; // 60-byte header in a 26-byte buffer
        let result = TcpPacket::new_checked(&bytes[..]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    proptest! {
        #[test]
        fn tcp_checked_accessors_never_panic(bytes in vec(any::<u8>(), 0..80)) {
            if let Ok(packet) = TcpPacket::new_checked(&bytes[..]) {
                let _ = (packet.src_port(), packet.dst_port(), packet.seq_number());
                let _ = (packet.ack_number(), packet.header_len(), packet.flags());
                let _ = (packet.syn(), packet.ack(), packet.fin(), packet.rst());
                let _ = (packet.window(), packet.checksum(), packet.urgent_pointer());
                let _ = (packet.options(), packet.payload());
                let _ = packet.verify_checksum_v4(SRC_V4, DST_V4);
                let _ = packet.verify_checksum_v6(&Ipv6Addr::LOCALHOST, &Ipv6Addr::LOCALHOST);
            }
        }
    }
}
