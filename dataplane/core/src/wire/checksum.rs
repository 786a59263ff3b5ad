//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A checksum is built from partial sums: `sum` over each piece of data, `pseudo_header_v4`
//! or `pseudo_header_v6` for TCP, UDP and ICMPv6, added together as `u32` and passed to
//! `finish`. Every partial sum this module returns is at most `0xffff`, so adding a few of
//! them cannot overflow. A piece passed to `sum` must start at an even offset of the
//! checksummed data, because its bytes are paired from its own start.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::IpProtocol;

/// Computes the ones-complement sum of `data` as big-endian 16-bit words, folded to at most
/// `0xffff`. An odd trailing byte is the high byte of a final word padded with zero.
pub fn sum(data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    let mut acc: u64 = 0;

    for word in &mut chunks {
        acc += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }

    u32::from(fold_u64(acc))
}

/// Folds the carries of a partial sum back into 16 bits, without complementing it.
pub fn fold(sum: u32) -> u16 {
    fold_u64(u64::from(sum))
}

/// Returns the checksum field value for a partial sum: the folded sum, complemented.
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Computes the partial sum of the IPv4 pseudo header used by TCP and UDP (RFC 768,
/// RFC 9293). `length` is the length in bytes of the TCP or UDP header plus payload.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u32) -> u32 {
    let acc = sum(&src.octets())
        + sum(&dst.octets())
        + u32::from(u8::from(protocol))
        + (length >> 16)
        + (length & 0xffff);
    u32::from(fold(acc))
}

/// Computes the partial sum of the IPv6 pseudo header (RFC 8200 section 8.1). `length` is
/// the upper-layer packet length in bytes, and `protocol` the upper-layer protocol, not
/// the next header of the IPv6 header when extension headers follow it.
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, protocol: IpProtocol, length: u32) -> u32 {
    let acc = sum(&src.octets())
        + sum(&dst.octets())
        + u32::from(u8::from(protocol))
        + (length >> 16)
        + (length & 0xffff);
    u32::from(fold(acc))
}

/// Updates `checksum` after a 16-bit word of the checksummed data changed from `old` to
/// `new`, with equation 3 of RFC 1624: `HC' = ~(~HC + ~m + m')`.
///
/// The result equals a full recomputation unless the data is all zero after the change.
/// In that case this returns `0x0000` where recomputation returns `0xffff`. Both are the
/// same value in ones-complement arithmetic, and both verify.
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// Updates `checksum` after a 32-bit field at an even offset, such as an IPv4 address,
/// changed from `old` to `new`.
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let acc = u32::from(!checksum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!old as u16)
        + (new >> 16)
        + (new & 0xffff);
    !fold(acc)
}

/// Updates `checksum` after the bytes `old` were replaced by `new` at the same even offset,
/// such as an IPv6 address.
///
/// `old` and `new` are the same field before and after the change, so they have the same
/// length. When they differ, the shorter one counts as if padded with zeros.
pub fn update_bytes(checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len(), "old and new field lengths differ");
    let acc = u32::from(!checksum) + u32::from(!fold(sum(old))) + sum(new);
    !fold(acc)
}

fn fold_u64(mut acc: u64) -> u16 {
    // 2^16 is 1 modulo 0xffff, so adding the high part to the low part keeps the sum's
    // ones-complement value while removing the carries.
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// IPv4 header (UDP, 192.168.0.1 to 192.168.0.199) with its correct checksum 0xb861.
    const IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn header_with_zero_checksum() -> [u8; 20] {
        let mut header = IPV4_HEADER;
        header[10] = 0;
        header[11] = 0;
        header
    }

    #[test]
    fn sum_of_rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to 0x2ddf0, folded 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(finish(sum(&data)), 0x220d);
    }

    #[test]
    fn sum_pads_odd_length_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn sum_handles_large_buffers() {
        let data = vec![0xffu8; 200_000];
        assert_eq!(fold(sum(&data)), 0xffff);
        assert!(sum(&data) <= 0xffff);
    }

    #[test]
    fn finish_matches_known_ipv4_header() {
        let header = header_with_zero_checksum();
        assert_eq!(finish(sum(&header)), 0xb861);
        assert_eq!(fold(sum(&IPV4_HEADER)), 0xffff);
    }

    #[test]
    fn pseudo_header_v4_sums_fields() {
        let src = Ipv4Addr::new(192, 168, 0, 1);
        let dst = Ipv4Addr::new(192, 168, 0, 199);
        let expected = fold(0xc0a8 + 0x0001 + 0xc0a8 + 0x00c7 + 17 + 95);
        assert_eq!(
            pseudo_header_v4(src, dst, IpProtocol::Udp, 95),
            u32::from(expected)
        );
    }

    #[test]
    fn pseudo_header_v6_sums_fields() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let expected = fold(0x2001 + 0x0db8 + 1 + 0x2001 + 0x0db8 + 2 + 58 + 0x1 + 0x0004);
        let actual = pseudo_header_v6(&src, &dst, IpProtocol::Icmpv6, 0x1_0004);
        assert_eq!(actual, u32::from(expected));
    }

    #[test]
    fn update_u16_matches_recomputation_for_ttl() {
        let mut header = header_with_zero_checksum();
        let old_word = u16::from_be_bytes([header[8], header[9]]);
        header[8] -= 1;
        let new_word = u16::from_be_bytes([header[8], header[9]]);

        let updated = update_u16(0xb861, old_word, new_word);
        assert_eq!(updated, finish(sum(&header)));
        assert_eq!(updated, 0xb961);
    }

    #[test]
    fn update_u32_matches_recomputation_for_address() {
        let mut header = header_with_zero_checksum();
        let new_dst = Ipv4Addr::new(10, 1, 2, 3);
        header[16..20].copy_from_slice(&new_dst.octets());

        let old = u32::from(Ipv4Addr::new(192, 168, 0, 199));
        let updated = update_u32(0xb861, old, u32::from(new_dst));
        assert_eq!(updated, finish(sum(&header)));
    }

    #[test]
    fn update_bytes_matches_recomputation() {
        let mut header = header_with_zero_checksum();
        let old = [0xc0, 0xa8, 0x00, 0x01];
        let new = [0xfe, 0xdc, 0xba, 0x98];
        header[12..16].copy_from_slice(&new);

        assert_eq!(update_bytes(0xb861, &old, &new), finish(sum(&header)));
    }

    #[test]
    fn update_to_all_zero_data_gives_negative_zero() {
        let updated = update_u16(finish(0x1234), 0x1234, 0);
        assert_eq!(updated, 0x0000);
        assert_eq!(finish(sum(&[0, 0])), 0xffff);
    }

    proptest! {
        #[test]
        fn update_bytes_equals_full_recomputation(
            data in vec(any::<u8>(), 2..64),
            start_word in any::<prop::sample::Index>(),
            replacement in vec(any::<u8>(), 1..16),
        ) {
            let mut data = data;
            let words = data.len() / 2;
            let start = start_word.index(words) * 2;
            let len = replacement.len().min(data.len() - start);
            let new = &replacement[..len];
            let old = data[start..start + len].to_vec();

            let before = finish(sum(&data));
            data[start..start + len].copy_from_slice(new);
            // All-zero data is the one case with two valid encodings, tested above.
            prop_assume!(data.iter().any(|&b| b != 0));

            prop_assert_eq!(update_bytes(before, &old, new), finish(sum(&data)));
        }

        #[test]
        fn update_u16_equals_full_recomputation(
            data in vec(any::<u16>(), 1..32),
            at in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let mut words = data;
            let at = at.index(words.len());
            let to_bytes = |words: &[u16]| -> Vec<u8> {
                words.iter().flat_map(|w| w.to_be_bytes()).collect()
            };

            let before = finish(sum(&to_bytes(&words)));
            let old = words[at];
            words[at] = new;
            prop_assume!(words.iter().any(|&w| w != 0));

            prop_assert_eq!(update_u16(before, old, new), finish(sum(&to_bytes(&words))));
        }

        #[test]
        fn split_sums_add_up(data in vec(any::<u8>(), 0..300), cut in 0usize..150) {
            let cut = (cut * 2).min(data.len() & !1);
            let whole = fold(sum(&data));
            let parts = fold(sum(&data[..cut]) + sum(&data[cut..]));
            prop_assert_eq!(whole, parts);
        }
    }
}
