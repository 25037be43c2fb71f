//! Zero-copy header views over frame bytes.
//!
//! Modelled on smoltcp's `wire`: one file per protocol, each a `Packet<T: AsRef<[u8]>>` view
//! whose `new_checked` constructor validates lengths once, after which no accessor panics.
//! Setters exist on `T: AsMut<[u8]>` and rewrite in place. [`parse_frame`] runs all views
//! in a single pass and returns the small `Copy` summary ([`Parsed`]) the per-packet path
//! works from.

#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
mod frame;
pub mod icmp;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
mod parse;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testkit;
pub mod udp;

pub use frame::Frame;
pub use parse::{parse_frame, IcmpInfo, IpInfo, IpVersion, L4Info, Parsed, Quoted, TcpFlags};

use core::fmt;
use core::ops::{Range, RangeFrom};

/// A fixed byte range of a header.
pub type Field = Range<usize>;
/// The bytes from an offset to the end of a buffer.
pub type Rest = RangeFrom<usize>;

/// IP protocol numbers fastlb looks at.
pub mod ip_proto {
    /// IPv6 hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IPv4 encapsulated in IP (IPIP, used by LVS-TUN).
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulated in IP (used by LVS-TUN for IPv6).
    pub const IPV6: u8 = 41;
    /// IPv6 routing header.
    pub const IPV6_ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const IPV6_FRAGMENT: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 destination options.
    pub const IPV6_DEST_OPTS: u8 = 60;
}

/// An IP header to build, of either family: what tunnel encapsulation and ICMP errors
/// write in front of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRepr {
    /// An IPv4 header.
    V4(ipv4::Repr),
    /// An IPv6 fixed header.
    V6(ipv6::Repr),
}

impl IpRepr {
    /// Bytes [`IpRepr::emit`] writes.
    #[inline]
    pub fn header_len(&self) -> usize {
        match self {
            IpRepr::V4(_) => ipv4::HEADER_LEN,
            IpRepr::V6(_) => ipv6::HEADER_LEN,
        }
    }

    /// Writes the header into the first [`IpRepr::header_len`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than that.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) {
        match self {
            IpRepr::V4(r) => r.emit(buf),
            IpRepr::V6(r) => r.emit(buf),
        }
    }
}

/// Why bytes did not parse as the header they claim to be.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer ends before the header (or the length it announces) does.
    Truncated,
    /// A field holds an impossible value (version, header length, total length).
    Malformed,
    /// The IPv4 header checksum does not verify.
    BadChecksum,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "truncated header",
            WireError::Malformed => "malformed header",
            WireError::BadChecksum => "bad IPv4 header checksum",
        })
    }
}

impl std::error::Error for WireError {}

/// Big-endian field access by byte range, shared by every wire format fastlb reads.
#[inline]
pub(crate) fn read_u16(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}

/// Big-endian field access by byte range, shared by every wire format fastlb reads.
#[inline]
pub(crate) fn read_u32(b: &[u8], f: Field) -> u32 {
    u32::from_be_bytes([b[f.start], b[f.start + 1], b[f.start + 2], b[f.start + 3]])
}

/// Big-endian field access by byte range, shared by every wire format fastlb reads.
#[inline]
pub(crate) fn write_u16(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

/// Big-endian field access by byte range, shared by every wire format fastlb reads.
#[inline]
pub(crate) fn write_u32(b: &mut [u8], f: Field, v: u32) {
    b[f].copy_from_slice(&v.to_be_bytes());
}
