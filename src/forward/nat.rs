//! LVS-NAT (masquerading): destination NAT on the way in, source NAT on the reply.
//!
//! As `ip_vs_nat_xmit` + the protocols' `dnat_handler` (and `handle_response` +
//! `snat_handler` for replies): the address changes in the IP header, the port in the
//! TCP/UDP header, and the L4 checksum follows both (the address through the pseudo-header).
//! Checksums are updated incrementally, so a segment that arrived damaged stays damaged.
//! The TTL / hop limit is decremented in both directions (see [`super`]).

use std::net::IpAddr;

use super::{
    addr_offset, check_ttl, ip_of, malformed, octets, port_offset, read16, same_family,
    unsupported, update_field,
};
use super::{IPV4_CHECKSUM, IPV4_TTL, IPV6_HOP_LIMIT};
use crate::stats::DropReason;
use crate::wire::{checksum, icmp, ip_proto, tcp, udp, IpVersion, L4Info, Parsed};

/// Which side of the flow a rewrite changes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// DNAT for a packet from the client: destination VIP:vport becomes `rip`:`rport`.
///
/// Fails (leaving the frame unchanged) with [`DropReason::TtlExceeded`], or
/// [`DropReason::Unsupported`] for a non-IP frame or an address of the other family.
///
/// A fragment is rewritten as far as it goes: the address in every fragment; the port and
/// the TCP/UDP checksum only in the first, which holds the header (the checksum covers the
/// whole datagram, and an incremental update needs only what changes, so it comes out right
/// once the real server has reassembled the datagram).
#[inline]
pub fn dnat(frame: &mut [u8], p: &Parsed, rip: IpAddr, rport: u16) -> Result<(), DropReason> {
    rewrite(frame, p, Side::Dst, rip, rport)
}

/// SNAT for a reply from the real server: source RIP:rport becomes `vip`:`vport`.
/// Fails as [`dnat`].
#[inline]
pub fn snat(frame: &mut [u8], p: &Parsed, vip: IpAddr, vport: u16) -> Result<(), DropReason> {
    rewrite(frame, p, Side::Src, vip, vport)
}

#[inline]
fn rewrite(
    frame: &mut [u8],
    p: &Parsed,
    side: Side,
    addr: IpAddr,
    port: u16,
) -> Result<(), DropReason> {
    let ip = ip_of(frame, p)?;
    if !same_family(ip, &addr) {
        return unsupported();
    }
    check_ttl(ip)?;
    let l3 = p.l3_offset;
    let l4 = ip.l4_offset;
    let (new, n) = octets(&addr);
    let new = &new[..n];
    let at = l3 + addr_offset(ip.version, side == Side::Src);
    let mut old = [0u8; 16];
    old[..n].copy_from_slice(&frame[at..at + n]);
    let old = &old[..n];

    // Upper layer first: it reads nothing the IP-header update changes.
    let port_at = l4 + port_offset(side == Side::Src);
    match ip.l4 {
        L4Info::Tcp { .. } => {
            let old_port = read16(frame, port_at);
            update_field(frame, l4 + tcp::CHECKSUM_OFFSET, |c| {
                checksum::update16(checksum::update_bytes(c, old, new), old_port, port)
            });
            frame[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
        }
        L4Info::Udp { .. } => {
            let old_port = read16(frame, port_at);
            update_field(frame, l4 + udp::CHECKSUM_OFFSET, |c| {
                checksum::update_udp(c, |c| {
                    checksum::update16(checksum::update_bytes(c, old, new), old_port, port)
                })
            });
            frame[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
        }
        // ICMPv6 covers the pseudo-header; ICMPv4 does not.
        L4Info::Icmp(_) if ip.protocol == ip_proto::ICMPV6 => {
            update_field(frame, l4 + icmp::field::CHECKSUM.start, |c| {
                checksum::update_bytes(c, old, new)
            });
        }
        _ => {}
    }

    match ip.version {
        IpVersion::V4 => {
            // As `decrement_ttl`: one bounds check, a TTL update without its words.
            let Some(h) = frame.get_mut(l3..l3 + IPV4_CHECKSUM + 2) else {
                return malformed();
            };
            h[IPV4_TTL] -= 1;
            update_field(h, IPV4_CHECKSUM, |c| {
                checksum::update_ttl_decrement(checksum::update_bytes(c, old, new))
            });
        }
        IpVersion::V6 => frame[l3 + IPV6_HOP_LIMIT] -= 1,
    }
    frame[at..at + n].copy_from_slice(new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_frame;
    use crate::wire::testkit::{assert_checksums, Spec, L4};
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn dnat_tcp_ipv4_vlan_with_options() {
        let mut s = Spec::tcp("198.51.100.7", "192.0.2.10", 40000, 80);
        s.vlan = Some(7);
        s.ipv4_options = vec![1, 1, 1, 0];
        let mut f = s.frame();
        let p = parse_frame(&f).unwrap();
        dnat(&mut f, &p, ip("10.1.0.5"), 8080).unwrap();
        let q = parse_frame(&f).unwrap();
        let qi = q.ip.unwrap();
        assert_eq!((qi.src, qi.dst), (ip("198.51.100.7"), ip("10.1.0.5")));
        assert_eq!(qi.ports(), Some((40000, 8080)));
        assert_eq!((qi.ttl, q.vlan), (63, Some(7)));
        assert_checksums(&f);
    }

    #[test]
    fn snat_udp_ipv6() {
        let mut f = Spec::udp("2001:db8:1::5", "2001:db8:2::9", 53, 5353).frame();
        let p = parse_frame(&f).unwrap();
        snat(&mut f, &p, ip("2001:db8::10"), 5300).unwrap();
        let qi = parse_frame(&f).unwrap().ip.unwrap();
        assert_eq!((qi.src, qi.dst), (ip("2001:db8::10"), ip("2001:db8:2::9")));
        assert_eq!((qi.ports(), qi.ttl), (Some((5300, 5353)), 63));
        assert_checksums(&f);
    }

    #[test]
    fn udp_ipv4_without_checksum_stays_without() {
        let mut f = Spec::udp("198.51.100.7", "192.0.2.10", 1000, 53).frame();
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
        let p = parse_frame(&f).unwrap();
        dnat(&mut f, &p, ip("10.1.0.5"), 5353).unwrap();
        assert_eq!(&f[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
        assert_checksums(&f);
    }

    #[test]
    fn failures_leave_the_frame_alone() {
        let mut s = Spec::tcp("198.51.100.7", "192.0.2.10", 1, 80);
        s.ttl = 1;
        let mut f = s.frame();
        let before = f.clone();
        let p = parse_frame(&f).unwrap();
        assert_eq!(
            dnat(&mut f, &p, ip("10.1.0.5"), 80),
            Err(DropReason::TtlExceeded)
        );
        assert_eq!(
            dnat(&mut f, &p, ip("2001:db8::1"), 80),
            Err(DropReason::Unsupported)
        );
        assert_eq!(f, before);
    }

    fn addr(v6: bool, b: [u8; 16]) -> IpAddr {
        if v6 {
            IpAddr::V6(b.into())
        } else {
            IpAddr::V4([b[0], b[1], b[2], b[3]].into())
        }
    }

    proptest! {
        // DNAT then SNAT on random flows: every checksum verifies by etherparse's full
        // recompute, and the fields are what was written.
        #[test]
        fn rewrites_verify_by_full_recompute(
            v6 in any::<bool>(), a in any::<[u8; 16]>(), b in any::<[u8; 16]>(),
            c in any::<[u8; 16]>(), udp in any::<bool>(), sport in any::<u16>(),
            dport in any::<u16>(), rport in any::<u16>(), ttl in 2u8..=255,
            vlan in proptest::option::of(0u16..4095), opts in 0usize..=10,
            payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut s = Spec::tcp("10.0.0.1", "10.0.0.2", sport, dport);
            s.src = addr(v6, a);
            s.dst = addr(v6, b);
            s.ttl = ttl;
            s.vlan = vlan;
            s.ipv4_options = vec![1; opts * 4];
            s.payload = payload;
            if udp {
                s.l4 = L4::Udp { sport, dport };
            }
            let mut f = s.frame();
            let rip = addr(v6, c);
            let p = parse_frame(&f).unwrap();
            dnat(&mut f, &p, rip, rport).unwrap();
            assert_checksums(&f);
            let q = parse_frame(&f).unwrap();
            let qi = q.ip.unwrap();
            prop_assert_eq!((qi.src, qi.dst, qi.ttl), (s.src, rip, ttl - 1));
            prop_assert_eq!(qi.ports(), Some((sport, rport)));
            if ttl > 2 {
                snat(&mut f, &q, s.dst, dport).unwrap();
                assert_checksums(&f);
                let ri = parse_frame(&f).unwrap().ip.unwrap();
                prop_assert_eq!((ri.src, ri.dst), (s.dst, rip));
                prop_assert_eq!(ri.ports(), Some((dport, rport)));
            }
        }
    }
}
