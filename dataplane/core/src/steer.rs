//! Which frames are IP fragments, decided from raw header bytes before a worker takes
//! them.
//!
//! A worker's fragment table and held fragments are its own, so every fragment of a
//! datagram must reach the same worker. The NIC's receive hash does not ensure that: a
//! fragment redirected by another Spike node arrives as VXLAN and is spread by its
//! outer UDP header, while a fragment received directly is spread by its own
//! addresses. The dataplane therefore hands every fragment to one worker, and
//! [`is_fragment`] is the test it runs on every received frame. It reads only the
//! bytes it needs, never allocates and never panics. A frame too short or malformed to
//! tell is not a fragment, so the worker that received it drops or passes it on as usual.

use crate::wire::ipv6_ext::MAX_EXTENSION_HEADERS;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERNET_LEN: usize = 14;
const VLAN_LEN: usize = 4;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const VXLAN_LEN: usize = 8;
const PROTOCOL_UDP: u8 = 17;
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_AUTHENTICATION: u8 = 51;
const NEXT_DESTINATION: u8 = 60;
/// The VXLAN flag that marks the VNI field as valid.
const VXLAN_FLAG_VNI: u8 = 0x08;
/// Mask of the IPv4 more-fragments flag and fragment offset.
const IPV4_FRAGMENT_BITS: u16 = 0x3fff;

/// The VXLAN packets that carry fragments redirected by other Spike nodes: UDP
/// destination port and VNI, from `vxlan.port` and `cluster.redirect_vni`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectMatch {
    pub port: u16,
    pub vni: u32,
}

/// Returns true when `frame` (an Ethernet frame, optionally with one VLAN tag) contains an
/// IPv4 packet with the more-fragments flag or a non-zero offset, or an IPv6 packet with
/// a fragment header. With `redirect`, an unfragmented VXLAN packet to that port and VNI
/// counts by the packet it carries.
#[inline]
pub fn is_fragment(frame: &[u8], redirect: Option<RedirectMatch>) -> bool {
    match ip_start(frame) {
        Some((ETHERTYPE_IPV4, start)) => ipv4_is_fragment(frame, start, redirect),
        Some((ETHERTYPE_IPV6, start)) => ipv6_is_fragment(frame, start, redirect),
        _ => false,
    }
}

/// Returns the ethertype behind at most one VLAN tag and where its header starts.
#[inline]
fn ip_start(frame: &[u8]) -> Option<(u16, usize)> {
    let ethertype = read_u16(frame, 12)?;
    if ethertype == ETHERTYPE_VLAN {
        Some((read_u16(frame, ETHERNET_LEN + 2)?, ETHERNET_LEN + VLAN_LEN))
    } else {
        Some((ethertype, ETHERNET_LEN))
    }
}

#[inline]
fn ipv4_is_fragment(frame: &[u8], start: usize, redirect: Option<RedirectMatch>) -> bool {
    let Some(flags_offset) = read_u16(frame, start + 6) else {
        return false;
    };
    if flags_offset & IPV4_FRAGMENT_BITS != 0 {
        return true;
    }
    let (Some(redirect), Some(&version_ihl), Some(&protocol)) =
        (redirect, frame.get(start), frame.get(start + 9))
    else {
        return false;
    };
    if protocol != PROTOCOL_UDP || version_ihl >> 4 != 4 {
        return false;
    }
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    header_len >= 20 && carries_fragment(frame, start + header_len, redirect)
}

#[inline]
fn ipv6_is_fragment(frame: &[u8], start: usize, redirect: Option<RedirectMatch>) -> bool {
    let Some(&first) = frame.get(start + 6) else {
        return false;
    };
    let mut next = first;
    let mut offset = start + IPV6_LEN;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            NEXT_FRAGMENT => return true,
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DESTINATION | NEXT_AUTHENTICATION => {
                let (Some(&following), Some(&units)) = (frame.get(offset), frame.get(offset + 1))
                else {
                    return false;
                };
                let len = if next == NEXT_AUTHENTICATION {
                    (usize::from(units) + 2) * 4
                } else {
                    (usize::from(units) + 1) * 8
                };
                next = following;
                offset += len;
            }
            PROTOCOL_UDP => {
                return redirect.is_some_and(|redirect| carries_fragment(frame, offset, redirect))
            }
            _ => return false,
        }
    }
    false
}

/// Returns true when the UDP datagram at `udp` is a redirect VXLAN packet whose inner
/// Ethernet frame contains a fragment. The inner frame is not looked into further for
/// VXLAN: a redirect is never redirected again.
#[inline]
fn carries_fragment(frame: &[u8], udp: usize, redirect: RedirectMatch) -> bool {
    if read_u16(frame, udp + 2) != Some(redirect.port) {
        return false;
    }
    let vxlan = udp + UDP_LEN;
    let (Some(&flags), Some(vni)) = (frame.get(vxlan), read_u32(frame, vxlan + 4)) else {
        return false;
    };
    if flags & VXLAN_FLAG_VNI == 0 || vni >> 8 != redirect.vni {
        return false;
    }
    let inner = frame.get(vxlan + VXLAN_LEN..).unwrap_or_default();
    is_fragment(inner, None)
}

#[inline]
fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

#[inline]
fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let quad = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIRECT: RedirectMatch = RedirectMatch {
        port: 4789,
        vni: 0x00ab_cdef,
    };

    fn ethernet(ethertype: u16) -> Vec<u8> {
        let mut frame = vec![0x02; 12];
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame
    }

    /// Builds an IPv4 header with `flags_offset` and `protocol`, then `payload`.
    fn ipv4(flags_offset: u16, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut packet = vec![0x45, 0];
        packet.extend_from_slice(&total.to_be_bytes());
        packet.extend_from_slice(&[0x12, 0x34]);
        packet.extend_from_slice(&flags_offset.to_be_bytes());
        packet.extend_from_slice(&[64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        packet.extend_from_slice(payload);
        packet
    }

    /// Builds an IPv6 header whose next header is `next`, then `payload`.
    fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x60, 0, 0, 0];
        packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        packet.extend_from_slice(&[next, 64]);
        packet.extend_from_slice(&[0x20; 32]);
        packet.extend_from_slice(payload);
        packet
    }

    fn udp(dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut datagram = vec![0x30, 0x39];
        datagram.extend_from_slice(&dst_port.to_be_bytes());
        datagram.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        datagram.extend_from_slice(&[0, 0]);
        datagram.extend_from_slice(payload);
        datagram
    }

    fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut header = vec![VXLAN_FLAG_VNI, 0, 0, 0];
        header.extend_from_slice(&(vni << 8).to_be_bytes());
        header.extend_from_slice(inner);
        header
    }

    fn frame(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut frame = ethernet(ethertype);
        frame.extend_from_slice(l3);
        frame
    }

    /// Builds a redirect VXLAN packet over outer IPv`outer` (4 or 6) that carries an
    /// inner IPv4 packet with `flags_offset`.
    fn redirected_ipv4(outer: u8, vni: u32, port: u16, flags_offset: u16) -> Vec<u8> {
        let inner = frame(ETHERTYPE_IPV4, &ipv4(flags_offset, 6, &[0; 24]));
        let datagram = udp(port, &vxlan(vni, &inner));
        if outer == 4 {
            frame(ETHERTYPE_IPV4, &ipv4(0x4000, PROTOCOL_UDP, &datagram))
        } else {
            frame(ETHERTYPE_IPV6, &ipv6(PROTOCOL_UDP, &datagram))
        }
    }

    #[test]
    fn ipv4_flag_or_offset_is_fragment() {
        assert!(is_fragment(
            &frame(ETHERTYPE_IPV4, &ipv4(0x2000, 17, &[0; 8])),
            None
        ));
        assert!(is_fragment(
            &frame(ETHERTYPE_IPV4, &ipv4(0x00b9, 17, &[0; 8])),
            None
        ));
        assert!(is_fragment(
            &frame(ETHERTYPE_IPV4, &ipv4(0x0001, 6, &[])),
            None
        ));
    }

    #[test]
    fn ipv4_whole_packet_not_fragment() {
        assert!(!is_fragment(
            &frame(ETHERTYPE_IPV4, &ipv4(0x4000, 6, &[0; 20])),
            None
        ));
        assert!(!is_fragment(
            &frame(ETHERTYPE_IPV4, &ipv4(0, 17, &[0; 8])),
            None
        ));
    }

    #[test]
    fn vlan_tagged_fragment_is_a_fragment() {
        let mut tagged = ethernet(ETHERTYPE_VLAN);
        tagged.extend_from_slice(&[0x00, 0x64, 0x08, 0x00]);
        tagged.extend_from_slice(&ipv4(0x2000, 17, &[0; 8]));
        assert!(is_fragment(&tagged, None));
        tagged[ETHERNET_LEN + VLAN_LEN + 6] = 0;
        assert!(!is_fragment(&tagged, None));
    }

    #[test]
    fn ipv6_fragment_behind_extension_headers() {
        let fragment_header = [6, 0, 0, 1, 0, 0, 0, 7];
        assert!(is_fragment(
            &frame(ETHERTYPE_IPV6, &ipv6(NEXT_FRAGMENT, &fragment_header)),
            None
        ));
        // Hop-by-hop (8 bytes), destination options (16 bytes), then the fragment header.
        let mut chain = vec![NEXT_DESTINATION, 0, 0, 0, 0, 0, 0, 0];
        chain.extend_from_slice(&[NEXT_FRAGMENT, 1]);
        chain.extend_from_slice(&[0; 14]);
        chain.extend_from_slice(&fragment_header);
        assert!(is_fragment(
            &frame(ETHERTYPE_IPV6, &ipv6(NEXT_HOP_BY_HOP, &chain)),
            None
        ));
    }

    #[test]
    fn ipv6_without_fragment_header_is_not_a_fragment() {
        assert!(!is_fragment(
            &frame(ETHERTYPE_IPV6, &ipv6(6, &[0; 20])),
            None
        ));
        let options = [6, 0, 0, 0, 0, 0, 0, 0];
        assert!(!is_fragment(
            &frame(ETHERTYPE_IPV6, &ipv6(NEXT_HOP_BY_HOP, &options)),
            None
        ));
    }

    #[test]
    fn ipv6_overlong_chain_not_fragment() {
        let mut chain = Vec::new();
        for _ in 0..MAX_EXTENSION_HEADERS {
            chain.extend_from_slice(&[NEXT_DESTINATION, 0, 0, 0, 0, 0, 0, 0]);
        }
        let last = chain.len() - 8;
        chain[last] = NEXT_FRAGMENT;
        chain.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 7]);
        let packet = frame(ETHERTYPE_IPV6, &ipv6(NEXT_DESTINATION, &chain));
        assert!(!is_fragment(&packet, None));
    }

    #[test]
    fn redirect_vxlan_counts_by_its_inner_packet() {
        for outer in [4, 6] {
            let redirected = redirected_ipv4(outer, REDIRECT.vni, REDIRECT.port, 0x2000);
            assert!(is_fragment(&redirected, Some(REDIRECT)), "outer IPv{outer}");
            assert!(
                !is_fragment(&redirected, None),
                "outer IPv{outer} without a cluster"
            );
            let whole = redirected_ipv4(outer, REDIRECT.vni, REDIRECT.port, 0x4000);
            assert!(
                !is_fragment(&whole, Some(REDIRECT)),
                "outer IPv{outer}, whole inner"
            );
        }
    }

    #[test]
    fn vxlan_other_port_or_vni() {
        let other_vni = redirected_ipv4(4, REDIRECT.vni + 1, REDIRECT.port, 0x2000);
        assert!(!is_fragment(&other_vni, Some(REDIRECT)));
        let other_port = redirected_ipv4(4, REDIRECT.vni, REDIRECT.port + 1, 0x2000);
        assert!(!is_fragment(&other_port, Some(REDIRECT)));
        let mut no_vni_flag = redirected_ipv4(4, REDIRECT.vni, REDIRECT.port, 0x2000);
        no_vni_flag[ETHERNET_LEN + 20 + UDP_LEN] = 0;
        assert!(!is_fragment(&no_vni_flag, Some(REDIRECT)));
    }

    #[test]
    fn non_ip_frames_are_not_fragments() {
        let arp = frame(0x0806, &[0; 28]);
        assert!(!is_fragment(&arp, Some(REDIRECT)));
        assert!(!is_fragment(&[], Some(REDIRECT)));
    }

    #[test]
    fn truncated_frames_never_panic() {
        let frames = [
            redirected_ipv4(4, REDIRECT.vni, REDIRECT.port, 0x2000),
            redirected_ipv4(6, REDIRECT.vni, REDIRECT.port, 0x2000),
            frame(
                ETHERTYPE_IPV6,
                &ipv6(NEXT_HOP_BY_HOP, &[NEXT_AUTHENTICATION, 0xff]),
            ),
            frame(ETHERTYPE_IPV4, &ipv4(0, PROTOCOL_UDP, &[0xff; 4])),
        ];
        for full in &frames {
            for len in 0..=full.len() {
                let cut = &full[..len];
                let decided = is_fragment(cut, Some(REDIRECT));
                // A cut before the fragment bits cannot be a fragment.
                if len < ETHERNET_LEN + 8 {
                    assert!(!decided, "{len}-byte cut decided as a fragment");
                }
            }
        }
        // Header lengths at their largest values must not overflow an offset.
        let mut wild = frame(ETHERTYPE_IPV4, &ipv4(0, PROTOCOL_UDP, &[0xff; 64]));
        wild[ETHERNET_LEN] = 0x4f;
        assert!(!is_fragment(&wild, Some(REDIRECT)));
        let mut short_ihl = frame(ETHERTYPE_IPV4, &ipv4(0, PROTOCOL_UDP, &[0xff; 64]));
        short_ihl[ETHERNET_LEN] = 0x41;
        assert!(!is_fragment(&short_ihl, Some(REDIRECT)));
    }
}
