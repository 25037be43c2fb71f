//! ICMP relay for NAT connections, and ICMP error answers built in place.
//!
//! **Relay** follows IPVS (`ip_vs_in_icmp`, `ip_vs_out_icmp`, `ip_vs_nat_icmp` and their v6
//! twins). Relayed are ICMPv4 destination unreachable, source quench and time exceeded, and
//! every ICMPv6 error ([`crate::wire::IcmpInfo::relayed_by_ipvs`]); the pipeline finds the
//! connection from the quoted packet ([`crate::wire::Quoted`]) and calls one of:
//!
//! - [`nat_to_real_server`]: an error from the outside quoting a reply we sent,
//!   VIP:vport -> client. Outer destination VIP -> RIP, quoted source VIP:vport -> RIP:rport.
//! - [`nat_to_client`]: an error from a real server (or a router behind it) quoting
//!   client -> RIP:rport. Outer source -> VIP, quoted destination RIP:rport -> VIP:vport.
//!
//! As IPVS does, the ICMP checksum is verified before anything changes, the quoted IPv4
//! header checksum is recomputed, the quoted TCP/UDP checksum is left alone (it is usually
//! cut off), and the ICMP checksum is recomputed in full (ICMPv6 with its pseudo-header).
//! For DR and TUN connections IPVS forwards the error to the real server as it is: the
//! pipeline uses [`super::mac::direct_route`] or [`super::tun::encapsulate`] on it.

use std::net::IpAddr;

use super::{
    addr_offset, check_ttl, decrement_ttl, ip_of, malformed, octets, port_offset, same_family,
    unsupported, update_field, IPV4_CHECKSUM,
};
use crate::stats::DropReason;
use crate::wire::ethernet::EthernetFrame;
use crate::wire::{
    checksum, icmp, icmpv4, icmpv6, ip_proto, ipv4, ipv6, tcp, udp, Frame, IpInfo, IpRepr,
    IpVersion, Parsed,
};

/// Relays an ICMP error quoting a reply (VIP:vport -> client) to the real server.
///
/// Fails with [`DropReason::Malformed`] (not an error with a quoted packet, or a wrong ICMP
/// checksum), [`DropReason::Fragment`], [`DropReason::TtlExceeded`] or
/// [`DropReason::Unsupported`] (address of the other family); the frame is then unchanged.
pub fn nat_to_real_server(
    frame: &mut [u8],
    p: &Parsed,
    rip: IpAddr,
    rport: u16,
) -> Result<(), DropReason> {
    relay(frame, p, false, rip, rport)
}

/// Relays an ICMP error quoting a request (client -> RIP:rport) to the client, as if the
/// VIP had sent it. Fails as [`nat_to_real_server`].
pub fn nat_to_client(
    frame: &mut [u8],
    p: &Parsed,
    vip: IpAddr,
    vport: u16,
) -> Result<(), DropReason> {
    relay(frame, p, true, vip, vport)
}

/// `to_client` is IPVS's `inout`: rewrite the outer source and the quoted destination;
/// otherwise the outer destination and the quoted source.
fn relay(
    frame: &mut [u8],
    p: &Parsed,
    to_client: bool,
    addr: IpAddr,
    port: u16,
) -> Result<(), DropReason> {
    let ip = ip_of(frame, p)?;
    let Some(q) = p.quoted(frame) else {
        return malformed();
    };
    if !same_family(ip, &addr) {
        return unsupported();
    }
    if ip.fragment {
        return Err(DropReason::Fragment);
    }
    check_ttl(ip)?;
    let l3 = p.l3_offset;
    if icmp_checksum(frame, l3, ip) != 0 {
        return malformed();
    }

    let (new, n) = octets(&addr);
    let new = &new[..n];
    let v4 = ip.version == IpVersion::V4;
    // To the client: the outer source and the quoted destination; else the other two.
    let outer_at = l3 + addr_offset(ip.version, to_client);
    let quoted_at = q.ip_offset + addr_offset(ip.version, !to_client);

    if v4 {
        let mut old = [0u8; 4];
        old.copy_from_slice(&frame[outer_at..outer_at + 4]);
        update_field(frame, l3 + IPV4_CHECKSUM, |c| {
            checksum::update_bytes(c, &old, new)
        });
    }
    frame[outer_at..outer_at + n].copy_from_slice(new);
    let mut old_quoted = [0u8; 16];
    old_quoted[..n].copy_from_slice(&frame[quoted_at..quoted_at + n]);
    frame[quoted_at..quoted_at + n].copy_from_slice(new);
    if v4 {
        let qh = q.ip_offset..q.ip_offset + q.ip_header_len;
        let c = checksum::ipv4_header(&frame[qh]);
        let at = q.ip_offset + IPV4_CHECKSUM;
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    if q.ports.is_some() {
        let at = q.l4_offset + port_offset(!to_client);
        let old_port = u16::from_be_bytes([frame[at], frame[at + 1]]);
        frame[at..at + 2].copy_from_slice(&port.to_be_bytes());
        fix_quoted_l4_checksum(
            frame,
            &q,
            l3 + ip.len,
            &old_quoted[..n],
            new,
            old_port,
            port,
        );
    }
    let sum_at = ip.l4_offset + icmp::field::CHECKSUM.start;
    frame[sum_at..sum_at + 2].fill(0);
    let c = icmp_checksum(frame, l3, ip);
    frame[sum_at..sum_at + 2].copy_from_slice(&c.to_be_bytes());
    decrement_ttl(frame, p)
}

/// Keeps the quoted packet's own TCP/UDP checksum consistent with its translated address
/// and port, when the quote reaches that far (UDP always: its checksum is in the first 8
/// bytes; TCP when 18 bytes of its header are quoted). IPVS leaves it stale; restoring it
/// gives back exactly the checksum the other end computed, and keeps captures clean.
fn fix_quoted_l4_checksum(
    frame: &mut [u8],
    q: &crate::wire::Quoted,
    end: usize,
    old_addr: &[u8],
    new_addr: &[u8],
    old_port: u16,
    new_port: u16,
) {
    let at = match q.protocol {
        ip_proto::UDP => q.l4_offset + udp::CHECKSUM_OFFSET,
        ip_proto::TCP => q.l4_offset + tcp::CHECKSUM_OFFSET,
        _ => return,
    };
    if at + 2 > end.min(frame.len()) {
        return;
    }
    let old = u16::from_be_bytes([frame[at], frame[at + 1]]);
    if q.protocol == ip_proto::UDP && old == 0 && q.src.is_ipv4() {
        return;
    }
    let c = checksum::update16(
        checksum::update_bytes(old, old_addr, new_addr),
        old_port,
        new_port,
    );
    let c = if q.protocol == ip_proto::UDP {
        checksum::udp_nonzero(c)
    } else {
        c
    };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The ICMP (v4) or ICMPv6 (with pseudo-header) checksum over the message as the frame
/// holds it now: 0 when the checksum field is right.
fn icmp_checksum(frame: &[u8], l3: usize, ip: &IpInfo) -> u16 {
    let msg = &frame[ip.l4_offset..l3 + ip.len];
    match ip.version {
        IpVersion::V4 => checksum::checksum(msg),
        IpVersion::V6 => {
            let h = ipv6::Packet::new_unchecked(&frame[l3..l3 + ipv6::HEADER_LEN]);
            checksum::l4(
                &h.src_addr().into(),
                &h.dst_addr().into(),
                ip_proto::ICMPV6,
                msg,
            )
        }
    }
}

/// An ICMP error fastlb answers a client with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ErrorReply {
    /// The packet does not fit the path: ICMPv4 destination unreachable / fragmentation
    /// needed (type 3 code 4) with the next-hop MTU, or ICMPv6 packet too big (type 2)
    /// with the MTU.
    TooBig {
        /// The MTU to announce.
        mtu: u32,
    },
    /// TTL / hop limit ran out: ICMPv4 time exceeded (11/0), ICMPv6 time exceeded (3/0).
    TimeExceeded,
}

/// TOS of an ICMPv4 error: internetwork control, as Linux sends errors.
const ERROR_TOS: u8 = 0xc0;
/// TTL / hop limit of an ICMP error.
const ERROR_TTL: u8 = 64;

/// Largest IPv4 datagram an ICMPv4 error may make (RFC 1812 4.3.2.3: 576 bytes).
pub const IPV4_ERROR_MAX: usize = 576;
/// Largest IPv6 packet an ICMPv6 error may make (RFC 4443 2.4(c): the minimum MTU).
pub const IPV6_ERROR_MAX: usize = 1280;

/// Turns the frame into an ICMP error answering it, in place.
///
/// The answer goes back the way the packet came: MACs swapped (the VLAN tag kept), source
/// the address the client sent to (the VIP), destination the client, TTL / hop limit 64,
/// IPv4 identification `ip_id`, TOS 0xc0 (internetwork control, as Linux sends errors).
/// It quotes as much of the original IP packet as fits in 576 (IPv4) / 1280 (IPv6) bytes.
/// The Ethernet header moves 28 (IPv4) / 48 (IPv6) bytes into the headroom
/// ([`Frame::prepend`]); the original packet stays where it is and becomes the quote, so
/// call this before rewriting it.
///
/// Fails with [`DropReason::TooBig`] when the headroom is short, [`DropReason::Unsupported`]
/// for a non-IP frame; the frame is then unchanged.
pub fn error_reply(
    frame: &mut Frame<'_>,
    p: &Parsed,
    kind: ErrorReply,
    ip_id: u16,
) -> Result<(), DropReason> {
    let ip = *ip_of(frame.data(), p)?;
    let l2 = p.l2_len();
    let v4 = ip.version == IpVersion::V4;
    let (header_len, max) = if v4 {
        (ipv4::HEADER_LEN, IPV4_ERROR_MAX)
    } else {
        (ipv6::HEADER_LEN, IPV6_ERROR_MAX)
    };
    let grow = header_len + icmpv4::HEADER_LEN;
    let quote = ip.len.min(max - grow);
    let msg_len = icmpv4::HEADER_LEN + quote;
    // From the address the client sent to (the VIP) back to the client.
    let header = match (ip.dst, ip.src) {
        (IpAddr::V4(vip), IpAddr::V4(client)) => IpRepr::V4(ipv4::Repr {
            src_addr: vip,
            dst_addr: client,
            protocol: ip_proto::ICMP,
            tos: ERROR_TOS,
            ident: ip_id,
            dont_frag: false,
            ttl: ERROR_TTL,
            payload_len: msg_len,
        }),
        (IpAddr::V6(vip), IpAddr::V6(client)) => IpRepr::V6(ipv6::Repr {
            src_addr: vip,
            dst_addr: client,
            next_header: ip_proto::ICMPV6,
            traffic_class: 0,
            hop_limit: ERROR_TTL,
            payload_len: msg_len,
        }),
        // parse_frame gives both addresses the packet's family.
        _ => return unsupported(),
    };
    if frame.headroom() < grow {
        return Err(DropReason::TooBig);
    }
    frame.truncate(l2 + quote);
    let grown = frame.prepend(l2, grow);
    debug_assert!(grown, "headroom checked above");
    let out = frame.data_mut();
    let mut eth = EthernetFrame::new_unchecked(&mut out[..]);
    eth.set_dst_addr(p.src_mac);
    eth.set_src_addr(p.dst_mac);

    let (icmp_type, code, rest) = match (kind, v4) {
        (ErrorReply::TooBig { mtu }, true) => (
            icmpv4::msg_type::DEST_UNREACHABLE,
            icmpv4::msg_type::CODE_FRAG_NEEDED,
            mtu.min(0xffff),
        ),
        (ErrorReply::TooBig { mtu }, false) => (icmpv6::msg_type::PACKET_TOO_BIG, 0, mtu),
        (ErrorReply::TimeExceeded, true) => (icmpv4::msg_type::TIME_EXCEEDED, 0, 0),
        (ErrorReply::TimeExceeded, false) => (icmpv6::msg_type::TIME_EXCEEDED, 0, 0),
    };
    let l3 = &mut out[l2..];
    header.emit(l3);
    let msg = &mut l3[header_len..header_len + msg_len];
    let mut m = icmpv4::Packet::new_unchecked(&mut msg[..]);
    m.set_msg_type(icmp_type);
    m.set_code(code);
    m.set_checksum(0);
    m.set_rest_of_header(rest);
    let c = if v4 {
        checksum::checksum(msg)
    } else {
        checksum::l4(&ip.dst, &ip.src, ip_proto::ICMPV6, msg)
    };
    msg[icmp::field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testkit::{assert_checksums, icmp_error, Spec};
    use crate::wire::{parse_frame, L4Info};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// (a): a router on the client's side says the client is unreachable, quoting our reply
    /// VIP:80 -> client:40000; it goes on to the real server 10.1.0.5:8080.
    fn case_a(vip: &str, client: &str, router: &str, rip: &str, vlan: Option<u16>, quote: usize) {
        let reply = Spec::tcp(vip, client, 80, 40000).ip_packet();
        let ty = if ip(vip).is_ipv4() { 3 } else { 1 };
        let mut f = icmp_error(vlan, router, vip, ty, 1, &reply, quote);
        let p = parse_frame(&f).unwrap();
        nat_to_real_server(&mut f, &p, ip(rip), 8080).unwrap();
        assert_checksums(&f);
        let q = parse_frame(&f).unwrap();
        assert_eq!(q.vlan, vlan);
        let qi = q.ip.unwrap();
        assert_eq!((qi.src, qi.dst, qi.ttl), (ip(router), ip(rip), 63));
        let quoted = q.quoted(&f).unwrap();
        assert_eq!((quoted.src, quoted.dst), (ip(rip), ip(client)));
        assert_eq!(quoted.ports, Some((8080, 40000)));
        if ip(vip).is_ipv4() {
            let h = &f[quoted.ip_offset..quoted.ip_offset + quoted.ip_header_len];
            assert_eq!(checksum::checksum(h), 0, "quoted IPv4 header checksum");
        }
    }

    #[test]
    fn to_real_server_ipv4_and_ipv6() {
        case_a(
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.1",
            "10.1.0.5",
            None,
            28,
        );
        case_a(
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.1",
            "10.1.0.5",
            Some(9),
            1000,
        );
        case_a(
            "2001:db8::10",
            "2001:db8:1::7",
            "2001:db8:ff::1",
            "fd00::5",
            None,
            48,
        );
        case_a(
            "2001:db8::10",
            "2001:db8:1::7",
            "2001:db8:ff::1",
            "fd00::5",
            Some(9),
            1000,
        );
    }

    #[test]
    fn to_client_ipv4_and_ipv6() {
        for (client, rip, vip) in [
            ("198.51.100.7", "10.1.0.5", "192.0.2.10"),
            ("2001:db8:1::7", "fd00::5", "2001:db8::10"),
        ] {
            // The real server answers the DNATed request client -> RIP:8080 with port
            // unreachable.
            let req = Spec::udp(client, rip, 5353, 8080).ip_packet();
            let (ty, code) = if ip(client).is_ipv4() { (3, 3) } else { (1, 4) };
            let mut f = icmp_error(Some(3), rip, client, ty, code, &req, 2000);
            let p = parse_frame(&f).unwrap();
            nat_to_client(&mut f, &p, ip(vip), 53).unwrap();
            assert_checksums(&f);
            let qp = parse_frame(&f).unwrap();
            let qi = qp.ip.unwrap();
            assert_eq!((qi.src, qi.dst, qi.ttl), (ip(vip), ip(client), 63));
            let quoted = qp.quoted(&f).unwrap();
            assert_eq!((quoted.src, quoted.dst), (ip(client), ip(vip)));
            assert_eq!(quoted.ports, Some((5353, 53)));
        }
    }

    #[test]
    fn bad_icmp_checksum_is_dropped_untouched() {
        let reply = Spec::tcp("192.0.2.10", "198.51.100.7", 80, 1).ip_packet();
        let mut f = icmp_error(None, "203.0.113.1", "192.0.2.10", 11, 0, &reply, 28);
        let n = f.len();
        f[n - 1] ^= 0xff;
        let before = f.clone();
        let p = parse_frame(&f).unwrap();
        assert_eq!(
            nat_to_real_server(&mut f, &p, ip("10.1.0.5"), 1),
            Err(DropReason::Malformed)
        );
        assert_eq!(f, before);
    }

    #[test]
    fn not_an_error_is_refused() {
        let mut f = Spec::tcp("192.0.2.10", "198.51.100.7", 80, 1).frame();
        let p = parse_frame(&f).unwrap();
        assert_eq!(
            nat_to_client(&mut f, &p, ip("10.1.0.5"), 1),
            Err(DropReason::Malformed)
        );
    }

    fn reply_case(
        src: &str,
        dst: &str,
        payload: usize,
        kind: ErrorReply,
    ) -> (Vec<u8>, usize, usize) {
        let mut s = Spec::tcp(src, dst, 40000, 80);
        s.vlan = Some(11);
        s.payload = vec![0x5a; payload];
        let f = s.frame();
        let mut buf = vec![0u8; 64];
        buf.extend_from_slice(&f);
        let p = parse_frame(&f).unwrap();
        let mut fr = Frame::new(&mut buf, 64, f.len());
        error_reply(&mut fr, &p, kind, 7).unwrap();
        let (h, l) = (fr.head(), fr.len());
        (buf, h, l)
    }

    #[test]
    fn frag_needed_reply_ipv4() {
        let (buf, h, l) = reply_case(
            "198.51.100.7",
            "192.0.2.10",
            1400,
            ErrorReply::TooBig { mtu: 1480 },
        );
        let f = &buf[h..h + l];
        assert_eq!(l, 18 + IPV4_ERROR_MAX);
        assert_checksums(f);
        let p = parse_frame(f).unwrap();
        assert_eq!(
            (p.src_mac, p.dst_mac, p.vlan),
            (
                crate::wire::testkit::DIRECTOR_MAC,
                crate::wire::testkit::CLIENT_MAC,
                Some(11)
            )
        );
        let ip4 = p.ip.unwrap();
        assert_eq!(
            (ip4.src, ip4.dst, ip4.ttl, ip4.len),
            (ip("192.0.2.10"), ip("198.51.100.7"), 64, 576)
        );
        let icmp = ip4.icmp().unwrap();
        assert_eq!(
            (icmp.msg_type, icmp.code, icmp.rest_of_header),
            (3, 4, 1480)
        );
        let q = p.quoted(f).unwrap();
        assert_eq!(
            (q.src, q.dst, q.ports),
            (ip("198.51.100.7"), ip("192.0.2.10"), Some((40000, 80)))
        );
    }

    #[test]
    fn packet_too_big_reply_ipv6_and_small_quote() {
        let (buf, h, l) = reply_case(
            "2001:db8:1::7",
            "2001:db8::10",
            1400,
            ErrorReply::TooBig { mtu: 1400 },
        );
        let f = &buf[h..h + l];
        assert_eq!(l, 18 + IPV6_ERROR_MAX);
        assert_checksums(f);
        let ip6 = parse_frame(f).unwrap().ip.unwrap();
        assert_eq!(
            (ip6.src, ip6.dst, ip6.ttl),
            (ip("2001:db8::10"), ip("2001:db8:1::7"), 64)
        );
        let icmp = ip6.icmp().unwrap();
        assert_eq!(
            (icmp.msg_type, icmp.code, icmp.rest_of_header),
            (2, 0, 1400)
        );

        // A short packet is quoted whole.
        let (buf, h, l) = reply_case("198.51.100.7", "192.0.2.10", 3, ErrorReply::TimeExceeded);
        let f = &buf[h..h + l];
        assert_checksums(f);
        let ip4 = parse_frame(f).unwrap().ip.unwrap();
        assert_eq!(ip4.len, 20 + 8 + 20 + 20 + 3);
        assert!(matches!(ip4.l4, L4Info::Icmp(i) if i.msg_type == 11));
    }

    #[test]
    fn reply_needs_headroom() {
        let f = Spec::tcp("198.51.100.7", "192.0.2.10", 1, 2).frame();
        let mut buf = vec![0u8; 10];
        buf.extend_from_slice(&f);
        let p = parse_frame(&f).unwrap();
        let before = buf.clone();
        let mut fr = Frame::new(&mut buf, 10, f.len());
        let r = error_reply(&mut fr, &p, ErrorReply::TimeExceeded, 0);
        assert_eq!(r, Err(DropReason::TooBig));
        assert_eq!((fr.head(), fr.len()), (10, f.len()));
        assert_eq!(buf, before, "a refusal leaves the buffer alone");
    }
}
