//! Destination hashing (`ip_vs_dh.c`).
//!
//! ```text
//! bucket[i] = dests[i mod n]                 for i in 0..256 (weights ignored)
//! server    = bucket[hash_32(daddr, 8)]      daddr = the destination address, IPv6 folded
//! if that server is unavailable: no server   (dh has no fallback)
//! ```
//!
//! Meant for cache clusters: the same destination always lands on the same cache.

use super::hash::{fold_addr, hash_32};
use super::{available, SchedInput, Scheduler};
use crate::service::{Dest, DestRegistry};

/// Buckets in the table, as the kernel's `CONFIG_IP_VS_DH_TAB_BITS` default.
const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;

/// Destination hashing over a 256-bucket table filled by cycling the list.
#[derive(Debug)]
pub struct DestinationHashing {
    /// Index into the list per bucket; `None` for every bucket when the list is empty.
    buckets: Box<[Option<u32>; TAB_SIZE]>,
}

impl DestinationHashing {
    /// Fills the table from `dests`.
    pub fn new(dests: &[Dest]) -> DestinationHashing {
        let mut buckets = Box::new([None; TAB_SIZE]);
        if !dests.is_empty() {
            for (i, b) in buckets.iter_mut().enumerate() {
                *b = Some((i % dests.len()) as u32);
            }
        }
        DestinationHashing { buckets }
    }
}

impl Scheduler for DestinationHashing {
    fn schedule(
        &mut self,
        dests: &[Dest],
        registry: &DestRegistry,
        input: &SchedInput,
    ) -> Option<usize> {
        let bucket = hash_32(fold_addr(input.vaddr), TAB_BITS) as usize;
        let i = self.buckets[bucket]? as usize;
        let d = dests.get(i)?;
        available(d, registry.get(d.id)).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn buckets_cycle_the_list_ignoring_weights() {
        let d = dests(&[5, 1, 1]);
        let s = DestinationHashing::new(&d);
        let first: Vec<_> = s.buckets[..7].iter().map(|b| b.unwrap()).collect();
        assert_eq!(first, [0, 1, 2, 0, 1, 2, 0]);
        // 256 = 3 * 85 + 1: A gets 86, B and C 85.
        let count = |k| s.buckets.iter().filter(|b| **b == Some(k)).count();
        assert_eq!((count(0), count(1), count(2)), (86, 85, 85));
    }

    #[test]
    fn same_destination_same_server() {
        // 0.0.0.1: hash_32(1, 8) = 0x61 = 97, 97 mod 3 = 1: B.
        // 0.0.0.2: hash_32(2, 8) = 0xC3 = 195, 195 mod 3 = 0: A.
        let d = dests(&[1, 1, 1]);
        let reg = DestRegistry::new(4);
        let mut s = DestinationHashing::new(&d);
        for client in ["192.0.2.1", "198.51.100.7", "2001:db8::1"] {
            assert_eq!(
                s.schedule(&d, &reg, &input(client, 1, "0.0.0.1", 0)),
                Some(1)
            );
            assert_eq!(
                s.schedule(&d, &reg, &input(client, 2, "0.0.0.2", 0)),
                Some(0)
            );
        }
        // IPv6 ::1 folds to 1, the same bucket as 0.0.0.1.
        assert_eq!(s.schedule(&d, &reg, &input("::2", 1, "::1", 0)), Some(1));
    }

    #[test]
    fn no_fallback() {
        let d = dests(&[1, 1, 1]);
        let reg = DestRegistry::new(4);
        set_overload(&reg, &d[1], true);
        let mut s = DestinationHashing::new(&d);
        assert_eq!(
            s.schedule(&d, &reg, &input("192.0.2.1", 1, "0.0.0.1", 0)),
            None
        );
        let d = dests(&[1, 0, 1]);
        let mut s = DestinationHashing::new(&d);
        assert_eq!(
            s.schedule(&d, &reg, &input("192.0.2.1", 1, "0.0.0.2", 0)),
            Some(0)
        );
        set_overload(&reg, &d[1], false);
        assert_eq!(
            s.schedule(&d, &reg, &input("192.0.2.1", 1, "0.0.0.1", 0)),
            None
        );
    }
}
