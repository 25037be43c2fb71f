//! LVS-TUN: IP-in-IP encapsulation towards the real server, grown into the headroom.
//!
//! ```text
//! before:            | eth (+vlan) | inner IP ...              |
//! after:  | eth (+vlan) | outer IP  | inner IP ...              |
//!         ^ head - 20 (IPv4) / 40 (IPv6)
//! ```
//!
//! The outer header is built as `ip_vs_tunnel_xmit` / `ip_vs_tunnel_xmit_v6` build it (via
//! `ip_vs_prepare_tunneled_skb`): the inner TTL is decremented first (`decrement_ttl` in
//! `__ip_vs_get_out_rt`), then the outer header copies the inner TTL / hop limit and the
//! DSCP/ECN byte / traffic class; IPv4 copies DF (with the default `pmtu_disc` = 1) and
//! clears MF and the offset; IPv6 gets a zero flow label. The outer IPv4 identification is
//! chosen by `ip_select_ident`: 0 when DF is set (the skb has no socket and `ignore_df` is
//! not yet set), a fresh ID otherwise, which the caller passes in.

use std::net::IpAddr;

use super::{decrement_ttl, ip_of, unsupported};
use crate::stats::DropReason;
use crate::wire::{ip_proto, ipv4, ipv6, Frame, IpRepr, IpVersion, Parsed};

use super::icmp::{error_reply, ErrorReply};

/// Bytes an outer IPv4 header adds.
pub const IPV4_OVERHEAD: usize = ipv4::HEADER_LEN;
/// Bytes an outer IPv6 header adds.
pub const IPV6_OVERHEAD: usize = ipv6::HEADER_LEN;

/// Smallest tunnel MTU IPVS accepts for IPv4 (`mtu < 68` is an error).
const IPV4_MIN_MTU: u32 = 68;
/// Smallest MTU of an IPv6 link.
const IPV6_MIN_MTU: u32 = 1280;

/// Encapsulates the frame in an outer IPv4 (protocol 4) or IPv6 (next header 41) header
/// from `outer_src` to `outer_dst`; the frame grows into its headroom
/// ([`Frame::prepend`]). Ethernet padding is dropped; the MACs are left for the caller to
/// set.
///
/// Fails, leaving the frame unchanged, with [`DropReason::TooBig`] (headroom short of
/// 20/40 bytes, or the result over 65535 bytes), [`DropReason::TtlExceeded`],
/// [`DropReason::Unsupported`] (non-IP, or outer addresses of another family than the
/// packet: only IPv4-in-IPv4 and IPv6-in-IPv6) or [`DropReason::Malformed`] (`len` shorter
/// than `p` says).
#[inline]
pub fn encapsulate(
    frame: &mut Frame<'_>,
    p: &Parsed,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    ip_id: u16,
) -> Result<(), DropReason> {
    let ip = *ip_of(frame.data(), p)?;
    // The inner TTL as decrement_ttl leaves it (which refuses one that would reach 0).
    let ttl = ip.ttl.saturating_sub(1);
    let outer = match (ip.version, outer_src, outer_dst) {
        (IpVersion::V4, IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => IpRepr::V4(ipv4::Repr {
            src_addr,
            dst_addr,
            protocol: ip_proto::IPIP,
            tos: ip.tos,
            ident: if ip.dont_fragment { 0 } else { ip_id },
            dont_frag: ip.dont_fragment,
            ttl,
            payload_len: ip.len,
        }),
        (IpVersion::V6, IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => IpRepr::V6(ipv6::Repr {
            src_addr,
            dst_addr,
            next_header: ip_proto::IPV6,
            traffic_class: ip.tos,
            hop_limit: ttl,
            payload_len: ip.len,
        }),
        _ => return unsupported(),
    };
    let grow = outer.header_len();
    if frame.headroom() < grow || ip.len + grow > usize::from(u16::MAX) {
        return Err(DropReason::TooBig);
    }
    decrement_ttl(frame.data_mut(), p)?;
    let l2 = p.l2_len();
    frame.truncate(l2 + ip.len);
    let grown = frame.prepend(l2, grow);
    debug_assert!(grown, "headroom checked above");
    outer.emit(&mut frame.data_mut()[l2..l2 + grow]);
    Ok(())
}

/// What to do with a packet against the path MTU.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MtuVerdict {
    /// It fits (after `overhead` bytes of encapsulation).
    Fits,
    /// Too big and not to be fragmented: drop it and answer the client with
    /// [`too_big_reply`] announcing `mtu` (the path MTU less the encapsulation).
    TooBig {
        /// The MTU to announce.
        mtu: u32,
    },
    /// Too big, and no answer is due: a relayed ICMP error, a later IPv6 fragment, an IPv4
    /// packet without DF (the kernel would fragment it; fastlb does not fragment), or a
    /// path too narrow for the tunnel. Drop it as [`DropReason::TooBig`].
    DropSilently,
}

/// Checks the packet against `path_mtu` once `overhead` bytes of encapsulation are added
/// (0 for NAT and DR, [`IPV4_OVERHEAD`] / [`IPV6_OVERHEAD`] for TUN), as IPVS's
/// `ensure_mtu_is_adequate`: IPv4 with DF answers "fragmentation needed", IPv6 always
/// answers "packet too big" (routers never fragment IPv6), except for ICMP errors being
/// relayed and non-first fragments.
#[inline]
pub fn check_mtu(p: &Parsed, path_mtu: u32, overhead: usize) -> MtuVerdict {
    let Some(ip) = &p.ip else {
        return MtuVerdict::Fits;
    };
    let overhead = overhead as u32;
    let mtu = path_mtu.saturating_sub(overhead);
    if ip.len as u32 <= mtu {
        return MtuVerdict::Fits;
    }
    let floor = match ip.version {
        IpVersion::V4 => IPV4_MIN_MTU,
        IpVersion::V6 => IPV6_MIN_MTU,
    };
    let relayed_error = ip.icmp().is_some_and(|i| i.quotes);
    let answerable = match ip.version {
        IpVersion::V4 => ip.dont_fragment,
        // A non-first fragment has no upper-layer header in it.
        IpVersion::V6 => !(ip.fragment && ip.l4 == crate::wire::L4Info::Other),
    };
    if overhead > 0 && mtu < floor || relayed_error || !answerable {
        MtuVerdict::DropSilently
    } else {
        MtuVerdict::TooBig { mtu }
    }
}

/// Turns the frame into the answer [`MtuVerdict::TooBig`] calls for: ICMPv4 fragmentation
/// needed (3/4) with next-hop MTU `mtu`, or ICMPv6 packet too big with MTU `mtu`, from the
/// VIP back to the client. See [`error_reply`] for the details and failures.
#[inline]
pub fn too_big_reply(
    frame: &mut Frame<'_>,
    p: &Parsed,
    mtu: u32,
    ip_id: u16,
) -> Result<(), DropReason> {
    error_reply(frame, p, ErrorReply::TooBig { mtu }, ip_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testkit::{assert_checksums, Spec};
    use crate::wire::{checksum, parse_frame};
    use etherparse::{NetHeaders, PacketHeaders};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const ROOM: usize = 64;

    /// [`encapsulate`] on the frame at `buf[head..head + len]`: its bounds afterwards.
    fn encap(
        buf: &mut [u8],
        head: usize,
        len: usize,
        p: &Parsed,
        src: IpAddr,
        dst: IpAddr,
        ip_id: u16,
    ) -> Result<(usize, usize), DropReason> {
        let mut f = Frame::new(buf, head, len);
        encapsulate(&mut f, p, src, dst, ip_id)?;
        Ok((f.head(), f.len()))
    }

    fn in_buffer(f: &[u8], padding: usize) -> Vec<u8> {
        let mut buf = vec![0u8; ROOM];
        buf.extend_from_slice(f);
        buf.extend(std::iter::repeat_n(0, padding));
        buf
    }

    #[test]
    fn ipv4_in_ipv4_with_vlan_and_padding() {
        let mut s = Spec::tcp("198.51.100.7", "192.0.2.10", 40000, 80);
        s.vlan = Some(300);
        s.tos = 0xb8;
        s.payload.clear();
        let f = s.frame();
        let mut buf = in_buffer(&f, 6);
        let p = parse_frame(&buf[ROOM..]).unwrap();
        let (h, l) = encap(
            &mut buf,
            ROOM,
            f.len() + 6,
            &p,
            ip("10.0.0.1"),
            ip("10.1.0.5"),
            0x1234,
        )
        .unwrap();
        assert_eq!((h, l), (ROOM - 20, f.len() + 20));
        let out = &buf[h..h + l];
        let outer = parse_frame(out).unwrap();
        assert_eq!((outer.vlan, outer.src_mac), (Some(300), p.src_mac));
        let oi = outer.ip.unwrap();
        assert_eq!(
            (oi.src, oi.dst, oi.protocol),
            (ip("10.0.0.1"), ip("10.1.0.5"), 4)
        );
        assert_eq!((oi.ttl, oi.tos, oi.dont_fragment), (63, 0xb8, true));
        assert_eq!(oi.len, 20 + 20 + 20);
        let hdr = &out[18..38];
        assert_eq!(checksum::checksum(hdr), 0, "outer header checksum");
        assert_eq!(&hdr[4..6], &[0, 0], "DF set: ID 0 as ip_select_ident");
        // The inner packet: TTL decremented, checksums intact.
        let mut inner = out[..18].to_vec();
        inner.extend_from_slice(&out[38..]);
        assert_checksums(&inner);
        let ii = parse_frame(&inner).unwrap().ip.unwrap();
        assert_eq!(
            (ii.src, ii.dst, ii.ttl),
            (ip("198.51.100.7"), ip("192.0.2.10"), 63)
        );
        // etherparse sees IP-in-IP.
        let e = PacketHeaders::from_ethernet_slice(out).unwrap();
        let Some(NetHeaders::Ipv4(h4, _)) = e.net else {
            panic!()
        };
        assert_eq!(h4.calc_header_checksum(), h4.header_checksum);
    }

    #[test]
    fn ipv4_without_df_uses_the_given_id() {
        let mut s = Spec::udp("198.51.100.7", "192.0.2.10", 1, 53);
        s.df = false;
        let f = s.frame();
        let mut buf = in_buffer(&f, 0);
        let p = parse_frame(&f).unwrap();
        let (h, _) = encap(
            &mut buf,
            ROOM,
            f.len(),
            &p,
            ip("10.0.0.1"),
            ip("10.1.0.5"),
            0x1234,
        )
        .unwrap();
        let out = &buf[h..];
        assert_eq!(&out[14 + 4..14 + 8], &[0x12, 0x34, 0, 0]);
    }

    #[test]
    fn ipv6_in_ipv6() {
        let mut s = Spec::udp("2001:db8:1::7", "2001:db8::10", 5353, 53);
        s.tos = 0x2e;
        let f = s.frame();
        let mut buf = in_buffer(&f, 0);
        let p = parse_frame(&f).unwrap();
        let (h, l) = encap(&mut buf, ROOM, f.len(), &p, ip("fd00::1"), ip("fd00::5"), 9).unwrap();
        assert_eq!((h, l), (ROOM - 40, f.len() + 40));
        let out = &buf[h..h + l];
        let oi = parse_frame(out).unwrap().ip.unwrap();
        assert_eq!(
            (oi.src, oi.dst, oi.protocol),
            (ip("fd00::1"), ip("fd00::5"), 41)
        );
        assert_eq!((oi.ttl, oi.tos, oi.len), (63, 0x2e, f.len() - 14 + 40));
        assert_eq!(&out[14 + 1..14 + 4], &[0xe0, 0, 0], "flow label zero");
        let mut inner = out[..14].to_vec();
        inner.extend_from_slice(&out[54..]);
        assert_checksums(&inner);
        assert_eq!(parse_frame(&inner).unwrap().ip.unwrap().ttl, 63);
    }

    #[test]
    fn refusals_leave_the_buffer_alone() {
        let f = Spec::tcp("198.51.100.7", "192.0.2.10", 1, 80).frame();
        let p = parse_frame(&f).unwrap();
        let mut buf = in_buffer(&f, 0);
        let before = buf.clone();
        let r = encap(
            &mut buf,
            ROOM,
            f.len() - 1,
            &p,
            ip("10.0.0.1"),
            ip("10.1.0.5"),
            0,
        );
        assert_eq!(r, Err(DropReason::Malformed)); // frame shorter than p says
        let r = encap(&mut buf, ROOM, f.len(), &p, ip("fd00::1"), ip("fd00::5"), 0);
        assert_eq!(r, Err(DropReason::Unsupported));
        let mut small = vec![0u8; 8];
        small.extend_from_slice(&f);
        let r = encap(
            &mut small,
            8,
            f.len(),
            &p,
            ip("10.0.0.1"),
            ip("10.1.0.5"),
            0,
        );
        assert_eq!(r, Err(DropReason::TooBig));
        assert_eq!(buf, before);
    }

    #[test]
    fn mtu_checks() {
        let mut s = Spec::tcp("198.51.100.7", "192.0.2.10", 1, 80);
        s.payload = vec![0; 1460];
        let p = parse_frame(&s.frame()).unwrap(); // 1500 bytes of IP, DF
        assert_eq!(check_mtu(&p, 1500, 0), MtuVerdict::Fits);
        assert_eq!(check_mtu(&p, 1500, 20), MtuVerdict::TooBig { mtu: 1480 });
        assert_eq!(check_mtu(&p, 80, 20), MtuVerdict::DropSilently);
        s.df = false;
        let p = parse_frame(&s.frame()).unwrap();
        assert_eq!(check_mtu(&p, 1500, 20), MtuVerdict::DropSilently);

        let mut s6 = Spec::tcp("2001:db8:1::7", "2001:db8::10", 1, 80);
        s6.payload = vec![0; 1440];
        let p = parse_frame(&s6.frame()).unwrap();
        assert_eq!(check_mtu(&p, 1500, 40), MtuVerdict::TooBig { mtu: 1460 });
        assert_eq!(check_mtu(&p, 1300, 40), MtuVerdict::DropSilently);

        let inner = Spec::tcp("192.0.2.10", "198.51.100.7", 80, 1).ip_packet();
        let big = vec![inner.clone(); 40].concat();
        let f =
            crate::wire::testkit::icmp_error(None, "203.0.113.1", "192.0.2.10", 3, 1, &big, 1400);
        let p = parse_frame(&f).unwrap();
        assert_eq!(check_mtu(&p, 1000, 20), MtuVerdict::DropSilently);
    }

    #[test]
    fn too_big_reply_after_check() {
        let mut s = Spec::tcp("198.51.100.7", "192.0.2.10", 40000, 80);
        s.payload = vec![1; 1460];
        let f = s.frame();
        let mut buf = in_buffer(&f, 0);
        let p = parse_frame(&f).unwrap();
        let MtuVerdict::TooBig { mtu } = check_mtu(&p, 1500, IPV4_OVERHEAD) else {
            panic!()
        };
        let mut fr = Frame::new(&mut buf, ROOM, f.len());
        too_big_reply(&mut fr, &p, mtu, 5).unwrap();
        let (h, l) = (fr.head(), fr.len());
        let out = &buf[h..h + l];
        assert_checksums(out);
        let oi = parse_frame(out).unwrap().ip.unwrap();
        assert_eq!((oi.src, oi.dst), (ip("192.0.2.10"), ip("198.51.100.7")));
        let icmp = oi.icmp().unwrap();
        assert_eq!(
            (icmp.msg_type, icmp.code, icmp.rest_of_header),
            (3, 4, 1480)
        );
    }
}
