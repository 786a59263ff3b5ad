//! Ethernet II frames.
//!
//! ```text
//!  0                   6                  12        14
//! +-------------------+-------------------+---------+---------
//! |  destination MAC  |    source MAC     |EtherType| payload
//! +-------------------+-------------------+---------+---------
//! ```
//!
//! The view covers the frame without preamble or frame check sequence, as NICs deliver it.
//! The payload runs to the end of the buffer, so it can include padding up to the
//! 60-byte minimum frame. The IP length fields give the end of the datagram.

use super::{read_mac, read_u16, Error, EtherType, MacAddr};

mod field {
    use crate::wire::Field;

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// View of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than 14 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after checking that it contains a whole Ethernet header.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 14 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that no accessor can panic.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 14 bytes.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> MacAddr {
        read_mac(&self.buffer.as_ref()[field::DESTINATION])
    }

    pub fn src_addr(&self) -> MacAddr {
        read_mac(&self.buffer.as_ref()[field::SOURCE])
    }

    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    /// Returns the bytes after the header, including any padding up to the minimum frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let value = u16::from(ethertype);
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&value.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// Owned form of an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub src_addr: MacAddr,
    pub dst_addr: MacAddr,
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Reads the header fields of `frame`.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the frame is shorter than its header.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self, Error> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    pub fn header_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Writes the header into `frame`, leaving the payload untouched.
    ///
    /// # Panics
    ///
    /// Panics if the frame is shorter than 14 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const FRAME: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // destination
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x08, 0x00, // IPv4
        0xde, 0xad, 0xbe, 0xef, // payload
    ];

    #[test]
    fn ethernet_parses_every_field() {
        let frame = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr([0x02, 0, 0, 0, 0, 0x02]));
        assert_eq!(frame.src_addr(), MacAddr([0x02, 0, 0, 0, 0, 0x01]));
        assert_eq!(frame.ethertype(), EtherType::Ipv4);
        assert_eq!(frame.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn ethernet_repr_round_trips() {
        let frame = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        let repr = EthernetRepr::parse(&frame).unwrap();
        assert_eq!(repr.ethertype, EtherType::Ipv4);
        assert_eq!(repr.header_len(), 14);

        let mut bytes = [0u8; 18];
        bytes[14..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        repr.emit(&mut EthernetFrame::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, FRAME);
    }

    #[test]
    fn ethernet_emit_writes_expected_bytes() {
        let repr = EthernetRepr {
            src_addr: MacAddr([0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f]),
            dst_addr: MacAddr::BROADCAST,
            ethertype: EtherType::Ipv6,
        };
        let mut bytes = [0u8; 14];
        repr.emit(&mut EthernetFrame::new_unchecked(&mut bytes));
        let expected = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x86, 0xdd,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn ethernet_setters_write_fields() {
        let mut bytes = FRAME;
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        frame.set_ethertype(EtherType::Unknown(0x1234));
        frame.payload_mut()[0] = 0x00;
        assert_eq!(frame.ethertype(), EtherType::Unknown(0x1234));
        assert_eq!(frame.payload()[0], 0x00);
    }

    #[test]
    fn ethernet_header_only_has_empty_payload() {
        let frame = EthernetFrame::new_checked(&FRAME[..14]).unwrap();
        assert!(frame.payload().is_empty());
    }

    #[test]
    fn ethernet_truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&FRAME[..13]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            EthernetFrame::new_checked(&[][..]).unwrap_err(),
            Error::Truncated
        );
        let unchecked = EthernetFrame::new_unchecked(&FRAME[..13]);
        assert_eq!(EthernetRepr::parse(&unchecked), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn ethernet_checked_accessors_never_panic(bytes in vec(any::<u8>(), 0..64)) {
            if let Ok(frame) = EthernetFrame::new_checked(&bytes[..]) {
                let _ = (frame.dst_addr(), frame.src_addr(), frame.ethertype(), frame.payload());
                let _ = EthernetRepr::parse(&frame).unwrap();
            }
        }
    }
}
