//! IPv6 extension headers (RFC 8200 section 4) and the walk to the upper-layer header.
//!
//! Every extension header starts with a next-header byte. All but two then give their
//! length in a second byte: hop-by-hop options, routing and destination options count
//! 8-byte units beyond the first 8 bytes, and the authentication header (RFC 4302) counts
//! 4-byte units beyond the first 8 bytes. The fragment header has no length field and is
//! always 8 bytes.

use super::{read_u16, read_u32, Error, IpProtocol};

/// Maximum number of extension headers `walk_extension_headers` follows before giving up.
///
/// Real traffic rarely carries more than two or three. The bound caps the work a crafted
/// packet can cause per lookup.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Location of the upper-layer header behind a chain of extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Upper {
    /// First header that is not an extension header, such as TCP, UDP, ICMPv6, ESP or
    /// no-next-header.
    pub protocol: IpProtocol,
    /// Offset in bytes of that header from the start of the IPv6 payload. For a fragment
    /// other than the first, the header itself is not in this packet and the offset points
    /// right after the fragment header.
    pub offset: usize,
    pub fragment: Option<Ipv6Fragment>,
    pub routing: Option<Ipv6Routing>,
}

/// Fields of a fragment header met on the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Fragment {
    /// Offset in bytes of this fragment's data within the original payload.
    pub offset: u16,
    /// Whether more fragments follow (the M flag).
    pub more: bool,
    pub ident: u32,
}

/// Fields of a routing header met on the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Routing {
    pub routing_type: u8,
    /// Number of route segments still to visit. Nonzero means the destination address is
    /// not the final one.
    pub segments_left: u8,
}

/// Walks the extension headers at the start of `payload`, an IPv6 payload whose first
/// header is `first`, to the first header that is not an extension header.
///
/// Hop-by-hop options, routing, destination options, fragment and authentication headers
/// are extension headers. The walk stops early at a fragment header with a nonzero offset,
/// because the headers behind it are in the first fragment only.
///
/// # Errors
///
/// - `Error::Truncated` if an extension header runs past the end of `payload`.
/// - `Error::ExtensionChainTooLong` if more than `MAX_EXTENSION_HEADERS` extension headers
///   precede the upper-layer header.
/// - `Error::BadExtensionHeader` if hop-by-hop options appear anywhere but first, or a
///   fragment or routing header appears twice.
pub fn walk_extension_headers(first: IpProtocol, payload: &[u8]) -> Result<Ipv6Upper, Error> {
    let mut upper = Ipv6Upper {
        protocol: first,
        offset: 0,
        fragment: None,
        routing: None,
    };
    let mut count = 0;

    while is_extension_header(upper.protocol) {
        if upper.protocol == IpProtocol::HopByHop && count > 0 {
            return Err(Error::BadExtensionHeader);
        }
        count += 1;
        if count > MAX_EXTENSION_HEADERS {
            return Err(Error::ExtensionChainTooLong);
        }

        let rest = &payload[upper.offset..];
        let header_len = extension_header_len(upper.protocol, rest)?;
        let header = &rest[..header_len];
        let next = IpProtocol::from(header[0]);

        match upper.protocol {
            IpProtocol::Ipv6Frag => {
                if upper.fragment.is_some() {
                    return Err(Error::BadExtensionHeader);
                }
                let view = Ipv6FragmentHeader::new_unchecked(header);
                let fragment = Ipv6Fragment {
                    offset: view.frag_offset(),
                    more: view.more_frags(),
                    ident: view.ident(),
                };
                upper.fragment = Some(fragment);
                if fragment.offset != 0 {
                    upper.protocol = next;
                    upper.offset += header_len;
                    return Ok(upper);
                }
            }
            IpProtocol::Ipv6Route => {
                if upper.routing.is_some() {
                    return Err(Error::BadExtensionHeader);
                }
                let view = Ipv6RoutingHeader::new_unchecked(header);
                upper.routing = Some(Ipv6Routing {
                    routing_type: view.routing_type(),
                    segments_left: view.segments_left(),
                });
            }
            _ => {}
        }

        upper.protocol = next;
        upper.offset += header_len;
    }

    Ok(upper)
}

fn is_extension_header(protocol: IpProtocol) -> bool {
    matches!(
        protocol,
        IpProtocol::HopByHop
            | IpProtocol::Ipv6Route
            | IpProtocol::Ipv6Opts
            | IpProtocol::Ipv6Frag
            | IpProtocol::Ah
    )
}

/// Returns the length in bytes of the extension header of type `protocol` at the start of
/// `rest`, after checking that `rest` contains all of it.
fn extension_header_len(protocol: IpProtocol, rest: &[u8]) -> Result<usize, Error> {
    let header_len = match protocol {
        IpProtocol::Ipv6Frag => Ipv6FragmentHeader::<&[u8]>::HEADER_LEN,
        _ => {
            let Some(&units) = rest.get(1) else {
                return Err(Error::Truncated);
            };
            if protocol == IpProtocol::Ah {
                (usize::from(units) + 2) * 4
            } else {
                (usize::from(units) + 1) * 8
            }
        }
    };
    if rest.len() < header_len {
        return Err(Error::Truncated);
    }
    Ok(header_len)
}

mod fragment_field {
    use crate::wire::Field;

    pub const NEXT_HEADER: usize = 0;
    pub const RESERVED: usize = 1;
    pub const OFFSET_FLAGS: Field = 2..4;
    pub const IDENT: Field = 4..8;
}

/// View of an IPv6 fragment header.
///
/// ```text
/// +---------------+---------------+-------------------------+--+-+
/// |  Next Header  |   Reserved    |     Fragment Offset     |Res|M|
/// +---------------+---------------+-------------------------+--+-+
/// |                        Identification                         |
/// +---------------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6FragmentHeader<T> {
    pub const HEADER_LEN: usize = fragment_field::IDENT.end;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than 8 bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6FragmentHeader { buffer }
    }

    /// Wraps `buffer` after checking that it contains a whole fragment header.
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

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[fragment_field::NEXT_HEADER])
    }

    /// Returns the fragment offset in bytes. The field counts 8-byte units in its top 13
    /// bits, so masking off the flag bits leaves the offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[fragment_field::OFFSET_FLAGS]) & 0xfff8
    }

    pub fn more_frags(&self) -> bool {
        read_u16(&self.buffer.as_ref()[fragment_field::OFFSET_FLAGS]) & 0x0001 != 0
    }

    pub fn ident(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[fragment_field::IDENT])
    }

    /// Returns the bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6FragmentHeader<T> {
    pub fn set_next_header(&mut self, next_header: IpProtocol) {
        self.buffer.as_mut()[fragment_field::NEXT_HEADER] = u8::from(next_header);
        self.buffer.as_mut()[fragment_field::RESERVED] = 0;
    }

    /// Sets the offset in bytes, rounded down to a multiple of 8, and the M flag.
    pub fn set_frag_offset_and_more(&mut self, offset: u16, more: bool) {
        let value = (offset & 0xfff8) | u16::from(more);
        self.buffer.as_mut()[fragment_field::OFFSET_FLAGS].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_ident(&mut self, ident: u32) {
        self.buffer.as_mut()[fragment_field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[Self::HEADER_LEN..]
    }
}

mod routing_field {
    pub const NEXT_HEADER: usize = 0;
    pub const LENGTH: usize = 1;
    pub const ROUTING_TYPE: usize = 2;
    pub const SEGMENTS_LEFT: usize = 3;
    pub const DATA: usize = 4;
}

/// View of an IPv6 routing header.
///
/// ```text
/// +---------------+---------------+---------------+---------------+
/// |  Next Header  |  Hdr Ext Len  | Routing Type  | Segments Left |
/// +---------------+---------------+---------------+---------------+
/// |                  type-specific data ...                       |
/// +---------------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6RoutingHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6RoutingHeader<T> {
    /// Length of the smallest routing header.
    pub const MIN_HEADER_LEN: usize = 8;

    /// Wraps `buffer` without checking it, so accessors panic if it is shorter than the
    /// header length the header declares.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6RoutingHeader { buffer }
    }

    /// Wraps `buffer` after checking that it contains the whole header.
    ///
    /// # Errors
    ///
    /// `Error::Truncated` if the buffer is shorter than 8 bytes or than the length in the
    /// Hdr Ext Len field.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks that no accessor can panic.
    ///
    /// # Errors
    ///
    /// As for `new_checked`.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_HEADER_LEN || len < self.header_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[routing_field::NEXT_HEADER])
    }

    /// Returns the header length in bytes, from the Hdr Ext Len field.
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[routing_field::LENGTH]) + 1) * 8
    }

    pub fn routing_type(&self) -> u8 {
        self.buffer.as_ref()[routing_field::ROUTING_TYPE]
    }

    pub fn segments_left(&self) -> u8 {
        self.buffer.as_ref()[routing_field::SEGMENTS_LEFT]
    }

    /// Returns the type-specific data after the first 4 bytes.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[routing_field::DATA..self.header_len()]
    }

    /// Returns the bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6RoutingHeader<T> {
    pub fn set_segments_left(&mut self, segments_left: u8) {
        self.buffer.as_mut()[routing_field::SEGMENTS_LEFT] = segments_left;
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    const UDP: u8 = 17;
    const TCP: u8 = 6;
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const AH: u8 = 51;
    const DEST_OPTS: u8 = 60;

    /// Hop-by-hop options of 8 bytes: next header, length 0, PadN of 4 bytes.
    fn hop_by_hop(next: u8) -> Vec<u8> {
        vec![next, 0, 0x01, 0x04, 0, 0, 0, 0]
    }

    /// Destination options of 16 bytes: length 1, PadN filling the rest.
    fn dest_opts(next: u8) -> Vec<u8> {
        let mut header = vec![next, 1, 0x01, 0x0c];
        header.resize(16, 0);
        header
    }

    /// Type 4 (segment routing) routing header of 24 bytes with 1 segment left.
    fn routing(next: u8) -> Vec<u8> {
        let mut header = vec![next, 2, 4, 1];
        header.resize(24, 0xee);
        header
    }

    fn fragment(next: u8, offset: u16, more: bool) -> Vec<u8> {
        let mut header = vec![next, 0];
        header.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        header.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        header
    }

    /// Authentication header with a 96-bit ICV: length field 4, (4 + 2) * 4 = 24 bytes.
    fn ah(next: u8) -> Vec<u8> {
        let mut header = vec![next, 4, 0, 0];
        header.resize(24, 0xaa);
        header
    }

    fn chain(headers: &[Vec<u8>], upper: &[u8]) -> Vec<u8> {
        let mut payload: Vec<u8> = headers.concat();
        payload.extend_from_slice(upper);
        payload
    }

    const UDP_HEADER: [u8; 8] = [0x04, 0xd2, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00];

    #[test]
    fn walk_without_extension_headers() {
        let upper = walk_extension_headers(IpProtocol::Udp, &UDP_HEADER).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Udp);
        assert_eq!(upper.offset, 0);
        assert_eq!(upper.fragment, None);
        assert_eq!(upper.routing, None);
    }

    #[test]
    fn walk_full_chain_to_udp() {
        let payload = chain(
            &[
                hop_by_hop(DEST_OPTS),
                dest_opts(ROUTING),
                routing(FRAGMENT),
                fragment(AH, 0, true),
                ah(UDP),
            ],
            &UDP_HEADER,
        );
        let upper = walk_extension_headers(IpProtocol::HopByHop, &payload).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Udp);
        assert_eq!(upper.offset, 8 + 16 + 24 + 8 + 24);
        assert_eq!(&payload[upper.offset..], &UDP_HEADER);
        let expected_fragment = Ipv6Fragment {
            offset: 0,
            more: true,
            ident: 0xdead_beef,
        };
        assert_eq!(upper.fragment, Some(expected_fragment));
        let expected_routing = Ipv6Routing {
            routing_type: 4,
            segments_left: 1,
        };
        assert_eq!(upper.routing, Some(expected_routing));
    }

    #[test]
    fn walk_ah_length_counts_four_byte_units() {
        // Length field 1 means (1 + 2) * 4 = 12 bytes, not the (1 + 1) * 8 of other headers.
        let mut header = vec![TCP, 1, 0, 0];
        header.resize(12, 0);
        let payload = chain(&[header], &[0u8; 20]);
        let upper = walk_extension_headers(IpProtocol::Ah, &payload).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Tcp);
        assert_eq!(upper.offset, 12);

        let payload = chain(&[ah(TCP)], &[0u8; 20]);
        let upper = walk_extension_headers(IpProtocol::Ah, &payload).unwrap();
        assert_eq!(upper.offset, 24);
    }

    #[test]
    fn walk_stops_at_non_first_fragment() {
        let payload = chain(
            &[dest_opts(FRAGMENT), fragment(TCP, 1232, false)],
            &[0xab; 16],
        );
        let upper = walk_extension_headers(IpProtocol::Ipv6Opts, &payload).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Tcp);
        assert_eq!(upper.offset, 24);
        let expected = Ipv6Fragment {
            offset: 1232,
            more: false,
            ident: 0xdead_beef,
        };
        assert_eq!(upper.fragment, Some(expected));
    }

    #[test]
    fn walk_non_first_fragment_hides_later_headers() {
        // The bytes after a non-first fragment header are data, even if they would parse as
        // a header, so the walk must not follow them.
        let payload = chain(&[fragment(DEST_OPTS, 8, true)], &[0xff; 4]);
        let upper = walk_extension_headers(IpProtocol::Ipv6Frag, &payload).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Ipv6Opts);
        assert_eq!(upper.offset, 8);
    }

    #[test]
    fn walk_stops_at_terminal_protocols() {
        for next in [50u8, 58, 59, 253] {
            let payload = dest_opts(next);
            let upper = walk_extension_headers(IpProtocol::Ipv6Opts, &payload).unwrap();
            assert_eq!(upper.protocol, IpProtocol::from(next), "next header {next}");
            assert_eq!(upper.offset, 16);
        }
    }

    #[test]
    fn walk_allows_empty_upper_layer() {
        let payload = hop_by_hop(59);
        let upper = walk_extension_headers(IpProtocol::HopByHop, &payload).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Ipv6NoNxt);
        assert_eq!(upper.offset, payload.len());
    }

    #[test]
    fn walk_rejects_hop_by_hop_after_first() {
        let payload = chain(&[dest_opts(HOP_BY_HOP), hop_by_hop(UDP)], &UDP_HEADER);
        let result = walk_extension_headers(IpProtocol::Ipv6Opts, &payload);
        assert_eq!(result, Err(Error::BadExtensionHeader));
    }

    #[test]
    fn walk_rejects_second_fragment_header() {
        let payload = chain(&[fragment(FRAGMENT, 0, true), fragment(UDP, 0, true)], &[]);
        let result = walk_extension_headers(IpProtocol::Ipv6Frag, &payload);
        assert_eq!(result, Err(Error::BadExtensionHeader));
    }

    #[test]
    fn walk_rejects_second_routing_header() {
        let payload = chain(&[routing(ROUTING), routing(UDP)], &UDP_HEADER);
        let result = walk_extension_headers(IpProtocol::Ipv6Route, &payload);
        assert_eq!(result, Err(Error::BadExtensionHeader));
    }

    #[test]
    fn walk_chain_limit() {
        let at_limit: Vec<Vec<u8>> = (0..MAX_EXTENSION_HEADERS)
            .map(|i| {
                let last = i + 1 == MAX_EXTENSION_HEADERS;
                dest_opts(if last { UDP } else { DEST_OPTS })
            })
            .collect();
        let payload = chain(&at_limit, &UDP_HEADER);
        let upper = walk_extension_headers(IpProtocol::Ipv6Opts, &payload).unwrap();
        assert_eq!(upper.protocol, IpProtocol::Udp);
        assert_eq!(upper.offset, 16 * MAX_EXTENSION_HEADERS);

        let over_limit: Vec<Vec<u8>> = (0..=MAX_EXTENSION_HEADERS)
            .map(|_| dest_opts(DEST_OPTS))
            .collect();
        let payload = chain(&over_limit, &UDP_HEADER);
        let result = walk_extension_headers(IpProtocol::Ipv6Opts, &payload);
        assert_eq!(result, Err(Error::ExtensionChainTooLong));
    }

    #[test]
    fn walk_truncated_headers() {
        let cases: [(&str, IpProtocol, Vec<u8>); 6] = [
            ("empty hop-by-hop", IpProtocol::HopByHop, vec![]),
            ("one byte", IpProtocol::Ipv6Opts, vec![UDP]),
            (
                "short options",
                IpProtocol::Ipv6Opts,
                dest_opts(UDP)[..15].to_vec(),
            ),
            (
                "short fragment",
                IpProtocol::Ipv6Frag,
                fragment(UDP, 0, false)[..7].to_vec(),
            ),
            ("short AH", IpProtocol::Ah, ah(UDP)[..23].to_vec()),
            (
                "second header missing",
                IpProtocol::HopByHop,
                hop_by_hop(ROUTING),
            ),
        ];
        for (name, first, payload) in cases {
            let result = walk_extension_headers(first, &payload);
            assert_eq!(result, Err(Error::Truncated), "{name}");
        }
    }

    #[test]
    fn fragment_header_view() {
        let bytes = chain(&[fragment(UDP, 2960, true)], &[1, 2]);
        let header = Ipv6FragmentHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(header.next_header(), IpProtocol::Udp);
        assert_eq!(header.frag_offset(), 2960);
        assert!(header.more_frags());
        assert_eq!(header.ident(), 0xdead_beef);
        assert_eq!(header.payload(), &[1, 2]);

        let mut written = [0xffu8; 8];
        let mut view = Ipv6FragmentHeader::new_unchecked(&mut written[..]);
        view.set_next_header(IpProtocol::Udp);
        view.set_frag_offset_and_more(2960, true);
        view.set_ident(0xdead_beef);
        assert_eq!(written[..], bytes[..8]);

        let result = Ipv6FragmentHeader::new_checked(&bytes[..7]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    #[test]
    fn routing_header_view() {
        let bytes = chain(&[routing(UDP)], &[9]);
        let mut header = Ipv6RoutingHeader::new_checked(bytes.clone()).unwrap();
        assert_eq!(header.next_header(), IpProtocol::Udp);
        assert_eq!(header.header_len(), 24);
        assert_eq!(header.routing_type(), 4);
        assert_eq!(header.segments_left(), 1);
        assert_eq!(header.data(), &[0xee; 20]);
        assert_eq!(header.payload(), &[9]);
        header.set_segments_left(0);
        assert_eq!(header.segments_left(), 0);

        let result = Ipv6RoutingHeader::new_checked(&bytes[..23]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
        let result = Ipv6RoutingHeader::new_checked(&bytes[..7]);
        assert_eq!(result.unwrap_err(), Error::Truncated);
    }

    proptest! {
        #[test]
        fn walk_never_panics(first in any::<u8>(), payload in vec(any::<u8>(), 0..128)) {
            if let Ok(upper) = walk_extension_headers(IpProtocol::from(first), &payload) {
                prop_assert!(upper.offset <= payload.len());
                prop_assert!(!is_extension_header(upper.protocol) || upper.fragment.is_some());
            }
        }

        #[test]
        fn walk_never_panics_on_extension_chains(
            nexts in vec(prop::sample::select(vec![0u8, 6, 17, 43, 44, 51, 58, 59, 60]), 1..12),
            lengths in vec(0u8..4, 12),
            truncate in 0usize..200,
        ) {
            let mut payload = Vec::new();
            for (i, pair) in nexts.windows(2).enumerate() {
                let (kind, next) = (pair[0], pair[1]);
                let len = match kind {
                    44 => 8,
                    51 => (usize::from(lengths[i]) + 2) * 4,
                    _ => (usize::from(lengths[i]) + 1) * 8,
                };
                let mut header = vec![next, lengths[i]];
                header.resize(len, 0);
                payload.extend_from_slice(&header);
            }
            payload.truncate(truncate);
            let _ = walk_extension_headers(IpProtocol::from(nexts[0]), &payload);
        }

        #[test]
        fn extension_views_never_panic(bytes in vec(any::<u8>(), 0..48)) {
            if let Ok(header) = Ipv6FragmentHeader::new_checked(&bytes[..]) {
                let _ = (header.next_header(), header.frag_offset(), header.more_frags());
                let _ = (header.ident(), header.payload());
            }
            if let Ok(header) = Ipv6RoutingHeader::new_checked(&bytes[..]) {
                let _ = (header.next_header(), header.header_len(), header.routing_type());
                let _ = (header.segments_left(), header.data(), header.payload());
            }
        }
    }
}
