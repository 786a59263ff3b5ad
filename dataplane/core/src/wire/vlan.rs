//! IEEE 802.1Q VLAN tags.
//!
//! The view starts right after an outer EtherType of 0x8100 (or 0x88a8 for the service tag
//! of a double-tagged frame) and covers the tag control information and the EtherType that
//! names what follows the tag.
//!
//! ```text
//!  0     3   4               16                32
//! +-----+---+----------------+----------------+---------
//! | PCP |DEI|    VLAN ID     |   EtherType    | payload
//! +-----+---+----------------+----------------+---------
//! ```

use super::{read_u16, Error, EtherType};

mod field {
    use crate::wire::Field;

    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
    pub const PAYLOAD: usize = 4;
}

const PCP_SHIFT: u16 = 13;
const DEI_MASK: u16 = 0x1000;
const VLAN_ID_MASK: u16 = 0x0fff;

/// View of a VLAN tag and the EtherType that follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than 4 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps `buffer` after checking that it contains a whole tag.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 4 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let tag = Self::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
    }

    /// Checks that no accessor can panic.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 4 bytes.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < Self::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn tci(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::TCI])
    }

    /// Priority code point, 0 to 7.
    pub fn pcp(&self) -> u8 {
        (self.tci() >> PCP_SHIFT) as u8
    }

    /// Drop eligible indicator.
    pub fn dei(&self) -> bool {
        self.tci() & DEI_MASK != 0
    }

    /// VLAN identifier, 0 to 4095.
    pub fn vlan_id(&self) -> u16 {
        self.tci() & VLAN_ID_MASK
    }

    /// Returns the EtherType of the payload after the tag.
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(&self.buffer.as_ref()[field::ETHERTYPE]))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the priority code point. Only the low 3 bits of `pcp` are written.
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & !(0x7 << PCP_SHIFT)) | (u16::from(pcp & 0x7) << PCP_SHIFT);
        self.set_tci(tci);
    }

    pub fn set_dei(&mut self, dei: bool) {
        let tci = if dei {
            self.tci() | DEI_MASK
        } else {
            self.tci() & !DEI_MASK
        };
        self.set_tci(tci);
    }

    /// Sets the VLAN identifier. Only the low 12 bits of `vlan_id` are written.
    pub fn set_vlan_id(&mut self, vlan_id: u16) {
        let tci = (self.tci() & !VLAN_ID_MASK) | (vlan_id & VLAN_ID_MASK);
        self.set_tci(tci);
    }

    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let value = u16::from(ethertype);
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&value.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// Owned form of a VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanRepr {
    pub pcp: u8,
    pub dei: bool,
    pub vlan_id: u16,
    /// EtherType of the payload after the tag.
    pub ethertype: EtherType,
}

impl VlanRepr {
    /// Reads the fields of `tag`.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the tag is shorter than 4 bytes.
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Result<Self, Error> {
        tag.check_len()?;
        Ok(VlanRepr {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vlan_id: tag.vlan_id(),
            ethertype: tag.ethertype(),
        })
    }

    pub fn header_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Writes the tag into `tag`. Only the low 3 bits of `pcp` and the low 12 bits of
    /// `vlan_id` are written.
    ///
    /// # Panics
    ///
    /// Panics if the buffer is shorter than 4 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        let tci = (u16::from(self.pcp & 0x7) << PCP_SHIFT)
            | if self.dei { DEI_MASK } else { 0 }
            | (self.vlan_id & VLAN_ID_MASK);
        tag.set_tci(tci);
        tag.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    // PCP 5, DEI set, VLAN 0x123, then IPv6 and two payload bytes.
    const TAG: [u8; 6] = [0xb1, 0x23, 0x86, 0xdd, 0x60, 0x00];

    #[test]
    fn vlan_parses_every_field() {
        let tag = VlanTag::new_checked(&TAG[..]).unwrap();
        assert_eq!(tag.pcp(), 5);
        assert!(tag.dei());
        assert_eq!(tag.vlan_id(), 0x123);
        assert_eq!(tag.ethertype(), EtherType::Ipv6);
        assert_eq!(tag.payload(), &[0x60, 0x00]);
    }

    #[test]
    fn vlan_emit_writes_expected_bytes() {
        let repr = VlanRepr {
            pcp: 5,
            dei: true,
            vlan_id: 0x123,
            ethertype: EtherType::Ipv6,
        };
        let mut bytes = [0u8; 4];
        repr.emit(&mut VlanTag::new_unchecked(&mut bytes));
        assert_eq!(bytes, TAG[..4]);
        assert_eq!(repr.header_len(), 4);

        let parsed = VlanRepr::parse(&VlanTag::new_checked(&TAG[..]).unwrap()).unwrap();
        assert_eq!(parsed, repr);
    }

    #[test]
    fn vlan_setters_keep_other_bits() {
        let mut bytes = TAG;
        let mut tag = VlanTag::new_checked(&mut bytes[..]).unwrap();
        tag.set_vlan_id(0xfff);
        assert_eq!(tag.pcp(), 5);
        assert!(tag.dei());
        tag.set_dei(false);
        assert_eq!(tag.vlan_id(), 0xfff);
        tag.set_pcp(2);
        assert_eq!(tag.pcp(), 2);
        assert!(!tag.dei());
        assert_eq!(tag.vlan_id(), 0xfff);
        tag.set_ethertype(EtherType::Ipv4);
        assert_eq!(tag.ethertype(), EtherType::Ipv4);
    }

    #[test]
    fn vlan_truncated() {
        assert_eq!(
            VlanTag::new_checked(&TAG[..3]).unwrap_err(),
            Error::Truncated
        );
    }

    proptest! {
        #[test]
        fn vlan_checked_accessors_never_panic(bytes in vec(any::<u8>(), 0..16)) {
            if let Ok(tag) = VlanTag::new_checked(&bytes[..]) {
                let _ = (tag.pcp(), tag.dei(), tag.vlan_id(), tag.ethertype(), tag.payload());
                let _ = VlanRepr::parse(&tag).unwrap();
            }
        }
    }
}
