//! Addresses as two words, and the key the index hashes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address as two words; IPv4 as IPv4-mapped IPv6 (the family is kept beside it).
#[inline]
pub(super) fn addr_words(a: IpAddr) -> [u64; 2] {
    let v = match a {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a),
    };
    [(v >> 64) as u64, v as u64]
}

#[inline]
pub(super) fn words_addr(w: [u64; 2], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(u128::from(w[0]) << 64 | u128::from(w[1])))
    } else {
        IpAddr::V4(Ipv4Addr::from(w[1] as u32))
    }
}

pub(super) const K_V6: u64 = 1;
pub(super) const K_TEMPLATE: u64 = 2;

/// What the index hashes: source, destination, and ports/protocol/kind in one word.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) src: [u64; 2],
    pub(super) dst: [u64; 2],
    pub(super) meta: u64,
}

impl Key {
    #[inline]
    pub(super) fn new(
        proto: u8,
        src: [u64; 2],
        sport: u16,
        dst: [u64; 2],
        dport: u16,
        kind: u64,
    ) -> Key {
        Key {
            src,
            dst,
            meta: u64::from(sport) << 48 | u64::from(dport) << 32 | u64::from(proto) << 8 | kind,
        }
    }
}

#[inline]
pub(super) fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ (r >> 64) as u64
}
