//! ARP packets for IPv4 over Ethernet (RFC 826).
//!
//! ```text
//!  0               2               4       5       6               8
//! +---------------+---------------+-------+-------+---------------+
//! | hardware type | protocol type | hlen  | plen  |   operation   |
//! +---------------+---------------+-------+-------+---------------+
//! | sender hardware address (6) | sender protocol address (4)     |
//! | target hardware address (6) | target protocol address (4)     |
//! +---------------------------------------------------------------+
//! ```
//!
//! Only the Ethernet/IPv4 form is supported, which fixes the packet at 28 bytes.

use std::net::Ipv4Addr;

use super::{read_ipv4, read_mac, read_u16, Error, MacAddr};

mod field {
    use crate::wire::Field;

    pub const HARDWARE_TYPE: Field = 0..2;
    pub const PROTOCOL_TYPE: Field = 2..4;
    pub const HARDWARE_LEN: usize = 4;
    pub const PROTOCOL_LEN: usize = 5;
    pub const OPERATION: Field = 6..8;
    pub const SENDER_HARDWARE_ADDR: Field = 8..14;
    pub const SENDER_PROTOCOL_ADDR: Field = 14..18;
    pub const TARGET_HARDWARE_ADDR: Field = 18..24;
    pub const TARGET_PROTOCOL_ADDR: Field = 24..28;
}

const HARDWARE_TYPE_ETHERNET: u16 = 1;
const PROTOCOL_TYPE_IPV4: u16 = 0x0800;

/// ARP operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(operation: ArpOperation) -> Self {
        match operation {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

/// View of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Length of an Ethernet/IPv4 ARP packet.
    pub const PACKET_LEN: usize = field::TARGET_PROTOCOL_ADDR.end;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than 28 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after checking that it contains an Ethernet/IPv4 ARP packet.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 28 bytes, and `Error::Unsupported`
    /// if the hardware or protocol type or length is not that of Ethernet and IPv4.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the packet is an Ethernet/IPv4 ARP packet, so that no accessor can
    /// panic and the addresses have the sizes the getters return.
    ///
    /// # Errors
    ///
    /// As for `new_checked`.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < Self::PACKET_LEN {
            return Err(Error::Truncated);
        }
        if self.hardware_type() != HARDWARE_TYPE_ETHERNET
            || self.protocol_type() != PROTOCOL_TYPE_IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn hardware_type(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::HARDWARE_TYPE])
    }

    pub fn protocol_type(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::PROTOCOL_TYPE])
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HARDWARE_LEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL_LEN]
    }

    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(read_u16(&self.buffer.as_ref()[field::OPERATION]))
    }

    pub fn sender_hardware_addr(&self) -> MacAddr {
        read_mac(&self.buffer.as_ref()[field::SENDER_HARDWARE_ADDR])
    }

    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::SENDER_PROTOCOL_ADDR])
    }

    pub fn target_hardware_addr(&self) -> MacAddr {
        read_mac(&self.buffer.as_ref()[field::TARGET_HARDWARE_ADDR])
    }

    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(&self.buffer.as_ref()[field::TARGET_PROTOCOL_ADDR])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the fixed fields that mark the packet as Ethernet/IPv4 ARP.
    pub fn set_ethernet_ipv4(&mut self) {
        let data = self.buffer.as_mut();
        data[field::HARDWARE_TYPE].copy_from_slice(&HARDWARE_TYPE_ETHERNET.to_be_bytes());
        data[field::PROTOCOL_TYPE].copy_from_slice(&PROTOCOL_TYPE_IPV4.to_be_bytes());
        data[field::HARDWARE_LEN] = 6;
        data[field::PROTOCOL_LEN] = 4;
    }

    pub fn set_operation(&mut self, operation: ArpOperation) {
        let value = u16::from(operation);
        self.buffer.as_mut()[field::OPERATION].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_sender_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SENDER_HARDWARE_ADDR].copy_from_slice(&addr.0);
    }

    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SENDER_PROTOCOL_ADDR].copy_from_slice(&addr.octets());
    }

    pub fn set_target_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::TARGET_HARDWARE_ADDR].copy_from_slice(&addr.0);
    }

    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TARGET_PROTOCOL_ADDR].copy_from_slice(&addr.octets());
    }
}

/// Owned form of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub sender_hardware_addr: MacAddr,
    pub sender_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: MacAddr,
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Reads the fields of `packet`.
    ///
    /// # Errors
    ///
    /// As for `ArpPacket::new_checked`.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<Self, Error> {
        packet.check_len()?;
        Ok(ArpRepr {
            operation: packet.operation(),
            sender_hardware_addr: packet.sender_hardware_addr(),
            sender_protocol_addr: packet.sender_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        field::TARGET_PROTOCOL_ADDR.end
    }

    /// Writes the whole packet into `packet`.
    ///
    /// # Panics
    ///
    /// Panics if the buffer is shorter than 28 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_ethernet_ipv4();
        packet.set_operation(self.operation);
        packet.set_sender_hardware_addr(self.sender_hardware_addr);
        packet.set_sender_protocol_addr(self.sender_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    // Who has 10.0.0.2? Tell 10.0.0.1.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // fixed fields, request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // target
    ];

    fn request_repr() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            sender_hardware_addr: MacAddr([0x02, 0, 0, 0, 0, 0x01]),
            sender_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            target_hardware_addr: MacAddr([0; 6]),
            target_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn arp_parses_every_field() {
        let packet = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), 0x0800);
        assert_eq!(packet.hardware_len(), 6);
        assert_eq!(packet.protocol_len(), 4);
        assert_eq!(packet.operation(), ArpOperation::Request);
        assert_eq!(
            packet.sender_hardware_addr(),
            MacAddr([0x02, 0, 0, 0, 0, 0x01])
        );
        assert_eq!(packet.sender_protocol_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(packet.target_hardware_addr(), MacAddr([0; 6]));
        assert_eq!(packet.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ArpRepr::parse(&packet), Ok(request_repr()));
    }

    #[test]
    fn arp_emit_writes_expected_bytes() {
        let repr = request_repr();
        let mut bytes = [0xaau8; 28];
        repr.emit(&mut ArpPacket::new_unchecked(&mut bytes));
        assert_eq!(bytes, REQUEST);
        assert_eq!(repr.buffer_len(), 28);
    }

    #[test]
    fn arp_operation_round_trips() {
        for value in [1, 2, 3, 0xffff] {
            assert_eq!(u16::from(ArpOperation::from(value)), value);
        }
        assert_eq!(ArpOperation::from(2), ArpOperation::Reply);
    }

    #[test]
    fn arp_truncated() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn arp_rejects_other_hardware_and_protocols() {
        let cases: [(usize, u8); 4] = [(1, 0x06), (2, 0x86), (4, 8), (5, 16)];
        for (index, value) in cases {
            let mut bytes = REQUEST;
            bytes[index] = value;
            let result = ArpPacket::new_checked(&bytes[..]);
            assert_eq!(
                result.unwrap_err(),
                Error::Unsupported,
                "byte {index} = {value}"
            );
        }
    }

    proptest! {
        #[test]
        fn arp_checked_accessors_never_panic(mut bytes in vec(any::<u8>(), 0..40)) {
            // Make the fixed fields valid half the time so the accessors run.
            if bytes.len() >= 6 && bytes[0] & 1 == 0 {
                bytes[..6].copy_from_slice(&REQUEST[..6]);
            }
            if let Ok(packet) = ArpPacket::new_checked(&bytes[..]) {
                let _ = (packet.operation(), packet.sender_hardware_addr());
                let _ = (packet.sender_protocol_addr(), packet.target_hardware_addr());
                let _ = packet.target_protocol_addr();
                let _ = ArpRepr::parse(&packet).unwrap();
            }
        }
    }
}
