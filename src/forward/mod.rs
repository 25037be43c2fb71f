//! Header rewrites for the three forwarding methods, ICMP relay and next hops.
//!
//! Every rewrite works in place on the frame (from its Ethernet header) and the [`Parsed`]
//! that [`crate::wire::parse_frame`] made of it, updates checksums incrementally (RFC 1624),
//! and reports a failure as the [`DropReason`] the pipeline counts. A rewrite that fails
//! leaves the frame as it was.
//!
//! **Partial checksums.** A TCP/UDP checksum a local sender left for the NIC to finish is
//! completed by [`partial::complete`] before any of these rewrites runs.
//!
//! **TTL.** IPVS decrements the TTL / hop limit of every packet it forwards, whatever the
//! method: `__ip_vs_get_out_rt` calls `decrement_ttl` for NAT, DR and TUN alike (ICMP relay
//! included), and NAT replies pass through the kernel's `ip_forward`, which decrements it
//! too. A packet arriving with TTL <= 1 is dropped (the kernel also sends ICMP time
//! exceeded; [`icmp::error_reply`] can build that answer). fastlb does the same: every
//! rewrite here decrements, or fails with [`DropReason::TtlExceeded`].

#![forbid(unsafe_code)]

pub mod icmp;
pub mod mac;
pub mod nat;
pub mod nexthop;
pub mod partial;
pub mod tun;

use std::net::IpAddr;

use crate::stats::DropReason;
use crate::wire::{checksum, ipv4, ipv6, tcp, udp, IpInfo, IpVersion, Parsed};

/// Offset of the TTL byte in an IPv4 header (the protocol follows it: the checksum update
/// takes the two as one word).
const IPV4_TTL: usize = ipv4::field::TTL;
/// Offset of the header checksum in an IPv4 header.
const IPV4_CHECKSUM: usize = ipv4::field::CHECKSUM.start;
/// Offset of the hop limit in an IPv6 header.
const IPV6_HOP_LIMIT: usize = ipv6::field::HOP_LIMIT;

/// Offset of an address in its IP header: the source's, or the destination's.
#[inline]
fn addr_offset(version: IpVersion, source: bool) -> usize {
    match (version, source) {
        (IpVersion::V4, true) => ipv4::field::SRC.start,
        (IpVersion::V4, false) => ipv4::field::DST.start,
        (IpVersion::V6, true) => ipv6::field::SRC.start,
        (IpVersion::V6, false) => ipv6::field::DST.start,
    }
}

/// Offset of a port in a TCP or UDP header (the same in both): the source's, or the
/// destination's.
#[inline]
fn port_offset(source: bool) -> usize {
    const _: () = assert!(tcp::field::SRC_PORT.start == udp::field::SRC_PORT.start);
    const _: () = assert!(tcp::field::DST_PORT.start == udp::field::DST_PORT.start);
    if source {
        tcp::field::SRC_PORT.start
    } else {
        tcp::field::DST_PORT.start
    }
}

/// The IP layer of a frame a rewrite can work on: IP, and the frame as long as `p` says.
#[inline]
fn ip_of<'p>(frame: &[u8], p: &'p Parsed) -> Result<&'p IpInfo, DropReason> {
    match &p.ip {
        Some(ip) if frame.len() >= p.l3_offset + ip.len => Ok(ip),
        Some(_) => malformed(),
        None => unsupported(),
    }
}

#[inline(never)]
#[cold]
fn malformed<T>() -> Result<T, DropReason> {
    Err(DropReason::Malformed)
}

#[inline(never)]
#[cold]
fn unsupported<T>() -> Result<T, DropReason> {
    Err(DropReason::Unsupported)
}

#[inline(never)]
#[cold]
fn ttl_exceeded<T>() -> Result<T, DropReason> {
    Err(DropReason::TtlExceeded)
}

/// Whether `addr` has the packet's address family.
#[inline]
fn same_family(ip: &IpInfo, addr: &IpAddr) -> bool {
    matches!(
        (ip.version, addr),
        (IpVersion::V4, IpAddr::V4(_)) | (IpVersion::V6, IpAddr::V6(_))
    )
}

/// Fails with [`DropReason::TtlExceeded`] if forwarding would take the TTL to 0.
#[inline]
fn check_ttl(ip: &IpInfo) -> Result<(), DropReason> {
    if ip.ttl <= 1 {
        return ttl_exceeded();
    }
    Ok(())
}

/// Decrements the TTL (with an incremental IPv4 header checksum update) or hop limit,
/// as IPVS's `decrement_ttl` does before it forwards a packet by any method.
///
/// Fails with [`DropReason::TtlExceeded`] when the TTL is 0 or 1 (the frame is left
/// unchanged), [`DropReason::Unsupported`] for a non-IP frame.
#[inline]
pub fn decrement_ttl(frame: &mut [u8], p: &Parsed) -> Result<(), DropReason> {
    let ip = ip_of(frame, p)?;
    check_ttl(ip)?;
    let l3 = p.l3_offset;
    match ip.version {
        IpVersion::V4 => {
            // One bounds check for the header; the checksum update needs neither the old
            // nor the new TTL word (`checksum::update_ttl_decrement`).
            let Some(h) = frame.get_mut(l3..l3 + IPV4_CHECKSUM + 2) else {
                return malformed();
            };
            h[IPV4_TTL] -= 1;
            update_field(h, IPV4_CHECKSUM, checksum::update_ttl_decrement);
        }
        IpVersion::V6 => frame[l3 + IPV6_HOP_LIMIT] -= 1,
    }
    Ok(())
}

/// Applies `f` to the big-endian 16-bit checksum at `at`.
#[inline]
fn update_field(frame: &mut [u8], at: usize, f: impl FnOnce(u16) -> u16) {
    let c = u16::from_be_bytes([frame[at], frame[at + 1]]);
    frame[at..at + 2].copy_from_slice(&f(c).to_be_bytes());
}

/// Reads the big-endian 16-bit word at `at`.
#[inline]
fn read16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// The bytes of an address: 4 of them for IPv4, 16 for IPv6.
#[inline]
fn octets(addr: &IpAddr) -> ([u8; 16], usize) {
    let mut o = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            o[..4].copy_from_slice(&a.octets());
            (o, 4)
        }
        IpAddr::V6(a) => {
            o.copy_from_slice(&a.octets());
            (o, 16)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_frame;
    use crate::wire::testkit::{assert_checksums, Spec};

    #[test]
    fn decrement_ttl_v4_and_v6() {
        for (src, dst) in [("10.0.0.1", "10.0.0.2"), ("2001:db8::1", "2001:db8::2")] {
            let mut f = Spec::tcp(src, dst, 1, 2).frame();
            let p = parse_frame(&f).unwrap();
            decrement_ttl(&mut f, &p).unwrap();
            assert_eq!(parse_frame(&f).unwrap().ip.unwrap().ttl, 63);
            assert_checksums(&f);
        }
    }

    #[test]
    fn ttl_one_is_exceeded_and_leaves_the_frame() {
        let mut s = Spec::udp("10.0.0.1", "10.0.0.2", 1, 2);
        s.ttl = 1;
        let mut f = s.frame();
        let before = f.clone();
        let p = parse_frame(&f).unwrap();
        assert_eq!(decrement_ttl(&mut f, &p), Err(DropReason::TtlExceeded));
        assert_eq!(f, before);
    }
}
