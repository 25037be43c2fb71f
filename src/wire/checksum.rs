//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are kept folded to 16 bits and *not* complemented; a checksum field holds the
//! complement of the sum. The per-packet rewrites only ever use the incremental updates;
//! the full computations are for headers fastlb builds itself and for tests.
//!
//! **UDP over IPv4.** A UDP checksum of 0 means "no checksum" (RFC 768): a rewrite leaves it
//! 0, and a computed checksum that comes out 0 is sent as 0xffff (its one's-complement twin).
//! [`update_udp`] and [`udp_nonzero`] implement both halves of that rule.

use std::net::IpAddr;

/// Folds a wide one's-complement accumulator to 16 bits with end-around carry.
#[inline]
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// One's-complement sum of `data` as big-endian 16-bit words, an odd last byte padded with
/// a zero byte. Not complemented.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    fold(acc)
}

/// One's-complement addition of two folded sums.
#[inline]
pub fn combine(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// The checksum (complemented sum) of `data`. Over a header whose checksum field is filled
/// in correctly, this is 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// The IPv4 header checksum of `header` (IHL * 4 bytes), computed as if the checksum field
/// (bytes 10..12) were zero, so it can be called on a header whose field is stale.
#[inline]
pub fn ipv4_header(header: &[u8]) -> u16 {
    let s = combine(sum(&header[..10]), sum(&header[12..]));
    !s
}

/// One's-complement sum of an address's bytes.
#[inline]
pub fn addr_sum(addr: &IpAddr) -> u16 {
    match addr {
        IpAddr::V4(a) => sum(&a.octets()),
        IpAddr::V6(a) => sum(&a.octets()),
    }
}

/// Sum of the IPv4 or IPv6 pseudo-header for an upper-layer segment of `length` bytes.
/// The addresses should be of one family (mixed ones give a meaningless sum, no panic).
#[inline]
pub fn pseudo_header(src: &IpAddr, dst: &IpAddr, protocol: u8, length: u32) -> u16 {
    let addrs = combine(addr_sum(src), addr_sum(dst));
    // IPv4 carries a 16-bit length and IPv6 a 32-bit one; summing the 32-bit value as two
    // words gives the same result for both.
    let len = combine((length >> 16) as u16, length as u16);
    combine(combine(addrs, u16::from(protocol)), len)
}

/// [`pseudo_header`] from the header bytes that hold the two addresses back to back, source
/// first: IPv4 bytes 12..20 (`N` = 8), IPv6 bytes 8..40 (`N` = 32). The per-packet form: no
/// address is built; the bytes are added as 64-bit words with end-around carry (one load
/// for both IPv4 addresses), then folded.
#[inline(always)]
pub fn pseudo_header_at<const N: usize>(addrs: &[u8; N], protocol: u8, length: u32) -> u16 {
    const { assert!(N % 8 == 0, "whole 64-bit words") };
    // The length as one 32-bit word sums the same as its two 16-bit halves, once folded.
    let mut acc = u64::from(protocol) + u64::from(length);
    for w in addrs.chunks_exact(8) {
        let word = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        let (s, carry) = acc.overflowing_add(word);
        acc = s + u64::from(carry);
    }
    // Fold with end-around carry: 64 -> 32 -> 16 bits, one add and one carry each (a
    // carry-in never overflows again: the sum that carried is at most 2 * max - 1).
    let (s, carry) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let acc = s + u32::from(carry);
    let (s, carry) = (acc as u16).overflowing_add((acc >> 16) as u16);
    s + u16::from(carry)
}

/// The TCP/UDP/ICMPv6 checksum of `segment` with the pseudo-header. Zero the segment's
/// checksum field first to compute it; over a segment whose field is correct this is 0.
/// For UDP pass the result through [`udp_nonzero`].
#[inline]
pub fn l4(src: &IpAddr, dst: &IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let ph = pseudo_header(src, dst, protocol, segment.len() as u32);
    !combine(ph, sum(segment))
}

/// A computed UDP checksum as sent: 0 becomes 0xffff, since 0 means "no checksum".
#[inline]
pub fn udp_nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// RFC 1624 eqn. 3: the checksum `hc` after a 16-bit word changed from `old` to `new`.
/// `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!hc) + u64::from(!old) + u64::from(new))
}

/// [`update16`] for an IPv4 TTL decremented by one (RFC 1624, eqn. 3): the header word
/// holding TTL and protocol goes down by 0x0100, whatever it was, so `!old + new` is the
/// constant 0xfeff and the update needs neither word (the same result as [`update16`] for
/// every TTL from 1 up; a property test checks).
#[inline]
pub fn update_ttl_decrement(hc: u16) -> u16 {
    let acc = u32::from(!hc) + 0xfeff;
    !((acc & 0xffff) + (acc >> 16)) as u16
}

/// [`update16`] for an aligned 32-bit word (two 16-bit words at once).
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!hc)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!old as u16)
        + u64::from(new >> 16)
        + u64::from(new as u16);
    !fold(acc)
}

/// [`update16`] for a run of 16-bit-aligned bytes (an IPv4 or IPv6 address) that changed
/// from `old` to `new`. Both must have the same even length.
#[inline]
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    debug_assert_eq!(old.len() % 2, 0);
    let acc = u64::from(!hc) + u64::from(!sum(old)) + u64::from(sum(new));
    !fold(acc)
}

/// A UDP checksum after an update: 0 ("none", legal over IPv4 only) stays 0, and a result of
/// 0 is sent as 0xffff.
#[inline]
pub fn update_udp(hc: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    if hc == 0 {
        0
    } else {
        udp_nonzero(update(hc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn known_ipv4_header() {
        // A header from Wikipedia's IPv4 checksum example: checksum b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
        let mut h2 = h;
        h2[10] = 0xb8;
        h2[11] = 0x61;
        assert_eq!(checksum(&h2), 0);
        // The field's stale contents must not matter.
        assert_eq!(ipv4_header(&h2), 0xb861);
    }

    #[test]
    fn update16_by_hand() {
        // Sum of [0x1234, 0x0001] is 0x1235, checksum 0xedca. Changing 0x0001 to 0x0002 gives
        // sum 0x1236, checksum 0xedc9.
        assert_eq!(update16(0xedca, 0x0001, 0x0002), 0xedc9);
    }

    #[test]
    fn udp_zero_rule() {
        assert_eq!(update_udp(0, |c| update16(c, 1, 2)), 0);
        assert_eq!(udp_nonzero(0), 0xffff);
        // An update whose result is 0 is sent as 0xffff: checksum of [0xfffe] is 0x0001;
        // changing the word to 0xffff gives 0x0000.
        assert_eq!(update16(0x0001, 0xfffe, 0xffff), 0x0000);
        assert_eq!(update_udp(0x0001, |c| update16(c, 0xfffe, 0xffff)), 0xffff);
    }

    fn full(data: &[u8]) -> u16 {
        checksum(data)
    }

    #[test]
    fn pseudo_header_from_bytes_matches_the_address_form() {
        let v4: [IpAddr; 2] = [
            "198.51.100.7".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
        ];
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&[198, 51, 100, 7]);
        b[4..].copy_from_slice(&[192, 0, 2, 1]);
        assert_eq!(
            pseudo_header_at(&b, 6, 40),
            pseudo_header(&v4[0], &v4[1], 6, 40)
        );
        // All ones: the fold must give 0xffff (not 0), as `fold` does.
        assert_eq!(pseudo_header_at(&[0xff; 8], 0, 0), 0xffff);
        let v6: [Ipv6Addr; 2] = [
            "2001:db8::1".parse().unwrap(),
            "2001:db8:ff::9".parse().unwrap(),
        ];
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&v6[0].octets());
        b[16..].copy_from_slice(&v6[1].octets());
        assert_eq!(
            pseudo_header_at(&b, 17, 70_000),
            pseudo_header(&v6[0].into(), &v6[1].into(), 17, 70_000)
        );
    }

    proptest! {
        // The incremental update must agree bit for bit with a full recompute, as long as
        // the data is not all zero (which fixed header fields guarantee in practice).
        #[test]
        fn update16_matches_full(mut data in proptest::collection::vec(any::<u8>(), 2..64),
                                 idx in any::<prop::sample::Index>(), new in any::<u16>()) {
            data[0] |= 0x40; // a version nibble: never all zero
            let words = data.len() / 2;
            let w = idx.index(words) * 2;
            let hc = full(&data);
            let old = u16::from_be_bytes([data[w], data[w + 1]]);
            data[w..w + 2].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update16(hc, old, new), full(&data));
        }

        #[test]
        fn ttl_decrement_matches_update16(hc in any::<u16>(), old in 0x0100u16..=0xffff) {
            prop_assert_eq!(update_ttl_decrement(hc), update16(hc, old, old - 0x0100));
        }

        #[test]
        fn pseudo_header_at_matches_pseudo_header(a in any::<[u8; 32]>(), proto in any::<u8>(),
                                                   length in any::<u32>()) {
            let v6 = |b: &[u8]| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()));
            prop_assert_eq!(pseudo_header_at(&a, proto, length),
                            pseudo_header(&v6(&a[..16]), &v6(&a[16..]), proto, length));
            let v4 = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            let length = length & 0xffff;
            let b: &[u8; 8] = a.first_chunk().unwrap();
            prop_assert_eq!(pseudo_header_at(b, proto, length),
                            pseudo_header(&v4(&a[..4]), &v4(&a[4..8]), proto, length));
        }

        #[test]
        fn update32_matches_full(mut data in proptest::collection::vec(any::<u8>(), 4..64),
                                 idx in any::<prop::sample::Index>(), new in any::<u32>()) {
            data[0] |= 0x40;
            let w = idx.index(data.len() / 2 - 1) * 2;
            let hc = full(&data);
            let old = u32::from_be_bytes([data[w], data[w + 1], data[w + 2], data[w + 3]]);
            data[w..w + 4].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update32(hc, old, new), full(&data));
        }

        #[test]
        fn ipv4_address_update_matches_full(mut hdr in proptest::array::uniform20(any::<u8>()),
                                            new in any::<[u8; 4]>(), dst in any::<bool>()) {
            hdr[0] = 0x45;
            let hc = ipv4_header(&hdr);
            hdr[10..12].copy_from_slice(&hc.to_be_bytes());
            let at = if dst { 16 } else { 12 };
            let old: [u8; 4] = hdr[at..at + 4].try_into().unwrap();
            hdr[at..at + 4].copy_from_slice(&new);
            prop_assert_eq!(update_bytes(hc, &old, &new), ipv4_header(&hdr));
        }

        // An address change in the pseudo-header plus a port change in the segment, as a
        // NAT rewrite does them, against the full L4 checksum.
        #[test]
        fn l4_nat_update_matches_full(seg in proptest::collection::vec(any::<u8>(), 20..80),
                                      v6 in any::<bool>(), a in any::<[u8; 16]>(),
                                      b in any::<[u8; 16]>(), c in any::<[u8; 16]>(),
                                      port in any::<u16>()) {
            let mk = |x: [u8; 16]| if v6 {
                IpAddr::V6(Ipv6Addr::from(x))
            } else {
                IpAddr::V4(Ipv4Addr::new(x[0], x[1], x[2], x[3]))
            };
            let (src, dst, new_dst) = (mk(a), mk(b), mk(c));
            let mut seg = seg;
            seg[16] = 0;
            seg[17] = 0;
            let hc = l4(&src, &dst, 6, &seg);
            seg[16..18].copy_from_slice(&hc.to_be_bytes());
            let old_port = u16::from_be_bytes([seg[2], seg[3]]);
            seg[2..4].copy_from_slice(&port.to_be_bytes());
            let bytes = |x: &IpAddr| match x {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            };
            let mut inc = update_bytes(hc, &bytes(&dst), &bytes(&new_dst));
            inc = update16(inc, old_port, port);
            seg[16] = 0;
            seg[17] = 0;
            prop_assert_eq!(inc, l4(&src, &new_dst, 6, &seg));
        }
    }
}
