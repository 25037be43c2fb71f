//! IPv4 headers (RFC 791), options included.
//!
//! ```text
//!  0       4       8              16    19                    31
//! |version|  IHL  |  DSCP/ECN     |        total length        |
//! |        identification         |flags|   fragment offset    |
//! |     TTL       |   protocol    |      header checksum       |
//! |                       source address                       |
//! |                    destination address                     |
//! |                options (IHL > 5) ...                       |
//! ```

use std::net::Ipv4Addr;

use super::{checksum, read_u16, write_u16, Field, WireError};

/// Byte ranges of the header's fields, for rewrites elsewhere in the crate.
pub(crate) mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    ///
    /// # Panics
    /// Accessors panic if the buffer is shorter than the header or total length.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking version, header length and total length against it.
    /// The buffer may be longer than the total length (Ethernet padding); the checksum is
    /// not checked here (see [`Packet::verify_checksum`]).
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
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        let total = self.total_len() as usize;
        if total < hl {
            return Err(WireError::Malformed);
        }
        if b.len() < hl || b.len() < total {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (4 after a checked construction).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }
    /// The DSCP/ECN byte (former TOS).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }
    /// Total length: header plus payload.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }
    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }
    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & DF != 0
    }
    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & MF != 0
    }
    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }
    /// Whether this is a fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & (MF | OFFSET_MASK) != 0
    }
    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }
    /// Upper-layer protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }
    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }
    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }
    /// Whether the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
    /// Options (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }
    /// Payload, up to the total length (trailing padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }
    /// Sets the DSCP/ECN byte.
    #[inline]
    pub fn set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }
    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, v);
    }
    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, v);
    }
    /// Sets the flags and fragment offset: DF as given, MF clear, offset 0.
    #[inline]
    pub fn set_unfragmented(&mut self, dont_frag: bool) {
        write_u16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            if dont_frag { DF } else { 0 },
        );
    }
    /// Sets the TTL (the checksum is not updated).
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }
    /// Sets the protocol (the checksum is not updated).
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
    /// Sets the source address (the checksum is not updated).
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }
    /// Sets the destination address (the checksum is not updated).
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }
    /// Computes and writes the header checksum in full.
    #[inline]
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let c = checksum::ipv4_header(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }
}

/// An IPv4 header as fastlb builds one (tunnel outer headers, ICMP errors): no options,
/// MF and the fragment offset clear. [`Repr::emit`] is the one place such a header is
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Upper-layer protocol ([`super::ip_proto`]).
    pub protocol: u8,
    /// The DSCP/ECN byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// Time to live.
    pub ttl: u8,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Repr {
    /// Writes the header, its checksum filled, into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`]. A `payload_len` over 65515 is the caller's
    /// error (the total length is truncated to 16 bits).
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) {
        let mut h = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        h.set_version_and_header_len(HEADER_LEN);
        h.set_tos(self.tos);
        h.set_total_len((HEADER_LEN + self.payload_len) as u16);
        h.set_ident(self.ident);
        h.set_unfragmented(self.dont_frag);
        h.set_ttl(self.ttl);
        h.set_protocol(self.protocol);
        h.set_src_addr(self.src_addr);
        h.set_dst_addr(self.dst_addr);
        h.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.0.0.1 -> 10.0.0.2, TCP, DF, TTL 64, one 4-byte option (NOP x3 + EOL), 4 payload
    // bytes, 2 bytes of trailing padding.
    fn packet() -> Vec<u8> {
        let mut b = vec![
            0x46, 0x00, 0x00, 28, 0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 1,
            1, 1, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0,
        ];
        let c = checksum::ipv4_header(&b[..24]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn fields_with_options_and_padding() {
        let b = packet();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!((p.ttl(), p.protocol()), (64, 6));
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn rejects_bad_lengths() {
        let b = packet();
        assert_eq!(
            Packet::new_checked(&b[..27]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = b.clone();
        bad[0] = 0x44; // IHL 4
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut bad = b.clone();
        bad[3] = 20; // total < header
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut bad = b.clone();
        bad[0] = 0x66;
        assert_eq!(
            Packet::new_checked(&bad[..]).unwrap_err(),
            WireError::Malformed
        );
        let mut bad = b;
        bad[0] = 0x4f; // 60-byte header in a 30-byte buffer
        assert!(Packet::new_checked(&bad[..]).is_err());
    }

    #[test]
    fn fragment_fields() {
        let mut b = packet();
        b[6] = 0x20; // MF
        b[7] = 0x03; // offset 3 * 8
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.more_frags() && p.is_fragment() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 24);
    }

    #[test]
    fn repr_writes_every_byte_of_the_header() {
        let r = Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 1, 0, 5),
            protocol: 4,
            tos: 0xb8,
            ident: 0x1234,
            dont_frag: true,
            ttl: 63,
            payload_len: 40,
        };
        // Whatever the buffer held before (headroom) is overwritten.
        for fill in [0x00, 0xff] {
            let mut b = vec![fill; HEADER_LEN + 40];
            r.emit(&mut b);
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!((p.header_len(), p.total_len()), (20, 60));
            assert_eq!(
                (p.tos(), p.ident(), p.ttl(), p.protocol()),
                (0xb8, 0x1234, 63, 4)
            );
            assert!(p.dont_frag() && !p.is_fragment());
            assert_eq!((p.src_addr(), p.dst_addr()), (r.src_addr, r.dst_addr));
            assert!(p.verify_checksum());
        }
        let mut b = [0u8; HEADER_LEN];
        Repr {
            dont_frag: false,
            ..r
        }
        .emit(&mut b);
        assert!(!Packet::new_checked(&b[..]).is_ok_and(|p| p.dont_frag()));
    }

    #[test]
    fn setters_and_fill_checksum() {
        let mut b = packet();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_ttl(1);
        p.set_dst_addr(Ipv4Addr::new(192, 168, 1, 1));
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 1, 1));
    }
}
