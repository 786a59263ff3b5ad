//! VXLAN headers (RFC 7348).
//!
//! ```text
//!  0               8                                              32
//! +-------+-+-----+-----------------------------------------------+
//! |R R R R|I|R R R|                  Reserved                     |
//! +-------+-+-----+-------------------------------+---------------+
//! |              VXLAN Network Identifier (VNI)   |   Reserved    |
//! +-----------------------------------------------+---------------+
//! ```
//!
//! The header follows a UDP header (destination port 4789) and precedes the inner
//! Ethernet frame. Receivers ignore the reserved bits, as RFC 7348 requires.

use super::{read_u32, Error};

mod field {
    use crate::wire::Field;

    pub const FLAGS: usize = 0;
    pub const RESERVED_1: Field = 1..4;
    pub const VNI_RESERVED: Field = 4..8;
    pub const PAYLOAD: usize = 8;
}

/// The I flag, set when the VNI field is valid.
pub const FLAG_VNI: u8 = 0x08;

/// IANA-assigned UDP destination port for VXLAN.
pub const UDP_PORT: u16 = 4789;

/// Largest VNI, which is a 24-bit value.
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// View of a VXLAN header and the inner frame after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanHeader<T> {
    pub const HEADER_LEN: usize = field::PAYLOAD;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than 8 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        VxlanHeader { buffer }
    }

    /// Wraps `buffer` after checking that it contains the 8-byte header. The I flag is
    /// checked by `VxlanRepr::parse`, not here.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 8 bytes.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
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

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Checks the I flag, which marks the VNI as valid.
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    /// Returns the 24-bit VXLAN network identifier.
    pub fn vni(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::VNI_RESERVED]) >> 8
    }

    /// Returns the inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanHeader<T> {
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI and keeps the reserved byte after it. Only the low 24 bits of `vni` are
    /// written.
    pub fn set_vni(&mut self, vni: u32) {
        let data = self.buffer.as_mut();
        let reserved = data[field::VNI_RESERVED.end - 1];
        let value = ((vni & MAX_VNI) << 8) | u32::from(reserved);
        data[field::VNI_RESERVED].copy_from_slice(&value.to_be_bytes());
    }

    /// Zeroes both reserved fields.
    pub fn clear_reserved(&mut self) {
        let data = self.buffer.as_mut();
        data[field::RESERVED_1].fill(0);
        data[field::VNI_RESERVED.end - 1] = 0;
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// Owned form of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VxlanRepr {
    /// VXLAN network identifier. Only the low 24 bits are written.
    pub vni: u32,
}

impl VxlanRepr {
    /// Reads the VNI of `header`.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 8 bytes, and `Error::Malformed` if
    /// the I flag is clear, so the VNI is not valid.
    pub fn parse<T: AsRef<[u8]>>(header: &VxlanHeader<T>) -> Result<Self, Error> {
        header.check_len()?;
        if !header.has_vni() {
            return Err(Error::Malformed);
        }
        Ok(VxlanRepr { vni: header.vni() })
    }

    pub fn header_len(&self) -> usize {
        field::PAYLOAD
    }

    /// Writes the header: flags with only the I bit set, the VNI and zeroed reserved fields.
    ///
    /// # Panics
    ///
    /// Panics if the buffer is shorter than 8 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut VxlanHeader<T>) {
        header.set_flags(FLAG_VNI);
        header.clear_reserved();
        header.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    // I flag, VNI 0x123456, then the first two bytes of an inner frame.
    const HEADER: [u8; 10] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0x02, 0x00];

    #[test]
    fn vxlan_parses_every_field() {
        let header = VxlanHeader::new_checked(&HEADER[..]).unwrap();
        assert_eq!(header.flags(), 0x08);
        assert!(header.has_vni());
        assert_eq!(header.vni(), 0x12_3456);
        assert_eq!(header.payload(), &[0x02, 0x00]);
        assert_eq!(VxlanRepr::parse(&header), Ok(VxlanRepr { vni: 0x12_3456 }));
    }

    #[test]
    fn vxlan_emit_writes_expected_bytes() {
        let repr = VxlanRepr { vni: 0x12_3456 };
        let mut bytes = [0xffu8; 8];
        repr.emit(&mut VxlanHeader::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, HEADER[..8]);
        assert_eq!(repr.header_len(), 8);
    }

    #[test]
    fn vxlan_emit_masks_vni_to_24_bits() {
        let repr = VxlanRepr { vni: 0xab12_3456 };
        let mut bytes = [0u8; 8];
        repr.emit(&mut VxlanHeader::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, HEADER[..8]);
    }

    #[test]
    fn vxlan_ignores_reserved_bits() {
        let bytes = [0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x01, 0xff];
        let header = VxlanHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(header.vni(), 1);
        assert_eq!(VxlanRepr::parse(&header), Ok(VxlanRepr { vni: 1 }));
    }

    #[test]
    fn vxlan_setters_keep_reserved_byte() {
        let mut bytes = [0u8; 8];
        bytes[7] = 0x5a;
        let mut header = VxlanHeader::new_unchecked(&mut bytes[..]);
        header.set_vni(MAX_VNI);
        header.set_flags(FLAG_VNI);
        assert_eq!(header.vni(), MAX_VNI);
        assert_eq!(bytes, [0x08, 0, 0, 0, 0xff, 0xff, 0xff, 0x5a]);
    }

    #[test]
    fn vxlan_without_i_flag_is_malformed() {
        let mut bytes = HEADER;
        bytes[0] = 0x00;
        let header = VxlanHeader::new_checked(&bytes[..]).unwrap();
        assert!(!header.has_vni());
        assert_eq!(VxlanRepr::parse(&header), Err(Error::Malformed));
    }

    #[test]
    fn vxlan_truncated() {
        let result = VxlanHeader::new_checked(&HEADER[..7]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    proptest! {
        #[test]
        fn vxlan_checked_accessors_never_panic(bytes in vec(any::<u8>(), 0..24)) {
            if let Ok(header) = VxlanHeader::new_checked(&bytes[..]) {
                let _ = (header.flags(), header.has_vni(), header.vni(), header.payload());
                prop_assert!(header.vni() <= MAX_VNI);
                let _ = VxlanRepr::parse(&header);
            }
        }
    }
}
