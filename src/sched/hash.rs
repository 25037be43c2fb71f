//! The hash functions the hashing schedulers key their tables with, as the kernel computes
//! them: `hash_32` (include/linux/hash.h), the IPv6 address fold of `ip_vs_*_hashkey`, and
//! the 64-bit `hsiphash` (SipHash-1-3) of lib/siphash.c.

use std::net::IpAddr;

/// The kernel's `GOLDEN_RATIO_32`.
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `hash_32(val, bits)`: the top `bits` bits of `val * GOLDEN_RATIO_32` (mod 2^32).
#[inline]
pub(super) fn hash_32(val: u32, bits: u32) -> u32 {
    debug_assert!((1..=32).contains(&bits));
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// The address as the kernel's hash keys see it, in host order: an IPv4 address as is, an
/// IPv6 address folded by XOR of its four 32-bit words (`ip6[0]^ip6[1]^ip6[2]^ip6[3]`,
/// then `ntohl`; XOR commutes with the byte swap).
#[inline]
pub(super) fn fold_addr(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let x = u128::from(a);
            (x >> 96) as u32 ^ (x >> 64) as u32 ^ (x >> 32) as u32 ^ x as u32
        }
    }
}

/// Greatest common divisor (Euclid); `gcd(0, b) == b`.
pub(super) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SipHash-c-d over `data` with key `(k0, k1)` (Aumasson and Bernstein), 64-bit output.
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ k0,
        0x646f_7261_6e64_6f6d ^ k1,
        0x6c79_6765_6e65_7261 ^ k0,
        0x7465_6462_7974_6573 ^ k1,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let compress = |v: &mut [u64; 4], m: u64| {
        v[3] ^= m;
        for _ in 0..C {
            round(v);
        }
        v[0] ^= m;
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        compress(&mut v, u64::from_le_bytes(w));
    }
    let mut last = (data.len() as u64) << 56;
    for (i, b) in chunks.remainder().iter().enumerate() {
        last |= u64::from(*b) << (8 * i);
    }
    compress(&mut v, last);
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The kernel's `hsiphash(&v, 4, key)` on a 64-bit machine: SipHash-1-3 keyed with the two
/// longs of `hsiphash_key_t`, over the four bytes of `v` as a little-endian machine stores
/// them, truncated to 32 bits.
#[inline]
pub(super) fn hsiphash_u32(key: (u64, u64), v: u32) -> u32 {
    siphash::<1, 3>(key.0, key.1, &v.to_le_bytes()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_32_by_hand() {
        // 1 * 0x61C88647 = 0x61C88647, top byte 0x61.
        assert_eq!(hash_32(1, 8), 0x61);
        // 2 * 0x61C88647 = 0xC3910C8E.
        assert_eq!(hash_32(2, 8), 0xC3);
        // 6 * 0x61C88647 = 0x2_4AB3_25AA, mod 2^32 = 0x4AB325AA.
        assert_eq!(hash_32(6, 8), 0x4A);
        assert_eq!(hash_32(6, 10), 0x4AB325AA >> 22);
        assert_eq!(hash_32(0, 8), 0);
    }

    #[test]
    fn ipv6_fold_xors_the_four_words() {
        assert_eq!(fold_addr("10.1.2.3".parse().unwrap()), 0x0A01_0203);
        assert_eq!(fold_addr("::1".parse().unwrap()), 1);
        assert_eq!(
            fold_addr("2001:db8:0:1::1".parse().unwrap()),
            0x2001_0db8 // the other words, 1, 0 and 1, cancel out
        );
        // The words of 2001:db8::1:0:0:1 are 20010db8 00000000 00010000 00000001.
        assert_eq!(
            fold_addr("2001:db8::1:0:0:1".parse().unwrap()),
            0x2001_0db8 ^ 0x0001_0000 ^ 0x0000_0001
        );
    }

    #[test]
    fn gcd_by_hand() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(0, 7), 7);
        assert_eq!(gcd(7, 0), 7);
        assert_eq!(gcd(9, 4), 1);
    }

    #[test]
    fn siphash_2_4_reference_vectors() {
        // The paper's test key 00 01 .. 0f and messages 00 01 .. (len - 1).
        let k0 = 0x0706_0504_0302_0100;
        let k1 = 0x0f0e_0d0c_0b0a_0908;
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash::<2, 4>(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash::<2, 4>(k0, k1, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn hsiphash_is_stable() {
        let key = (2_654_435_761, 2_654_435_761);
        assert_eq!(hsiphash_u32(key, 1), hsiphash_u32(key, 1));
        assert_ne!(hsiphash_u32(key, 1), hsiphash_u32(key, 2));
        assert_ne!(
            hsiphash_u32(key, 1),
            hsiphash_u32((2_654_446_892, 2_654_446_892), 1)
        );
    }
}
