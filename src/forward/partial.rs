//! Partial TCP/UDP checksums, completed before a packet is forwarded.
//!
//! A sender on the same host as its first link (a veth, a container, a VM's tap) hands TCP
//! and UDP packets over with `CHECKSUM_PARTIAL`: the checksum field holds only the sum of
//! the pseudo-header (addresses, protocol, upper-layer length; folded, not complemented),
//! and whoever puts the packet on a real wire is to add the segment and complement it. The
//! kernel carries that promise in the skb; AF_XDP hands fastlb the bytes without it, and a
//! receiver that gets them as they are drops them (`TcpInCsumErrors`). IPVS, which sees the
//! flag, updates such a field as the partial sum it is (`tcp_partial_csum_update`) and lets
//! the device finish it; fastlb's frames leave without the flag, so it finishes them.
//!
//! **Recognising one.** The field of a partial checksum equals the pseudo-header sum
//! computed from the packet's own IP header; a complete checksum equals it only by chance
//! (one value in 65 535). Completing means summing the segment as it stands, the field
//! included, and writing the complement: over a partial field that is exactly the full
//! checksum. Over a valid complete checksum that happens to equal the pseudo-header sum it
//! gives back the same value (the field is then both the partial sum and the answer; see
//! `docs/decisions.md` for the arithmetic), so the chance match costs a sum, never a wrong
//! byte. A UDP checksum of 0 over IPv4 ("none") never matches: a pseudo-header sum is never
//! 0. A completed checksum of 0 is written 0xffff, as the kernel's `skb_checksum_help`
//! does for every protocol (0 means "none" to UDP; to TCP both are the same number).
//!
//! The check costs a bounds check, the pseudo-header sum (one 64-bit load for IPv4's two
//! addresses, four for IPv6's) and a compare per forwarded TCP/UDP packet, about 60
//! instructions in all (`docs/performance.md`); only a match pays for the sum over the
//! segment. ICMP needs nothing: the kernel computes ICMP and ICMPv6
//! checksums in full, never partially.

use crate::wire::{checksum, ip_proto, tcp, udp, IpInfo, IpVersion, Parsed};

/// Offset of the addresses in an IPv4 header: source and destination, 8 bytes.
const IPV4_ADDRS: usize = 12;
/// Offset of the addresses in an IPv6 header: source and destination, 32 bytes.
const IPV6_ADDRS: usize = 8;

/// Completes the TCP or UDP checksum of the packet in `frame` (`ip` is `p.ip`) if its field
/// holds only the pseudo-header sum, and says whether it did. Anything else (ICMP, another
/// protocol, a fragment, bytes shorter than `p` says) is left alone.
///
/// Call it once per forwarded packet, before any incremental checksum update: an update
/// applied to a partial sum moves it the wrong way.
#[inline(always)]
pub fn complete(frame: &mut [u8], p: &Parsed, ip: &IpInfo) -> bool {
    // The protocol byte, not `ip.l4`: one load. A TCP or UDP packet that is not a fragment
    // parsed with its whole header (else it would not have parsed); a fragment has not all
    // of the segment (the first) or no header here (a later one).
    let field = match ip.protocol {
        ip_proto::TCP => tcp::CHECKSUM_OFFSET,
        ip_proto::UDP => udp::CHECKSUM_OFFSET,
        _ => return false,
    };
    if ip.fragment {
        return false;
    }
    let l3 = p.l3_offset;
    let l4 = ip.l4_offset;
    let end = l3 + ip.len;
    let length = end.wrapping_sub(l4) as u32;
    let pseudo = match ip.version {
        IpVersion::V4 => match frame.get(l3 + IPV4_ADDRS..).and_then(<[u8]>::first_chunk) {
            Some(a) => checksum::pseudo_header_at::<8>(a, ip.protocol, length),
            None => return false,
        },
        IpVersion::V6 => match frame.get(l3 + IPV6_ADDRS..).and_then(<[u8]>::first_chunk) {
            Some(a) => checksum::pseudo_header_at::<32>(a, ip.protocol, length),
            None => return false,
        },
    };
    match frame.get(l4 + field..l4 + field + 2) {
        Some(&[hi, lo]) if u16::from_be_bytes([hi, lo]) == pseudo => {}
        _ => return false,
    }
    finish(frame, l4, end, field)
}

/// Sums the segment `frame[l4..end]` with the partial sum in its field (at `field` in it)
/// and writes the complement; false, changing nothing, when the frame is shorter or the
/// field is not in the segment.
#[inline(never)]
fn finish(frame: &mut [u8], l4: usize, end: usize, field: usize) -> bool {
    let Some(segment) = frame.get_mut(l4..end) else {
        return false;
    };
    if field + 2 > segment.len() {
        return false;
    }
    let c = match checksum::checksum(segment) {
        0 => 0xffff,
        c => c,
    };
    segment[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_frame;
    use crate::wire::testkit::{assert_checksums, Spec, L4};
    use crate::wire::L4Info;
    use proptest::prelude::*;
    use std::net::IpAddr;

    /// Offset of the L4 checksum field in a TCP or UDP frame.
    fn field_at(f: &[u8]) -> usize {
        let p = parse_frame(f).unwrap();
        let ip = p.ip.unwrap();
        ip.l4_offset
            + match ip.l4 {
                L4Info::Tcp { .. } => 16,
                _ => 6,
            }
    }

    /// The pseudo-header sum of a frame, computed from its addresses (the slow form).
    fn pseudo(f: &[u8]) -> u16 {
        let p = parse_frame(f).unwrap();
        let ip = p.ip.unwrap();
        let len = (p.l3_offset + ip.len - ip.l4_offset) as u32;
        checksum::pseudo_header(&ip.src, &ip.dst, ip.protocol, len)
    }

    /// Makes the checksum of a frame partial, as a sender with offload leaves it.
    fn make_partial(f: &mut [u8]) {
        let at = field_at(f);
        let ph = pseudo(f);
        f[at..at + 2].copy_from_slice(&ph.to_be_bytes());
    }

    fn run(f: &mut [u8]) -> bool {
        let p = parse_frame(f).unwrap();
        complete(f, &p, p.ip.as_ref().unwrap())
    }

    fn addr(v6: bool, b: [u8; 16]) -> IpAddr {
        if v6 {
            IpAddr::V6(b.into())
        } else {
            IpAddr::V4([b[0], b[1], b[2], b[3]].into())
        }
    }

    fn spec(v6: bool, a: [u8; 16], b: [u8; 16], udp: bool, payload: Vec<u8>) -> Spec {
        let mut s = Spec::tcp("10.0.0.1", "10.0.0.2", 40000, 80);
        s.src = addr(v6, a);
        s.dst = addr(v6, b);
        s.payload = payload;
        if udp {
            s.l4 = L4::Udp {
                sport: 40000,
                dport: 53,
            };
        }
        s
    }

    #[test]
    fn tcp_and_udp_v4_and_v6_partial_become_complete() {
        for (src, dst) in [
            ("198.51.100.7", "192.0.2.10"),
            ("2001:db8::7", "2001:db8::10"),
        ] {
            for mut s in [Spec::tcp(src, dst, 1, 80), Spec::udp(src, dst, 1, 53)] {
                s.vlan = Some(9);
                let good = s.frame();
                let mut f = good.clone();
                make_partial(&mut f);
                assert_ne!(f, good);
                assert!(run(&mut f));
                assert_eq!(f, good, "{src} {:?}", s.l4);
                assert_checksums(&f);
            }
        }
    }

    #[test]
    fn udp_v4_without_checksum_stays_without() {
        let mut f = Spec::udp("198.51.100.7", "192.0.2.10", 1000, 53).frame();
        let at = field_at(&f);
        f[at..at + 2].fill(0);
        let before = f.clone();
        assert!(!run(&mut f));
        assert_eq!(f, before);
    }

    #[test]
    fn icmp_fragments_and_other_frames_are_left_alone() {
        let mut s = Spec::tcp("198.51.100.7", "192.0.2.10", 1, 80);
        s.l4 = L4::Icmp {
            ty: 8,
            code: 0,
            rest: [0; 4],
        };
        let mut f = s.frame();
        let before = f.clone();
        assert!(!run(&mut f));
        assert_eq!(f, before);

        // A first fragment (MF): its checksum covers bytes that are not here.
        let mut f = Spec::tcp("198.51.100.7", "192.0.2.10", 1, 80).frame();
        make_partial(&mut f);
        f[14 + 6] |= 0x20;
        let c = checksum::ipv4_header(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let before = f.clone();
        assert!(parse_frame(&f).unwrap().ip.unwrap().fragment);
        assert!(!run(&mut f));
        assert_eq!(f, before);
    }

    /// A frame of `s` whose segment, the checksum field taken as 0, sums to
    /// `target(pseudo-header sum)`: the last payload word is chosen for it.
    fn frame_with_segment_sum(mut s: Spec, target: impl Fn(u16) -> u16) -> Vec<u8> {
        if s.payload.len() % 2 == 1 {
            s.payload.push(0);
        }
        s.payload.extend_from_slice(&[0, 0]);
        let f = s.frame();
        let p = parse_frame(&f).unwrap();
        let ip = p.ip.unwrap();
        let mut seg = f[ip.l4_offset..p.l3_offset + ip.len].to_vec();
        let field = field_at(&f) - ip.l4_offset;
        seg[field..field + 2].fill(0);
        let x = checksum::combine(target(pseudo(&f)), !checksum::sum(&seg));
        let n = s.payload.len();
        s.payload[n - 2..].copy_from_slice(&x.to_be_bytes());
        s.frame()
    }

    fn checksum_of(f: &[u8]) -> u16 {
        let at = field_at(f);
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    /// A completed checksum that comes out 0 is written 0xffff (both verify; UDP needs it).
    #[test]
    fn a_completed_zero_is_written_ffff() {
        for (src, dst) in [
            ("198.51.100.7", "192.0.2.10"),
            ("2001:db8::7", "2001:db8::10"),
        ] {
            for s in [Spec::tcp(src, dst, 1, 80), Spec::udp(src, dst, 1, 53)] {
                // Segment sum ~P: the full checksum ~(P + ~P) is 0.
                let mut f = frame_with_segment_sum(s, |ph| !ph);
                make_partial(&mut f);
                assert!(run(&mut f));
                assert_eq!(checksum_of(&f), 0xffff);
                assert_checksums_loose(&f);
            }
        }
    }

    /// Whether the L4 checksum verifies by summing (0 and 0xffff are the same number).
    fn assert_checksums_loose(f: &[u8]) {
        let p = parse_frame(f).unwrap();
        let ip = p.ip.unwrap();
        let seg = &f[ip.l4_offset..p.l3_offset + ip.len];
        let len = seg.len() as u32;
        let total = checksum::combine(
            checksum::pseudo_header(&ip.src, &ip.dst, ip.protocol, len),
            checksum::sum(seg),
        );
        assert_eq!(total, 0xffff, "L4 checksum verifies");
    }

    proptest! {
        // A partial field completed is the full recompute (0 written as 0xffff).
        #[test]
        fn partial_completed_equals_full_recompute(
            v6 in any::<bool>(), a in any::<[u8; 16]>(), b in any::<[u8; 16]>(),
            udp in any::<bool>(), vlan in proptest::option::of(0u16..4095),
            payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut s = spec(v6, a, b, udp, payload);
            s.vlan = vlan;
            let good = s.frame();
            let mut f = good.clone();
            make_partial(&mut f);
            prop_assert!(run(&mut f));
            let at = field_at(&f);
            let full = u16::from_be_bytes([good[at], good[at + 1]]);
            let want = if full == 0 { 0xffff } else { full };
            prop_assert_eq!(u16::from_be_bytes([f[at], f[at + 1]]), want);
            prop_assert_eq!(&f[..at], &good[..at]);
            prop_assert_eq!(&f[at + 2..], &good[at + 2..]);
            assert_checksums_loose(&f);
        }

        // A complete checksum is left byte for byte.
        #[test]
        fn complete_checksum_is_left_alone(
            v6 in any::<bool>(), a in any::<[u8; 16]>(), b in any::<[u8; 16]>(),
            udp in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut f = spec(v6, a, b, udp, payload).frame();
            let before = f.clone();
            let matched = run(&mut f);
            prop_assert_eq!(&f, &before);
            // Only a chance match runs the sum, and it changes nothing either.
            let at = field_at(&f);
            prop_assert_eq!(matched, u16::from_be_bytes([f[at], f[at + 1]]) == pseudo(&f));
        }

        // The chance match, made to happen: a valid complete checksum equal to the
        // pseudo-header sum is "completed" to itself, byte for byte.
        #[test]
        fn complete_checksum_equal_to_the_pseudo_header_sum_is_left_alone(
            v6 in any::<bool>(), a in any::<[u8; 16]>(), b in any::<[u8; 16]>(),
            udp in any::<bool>(), payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            // Segment sum ~P + ~P: the checksum ~(P + ~P + ~P) is P.
            let mut f = frame_with_segment_sum(spec(v6, a, b, udp, payload), |ph| {
                checksum::combine(!ph, !ph)
            });
            // (Not when P is 0xffff: the sender then writes 0, the other zero.)
            prop_assume!(checksum_of(&f) == pseudo(&f));
            assert_checksums(&f);
            let before = f.clone();
            prop_assert!(run(&mut f));
            prop_assert_eq!(&f, &before);
        }
    }
}
