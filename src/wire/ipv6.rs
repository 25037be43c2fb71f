//! IPv6 headers (RFC 8200) and the walk over extension headers.
//!
//! ```text
//!  0       4               12                                  31
//! |version| traffic class |            flow label              |
//! |        payload length         |  next header  |  hop limit |
//! |                source address (16 bytes)                   |
//! |             destination address (16 bytes)                 |
//! ```

use std::net::Ipv6Addr;

use super::{ip_proto, read_u16, read_u32, write_u16, write_u32, Field, WireError};

/// Byte ranges of the header's fields, for rewrites elsewhere in the crate.
pub(crate) mod field {
    use super::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// Most extension headers [`upper_layer`] walks before giving up: a bound on per-packet work.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A view of an IPv6 packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than the header or payload length.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the version and that the payload length fits. The
    /// buffer may be longer (Ethernet padding).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The checks of [`Packet::new_checked`].
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        if b.len() < HEADER_LEN + self.payload_len() as usize {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6 after a checked construction).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    /// Traffic class (DSCP/ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }
    /// Flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }
    /// Payload length (everything after the fixed header, extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }
    /// Next header of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }
    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }
    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }
    /// Payload, up to the payload length (trailing padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, the traffic class and a zero flow label.
    #[inline]
    pub fn set_version_and_traffic_class(&mut self, tc: u8) {
        write_u32(
            self.buffer.as_mut(),
            field::VER_TC_FLOW,
            (6 << 28) | (u32::from(tc) << 20),
        );
    }
    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }
    /// Sets the next header of the fixed header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }
    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }
    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }
    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }
}

/// An IPv6 fixed header as fastlb builds one (tunnel outer headers, ICMPv6 errors): flow
/// label 0. [`Repr::emit`] is the one place such a header is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header ([`super::ip_proto`]).
    pub next_header: u8,
    /// Traffic class (DSCP/ECN).
    pub traffic_class: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Bytes after the fixed header.
    pub payload_len: usize,
}

impl Repr {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`]. A `payload_len` over 65535 is the caller's
    /// error (it is truncated to 16 bits).
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) {
        let mut h = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        h.set_version_and_traffic_class(self.traffic_class);
        h.set_payload_len(self.payload_len as u16);
        h.set_next_header(self.next_header);
        h.set_hop_limit(self.hop_limit);
        h.set_src_addr(self.src_addr);
        h.set_dst_addr(self.dst_addr);
    }
}

/// Where the upper-layer header of an IPv6 packet starts, past its extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The final next header: the upper-layer protocol (or one fastlb does not skip,
    /// e.g. 50 ESP, 51 AH, 59 no next header).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the payload.
    pub offset: usize,
    /// A fragment header was present.
    pub fragment: bool,
    /// A fragment header was present with a non-zero offset: no upper-layer header here.
    pub later_fragment: bool,
}

/// Walks hop-by-hop, routing, destination-options and fragment headers from `next_header`
/// over `payload` (the bytes after the fixed header, up to the payload length).
///
/// The walk stops at the first header it does not skip, and after a fragment header with a
/// non-zero offset (what follows is not a header).
pub fn upper_layer(payload: &[u8], mut next_header: u8) -> Result<UpperLayer, WireError> {
    let mut offset = 0usize;
    let mut fragment = false;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next_header {
            ip_proto::HOP_BY_HOP | ip_proto::IPV6_ROUTING | ip_proto::IPV6_DEST_OPTS => {
                let h = payload
                    .get(offset..offset + 2)
                    .ok_or(WireError::Truncated)?;
                let len = (usize::from(h[1]) + 1) * 8;
                if payload.len() < offset + len {
                    return Err(WireError::Truncated);
                }
                next_header = h[0];
                offset += len;
            }
            ip_proto::IPV6_FRAGMENT => {
                let h = payload
                    .get(offset..offset + 8)
                    .ok_or(WireError::Truncated)?;
                fragment = true;
                next_header = h[0];
                offset += 8;
                let frag_offset = u16::from_be_bytes([h[2], h[3]]) & 0xfff8;
                if frag_offset != 0 {
                    return Ok(UpperLayer {
                        protocol: next_header,
                        offset,
                        fragment,
                        later_fragment: true,
                    });
                }
            }
            _ => {
                return Ok(UpperLayer {
                    protocol: next_header,
                    offset,
                    fragment,
                    later_fragment: false,
                })
            }
        }
    }
    Err(WireError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8, payload_len: u16) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        b[0] = 0x6a; // version 6, TC 0xa5
        b[1] = 0x5f;
        b[2] = 0xab;
        b[3] = 0xcd; // flow label 0xfabcd
        b[4..6].copy_from_slice(&payload_len.to_be_bytes());
        b[6] = next;
        b[7] = 33;
        b[8] = 0x20;
        b[9] = 0x01;
        b[39] = 2;
        b
    }

    #[test]
    fn repr_writes_every_byte_of_the_header() {
        let r = Repr {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8:1::5".parse().unwrap(),
            next_header: ip_proto::IPV6,
            traffic_class: 0xb8,
            hop_limit: 63,
            payload_len: 60,
        };
        // Whatever the buffer held before (headroom) is overwritten.
        for fill in [0x00, 0xff] {
            let mut b = vec![fill; HEADER_LEN + 60];
            r.emit(&mut b);
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!((p.traffic_class(), p.flow_label()), (0xb8, 0));
            assert_eq!(
                (p.payload_len(), p.next_header(), p.hop_limit()),
                (60, 41, 63)
            );
            assert_eq!((p.src_addr(), p.dst_addr()), (r.src_addr, r.dst_addr));
        }
    }

    #[test]
    fn fixed_header_fields() {
        let mut b = header(ip_proto::UDP, 8);
        b.extend_from_slice(&[0; 8 + 4]); // payload and 4 padding bytes
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xa5);
        assert_eq!(p.flow_label(), 0xfabcd);
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (8, 17, 33)
        );
        assert_eq!(p.src_addr().segments()[0], 0x2001);
        assert_eq!(p.dst_addr(), "::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload().len(), 8);
        assert_eq!(
            Packet::new_checked(&b[..47]).unwrap_err(),
            WireError::Truncated
        );
    }

    #[test]
    fn walks_extension_headers() {
        // hop-by-hop (8 bytes) -> dest options (16 bytes) -> fragment (offset 0) -> TCP
        let mut pl = vec![ip_proto::IPV6_DEST_OPTS, 0, 0, 0, 0, 0, 0, 0];
        pl.extend_from_slice(&[ip_proto::IPV6_FRAGMENT, 1]);
        pl.extend_from_slice(&[0; 14]);
        pl.extend_from_slice(&[ip_proto::TCP, 0, 0, 1, 0, 0, 0, 7]); // offset 0, M set
        pl.extend_from_slice(&[0; 20]);
        let u = upper_layer(&pl, ip_proto::HOP_BY_HOP).unwrap();
        assert_eq!(
            u,
            UpperLayer {
                protocol: 6,
                offset: 32,
                fragment: true,
                later_fragment: false
            }
        );
    }

    #[test]
    fn later_fragment_stops_the_walk() {
        let pl = [ip_proto::UDP, 0, 0x01, 0x00, 0, 0, 0, 1, 0xff, 0xff];
        let u = upper_layer(&pl, ip_proto::IPV6_FRAGMENT).unwrap();
        assert!(u.fragment && u.later_fragment);
        assert_eq!((u.protocol, u.offset), (17, 8));
    }

    #[test]
    fn truncated_or_endless_chains() {
        assert_eq!(
            upper_layer(&[6, 1, 0, 0], 0).unwrap_err(),
            WireError::Truncated
        );
        let chain = [0u8; 8 * 10]; // ten hop-by-hop headers
        assert_eq!(upper_layer(&chain, 0).unwrap_err(), WireError::Malformed);
    }
}
