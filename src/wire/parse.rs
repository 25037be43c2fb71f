//! One pass over a frame: everything the per-packet path needs, in a small `Copy` value.
//!
//! **IPv4 header checksums are verified here.** The kernel's IP layer validates them
//! before IPVS ever sees a packet; fastlb has no IP layer in front of it, so a frame whose
//! IPv4 header checksum is wrong parses as [`WireError::BadChecksum`] and the pipeline drops
//! it (as `Malformed`). Checking 20-60 bytes costs little next to the cache miss that brought
//! them in. Inner headers quoted by ICMP errors are not verified (the ICMP checksum covers
//! them), and TCP/UDP checksums are not verified: the rewrites update them incrementally,
//! so a damaged segment stays damaged and the receiver drops it, as with IPVS.

use std::net::IpAddr;

use super::ethernet::{ethertype, EthernetFrame};
use super::{icmpv4, icmpv6, ip_proto, ipv4, ipv6, tcp, udp, WireError};

/// IP version of a parsed packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// The TCP flags the connection state machine looks at.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No flag.
    pub const NONE: TcpFlags = TcpFlags(0);
    /// FIN.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// SYN.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// RST.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// PSH.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// ACK.
    pub const ACK: TcpFlags = TcpFlags(0x10);

    /// Whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// SYN is set.
    #[inline]
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    /// FIN is set.
    #[inline]
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    /// ACK is set.
    #[inline]
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
    /// RST is set.
    #[inline]
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// The packet an ICMP error quotes (its IP header and first bytes), as far as present.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Quoted {
    /// Offset of the quoted IP header in the frame.
    pub ip_offset: usize,
    /// Length of the quoted IP header (IPv4 IHL * 4; IPv6 40 plus skipped extensions).
    pub ip_header_len: usize,
    /// Offset of the quoted upper-layer header in the frame.
    pub l4_offset: usize,
    /// Quoted source address.
    pub src: IpAddr,
    /// Quoted destination address.
    pub dst: IpAddr,
    /// Quoted protocol (final next header for IPv6).
    pub protocol: u8,
    /// Quoted (source, destination) ports: TCP or UDP, first fragment, 4 bytes present.
    pub ports: Option<(u16, u16)>,
}

/// An ICMP or ICMPv6 message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IcmpInfo {
    /// Type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
    /// The four bytes after the checksum (echo id/seq, next-hop MTU, pointer).
    pub rest_of_header: u32,
    /// An error message whose quoted IP header is whole: [`Parsed::quoted`] describes it.
    /// The description itself is not kept here, so the packets of the fast path (TCP, UDP)
    /// do not carry its size around.
    pub quotes: bool,
}

/// The upper-layer header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum L4Info {
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags.
        flags: TcpFlags,
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6).
    Icmp(IcmpInfo),
    /// Another protocol, or a non-first fragment (no upper-layer header in it).
    Other,
}

/// The IP layer of a frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IpInfo {
    /// Version.
    pub version: IpVersion,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 protocol, or IPv6's final next header after the skipped extension headers.
    pub protocol: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// IPv4 DSCP/ECN byte or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 DF bit (always false for IPv6, where routers never fragment).
    pub dont_fragment: bool,
    /// A fragment: IPv4 MF or non-zero offset; IPv6 fragment header present.
    pub fragment: bool,
    /// IPv4 header length (IHL * 4) or 40 for IPv6 (extension headers not included).
    pub header_len: usize,
    /// Total L3 length: IPv4 total length or IPv6 payload length + 40. Shorter than the
    /// frame's remainder when Ethernet padding follows.
    pub len: usize,
    /// Offset of the upper-layer header in the frame.
    pub l4_offset: usize,
    /// The upper-layer header.
    pub l4: L4Info,
}

impl IpInfo {
    /// Source and destination ports of TCP/UDP.
    #[inline]
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4Info::Tcp {
                src_port, dst_port, ..
            }
            | L4Info::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }

    /// The ICMP message, if this is ICMP/ICMPv6.
    #[inline]
    pub fn icmp(&self) -> Option<&IcmpInfo> {
        match &self.l4 {
            L4Info::Icmp(i) => Some(i),
            _ => None,
        }
    }
}

impl IcmpInfo {
    /// Whether IPVS relays this error for a connection: ICMPv4 destination unreachable,
    /// source quench and time exceeded (ip_vs_in_icmp / ip_vs_out_icmp); every ICMPv6
    /// error type (type < 128). Parameter problem is not relayed for IPv4.
    #[inline]
    pub fn relayed_by_ipvs(&self, version: IpVersion) -> bool {
        match version {
            IpVersion::V4 => matches!(
                self.msg_type,
                icmpv4::msg_type::DEST_UNREACHABLE
                    | icmpv4::msg_type::SOURCE_QUENCH
                    | icmpv4::msg_type::TIME_EXCEEDED
            ),
            IpVersion::V6 => self.msg_type < 128,
        }
    }
}

/// A parsed frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// 802.1Q tag control information, if tagged.
    pub vlan: Option<u16>,
    /// EtherType of the payload (behind the tag).
    pub ethertype: u16,
    /// Offset of the L3 header: the Ethernet header length, 14 or 18.
    pub l3_offset: usize,
    /// The IP layer; None for ARP and every other non-IP EtherType (pass these on).
    pub ip: Option<IpInfo>,
}

impl Parsed {
    /// Length of the Ethernet header (tag included).
    #[inline]
    pub fn l2_len(&self) -> usize {
        self.l3_offset
    }

    /// Length of the frame without trailing Ethernet padding (for IP frames).
    #[inline]
    pub fn frame_len(&self) -> Option<usize> {
        self.ip.as_ref().map(|ip| self.l3_offset + ip.len)
    }

    /// The packet an ICMP error quotes, read from `frame` (the frame this was parsed from);
    /// `None` unless [`IcmpInfo::quotes`].
    pub fn quoted(&self, frame: &[u8]) -> Option<Quoted> {
        let ip = self.ip.as_ref()?;
        if !ip.icmp()?.quotes {
            return None;
        }
        let end = self.l3_offset + ip.len;
        match ip.version {
            IpVersion::V4 => quoted_ipv4(frame, ip.l4_offset + icmpv4::HEADER_LEN, end),
            IpVersion::V6 => quoted_ipv6(frame, ip.l4_offset + icmpv6::HEADER_LEN, end),
        }
    }
}

/// Parses a frame starting at its Ethernet header.
///
/// Non-IP EtherTypes (ARP, LLDP, ...) give `Ok` with `ip: None`. Errors mean a frame that
/// claims to be IP but is cut short, inconsistent, or has a wrong IPv4 header checksum.
/// Never panics, whatever the bytes.
#[inline]
pub fn parse_frame(frame: &[u8]) -> Result<Parsed, WireError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let l3_offset = eth.header_len();
    let ethertype = eth.ethertype();
    let ip = match ethertype {
        ethertype::IPV4 => Some(parse_ipv4(frame, l3_offset)?),
        ethertype::IPV6 => Some(parse_ipv6(frame, l3_offset)?),
        _ => None,
    };
    Ok(Parsed {
        dst_mac: eth.dst_addr(),
        src_mac: eth.src_addr(),
        vlan: eth.vlan_tci(),
        ethertype,
        l3_offset,
        ip,
    })
}

#[inline]
fn parse_ipv4(frame: &[u8], l3: usize) -> Result<IpInfo, WireError> {
    let p = ipv4::Packet::new_checked(&frame[l3..])?;
    if !p.verify_checksum() {
        return bad_checksum();
    }
    let header_len = p.header_len();
    let len = usize::from(p.total_len());
    let l4_offset = l3 + header_len;
    // A fragment's upper-layer header may be cut (or absent): the pipeline drops
    // fragments as such, not as malformed.
    let l4 = match parse_l4(frame, l4_offset, l3 + len, p.protocol(), IpVersion::V4) {
        Ok(l4) if p.frag_offset() == 0 => l4,
        Err(e) if !p.is_fragment() => return Err(e),
        _ => L4Info::Other,
    };
    Ok(IpInfo {
        version: IpVersion::V4,
        src: IpAddr::V4(p.src_addr()),
        dst: IpAddr::V4(p.dst_addr()),
        protocol: p.protocol(),
        ttl: p.ttl(),
        tos: p.tos(),
        dont_fragment: p.dont_frag(),
        fragment: p.is_fragment(),
        header_len,
        len,
        l4_offset,
        l4,
    })
}

#[inline(never)]
#[cold]
fn bad_checksum<T>() -> Result<T, WireError> {
    Err(WireError::BadChecksum)
}

#[inline]
fn parse_ipv6(frame: &[u8], l3: usize) -> Result<IpInfo, WireError> {
    let p = ipv6::Packet::new_checked(&frame[l3..])?;
    let len = ipv6::HEADER_LEN + usize::from(p.payload_len());
    let up = ipv6::upper_layer(p.payload(), p.next_header())?;
    let l4_offset = l3 + ipv6::HEADER_LEN + up.offset;
    let l4 = if up.later_fragment {
        L4Info::Other
    } else {
        match parse_l4(frame, l4_offset, l3 + len, up.protocol, IpVersion::V6) {
            Ok(l4) => l4,
            Err(e) if !up.fragment => return Err(e),
            Err(_) => L4Info::Other,
        }
    };
    Ok(IpInfo {
        version: IpVersion::V6,
        src: IpAddr::V6(p.src_addr()),
        dst: IpAddr::V6(p.dst_addr()),
        protocol: up.protocol,
        ttl: p.hop_limit(),
        tos: p.traffic_class(),
        dont_fragment: false,
        fragment: up.fragment,
        header_len: ipv6::HEADER_LEN,
        len,
        l4_offset,
        l4,
    })
}

/// Parses the upper-layer header in `frame[start..end]`.
#[inline]
fn parse_l4(
    frame: &[u8],
    start: usize,
    end: usize,
    protocol: u8,
    version: IpVersion,
) -> Result<L4Info, WireError> {
    let seg = &frame[start..end];
    Ok(match (protocol, version) {
        (ip_proto::TCP, _) => {
            let t = tcp::Packet::new_checked(seg)?;
            L4Info::Tcp {
                src_port: t.src_port(),
                dst_port: t.dst_port(),
                flags: TcpFlags(t.flags()),
            }
        }
        (ip_proto::UDP, _) => {
            let u = udp::Packet::new_checked(seg)?;
            L4Info::Udp {
                src_port: u.src_port(),
                dst_port: u.dst_port(),
            }
        }
        (ip_proto::ICMP, IpVersion::V4) => {
            let i = icmpv4::Packet::new_checked(seg)?;
            let error = matches!(i.msg_type(), 3 | 4 | 5 | 11 | 12);
            L4Info::Icmp(IcmpInfo {
                msg_type: i.msg_type(),
                code: i.code(),
                rest_of_header: i.rest_of_header(),
                quotes: error && quoted_ipv4(frame, start + icmpv4::HEADER_LEN, end).is_some(),
            })
        }
        (ip_proto::ICMPV6, IpVersion::V6) => {
            let i = icmpv6::Packet::new_checked(seg)?;
            let error = i.msg_type() < 128;
            L4Info::Icmp(IcmpInfo {
                msg_type: i.msg_type(),
                code: i.code(),
                rest_of_header: i.rest_of_header(),
                quotes: error && quoted_ipv6(frame, start + icmpv6::HEADER_LEN, end).is_some(),
            })
        }
        _ => L4Info::Other,
    })
}

/// The quoted IPv4 packet of an ICMP error: its header must be whole, the rest may be cut.
#[inline(never)]
fn quoted_ipv4(frame: &[u8], start: usize, end: usize) -> Option<Quoted> {
    let b = frame.get(start..end)?;
    if b.len() < ipv4::HEADER_LEN || b[0] >> 4 != 4 {
        return None;
    }
    let p = ipv4::Packet::new_unchecked(b);
    let hl = p.header_len();
    if hl < ipv4::HEADER_LEN || b.len() < hl {
        return None;
    }
    let protocol = p.protocol();
    let ports = if p.frag_offset() == 0 {
        quoted_ports(protocol, &b[hl..])
    } else {
        None
    };
    Some(Quoted {
        ip_offset: start,
        ip_header_len: hl,
        l4_offset: start + hl,
        src: IpAddr::V4(p.src_addr()),
        dst: IpAddr::V4(p.dst_addr()),
        protocol,
        ports,
    })
}

/// The quoted IPv6 packet of an ICMPv6 error, extension headers skipped as far as present.
#[inline(never)]
fn quoted_ipv6(frame: &[u8], start: usize, end: usize) -> Option<Quoted> {
    let b = frame.get(start..end)?;
    if b.len() < ipv6::HEADER_LEN || b[0] >> 4 != 6 {
        return None;
    }
    let p = ipv6::Packet::new_unchecked(b);
    let up = ipv6::upper_layer(&b[ipv6::HEADER_LEN..], p.next_header()).ok()?;
    let hl = ipv6::HEADER_LEN + up.offset;
    let ports = if up.later_fragment {
        None
    } else {
        quoted_ports(up.protocol, &b[hl..])
    };
    Some(Quoted {
        ip_offset: start,
        ip_header_len: hl,
        l4_offset: start + hl,
        src: IpAddr::V6(p.src_addr()),
        dst: IpAddr::V6(p.dst_addr()),
        protocol: up.protocol,
        ports,
    })
}

#[inline]
fn quoted_ports(protocol: u8, l4: &[u8]) -> Option<(u16, u16)> {
    if (protocol == ip_proto::TCP || protocol == ip_proto::UDP) && l4.len() >= 4 {
        Some((
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testkit::{self, Spec, L4};
    use proptest::prelude::*;

    #[test]
    fn tcp_ipv4_vlan_options_and_padding() {
        let mut s = Spec::tcp("10.0.0.1", "192.0.2.10", 40000, 80);
        s.vlan = Some(100);
        s.ipv4_options = vec![1, 1, 1, 0];
        s.payload.clear();
        let mut f = s.frame();
        let real_len = f.len();
        f.extend_from_slice(&[0; 6]); // Ethernet padding
        let p = parse_frame(&f).unwrap();
        assert_eq!(p.dst_mac, testkit::DIRECTOR_MAC);
        assert_eq!(p.src_mac, testkit::CLIENT_MAC);
        assert_eq!(p.vlan, Some(100));
        assert_eq!((p.ethertype, p.l3_offset), (0x0800, 18));
        let ip = p.ip.unwrap();
        assert_eq!(ip.version, IpVersion::V4);
        assert_eq!(ip.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ip.dst, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!((ip.protocol, ip.ttl, ip.tos), (6, 64, 0x10));
        assert!(ip.dont_fragment && !ip.fragment);
        assert_eq!(
            (ip.header_len, ip.len, ip.l4_offset),
            (24, 24 + 20, 18 + 24)
        );
        assert_eq!(p.frame_len(), Some(real_len));
        match ip.l4 {
            L4Info::Tcp {
                src_port,
                dst_port,
                flags,
            } => {
                assert_eq!((src_port, dst_port), (40000, 80));
                assert!(flags.syn() && !flags.ack() && !flags.fin() && !flags.rst());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ip.ports(), Some((40000, 80)));
    }

    #[test]
    fn udp_ipv6_behind_hop_by_hop_and_dest_options() {
        let s = Spec::udp("2001:db8::1", "2001:db8::10", 5353, 53);
        let mut f = s.frame();
        // Insert hop-by-hop (8 bytes) then destination options (8 bytes) before UDP.
        let ext = [60u8, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
        f.splice(54..54, ext);
        f[14 + 6] = 0; // next header: hop-by-hop
        let pl = u16::from_be_bytes([f[18], f[19]]) + 16;
        f[18..20].copy_from_slice(&pl.to_be_bytes());
        let ip = parse_frame(&f).unwrap().ip.unwrap();
        assert_eq!(ip.version, IpVersion::V6);
        assert_eq!((ip.protocol, ip.ttl, ip.tos), (17, 64, 0x10));
        assert!(!ip.dont_fragment && !ip.fragment);
        assert_eq!(
            (ip.header_len, ip.l4_offset, ip.len),
            (40, 14 + 56, f.len() - 14)
        );
        assert_eq!(ip.ports(), Some((5353, 53)));
    }

    #[test]
    fn arp_and_other_ethertypes_are_not_ip() {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&testkit::CLIENT_MAC);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[0; 20]);
        let p = parse_frame(&f).unwrap();
        assert_eq!((p.ethertype, p.ip), (0x0806, None));
        f[12] = 0x88;
        f[13] = 0xcc; // LLDP
        assert_eq!(parse_frame(&f).unwrap().ip, None);
    }

    #[test]
    fn wrong_ipv4_header_checksum_is_an_error() {
        let mut f = Spec::tcp("10.0.0.1", "10.0.0.2", 1, 2).frame();
        f[14 + 10] ^= 0x01;
        assert_eq!(parse_frame(&f), Err(WireError::BadChecksum));
    }

    #[test]
    fn truncated_l4_is_an_error_unless_fragment() {
        let f = Spec::tcp("10.0.0.1", "10.0.0.2", 1, 2).frame();
        let mut cut = f[..14 + 20 + 19].to_vec();
        cut[14 + 3] = 39; // total length 39: TCP header one byte short
        cut[14 + 10] = 0;
        cut[14 + 11] = 0;
        let c = crate::wire::checksum::ipv4_header(&cut[14..34]);
        cut[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_frame(&cut), Err(WireError::Truncated));
        // The same bytes as a first fragment (MF) parse, with no L4 information.
        cut[14 + 6] = 0x20;
        cut[24] = 0;
        cut[25] = 0;
        let c = crate::wire::checksum::ipv4_header(&cut[14..34]);
        cut[24..26].copy_from_slice(&c.to_be_bytes());
        let ip = parse_frame(&cut).unwrap().ip.unwrap();
        assert!(ip.fragment);
        assert_eq!(ip.l4, L4Info::Other);
    }

    #[test]
    fn later_ipv4_fragment_has_no_ports() {
        let mut f = Spec::udp("10.0.0.1", "10.0.0.2", 1, 2).frame();
        f[14 + 6] = 0x00;
        f[14 + 7] = 0x10; // offset 128
        f[24] = 0;
        f[25] = 0;
        let c = crate::wire::checksum::ipv4_header(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let ip = parse_frame(&f).unwrap().ip.unwrap();
        assert!(ip.fragment && !ip.dont_fragment);
        assert_eq!((ip.protocol, ip.l4), (17, L4Info::Other));
    }

    #[test]
    fn icmp_error_quotes_the_offending_packet() {
        let inner = Spec::tcp("192.0.2.10", "198.51.100.7", 80, 40000).ip_packet();
        let f = testkit::icmp_error(Some(5), "203.0.113.1", "192.0.2.10", 3, 4, &inner, 28);
        let p = parse_frame(&f).unwrap();
        let ip = p.ip.unwrap();
        let icmp = ip.icmp().unwrap();
        assert_eq!(
            (icmp.msg_type, icmp.code, icmp.rest_of_header, icmp.quotes),
            (3, 4, 1500, true)
        );
        assert!(icmp.relayed_by_ipvs(IpVersion::V4));
        let q = p.quoted(&f).unwrap();
        assert_eq!(q.ip_offset, 18 + 20 + 8);
        assert_eq!((q.ip_header_len, q.l4_offset), (20, 18 + 20 + 8 + 20));
        assert_eq!(q.src, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(q.dst, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!((q.protocol, q.ports), (6, Some((80, 40000))));

        // Quoting only the IP header: no ports. Quoting less: no quote at all.
        let f = testkit::icmp_error(None, "203.0.113.1", "192.0.2.10", 11, 0, &inner, 20);
        let q = parse_frame(&f).unwrap().quoted(&f).unwrap();
        assert_eq!(q.ports, None);
        let f = testkit::icmp_error(None, "203.0.113.1", "192.0.2.10", 11, 0, &inner, 19);
        let p = parse_frame(&f).unwrap();
        assert!(!p.ip.unwrap().icmp().unwrap().quotes);
        assert_eq!(p.quoted(&f), None);
    }

    #[test]
    fn icmpv6_error_and_echo() {
        let inner = Spec::udp("2001:db8::10", "2001:db8:1::7", 53, 5353).ip_packet();
        let f = testkit::icmp_error(None, "2001:db8:ff::1", "2001:db8::10", 2, 0, &inner, 48);
        let p = parse_frame(&f).unwrap();
        let ip = p.ip.unwrap();
        let icmp = ip.icmp().unwrap();
        assert_eq!((ip.protocol, icmp.msg_type), (58, 2));
        assert!(icmp.relayed_by_ipvs(IpVersion::V6));
        let q = p.quoted(&f).unwrap();
        assert_eq!((q.ip_offset, q.l4_offset), (14 + 40 + 8, 14 + 40 + 8 + 40));
        assert_eq!((q.protocol, q.ports), (17, Some((53, 5353))));

        let mut s = Spec::tcp("2001:db8::1", "2001:db8::2", 0, 0);
        s.l4 = L4::Icmp {
            ty: 128,
            code: 0,
            rest: [0, 1, 0, 2],
        };
        let f = s.frame();
        let p = parse_frame(&f).unwrap();
        let icmp = *p.ip.unwrap().icmp().unwrap();
        assert_eq!(
            (icmp.msg_type, icmp.rest_of_header, icmp.quotes),
            (128, 0x0001_0002, false)
        );
        assert_eq!(p.quoted(&f), None);
        assert!(!icmp.relayed_by_ipvs(IpVersion::V6));
    }

    #[test]
    fn parameter_problem_is_parsed_but_not_relayed() {
        let inner = Spec::udp("192.0.2.10", "198.51.100.7", 53, 9).ip_packet();
        let f = testkit::icmp_error(None, "203.0.113.1", "192.0.2.10", 12, 0, &inner, 28);
        let icmp = *parse_frame(&f).unwrap().ip.unwrap().icmp().unwrap();
        assert!(icmp.quotes);
        assert!(!icmp.relayed_by_ipvs(IpVersion::V4));
    }

    fn addr(v6: bool, b: [u8; 16]) -> IpAddr {
        if v6 {
            IpAddr::V6(b.into())
        } else {
            IpAddr::V4([b[0], b[1], b[2], b[3]].into())
        }
    }

    prop_compose! {
        fn spec()(v6 in any::<bool>(), a in any::<[u8; 16]>(), b in any::<[u8; 16]>(),
                  vlan in proptest::option::of(0u16..4095), ttl in any::<u8>(),
                  tos in any::<u8>(), df in any::<bool>(), opt_words in 0usize..=10,
                  kind in 0u8..3, sport in any::<u16>(), dport in any::<u16>(),
                  flags in any::<[bool; 4]>(), icmp_type in any::<u8>(),
                  payload in proptest::collection::vec(any::<u8>(), 0..64)) -> Spec {
            let l4 = match kind {
                0 => L4::Tcp { sport, dport, syn: flags[0], ack: flags[1], fin: flags[2],
                               rst: flags[3] },
                1 => L4::Udp { sport, dport },
                // Keep clear of error types: their payload would be read as a quote.
                _ => L4::Icmp { ty: icmp_type | 0x80, code: 0, rest: [0; 4] },
            };
            let l4 = match (&l4, v6) {
                (L4::Icmp { ty, .. }, false) if *ty != 0x80 => L4::Icmp { ty: 8, code: 0, rest: [1, 2, 3, 4] },
                _ => l4,
            };
            Spec { vlan, src: addr(v6, a), dst: addr(v6, b), ttl, tos, df,
                   ipv4_options: vec![1; opt_words * 4], l4, payload }
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_frame(&bytes);
        }

        #[test]
        fn never_panics_on_arbitrary_ip_after_ethernet(
            v6 in any::<bool>(), vlan in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut f = vec![0u8; 12];
            if vlan {
                f.extend_from_slice(&[0x81, 0, 0, 1]);
            }
            f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
            f.extend_from_slice(&body);
            if let Some(b) = f.get_mut(if vlan { 18 } else { 14 }) {
                *b = (*b & 0x0f) | if v6 { 0x60 } else { 0x40 };
            }
            let _ = parse_frame(&f);
        }

        #[test]
        fn truncations_of_valid_frames_never_panic(s in spec(), cut in any::<prop::sample::Index>()) {
            let f = s.frame();
            let n = cut.index(f.len());
            let r = parse_frame(&f[..n]);
            // Cut anywhere inside the IP packet, a frame cannot parse as whole.
            prop_assert!(r.is_err());
        }

        #[test]
        fn agrees_with_etherparse(s in spec()) {
            let f = s.frame();
            testkit::assert_checksums(&f);
            let p = parse_frame(&f).unwrap();
            let e = etherparse::PacketHeaders::from_ethernet_slice(&f).unwrap();
            let eth = e.link.clone().unwrap().ethernet2().unwrap();
            prop_assert_eq!(p.dst_mac, eth.destination);
            prop_assert_eq!(p.src_mac, eth.source);
            match &e.vlan {
                Some(etherparse::VlanHeader::Single(v)) => {
                    prop_assert_eq!(p.vlan.map(|t| t & 0x0fff), Some(v.vlan_id.value()));
                    prop_assert_eq!(p.l3_offset, 18);
                }
                None => prop_assert_eq!((p.vlan, p.l3_offset), (None, 14)),
                Some(other) => panic!("{other:?}"),
            }
            let ip = p.ip.unwrap();
            match e.net.as_ref().unwrap() {
                etherparse::NetHeaders::Ipv4(h, _) => {
                    prop_assert_eq!(ip.version, IpVersion::V4);
                    prop_assert_eq!(ip.src, IpAddr::from(h.source));
                    prop_assert_eq!(ip.dst, IpAddr::from(h.destination));
                    prop_assert_eq!(ip.ttl, h.time_to_live);
                    prop_assert_eq!(ip.protocol, h.protocol.0);
                    prop_assert_eq!(ip.dont_fragment, h.dont_fragment);
                    prop_assert_eq!(ip.header_len, h.header_len());
                    prop_assert_eq!(ip.len, usize::from(h.total_len));
                    prop_assert_eq!(ip.tos, (h.dscp.value() << 2) | h.ecn.value());
                }
                etherparse::NetHeaders::Ipv6(h, _) => {
                    prop_assert_eq!(ip.version, IpVersion::V6);
                    prop_assert_eq!(ip.src, IpAddr::from(h.source));
                    prop_assert_eq!(ip.dst, IpAddr::from(h.destination));
                    prop_assert_eq!(ip.ttl, h.hop_limit);
                    prop_assert_eq!(ip.protocol, h.next_header.0);
                    prop_assert_eq!(ip.len, 40 + usize::from(h.payload_length));
                    prop_assert_eq!(ip.tos, h.traffic_class);
                }
            }
            prop_assert_eq!(ip.len + p.l3_offset, f.len());
            let payload_len = e.payload.slice().len();
            match (&e.transport, ip.l4) {
                (Some(etherparse::TransportHeader::Tcp(t)), L4Info::Tcp { src_port, dst_port, flags }) => {
                    prop_assert_eq!((src_port, dst_port), (t.source_port, t.destination_port));
                    prop_assert_eq!((flags.syn(), flags.ack(), flags.fin(), flags.rst()),
                                    (t.syn, t.ack, t.fin, t.rst));
                    prop_assert_eq!(ip.l4_offset + t.header_len() + payload_len, f.len());
                }
                (Some(etherparse::TransportHeader::Udp(u)), L4Info::Udp { src_port, dst_port }) => {
                    prop_assert_eq!((src_port, dst_port), (u.source_port, u.destination_port));
                    prop_assert_eq!(ip.l4_offset + 8 + payload_len, f.len());
                }
                (Some(etherparse::TransportHeader::Icmpv4(i)), L4Info::Icmp(info)) => {
                    prop_assert_eq!(info.msg_type, i.to_bytes()[0]);
                }
                (Some(etherparse::TransportHeader::Icmpv6(i)), L4Info::Icmp(info)) => {
                    prop_assert_eq!(info.msg_type, i.to_bytes()[0]);
                }
                (t, l4) => panic!("{t:?} vs {l4:?}"),
            }
        }
    }
}
